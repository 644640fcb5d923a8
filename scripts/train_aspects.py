#!/usr/bin/env python
"""Rebuild the aspect taggers and category vectors in emotag/aspects/resources/ from ../shared/data.

    python scripts/train_aspects.py --data ../shared/data [--out emotag/aspects/resources] [--report] [--no-neural]

1. Category vectors (--vectors, or when missing): character and character-bigram embeddings (PPMI + SVD
   over a window of review text from the shared corpora) that place an unlisted term (外盒) near the
   listed ones (盒子, 包装). About a minute.
2. Perceptron span tagger (v2, the fallback): an averaged structured perceptron (mini-batch, batched
   Viterbi) over character n-gram and lexicon features, on chinese_aste/train.jsonl. Lexicon features for
   a training sentence come from the *other* half of the training set (plus the hand-written seeds), so
   the tagger learns how far to trust a lexicon match instead of copying it; at scoring time the whole
   lexicon is used. `--features` adds optional groups (emotag.aspects.features.EXTRA_GROUPS; the shipped
   recipe is the default); the averaged weights are scored on the tuning half after every epoch and the
   best epoch is kept. Writes lexicons.json too. About four minutes on a shared 2-core machine.
3. Neural span tagger (v3, shipped; emotag.aspects.neural_train, torch on one thread; --no-neural skips
   it): dilated convolutions over characters with a CRF loss, the same lexicon folds, plus opinion-free
   clauses as sentences of their own; best epoch on the tuning half; exported as numpy arrays
   (neural.npz). About 12 minutes (15 epochs) on the shared machine.
   `--lac DIR` (the extracted `lac` 2.1.2 sdist, Baidu LAC, Apache-2.0; read at training time only) with
   `--lac-emb`, `--distill W`, `--distill-states W`, `--lac-words N` tries LAC as a teacher (its character
   rows, a training-only head on its tags or states, a table of the words it segments); measured on the
   tuning half and not shipped (docs/aspects.md).
4. Evaluation on chinese_aste/dev.jsonl split by emotag.train.corpora.dev_half_of: the tuning half is
   used for every choice (epochs, feature groups, sizes), the report half is read once for the model card
   (--report). Prints triple F1 exact/soft.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emotag.aspects.extract import AspectExtractor  # noqa: E402
from emotag.aspects.features import LEXICONS, feature_keys, lexicon_pattern, normalize_aligned  # noqa: E402
from emotag.aspects.lexicon import DEGREE, NEGATION, NEGATIVE_WORDS, POSITIVE_WORDS, PRODUCT_TERMS  # noqa: E402
from emotag.aspects.metrics import same_text, triple_f1  # noqa: E402
from emotag.aspects.tagger import N_TAGS, SpanTagger, length_batches, viterbi  # noqa: E402
from emotag.train.corpora import dev_half_of  # noqa: E402

POL_B = {"positive": 3, "neutral": 5, "negative": 7}


def read_aste(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def gold_tags(d: dict) -> np.ndarray:
    tags = np.zeros(len(d["text"]), dtype=np.int16)
    for t in d["triples"]:  # opinions first, aspects win where they overlap
        a, b = t["opinion_span"]
        tags[a] = POL_B[t["polarity"]]
        tags[a + 1:b] = POL_B[t["polarity"]] + 1
    for t in d["triples"]:
        if t["aspect_span"]:
            a, b = t["aspect_span"]
            if (tags[a:b] == 0).all():
                tags[a] = 1
                tags[a + 1:b] = 2
    return tags


def build_lexicons(data: list[dict], extra_aspects: list[str], min_count: int = 2) -> dict[str, list[str]]:
    """Aspect terms and short opinions (by their majority polarity) seen in `data`, plus the seeds."""
    asp = Counter(normalize_aligned(t["aspect"]) for d in data for t in d["triples"] if t["aspect"])
    op: dict[str, Counter] = {}
    for d in data:
        for t in d["triples"]:
            if len(t["opinion"]) <= 4:
                op.setdefault(normalize_aligned(t["opinion"]), Counter())[t["polarity"]] += 1
    pos = {o for o, c in op.items() if sum(c.values()) > min_count and c.most_common(1)[0][0] == "positive"}
    neg = {o for o, c in op.items() if sum(c.values()) > min_count and c.most_common(1)[0][0] == "negative"}
    return {
        "aspect": sorted({a for a, c in asp.items() if c >= min_count and len(a) >= 2} | set(extra_aspects)),
        "positive": sorted(pos | {normalize_aligned(w) for w in POSITIVE_WORDS}),
        "negative": sorted(neg | {normalize_aligned(w) for w in NEGATIVE_WORDS}),
        "negation": sorted(NEGATION),
        "degree": sorted(DEGREE),
    }


def lex_list(lex: dict[str, list[str]]) -> list:
    return [lexicon_pattern(lex[name]) for name in LEXICONS]


def train_tagger(train: list[dict], seeds: list[str], epochs: int, batch: int = 16, min_count: int = 2,
                 max_features: int = 300_000, extra: tuple[str, ...] = (), prune: float = 0.01,
                 score: Callable[[SpanTagger], float] | None = None, patience: int = 2, seed: int = 0) -> SpanTagger:
    """The averaged perceptron; with `score` (e.g. soft + exact triple F1 on the tuning half) the averaged
    weights are scored after every epoch and the best epoch is kept (early stopping after `patience`
    epochs without a gain)."""
    lex: dict = build_lexicons(train, seeds)
    if extra:
        lex["features"] = list(extra)
    best: tuple[float, int, SpanTagger] | None = None
    texts = [normalize_aligned(d["text"]) for d in train]
    gold = [gold_tags(d) for d in train]
    half = [train[0::2], train[1::2]]
    fold_lex = [lex_list(build_lexicons(half[1], seeds)), lex_list(build_lexicons(half[0], seeds))]
    keys_parts = []
    for f in (0, 1):
        idx = list(range(f, len(train), 2))
        k, o = feature_keys([texts[i] for i in idx], fold_lex[f], extra)
        keys_parts.append((idx, k, o))
    # per-sentence key blocks in original order
    blocks: list[np.ndarray] = [None] * len(train)  # type: ignore[list-item]
    for idx, k, o in keys_parts:
        for j, i in enumerate(idx):
            blocks[i] = k[o[j]:o[j + 1]]
    allk = np.concatenate(blocks)
    uniq, counts = np.unique(allk, return_counts=True)
    vocab = uniq[counts >= min_count]
    print(f"features: {len(uniq):,} distinct, {len(vocab):,} kept (count >= {min_count})", flush=True)
    V = len(vocab)
    ids = []
    for b in blocks:
        pos = np.searchsorted(vocab, b)
        pos[pos >= V] = 0
        ids.append(np.where(vocab[pos] == b, pos, V))
    W = np.zeros((V + 1, N_TAGS), np.float32)
    U = np.zeros_like(W)
    Tr = np.zeros((N_TAGS, N_TAGS), np.float32)
    Ut = np.zeros_like(Tr)
    St = np.zeros(N_TAGS, np.float32)
    Us = np.zeros_like(St)
    c = 1.0
    rng = np.random.default_rng(seed)
    for ep in range(epochs):
        t0 = time.time()
        batches = length_batches(rng, [len(t) for t in texts], batch)
        errs = 0
        for sel in batches:
            lens = np.array([len(texts[i]) for i in sel])
            L = int(lens.max())
            em = np.zeros((len(sel), L, N_TAGS), np.float32)
            for r, i in enumerate(sel):
                em[r, :lens[r]] = W[ids[i]].sum(1)
            pred = viterbi(em, lens, Tr, St)
            for r, i in enumerate(sel):
                p, g = pred[r, :lens[r]].astype(np.int64), gold[i].astype(np.int64)
                wrong = np.nonzero(p != g)[0]
                if len(wrong) == 0:
                    continue
                errs += 1
                fi = ids[i][wrong]  # [k, F]
                gg = np.repeat(g[wrong], fi.shape[1])
                pp = np.repeat(p[wrong], fi.shape[1])
                ff = fi.reshape(-1)
                np.add.at(W, (ff, gg), 1.0)
                np.add.at(W, (ff, pp), -1.0)
                np.add.at(U, (ff, gg), c)
                np.add.at(U, (ff, pp), -c)
                if len(g) > 1:
                    dg = np.zeros_like(Tr)
                    np.add.at(dg, (g[:-1], g[1:]), 1.0)
                    np.add.at(dg, (p[:-1], p[1:]), -1.0)
                    Tr += dg
                    Ut += c * dg
                St[g[0]] += 1
                St[p[0]] -= 1
                Us[g[0]] += c
                Us[p[0]] -= c
            W[V] = 0
            U[V] = 0
            c += 1
        print(f"epoch {ep + 1}: {errs:,} sentences wrong ({time.time() - t0:.0f} s)", flush=True)
        if score is not None or ep == epochs - 1:
            tagger = _finish(W - U / c, Tr - Ut / c, St - Us / c, vocab, V, max_features, lex, prune)
            if score is None:
                return tagger
            val = score(tagger)
            print(f"epoch {ep + 1}: tune {val:.4f}", flush=True)
            if best is None or val > best[0]:
                best = (val, ep + 1, tagger)
            elif ep + 1 - best[1] >= patience:
                break
    assert best is not None
    print(f"best epoch {best[1]} (tune {best[0]:.4f})", flush=True)
    return best[2]


def _finish(Wa: np.ndarray, Tra: np.ndarray, Sta: np.ndarray, vocab: np.ndarray, V: int, max_features: int,
            lex: dict, prune: float = 0.01) -> SpanTagger:
    """The averaged weights as a SpanTagger: tiny features pruned, scaled for float16 storage."""
    Wa = Wa.copy()
    Wa[V] = 0
    # prune features whose averaged weights are all tiny: most of the size, none of the accuracy
    mag = np.abs(Wa[:V]).max(1)
    keep = mag >= max(prune * mag.max(), np.sort(mag)[-min(V, max_features)])
    print(f"kept {keep.sum():,} of {V:,} features after pruning", flush=True)
    scale = float(np.abs(Wa[:V][keep]).max() / 4.0)  # fits float16 comfortably; decoding is scale-free
    return SpanTagger(vocab[keep], np.vstack([Wa[:V][keep] / scale, np.zeros((1, N_TAGS))]).astype(np.float32),
                      (Tra / scale).astype(np.float32), (Sta / scale).astype(np.float32), dict(lex))


def evaluate(ex: AspectExtractor, data: list[dict], name: str) -> dict:
    t0 = time.time()
    pred = [[u.to_dict() for u in us] for us in ex.extract_many([d["text"] for d in data])]
    secs = time.time() - t0
    gold = [d["triples"] for d in data]
    res = {"n": len(data), "texts_per_s": round(len(data) / secs)}
    for soft in (False, True):
        f, p, r = triple_f1(gold, pred, soft)
        res["soft" if soft else "exact"] = {"f1": round(f, 4), "p": round(p, 4), "r": round(r, 4)}
    print(name, json.dumps(res), flush=True)
    return res


def evaluate_ood(ex: AspectExtractor, data: Path, limit: int = 2000) -> dict:
    """Out-of-domain checks on sets with partial labels (the first `limit` usable rows of each):
    sentic_reviews (product sentences with an opinion target and 0/1 label): share of targets found as an
    aspect (soft match), and the polarity of those units; bdci2018_car_aspect (car forum posts with the
    sentiment word and its -1/0/1 value): share of sentiment words inside a found opinion, and its polarity."""
    res: dict = {}
    p = data / "sentic_reviews" / "sentic_reviews.tsv"
    if p.exists():
        with open(p, encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f, delimiter="\t") if r.get("target")][:limit]
        units = ex.extract_many([r["text"] for r in rows])
        found = ok = 0
        for r, us in zip(rows, units, strict=True):
            hit = [u for u in us if u.aspect and same_text(u.aspect, r["target"], soft=True)]
            found += bool(hit)
            ok += bool(hit) and hit[0].polarity == ("positive" if r["label"] == "1" else "negative")
        res["sentic_target_recall"] = round(found / len(rows), 4)
        res["sentic_polarity_acc_found"] = round(ok / max(found, 1), 4)
    p = data / "bdci2018_car_aspect" / "train.csv"
    if p.exists():
        with open(p, encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if r.get("sentiment_word")][:limit]
        units = ex.extract_many([r["content"] for r in rows])
        pol = {"1": "positive", "0": "neutral", "-1": "negative"}
        found = ok = 0
        for r, us in zip(rows, units, strict=True):
            hit = [u for u in us if same_text(u.opinion, r["sentiment_word"], soft=True)]
            found += bool(hit)
            ok += bool(hit) and hit[0].polarity == pol[r["sentiment_value"].strip()]
        res["bdci_opinion_recall"] = round(found / len(rows), 4)
        res["bdci_polarity_acc_found"] = round(ok / max(found, 1), 4)
    print("out-of-domain", json.dumps(res), flush=True)
    return res


CLAUSE_SPLIT = re.compile(r"[，,；;：:。！？!?]")


def opinion_free_clauses(data: list[dict], share: float, seed: int = 0, words: list | None = None
                         ) -> list[tuple[int, str]]:
    """(sentence index, clause + "。") for clauses that no gold aspect or opinion touches and that hold none
    of `words` (compiled opinion-word lists: 挺清爽的 is left unannotated in places, but it judges), at most
    one per sentence and `share` of the sentences in all. Why: every sentence of this data holds a triple, so a
    tagger that reads whole sentences learns that each one must (今天去了一趟超市 came out as praise); these
    clauses, each a sentence of its own, show it that a sentence can judge nothing. They carry the same
    annotation gaps as the clauses inside the training sentences, which the tagger sees as outside anyway."""
    rng = np.random.default_rng(seed)
    out = []
    for k, d in enumerate(data):
        text = d["text"]
        taken = np.zeros(len(text) + 1, bool)
        for t in d["triples"]:
            for sp in (t["opinion_span"], t["aspect_span"]):
                if sp:
                    taken[sp[0]:sp[1]] = True
        cands, start = [], 0
        for m in [*CLAUSE_SPLIT.finditer(text), None]:
            end = m.start() if m else len(text)
            clause = text[start:end].strip()
            if (len(clause) >= 4 and not taken[start:end].any() and sum("\u4e00" <= c <= "\u9fff" for c in clause) >= 2
                    and not any(p is not None and p.search(normalize_aligned(clause)) for p in words or ())):
                cands.append(clause)
            start = m.end() if m else len(text)
        if cands:
            out.append((k, cands[int(rng.integers(len(cands)))] + "。"))
    keep = rng.permutation(len(out))[:int(share * len(data))]
    return [out[i] for i in sorted(keep)]


def lac_word_table(lac: object, texts: list[str], data: Path, n_reviews: int) -> tuple[np.ndarray, np.ndarray]:
    """LAC's words (emotag.aspects.lac.Lac.word_dictionary) in the training sentences plus the first
    `n_reviews` product and hotel reviews of ../shared/data/reviews_polarity (each cut to 200 characters),
    as neural.word_codes reads them: sorted 64-bit keys and a code per key."""
    from emotag.aspects.neural import WORD_MAX, word_hashes

    t0 = time.time()
    extra: list[str] = []
    for name, col in (("online_shopping_10_cats.csv", "review"), ("ChnSentiCorp_htl_all.csv", "review")):
        p = data / "reviews_polarity" / name
        if p.exists():
            with open(p, encoding="utf-8") as f:
                rows = [r[col] for r in csv.DictReader(f) if r.get(col)]
            step = max(1, len(rows) // max(n_reviews // 2, 1))  # spread over the file's categories
            extra += [normalize_aligned(r[:200]) for r in rows[::step][:n_reviews // 2]]
    words, codes = lac.word_dictionary(list(texts) + extra, WORD_MAX)  # type: ignore[attr-defined]
    keys = word_hashes(words)
    order = np.argsort(keys)
    print(f"neural: {len(words):,} LAC words from {len(texts) + len(extra):,} texts in {time.time() - t0:.0f} s",
          flush=True)
    return keys[order], codes[order]


def train_neural_stage(a: argparse.Namespace, train: list[dict], tune: list[dict], seeds: list[str], out: Path,
                       cats: object) -> None:
    """Stage 3: the neural tagger (emotag.aspects.neural_train, torch on one thread), its epoch chosen by
    exact + soft triple F1 on the tuning half; written as neural.npz + neural_vocab.json beside the
    perceptron's lexicons.json, which it shares (lexicon marks are among its inputs)."""
    import torch

    from emotag.aspects.neural_train import train_neural

    torch.set_num_threads(1)
    t0 = time.time()
    lex = build_lexicons(train, seeds)
    shipped = json.loads((out / "lexicons.json").read_text(encoding="utf-8"))
    for name in LEXICONS:  # the perceptron stage wrote the same lists; the marks must agree
        if shipped.get(name) != lex[name]:
            raise SystemExit(f"lexicons.json in {out} was built from other data ({name}); rerun without --neural-only")
    half = [train[0::2], train[1::2]]
    fold_patterns = [lex_list(build_lexicons(half[1], seeds)), lex_list(build_lexicons(half[0], seeds))]
    texts = [normalize_aligned(d["text"]) for d in train]
    gold = [gold_tags(d) for d in train]
    folds = [i % 2 for i in range(len(train))]
    words = lex_list(lex)[1:3]  # the positive and negative opinion words (learned and hand-written)
    free = opinion_free_clauses(train, a.opinion_free, a.seed, words)
    texts += [normalize_aligned(c) for _, c in free]
    gold += [np.zeros(len(c), np.int16) for _, c in free]
    folds += [k % 2 for k, _ in free]
    print(f"neural: {len(train):,} sentences + {len(free):,} opinion-free clauses", flush=True)
    tune_free = [c for _, c in opinion_free_clauses(tune, 1.0, a.seed, words)]
    lac, aux = None, None
    aux_states = None
    words = None
    if a.lac_emb or a.distill > 0 or a.distill_states > 0 or a.lac_words:
        from emotag.aspects.lac import PIP_HINT, Lac

        if not a.lac:
            raise SystemExit(f"--lac-emb / --lac-words / --distill need --lac DIR (the extracted lac sdist): {PIP_HINT}")
        lac = Lac.load(a.lac)
        if a.distill > 0 or a.distill_states > 0:
            t_lac = time.time()
            aux, aux_states = lac.run(texts, batch=128, states=a.distill_states > 0)
            print(f"neural: LAC tags for {len(texts):,} texts in {time.time() - t_lac:.0f} s", flush=True)
        if a.lac_words:
            words = lac_word_table(lac, texts, Path(a.data), a.lac_words)

    def tune_score(tagger: object) -> float:
        ex = AspectExtractor(tagger, cats)  # type: ignore[arg-type]
        pred = [[u.to_dict() for u in us] for us in ex.extract_many([d["text"] for d in tune])]
        g = [d["triples"] for d in tune]
        (e, ep, er), (s, sp, sr) = triple_f1(g, pred, False), triple_f1(g, pred, True)
        fp = sum(bool(us) for us in ex.extract_many(tune_free)) / max(len(tune_free), 1)
        print(f"  tune exact {e:.4f} (p {ep:.3f} r {er:.3f}) soft {s:.4f} (p {sp:.3f} r {sr:.3f}); "
              f"units in {fp:.3f} of {len(tune_free)} opinion-free clauses", flush=True)
        return e + s

    tagger, log = train_neural(texts, gold, fold_patterns, folds, shipped,
                               Path(a.chars_from), tune_score, epochs=a.neural_epochs,
                               width=a.width, dilations=[int(x) for x in a.dilations.split(",")],
                               batch=a.neural_batch, lr=a.lr, dropout=a.dropout, seed=a.seed,
                               max_minutes=a.neural_minutes, checkpoint=Path(a.checkpoint), ema=a.ema,
                               bigram_min_count=a.bigrams, lac=lac, lac_emb=a.lac_emb, aux_tags=aux,
                               distill=a.distill, aux_states=aux_states, distill_states=a.distill_states,
                               words=words)
    # the outside tag's bias, on the tuning half (a decoding choice: trades span precision for recall)
    base = tagger.o_bias
    sweep = {}
    for delta in (-0.3, -0.15, 0.0, 0.15, 0.3):
        tagger.o_bias = base + delta
        sweep[delta] = tune_score(tagger)
        print(f"  o_bias {tagger.o_bias:+.2f}: tune {sweep[delta]:.4f}", flush=True)
    tagger.o_bias = base + max(sweep, key=lambda d: (sweep[d], -abs(d)))
    log["o_bias"] = tagger.o_bias
    tagger.save(out)
    log["seconds"] = round(time.time() - t0)
    print(f"neural stage: {log['seconds']} s", json.dumps(log), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", default=str(ROOT / "emotag" / "aspects" / "resources"))
    ap.add_argument("--epochs", type=int, default=24, help="at most; early stopping on the tuning half ends sooner")
    ap.add_argument("--report", action="store_true", help="also score the report half of dev (do this once)")
    ap.add_argument("--eval-only", action="store_true", help="evaluate the resources in --out, train nothing")
    ap.add_argument("--train-sample", type=int, default=0,
                    help="with --eval-only: also score N seeded training sentences (fit, not generalisation)")
    ap.add_argument("--vectors", action="store_true", help="rebuild the category vectors too")
    ap.add_argument("--batch", type=int, default=2, help="sentences per perceptron step")
    ap.add_argument("--features", default="prior,wide,ahead,clause",
                    help="optional feature groups, comma-separated (features.EXTRA_GROUPS); '' = the base templates")
    ap.add_argument("--early-stop", action=argparse.BooleanOptionalAction, default=True,
                    help="score every epoch on the tuning half (exact + soft triple F1), keep the best")
    ap.add_argument("--seed", type=int, default=0, help="order of the training sentences")
    ap.add_argument("--patience", type=int, default=3, help="early stopping: epochs without a tuning-half gain")
    ap.add_argument("--max-features", type=int, default=300_000, help="keep at most this many features (model size)")
    ap.add_argument("--min-count", type=int, default=2, help="keep features seen at least this often")
    ap.add_argument("--prune", type=float, default=0.01,
                    help="drop features whose largest averaged weight is below this share of the largest")
    ap.add_argument("--limit", type=int, default=0, help="train on the first N sentences only (quick checks)")
    ap.add_argument("--neural", action=argparse.BooleanOptionalAction, default=True,
                    help="also train the neural tagger (torch, CPU, one thread; the extractor uses it when "
                         "neural.npz is there); --no-neural rebuilds the perceptron alone, without torch")
    ap.add_argument("--checkpoint", default=str(ROOT / "build" / "aspects_neural"),
                    help="neural tagger: the best epoch's torch weights go here (never into --out)")
    ap.add_argument("--neural-only", action="store_true",
                    help="train only the neural tagger, on the perceptron resources already in --out")
    ap.add_argument("--chars-from", default=str(ROOT / "models" / "emotag-zh-small"),
                    help="neural tagger: the emotag network whose token table gives the characters' starting "
                         "rows (the shipped tagger's came from model v0.4.1: docs/aspects.md)")
    ap.add_argument("--width", type=int, default=64, help="neural tagger: channels")
    ap.add_argument("--dilations", default="1,2,4,8", help="neural tagger: one residual conv block per dilation")
    ap.add_argument("--neural-epochs", type=int, default=16, help="neural tagger: at most this many epochs")
    ap.add_argument("--neural-minutes", type=float, default=25.0, help="neural tagger: stop before this wall time")
    ap.add_argument("--lr", type=float, default=2e-3, help="neural tagger: Adam learning rate")
    ap.add_argument("--dropout", type=float, default=0.2, help="neural tagger: dropout")
    ap.add_argument("--bigrams", type=int, default=0,
                    help="neural tagger: also a table of the character bigrams seen this often (0 = none)")
    ap.add_argument("--opinion-free", type=float, default=0.1,
                    help="neural tagger: opinion-free clauses added as sentences, as a share of the training sentences")
    ap.add_argument("--ema", type=float, default=0.999, help="neural tagger: weight average per step (0 = off)")
    ap.add_argument("--neural-batch", type=int, default=32, help="neural tagger: sentences per step")
    ap.add_argument("--lac", default="", help="neural tagger: Baidu LAC (the extracted lac 2.1.2 sdist, or its "
                    "LAC/lac_model), read at training time only")
    ap.add_argument("--lac-emb", action=argparse.BooleanOptionalAction, default=False,
                    help="neural tagger: LAC's character rows beside the bundled network's (needs --lac)")
    ap.add_argument("--lac-words", type=int, default=0,
                    help="neural tagger: a table of the words LAC segments (with their part of speech) in the training "
                         "sentences and this many reviews; read at scoring time by hashing (needs --lac; 0 = off)")
    ap.add_argument("--distill-states", type=float, default=0.0,
                    help="neural tagger: weight of a training-only head regressing LAC's BiGRU states (needs --lac)")
    ap.add_argument("--distill", type=float, default=0.0,
                    help="neural tagger: weight of a training-only head predicting LAC's tag per character (needs --lac)")
    a = ap.parse_args()
    data = Path(a.data)
    train = read_aste(data / "chinese_aste" / "train.jsonl")
    if a.limit:
        train = train[:a.limit]
    dev = read_aste(data / "chinese_aste" / "dev.jsonl")
    # the project's tune/report halves (emotag.train.corpora.dev_half_of): every choice on "tune"
    tune = [d for d in dev if dev_half_of(d["text"]) == "tune"]
    report = [d for d in dev if dev_half_of(d["text"]) == "report"]
    from emotag.aspects.categories import CategorySet, builtin_terms, train_vectors

    seeds = [normalize_aligned(t) for t in [*builtin_terms(), *PRODUCT_TERMS]]
    out = Path(a.out)
    if a.eval_only:
        ex = AspectExtractor.load(path=out)
        evaluate(ex, tune, "dev-tune")
        if a.train_sample:  # how well the tagger fits its own training sentences (docs/aspects.md, Limits)
            rng = np.random.default_rng(0)
            evaluate(ex, [train[i] for i in sorted(rng.choice(len(train), min(a.train_sample, len(train)),
                                                              replace=False))], "train-sample")
        if a.report:
            evaluate(ex, report, "dev-report")
            evaluate_ood(ex, data)
        return
    extra = tuple(x for x in a.features.split(",") if x)
    if a.neural_only:
        cats = CategorySet.builtin(out)
        train_neural_stage(a, train, tune, seeds, out, cats)
        ex = AspectExtractor.load(path=out)
        evaluate(ex, tune, "dev-tune")
        if a.report:
            evaluate(ex, report, "dev-report")
        return
    if a.vectors or not (out / "vectors.npz").exists():
        train_vectors(data, out)
    cats = CategorySet.builtin(out)
    t_stage = time.time()

    def tune_score(tagger: SpanTagger) -> float:
        gold = [d["triples"] for d in tune]
        pred = [[u.to_dict() for u in us] for us in AspectExtractor(tagger, cats).extract_many([d["text"] for d in tune])]
        return triple_f1(gold, pred, False)[0] + triple_f1(gold, pred, True)[0]

    tagger = train_tagger(train, seeds, a.epochs, batch=a.batch, extra=extra, min_count=a.min_count, prune=a.prune,
                          max_features=a.max_features, patience=a.patience, seed=a.seed,
                          score=tune_score if a.early_stop else None)
    tagger.lexicons["temperature"] = [1.0]
    tagger.save(out)
    print(f"perceptron stage: {time.time() - t_stage:.0f} s", flush=True)
    if a.neural:
        train_neural_stage(a, train, tune, seeds, out, cats)
    else:  # a perceptron-only rebuild: the extractor must not pick up an older neural tagger
        for name in ("neural.npz", "neural_vocab.json"):
            (out / name).unlink(missing_ok=True)
    ex = AspectExtractor.load(path=out)
    evaluate(ex, tune, "dev-tune")
    if a.report:
        evaluate(ex, report, "dev-report")
        evaluate_ood(ex, data)
    sizes = {p.name: p.stat().st_size for p in out.iterdir() if p.is_file()}
    print("resources:", json.dumps(sizes))


if __name__ == "__main__":
    main()
