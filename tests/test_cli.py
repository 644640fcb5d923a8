"""The command line end to end: formats, one row out per row in, errors, resume, dialogues, profiles."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from emotag.cli import app
from tests.conftest import SAMPLES

runner = CliRunner()


def _jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_score_csv_to_jsonl_one_row_per_input(tiny_model_dir, tmp_path):
    out = tmp_path / "out.jsonl"
    res = runner.invoke(app, ["score", str(SAMPLES / "reviews.csv"), "-o", str(out), "--model", str(tiny_model_dir),
                              "--id-col", "review_id", "--keep", "user_id,time,product", "--quiet"])
    assert res.exit_code == 0, res.output
    with open(SAMPLES / "reviews.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    got = _jsonl(out)
    assert [g["id"] for g in got] == [r["review_id"] for r in rows]
    assert all(g["user_id"] == r["user_id"] and g["product"] == r["product"] for g, r in zip(got, rows, strict=True))
    errors = [g for g in got if g["error"]]
    assert 1 <= len(errors) <= 6  # the sample's empty / whitespace rows
    assert all(g["emotion"] is None for g in errors)
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("ext", ["csv", "tsv", "jsonl", "parquet", "xlsx", "json"])
def test_score_writes_every_format(tiny_model_dir, tmp_path, ext):
    out = tmp_path / f"out.{ext}"
    res = runner.invoke(app, ["score", str(SAMPLES / "posts.jsonl"), "-o", str(out), "--model", str(tiny_model_dir),
                              "--quiet"])
    assert res.exit_code == 0, res.output
    from emotag.io import read_records

    recs = list(read_records(str(out)))
    assert len(recs) == len((SAMPLES / "posts.jsonl").read_text(encoding="utf-8").splitlines())
    ok = next(r for r in recs if not r.get("error"))
    assert set(ok["emotions"]) >= {"neutral", "anger"}


def test_stdin_to_stdout(tiny_model_dir):
    lines = "\n".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) for i, t in enumerate(["很好", "很差"]))
    r = subprocess.run([sys.executable, "-m", "emotag.cli", "score", "-", "--model", str(tiny_model_dir)],
                       input=lines, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = [json.loads(x) for x in r.stdout.splitlines()]
    assert [o["id"] for o in out] == [0, 1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["score", "nope.csv"], "nope.csv"),
        (["score", "{reviews}", "--text-col", "body"], "body"),
        (["score", "{reviews}", "-o", "{tmp}/x.docx"], "docx"),
        (["score", "{reviews}", "--model", "{tmp}/no-model"], "no-model"),
    ],
)
def test_user_errors_are_one_line_exit_1(tiny_model_dir, tmp_path, args, message):
    args = [a.format(reviews=SAMPLES / "reviews.csv", tmp=tmp_path) for a in args]
    if "--model" not in args:
        args += ["--model", str(tiny_model_dir)]
    r = subprocess.run([sys.executable, "-m", "emotag.cli", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and message in err[0], r.stderr


def test_resume_continues_partial_output(tiny_model_dir, tmp_path, monkeypatch):
    src = tmp_path / "in.jsonl"
    with open(src, "w", encoding="utf-8") as f:
        for i in range(50):
            f.write(json.dumps({"id": i, "text": f"第{i}条评论，很好"}, ensure_ascii=False) + "\n")
    out = tmp_path / "out.jsonl"
    full = tmp_path / "full.jsonl"
    assert runner.invoke(app, ["score", str(src), "-o", str(full), "--model", str(tiny_model_dir), "-q"]).exit_code == 0
    lines = full.read_text(encoding="utf-8").splitlines(keepends=True)
    # Ctrl-C after 20 rows: the partial stays and the user is told how to go on
    _interrupt_after(monkeypatch, 20)
    res = runner.invoke(app, ["score", str(src), "-o", str(out), "--model", str(tiny_model_dir), "-q"])
    assert res.exit_code == 130 and "--resume" in res.output and not out.exists()
    monkeypatch.undo()
    partial = tmp_path / "out.jsonl.partial"
    assert partial.read_text(encoding="utf-8") == "".join(lines[:20])
    with open(partial, "a", encoding="utf-8") as f:  # a kill -9 can leave half a line too
        f.write(lines[20][:15])
    res = runner.invoke(app, ["score", str(src), "-o", str(out), "--model", str(tiny_model_dir), "--resume", "-q"])
    assert res.exit_code == 0, res.output
    got = _jsonl(out)
    assert [g["id"] for g in got] == list(range(50))
    assert got == _jsonl(full)
    assert not list(tmp_path.glob("out.jsonl.partial*"))


@pytest.mark.parametrize("ext", ["jsonl", "csv"])
def test_a_resumed_runs_summary_counts_the_resumed_rows_errors(tiny_model_dir, tmp_path, monkeypatch, ext):
    """The closing line describes the whole output: errors among the resumed rows are counted (it said
    0 with errors when all of them were in the part written before the interruption)."""
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": "" if i < 5 else f"第{i}条评论，很好"}, ensure_ascii=False)
                           + "\n" for i in range(40)), encoding="utf-8")
    out = tmp_path / f"out.{ext}"
    _interrupt_after(monkeypatch, 20)
    runner.invoke(app, ["score", str(src), "-o", str(out), "--model", str(tiny_model_dir)])
    monkeypatch.undo()
    res = runner.invoke(app, ["score", str(src), "-o", str(out), "--model", str(tiny_model_dir), "--resume"])
    assert res.exit_code == 0, res.output
    assert "scored 20 rows" in res.output and "(20 resumed; 5 of all 40 with errors)" in res.output
    assert "text is empty (5)" in res.output


def _interrupt_after(monkeypatch, rows: int) -> None:
    """Make the next scoring run stop as Ctrl-C would, after `rows` records were written."""
    from emotag.io import RecordWriter

    write = RecordWriter.write

    def interrupted(self, record):
        if self._written >= rows:
            raise KeyboardInterrupt
        write(self, record)

    monkeypatch.setattr(RecordWriter, "write", interrupted)


def test_score_dialogues(tiny_model_dir, tmp_path):
    out = tmp_path / "conv.jsonl"
    res = runner.invoke(app, ["score-dialogues", str(SAMPLES / "conversations.jsonl"), "-o", str(out),
                              "--model", str(tiny_model_dir), "-q"])
    assert res.exit_code == 0, res.output
    got = _jsonl(out)
    assert len(got) == 20
    for c in got:
        assert c["error"] is None
        assert -2 <= c["satisfaction"] <= 2
        assert c["turns"] and all(t["speaker"] == "customer" for t in c["turns"])
        assert all(isinstance(t["id"], int) and t["error"] is None for t in c["turns"])  # SPEC §2 records
        assert isinstance(c["resolved"], bool)


def test_score_dialogues_reads_people_written_files(tiny_model_dir, tmp_path):
    """Flat tables keep turns as text (666, True are words); a broken JSON line is one error record."""
    flat = tmp_path / "turns.csv"
    flat.write_text("conversation_id,speaker,text\nc1,customer,666\nc1,agent,好的\nc1,customer,True\n"
                    "c2,customer,088\n", encoding="utf-8")
    out = tmp_path / "flat.jsonl"
    args = ["score-dialogues", str(flat), "-o", str(out), "--model", str(tiny_model_dir), "-q"]
    assert runner.invoke(app, args).exit_code == 0
    c1, c2 = _jsonl(out)
    assert c1["error"] is None and [t["id"] for t in c1["turns"]] == [0, 2]
    assert all(t["error"] is None for t in c1["turns"]) and c2["turns"][0]["error"] is None
    nested = tmp_path / "conv.jsonl"
    good = json.dumps({"id": "a", "turns": [{"speaker": "customer", "text": "谢谢，解决了"}]}, ensure_ascii=False)
    other = good.replace('"a"', '"c"')
    nested.write_text(good + '\n{"id": "b", "turns": [\n' + other + "\n", encoding="utf-8")
    out = tmp_path / "nested.jsonl"
    args = ["score-dialogues", str(nested), "-o", str(out), "--model", str(tiny_model_dir), "-q"]
    assert runner.invoke(app, args).exit_code == 0
    a, b, c = _jsonl(out)
    assert (a["id"], a["error"]) == ("a", None) and (c["id"], c["error"]) == ("c", None)
    assert b["id"] == 1 and "JSON" in b["error"] and b["satisfaction"] is None


def test_profile_command_builds_store(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("EMOTAG_PSEUDONYM_KEY", "emotag-test-key-0123456789abcdef")
    scored = tmp_path / "scored.jsonl"
    assert runner.invoke(app, ["score", str(SAMPLES / "reviews.csv"), "-o", str(scored), "--model",
                               str(tiny_model_dir), "--keep", "user_id,time", "-q"]).exit_code == 0
    out = tmp_path / "profiles.jsonl"
    res = runner.invoke(app, ["profile", str(scored), "-o", str(out), "--store", str(tmp_path / "p.db")])
    assert res.exit_code == 0, res.output
    profiles = _jsonl(out)
    assert 20 <= len(profiles) <= 25
    raw_ids = {f"u{i:02d}" for i in range(1, 31)}
    assert not any(str(p.get("user_id")) in raw_ids for p in profiles)  # pseudonymous
    res = runner.invoke(app, ["profile", str(scored)])  # no -o, no --store: profiles on stdout, like `score`
    assert res.exit_code == 0
    lines = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
    assert sorted(p["user_id"] for p in lines) == sorted(p["user_id"] for p in profiles)


def test_info(tiny_model_dir):
    res = runner.invoke(app, ["info", str(tiny_model_dir)])
    assert res.exit_code == 0
    assert "tiny-test" in res.output and "model.int8.onnx" in res.output
    assert "TF-IDF expert buckets=1024" in res.output


def test_dialogue_lexicon_feature(tiny_model_dir, tmp_path):
    """A model's dialogue_lexical.npy feeds `lexical_satisfaction` into the satisfaction read-out."""
    import shutil

    import numpy as np

    from emotag.dialogues import Conversation, score_conversations
    from emotag.model.config import DIALOGUE_LEXICAL_NAME, EmotagConfig
    from emotag.model.features import hash_ngrams, lexical_buckets
    from emotag.tagger import Tagger

    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    cfg = EmotagConfig.load(d)
    cfg.dialogue.features, cfg.dialogue.weights, cfg.dialogue.bias = ("lexical_satisfaction",), (1.0,), 0.0
    cfg.dialogue.lexical_buckets = 1024
    cfg.save(d)
    idf, weight = np.ones(1024, np.float32), np.zeros(1024, np.float32)
    idf[0] = 0
    for word, sign in (("满意", 1.0), ("失望", -1.0)):
        weight[lexical_buckets(hash_ngrams(word, cfg.ngram), 1024)] = sign
    convs = [Conversation("a", [{"speaker": "customer", "text": "很满意"}, {"speaker": "agent", "text": "失望"}]),
             Conversation("b", [{"speaker": "customer", "text": "很失望"}])]
    with pytest.raises(FileNotFoundError, match=DIALOGUE_LEXICAL_NAME):
        list(score_conversations(Tagger.load(d), convs))
    np.save(d / DIALOGUE_LEXICAL_NAME, np.stack([idf, weight]), allow_pickle=False)
    out = list(score_conversations(Tagger.load(d), convs))
    # only customer turns count: the agent's 失望 does not pull conversation a down
    assert out[0]["satisfaction"] > 0.2 and out[1]["satisfaction"] < -0.2


