"""`emotag` command line (SPEC §5): a thin typer layer, one command per library function.

User mistakes (bad file, missing column, unknown model) print one line naming the file, row and
problem and exit 1; bugs still show a traceback.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import click
import typer

from emotag import __version__

app = typer.Typer(
    name="emotag",
    help="Emotions, polarity and intensity for Chinese text; per-user emotional tags.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="model directory (default: bundled)")]  # noqa: UP045
BackendOpt = Annotated[str, typer.Option("--backend", help="onnx | onnx-fp32 | onnx-int8 | torch")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads for the scorer")]  # noqa: UP045


class UserError(Exception):
    """A problem the user can fix; shown as one line, exit code 1."""


def _fail(msg: str) -> None:
    typer.echo(f"emotag: {msg}", err=True)
    raise typer.Exit(1)


def _user_errors(fn):
    """Turn expected input problems into a one-line message and exit code 1."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from emotag.io import InputError

        try:
            return fn(*args, **kwargs)
        except (InputError, UserError, FileNotFoundError, IsADirectoryError, PermissionError) as e:
            _fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
        except (NotADirectoryError, FileExistsError) as e:  # a path through a file: -o FILE/x.html
            _fail(_path_error(e))
        except ImportError as e:  # an optional part not installed (torch for training, export, --backend torch)
            missing = getattr(e, "name", None)
            hint = str(e).splitlines()[0] if "pip install" in str(e) else (
                f"{missing or 'a dependency'} is not installed: pip install 'emotag[train]' (training, export, "
                "--backend torch) or 'emotag[formats]' (parquet, xlsx)")
            _fail(hint)
        except sqlite3.OperationalError as e:  # e.g. a profile store another process holds
            _fail(f"profile store: {e}")
        except ValueError as e:  # emotag raises ValueError with a one-line message for bad settings/data
            if not str(e) or not _raised_on_purpose(e):
                _internal_error()
                raise
            _fail(str(e).splitlines()[0])
        except (typer.Exit, typer.Abort, KeyboardInterrupt, SystemExit, click.exceptions.ClickException,
                BrokenPipeError):  # a reader that stopped early (| head): click ends quietly, as before
            raise
        except Exception:  # a KeyError, ZeroDivisionError ... out of emotag: a bug, and it looks like one
            _internal_error()
            raise

    return wrapper


def _path_error(e: OSError) -> str:
    """One line for a path that runs through a regular file. Why not str(e): os.makedirs("FILE") reports
    "[Errno 17] File exists: 'FILE'", which reads as if the file were in the way, not as "not a folder"."""
    name = e.filename
    if name is None:
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    name = os.fsdecode(name)
    if isinstance(e, FileExistsError) and not os.path.isdir(name):
        return f"{name}: is a file, not a directory"
    if isinstance(e, NotADirectoryError):
        return f"{name}: a part of this path is a file, not a directory"
    return f"{name}: {e.strerror or type(e).__name__}"


def _output_dir_problem(output: str) -> str | None:
    """Why `output` cannot be written because a directory on its path is a regular file, else None.

    Checked before a command's slow work (a report reads and charts everything first): the nearest
    existing ancestor of the output must be a directory; missing ones below it are created on writing.
    """
    d = os.path.dirname(output)
    while d and not os.path.lexists(d):
        up = os.path.dirname(d)
        if up == d:
            break
        d = up
    if d and os.path.exists(d) and not os.path.isdir(d):
        return f"{output}: cannot write there: {d} is not a directory"
    return None


def _internal_error() -> None:
    typer.echo("emotag: internal error (a bug, not your input): please report it with the traceback below",
               err=True)


def _raised_on_purpose(e: BaseException) -> bool:
    """Whether emotag's own code raised this error with a `raise` statement, i.e. a message written for the
    user. A ValueError out of numpy, json or int() (the innermost frame is not emotag's `raise`) is a bug,
    and a tidy one-line message would hide it."""
    import linecache
    import traceback

    frames = traceback.extract_tb(e.__traceback__)
    if not frames:
        return False
    last = frames[-1]
    package = os.path.dirname(os.path.abspath(__file__))
    if not os.path.abspath(last.filename).startswith(package + os.sep):
        return False
    line = (last.line or linecache.getline(last.filename, last.lineno or 0)).lstrip()
    return line.startswith("raise ")


def _tagger(model: str | None, backend: str, threads: int | None):
    from emotag.tagger import Tagger

    return Tagger.load(model, backend=backend, threads=threads)


