"""`emotag report`: a self-contained HTML page built from the repository samples, checked as text and as
pixels (headless Chromium screenshot), so a chart that silently fails to render is caught.

Chromium and the CJK font are installed by scripts/setup_report_deps.sh, which `make test` runs before
pytest; when either is missing these tests fail with that hint instead of skipping, because a skipped
render test would hide exactly the regressions it exists for.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import SAMPLES

SETUP_HINT = "run scripts/setup_report_deps.sh (make test does) to install chromium and fonts-wqy-microhei"


@pytest.fixture(scope="module")
def scored(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The three samples scored by the tiny model, keeping the columns a report uses.

    Reviews go through CSV (flattened `emotions.*` columns) to cover reading tabular scored files back.
    """
    from emotag.scoring import score_dialogues_file, score_file
    from emotag.tagger import Tagger

    out = tmp_path_factory.mktemp("scored")
    tagger = Tagger.load(str(tiny_model_dir))
    paths = {
        "reviews": out / "reviews.scored.csv",
        "reviews_notext": out / "reviews.notext.jsonl",
        "posts": out / "posts.scored.jsonl",
        "dialogues": out / "conversations.scored.jsonl",
    }
    score_file(tagger, str(SAMPLES / "reviews.csv"), str(paths["reviews"]), id_col="review_id",
               keep=("user_id", "time", "product", "text"))
    score_file(tagger, str(SAMPLES / "reviews.csv"), str(paths["reviews_notext"]), id_col="review_id",
               keep=("user_id", "time", "product"))
    score_file(tagger, str(SAMPLES / "posts.jsonl"), str(paths["posts"]), keep=("user_id", "time", "text"))
    score_dialogues_file(tagger, str(SAMPLES / "conversations.jsonl"), str(paths["dialogues"]))
    return paths


