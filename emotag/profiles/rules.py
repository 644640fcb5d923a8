"""Declarative tag rules: TOML in, `{tag, display, score, evidence}` out.

Marketing and service teams change tag definitions far more often than code ships, so the definitions
live in a data file. The condition language is deliberately tiny -- metric, comparison, constant, nested
all/any -- and is interpreted here, never `eval`-ed, so a rules file cannot run code. Every problem in a
file is reported with the file, the rule and what is wrong, because the people editing these files are
not necessarily the people who can read a traceback.

File format (see docs/profiles.md and default_rules.toml)::

    version = 1
    min_evidence = 3                 # default for rules that do not set it

    [[rule]]
    tag = "irritable"                # stable identifier used in outputs
    display = "易怒"                  # Chinese display name for reports
    description = "..."              # optional
    min_evidence = 3                 # optional; records needed before the tag can be emitted
    match = "any"                    # "all" (default) or "any" over `conditions`
    conditions = [
      { metric = "top.anger", op = ">=", value = 0.3 },
      { any = [ { metric = "emotion.anger", op = ">=", value = 0.25 }, ... ] },   # nested group
    ]
    score = { metric = "emotion.anger", scale = 2.0 }   # or just score = "emotion.anger"

Emotion metrics (`emotion.<label>`, `top.<label>`) name the default taxonomy's labels unless the file
declares its own (``labels = ["好评", "差评"]``, for a custom-label model). A rule whose labels the scored
records do not carry cannot be judged: it is skipped, never fired, and the run's summary names it.
"""

from __future__ import annotations

import difflib
import math
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Union

from emotag.labels import EMOTIONS
from emotag.profiles.state import ProfileState, metric_names

if sys.version_info >= (3, 11):
    import tomllib as _toml
else:  # pragma: no cover - exercised only on 3.10
    try:
        import tomli as _toml  # type: ignore[import-not-found, no-redef]
    except ImportError:
        _toml = None  # type: ignore[assignment]

RULES_VERSION = 1
DEFAULT_MIN_EVIDENCE = 3
DEFAULT_RULES_NAME = "default_rules.toml"
OPS = (">", ">=", "<", "<=", "==", "!=", "between")
_LABEL_METRICS = ("emotion.", "top.")

_FILE_KEYS = {"version", "min_evidence", "rule", "description", "labels"}
_RULE_KEYS = {"tag", "display", "description", "min_evidence", "match", "conditions", "score"}
_COND_KEYS = {"metric", "op", "value"}
_SCORE_KEYS = {"metric", "scale", "offset", "clamp"}


