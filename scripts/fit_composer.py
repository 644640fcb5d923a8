#!/usr/bin/env python
"""Fit a finished model's composer (emotag.model.compose) on the tune halves and write it into config.json.

    python scripts/fit_composer.py --model models/emotag-zh-small [--data ../shared/data] [--dry-run]

What it learns from: every `split == "dev"` row of `corpora.load_all` that has a polarity (the tune halves:
the report halves are never read), plus two sets built from tune-half ASTE restaurant sentences only:
- negated: the sentence's opinions negated in place, polarity flipped (很难吃 -> 不难吃), and minimal
  pairs of its aspect-opinion triples (味道很香 / 味道一点也不香);
- turned (off by default, `--turned N`): two short sentences of opposite polarity joined by a contrast
  turn (A，但是B), labelled as B;
opinion-free questions, facts and replies from templates (`emotag.train.neutral_forms`), and (`--compositional
N`, the recipe's 1,500) negation, double-negation and contrast sentences from `emotag.train.compositional`
with another seed than the network was taught with: without them the sign part, fit on real rows only,
trusts the n-gram experts (which read 不差 as 差) over a network that reads the negation right.
Why the tune halves and not training data: the network and its lexical expert were fit on the training
split and read it overconfidently, so a stacker fit there would learn to trust the whole-text score alone.

Source weighting: the sign part weights each source's total to size**0.5 (`--sign-power`), so 3,000
shopping reviews do not drown 400 dialogue lines but still count more; the neutral part takes rows as they
come (plain counts). The L2 strength is chosen by 5-fold cross-validation on these rows, grouped by the text
with its negators and 很 removed, so a sentence and its negated twin (味道很好 / 味道不好, 房间很宽敞 /
房间一点也不宽敞) stay in one fold. The table it prints compares, per source and by the same folds, the
polarity heads alone with the composer: the sign accuracy (what the binary metrics read) on opinion rows,
and neutral F1 where a source labels neutral text, with both parts' out-of-fold probabilities (the sign
part's too, on the neutral rows it was not fit on).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import zlib
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emotag import Tagger  # noqa: E402
from emotag.model.compose import NEGATORS, NEUTRAL_FEATURES, SIGN_FEATURES, Composer, Part  # noqa: E402
from emotag.model.config import CONFIG_NAME, EmotagConfig, resolve_model_dir  # noqa: E402
from emotag.model.features import Featurizer  # noqa: E402
from emotag.runtime.backends import load_backend  # noqa: E402
from emotag.train import corpora  # noqa: E402
from emotag.train.compositional import compositional_forms  # noqa: E402
from emotag.train.corpora import Example  # noqa: E402
from emotag.train.neutral_forms import neutral_forms  # noqa: E402

CS = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
TURNS = ("但是", "可是", "不过", "然而")


def turned(examples: list[Example], n: int, seed: int = 0) -> list[Example]:
    """`n` contrast texts A，但是B from short one-polarity sentences, labelled with B's polarity."""
    rng = random.Random(seed)
    by = defaultdict(list)
    for e in examples:
        t = e.text.strip().rstrip("。！!，,~～")
        if e.polarity in ("positive", "negative") and 4 <= len(t) <= 20 and not any(m in t for m in TURNS):
            by[e.polarity].append(t)
    out = []
    for k in range(n):
        b_pol = "negative" if k % 2 else "positive"
        a_pol = "positive" if b_pol == "negative" else "negative"
        if not by[a_pol] or not by[b_pol]:
            break
        a, b = rng.choice(by[a_pol]), rng.choice(by[b_pol])
        turn = rng.choice(TURNS)
        text = f"虽然{a}，但是{b}" if k % 5 == 0 else f"{a}，{turn}{b}"
        out.append(Example(text, "aste_turned", None, b_pol, split="dev"))
    return out


def f1(gold: np.ndarray, pred: np.ndarray) -> float:
    tp = float(np.sum(gold & pred))
    return 2 * tp / max(float(gold.sum() + pred.sum()), 1.0)


def load_uncomposed(model: str) -> Tagger:
    """The model without its composer. Why: after `fit_experts.py` rewrote experts.npz, the old composer may
    read expert columns the new file lacks, and what the new composer learns from must not depend on it."""
    model_dir = resolve_model_dir(model)
    config = EmotagConfig.load(model_dir)
    config.composer = None
    return Tagger(Featurizer.from_dir(model_dir, config), load_backend(model_dir, "onnx"), model_dir)


