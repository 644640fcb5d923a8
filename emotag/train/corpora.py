"""Readers for the labelled corpora in ../shared/data, mapped onto the SPEC §1 taxonomy.

Each reader yields `Example`s with whatever supervision its source offers (an emotion label set, a
polarity, an arousal or valence value); the trainer masks the heads a source does not supervise.
Dev splits are deterministic (hash of the text), so they stay put when the corpus list changes and a
text never lands in train and dev at once.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from emotag import labels as L

csv.field_size_limit(10**9)

DEFAULT_DATA_DIR = Path(os.environ.get("EMOTAG_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


@dataclass
class Example:
    text: str
    source: str
    emotions: tuple[str, ...] | None = None  # allowed emotion labels (partial label); None = unsupervised
    polarity: str | None = None
    intensity: float | None = None  # 0..1
    valence: float | None = None  # -1..1
    split: str = "train"


def dev_bucket(text: str, dev_fraction: float, salt: str = "") -> bool:
    """Deterministic hash split: True puts the text in dev."""
    h = hashlib.blake2b((salt + text).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64 < dev_fraction


def dev_half_of(text: str) -> str:
    """Which half of a dev split a text belongs to: "tune" (every choice is made on it) or "report"
    (touched once, for the numbers a model card quotes). Deterministic, independent of `dev_bucket`."""
    return "report" if dev_bucket(text, 0.5, salt="report-half:") else "tune"


def _tsv(path: Path) -> Iterator[dict[str, str]]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        yield from csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)


def _emo_pol(emos: tuple[str, ...]) -> str | None:
    pols = {L.EMOTION_POLARITY[e] for e in emos}
    return pols.pop() if len(pols) == 1 else None


def smp2020(data: Path, domain: str, split: str) -> Iterator[Example]:
    """SMP2020-EWECT; `*_eval` is the official dev set and stays out of training."""
    for r in _tsv(data / "smp2020_ewect" / f"{domain}_{split}.tsv"):
        lab = (r.get("label") or "").strip()
        if lab not in L.SMP2020 or not r.get("text"):
            continue
        emos = L.SMP2020[lab]
        yield Example(r["text"], f"smp_{domain}", emos, _emo_pol(emos), split="dev" if split == "eval" else "train")


def nlpcc2014(data: Path, dev_fraction: float) -> Iterator[Example]:
    for r in _tsv(data / "nlpcc2014_weibo_emotion" / "nlpcc2014_train_weibo.tsv"):
        lab = (r.get("emotion1") or "").strip()
        if lab not in L.NLPCC or not (r.get("text") or "").strip():
            continue
        emos = L.NLPCC[lab]
        split = "dev" if dev_bucket(r["text"], dev_fraction) else "train"
        yield Example(r["text"], "nlpcc2014", emos, _emo_pol(emos), split=split)


def clue(data: Path, dev_fraction: float) -> Iterator[Example]:
    with open(data / "clue_emotion" / "valid.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            if d.get("label") not in L.CLUE:
                continue
            emos = L.CLUE[d["label"]]
            split = "dev" if dev_bucket(d["content"], dev_fraction) else "train"
            yield Example(d["content"], "clue", emos, _emo_pol(emos), split=split)


def codeswitch(data: Path) -> Iterator[Example]:
    for name, split in (("train.tsv", "train"), ("dev.tsv", "dev")):
        for r in _tsv(data / "nlpcc2018_codeswitch_emotion" / name):
            present = tuple(e for e in L.CODESWITCH_FLAGS if (r.get(e) or "").strip() == "T")
            emos = present or ("neutral",)
            text = r.get("text_segmented") or ""
            if text.strip():
                yield Example(text, "codeswitch", emos, _emo_pol(emos), split=split)


def cped(data: Path, dev_fraction: float) -> Iterator[Example]:
    with open(data / "cped" / "valid_split.csv", encoding="utf-8-sig", newline="") as f:
        for r in csv.DictReader(f):
            text = r.get("Utterance") or ""
            if not text.strip():
                continue
            emos = L.CPED_EMOTION.get((r.get("Emotion") or "").strip())
            pol = L.CPED_SENTIMENT.get((r.get("Sentiment") or "").strip())
            # split by dialogue so one conversation's lines never straddle train and dev
            split = "dev" if dev_bucket(r.get("Dialogue_ID", text), dev_fraction) else "train"
            yield Example(text, "cped", emos, pol, split=split)


def cvat(data: Path, dev_folds: tuple[int, ...] = (4,)) -> Iterator[Example]:
    """Chinese EmoBank CVAT (traditional script): valence/arousal 1..9 -> valence -1..1, intensity 0..1."""
    for fold in (1, 2, 3, 4):
        path = data / "cvat" / f"CVAT_{fold}_SD.tsv"
        if not path.exists():
            continue
        for r in _tsv(path):
            try:
                v, a = float(r["Valence_Mean"]), float(r["Arousal_Mean"])
            except (KeyError, ValueError):
                continue
            yield Example(
                r["Text"], "cvat", None, None, intensity=(a - 1) / 8, valence=(v - 5) / 4,
                split="dev" if fold in dev_folds else "train",
            )


def cvaw_lexicon(path: str | os.PathLike[str]) -> Iterator[Example]:
    """Chinese EmoBank CVAW words (valence/arousal 1..9) as one-word training examples, same scaling as CVAT.

    Read from cntext's `zh_valence_ChineseEmoBank.yaml` (a registry package; fetched by the recipe into a
    scratch directory, never vendored). Words are training-only: they have no dev split.
    """
    import yaml

    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    for word, va in (doc.get("Dictionary") or {}).items():
        try:
            v, a = float(va["valence"]), float(va["arousal"])
        except (KeyError, TypeError, ValueError):
            continue
        yield Example(str(word), "cvaw", None, None, intensity=(a - 1) / 8, valence=(v - 5) / 4, split="train")


DUTIR_EMOTIONS = {"乐": "happiness", "好": "like", "怒": "anger", "哀": "sadness", "惧": "fear", "恶": "disgust",
                  "惊": "surprise"}


def dutir_lexicon(path: str | os.PathLike[str]) -> Iterator[Example]:
    """DUTIR emotion ontology words (Xu et al. 2008) as one-word emotion examples.

    Its seven categories are exactly the non-neutral half of our taxonomy. A word listed under several
    categories becomes a partial label over all of them. Read from cntext's `zh_common_DUTIR.yaml`, like the
    CVAW words: training-only, no dev split, never vendored.
    """
    import yaml

    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    labels: dict[str, set[str]] = {}
    for cat, words in (doc.get("Dictionary") or {}).items():
        emo = DUTIR_EMOTIONS.get(str(cat).strip())
        for w in words or []:
            w = str(w).strip()
            if emo and w and "－" not in w:  # skip 歇后语 ("胡敲梆子乱击磬－欢喜若狂"): sentences, not words
                labels.setdefault(w, set()).add(emo)
    for w, emos in labels.items():
        t = tuple(sorted(emos))
        yield Example(w, "dutir", t, _emo_pol(t), split="train")


def reviews(data: Path, dev_fraction: float) -> Iterator[Example]:
    base = data / "reviews_polarity"
    for name, source in (("online_shopping_10_cats.csv", "shopping"), ("ChnSentiCorp_htl_all.csv", "hotel")):
        with open(base / name, encoding="utf-8-sig", newline="") as f:
            for r in csv.DictReader(f):
                text = (r.get("review") or "").strip().lstrip("\ufeff")
                if not text or r.get("label") not in ("0", "1"):
                    continue
                split = "dev" if dev_bucket(text, dev_fraction) else "train"
                yield Example(text, source, None, "positive" if r["label"] == "1" else "negative", split=split)


def conversation_sentiment(data: Path, dev_fraction: float) -> Iterator[Example]:
    with open(data / "conversation_sentiment" / "sentiment_XS_manual.txt", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            lab, text = (r.get("labels") or "").strip(), (r.get("text") or "").strip()
            if lab in ("positive", "negative") and text:
                split = "dev" if dev_bucket(text, dev_fraction) else "train"
                yield Example(text, "chat", None, lab, split=split)


def sentic(data: Path, dev_fraction: float) -> Iterator[Example]:
    for r in _tsv(data / "sentic_reviews" / "sentic_reviews.tsv"):
        text = (r.get("text") or "").strip()
        if text and r.get("label") in ("0", "1"):
            split = "dev" if dev_bucket(text, dev_fraction) else "train"
            yield Example(text, "sentic", None, "positive" if r["label"] == "1" else "negative", split=split)


def _sentence_polarity(polarities: Iterable[str]) -> str | None:
    """One polarity for a sentence whose opinion units all agree; None when they disagree."""
    pols = set(polarities)
    return pols.pop() if len(pols) == 1 else None


def aste(data: Path) -> Iterator[Example]:
    """Restaurant-review sentences of the Chinese ASTE set: a sentence whose triples share one polarity
    carries it (neutral included); mixed sentences are left out. Its `dev.jsonl` is our dev split."""
    for split in ("train", "dev"):
        path = data / "chinese_aste" / f"{split}.jsonl"
        if not path.exists():
            continue
        with open(path, encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                pol = _sentence_polarity(t["polarity"] for t in r.get("triples") or [])
                if pol and r.get("text"):
                    yield Example(r["text"], "aste", None, pol, split=split)


_DEGREE = re.compile(r"^(?:非常|特别|十分|相当|超级|比较|很|太|超|挺|蛮|真|最|更|还)")
_CORE = re.compile(r"^[^都也就是有还又很点][\u4e00-\u9fff]?$")  # a one- or two-character predicate
_NEGATOR = re.compile(r"[不没无非别未]")
_FLIP = {"positive": "negative", "negative": "positive"}


def negate_opinion(opinion: str) -> str | None:
    """`很难吃` -> `不难吃`: the opinion with its degree word dropped and 不 put before its core; None when
    the opinion is not a short plain predicate (already negated, a phrase, punctuation inside)."""
    core = _DEGREE.sub("", opinion).rstrip("的了啊呀")
    if _NEGATOR.search(opinion) or not _CORE.match(core):
        return None
    return "不" + core


def aste_negated(data: Path, split: str = "train", keep: Callable[[str], bool] | None = None) -> Iterator[Example]:
    """Negation pairs made from ASTE sentences with one opinion: the opinion negated in place
    (味道很好 -> 味道不好, 很难吃 -> 不难吃) and the polarity flipped. Train: sentences with one opinion
    (the set v0.3 was trained on); dev: also sentences whose opinions all agree, each negated.

    Why: the corpora rarely negate an opinion word, so both the network and the lexical expert had learnt
    `难吃` as negative whatever stands before it (不难吃 scored -0.99). `load_all` takes the train split
    only; the composer (scripts/fit_composer.py) takes dev sentences whose original text `keep` accepts
    (its tuning half), so a report-half sentence never shows up negated in tuning.
    """
    path = data / "chinese_aste" / f"{split}.jsonl"
    if not path.exists():
        return
    with open(path, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            triples = r.get("triples") or []
            if not triples or (keep and not keep(r["text"])) or (split == "train" and len(triples) != 1):
                continue
            pol = _sentence_polarity(t["polarity"] for t in triples)
            spans = sorted({tuple(t["opinion_span"]): t["opinion"] for t in triples}.items())
            if pol not in _FLIP or any(b0 > a1 for ((_, b0), _), ((a1, _), _) in zip(spans, spans[1:], strict=False)):
                continue  # mixed polarities, or opinions that overlap
            text, cut = r["text"], []
            for (a, b), opinion in spans:
                neg = negate_opinion(opinion)
                if neg is None:
                    break
                cut.append((a, b, neg))
            else:
                for a, b, neg in reversed(cut):  # every opinion negated, right to left so offsets hold
                    text = text[:a] + neg + text[b:]
                yield Example(text, "aste_negated", None, _FLIP[pol], split=split)


NEGATION_FORMS = ("不", "并不", "一点也不", "一点都不", "真的不")


def aste_opinion_pairs(data: Path, split: str = "dev", keep: Callable[[str], bool] | None = None
                       ) -> Iterator[Example]:
    """Minimal pairs from ASTE triples: `aspect + 很 + opinion` with the triple's polarity and `aspect +
    negator + opinion` with it flipped (味道很香 / 味道一点也不香), one negator form per pair in turn.

    Why: the composer learns how much a negator's scope outweighs the whole text's reading from texts
    where negation decides; the dev sentences negate too few opinions to teach it. Real aspect-opinion
    pairs keep the vocabulary the corpora's, not a template writer's.
    """
    path = data / "chinese_aste" / f"{split}.jsonl"
    if not path.exists():
        return
    seen: set[str] = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if keep and not keep(r["text"]):
                continue
            for t in r.get("triples") or []:
                neg = negate_opinion(t["opinion"]) if t["polarity"] in _FLIP and t.get("aspect") else None
                if neg is None or t["aspect"] + neg in seen:
                    continue
                seen.add(t["aspect"] + neg)
                form = NEGATION_FORMS[len(seen) % len(NEGATION_FORMS)]
                yield Example(f"{t['aspect']}很{neg[1:]}", "aste_pairs", None, t["polarity"], split=split)
                yield Example(f"{t['aspect']}{form}{neg[1:]}", "aste_pairs", None, _FLIP[t["polarity"]], split=split)


def bdci_car(data: Path, dev_fraction: float) -> Iterator[Example]:
    """Car-forum posts with per-aspect sentiment (-1/0/1): a post whose mentions agree carries that
    polarity. Most mentions are neutral, the one source of neutral review-like text."""
    path = data / "bdci2018_car_aspect" / "train.csv"
    if not path.exists():
        return
    posts: dict[str, tuple[str, list[str]]] = {}
    with open(path, encoding="utf-8-sig", newline="") as f:
        for r in csv.DictReader(f):
            text = (r.get("content") or "").strip()
            pol = {"-1": "negative", "0": "neutral", "1": "positive"}.get((r.get("sentiment_value") or "").strip())
            if text and pol:
                posts.setdefault(r.get("content_id") or text, (text, []))[1].append(pol)
    for text, pols in posts.values():
        pol = _sentence_polarity(pols)
        if pol:
            yield Example(text, "car", None, pol, split="dev" if dev_bucket(text, dev_fraction) else "train")


def stc3_dialogues(data: Path) -> list[dict]:
    """STC-3 dialogues as SPEC §3 conversations with the mean annotator satisfaction attached."""
    with gzip.open(data / "stc3_helpdesk" / "train_data_cn.json.gz", "rt", encoding="utf-8") as f:
        dialogs = json.load(f)
    out = []
    for x in dialogs:
        turns = [
            {"speaker": "customer" if t["sender"] == "customer" else "agent", "text": u}
            for t in x["turns"]
            for u in t["utterances"]
        ]
        s = sum(a["quality"]["S"] for a in x["annotations"]) / len(x["annotations"])
        out.append({"id": str(x["id"]), "turns": turns, "satisfaction": s})
    return out


DEV_FRACTION = 0.1  # the share of each corpus without its own dev file that load_all holds out


def load_all(data: str | os.PathLike[str] = DEFAULT_DATA_DIR, dev_fraction: float = DEV_FRACTION,
             dev_half: str | None = "tune") -> list[Example]:
    """Every supervised example the default model trains or is validated on, with its split.

    With `dev_half="tune"` (the default) only the tuning half of each dev split keeps `split == "dev"`;
    the other half gets `split == "report"`, so no training or tuning script that selects "dev" ever
    sees it. `dev_half=None` keeps whole dev splits (how models before v0.3 were tuned and reported).
    """
    data = Path(data)
    readers = [
        smp2020(data, "usual", "train"),
        smp2020(data, "usual", "eval"),
        smp2020(data, "virus", "train"),
        smp2020(data, "virus", "eval"),
        nlpcc2014(data, dev_fraction),
        clue(data, 0.25),
        codeswitch(data),
        cped(data, dev_fraction),
        cvat(data),
        reviews(data, dev_fraction),
        conversation_sentiment(data, dev_fraction),
        sentic(data, dev_fraction),
        aste(data),
        aste_negated(data),
        bdci_car(data, dev_fraction),
    ]
    out: list[Example] = []
    for r in readers:
        out.extend(r)
    if dev_half is not None:
        for e in out:
            if e.split == "dev" and dev_half_of(e.text) != dev_half:
                e.split = "report"
    return out


STC3_DEV_START = 2960  # dialogues [2960, end) are the satisfaction dev set


def unlabelled_texts(data: str | os.PathLike[str] = DEFAULT_DATA_DIR, dev_fraction: float = 0.1) -> Iterator[str]:
    """Text from ../shared/data that no labelled training example carries, for MLM pre-training.

    Weakly labelled chat logs, car-forum posts and the STC-3 training dialogues' utterances. Nothing from a
    dev split: chat logs go through the same hash split as the labelled chat set, STC-3 stops at the
    satisfaction dev dialogues. (NLPCC 2013 is left out: its sentences come from the NLPCC 2014 posts,
    whose dev split they would leak.)
    """
    data = Path(data)
    with open(data / "conversation_sentiment" / "sentiment_XS_30k.txt", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            text = (r.get("text") or "").strip()
            if text and not dev_bucket(text, dev_fraction):
                yield text
    with open(data / "bdci2018_car_aspect" / "train.csv", encoding="utf-8-sig", newline="") as f:
        seen: set[str] = set()
        for r in csv.DictReader(f):
            text = (r.get("content") or "").strip()
            if text and text not in seen:
                seen.add(text)
                yield text
    for conv in stc3_dialogues(data)[:STC3_DEV_START]:
        for t in conv["turns"]:
            if t["text"].strip():
                yield t["text"].strip()