class RulesError(ValueError):
    """A rules file is unreadable or invalid. `problems` lists every problem found, one per entry."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        msg = problems[0] if problems else "invalid rules"
        if len(problems) > 1:
            msg += f" (and {len(problems) - 1} more problem(s): " + "; ".join(problems[1:]) + ")"
        super().__init__(msg)


@dataclass(frozen=True)
class Condition:
    """`metric op value`; false whenever the metric is undefined (None) for the user."""

    metric: str
    op: str
    value: float | tuple[float, float]

    def test(self, m: Mapping[str, float | None]) -> bool:
        v = m.get(self.metric)
        if v is None:
            return False
        op, ref = self.op, self.value
        if op == ">=":
            return v >= ref  # type: ignore[operator]
        if op == ">":
            return v > ref  # type: ignore[operator]
        if op == "<=":
            return v <= ref  # type: ignore[operator]
        if op == "<":
            return v < ref  # type: ignore[operator]
        if op == "==":
            return v == ref
        if op == "!=":
            return v != ref
        lo, hi = ref  # type: ignore[misc]
        return lo <= v <= hi


@dataclass(frozen=True)
class Group:
    """All (or any) of the contained conditions/groups."""

    mode: str
    items: tuple[Union[Condition, Group], ...]  # noqa: UP007 - dataclass annotation evaluated lazily anyway

    def test(self, m: Mapping[str, float | None]) -> bool:
        if self.mode == "all":
            return all(it.test(m) for it in self.items)
        return any(it.test(m) for it in self.items)


@dataclass(frozen=True)
class Score:
    """`offset + scale * metric`, clamped to `clamp` (default [0, 1]) so scores compare across tags."""

    metric: str
    scale: float = 1.0
    offset: float = 0.0
    clamp: tuple[float, float] | None = (0.0, 1.0)

    def value(self, m: Mapping[str, float | None]) -> float | None:
        v = m.get(self.metric)
        if v is None:
            return None
        out = self.offset + self.scale * v
        if self.clamp is not None:
            out = min(self.clamp[1], max(self.clamp[0], out))
        return out


@dataclass(frozen=True)
class Rule:
    """One named business tag."""

    tag: str
    display: str
    when: Group
    score: Score
    min_evidence: int = DEFAULT_MIN_EVIDENCE
    description: str = ""
    #: Emotion labels its metrics name (`emotion.anger` -> anger): records without them cannot fire it.
    labels_used: frozenset[str] = frozenset()


@dataclass(frozen=True)
class RuleSet:
    """A validated rules file."""

    rules: tuple[Rule, ...]
    source: str = "<memory>"
    description: str = ""
    tags: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tags", tuple(r.tag for r in self.rules))

    def __len__(self) -> int:
        return len(self.rules)

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def unusable(self, labels: tuple[str, ...]) -> list[tuple[str, tuple[str, ...]]]:
        """(tag, the labels it needs that `labels` lacks) for every rule records over `labels` cannot fire."""
        have = set(labels)
        return [(r.tag, tuple(sorted(r.labels_used - have))) for r in self.rules if not r.labels_used <= have]


# -- parsing / validation ------------------------------------------------------------------------------


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _metric_problem(name: object, labels: tuple[str, ...]) -> str | None:
    if not isinstance(name, str):
        return f"metric must be a string, got {name!r}"
    names = metric_names(labels)
    if name in names:
        return None
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else " (see docs/profiles.md for the metric list)"
    return f"unknown metric {name!r}{hint}"


def _parse_item(item: object, where: str, problems: list[str], labels: tuple[str, ...]) -> Condition | Group | None:
    if not isinstance(item, Mapping):
        problems.append(f"{where}: a condition must be a table like {{metric=..., op=..., value=...}}")
        return None
    if "all" in item or "any" in item:
        if len(item) != 1:
            problems.append(f"{where}: a group must have exactly one key, 'all' or 'any', got {sorted(item)}")
            return None
        mode = "all" if "all" in item else "any"
        return _parse_group(item[mode], mode, f"{where}.{mode}", problems, labels)
    unknown = set(item) - _COND_KEYS
    if unknown:
        problems.append(f"{where}: unknown key(s) {sorted(unknown)}; a condition has {sorted(_COND_KEYS)}")
        return None
    missing = _COND_KEYS - set(item)
    if missing:
        problems.append(f"{where}: missing {sorted(missing)}")
        return None
    ok = True
    p = _metric_problem(item["metric"], labels)
    if p:
        problems.append(f"{where}: {p}")
        ok = False
    op = item["op"]
    value = item["value"]
    if op not in OPS:
        problems.append(f"{where}: unknown op {op!r}; use one of {', '.join(OPS)}")
        return None
    if op == "between":
        if not (
            isinstance(value, list)
            and len(value) == 2
            and all(_is_number(v) for v in value)
            and value[0] <= value[1]
        ):
            problems.append(f"{where}: 'between' needs value = [low, high] with low <= high, got {value!r}")
            return None
        value = (float(value[0]), float(value[1]))
    elif not _is_number(value):
        problems.append(f"{where}: value must be a finite number, got {value!r}")
        return None
    else:
        value = float(value)
    return Condition(item["metric"], op, value) if ok else None


def _parse_group(items: object, mode: str, where: str, problems: list[str], labels: tuple[str, ...]) -> Group | None:
    if not isinstance(items, list) or not items:
        problems.append(f"{where}: must be a non-empty list of conditions")
        return None
    parsed = [_parse_item(it, f"{where}[{i}]", problems, labels) for i, it in enumerate(items)]
    if any(p is None for p in parsed):
        return None
    return Group(mode, tuple(parsed))  # type: ignore[arg-type]


def _parse_score(raw: object, where: str, problems: list[str], labels: tuple[str, ...]) -> Score | None:
    if isinstance(raw, str):
        raw = {"metric": raw}
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: score must be a metric name or a table {{metric, scale, offset, clamp}}")
        return None
    unknown = set(raw) - _SCORE_KEYS
    if unknown:
        problems.append(f"{where}: unknown key(s) {sorted(unknown)} in score; allowed {sorted(_SCORE_KEYS)}")
        return None
    if "metric" not in raw:
        problems.append(f"{where}: score needs a metric")
        return None
    p = _metric_problem(raw["metric"], labels)
    if p:
        problems.append(f"{where}: score {p}")
        return None
    for key in ("scale", "offset"):
        if key in raw and not _is_number(raw[key]):
            problems.append(f"{where}: score {key} must be a finite number, got {raw[key]!r}")
            return None
    clamp_raw = raw.get("clamp", [0.0, 1.0])
    clamp: tuple[float, float] | None
    if clamp_raw is False:
        clamp = None
    elif (
        isinstance(clamp_raw, list)
        and len(clamp_raw) == 2
        and all(_is_number(v) for v in clamp_raw)
        and clamp_raw[0] <= clamp_raw[1]
    ):
        clamp = (float(clamp_raw[0]), float(clamp_raw[1]))
    else:
        problems.append(f"{where}: score clamp must be false or [low, high], got {clamp_raw!r}")
        return None
    return Score(raw["metric"], float(raw.get("scale", 1.0)), float(raw.get("offset", 0.0)), clamp)


def parse_rules(data: Mapping[str, Any], source: str = "<memory>") -> RuleSet:
    """Validate a decoded rules document; raises RulesError naming source, rule and problem."""
    problems: list[str] = []
    unknown = set(data) - _FILE_KEYS
    if unknown:
        problems.append(f"{source}: unknown top-level key(s) {sorted(unknown)}; allowed {sorted(_FILE_KEYS)}")
    version = data.get("version", RULES_VERSION)
    if version != RULES_VERSION:
        problems.append(
            f"{source}: rules version {version!r} is not supported (this emotag reads {RULES_VERSION})"
        )
    default_min = data.get("min_evidence", DEFAULT_MIN_EVIDENCE)
    if not (isinstance(default_min, int) and not isinstance(default_min, bool) and default_min >= 0):
        problems.append(f"{source}: min_evidence must be a non-negative integer, got {default_min!r}")
        default_min = DEFAULT_MIN_EVIDENCE
    labels = _declared_labels(data.get("labels"), source, problems)
    raw_rules = data.get("rule")
    if not isinstance(raw_rules, list) or not raw_rules:
        problems.append(f"{source}: no rules; define at least one [[rule]] table")
        raise RulesError(problems)
    rules: list[Rule] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_rules):
        name = raw.get("tag") if isinstance(raw, Mapping) else None
        where = f"{source}: rule {name!r}" if isinstance(name, str) and name else f"{source}: rule #{i + 1}"
        if not isinstance(raw, Mapping):
            problems.append(f"{where}: must be a table")
            continue
        n_before = len(problems)
        unknown = set(raw) - _RULE_KEYS
        if unknown:
            problems.append(f"{where}: unknown key(s) {sorted(unknown)}; allowed {sorted(_RULE_KEYS)}")
        if not (isinstance(name, str) and name.strip()):
            problems.append(f"{where}: missing 'tag' (a non-empty identifier)")
        elif name in seen:
            problems.append(f"{where}: duplicate tag {name!r}")
        else:
            seen.add(name)
        display = raw.get("display")
        if not (isinstance(display, str) and display.strip()):
            problems.append(f"{where}: missing 'display' (the Chinese display name)")
        desc = raw.get("description", "")
        if not isinstance(desc, str):
            problems.append(f"{where}: description must be a string")
        min_ev = raw.get("min_evidence", default_min)
        if not (isinstance(min_ev, int) and not isinstance(min_ev, bool) and min_ev >= 0):
            problems.append(f"{where}: min_evidence must be a non-negative integer, got {min_ev!r}")
        match = raw.get("match", "all")
        if match not in ("all", "any"):
            problems.append(f"{where}: match must be 'all' or 'any', got {match!r}")
            match = "all"
        if "conditions" not in raw:
            problems.append(f"{where}: missing 'conditions'")
            group = None
        else:
            group = _parse_group(raw["conditions"], match, f"{where}: conditions", problems, labels)
        if "score" not in raw:
            problems.append(f"{where}: missing 'score' (a metric name or {{metric, scale}})")
            score = None
        else:
            score = _parse_score(raw["score"], where, problems, labels)
        if len(problems) == n_before and group is not None and score is not None:
            used = _labels_used(group, score)
            rules.append(Rule(name, display, group, score, min_ev, desc, used))  # type: ignore[arg-type]
    if problems:
        raise RulesError(problems)
    return RuleSet(tuple(rules), source, str(data.get("description", "")))


def _declared_labels(raw: object, source: str, problems: list[str]) -> tuple[str, ...]:
    """The file's `labels` (a custom-label model's), or the default taxonomy when it declares none."""
    if raw is None:
        return EMOTIONS
    if not (isinstance(raw, list) and raw and all(isinstance(x, str) and x.strip() for x in raw)
            and len(set(raw)) == len(raw)):
        problems.append(f"{source}: labels must be a list of distinct, non-empty label names, got {raw!r}")
        return EMOTIONS
    return tuple(raw)


def _labels_used(group: Group, score: Score) -> frozenset[str]:
    """The emotion labels named by a rule's metrics (`emotion.anger`, `top.anger` -> anger)."""
    metrics = [score.metric]
    todo: list[Condition | Group] = [group]
    while todo:
        item = todo.pop()
        if isinstance(item, Group):
            todo.extend(item.items)
        else:
            metrics.append(item.metric)
    return frozenset(m.split(".", 1)[1] for m in metrics if m.startswith(_LABEL_METRICS))