def test_score_file_streams_errors_in_place_across_chunks(tiny_model_dir, tmp_path):
    """Unreadable rows keep their place between scored rows, over many small chunks, first and last included."""
    from emotag import Tagger
    from emotag.scoring import score_file

    src = tmp_path / "in.jsonl"
    bad = {0, 7, 8, 31, 64, 99}
    with open(src, "w", encoding="utf-8") as f:
        for i in range(100):
            rec = {"id": f"r{i}", "text": None if i in bad else f"第{i}条，服务很好" * (1 + i % 5), "shop": i}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    seen: list[int] = []
    out = tmp_path / "out.jsonl"
    summary = score_file(Tagger.load(tiny_model_dir), str(src), str(out), id_col="id", keep=("shop",),
                         batch_size=4, chunk_rows=16, progress=seen.append)
    got = _jsonl(out)
    assert [g["id"] for g in got] == [f"r{i}" for i in range(100)]
    assert [g["shop"] for g in got] == list(range(100))
    assert {i for i, g in enumerate(got) if g["error"]} == bad
    assert all(g["emotion"] for i, g in enumerate(got) if i not in bad)
    assert (summary.rows, summary.errors) == (100, len(bad))
    assert sum(seen) == 100


def test_kept_columns_never_overwrite_scores(tiny_model_dir, tmp_path):
    """An eval file's gold `emotion` column, kept, lands beside the prediction as `input.emotion`."""
    src = tmp_path / "gold.csv"
    src.write_text("id,text,emotion,polarity_score,shop\n1,今天好开心,sadness,-1,a\n2,,anger,0.5,b\n",
                   encoding="utf-8")
    out = tmp_path / "out.jsonl"
    args = ["score", str(src), "-o", str(out), "--model", str(tiny_model_dir), "--id-col", "id",
            "--keep", "emotion,polarity_score,shop", "-q"]
    assert runner.invoke(app, args).exit_code == 0
    ok, bad = _jsonl(out)
    assert ok["emotion"] in ok["emotions"] and isinstance(ok["polarity_score"], float)
    assert (ok["input.emotion"], ok["input.polarity_score"], ok["shop"]) == ("sadness", "-1", "a")
    assert bad["error"] and bad["emotion"] is None and bad["polarity_score"] is None
    assert (bad["input.emotion"], bad["shop"]) == ("anger", "b")


