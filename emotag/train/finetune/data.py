"""The data of a fine-tuning run: a labelled table -> `Example`s, the dev split, the class weights.

Tables are read with `emotag.io` (the readers `emotag score` and `emotag eval` use), so `emotag train`
accepts every format and encoding they accept: csv, tsv, jsonl, json, parquet, xlsx; UTF-8, BOM, GB18030.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emotag import labels as L
from emotag.train.corpora import Example
from emotag.train.finetune.labelplan import PARTIAL_SEP, LabelPlan, finite_number

log = logging.getLogger("emotag.finetune")

DEV_FRACTION = 0.12  # of the training file, when no dev file is given
CLASS_WEIGHT_CLIP = (0.2, 5.0)  # inverse-frequency row weights are clipped to this range
_TRUE = {"1", "t", "true", "yes", "y", "是", "真"}
_FALSE = {"0", "f", "false", "no", "n", "否", "假"}  # an empty cell is no answer: the row is skipped
_WHOLE = re.compile(r"[+-]?\d+\.0*")  # "1.0", "-2.00": a whole number written as a float (pandas, Excel)


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
    """A label cell as a clean string: 1.0 and "1.0" -> "1", " a " -> "a", True -> "1", NaN/None/"" -> None.

    A JSON list or object is no label (its Python repr would become a class of its own): None, so the row
    is skipped and counted like an empty one.
    """
    if v is None or isinstance(v, (list, tuple, dict, set)):
        return None
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float):
        if math.isnan(v):
            return None
        if v.is_integer():
            return str(int(v))
    s = str(v).strip()
    if _WHOLE.fullmatch(s):  # so "1.0" and "1" in one CSV column are one class, as 1.0 and 1 in JSON are
        s = str(int(float(s)))
    return s or None


def _text(v: Any, numbers_are_text: bool = False) -> str | None:
    """A text cell, stripped; None (a skipped row) when empty or not a string: a number, list or object is no
    text, the rule `emotag score` applies ("text is not a string"). Spreadsheets (`numbers_are_text`) are
    the exception, as there too: Excel stores a review typed as 666 as a number."""
    if numbers_are_text and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return cell(v)
    return (v.strip() or None) if isinstance(v, str) else None


def regression_value(v: str, path: Path | str, row: int, col: str) -> float:
    """A regression cell (already `cell`-cleaned) as a finite number, or a one-line error naming file, row
    (0-based `row`, shown 1-based) and column."""
    y = finite_number(v)
    if y is None:
        raise ValueError(f"{path}: row {row + 1}, column {col!r}: {v!r} is not a number (task 'regression')")
    return y


def _flag(v: Any, col: str, row: int, path: Path) -> bool | None:
    """A multi-label flag cell: True/False, or None when the cell is empty (the row is skipped)."""
    s = cell(v)
    if s is None:
        return None
    s = s.lower()
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
    """Rows -> Examples, skipping rows without a text or a label (an empty cell, a text that is not a string,
    a JSON list or object, an empty flag cell); the returned int counts skipped rows."""
    out: list[Example] = []
    skipped = 0
    texts = rows[text_col]
    sheet = path.suffix.lower() == ".xlsx"  # emotag.io reads xlsx number cells as text, the others not
    for i, t in enumerate(texts):
        text = _text(t, sheet)
        if not text:
            skipped += 1
            continue
        if plan.multi_label and not plan.regression:
            flags = [_flag(rows[c][i], c, i, path) for c in label_cols]
            if None in flags:  # an unanswered flag is not a "no": training on it as 0 would teach a wrong label
                skipped += 1
                continue
            out.append(Example(text, "finetune", emotions=tuple(c for c, f in zip(label_cols, flags, strict=True) if f)))
            continue
        v = cell(rows[label_cols[0]][i])
        if v is None:
            skipped += 1
            continue
        if plan.regression:
            y = regression_value(v, path, i, label_cols[0])
            out.append(ScoredExample(text, "finetune", emotions=plan.labels, target=float(plan.unit(y))))
            continue
        if v not in plan.value_map:
            raise ValueError(f"{path}: row {i + 1}, column {label_cols[0]!r}: unknown label {v!r} "
                             f"(labels: {', '.join(plan.value_map)})")
        lab = plan.value_map[v]
        if plan.task == "polarity":
            out.append(Example(text, "finetune", polarity=lab))
        else:
            emos = plan.targets(v)  # a custom label holding "|" stays one label (only SMP2020's are sets)
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


def split_dev(rows: list[Example], plan: LabelPlan, seed: int, where: str = ""
              ) -> tuple[list[Example], list[Example]]:
    """Stratified hold-out of DEV_FRACTION (`where` prefixes error messages: the file name).

    Every class keeps at least one row in training: a class with one row stays there (dev would measure a
    label the model never saw), a class with more gives dev at most all but one. Multi-label rows, whose
    label sets are too varied to stratify on, fall back to a plain random split when a set is too rare.
    """
    if len(rows) < 10:
        raise ValueError(f"{where}only {len(rows)} labelled rows: too few to hold out a dev set; add rows or pass "
                         "--dev FILE")
    keys = [label_key(e, plan) for e in rows]
    counts = Counter(keys)
    n_dev = max(math.ceil(len(rows) * DEV_FRACTION), len(counts))
    rng = np.random.default_rng(seed)
    if plan.multi_label and not plan.regression and not (min(counts.values()) >= 2 and
                                                         n_dev < len(rows) - len(counts)):
        log.warning("a label set has fewer than 2 rows: dev split is random, not stratified")
        chosen = set(rng.permutation(len(rows))[:n_dev].tolist())
        return [e for i, e in enumerate(rows) if i not in chosen], [rows[i] for i in sorted(chosen)]
    by_class: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        by_class.setdefault(k, []).append(i)
    # per class, its share of n_dev (at least one row, at most all but one); a single row stays in training
    quota = {k: min(len(ix) - 1, max(1, math.floor(len(ix) * n_dev / len(rows)))) for k, ix in by_class.items()}
    dev_idx = [i for k, ix in by_class.items() if quota[k] > 0 for i in rng.permutation(ix)[: quota[k]].tolist()]
    if not dev_idx:
        raise ValueError(f"{where}{len(rows)} labelled rows in {len(counts)} classes, none with more than one row: "
                         "too few rows per class to hold out a dev split; pass --dev FILE or add rows")
    single = sorted(k for k, q in quota.items() if q == 0)
    if single:
        log.warning("%d class(es) with a single row stay in training and are not measured on dev: %s",
                    len(single), ", ".join(single[:5]) + (" ..." if len(single) > 5 else ""))
    chosen = set(dev_idx)
    return [e for i, e in enumerate(rows) if i not in chosen], [rows[i] for i in sorted(chosen)]
