"""Composition: how a text's clauses, negated phrases and form decide its polarity.

Why: a network that reads a text as one bag of evidence gets the compositional cases of Chinese wrong in a
systematic way. In 这家外卖不难吃 the strongest evidence is 难吃, so the text reads as negative; in
物流很快但是包装破损了 praise and complaint cancel out, although the clause after 但是 decides; and a
question such as 请问什么时候发货 shares its words with complaints about shipping, so it reads as angry.

The composer is a small learned stage after the network. Besides the whole text, the tagger scores a few
*units* of it with the same network: the clause after the last contrast turn, and the span each negator
governs (不[难吃], 没有[色差], 一点[异味]都没有). Two logistic regressions then read the whole text's
polarity, those units' polarities, the domain experts' logits (emotag.model.experts: one TF-IDF reader
per corpus, mixed by a gate) and a few cues of form (a question, digits, no Chinese, degree words, length):
`sign` says positive vs negative, `neutral` says whether there is an opinion at all. They learn from data
how far a negator flips what it governs, how much the clause after a turn counts, which corpus's reader
to trust, and what a text with no opinion looks like; `scripts/fit_composer.py` fits them on the tuning
halves of the dev splits, never on data the network trained on (whose scores are overconfident) and
never on the report halves.

What the composer achieves is measured, not promised: it learns only what the tuning halves teach, and real
reviews rarely negate a complaint or let the clause after 但是 overrule a confident first clause. The bundled
model read 这家外卖不难吃 and 物流很快但是包装破损了 wrongly and called 请问什么时候发货 a complaint until v0.6, whose
network was taught those operators (emotag.train.compositional); it still misreads 物流很快但是包装破损了, and the
model card lists what `scripts/linguistic_suite.py` finds.

Everything here is plain text work and numpy: the units go through the same windows, batches and backend
as every other text (`Tagger`), so the composer costs a few short extra windows per text, and nothing
when the model has none (`config.composer` is None).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from emotag.text.sentences import CONTRAST_RE, contrast_clauses, turns_opinion

# -- units ----------------------------------------------------------------------------------------------

# Negators, longest first so 没有 wins over 没 and 一点也不 over 不. 无 and 未 only in forms that negate
# (无法, 毫无, 从未); alone they mostly make words (无聊, 未来).
NEGATORS = (
    "一点儿也不", "一点儿都不", "一点也不", "一点都不", "根本没有", "从来没有", "从来不", "根本不", "并没有",
    "丝毫不", "毫不", "毫无", "绝不", "决不", "从不", "从没", "从未", "并不", "并没", "并未", "尚未", "无法",
    "没有", "不是", "没", "不", "别",
)
_NEGATOR_RE = re.compile("|".join(map(re.escape, NEGATORS)))
# counter-expectation turns that contrast_clauses does not cut at (本来以为会很难吃，没想到特别好吃); those
# holding a negator character (没想到, 想不到, 不料) are words, not negations, so LEXICALISED takes them from here
COUNTER_EXPECTATION = ("没想到", "想不到", "谁知道", "谁知", "不料", "结果却")
# words in which a negator character is part of the word, not a negation of what follows
LEXICALISED = (
    "不错", "不过", "不但", "不仅", "不管", "不论", "不断", "不久", "不少", "不同", "不如", "不然", "不得不",
    "不禁", "不免", "不愧", "差不多", "了不起", "对不起", "不好意思", "怪不得", "忍不住", "不止", "不得了",
    "要不", "不知不觉", "没事", "没关系", "没准", "别人", "别的", "特别", "区别", "分别", "级别",
    "不怎么样", "别提",  # 别提多好吃了: "it is so good that words fail", no negation
    *COUNTER_EXPECTATION,
    "类别", "告别", "个别", "差别", "性别", "别墅", "识别", "派别", "辨别", "别致", "不然的话",
)
_LEX_AT: dict[str, list[tuple[str, int]]] = {}
for _w in LEXICALISED:
    for _k, _ch in enumerate(_w):
        if _ch in "不没别":
            _LEX_AT.setdefault(_ch, []).append((_w, _k))
# a scope ends at punctuation, ASCII or full-width, brackets included: an emoji word tag ([赞]) or an
# aside in parentheses is not part of what the negator governs
_SCOPE_STOP = set(",，、;；:：。.!！?？~～…()（）[]【】\n\t ")
_SCOPE_SKIP = re.compile(r"^(?:怎么|那么|这么|是)")
MAX_SCOPE = 10
# 一点异味都没有, 一个问题也没有: the negated thing stands before the negator
# (一点 never stops short of 一点儿: 一点儿也不好吃 has no negated 儿)
_POST_NEGATED = re.compile(r"(?:一点儿|一点(?!儿)|一丝|一个|一次|一件|任何)([^,，、;；:：。!！?？~～…\s]{1,6}?)(?:都|也)(?:没有|没|不)")
# 却 alone turns (质量好却很贵) but not inside words (冷却, 忘却, 退却, 推却, 却步, 了却心愿); after the aspect
# particle 了 it does turn (买了却不用), unless it is the verb 了却
_LIAOQUE_OBJECTS = ("心愿", "心事", "心结", "夙愿", "一桩", "一件", "遗憾", "此生", "尘缘", "残生")
_EXTRA_TURN = re.compile(
    "|".join(COUNTER_EXPECTATION)
    + rf"|(?<![冷忘退推了])却(?!步)|(?<=了)却(?!步|{'|'.join(_LIAOQUE_OBJECTS)})"
)
# A negator governs its own clause only: its scope ends where the opinion turns (不太甜不过很好吃: 太甜) and
# at a second predicate joined by 而且/并且/也 (不好吃也不便宜: 好吃, then 便宜). 还 is left out: it is as
# often "still" or the verb "return" (不想还钱) as "and also".
_SCOPE_END = re.compile(rf"{CONTRAST_RE.pattern}|{_EXTRA_TURN.pattern}|而且|并且|也")
MAX_SCOPES = 3


def negation_scopes(text: str) -> list[str]:
    """The spans that negators in `text` govern, in order: ``这家外卖不难吃`` -> ``["难吃"]``.

    A pre-verbal negator governs what follows it up to the end of its clause (at most MAX_SCOPE characters);
    the "一点X都没有" form governs the X before it. Negator characters inside words (不错, 特别, 没想到) and
    A-not-A questions (好不好, 有没有) are not negations.
    """
    scopes: list[str] = []
    covered = 0  # a negator inside an earlier one's scope is part of what that one negates (没有[不好吃的菜])
    for m in _NEGATOR_RE.finditer(text):
        i, j = m.start(), m.end()
        word = m.group()
        if i < covered or _inside_word(text, i, word):
            continue
        after = j if len(word) == 1 else j - 1
        if word in ("不", "没", "没有", "不是") and i > 0 and after < len(text) and text[i - 1] == text[after]:
            continue  # A-not-A: 好不好, 有没有, 是不是
        k = j
        while k < len(text) and k - j < MAX_SCOPE and text[k] not in _SCOPE_STOP:
            k += 1
        # a marker opening the scope (不就是, 不只是) is what is negated; one after it ends the scope. The
        # search may look a few characters past k, for the markers' look-aheads (但愿, 却步).
        end = _SCOPE_END.search(text, j + 1, min(len(text), k + 4))
        if end and end.start() < k:
            k = end.start()
        scope = _SCOPE_SKIP.sub("", text[j:k])
        if scope:
            scopes.append(scope)
            covered = k
    for m in _POST_NEGATED.finditer(text):
        scopes.append(m.group(1))
    return scopes[:MAX_SCOPES]


def _inside_word(text: str, i: int, word: str) -> bool:
    if len(word) > 1 and word not in ("没有", "不是"):
        return False
    return any(text[i - k : i - k + len(w)] == w for w, k in _LEX_AT.get(text[i], ()))


def turn_split(text: str) -> tuple[str, str] | None:
    """(before, after) around the last contrast turn of `text`, or None when it has no turn."""
    clauses = contrast_clauses(text)
    last = max((k for k, c in enumerate(clauses) if k > 0 and turns_opinion(c)), default=None)
    if last is not None:
        before, after = "".join(clauses[:last]), "".join(clauses[last:])
    else:
        m = None
        for m in _EXTRA_TURN.finditer(text):  # noqa: B007 - the last match is the one wanted
            pass
        if m is None or m.start() < 2 or len(text) - m.start() < 2:
            return None
        before, after = text[: m.start()], text[m.start() :]
    before = before.rstrip("".join(_SCOPE_STOP))
    return (before, after) if before.strip() and after.strip() else None


@dataclass(frozen=True)
class Units:
    """The parts of one text the tagger scores besides its windows: the clause after its last turn, and its
    negation scopes. Texts longer than one window get none (their windows already carry most of the signal).

    The part before the turn is not scored: on the tune halves its weight came out at -0.03 (real reviews
    do not let the clause before 但是 count against the text), and every unit is one more window to score."""

    after: str | None = None
    scopes: tuple[str, ...] = ()

    def texts(self) -> list[str]:
        return ([self.after] if self.after else []) + list(self.scopes)


def units_of(normalized: str) -> Units:
    turn = turn_split(normalized)
    return Units(turn[1] if turn else None, tuple(negation_scopes(normalized)))


# -- cues of form ---------------------------------------------------------------------------------------

_QUESTION_WORDS = re.compile(r"请问|几点|几号|几时|什么时候|多少|哪里|哪儿|哪个|哪些|是否|能否|有没有|是不是|能不能|可不可以|怎么样|如何")
_QUESTION_END = re.compile(r"[吗呢么嘛][?？~～。.!！]*$")
_CJK = re.compile(r"[\u4e00-\u9fff]")
# degree words and intensifiers: the commonest mark of an evaluation (很好, 太慢了, 好吃极了, 气死了)
_DEGREE = re.compile(r"很|太|非常|特别|十分|超级|挺|蛮|极了|死了|透了|真的|真是|有点|比较|最|简直|居然|竟然")
_DIGIT = re.compile(r"[0-9０-９]")


def form_cues(text: str) -> dict[str, float]:
    """Cues of a text's form that say whether it states an opinion at all."""
    n = max(len(text), 1)
    stripped = text.rstrip()
    return {
        "question_mark": float(stripped.endswith(("?", "？"))),
        "question_word": float(bool(_QUESTION_WORDS.search(text)) or bool(_QUESTION_END.search(stripped))),
        "no_cjk": float(not _CJK.search(text)),
        "digit_share": len(_DIGIT.findall(text)) / n,
        "log_length": math.log1p(len(text)) / 4.0,
        "exclaim": float("!" in text or "！" in text),
        "degree": float(bool(_DEGREE.search(text))),
    }