def test_half_an_emoji_is_scored_not_fatal(tiny_model_dir, tmp_path):
    """Weibo cuts posts at 140 UTF-16 units, leaving lone surrogates: the row is scored, the run goes on."""
    src = tmp_path / "cut.jsonl"
    src.write_text('{"id":1,"text":"\\ud83d好开心"}\n{"id":2,"text":"\\ude02"}\n{"id":3,"text":"差评"}\n',
                   encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["score", str(src), "-o", str(out), "--model", str(tiny_model_dir), "-q"])
    assert result.exit_code == 0, result.output
    rows = _jsonl(out)
    assert [r["id"] for r in rows] == [1, 2, 3]
    assert rows[0]["emotion"] and rows[2]["emotion"] and rows[0]["error"] is None
    assert rows[1]["error"] == "text is empty after normalisation"


def test_profile_errors_name_the_file_and_its_row(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOTAG_PSEUDONYM_KEY", "emotag-test-key-0123456789abcdef")
    emotions = {"neutral": 0.3, "like": 0.1, "happiness": 0.3, "sadness": 0.1, "anger": 0.05, "disgust": 0.05,
                "fear": 0.05, "surprise": 0.05}

    def record(i, score):
        return json.dumps({"id": i, "user_id": "u1", "time": "2024-05-01 10:00:00", "emotion": "happiness",
                           "emotions": emotions, "polarity": "positive", "polarity_score": score,
                           "intensity": 0.5, "error": None})

    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("\n".join(record(i, 0.5) for i in range(3)) + "\n", encoding="utf-8")
    b.write_text(record(0, 0.5) + "\n" + record(1, 1.7) + "\n", encoding="utf-8")
    res = runner.invoke(app, ["profile", str(a), str(b), "-o", str(tmp_path / "p.jsonl"), "--strict"])
    assert res.exit_code == 1
    assert f"{b}, row 2: field 'polarity_score'" in res.output and str(a) + "," not in res.output


def test_csv_columns_do_not_depend_on_leading_error_rows(tiny_model_dir, tmp_path):
    """1,100 unscorable rows first (null emotions) must not freeze a header without emotions.<label>."""
    from emotag import Tagger
    from emotag.io import read_records
    from emotag.scoring import score_file

    src = tmp_path / "in.jsonl"
    lines = [json.dumps({"id": i, "text": ""}) for i in range(1100)] + [json.dumps({"id": 1100, "text": "很开心"})]
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tagger = Tagger.load(tiny_model_dir)
    out = tmp_path / "out.csv"
    score_file(tagger, str(src), str(out), id_col="id")
    with open(out, encoding="utf-8-sig") as f:
        header = next(csv.reader(f))
    assert [f"emotions.{e}" for e in tagger.emotion_labels] == [h for h in header if h.startswith("emotions")]
    last = list(read_records(str(out)))[-1]
    assert last["error"] is None and abs(sum(last["emotions"].values()) - 1) < 1e-4


def _eval(tiny_model_dir, path):
    res = runner.invoke(app, ["eval", str(tiny_model_dir), str(path)])
    return res.exit_code, res.output


@pytest.mark.parametrize(("content", "problem"), [
    ("text,stars\n很好,5\n很差,1\n还行,\n", "row 3: stars '' is not a whole number"),
    ("text,stars\n很好,5\n很差,4.5\n", "row 2: stars '4.5' is not a whole number"),
    ("text,stars\n很好,五星\n", "row 1: stars '五星' is not a whole number"),
    ("Text,Valence_Mean,Arousal_Mean\n很好,7.2,5\n很差,,3\n", "row 2: Valence_Mean '' is not a number"),
])
def test_eval_bad_gold_values_are_one_line_errors(tiny_model_dir, tmp_path, content, problem):
    path = tmp_path / "gold.csv"
    path.write_text(content, encoding="utf-8")
    code, out = _eval(tiny_model_dir, path)
    assert code == 1 and f"gold.csv: {problem}" in out and "Traceback" not in out and "internal error" not in out


def test_eval_stars_and_cvat_skip_the_rows_training_skips(tiny_model_dir, tmp_path):
    """A number in the text column is no text (as `emotag train` reads it); the stars and CVAT readers
    scored it as an empty text, an error row inside the accuracy and the correlation."""
    rows = [{"text": "很好", "stars": 5}, {"text": "很差", "stars": 1}, {"text": "还行吧", "stars": 3},
            {"text": "特别喜欢", "stars": 4}]
    clean, odd = tmp_path / "clean.jsonl", tmp_path / "odd.jsonl"
    clean.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    odd.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in [*rows, {"text": 12345, "stars": 2}]),
                   encoding="utf-8")
    (c1, o1), (c2, o2) = _eval(tiny_model_dir, clean), _eval(tiny_model_dir, odd)
    assert c1 == c2 == 0, (o1, o2)
    assert o1.split(None, 1)[1] == o2.split(None, 1)[1]  # same numbers after the file name


