"""Per-user dynamic profiles: mergeability, store, tags, privacy, exports (SPEC §4)."""

from __future__ import annotations

import json
import math
import random
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emotag.labels import EMOTIONS
from emotag.profiles import (
    KEY_ENV,
    ProfileInputError,
    ProfileState,
    ProfileStore,
    Pseudonymizer,
    PseudonymKeyError,
    RulesError,
    StoreError,
    StoreVersionError,
    apply_rules,
    build_profiles,
    cohort_counts,
    conversation_to_record,
    default_rules_path,
    load_rules,
    merge_profiles,
    parse_time,
    run_profile,
)

KEY = "test-key-0123456789abcdef"
BASE = parse_time("2024-03-01T00:00:00+08:00")
DAY = 86400.0
REL = 1e-9


@pytest.fixture(autouse=True)
def _key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)


def rec(
    user: Any,
    day: float,
    score: float,
    top: str = "neutral",
    p: float = 0.7,
    **extra: Any,
) -> dict[str, Any]:
    """A SPEC §2 record: `p` on `top`, the rest spread evenly."""
    rest = (1.0 - p) / (len(EMOTIONS) - 1)
    emotions = {e: (p if e == top else rest) for e in EMOTIONS}
    r = {
        "id": f"{user}-{day}",
        "user_id": user,
        "time": BASE + day * DAY,
        "emotion": top,
        "emotions": emotions,
        "polarity": "negative" if score < -0.1 else ("positive" if score > 0.1 else "neutral"),
        "polarity_score": score,
        "intensity": abs(score),
        "error": None,
    }
    r.update(extra)
    return r


def synthetic(n: int, users: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        raw = [rng.random() ** 2 for _ in EMOTIONS]
        s = sum(raw)
        probs = {e: v / s for e, v in zip(EMOTIONS, raw, strict=True)}
        score = rng.uniform(-1, 1)
        r = {
            "user_id": f"user{rng.randrange(users)}",
            "time": f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00+08:00",
            "emotion": max(probs, key=probs.__getitem__),
            "emotions": probs,
            "polarity_score": score,
            "intensity": rng.random(),
            "error": None,
            "channel": rng.choice(["review", "social", "support", None]),
            "resolved": rng.choice([True, False, None]),
            "product": rng.choice([None, "面膜", "手机"]),
        }
        out.append(r)
    return out


# -- comparison helpers ---------------------------------------------------------------------------------


def _close(a: float, b: float, mag: float) -> bool:
    return abs(a - b) <= REL * max(abs(a), abs(b), abs(mag), 1e-300)


def assert_states_close(a: ProfileState, b: ProfileState) -> None:
    """Equal within 1e-9 relative. Sums of signed terms are compared relative to the matching sum of
    absolute terms (e.g. sum w*y against sum w), the standard yardstick for rounding in a sum."""
    da, db = a.to_dict(), b.to_dict()
    assert da["n"] == db["n"]
    assert da["first"] == db["first"] and da["last"] == db["last"]
    assert da["last_polarity"] == db["last_polarity"]
    w = da["sums"]["w"]
    absx = abs(da["sums"]["x"])
    mags = {"w": w, "x": absx, "xx": 0, "y": w, "xy": absx, "yy": w, "wi": w, "i": w}
    mags |= {"wr": da["sums"]["wr"], "yr": da["sums"]["wr"]}
    for k, v in da["sums"].items():
        assert _close(v, db["sums"][k], mags[k]), (k, v, db["sums"][k])
    for group in ("emotions", "top", "polarity"):
        for k, v in da[group].items():
            assert _close(v, db[group][k], w), (group, k)
    for c, vals in da["channels"].items():
        assert vals[0] == db["channels"][c][0]
        assert _close(vals[1], db["channels"][c][1], w) and _close(vals[2], db["channels"][c][2], w)
    assert da["unresolved_negative"][0] == db["unresolved_negative"][0]
    assert _close(da["unresolved_negative"][1], db["unresolved_negative"][1], w)
    assert da["products"].keys() == db["products"].keys()
    for k, v in da["products"].items():
        assert v[0] == db["products"][k][0]
        assert _close(v[1], db["products"][k][1], w) and _close(v[2], db["products"][k][2], w)


def assert_nested_close(a: Any, b: Any, path: str = "", *, rel: float = REL, exact: bool = False) -> None:
    """`a` (got) equals `b` (want) as nested dicts/lists, floats to `rel`. `exact`: also the same key order
    and the same type of every non-float leaf, with `b`'s floats compared to `rel` only (a file format may
    give 0.0 back as 0), as a round trip through a file must keep them."""
    if isinstance(b if exact else a, dict):
        assert isinstance(a, dict) and isinstance(b, dict), path
        assert (list(a) == list(b)) if exact else (a.keys() == b.keys()), path
        for k in b:
            assert_nested_close(a[k], b[k], f"{path}.{k}", rel=rel, exact=exact)
    elif isinstance(b if exact else a, list):
        assert isinstance(a, list) and isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_nested_close(x, y, f"{path}[{i}]", rel=rel, exact=exact)
    elif exact and type(b) is float:
        assert a == pytest.approx(b, rel=rel, abs=1e-300), path
    elif not exact and isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=rel, abs_tol=rel), (path, a, b)
    else:
        assert a == b and (not exact or type(a) is type(b)), (path, a, b)


# -- mergeability (hypothesis) ----------------------------------------------------------------------------