@pytest.fixture(scope="module")
def report(scored: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from emotag.report import build_report

    out = tmp_path_factory.mktemp("report") / "report.html"
    path = build_report([str(scored["reviews"]), str(scored["posts"]), str(scored["dialogues"])], str(out))
    assert path == out and out.is_file()
    assert not list(out.parent.glob(".*.tmp")), "temporary file left behind"
    return out


def test_cjk_font_found() -> None:
    from emotag.report import charts

    assert charts.find_cjk_font(), f"no CJK font for the chart labels: {SETUP_HINT}"


def test_report_is_self_contained_and_complete(report: Path) -> None:
    page = report.read_text(encoding="utf-8")
    # nothing is fetched: no external src/href/url(), no scripts, no stylesheets by reference
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert not re.search(r"url\(\s*['\"]?\s*(?:https?:)?//", page, re.I)
    assert "<script" not in page and "<link" not in page and "<img" not in page
    for section in ("emotions", "timeline", "products", "reasons", "support", "tags"):
        assert f'<section id="{section}">' in page, section
    for label in ("情绪分布", "极性随时间变化", "最负面的产品", "客服满意度", "用户画像标签",
                  "愤怒 anger", "负面 negative", "面膜", "易怒"):
        assert label in page, label
    # charts: inline SVG whose text is drawn as glyph paths (no <text>, so no font needed to view them)
    svgs = re.findall(r"<svg\b.*?</svg>", page, re.S)
    assert len(svgs) >= 6
    assert all("<text" not in s and "<path" in s for s in svgs)
    # ids are prefixed per chart, so several inline SVGs cannot capture each other's clip paths or glyphs
    ids = re.findall(r'\bid="([^"]+)"', "".join(svgs))
    assert len(ids) == len(set(ids))
    # header: counts of the inputs (100 reviews + 100 posts, 20 conversations)
    assert "<b>200</b>" in page and "<b>20</b>" in page
    # the "reasons" section found words (text was kept) and no raw user id leaked into the page
    assert "negative texts of the worst products" in page
    assert not re.search(r"\bu0[1-9]\b", page)
    assert 50_000 < len(page.encode()) < 2_000_000


def test_report_without_text_column_says_so(scored: dict[str, Path], tmp_path: Path) -> None:
    from emotag.report import build_report

    out = build_report([str(scored["reviews_notext"])], str(tmp_path / "r.html"), title="无原文 <test>")
    page = out.read_text(encoding="utf-8")
    assert "--keep text" in page
    assert "无原文 &lt;test&gt;" in page  # the title is escaped
    assert "negative texts of the worst products" not in page
    assert "no dialogue records given" in page


def test_report_says_why_records_without_polarity_are_left_out(tmp_path: Path) -> None:
    """A model without a polarity head (custom labels on a plain encoder) writes polarity_score null:
    those records are counted and explained, not reported as scoring errors."""
    import json

    from emotag.report import build_report

    src = tmp_path / "custom.jsonl"
    src.write_text("".join(json.dumps({"id": i, "emotion": "表扬", "emotions": {"表扬": 0.9, "投诉": 0.1},
                                       "polarity": None, "polarity_score": None, "intensity": 0.5,
                                       "error": None}, ensure_ascii=False) + "\n" for i in range(5)),
                   encoding="utf-8")
    page = build_report([str(src)], str(tmp_path / "r.html")).read_text(encoding="utf-8")
    assert "records without polarity_score" in page and "无极性 no polarity" in page


def test_report_cli_with_profile_store(scored: dict[str, Path], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from emotag.cli import app

    monkeypatch.setenv("EMOTAG_PSEUDONYM_KEY", "report-test-key-0123456789")
    runner = CliRunner()
    db = tmp_path / "profiles.db"
    res = runner.invoke(app, ["profile", str(scored["reviews"]), str(scored["dialogues"]), "--store", str(db)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "sub" / "report.html"
    res = runner.invoke(app, ["report", str(scored["reviews"]), "--profiles", str(db), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "来自画像库" in out.read_text(encoding="utf-8")
    res = runner.invoke(app, ["report", str(tmp_path / "missing.jsonl"), "-o", str(out)])
    assert res.exit_code == 1 and "missing.jsonl" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["report", str(scored["reviews"]), "--profiles", str(tmp_path / "no.db")])
    assert res.exit_code == 1 and "no.db" in res.output
    assert not (tmp_path / "no.db").exists()  # a report never creates a store


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(f"headless chromium not found: {SETUP_HINT}")


def test_report_renders_in_chromium(report: Path, tmp_path: Path) -> None:
    from PIL import Image

    png = tmp_path / "shot.png"
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}", "--window-size=1280,3000",
           report.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
    assert png.is_file(), f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"

    img = Image.open(png).convert("RGB")
    assert img.size == (1280, 3000)
    # not blank: real variation in brightness
    gray = img.convert("L")
    hist = gray.histogram()
    n = sum(hist)
    mean = sum(i * c for i, c in enumerate(hist)) / n
    var = sum(c * (i - mean) ** 2 for i, c in enumerate(hist)) / n
    assert var > 200, f"screenshot looks blank (variance {var:.0f})"
    # several distinct colours, each covering a visible area
    colours = img.quantize(colors=64).convert("RGB").getcolors(64) or []
    assert len([c for c, _ in colours if c >= 400]) >= 6, colours
    # chart fills that only the SVG charts draw as areas: polarity red/green bars, timeline count bars
    counts = {rgb: c for c, rgb in img.getcolors(1 << 20) or []}
    red, green, timeline = counts.get((214, 39, 40), 0), counts.get((44, 160, 44), 0), counts.get((199, 211, 232), 0)
    assert red + green > 5000, (red, green)
    assert timeline > 1000, timeline
    # page height plausible: content (not the page background) reaches well down the 3000 px window
    bg = img.getpixel((5, 2990))
    rows_with_content = [y for y in range(0, 3000, 10)
                         if any(img.getpixel((x, y)) != bg for x in range(0, 1280, 8))]
    assert rows_with_content and rows_with_content[-1] > 2000, "page is implausibly short"


def _records(path: Path, rows: list[dict]) -> str:
    import json

    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _rec(i: int, product: str, score: float = -0.6, **extra: object) -> dict:
    return {"id": i, "product": product, "time": "2026-03-0" + str(1 + i % 9), "text": "包装破损了",
            "emotion": "anger" if score < 0 else "like", "emotions": {"anger": 0.8, "like": 0.2},
            "polarity": "negative" if score < 0 else "positive", "polarity_score": score, "intensity": 0.5,
            "error": None, **extra}


def test_user_data_is_escaped_even_when_it_looks_like_a_cell(tmp_path: Path) -> None:
    """A product name, record id or dialogue id that starts with '<td' is the user's data: escaped, never
    passed through as a rendered cell (one ran as a script in the page)."""
    from emotag.report import build_report

    evil = "<td><script>alert(1)</script>"
    unit = {"aspect": "包装", "opinion": "破损了", "polarity": "negative", "score": -0.5, "category": "包装",
            "aspect_span": [0, 2], "opinion_span": [2, 5]}
    rows = [_rec(i, f"p{i}") for i in range(4)] + [_rec(9, evil, 0.8)]
    rows += [_rec(10, "面膜", aspects=[unit]) | {"id": evil}, _rec(11, "面膜", aspects=[unit])]
    page = build_report([_records(tmp_path / "r.jsonl", rows)], str(tmp_path / "r.html")).read_text(encoding="utf-8")
    assert "<script>alert(1)" not in page and "&lt;td&gt;&lt;script&gt;alert(1)" in page


def test_dollar_signs_in_product_names_are_text_not_math(tmp_path: Path) -> None:
    """matplotlib reads $…$ as math markup: a product named `$5 off_50% $9` crashed the chart."""
    from emotag.report import build_report

    rows = [_rec(i, name) for i, name in enumerate(["$5 off_50% $9", "$$", "满$100减$20", "普通"])]
    page = build_report([_records(tmp_path / "r.jsonl", rows)], str(tmp_path / "r.html")).read_text(encoding="utf-8")
    assert "$5 off_50% $9" in page


def test_the_products_table_lists_the_most_negative_and_counts_the_rest(tmp_path: Path) -> None:
    """Every product was a table row: a catalogue of 50,000 made a 5 MB page. The table keeps the
    TABLE_PRODUCTS most negative and says how many more there are."""
    from emotag.report import build_report
    from emotag.report.html import TABLE_PRODUCTS

    n = TABLE_PRODUCTS + 7
    rows = [_rec(i, f"商品{i:04d}", score=-1.0 + i / n) for i in range(n)]
    page = build_report([_records(tmp_path / "r.jsonl", rows)], str(tmp_path / "r.html")).read_text(encoding="utf-8")
    assert "商品0000" in page and f"商品{TABLE_PRODUCTS - 1:04d}" in page
    assert f"商品{n - 1:04d}" not in page and "7 more products not shown" in page


def test_aspect_categories_past_the_table_are_counted(tmp_path: Path) -> None:
    """The aspect table shows a product's six most complained-about categories; the rest are named with
    their mention counts, not dropped (emotag aspects lists them all)."""
    from emotag.report import build_report

    cats = ["包装", "物流", "价格", "服务", "效果", "外观", "尺寸", "体验"]
    rows = [_rec(i, "面膜", aspects=[{"aspect": c, "opinion": "差", "polarity": "negative", "score": -0.5,
                                       "category": c, "aspect_span": None, "opinion_span": [0, 1]}])
            for i, c in enumerate(cats)]
    page = build_report([_records(tmp_path / "r.jsonl", rows)], str(tmp_path / "r.html")).read_text(encoding="utf-8")
    assert "2 more categories, 2 mentions, 2 negative" in page


def test_a_file_of_error_rows_says_so_not_that_columns_are_missing(tmp_path: Path) -> None:
    from emotag.report import build_report

    rows = [{"id": i, "user_id": "u1", "time": "2024-05-01", "product": "P1", "text": "", "emotion": None,
             "emotions": None, "polarity": None, "polarity_score": None, "intensity": None,
             "error": "text is empty"} for i in range(2)]
    page = build_report([_records(tmp_path / "e.jsonl", rows)], str(tmp_path / "e.html")).read_text(encoding="utf-8")
    assert "no scored records: 2 of 2 have an error" in page
    assert "no parseable time column" not in page and "no product column" not in page
    assert "no text column" not in page


_RENDER = """
import sys
from datetime import datetime, timezone

from emotag.report import collect
from emotag.report.html import render

sys.stdout.write(render(collect(sys.argv[1:]), "t", generated=datetime(2026, 1, 1, tzinfo=timezone.utc)))
"""


def test_the_same_input_gives_the_same_report_in_every_process(scored: dict[str, Path], tmp_path: Path) -> None:
    """Phrase counts were tied-broken by set iteration order, which Python salts per process: the word
    tables of one input changed from run to run. Pages from processes with different hash seeds are equal."""
    import os
    import sys

    phrases = ["物流太慢", "包装破损", "客服态度差", "价格太贵", "质量一般", "颜色不对", "尺寸偏小", "味道难闻"]
    rows = [_rec(i, "面膜", text="，".join(phrases[j % len(phrases)] for j in range(i, i + 4)))
            for i in range(2 * len(phrases))]
    inputs = [_records(tmp_path / "ties.jsonl", rows), str(scored["reviews"]), str(scored["posts"])]
    pages = []
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", _RENDER, *inputs], env=env, capture_output=True, timeout=300)
        assert done.returncode == 0, done.stderr.decode()
        pages.append(done.stdout)
    assert b"<td>" in pages[0] and pages[0] == pages[1] == pages[2]


@pytest.mark.parametrize("below", ["x.html", "sub/x.html"])
def test_an_output_below_a_regular_file_is_one_line_before_any_work(tmp_path: Path, below: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """-o FILE/x.html printed an internal-error traceback (FileExistsError from makedirs), and only after
    the whole report had been computed."""
    from typer.testing import CliRunner

    import emotag.report
    from emotag.cli import app

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the report was computed although it cannot be written")

    monkeypatch.setattr(emotag.report, "build_report", never)
    (tmp_path / "FILE").write_text("a file", encoding="utf-8")
    src = _records(tmp_path / "r.jsonl", [_rec(0, "p")])
    out = tmp_path / "FILE" / below
    res = CliRunner().invoke(app, ["report", src, "-o", str(out)])
    assert res.exit_code == 1, res.output
    assert res.output == f"emotag: {out}: cannot write there: {tmp_path / 'FILE'} is not a directory\n"


@pytest.mark.parametrize(("make", "said"), [
    (lambda f: f.mkdir(), "is a file, not a directory"),  # FileExistsError
    (lambda f: (f / "x").mkdir(parents=True), "a part of this path is a file, not a directory"),  # NotADirectoryError
])
def test_an_output_path_through_a_file_is_a_user_error_in_every_command(tmp_path: Path, make, said) -> None:
    """Past the up-front checks (another command, a path that changed meanwhile) it is still one line."""
    import typer
    from typer.testing import CliRunner

    from emotag.cli import _user_errors

    (tmp_path / "FILE").write_text("a file", encoding="utf-8")
    cmd = typer.Typer()

    @cmd.command()
    @_user_errors
    def write() -> None:
        make(tmp_path / "FILE")

    res = CliRunner().invoke(cmd, [])
    assert res.exit_code == 1 and res.output.count("\n") == 1, res.output
    assert res.output.startswith(f"emotag: {tmp_path / 'FILE'}") and said in res.output
    assert "internal error" not in res.output


def test_the_resolved_share_leaves_out_conversations_that_cannot_tell(tmp_path: Path) -> None:
    """score-dialogues writes resolved null for one customer turn: such a conversation is neither resolved
    nor unresolved, so the share is over the others, and it says over how many."""
    from emotag.report import build_report

    convs = [{"id": f"c{i}", "satisfaction": 0.5, "start_emotion": "anger", "end_emotion": "like",
              "resolved": r, "turns": [], "error": None} for i, r in enumerate([True, False, None, None])]
    page = build_report([_records(tmp_path / "d.jsonl", convs)], str(tmp_path / "d.html")).read_text(encoding="utf-8")
    assert "50.0% (2 of 4)" in page