def test_eval_reads_a_dev_file_in_the_columns_the_model_was_trained_with(tiny_model_dir, tmp_path):
    """`emotag train --text-col comment --label-col mood` writes that into eval_report.json; `emotag eval`
    reads the same dev file the same way (it said: columns match no known labelled format)."""
    import shutil

    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    (model / "eval_report.json").write_text(json.dumps({"data": {"text_col": "comment", "label_cols": ["mood"]}}),
                                            encoding="utf-8")
    dev = tmp_path / "dev.csv"
    dev.write_text("comment,mood\n太开心了,happiness\n气死我了,anger\n", encoding="utf-8")
    code, out = _eval(model, dev)
    assert code == 0 and "kind=labels" in out and "n=2" in out, out
    code, out = _eval(tiny_model_dir, dev)  # a model trained on other columns: still an error naming them
    assert code == 1 and "match no known labelled format" in out


def test_eval_stc3_slices_and_damaged_files_are_one_line_errors(tiny_model_dir, tmp_path):
    import gzip

    good = [{"id": i, "turns": [{"sender": "customer", "utterances": ["快递太慢了" if i else "谢谢，解决了"]}],
             "annotations": [{"quality": {"S": float(i)}}]} for i in range(3)]
    path = tmp_path / "d.json.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        json.dump(good, f)
    code, out = _eval(tiny_model_dir, f"{path}@0:3")
    assert code == 0 and f"file={path}@0:3 kind=stc3 n=3" in out
    for span, problem in (("abc", "a slice is @A:B"), ("1:2:3", "a slice is @A:B"), ("0:1", "1 dialogue in the slice")):
        code, out = _eval(tiny_model_dir, f"{path}@{span}")
        assert code == 1 and problem in out and "Traceback" not in out, (span, out)
    for content, problem in (([{"id": 1}], "dialogue 0: needs turns"),
                             ([{**good[0], "annotations": []}] * 2, "dialogue 0: needs turns")):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            json.dump(content, f)
        code, out = _eval(tiny_model_dir, path)
        assert code == 1 and problem in out and "Traceback" not in out
    path.write_text("not gzip", encoding="utf-8")
    code, out = _eval(tiny_model_dir, path)
    assert code == 1 and "not an STC-3 dialogue file" in out


def test_eval_reads_a_one_class_review_sample_and_a_path_with_an_at(tiny_model_dir, tmp_path):
    """The head of a sorted review file holds label 1 only: it is still a 0/1 file. A path may hold an @."""
    path = tmp_path / "my@reviews.csv"
    path.write_text("label,review\n1,很好很喜欢\n1,非常满意\n", encoding="utf-8")
    code, out = _eval(tiny_model_dir, path)
    assert code == 0 and "kind=polarity" in out, out


def test_a_crash_that_is_not_a_value_error_says_it_is_a_bug(monkeypatch, tiny_model_dir, tmp_path):
    """Anything but an error raised for the user is a bug, and looks like one: the banner, then the traceback."""
    import emotag.evaluate as ev

    def boom(*args, **kwargs):
        raise KeyError("turns")

    monkeypatch.setattr(ev, "evaluate_file", boom)
    path = tmp_path / "x.csv"
    path.write_text("text,label\n好,like\n", encoding="utf-8")
    res = runner.invoke(app, ["eval", str(tiny_model_dir), str(path)])
    assert res.exit_code == 1 and "internal error (a bug, not your input)" in res.output
    assert isinstance(res.exception, KeyError)


