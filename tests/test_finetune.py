"""Fine-tuning (`emotag train`): tiny models, tiny tables, CPU only, offline.

The base is built here rather than taken from the `tiny_model_dir` fixture: its vocabulary must cover the
aspect words of the multi-label test (as a real model's vocabulary would), and it needs no ONNX export.
Torch runs on one thread: tiny models gain nothing from more, and on a busy 2-core machine threads thrash.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

from emotag.labels import EMOTIONS
from tests.conftest import FILL, NEG, POS, sentiment_rows, synthetic_corpus

# words the tiny base has never seen: polarity in a "new domain"
DOMAIN_POS = ["干净", "安静", "方便", "热情", "宽敞"]
DOMAIN_NEG = ["吵闹", "肮脏", "偏远", "冷漠", "狭窄"]
ASPECTS = {"price": ["便宜", "价格", "划算"], "service": ["服务", "前台", "态度"], "room": ["房间", "床铺", "浴室"]}
EXTRA_CHARS = "的一是了我不人在他有上们来到时大地为子中你说生国年着就那和要她出得也里后自以会家可下而过天去能对小多然于心学"


def _write_csv(path: Path, rows: list[dict], fields: list[str]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        w.writerows(rows)
    return path


def _tiny_base(directory: Path) -> Path:
    """A 1-layer, 32-wide emotag model trained for a moment on the synthetic corpus (no ONNX needed)."""
    import torch

    from emotag.model.config import EmotagConfig, NgramConfig
    from emotag.model.features import Featurizer
    from emotag.model.modeling import EmotagModel
    from emotag.text.normalize import normalize
    from emotag.train.trainer import EncodedSet, TrainSettings, fit
    from emotag.train.vocab import build_tokenizer

    torch.manual_seed(0)
    data = synthetic_corpus(300)
    cfg = EmotagConfig(
        encoder={"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                 "intermediate_size": 64, "max_position_embeddings": 66, "type_vocab_size": 1},
        max_length=64, ngram=NgramConfig(buckets=4096, dim=8), name="tiny-base",
    )
    known = EXTRA_CHARS + "".join(w for ws in ASPECTS.values() for w in ws)  # a real vocabulary covers these
    tok = build_tokenizer([normalize(e.text).text for e in data] + [known], vocab_size=400, min_frequency=1)
    cfg.encoder["vocab_size"] = tok.get_vocab_size()
    model = EmotagModel(cfg)
    fit(model, EncodedSet(Featurizer(tok, cfg), data), None,
        TrainSettings(epochs=3, batch_size=32, lr=3e-3, ngram_lr=5e-2, warmup=0.0))
    model.save(directory, tokenizer=tok)
    return directory


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: tiny models gain nothing from more, and on a busy 2-core box threads thrash."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    return _tiny_base(tmp_path_factory.mktemp("ft-base") / "base")


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory) -> Path:
    """A tiny random BERT checkpoint with a fast tokenizer, saved the way the hub stores one."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    d = tmp_path_factory.mktemp("hf") / "tiny-bert"
    d.mkdir()
    chars = sorted(set("".join(POS + NEG + FILL)) | set(EXTRA_CHARS))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars]
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab=str(d / "vocab.txt")).save_pretrained(str(d))
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=72)).save_pretrained(str(d))
    return d


def _sentiment_rows(n: int, seed: int, pos_words=POS, neg_words=NEG) -> list[tuple[str, bool]]:
    return sentiment_rows(n, seed, pos_words, neg_words, max_fill=3)


# -- label plans (no training) ------------------------------------------------------------------------


def test_plan_labels_infers_taxonomy_custom_and_polarity() -> None:
    from emotag.train.finetune import plan_labels

    p = plan_labels("emotion", ["label"], {"like", "愤怒", "none"}, None)
    assert p.default_taxonomy and p.labels == EMOTIONS and p.value_map == {"like": "like", "愤怒": "anger",
                                                                          "none": "neutral"}
    p = plan_labels("emotion", ["label"], {"10", "2", "1"}, None)
    assert not p.default_taxonomy and p.labels == ("1", "2", "10")  # numeric values sort as numbers
    p = plan_labels("emotion", ["a", "b"], set(), None)
    assert p.multi_label and p.labels == ("a", "b")
    assert plan_labels("polarity", ["y"], {"0", "1"}, None).value_map == {"0": "negative", "1": "positive"}
    assert plan_labels("polarity", ["y"], {"-1", "0", "1"}, None).value_map["0"] == "neutral"
    assert plan_labels("polarity", ["y"], {"负面", "正面"}, None).value_map == {"负面": "negative", "正面": "positive"}
    assert plan_labels("polarity", ["y"], {"bad", "meh", "great"}, ["bad", "meh", "great"]).value_map["great"] == \
        "positive"
    p = plan_labels("emotion", ["label"], {"happy", "angry", "neutral"}, None)  # SMP2020: partial labels
    assert p.default_taxonomy and p.labels == EMOTIONS and p.value_map["happy"] == "like|happiness"
    assert [name for name, _ in p.groups()] == sorted(p.value_map, key=list(p.value_map).index)
    with pytest.raises(ValueError, match="cannot map"):
        plan_labels("polarity", ["y"], {"x", "z"}, None)
    with pytest.raises(ValueError, match="only one class"):
        plan_labels("emotion", ["label"], {"anger"}, None)
    with pytest.raises(ValueError, match=r"not in --labels"):
        plan_labels("emotion", ["label"], {"a", "b", "c"}, ["a", "b"])


