"""The template sentences the network learns negation scope and contrast from (emotag.train.compositional)."""

from __future__ import annotations

import csv
import random
from collections import Counter
from pathlib import Path

from emotag.text.normalize import normalize
from emotag.train import compositional as C

SUITE = Path(__file__).resolve().parent / "data" / "linguistic_pairs.tsv"
NEGATORS = ("不", "没", "从不", "挑不出", "找不到", "没发现", "没看到")


def test_deterministic_distinct_and_balanced() -> None:
    a = list(C.compositional_forms(3000, seed=5))
    b = list(C.compositional_forms(3000, seed=5))
    assert [(e.text, e.polarity) for e in a] == [(e.text, e.polarity) for e in b]
    assert len(a) == 3000 and len({e.text for e in a}) == 3000
    counts = Counter(e.polarity for e in a)
    assert set(counts) == {"positive", "negative"} and abs(counts["positive"] - counts["negative"]) < 150
    assert {e.source for e in a} == {"compositional"} and {e.split for e in a} == {"train"}
    assert all(e.emotions is None for e in a)  # polarity only: the templates say nothing about the emotion


def test_another_seed_gives_other_sentences() -> None:
    a = {e.text for e in C.compositional_forms(2000, seed=0)}
    b = {e.text for e in C.compositional_forms(2000, seed=1)}
    assert len(a & b) < 1000


def _predicate_side(dom: tuple[tuple[str, ...], ...], plain: str) -> str | None:
    """The polarity of the opinion word in a plain (un-negated) template sentence, read off the lists."""
    subject = max((x for x in dom[0] if plain.startswith(x)), key=len, default="")
    rest = plain[len(subject):]
    pos = any(w in rest for w in dom[1])
    neg = any(w in rest for w in dom[2] + dom[3] + dom[4])
    return None if pos == neg else ("positive" if pos else "negative")


def test_negation_pairs_flip_polarity() -> None:
    """Each pair is a plain sentence labelled as its opinion word reads, and its negation with the opposite
    label; the negated member is the one with a negator in it."""
    rng = random.Random(3)
    checked = 0
    for _ in range(500):
        dom = rng.choice(list(C.DOMAINS.values()))
        (neg_text, neg_pos), (plain_text, plain_pos) = C._pair(rng, dom)
        assert neg_pos != plain_pos
        assert any(n in neg_text for n in NEGATORS), neg_text
        assert not any(n in plain_text.replace("不少", "") for n in ("不", "没")), plain_text
        side = _predicate_side(dom, plain_text)
        if side is not None:
            assert C.POL[plain_pos] == side, (plain_text, plain_pos)
            checked += 1
    assert checked > 400


def test_contrast_label_is_the_clause_after_the_turn() -> None:
    rng = random.Random(4)
    doms = list(C.DOMAINS.values())
    for _ in range(300):
        for text, positive in C._contrast(rng, doms):
            turn = next(t for t in C.TURNS if "，" + t in text)
            after = text.split("，" + turn, 1)[1]
            # the second clause was built with the label's polarity: its predicate is one of that side's words
            words = [w for d in doms for w in (d[1] if positive else d[2] + d[3] + d[4])]
            assert any(w in after for w in words), (text, positive)


def _bare(text: str) -> str:
    return "".join(ch for ch in normalize(text).text if ch.isalnum())


# the calls the recipe makes: train_compositional.py (network), fit_composer.py, fit_experts.py (not in the recipe)
RECIPE_CALLS = ({"n": 14000, "seed": 1, "contrast": 0.3, "neutral": 0.3}, {"n": 1500, "seed": 3},
                {"n": 12000, "seed": 2})


