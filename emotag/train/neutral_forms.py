"""Texts with no opinion in the forms customers and service desks write them: questions, logistics,
acknowledgements, plain facts. Generated from templates, for the composer's neutral part only.

Why: the corpora's neutral text is Weibo posts, TV dialogue and car-forum mentions. None of them has the
customer-service question (请问几点发货) or the bare order number, and in the review corpora the words of
such questions (发货, 退款, 尺码) come from complaints, so the network reads a polite question as angry.
The templates teach the composer what an opinion-free form looks like; whether a text *is* opinion-free is
still read from the network's scores (a question full of complaint words stays negative, because the
real review questions in the tune halves are labelled with their polarity).

The vocabulary here was written for this module and is deliberately not the linguistic suite's
(tests/data/linguistic_pairs.tsv), which measures the result.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from emotag.train.corpora import Example

THINGS = ("这款耳机", "这件衬衫", "这双运动鞋", "这个套餐", "会员卡", "赠品", "说明书", "充电器", "这台空气炸锅",
          "这款口红", "这个行李箱", "双人间", "自助早餐", "停车位", "这本教材", "儿童座椅", "洗发水", "这款键盘")
QUESTIONS = ("请问{t}还有货吗", "请问{t}有现货吗？", "{t}有几种颜色", "{t}是什么材质的？", "{t}多少钱一个",
             "请问{t}什么时候能发出", "{t}可以用优惠券吗", "想问一下{t}保修多久", "{t}能开专票吗？",
             "请问{t}支持七天无理由退换吗", "{t}有没有大一码的", "{t}的尺寸是多少？", "麻烦问下{t}在哪个仓库发货",
             "{t}是正品吗？", "请问{t}适合几岁的孩子", "{t}能不能送到公司", "{t}周末可以自提吗", "{t}怎么安装？")
FACTS = ("订单编号{n}", "我的会员号是{n}", "快递单号{n}，麻烦查一下", "房间号是{r}", "取件码{r}",
         "包裹放在{p}了", "我在{p}等你", "{t}已经签收", "{w}{h}送到{p}", "已付款，订单号{n}", "{t}是{k}的",
         "明天{h}到店", "我订的是{w}的房间", "收货地址改成{p}", "退款已经提交了", "发票抬头写公司名称",
         "我下单的是{t}", "{t}一共{k}", "今天{w}", "电话是{n}")
REPLIES = ("好的", "好的，收到了", "嗯嗯", "知道了", "行，那就这样", "稍等一下", "我先看看", "了解",
           "我再考虑一下", "好的，我去问问", "明白", "可以", "OK，收到", "嗯，先这样", "我已经下单了", "在的")
PLACES = ("前台", "快递柜", "小区门口", "一楼大厅", "公司前台", "三号楼", "菜鸟驿站", "东门保安室")
WHEN = ("周六", "下周二", "后天", "周四", "明天", "这个周末")
HOURS = ("上午十点", "下午四点", "晚上八点", "中午十二点", "早上九点半")
AMOUNTS = ("两百毫升", "三公斤", "黑白两色", "四十二码", "两层", "十二个", "一米二")


def neutral_forms(n: int = 400, seed: int = 0) -> Iterator[Example]:
    """`n` opinion-free texts (polarity neutral), deterministic for a seed."""
    rng = random.Random(seed)

    def fill(template: str) -> str:
        return template.format(t=rng.choice(THINGS), p=rng.choice(PLACES), w=rng.choice(WHEN), h=rng.choice(HOURS),
                               k=rng.choice(AMOUNTS), n=str(rng.randrange(10**7, 10**12)),
                               r=str(rng.randrange(100, 9999)))

    kinds = (QUESTIONS, FACTS, REPLIES)
    for i in range(n):
        yield Example(fill(rng.choice(kinds[i % 3])), "neutral_forms", ("neutral",), "neutral", split="dev")