def test_user_mistakes_raise_one_line_value_errors(tmp_path: Path, base_dir: Path) -> None:
    from emotag.train.finetune import finetune

    path = _write_csv(tmp_path / "t.csv", [{"text": t, "label": "like"} for t, _ in _sentiment_rows(20, 0)],
                      ["text", "label"])
    with pytest.raises(ValueError, match="'sentiment'") as e:
        finetune(path, tmp_path / "m", base_model=base_dir, label_cols=("sentiment",))
    assert "\n" not in str(e.value) and "t.csv" in str(e.value)
    with pytest.raises(ValueError, match="'content'"):
        finetune(path, tmp_path / "m", base_model=base_dir, text_col="content")
    with pytest.raises(ValueError, match="only one class"):
        finetune(path, tmp_path / "m", base_model=base_dir)
    with pytest.raises(ValueError, match="not in --labels"):
        finetune(path, tmp_path / "m", base_model=base_dir, labels="a,b")
    with pytest.raises(FileNotFoundError):
        finetune(tmp_path / "nope.csv", tmp_path / "m", base_model=base_dir)
    assert not (tmp_path / "m").exists()


# -- training ----------------------------------------------------------------------------------------


def test_custom_labels_via_script(tmp_path: Path, base_dir: Path, capsys) -> None:
    """The script path end to end: custom Chinese labels, loss falls, report + ONNX, Tagger scores."""
    import importlib.util

    from emotag.tagger import Tagger

    rng = random.Random(3)
    rows = [{"text": t, "label": "好评" if pos else rng.choice(["差评", "中评"])} for t, pos in _sentiment_rows(180, 1)]
    path = _write_csv(tmp_path / "reviews.csv", rows, ["text", "label"])
    spec = importlib.util.spec_from_file_location("ft_script", Path(__file__).parents[1] / "scripts" / "finetune.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "mine"
    assert script.main([str(path), "-o", str(out), "--base-model", str(base_dir), "--labels", "差评,中评,好评",
                        "--epochs", "4", "--batch-size", "16", "--lr", "3e-3", "--no-progress"]) == 0
    assert "wrote" in capsys.readouterr().out
    for name in ("config.json", "tokenizer.json", "model.safetensors", "model.onnx", "model.int8.onnx",
                 "MODEL_CARD.md", "eval_report.json", "eval_report.md", "confusion_matrix.png"):
        assert (out / name).is_file(), name
    report = json.loads((out / "eval_report.json").read_text(encoding="utf-8"))
    assert report["training"]["train_loss_end"] < report["training"]["train_loss_start"]
    assert {"差评", "中评", "好评"} <= set(report["per_class"])
    assert report["dev_before"] is None and report["calibration"]["ece_before"] >= 0
    assert "precision" in (out / "eval_report.md").read_text(encoding="utf-8")
    res = Tagger.load(out).tag("很好面膜")  # ONNX int8, as `emotag score --model` uses it
    assert tuple(res.emotions) == ("差评", "中评", "好评")
    assert res.emotion == "好评" and abs(sum(res.emotions.values()) - 1) < 1e-4
    assert res.polarity in ("negative", "neutral", "positive")  # kept from the base
    # a user mistake through the script: exit code 1, one line naming the column
    assert script.main([str(path), "-o", str(tmp_path / "x"), "--base-model", str(base_dir),
                        "--label-col", "stars"]) == 1
    err = capsys.readouterr().err.strip()
    assert "'stars'" in err and "\n" not in err


def test_smp_labels_train_the_taxonomy_with_partial_labels(tmp_path: Path, base_dir: Path) -> None:
    """happy/angry/sad files (SMP2020) keep the 8 emotions: happy may be like or happiness (SPEC §1), and
    the report scores the file's own six classes, the way `emotag eval` does."""
    from emotag.model.config import EmotagConfig
    from emotag.train.finetune import finetune

    rows = [{"text": t, "label": "happy" if pos else "angry"} for t, pos in _sentiment_rows(160, 4)]
    rows += [{"text": "难过" + t, "label": "sad"} for t, _ in _sentiment_rows(40, 5)]
    path = _write_csv(tmp_path / "smp.csv", rows, ["text", "label"])
    out = tmp_path / "smp"
    r = finetune(path, out, base_model=base_dir, epochs=4, batch_size=16, lr=3e-3, progress=False, export=False)
    assert r.labels == EMOTIONS and EmotagConfig.load(out).emotion_labels == EMOTIONS
    report = json.loads((out / "eval_report.json").read_text(encoding="utf-8"))
    assert report["data"]["value_map"] == {"angry": "anger|disgust", "happy": "like|happiness", "sad": "sadness"}
    assert {"happy", "angry", "sad"} <= set(report["per_class"])
    assert r.dev_after["accuracy"] > 0.6


def test_multi_label_columns(tmp_path: Path, base_dir: Path) -> None:
    from emotag.model.config import EmotagConfig
    from emotag.tagger import Tagger
    from emotag.train.finetune import finetune

    rng = random.Random(5)
    rows = []
    for _ in range(200):
        present = [a for a in ASPECTS if rng.random() < 0.4]  # about a fifth of rows have no aspect at all
        words = [rng.choice(ASPECTS[a]) for a in present] + [rng.choice(FILL)]
        rng.shuffle(words)
        row = {"text": "".join(words)}
        for a in ASPECTS:
            row[a] = ("T" if a in present else "F") if a == "service" else int(a in present)
        rows.append(row)
    path = _write_csv(tmp_path / "aspects.csv", rows, ["text", *ASPECTS])
    out = tmp_path / "aspects"
    r = finetune(path, out, base_model=base_dir, label_cols=tuple(ASPECTS), epochs=12, batch_size=16, lr=3e-3,
                 progress=False, export=False)
    assert r.multi_label and r.labels == tuple(ASPECTS)
    assert r.loss_end < r.loss_start
    assert r.dev_after["micro_f1"] > 0.6
    cfg = EmotagConfig.load(out)
    assert cfg.multi_label and cfg.emotion_labels == tuple(ASPECTS)
    res = Tagger.load(out, backend="torch").tag("这个价格划算")
    assert tuple(res.emotions) == tuple(ASPECTS)  # independent sigmoids, not a distribution
    assert res.emotions["price"] > 0.5 > res.emotions["room"]
    assert r.dev_after["micro_f1"] > 0.8
    assert (out / "confusion_matrix.png").is_file()


def test_polarity_task_adapts_polarity_and_keeps_emotions(tmp_path: Path, base_dir: Path) -> None:
    from emotag.model.config import EmotagConfig
    from emotag.tagger import Tagger
    from emotag.train.finetune import finetune

    def table(name: str, n: int, seed: int) -> Path:
        rows = [{"review": t, "y": "正面" if pos else "负面"} for t, pos in _sentiment_rows(n, seed, DOMAIN_POS,
                                                                                           DOMAIN_NEG)]
        return _write_csv(tmp_path / name, rows, ["review", "y"])

    out = tmp_path / "hotel"
    r = finetune(table("train.csv", 200, 7), out, dev_path=table("dev.csv", 60, 8), base_model=base_dir,
                 text_col="review", label_cols="y", task="polarity", epochs=5, batch_size=16, lr=3e-3,
                 progress=False, export=False)
    assert r.task == "polarity" and r.dev_source == "file" and r.dev_rows == 60
    assert r.dev_before is not None
    assert r.dev_after["accuracy"] >= 0.85 and r.dev_after["accuracy"] > r.dev_before["accuracy"] + 0.1
    cfg = EmotagConfig.load(out)
    assert cfg.emotion_labels == EMOTIONS and cfg.temperature["polarity"] != 1.0
    report = json.loads((out / "eval_report.json").read_text(encoding="utf-8"))
    assert "emotion" in report["anchored_heads"]
    assert report["kept_heads"]["emotion_top1_agreement_with_base"] > 0.5
    tagger = Tagger.load(out, backend="torch")
    assert tagger.tag("房间干净").polarity == "positive" and tagger.tag("前台冷漠").polarity == "negative"
    assert tuple(tagger.tag("房间干净").emotions) == EMOTIONS


def test_starts_from_a_local_hugging_face_checkpoint(tmp_path: Path, hf_checkpoint: Path) -> None:
    from emotag.model.config import EmotagConfig
    from emotag.tagger import Tagger
    from emotag.train.finetune import finetune

    rows = [{"text": t, "label": "like" if pos else "anger"} for t, pos in _sentiment_rows(160, 11)]
    path = _write_csv(tmp_path / "emo.csv", rows, ["text", "label"])
    out = tmp_path / "from-bert"
    r = finetune(path, out, base_model=str(hf_checkpoint), epochs=4, batch_size=16, lr=2e-3, progress=False)
    assert r.dev_before is None and r.loss_end < r.loss_start
    cfg = EmotagConfig.load(out)
    assert cfg.encoder["model_type"] == "bert" and cfg.base_model == str(hf_checkpoint)
    assert cfg.emotion_labels == EMOTIONS and cfg.polarity_labels  # default taxonomy: polarity from emotions
    res = Tagger.load(out).tag("很好")
    assert tuple(res.emotions) == EMOTIONS and res.polarity is not None and res.error is None


def test_confusion_png_without_a_cjk_font(tmp_path: Path, monkeypatch) -> None:
    """No CJK font installed: the plot uses L0, L1 ... and says what they stand for."""
    from emotag.train import finetune as ft

    monkeypatch.setattr(ft, "_cjk_font", lambda names: None)
    standins = ft.confusion_png(tmp_path / "cm.png", [[3, 1], [0, 4]], ["差评", "好评"], False, "t")
    assert standins == {"L0": "差评", "L1": "好评"} and (tmp_path / "cm.png").stat().st_size > 1000


@pytest.mark.parametrize("with_file", [True, False])
def test_fine_tuned_model_keeps_a_working_dialogue_read_out(tmp_path: Path, base_dir: Path, with_file: bool) -> None:
    """The satisfaction read-out is inherited with the lexicon file it reads; without that file the
    lexicon feature is dropped rather than leaving a model whose score-dialogues fails."""
    import shutil

    import numpy as np

    from emotag.dialogues import Conversation, score_conversations
    from emotag.model.config import DIALOGUE_LEXICAL_NAME, EmotagConfig
    from emotag.tagger import Tagger
    from emotag.train.finetune import finetune

    base = tmp_path / "base"
    shutil.copytree(base_dir, base)
    cfg = EmotagConfig.load(base)
    cfg.dialogue.features = ("mean_polarity", "lexical_satisfaction")
    cfg.dialogue.weights = (1.0, 1.0)
    cfg.dialogue.lexical_buckets = 256
    cfg.save(base)
    if with_file:
        np.save(base / DIALOGUE_LEXICAL_NAME, np.ones((2, 256), np.float32), allow_pickle=False)
    rows = [{"review": t, "y": "正面" if pos else "负面"} for t, pos in sentiment_rows(80, 3, DOMAIN_POS, DOMAIN_NEG)]
    out = tmp_path / "tuned"
    finetune(_write_csv(tmp_path / "t.csv", rows, ["review", "y"]), out, base_model=base, text_col="review",
             label_cols="y", task="polarity", epochs=1, batch_size=16, progress=False, export=False)
    tuned = EmotagConfig.load(out)
    assert (out / DIALOGUE_LEXICAL_NAME).exists() == with_file
    assert ("lexical_satisfaction" in tuned.dialogue.features) == with_file
    assert len(tuned.dialogue.features) == len(tuned.dialogue.weights)
    conv = Conversation("c", [{"speaker": "customer", "text": "房间干净"}])
    (rec,) = score_conversations(Tagger.load(out, backend="torch"), [conv])
    assert rec["error"] is None and rec["satisfaction"] is not None


def test_custom_labels_drop_a_read_out_they_cannot_feed(tmp_path: Path, base_dir: Path) -> None:
    """A satisfaction read-out fit on the taxonomy's emotions would read zeros on custom labels: it is
    dropped, and score-dialogues says so instead of returning a number that means nothing."""
    import shutil

    from emotag.dialogues import Conversation, score_conversations
    from emotag.model.config import EmotagConfig
    from emotag.tagger import Tagger
    from emotag.train.finetune import finetune

    base = tmp_path / "base"
    shutil.copytree(base_dir, base)
    cfg = EmotagConfig.load(base)
    cfg.dialogue.features, cfg.dialogue.weights = ("mean_polarity", "last_like"), (1.0, 0.5)
    cfg.save(base)
    rows = [{"text": t, "label": "表扬" if pos else "投诉"} for t, pos in _sentiment_rows(80, 6)]
    out = tmp_path / "custom"
    finetune(_write_csv(tmp_path / "c.csv", rows, ["text", "label"]), out, base_model=base, epochs=1,
             batch_size=16, progress=False, export=False)
    assert EmotagConfig.load(out).dialogue.features == ()
    (rec,) = score_conversations(Tagger.load(out, backend="torch"), [Conversation("c", [
        {"speaker": "customer", "text": "谢谢"}])])
    assert rec["satisfaction"] is None and "no satisfaction read-out" in rec["error"]
    assert rec["turns"][0]["emotion"] in ("表扬", "投诉") and rec["end_emotion"] in ("表扬", "投诉")