def _aspect_extractor(categories_file: str | None):
    """The aspect extractor with the built-in categories or the user's TOML file (errors are one line)."""
    from emotag.aspects import AspectExtractor, CategoryFileError, CategorySet

    try:
        return AspectExtractor.load(CategorySet.from_toml(categories_file) if categories_file else None)
    except CategoryFileError as e:
        raise UserError(str(e)) from None


def _interactive() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


@app.command()
@_user_errors
def score(
    input: Annotated[str, typer.Argument(metavar="INPUT", help="csv, tsv, jsonl, json, parquet, xlsx or txt (one text per line); - reads stdin (JSON Lines, or one text per line)")],
    output: Annotated[str, typer.Option("--output", "-o", help="output file (format by extension; never the input), - = stdout")] = "-",
    text_col: Annotated[str, typer.Option("--text-col", help="column holding the text")] = "text",
    id_col: Annotated[Optional[str], typer.Option("--id-col", help="id column (default: 'id' if present)")] = None,  # noqa: UP045
    keep: Annotated[str, typer.Option("--keep", help="comma-separated input columns to copy to the output (as input.NAME where NAME is a score field)")] = "",
    model: ModelOpt = None,
    backend: BackendOpt = "onnx",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 64,
    threads: ThreadsOpt = None,
    resume: Annotated[bool, typer.Option("--resume", metavar="", help="continue a killed or interrupted run from OUTPUT.partial (same input, options and model only)")] = False,
    preview: Annotated[int, typer.Option("--preview", min=0, help="print a table of the first N results")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", metavar="", help="no progress bar and no closing summary")] = False,
    aspects: Annotated[bool, typer.Option("--aspects", metavar="", help="add SPEC §7 opinion units per record: aspect, opinion, polarity, score, category, spans (see docs/aspects.md)")] = False,
    aspect_categories: Annotated[Optional[str], typer.Option("--aspect-categories", metavar="FILE", help="your own aspect categories (TOML, SPEC §7); implies --aspects")] = None,  # noqa: UP045
) -> None:
    """Score texts: one output record per input row, in input order.

    Each record has id, emotion, emotions (a probability per emotion), polarity, polarity_score (-1..1),
    intensity (0..1) and error (set, with the scores empty, for a row that cannot be scored).
    """
    from emotag.io import InputError, count_rows
    from emotag.scoring import score_file

    keep_cols = tuple(c.strip() for c in keep.split(",") if c.strip())
    extractor = _aspect_extractor(aspect_categories) if aspects or aspect_categories else None
    tagger = _tagger(model, backend, threads)
    show = _interactive() and not quiet and output != "-"
    total = count_rows(input) if show else None
    try:
        with _progress_bar(show, total) as advance:
            summary = score_file(tagger, input, output, text_col=text_col, id_col=id_col, keep=keep_cols,
                                 batch_size=batch_size, resume=resume, progress=advance, aspects=extractor)
    except KeyboardInterrupt:
        if output != "-" and Path(f"{output}.partial").exists():  # none when stopped before its first record
            typer.echo(f"emotag: interrupted; the rows scored so far are in {output}.partial: run the same "
                       "command with --resume to continue", err=True)
        elif output != "-":
            typer.echo("emotag: interrupted before the first record was written; nothing to resume", err=True)
        raise typer.Exit(130) from None
    except InputError as e:
        if e.problem.startswith("column 'text' is missing") and "text" in keep_cols and text_col != "text":
            raise UserError(f"{e}; the text column is '{text_col}': keep it as --keep {text_col} "
                            f"(and read it with report --text-col {text_col})") from None
        raise
    if not quiet and output != "-":
        lines = f" from {summary.lines} lines" if summary.lines is not None else ""
        # resumed: the errors and the mix cover every row of the output, the resumed ones read back included
        counts = (f"{summary.skipped} resumed; {summary.errors} of all {summary.rows + summary.skipped} with errors"
                  if summary.skipped else f"{summary.errors} with errors")
        typer.echo(f"scored {summary.rows} rows{lines} ({counts}) in {summary.seconds:.1f}s "
                   f"({summary.rate:.0f} rows/s) -> {output}", err=True)
        if summary.mix():
            typer.echo(f"  {summary.mix()}", err=True)
    if preview and output != "-":
        _preview(input, output, text_col, preview)


@app.command("score-dialogues")
@_user_errors
def score_dialogues(
    input: Annotated[str, typer.Argument(metavar="INPUT", help="conversations: JSON Lines {id, user_id, turns: [{speaker, text, time}]}, or a flat table with conversation_id, speaker, text, time columns")],
    output: Annotated[str, typer.Option("--output", "-o", help="output file (format by extension; never the input), - = stdout")] = "-",
    customer: Annotated[str, typer.Option("--customer", help="speaker names that are the customer, e.g. 于春晓,顾客 (default: the speaker 'customer')")] = "",
    agent: Annotated[str, typer.Option("--agent", help="speaker names that are agents; every other speaker is then the customer")] = "",
    model: ModelOpt = None,
    backend: BackendOpt = "onnx",
    threads: ThreadsOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 64,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", metavar="", help="no closing summary")] = False,
) -> None:
    """Score support conversations: the customer's turns, satisfaction (-2..2), start/end emotion, resolved.

    Outcomes are read from the customer's turns: by default those whose speaker is 'customer' (any case).
    For transcripts that name their speakers, say who the customer is (--customer) or who the agents are
    (--agent). A run in which every conversation fails for one reason exits 1 with that reason.
    """
    from emotag.dialogues import Speakers
    from emotag.scoring import every_row_failed, score_dialogues_file

    speakers = Speakers.from_names(customer.split(","), agent.split(","))
    summary = score_dialogues_file(_tagger(model, backend, threads), input, output, batch_size=batch_size,
                                   speakers=speakers)
    if not quiet and output != "-":
        typer.echo(f"scored {summary.rows} conversations ({summary.errors} with errors) -> {output}", err=True)
        if summary.mix():
            typer.echo(f"  {summary.mix(emotions='end emotions')}", err=True)
    reason = every_row_failed(summary)
    if reason is not None:
        hint = ""
        if reason == "no scorable customer turn" and summary.speakers:
            names = ", ".join(n for n, _ in summary.speakers.most_common(6))
            hint = (f"; the speakers are {names}: name the customer with --customer NAME[,NAME] "
                    "or the agents with --agent NAME[,NAME]")
        raise UserError(f"{input}: every conversation failed: {reason}{hint}")


@app.command()
@_user_errors
def profile(
    scored: Annotated[list[str], typer.Argument(help="scored records (emotag score / score-dialogues output)")],
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="per-user profiles, format by extension as for score (.jsonl, .json array, .csv, .tsv, .parquet, .xlsx; '-' = stdout, the default without --store)")] = None,  # noqa: UP045
    user_col: Annotated[str, typer.Option("--user-col")] = "user_id",
    time_col: Annotated[str, typer.Option("--time-col")] = "time",
    rules: Annotated[Optional[str], typer.Option("--rules", help="tag rules TOML (default: shipped rules)")] = None,  # noqa: UP045
    store: Annotated[Optional[str], typer.Option("--store", help="SQLite profile store to update incrementally")] = None,  # noqa: UP045
    key_file: Annotated[Optional[str], typer.Option("--key-file", help="pseudonymisation key file (else $EMOTAG_PSEUDONYM_KEY)")] = None,  # noqa: UP045
    allow_raw_ids: Annotated[bool, typer.Option("--allow-raw-ids", metavar="", help="persist raw user ids when no key is set")] = False,
    half_life: Annotated[float, typer.Option("--half-life", help="decay half-life in days")] = 30.0,
    now: Annotated[Optional[str], typer.Option("--now", help="profile as of this time (default: newest record)")] = None,  # noqa: UP045
    channels: Annotated[Optional[str], typer.Option("--channels", help="channel of each SCORED file in order, e.g. review,social,support (records without a `channel` field)")] = None,  # noqa: UP045
    strict: Annotated[bool, typer.Option("--strict", metavar="", help="stop at the first bad row (default: skip it, count it, name it)")] = False,
) -> None:
    """Fold scored records into per-user dynamic profiles and tags (易怒, 失望流失风险, ...; see docs/profiles.md).

    A bad row (empty timestamp, a score out of range) is skipped, counted in the summary and named
    (file, row, problem) in a report of the first few; --strict stops at the first one instead.
    """
    from itertools import chain

    from emotag.io import read_records
    from emotag.profiles import CHANNELS, USER_ERRORS, ProfileInputError, file_batch_id, run_profile

    if output is None and store is None:
        output = "-"  # like `score`: with nowhere else to go, the profiles go to standard output
    per_file = [c.strip() or None for c in channels.split(",")] if channels else [None] * len(scored)
    if len(per_file) != len(scored):
        raise UserError(f"--channels names {len(per_file)} channels for {len(scored)} files")
    # Checked before any file is read: an unknown name would fold every record into `other`, and a store
    # would record the files as applied, so the corrected run would be skipped as a repeat.
    unknown = list(dict.fromkeys(c for c in per_file if c is not None and c not in CHANNELS))
    if unknown:
        raise UserError(f"--channels: unknown channel {', '.join(map(repr, unknown))}; "
                        f"use {', '.join(CHANNELS)} (empty: the records' own `channel` field)")

    where: list[Any] = [None, 0]  # the file and 1-based row of the record being folded, for errors

    def with_channel(path: str, channel: str | None):
        for row, rec in enumerate(read_records(path), start=1):
            where[0], where[1] = path, row
            if channel and not rec.get("channel"):
                rec["channel"] = channel
            yield rec

    bad_rows: list[str] = []  # the first PROFILE_ERRORS_SHOWN bad rows, "file, row N: problem"
    bad_count = [0]

    def on_invalid(_index: int, problem: str) -> None:
        bad_count[0] += 1
        if len(bad_rows) < PROFILE_ERRORS_SHOWN:
            bad_rows.append(f"{where[0]}, row {where[1]}: {problem}")

    settings = {"user_col": user_col, "time_col": time_col, "rules_path": rules, "store_path": store,
                "key_file": key_file, "allow_raw_ids": allow_raw_ids, "half_life_days": half_life, "now": now,
                "strict": strict, "on_invalid": on_invalid, "inputs": scored}
    folded = 0
    recorded_with_bad: list[str] = []  # files the store recorded as applied although some of their rows were bad
    try:
        if store is None:  # one fold over every file
            # A file given twice (or two files with the same bytes) is folded once, as the store path does
            # with its per-file batch ids: folded twice its evidence would double and could create tags.
            first_of: dict[str, str] = {}  # batch id (content hash) -> the first path with it
            repeated: list[tuple[str, str]] = []
            unique: list[tuple[str, str | None]] = []
            for path, channel in zip(scored, per_file, strict=True):
                if _hashable(path):
                    batch = file_batch_id(path)
                    if batch in first_of:
                        repeated.append((path, first_of[batch]))
                        continue
                    first_of[batch] = path
                unique.append((path, channel))
            records = chain.from_iterable(with_channel(p, c) for p, c in unique)
            result = run_profile(records, output, **settings)
            result.repeated_inputs = repeated
            folded = result.stats.folded
            typer.echo(result.message(), err=True)
        else:  # one batch per file, so re-running any of them (alone or with others) is a no-op
            for i, (path, channel) in enumerate(zip(scored, per_file, strict=True)):
                last = i == len(scored) - 1
                batch = file_batch_id(path) if _hashable(path) else None
                bad_before = bad_count[0]
                result = run_profile(with_channel(path, channel), output if last else None, batch_id=batch,
                                     **settings)
                folded += result.stats.folded + result.already_applied
                if bad_count[0] > bad_before and result.stats.folded:  # a batch is recorded only when it folded
                    recorded_with_bad.append(path)
                typer.echo((f"{path}: " if len(scored) > 1 else "") + result.message(), err=True)
    except ProfileInputError as e:
        raise UserError(f"{where[0]}, row {where[1]}: {e.problem}") from None
    except USER_ERRORS as e:
        raise UserError((f"{where[0]}: " if where[0] and len(scored) > 1 else "") + str(e)) from None
    if bad_count[0]:
        _report_bad_rows(bad_rows, bad_count[0], recorded_with_bad)
        if not folded:  # every row was bad: nothing to show for the run, so it failed
            raise UserError(f"no row could be folded; first problem: {bad_rows[0]}")