def test_no_suite_sentence_is_or_is_inside_a_recipe_row() -> None:
    """The suite measures what the templates teach; none of its sentences may be a training row or sit
    inside one (住了两晚，<suite sentence>), with the arguments the recipe passes."""
    with open(SUITE, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    suite = {_bare(r[1]) for r in rows if len(r) > 1} - {""}
    for kwargs in RECIPE_CALLS:
        made = {_bare(e.text) for e in C.compositional_forms(**kwargs)}
        assert not suite & made, (kwargs, sorted(suite & made)[:5])
        blob = "\n".join(made)
        inside = [t for t in suite if len(t) >= 4 and t in blob]
        assert not inside, (kwargs, inside[:5])


def test_neutral_share_is_opinion_free() -> None:
    """Opinion-free rows carry none of the templates' evaluative adjectives or feelings and no negator, and
    there are none unless asked for. (A complaint noun may occur in a plain request: 帮我延迟两天发货.)"""
    rows = list(C.compositional_forms(4000, seed=2, neutral=0.3))
    neutral = [e.text for e in rows if e.polarity == "neutral"]
    assert 250 < len(neutral) < 1000
    opinion_words = {w for d in C.DOMAINS.values() for part in d[1:3] for w in part if len(w) > 1}
    opinion_words |= set(C.FEEL_POS + C.FEEL_NEG)
    for t in neutral:
        assert not any(w in t for w in opinion_words), t
        assert "不" not in t.replace("能不能", "").replace("不锈钢", "") and "没" not in t, t  # a question, a material
    assert not [e for e in C.compositional_forms(3000, seed=2) if e.polarity == "neutral"]  # none by default


def test_double_negation_and_feelings_are_labelled_by_form() -> None:
    """没有不X的 / 没有一次不X are praise, 没有一个X的 / 没有一次X过 complaints, 不得不说 takes its opinion's side;
    a negated bad feeling is positive (没让我失望), a negated good one negative (不满意)."""
    rng = random.Random(6)
    doms = list(C.DOMAINS.values())
    for _ in range(300):
        dom = rng.choice(doms)
        for text, positive in C._double(rng, dom):
            if "没有不" in text or "没有一次不" in text:
                assert positive, text
            elif "没有一个" in text or "过" in text:
                assert not positive, text
            else:
                assert text.startswith("不得不说")
                side = _predicate_side(dom, text[len("不得不说"):])
                assert side is None or C.POL[positive] == side, text
        for text, positive in C._feeling(rng):
            bad = any(f in text for f in C.FEEL_NEG)
            negated = any(n in text for n in ("不", "没"))
            assert positive == (bad == negated), text


def test_reservation_turns_and_flaw_verbs_keep_their_use() -> None:
    """就是/只是/可惜/结果 only introduce a negative clause; 挑不出/找不到 only take a flaw (毛病, 缺点)."""
    rows = list(C.compositional_forms(6000, seed=7, contrast=0.5))
    for e in rows:
        if e.polarity == "positive":
            assert not any("，" + t in e.text for t in C.RESERVATION_TURNS), e.text
        for verb in ("挑不出", "找不到", "找不出"):
            if verb in e.text:
                rest = e.text.split(verb, 1)[1]
                assert any(rest.lstrip("任何什么").startswith(f) for f in C.FLAWS), e.text


DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_real_contrasts_join_training_clauses_labelled_by_the_second() -> None:
    """Each pair joins real opinion clauses of the training splits around one turn, labelled as the clause
    after it; no clause holds punctuation or a turn of its own, and no dev sentence lends one."""
    import json

    import pytest

    from emotag.train.corpora import DEV_FRACTION, sentic

    if not (DATA / "chinese_aste" / "train.jsonl").exists():
        pytest.skip("../shared/data is not beside the repository")
    clauses = C.opinion_clauses(DATA)
    assert len(clauses[True]) > 5000 and len(clauses[False]) > 2000
    side = {c: pos for pos in (True, False) for c in clauses[pos]}
    assert not any(C._PUNCT.search(c) or C._TURN_INSIDE.search(c) for c in side)
    # every clause comes from a training split: inside an ASTE training sentence or a sentic training sentence
    with open(DATA / "chinese_aste" / "train.jsonl", encoding="utf-8") as f:
        aste_train = "\n".join(json.loads(line)["text"] for line in f)
    sentic_train = {e.text for e in sentic(DATA, DEV_FRACTION) if e.split == "train"}
    assert all(c in sentic_train or c in aste_train for c in side)
    rows = list(C.real_contrasts(DATA, 600, seed=4))
    assert len(rows) == 600 and rows == list(C.real_contrasts(DATA, 600, seed=4))
    assert Counter(e.polarity for e in rows) == {"positive": 300, "negative": 300}
    for e in rows:
        turn = next(t for t in sorted(C.TURNS, key=len, reverse=True) if t in e.text)
        before, after = e.text.split(turn, 1)
        before = before.removeprefix("虽然").rstrip("，")
        after = after.rstrip("".join(C.END))
        assert (before in side or after in side), e.text
        if after in side:
            assert C.POL[side[after]] == e.polarity, e.text
        if before in side:
            assert C.POL[not side[before]] == e.polarity, e.text
        if turn in C.RESERVATION_TURNS:
            assert e.polarity == "negative", e.text