# -- features and the model -----------------------------------------------------------------------------

FEATURES = (
    "whole_logit", "whole_margin", "whole_abs_logit", "whole_log_neutral", "emotion_log_neutral",
    "has_turn", "after_margin", "after_abs_margin",
    "has_negation", "negated_margin", "negated_margin_share", "negated_negative",
    "question_mark", "question_word", "no_cjk", "digit_share", "log_length", "exclaim", "degree",
    "question_abs_logit",
)


def _margin(p: np.ndarray, neg: int, pos: int) -> float:
    return float(p[pos] - p[neg])


def _logit(p: np.ndarray, neg: int, pos: int) -> float:
    lp, ln = math.log(max(float(p[pos]), 1e-12)), math.log(max(float(p[neg]), 1e-12))
    return max(-12.0, min(12.0, lp - ln)) / 4.0


def features(
    text: str, whole: np.ndarray, emotion_neutral: float, units: Units, unit_probs: dict[str, np.ndarray],
    labels: tuple[str, ...],
) -> np.ndarray:
    """One text's feature vector (FEATURES order).

    whole: the text's polarity probabilities; emotion_neutral: its P(emotion = neutral) (1/E-ish when the
    emotion labels have no neutral); unit_probs: polarity probabilities of each unit text.
    """
    neg, neu, pos = labels.index("negative"), labels.index("neutral"), labels.index("positive")
    f = dict.fromkeys(FEATURES, 0.0)
    f["whole_logit"] = _logit(whole, neg, pos)
    f["whole_margin"] = _margin(whole, neg, pos)
    f["whole_abs_logit"] = abs(f["whole_logit"])
    f["whole_log_neutral"] = max(math.log(max(float(whole[neu]), 1e-12)), -8.0) / 4.0
    f["emotion_log_neutral"] = max(math.log(max(emotion_neutral, 1e-12)), -8.0) / 4.0
    if units.after and units.after in unit_probs:
        f["has_turn"] = 1.0
        f["after_margin"] = _margin(unit_probs[units.after], neg, pos)
        f["after_abs_margin"] = abs(f["after_margin"])
    scoped = [s for s in units.scopes if s in unit_probs]
    if scoped:
        f["has_negation"] = 1.0
        f["negated_margin"] = float(np.mean([_margin(unit_probs[s], neg, pos) for s in scoped]))
        share = min(1.0, sum(len(s) + 1 for s in scoped) / max(len(text), 1))
        f["negated_margin_share"] = f["negated_margin"] * share
        # negating a complaint (不难吃, 没有色差) is weaker praise than negating praise is a complaint, and the
        # network misreads mostly this direction: its own weight
        f["negated_negative"] = min(f["negated_margin"], 0.0)
    f.update(form_cues(text))
    f["question_abs_logit"] = max(f["question_mark"], f["question_word"]) * f["whole_abs_logit"]
    return np.array([f[k] for k in FEATURES], dtype=np.float64)