def _hashable(path: str) -> bool:
    """Whether `profile` can take a content hash of an input before reading it: a regular file. Why ask: a
    missing path then gets the reader's one-line "file not found" (not a bare errno), and a pipe or stdin
    is read once, by the reader, instead of being drained by the hash (or blocking it)."""
    return path != "-" and Path(path).is_file()



#: How many bad rows `emotag profile` names; the rest are counted only.
PROFILE_ERRORS_SHOWN = 20


def _report_bad_rows(shown: list[str], total: int, recorded: list[str]) -> None:
    """The bounded error report of `emotag profile`: the first rows named, the rest counted; and the files a
    store recorded as applied although some of their rows were skipped (none: nothing to warn about)."""
    typer.echo(f"emotag: skipped {total} bad row{'s' if total != 1 else ''} (--strict stops at the first):",
               err=True)
    for line in shown:
        typer.echo(f"  {line}", err=True)
    if total > len(shown):
        typer.echo(f"  ... and {total - len(shown)} more", err=True)
    if recorded:
        typer.echo(f"  the store recorded {', '.join(recorded)} as applied: fold the corrected rows as a file of "
                   "their own (re-running the whole corrected file would count its good rows twice)", err=True)


@app.command()
@_user_errors
def serve(
    model: ModelOpt = None,
    backend: BackendOpt = "onnx",
    threads: ThreadsOpt = None,
    host: Annotated[str, typer.Option("--host", help="address to listen on (127.0.0.1: this machine only)")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8080,
    store: Annotated[Optional[str], typer.Option("--store", help="SQLite profile store for /v1/events and /v1/profiles")] = None,  # noqa: UP045
    workers: Annotated[int, typer.Option("--workers", min=1, help="server processes (each loads the model)")] = 1,
    api_keys: Annotated[Optional[str], typer.Option("--api-keys", help="file of API keys, one 'KEY' (read scope) or 'KEY write' per line (also: $EMOTAG_API_KEYS=KEY,KEY:write,...)")] = None,  # noqa: UP045
    audit_log: Annotated[Optional[str], typer.Option("--audit-log", help="append-only JSONL audit of writes and profile reads (default: STORE.audit.jsonl with --store)")] = None,  # noqa: UP045
    key_file: Annotated[Optional[str], typer.Option("--key-file", help="pseudonymisation key file (else $EMOTAG_PSEUDONYM_KEY)")] = None,  # noqa: UP045
    allow_raw_ids: Annotated[bool, typer.Option("--allow-raw-ids", metavar="", help="persist raw user ids when no key is set")] = False,
    rules: Annotated[Optional[str], typer.Option("--rules", help="tag rules TOML (default: shipped rules)")] = None,  # noqa: UP045
    half_life: Annotated[float, typer.Option("--half-life", help="decay half-life in days (the store's)")] = 30.0,
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="most texts per model batch")] = 64,
    batch_window_ms: Annotated[float, typer.Option("--batch-window-ms", min=0.0, help="how long a batch waits for company")] = 3.0,
    max_queue: Annotated[int, typer.Option("--max-queue", min=1, help="texts waiting before requests get 503")] = 2048,
) -> None:
    """Run the HTTP service: tag texts, score live dialogues, fold events into profiles (docs/serve.md)."""
    try:
        from emotag.serve import ServeSettings, run_server
    except ImportError as e:
        raise UserError(f"emotag serve needs the [serve] extra: pip install 'emotag[serve]' ({e})") from None
    from emotag.profiles import USER_ERRORS
    from emotag.serve.security import KeyFileError

    if audit_log is None and store is not None:
        audit_log = store + ".audit.jsonl"
    settings = ServeSettings(model=model, backend=backend, threads=threads, store=store, key_file=key_file,
                             allow_raw_ids=allow_raw_ids, rules=rules, api_keys=api_keys, audit_log=audit_log,
                             half_life_days=half_life, max_batch=max_batch, window_ms=batch_window_ms, max_queue=max_queue)
    try:
        run_server(settings, host=host, port=port, workers=workers)
    except (KeyFileError, *USER_ERRORS) as e:
        raise UserError(str(e)) from None


