"""`emotag eval MODEL DATA`: the judged metrics for any model on any labelled file (SPEC §1 mappings).

The file kind is recognised from its columns, and each kind is scored the way the project is judged
(`../shared/tools/cli_eval.py`): SMP2020 6-way macro-F1 with happy = like+happiness and
angry = anger+disgust, CLUE 7-way accuracy over the non-neutral emotions, polarity accuracy of
sign(polarity_score), Pearson r for CVAT valence/arousal and STC-3 satisfaction, triple F1 (exact and
soft) of `--aspects` for aspect files ({"text", "triples"} JSONL, SPEC §7). A file with a `text`
and a `label` column in the model's own label set (a fine-tuned model) gets accuracy and macro-F1; a
regression model (`emotag train --task regression`) gets Pearson r and MAE of the records' `score` against
the file's column of that name (or `label`), computed as the training report computes them.
"""

from __future__ import annotations

import csv
import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emotag import labels as L
from emotag.metrics import macro_f1, pearson
from emotag.tagger import Result, Tagger
from emotag.train.finetune.labelplan import POLARITY_ALIASES, LabelPlan, finite_number, numeric_polarity

__all__ = ["evaluate_file", "macro_f1", "pearson"]  # macro_f1, pearson: emotag.metrics, kept importable here

csv.field_size_limit(10**9)


# the columns each labelled format reads its texts from (`_kind`'s scorers); a fine-tuned model's own
# text column (`--text-col`) is added per model
TEXT_COLUMNS = ("text", "review", "content", "Text", "Utterance", "text_segmented")


def _rows(path: Path, text_cols: set[str]) -> tuple[list[str], list[dict[str, str]]]:
    """Columns and rows of a labelled file, every value as text ('' when blank, missing or no value).

    Read with emotag's own readers (encoding detection: UTF-8, BOM, GBK; quoted cells; errors that name
    the file and row), and each cell the way `emotag train` reads it (`finetune.data`: one home for the
    rules), so that eval scores the rows training measured and skips the rows it skipped: a text column's
    cell through `_text` (a number, list or object is no text, except a spreadsheet's number), any other
    through `cell` (1 and 1.0 and "1" one label; NaN, a list or an object no value).
    """
    from emotag.io import read_text_records
    from emotag.train.finetune.data import _text, cell

    if path.suffix.lower() == ".txt":  # (the shared reader's word for it is about writing)
        raise ValueError(f"{path}: a labelled file needs columns (csv, tsv, jsonl, json, xlsx, parquet); "
                         "a .txt file holds texts only")
    sheet = path.suffix.lower() == ".xlsx"  # as `finetune.data.examples`: Excel stores a typed 666 as a number
    rows: list[dict[str, str]] = []
    cols: dict[str, None] = {}
    for rec in read_text_records(str(path)):
        cols.update(dict.fromkeys(rec))
        rows.append({k: (_text(v, sheet) if k in text_cols else cell(v)) or "" for k, v in rec.items()})
    for r in rows:
        for c in cols:
            r.setdefault(c, "")
    return list(cols), rows


def _polarity_gold(path: Path, rows: list[tuple[int, dict[str, str]]]) -> list[str]:
    """Gold polarity per (file row number, row) from 1/0, -1/0/1, pos/neg, positive/negative, 正面/负面,
    好评/差评 ... (the aliases `emotag train` maps polarity labels with, so both read a file the same way)."""
    values = {r["label"] for _, r in rows}
    # a binary review file whose sample holds one class only (the head of a sorted file) is still 0/1
    numeric = numeric_polarity(values) or (numeric_polarity(values | {"0", "1"}) if values <= {"0", "1"} else None) or {}
    gold = []
    for i, r in rows:
        v = numeric.get(r["label"]) or POLARITY_ALIASES.get(r["label"].lower())
        if v is None:
            raise ValueError(f"{path}: row {i}: polarity label {r['label']!r} is not one of 1/0, pos/neg, 正面/负面")
        gold.append(v)
    return gold


def _reads_as_polarity(values: set[str]) -> bool:
    return bool(values) and (numeric_polarity(values) is not None
                             or all(v.lower() in POLARITY_ALIASES for v in values))


