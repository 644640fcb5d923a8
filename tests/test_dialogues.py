"""Conversations whose speakers are names (TV scripts, CPED exports, chat logs): who the customer is."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from emotag.cli import app
from emotag.dialogues import Speakers

runner = CliRunner()

SCRIPT = [
    {"id": "d1", "turns": [{"speaker": "于春晓", "text": "怎么了，撞车了吗"}, {"speaker": "戴娜", "text": "撞你个头"},
                           {"speaker": "于春晓", "text": "太好了，没事就好"}]},
    {"id": "d2", "turns": [{"speaker": "戴娜", "text": "我这堵着车"}, {"speaker": " 于春晓 ", "text": "真烦人"}]},
]


@pytest.fixture()
def script(tmp_path):
    path = tmp_path / "script.jsonl"
    path.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in SCRIPT), encoding="utf-8")
    return path


def _run(tiny_model_dir, script, out, *extra):
    return runner.invoke(app, ["score-dialogues", str(script), "-o", str(out), "--model", str(tiny_model_dir),
                               *extra])


def test_named_speakers_without_a_role_fail_the_run_and_say_the_fix(tiny_model_dir, script, tmp_path):
    res = _run(tiny_model_dir, script, tmp_path / "o.jsonl", "-q")
    assert res.exit_code == 1
    last = res.output.strip().splitlines()[-1]
    assert "every conversation failed: no scorable customer turn" in last
    assert "于春晓" in last and "戴娜" in last and "--customer" in last and "--agent" in last


@pytest.mark.parametrize("option", [["--customer", "于春晓"], ["--agent", "戴娜"], ["--agent", "戴娜,王经理"]])
def test_customer_or_agent_names_pick_the_customer_turns(tiny_model_dir, script, tmp_path, option):
    out = tmp_path / "o.jsonl"
    res = _run(tiny_model_dir, script, out, *option, "-q")
    assert res.exit_code == 0, res.output
    d1, d2 = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert d1["error"] is None and [t["id"] for t in d1["turns"]] == [0, 2]  # 于春晓's turns only
    assert d2["error"] is None and [t["id"] for t in d2["turns"]] == [1]  # names match ignoring spaces


def test_speakers_rules():
    default = Speakers()
    assert default.is_customer("Customer") and not default.is_customer("agent") and not default.is_customer(None)
    agents = Speakers.from_names(agent=["客服小王", ""])
    assert agents.is_customer("顾客") and not agents.is_customer("客服小王") and not agents.is_customer("")
    assert Speakers.from_names(["", " "], [""]) == Speakers()
    with pytest.raises(ValueError, match="both customer and agent"):
        Speakers.from_names(["Ann"], ["ann"])


def test_flat_tables_group_turns_by_conversation_id_wherever_they_stand():
    """An export sorted by time interleaves its conversations: each id is still one conversation, in the
    order ids first appear (grouping consecutive rows cut them into fragments with repeated ids)."""
    from emotag.dialogues import conversations_from_records

    rows = [{"conversation_id": c, "speaker": s, "text": t} for c, s, t in [
        ("a", "customer", "我的快递丢了"), ("b", "customer", "请问怎么退货"), ("a", "agent", "马上补发"),
        ("b", "agent", "点击退货"), ("a", "customer", "好的谢谢"), (1, "customer", "一号"), ("b", "customer", "666")]]
    nested = {"id": "n", "turns": [{"speaker": "customer", "text": "还行"}]}
    convs = list(conversations_from_records([*rows[:3], nested, *rows[3:]]))
    assert [c.id for c in convs] == ["n", "a", "b", 1]
    assert all("id" not in t for c in convs[1:] for t in c.turns)  # no id column: the position is the id
    assert [[t["text"] for t in c.turns] for c in convs[1:]] == [
        ["我的快递丢了", "马上补发", "好的谢谢"], ["请问怎么退货", "点击退货", "666"], ["一号"]]


def test_number_cells_of_an_xlsx_turn_table_are_words(tiny_model_dir, tmp_path):
    """Excel stores a turn reading 666 as a number; it is the words the customer typed, as in csv."""
    openpyxl = pytest.importorskip("openpyxl")
    wb = openpyxl.Workbook()
    ws = wb.active
    for row in (["conversation_id", "speaker", "text"], ["a", "customer", 666], ["a", "agent", "好的"]):
        ws.append(row)
    wb.save(tmp_path / "flat.xlsx")
    res = CliRunner().invoke(app, ["score-dialogues", str(tmp_path / "flat.xlsx"), "--model", str(tiny_model_dir),
                                   "-q"])
    assert res.exit_code == 0, res.output
    (conv,) = [json.loads(line) for line in res.output.splitlines() if line.startswith("{")]
    assert conv["error"] is None and conv["turns"][0]["error"] is None


@pytest.mark.parametrize(("header", "row", "missing"), [
    ("conversation_id,speaker,time", "a,customer,2024-05-01", "'text'"),
    ("conversation_id,text", "a,你好", "'speaker'")])
def test_a_flat_table_without_a_turn_column_says_which(tiny_model_dir, tmp_path, header, row, missing):
    path = tmp_path / "flat.csv"
    path.write_text(f"{header}\n{row}\n", encoding="utf-8")
    res = CliRunner().invoke(app, ["score-dialogues", str(path), "--model", str(tiny_model_dir), "-q"])
    assert res.exit_code == 1 and f"flat turn table has no {missing} column" in res.output


def test_a_flat_tables_id_column_names_its_turns(tiny_model_dir, tmp_path):
    path = tmp_path / "flat.csv"
    path.write_text("conversation_id,id,speaker,text\nc,t1,customer,快递太慢了\nc,t2,agent,抱歉\nc,t3,customer,好吧\n",
                    encoding="utf-8")
    res = CliRunner().invoke(app, ["score-dialogues", str(path), "--model", str(tiny_model_dir), "-q"])
    assert res.exit_code == 0, res.output
    (conv,) = [json.loads(line) for line in res.output.splitlines() if line.startswith("{")]
    assert [t["id"] for t in conv["turns"]] == ["t1", "t3"]


def test_a_jsonl_turn_without_text_stays_in_its_conversation():
    """A flat JSONL line may leave a key out (a system event without text): it is a turn of its conversation,
    not a conversation of its own with a claim that the table lacks the column."""
    from emotag.dialogues import conversations_from_records

    rows = [{"conversation_id": "a", "speaker": "customer", "text": "快递丢了"},
            {"conversation_id": "a", "speaker": "system"},
            {"conversation_id": "a", "speaker": "customer", "text": "好的"}]
    (conv,) = list(conversations_from_records(rows))
    assert conv.error is None and len(conv.turns) == 3


def test_flat_rows_without_a_conversation_id_are_error_records_of_their_own(tiny_model_dir, tmp_path):
    """Rows with an empty conversation_id were merged into one conversation `id: null` and scored as one
    dialogue. Each is now an error record in its place (nothing lost, counted in the summary), in the order of
    the table (an error record was written before every flat conversation, whatever its row)."""
    from emotag.dialogues import conversations_from_records

    rows = [{"conversation_id": c, "speaker": "customer", "text": t}
            for c, t in [(None, "快递丢了"), ("a", "怎么退货"), ("", "太慢了"), ("  ", "还行"), (float("nan"), "好")]]
    convs = list(conversations_from_records(rows))
    # in the table's order: an error record stands where its row stood among the conversations' first rows
    assert [(c.id, c.error) for c in convs] == [(0, "no conversation_id"), ("a", None), (2, "no conversation_id"),
                                               (3, "no conversation_id"), (4, "no conversation_id")]

    path = tmp_path / "flat.csv"
    path.write_text("conversation_id,speaker,text\n,customer,快递丢了\nc,customer,怎么退货\n,customer,太慢了\n"
                    "c,customer,好的谢谢\n", encoding="utf-8")
    out = tmp_path / "o.jsonl"
    res = CliRunner().invoke(app, ["score-dialogues", str(path), "-o", str(out), "--model", str(tiny_model_dir)])
    assert res.exit_code == 0, res.output
    assert "scored 3 conversations (2 with errors)" in res.output
    got = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(c["id"], c["error"]) for c in got] == [(0, "no conversation_id"), ("c", None), (2, "no conversation_id")]
    assert len(got[1]["turns"]) == 2


def test_every_row_without_a_conversation_id_fails_the_run_in_one_line(tiny_model_dir, tmp_path):
    path = tmp_path / "flat.csv"
    path.write_text("conversation_id,speaker,text\n,customer,快递丢了\n,agent,抱歉\n", encoding="utf-8")
    res = CliRunner().invoke(app, ["score-dialogues", str(path), "-o", str(tmp_path / "o.jsonl"), "-q",
                                   "--model", str(tiny_model_dir)])
    assert res.exit_code == 1 and res.output.strip().endswith("every conversation failed: no conversation_id")


def test_resolved_is_null_when_one_customer_turn_cannot_show_a_change(tiny_model_dir, tmp_path):
    """SPEC §3: resolved = the customer's emotion improved from the first turn to the last. One customer turn
    has no first and last to compare: null (cannot tell), where it used to be false (counted unresolved)."""
    convs = [{"id": "one", "turns": [{"speaker": "customer", "text": "快递丢了，气死了"}, {"speaker": "agent", "text": "抱歉"}]},
             {"id": "two", "turns": [{"speaker": "customer", "text": "快递丢了，气死了"}, {"speaker": "agent", "text": "补发"},
                                     {"speaker": "customer", "text": "好的，谢谢，太好了"}]}]
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in convs), encoding="utf-8")
    out = tmp_path / "o.jsonl"
    res = _run(tiny_model_dir, path, out, "-q")
    assert res.exit_code == 0, res.output
    one, two = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert one["error"] is None and one["satisfaction"] is not None and one["resolved"] is None
    assert two["error"] is None and isinstance(two["resolved"], bool)


def test_turns_are_read_in_the_order_of_their_times():
    """SPEC §3 compares the first customer turn with the last. A newest-first export (a ticket system's
    list) swapped them: start and end emotion, resolved and the satisfaction features read the conversation
    backwards. With every turn timed, the turns are read by time (ids stay their file positions); one turn
    without a readable time leaves the file's order."""
    from emotag import Tagger
    from emotag.dialogues import Conversation, score_conversations, turn_order

    said = [{"speaker": "customer", "text": "快递丢了，气死我了", "time": "2025-03-01 10:00"},
            {"speaker": "agent", "text": "抱歉，马上补发", "time": "2025-03-01 10:03"},
            {"speaker": "customer", "text": "收到了，谢谢，太好了", "time": "2025-03-01 10:05"}]
    newest_first = said[::-1]
    assert turn_order(newest_first) == [2, 1, 0]
    assert turn_order(said) == [0, 1, 2]
    assert turn_order([*said[:2], {**said[2], "time": "下午"}][::-1]) == [0, 1, 2]  # half a clock: file order

    tagger = Tagger.load()
    fwd, back = score_conversations(tagger, [Conversation("a", said, None), Conversation("b", newest_first, None)])
    for key in ("satisfaction", "start_emotion", "end_emotion", "resolved", "time"):
        assert fwd[key] == back[key], key
    assert fwd["start_emotion"] == "anger" and fwd["resolved"] is True
    assert [t["time"] for t in back["turns"]] == [t["time"] for t in fwd["turns"]] == ["2025-03-01 10:00", "2025-03-01 10:05"]
    assert [t["id"] for t in back["turns"]] == [2, 0]  # positions in the file, read in time order