def test_preview_after_standard_input_and_a_negative_preview(tiny_model_dir, tmp_path):
    out = tmp_path / "o.jsonl"
    res = runner.invoke(app, ["score", "-", "-o", str(out), "--model", str(tiny_model_dir), "--preview", "3"],
                        input="今天好开心\n太差劲了\n")
    assert res.exit_code == 0, res.output  # it read stdin again and said: standard input is empty
    assert len(out.read_text(encoding="utf-8").splitlines()) == 2
    res = runner.invoke(app, ["score", "-", "-o", str(out), "--model", str(tiny_model_dir), "--preview", "-3"],
                        input="好\n")
    assert res.exit_code == 2 and "Traceback" not in res.output


def test_eval_reads_smp_labels_in_any_case(tiny_model_dir, tmp_path):
    """emotag train takes HAPPY/Angry as SMP2020's labels; eval read them as labels outside the model's set."""
    lower, upper = tmp_path / "l.csv", tmp_path / "u.csv"
    lower.write_text("text,label\n今天好开心,happy\n气死我了,angry\n好难过,sad\n", encoding="utf-8")
    upper.write_text("text,label\n今天好开心,HAPPY\n气死我了,Angry\n好难过,SAD\n", encoding="utf-8")
    (code_l, out_l), (code_u, out_u) = _eval(tiny_model_dir, lower), _eval(tiny_model_dir, upper)
    assert code_l == code_u == 0 and "kind=smp2020" in out_u
    assert out_l.split("kind=")[1] == out_u.split("kind=")[1]


def test_eval_reads_whole_number_labels_written_with_decimals(tiny_model_dir, tmp_path):
    """pandas writes 1.0 in a column with gaps; train reads it as 1, so eval must too."""
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("label,review\n1,很好很喜欢\n0,太差了\n", encoding="utf-8")
    b.write_text("label,review\n1.0,很好很喜欢\n0.0,太差了\n", encoding="utf-8")
    assert _eval(tiny_model_dir, a)[1].split("kind=")[1] == _eval(tiny_model_dir, b)[1].split("kind=")[1]
    code, out = _eval(tiny_model_dir, tmp_path / "reviews@2024.csv")
    assert code == 1 and "reviews@2024.csv: no such file" in out


def test_a_closed_pipe_is_not_called_a_bug(tiny_model_dir, tmp_path):
    import subprocess
    import sys

    src = tmp_path / "in.txt"
    src.write_text("".join(f"第{i}条，很好\n" for i in range(3000)), encoding="utf-8")
    cmd = (f"{sys.executable} -m emotag.cli score {src} --model {tiny_model_dir} --threads 1 -q 2>{tmp_path / 'err'}"
           " | head -1")
    subprocess.run(cmd, shell=True, check=False, capture_output=True)
    assert "internal error" not in (tmp_path / "err").read_text(encoding="utf-8")