def _score(tagger: Tagger, texts: list[str], batch_size: int) -> list[Result]:
    return list(tagger.tag_many(texts, batch_size=batch_size))


def _p(r: Result, k: str) -> float:
    return (r.emotions or {}).get(k, 0.0)


def _ps(r: Result) -> float:
    return r.polarity_score or 0.0


def evaluate_file(tagger: Tagger, data: str | Path, batch_size: int = 64) -> dict[str, Any]:
    """Metrics for one labelled file; raises ValueError when the columns match no known kind."""
    path, span = Path(str(data)), ""
    if not path.exists() and "@" in str(data):  # "file@A:B": a slice of an STC-3 file (a path may hold an @)
        raw, _, span = str(data).rpartition("@")
        path = Path(raw)
        if not path.exists():
            raise FileNotFoundError(f"{data}: no such file")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.name.endswith(".json.gz") or path.name.startswith("train_data_cn"):
        # STC-3 dialogues; "file@A:B" scores dialogues A..B only (e.g. a held-out dev slice)
        return _stc3(tagger, path, batch_size, _span(path, span))
    if span:
        raise ValueError(f"{path}@{span}: a slice (@A:B) applies to STC-3 dialogue files only")
    trained = _trained(tagger)
    cols, rows = _rows(path, set(TEXT_COLUMNS) | ({trained.text} if trained.text else set()))
    if not rows:
        raise ValueError(f"{path}: no labelled rows")
    cols = _alias_trained_columns(trained, cols, rows)
    f = _File(path, cols, rows, tagger, trained)
    kind = _kind(f)
    if kind is None:
        raise ValueError(f"{path}: columns {cols[:8]} match no known labelled format (see `emotag eval --help`)")
    metrics, out = _SCORERS[kind](f, batch_size)
    return {"file": str(path), "n": len(rows), "kind": kind, **metrics, "errors": sum(1 for o in out if o.error)}


class _File:
    """A labelled file as the kind dispatch sees it: its columns, rows, label values and the model."""

    def __init__(self, path: Path, cols: list[str], rows: list[dict[str, str]], tagger: Tagger,
                 trained: _Trained | None = None) -> None:
        self.path, self.cols, self.rows, self.tagger = path, set(cols), rows, tagger
        self.trained = trained or _Trained()
        self.trained_text, self.trained_labels = self.trained.text, self.trained.labels
        self.values = {r["label"] for r in rows if r.get("label")} if "label" in self.cols else set()
        self.own = set(tagger.config.emotion_labels)
        self.taxonomy = self.own == set(L.EMOTIONS)

    def numbered(self, col: str, key: str | None = None) -> list[tuple[int, dict[str, str]]]:
        """The rows with text in `col` (and a value in `key`), each with its row number in the file (1-based,
        as `emotag train` numbers rows), so an error names the row the user sees, whatever was skipped."""
        return [(i, r) for i, r in enumerate(self.rows, start=1) if r.get(col) and (key is None or r.get(key))]

    def scored(self, col: str, key: str | None = None, batch_size: int = 64) -> tuple[list[dict[str, str]], list[Result]]:
        """The rows with text in `col` (and a value in `key`), with their results."""
        rows = [r for _, r in self.numbered(col, key)]
        return rows, _score(self.tagger, [r[col] for r in rows], batch_size)

    def trained_as(self, task: str) -> bool:
        """Whether this file is the kind the model was trained on for `task` (its eval_report.json): the
        model's text and label columns, and label values it was trained with (as `emotag train` read them,
        in any case). Why: `emotag eval` on the training or dev file must reproduce the report's numbers,
        whatever else the columns look like (an emotion file with a `review` column is no polarity set)."""
        t = self.trained
        if t.task != task or not t.text or len(t.labels) != 1 or not {t.text, t.labels[0]} <= self.cols:
            return False
        known = {v.lower() for v in t.values}
        return bool(self.values) and {v.lower() for v in self.values} <= known


