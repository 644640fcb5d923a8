"""File-to-file scoring: the library function behind `emotag score` and `emotag score-dialogues`.

Reads rows in a stream, scores them with a `Tagger`, writes exactly one output record per input row
(with `error` set for rows that could not be scored) to a temporary file renamed into place at the
end. With `resume=True` a killed run continues from the rows already in the partial output.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from emotag.dialogues import conversations_from_records, score_conversations
from emotag.io import InputRow, RecordWriter, read_conversation_records, read_rows
from emotag.tagger import Tagger

OUTPUT_FIELDS = ("id", "emotion", "emotions", "polarity", "polarity_score", "intensity", "error")
KEPT_PREFIX = "input."


def kept_name(column: str) -> str:
    """The output name of a kept input column: its own, or `input.<name>` where that would overwrite a
    score field (an eval file's gold `emotion` column must never replace the prediction)."""
    clash = column in OUTPUT_FIELDS or column.startswith("emotions.") or column.startswith(KEPT_PREFIX)
    return KEPT_PREFIX + column if clash else column


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
    names = {c: kept_name(c) for c in keep}
    # the columns of a scored record, known before the first one: csv/tsv headers never depend on the data
    template = dict.fromkeys(OUTPUT_FIELDS, "") | {"emotions": dict.fromkeys(tagger.emotion_labels, 0.0)}
    with RecordWriter(output_path, resume=resume, template=template) as writer:
        skipped = writer.rows_done
        source: Iterator[InputRow] = read_rows(input_path, text_col=text_col, id_col=id_col, keep=keep,
                                               skip=skipped)
        # Rows read but not yet written, in input order. One `tag_many` stream scores the readable rows, so
        # reading and writing (this thread) overlap with text preparation and scoring (its worker threads);
        # it pulls rows lazily, so this queue holds at most a few chunks.
        waiting: deque[InputRow] = deque()

        def texts() -> Iterator[str]:
            for r in source:
                waiting.append(r)
                if r.error is None:
                    yield r.text

        def flush_errors() -> None:
            nonlocal rows, errors
            while waiting and waiting[0].error is not None:
                r = waiting.popleft()
                rec = dict.fromkeys(OUTPUT_FIELDS)
                rec["id"], rec["error"] = r.id, r.error
                rec.update((names.get(k, k), v) for k, v in r.extra.items())
                writer.write(rec)
                rows += 1
                errors += 1

        reported = 0
        for result in tagger.tag_many(texts(), batch_size=batch_size, chunk_size=chunk_rows):
            flush_errors()
            r = waiting.popleft()
            rec: dict[str, Any] = result.to_dict()
            rec["id"] = r.id
            rec.update((names.get(k, k), v) for k, v in r.extra.items())
            writer.write(rec)
            rows += 1
            errors += rec["error"] is not None
            if progress and rows - reported >= chunk_rows:
                progress(rows - reported)
                reported = rows
        flush_errors()
        if progress and rows > reported:
            progress(rows - reported)
    return ScoreSummary(rows, errors, skipped, time.perf_counter() - t0)


def score_dialogues_file(
    tagger: Tagger, input_path: str, output_path: str, batch_size: int = 64
) -> ScoreSummary:
    """Score a conversations file (SPEC §3) into one record per conversation."""
    t0 = time.perf_counter()
    rows = errors = 0
    with RecordWriter(output_path) as writer:
        for rec in score_conversations(tagger, conversations_from_records(read_conversation_records(input_path)), batch_size):
            writer.write(rec)
            rows += 1
            errors += rec.get("error") is not None
    return ScoreSummary(rows, errors, 0, time.perf_counter() - t0)
