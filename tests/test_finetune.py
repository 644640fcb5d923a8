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


def test_custom_labels_via_cli(tmp_path: Path, base_dir: Path) -> None:
    """`emotag train` end to end: Chinese review labels that map onto the polarity head start from it (and
    say so), report + ONNX are written, Tagger scores with the new labels, mistakes exit 1 in one line."""
    from typer.testing import CliRunner

    from emotag.cli import app
    from emotag.tagger import Tagger

    rng = random.Random(3)
    rows = [{"text": t, "label": "好评" if pos else rng.choice(["差评", "中评"])} for t, pos in _sentiment_rows(180, 1)]
    path = _write_csv(tmp_path / "reviews.csv", rows, ["text", "label"])
    out = tmp_path / "mine"
    runner = CliRunner()
    res = runner.invoke(app, ["train", str(path), "-o", str(out), "--base-model", str(base_dir), "--labels",
                              "差评,中评,好评", "--epochs", "4", "--batch-size", "16", "--lr", "3e-3"])
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and "majority-class rate" in res.output and "zero-shot" in res.output
    for name in ("config.json", "tokenizer.json", "model.safetensors", "model.onnx", "model.int8.onnx",
                 "MODEL_CARD.md", "eval_report.json", "eval_report.md", "confusion_matrix.png"):
        assert (out / name).is_file(), name
    report = json.loads((out / "eval_report.json").read_text(encoding="utf-8"))
    assert report["starts_from"] == {"差评": "polarity:negative", "中评": "polarity:neutral", "好评": "polarity:positive"}
    assert {"差评", "中评", "好评"} <= set(report["per_class"])
    assert report["dev_before"] is not None and report["calibration"]["ece_before"] >= 0
    assert set(report["candidates"]) >= {"majority class", "zero-shot", "linear head", "fine-tuned"}
    md = (out / "eval_report.md").read_text(encoding="utf-8")
    assert "precision" in md and "zero-shot" in md and "majority class" in md and "polarity:positive" in md
    res = Tagger.load(out).tag("很好面膜")  # ONNX int8, as `emotag score --model` uses it
    assert tuple(res.emotions) == ("差评", "中评", "好评")
    assert res.emotion == "好评" and abs(sum(res.emotions.values()) - 1) < 1e-4
    assert res.polarity in ("negative", "neutral", "positive")  # kept from the base
    # a user mistake: exit code 1, one line naming the column
    res = runner.invoke(app, ["train", str(path), "-o", str(tmp_path / "x"), "--base-model", str(base_dir),
                              "--label-col", "stars"])
    assert res.exit_code == 1
    err = res.output.strip()
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
    assert r.chosen in ("linear head", "fine-tuned") and (r.steps == 0 or r.loss_end < r.loss_start)
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
    # the tiny base's emotions on words it never saw are nearly flat, so top-1 agreement is fragile; an
    # unanchored head drifts to chance (1/8)
    assert report["kept_heads"]["emotion_top1_agreement_with_base"] > 0.3
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
    report = json.loads((out / "eval_report.json").read_text(encoding="utf-8"))
    # the emotion head itself (two classes, 19 dev texts). Not `dev_after`, which reads the records' `emotion`
    # as `emotag eval` does: a fresh checkpoint's polarity head is untrained when the linear head is kept,
    # and the consistency rule then moves the emotion (accuracy below 0.5 here: a known gap, reported separately)
    assert r.dev_before is None and report["dev_after_torch"]["accuracy"] >= 0.75
    assert r.steps == 0 or r.loss_end < r.loss_start  # no fine-tuning when the linear head is already perfect
    cfg = EmotagConfig.load(out)
    assert cfg.encoder["model_type"] == "bert" and cfg.base_model == str(hf_checkpoint)
    assert cfg.emotion_labels == EMOTIONS and cfg.polarity_labels  # default taxonomy: polarity from emotions
    res = Tagger.load(out).tag("很好")
    assert tuple(res.emotions) == EMOTIONS and res.polarity is not None and res.error is None


def test_confusion_png_without_a_cjk_font(tmp_path: Path, monkeypatch) -> None:
    """No CJK font installed: the plot uses L0, L1 ... and says what they stand for."""
    from emotag.train.finetune import report as ft

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


# -- one text -> windows -> scores path (issue 16, item 1) ---------------------------------------------


LONG = ("这家酒店的位置很好，离地铁站只有五分钟。前台的服务态度也很好，办理入住很快。" * 3
        + "房间很干净，床也舒服，早餐种类很多。" * 3
        + "可是晚上隔壁太吵了，空调也坏了，找客服三次都没人来修，真的很失望，再也不会来了！")