def _kind(f: _File) -> str | None:
    """Which labelled format a file is, from its columns and label values (first match wins)."""
    c, values = f.cols, f.values
    text_label = {"text", "label"} <= c
    scale = Result.scale_of(f.tagger.config.emotion_labels)
    checks = (
        ("regression", scale is not None and _text_column(f) is not None and bool({scale[0], "label"} & c)),
        ("aste", "text" in c and bool({"triples", "quads"} & c)),  # SPEC §7 aspect triples (chinese_aste)
        # SMP2020's six labels in any case (HAPPY, Angry), as `emotag train` reads them
        ("smp2020", text_label and (low := {v.lower() for v in values}) <= set(L.SMP2020)
         and bool(low & {"happy", "angry", "sad"}) and f.taxonomy),
        ("clue", {"content", "label"} <= c and f.taxonomy),
        # review + label is a polarity set, unless the labels are the model's own (a custom-label model
        # trained on a review column: 表扬/投诉)
        # (and never the file of an emotion model trained on a review column: it is read as it was trained)
        ("polarity", not f.trained_as("emotion") and (
            ({"review", "label"} <= c and not (values and values <= f.own and not f.taxonomy))
            or (text_label and bool(f.tagger.config.polarity_labels)
                and _reads_as_polarity(values) and not values <= f.own))),
        ("stars", {"text", "stars"} <= c),
        ("cvat", {"Text", "Valence_Mean", "Arousal_Mean"} <= c),
        ("nlpcc", f.taxonomy and ({"text", "emotion1"} <= c or (text_label and values <= set(L.NLPCC)
                                                                   and "none" in values))),
        ("codeswitch", "text_segmented" in c and set(L.CODESWITCH_FLAGS) <= c),
        ("cped", {"Utterance", "Emotion", "Sentiment"} <= c),
        ("multilabel", len(f.trained_labels) > 1 and set(f.trained_labels) <= c
         and list(f.tagger.config.emotion_labels) == f.trained_labels),
        ("labels", text_label),
    )
    return next((kind for kind, ok in checks if ok), None)


def _acc(a: list[Any], b: list[Any]) -> float:
    return float(np.mean([x == y for x, y in zip(a, b, strict=True)]))


def _smp2020(f: _File, bs: int) -> tuple[dict[str, Any], list[Result]]:
    rows, out = f.scored("text", "label", bs)
    merge = L.SMP2020
    pred = [max(merge, key=lambda k, r=r: sum(_p(r, e) for e in merge[k])) for r in out]
    gold = [r["label"].lower() for r in rows]
    return {"n": len(rows), "macroF1": macro_f1(gold, pred, list(merge)), "accuracy": _acc(pred, gold)}, out


def _clue(f: _File, bs: int) -> tuple[dict[str, Any], list[Result]]:
    rows, out = f.scored("content", "label", bs)
    pred = [max(L.EMOTIONS[1:], key=lambda k, r=r: _p(r, k)) for r in out]
    gold = [r["label"] for r in rows]
    return {"accuracy": _acc(pred, gold), "macroF1": macro_f1(gold, pred, L.EMOTIONS[1:])}, out


def _polarity(f: _File, bs: int) -> tuple[dict[str, Any], list[Result]]:
    col = "review" if "review" in f.cols else "text"
    numbered = f.numbered(col, "label")
    gold = _polarity_gold(f.path, numbered)  # before scoring: a bad label is named without waiting for it
    rows = [r for _, r in numbered]
    out = _score(f.tagger, [r[col] for r in rows], bs)
    binary = [(o, g) for o, g in zip(out, gold, strict=True) if g != "neutral"]
    res: dict[str, Any] = {"n": len(rows),
                           "accuracy": float(np.mean([(_ps(o) > 0) == (g == "positive") for o, g in binary]))}
    if len(binary) < len(rows):  # three-way gold: the polarity label itself is judged too
        pred = [o.polarity or "" for o in out]
        res.update(accuracy3=_acc(gold, pred), macroF1=macro_f1(gold, pred, [p for p in L.POLARITY if p in set(gold)]))
    return res, out


def _number(f: _File, key: str, text: str, whole: bool = False) -> list[float]:
    """Column `key` of every row with a `text` (`_File.numbered`: the rows that are scored) as a number (a
    whole one with `whole`: star ratings 1-5), or a one-line error naming the file, the row and the value
    (an empty cell, 4.5 stars, 五星)."""
    out = []
    for i, r in f.numbered(text):
        x = finite_number((r.get(key) or "").strip())
        if x is None or (whole and x != int(x)):
            raise ValueError(f"{f.path}: row {i}: {key} {r.get(key)!r} is not a {'whole ' if whole else ''}number")
        out.append(x)
    return out