def skeleton_group(text: str) -> int:
    """A group id shared by a text and its negated twins: the text without negators and 很."""
    return zlib.crc32(_TWIN_MARKS.sub("", text).encode("utf-8"))


_TWIN_MARKS = re.compile("|".join(sorted(map(re.escape, NEGATORS + ("很",)), key=len, reverse=True)))


def composer_rows(tagger: Tagger, data: Path, n_turned: int = 0, n_neutral: int = 400, n_compositional: int = 0,
                  cache: Path | None = None) -> tuple[list[Example], np.ndarray]:
    """The composer's training rows (see the module docstring) and their `composition_names` features.
    `scripts/probe_composer.py` reads the same rows, so a probe measures the composer the recipe fits."""
    dev = [e for e in corpora.load_all(data, dev_half="tune") if e.split == "dev" and e.polarity]
    tune_text = {e.text for e in dev if e.source == "aste"}
    negated = list(corpora.aste_negated(data, split="dev", keep=tune_text.__contains__))
    negated += list(corpora.aste_opinion_pairs(data, split="dev", keep=tune_text.__contains__))
    rows = dev + negated + turned([e for e in dev if e.source == "aste"], n_turned)
    rows += list(neutral_forms(n_neutral))
    rows += list(compositional_forms(n_compositional, seed=3))  # none at 0
    rows = [e for e in rows if tagger.featurizer.prepare(e.text).windows]
    count = Counter(e.source for e in rows)
    print(f"{len(rows)} rows: " + ", ".join(f"{s} {n}" for s, n in count.most_common()), flush=True)
    if cache and cache.exists():
        X = np.load(cache)["X"]
        if X.shape != (len(rows), len(tagger.composition_names)):
            raise SystemExit(f"{cache}: features of other rows or another emotag; delete it")
    else:
        X, _ = tagger.composition_inputs([e.text for e in rows])
        if cache:
            np.savez(cache, X=X)
    return rows, X


def source_weights(src: np.ndarray, fit: np.ndarray, power: float) -> np.ndarray:
    """Row weights that make each source's total ~ its size ** power over the `fit` rows (0 elsewhere),
    scaled to a mean of 1 there: power 0 gives every source equal say, 1 plain counts."""
    count = Counter(src[fit].tolist())
    w = np.array([count[s] ** power / count[s] if f else 0.0 for s, f in zip(src, fit, strict=True)])
    return w * (fit.sum() / w.sum())


