"""Short review sentences whose polarity is decided by composition: negation scope, double negation and the
clause after a turn (但是/不过/可惜...). Generated from templates, for the network's training rows.

Why: the corpora almost never negate a complaint word (不难吃, 没有异味, 一点也不失望) and label contrastive
reviews by either clause, so a network trained on them reads 难吃 as negative whatever stands before it
and keeps the first clause of 物流很快但是包装破损了. Composer-level fixes were measured and do not move
it (MODEL_CARD, sessions 7, 8 and 10): the network's reading of the words outweighs every cue. These rows
teach the network the operators themselves, across the domains users score (food, products, electronics,
clothing, hotels, service, delivery): negations as minimal pairs (the plain predicate beside its negation),
contrast pairs (A+，但是B- / A-，但是B+), double negation, and opinion-free questions and statements.

The vocabulary was written for this module from everyday review language; it overlaps the linguistic
suite's common words (难吃, 失望, 卡...) but not its sentences (`tests/data/linguistic_pairs.tsv`; the
model card says how the suite's cases split by whether they share a word with these lists);
`tests/test_compositional.py` checks that no suite sentence is, or is inside, a row the recipe makes (with
the recipe's seeds: another seed can make one, e.g. 这家外卖很难吃, so rerun that test after changing it).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from pathlib import Path

from emotag.train.corpora import DEV_FRACTION, Example, sentic

# domain -> (subjects, positive adjectives, negative adjectives, negative events, negative-event nouns)
# adjectives take 不 (不难吃, 不太新鲜); events take 没/没有 (没有死机); nouns take 没有/一点…都没有/挑不出
DOMAINS: dict[str, tuple[tuple[str, ...], ...]] = {
    "food": (("味道", "这道菜", "汤", "米饭", "牛肉", "面条", "饺子", "口味", "烤鱼", "这家外卖", "炒饭", "鸡翅",
              "小龙虾", "红烧肉"),
             ("好吃", "香", "新鲜", "入味", "鲜美", "可口", "地道", "嫩", "正宗", "爽口", "够味"),
             ("难吃", "咸", "油腻", "腥", "淡", "凉", "硬", "酸", "干", "老", "苦"),
             ("变质", "洒", "凉透", "坏掉"),
             ("异味", "头发", "沙子", "腥味", "怪味", "虫子")),
    "product": (("质量", "做工", "材质", "这个杯子", "这款包", "这个台灯", "颜色", "包装", "这个锅", "这把伞", "箱子",
                 "这个水壶", "拉链"),
                ("结实", "耐用", "精致", "好用", "实用", "划算", "满意", "牢固", "顺手", "美观", "厚实"),
                ("粗糙", "廉价", "劣质", "难用", "差", "糟糕", "脆", "薄", "松", "难看", "次"),
                ("掉色", "变形", "开线", "漏水", "生锈", "断", "裂", "坏", "破"),
                ("划痕", "破损", "瑕疵", "线头", "毛刺", "异味", "污渍", "色差", "问题", "毛病", "缺点")),
    "electronics": (("电池", "屏幕", "信号", "系统", "这台电脑", "这部手机", "音质", "蓝牙", "耳机", "摄像头", "键盘",
                     "充电器", "路由器"),
                    ("流畅", "清晰", "耐用", "稳定", "灵敏", "快", "好用", "省电", "给力", "顺滑"),
                    ("卡", "烫", "慢", "模糊", "耗电", "差", "卡顿", "难用", "吵", "迟钝"),
                    ("死机", "闪退", "断连", "黑屏", "重启", "发烫", "掉线", "失灵", "坏"),
                    ("杂音", "延迟", "卡顿", "坏点", "漏光", "故障", "问题", "毛病", "缺点", "划痕")),
    "clothing": (("面料", "裤子", "这件外套", "鞋底", "版型", "这条裙子", "袜子", "这双靴子", "尺码", "领口", "衬衫"),
                 ("舒服", "合身", "透气", "柔软", "好看", "显瘦", "保暖", "挺括", "亲肤", "百搭"),
                 ("扎人", "难看", "紧", "闷", "硬", "薄", "掉毛", "廉价", "起皱", "臃肿"),
                 ("起球", "掉色", "缩水", "开胶", "变形", "开线", "磨脚", "褪色"),
                 ("线头", "色差", "异味", "瑕疵", "污渍", "破洞", "毛病", "缺点")),
    "hotel": (("床", "卫生间", "前台", "隔音", "早餐", "位置", "空调", "床单", "浴室", "大堂", "泳池", "走廊", "窗外"),
              ("干净", "安静", "舒服", "宽敞", "方便", "整洁", "明亮", "温馨", "丰富", "便利"),
              ("脏", "吵", "潮", "旧", "小", "臭", "简陋", "乱", "暗", "偏"),
              ("漏水", "停电", "坏", "发霉", "堵"),
              ("霉味", "噪音", "蚊子", "蟑螂", "头发", "污渍", "异味", "问题")),
    "service": (("客服", "服务员", "老板", "售后", "店员", "师傅", "导购", "经理", "管家", "收银员", "老板娘"),
                ("热情", "耐心", "周到", "专业", "礼貌", "负责", "细心", "靠谱", "贴心", "诚恳", "客气"),
                ("冷淡", "敷衍", "凶", "傲慢", "粗鲁", "磨蹭", "差", "糟糕", "冷漠", "懒"),
                ("骗人", "推脱", "甩锅", "发火", "摆脸色", "乱收费"),
                ("架子", "脾气", "套路", "怨言", "问题")),
    "delivery": (("快递", "物流", "配送", "送货速度", "骑手", "外卖小哥", "这次的包裹", "发货速度", "快递员"),
                 ("快", "准时", "及时", "迅速", "稳妥", "给力", "靠谱"),
                 ("慢", "拖沓", "磨叽", "晚", "粗暴", "离谱", "糟糕"),
                 ("送错", "丢件", "压坏", "摔坏", "延误", "超时"),
                 ("破损", "延误", "压痕", "问题")),
}

# feelings about the purchase as a whole: (positive, negative); 让…失望 takes 没/从不, 满意 takes 不
FEEL_POS = ("满意", "喜欢", "推荐", "放心", "开心", "惊喜", "值得", "认可")
FEEL_NEG = ("失望", "后悔", "担心", "心疼", "生气", "郁闷", "难过", "糟心", "闹心")
CONTEXT = ("", "", "", "说实话，", "用了一周，", "第二次买了，", "昨天收到，", "总的来说，", "跟朋友一起，",
           "整体感觉", "刚拿到手，", "实话实说，", "吃了几次，", "住了两晚，")
END = ("", "", "", "。", "！", "，", "啊", "哦", "呢", "。。")
DEG_POS = ("很", "非常", "特别", "挺", "真", "相当", "超级", "十分", "比较")
DEG_NEG = ("很", "非常", "特别", "太", "有点", "真", "相当", "超级", "比较", "有些")
NOT_ADJ = ("不", "一点也不", "一点都不", "并不", "完全不", "根本不", "也不", "从来不", "丝毫不", "都不", "不会")
NOT_ADJ_POS = ("不", "不太", "不怎么", "一点也不", "并不", "没那么", "根本不", "不是很", "不够", "一点都不")
NOT_EVENT = ("没有", "没", "从没", "一次都没", "从来没有", "也没有", "都没", "完全没有")
NOUN_NONE = ("没有{n}", "一点{n}都没有", "没有任何{n}", "没发现{n}", "没有一点{n}", "没有什么{n}", "连{n}都没有")
FLAWS = ("毛病", "缺点", "问题", "瑕疵")  # what 挑不出 / 找不到 take (挑不出毛病), not 异味 or 延迟
FLAW_NONE = ("挑不出{n}", "找不到{n}", "挑不出任何{n}", "找不出什么{n}")
NOUN_SOME = ("有{n}", "有好多{n}", "全是{n}", "{n}一大堆", "{n}太多了", "有不少{n}", "到处是{n}", "有明显的{n}")
TURNS = ("但是", "可是", "不过", "然而", "就是", "只是", "可惜", "但", "没想到", "结果")
RESERVATION_TURNS = ("就是", "只是", "可惜", "结果")  # they introduce a reservation: only before a negative clause
CONCESSIVE_TURNS = ("但是", "可是", "但")  # the turns 虽然 can lead
HABIT = ("经常", "老是", "总是")  # habitual: no 了 after the event (经常死机, not 经常死机了)
POL = {True: "positive", False: "negative"}


def _plain_adj(rng: random.Random, adj: str, positive: bool) -> str:
    deg = rng.choice(DEG_POS if positive else DEG_NEG)
    return f"{deg}{adj}" + ("了" if deg == "太" else "")


def _clause(rng: random.Random, dom: tuple[tuple[str, ...], ...], positive: bool) -> str:
    """A plain opinion clause of the given polarity (subject + degree + adjective, or a complaint)."""
    subj, pos, neg, events, nouns = dom
    s = rng.choice(subj)
    r = rng.random()
    if positive or r < 0.6:
        return s + _plain_adj(rng, rng.choice(pos if positive else neg), positive)
    if r < 0.8:
        return s + _event(rng, rng.choice(events), ("", "居然", "又") + HABIT)
    return s + rng.choice(NOUN_SOME).format(n=rng.choice(nouns))


def _pair(rng: random.Random, dom: tuple[tuple[str, ...], ...]) -> list[tuple[str, bool]]:
    """One negation minimal pair: the plain sentence and its negation, opposite polarities."""
    subj, pos, neg, events, nouns = dom
    s = rng.choice(subj)
    kind = rng.random()
    if kind < 0.35:  # negated complaint adjective: 不难吃 / 很难吃
        a = rng.choice(neg)
        return [(s + rng.choice(NOT_ADJ) + a, True), (s + _plain_adj(rng, a, False), False)]
    if kind < 0.55:  # negated praise adjective: 不好吃 / 很好吃
        a = rng.choice(pos)
        return [(s + rng.choice(NOT_ADJ_POS) + a, False), (s + _plain_adj(rng, a, True), True)]
    if kind < 0.75:  # a problem that did not happen: 没有死机 / 死机了
        e = rng.choice(events)
        return [(s + rng.choice(NOT_EVENT) + e + rng.choice(("", "过")), True),
                (s + _event(rng, e, ("", "又", "已经") + HABIT), False)]
    n = rng.choice(nouns)  # a flaw that is absent: 没有异味 / 有异味
    forms = NOUN_NONE + (FLAW_NONE if n in FLAWS else ())
    return [(s + rng.choice(forms).format(n=n), True), (s + rng.choice(NOUN_SOME).format(n=n), False)]


def _event(rng: random.Random, event: str, adverbs: tuple[str, ...]) -> str:
    """A problem that happened: 又死机了, 已经断了; after a habitual adverb without 了 (经常死机)."""
    adv = rng.choice(adverbs)
    return adv + event + ("" if adv in HABIT else "了")


def _feeling(rng: random.Random) -> list[tuple[str, bool]]:
    """Negated feelings about the purchase: 没让我失望 / 很失望, 不满意 / 很满意."""
    if rng.random() < 0.6:
        f = rng.choice(FEEL_NEG)
        if rng.random() < 0.5:  # the shop or the purchase makes the buyer feel it
            who = rng.choice(("这个商家", "这个牌子", "这一单", "这回网购", "这位卖家"))
            return [(who + rng.choice((f"没让我{f}", f"从不让人{f}", f"没有让人{f}", f"一点也没让我{f}")), True),
                    (who + rng.choice(("让我很", "让人非常", "让我有点", "真让人")) + f, False)]
        who = rng.choice(("", "我", "收到以后", "用了以后", "说实话"))  # the buyer feels it
        return [(who + rng.choice((f"一点也不{f}", f"不用{f}", f"完全不{f}", f"并不{f}")), True),
                (who + rng.choice(("很", "非常", "太", "有点", "真的很")) + f, False)]
    f = rng.choice(FEEL_POS)
    who = rng.choice(("", "我", "收到以后", "用了以后", "对这一单"))
    neg = rng.choice((f"不{f}", f"一点也不{f}", f"不太{f}", f"很不{f}", f"并不{f}"))
    return [(who + neg, False), (who + rng.choice(("很", "非常", "特别", "挺", "真的很")) + f, True)]


def _double(rng: random.Random, dom: tuple[tuple[str, ...], ...]) -> list[tuple[str, bool]]:
    """Double negation (没有不好吃的) beside a single negation of the same words, and 不得不说 (a double
    negative that introduces an opinion: the opinion decides)."""
    subj, pos, neg, _, _ = dom
    s, a = rng.choice(subj), rng.choice(pos)
    form = rng.randrange(3)
    if form == 0:
        return [(f"{s}没有不{a}的", True), (f"{s}没有一个{a}的", False)]
    if form == 1:
        return [(f"不得不说{s}{_plain_adj(rng, a, True)}", True), (f"不得不说{s}{_plain_adj(rng, rng.choice(neg), False)}", False)]
    return [(f"{s}没有一次不{a}", True), (f"{s}没有一次{a}过", False)]


def _contrast(rng: random.Random, doms: list[tuple[tuple[str, ...], ...]]) -> list[tuple[str, bool]]:
    """A，但是B both ways round: the clause after the turn decides. Mostly one domain (物流很快，但是包装破损了);
    就是/只是/可惜/结果 only turn towards a negative clause."""
    d1 = rng.choice(doms)
    d2 = d1 if rng.random() < 0.7 else rng.choice(doms)
    turn = rng.choice(TURNS)
    plain = [t for t in TURNS if t not in RESERVATION_TURNS]
    lead = "虽然" if turn in CONCESSIVE_TURNS and rng.random() < 0.3 else ""
    out = []
    for positive_after in (False, True):  # the pair: A+，turn B- / A-，turn B+
        t = turn if not positive_after or turn not in RESERVATION_TURNS else rng.choice(plain)
        a, b = _clause(rng, d1, not positive_after), _clause(rng, d2, positive_after)
        out.append((f"{lead if t in CONCESSIVE_TURNS else ''}{a}，{t}{b}", positive_after))
    return out


# opinion-free text as customers and desks write it (its own words: emotag.train.neutral_forms, which the
# composer learns from, and the linguistic suite use others)
ITEMS = ("这款保温杯", "那条围巾", "这套餐具", "这个背包", "蓝色款", "儿童款", "加大码", "这批货", "我的订单", "退货单",
         "这台烤箱", "这款洗面奶", "这本词典", "那双拖鞋", "这个插座")
ASKS = ("{i}什么时候能到", "{i}还有库存吗", "{i}支持货到付款吗", "{i}怎么退换", "{i}是哪天发的", "{i}可以改地址吗",
        "{i}带发票吗", "想咨询一下{i}的保修", "{i}几天能送到？", "亲，{i}有现货吗", "{i}是什么颜色的？",
        "{i}能寄到外省吗", "{i}需要自己组装吗？", "{i}的尺寸多大", "{i}现在发货了吗？")
ASKS_PLAIN = ("帮我{a}一下", "麻烦{a}", "能不能{a}", "可以{a}吗？", "请{a}", "我想{a}")
ACTS = ("改个地址", "备注送到前台", "查下物流", "开张发票", "换成灰色", "改成周六送", "把电话改一下", "延迟两天发货",
        "换一个尺码", "加一份米饭", "把两单合并", "打包带走")
STATES = ("{i}放在{p}了", "{i}已经寄出", "{i}周三到", "快递员{t}来取件", "{t}去{p}拿", "{i}在{p}",
          "{t}要去{p}", "我{t}到{p}", "会议改到{t}", "{t}{p}停电", "{i}由{p}发出", "订单尾号{n}",
          "我买的是{i}", "{i}已签收", "{t}开始营业", "今天午饭吃的米线", "{p}离这里两站路", "我们{t}出发",
          "规格选的是{k}", "备注写的是{k}")
REPLY = ("好的", "收到", "行", "明白了", "知道了", "好", "了解了", "嗯嗯")
REPLY_TAIL = ("", "，{t}见", "，我{t}过去", "，我看一下", "，稍后回复你", "，我转告他", "，那就{t}吧")
SPOTS = ("小区门口", "物业办公室", "二楼前台", "快递驿站", "公司楼下", "北门", "地下车库", "西区仓库", "杭州仓")
TIMES = ("明天上午", "周五下午", "后天晚上", "下周一", "今天六点", "月底", "周日中午", "十点半")
SIZES = ("不锈钢", "纯棉", "三件套", "五百克", "两米长", "四人份", "一点五升", "黑灰两色")


def _neutral(rng: random.Random) -> str:
    """One opinion-free question, request, statement or reply."""
    fill = {"i": rng.choice(ITEMS), "p": rng.choice(SPOTS), "t": rng.choice(TIMES), "k": rng.choice(SIZES),
            "n": str(rng.randrange(1000, 99999)), "a": rng.choice(ACTS)}
    kind = rng.randrange(4)
    if kind == 0:
        return rng.choice(("", "请问", "你好，", "在吗？")) + rng.choice(ASKS).format(**fill)
    if kind == 1:
        return rng.choice(ASKS_PLAIN).format(**fill)
    if kind == 2:
        return rng.choice(STATES).format(**fill)
    return rng.choice(REPLY) + rng.choice(REPLY_TAIL).format(**fill)


def compositional_forms(n: int = 12000, seed: int = 0, contrast: float = 0.3, neutral: float = 0.0
                        ) -> Iterator[Example]:
    """About `n` distinct training sentences (polarity only), deterministic for a seed: negation pairs
    (the larger part), negated feelings, double negation, a `contrast` share of turns and a `neutral`
    share of opinion-free questions, requests, statements and replies."""
    rng = random.Random(seed)
    doms = list(DOMAINS.values())
    seen: set[str] = set()
    tries = 0
    while len(seen) < n and tries < 20 * n:
        tries += 1
        r = rng.random()
        if r < neutral:
            rows = [(_neutral(rng), "neutral")]
        else:
            r = (r - neutral) / (1.0 - neutral)  # the opinion kinds keep their shares of the rest
            if r < contrast:
                made = _contrast(rng, doms)
            elif r < contrast + 0.1:
                made = _feeling(rng)
            elif r < contrast + 0.18:
                made = _double(rng, rng.choice(doms))
            else:
                made = _pair(rng, rng.choice(doms))
            ctx, end = rng.choice(CONTEXT), rng.choice(END)
            rows = [(ctx + text + end, POL[positive]) for text, positive in made]
        for text, polarity in rows:
            if text not in seen and len(seen) < n:
                seen.add(text)
                yield Example(text, "compositional", None, polarity, split="train")


# -- contrast from real clauses ---------------------------------------------------------------------------

_TURN_INSIDE = re.compile("虽然|但|可是|不过|然而|就是|只是|可惜|却|而且|并且|没想到|结果|还是|如果")


def opinion_clauses(data: Path) -> dict[bool, list[str]]:
    """Short one-opinion clauses of the corpora's *training* splits by polarity (True: positive): the span of
    an ASTE triple from its aspect to the end of its opinion (服务员态度很好, 鸭肉有点柴) and the short
    sentic product-review sentences (显示效果一般, 和弦铃声够大). No clause holds punctuation or a turn word."""
    out: dict[bool, set[str]] = {True: set(), False: set()}
    path = data / "chinese_aste" / "train.jsonl"
    if path.exists():
        with open(path, encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                for t in r.get("triples") or []:
                    if t["polarity"] not in ("positive", "negative") or not t.get("aspect_span"):
                        continue
                    (a0, a1), (o0, o1) = t["aspect_span"], t["opinion_span"]
                    if a1 <= o0:  # aspect before its opinion, as in 包装破损了
                        out[t["polarity"] == "positive"].add(r["text"][a0:o1])
    for e in sentic(data, DEV_FRACTION):
        if e.split == "train":
            out[e.polarity == "positive"].add(e.text)
    return {k: sorted(c for c in v if 3 <= len(c) <= 14 and not _PUNCT.search(c) and not _TURN_INSIDE.search(c))
            for k, v in out.items()}


_PUNCT = re.compile(r"[#\s,，、;；:：。.!！?？~～…()（）\[\]【】\"“”'‘’]")


def real_contrasts(data: str | Path, n: int, seed: int = 0) -> Iterator[Example]:
    """About `n` distinct contrast sentences joined from real opinion clauses (`opinion_clauses`), in pairs
    as `_contrast` makes them: A+，但是B- (negative) beside A-，但是B+ (positive), the clause after the turn
    deciding; 就是/只是/可惜/结果 only before a negative clause, 虽然 before some concessive turns.

    Why: the template clauses are a template writer's vocabulary; real clauses from restaurant and product
    reviews make the network learn the turn itself rather than which template words follow it."""
    clauses = opinion_clauses(Path(data))
    if not clauses[True] or not clauses[False] or n <= 0:
        return
    rng = random.Random(seed)
    plain = [t for t in TURNS if t not in RESERVATION_TURNS]
    seen: set[str] = set()
    tries = 0
    while len(seen) < n and tries < 20 * n:
        tries += 1
        turn = rng.choice(TURNS)
        comma = "，" if rng.random() < 0.8 else ""
        for positive_after in (False, True):
            t = turn if not positive_after or turn not in RESERVATION_TURNS else rng.choice(plain)
            a, b = rng.choice(clauses[not positive_after]), rng.choice(clauses[positive_after])
            lead = "虽然" if t in CONCESSIVE_TURNS and rng.random() < 0.3 else ""
            text = f"{lead}{a}{comma or ('，' if lead else '')}{t}{b}{rng.choice(END)}"
            if text not in seen and len(seen) < n:
                seen.add(text)
                yield Example(text, "real_contrast", None, POL[positive_after], split="train")
