"""The paths into and through `Tagger` besides `Tagger.load(local dir)`: a model fetched from the hub, a
Tagger built by hand, composition_inputs beside concurrent scoring, tag() vs tag_many() and their batches,
and where the composer's units are found when the featurizer cuts texts at contrast turns."""

from __future__ import annotations

import dataclasses
import fnmatch
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from emotag import Tagger
from emotag.model.compose import FEATURES, units_of
from emotag.model.config import HUB_PATTERNS, EmotagConfig
from emotag.model.experts import EXPERTS_NAME, Experts
from emotag.model.features import Batch, Featurizer
from emotag.runtime.backends import load_backend
from emotag.tagger import TAG_PAD_SLACK

# short and long, plain, negated, turned, questions, emoji tags, Latin, traditional script; several are
# longer than one window (126 characters), so they are scored as several windows and get no units
LONG = ("这次入住体验总体不错，前台服务热情，办理入住很快。房间干净整洁，床品舒适，但是隔音不太好，"
        "晚上能听到走廊的声音。早餐种类不多，味道一般，咖啡是速溶的。位置很方便，离地铁站只有五分钟，"
        "周边吃饭的地方也很多。停车场比较小，周末不好停车。总的来说性价比还可以，下次出差可能还会考虑，"
        "不过希望酒店能改善一下隔音和早餐。")
TEXTS = [
    "这家外卖不难吃", "物流很快但是包装破损了", "请问什么时候发货", "好吃！", "一点也不好吃",
    "衣服没有色差，很满意", "房间里一点异味都没有", "本来以为会很难吃，没想到特别好吃",
    "质量不错，就是价格有点贵", "客服态度很差，再也不买了", "不是不好，只是不适合我", "味道不差",
    "包装很好但是菜是凉的", "订单号12345", "这道菜很好吃，但是太贵了", "好的，收到", "ok fine thanks",
    "超好吃！！！一口气干了三包哈哈哈[哈哈]", "這款面膜包裝太簡陋了，很失望", "没想到这么快就到了[赞]",
    "不怎么样", "他从来不迟到", "快递员态度很差，但是泡沫很丰富。", "屏幕不亮了，也没人管",
    LONG, LONG + "但是最后退房的时候前台不太耐烦，有点失望。", (LONG + "\n") * 3, "一般" * 80,  # (repeats collapse)
    "这个手机不卡，电池也不差，但是拍照不行" * 8, "真的不推荐",
]


def _same(a: Any, b: Any, tol: float = 2e-6) -> None:
    """Records equal: labels exactly, numbers within `tol`.

    Why a tolerance at all: results are rounded to 6 decimals, and the same window scored in a batch of
    another shape (other padding, other kernel blocking) can differ in the 7th, which flips the 6th."""
    assert type(a) is type(b) or (isinstance(a, float) and isinstance(b, float)), (a, b)
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            if k != "id":
                _same(a[k], b[k], tol)
    elif isinstance(a, float):
        assert a == pytest.approx(b, abs=tol)
    else:
        assert a == b


class CountingBackend:
    """A backend that counts its calls and windows, and may run a callback (another caller) mid-call."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.batches: list[int] = []
        self.shapes: list[tuple[int, int]] = []  # (padded tokens, real tokens) per call
        self.during: Any = None

    def run(self, batch: Batch) -> dict[str, np.ndarray]:
        self.batches.append(len(batch))
        self.shapes.append((int(batch.input_ids.size), int(batch.attention_mask.sum())))
        if self.during is not None:
            hook, self.during = self.during, None
            hook()
        return self.inner.run(batch)


@pytest.fixture(scope="module")
def tagger(bundled_model_dir: Path) -> Tagger:
    t = Tagger.load(bundled_model_dir, threads=1)
    if t.composer is None or not t.composer.experts:
        pytest.skip("the bundled model has no composer reading experts")
    return t


# -- 1. a model directory fetched from the hub ------------------------------------------------------------

def test_the_hub_download_fetches_every_kind_of_file_the_bundled_model_has(bundled_model_dir: Path) -> None:
    names = [p.name for p in bundled_model_dir.iterdir() if p.is_file()]
    assert EXPERTS_NAME in names
    missed = [n for n in names if not any(fnmatch.fnmatch(n, pat) for pat in HUB_PATTERNS)]
    assert not missed, f"a hub download would drop {missed}"


def test_a_model_from_the_hub_loads_and_scores_like_the_local_directory(
    tagger: Tagger, bundled_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No network: a stand-in hub that serves the bundled model's files, filtered by allow_patterns the way
    huggingface_hub.snapshot_download filters them."""
    asked: list[list[str]] = []

    def snapshot_download(repo_id: str, allow_patterns: list[str] | None = None, **_: Any) -> str:
        asked.append(list(allow_patterns or []))
        out = tmp_path / repo_id.replace("/", "--")
        out.mkdir(parents=True)
        for f in bundled_model_dir.iterdir():
            if f.is_file() and any(fnmatch.fnmatch(f.name, p) for p in allow_patterns or ["*"]):
                (out / f.name).symlink_to(f)
        return str(out)

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(snapshot_download=snapshot_download))
    hub = Tagger.load("someone-on-the-hub/emotag-zh-small", threads=1)
    assert asked and "*.npz" in asked[0]
    assert hub.experts is not None and hub.experts.names == tagger.experts.names
    for a, b in zip(hub.tag_many(TEXTS[:12]), tagger.tag_many(TEXTS[:12]), strict=True):
        assert a.to_dict() == b.to_dict()


