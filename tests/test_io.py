"""emotag.io: every format round-trips, encodings are sniffed, bad input fails in one line, runs resume."""

from __future__ import annotations

import csv
import inspect
import io
import json
import math
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from emotag.io import (
    FORMATS,
    InputError,
    InputRow,
    ReadStats,
    RecordWriter,
    count_rows,
    detect_format,
    read_records,
    read_rows,
)

LABELS = ("neutral", "like", "happiness", "sadness", "anger", "disgust", "fear", "surprise")
TEXTS = [
    "这款面膜真的很好用，超赞！",
    '他说"还行"，\n但是物流太慢了',
    "=SUM(A1) 不是公式",
    "質量很差，很後悔",
    "😀 好开心\t制表符",
]


def _record(i: int) -> dict[str, Any]:
    """An output record as the scorer makes it; every third one is a failed row with null results."""
    if i % 3 == 0:
        return {
            "id": i,
            "emotion": None,
            "emotions": None,
            "polarity": None,
            "polarity_score": None,
            "intensity": None,
            "error": "text is empty",
            "user": f"用户{i}",
            "text": None,
        }
    probs = [((i + k) % 7 + 1) / 37 for k in range(len(LABELS))]
    total = sum(probs)
    return {
        "id": i,
        "emotion": "like",
        "emotions": {label: p / total for label, p in zip(LABELS, probs, strict=True)},
        "polarity": "positive",
        "polarity_score": -1 / 3 if i % 2 else 0.1 + i / 1e6,
        "intensity": 1e-05 * i,
        "error": None,
        "user": f"用户{i}",
        "text": TEXTS[i % len(TEXTS)],
    }


def _same(got: Any, want: Any, exact: bool) -> bool:
    """Deep equality; floats to 1e-15 relative where the format cannot hold all 17 digits (xlsx)."""
    if isinstance(want, dict):
        return (
            isinstance(got, dict)
            and got.keys() == want.keys()
            and all(_same(got[k], want[k], exact) for k in want)
        )
    if isinstance(want, float) and not exact:
        return isinstance(got, (int, float)) and math.isclose(got, want, rel_tol=1e-15, abs_tol=1e-300)
    return type(got) is type(want) and bool(got == want)