@app.command()
@_user_errors
def report(
    scored: Annotated[list[str], typer.Argument(help="scored records (emotag score / score-dialogues output)")],
    output: Annotated[str, typer.Option("--output", "-o", help="HTML file to write")] = "report.html",
    profiles: Annotated[Optional[str], typer.Option("--profiles", help="SQLite profile store for tag counts (default: computed from SCORED)")] = None,  # noqa: UP045
    title: Annotated[Optional[str], typer.Option("--title", help="page title")] = None,  # noqa: UP045
    text_col: Annotated[str, typer.Option("--text-col", help="the kept text column, for the 'reasons in their words' section (score --keep NAME)")] = "text",
) -> None:
    """Write a self-contained HTML report: emotions, polarity over time, products, reasons, support, tags."""
    from emotag.report import ReportError, build_report

    if "-" in scored:
        raise UserError("emotag report reads files, not stdin: pass the scored file paths")
    from emotag.io import same_file

    for src in scored:
        if same_file(src, output):
            raise UserError(f"{output}: is the input file {src}; writing there would replace it: choose another "
                            "output file")
    if (problem := _output_dir_problem(output)) is not None:
        raise UserError(problem)
    try:
        path = build_report(scored, output, profiles_db=profiles, title=title, text_col=text_col)
    except ReportError as e:
        raise UserError(str(e)) from None
    typer.echo(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)", err=True)