# -- 2. a Tagger built by hand ------------------------------------------------------------------------------

def test_a_hand_built_tagger_without_experts_says_how_to_give_them(tagger: Tagger, bundled_model_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"pass model_dir=.*experts="):
        Tagger(tagger.featurizer, tagger.backend)


@pytest.mark.parametrize("how", ["model_dir", "experts"])
def test_a_hand_built_tagger_with_experts_scores_like_load(tagger: Tagger, bundled_model_dir: Path, how: str) -> None:
    if how == "model_dir":
        built = Tagger(tagger.featurizer, tagger.backend, model_dir=bundled_model_dir)
    else:
        built = Tagger(tagger.featurizer, tagger.backend, experts=Experts.load(bundled_model_dir))
    for a, b in zip(built.tag_many(TEXTS[:12]), tagger.tag_many(TEXTS[:12]), strict=True):
        assert a.to_dict() == b.to_dict()


def test_experts_that_lack_what_the_composer_reads_are_refused(tagger: Tagger) -> None:
    e = tagger.experts
    assert e is not None
    keep = [k for k, n in enumerate(e.names) if n != "polarity:hotel"]
    fewer = Experts(tuple(e.names[k] for k in keep), e.idf, e.weight[:, keep], e.bias[keep])
    with pytest.raises(ValueError, match="polarity:hotel"):
        Tagger(tagger.featurizer, tagger.backend, experts=fewer)


# -- 3. composition_inputs beside concurrent scoring --------------------------------------------------------

def test_scoring_while_composition_inputs_runs_still_applies_the_composer(
    tagger: Tagger, bundled_model_dir: Path,
) -> None:
    """Another caller scores with the same Tagger in the middle of composition_inputs (deterministically:
    from inside its first backend call, as a thread of `emotag serve` could) and gets the usual results."""
    backend = CountingBackend(tagger.backend)
    shared = Tagger(tagger.featurizer, backend, model_dir=bundled_model_dir)
    texts = TEXTS[:15]
    expected = [r.to_dict() for r in shared.tag_many(texts)]
    seen: list[list[dict[str, Any]]] = []
    backend.during = lambda: seen.append([r.to_dict() for r in shared.tag_many(texts)])
    shared.composition_inputs(["这家外卖不难吃", "物流很快但是包装破损了"])
    assert len(seen) == 1 and seen[0] == expected
    assert shared.composer is not None


# -- 4. what is computed, and tag() vs tag_many() -----------------------------------------------------------

def test_tag_batches_a_texts_windows_and_units_with_little_padding(tagger: Tagger, bundled_model_dir: Path) -> None:
    """tag() sends a text's short units together (not one backend call per window and unit, as it did), and
    never pads a batch past TAG_PAD_SLACK x its real tokens (all-CJK text: one token per character)."""
    backend = CountingBackend(tagger.backend)
    t = Tagger(tagger.featurizer, backend, model_dir=bundled_model_dir)
    text = "这家外卖不难吃，但是送得太慢了，一点也不好吃，没有热气"
    units = units_of(t.featurizer.prepare(text).windows[0]).texts()
    assert len(units) >= 3
    t.tag(text)
    assert sum(backend.batches) == 1 + len(units)
    assert len(backend.batches) < 1 + len(units)
    for padded, real in backend.shapes:
        assert padded <= TAG_PAD_SLACK * real
    backend.batches.clear()
    t.tag(LONG)  # two windows of similar length, no units: one call
    assert backend.batches == [len(t.featurizer.prepare(LONG).windows)] and backend.batches[0] > 1