def test_eval_of_a_txt_file_says_it_needs_columns(tiny_model_dir, tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("很好\n", encoding="utf-8")
    code, out = _eval(tiny_model_dir, path)
    assert code == 1 and "a labelled file needs columns" in out


def test_a_damaged_model_config_is_one_line(tmp_path):
    (tmp_path / "config.json").write_text("{bad", encoding="utf-8")
    res = runner.invoke(app, ["info", str(tmp_path)])
    assert res.exit_code == 1 and "config.json: not valid JSON" in res.output


def test_eval_reads_labels_however_they_are_written(tiny_model_dir, tmp_path):
    """1/0 in CSV, 1/0 as JSON numbers, pos/neg and 正面/负面 are the same gold; GBK is read."""
    texts = ["很好很喜欢", "太差了失望", "非常满意", "质量很差"]
    signs = [1, 0, 1, 0]
    outputs = []
    for name, labels, enc in (("a.csv", signs, "utf-8"), ("b.csv", ["pos", "neg", "pos", "neg"], "gbk"),
                              ("c.csv", ["正面", "负面", "正面", "负面"], "utf-8")):
        p = tmp_path / name
        p.write_text("review,label\n" + "".join(f"{t},{lab}\n" for t, lab in zip(texts, labels, strict=True)),
                     encoding=enc)
        outputs.append(_eval(tiny_model_dir, p))
    p = tmp_path / "d.jsonl"
    p.write_text("".join(json.dumps({"review": t, "label": s}, ensure_ascii=False) + "\n"
                         for t, s in zip(texts, signs, strict=True)), encoding="utf-8")
    outputs.append(_eval(tiny_model_dir, p))
    assert all(code == 0 and "kind=polarity" in out for code, out in outputs), outputs
    accs = {out.split("accuracy=")[1].split()[0] for _, out in outputs}
    assert len(accs) == 1, outputs


def test_eval_refuses_what_it_cannot_score(tiny_model_dir, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n", encoding="utf-8")
    code, out = _eval(tiny_model_dir, empty)
    assert code == 1 and "no labelled rows" in out and "Traceback" not in out
    odd = tmp_path / "odd.csv"
    odd.write_text("review,label\n好,maybe\n", encoding="utf-8")
    code, out = _eval(tiny_model_dir, odd)
    assert code == 1 and "row 1" in out and "'maybe'" in out
    sparse = tmp_path / "sparse.jsonl"
    sparse.write_text('{"text": "好开心", "label": "happy"}\n{"text": "气死了"}\n{"text": "难过", "label": "sad"}\n',
                      encoding="utf-8")
    code, out = _eval(tiny_model_dir, sparse)
    assert code == 0 and "kind=smp2020" in out and "n=2" in out, out


def test_eval_taxonomy_by_chinese_names(tiny_model_dir, tmp_path):
    p = tmp_path / "zh.csv"
    p.write_text("text,label\n好开心,高兴\n气死我了,愤怒\n好难过,悲伤\n", encoding="utf-8")
    code, out = _eval(tiny_model_dir, p)
    assert code == 0 and "kind=labels" in out and "n=3" in out, out


def test_profile_store_batches_are_per_file_and_only_when_folded(tiny_model_dir, tmp_path, monkeypatch):
    """Re-running several files into a store is a no-op; a run that folds nothing (a misspelt --user-col)
    or would cut records off (--now) records no batch, so the right run still folds them."""
    from emotag.profiles import ProfileStore

    monkeypatch.setenv("EMOTAG_PSEUDONYM_KEY", "emotag-test-key-0123456789abcdef")
    reviews, posts = tmp_path / "reviews.jsonl", tmp_path / "posts.jsonl"
    for src, dst in ((SAMPLES / "reviews.csv", reviews), (SAMPLES / "posts.jsonl", posts)):
        assert runner.invoke(app, ["score", str(src), "-o", str(dst), "--model", str(tiny_model_dir),
                                   "--keep", "user_id,time", "-q"]).exit_code == 0
    db = tmp_path / "p.db"

    def evidence() -> int:
        with ProfileStore(db) as store:
            return sum(st.n for _, st in store.iter_states())

    res = runner.invoke(app, ["profile", str(reviews), "--store", str(db), "--user-col", "uid"])
    assert res.exit_code == 1 and "no record has a user in column 'uid'" in res.output
    res = runner.invoke(app, ["profile", str(reviews), "--store", str(db), "--now", "2000-01-01"])
    assert res.exit_code == 1 and "after --now" in res.output
    args = ["profile", str(reviews), str(posts), "--store", str(db), "--channels", "review,social"]
    assert runner.invoke(app, args).exit_code == 0
    first = evidence()
    assert first > 100
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and res.output.count("batch already applied") == 2
    assert evidence() == first


# ------------------------------------------------------------------ never lose a row (issue 15)


def _score(tiny_model_dir, *args):
    return runner.invoke(app, ["score", *map(str, args), "--model", str(tiny_model_dir)])


def test_output_that_is_the_input_is_refused(tiny_model_dir, tmp_path):
    """Under any name (the same path, ./, a symlink, a hard link) the input is never overwritten, and a
    resume never appends to it."""
    import os

    src = tmp_path / "s.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": "很好吃"}) + "\n" for i in range(5)), encoding="utf-8")
    before = src.read_bytes()
    (tmp_path / "link.jsonl").symlink_to(src)
    os.link(src, tmp_path / "hard.jsonl")
    for out in (src, f"{tmp_path}/./s.jsonl", tmp_path / "link.jsonl", tmp_path / "hard.jsonl"):
        res = _score(tiny_model_dir, src, "-o", out, "-q")
        assert res.exit_code == 1 and "is the input file" in res.output, (out, res.output)
    (tmp_path / "out.jsonl.partial").symlink_to(src)
    res = _score(tiny_model_dir, src, "-o", tmp_path / "out.jsonl", "--resume", "-q")
    assert res.exit_code == 1 and "out.jsonl.partial: is the input file" in res.output
    assert src.read_bytes() == before
    res = runner.invoke(app, ["report", str(src), "-o", str(tmp_path / "hard.jsonl")])
    assert res.exit_code == 1 and "is the input file" in res.output and src.read_bytes() == before


def test_csv_stray_quote_keeps_every_row(tiny_model_dir, tmp_path):
    """A cell opening with a stray quote must not swallow the rest of the file into one text; the summary
    says how many lines were read, and what the texts were."""
    rows = ["id,text,user_id"] + [f"{i},第{i}条很好吃,u{i}" for i in range(1, 1001)]
    rows[11] = '11,"好评有点少,u11'
    src = tmp_path / "q.csv"
    src.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "q.jsonl"
    res = _score(tiny_model_dir, src, "-o", out, "--keep", "user_id")
    assert res.exit_code == 0, res.output
    got = _jsonl(out)
    assert [g["id"] for g in got] == [str(i) for i in range(1, 1001)]
    assert [g["user_id"] for g in got] == [f"u{i}" for i in range(1, 1001)]
    assert "scored 1000 rows from 1001 lines (0 with errors)" in res.output
    assert "emotions: " in res.output and "polarity: " in res.output


def test_summary_names_the_error_reasons(tiny_model_dir, tmp_path):
    src = tmp_path / "e.jsonl"
    src.write_text('{"text": ""}\n{"text": 5}\n{"text": ""}\n{"text": "很好"}\n', encoding="utf-8")
    res = _score(tiny_model_dir, src, "-o", tmp_path / "e.out.jsonl")
    assert res.exit_code == 0
    assert "errors: text is empty (2), text is not a string (got number) (1)" in res.output


def test_resume_refuses_a_partial_of_another_input_or_options(tiny_model_dir, tmp_path, monkeypatch):
    src, other = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": "很好", "shop": "s"}) + "\n" for i in range(30)),
                   encoding="utf-8")
    other.write_text("".join(json.dumps({"id": 100 + i, "text": "太难吃了"}) + "\n" for i in range(80)),
                     encoding="utf-8")
    out = tmp_path / "out.jsonl"
    _interrupt_after(monkeypatch, 10)
    assert _score(tiny_model_dir, src, "-o", out, "-q").exit_code == 130
    monkeypatch.undo()
    res = _score(tiny_model_dir, other, "-o", out, "--resume", "-q")
    assert res.exit_code == 1 and "cannot resume: it was written from" in res.output and not out.exists()
    res = _score(tiny_model_dir, src, "-o", out, "--resume", "--keep", "shop", "-q")
    assert res.exit_code == 1 and "--keep" in res.output and not out.exists()
    with open(src, "a", encoding="utf-8") as f:
        f.write(json.dumps({"id": 30, "text": "又一条"}) + "\n")
    res = _score(tiny_model_dir, src, "-o", out, "--resume", "-q")
    assert res.exit_code == 1 and "bytes" in res.output
    res = _score(tiny_model_dir, other, "-o", out, "-q")  # without --resume, a fresh run replaces the partial
    assert res.exit_code == 0 and [g["id"] for g in _jsonl(out)] == list(range(100, 180))
    # a partial nobody recorded (copied by hand, older emotag) is not trusted either
    (tmp_path / "x.jsonl.partial").write_text(out.read_text(encoding="utf-8")[:300], encoding="utf-8")
    res = _score(tiny_model_dir, src, "-o", tmp_path / "x.jsonl", "--resume", "-q")
    assert res.exit_code == 1 and "no record of the input" in res.output


