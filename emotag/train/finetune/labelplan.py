"""The label plan of a fine-tuning run: which head learns which labels, and where each label starts.

`plan_labels` decides the trained head's label set from the user's values (default taxonomy, custom
labels, multi-label columns, the polarity task); `head_sources` says which of the base model's own outputs
each custom label corresponds to (好评/差评, positive/negative, 1/0 -> the polarity head; emotion names in
Chinese or English -> the emotion head). A custom head starts from those rows, so a model fine-tuned on
labels the base already reads starts at the base's zero-shot accuracy instead of at chance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emotag import labels as L

TASKS = ("emotion", "polarity", "regression")
PARTIAL_SEP = "|"  # value_map target "like|happiness": the row is right on either label (a partial label)
# SPEC §1 sources whose classes are sets of taxonomy labels; a file labelled this way keeps the 8 emotions
_PARTIAL_ALIASES = {k: PARTIAL_SEP.join(v) for k, v in L.SMP2020.items()}
EMOTION_ALIASES = {e: e for e in L.EMOTIONS} | {zh: e for e, zh in L.EMOTION_ZH.items()} | {"none": "neutral"}
# the words people label review polarity with (lower-cased); `emotag eval` reads polarity files with it too
POLARITY_ALIASES: dict[str, str] = {
    **dict.fromkeys(("neg", "negative", "负面", "负", "消极", "差评", "bad", "-1", "差", "不满意"), "negative"),
    **dict.fromkeys(("neu", "neutral", "中性", "中立", "中", "一般", "中评"), "neutral"),
    **dict.fromkeys(("pos", "positive", "正面", "正", "积极", "好评", "good", "好", "满意"), "positive"),
}
_NUMERIC_POLARITY = {(0.0, 1.0): ("negative", "positive"), (-1.0, 1.0): ("negative", "positive"),
                     (-1.0, 0.0, 1.0): ("negative", "neutral", "positive"),
                     (0.0, 1.0, 2.0): ("negative", "neutral", "positive")}


def finite_number(v: str) -> float | None:
    """A regression cell as a finite float, or None (not a number, nan, inf): the one test training's
    label plan and its per-row reader (data.regression_value) apply."""
    try:
        x = float(v)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


@dataclass
class LabelPlan:
    """Which head learns what: its labels, and how a row's cells become an `Example`."""

    task: str
    labels: tuple[str, ...]  # head labels (emotion labels for task=emotion, polarity labels otherwise)
    multi_label: bool
    default_taxonomy: bool
    value_map: dict[str, str] = field(default_factory=dict)  # source value -> label (single-column tasks)
    scale: tuple[float, float] | None = None  # regression: the target's low and high ends

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    @property
    def head(self) -> str:
        """The network head this plan trains."""
        return "polarity" if self.task == "polarity" else "emotion"

    def unit(self, values: Any) -> np.ndarray:
        """Regression targets on the user's scale -> the read-out's 0..1 (clipped into the scale)."""
        assert self.scale is not None
        lo, hi = self.scale
        return np.clip((np.asarray(values, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0)

    def on_scale(self, unit: Any) -> np.ndarray:
        """The read-out's 0..1 -> the user's scale (what `Result.score` reports)."""
        assert self.scale is not None
        lo, hi = self.scale
        return lo + (hi - lo) * np.asarray(unit, dtype=np.float64)

    @property
    def partial(self) -> bool:
        """Whether some source classes are sets of taxonomy labels (SMP2020's happy = like|happiness).

        Only a taxonomy plan can be one (`_PARTIAL_ALIASES` is its one source): a custom label that happens
        to hold PARTIAL_SEP (物流|包装) is one label of its own, not a set, so it must never be split."""
        return (self.default_taxonomy and not self.multi_label
                and any(PARTIAL_SEP in v for v in self.value_map.values()))

    def targets(self, source: str) -> tuple[str, ...]:
        """The head labels a source value allows: its one label, or a partial label's set."""
        lab = self.value_map[source]
        return tuple(lab.split(PARTIAL_SEP)) if self.partial else (lab,)

    def groups(self) -> list[tuple[str, list[int]]] | None:
        """For partial labels (SMP2020's happy = like|happiness, SPEC §1): each source class with the head
        labels it allows, in first-seen order; None when every value maps to one label."""
        if not self.partial:
            return None
        out: dict[str, list[int]] = {}
        for source in self.value_map:
            out.setdefault(source, [self.labels.index(x) for x in self.targets(source)])
        return list(out.items())


def sorted_values(values: set[str]) -> list[str]:
    """Label values in a stable order: numerically when they are numbers (1, 2, 10), else as text."""
    try:
        return sorted(values, key=float)
    except ValueError:
        return sorted(values)


def numeric_polarity(values: set[str]) -> dict[str, str] | None:
    """0/1, -1/1, -1/0/1 or 0/1/2 as negative(/neutral)/positive; None for any other value set."""
    try:
        nums = tuple(sorted({float(v) for v in values}))
    except ValueError:
        return None
    order = _NUMERIC_POLARITY.get(nums)
    return None if order is None else {v: order[nums.index(float(v))] for v in values}


def _polarity_map(values: set[str], labels: Sequence[str] | None, polarity_labels: tuple[str, ...]) -> dict[str, str]:
    """Map source values to polarity labels: explicit order, numeric codes, or known words."""
    targets = [p for p in ("negative", "neutral", "positive") if p in polarity_labels]
    if labels:
        if len(labels) not in (2, 3):
            raise ValueError(f"task 'polarity': --labels lists the source values from negative to positive "
                             f"(2 or 3 values), got {len(labels)}")
        order = ["negative", "positive"] if len(labels) == 2 else ["negative", "neutral", "positive"]
        mapping = dict(zip(labels, order, strict=True))
    else:
        mapping = numeric_polarity(values) or {v: POLARITY_ALIASES[v.lower()] for v in values
                                               if v.lower() in POLARITY_ALIASES}
    unknown = sorted(v for v in values if v not in mapping)
    if unknown:
        raise ValueError(f"task 'polarity': cannot map label values {unknown[:5]} to negative/neutral/positive; "
                         "pass --labels NEG,POS (or NEG,NEU,POS) naming your values in that order")
    bad = sorted({p for p in mapping.values() if p not in targets})
    if bad:
        raise ValueError(f"task 'polarity': the base model has no {bad} polarity label (it has {list(targets)})")
    return mapping


def plan_labels(
    task: str,
    label_cols: Sequence[str],
    values: set[str],
    labels: Sequence[str] | None,
    base_polarity: tuple[str, ...] = L.POLARITY,
    where: str = "",
) -> LabelPlan:
    """Decide the trained head's label set from the data and the user's `labels`.

    Default taxonomy when every value is one of EMOTIONS (or its Chinese name), else a custom set: the
    given `labels`, or the sorted unique values. Several label columns make a multi-label set named
    after the columns. `where` prefixes error messages (the file name).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    if task == "regression":
        return plan_regression(label_cols, values, labels, where)
    if task == "polarity":
        if len(label_cols) != 1:
            raise ValueError("task 'polarity' takes one label column")
        mapping = _polarity_map(values, labels, base_polarity)
        if len(set(mapping.values())) < 2:
            raise ValueError(f"{where}column {label_cols[0]!r} has only one class ({sorted(values)}); need two or more")
        return LabelPlan("polarity", base_polarity, False, True, mapping)
    if len(label_cols) > 1:
        if labels and list(labels) != list(label_cols):
            raise ValueError(f"multi-label: --labels must be the label columns ({', '.join(label_cols)}) or omitted")
        return LabelPlan("emotion", tuple(label_cols), True, False)
    col = label_cols[0]
    if labels:
        labs = tuple(dict.fromkeys(labels))
        unknown = sorted(values - set(labs))
        if unknown:
            raise ValueError(f"{where}column {col!r} has labels {unknown[:5]} not in --labels ({', '.join(labs)})")
        if set(labs) == set(L.EMOTIONS):
            return LabelPlan("emotion", L.EMOTIONS, False, True, {v: v for v in values})
        plan = LabelPlan("emotion", labs, False, False, {v: v for v in values})
    elif values and all(v.lower() in EMOTION_ALIASES or v in EMOTION_ALIASES for v in values):
        vm = {v: EMOTION_ALIASES.get(v, EMOTION_ALIASES.get(v.lower(), v)) for v in values}
        plan = LabelPlan("emotion", L.EMOTIONS, False, True, vm)
    elif values and all(v.lower() in _PARTIAL_ALIASES for v in values):
        # SMP2020's classes (happy, angry, sad, ...): partial labels over the taxonomy, as the default model
        # was trained (SPEC §1), instead of a 6-label head that would drop like/disgust and the expert
        plan = LabelPlan("emotion", L.EMOTIONS, False, True, {v: _PARTIAL_ALIASES[v.lower()] for v in values})
    else:
        plan = LabelPlan("emotion", tuple(sorted_values(values)), False, False, {v: v for v in values})
    if len(set(plan.value_map.values())) < 2:
        raise ValueError(f"{where}column {col!r} has only one class ({sorted(values)}); need two or more")
    return plan


MIN_REGRESSION_ROWS = 10  # fewer labelled rows leave nothing to fit, hold out and check a read-out with


def scale_label(column: str, lo: float, hi: float) -> str:
    """The one label of a regression model: its column and scale, `stars[1,5]` (what `Result.scale_of`
    parses, so a record can carry the score on the user's own scale)."""
    return f"{column}[{lo:g},{hi:g}]"


def plan_regression(label_cols: Sequence[str], values: set[str], labels: Sequence[str] | None,
                    where: str = "") -> LabelPlan:
    """A numeric column (1-5 stars, a 0-1 score, ...) read out by one sigmoid on a fixed scale.

    The scale is `labels` (LO,HI) when given, else inferred: 0..1 when every value lies in it, 1..5 for
    whole numbers within it (star ratings), otherwise the values' own minimum and maximum. Why fixed ends:
    a 1-5 star file whose training rows hold no 1 still means 1 to 5, and the sigmoid's 0..1 maps onto
    the ends linearly.
    """
    if len(label_cols) != 1:
        raise ValueError("task 'regression' takes one label column (a number per row)")
    col = label_cols[0]
    nums: dict[str, float] = {}
    for v in values:
        x = finite_number(v)
        if x is None:
            raise ValueError(f"{where}column {col!r}: {v!r} is not a number (task 'regression' reads a score per row)")
        nums[v] = x
    if len(set(nums.values())) < 2:
        raise ValueError(f"{where}column {col!r} has the same value ({', '.join(sorted(values)) or 'none'}) in "
                         "every row: there is nothing to learn")
    lo, hi = min(nums.values()), max(nums.values())
    if labels:
        try:
            lo, hi = (float(x) for x in labels)
        except ValueError:
            raise ValueError(f"task 'regression': --labels gives the scale's two ends LO,HI (e.g. 1,5), got "
                             f"{','.join(labels)}") from None
        if not hi > lo:
            raise ValueError(f"task 'regression': --labels {lo:g},{hi:g}: the high end must be above the low end")
        outside = sorted((v for v, x in nums.items() if not lo <= x <= hi), key=lambda v: nums[v])
        if outside:
            raise ValueError(f"{where}column {col!r} has values {outside[:5]} outside the scale {lo:g}..{hi:g} "
                             "given by --labels")
    elif lo >= 0 and hi <= 1:
        lo, hi = 0.0, 1.0
    elif lo >= 1 and hi <= 5 and all(x.is_integer() for x in nums.values()):
        lo, hi = 1.0, 5.0
    return LabelPlan("regression", (scale_label(col, lo, hi),), True, False, {}, (lo, hi))


Source = tuple[str, int] | None  # (base head, row) a custom label starts from, or None (a new row)


def head_sources(plan: LabelPlan, emotion_labels: Sequence[str], polarity_labels: Sequence[str]) -> list[Source]:
    """For a custom label set: the base model's output each label corresponds to, or None.

    All labels come from one head (emotion and polarity logits are not on one scale): the polarity head
    when the labels read as polarity (好评/差评, pos/neg, 正面/负面, 0/1, -1/0/1), else the emotion head for
    labels that are emotion names in English or Chinese. Multi-label sets (sigmoids) start fresh.
    """
    n = len(plan.labels)
    if plan.task != "emotion" or plan.default_taxonomy or plan.multi_label:
        return [None] * n
    pol = numeric_polarity(set(plan.labels)) or {x: POLARITY_ALIASES[x.lower()] for x in plan.labels
                                                 if x.lower() in POLARITY_ALIASES}
    by_pol: list[Source] = [("polarity", list(polarity_labels).index(pol[x]))
                            if x in pol and pol[x] in polarity_labels else None for x in plan.labels]
    emo = {x: EMOTION_ALIASES.get(x, EMOTION_ALIASES.get(x.lower())) for x in plan.labels}
    by_emo: list[Source] = [("emotion", list(emotion_labels).index(emo[x]))
                            if emo[x] in emotion_labels else None for x in plan.labels]
    pol_rows = [s for s in by_pol if s]
    if len({s for s in pol_rows}) < len(pol_rows):  # two labels on one polarity row: not a polarity reading
        by_pol = [None] * n
    best = max((by_pol, by_emo), key=lambda srcs: sum(s is not None for s in srcs))
    return best if sum(s is not None for s in best) >= 1 else [None] * n
