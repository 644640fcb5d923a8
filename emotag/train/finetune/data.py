"""The data of a fine-tuning run: a labelled table -> `Example`s, the dev split, the class weights.

Tables are read with `emotag.io` (the readers `emotag score` and `emotag eval` use), so `emotag train`
accepts every format and encoding they accept: csv, tsv, jsonl, json, parquet, xlsx; UTF-8, BOM, GB18030.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emotag import labels as L
from emotag.train.corpora import Example
from emotag.train.finetune.labelplan import PARTIAL_SEP, LabelPlan

log = logging.getLogger("emotag.finetune")

DEV_FRACTION = 0.12  # of the training file, when no dev file is given
CLASS_WEIGHT_CLIP = (0.2, 5.0)  # inverse-frequency row weights are clipped to this range
_TRUE = {"1", "t", "true", "yes", "y", "是", "真"}
_FALSE = {"0", "f", "false", "no", "n", "否", "假", ""}


@dataclass
class ScoredExample(Example):
    """A regression row: `target` is its value on the read-out's 0..1 (`LabelPlan.unit`)."""

    target: float = float("nan")


def read_table(path: str | os.PathLike[str], columns: Sequence[str]) -> dict[str, list[Any]]:
    """The given columns of a labelled file, as lists (a cell missing from a record is None).

    Raises FileNotFoundError for a missing file, ValueError naming the file for a missing column, and
    `emotag.io.InputError` (file, row, problem) for a malformed one.
    """
    from emotag.io import read_text_records

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    records = list(read_text_records(str(p)))
    seen: dict[str, None] = {}
    for rec in records:
        seen.update(dict.fromkeys(rec))
    missing = [c for c in columns if c not in seen]
    if missing:
        raise ValueError(f"{p}: no column {missing[0]!r} (columns: {', '.join(seen) or 'none'})")
    return {c: [rec.get(c) for rec in records] for c in dict.fromkeys(columns)}


def cell(v: Any) -> str | None:
    """A label cell as a clean string: 1.0 -> "1", True -> "1", NaN/None/"" -> None."""
    if v is None:
        return None
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float):
        if math.isnan(v):
            return None
        if v.is_integer():
            return str(int(v))
    s = str(v).strip()
    return s or None


def _flag(v: Any, col: str, row: int, path: Path) -> bool:
    s = cell(v)
    s = "" if s is None else s.lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise ValueError(f"{path}: row {row + 1}, column {col!r}: {v!r} is not a 0/1 or T/F flag")


def label_values(rows: dict[str, list[Any]], label_cols: Sequence[str]) -> set[str]:
    """The distinct label values of a single-column task (empty for multi-label flag columns)."""
    if len(label_cols) > 1:
        return set()
    return {v for v in (cell(x) for x in rows[label_cols[0]]) if v is not None}


def examples(rows: dict[str, list[Any]], text_col: str, label_cols: Sequence[str], plan: LabelPlan,
             path: Path) -> tuple[list[Example], int]:
    """Rows -> Examples (skipping rows without text or label); the returned int counts skipped rows."""
    out: list[Example] = []
    skipped = 0
    texts = rows[text_col]
    for i, t in enumerate(texts):
        text = cell(t) if not isinstance(t, str) else t.strip()
        if not text:
            skipped += 1
            continue
        if plan.multi_label and not plan.regression:
            present = tuple(c for c in label_cols if _flag(rows[c][i], c, i, path))
            out.append(Example(text, "finetune", emotions=present))
            continue
        v = cell(rows[label_cols[0]][i])
        if v is None:
            skipped += 1
            continue
        if plan.regression:
            try:
                y = float(v)
            except ValueError:
                y = float("nan")
            if not math.isfinite(y):
                raise ValueError(f"{path}: row {i + 1}, column {label_cols[0]!r}: {v!r} is not a number "
                                 "(task 'regression')")
            out.append(ScoredExample(text, "finetune", emotions=plan.labels, target=float(plan.unit(y))))
            continue
        if v not in plan.value_map:
            raise ValueError(f"{path}: row {i + 1}, column {label_cols[0]!r}: unknown label {v!r} "
                             f"(labels: {', '.join(plan.value_map)})")
        lab = plan.value_map[v]
        if plan.task == "polarity":
            out.append(Example(text, "finetune", polarity=lab))
        else:
            emos = tuple(lab.split(PARTIAL_SEP))
            pols = {L.EMOTION_POLARITY.get(e) for e in emos} if plan.default_taxonomy else {None}
            out.append(Example(text, "finetune", emotions=emos, polarity=pols.pop() if len(pols) == 1 else None))
    return out, skipped


def label_key(ex: Example, plan: LabelPlan) -> str:
    """A row's class as one string: its label, a partial label's set, or a multi-label row's label set."""
    if plan.task == "polarity":
        return ex.polarity or ""
    if plan.regression:
        return ""
    if plan.multi_label:
        return "|".join(sorted(ex.emotions or ()))
    return PARTIAL_SEP.join(ex.emotions or ("",))


def class_weights(rows: Sequence[Example], plan: LabelPlan) -> dict[str, float]:
    """Inverse-frequency weight per label (clipped, mean row weight 1): rare classes count more.

    Multi-label rows get the mean weight of their positive labels (1 for a row with none).
    """
    lo, hi = CLASS_WEIGHT_CLIP
    if plan.regression:
        return {}  # no classes: every row weighs 1
    keys = [label_key(e, plan) for e in rows]
    if plan.multi_label:
        n = len(rows)
        counts = Counter(lab for e in rows for lab in (e.emotions or ()))
        per = {lab: float(np.clip(n / (len(plan.labels) * max(counts[lab], 1)), lo, hi)) for lab in plan.labels}
        row = [float(np.mean([per[x] for x in e.emotions])) if e.emotions else 1.0 for e in rows]
    else:
        counts = Counter(keys)
        per = {k: float(np.clip(len(keys) / (len(counts) * c), lo, hi)) for k, c in counts.items()}
        row = [per[k] for k in keys]
    mean = float(np.mean(row)) if row else 1.0
    return {k: round(w / mean, 4) for k, w in zip(keys, row, strict=True)}


def split_dev(rows: list[Example], plan: LabelPlan, seed: int) -> tuple[list[Example], list[Example]]:
    """Stratified hold-out of DEV_FRACTION; falls back to a plain random split when a class is too rare."""
    if len(rows) < 10:
        raise ValueError(f"only {len(rows)} labelled rows: too few to hold out a dev set; add rows or pass --dev")
    keys = [label_key(e, plan) for e in rows]
    counts = Counter(keys)
    n_dev = max(math.ceil(len(rows) * DEV_FRACTION), len(counts))
    rng = np.random.default_rng(seed)
    if min(counts.values()) >= 2 and n_dev < len(rows) - len(counts):
        # per class, its share of n_dev (at least one row), by largest remainder
        by_class: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            by_class.setdefault(k, []).append(i)
        quota = {k: max(1, math.floor(len(ix) * n_dev / len(rows))) for k, ix in by_class.items()}
        dev_idx = [i for k, ix in by_class.items() for i in rng.permutation(ix)[: quota[k]].tolist()]
    else:
        log.warning("a class has fewer than 2 rows: dev split is random, not stratified")
        dev_idx = rng.permutation(len(rows))[:n_dev].tolist()
    chosen = set(dev_idx)
    return [e for i, e in enumerate(rows) if i not in chosen], [rows[i] for i in sorted(chosen)]