def _stars(f: _File, bs: int) -> tuple[dict[str, Any], list[Result]]:
    stars = _number(f, "stars", "text", whole=True)
    out = _score(f.tagger, [r["text"] for _, r in f.numbered("text")], bs)  # rows without a text are skipped
    pairs = [(_ps(o), int(st)) for o, st in zip(out, stars, strict=True)]
    binary = [(s, st) for s, st in pairs if st != 3]
    return {"n": len(out), "accuracy": float(np.mean([(s > 0) == (st > 3) for s, st in binary])),
            "stars_r": pearson([s for s, _ in pairs], [st for _, st in pairs])}, out


def _cvat(f: _File, bs: int) -> tuple[dict[str, Any], list[Result]]:
    valence, arousal = _number(f, "Valence_Mean", "Text"), _number(f, "Arousal_Mean", "Text")
    out = _score(f.tagger, [r["Text"] for _, r in f.numbered("Text")], bs)  # as `emotag train` skips them
    return {"n": len(out), "valence_r": pearson([_ps(o) for o in out], valence),
            "arousal_r": pearson([o.intensity or 0.0 for o in out], arousal)}, out


def _nlpcc(f: _File, bs: int) -> tuple[dict[str, Any], list[Result]]:
    key = "emotion1" if "emotion1" in f.cols else "label"
    rows = [r for r in f.rows if r.get("text") and r.get(key) in L.NLPCC]
    out = _score(f.tagger, [r["text"] for r in rows], bs)
    gold = [L.NLPCC[r[key]][0] for r in rows]
    pred = [o.emotion for o in out]
    return {"n": len(rows), "accuracy": _acc(gold, pred), "macroF1": macro_f1(gold, pred, L.EMOTIONS)}, out


def _codeswitch(f: _File, bs: int) -> tuple[dict[str, Any], list[Result]]:
    out = _score(f.tagger, [r["text_segmented"] for r in f.rows], bs)
    gold = [{e for e in L.CODESWITCH_FLAGS if r[e] == "T"} or {"neutral"} for r in f.rows]
    return {"accuracy": float(np.mean([o.emotion in g for o, g in zip(out, gold, strict=True)]))}, out


def _cped(f: _File, bs: int) -> tuple[dict[str, Any], list[Result]]:
    out = _score(f.tagger, [r["Utterance"] for r in f.rows], bs)
    emo = [(o, L.CPED_EMOTION[r["Emotion"]][0]) for o, r in zip(out, f.rows, strict=True)
           if r["Emotion"] in L.CPED_EMOTION]
    return {"emotion_accuracy": float(np.mean([o.emotion == g for o, g in emo])),
            "polarity_accuracy": _acc([o.polarity for o in out], [r["Sentiment"] for r in f.rows])}, out


def _labels(f: _File, bs: int) -> tuple[dict[str, Any], list[Result]]:
    """The model's own label set (a fine-tuned model), or the taxonomy by its Chinese names."""
    names = {lab: lab for lab in f.own} | ({zh: e for e, zh in L.EMOTION_ZH.items()} if f.taxonomy else {})
    names |= {k.lower(): v for k, v in names.items()}
    rows = [r for r in f.rows if r.get("text") and r.get("label")]
    bad = sorted({r["label"] for r in rows if r["label"] not in names and r["label"].lower() not in names})
    if bad:
        raise ValueError(f"{f.path}: labels {bad[:5]} are not in the model's label set {sorted(f.own)}")
    out = _score(f.tagger, [r["text"] for r in rows], bs)
    gold = [names.get(r["label"], names.get(r["label"].lower(), "")) for r in rows]
    pred = [o.emotion or "" for o in out]
    present = [lab for lab in f.tagger.config.emotion_labels if lab in set(gold)]  # as the training report
    return {"n": len(rows), "accuracy": _acc(gold, pred), "macroF1": macro_f1(gold, pred, present)}, out