EXPERT_PREFIXES = ("polarity:", "domain:")  # column names of emotag.model.experts logits
SIGN_FEATURES = ("whole_logit", "whole_margin", "has_turn", "after_margin", "has_negation",
                 "negated_margin", "negated_margin_share", "negated_negative")
NEUTRAL_FEATURES = ("whole_abs_logit", "whole_log_neutral", "emotion_log_neutral", "has_turn", "after_abs_margin",
                    "question_mark", "question_word", "no_cjk", "digit_share", "log_length", "exclaim", "degree",
                    "question_abs_logit")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40.0, 40.0)))


@dataclass
class Part:
    """One logistic regression over named features."""

    features: tuple[str, ...]
    weight: np.ndarray  # (F,)
    bias: float

    def logit(self, x: np.ndarray, names: Sequence[str] = FEATURES) -> np.ndarray:
        """Logits for rows `x` whose columns are `names` (FEATURES, then any domain experts' logits)."""
        idx = [list(names).index(k) for k in self.features]
        return np.atleast_2d(x)[:, idx] @ self.weight + self.bias

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(self.features), "weight": np.round(self.weight, 6).tolist(),
                "bias": round(float(self.bias), 6)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Part:
        feats = tuple(d["features"])
        unknown = {k for k in feats if k not in FEATURES and not k.startswith(EXPERT_PREFIXES)}
        if unknown:
            raise ValueError(f"composer: features this emotag does not compute: {sorted(unknown)}; upgrade emotag")
        w = np.asarray(d["weight"], dtype=np.float64)
        if w.shape != (len(feats),):
            raise ValueError(f"composer: {w.shape[0] if w.ndim else 0} weights for {len(feats)} features")
        return cls(feats, w, float(d["bias"]))