def _write(path: Path, records: list[dict[str, Any]], **kw: Any) -> None:
    with RecordWriter(str(path), **kw) as w:
        w.write_many(records[: len(records) // 2])
        for r in records[len(records) // 2 :]:
            w.write(r)


# --------------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_every_format(tmp_path: Path, fmt: str) -> None:
    records = [_record(i) for i in range(12)]
    out = tmp_path / f"scores.{fmt}"
    _write(out, records)
    assert out.exists()
    assert not (tmp_path / f"scores.{fmt}.partial").exists()
    back = list(read_records(str(out)))
    assert len(back) == len(records)
    for got, want in zip(back, records, strict=True):
        assert _same(got, want, exact=fmt != "xlsx"), (got, want)


def _header(out: Path, fmt: str) -> list[Any]:
    """The column names a flat output file holds, read with another tool than emotag's own reader."""
    if fmt in ("csv", "tsv"):
        with open(out, encoding="utf-8-sig", newline="") as f:
            return next(csv.reader(f, delimiter="," if fmt == "csv" else "\t"), [])
    if fmt == "xlsx":
        import openpyxl

        wb = openpyxl.load_workbook(out, read_only=True)
        try:
            return [c.value for c in next(wb.worksheets[0].rows, ())]
        finally:
            wb.close()
    import pyarrow.parquet as pq

    return list(pq.read_schema(out).names)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "xlsx", "parquet"])
def test_flat_formats_spread_nested_dicts_over_columns(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"scores.{fmt}"
    _write(out, [_record(i) for i in range(4)])  # the first record has emotions=None: columns still right
    header = _header(out, fmt)
    assert header == [
        "id",
        "emotion",
        *(f"emotions.{k}" for k in LABELS),
        "polarity",
        "polarity_score",
        "intensity",
        "error",
        "user",
        "text",
    ]


def test_csv_is_excel_friendly_and_floats_exact(tmp_path: Path) -> None:
    out = tmp_path / "s.csv"
    _write(out, [{"id": 1, "p": 1 / 3, "emotions": {"like": 0.1 + 0.2}}])
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # BOM: Excel shows Chinese correctly
    assert repr(1 / 3).encode() in raw
    assert list(read_records(str(out))) == [{"id": 1, "p": 1 / 3, "emotions": {"like": 0.1 + 0.2}}]


def test_xlsx_keeps_formula_like_text_as_text_and_long_ids_exact(tmp_path: Path) -> None:
    import openpyxl

    out = tmp_path / "s.xlsx"
    _write(out, [{"id": 4_514_223_451_234_567_890, "text": "=1+1"}])
    row = [c for c in openpyxl.load_workbook(out).active[2]]
    assert [c.data_type for c in row] == ["s", "s"]
    assert list(read_records(str(out))) == [{"id": "4514223451234567890", "text": "=1+1"}]


def test_json_default_handles_numpy_and_dates(tmp_path: Path) -> None:
    import datetime

    import numpy as np

    out = tmp_path / "s.jsonl"
    _write(
        out, [{"a": np.float32(0.5), "b": np.int64(3), "c": datetime.date(2024, 5, 1), "d": np.float64(0.25)}]
    )
    assert list(read_records(str(out))) == [{"a": 0.5, "b": 3, "c": "2024-05-01", "d": 0.25}]
    csv_out = tmp_path / "s.csv"
    _write(csv_out, [{"d": np.float64(0.25)}])
    assert "0.25" in csv_out.read_text(encoding="utf-8-sig")


@pytest.mark.parametrize("fmt", ["csv", "tsv", "xlsx", "parquet"])
def test_an_output_without_records_still_has_the_templates_columns(tmp_path: Path, fmt: str) -> None:
    """A header-only input scores to no records; its output must still be a table that reads back (a csv
    holding only a BOM is refused as 'file is empty'), with the columns a non-empty run would have."""
    out = tmp_path / f"none.{fmt}"
    template = {"id": "", "emotion": "", "emotions": dict.fromkeys(LABELS, 0.0), "error": "", "shop": ""}
    with RecordWriter(str(out), template=template):
        pass
    assert _header(out, fmt) == ["id", "emotion", *(f"emotions.{k}" for k in LABELS), "error", "shop"]
    assert list(read_records(str(out))) == []
    with RecordWriter(str(tmp_path / "bare.csv")):  # no template: nothing to say, and no made-up columns
        pass
    assert list(read_records(str(tmp_path / "bare.csv"))) == []


@pytest.mark.parametrize("fmt", ["csv", "tsv", "xlsx", "parquet"])
def test_template_scalars_are_never_spread_over_columns(tmp_path: Path, fmt: str) -> None:
    """A kept input column may hold objects whose keys differ row to row (or an object, then a number):
    a column the template shows as one value stays one JSON cell, so no later row can fail to fit."""
    out = tmp_path / f"kept.{fmt}"
    metas = [{"a": 1}, {"b": [2, 3]}, None, {"a": {"deep": "值"}}]
    with RecordWriter(str(out), template={"id": "", "meta": ""}) as w:
        for i, m in enumerate(metas):
            w.write({"id": i, "meta": m})
    assert _header(out, fmt) == ["id", "meta"]
    assert [r["meta"] for r in read_records(str(out))] == metas


def test_records_that_do_not_fit_the_columns_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="surprise"), RecordWriter(str(tmp_path / "s.csv")) as w:
        w.write({"id": 0, "emotions": {"like": 1.0}})
        w.write({"id": 1, "emotions": {"like": 0.5, "surprise": 0.5}})


def test_stdout_is_jsonl(capsys: pytest.CaptureFixture[str]) -> None:
    with RecordWriter("-") as w:
        assert w.partial_path is None
        w.write_many([{"id": 1, "text": "中文"}])
        w.write({"id": 2, "emotions": {"like": 0.5}})
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == [
        {"id": 1, "text": "中文"},
        {"id": 2, "emotions": {"like": 0.5}},
    ]


def test_writer_reports_bad_output_paths(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        RecordWriter(str(tmp_path / "missing" / "out.csv"))
    with pytest.raises(InputError, match=r"out\.xlsy: unknown format"):
        RecordWriter(str(tmp_path / "out.xlsy"))


# ------------------------------------------------------------------------------------------------ encodings


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk", "gb18030", "utf-16"])
def test_csv_encodings_are_detected(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / f"in-{encoding}.csv"
    texts = ["今天好开心", "质量很差，客服态度也差", "东西很好，下次还来"] * 5
    if encoding == "gb18030":
        texts.append("𠀀 扩展区汉字")  # only GB18030 (not GBK) can encode this
    with open(path, "w", encoding=encoding, newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "店铺"])
        w.writerows([i, t, "旗舰店"] for i, t in enumerate(texts))
    rows = list(read_rows(str(path), keep=["店铺"]))
    assert [r.text for r in rows] == texts
    assert [r.id for r in rows] == [str(i) for i in range(len(texts))]
    assert all(r.error is None and r.extra == {"店铺": "旗舰店"} for r in rows)


def test_gbk_after_a_long_ascii_head_is_still_gbk(tmp_path: Path) -> None:
    path = tmp_path / "late.csv"
    with open(path, "wb") as f:
        f.write(b"id,text\n" + b"".join(f"{i},plain ascii review {i}\n".encode() for i in range(5000)))
        f.write("5000,最后一条是中文\n".encode("gbk"))
    assert list(read_rows(str(path)))[-1].text == "最后一条是中文"


def test_undecodable_bytes_spoil_only_their_row(tmp_path: Path) -> None:
    path = tmp_path / "damaged.csv"
    good = "这个产品质量很不错，物流也快".encode()
    path.write_bytes(
        b"id,text\n" + b"".join(b"%d,%s\n" % (i, good) for i in range(5)) + b"5,\xe5\x9d\n6," + good + b"\n"
    )
    rows = list(read_rows(str(path)))
    assert [r.error for r in rows] == [None] * 5 + ["text has bytes that are not valid utf-8", None]
    assert rows[6].text == good.decode()


# ------------------------------------------------------------------------------------------------- bad input


def _one_line_error(call: Any, *fragments: str) -> str:
    with pytest.raises(InputError) as info:
        call()
    msg = str(info.value)
    assert "\n" not in msg
    for fragment in fragments:
        assert fragment in msg, msg
    return msg


def test_input_errors_name_the_file(tmp_path: Path) -> None:
    csv_path = tmp_path / "reviews.csv"
    csv_path.write_text("id,content\n1,好\n", encoding="utf-8")
    jsonl = tmp_path / "reviews.jsonl"
    jsonl.write_text('{"content": "好"}\n', encoding="utf-8")
    _one_line_error(lambda: read_rows(str(csv_path)), "reviews.csv", "column 'text' is missing", "content")
    _one_line_error(lambda: read_rows(str(jsonl)), "reviews.jsonl", "column 'text' is missing", "content")
    _one_line_error(
        lambda: read_rows(str(csv_path), text_col="content", id_col="uid"), "reviews.csv", "'uid'"
    )
    _one_line_error(
        lambda: read_rows(str(csv_path), text_col="content", keep=["shop"]), "reviews.csv", "'shop'"
    )
    _one_line_error(
        lambda: read_rows(str(tmp_path / "data.xlsy")),
        "data.xlsy: unknown format '.xlsy' (expected csv, tsv, jsonl, json, parquet, xlsx; txt as input)",
    )
    _one_line_error(lambda: read_rows(str(tmp_path)), str(tmp_path), "is a directory; name a file")
    _one_line_error(lambda: read_rows(str(tmp_path / "nope.csv")), "nope.csv", "file not found")
    _one_line_error(lambda: read_rows(str(tmp_path / "nope.parquet")), "nope.parquet", "file not found")
    (tmp_path / "empty.csv").write_bytes(b"")
    _one_line_error(lambda: read_rows(str(tmp_path / "empty.csv")), "empty.csv", "empty")
    (tmp_path / "fake.parquet").write_text("not parquet")
    _one_line_error(lambda: read_rows(str(tmp_path / "fake.parquet")), "fake.parquet", "parquet")
    (tmp_path / "fake.xlsx").write_text("not a workbook")
    _one_line_error(lambda: read_rows(str(tmp_path / "fake.xlsx")), "fake.xlsx", "xlsx")


def test_input_error_format() -> None:
    assert str(InputError("reviews.csv", "column 'text' is missing", row=17)) == (
        "reviews.csv, row 17: column 'text' is missing"
    )
    assert str(InputError("-", "bad\nthing")) == "<stdin>: bad thing"


def test_detect_format() -> None:
    assert [detect_format(f"a.{f}") for f in FORMATS] == list(FORMATS)
    assert detect_format("-") == "jsonl"
    assert detect_format("DATA.CSV") == "csv"
    with pytest.raises(InputError, match="no file extension"):
        detect_format("reviews_export")


def test_malformed_jsonl_line_becomes_an_error_row(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(
        '{"id": "a", "text": "好评", "shop": 1}\n{"id": "b", "text": "断了\n\n[1, 2]\n{"text": 5}\n'
        '{"id": "e", "text": "  "}\n{"id": "f"}\n{"id": "g", "text": "最后"}\n',
        encoding="utf-8",
    )
    rows = list(read_rows(str(path), keep=["shop"]))
    assert [r.index for r in rows] == list(range(7))
    assert [r.id for r in rows] == ["a", 1, 2, 3, "e", "f", "g"]
    assert [r.text for r in rows] == ["好评", None, None, None, None, None, "最后"]
    assert rows[0].extra == {"shop": 1} and rows[6].extra == {"shop": None}
    errors = [r.error for r in rows]
    assert errors[0] is None and errors[6] is None
    assert errors[1].startswith("invalid JSON")
    assert errors[2:6] == [
        "expected a JSON object, got array",
        "text is not a string (got number)",
        "text is empty",
        "text is missing",
    ]


def test_jsonl_that_is_not_json_at_all_fails_up_front(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("id,text\n1,好\n", encoding="utf-8")
    _one_line_error(lambda: read_rows(str(path)), "in.jsonl", "no JSON object")


def test_csv_row_problems(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text('id,text\n1,好,多了一列\n2,"引号,逗号"\n\n3\n,没有id\n', encoding="utf-8")
    rows = list(read_rows(str(path)))
    assert [(r.id, r.text) for r in rows] == [("1", None), ("2", "引号,逗号"), ("3", None), (3, "没有id")]
    assert "3 fields" in rows[0].error and rows[2].error == "text is missing"


def test_json_array_and_single_object(tmp_path: Path) -> None:
    arr = tmp_path / "a.json"
    arr.write_text(
        json.dumps([{"id": 7, "text": "一"}, {"text": "二"}], ensure_ascii=False, indent=2), "utf-8"
    )
    assert [(r.id, r.text) for r in read_rows(str(arr))] == [(7, "一"), (1, "二")]
    one = tmp_path / "o.json"
    one.write_text(json.dumps({"text": "单个"}, ensure_ascii=False, indent=2), "utf-8")
    assert [r.text for r in read_rows(str(one))] == ["单个"]
    lines = tmp_path / "l.json"
    lines.write_text('{"text": "甲"}\n{"text": "乙"}\n', "utf-8")
    assert [r.text for r in read_rows(str(lines))] == ["甲", "乙"]
    assert count_rows(str(arr)) == 2 and count_rows(str(lines)) == 2


def test_parquet_and_xlsx_inputs(tmp_path: Path) -> None:
    import openpyxl
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table(
            {
                "id": [10, 11, 12, 13, 14],
                "text": ["好", None, "差", "中", "末"],
                "shop": ["a", "b", "c", "d", "e"],
            }
        ),
        tmp_path / "in.parquet",
        row_group_size=2,
    )
    rows = list(read_rows(str(tmp_path / "in.parquet"), keep=["shop"]))
    assert [(r.index, r.id, r.text, r.error) for r in rows][:2] == [
        (0, 10, "好", None),
        (1, 11, None, "text is null"),
    ]
    assert [
        (r.index, r.id, r.extra["shop"])
        for r in read_rows(str(tmp_path / "in.parquet"), keep=["shop"], skip=3)
    ] == [(3, 13, "d"), (4, 14, "e")]
    assert count_rows(str(tmp_path / "in.parquet")) == 5
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "num.parquet")
    _one_line_error(lambda: read_rows(str(tmp_path / "num.parquet")), "num.parquet", "not text")

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["id", "text"])
    ws.append([1, "今天"])
    ws.append([2, 666])  # Excel stores a review "666" as a number
    ws.append([None, None])
    ws.append([4, None])
    wb.save(tmp_path / "in.xlsx")
    rows = list(read_rows(str(tmp_path / "in.xlsx")))
    assert [(r.id, r.text, r.error) for r in rows] == [
        (1, "今天", None),
        (2, "666", None),
        (4, None, "text is empty"),
    ]


def test_stdin_is_jsonl(monkeypatch: pytest.MonkeyPatch) -> None:
    data = '{"id": 1, "text": "标准输入"}\nnot json\n'.encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
    rows = list(read_rows("-"))
    assert [(r.id, r.text) for r in rows] == [(1, "标准输入"), (1, None)]
    assert rows[1].error.startswith("invalid JSON")
    assert count_rows("-") is None


# ------------------------------------------------------------------------------------------- skip and counts


def test_skip(tmp_path: Path) -> None:
    texts = [f"第{i}条" for i in range(10)]
    csv_path = tmp_path / "in.csv"
    csv_path.write_text("text\n" + "\n".join(texts) + "\n", encoding="utf-8")
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), "utf-8")
    for path in (csv_path, jsonl):
        rows = list(read_rows(str(path), skip=7))
        assert [(r.index, r.id, r.text) for r in rows] == [(i, i, texts[i]) for i in range(7, 10)]
        assert list(read_rows(str(path), skip=50)) == []