def _multilabel(f: _File, bs: int) -> tuple[dict[str, Any], list[Result]]:
    """A multi-label model's flag columns (emotag train --label-col a,b,c), read as its training report reads
    its dev rows: per label p > 0.5 against the flag, macro/micro-F1 and exact match; a row with an empty
    flag is skipped, as in training."""
    from emotag.train.finetune.data import _flag
    from emotag.train.finetune.heads import head_metrics
    from emotag.train.finetune.labelplan import LabelPlan

    labels = list(f.tagger.config.emotion_labels)
    text = _text_column(f) or "text"
    rows, flags = [], []
    for i, r in enumerate(f.rows):
        got = [_flag(r.get(lab, ""), lab, i, f.path) for lab in labels]
        if r.get(text) and None not in got:
            rows.append(r)
            flags.append(got)
    out = _score(f.tagger, [r[text] for r in rows], bs)
    probs = np.array([[(o.emotions or {}).get(lab, 0.0) for lab in labels] for o in out])
    m = head_metrics(probs.reshape(len(rows), len(labels)), np.array(flags, dtype=float).reshape(len(rows), len(labels)),
                     LabelPlan("emotion", tuple(labels), True, False))
    return {k: m[k] for k in ("n", "exact_match", "macro_f1", "micro_f1")}, out


@dataclass(frozen=True)
class _Trained:
    """How a fine-tuned model was trained, as its eval_report.json records it: the task, the text and label
    columns (`--text-col`, `--label-col`) and the label values read; empty for a model without that report."""

    task: str | None = None
    text: str | None = None
    labels: list[str] = field(default_factory=list)
    values: list[str] = field(default_factory=list)


def _trained(tagger: Tagger) -> _Trained:
    """The model's `_Trained` record (an empty one when it has no readable eval_report.json)."""
    report = tagger.model_dir / "eval_report.json" if tagger.model_dir else None
    if report is None or not report.is_file():
        return _Trained()
    try:
        rep = json.loads(report.read_text(encoding="utf-8"))
        task, data = rep.get("task"), rep.get("data", {})
        text, labels, vm = data.get("text_col"), data.get("label_cols") or [], data.get("value_map") or {}
    except (OSError, ValueError, AttributeError):
        return _Trained()
    return _Trained(task if isinstance(task, str) else None, text if isinstance(text, str) else None,
                    [c for c in labels if isinstance(c, str)] if isinstance(labels, list) else [],
                    [v for v in vm if isinstance(v, str)] if isinstance(vm, dict) else [])


def _alias_trained_columns(trained: _Trained, cols: list[str], rows: list[dict[str, str]]) -> list[str]:
    """A dev file in the columns the model was trained with (`--text-col review --label-col sentiment`) is
    read as `text` / `label`, as `emotag train` read it: the numbers its report promises `emotag eval`
    reproduces come from the same file, not from one renamed for eval."""
    text, labels = trained.text, trained.labels
    alias = {}
    if text and text != "text" and text in cols and "text" not in cols:
        alias["text"] = text
    if len(labels) == 1 and labels[0] != "label" and labels[0] in cols and "label" not in cols:
        alias["label"] = labels[0]
    for r in rows:
        for new, old in alias.items():
            r[new] = r.get(old, "")
    return cols + list(alias)


def _text_column(f: _File) -> str | None:
    """The text column of a file for a fine-tuned model: `text`, `review`, or the column the model was
    trained with (`--text-col`, as its eval_report.json records it), whichever the file has."""
    names = ["text", "review"]
    if f.trained_text is not None:
        names.insert(0, f.trained_text)
    return next((n for n in names if n in f.cols), None)


def _regression(f: _File, bs: int) -> tuple[dict[str, Any], list[Result]]:
    """A regression model's `score` against the file's values (rows with a text and a number), the way
    `emotag train` measured its dev rows: values outside the model's scale count as its nearer end."""
    from emotag.train.finetune.data import regression_value
    from emotag.train.finetune.heads import regression_metrics

    name, lo, hi = Result.scale_of(f.tagger.config.emotion_labels) or ("", 0.0, 1.0)
    key = name if name in f.cols else "label"
    text = _text_column(f) or "text"
    plan = LabelPlan("regression", tuple(f.tagger.config.emotion_labels), True, False, scale=(lo, hi))
    numbered = f.numbered(text, key)
    # every value checked before any text is scored, with its row numbered as `emotag train` numbers it
    gold = [float(plan.on_scale(plan.unit(regression_value(r[key], f.path, i - 1, key)))) for i, r in numbered]
    out = _score(f.tagger, [r[text] for _, r in numbered], bs)
    pairs = [(o.score, y) for o, y in zip(out, gold, strict=True) if o.score is not None]
    m = regression_metrics([p for p, _ in pairs], [g for _, g in pairs])
    return {"n": m["n"], "pearson_r": m["pearson_r"], "mae": m["mae"], "rmse": m["rmse"]}, out