def test_expert_logits_are_computed_for_the_texts_own_windows_only(
    tagger: Tagger, bundled_model_dir: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    t = Tagger(tagger.featurizer, tagger.backend, model_dir=bundled_model_dir)
    assert t.experts is not None
    rows: list[int] = []
    inner = t.experts.logits

    def logits(ngram_ids: np.ndarray) -> np.ndarray:
        rows.append(len(ngram_ids))
        return inner(ngram_ids)

    monkeypatch.setattr(t.experts, "logits", logits)
    texts = ["这家外卖不难吃", "物流很快但是包装破损了", LONG, "一点也不好吃"]
    own = sum(len(t.featurizer.prepare(x).windows) for x in texts)
    assert own == 5
    list(t.tag_many(texts, batch_size=3))
    assert sum(rows) == own
    rows.clear()
    t.composition_inputs(texts, batch_size=3)
    assert sum(rows) == own


def test_tag_and_tag_many_agree_at_every_batch_size(tagger: Tagger) -> None:
    reference = [r.to_dict() for r in tagger.tag_many(TEXTS)]
    assert sum(len(tagger.featurizer.prepare(t).windows) > 1 for t in TEXTS) >= 5
    runs: list[Iterator[Any]] = [
        (tagger.tag(t) for t in TEXTS),
        tagger.tag_many(TEXTS, batch_size=1),
        tagger.tag_many(TEXTS, batch_size=7),
        tagger.tag_many(TEXTS, batch_size=1000),
        tagger.tag_many(iter(TEXTS), batch_size=4, chunk_size=5),  # the threaded, chunked path
    ]
    for run in runs:
        got = [r.to_dict() for r in run]
        assert len(got) == len(reference)
        for a, b in zip(got, reference, strict=True):
            # labels exactly; numbers within 1e-4: the int8 graph quantises activations with fixed scales,
            # and a value that batch shape moves in its last fp32 bits can round to the neighbouring int8
            # level (v0.6.0, batch size 1: two texts of 30 move by 1e-5 to 4e-5). A window scored with
            # another text's or another window's inputs moves by orders of magnitude more.
            _same(a, b, tol=1e-4)


# -- 5. units when the featurizer cuts at contrast turns ----------------------------------------------------

def _with_contrast_weight(tagger: Tagger, bundled_model_dir: Path, weight: float) -> Tagger:
    cfg: EmotagConfig = dataclasses.replace(tagger.config, contrast_weight=weight)
    return Tagger(Featurizer.from_dir(bundled_model_dir, cfg), load_backend(bundled_model_dir, "onnx", 1),
                  model_dir=bundled_model_dir)


def test_a_text_cut_only_at_its_turn_still_gets_its_units(tagger: Tagger, bundled_model_dir: Path) -> None:
    """With contrast_weight != 1 the featurizer cuts 物流很快但是包装破损了 into two windows; the text still
    fits one window, so the composer reads its turn (has_turn, after_margin) as it does at weight 1."""
    weighted = _with_contrast_weight(tagger, bundled_model_dir, 2.0)
    turned = ["物流很快但是包装破损了", "这家外卖不难吃，但是送得太慢了"]
    assert all(len(weighted.featurizer.prepare(t).windows) == 2 for t in turned)
    cols = [FEATURES.index(k) for k in ("has_turn", "after_margin", "has_negation", "negated_margin")]
    x_w, _ = weighted.composition_inputs(turned + [LONG])
    x_1, _ = tagger.composition_inputs(turned + [LONG])
    assert (x_w[:2, FEATURES.index("has_turn")] == 1.0).all()
    np.testing.assert_allclose(x_w[:2, cols], x_1[:2, cols], atol=1e-6)  # the same units, scored alike
    assert x_w[2, FEATURES.index("has_turn")] == 0.0  # longer than one window: no units, as before
    # the weighting of the windows still differs (that is what contrast_weight is for)
    assert weighted.featurizer.prepare(turned[0]).weights != tagger.featurizer.prepare(turned[0]).weights
