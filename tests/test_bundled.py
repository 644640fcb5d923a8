"""Golden behaviour of the bundled default model on clear-cut sentences (both backends it ships for)."""

from __future__ import annotations

import pytest

from emotag import Tagger

POSITIVE = [
    "这款面膜真的超级好用，补水效果很棒，会回购！",
    "酒店位置很好，房间干净，服务热情，下次还住这里",
    "物流很快，包装完好，东西质量不错，五星好评",
]
NEGATIVE = [
    "这款面膜包装太简陋了，很失望",
    "质量太差了，用了两天就坏了，客服也不理人，再也不买了",
    "房间又脏又小，隔音很差，前台态度恶劣",
]


@pytest.fixture(scope="module")
def tagger(bundled_model_dir):
    return Tagger.load(bundled_model_dir)


@pytest.mark.parametrize("text", POSITIVE)
def test_clear_positive(tagger, text):
    r = tagger.tag(text)
    assert r.polarity == "positive" and r.polarity_score > 0.3, r


@pytest.mark.parametrize("text", NEGATIVE)
def test_clear_negative(tagger, text):
    r = tagger.tag(text)
    assert r.polarity == "negative" and r.polarity_score < -0.3, r


def test_traditional_script_scores_like_simplified(tagger):
    a = tagger.tag("這款面膜包裝太簡陋了，很失望")
    b = tagger.tag("这款面膜包装太简陋了，很失望")
    assert a.to_dict() | {"id": 0} == b.to_dict() | {"id": 0}


@pytest.mark.parametrize(
    "text, allowed",
    [
        ("气死我了！什么破服务，投诉！！！", {"anger", "disgust"}),
        ("今天收到了录取通知书，太开心了[哈哈]", {"happiness", "like"}),
        ("外婆走了，心里好难过，一直在哭[泪]", {"sadness"}),
    ],
)
def test_clear_emotions(tagger, text, allowed):
    r = tagger.tag(text)
    assert r.emotion in allowed, r


def test_intensity_orders_flat_below_extreme(tagger):
    flat = tagger.tag("今天去超市买了点菜。")
    extreme = tagger.tag("气死我了！！！简直无法忍受，太过分了！！！")
    assert extreme.intensity > flat.intensity


def test_int8_matches_fp32_on_samples_when_fp32_present(bundled_model_dir):
    """The shipped int8 file must agree with the exported fp32 graph (exported on the fly if absent)."""
    import shutil

    from emotag.model.export import export_onnx

    texts = POSITIVE + NEGATIVE + ["一般般吧", "还行", "不知道说什么好"]
    fp32_dir = bundled_model_dir
    if not (bundled_model_dir / "model.onnx").exists():
        import tempfile
        from pathlib import Path

        fp32_dir = Path(tempfile.mkdtemp()) / "m"
        shutil.copytree(bundled_model_dir, fp32_dir)
        export_onnx(fp32_dir)
    fp32 = [r.emotion for r in Tagger.load(fp32_dir, backend="onnx-fp32").tag_many(texts)]
    int8 = [r.emotion for r in Tagger.load(bundled_model_dir, backend="onnx-int8").tag_many(texts)]
    assert sum(a == b for a, b in zip(fp32, int8, strict=True)) >= len(texts) - 1


def test_config_names_the_version_the_card_describes(bundled_model_dir):
    """`emotag info` and the service's /readyz print config.json's version: it must be the card's."""
    import json
    import re

    version = json.loads((bundled_model_dir / "config.json").read_text(encoding="utf-8"))["version"]
    header = (bundled_model_dir / "MODEL_CARD.md").read_text(encoding="utf-8").splitlines()[0]
    assert re.search(r"\(v([\d.]+)\)", header).group(1) == version