def _aste(f: _File, bs: int) -> tuple[dict[str, Any], list[Result]]:
    """Triple F1 (exact and soft) of `score --aspects` against {"text", "triples" | "quads"} records."""
    from emotag.aspects.metrics import triple_scores
    from emotag.io import read_text_records

    key = "triples" if "triples" in f.cols else "quads"
    recs = [r for r in read_text_records(str(f.path)) if isinstance(r.get("text"), str) and r["text"].strip()]
    out = list(f.tagger.tag_many([r["text"] for r in recs], batch_size=bs, aspects=True))
    gold = [[t for t in r.get(key) or [] if isinstance(t, dict)] for r in recs]
    pred = [[u.to_dict() for u in o.aspects or []] for o in out]
    return triple_scores(gold, pred), out


_SCORERS = {"regression": _regression, "aste": _aste, "smp2020": _smp2020, "clue": _clue, "polarity": _polarity, "stars": _stars, "cvat": _cvat,
            "nlpcc": _nlpcc, "codeswitch": _codeswitch, "cped": _cped, "multilabel": _multilabel, "labels": _labels}


def _span(path: Path, span: str) -> slice:
    """`A:B` (either end may be empty) as a slice, or a one-line error naming the file."""
    if not span:
        return slice(None)
    parts = span.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        a, b = (int(x) if x.strip() else None for x in parts)
    except ValueError:
        raise ValueError(f"{path}@{span}: a slice is @A:B with whole numbers (either may be empty)") from None
    return slice(a, b)


def _stc3(tagger: Tagger, path: Path, batch_size: int, span: slice | None = None) -> dict[str, Any]:
    from emotag.dialogues import Conversation, score_conversations

    op = gzip.open if path.name.endswith(".gz") else open
    try:
        with op(path, "rt", encoding="utf-8") as f:
            dialogs = json.load(f)
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as e:  # BadGzipFile is an OSError
        raise ValueError(f"{path}: not an STC-3 dialogue file (JSON, gzipped when .gz): {e}") from None
    if not isinstance(dialogs, list):
        raise ValueError(f"{path}: not an STC-3 dialogue file (a JSON list of dialogues)")
    first = 0 if span is None else range(len(dialogs))[span].start if dialogs else 0
    dialogs = dialogs if span is None else dialogs[span]
    convs, gold = [], []
    for i, x in enumerate(dialogs, start=first):
        try:
            turns = [{"speaker": "customer" if t["sender"] == "customer" else "agent", "text": u}
                     for t in x["turns"] for u in t["utterances"]]
            scores = [a["quality"]["S"] for a in x["annotations"]]
            gold.append(sum(scores) / len(scores))
        except (KeyError, TypeError, ZeroDivisionError):
            raise ValueError(f"{path}: dialogue {i}: needs turns (sender, utterances) and annotations with "
                             "quality.S") from None
        convs.append(Conversation(str(x.get("id", i)), turns))
    if len(convs) < 2:  # a correlation of fewer than two dialogues is no number to report
        raise ValueError(f"{path}: {len(convs)} dialogue{'s' if len(convs) != 1 else ''} in the slice; the "
                         "satisfaction correlation needs two or more")
    got = [r.get("satisfaction") or 0.0 for r in score_conversations(tagger, convs, batch_size)]
    where = f"{path}@{span.start if span.start is not None else ''}:{span.stop if span.stop is not None else ''}" \
        if span is not None and (span.start is not None or span.stop is not None) else str(path)
    return {"file": where, "kind": "stc3", "n": len(dialogs), "satisfaction_r": pearson(got, gold)}