def fit_part(X: np.ndarray, y: np.ndarray, fit: np.ndarray, src: np.ndarray, groups: np.ndarray,
             columns: tuple[str, ...], names: tuple[str, ...], power: float, what: str
             ) -> tuple[Part, np.ndarray]:
    """A logistic regression on `names` over the rows where `fit` is True, its L2 strength chosen by grouped
    5-fold CV log-loss on those rows; returns the part fit on them all and its out-of-fold P(y) for every
    row (folds over all rows, so a row outside `fit` is predicted by a model whose folds never saw its
    group)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold

    cols = [columns.index(k) for k in names]
    Xs = X[:, cols]
    w = source_weights(src, fit, power)
    folds = list(GroupKFold(5).split(Xs, y, groups))
    best = None
    for C in CS:
        p = np.zeros(len(y))
        for tr, te in folds:
            tr = tr[fit[tr]]
            m = LogisticRegression(C=C, max_iter=3000).fit(Xs[tr], y[tr], sample_weight=w[tr])
            p[te] = m.predict_proba(Xs[te])[:, 1]
        py = np.where(y, p, 1 - p)[fit]
        loss = float(-(w[fit] * np.log(np.clip(py, 1e-12, 1))).sum() / w[fit].sum())
        print(f"{what} C={C}: cv log-loss {loss:.4f}", flush=True)
        if best is None or loss < best[1]:
            best = (C, loss, p)
    C, loss, p = best
    m = LogisticRegression(C=C, max_iter=3000).fit(Xs[fit], y[fit], sample_weight=w[fit])
    print(f"{what}: chose C={C}", flush=True)
    return Part(names, m.coef_[0].copy(), float(m.intercept_[0])), p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default=str(corpora.DEFAULT_DATA_DIR))
    ap.add_argument("--dry-run", action="store_true", help="print the comparison, write nothing")
    ap.add_argument("--turned", type=int, default=0,
                    help="add N synthetic A，但是B texts (off: on the tune halves they cost hotel 2.8 and shopping 1.0 points of sign accuracy)")
    ap.add_argument("--neutral-forms", type=int, default=400,
                    help="opinion-free questions, facts and replies from emotag.train.neutral_forms")
    ap.add_argument("--compositional", type=int, default=0,
                    help="add N negation/contrast template sentences (emotag.train.compositional, another seed than "
                         "the network's) to the sign part's rows")
    ap.add_argument("--cache", help="an .npz that keeps the feature rows between runs (same model and code)")
    ap.add_argument("--sign-power", type=float, default=0.5,
                    help="source weighting of the sign part: totals ~ size**power (0 equal, 1 plain counts)")
    args = ap.parse_args()
    tagger = load_uncomposed(args.model)
    labels = tuple(tagger.config.polarity_labels)
    rows, X = composer_rows(tagger, Path(args.data), args.turned, args.neutral_forms, args.compositional,
                            Path(args.cache) if args.cache else None)
    count = Counter(e.source for e in rows)
    src = np.array([e.source for e in rows])
    pol = np.array([e.polarity for e in rows])
    groups = np.array([skeleton_group(e.text) for e in rows])
    names = tagger.composition_names
    experts = tuple(k for k in names if k.startswith("polarity:"))
    fi = {k: names.index(k) for k in names}

    polar = pol != "neutral"
    sign, p_pos = fit_part(X, pol == "positive", polar, src, groups, names, SIGN_FEATURES + experts,
                           args.sign_power, "sign")
    neutral, neu_cv = fit_part(X, pol == "neutral", np.ones(len(rows), bool), src, groups, names,
                               NEUTRAL_FEATURES, 1.0, "neutral")
    composer = Composer(labels, sign, neutral)

    # per source, cross-validated: the heads alone vs the composer
    report = {}
    print("\nper source (cross-validated): sign accuracy heads -> composer; neutral F1 heads -> composer")
    heads_neu = np.exp(4.0 * X[:, fi["whole_log_neutral"]])
    heads_margin = X[:, fi["whole_margin"]]
    heads_is_neu = heads_neu > (1.0 - heads_neu + np.abs(heads_margin)) / 2.0  # argmax of the 3 probabilities
    comp_is_neu = neu_cv > (1.0 - neu_cv) * np.maximum(p_pos, 1 - p_pos)  # argmax of the composed three
    for s in sorted(count):
        sel = src == s
        line = {"n": int(sel.sum())}
        ps = sel & polar
        if ps.any():
            gold = pol[ps] == "positive"
            line["sign_heads"] = round(float(np.mean((heads_margin[ps] > 0) == gold)), 4)
            line["sign_composer"] = round(float(np.mean((p_pos[ps] > 0.5) == gold)), 4)
        line["neutral_pred_heads"] = round(float(np.mean(heads_is_neu[sel])), 4)
        line["neutral_pred_composer"] = round(float(np.mean(comp_is_neu[sel])), 4)
        line["neutral_gold"] = round(float(np.mean(pol[sel] == "neutral")), 4)
        if line["neutral_gold"] > 0:
            line["neutral_f1_heads"] = round(f1(pol[sel] == "neutral", heads_is_neu[sel]), 4)
            line["neutral_f1_composer"] = round(f1(pol[sel] == "neutral", comp_is_neu[sel]), 4)
        report[s] = line
        print(f"  {s:14s} " + "  ".join(f"{k}={v}" for k, v in line.items()))
    composer.info = {"rows": dict(count), "cv": report, "fit": "scripts/fit_composer.py on the tune halves"}
    for name, part in (("sign", sign), ("neutral", neutral)):
        print(f"{name}: bias {part.bias:+.2f}; " + ", ".join(f"{k} {v:+.2f}" for k, v in zip(part.features, part.weight, strict=True)))
    if args.dry_run:
        return
    path = Path(args.model) / CONFIG_NAME
    cfg = json.loads(path.read_text(encoding="utf-8"))
    cfg["composer"] = composer.to_dict()
    path.write_text(json.dumps(cfg, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"wrote the composer into {path}")


if __name__ == "__main__":
    main()
