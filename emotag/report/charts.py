"""Static SVG charts with Chinese labels, drawn by matplotlib.

Why SVG with text as paths (`svg.fonttype = 'path'`): the report must render its Chinese labels on a
machine that has no CJK font and no network. Drawing each glyph as a path makes the SVG independent of
the viewer's fonts, and matplotlib defines each glyph used once per figure and references it (`<use>`),
so only the glyphs actually drawn end up in the file: a chart costs tens of kilobytes, not a font.

The CJK font itself is only needed where the report is *built*. `find_cjk_font` looks for one
(`$EMOTAG_CJK_FONT`, fonts matplotlib knows, fontconfig, common install paths);
`scripts/setup_report_deps.sh` installs Debian's fonts-wqy-microhei. Without any CJK font the charts fall
back to the English label identifiers rather than drawing empty boxes, and the report says so.

Figures are built with `matplotlib.figure.Figure` inside `rc_context` rather than pyplot: no global
figure registry, no GUI backend, and the caller's matplotlib settings are left untouched.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from emotag.labels import EMOTION_ZH, POLARITY_ZH

#: Family names of common CJK fonts, tried in order among the fonts matplotlib already knows.
CJK_FAMILIES = (
    "WenQuanYi Micro Hei", "WenQuanYi Zen Hei", "Noto Sans CJK SC", "Noto Sans SC", "Noto Serif CJK SC",
    "Source Han Sans SC", "Source Han Sans CN", "Sarasa Gothic SC", "SimHei", "Microsoft YaHei",
    "PingFang SC", "Heiti SC", "STHeiti", "Hiragino Sans GB", "AR PL UMing CN", "AR PL UKai CN",
    "Droid Sans Fallback",
)
_FONT_GLOBS = ("wqy*", "*CJK*", "*cjk*", "NotoSansSC*", "SourceHan*", "Droid*Fallback*", "uming*", "ukai*")
_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", str(Path.home() / ".fonts"),
              str(Path.home() / ".local/share/fonts"), "/Library/Fonts", "/System/Library/Fonts",
              "C:/Windows/Fonts")

EMOTION_COLORS = {
    "neutral": "#9e9e9e", "like": "#e377c2", "happiness": "#f5b800", "sadness": "#1f77b4",
    "anger": "#d62728", "disgust": "#8c6d31", "fear": "#9467bd", "surprise": "#17becf",
}
POLARITY_COLORS = {"negative": "#d62728", "neutral": "#9e9e9e", "positive": "#2ca02c"}
_EXTRA_COLORS = ("#bcbd22", "#ff7f0e", "#7f7f7f", "#aec7e8", "#98df8a", "#c49c94")
NEG, POS, BAR = "#d62728", "#2ca02c", "#4c72b0"


def _covers_cjk(path: str) -> bool:
    """True if the font file has glyphs for common Chinese characters (a "CJK" name alone is no proof)."""
    try:
        from matplotlib.ft2font import FT2Font

        font = FT2Font(path)
        return all(font.get_char_index(ord(c)) for c in "中文情绪负面")
    except Exception:  # noqa: BLE001 - any unreadable font just does not qualify
        return False


def _fontconfig_candidates() -> list[str]:
    if not shutil.which("fc-list"):
        return []
    try:
        out = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True, text=True, timeout=10,
                             check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return sorted(line.strip().rstrip(":") for line in out.splitlines() if line.strip())


def _glob_candidates() -> list[str]:
    found: list[str] = []
    for d in _FONT_DIRS:
        root = Path(d)
        if not root.is_dir():
            continue
        for pattern in _FONT_GLOBS:
            for ext in ("ttc", "ttf", "otf"):
                found.extend(str(p) for p in sorted(root.rglob(f"{pattern}.{ext}")))
    return found


@lru_cache(maxsize=1)
def find_cjk_font() -> str | None:
    """Path of a font file that can draw Chinese, or None. Cached: the search walks font directories."""
    env = os.environ.get("EMOTAG_CJK_FONT")
    if env and Path(env).is_file() and _covers_cjk(env):
        return env
    from matplotlib import font_manager

    known = {f.name: f.fname for f in font_manager.fontManager.ttflist}
    for family in CJK_FAMILIES:
        path = known.get(family)
        if path and _covers_cjk(path):
            return path
    for path in (*_fontconfig_candidates(), *_glob_candidates()):
        if path.lower().endswith((".ttf", ".ttc", ".otf")) and _covers_cjk(path):
            return path
    return None


@lru_cache(maxsize=1)
def _font_family() -> str | None:
    """Register the CJK font with matplotlib (it may have been installed after matplotlib's font cache)."""
    path = find_cjk_font()
    if path is None:
        return None
    from matplotlib import font_manager

    font_manager.fontManager.addfont(path)
    return font_manager.FontProperties(fname=path).get_name()


def cjk_available() -> bool:
    return _font_family() is not None


def _rc() -> dict[str, Any]:
    family = _font_family()
    return {
        "svg.fonttype": "path",
        "svg.hashsalt": "emotag-report",  # stable element ids: the same data gives the same file
        # matplotlib falls back glyph by glyph along this list (Latin digits, minus sign, ...)
        "font.family": [family, "DejaVu Sans"] if family else ["DejaVu Sans"],
        "axes.unicode_minus": False,
        "font.size": 10,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.titlesize": 12,
        "axes.titleweight": "normal",
    }


def emotion_label(e: str) -> str:
    """Chinese display name with the identifier, or the identifier alone when no CJK font exists."""
    return f"{EMOTION_ZH[e]} {e}" if cjk_available() and e in EMOTION_ZH else e


def polarity_label(p: str) -> str:
    return f"{POLARITY_ZH[p]} {p}" if cjk_available() and p in POLARITY_ZH else p


def zh(chinese: str, english: str) -> str:
    """Chart text: Chinese when it can be drawn, else English."""
    return chinese if cjk_available() else english


def _safe_text(s: str) -> str:
    """User strings (product names) in charts: without a CJK font, non-Latin text would be empty boxes; a `$`
    is escaped, or matplotlib reads `$5 off_50% $9` as math markup (and fails on it)."""
    if not (cjk_available() or s.isascii()):
        s = s.encode("ascii", "replace").decode().replace("?", "·")
    return s.replace("$", r"\$")


def emotion_color(e: str, i: int = 0) -> str:
    return EMOTION_COLORS.get(e, _EXTRA_COLORS[i % len(_EXTRA_COLORS)])


_ID_RE = re.compile(r'id="([^"]+)"')


def _to_svg(fig: Any, prefix: str) -> str:
    """Serialise a figure to an SVG element for inlining in HTML.

    The XML prolog and DOCTYPE are dropped (not allowed inside HTML), and every element id gets a
    per-chart prefix: several inline SVGs share one id namespace, and matplotlib's clip-path and glyph
    ids could otherwise collide between charts.
    """
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None}, bbox_inches="tight")
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    ids = set(_ID_RE.findall(svg))
    if ids:
        pattern = re.compile(r'(id="|#)(' + "|".join(re.escape(i) for i in sorted(ids, key=len, reverse=True))
                             + r')(?=["\)])')
        svg = pattern.sub(lambda m: f"{m.group(1)}{prefix}-{m.group(2)}", svg)
    # let the page scale charts down on narrow screens while keeping their aspect ratio
    svg = re.sub(r'<svg([^>]*?) width="([\d.]+)pt" height="([\d.]+)pt"',
                 r'<svg\1 width="\2pt" height="\3pt" style="max-width:100%;height:auto"', svg, count=1)
    return svg.strip()


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def emotion_chart(labels: Sequence[str], counts: Sequence[int], mean_probs: Sequence[float]) -> str:
    """Horizontal bars: share of records whose top emotion is each label, with the mean probability."""
    import matplotlib
    from matplotlib import ticker

    with matplotlib.rc_context(_rc()):
        fig = _figure(5.4, 0.36 * len(labels) + 0.8)
        ax = fig.add_subplot()
        total = max(sum(counts), 1)
        y = list(range(len(labels)))[::-1]
        shares = [c / total for c in counts]
        colors = [emotion_color(e, i) for i, e in enumerate(labels)]
        ax.barh(y, shares, color=colors, height=0.62, label=zh("主要情绪占比", "top-emotion share"))
        ax.scatter(mean_probs, y, marker="|", s=260, color="#222222", zorder=3,
                   label=zh("平均概率", "mean probability"))
        for yi, s, c in zip(y, shares, counts, strict=True):
            ax.text(s + 0.01, yi, f"{c} ({s:.0%})", va="center", fontsize=9)
        ax.set_yticks(y, [_safe_text(emotion_label(e)) for e in labels])
        ax.set_xlim(0, min(1.0, max([*shares, *mean_probs, 0.1]) * 1.25 + 0.05))
        ax.xaxis.set_major_formatter(ticker.PercentFormatter(1.0, decimals=0))
        ax.legend(loc="lower right", frameon=False, fontsize=9)
        return _to_svg(fig, "emo")