def test_keep_of_the_text_column_under_its_own_name_and_report_text_col(tiny_model_dir, tmp_path):
    src = tmp_path / "rv.csv"
    src.write_text("id,review,product\n1,这家外卖很好吃，配送也快,外卖\n2,太难吃了，再也不买,外卖\n",
                   encoding="utf-8")
    out = tmp_path / "rv.jsonl"
    res = _score(tiny_model_dir, src, "-o", out, "--text-col", "review", "--keep", "text", "-q")
    assert res.exit_code == 1 and "--keep review" in res.output and len(res.output.strip().splitlines()) == 1
    assert _score(tiny_model_dir, src, "-o", out, "--text-col", "review", "--keep", "review,product",
                  "-q").exit_code == 0
    assert [r["review"] for r in _jsonl(out)][0] == "这家外卖很好吃，配送也快"
    from emotag.report import collect

    assert not collect([str(out)]).has_text
    assert collect([str(out)], text_col="review").has_text
    pytest.importorskip("matplotlib")
    html = tmp_path / "r.html"
    res = runner.invoke(app, ["report", str(out), "-o", str(html), "--text-col", "review"])
    assert res.exit_code == 0, res.output
    assert "--keep text</code>" not in html.read_text(encoding="utf-8")


def test_a_bug_is_not_dressed_up_as_a_user_error(tiny_model_dir, tmp_path, monkeypatch):
    """A ValueError emotag did not raise on purpose keeps its traceback and says it is a bug; one raised
    for the user stays one line."""
    import emotag.scoring

    def broken(*args, **kwargs):
        return int("not a number")  # a programming error deep in the scorer

    monkeypatch.setattr(emotag.scoring, "score_file", broken)
    res = _score(tiny_model_dir, SAMPLES / "posts.jsonl", "-o", tmp_path / "o.jsonl")
    assert isinstance(res.exception, ValueError) and "internal error" in res.output
    monkeypatch.undo()
    res = runner.invoke(app, ["score-dialogues", str(SAMPLES / "conversations.jsonl"), "--customer", "a",
                              "--agent", "A", "--model", str(tiny_model_dir)])
    assert res.exit_code == 1 and res.output.strip() == "emotag: speaker 'a' is named as both customer and agent"


def test_plain_text_from_stdin_and_txt_files(tiny_model_dir, tmp_path):
    res = runner.invoke(app, ["score", "-", "--model", str(tiny_model_dir)], input="很好吃\n\n太难吃了\n")
    assert res.exit_code == 0, res.output
    got = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
    assert [(g["id"], g["error"]) for g in got] == [(0, None), (1, "text is empty"), (2, None)]
    notes = tmp_path / "notes.txt"
    notes.write_text("很好吃\n太难吃了\n", encoding="utf-8")
    res = _score(tiny_model_dir, notes, "-o", tmp_path / "notes.csv", "-q")
    assert res.exit_code == 0, res.output
    with open(tmp_path / "notes.csv", encoding="utf-8-sig") as f:
        assert [r["id"] for r in csv.DictReader(f)] == ["0", "1"]


def test_new_user_walkthrough(tmp_path):
    """scripts/new_user_walkthrough.sh: the README's commands and the broken files of issue 15, end to end
    with the bundled model, row counts and exit codes checked by the script itself."""
    import os
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "new_user_walkthrough.sh"
    env = {**os.environ, "EMOTAG": f"{sys.executable} -m emotag.cli", "PYTHON": sys.executable}
    r = subprocess.run(["bash", str(script), str(tmp_path / "walk")], capture_output=True, text=True, env=env,
                       timeout=600, cwd=script.parents[1])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "walkthrough: all checks passed" in r.stdout and "FAIL" not in r.stdout + r.stderr


def test_export_warns_when_calibrated_on_a_handful_of_texts(tiny_model_dir, tmp_path):
    import shutil

    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    one = tmp_path / "one.txt"
    one.write_text("物流很快\n", encoding="utf-8")
    res = runner.invoke(app, ["export-onnx", str(model), "--quantize", "int8", "--calibration", str(one)])
    assert res.exit_code == 0, res.output
    assert "only 1 calibration text;" in res.output and (model / "model.int8.onnx").is_file()


