"""File-to-file scoring: the library function behind `emotag score` and `emotag score-dialogues`.

Reads rows in a stream, scores them with a `Tagger`, writes exactly one output record per input row
(with `error` set for rows that could not be scored) to a temporary file renamed into place at the
end. With `resume=True` a killed run continues from the rows already in the partial output.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from emotag.dialogues import conversations_from_records, score_conversations
from emotag.io import InputRow, RecordWriter, read_records, read_rows
from emotag.tagger import Tagger

OUTPUT_FIELDS = ("id", "emotion", "emotions", "polarity", "polarity_score", "intensity", "error")


@dataclass
class ScoreSummary:
    rows: int
    errors: int
    skipped: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def score_file(
    tagger: Tagger,
    input_path: str,
    output_path: str,
    text_col: str = "text",
    id_col: str | None = None,
    keep: tuple[str, ...] = (),
    batch_size: int = 64,
    resume: bool = False,
    progress: Callable[[int], None] | None = None,
    chunk_rows: int = 2048,
) -> ScoreSummary:
    """Score INPUT into OUTPUT (formats by extension, '-' = stdin/stdout JSONL)."""
    t0 = time.perf_counter()
    rows = errors = 0
    with RecordWriter(output_path, resume=resume) as writer:
        skipped = writer.rows_done
        source: Iterator[InputRow] = read_rows(input_path, text_col=text_col, id_col=id_col, keep=keep,
                                               skip=skipped)
        while True:
            chunk = list(islice(source, chunk_rows))
            if not chunk:
                break
            scorable = [r for r in chunk if r.error is None]
            results = iter(tagger.tag_many([r.text for r in scorable], batch_size=batch_size,
                                           ids=[r.id for r in scorable], chunk_size=chunk_rows))
            for r in chunk:
                rec: dict[str, Any]
                if r.error is None:
                    rec = next(results).to_dict()
                else:
                    rec = dict.fromkeys(OUTPUT_FIELDS)
                    rec["id"], rec["error"] = r.id, r.error
                if rec["error"]:
                    errors += 1
                rec.update(r.extra)
                writer.write(rec)
            rows += len(chunk)
            if progress:
                progress(len(chunk))
    return ScoreSummary(rows, errors, skipped, time.perf_counter() - t0)


def score_dialogues_file(
    tagger: Tagger, input_path: str, output_path: str, batch_size: int = 64
) -> ScoreSummary:
    """Score a conversations file (SPEC §3) into one record per conversation."""
    t0 = time.perf_counter()
    rows = errors = 0
    with RecordWriter(output_path) as writer:
        for rec in score_conversations(tagger, conversations_from_records(read_records(input_path)), batch_size):
            writer.write(rec)
            rows += 1
            errors += rec.get("error") is not None
    return ScoreSummary(rows, errors, 0, time.perf_counter() - t0)