@dataclass
class Composer:
    """Two logistic regressions: `sign` (positive vs negative, fit on texts with an opinion) and `neutral`
    (no opinion vs some). P(neutral) = neutral; P(positive) = (1 - neutral) * sign; P(negative) the rest.

    Why two: the sign of polarity_score is what every binary polarity metric reads; fitting it apart from
    the neutral decision means that teaching the composer what a question looks like cannot cost a review
    its sign, and the sign part can be checked source by source against the polarity heads alone.
    """

    labels: tuple[str, ...]
    sign: Part
    neutral: Part
    info: dict[str, Any] | None = None

    def probabilities(self, x: np.ndarray, names: Sequence[str] = FEATURES) -> np.ndarray:
        """(n, len(labels)) probabilities from feature rows whose columns are `names`."""
        x = np.atleast_2d(x)
        p_pos = _sigmoid(self.sign.logit(x, names))
        p_neu = _sigmoid(self.neutral.logit(x, names))
        out = np.zeros((x.shape[0], len(self.labels)))
        out[:, self.labels.index("positive")] = (1.0 - p_neu) * p_pos
        out[:, self.labels.index("negative")] = (1.0 - p_neu) * (1.0 - p_pos)
        out[:, self.labels.index("neutral")] = p_neu
        return out

    @property
    def experts(self) -> set[str]:
        """The domain experts' logits it reads (emotag.model.experts)."""
        return {k for k in self.sign.features + self.neutral.features if k.startswith(EXPERT_PREFIXES)}

    def to_dict(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "sign": self.sign.to_dict(), "neutral": self.neutral.to_dict(),
                "info": self.info or {}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Composer:
        """Raises ValueError, naming the problem, for a composer this emotag cannot run."""
        labels = tuple(d["labels"])
        if set(labels) != {"negative", "neutral", "positive"}:
            raise ValueError(f"composer: labels must be negative/neutral/positive, got {list(labels)}")
        return cls(labels, Part.from_dict(d["sign"]), Part.from_dict(d["neutral"]), d.get("info"))