def default_rules_path() -> Path:
    """Where the shipped default rules live (package data)."""
    return Path(str(resources.files("emotag.profiles").joinpath(DEFAULT_RULES_NAME)))


def load_rules(path: str | Path | None = None) -> RuleSet:
    """Read and validate a rules TOML file; `None` loads the shipped defaults (cached)."""
    if path is None:
        global _DEFAULT
        if _DEFAULT is None:
            _DEFAULT = _load(default_rules_path())
        return _DEFAULT
    return _load(Path(path))


_DEFAULT: RuleSet | None = None


def _load(path: Path) -> RuleSet:
    if _toml is None:  # pragma: no cover
        raise RulesError(
            [f"{path}: reading TOML on Python < 3.11 needs the 'tomli' package (pip install tomli)"]
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RulesError([f"{path}: cannot read rules file: {exc.strerror or exc}"]) from None
    try:
        data = _toml.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise RulesError([f"{path}: rules file must be UTF-8"]) from None
    except _toml.TOMLDecodeError as exc:
        raise RulesError([f"{path}: invalid TOML: {exc}"]) from None
    return parse_rules(data, str(path))


def apply_rules(
    state: ProfileState,
    rules: RuleSet | None = None,
    now: float | None = None,
    *,
    metrics: Mapping[str, float | None] | None = None,
) -> list[dict[str, Any]]:
    """Tags that `state` earns under `rules` (defaults if None), as `{tag, display, score, evidence}`.

    A rule never fires below its `min_evidence` (records actually seen), however extreme the metrics:
    two angry messages do not make someone "irritable"; nor when it names emotion labels the state does not
    carry (a custom-label model's profile has no `emotion.anger`).
    """
    if rules is None:
        rules = load_rules()
    m = metrics if metrics is not None else state.metrics(now)
    out: list[dict[str, Any]] = []
    n = state.n
    have = state.labels
    for rule in rules.rules:
        if n < rule.min_evidence or n == 0:
            continue
        if rule.labels_used and not rule.labels_used.issubset(have):
            continue  # labels this model does not score: never judged (RuleSet.unusable names them)
        if rule.when.test(m):
            out.append(
                {"tag": rule.tag, "display": rule.display, "score": rule.score.value(m), "evidence": n}
            )
    return out
