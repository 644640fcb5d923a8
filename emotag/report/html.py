"""Render `ReportData` as one self-contained HTML page (inline CSS and SVG, no scripts, no fetches).

A plain f-string template instead of Jinja: the page has a fixed shape, and every value that comes from
the user's data (product names, words, ids, file names) goes through `html.escape` in one helper, `_e`.

Chinese text in the tables is drawn with the viewer's fonts, plus, when the CJK font used for the charts
can be subset (fontTools ships with matplotlib), an embedded font holding exactly the characters the page
uses, so the tables read correctly on a machine without any CJK font, offline.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime

from emotag import __version__
from emotag.labels import EMOTION_ZH, POLARITY_ZH
from emotag.profiles.timeutil import format_time
from emotag.report import charts
from emotag.report.data import ReportData, WordTable

#: Rows listed in per-conversation and per-period tables before "... more" is shown.
MAX_TABLE_ROWS = 60

CSS = """
:root { --fg:#1d2330; --muted:#667085; --line:#e4e7ec; --neg:#d62728; --pos:#2ca02c; --bg:#f7f8fa; }
* { box-sizing:border-box; }
body { margin:0; font:14px/1.55 EmotagCJK, "PingFang SC", "Microsoft YaHei", "Noto Sans CJK SC",
       "WenQuanYi Micro Hei", system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color:var(--fg); background:var(--bg); }
header { background:#1d2330; color:#fff; padding:22px 32px 18px; }
header h1 { margin:0 0 4px; font-size:24px; }
header .meta { color:#c8cdd8; font-size:13px; }
.cards { display:flex; flex-wrap:wrap; gap:10px; margin-top:14px; }
.card { background:#2b3344; border-radius:8px; padding:8px 14px; min-width:120px; }
.card b { display:block; font-size:20px; }
.card span { color:#c8cdd8; font-size:12px; }
nav { padding:8px 32px; background:#fff; border-bottom:1px solid var(--line); font-size:13px; }
nav a { color:#3056d3; margin-right:14px; text-decoration:none; }
main { max-width:1240px; margin:0 auto; padding:8px 24px 40px; }
section { background:#fff; border:1px solid var(--line); border-radius:10px; padding:16px 22px;
          margin:18px 0; }
h2 { margin:2px 0 10px; font-size:19px; }
h2 small, h3 small { color:var(--muted); font-weight:normal; font-size:13px; margin-left:6px; }
h3 { font-size:15px; margin:16px 0 6px; }
.charts { display:flex; flex-wrap:wrap; gap:12px; align-items:flex-start; }
figure { margin:6px 0; }
table { border-collapse:collapse; margin:8px 0 4px; font-size:13px; }
th, td { border-bottom:1px solid var(--line); padding:4px 10px; text-align:left; vertical-align:top; }
th { background:#f2f4f7; font-weight:600; }
td.n { text-align:right; font-variant-numeric:tabular-nums; }
.neg { color:var(--neg); } .pos { color:var(--pos); }
.note { color:var(--muted); font-size:13px; }
.notice { background:#fff8e6; border:1px solid #f5d48a; border-radius:6px; padding:8px 12px; margin:8px 0; }
.words { display:grid; grid-template-columns:repeat(auto-fill, minmax(340px, 1fr)); gap:10px 18px; }
.words table { width:100%; }
.scroll { max-height:340px; overflow-y:auto; display:inline-block; padding-right:6px; }
code { background:#f2f4f7; padding:1px 4px; border-radius:4px; }
header code { background:#2b3344; color:#e6e9ef; }
footer { color:var(--muted); font-size:12px; text-align:center; padding:10px; }
"""

SECTIONS = (
    ("emotions", "情绪分布", "Emotion distribution"),
    ("timeline", "极性随时间变化", "Polarity over time"),
    ("products", "最负面的产品", "Most negative products"),
    ("aspects", "差评集中在哪些方面", "What the complaints are about"),
    ("reasons", "用户的原话：高频词", "Reasons in their words"),
    ("support", "客服满意度", "Support satisfaction"),
    ("tags", "用户画像标签", "Profile tags across users"),
)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(v: float | None, fmt: str = "{:+.3f}") -> str:
    return "–" if v is None else fmt.format(v)


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v:.1%}"


class _Cell(str):
    """A table cell rendered here, from numbers only: `_table` passes it through. Why a type and not a
    prefix: a record id or product name that starts with '<td' is the user's data and must be escaped
    (one did: `<td><script>…` as a dialogue id ran in the page)."""


def _signed_cell(v: float | None) -> _Cell:
    cls = "" if v is None else " neg" if v < 0 else " pos" if v > 0 else ""
    return _Cell(f'<td class="n{cls}">{_num(v)}</td>')


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """Rows of cells: plain strings are escaped, `_Cell`s (rendered here from numbers) pass through."""
    out = ["<table><thead><tr>", *(f"<th>{_e(h)}</th>" for h in headers), "</tr></thead><tbody>"]
    for row in rows:
        out.append("<tr>")
        for i, cell in enumerate(row):
            if isinstance(cell, _Cell):
                out.append(cell)
            else:
                out.append(f'<td class="n">{_e(cell)}</td>' if i in numeric else f"<td>{_e(cell)}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _notice(text: str) -> str:
    return f'<p class="notice">{text}</p>'


def _section(key: str, body: str) -> str:
    zh, en = next((z, e) for k, z, e in SECTIONS if k == key)
    return f'<section id="{key}"><h2>{zh}<small>{en}</small></h2>{body}</section>'


def _fig(svg: str, caption: str) -> str:
    return f'<figure role="img" aria-label="{_e(caption)}">{svg}</figure>'


def _emotion_name(e: str | None) -> str:
    if e is None:
        return "–"
    return f"{EMOTION_ZH[e]} {e}" if e in EMOTION_ZH else e


# -- sections --------------------------------------------------------------------------------------


def _emotions(d: ReportData) -> str:
    if not d.scored:
        if d.no_polarity:
            return _notice(f"{d.no_polarity} 条记录没有极性分数 (records without polarity_score: their model has "
                           "no polarity head, and this report is built on polarity).")
        return _notice("没有可用的打分记录 (no scored records in the inputs).")
    labels = [e for e in d.labels if d.emotion_counts.get(e) or d.emotion_prob_sum.get(e)] or d.labels
    probs = d.emotion_mean_probs()
    counts = [d.emotion_counts.get(e, 0) for e in labels]
    emo_fig = _fig(charts.emotion_chart(labels, counts, [probs[e] for e in labels]), "情绪分布")
    pol_fig = _fig(charts.polarity_chart(dict(d.polarity_counts)), "极性占比")
    rows = [[_emotion_name(e), str(c), _pct(c / d.scored), f"{probs[e]:.3f}"] for e, c in zip(labels, counts,
                                                                                          strict=True)]
    pol_rows = [[f"{POLARITY_ZH[p]} {p}", str(d.polarity_counts.get(p, 0)),
                 _pct(d.polarity_counts.get(p, 0) / d.scored)] for p in ("negative", "neutral", "positive")]
    return ('<div class="charts">' + emo_fig
            + _table(["情绪 emotion", "主要情绪条数 records", "占比 share", "平均概率 mean prob."], rows, (1, 2, 3))
            + "</div>"
            + '<div class="charts">' + pol_fig
            + _table(["极性 polarity", "条数 records", "占比 share"], pol_rows, (1, 2)) + "</div>"
            + '<p class="note">主要情绪 = 概率最高的情绪；黑色竖线 = 所有记录的平均概率。'
            f"平均极性分 {_num(d.polarity_mean)}，平均强度 {_num(d.intensity_mean, '{:.3f}')}。</p>")


def _none_scored(d: ReportData) -> str | None:
    """The notice for a section with nothing to show because no record was scored (every one an error row):
    then a missing time, product or text column is not the reason, and saying so would send the user off."""
    if d.scored or not d.records:  # (dialogue-only input: the sections say what they lack as before)
        return None
    return _notice(f"没有成功打分的记录（{d.errors} 条出错） (no scored records: {d.errors} of {d.records} "
                   "have an error; see their error field).")


def _timeline(d: ReportData) -> str:
    if (none := _none_scored(d)) is not None:
        return none
    if not d.timeline:
        return _notice("记录中没有可解析的 <code>time</code> 字段，无法画时间趋势 "
                       "(no parseable time column; keep it with <code>--keep time</code>).")
    unit_zh = "周（周一开始）" if d.timeline_unit == "week" else "日"
    b = d.timeline
    svg = charts.timeline_chart([x.label for x in b], [x.mean for x in b], [x.count for x in b], d.timeline_unit)
    shown = b if len(b) <= MAX_TABLE_ROWS else b[-MAX_TABLE_ROWS:]
    rows = [[x.label, str(x.count), _signed_cell(x.mean), _pct(x.negative_share)] for x in shown]
    more = (f'<p class="note">仅列出最近 {MAX_TABLE_ROWS} 个时间段（共 {len(b)} 个）。</p>'
            if len(b) > MAX_TABLE_ROWS else "")
    undated = f"；{d.undated} 条记录没有时间，未计入" if d.undated else ""
    return (_fig(svg, "极性随时间变化")
            + f'<p class="note">按{unit_zh}汇总，时间按北京时间 (UTC+8){undated}。</p>'
            + '<div class="scroll">'
            + _table([f"{'周' if d.timeline_unit == 'week' else '日期'} period", "条数 records",
                      "平均极性分 mean polarity_score", "负面占比 negative"], rows, (1, 3)) + "</div>" + more)


#: Rows of the products table: the most negative ones. Why a cap: a catalogue of 50,000 products made a
#: 5 MB page nobody scrolls; the per-product detail lives in `emotag aspects` and the profiles.
TABLE_PRODUCTS = 200


def _products(d: ReportData) -> str:
    if (none := _none_scored(d)) is not None:
        return none
    if not d.products:
        return _notice("记录中没有 <code>product</code> 字段 (no product column; keep it with "
                       "<code>--keep product</code>).")
    top = d.products[:15]
    svg = charts.product_chart([p.name for p in top], [p.mean for p in top], [p.count for p in top])
    worst = {p.name for p in d.worst_products}
    shown = d.products[:TABLE_PRODUCTS]
    rows = [[("★ " if p.name in worst else "") + p.name, str(p.count), _signed_cell(p.mean),
             _pct(p.negative_share)] for p in shown]
    note = (f'<p class="note">★ = 平均极性最低的 {len(d.worst_products)} 个产品'
            f"（至少 {d.worst_min_count} 条记录）；原因见下一节。")
    if len(d.products) > len(shown):
        note += (f" 表中列出平均极性最低的 {len(shown)} 个，另有 {len(d.products) - len(shown)} 个未列出 "
                 f"({len(d.products) - len(shown)} more products not shown; every product: "
                 "<code>emotag aspects SCORED --by product</code>).")
    note += "</p>"
    return ('<div class="charts">' + _fig(svg, "各产品平均极性") + '<div class="scroll">'
            + _table(["产品 product", "条数 records", "平均极性分 mean polarity_score", "负面占比 negative"],
                     rows, (1, 3)) + "</div></div>" + note)


def _aspects(d: ReportData, per_product: int = 6, trend_categories: int = 3) -> str:
    """Per product: which aspect categories draw the negative opinions, in the buyers' words, and how each
    category's negative share moved month by month (issue #18)."""
    table = d.aspects
    if table is None:
        return _notice("记录中没有 <code>aspects</code> 字段 (no aspects: score with "
                       "<code>emotag score --aspects --keep product,time</code>).")
    rows = table.rows()
    out = []
    for group in dict.fromkeys(r["group"] for r in rows):
        everything = [r for r in rows if r["group"] == group]
        mine = everything[:per_product]  # the categories with the most complaints; the rest counted below
        body = [[r["category"], str(r["mentions"]), str(r["positive"]), str(r["neutral"]), str(r["negative"]),
                 f"{r['negative_share']:.0%} ({r['negative_share_low']:.0%}–{r['negative_share_high']:.0%})",
                 "、".join(r["top_negative"][:4]) or "–", "、".join(r["top_positive"][:4]) or "–",
                 " ".join(str(i) for i in r["negative_examples"]) or "–"] for r in mine]
        name = group if group != "(all)" else "全部 all records"
        block = [f"<h3>{_e(name)} <small>{mine[0]['texts'] if mine else 0} 条 texts</small></h3>",
                 _table(["方面 category", "提及 mentions", "正 +", "中 =", "负 −", "负面占比 (95% CI)",
                         "差评原话 complaints", "好评原话 praise", "差评例 ids"], body, (1, 2, 3, 4))]
        if len(everything) > len(mine):
            rest = everything[len(mine):]
            block.append(f'<p class="note">另有 {len(rest)} 个方面 ({len(rest)} more categories, '
                         f'{sum(r["mentions"] for r in rest)} mentions, {sum(r["negative"] for r in rest)} negative): '
                         f'{_e("、".join(str(r["category"]) for r in rest))}</p>')
        worst = [r for r in mine if r["negative"]][:trend_categories]
        months = sorted({m for r in worst for m, _, _ in table.trend(group, r["category"])})
        if worst and len(months) > 1:
            trend_rows = []
            for r in worst:
                by_month = {m: (neg, n) for m, neg, n in table.trend(group, r["category"])}
                trend_rows.append([r["category"]] + [
                    f"{by_month[m][0]}/{by_month[m][1]} ({by_month[m][0] / by_month[m][1]:.0%})" if m in by_month
                    else "–" for m in months])
            block.append('<p class="note">负面提及 / 全部提及，按月 (negative / all mentions per month):</p>'
                         + _table(["方面 category", *months], trend_rows, tuple(range(1, len(months) + 1))))
        out.append("".join(block))
    note = ('<p class="note">每条评论里的每个观点单独计数；负面占比的区间是 95% Wilson 区间。'
            "明细：<code>emotag aspects SCORED --by product</code>。</p>")
    return "".join(out) + note


def _word_block(t: WordTable) -> str:
    n = max(len(t.words), len(t.phrases))
    rows = []
    for i in range(n):
        w = t.words[i] if i < len(t.words) else ("", 0)
        p = t.phrases[i] if i < len(t.phrases) else ("", 0)
        rows.append([w[0], str(w[1]) if w[0] else "", p[0], str(p[1]) if p[0] else ""])
    body = _table(["词 word", "篇数 texts", "短语 phrase", "篇数 texts"], rows, (1, 3)) if rows else \
        '<p class="note">（没有足够的词）</p>'
    return f"<div><h3>{_e(t.title)}<small>{t.texts} 条文本</small></h3>{body}</div>"


def _reasons(d: ReportData) -> str:
    if (none := _none_scored(d)) is not None:
        return none
    if not d.has_text:
        return _notice("输入中没有 <code>text</code> 字段，无法统计原话中的高频词。打分时用 "
                       "<code>emotag score INPUT --keep text</code> 保留原文即可 "
                       "(no text column in the scored records: score with <code>--keep text</code>).")
    sample = ""
    if d.word_texts < d.text_total:
        sample = f"（从 {d.text_total} 条中随机抽取 {d.word_texts} 条）"
    out = [f'<p class="note">jieba 分词，去掉停用词、标点和数字；电话、邮箱、网址先被屏蔽。'
           f"计数为包含该词的文本条数{sample}。短语 = 相邻两个词，至少出现在 2 条文本中。</p>"]
    if d.product_words:
        out.append("<h3>最负面产品的负面评论<small>negative texts of the worst products</small></h3>")
        out.append('<div class="words">' + "".join(_word_block(t) for t in d.product_words) + "</div>")
    elif d.products:
        out.append('<p class="note">最负面的产品没有带原文的负面记录。</p>')
    out.append("<h3>各情绪的高频词<small>top words per emotion</small></h3>")
    out.append('<div class="words">' + "".join(_word_block(t) for t in d.emotion_words) + "</div>")
    return "".join(out)


def _support(d: ReportData) -> str:
    if not d.dialogue_records:
        return _notice("输入中没有客服会话记录（<code>emotag score-dialogues</code> 的输出，含 "
                       "<code>satisfaction</code> 字段）(no dialogue records given).")
    dl = d.dialogues
    if not dl:
        return _notice(f"{d.dialogue_records} 条会话记录全部无法打分 (all dialogue records have errors).")
    sats = [x.satisfaction for x in dl]
    mean = sum(sats) / len(sats)
    resolved = [x.resolved for x in dl if x.resolved is not None]
    labels = [e for e in d.labels if any(x.start_emotion == e or x.end_emotion == e for x in dl)]
    start = Counter(x.start_emotion for x in dl)
    end = Counter(x.end_emotion for x in dl)
    charts_html = _fig(charts.satisfaction_chart(sats), "客服满意度分布")
    if labels:
        charts_html += _fig(charts.start_end_chart(labels, [start[e] for e in labels], [end[e] for e in labels]),
                            "客户首轮与末轮情绪")
    stats = [
        ["会话数 conversations", str(len(dl))],
        ["无法打分 errors", str(d.dialogue_errors)],
        ["平均满意度 mean satisfaction", f"{mean:+.2f}"],
        ["不满意占比 satisfaction < 0", _pct(sum(s < 0 for s in sats) / len(sats))],
        # a conversation with one customer turn has resolved null (cannot tell): not in the share, whose
        # denominator is then shown, so a share of few conversations does not pass for one of all
        ["情绪好转占比 resolved", (_pct(sum(resolved) / len(resolved)) if resolved else "–")
         + (f" ({len(resolved)} of {len(dl)})" if len(resolved) < len(dl) else "")],
    ]
    worst = sorted(dl, key=lambda x: (x.satisfaction, x.id))[:10]
    rows = [[x.id, _signed_cell(x.satisfaction), _emotion_name(x.start_emotion),
             _emotion_name(x.end_emotion), {True: "是 yes", False: "否 no", None: "–"}[x.resolved], str(x.turns)]
            for x in worst]
    return (f'<div class="charts">{charts_html}' + _table(["", ""], stats, (1,)) + "</div>"
            + "<h3>满意度最低的会话<small>lowest satisfaction</small></h3>"
            + _table(["会话 id", "满意度 satisfaction", "首轮情绪 start", "末轮情绪 end",
                      "好转 resolved", "客户轮数 turns"], rows, (5,))
            + '<p class="note">满意度为 STC-3 量表 [-2, 2]；“好转”= 客户最后一轮的极性高于第一轮'
                                '（只有一轮客户发言的会话无从判断，不计入占比）。</p>')


def _tags(d: ReportData) -> str:
    if d.profiles_source is None:
        return _notice(_e(d.profiles_note or "没有用户画像 (no profiles)."))
    source = ("来自画像库 (profile store)" if d.profiles_source == "store"
              else "由本报告的记录在内存中计算（未保存）(computed in memory from these records)")
    if not d.users:
        return _notice(f"画像中没有用户 (no users). {source}")
    shown = d.tags
    fig = ""
    if any(t.users for t in shown):
        fig = _fig(charts.tag_chart([f"{t.display} {t.tag}" for t in shown], [t.users for t in shown]),
                   "用户画像标签")
    rows = [[t.display, t.tag, str(t.users), _pct(t.users / d.users), f"{t.mean_score:.2f}" if t.users else "–"]
            for t in shown]
    body = ('<div class="charts">' + fig
            + _table(["标签 tag", "id", "用户数 users", "占比 share", "平均分 mean score"], rows, (2, 3, 4))
            + "</div>"
            + f'<p class="note">{source}：{d.users} 位用户，其中 {d.users_tagged} 位至少有一个标签。'
            "标签只在证据数达到规则的最少条数时出现。</p>")
    if d.user_top_emotions:
        # ties by label, not by which user came first: a profile store's row order is no order at all
        ranked = sorted(d.user_top_emotions.items(), key=lambda kv: (-kv[1], kv[0]))
        top_rows = [[_emotion_name(e), str(c), _pct(c / d.users)] for e, c in ranked]
        body += ("<h3>用户的主要情绪<small>users by top emotion</small></h3>"
                 + _table(["情绪 emotion", "用户数 users", "占比 share"], top_rows, (1, 2)))
    return body


# -- page ------------------------------------------------------------------------------------------


def _header(d: ReportData, title: str, generated: datetime) -> str:
    cards = [
        (str(d.records), "条文本记录 records"),
        (str(d.scored), "成功打分 scored"),
        (str(d.errors), "无法打分 errors"),
    ]
    if d.no_polarity:
        cards.append((str(d.no_polarity), "无极性 no polarity"))
    if d.dialogue_records:
        cards.append((str(d.dialogue_records), "客服会话 conversations"))
    if d.users:
        cards.append((str(d.users), "用户 users"))
    if d.polarity_mean is not None:
        cards.append((f"{d.polarity_mean:+.2f}", "平均极性 mean polarity"))
    meta = [f"生成时间 generated {_e(generated.isoformat(timespec='seconds'))}",
            "输入 inputs: " + ", ".join(f"<code>{_e(p)}</code>" for p in d.inputs)]
    if d.models:
        meta.append("模型 model: " + ", ".join(_e(m) for m, _ in d.models.most_common()))
    if d.first_time is not None and d.last_time is not None:
        meta.append(f"时间范围 {_e((format_time(d.first_time) or '')[:10])} – "
                    f"{_e((format_time(d.last_time) or '')[:10])}")
    card_html = "".join(f'<div class="card"><b>{v}</b><span>{_e(k)}</span></div>' for v, k in cards)
    return (f"<header><h1>{_e(title)}</h1><div class=\"meta\">{' · '.join(meta)}</div>"
            f'<div class="cards">{card_html}</div></header>')


def _font_face(page: str) -> str:
    """@font-face with the chart font subset to the page's non-ASCII characters, or "" if impossible."""
    path = charts.find_cjk_font()
    chars = {c for c in page if ord(c) > 0x7F and not c.isspace()}
    if path is None or not chars:
        return ""
    try:
        from fontTools import subset
        from fontTools.ttLib import TTFont
    except ImportError:
        return ""
    logging.getLogger("fontTools").setLevel(logging.ERROR)  # "FFTM NOT subset" and friends
    try:
        font = TTFont(path, fontNumber=0, lazy=True) if path.lower().endswith(".ttc") else TTFont(path, lazy=True)
        opts = subset.Options()
        opts.layout_features = []
        opts.hinting = False
        opts.name_IDs = [1, 2]
        opts.notdef_outline = True
        sub = subset.Subsetter(opts)
        sub.populate(text="".join(sorted(chars)))
        sub.subset(font)
        buf = io.BytesIO()
        font.flavor = None
        font.recalcTimestamp = False  # head.modified stays the source font's: the same input, the same page
        font.save(buf)
    except Exception:  # noqa: BLE001 - the embedded font is a nicety; the viewer's fonts remain
        return ""
    b64 = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'@font-face {{ font-family: EmotagCJK; src: url(data:font/ttf;base64,{b64}) format("truetype"); }}\n'


def render(d: ReportData, title: str, generated: datetime | None = None) -> str:
    """The whole page as a string."""
    generated = generated or datetime.now().astimezone()
    body = [
        _header(d, title, generated),
        "<nav>" + "".join(f'<a href="#{k}">{z}</a>' for k, z, _ in SECTIONS) + "</nav><main>",
    ]
    if not charts.cjk_available():
        body.append(_notice("生成报告的机器上没有中文字体，图表使用英文标签 (no CJK font found where the report "
                            "was built: chart labels are in English; run scripts/setup_report_deps.sh or set "
                            "EMOTAG_CJK_FONT)."))
    body += [
        _section("emotions", _emotions(d)),
        _section("timeline", _timeline(d)),
        _section("products", _products(d)),
        _section("aspects", _aspects(d)),
        _section("reasons", _reasons(d)),
        _section("support", _support(d)),
        _section("tags", _tags(d)),
        "</main>",
        f"<footer>emotag {_e(__version__)} · 情绪 emotions: "
        + " ".join(f"{z}={_e(e)}" for e, z in EMOTION_ZH.items())
        + "</footer>",
    ]
    page_body = "\n".join(body)
    font_css = _font_face(title + page_body)
    return ("<!DOCTYPE html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{font_css}{CSS}</style></head>\n<body>\n{page_body}\n</body></html>\n")