def test_one_long_text_gets_the_same_windows_and_scores_on_every_path(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Training encoding, fine-tuning's dev scoring, `emotag eval` and `Tagger` see the same windows of a
    long text and give it the same scores: no path cuts it to its first window."""
    import numpy as np

    from emotag.evaluate import evaluate_file
    from emotag.model.features import Featurizer
    from emotag.model.modeling import EmotagModel
    from emotag.tagger import Tagger
    from emotag.train.corpora import Example
    from emotag.train.finetune.heads import gold_mask, head_metrics, head_probs
    from emotag.train.finetune.labelplan import plan_labels
    from emotag.train.trainer import EncodedSet, predict

    feat = Featurizer.from_dir(tiny_model_dir)
    windows = feat.prepare(LONG).windows
    assert len(windows) >= 3 and windows[-1].endswith("再也不会来了!")  # the complaint at the end is kept
    texts = [LONG, "很好很喜欢", "垃圾退货很差", "超赞好用推荐"]  # clear-cut: no near-ties to flip
    gold = ["anger", "like", "anger", "like"]
    data = EncodedSet(feat, [Example(t, "dev", emotions=(g,)) for t, g in zip(texts, gold, strict=True)])
    # training encoding: every window of every text, encoded exactly as the scorer encodes it
    assert data.texts[: len(windows)] == windows and data.first.tolist()[:2] == [0, len(windows)]
    batch = feat.encode(windows)
    for i in range(len(windows)):
        n = int(batch.attention_mask[i].sum())
        assert data.ids[i] == batch.input_ids[i, :n].tolist()
        assert data.grams[i].tolist() == batch.ngram_ids[i, : len(data.grams[i])].tolist()
        assert not batch.ngram_ids[i, len(data.grams[i]):].any()
    # fine-tuning's dev scoring == Tagger scoring (torch weights on both sides)
    model = EmotagModel.load(tiny_model_dir)
    pred = predict(model, data)
    probs = data.text_outputs(pred)
    tagger = Tagger.load(tiny_model_dir, backend="torch")
    results = list(tagger.tag_many(texts))
    for k, r in enumerate(results):
        np.testing.assert_allclose([r.emotions[e] for e in EMOTIONS], probs["emotion"][k], atol=2e-5)
        assert r.polarity == tagger.config.polarity_labels[int(probs["polarity"][k].argmax())]
        assert abs(r.intensity - float(np.clip(probs["intensity"][k], 0, 1))) < 2e-5
    # fine-tuning's dev metric == what `emotag eval` reports on the same file
    path = _write_csv(tmp_path / "dev.csv", [{"text": t, "label": g} for t, g in zip(texts, gold, strict=True)],
                      ["text", "label"])
    plan = plan_labels("emotion", ["label"], set(gold), None)
    ours = head_metrics(head_probs(pred, data, plan), gold_mask(data, plan), plan)
    theirs = evaluate_file(tagger, path)
    assert theirs["kind"] == "labels"
    assert ours["accuracy"] == pytest.approx(theirs["accuracy"]) and ours["macro_f1"] == pytest.approx(theirs["macroF1"])


# -- never worse than the baselines (issue 19) ---------------------------------------------------------


def _pol_table(path: Path, n: int, seed: int, pos: str = "好评", neg: str = "差评", pos_share: float = 0.5) -> Path:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        is_pos = rng.random() < pos_share
        words = [rng.choice(FILL) for _ in range(rng.randint(1, 3))]
        words.insert(rng.randint(0, len(words)), rng.choice(POS if is_pos else NEG))
        rows.append({"text": "".join(words), "label": pos if is_pos else neg})
    return _write_csv(path, rows, ["text", "label"])


@pytest.mark.parametrize("pos,neg", [("好评", "差评"), ("1", "0"), ("positive", "negative")])
def test_labels_that_map_onto_the_polarity_head_start_at_its_zero_shot(tmp_path: Path, base_dir: Path, pos: str,
                                                                       neg: str) -> None:
    """好评/差评, 1/0, positive/negative: the new head starts from the polarity head, so before any training
    it already scores what the base model scores, and the kept model is never below that on dev."""
    from emotag.train.finetune import finetune

    train, dev = _pol_table(tmp_path / "t.csv", 120, 1, pos, neg), _pol_table(tmp_path / "d.csv", 60, 2, pos, neg)
    r = finetune(train, tmp_path / "m", dev_path=dev, base_model=base_dir, epochs=0, progress=False, export=False)
    report = json.loads((tmp_path / "m" / "eval_report.json").read_text(encoding="utf-8"))
    assert report["starts_from"] == {pos: "polarity:positive", neg: "polarity:negative"}
    assert r.dev_before is not None and r.dev_before["accuracy"] > 0.8  # the tiny base reads these words
    assert r.dev_after["macro_f1"] >= r.dev_before["macro_f1"] - 1e-9 and r.steps == 0
    assert r.chosen in ("zero-shot", "linear head")


def test_a_custom_head_beats_the_majority_class_on_imbalanced_data(tmp_path: Path, base_dir: Path) -> None:
    """Labels the base has no head for, 80/20: the report has the majority rate, per-class recall and the
    confusion matrix, and the minority class is found."""
    from emotag.train.finetune import finetune

    train = _pol_table(tmp_path / "t.csv", 200, 3, "物流", "售后", pos_share=0.8)
    dev = _pol_table(tmp_path / "d.csv", 80, 4, "物流", "售后", pos_share=0.8)
    r = finetune(train, tmp_path / "m", dev_path=dev, base_model=base_dir, epochs=2, batch_size=16, lr=3e-3,
                 progress=False, export=False)
    report = json.loads((tmp_path / "m" / "eval_report.json").read_text(encoding="utf-8"))
    assert r.dev_before is None and report["starts_from"] == {}  # no zero-shot for labels the base cannot read
    assert 0.7 < r.majority < 0.9 and r.better and r.dev_after["accuracy"] > r.majority
    assert report["per_class"]["售后"]["recall"] > 0.7
    assert sum(map(sum, report["confusion_matrix"]["matrix"])) == r.dev_rows == 80


def test_no_better_than_the_baselines_leaves_an_existing_model_alone(tmp_path: Path, base_dir: Path) -> None:
    """A dev file of one class: nothing can beat the majority class there. Into a new directory the model
    is written with a one-line verdict; over an existing model it is refused unless forced."""
    from typer.testing import CliRunner

    from emotag.cli import app
    from emotag.train.finetune import NotBetterError, finetune

    train = _pol_table(tmp_path / "t.csv", 120, 5, "物流", "售后", pos_share=0.7)
    rows = [{"text": t, "label": "物流"} for t, _ in _sentiment_rows(30, 6)]
    dev = _write_csv(tmp_path / "d.csv", rows, ["text", "label"])
    out = tmp_path / "m"
    args = dict(dev_path=dev, base_model=base_dir, epochs=0, progress=False, export=False)
    r = finetune(train, out, **args)
    assert not r.better and "majority-class rate" in r.verdict and (out / "config.json").exists()
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    with pytest.raises(NotBetterError, match="--force") as e:
        finetune(train, out, **args)
    assert "\n" not in str(e.value) and (out / "model.safetensors").stat().st_mtime_ns == stamp
    res = CliRunner().invoke(app, ["train", str(train), "-o", str(out), "--dev", str(dev), "--base-model",
                                   str(base_dir), "--epochs", "0"])
    assert res.exit_code == 1 and "not better than the baselines" in res.output
    assert finetune(train, out, force=True, **args).better is False
    assert (out / "model.safetensors").stat().st_mtime_ns != stamp


def test_choose_keeps_the_simpler_model_unless_the_network_wins_by_more_than_noise() -> None:
    from emotag.train.finetune import choose

    c = {"majority class": {"accuracy": 0.5}, "zero-shot": {"macro_f1": 0.70}, "linear head": {"macro_f1": 0.78},
         "fine-tuned": {"macro_f1": 0.83}}
    moved = {"l2": 0.01, "cv_macro_f1": {"start": 0.70, "0.01": 0.78}}
    kept = {"l2": None, "cv_macro_f1": {"start": 0.80, "0.01": 0.78}}
    assert choose(c, 6, moved) == "linear head"  # 6 dev texts: +0.05 is within the noise (0.20)
    assert choose(c, 6, kept) == "zero-shot"  # the linear head's cross-validation kept the start
    assert choose(c, 10_000, moved) == "fine-tuned"
    assert choose(c, 10_000, {**moved, "cv_macro_f1": {"start": 0.7, "0.01": 0.83}}) == "linear head"
    assert choose({k: v for k, v in c.items() if k != "fine-tuned"}, 10_000, moved) == "linear head"


def test_a_base_with_a_lexical_expert_fits_its_columns_for_new_labels(tmp_path: Path, tiny_model_dir: Path) -> None:
    """New labels the network has no feature for: the lexical expert's columns are fitted with the head
    (the char TF-IDF + logistic-regression baseline, inside the model), and the written model uses them."""
    import numpy as np
    from safetensors.numpy import load_file

    from emotag.tagger import Tagger
    from emotag.train.finetune import finetune

    rng = random.Random(9)
    rows = []
    for _ in range(150):
        lab = rng.choice(sorted(ASPECTS))
        rows.append({"text": rng.choice(FILL) + rng.choice(ASPECTS[lab]) + rng.choice(FILL), "label": lab})
    r = finetune(_write_csv(tmp_path / "a.csv", rows, ["text", "label"]), tmp_path / "m", base_model=tiny_model_dir,
                 epochs=0, progress=False)
    report = json.loads((tmp_path / "m" / "eval_report.json").read_text(encoding="utf-8"))
    assert report["linear_head"]["lexical_expert"] and r.chosen == "linear head" and r.dev_after["accuracy"] > 0.8
    lex = load_file(str(tmp_path / "m" / "model.safetensors"))["lex_weight"].astype(np.float32)
    assert np.abs(lex[:, :3]).sum() > 0  # the new labels' columns started at zero and were fitted
    assert Tagger.load(tmp_path / "m").tag("这个划算真的").emotion == "price"


def _composed_base(directory: Path, base_dir: Path) -> Path:
    """The tiny base with a composer that reads a domain expert (experts.npz), as the bundled model has."""
    import shutil

    import numpy as np

    from emotag.model.compose import Composer, Part
    from emotag.model.experts import Experts

    shutil.copytree(base_dir, directory)
    rng = np.random.default_rng(4)
    B = 4096
    idf = rng.uniform(1.0, 3.0, size=B).astype(np.float32)
    idf[0] = 0.0
    Experts(("polarity:a",), idf, rng.normal(size=(B, 1)).astype(np.float32), np.zeros(1, np.float32)).save(
        directory, keep=500)
    composer = Composer(("negative", "neutral", "positive"),
                        Part(("whole_margin", "polarity:a"), np.array([2.0, 1.5]), 0.3),
                        Part(("question_word",), np.array([2.0]), -1.0))
    cfg = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    cfg["composer"] = composer.to_dict()
    (directory / "config.json").write_text(json.dumps(cfg, ensure_ascii=False), encoding="utf-8")
    return directory


@pytest.mark.parametrize("kept", ["zero-shot", "linear head"])
def test_a_kept_zero_shot_scores_as_the_base_with_its_composer_and_experts(tmp_path: Path, base_dir: Path,
                                                                           kept: str, monkeypatch) -> None:
    """The zero-shot candidate on the base's own head is the base itself: the written model keeps its composer
    and domain experts and scores exactly what the base scores, and the report's zero-shot number is the base
    as `Tagger` scores it. Any other result was trained away from the network the composer was fit on, so it
    drops the composer and the experts."""
    import emotag.train.finetune as ft
    from emotag.model.config import EmotagConfig
    from emotag.model.experts import EXPERTS_NAME
    from emotag.tagger import Tagger

    base = _composed_base(tmp_path / "base", base_dir)
    monkeypatch.setattr(ft, "choose", lambda *a, **k: kept)
    rows = [{"text": t, "y": "正面" if pos else "负面"} for t, pos in _sentiment_rows(80, 3, DOMAIN_POS + POS,
                                                                                       DOMAIN_NEG + NEG)]
    dev = [{"text": t, "y": "正面" if pos else "负面"} for t, pos in _sentiment_rows(40, 4)]
    out = tmp_path / "m"
    r = ft.finetune(_write_csv(tmp_path / "t.csv", rows, ["text", "y"]), out,
                    dev_path=_write_csv(tmp_path / "d.csv", dev, ["text", "y"]), base_model=base, label_cols="y",
                    task="polarity", epochs=0, progress=False, export=False)
    assert r.chosen == kept and r.dev_before is not None
    texts = [d["text"] for d in dev]
    ref = list(Tagger.load(base, backend="torch").tag_many(texts))
    gold = ["positive" if d["y"] == "正面" else "negative" for d in dev]
    base_acc = sum(x.polarity == g for x, g in zip(ref, gold, strict=True)) / len(gold)
    assert r.dev_before["accuracy"] == pytest.approx(base_acc)  # the baseline is the base as users score it
    cfg = EmotagConfig.load(out)
    if kept == "zero-shot":
        assert cfg.composer == EmotagConfig.load(base).composer and (out / EXPERTS_NAME).exists()
        assert cfg.temperature == EmotagConfig.load(base).temperature
        got = list(Tagger.load(out, backend="torch").tag_many(texts))
        assert [x.polarity for x in got] == [x.polarity for x in ref]
        assert [x.polarity_score for x in got] == pytest.approx([x.polarity_score for x in ref], abs=1e-6)
        assert r.dev_after["accuracy"] == pytest.approx(r.dev_before["accuracy"])
    else:
        assert cfg.composer is None and not (out / EXPERTS_NAME).exists()
        Tagger.load(out, backend="torch").tag("房间干净")  # loads: nothing reads the dropped experts


def test_new_labels_can_keep_the_head_and_the_expert_fitted_apart(tmp_path: Path, tiny_model_dir: Path,
                                                                  monkeypatch) -> None:
    """Every label new to the base: the head on frozen features and the lexical expert's columns (a TF-IDF +
    logistic regression on the same n-gram ids) are also fitted apart and mixed; when cross-validation keeps
    that, the mix is written into the one graph (head rows, expert columns), so the written model scores dev
    exactly as the fit did. The joint fit is handicapped here (its expert frozen) so the mix must win."""
    import numpy as np
    from safetensors.numpy import load_file

    from emotag.tagger import Tagger
    from emotag.train.finetune import finetune
    from emotag.train.finetune import heads as H

    monkeypatch.setattr(H, "LEXICAL_L2_RATIO", 1e6)
    monkeypatch.setattr(H, "L2_GRID", (1.0,))
    monkeypatch.setattr(H, "MIX_GRID", (0.5,))
    monkeypatch.setattr(H, "EXPERT_C_GRID", (100.0,))
    rng = random.Random(11)
    rows = []
    for _ in range(150):
        lab = rng.choice(sorted(ASPECTS))
        rows.append({"text": rng.choice(FILL) + rng.choice(ASPECTS[lab]) + rng.choice(FILL), "label": lab})
    out = tmp_path / "m"
    r = finetune(_write_csv(tmp_path / "a.csv", rows, ["text", "label"]), out, base_model=tiny_model_dir,
                 epochs=0, progress=False, export=False)
    report = json.loads((out / "eval_report.json").read_text(encoding="utf-8"))
    lin = report["linear_head"]
    assert lin["form"] == "stacked" and lin["stacked"]["kept"] and lin["stacked"]["mix"] == 0.5
    assert lin["cv_kept"] == lin["stacked"]["cv"] > lin["cv_macro_f1"]["1.0"]
    assert r.chosen == "linear head" and r.dev_after["accuracy"] > 0.8
    # the written graph is the fitted mix: the training report's torch numbers are `emotag eval`'s
    for k in ("accuracy", "macro_f1"):
        assert r.dev_after[k] == pytest.approx(report["dev_after_torch"][k])
    lex = load_file(str(out / "model.safetensors"))["lex_weight"].astype(np.float32)
    assert np.abs(lex[:, :3]).sum() > 0
    assert Tagger.load(out, backend="torch").tag("这个划算真的").emotion == "price"
    assert "fitted apart" in (out / "eval_report.md").read_text(encoding="utf-8")


# -- regression (issue 19: a 1-5 star or 0-1 score column) ----------------------------------------------


def _stars_table(path: Path, n: int, seed: int, col: str = "stars") -> Path:
    """Stars from the sentiment words a text holds: 3 + (positive words - negative words), within 1..5."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        k_pos, k_neg = rng.randint(0, 2), rng.randint(0, 2)
        words = [rng.choice(FILL) for _ in range(rng.randint(1, 2))]
        words += [rng.choice(POS) for _ in range(k_pos)] + [rng.choice(NEG) for _ in range(k_neg)]
        rng.shuffle(words)
        rows.append({"text": "".join(words), col: min(5, max(1, 3 + k_pos - k_neg))})
    return _write_csv(path, rows, ["text", col])