_prob = st.floats(0.0, 1.0, allow_nan=False)
_record = st.builds(
    lambda user, t, y, raw, inten, ch, resolved, product: {
        "user_id": user,
        "time": BASE + t,
        "emotions": {e: (v + 1e-3) / (sum(raw) + 8e-3) for e, v in zip(EMOTIONS, raw, strict=True)},
        "polarity_score": y,
        "intensity": inten,
        "channel": ch,
        "resolved": resolved,
        "product": product,
        "error": None,
    },
    user=st.sampled_from(["a", "b", "c"]),
    # Up to ~3 years, so rebasing (every 8 half-lives) and deep decay both happen.
    t=st.one_of(st.integers(0, 3 * 365 * 86400).map(float), st.floats(0, 400 * DAY, allow_nan=False)),
    y=st.floats(-1.0, 1.0, allow_nan=False),
    raw=st.lists(_prob, min_size=8, max_size=8),
    inten=st.one_of(st.none(), _prob),
    ch=st.sampled_from(["review", "social", "support", None, "weird"]),
    resolved=st.sampled_from([True, False, None]),
    product=st.sampled_from([None, "p1", "p2"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    records=st.lists(_record, min_size=1, max_size=40),
    n_parts=st.integers(1, 6),
    data=st.data(),
)
def test_fold_equals_merge_of_any_split(records: list[dict], n_parts: int, data: st.DataObject) -> None:
    """Folding a stream == merging the folds of any partition, each folded in any order, merged in any order."""
    whole = build_profiles(records)
    assign = data.draw(st.lists(st.integers(0, n_parts - 1), min_size=len(records), max_size=len(records)))
    parts = [[r for r, a in zip(records, assign, strict=True) if a == k] for k in range(n_parts)]
    parts = [data.draw(st.permutations(p)) for p in parts]
    folded = [build_profiles(p) for p in parts]
    rnd = data.draw(st.randoms(use_true_random=False))
    # Random merge tree: repeatedly merge two random partial results.
    while len(folded) > 1:
        i, j = rnd.sample(range(len(folded)), 2)
        merged = merge_profiles(folded[i], folded[j])
        folded = [f for k, f in enumerate(folded) if k not in (i, j)] + [merged]
    result = folded[0]
    assert result.keys() == whole.keys()
    for uid in whole:
        assert_states_close(whole[uid], result[uid])
        # Serialisation round-trips exactly.
        again = ProfileState.from_json(result[uid].to_json())
        assert again.to_dict() == result[uid].to_dict()


@settings(max_examples=60, deadline=None)
@given(records=st.lists(_record, min_size=2, max_size=25), data=st.data())
def test_merge_is_commutative_and_associative(records: list[dict], data: st.DataObject) -> None:
    cut1 = data.draw(st.integers(0, len(records)))
    cut2 = data.draw(st.integers(cut1, len(records)))
    a, b, c = (build_profiles(records[:cut1]), build_profiles(records[cut1:cut2]), build_profiles(records[cut2:]))
    left = merge_profiles(merge_profiles(a, b), c)
    right = merge_profiles(a, merge_profiles(c, b))
    assert left.keys() == right.keys()
    for uid in left:
        assert_states_close(left[uid], right[uid])


def test_decay_weights_halve_per_half_life() -> None:
    s = ProfileState(half_life_days=30)
    s.fold(rec("u", 0, -1.0))
    s.fold(rec("u", 30, 1.0))
    # Weights 0.5 and 1 -> mean polarity (0.5 * -1 + 1) / 1.5 = 1/3.
    assert math.isclose(s.metrics()["polarity.mean"], 1 / 3, rel_tol=1e-12)
    m = s.metrics(now=BASE + 60 * DAY)
    assert math.isclose(m["evidence.decayed"], 0.75, rel_tol=1e-12)
    assert m["days_since_last"] == 30.0


# -- store ------------------------------------------------------------------------------------------------


def _store_summaries(path: Path, now: float) -> dict[str, dict]:
    with ProfileStore(path) as store:
        return {uid: st.summary(now, rules=load_rules()) for uid, st in store.iter_states()}


def test_store_two_halves_equal_one_run(tmp_path: Path) -> None:
    data = synthetic(3000, 60, seed=1)
    half = len(data) // 2
    r1 = run_profile(data[:half], store_path=tmp_path / "a.db", batch_id="part1")
    r2 = run_profile(data[half:], store_path=tmp_path / "a.db", batch_id="part2")
    r3 = run_profile(data, store_path=tmp_path / "b.db")
    assert r1.stats.folded + r2.stats.folded == r3.stats.folded
    now = parse_time("2025-01-01T00:00:00+08:00")
    a, b = _store_summaries(tmp_path / "a.db", now), _store_summaries(tmp_path / "b.db", now)
    assert a.keys() == b.keys() and len(a) == 60
    for uid in a:
        assert_nested_close(a[uid], b[uid], uid)
    with ProfileStore(tmp_path / "a.db") as s1, ProfileStore(tmp_path / "b.db") as s2:
        for uid, st1 in s1.iter_states():
            assert_states_close(st1, s2.get(uid))  # type: ignore[arg-type]
        assert [b["batch_id"] for b in s1.batches()] == ["part1", "part2"]


def test_store_batch_is_idempotent(tmp_path: Path) -> None:
    data = synthetic(200, 10, seed=2)
    db = tmp_path / "p.db"
    run_profile(data, store_path=db, batch_id="file-1")
    before = db.read_bytes()
    again = run_profile(data, store_path=db, batch_id="file-1")
    assert again.already_applied and again.stats.folded == 0
    assert db.read_bytes() == before
    with ProfileStore(db) as s:
        assert sum(st.n for _, st in s.iter_states()) == 200


def test_interrupted_upsert_leaves_store_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "p.db"
    run_profile(synthetic(300, 20, seed=3), store_path=db, batch_id="ok")
    with ProfileStore(db) as s:
        snapshot = {uid: st.to_json() for uid, st in s.iter_states()}
    calls = {"n": 0}
    real = ProfileState.to_json

    def flaky(self: ProfileState) -> str:
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(ProfileState, "to_json", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_profile(synthetic(300, 40, seed=4), store_path=db, batch_id="broken")
    monkeypatch.setattr(ProfileState, "to_json", real)
    with ProfileStore(db) as s:
        assert {uid: st.to_json() for uid, st in s.iter_states()} == snapshot
        assert not s.has_batch("broken")


def test_schema_version_check(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    with ProfileStore(db) as s:
        assert s.schema_version == 1
    con = sqlite3.connect(db)
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    with pytest.raises(StoreVersionError, match=r"schema version 99 is newer .* upgrade emotag"):
        ProfileStore(db)
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="not an emotag profile store"):
        ProfileStore(other)


def test_store_refuses_other_key_or_half_life(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "p.db"
    run_profile(synthetic(50, 5, seed=5), store_path=db)
    monkeypatch.setenv(KEY_ENV, "another-key-0123456789")
    with pytest.raises(StoreError, match="key differs"):
        run_profile(synthetic(50, 5, seed=6), store_path=db)
    monkeypatch.setenv(KEY_ENV, KEY)
    with pytest.raises(StoreError, match="half-life"):
        run_profile(synthetic(50, 5, seed=6), store_path=db, half_life_days=7)


# -- tags -------------------------------------------------------------------------------------------------


def _tags(records: list[dict]) -> dict[str, dict]:
    (state,) = build_profiles(records).values()
    return {t["tag"]: t for t in apply_rules(state, load_rules())}


def test_angry_user_gets_irritable() -> None:
    tags = _tags([rec("angry", d, -0.7, "anger", 0.8) for d in range(5)])
    assert "irritable" in tags
    assert tags["irritable"]["display"] == "易怒"
    assert tags["irritable"]["evidence"] == 5
    assert 0.0 <= tags["irritable"]["score"] <= 1.0


def test_user_turning_negative_gets_churn_risk() -> None:
    records = [rec("u", d * 6, 0.8 - d * (1.6 / 9), "like" if d < 5 else "sadness") for d in range(10)]
    tags = _tags(records)
    assert "churn_risk" in tags and tags["churn_risk"]["display"] == "失望流失风险"
    assert tags["churn_risk"]["score"] > 0
    # The same evidence in the opposite order (rising) is not a churn risk.
    rising = [rec("u", d * 6, -0.8 + d * (1.6 / 9), "like") for d in range(10)]
    assert "churn_risk" not in _tags(rising)


def test_other_default_tags() -> None:
    happy = _tags([rec("h", d * 3, 0.8, "like", 0.8) for d in range(6)])
    assert {"high_satisfaction", "loyal_fan"} <= happy.keys() and "irritable" not in happy
    surprised = _tags([rec("s", d, 0.6, "surprise", 0.7) for d in range(4)])
    assert "surprise_seeker" in surprised
    swings = _tags([rec("v", d, 0.9 if d % 2 else -0.9) for d in range(6)])
    assert "volatile" in swings


def test_no_tag_below_min_evidence() -> None:
    extreme = [rec("x", d, -1.0, "anger", 1.0, channel="support", resolved=False) for d in range(2)]
    assert _tags(extreme) == {}
    (state,) = build_profiles(extreme).values()
    assert state.summary()["tags"] == []
    # And in general: every emitted tag carries evidence >= its rule's min_evidence (>= 3 by default).
    rules = load_rules()
    for _uid, s in build_profiles(synthetic(2000, 400, seed=7)).items():
        for t in apply_rules(s, rules):
            assert t["evidence"] >= 3 and t["evidence"] == s.n


def test_conversations_feed_support_channel() -> None:
    def conv(i: int, sat: float, resolved: bool) -> dict:
        turn = rec("c", i, -0.6, "anger", 0.7) | {"speaker": "customer", "text": "客服太慢了"}
        return {
            "id": i,
            "user_id": "c",
            "turns": [turn | {"time": BASE + i * DAY}, turn | {"time": BASE + i * DAY + 600}],
            "satisfaction": sat,
            "start_emotion": "anger",
            "end_emotion": "anger",
            "resolved": resolved,
        }

    r = conversation_to_record(conv(1, -1.5, False))
    assert r["channel"] == "support" and r["polarity_score"] == -0.75 and r["resolved"] is False
    assert r["time"] == BASE + DAY + 600 and "text" not in r and "turns" not in r
    assert math.isclose(sum(r["emotions"].values()), 1.0)
    states = build_profiles([conv(i, -1.5, False) for i in range(3)])
    (state,) = states.values()
    summ = state.summary()
    assert summ["channels"]["support"]["count"] == 3 and summ["support"]["unresolved_negative"] == 3
    assert "service_dissatisfied" in {t["tag"] for t in summ["tags"]}
    ok = build_profiles([conv(i, 1.5, True) for i in range(3)])
    assert "service_dissatisfied" not in {t["tag"] for t in next(iter(ok.values())).summary()["tags"]}


# -- rules file validation ----------------------------------------------------------------------------------


def test_default_rules_are_package_data() -> None:
    path = default_rules_path()
    assert path.name == "default_rules.toml" and path.parent.name == "profiles" and path.exists()
    assert set(load_rules().tags) >= {"irritable", "churn_risk", "service_dissatisfied"}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('[[rule]]\ntag="a"\ndisplay="A"\nconditions=[{metric="emotion.angr", op=">=", value=0.2}]\nscore="volatility"',
         r"rule 'a'.*unknown metric 'emotion.angr' \(did you mean 'emotion.anger'\?\)"),
        ('[[rule]]\ntag="b"\ndisplay="B"\nconditions=[{metric="volatility", op="=>", value=0.2}]\nscore="volatility"',
         r"rule 'b'.*unknown op '=>'"),
        ('[[rule]]\ntag="c"\nconditions=[{metric="volatility", op=">", value=0.2}]\nscore="volatility"',
         r"rule 'c'.*missing 'display'"),
        ('[[rule]]\ntag="d"\ndisplay="D"\nconditions=[{metric="volatility", op=">", value="high"}]\nscore="volatility"',
         r"rule 'd'.*value must be a finite number"),
        ('[[rule]]\ntag="e"\ndisplay="E"\nconditions=[{metric="volatility", op="between", value=[1]}]\nscore="volatility"',
         r"rule 'e'.*'between' needs"),
        ('[[rule]]\ntag="f"\ndisplay="F"\nconditions=[{metric="volatility", op=">", value=1}]\nscore="volatility"\nmin_evidence=-1',
         r"rule 'f'.*min_evidence must be a non-negative integer"),
        ('[[rule]]\ntag="g"\ndisplay="G"\nwhen=1\nconditions=[{metric="volatility", op=">", value=1}]\nscore="volatility"',
         r"rule 'g'.*unknown key\(s\) \['when'\]"),
        ('[[rule]]\ntag="h"\ndisplay="H"\nconditions=[{metric="volatility", op=">", value=1}]\nscore="eval(1)"',
         r"rule 'h'.*score unknown metric"),
        ("[[rule]\ntag=", r"invalid TOML"),
        ("version = 1", r"no rules"),
    ],
)
def test_rules_validation_errors(tmp_path: Path, body: str, expected: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(RulesError, match=expected) as exc:
        load_rules(path)
    assert str(path) in str(exc.value)


def test_rules_duplicates_and_all_problems_reported(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    one = '[[rule]]\ntag="x"\ndisplay="X"\nconditions=[{metric="volatility", op=">", value=1}]\nscore="volatility"\n'
    path.write_text(one + one + '[[rule]]\ntag="y"\n', encoding="utf-8")
    with pytest.raises(RulesError) as exc:
        load_rules(path)
    assert any("duplicate tag 'x'" in p for p in exc.value.problems)
    assert any("rule 'y'" in p and "missing 'display'" in p for p in exc.value.problems)
    with pytest.raises(RulesError, match="cannot read"):
        load_rules(tmp_path / "missing.toml")


def test_custom_rules_nested_groups(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text(
        """
min_evidence = 2
[[rule]]
tag = "night_owl_angry"
display = "深夜怒气"
conditions = [
  { metric = "top.anger", op = "between", value = [0.5, 1.0] },
  { any = [ { metric = "polarity.mean", op = "<", value = -0.5 }, { metric = "volatility", op = ">", value = 2 } ] },
]
score = { metric = "polarity.mean", scale = -1.0, clamp = false }
""",
        encoding="utf-8",
    )
    rules = load_rules(path)
    (state,) = build_profiles([rec("a", d, -0.8, "anger") for d in range(2)]).values()
    (tag,) = apply_rules(state, rules)
    assert tag == {"tag": "night_owl_angry", "display": "深夜怒气", "score": pytest.approx(0.8), "evidence": 2}


# -- privacy ----------------------------------------------------------------------------------------------


def test_pseudonyms_stable_per_key_and_differ_across_keys() -> None:
    a1, a2, b = Pseudonymizer(KEY), Pseudonymizer(KEY), Pseudonymizer("a-different-key-987654321")
    assert a1("13800138000") == a2("13800138000")
    assert a1("13800138000") != b("13800138000")
    assert a1("13800138000") != a1("13800138001")
    assert len(a1("x")) == 64 and a1.fingerprint != b.fingerprint
    assert KEY not in repr(a1)
    ids = build_profiles([rec(123, 0, 0.1), rec("123", 1, 0.2), rec(123.0, 2, 0.3)], pseudonymizer=a1)
    assert list(ids) == [a1("123")] and ids[a1("123")].n == 3
    with pytest.raises(PseudonymKeyError, match="too short"):
        Pseudonymizer("short")


def test_raw_ids_refused_without_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV)
    data = [rec("alice", d, 0.1) for d in range(3)]
    with pytest.raises(PseudonymKeyError, match=KEY_ENV):
        run_profile(data, store_path=tmp_path / "p.db")
    assert not (tmp_path / "p.db").exists()
    res = run_profile(data, store_path=tmp_path / "raw.db", allow_raw_ids=True)
    assert not res.pseudonymous and "raw user ids" in res.message()
    with ProfileStore(tmp_path / "raw.db") as s:
        assert "alice" in s and s.meta["id_mode"] == "raw"
    # A key file works without the environment variable, and the store then refuses raw-id runs.
    key_file = tmp_path / "key"
    key_file.write_text("file-key-0123456789abcdef\n")
    run_profile(data, store_path=tmp_path / "k.db", key_file=key_file)
    with ProfileStore(tmp_path / "k.db") as s:
        assert Pseudonymizer("file-key-0123456789abcdef")("alice") in s
    with pytest.raises(StoreError, match="refusing to mix"):
        run_profile(data, store_path=tmp_path / "k.db", allow_raw_ids=True)


def test_text_and_raw_ids_never_stored(tmp_path: Path) -> None:
    sentinel = "SENTINEL_原文_7f3a9c"
    raw_id = "user-13912345678"
    data = [rec(raw_id, d, -0.5, "anger", text=f"{sentinel} 第{d}条", product="面膜") for d in range(5)]
    data.append(
        {"id": "c1", "user_id": raw_id, "satisfaction": -1.0, "resolved": False, "end_emotion": "anger",
         "turns": [rec(raw_id, 9, -0.5, "anger", speaker="customer", text=sentinel)]}
    )
    db, out = tmp_path / "p.db", tmp_path / "out.jsonl"
    res = run_profile(data, out=str(out), store_path=db)
    assert res.stats.folded == 6 and res.stats.conversations == 1
    for blob in (db.read_bytes(), out.read_bytes()):
        assert sentinel.encode("utf-8") not in blob and b"SENTINEL" not in blob
        assert raw_id.encode() not in blob and b"13912345678" not in blob
    assert not list(tmp_path.glob("p.db-*"))  # no leftover journal


def test_cohort_noise_reproducible_and_small_cells_suppressed() -> None:
    summaries = [{"top_emotion": "anger", "tags": [{"tag": "irritable", "display": "易怒"}]}] * 40
    summaries += [{"top_emotion": "like", "tags": [{"tag": "loyal_fan", "display": "忠实粉丝"}]}] * 3
    exact = {r["cell"]: r for r in cohort_counts(summaries, "top_emotion")}
    assert exact["anger"]["count"] == 40 and exact["anger"]["display"] == "愤怒"
    assert exact["like"]["count"] is None and exact["like"]["suppressed"]
    assert exact["fear"]["suppressed"]  # zero cells are reported (fixed domain) and suppressed
    n1 = cohort_counts(summaries, "top_emotion", epsilon=0.5, seed=7)
    n2 = cohort_counts(summaries, "top_emotion", epsilon=0.5, seed=7)
    n3 = cohort_counts(summaries, "top_emotion", epsilon=0.5, seed=8)
    assert n1 == n2 and n1 != n3
    assert all(r["noised"] for r in n1)
    assert all(r["count"] is None or r["count"] >= 10 for r in n1)
    tags = {r["cell"]: r for r in cohort_counts(summaries, "tag", k=5, rules=load_rules())}
    assert tags["irritable"]["count"] == 40 and tags["loyal_fan"]["suppressed"]
    assert tags["churn_risk"]["suppressed"] and tags["churn_risk"]["display"] == "失望流失风险"
    with pytest.raises(ValueError, match="epsilon"):
        cohort_counts(summaries, epsilon=0)


# -- inputs, outputs, time ----------------------------------------------------------------------------------


def test_time_parsing() -> None:
    t = parse_time("2024-05-01T10:00:00+08:00")
    assert parse_time("2024-05-01T02:00:00Z") == t
    assert parse_time("2024-05-01T10:00:00") == t  # naive = UTC+8
    assert parse_time("2024-05-01 10:00:00") == t
    assert parse_time(t) == t and parse_time(int(t)) == t and parse_time(str(int(t))) == t
    assert parse_time(t * 1000) == t  # epoch milliseconds
    with pytest.raises(ValueError):
        parse_time("yesterday")


@pytest.mark.parametrize("value", ["2024/05/01 10:00", "2024/5/1 10:00:00", "2024年5月1日 10:00", "2024.05.01 10:00",
                                   "20240501100000", 20240501100000])
def test_spreadsheet_timestamps_are_beijing_time(value: object) -> None:
    assert parse_time(value) == parse_time("2024-05-01T10:00:00+08:00")


def test_compact_dates_are_dates_not_1970() -> None:
    midnight = parse_time("2024-05-01T00:00:00+08:00")
    assert parse_time("20240501") == parse_time(20240501) == parse_time(20240501.0) == midnight
    assert parse_time("2024/5/1") == parse_time("2024年5月1日") == midnight
    with pytest.raises(ValueError):
        parse_time("2024/13/01")


def test_skips_are_counted_and_bad_rows_named() -> None:
    data = [rec("a", 0, 0.2), rec("a", 1, 0.2) | {"error": "empty text", "emotions": None}, rec(None, 2, 0.1)]
    data.append(rec("", 3, 0.1))
    res = run_profile(data)
    assert (res.stats.read, res.stats.folded, res.stats.skipped_error, res.stats.skipped_no_user) == (4, 1, 1, 2)
    with pytest.raises(ProfileInputError, match=r"row 2: field 'polarity_score' must be in \[-1, 1\]"):
        run_profile([rec("a", 0, 0.2), rec("a", 1, 1.7)])
    with pytest.raises(ProfileInputError, match=r"row 1: field 'when'"):
        run_profile([rec("a", 0, 0.2)], time_col="when")
    lenient = run_profile([rec("a", 0, 0.2), rec("a", 1, 1.7)], strict=False)
    assert lenient.stats.skipped_invalid == 1 and lenient.stats.folded == 1


def test_exports_by_extension(tmp_path: Path) -> None:
    import csv

    import pyarrow.parquet as pq

    data = synthetic(300, 12, seed=9) + [rec("angry", d, -0.7, "anger", 0.8) for d in range(5)]
    n_users = 13
    for ext in ("jsonl", "csv", "parquet"):
        out = tmp_path / f"profiles.{ext}"
        res = run_profile(data, out=str(out))
        assert res.profiles_written == n_users and out.exists()
    rows = [json.loads(line) for line in (tmp_path / "profiles.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == n_users
    assert math.isclose(sum(rows[0]["emotions"].values()), 1.0)
    assert {"user_id", "evidence", "polarity", "volatility", "tags", "first_seen", "last_seen"} <= rows[0].keys()
    assert any(t["display"] == "易怒" for r in rows for t in r["tags"])
    with (tmp_path / "profiles.csv").open(encoding="utf-8-sig") as f:
        header = next(csv.reader(f))
    assert {"emotions.anger", "polarity.trend", "channels.support.count", "tags"} <= set(header)
    table = pq.read_table(tmp_path / "profiles.parquet")
    assert table.num_rows == n_users and "emotions.anger" in table.column_names


def test_build_profiles_now_is_a_cutoff() -> None:
    data = [rec("a", d, 0.5) for d in range(10)]
    from emotag.profiles import FoldStats

    stats = FoldStats()
    states = build_profiles(data, now=BASE + 4.5 * DAY, stats=stats)
    assert states["a"].n == 5 and stats.skipped_future == 5


# ---------------------------------------------------------------- review pass: bad values, bursts, time


def test_epoch_units_and_implausible_times() -> None:
    t = parse_time("2024-05-01T10:00:00+08:00")
    assert parse_time(int(t * 1e6)) == pytest.approx(t) and parse_time(int(t * 1e9)) == pytest.approx(t)
    with pytest.raises(ProfileInputError, match="not a plausible record time"):
        run_profile([rec("a", 0, 0.2), rec("a", 1, 0.2) | {"time": 1e13 * 1000 - 1}])  # year ~5138 as ms


@pytest.mark.parametrize(("field", "value"), [("intensity", math.inf), ("intensity", 5.0),
                                               ("emotions", {"anger": 3.0, "like": -2.0})])
def test_out_of_range_values_are_bad_rows(field: str, value: Any) -> None:
    with pytest.raises(ProfileInputError, match="row 2"):
        run_profile([rec("a", 0, 0.2), rec("a", 1, 0.2) | {field: value}])


HUGE = 10**400  # valid JSON (any number of digits), but past float range


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"emotion": ["anger"]}, "field 'emotion' must be a label string, got list"),
        ({"emotion": {"a": 1}}, "field 'emotion' must be a label string, got dict"),
        ({"emotion": ["anger"], "emotions": None}, "field 'emotion' must be a label string"),  # the one-hot path
        ({"polarity": ["negative"]}, "field 'polarity' must be a label string, got list"),
        ({"polarity": {"x": 1}}, "field 'polarity' must be a label string, got dict"),
        ({"channel": "support", "resolved": False, "end_emotion": ["x"]}, "field 'end_emotion' must be a label"),
        ({"polarity_score": HUGE}, "field 'polarity_score' is out of range: 1000"),
        ({"intensity": HUGE}, "field 'intensity' is out of range"),
        ({"emotions": {"anger": HUGE}}, "field 'emotions' holds a non-number"),
        ({"emotions": None, "emotions.anger": HUGE}, "field 'emotions.anger' is out of range"),
        ({"emotions": "[" * 100_000}, "field 'emotions' is not a JSON object"),
        ({"time": HUGE}, "field 'time': invalid timestamp 1000"),
        ({"time": -HUGE}, "field 'time': invalid timestamp -1000"),
    ],
)
def test_unhashable_and_overflowing_values_are_bad_rows(extra: dict[str, Any], problem: str) -> None:
    """Lists where a label belongs and numbers past float range are bad rows like any other: refused
    (strict) or skipped, counted and named (lenient), never a TypeError or OverflowError."""
    data = [rec("a", 0, -0.2), rec("a", 1, -0.2) | extra]
    with pytest.raises(ProfileInputError, match=f"row 2: {re.escape(problem)}") as info:
        run_profile(data)
    assert len(str(info.value)) < 200  # the value is named, not echoed whole
    from emotag.profiles import FoldStats

    stats, named = FoldStats(), []
    states = build_profiles(data, strict=False, stats=stats, on_invalid=lambda row, msg: named.append((row, msg)))
    assert states["a"].n == 1 and (stats.folded, stats.skipped_invalid) == (1, 1)
    assert named and named[0][0] == 1 and problem in named[0][1]


def test_a_nan_label_is_a_missing_cell() -> None:
    """pandas writes a missing `emotion`/`polarity` cell as NaN: missing, not a damaged row."""
    (st,) = build_profiles([rec("a", 0, -0.5, "anger") | {"emotion": math.nan, "polarity": math.nan}]).values()
    assert st.n == 1


def test_a_burst_within_one_day_is_not_a_trend() -> None:
    burst = [rec("b", h / 24, s) for h, s in ((10, 0.6), (14, 0.0), (20, -0.6))]
    (state,) = build_profiles(burst).values()
    assert abs(state.metrics()["polarity.trend"]) < 0.2
    assert "churn_risk" not in _tags(burst)
    weeks = [rec("w", d, 0.6 - d * 0.02) for d in range(0, 60, 3)]  # a real two-month decline: -0.6 per 30 days
    (state,) = build_profiles(weeks).values()
    assert state.metrics()["polarity.trend"] == pytest.approx(-0.6, rel=0.2)


def test_conversation_values_that_are_not_numbers() -> None:
    turn = {"speaker": "customer", "emotions": dict.fromkeys(EMOTIONS, 0.125), "polarity_score": -0.5,
            "intensity": 0.5, "error": None}
    conv = {"id": "c", "user_id": "u", "time": BASE, "turns": [turn], "satisfaction": math.nan, "error": None}
    assert conversation_to_record(conv, "user_id", "time")["polarity_score"] == -0.5  # NaN: the turns decide
    with pytest.raises(ProfileInputError, match="row 1: conversation record"):
        run_profile([conv | {"satisfaction": "n/a"}])


def test_default_now_is_shared_and_never_before_a_record() -> None:
    from emotag.profiles.api import profile_rows

    states = build_profiles([rec("old", 0, 0.2), rec("new", 100, 0.2)])
    rows = {r["user_id"]: r for r in profile_rows(states, load_rules())}
    assert len(rows) == 2
    days = sorted(r["days_since_last"] for r in rows.values())
    assert days == pytest.approx([0.0, 100.0])
    (st,) = build_profiles([rec("x", 10, 0.2)]).values()
    assert st.metrics(now=BASE)["days_since_last"] == 0.0


def test_long_half_life_over_decades_does_not_overflow() -> None:
    data = [rec("a", d, 0.1) for d in (0, 365 * 20, 365 * 40)]
    (st,) = build_profiles(data, half_life_days=1000).values()
    assert math.isfinite(st.metrics()["polarity.recent"])


# -- `emotag profile`: a bad row is skipped, counted and named; --strict stops at it ---------------------


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _profile_cli(*args: str) -> Any:
    from typer.testing import CliRunner

    from emotag.cli import app

    return CliRunner().invoke(app, ["profile", *args])


def test_cli_profile_skips_and_names_a_bad_row(tmp_path: Path) -> None:
    records = [rec("u1", d, 0.5) for d in range(4)] + [rec("u2", d, -0.5) for d in range(3)]
    records[2]["time"] = ""  # row 3: an empty timestamp used to stop the whole run
    src = _write_jsonl(tmp_path / "scored.jsonl", records)
    out = tmp_path / "profiles.jsonl"
    res = _profile_cli(str(src), "-o", str(out))
    assert res.exit_code == 0, res.output
    assert "6 records folded into 2 users" in res.output and "invalid 1" in res.output
    assert f"{src}, row 3: field 'time': empty timestamp" in res.output
    assert len(out.read_text(encoding="utf-8").splitlines()) == 2  # both users, from the six good rows

    strict = _profile_cli(str(src), "-o", str(tmp_path / "strict.jsonl"), "--strict")
    assert strict.exit_code == 1
    assert f"{src}, row 3: field 'time': empty timestamp" in strict.output
    assert not (tmp_path / "strict.jsonl").exists()


def test_cli_profile_skips_rows_with_lists_for_labels_and_huge_numbers(tmp_path: Path) -> None:
    records = [rec("u1", d, 0.5) for d in range(3)]
    records += [rec("u1", 3, 0.5, emotion=["anger"]), rec("u1", 4, 0.5, polarity={"x": 1}),
                rec("u1", 5, 0.5, polarity_score=10**400)]
    src = _write_jsonl(tmp_path / "scored.jsonl", records)
    res = _profile_cli(str(src), "-o", str(tmp_path / "profiles.jsonl"))
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output and "invalid 3" in res.output
    assert "3 records folded into 1 users" in res.output
    assert f"{src}, row 4: field 'emotion' must be a label string" in res.output
    assert f"{src}, row 5: field 'polarity' must be a label string" in res.output
    assert f"{src}, row 6: field 'polarity_score' is out of range" in res.output


def test_cli_profile_error_report_is_bounded_and_a_store_keeps_the_good_rows(tmp_path: Path) -> None:
    from emotag.cli import PROFILE_ERRORS_SHOWN

    n_bad = PROFILE_ERRORS_SHOWN + 7
    records = [rec("u1", d, 0.5) for d in range(5)]
    records += [rec("u2", d, 0.5, polarity_score=3.0) for d in range(n_bad)]  # out of [-1, 1]
    src = _write_jsonl(tmp_path / "scored.jsonl", records)
    db = tmp_path / "p.db"
    res = _profile_cli(str(src), "--store", str(db))
    assert res.exit_code == 0, res.output
    assert f"skipped {n_bad} bad rows" in res.output and "... and 7 more" in res.output
    assert res.output.count("field 'polarity_score' must be in [-1, 1]") == PROFILE_ERRORS_SHOWN
    assert f"{src}, row 6: " in res.output and f"{src}, row {5 + n_bad}: " not in res.output
    with ProfileStore(db) as store:
        assert len(store) == 1 and sum(st.n for _, st in store.iter_states()) == 5
    assert f"the store recorded {src} as applied" in res.output


def test_cli_profile_fails_when_every_row_is_bad(tmp_path: Path) -> None:
    records = [rec("u1", d, 0.5, time="not a time") for d in range(3)]
    src = _write_jsonl(tmp_path / "scored.jsonl", records)
    db = tmp_path / "p.db"
    res = _profile_cli(str(src), "--store", str(db))
    assert res.exit_code == 1
    assert f"no row could be folded; first problem: {src}, row 1: field 'time'" in res.output
    assert "recorded" not in res.output  # nor does the output claim it was
    with ProfileStore(db) as store:
        assert store.batches() == []  # nothing recorded: the corrected file will still be applied


# -- custom-label models (emotag train --labels 好评,差评): the label set travels with the records -------------


def review_rec(user: str, day: float, praise: float, **extra: Any) -> dict[str, Any]:
    """A record as a custom-label model scores it: `emotions` over its own labels, not the taxonomy."""
    score = round(2 * praise - 1, 6)
    r = {"id": f"{user}-{day}", "user_id": user, "time": BASE + day * DAY,
         "emotion": "好评" if praise >= 0.5 else "差评", "emotions": {"好评": praise, "差评": 1.0 - praise},
         "polarity": "positive" if score > 0.1 else ("negative" if score < -0.1 else "neutral"),
         "polarity_score": score, "intensity": 0.5, "error": None}
    return r | extra


CUSTOM_RULES = """
version = 1
labels = ["好评", "差评"]
[[rule]]
tag = "praiser"
display = "好评达人"
conditions = [{ metric = "top.好评", op = ">=", value = 0.6 }]
score = "emotion.好评"
[[rule]]
tag = "happy"
display = "满意"
conditions = [{ metric = "polarity.mean", op = ">=", value = 0.3 }]
score = "polarity.mean"
"""


def test_cli_profiles_a_custom_label_model_and_its_rules(tmp_path: Path) -> None:
    records = [review_rec("fan", d, 0.9) for d in range(4)] + [review_rec("critic", d, 0.1) for d in range(4)]
    src = _write_jsonl(tmp_path / "scored.jsonl", records)
    rules = tmp_path / "reviews.toml"
    rules.write_text(CUSTOM_RULES, encoding="utf-8")
    out = tmp_path / "profiles.jsonl"
    res = _profile_cli(str(src), "-o", str(out), "--rules", str(rules))
    assert res.exit_code == 0, res.output
    assert "8 records folded into 2 users" in res.output and "rules skipped" not in res.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [list(r["emotions"]) for r in rows] == [["好评", "差评"]] * 2
    by_top = {r["top_emotion"]: r for r in rows}
    assert by_top["好评"]["emotions"]["好评"] == pytest.approx(0.9)
    assert {t["tag"] for t in by_top["好评"]["tags"]} == {"praiser", "happy"}
    assert by_top["差评"]["tags"] == []

    # the shipped rules: those on the taxonomy's emotions cannot be judged, are skipped and named
    res = _profile_cli(str(src), "-o", str(tmp_path / "default.jsonl"))
    assert res.exit_code == 0, res.output
    assert "rules skipped, their emotion labels are not this model's: " in res.output
    assert "irritable (anger)" in res.output and "high_satisfaction" not in res.output.split("rules skipped")[1]
    rows = [json.loads(line) for line in (tmp_path / "default.jsonl").read_text(encoding="utf-8").splitlines()]
    fan = next(r for r in rows if r["top_emotion"] == "好评")
    assert [t["tag"] for t in fan["tags"]] == ["high_satisfaction"]  # polarity rules still apply


def test_a_store_keeps_one_label_set(tmp_path: Path) -> None:
    default = _write_jsonl(tmp_path / "default.jsonl", [rec("u1", d, 0.5) for d in range(3)])
    custom = _write_jsonl(tmp_path / "custom.jsonl", [review_rec("u2", d, 0.8) for d in range(3)])
    db = tmp_path / "p.db"
    assert _profile_cli(str(default), "--store", str(db)).exit_code == 0
    res = _profile_cli(str(custom), "--store", str(db))  # not --strict: still refused, it is no bad row
    assert res.exit_code == 1
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"emotag: {custom}, row 1: field 'emotions' has labels 好评, 差评")
    assert f"the store {db}" in lines[0]
    with ProfileStore(db) as store:
        assert len(store) == 1 and store.labels == EMOTIONS and len(store.batches()) == 1
    # and the other way round: a store built from a custom model refuses the taxonomy's records
    db2 = tmp_path / "q.db"
    assert _profile_cli(str(custom), "--store", str(db2)).exit_code == 0
    with ProfileStore(db2) as store:
        assert store.labels == ("好评", "差评")
        (uid, st), = store.iter_states()
        assert st.labels == ("好评", "差评") and st.metrics()["emotion.好评"] == pytest.approx(0.8)
    res = _profile_cli(str(default), "--store", str(db2))
    assert res.exit_code == 1 and f"{default}, row 1: field 'emotions' has labels neutral, like" in res.output
    # partial states folded elsewhere (Spark's partitions) meet the same check when they are stored
    mixed = build_profiles([rec("a", 0, 0.5)], pseudonymizer=Pseudonymizer(KEY))
    mixed |= build_profiles([review_rec("b", 0, 0.8)], pseudonymizer=Pseudonymizer(KEY))
    with ProfileStore(tmp_path / "r.db") as store:
        with pytest.raises(StoreError, match="different emotion labels"):
            store.upsert(mixed, key_fingerprint=Pseudonymizer(KEY).fingerprint)
        assert len(store) == 0


def test_two_models_in_one_run_stop_at_the_first_foreign_row(tmp_path: Path) -> None:
    a = _write_jsonl(tmp_path / "a.jsonl", [review_rec("u", d, 0.8) for d in range(3)])
    b = _write_jsonl(tmp_path / "b.jsonl", [rec("u", d, 0.5) for d in range(3)])
    res = _profile_cli(str(a), str(b), "-o", str(tmp_path / "p.jsonl"))
    assert res.exit_code == 1
    assert f"{b}, row 1: field 'emotions' has labels neutral" in res.output and "the records before it" in res.output
    assert not (tmp_path / "p.jsonl").exists()


def test_custom_label_states_round_trip_and_refuse_to_merge() -> None:
    (custom,) = build_profiles([review_rec("u", d, 0.7) for d in range(3)]).values()
    again = ProfileState.from_json(custom.to_json())
    assert again.labels == ("好评", "差评") and again.to_dict() == custom.to_dict()
    (default,) = build_profiles([rec("u", 0, 0.5)]).values()
    with pytest.raises(ValueError, match="different emotion labels"):
        default.copy().merge(custom)
    old = default.to_dict()
    del old["labels"]  # a state stored before label sets were recorded
    assert ProfileState.from_dict(old).labels == EMOTIONS
    # flat columns from a spreadsheet carry the labels as well
    flat = {k: v for k, v in review_rec("u", 0, 0.7).items() if k != "emotions"} | {"emotions.好评": 0.7,
                                                                                     "emotions.差评": 0.3}
    (st,) = build_profiles([flat]).values()
    assert st.labels == ("好评", "差评") and st.metrics()["emotion.好评"] == pytest.approx(0.7)


def test_rules_name_their_labels() -> None:
    from emotag.profiles import parse_rules

    rule = {"tag": "t", "display": "T", "conditions": [{"metric": "emotion.好评", "op": ">=", "value": 0.5}],
            "score": "emotion.好评"}
    with pytest.raises(RulesError, match=r"unknown metric 'emotion.好评'"):
        parse_rules({"rule": [rule]})  # the taxonomy has no 好评 unless the file declares it
    rs = parse_rules({"labels": ["好评", "差评"], "rule": [rule]})
    assert rs.unusable(("好评", "差评")) == [] and rs.unusable(EMOTIONS) == [("t", ("好评",))]
    with pytest.raises(RulesError, match=r"did you mean 'emotion.好评'"):
        parse_rules({"labels": ["好评", "差评"], "rule": [rule | {"score": "emotion.好平"}]})
    with pytest.raises(RulesError, match="labels must be a list"):
        parse_rules({"labels": "好评", "rule": [rule]})


# -- exports go through emotag.io's writer: `.json` is a JSON array there as everywhere ---------------------


@pytest.mark.parametrize("ext", ["json", "ndjson", "csv", "tsv", "parquet", "xlsx"])
def test_profile_exports_round_trip_through_emotag_io(tmp_path: Path, ext: str) -> None:
    from emotag.io import read_records
    from emotag.profiles.export import flatten

    data = synthetic(200, 9, seed=4) + [rec("angry", d, -0.7, "anger", 0.8) for d in range(5)]
    ref_path = tmp_path / "ref.jsonl"
    run_profile(data, out=str(ref_path))
    ref = [json.loads(line) for line in ref_path.read_text(encoding="utf-8").splitlines()]
    assert len(ref) == 10 and any(r["tags"] for r in ref) and any(r["products"] for r in ref)
    out = tmp_path / f"profiles.{ext}"
    assert run_profile(data, out=str(out)).profiles_written == len(ref)
    back = list(read_records(str(out)))
    if ext in ("json", "ndjson"):
        assert back == ref  # the nested rows themselves
    else:  # flat: the same columns and values, whichever depth they were nested at
        flat_back, flat_ref = [flatten(r, keep_lists=True) for r in back], [flatten(r, keep_lists=True) for r in ref]
        assert [list(r) for r in flat_back] == [list(r) for r in flat_ref]
        for got, want in zip(flat_back, flat_ref, strict=True):
            for k, v in want.items():  # xlsx keeps 15-16 significant digits, the text formats all 17
                assert got[k] == (pytest.approx(v, rel=1e-14) if type(v) is float else v), k
    if ext == "json":
        assert isinstance(json.loads(out.read_text(encoding="utf-8")), list)  # one array, as `score` writes
    assert not list(tmp_path.glob("*.partial*"))


def test_profile_output_never_replaces_an_input(tmp_path: Path) -> None:
    src = _write_jsonl(tmp_path / "scored.jsonl", [rec("u1", d, 0.5) for d in range(3)])
    before = src.read_bytes()
    res = _profile_cli(str(src), "-o", str(tmp_path / "." / "scored.jsonl"))
    assert res.exit_code == 1 and "is the input file" in res.output
    assert src.read_bytes() == before
    res = _profile_cli(str(src), "-o", str(tmp_path / "profiles.txt"))
    assert res.exit_code == 1 and "profiles cannot be written as txt" in res.output


def test_cohorts_by_top_emotion_use_the_profiles_labels() -> None:
    from emotag.profiles.api import profile_rows

    data = [review_rec(f"fan{i}", d, 0.9) for i in range(3) for d in range(3)] + [review_rec("critic", 0, 0.2)]
    rows = list(profile_rows(build_profiles(data)))
    cells = {c["cell"]: c["count"] for c in cohort_counts(rows, "top_emotion", k=1)}
    assert cells == {"好评": 3, "差评": 1}  # not the taxonomy's eight empty cells
    default = list(profile_rows(build_profiles([rec("u", 0, 0.5, "anger", 0.9)])))
    cells = {c["cell"]: c["count"] for c in cohort_counts(default, "top_emotion", k=0)}
    assert set(cells) == set(EMOTIONS) and cells["anger"] == 1 and cells["like"] == 0


@pytest.fixture(scope="module")
def review_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A custom-label model as `emotag train --labels 好评,差评` on an emotag base leaves it: the emotion
    head rebuilt over 好评/差评 (started from the base's positive/negative rows), polarity kept."""
    import shutil

    from emotag.labels import POLARITY
    from emotag.model.export import export_onnx
    from emotag.model.modeling import EmotagModel

    out = tmp_path_factory.mktemp("reviews") / "model"
    shutil.copytree(tiny_model_dir, out)
    model = EmotagModel.load(out)
    model.remap_emotion_head(("好评", "差评"), [("polarity", POLARITY.index("positive")),
                                                ("polarity", POLARITY.index("negative"))], multi_label=False)
    model.save(out)
    for stale in out.glob("*.onnx"):
        stale.unlink()
    export_onnx(out)
    return out


def test_cli_profiles_what_a_custom_label_model_scored(review_model_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from emotag.cli import app

    texts = ["很好吃，下次还来", "太难吃了，再也不买", "味道不错，好评", "送得太慢了，差评"] * 3
    src = tmp_path / "reviews.csv"
    src.write_text("user_id,time,text\n" + "".join(f"u{i % 3},2024-05-{i + 1:02d} 10:00,{t}\n"
                                                   for i, t in enumerate(texts)), encoding="utf-8")
    scored = tmp_path / "scored.jsonl"
    res = CliRunner().invoke(app, ["score", str(src), "-o", str(scored), "--model", str(review_model_dir),
                                   "--backend", "onnx", "--keep", "user_id,time", "-q"])
    assert res.exit_code == 0, res.output
    first = json.loads(scored.read_text(encoding="utf-8").splitlines()[0])
    assert set(first["emotions"]) == {"好评", "差评"} and first["error"] is None
    out = tmp_path / "profiles.csv"
    res = _profile_cli(str(scored), "-o", str(out))
    assert res.exit_code == 0, res.output  # it failed every row with "sum 0" when profiles knew 8 emotions only
    assert "12 records folded into 3 users" in res.output and "irritable (anger)" in res.output
    from emotag.io import read_records

    rows = list(read_records(str(out)))
    assert len(rows) == 3
    for row in rows:
        assert set(row["emotions"]) == {"好评", "差评"} and math.isclose(sum(row["emotions"].values()), 1.0)
        assert row["top_emotion"] in ("好评", "差评")



def test_conversation_with_an_overflowing_number_is_an_invalid_row() -> None:
    """A dialogue record whose satisfaction has hundreds of digits (valid JSON) is a bad row like "n/a": an
    error naming the row when strict, skipped and counted when not, never an OverflowError."""
    turn = {"speaker": "customer", "emotions": dict.fromkeys(EMOTIONS, 0.125), "polarity_score": -0.5,
            "intensity": 0.5, "error": None}
    conv = {"id": "c", "user_id": "u", "time": BASE, "turns": [turn], "satisfaction": 10 ** 400, "error": None}
    with pytest.raises(ProfileInputError, match="row 1: conversation record"):
        run_profile([conv])
    seen = []
    assert build_profiles([conv], strict=False, on_invalid=lambda row, problem: seen.append(row)) == {}
    assert seen == [0]


def test_digit_labels_read_back_from_csv_are_labels(tmp_path) -> None:
    """A model with labels 1..5 scored to CSV: read_records gives the cell back as the integer 5, which is
    the label it spells, not a damaged record."""
    from emotag.io import read_records

    path = tmp_path / "digits.csv"
    path.write_text("id,user_id,time,emotion,emotions.1,emotions.5,polarity,polarity_score\n"
                    "1,u1,2026-03-01 10:00,5,0.2,0.8,positive,0.6\n", encoding="utf-8")
    rows = list(read_records(str(path)))
    assert rows[0]["emotion"] == 5
    states = build_profiles(rows, strict=True)
    assert len(states) == 1


@pytest.mark.parametrize("value", ["20240230", 20240230, "20241301", "20240000", "30001231", 12345678])
def test_an_invalid_compact_date_is_a_bad_time_not_1970(value) -> None:
    """An 8-digit value is YYYYMMDD or nothing: a typo (20240230) was read as epoch seconds, a day in 1970."""
    from emotag.profiles.timeutil import TimeParseError, parse_time

    with pytest.raises(TimeParseError, match="invalid compact date"):
        parse_time(value)
    assert parse_time("21991231") > parse_time("20240501") == parse_time(20240501)


def test_a_neutral_support_contact_is_not_an_unresolved_negative_one() -> None:
    """The flag reads the record's polarity (the ±band around 0 is neutral): a satisfaction of -0.005 is a
    neutral contact in polarity.*, and was counted as an unresolved negative one."""
    from emotag.profiles.records import extract

    base = rec("u1", 0, -0.0026, channel="support", resolved=False, end_emotion="neutral")
    assert extract(base | {"polarity": "neutral"})[7] is False
    assert extract(base | {"polarity": "negative"})[7] is True
    assert extract(base | {"polarity": None, "polarity_score": -0.6})[7] is True
    assert extract(base | {"polarity": "neutral", "end_emotion": "anger"})[7] is True


def test_a_support_contact_not_known_to_be_resolved_counts_as_unresolved() -> None:
    """score-dialogues writes resolved null for one customer turn (no first and last to compare); the flag
    read only `is False`, so the commonest complaint, one angry message, stopped counting towards 服务不满."""
    from emotag.profiles.records import extract

    base = rec("u1", 0, -0.8, channel="support", end_emotion="anger", polarity="negative")
    assert [extract(base | {"resolved": r})[7] for r in (None, False, True)] == [True, True, False]
    assert extract({k: v for k, v in base.items() if k != "resolved"})[7] is True


# -- regressions: NaN errors, Chinese times, --channels, repeated inputs, key whitespace, deep round trip -----


def test_a_nan_error_cell_is_no_error() -> None:
    """pandas gives a missing `error` cell as NaN, which is truthy: every record of
    `pd.read_csv(scored.csv).to_dict("records")` counted as an error row and nothing was folded."""
    from emotag.profiles.records import record_error

    nan = float("nan")
    data = [rec("u1", d, 0.5, error=nan) for d in range(3)] + [rec("u2", 0, -0.5, error="")]
    data += [rec("u3", 0, 0.1, error="empty text")]
    res = run_profile(data, allow_raw_ids=True, strict=False)
    assert res.stats.folded == 4 and res.stats.skipped_error == 1, res.message()
    assert [record_error({"error": v}) for v in (None, "", "  ", nan)] == [None] * 4
    assert record_error({}) is None and record_error({"error": "boom"}) == "boom"
    st = ProfileState()
    assert st.fold(rec("u1", 0, 0.5, error=nan)) is True and st.n == 1
    assert st.fold(rec("u1", 1, 0.5, error="boom")) is False and st.n == 1
    # a conversation (and its turns) read through pandas carries NaN errors too
    turn = {"speaker": "customer", "text": "x", "emotions": rec("u", 0, 0.0)["emotions"], "polarity_score": 0.2,
            "intensity": 0.3, "error": nan}
    conv = {"id": 1, "user_id": "u4", "time": BASE, "turns": [turn], "satisfaction": 1.0, "error": nan}
    converted = conversation_to_record(conv)
    assert converted["error"] is None and converted["emotions"] is not None
    assert run_profile([conv], allow_raw_ids=True).stats.folded == 1


def test_pandas_read_scored_csv_folds_every_row(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    from emotag.io import RecordWriter

    path = tmp_path / "scored.csv"
    with RecordWriter(str(path)) as w:
        for d in range(4):
            w.write(rec("u1", d, 0.4))
    df = pd.read_csv(path)
    assert df["error"].isna().all()
    res = run_profile(df.to_dict("records"), allow_raw_ids=True, strict=False)
    assert res.stats.folded == 4 and res.stats.skipped == 0, res.message()


@pytest.mark.parametrize(("value", "expected"), [
    ("2024年5月1日 10时30分", "2024-05-01T10:30:00+08:00"),
    ("2024年5月1日10时30分", "2024-05-01T10:30:00+08:00"),
    ("2024年5月1日 10时30分15秒", "2024-05-01T10:30:15+08:00"),
    ("2024年5月1日 10时30", "2024-05-01T10:30:00+08:00"),
    ("2024年5月1日 10点30分", "2024-05-01T10:30:00+08:00"),
    ("2024年5月1日 10点30分15秒", "2024-05-01T10:30:15+08:00"),
    ("2024年5月1日 10点", "2024-05-01T10:00:00+08:00"),
    ("2024年5月1日 10时", "2024-05-01T10:00:00+08:00"),
    ("2024年5月1日 10点30分Z", "2024-05-01T10:30:00+00:00"),
])
def test_chinese_clock_times(value: str, expected: str) -> None:
    assert parse_time(value) == parse_time(expected)


@pytest.mark.parametrize("value", ["2024年5月1日 10点5", "2024年5月1日 10点30", "2024年5月1日 下午3点",
                                   "2024年5月1日 25点", "2024年5月1日 10分"])
def test_ambiguous_chinese_clock_times_are_refused(value: str) -> None:
    """10点5 is said for 10:05 and for 10:30, 下午3点 is a 12-hour clock: a bad time, not a guess."""
    from emotag.profiles.timeutil import TimeParseError

    with pytest.raises(TimeParseError, match="unparseable timestamp"):
        parse_time(value)


def test_cli_profile_refuses_an_unknown_channel_before_applying_anything(tmp_path: Path) -> None:
    """A typo in --channels moved every record to `other`, and with --store recorded the file as applied, so
    the corrected run was skipped as a repeat."""
    src = _write_jsonl(tmp_path / "scored.jsonl", [rec("u1", d, 0.5) for d in range(3)])
    other = _write_jsonl(tmp_path / "other.jsonl", [rec("u2", d, 0.5) for d in range(3)])
    db = tmp_path / "p.db"
    res = _profile_cli(str(src), str(other), "--channels", "review,socail", "--store", str(db))
    assert res.exit_code == 1
    assert res.output.strip() == ("emotag: --channels: unknown channel 'socail'; use review, social, support, "
                                  "other (empty: the records' own `channel` field)")
    assert not db.exists()  # nothing opened, nothing recorded
    ok = _profile_cli(str(src), str(other), "--channels", "review,social", "--store", str(db),
                      "-o", str(tmp_path / "p.jsonl"))
    assert ok.exit_code == 0, ok.output
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(r["channels"]["review"]["count"] + 10 * r["channels"]["social"]["count"] for r in rows) == [3, 30]
    assert all(r["channels"]["other"]["count"] == 0 for r in rows)


def test_cli_profile_folds_a_repeated_input_once_without_a_store(tmp_path: Path) -> None:
    """Without --store the same file given twice was folded twice (evidence doubled); with --store its batch id
    made the second a no-op. Both now fold it once, and say so."""
    data = [rec("u1", d, 0.5) for d in range(3)]
    src = _write_jsonl(tmp_path / "scored.jsonl", data)
    copy = _write_jsonl(tmp_path / "copy.jsonl", data)
    out = tmp_path / "p.jsonl"
    res = _profile_cli(str(src), str(src), str(copy), "-o", str(out))
    assert res.exit_code == 0, res.output
    assert "3 records folded into 1 users" in res.output
    assert (f"repeated input skipped, folded once: {src} (given twice), {copy} (same content as {src})"
            in res.output)
    (row,) = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert row["evidence"] == 3
    db = tmp_path / "p.db"
    stored = _profile_cli(str(src), str(src), "--store", str(db))
    assert stored.exit_code == 0 and "batch already applied, unchanged" in stored.output
    with ProfileStore(db) as store:
        assert sum(st.n for _, st in store.iter_states()) == 3


def test_cli_profile_names_a_missing_input_in_one_line_with_or_without_a_store(tmp_path: Path) -> None:
    """The repeated-input check hashed every path before the reader opened it, so a missing file printed a
    bare "[Errno 2] No such file or directory" instead of the reader's "FILE: file not found"."""
    src = _write_jsonl(tmp_path / "scored.jsonl", [rec("u1", 0, 0.5)])
    missing = tmp_path / "nosuch.jsonl"
    for extra in ((), ("--store", str(tmp_path / "p.db"))):
        res = _profile_cli(str(src), str(missing), "-o", str(tmp_path / "p.jsonl"), *extra)
        assert res.exit_code == 1, res.output
        assert f"{missing}: file not found" in res.output and "Errno" not in res.output, res.output


def test_env_key_and_key_file_strip_the_same_whitespace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A secret mounted with a trailing newline gave other pseudonyms from the variable than from the file."""
    from emotag.profiles import resolve_pseudonymizer

    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    from_file = resolve_pseudonymizer(key_file)
    for env in (KEY + "\n", KEY + " \r\n", KEY):
        monkeypatch.setenv(KEY_ENV, env)
        from_env = resolve_pseudonymizer()
        assert from_env is not None and from_file is not None
        assert from_env.fingerprint == from_file.fingerprint and from_env("alice") == from_file("alice")
    monkeypatch.setenv(KEY_ENV, " \n")
    with pytest.raises(PseudonymKeyError, match=f"{KEY_ENV} is empty"):
        resolve_pseudonymizer()
    key_file.write_text("\n\n")
    with pytest.raises(PseudonymKeyError, match="key file is empty"):
        resolve_pseudonymizer(key_file)


@pytest.mark.parametrize("ext", ["csv", "tsv", "parquet", "jsonl", "xlsx"])
def test_profile_export_reads_back_as_the_nested_rows(tmp_path: Path, ext: str) -> None:
    """read_records nested one level only (`channels.review.count` came back as {'channels': {'review.count':
    ...}}), and Parquet gave `products` back as JSON text while csv gave the dict."""
    from emotag.io import read_records

    data = synthetic(200, 9, seed=4) + [rec("angry", d, -0.7, "anger", 0.8, product="面膜") for d in range(5)]
    data += [rec("chat", d, -0.3, channel="support", resolved=False) for d in range(3)]
    ref_path = tmp_path / "ref.jsonl"
    run_profile(data, out=str(ref_path))
    ref = [json.loads(line) for line in ref_path.read_text(encoding="utf-8").splitlines()]
    assert any(r["products"] for r in ref) and any(r["tags"] for r in ref)
    out = tmp_path / f"profiles.{ext}"
    run_profile(data, out=str(out))
    back = list(read_records(str(out)))
    assert isinstance(back[0]["channels"]["review"], dict) and isinstance(back[0]["products"], dict)
    assert_nested_close(back, ref, rel=1e-14, exact=True)  # xlsx keeps 15-16 digits, text formats 17


def test_dotted_columns_nest_at_every_depth_but_keep_decimal_labels(tmp_path: Path) -> None:
    from emotag.io import read_records

    path = tmp_path / "t.csv"
    path.write_text("a,a.b,x.y.z,x.y.w,emotions.4.5,emotions.1\n1,2,3,4,0.25,0.75\n", encoding="utf-8")
    (row,) = read_records(str(path))
    assert row == {"a": 1, "a.b": 2, "x": {"y": {"z": 3, "w": 4}}, "emotions": {"4.5": 0.25, "1": 0.75}}


def test_parquet_text_that_looks_like_json_reads_back_as_text(tmp_path: Path) -> None:
    """Parquet read-back used to guess: a text cell '{"味道":"好"}' or '{}' came back as a dict, so
    `emotag profile` keyed a product '{"sku":1}' as the repr "{'sku': 1}". Only the columns the writer marked
    as JSON (written from dicts and lists) are decoded; text stays text, whoever wrote the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from emotag.io import RecordWriter, read_records

    texts = ['{"味道":"好"}', "{}", "[图片]", '{"sku":1}']
    by_hand = tmp_path / "hand.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3, 4], "text": texts}), by_hand)
    assert [r["text"] for r in read_records(str(by_hand))] == texts

    ours = tmp_path / "ours.parquet"
    rows = [{"id": i, "product": t, "meta": {"k": [i]} if i % 2 else None, "tags": ["a"] * i}
            for i, t in enumerate(texts)]
    with RecordWriter(str(ours), template={"id": "", "product": "", "meta": "", "tags": ""}) as w:
        for r in rows:
            w.write(r)
    assert list(read_records(str(ours))) == rows
    marked = {f.name for f in pq.read_schema(ours) if (f.metadata or {}).get(b"emotag.encoding") == b"json"}
    assert marked == {"meta", "tags"}

    scored = [rec("u1", d, 0.5, product=texts[3], channel="review") for d in range(3)]
    with RecordWriter(str(tmp_path / "scored.parquet")) as w:
        for r in scored:
            w.write(r)
    profiles = tmp_path / "p.jsonl"
    run_profile(read_records(str(tmp_path / "scored.parquet")), out=str(profiles))
    (row,) = [json.loads(line) for line in profiles.read_text(encoding="utf-8").splitlines()]
    assert list(row["products"]) == ['{"sku":1}']


@pytest.mark.parametrize("ext", ["csv", "parquet", "xlsx"])
def test_whole_keys_stay_one_json_column_in_every_flat_format(tmp_path: Path, ext: str) -> None:
    """An open-ended map (a profile's `products`) is one column, not a column per key, and reads back as
    the map; in parquet that column is marked as JSON, which is what lets the reader decode it."""
    import pyarrow.parquet as pq

    from emotag.io import RecordWriter, read_records

    rows = [{"user": "a", "products": {"手机": {"count": 2, "polarity": 0.5}}, "n": 1},
            {"user": "b", "products": {}, "n": 2},
            {"user": "c", "products": {"面膜": {"count": 1, "polarity": None}, "x.y": {"count": 3}}, "n": 3}]
    out = tmp_path / f"w.{ext}"
    with RecordWriter(str(out), whole_keys={"products"}) as w:
        for r in rows:
            w.write(r)
    assert list(read_records(str(out))) == rows
    if ext == "parquet":
        field = pq.read_schema(out).field("products")
        assert pq.read_schema(out).names == ["user", "products", "n"]
        assert field.metadata == {b"emotag.encoding": b"json"}
    if ext == "csv":
        assert out.read_text(encoding="utf-8-sig").splitlines()[0] == "user,products,n"


def test_profile_export_marks_products_as_json_in_parquet(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    data = [rec("u1", d, -0.4, product="面膜") for d in range(3)] + [rec("u2", 1, 0.5)]
    out = tmp_path / "p.parquet"
    run_profile(data, out=str(out))
    schema = pq.read_schema(out)
    marked = {f.name for f in schema if (f.metadata or {}).get(b"emotag.encoding") == b"json"}
    assert marked == {"products", "tags"}
    assert not any(n.startswith("products.") for n in schema.names)


@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_a_column_beside_a_longer_dotted_name_keeps_that_name_flat(tmp_path: Path, ext: str) -> None:
    """`a` and `a.b.c` read back as {'a': 1, 'a.b': {'c': 2}}: half the name nested under a key that is no
    level of anything. Once a level of a dotted name is itself a column, the name is one flat key."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from emotag.io import read_records

    names = ["a", "a.b.c", "x.y", "x.y.z.w", "p.q.r", "emotions.4", "emotions.4.5"]
    values = [1, 2, 3, 4, 5, 0.25, 0.75]
    path = tmp_path / f"t.{ext}"
    if ext == "csv":
        path.write_text(",".join(names) + "\n" + ",".join(map(str, values)) + "\n", encoding="utf-8")
    else:
        pq.write_table(pa.table({n: [v] for n, v in zip(names, values, strict=True)}), path)
    (row,) = read_records(str(path))
    assert row == {"a": 1, "a.b.c": 2, "x": {"y": 3}, "x.y.z.w": 4, "p": {"q": {"r": 5}},
                   "emotions": {"4": 0.25, "4.5": 0.75}}