@app.command("aspects")
@_user_errors
def aspects_cmd(
    scored: Annotated[list[str], typer.Argument(help="records from emotag score --aspects (any output format)")],
    by: Annotated[Optional[str], typer.Option("--by", help="group by this kept column, e.g. product (score --keep product)")] = None,  # noqa: UP045
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="also write the table (csv, jsonl, xlsx, parquet; - = stdout JSONL)")] = None,  # noqa: UP045
    top: Annotated[int, typer.Option("--top", min=1, help="opinion phrases shown per side")] = 5,
    examples: Annotated[int, typer.Option("--examples", min=0, help="record ids kept per side")] = 3,
    id_col: Annotated[str, typer.Option("--id-col", help="the record id column")] = "id",
) -> None:
    """Per group and aspect category: mentions, positive/neutral/negative, negative share with a 95% interval,
    the opinion phrases on each side and example record ids; then what each group's complaints are about."""
    from emotag.aspects.aggregate import AspectTable, format_table, skipped_note
    from emotag.io import RecordWriter, read_records

    seen: set[str] = set()
    table = AspectTable(by, top, examples, id_col)
    for path in scored:
        with_list, before = 0, table.skipped["no_aspects"]
        for rec in read_records(path):
            seen.update(rec)
            with_list += table.add(rec)
        # one file scored without --aspects beside others would shrink the table unseen (a file of error
        # rows has no lists either, and says why in each row: it is counted, not refused)
        if not with_list and table.skipped["no_aspects"] > before:
            raise UserError(f"{path}: no record has an 'aspects' list: score it with emotag score --aspects")
    rows = table.rows()
    if not rows and not any(table.texts.values()):
        raise UserError(f"{', '.join(scored)}: no record has an 'aspects' list: score with emotag score --aspects")
    if (note := skipped_note(table)) is not None:
        typer.echo(f"emotag: {note}", err=True)
    if by and by not in seen:
        raise UserError(f"{', '.join(scored)}: no column '{by}' to group by (columns: {', '.join(sorted(seen))}); "
                        f"keep it when scoring: emotag score ... --keep {by} --aspects")
    if output:
        # the same guard as score and profile: an -o that names a scored file is refused, not overwritten
        with RecordWriter(output, inputs=[p for p in scored if p != "-"]) as writer:
            for r in rows:
                writer.write(r)
    if output != "-":
        typer.echo(format_table(rows))