def test_regression_round_trip_train_score_eval(tmp_path: Path, base_dir: Path) -> None:
    """`emotag train --task regression` on a 1-5 star column: baselines in the report, the records of
    `emotag score` carry `score` on the 1..5 scale, and `emotag eval` on the dev file reports the dev
    numbers the training report showed."""
    from typer.testing import CliRunner

    from emotag.cli import app

    train, dev = _stars_table(tmp_path / "t.csv", 160, 1), _stars_table(tmp_path / "d.csv", 60, 2)
    out = tmp_path / "m"
    runner = CliRunner()
    res = runner.invoke(app, ["train", str(train), "-o", str(out), "--dev", str(dev), "--base-model", str(base_dir),
                              "--task", "regression", "--label-col", "stars", "--epochs", "1", "--batch-size", "16",
                              "--lr", "3e-3"])
    assert res.exit_code == 0, res.output
    assert "predicting the training mean" in res.output and "dev mae" in res.output
    report = json.loads((out / "eval_report.json").read_text(encoding="utf-8"))
    assert report["task"] == "regression" and report["scale"] == [1.0, 5.0] and report["labels"] == ["stars[1,5]"]
    cands = report["candidates"]
    assert {"training mean", "zero-shot polarity_score", "polarity start", "linear head"} <= set(cands)
    assert cands["training mean"]["pearson_r"] == 0.0 and "polarity_score_r" in cands["zero-shot polarity_score"]
    assert report["starts_from"] == {"stars[1,5]": "polarity:positive-negative"}
    assert cands["polarity start"]["pearson_r"] > 0.5  # the base's polarity already ranks the stars
    after = report["dev_after"]
    assert after["n"] == 60 and after["pearson_r"] > 0.5 and after["mae"] < cands["training mean"]["mae"]
    md = (out / "eval_report.md").read_text(encoding="utf-8")
    assert "Pearson r" in md and "predict the training mean" in md and "polarity_score" in md and "started from" in md
    # score: one record per row, `score` within the scale, higher for the happier text
    src = _write_csv(tmp_path / "x.csv", [{"id": 1, "text": "很好喜欢满意"}, {"id": 2, "text": "很差失望垃圾"}],
                     ["id", "text"])
    res = runner.invoke(app, ["score", str(src), "--model", str(out), "-o", str(tmp_path / "x.jsonl"), "-q"])
    assert res.exit_code == 0, res.output
    recs = [json.loads(line) for line in (tmp_path / "x.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in recs] == ["1", "2"] and all(1.0 <= r["score"] <= 5.0 for r in recs)
    assert recs[0]["score"] > recs[1]["score"] and recs[0]["polarity"] is not None  # polarity kept from the base
    # eval on the dev file: the same numbers, through the same path
    res = runner.invoke(app, ["eval", str(out), str(dev), "--json", str(tmp_path / "e.json")])
    assert res.exit_code == 0, res.output
    got = json.loads((tmp_path / "e.json").read_text(encoding="utf-8"))[0]
    assert got["kind"] == "regression" and got["n"] == after["n"]
    for k in ("pearson_r", "mae", "rmse"):
        assert got[k] == pytest.approx(after[k], abs=1e-9), k


def test_regression_input_mistakes_are_one_line_errors(tmp_path: Path, base_dir: Path) -> None:
    """A constant column, too few rows and a value that is not a number each stop in one line naming the
    file, through the library and through `emotag train` (exit 1); nothing is written."""
    from typer.testing import CliRunner

    from emotag.cli import app
    from emotag.train.finetune import finetune

    texts = [t for t, _ in _sentiment_rows(30, 0)]
    constant = _write_csv(tmp_path / "c.csv", [{"text": t, "score": 0.5} for t in texts], ["text", "score"])
    few = _write_csv(tmp_path / "f.csv", [{"text": t, "score": i / 5} for i, t in enumerate(texts[:6])],
                     ["text", "score"])
    words = _write_csv(tmp_path / "w.csv", [{"text": t, "score": "high" if i % 2 else 0.2}
                                            for i, t in enumerate(texts)], ["text", "score"])
    args = dict(base_model=base_dir, task="regression", label_cols="score", progress=False, export=False)
    for path, why in ((constant, "same value"), (few, "too few"), (words, "not a number")):
        with pytest.raises(ValueError, match=why) as e:
            finetune(path, tmp_path / "m", **args)
        assert "\n" not in str(e.value) and path.name in str(e.value)
        res = CliRunner().invoke(app, ["train", str(path), "-o", str(tmp_path / "m"), "--base-model", str(base_dir),
                                       "--task", "regression", "--label-col", "score"])
        assert res.exit_code == 1 and why in res.output and res.output.strip().count("\n") == 0, res.output
    assert not (tmp_path / "m").exists()


def test_regression_scale_round_trips_through_config_and_records() -> None:
    """The scale lives in the model's one label (`stars[1,5]`): plan -> config.json -> loaded config ->
    `Result.score`; classification label sets never get a `score`."""
    from emotag.model.config import EmotagConfig
    from emotag.tagger import Result
    from emotag.train.finetune import plan_labels

    p = plan_labels("regression", ["stars"], {"2", "3", "5"}, None)
    assert p.labels == ("stars[1,5]",) and p.scale == (1.0, 5.0) and p.multi_label  # 1-5 even without a 1
    assert plan_labels("regression", ["y"], {"0.2", "0.75"}, None).labels == ("y[0,1]",)
    assert plan_labels("regression", ["sat"], {"-2", "0.5", "2"}, None).scale == (-2.0, 2.0)
    assert plan_labels("regression", ["y"], {"3", "8"}, ["0", "10"]).labels == ("y[0,10]",)
    with pytest.raises(ValueError, match="outside the scale"):
        plan_labels("regression", ["y"], {"3", "12"}, ["0", "10"])
    cfg = EmotagConfig(emotion_labels=p.labels, multi_label=True)
    back = EmotagConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back.emotion_labels == ("stars[1,5]",) and back.multi_label
    assert Result.scale_of(back.emotion_labels) == ("stars", 1.0, 5.0)
    r = Result(0, "stars[1,5]", {"stars[1,5]": 0.75}, "positive", 0.5, 0.4)
    assert r.score == 4.0 and r.to_dict()["score"] == 4.0 and list(r.to_dict())[-1] == "score"
    for labels in (("a", "b"), ("stars",), ("x[1,1]",), ("y[a,b]",)):
        assert Result.scale_of(labels) is None
    plain = Result(0, "like", {"like": 0.6, "anger": 0.4}, "positive", 0.2, 0.3)
    assert plain.score is None and "score" not in plain.to_dict()
    assert "score" not in Result.failed(3, "text is empty").to_dict()


def test_regression_from_a_hugging_face_checkpoint_has_no_zero_shot(tmp_path: Path, hf_checkpoint: Path) -> None:
    """No polarity head to start from or compare with: the mean is the one baseline, and the text column the
    model was trained with (`--text-col review_text`) is the one `emotag eval` reads."""
    from emotag.evaluate import evaluate_file
    from emotag.tagger import Tagger
    from emotag.train.finetune import finetune

    def table(path: Path, seed: int) -> Path:
        src = _stars_table(tmp_path / f"s{seed}.csv", 80, seed)
        with open(src, encoding="utf-8") as f:
            rows = [{"review_text": r["text"], "stars": r["stars"]} for r in csv.DictReader(f)]
        return _write_csv(path, rows, ["review_text", "stars"])

    train, dev = table(tmp_path / "t.csv", 3), table(tmp_path / "d.csv", 4)
    r = finetune(train, tmp_path / "m", dev_path=dev, base_model=str(hf_checkpoint), task="regression",
                 text_col="review_text", label_cols="stars", epochs=0, progress=False)
    report = json.loads((tmp_path / "m" / "eval_report.json").read_text(encoding="utf-8"))
    assert r.dev_before is None and report["starts_from"] == {} and r.baseline is not None
    assert set(report["candidates"]) == {"training mean", "linear head"}
    got = evaluate_file(Tagger.load(tmp_path / "m"), dev)
    assert got["kind"] == "regression" and got["mae"] == pytest.approx(r.dev_after["mae"], abs=1e-9)


def test_choose_on_regression_compares_mae_with_its_standard_error() -> None:
    from emotag.train.finetune import choose

    c = {"training mean": {"mae": 0.9}, "polarity start": {"mae": 0.6}, "linear head": {"mae": 0.5},
         "fine-tuned": {"mae": 0.45, "mae_se": 0.04}}
    fitted = {"l2": 0.01, "cv_neg_mae": {"start": -0.6, "0.01": -0.5}}
    assert choose(c, 100, fitted) == "fine-tuned"  # 0.05 better than the linear head's CV MAE: past 0.04
    assert choose(c, 100, {**fitted, "cv_neg_mae": {"start": -0.6, "0.01": -0.47}}) == "linear head"
    assert choose(c, 100, {"l2": None, "cv_neg_mae": {"start": -0.47, "0.01": -0.48}}) == "polarity start"


# -- input hygiene and train/eval agreement (bug report hE) ---------------------------------------------


def test_final_and_zero_shot_dev_numbers_are_what_emotag_eval_reads(tmp_path: Path, base_dir: Path,
                                                                     monkeypatch) -> None:
    """Taxonomy labels: `emotag eval` reads each record's `emotion`, which the consistency rule (the emotion
    follows the polarity) can move off the most probable label; the report must read the same. Here the
    rule is made to forbid `like` outright, so the two readings differ on every positive text."""
    import numpy as np

    import emotag.tagger as T
    from emotag.evaluate import evaluate_file
    from emotag.train.finetune import finetune

    def no_like(emotion_labels, polarity_labels):
        return np.array([[e != "like" for e in emotion_labels] for _ in polarity_labels])

    monkeypatch.setattr(T, "emotion_polarity_table", no_like)
    rows = [{"text": t, "label": "like" if pos else "anger"} for t, pos in _sentiment_rows(60, 7)]
    dev = _write_csv(tmp_path / "d.csv", [{"text": t, "label": "like" if pos else "anger"}
                                          for t, pos in _sentiment_rows(30, 8)], ["text", "label"])
    out = tmp_path / "m"
    r = finetune(_write_csv(tmp_path / "t.csv", rows, ["text", "label"]), out, dev_path=dev, base_model=base_dir,
                 epochs=0, progress=False, export=False)
    after = evaluate_file(T.Tagger.load(out, backend="torch"), dev)
    assert after["kind"] == "labels"
    assert r.dev_after["accuracy"] == pytest.approx(after["accuracy"])
    assert r.dev_after["macro_f1"] == pytest.approx(after["macroF1"])
    before = evaluate_file(T.Tagger.load(base_dir, backend="torch"), dev)
    assert r.dev_before is not None and r.dev_before["accuracy"] == pytest.approx(before["accuracy"])
    assert r.dev_before["macro_f1"] == pytest.approx(before["macroF1"])


def test_as_eval_reads_smp_labels_by_summed_classes_over_all_six() -> None:
    """SMP2020 labels are read as `emotag eval` reads an SMP2020 file: the six classes' summed probabilities
    (not the record's `emotion`), macro-F1 over all six."""
    from types import SimpleNamespace

    from emotag.train.corpora import Example
    from emotag.train.finetune import _as_eval_reads, plan_labels

    plan = plan_labels("emotion", ["label"], {"happy", "angry"}, None)
    probs = dict.fromkeys(EMOTIONS, 0.0)
    happy = SimpleNamespace(emotion="anger", error=None, emotions={**probs, "like": 0.3, "happiness": 0.3,
                                                                    "anger": 0.4})
    angry = SimpleNamespace(emotion="anger", error=None, emotions={**probs, "anger": 0.9})
    rows = [Example("a", "finetune", emotions=("like", "happiness")), Example("b", "finetune", emotions=("anger",
                                                                                                         "disgust"))]
    m = _as_eval_reads([happy, angry], rows, plan, detail=True)
    assert m["accuracy"] == 1.0 and m["macro_f1"] == pytest.approx(2 / 6)
    assert _as_eval_reads([happy, angry], rows, plan, judged=False)["macro_f1"] == 1.0
    upper = plan_labels("emotion", ["label"], {"HAPPY", "Angry"}, None)  # eval reads these as SMP2020 too
    assert _as_eval_reads([happy, angry], rows, upper, detail=True)["macro_f1"] == pytest.approx(2 / 6)


def test_dev_split_keeps_every_class_in_training(tmp_path: Path, base_dir: Path) -> None:
    """The automatic split never takes a class's only row (nor all of a class's rows) into dev, and many
    classes with one row each are a one-line error, not an empty training set."""
    from emotag.train.corpora import Example
    from emotag.train.finetune import finetune, plan_labels
    from emotag.train.finetune.data import split_dev

    plan = plan_labels("emotion", ["label"], {"a", "b"}, None)
    rows = [Example(f"t{i}", "finetune", emotions=("a",)) for i in range(26)]
    rows.append(Example("lonely", "finetune", emotions=("b",)))
    for seed in range(20):
        train, dev = split_dev(rows, plan, seed)
        assert any(e.emotions == ("b",) for e in train) and all(e.emotions == ("a",) for e in dev) and dev
    plan = plan_labels("emotion", ["label"], {str(k) for k in range(15)}, None)
    pairs = [Example(f"t{i}", "finetune", emotions=(str(i // 2),)) for i in range(30)]  # 15 classes of 2
    for seed in range(5):
        train, dev = split_dev(pairs, plan, seed)
        assert sorted(e.emotions for e in train) == sorted(e.emotions for e in dev)  # one of each on each side
    ids = _write_csv(tmp_path / "ids.csv", [{"text": f"文本{i}", "label": f"c{i}"} for i in range(30)],
                     ["text", "label"])
    with pytest.raises(ValueError, match="too few rows per class") as e:
        finetune(ids, tmp_path / "m", base_model=base_dir, epochs=0, progress=False, export=False)
    assert "\n" not in str(e.value) and "ids.csv" in str(e.value) and "--dev" in str(e.value)
    assert "30 labelled rows in 30 classes" in str(e.value)


def test_a_class_left_only_in_skipped_rows_is_a_one_class_error(tmp_path: Path, base_dir: Path) -> None:
    """The documented "only one class" error holds for the rows that remain: a label whose rows are all
    skipped (empty text) leaves training with one class, which is an error, not a silent one-class model."""
    from emotag.train.finetune import finetune

    rows = [{"text": t, "label": "好"} for t, _ in _sentiment_rows(20, 9)] + [{"text": "", "label": "坏"}] * 3
    dev = _write_csv(tmp_path / "d.csv", [{"text": "很好", "label": "好"}], ["text", "label"])
    with pytest.raises(ValueError, match="only one class") as e:
        finetune(_write_csv(tmp_path / "t.csv", rows, ["text", "label"]), tmp_path / "m", dev_path=dev,
                 base_model=base_dir, epochs=0, progress=False, export=False)
    assert "\n" not in str(e.value) and "t.csv" in str(e.value)


def test_whole_number_labels_are_one_class_however_written() -> None:
    """`1`, `1.0` and ` 1 ` in a CSV column are one label, as 1 and 1.0 are in JSON."""
    from emotag.train.finetune.data import cell, label_values

    assert [cell(v) for v in ("1.0", " 1 ", "-2.00", 3.0, "1.5", "01", "1.0.0")] == \
        ["1", "1", "-2", "3", "1.5", "01", "1.0.0"]
    assert label_values({"label": ["0", "1.0", "1", " 1 ", None, ""]}, ["label"]) == {"0", "1"}


def test_cells_that_are_not_plain_values_are_skipped_and_counted(tmp_path: Path) -> None:
    """JSONL lists and objects are no labels and no texts (nor is a number a text, as `emotag score` rules;
    a spreadsheet's number cell is text there too): such rows are skipped and counted, never trained on as
    their Python repr."""
    from emotag.train.finetune import plan_labels
    from emotag.train.finetune.data import examples, label_values, read_table

    recs = [{"text": "好的", "label": ["1"]}, {"text": "好的", "label": {"a": 1}}, {"text": 12345, "label": "1"},
            {"text": ["a", "b"], "label": "1"}, {"text": {"x": 1}, "label": "1"}, {"text": "很好", "label": 1},
            {"text": "很差", "label": "0"}]
    path = tmp_path / "odd.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in recs) + "\n", encoding="utf-8")
    rows = read_table(path, ["text", "label"])
    assert label_values(rows, ["label"]) == {"0", "1"}
    plan = plan_labels("emotion", ["label"], label_values(rows, ["label"]), None)
    got, skipped = examples(rows, "text", ["label"], plan, path)
    assert [(e.text, e.emotions) for e in got] == [("很好", ("1",)), ("很差", ("0",))] and skipped == 5
    got, skipped = examples({"text": [666, "好"], "label": ["1", "0"]}, "text", ["label"], plan, tmp_path / "x.xlsx")
    assert [e.text for e in got] == ["666", "好"] and skipped == 0


def test_an_empty_multi_label_flag_skips_the_row(tmp_path: Path) -> None:
    """An empty flag cell is no answer, not a 0: the row is skipped and counted; a bad flag is still an error."""
    from emotag.train.finetune import plan_labels
    from emotag.train.finetune.data import examples

    plan = plan_labels("emotion", ["good", "room"], set(), None)
    rows = {"text": ["a", "b", "c"], "good": ["1", "0", "T"], "room": ["", "1", None]}
    got, skipped = examples(rows, "text", ["good", "room"], plan, tmp_path / "ml.csv")
    assert [(e.text, e.emotions) for e in got] == [("b", ("room",))] and skipped == 2
    with pytest.raises(ValueError, match=r"row 1, column 'room'.*not a 0/1"):
        examples({"text": ["a"], "good": ["1"], "room": ["maybe"]}, "text", ["good", "room"], plan, tmp_path / "m.csv")


def test_a_run_stopped_while_writing_leaves_a_model_that_is_refused_then_replaced(tmp_path: Path, base_dir: Path,
                                                                                  monkeypatch) -> None:
    """Ctrl-C during the ONNX export left new weights beside no (or old) ONNX files and an old report: the
    directory now says it is incomplete until its last model file is written, scoring refuses it with one
    line, and the next run replaces it without --force."""
    import emotag.model.export as export
    from emotag.model.config import INCOMPLETE_NAME, resolve_model_dir
    from emotag.train.finetune import finetune

    rows = [{"text": t, "label": "好评" if pos else "差评"} for t, pos in _sentiment_rows(60, 6)]
    path = _write_csv(tmp_path / "t.csv", rows, ["text", "label"])
    out = tmp_path / "m"

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "export_onnx", stop)
    with pytest.raises(KeyboardInterrupt):
        finetune(path, out, base_model=base_dir, epochs=0, progress=False)
    assert (out / INCOMPLETE_NAME).exists() and not (out / "eval_report.json").exists()
    with pytest.raises(ValueError, match="incomplete model: an emotag train run stopped while writing it"):
        resolve_model_dir(out)
    monkeypatch.undo()
    finetune(path, out, base_model=base_dir, epochs=0, progress=False)  # no --force needed
    assert not (out / INCOMPLETE_NAME).exists() and resolve_model_dir(out) == out
    assert (out / "eval_report.json").exists() and (out / "model.int8.onnx").exists()


@pytest.mark.parametrize(("task", "labels", "cells", "problem"), [
    ("regression", None, ["4", "5", "abc", "1"], "row 3, column 'label': 'abc' is not a number"),
    ("emotion", "好评,差评", ["好评", "差评", "中评", "好评"], "row 3, column 'label': label '中评' is not in --labels"),
])
def test_a_bad_training_label_names_its_row(tmp_path: Path, base_dir: Path, task, labels, cells, problem) -> None:
    """SPEC §5: file, row and problem, for the training file as for the dev file (the plan saw only the
    set of values and named no row)."""
    from emotag.train.finetune import finetune

    rows = [{"text": t, "label": c} for (t, _), c in zip(_sentiment_rows(4, 9), cells, strict=True)]
    path = _write_csv(tmp_path / "t.csv", rows * 5, ["text", "label"])
    with pytest.raises(ValueError, match=f"t.csv: {problem}"):
        finetune(path, tmp_path / "m", base_model=base_dir, task=task, labels=labels, epochs=0, progress=False)


def test_emotag_eval_reads_a_multi_label_dev_file_as_the_report_does(tmp_path: Path, base_dir: Path) -> None:
    """--label-col a,b,c: `emotag eval` on the dev file gives the report's exact match and F1s (it said the
    columns match no known labelled format)."""
    import random

    from emotag.evaluate import evaluate_file
    from emotag.tagger import Tagger
    from emotag.train.finetune import finetune

    rng = random.Random(3)
    aspects = {"price": ["价格实惠", "太贵了"], "room": ["房间很大", "房间很小"], "food": ["早餐丰盛", "饭菜难吃"]}

    def rows(n: int) -> list[dict]:
        out = []
        for _ in range(n):
            present = [a for a in aspects if rng.random() < 0.5]
            row = {"text": "".join(rng.choice(aspects[a]) for a in present) + "，还行"}
            out.append(row | {a: int(a in present) for a in aspects})
        return out

    train = _write_csv(tmp_path / "train.csv", rows(120), ["text", *aspects])
    dev = _write_csv(tmp_path / "dev.csv", rows(30), ["text", *aspects])
    out = tmp_path / "m"
    r = finetune(train, out, dev_path=dev, base_model=base_dir, label_cols=tuple(aspects), epochs=0,
                 progress=False, export=False)
    got = evaluate_file(Tagger.load(out, backend="torch"), dev)
    assert got["kind"] == "multilabel" and got["n"] == r.dev_after["n"] == 30
    for k in ("exact_match", "macro_f1", "micro_f1"):
        assert got[k] == pytest.approx(r.dev_after[k]), k


def test_a_custom_label_holding_a_pipe_is_one_label(tmp_path: Path, base_dir: Path) -> None:
    """`物流|包装` is a user's label, not an SMP2020 partial label (only those are sets of taxonomy labels):
    it trains as one class, and `emotag eval` on the dev file reads the report's numbers (training crashed
    in LabelPlan.groups with an internal `tuple.index` error)."""
    from emotag.evaluate import evaluate_file
    from emotag.tagger import Tagger
    from emotag.train.finetune import finetune, plan_labels

    plan = plan_labels("emotion", ["label"], {"好评", "物流|包装", "其他"}, None)
    assert not plan.partial and plan.groups() is None and plan.targets("物流|包装") == ("物流|包装",)
    assert plan_labels("emotion", ["label"], {"happy", "sad"}, None).targets("happy") == ("like", "happiness")
    train = _pol_table(tmp_path / "t.csv", 80, 21, "好评", "物流|包装")
    dev = _pol_table(tmp_path / "d.csv", 30, 22, "好评", "物流|包装")
    r = finetune(train, tmp_path / "m", dev_path=dev, base_model=base_dir, epochs=0, progress=False, export=False)
    assert set(r.labels) == {"好评", "物流|包装"}
    got = evaluate_file(Tagger.load(tmp_path / "m", backend="torch"), dev)
    assert got["kind"] == "labels" and got["n"] == r.dev_after["n"] == 30
    assert got["accuracy"] == pytest.approx(r.dev_after["accuracy"])
    assert got["macroF1"] == pytest.approx(r.dev_after["macro_f1"])


def test_eval_reads_an_emotion_file_with_a_review_column_as_it_was_trained(tmp_path: Path, base_dir: Path) -> None:
    """`--text-col review` with taxonomy labels (in any case): a {review, label} file is no polarity set for
    this model (eval said "polarity label 'Like' is not one of 1/0 ..."); eval reproduces the report. A
    polarity file in the same columns with labels the model was not trained on is still read as polarity."""
    from emotag.evaluate import evaluate_file
    from emotag.tagger import Tagger
    from emotag.train.finetune import finetune

    def table(name: str, n: int, seed: int) -> Path:
        rows = [{"review": t, "label": " Like " if pos else "Anger"} for t, pos in _sentiment_rows(n, seed)]
        return _write_csv(tmp_path / name, rows, ["review", "label"])

    train, dev = table("t.csv", 60, 23), table("d.csv", 24, 24)
    out = tmp_path / "m"
    r = finetune(train, out, dev_path=dev, base_model=base_dir, text_col="review", epochs=0, progress=False,
                 export=False)
    tagger = Tagger.load(out, backend="torch")
    got = evaluate_file(tagger, dev)
    assert got["kind"] == "labels" and got["n"] == r.dev_after["n"] == 24
    assert got["accuracy"] == pytest.approx(r.dev_after["accuracy"])
    assert got["macroF1"] == pytest.approx(r.dev_after["macro_f1"])
    pol = _write_csv(tmp_path / "p.csv", [{"review": t, "label": int(pos)} for t, pos in _sentiment_rows(10, 25)],
                     ["review", "label"])
    assert evaluate_file(tagger, pol)["kind"] == "polarity"


def test_eval_skips_the_rows_training_skips(tmp_path: Path, base_dir: Path) -> None:
    """A NaN label and a number where the text should be: `emotag train` skips both rows, so `emotag eval` on
    the same dev file must too (it raised on the 'nan' label, and scored the number as a text)."""
    from emotag.evaluate import evaluate_file
    from emotag.tagger import Tagger
    from emotag.train.finetune import finetune

    def jsonl(name: str, rows: list[dict]) -> Path:
        path = tmp_path / name
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        return path

    def rows(n: int, seed: int) -> list[dict]:
        return [{"text": t, "label": "like" if pos else "anger"} for t, pos in _sentiment_rows(n, seed)]

    train = jsonl("t.jsonl", rows(60, 26))
    dev = jsonl("d.jsonl", [*rows(20, 27), {"text": "很好", "label": float("nan")}, {"text": 12345, "label": "like"},
                            {"text": "很差", "label": None}])
    assert "NaN" in dev.read_text(encoding="utf-8")
    r = finetune(train, tmp_path / "m", dev_path=dev, base_model=base_dir, epochs=0, progress=False, export=False)
    got = evaluate_file(Tagger.load(tmp_path / "m", backend="torch"), dev)
    assert got["n"] == r.dev_after["n"] == 20 and got["errors"] == 0
    assert got["accuracy"] == pytest.approx(r.dev_after["accuracy"])
    assert got["macroF1"] == pytest.approx(r.dev_after["macro_f1"])


def test_regression_eval_skips_nan_values_and_names_a_bad_row_before_scoring(tmp_path: Path, base_dir: Path,
                                                                             monkeypatch) -> None:
    """Regression: a NaN value and a number as text are skipped by eval as by training (eval printed
    pearson_r=nan), and a value that is not a number is named by its row in the file, counted as training
    counts rows (eval counted only rows with text and value: row 2 for the third row), before any text is
    scored."""
    import emotag.evaluate as ev
    from emotag.tagger import Tagger
    from emotag.train.finetune import finetune

    train = _stars_table(tmp_path / "t.csv", 60, 28)
    good = [{"text": t, "stars": 5 if pos else 1} for t, pos in _sentiment_rows(20, 29)]
    dev = tmp_path / "d.jsonl"
    dev.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in [
        *good, {"text": "很好", "stars": float("nan")}, {"text": 4, "stars": 4}]), encoding="utf-8")
    r = finetune(train, tmp_path / "m", dev_path=dev, base_model=base_dir, task="regression", label_cols="stars",
                 epochs=0, progress=False, export=False)
    tagger = Tagger.load(tmp_path / "m", backend="torch")
    got = ev.evaluate_file(tagger, dev)
    assert got["kind"] == "regression" and got["n"] == r.dev_after["n"] == 20
    for k in ("pearson_r", "mae", "rmse"):
        assert got[k] == pytest.approx(r.dev_after[k]), k
    bad = _write_csv(tmp_path / "bad.csv", [{"text": "很好", "stars": 5}, {"text": "", "stars": 4},
                                           {"text": "很差", "stars": "五星"}, {"text": "很好", "stars": 5}],
                     ["text", "stars"])

    def no_scoring(*args, **kwargs):
        raise AssertionError("scored before the values were checked")

    monkeypatch.setattr(ev, "_score", no_scoring)
    with pytest.raises(ValueError, match=r"bad.csv: row 3, column 'stars': '五星' is not a number"):
        ev.evaluate_file(tagger, bad)


def test_export_onnx_refuses_a_directory_marked_incomplete(tmp_path: Path, base_dir: Path) -> None:
    """A directory an interrupted `emotag train` left (`.incomplete`) is refused in one line, as `score` and
    `eval` refuse it, and no ONNX file is written that would make it look finished."""
    import shutil

    from emotag.model.config import INCOMPLETE_NAME
    from emotag.model.export import export_onnx

    d = tmp_path / "m"
    shutil.copytree(base_dir, d)
    (d / INCOMPLETE_NAME).write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="incomplete model") as e:
        export_onnx(d, quantize="int8")
    assert "\n" not in str(e.value) and not list(d.glob("*.onnx"))


def test_train_refuses_a_non_empty_directory_that_holds_no_emotag_model(tmp_path: Path, base_dir: Path) -> None:
    """`-o DIR` over someone's own project (its config.json and MODEL_CARD.md) is refused in one line before
    training, with the files untouched, unless forced; an emotag model directory is one by its config's
    keys, not by having a config.json."""
    from emotag.model.config import INCOMPLETE_NAME, is_model_dir
    from emotag.train.finetune import finetune

    out = tmp_path / "project"
    out.mkdir()
    (out / "config.json").write_text('{"model_type": "bert", "hidden_size": 32}\n', encoding="utf-8")
    (out / "MODEL_CARD.md").write_text("ours\n", encoding="utf-8")
    assert not is_model_dir(out) and is_model_dir(base_dir)
    train = _pol_table(tmp_path / "t.csv", 60, 30, "物流", "售后")
    with pytest.raises(ValueError, match="not empty and holds no emotag model") as e:
        finetune(train, out, base_model=base_dir, epochs=0, progress=False, export=False)
    assert "\n" not in str(e.value) and str(out) in str(e.value)
    assert (out / "MODEL_CARD.md").read_text(encoding="utf-8") == "ours\n" and not (out / "eval_report.json").exists()
    (tmp_path / "empty").mkdir()
    (tmp_path / "stopped").mkdir()
    (tmp_path / "stopped" / INCOMPLETE_NAME).write_text("", encoding="utf-8")  # a run of ours, interrupted
    assert is_model_dir(tmp_path / "stopped")
    finetune(train, out, base_model=base_dir, epochs=0, progress=False, export=False, force=True)
    assert is_model_dir(out) and (out / "eval_report.json").exists()
    kept = tmp_path / "kept"  # a directory made for the model, holding only a hidden file, is an empty one
    kept.mkdir()
    (kept / ".gitkeep").write_text("", encoding="utf-8")
    finetune(train, kept, base_model=base_dir, epochs=0, progress=False, export=False)
    assert is_model_dir(kept)


def test_int8_calibration_tops_up_a_few_training_texts(tmp_path: Path, base_dir: Path) -> None:
    """24 training texts are too few to set int8 ranges (other texts get clipped): they are topped up with
    emotag's calibration sample to MIN_CALIBRATION_TEXTS, the report says so, and the int8 file agrees with
    fp32 on held-out texts at least as often as one calibrated on the training texts alone."""
    from emotag.model.config import MIN_CALIBRATION_TEXTS
    from emotag.model.export import (
        calibration_batches,
        default_calibration_texts,
        int8_agreement,
        quantize_int8,
    )
    from emotag.train.finetune import finetune

    train = _pol_table(tmp_path / "t.csv", 24, 31, "物流", "售后")
    dev = _pol_table(tmp_path / "d.csv", 12, 32, "物流", "售后")
    out = tmp_path / "m"
    finetune(train, out, dev_path=dev, base_model=base_dir, epochs=0, progress=False)
    report = json.loads((out / "eval_report.json").read_text(encoding="utf-8"))
    assert report["int8_calibration"] == {"texts": MIN_CALIBRATION_TEXTS, "training_texts": 24,
                                          "sample_texts": MIN_CALIBRATION_TEXTS - 24}
    assert f"topped up with {MIN_CALIBRATION_TEXTS - 24}" in (out / "eval_report.md").read_text(encoding="utf-8")
    with open(train, encoding="utf-8") as f:
        own = [row["text"] for row in csv.DictReader(f)]
    alone = quantize_int8(out / "model.onnx", tmp_path / "alone.int8.onnx", calibration_batches(out, own))
    held_out = calibration_batches(out, default_calibration_texts()[MIN_CALIBRATION_TEXTS:]
                                   + [t for t, _ in _sentiment_rows(60, 33)])
    topped = int8_agreement(out / "model.onnx", out / "model.int8.onnx", held_out)
    assert topped >= int8_agreement(out / "model.onnx", alone, held_out)
