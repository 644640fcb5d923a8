"""Training-data readers: lexicon rows and the unlabelled pre-training text keep dev splits out."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

pytest.importorskip("yaml")

from emotag.train import corpora  # noqa: E402

DUTIR_YAML = """Name: test
Category:
- 乐
- 好
Dictionary:
    乐:
    - 欢快
    - 喜欢
    - 胡敲梆子乱击磬－欢喜若狂
    好:
    - 喜欢
    - 赞赏
    怒:
    - 愤怒
    惊:
    - 错愕
"""


def test_dutir_words_become_partial_emotion_labels(tmp_path: Path) -> None:
    p = tmp_path / "dutir.yaml"
    p.write_text(DUTIR_YAML, encoding="utf-8")
    rows = {e.text: e for e in corpora.dutir_lexicon(p)}
    assert set(rows) == {"欢快", "喜欢", "赞赏", "愤怒", "错愕"}  # the 歇后语 line is not a word
    assert rows["欢快"].emotions == ("happiness",)
    assert rows["喜欢"].emotions == ("happiness", "like")  # listed twice: both are allowed
    assert rows["愤怒"].emotions == ("anger",) and rows["愤怒"].polarity == "negative"
    assert rows["赞赏"].polarity == "positive"
    assert all(e.split == "train" and e.source == "dutir" for e in rows.values())


def test_cvaw_words_scale_like_cvat(tmp_path: Path) -> None:
    p = tmp_path / "cvaw.yaml"
    p.write_text("Dictionary:\n  开心: {valence: 9.0, arousal: 5.0}\n  难过: {valence: 1.0, arousal: 1.0}\n"
                 "  坏行: {valence: x}\n", encoding="utf-8")
    rows = {e.text: e for e in corpora.cvaw_lexicon(p)}
    assert set(rows) == {"开心", "难过"}
    assert rows["开心"].valence == 1.0 and rows["开心"].intensity == 0.5
    assert rows["难过"].valence == -1.0 and rows["难过"].intensity == 0.0


def _fake_data(root: Path, chat: list[str], n_dialogues: int) -> None:
    (root / "conversation_sentiment").mkdir(parents=True)
    (root / "conversation_sentiment" / "sentiment_XS_30k.txt").write_text(
        "labels,text\n" + "".join(f"positive,{t}\n" for t in chat), encoding="utf-8")
    (root / "bdci2018_car_aspect").mkdir()
    (root / "bdci2018_car_aspect" / "train.csv").write_text(
        "content_id,content,subject,sentiment_value,sentiment_word\n1,油耗有点高,油耗,-1,高\n2,油耗有点高,动力,0,\n",
        encoding="utf-8")
    (root / "stc3_helpdesk").mkdir()
    dialogs = [{"id": i, "turns": [{"sender": "customer", "utterances": [f"对话{i}客户"]},
                                   {"sender": "helpdesk", "utterances": [f"对话{i}客服"]}],
                "annotations": [{"quality": {"S": 0}}]} for i in range(n_dialogues)]
    with gzip.open(root / "stc3_helpdesk" / "train_data_cn.json.gz", "wt", encoding="utf-8") as f:
        json.dump(dialogs, f)


def test_unlabelled_text_leaves_dev_splits_out(tmp_path: Path) -> None:
    chat = [f"聊天记录{i}" for i in range(300)]
    n = corpora.STC3_DEV_START + 3
    _fake_data(tmp_path, chat, n)
    got = list(corpora.unlabelled_texts(tmp_path))
    chat_dev = {t for t in chat if corpora.dev_bucket(t, 0.1)}
    assert chat_dev and not chat_dev & set(got)  # the chat dev bucket never reaches pre-training
    assert set(chat) - chat_dev <= set(got)
    assert got.count("油耗有点高") == 1  # one post per aspect row: de-duplicated
    assert "对话0客户" in got and "对话0客服" in got
    assert not any(t.startswith(f"对话{corpora.STC3_DEV_START}") for t in got)  # satisfaction dev dialogues