@app.command("export-onnx")
@_user_errors
def export_onnx(
    model_dir: Annotated[str, typer.Argument(help="model directory")],
    quantize: Annotated[Optional[str], typer.Option("--quantize", help="int8")] = None,  # noqa: UP045
    calibration: Annotated[Optional[str], typer.Option("--calibration", help="text file, one text per line, like what you will score: sets the int8 activation ranges (default: emotag's sample texts)")] = None,  # noqa: UP045
) -> None:
    """Export MODEL_DIR to model.onnx (and model.int8.onnx with --quantize int8), checked against torch."""
    if quantize not in (None, "int8"):
        raise UserError(f"--quantize {quantize}: only int8 is supported")
    texts = None
    if calibration is not None:
        if quantize is None:
            raise UserError("--calibration only applies with --quantize int8")
        try:
            texts = [t for t in Path(calibration).read_text(encoding="utf-8").splitlines() if t.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{calibration}: cannot read calibration texts ({e})") from None
        if not texts:
            raise UserError(f"{calibration}: no calibration texts (one text per line)")
        from emotag.model.config import MIN_CALIBRATION_TEXTS

        if len(texts) < MIN_CALIBRATION_TEXTS:  # ranges from a handful of texts cut off what others reach
            typer.echo(f"emotag: warning: {calibration}: only {len(texts)} calibration text"
                       f"{'s' if len(texts) != 1 else ''}; the int8 ranges they set can clip other texts (one "
                       f"line: 93% of emotions as fp32 gives them); use {MIN_CALIBRATION_TEXTS} or more like "
                       "those you will score", err=True)
    from emotag.model.export import export_onnx as _export

    for p in _export(model_dir, quantize=quantize, calibration_texts=texts):
        typer.echo(f"wrote {p} ({p.stat().st_size / 1e6:.1f} MB)")


@app.command()
@_user_errors
def train(
    train_file: Annotated[str, typer.Argument(metavar="TRAIN", help="labelled csv/tsv/jsonl/json/parquet/xlsx")],
    output: Annotated[str, typer.Option("--output", "-o", help="model directory to write")],
    dev: Annotated[Optional[str], typer.Option("--dev", help="dev file (default: stratified split of TRAIN)")] = None,  # noqa: UP045
    base_model: Annotated[Optional[str], typer.Option("--base-model", help="emotag model dir (default: bundled) or HF encoder id/path")] = None,  # noqa: UP045
    labels: Annotated[Optional[str], typer.Option("--labels", help="custom label set a,b,c (default: inferred); --task regression: the scale's ends LO,HI")] = None,  # noqa: UP045
    text_col: Annotated[str, typer.Option("--text-col")] = "text",
    label_col: Annotated[str, typer.Option("--label-col", help="label column, or several 0/1 columns a,b,c (multi-label)")] = "label",
    task: Annotated[str, typer.Option("--task", help="emotion | polarity | regression (a number per row: 1-5 stars, a 0-1 score)")] = "emotion",
    epochs: Annotated[float, typer.Option("--epochs")] = 3.0,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 32,
    lr: Annotated[Optional[float], typer.Option("--lr")] = None,  # noqa: UP045
    seed: Annotated[int, typer.Option("--seed")] = 13,
    max_minutes: Annotated[Optional[float], typer.Option("--max-minutes", help="training time budget")] = None,  # noqa: UP045
    threads: ThreadsOpt = None,
    force: Annotated[bool, typer.Option("--force", metavar="", help="replace a model in OUTPUT even when the result is no better than the baselines")] = False,
) -> None:
    """Fine-tune on your own labelled comments; writes a model directory usable by `score --model`.

    A linear head on the base model's features comes first, then the whole network (--epochs 0: the head
    only); the best on dev is kept and compared with the base's zero-shot score and the majority class."""
    if task not in ("emotion", "polarity", "regression"):
        raise UserError(f"--task {task}: expected emotion, polarity or regression")
    import logging

    from emotag.train.finetune import finetune

    ft_log = logging.getLogger("emotag.finetune")
    handler, propagate = None, ft_log.propagate
    if not _interactive():  # no progress bar: the fine-tuner's step lines go to stderr instead
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        ft_log.addHandler(handler)
        ft_log.setLevel(logging.INFO)
        ft_log.propagate = False  # a root handler (set up by a dependency) would print each line twice
    cols = [c.strip() for c in label_col.split(",") if c.strip()]
    try:
        res = finetune(train_file, output, dev_path=dev, base_model=base_model, labels=labels, text_col=text_col,
                       label_cols=cols, task=task, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                       max_minutes=max_minutes, progress=_interactive(), threads=threads, force=force)
    finally:  # the handler writes to this call's stderr, which a library caller may close afterwards
        if handler is not None:
            ft_log.removeHandler(handler)
            ft_log.propagate = propagate
    before = res.dev_before or {}
    typer.echo(f"trained on {res.train_rows} rows ({res.dev_rows} dev rows, {res.dev_source}) in "
               f"{res.minutes:.1f} min, {res.steps} fine-tuning steps; kept: {res.chosen}; "
               f"labels: {', '.join(res.labels)}")
    if res.task == "regression":
        mean = res.baseline or {}
        typer.echo(f"  dev baseline, predicting the training mean: MAE {mean.get('mae', float('nan')):.4f}")
    else:
        typer.echo(f"  dev majority-class rate: {res.majority:.4f}")
    for k, v in res.dev_after.items():
        if k in ("n", "mae_se") or not isinstance(v, float):
            continue
        b = before.get(k)
        typer.echo(f"  dev {k}: {v:.4f}" + (f" (zero-shot {b:.4f})" if isinstance(b, float) else ""))
    if not res.better:
        typer.echo(f"not better than the baselines: {res.verdict}")
    typer.echo(f"wrote {res.out_dir} (report: {res.out_dir / 'eval_report.md'})")


@app.command("eval")
@_user_errors
def eval_(
    model_dir: Annotated[str, typer.Argument(help="model directory")],
    data: Annotated[list[str], typer.Argument(help="labelled files (SMP, CLUE, NLPCC, reviews, CVAT, STC-3 ...)")],
    backend: BackendOpt = "onnx",
    threads: ThreadsOpt = None,
    json_out: Annotated[Optional[str], typer.Option("--json", help="also write the metrics here")] = None,  # noqa: UP045
) -> None:
    """Compute the judged metrics of MODEL_DIR on labelled DATA files (emotion, polarity or satisfaction labels;
    SMP2020, CLUE, NLPCC, review, CVAT and STC-3 label sets are mapped onto emotag's own)."""
    import json

    from emotag.evaluate import evaluate_file

    tagger = _tagger(model_dir, backend, threads)
    results = []
    for d in data:
        res = evaluate_file(tagger, d)
        results.append(res)
        typer.echo(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items()))
    if json_out:
        Path(json_out).write_text(json.dumps(results, indent=1, ensure_ascii=False), encoding="utf-8")