@pytest.mark.parametrize("ext", ["csv", "tsv", "jsonl", "parquet", "xlsx"])
def test_kept_json_objects_reach_every_output_format_whole(tiny_model_dir, tmp_path, ext):
    """A kept column of objects whose keys differ row to row used to stop a csv run at the second row:
    flat outputs hold it as one JSON cell, which reads back as the object (and a resume goes on)."""
    from emotag.io import read_records

    src = tmp_path / "in.jsonl"
    metas = [{"a": 1}, {"b": 2}, None, {"a": {"deep": "值"}, "c": [1, 2]}]
    src.write_text("".join(json.dumps({"id": i, "text": "好开心" if i % 2 else "太差了", "meta": m},
                                      ensure_ascii=False) + "\n" for i, m in enumerate(metas)), encoding="utf-8")
    out = tmp_path / f"m.{ext}"
    res = _score(tiny_model_dir, src, "-o", out, "--keep", "meta", "-q")
    assert res.exit_code == 0, res.output
    got = list(read_records(str(out)))
    assert [g["id"] for g in got] == [0, 1, 2, 3] and [g["meta"] for g in got] == metas
    assert all(g["error"] is None for g in got) and not list(tmp_path.glob("*.partial"))


def test_kept_column_of_an_object_then_a_number_keeps_every_row(tiny_model_dir, tmp_path):
    from emotag.io import read_records

    src = tmp_path / "m.jsonl"
    src.write_text('{"id":1,"text":"好开心","meta":{"a":1}}\n{"id":2,"text":"太差了","meta":5}\n', encoding="utf-8")
    out = tmp_path / "m.csv"
    assert _score(tiny_model_dir, src, "-o", out, "--keep", "meta", "-q").exit_code == 0
    assert [g["meta"] for g in read_records(str(out))] == [{"a": 1}, 5]


def _columns(path, ext):
    """The column names of a flat output file, read with the format's own library."""
    if ext in ("csv", "tsv"):
        with open(path, encoding="utf-8-sig", newline="") as f:
            return next(csv.reader(f, delimiter="," if ext == "csv" else "\t"), [])
    if ext == "xlsx":
        import openpyxl

        wb = openpyxl.load_workbook(path, read_only=True)
        try:
            return [c.value for c in next(wb.worksheets[0].rows, ())]
        finally:
            wb.close()
    import pyarrow.parquet as pq

    return list(pq.read_schema(path).names)


@pytest.mark.parametrize("ext", ["csv", "tsv", "parquet", "xlsx"])
def test_a_header_only_input_gives_an_output_with_the_usual_columns(tiny_model_dir, tmp_path, ext):
    """No rows in, no records out, but still a table: the same header a non-empty run writes, which reads
    back (and scores again) instead of failing as 'file is empty'."""
    from emotag import Tagger
    from emotag.io import read_records

    src = tmp_path / "h.csv"
    src.write_text("id,text,shop\n", encoding="utf-8")
    out = tmp_path / f"h.out.{ext}"
    res = _score(tiny_model_dir, src, "-o", out, "--keep", "shop", "-q")
    assert res.exit_code == 0, res.output
    assert list(read_records(str(out))) == []
    columns = _columns(out, ext)
    labels = Tagger.load(tiny_model_dir).emotion_labels
    assert columns[:2] == ["id", "emotion"] and columns[-1] == "shop"
    assert [c for c in columns if c.startswith("emotions.")] == [f"emotions.{e}" for e in labels]
    full = tmp_path / "full.csv"
    full.write_text("id,text,shop\n1,好开心,a\n", encoding="utf-8")
    assert _score(tiny_model_dir, full, "-o", tmp_path / f"full.out.{ext}", "--keep", "shop", "-q").exit_code == 0
    assert _columns(tmp_path / f"full.out.{ext}", ext) == columns
    again = _score(tiny_model_dir, out, "-o", tmp_path / "again.jsonl", "--text-col", "emotion", "-q")
    assert again.exit_code == 0, again.output


def test_an_all_error_parquet_output_types_the_emotion_columns_as_scored_outputs_do(tiny_model_dir, tmp_path):
    """An output with no scored row (every text empty, or no rows at all) typed every column as text, so
    reading it together with a scored part (a dataset union, Spark) failed on string vs double. The
    template's 0.0 per label and for polarity_score/intensity types those columns as float either way; its
    "" placeholders (ids, kept columns) still type nothing, so a scored output's types are what they were."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from emotag import Tagger

    labels = Tagger.load(tiny_model_dir).emotion_labels
    emotion_cols = [f"emotions.{e}" for e in labels]
    inputs = {"ok": "id,text,shop\n1,好开心,a\n2,太差了,b\n", "errors": "id,text,shop\n1,,a\n2,   ,b\n",
              "empty": "id,text,shop\n"}
    schemas = {}
    for name, text in inputs.items():
        src = tmp_path / f"{name}.csv"
        src.write_text(text, encoding="utf-8")
        res = _score(tiny_model_dir, src, "-o", tmp_path / f"{name}.parquet", "--keep", "shop", "-q")
        assert res.exit_code == 0, res.output
        schemas[name] = pq.read_schema(tmp_path / f"{name}.parquet")
    ok = schemas["ok"]
    assert {c: ok.field(c).type for c in ("emotion", "polarity", "polarity_score", "intensity", "error", "shop")} == {
        "emotion": pa.string(), "polarity": pa.string(), "polarity_score": pa.float64(),
        "intensity": pa.float64(), "error": pa.string(), "shop": pa.string()}
    numbers = emotion_cols + ["polarity_score", "intensity"]
    for name in ("ok", "errors", "empty"):
        assert [schemas[name].field(c).type for c in numbers] == [pa.float64()] * len(numbers), name
    assert pq.read_table(tmp_path / "errors.parquet").column("emotions." + labels[0]).null_count == 2
    assert pq.read_table(tmp_path / "errors.parquet").column("polarity_score").null_count == 2
    # the number columns of a scored part and an all-error part now merge
    merged = pa.unify_schemas([pa.schema([ok.field(c) for c in numbers]),
                               pa.schema([schemas["errors"].field(c) for c in numbers])])
    assert [f.type for f in merged] == [pa.float64()] * len(numbers)