def test_count_rows(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text('id,text\n1,"两行\n的评论"\n2,"带""引号"""\n\n3,普通\n', encoding="utf-8")
    assert count_rows(str(path)) == 3 == len(list(read_rows(str(path))))


# ------------------------------------------------------------------------------------------------- resume


@pytest.mark.parametrize("fmt", FORMATS)
def test_crash_then_resume(tmp_path: Path, fmt: str) -> None:
    records = [_record(i) for i in range(9)]
    out = tmp_path / f"scores.{fmt}"
    partial = tmp_path / f"scores.{fmt}.partial"
    with pytest.raises(RuntimeError), RecordWriter(str(out)) as w:
        w.write_many(records[:3])
        w.write(records[3])
        w.write(records[4])
        raise RuntimeError("crash")
    assert partial.exists() and not out.exists()

    with open(partial, "ab") as f:  # the crash tore the record being written
        f.write(b'9,"half a rec' if fmt in ("csv", "tsv") else b'{"id": 9, "emo')
    with RecordWriter(str(out), resume=True) as w:
        assert w.rows_done == 5
        w.write_many(records[5:])
    assert out.exists() and not partial.exists()
    back = list(read_records(str(out)))
    assert [r["id"] for r in back] == list(range(9))
    assert all(_same(g, r, exact=fmt != "xlsx") for g, r in zip(back, records, strict=True))


def test_torn_quoted_csv_record_is_dropped(tmp_path: Path) -> None:
    out = tmp_path / "s.csv"
    _write(out, [{"id": 0, "text": "一"}])
    (tmp_path / "t.csv.partial").write_bytes(out.read_bytes() + b'1,"multi\nline but never closed\n')
    with RecordWriter(str(tmp_path / "t.csv"), resume=True) as w:
        assert w.rows_done == 1
        w.write({"id": 1, "text": "二\n行"})
    assert list(read_records(str(tmp_path / "t.csv"))) == [
        {"id": 0, "text": "一"},
        {"id": 1, "text": "二\n行"},
    ]


def test_resume_without_partial_starts_fresh_and_fresh_run_overwrites_partial(tmp_path: Path) -> None:
    out = tmp_path / "s.jsonl"
    with RecordWriter(str(out), resume=True) as w:
        assert w.rows_done == 0
        w.write({"id": 1})
    (tmp_path / "s.jsonl.partial").write_text('{"id": "stale"}\n')
    with RecordWriter(str(out)) as w:
        assert w.rows_done == 0
        w.write({"id": 2})
    assert list(read_records(str(out))) == [{"id": 2}]


def test_resume_after_crash_before_columns_were_known(tmp_path: Path) -> None:
    """csv holds records back until it knows which keys are dicts; a crash still leaves them on disk."""
    out = tmp_path / "s.csv"
    failed = _record(0)
    with pytest.raises(KeyboardInterrupt), RecordWriter(str(out)) as w:
        w.write(failed)
        raise KeyboardInterrupt
    with RecordWriter(str(out), resume=True) as w:
        assert w.rows_done == 1
        w.write(_record(1))
    back = list(read_records(str(out)))
    assert back[0] == failed and _same(back[1], _record(1), exact=True)


# ---------------------------------------------------------------------------------------------- streaming


def test_read_rows_streams_a_big_csv(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    n = 200_000
    line = "这是一条用来测试流式读取的评论，质量很好，推荐购买"
    with open(path, "w", encoding="utf-8") as f:
        f.write("id,text,shop\n")
        f.writelines(f"{i},{line}{i},店{i % 10}\n" for i in range(n))
    rows = read_rows(str(path), keep=["shop"])
    assert inspect.isgenerator(rows)
    tracemalloc.start()
    try:
        count = 0
        last: InputRow | None = None
        for row in rows:
            count += 1
            last = row
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == n and last is not None and last.text == f"{line}{n - 1}"
    assert peak < 50 * 1024 * 1024, peak  # all rows held at once would take several hundred MB


def test_tsv_stray_quote_does_not_swallow_later_rows(tmp_path: Path) -> None:
    """一个"好评 opens a csv quote that never closes: every later line must still be its own row."""
    path = tmp_path / "stray.tsv"
    path.write_text('id\ttext\n1\t好开心\n2\t"引号坏\n3\t一般\n4\t"他说""好"""\n5\t有个"字\n6\t正常\n',
                    encoding="utf-8")
    rows = list(read_rows(str(path), id_col="id"))
    assert [r.id for r in rows] == ["1", "2", "3", "4", "5", "6"]
    assert [r.text for r in rows] == ["好开心", '"引号坏', "一般", '他说"好"', '有个"字', "正常"]
    assert all(r.error is None for r in rows)


def test_tsv_quoted_multiline_cell_still_reads(tmp_path: Path) -> None:
    """A properly quoted TSV cell with a line break (what csv writers produce) stays one row."""
    path = tmp_path / "multi.tsv"
    path.write_text('id\ttext\n1\t"第一行\n第二行"\n2\t好\n', encoding="utf-8")
    rows = list(read_rows(str(path), id_col="id"))
    assert [(r.id, r.text) for r in rows] == [("1", "第一行\n第二行"), ("2", "好")]


def test_jsonl_objects_without_a_null_field_get_row_errors(tmp_path: Path) -> None:
    """Exporters that drop null fields leave `text` out of some objects: those rows fail, not the file."""
    path = tmp_path / "sparse.jsonl"
    path.write_text('{"id": 1}\n{"id": 2, "text": "好开心", "shop": "a"}\n{"id": 3, "text": "差"}\n',
                    encoding="utf-8")
    rows = list(read_rows(str(path), id_col="id", keep=["shop"]))
    assert [(r.id, r.text, r.error) for r in rows] == [(1, None, "text is missing"), (2, "好开心", None),
                                                        (3, "差", None)]
    assert [r.extra["shop"] for r in rows] == [None, "a", None]
    _one_line_error(lambda: read_rows(str(path), keep=["shpo"]), "sparse.jsonl", "column 'shpo' is missing",
                    "shop")


# ------------------------------------------------------------------------------ never lose a row (issue 15)


def test_csv_stray_quote_does_not_swallow_later_rows(tmp_path: Path) -> None:
    """A cell that opens with a stray quote reads on to the next quote (or the end of the file) in csv:
    each swallowed line is a row again. Real multi-line cells, with or without commas, stay one row."""
    path = tmp_path / "stray.csv"
    path.write_text('id,text,u\n1,"第一行,还有\n第二行",a\n2,"好评,b\n3,不错,c\n4,差"评,d\n5,"正常",e\n'
                    '6,"多行\n没有逗号",f\n7,"又一个,g\n8,最后,h\n', encoding="utf-8")
    stats = ReadStats()
    rows = list(read_rows(str(path), id_col="id", keep=["u"], stats=stats))
    assert [r.id for r in rows] == [str(i) for i in range(1, 9)]
    assert [r.extra["u"] for r in rows] == list("abcdefgh")
    assert [r.text for r in rows] == ["第一行,还有\n第二行", '"好评', "不错", '差"评', "正常", "多行\n没有逗号",
                                      '"又一个', "最后"]
    assert stats.lines == 11 and count_rows(str(path)) is not None


def test_csv_multiline_cell_with_a_comma_is_one_row(tmp_path: Path) -> None:
    """A quoted cell holding a line break and a comma is valid csv (Excel writes such cells): it is one
    row, as Python's csv module reads it, and the progress count agrees. Only a quote that breaks csv's
    rules (one never closed, or one closed mid-cell) is taken for a stray quote."""
    content = 'id,text\n1,"第一行\n第二行,还不错"\n2,好开心\n3,"a,\nb"\n'
    path = tmp_path / "ml.csv"
    path.write_text(content, encoding="utf-8")
    rows = list(read_rows(str(path), id_col="id"))
    want = list(csv.reader(io.StringIO(content, newline="")))[1:]
    assert [[r.id, r.text] for r in rows] == want == [["1", "第一行\n第二行,还不错"], ["2", "好开心"], ["3", "a,\nb"]]
    assert all(r.error is None for r in rows) and count_rows(str(path)) == 3


@pytest.mark.parametrize("sep", [",", "\t"])
def test_a_stray_carriage_return_in_a_cell_spoils_nothing(tmp_path: Path, sep: str) -> None:
    """A lone \\r inside a cell (pasted from an old Mac or Windows tool) made csv refuse the whole file;
    it is kept in the text as the line break it is, quoted or not, and every row is read."""
    path = tmp_path / ("cr.csv" if sep == "," else "cr.tsv")
    lines = ["id", "text"], ["1", "好开心"], ["2", "好\r开心"], ["3", '"引\r号"'], ["4", "坏"]
    path.write_text("\n".join(sep.join(f) for f in lines) + "\r\n", encoding="utf-8", newline="")
    rows = list(read_rows(str(path), id_col="id"))
    assert [(r.id, r.text, r.error) for r in rows] == [("1", "好开心", None), ("2", "好\r开心", None),
                                                        ("3", "引\r号", None), ("4", "坏", None)]
    assert count_rows(str(path)) == 4


def test_a_quoted_cell_that_holds_rows_is_one_cell_said_aloud(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stray quote that closes cleanly at the end of a later cell is valid csv: Python's csv and Excel
    read one cell, so emotag does too, but the rows it may hold are named in one warning line (stderr and
    `stats.warnings`). An ordinary multi-line review whose line reads as two fields is not warned about:
    its first field is no id like the row's own."""
    content = 'id,text\n1,"好评 满意\n2,还行\n3,东西不错"\n4,差\n'
    path = tmp_path / "reviews.csv"
    path.write_text(content, encoding="utf-8")
    stats = ReadStats()
    rows = list(read_rows(str(path), stats=stats))
    assert [[r.id, r.text] for r in rows] == list(csv.reader(io.StringIO(content, newline="")))[1:]
    assert stats.lines == 5
    warning = ("emotag: warning: " + str(path) + ", row 1: a quoted cell spans lines 2-4, and lines 3-4 also "
               "read as rows by themselves; kept as one cell, as csv reads it (if its opening quote is a "
               "stray, fix the file)")
    assert stats.warnings == [warning] and capsys.readouterr().err == warning + "\n"
    list(read_rows(str(path), skip=1, stats=(resumed := ReadStats())))  # a resumed run warned the first time
    assert resumed.warnings == []

    for ordinary in ('id,text\n1,"第一行\n第二行,还不错"\n2,好\n', 'id,text\n1,"第一行\n第二行,还行\n第三行"\n',
                     'id,text,u\n1,"第一行,还有\n第二行",a\n', '店,text\n店A,"第一行\n第二行,还不错"\n'):
        path.write_text(ordinary, encoding="utf-8")
        stats = ReadStats()
        assert len(list(read_rows(str(path), stats=stats))) == len(list(csv.reader(io.StringIO(ordinary)))) - 1
        assert stats.warnings == [], ordinary
    path.write_text('店,text\n店A,"好评\n店B,还行"\n', encoding="utf-8")  # no id column: the shop is alike
    assert len(list(read_rows(str(path), stats=(stats := ReadStats())))) == 1
    assert stats.warnings and "spans lines 2-3, and line 3 also" in stats.warnings[0]
    capsys.readouterr()

    path.write_text("id,text\n" + "".join(f'{i},"好\n{i}0,坏"\n' for i in range(1, 9)), encoding="utf-8")
    stats = ReadStats()
    assert len(list(read_rows(str(path), stats=stats))) == 8
    assert [w.split(": ")[2] for w in stats.warnings[:5]] == [f"{path}, row {i}" for i in range(1, 6)]
    assert stats.warnings[5:] == [f"emotag: warning: {path}: 3 more quoted cells span lines that also read as "
                                  "rows by themselves (rows 6, 7, 8); each kept as one cell, as csv reads it"]
    assert capsys.readouterr().err.count("\n") == 6


@pytest.mark.parametrize("sep", [",", "\t"])
def test_a_lone_carriage_return_between_rows_separates_them(tmp_path: Path, sep: str) -> None:
    """Old-Mac line ends mixed with others: a line whose \\r-separated parts each read as a whole row
    (the header's width) is that many rows, and a one-column file's every part is a row; none is merged
    into another's text or lost. A \\r that leaves a part short, or sits inside quotes, stays in the text."""
    path = tmp_path / ("mac.csv" if sep == "," else "mac.tsv")
    path.write_text("text\n好评\r差评\r一般\n", encoding="utf-8", newline="")
    stats = ReadStats()
    assert [(r.id, r.text) for r in read_rows(str(path), stats=stats)] == [(0, "好评"), (1, "差评"), (2, "一般")]
    assert stats.lines == 4
    path.write_text(f"id{sep}text\r1{sep}好评\r2{sep}差评\r\r3{sep}一般\n4{sep}好\r开心\n", encoding="utf-8",
                    newline="")
    stats = ReadStats()
    rows = list(read_rows(str(path), stats=stats))
    assert [(r.id, r.text, r.error) for r in rows] == [("1", "好评", None), ("2", "差评", None),
                                                        ("3", "一般", None), ("4", "好\r开心", None)]
    assert stats.lines == 6
    if sep == ",":  # (a multi-line TSV cell with a tab is taken for a runaway quote: see the TSV tests)
        path.write_text('id,text\n1,"多\n行\r2,x"\n3,好\n', encoding="utf-8", newline="")
        assert [(r.id, r.text) for r in read_rows(str(path))] == [("1", "多\n行\r2,x"), ("3", "好")]


def test_a_users_fdd0_survives_a_stand_in_elsewhere(tmp_path: Path) -> None:
    """The stand-in for a lone \\r is put back only in the records that had one: U+FDD0 in another row's
    text (a noncharacter, yet a text may hold anything) comes out as it went in."""
    path = tmp_path / "fdd0.csv"
    path.write_text("id,text\n2,好\r开心\n1,好\ufdd0评\n3,\"多\n行\ufdd0\"\n", encoding="utf-8", newline="")
    assert [(r.id, r.text) for r in read_rows(str(path))] == [("2", "好\r开心"), ("1", "好\ufdd0评"),
                                                              ("3", "多\n行\ufdd0")]


def test_read_stats_count_lines_of_text_formats(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "一"}\n\n{"text": "二"}\n', encoding="utf-8")
    stats = ReadStats()
    assert len(list(read_rows(str(path), stats=stats))) == 2 and stats.lines == 3


def test_writer_refuses_to_overwrite_its_input(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "一"}\n', encoding="utf-8")
    (tmp_path / "alias.jsonl").symlink_to(src)
    for out in (src, tmp_path / "alias.jsonl"):
        _one_line_error(lambda out=out: RecordWriter(str(out), inputs=[str(src)]), str(out), "is the input file")
    assert src.read_text(encoding="utf-8") == '{"text": "一"}\n'
    with RecordWriter(str(tmp_path / "new.jsonl"), inputs=[str(src)]) as w:  # another file is fine
        w.write({"id": 0})


def test_resume_checks_the_partial_belongs_to_this_input_and_settings(tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("text\n一\n二\n", encoding="utf-8")
    b.write_text("text\n三\n四\n", encoding="utf-8")
    out = tmp_path / "o.jsonl"
    with pytest.raises(KeyboardInterrupt), RecordWriter(str(out), inputs=[str(a)], settings={"k": 1}) as w:
        w.write({"id": 0})
        raise KeyboardInterrupt
    assert (tmp_path / "o.jsonl.partial.meta").exists()
    _one_line_error(lambda: RecordWriter(str(out), resume=True, inputs=[str(b)], settings={"k": 1}),
                    "o.jsonl.partial", "it was written from")
    _one_line_error(lambda: RecordWriter(str(out), resume=True, inputs=[str(a)], settings={"k": 2}),
                    "o.jsonl.partial", "it was written with k 1, not 2")
    with RecordWriter(str(out), resume=True, inputs=[str(a)], settings={"k": 1}) as w:
        assert w.rows_done == 1
        w.write({"id": 1})
    assert [r["id"] for r in read_records(str(out))] == [0, 1]
    assert not list(tmp_path.glob("o.jsonl.partial*"))


def test_txt_is_one_text_per_line_and_read_only(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("很好吃\n\n太难吃了\r\n", encoding="utf-8")
    rows = list(read_rows(str(path)))
    assert [(r.id, r.text, r.error) for r in rows] == [(0, "很好吃", None), (1, None, "text is empty"),
                                                        (2, "太难吃了", None)]
    assert count_rows(str(path)) == 3
    assert [r.text for r in read_rows(str(path), skip=2)] == ["太难吃了"]
    _one_line_error(lambda: read_rows(str(path), keep=["shop"]), "notes.txt", "no columns")
    _one_line_error(lambda: RecordWriter(str(tmp_path / "out.txt")), "out.txt", "is read, not written")


@pytest.mark.parametrize("piped, kind", [("很好吃\n太难吃了\n", "text"), ('{"text": "很好吃"}\n{"text": "太难吃了"}\n', "json"),
                                         ("\n{不是 JSON}\n太难吃了\n", "text")])
def test_stdin_takes_json_lines_or_plain_text(monkeypatch: pytest.MonkeyPatch, piped: str, kind: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(piped.encode("utf-8")), encoding="utf-8"))
    texts = [r.text for r in read_rows("-")]
    if kind == "json":
        assert texts == ["很好吃", "太难吃了"]
    else:
        assert texts == [line or None for line in piped.splitlines()]


def test_mixed_utf8_and_gbk_rows_are_all_read(tmp_path: Path) -> None:
    """Files two tools appended to: a line that is not valid in the file's encoding is tried in the other."""
    for utf8_every in (2, 3, 97):
        data = b"id,text\n"
        for i in range(300):
            data += f"{i},第{i}条评论质量很好\n".encode("utf-8" if i % utf8_every == 0 else "gbk")
        path = tmp_path / f"mixed{utf8_every}.csv"
        path.write_bytes(data)
        rows = list(read_rows(str(path)))
        assert [r.text for r in rows] == [f"第{i}条评论质量很好" for i in range(300)]


def test_an_unknown_encoding_names_the_first_line_that_is_not_utf8(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import charset_normalizer

    class Nothing:
        def best(self) -> None:
            return None

    monkeypatch.setattr(charset_normalizer, "from_bytes", lambda data: Nothing())
    path = tmp_path / "odd.csv"
    path.write_bytes("id,text\n1,好\n".encode() + b"2,\xff\xfe\xfa\xfb\xfc\n" * 3)
    _one_line_error(lambda: read_rows(str(path)), "odd.csv", "cannot tell the text encoding", "line 3 is neither")


def test_write_text_atomically_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    """The report's writer: a whole file replaced at once; a failed write leaves the old one and no litter."""
    import os

    from emotag.io import write_text_atomically

    out = tmp_path / "sub" / "report.html"
    write_text_atomically(out, "<p>第一版</p>")
    assert out.read_text(encoding="utf-8") == "<p>第一版</p>" and (os.stat(out).st_mode & 0o777) == 0o644
    with pytest.raises(UnicodeEncodeError):
        write_text_atomically(out, "<p>\ud800</p>")  # a lone surrogate cannot be UTF-8
    assert out.read_text(encoding="utf-8") == "<p>第一版</p>"
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]


# -------------------------------------------------------------------------------------- mixed encodings


_REVIEWS = ["物流很快，包装破损了", "服务态度很差", "质量非常好，很满意", "发货太慢了", "价格便宜，性价比高"]


@pytest.mark.parametrize("utf8_rows, gbk_rows", [(20, 3), (5, 5), (2, 8)])
def test_gbk_rows_appended_to_a_utf8_file_leave_the_utf8_rows_alone(tmp_path: Path, utf8_rows: int,
                                                                    gbk_rows: int) -> None:
    """Enough GBK rows to flip the sniffed encoding must not turn the UTF-8 rows into GB18030 mojibake."""
    utf8 = [_REVIEWS[i % 5] for i in range(utf8_rows)]
    gbk = [_REVIEWS[i % 5] for i in range(gbk_rows)]
    path = tmp_path / "mixed.csv"
    path.write_bytes(b"id,text\n" + "".join(f"u{i},{t}\n" for i, t in enumerate(utf8)).encode()
                     + "".join(f"g{i},{t}\n" for i, t in enumerate(gbk)).encode("gbk"))
    rows = list(read_rows(str(path)))
    assert [(r.text, r.error) for r in rows] == [(t, None) for t in utf8 + gbk]


def test_a_junk_row_does_not_garble_the_utf8_rows_of_a_small_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.csv"
    path.write_bytes(b"id,text\n" + "".join(f"{i},{t}\n" for i, t in enumerate(_REVIEWS[:3])).encode()
                     + b"6,\xff\xfe\x80\x81abc\n")
    rows = list(read_rows(str(path)))
    assert [r.text for r in rows[:3]] == _REVIEWS[:3]
    assert rows[3].text is None and rows[3].error is not None and "not valid" in rows[3].error


def test_short_gbk_texts_that_happen_to_be_valid_utf8_stay_gbk(tmp_path: Path) -> None:
    """小, 要, 喜 in GBK are valid two-byte UTF-8 (С, Ҫ, ϲ): a GBK file reads them as GBK all the same."""
    texts = [*_REVIEWS, "小", "要", "喜", "一"]
    path = tmp_path / "gbk.csv"
    path.write_bytes(("id,text\n" + "".join(f"{i},{t}\n" for i, t in enumerate(texts))).encode("gbk"))
    assert [(r.text, r.error) for r in read_rows(str(path))] == [(t, None) for t in texts]


# ---------------------------------------------------------------------------------------------- empty input


@pytest.mark.parametrize("name, content", [("e.jsonl", ""), ("blank.jsonl", "\n  \n\n"), ("e.json", ""),
                                           ("a.json", "[]\n"), ("e.txt", ""), ("blank.txt", "\n\n")])
def test_an_empty_input_is_a_one_line_error_in_every_text_format(tmp_path: Path, name: str,
                                                                 content: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    _one_line_error(lambda: read_rows(str(path)), name, "file is empty")


@pytest.mark.parametrize("piped", ["", "\n\n"])
def test_empty_stdin_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch, piped: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(piped.encode()), encoding="utf-8"))
    _one_line_error(lambda: read_rows("-"), "<stdin>", "standard input is empty")


def test_a_file_whose_rows_all_fail_is_not_empty(tmp_path: Path) -> None:
    jsonl, txt = tmp_path / "bad.jsonl", tmp_path / "bad.txt"
    jsonl.write_text('{"text": ""}\nnot json\n', encoding="utf-8")
    txt.write_text("\n\n  \n好\n", encoding="utf-8")  # blank lines are rows when there is text at all
    assert [r.error is not None for r in read_rows(str(jsonl))] == [True, True]
    assert [r.text for r in read_rows(str(txt))] == [None, None, None, "好"]


# ------------------------------------------------------------------------------------------ xlsx limits


def test_xlsx_says_which_cells_it_had_to_cut_or_change(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import openpyxl

    long_text, control = "好" * 50_000, "物流\x0b很快\x00"
    out = tmp_path / "long.xlsx"
    with RecordWriter(str(out)) as w:
        w.write_many([{"id": 1, "text": long_text}, {"id": 2, "text": "正常"}, {"id": 3, "text": control}])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("emotag: warning: ") and str(out) in err, err
    for fragment in ("1 cell cut to Excel's 32,767-character limit (row 1; column text)",
                     "1 cell with characters", "(row 3; column text)", "jsonl, csv or parquet to keep every text whole"):
        assert fragment in err, err
    assert w.warnings == [err.strip()]
    stored = [r[1] for r in openpyxl.load_workbook(out, read_only=True).worksheets[0].iter_rows(values_only=True)]
    assert stored[1] == long_text[:32_767] and stored[2] == "正常"
    assert stored[3] == "物流\ufffd很快\ufffd"  # same length: aspect spans into the text still fit

    _write(tmp_path / "fine.xlsx", [_record(i) for i in range(4)])
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------------- failed starts and concurrent runs


def test_a_run_that_fails_before_its_first_record_leaves_no_partial(tmp_path: Path) -> None:
    """A wrong column name is found after the writer opened: no empty partial may block a later --resume."""
    src = tmp_path / "in.csv"
    src.write_text("id,text\n1,好\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    with pytest.raises(InputError), RecordWriter(str(out), inputs=[str(src)], settings={"--text-col": "nope"}):
        read_rows(str(src), text_col="nope")
    assert not list(tmp_path.glob("out.jsonl*"))
    with RecordWriter(str(out), resume=True, inputs=[str(src)], settings={"--text-col": "text"}) as w:
        assert w.rows_done == 0
        w.write({"id": 1})
    assert [r["id"] for r in read_records(str(out))] == [1]


def test_a_resumed_partial_stays_when_the_resumed_run_fails_at_once(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with pytest.raises(KeyboardInterrupt), RecordWriter(str(out)) as w:
        w.write({"id": 0})
        raise KeyboardInterrupt
    with pytest.raises(InputError), RecordWriter(str(out), resume=True):
        raise InputError("in.csv", "column 'nope' is missing")
    assert (tmp_path / "out.jsonl.partial").read_text(encoding="utf-8") == '{"id":0}\n'


def test_a_second_writer_on_the_same_output_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "res.jsonl"
    with RecordWriter(str(out)) as first:
        first.write({"id": 0})
        for resume in (False, True):
            _one_line_error(lambda resume=resume: RecordWriter(str(out), resume=resume), "res.jsonl:",
                            "another emotag run is writing this file", "res.jsonl.partial.lock")
        first.write({"id": 1})
    assert [r["id"] for r in read_records(str(out))] == [0, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res.jsonl"]  # the lock went with the run

    with pytest.raises(KeyboardInterrupt), RecordWriter(str(out)) as w:  # Ctrl-C releases it too
        w.write({"id": 2})
        raise KeyboardInterrupt
    with RecordWriter(str(out), resume=True) as w:
        w.write({"id": 3})
    assert [r["id"] for r in read_records(str(out))] == [2, 3]


def test_a_killed_run_does_not_leave_its_output_locked(tmp_path: Path) -> None:
    import subprocess

    pytest.importorskip("fcntl")
    out = tmp_path / "res.jsonl"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from emotag.io import RecordWriter; "
         "w = RecordWriter(sys.argv[1]); w.write({'id': 0}); w._flush(); print('ready', flush=True); "
         "time.sleep(60)", str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        _one_line_error(lambda: RecordWriter(str(out), resume=True), "another emotag run")
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / "res.jsonl.partial.lock").exists()  # left behind by kill -9, but no longer held
    with RecordWriter(str(out), resume=True) as w:
        assert w.rows_done == 1
        w.write({"id": 1})
    assert [r["id"] for r in read_records(str(out))] == [0, 1]
    assert not (tmp_path / "res.jsonl.partial.lock").exists()


def test_xlsx_keeps_carriage_returns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An XML reader turns a raw "\\r\\n" into "\\n": a text written so came back one character short, and the
    aspect spans into it were off by one. The text reads back whole, through openpyxl and through emotag."""
    import openpyxl

    texts = ["  包装破损了\r\n物流很快", "一\r二\r\r三\n", "好\r"]
    out = tmp_path / "cr.xlsx"
    with RecordWriter(str(out)) as w:
        w.write_many([{"id": i, "text": t, "note\r\nx": t} for i, t in enumerate(texts)])
    assert capsys.readouterr().err == ""  # nothing was changed, so nothing to warn about
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cr.xlsx"]
    for read_only in (True, False):
        sheet = openpyxl.load_workbook(out, read_only=read_only).worksheets[0]
        rows = list(sheet.iter_rows(values_only=True))
        assert rows[0] == ("id", "text", "note\r\nx") and [r[1] for r in rows[1:]] == texts
    assert [r["text"] for r in read_records(str(out))] == texts
    assert [r.text for r in read_rows(str(out))] == texts


def test_xlsx_aspect_spans_index_a_text_with_crlf(tiny_model_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from emotag.cli import app

    src = tmp_path / "in.csv"
    src.write_bytes('id,text\r\n1,"  包装破损了\r\n物流很快"\r\n'.encode())
    out = tmp_path / "o.xlsx"
    res = CliRunner().invoke(app, ["score", str(src), "--aspects", "--keep", "text", "-o", str(out),
                                   "--model", str(tiny_model_dir), "-q"])
    assert res.exit_code == 0, res.output
    (rec,) = list(read_records(str(out)))
    text = rec["text"]
    assert text == "  包装破损了\r\n物流很快"
    assert rec["aspects"], rec
    for a in rec["aspects"]:
        if a.get("aspect_span"):
            assert text[slice(*a["aspect_span"])] == a["aspect"], a
        if a.get("opinion_span"):
            assert text[slice(*a["opinion_span"])] == a["opinion"], a
