"""One-file HTML reports over scored records (`emotag report`).

    from emotag.report import build_report
    build_report(["reviews.scored.jsonl", "chats.scored.jsonl"], "report.html", profiles_db="profiles.db")

The page is self-contained (inline CSS, inline SVG charts with glyphs drawn as paths, an embedded subset
font for the tables, no scripts, no external references), so it can be mailed, archived or opened
offline and still shows its Chinese labels. Layout: `data` aggregates in one streaming pass, `charts`
draws SVGs with matplotlib, `html` renders the page.
"""

from __future__ import annotations

from pathlib import Path

from emotag.report.data import ReportData, ReportError

__all__ = ["ReportData", "ReportError", "build_report", "collect"]

DEFAULT_TITLE = "emotag 情绪分析报告"


def collect(scored_paths: list[str], profiles_db: str | None = None, text_col: str = "text") -> ReportData:
    """Read all inputs once and compute every number of the report.

    Without a profile store, profiles are folded in memory from the same stream (raw user ids never leave
    this function; only tag counts do), so tags are available for any input that has user_id and time.
    """
    from emotag.profiles import FoldStats, build_profiles
    from emotag.report.data import Aggregator, observed, profiles_from_store, profiles_in_memory, read_inputs

    if not scored_paths:
        raise ReportError("no scored input files given")
    agg = Aggregator(list(scored_paths), text_col=text_col)
    stream = observed(read_inputs(scored_paths), agg)
    if profiles_db is None:
        states = build_profiles(stream, strict=False, stats=FoldStats())
    else:
        for _ in stream:
            pass
        states = {}
    data = agg.finish()
    if data.records == 0 and data.dialogue_records == 0:
        raise ReportError(f"{', '.join(scored_paths)}: no records")
    if data.unrecognized and data.unrecognized == data.records and not data.dialogue_records:
        raise ReportError(f"{', '.join(scored_paths)}: not scored records (no emotion / polarity_score "
                          "fields); run emotag score first")
    if profiles_db is not None:
        profiles_from_store(profiles_db, data)
    else:
        profiles_in_memory(states, data)
    return data


def build_report(
    scored_paths: list[str],
    out: str,
    profiles_db: str | None = None,
    title: str | None = None,
    text_col: str = "text",
) -> Path:
    """Write the HTML report for `scored_paths` (emotag score / score-dialogues outputs) to `out`.

    Written to a temporary file in the target directory and renamed into place, so a reader (or a web
    server) never sees a half-written report and a failed run leaves any previous report intact.
    Raises ReportError (and emotag.io.InputError for unreadable files) for problems the user can fix.
    `text_col` names the kept text field the "reasons in their words" section reads.
    """
    try:
        import matplotlib  # noqa: F401 - optional dependency, checked before reading anything
    except ImportError:
        raise ReportError("emotag report needs matplotlib: pip install 'emotag[report]'") from None
    if profiles_db is not None and not Path(profiles_db).is_file():
        raise ReportError(f"{profiles_db}: no such profile store")  # fail before the (slow) read
    data = collect(scored_paths, profiles_db, text_col)
    from emotag.io import write_text_atomically
    from emotag.report.html import render

    target = Path(out)
    write_text_atomically(target, render(data, title or DEFAULT_TITLE))
    return target