def polarity_chart(counts: dict[str, int]) -> str:
    """One stacked bar of negative / neutral / positive shares."""
    import matplotlib
    from matplotlib import ticker

    with matplotlib.rc_context(_rc()):
        fig = _figure(5.4, 1.2)
        ax = fig.add_subplot()
        total = max(sum(counts.values()), 1)
        left = 0.0
        for p in ("negative", "neutral", "positive"):
            share = counts.get(p, 0) / total
            ax.barh([0], [share], left=left, color=POLARITY_COLORS[p], height=0.6)
            if share >= 0.16:
                ax.text(left + share / 2, 0, f"{polarity_label(p)} {share:.0%}", ha="center", va="center",
                        color="white", fontsize=9)
            left += share
        ax.set_xlim(0, 1)
        ax.set_yticks([])
        ax.xaxis.set_major_formatter(ticker.PercentFormatter(1.0, decimals=0))
        ax.spines["left"].set_visible(False)
        ax.set_title(zh("极性占比", "Polarity"), loc="left")
        return _to_svg(fig, "pol")


def timeline_chart(labels: Sequence[str], means: Sequence[float], counts: Sequence[int], unit: str) -> str:
    """Mean polarity_score per day/week (line) over the number of records (bars, right axis)."""
    import matplotlib

    with matplotlib.rc_context(_rc()):
        fig = _figure(10.5, 3.2)
        ax = fig.add_subplot()
        x = list(range(len(labels)))
        ax2 = ax.twinx()
        ax2.bar(x, counts, color="#c7d3e8", width=0.8, zorder=1)
        ax2.set_ylabel(zh("记录数", "records"))
        ax2.spines["right"].set_visible(True)
        ax.set_zorder(ax2.get_zorder() + 1)
        ax.patch.set_visible(False)
        ax.axhline(0, color="#888888", linewidth=0.8)
        ax.plot(x, means, color="#333333", linewidth=1.6, zorder=3)
        ax.scatter(x, means, c=[NEG if m < 0 else POS for m in means], s=28, zorder=4)
        ax.set_ylim(-1.05, 1.05)
        ax.set_ylabel(zh("平均极性分", "mean polarity_score"))
        step = max(1, len(labels) // 12)
        ax.set_xticks(x[::step], [lab[5:] if unit == "day" else lab for lab in labels[::step]],
                      rotation=45, ha="right", fontsize=8)
        return _to_svg(fig, "time")


def product_chart(names: Sequence[str], means: Sequence[float], counts: Sequence[int]) -> str:
    """Mean polarity per product, most negative on top."""
    import matplotlib

    with matplotlib.rc_context(_rc()):
        fig = _figure(5.4, 0.3 * len(names) + 0.9)
        ax = fig.add_subplot()
        y = list(range(len(names)))[::-1]
        ax.barh(y, means, color=[NEG if m < 0 else POS for m in means], height=0.62)
        ax.axvline(0, color="#555555", linewidth=0.8)
        for yi, m, c in zip(y, means, counts, strict=True):
            ax.text(m + (0.03 if m >= 0 else -0.03), yi, f"{m:+.2f} (n={c})", va="center",
                    ha="left" if m >= 0 else "right", fontsize=8)
        ax.set_yticks(y, [_safe_text(n) for n in names])
        ax.set_xlim(-1.35, 1.35)
        ax.set_xlabel(zh("平均极性分", "mean polarity_score"))
        return _to_svg(fig, "prod")


def satisfaction_chart(values: Sequence[float]) -> str:
    """Histogram of conversation satisfaction on the STC-3 scale [-2, 2]."""
    import matplotlib
    from matplotlib import ticker

    with matplotlib.rc_context(_rc()):
        fig = _figure(5.4, 2.7)
        ax = fig.add_subplot()
        edges = [-2.0 + 0.5 * i for i in range(9)]
        counts = [0] * 8
        for v in values:
            counts[min(7, max(0, int((v + 2.0) // 0.5)))] += 1
        cmap = matplotlib.colormaps["RdYlGn"]
        ax.bar([e + 0.25 for e in edges[:-1]], counts, width=0.46,
               color=[cmap(i / 7) for i in range(8)], edgecolor="#555555", linewidth=0.5)
        ax.set_xticks(edges)
        ax.set_xlabel(zh("满意度（-2 很不满意 … 2 很满意）", "satisfaction (-2 … 2)"))
        ax.set_ylabel(zh("会话数", "conversations"))
        ax.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.set_title(zh("客服满意度分布", "Support satisfaction"), loc="left")
        return _to_svg(fig, "sat")


def start_end_chart(labels: Sequence[str], start: Sequence[int], end: Sequence[int]) -> str:
    """Customer emotion at the first vs the last turn, grouped bars."""
    import matplotlib
    from matplotlib import ticker

    with matplotlib.rc_context(_rc()):
        fig = _figure(5.4, 2.7)
        ax = fig.add_subplot()
        x = list(range(len(labels)))
        ax.bar([i - 0.2 for i in x], start, width=0.4, color="#f28e2b", label=zh("首轮情绪", "first turn"))
        ax.bar([i + 0.2 for i in x], end, width=0.4, color="#4e79a7", label=zh("末轮情绪", "last turn"))
        ax.set_xticks(x, [_safe_text(emotion_label(e)) for e in labels], rotation=30, ha="right", fontsize=8)
        ax.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.legend(frameon=False, fontsize=9)
        ax.set_title(zh("客户首轮与末轮情绪", "Customer emotion, first vs last turn"), loc="left")
        return _to_svg(fig, "turn")


def tag_chart(labels: Sequence[str], users: Sequence[int]) -> str:
    """Users carrying each profile tag."""
    import matplotlib
    from matplotlib import ticker

    with matplotlib.rc_context(_rc()):
        fig = _figure(5.4, 0.34 * len(labels) + 0.8)
        ax = fig.add_subplot()
        y = list(range(len(labels)))[::-1]
        palette = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7")
        ax.barh(y, users, color=[palette[i % len(palette)] for i in range(len(labels))], height=0.62)
        for yi, u in zip(y, users, strict=True):
            ax.text(u + 0.05 * max(max(users, default=1), 1), yi, str(u), va="center", fontsize=9)
        ax.set_yticks(y, [_safe_text(lab) for lab in labels])
        ax.set_xlim(0, max(max(users, default=1), 1) * 1.2)
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.set_xlabel(zh("用户数", "users"))
        return _to_svg(fig, "tags")