@app.command()
@_user_errors
def info(model: Annotated[Optional[str], typer.Argument(help="model directory (default: bundled)")] = None) -> None:  # noqa: UP045
    """Show a model's labels, architecture, files and version."""
    from emotag.model.config import EmotagConfig, resolve_model_dir

    d = resolve_model_dir(model)
    cfg = EmotagConfig.load(d)
    enc = cfg.encoder
    typer.echo(f"emotag {__version__}")
    typer.echo(f"model      {cfg.name} {cfg.version} at {d}")
    # what the config says (a USE encoder has no layer count: its size is fixed, see emotag.model.use)
    size = " ".join(f"{name}={enc[key]}" for name, key in (("layers", "num_hidden_layers"), ("hidden", "hidden_size"),
                                                          ("vocab", "vocab_size")) if enc.get(key) is not None)
    kind = enc.get("model_type")
    typer.echo(f"encoder    {kind}{' (USE-multilingual v3: DAN + CNN n-grams, 512-d)' if kind == 'use' else ''} "
               f"{size}{f' base={cfg.base_model}' if cfg.base_model else ''}")
    typer.echo(f"n-grams    buckets={cfg.ngram.buckets} dim={cfg.ngram.dim} orders={list(cfg.ngram.orders)}")
    if cfg.lexical.buckets:
        scales = " ".join(f"{k}={v:g}" for k, v in cfg.lexical.scales.items())
        typer.echo(f"lexical    TF-IDF expert buckets={cfg.lexical.buckets} scales: {scales}")
    if cfg.polarity_valence_blend:
        typer.echo(f"polarity   score blends valence: weight={cfg.polarity_valence_blend:g} "
                   f"scale={cfg.valence_scale:.3g}")
    if cfg.dialogue.lexical_buckets:
        typer.echo(f"dialogues  satisfaction read-out + TF-IDF lexicon buckets={cfg.dialogue.lexical_buckets}")
    typer.echo(f"emotions   {', '.join(cfg.emotion_labels)}{' (multi-label)' if cfg.multi_label else ''}")
    typer.echo(f"polarity   {', '.join(cfg.polarity_labels) or '-'}")
    typer.echo(f"max length {cfg.max_length} tokens per window; temperature {cfg.temperature}")
    for f in sorted(d.iterdir()):
        if f.is_file():
            typer.echo(f"  {f.name:<24} {f.stat().st_size / 1e6:8.2f} MB")


