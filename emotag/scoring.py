"""File-to-file scoring: the library function behind `emotag score` and `emotag score-dialogues`.

Reads rows in a stream, scores them with a `Tagger`, writes exactly one output record per input row
(with `error` set for rows that could not be scored) to a temporary file renamed into place at the
end. With `resume=True` a killed run continues from the rows already in the partial output.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from emotag.dialogues import Conversation, Speakers, conversations_from_records, score_conversations
from emotag.io import InputRow, ReadStats, RecordWriter, read_conversation_records, read_rows
from emotag.tagger import Result, Tagger

OUTPUT_FIELDS = ("id", "emotion", "emotions", "polarity", "polarity_score", "intensity", "error")
KEPT_PREFIX = "input."


def kept_name(column: str) -> str:
    """The output name of a kept input column: its own, or `input.<name>` where that would overwrite a
    score field (an eval file's gold `emotion` column must never replace the prediction, nor a column named
    `aspects` the units `--aspects` extracts)."""
    clash = (column in OUTPUT_FIELDS or column in ("score", "aspects") or column.startswith("emotions.")
             or column.startswith(KEPT_PREFIX))
    return KEPT_PREFIX + column if clash else column


@dataclass
class ScoreSummary:
    """What a run did, for its closing line: counts, speed, the label mix and why rows failed."""

    rows: int
    errors: int
    skipped: int
    seconds: float
    lines: int | None = None  # physical input lines read (text formats): a merged-rows reader shows here
    emotions: Counter[str] = field(default_factory=Counter)
    polarities: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)  # error message -> rows
    speakers: Counter[str] = field(default_factory=Counter)  # conversations: speaker name -> turns

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def count(self, rec: dict[str, Any], emotion_key: str = "emotion") -> None:
        """Add one written record to the tallies."""
        self.rows += 1
        self.tally(rec, emotion_key)

    def tally(self, rec: dict[str, Any], emotion_key: str = "emotion") -> None:
        """Add a record to the errors and the label mix only: a resumed run's rows read back from the partial,
        so the closing line describes the whole output, not just what this run scored."""
        if rec.get("error") is not None:
            self.errors += 1
            self.reasons[str(rec["error"])] += 1
        if rec.get(emotion_key) is not None:
            self.emotions[rec[emotion_key]] += 1
        if rec.get("polarity") is not None:
            self.polarities[rec["polarity"]] += 1

    def mix(self, top: int = 3, emotions: str = "emotions") -> str:
        """'emotions: like 41%, ...; polarity: ...; errors: text is empty (3), ...' (empty parts left out)."""
        def shares(c: Counter[str]) -> str:
            total = sum(c.values())
            return ", ".join(f"{k} {v / total:.0%}" for k, v in c.most_common())

        parts = []
        if self.emotions:
            parts.append(f"{emotions}: {shares(self.emotions)}")
        if self.polarities:
            parts.append(f"polarity: {shares(self.polarities)}")
        if self.reasons:
            parts.append("errors: " + ", ".join(f"{k} ({v})" for k, v in self.reasons.most_common(top)))
        return "; ".join(parts)


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
    aspects: Any = None,
) -> ScoreSummary:
    """Score INPUT into OUTPUT (formats by extension, '-' = stdin/stdout JSONL).

    `aspects` (an `emotag.aspects.AspectExtractor`) adds SPEC §7's `aspects` list to every record (null
    on error rows).

    OUTPUT may not be INPUT (under any name), and a resumed partial must have been started from the same
    input with the same options and model: both are refused with an `InputError`.
    """
    t0 = time.perf_counter()
    summary = ScoreSummary(0, 0, 0, 0.0)
    stats = ReadStats()
    names = {c: kept_name(c) for c in keep}
    # the columns of a scored record, known before the first one: csv/tsv headers never depend on the data
    # (numbers stand where the field is a number, so a Parquet output of nothing but error rows still types
    # those columns as floats and unions with the other parts of a dataset)
    template = (dict.fromkeys(OUTPUT_FIELDS, "") | {"polarity_score": 0.0, "intensity": 0.0}
                | {"emotions": dict.fromkeys(tagger.emotion_labels, 0.0)})
    settings = {"--text-col": text_col, "--id-col": id_col, "--keep": list(keep), "model": model_identity(tagger)}
    if aspects is not None:
        template["aspects"] = ""
        settings["--aspects"] = True
        settings["--aspect-categories"] = getattr(getattr(aspects, "categories", None), "source", None)
    regression = Result.scale_of(tagger.emotion_labels) is not None  # records carry `score` (docs/finetune.md §6)
    if regression:
        template["score"] = 0.0
    # Kept columns are the user's data, not ours: a JSON input's objects may have other keys in every row (or
    # turn into a number), which no column layout fixed by the first rows can hold. Shown as plain values
    # here, they stay one column each in csv/tsv/parquet/xlsx, a dict or list as one JSON cell that reads
    # back as the value.
    template.update(dict.fromkeys(names.values(), ""))
    with RecordWriter(output_path, resume=resume, template=template, inputs=[input_path],
                      settings=settings) as writer:
        summary.skipped = skipped = writer.rows_done
        for rec in writer.resumed_records():
            summary.tally(rec)
        source: Iterator[InputRow] = read_rows(input_path, text_col=text_col, id_col=id_col, keep=keep,
                                               skip=skipped, stats=stats)
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
            while waiting and waiting[0].error is not None:
                r = waiting.popleft()
                rec = dict.fromkeys(OUTPUT_FIELDS)
                rec["id"], rec["error"] = r.id, r.error
                if aspects is not None:
                    rec["aspects"] = None
                if regression:
                    rec["score"] = None
                rec.update((names.get(k, k), v) for k, v in r.extra.items())
                writer.write(rec)
                summary.count(rec)

        reported = 0
        for result in tagger.tag_many(texts(), batch_size=batch_size, chunk_size=chunk_rows, aspects=aspects):
            flush_errors()
            r = waiting.popleft()
            rec: dict[str, Any] = result.to_dict()
            if aspects is not None:
                rec.setdefault("aspects", None)
            if regression:
                rec.setdefault("score", None)
            rec["id"] = r.id
            rec.update((names.get(k, k), v) for k, v in r.extra.items())
            writer.write(rec)
            summary.count(rec)
            if progress and summary.rows - reported >= chunk_rows:
                progress(summary.rows - reported)
                reported = summary.rows
        flush_errors()
        if progress and summary.rows > reported:
            progress(summary.rows - reported)
    summary.lines = stats.lines
    summary.seconds = time.perf_counter() - t0
    return summary


def model_identity(tagger: Tagger) -> str:
    """The model as a resumed run must match it: name, version and directory."""
    cfg = tagger.config
    return f"{cfg.name} {cfg.version} ({tagger.model_dir})"


def score_dialogues_file(
    tagger: Tagger, input_path: str, output_path: str, batch_size: int = 64, speakers: Speakers | None = None
) -> ScoreSummary:
    """Score a conversations file (SPEC §3) into one record per conversation.

    The summary tallies the speaker names seen, so a run in which no turn was the customer's can say
    which names the file uses.
    """
    t0 = time.perf_counter()
    summary = ScoreSummary(0, 0, 0, 0.0)

    def tallied(convs: Iterator[Conversation]) -> Iterator[Conversation]:
        for conv in convs:
            summary.speakers.update(str(t.get("speaker")) for t in conv.turns if t.get("speaker") is not None)
            yield conv

    conversations = tallied(conversations_from_records(read_conversation_records(input_path)))
    with RecordWriter(output_path, inputs=[input_path]) as writer:
        for rec in score_conversations(tagger, conversations, batch_size, speakers):
            writer.write(rec)
            summary.count(rec, emotion_key="end_emotion")
    summary.seconds = time.perf_counter() - t0
    return summary


def every_row_failed(summary: ScoreSummary) -> str | None:
    """The one reason every output record has `error` set, or None: such a run is a mistake, not data."""
    if summary.rows and summary.errors == summary.rows and len(summary.reasons) == 1:
        return next(iter(summary.reasons))
    return None
