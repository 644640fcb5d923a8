"""Reading inputs and writing results in every format `emotag` speaks (SPEC §2, §5).

Why the package looks the way it does:

* Review dumps run to millions of rows, so every reader streams and the writer writes as it goes.
* One bad row must not cost a whole run. Row-level problems travel on the row (`InputRow.error`, which the
  scorer copies into the output record's `error` field); only mistakes that make the whole file unusable
  (wrong column name, unknown format, missing file) raise `InputError`, whose one-line message the CLI
  prints as is.
* Long runs get interrupted, so output is written atomically and resumably (`RecordWriter`), and a run
  never writes over its own input.
* `.json` means one thing everywhere: a JSON array when written; an array, one object or JSON Lines when
  read.

The modules, in the order a row passes through them:

| module | does |
|---|---|
| `detect.py` | the format of a path (by extension; stdin sniffed), the text encoding, decoded lines, `InputError` |
| `readers.py` | one reader generator per format (csv/tsv, txt, json/jsonl, parquet, xlsx) -> `InputRow`s; row counts |
| `records.py` | record views over the readers: emotag's own output typed back, people's files as text |
| `formats.py` | the format table (one row per format: reader, count, views, spool) and the public read functions |
| `layout.py` | flat column layout (`a.b` columns) and cell/JSON encoding for the writer |
| `writer.py` | `RecordWriter`: OUT.partial renamed into place, resume with its origin checked, inputs never overwritten; `write_text_atomically` for whole files (the report) |
| `spool.py` | the writer's JSONL spool converted to json / parquet / xlsx at close |
"""

from emotag.io.detect import FORMATS, INPUT_FORMATS, InputError, detect_format
from emotag.io.formats import (
    FORMAT_TABLE,
    Format,
    count_rows,
    read_conversation_records,
    read_records,
    read_rows,
    read_text_records,
)
from emotag.io.readers import InputRow, ReadStats
from emotag.io.records import UnreadableRecord
from emotag.io.writer import RecordWriter, same_file, write_text_atomically

__all__ = [
    "FORMATS",
    "FORMAT_TABLE",
    "INPUT_FORMATS",
    "Format",
    "InputError",
    "InputRow",
    "ReadStats",
    "RecordWriter",
    "UnreadableRecord",
    "count_rows",
    "detect_format",
    "read_conversation_records",
    "read_records",
    "read_rows",
    "read_text_records",
    "same_file",
    "write_text_atomically",
]