def _progress_bar(enabled: bool, total: int | None):
    import contextlib

    if not enabled:
        return contextlib.nullcontext(None)
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    @contextlib.contextmanager
    def bar():
        with Progress(TextColumn("scoring"), BarColumn(), TaskProgressColumn(),
                      TextColumn("{task.completed}/{task.total} rows"), TextColumn("{task.fields[rate]} rows/s"),
                      TimeRemainingColumn(), transient=True) as prog:
            task = prog.add_task("score", total=total, rate="-")

            def advance(n: int) -> None:
                prog.advance(task, n)
                t = prog.tasks[0]
                if t.speed:
                    prog.update(task, rate=f"{t.speed:.0f}")

            yield advance

    return bar()


def _preview(input: str, output: str, text_col: str, n: int) -> None:
    """A readable table of the first N results beside their texts."""
    from itertools import islice

    from rich.console import Console
    from rich.table import Table

    from emotag.io import read_records, read_rows
    from emotag.labels import EMOTION_ZH, POLARITY_ZH

    if input == "-":  # standard input was read by the scoring: show a kept text column, if any
        texts = [str(r.get(text_col) or r.get("text") or "") for r in islice(read_records(output), n)]
    else:
        texts = [r.text or "" for r in islice(read_rows(input, text_col=text_col), n)]
    table = Table(title=f"{output} (first {len(texts)})", show_lines=False)
    for col in ("text", "emotion", "polarity", "score", "intensity"):
        table.add_column(col, overflow="fold", max_width=48 if col == "text" else None)
    for text, rec in zip(texts, islice(read_records(output), n), strict=False):
        if rec.get("error"):
            table.add_row(text[:60], f"[red]{rec['error']}[/red]", "", "", "")
            continue
        e, p = rec["emotion"], rec["polarity"]
        color = {"positive": "green", "negative": "red"}.get(p, "white")
        table.add_row(text[:60].replace("\n", " "), f"{EMOTION_ZH.get(e, e)} {e}",
                      f"[{color}]{POLARITY_ZH.get(p, p)} {p}[/{color}]",
                      f"{rec['polarity_score']:+.2f}", f"{rec['intensity']:.2f}")
    Console(stderr=False).print(table)


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    app()


if __name__ == "__main__":
    main()
