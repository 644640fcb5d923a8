"""Fine-tune emotag on a team's own labelled data: the library function behind `emotag train`.

One call goes from a labelled table to a finished SPEC §6 model directory:

    read the table (CSV/TSV/JSONL/Parquet via `datasets`) -> decide the label plan (default taxonomy,
    custom labels, multi-label flags, or the polarity task) -> load the base (an emotag model directory or
    any Hugging Face encoder checkpoint) -> stratified dev split if none is given -> train with
    inverse-frequency row weights and early stopping on dev macro-F1 -> fit the temperature on dev ->
    save, export ONNX (fp32 + int8), write MODEL_CARD.md and an evaluation report.

Heads the user's data does not supervise are *anchored*, not left to drift: before training, the base
model's own predictions on the training texts become targets for those heads (a label drawn from the
base's distribution per row -- distillation by sampling -- and the base's intensity/valence values).
Without this, fine-tuning polarity on 1,000 hotel reviews would quietly scramble the emotion head that
shares the encoder with it.

User mistakes (missing column, a single class, labels outside the chosen label set) raise ValueError
with a one-line message; the CLI turns that into exit code 1.
"""

from __future__ import annotations

import codecs
import json
import logging
import math
import os
import random
import shutil
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emotag import labels as L
from emotag.model.config import (
    CONFIG_NAME,
    DIALOGUE_LEXICAL_NAME,
    ONNX_INT8_NAME,
    ONNX_NAME,
    TOKENIZER_NAME,
    WEIGHTS_NAME,
    EmotagConfig,
    NgramConfig,
    default_model_dir,
)
from emotag.train.corpora import Example

log = logging.getLogger("emotag.finetune")

TASKS = ("emotion", "polarity")
READERS = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
DEV_FRACTION = 0.12  # of the training file, when no dev file is given
CLASS_WEIGHT_CLIP = (0.2, 5.0)  # inverse-frequency row weights are clipped to this range
ANCHOR_WEIGHT = 0.5  # loss weight of an anchored (self-distilled) classification head
REPORT_JSON, REPORT_MD, CONFUSION_PNG = "eval_report.json", "eval_report.md", "confusion_matrix.png"

_TRUE = {"1", "t", "true", "yes", "y", "是", "真"}
_FALSE = {"0", "f", "false", "no", "n", "否", "假", ""}
_POLARITY_WORDS = {
    "negative": {"neg", "negative", "负面", "负", "消极", "差评", "bad", "-1"},
    "neutral": {"neu", "neutral", "中性", "中立", "中", "一般"},
    "positive": {"pos", "positive", "正面", "正", "积极", "好评", "good"},
}
PARTIAL_SEP = "|"  # value_map target "like|happiness": the row is right on either label (a partial label)
# SPEC §1 sources whose classes are sets of taxonomy labels; a file labelled this way keeps the 8 emotions
_PARTIAL_ALIASES = {k: PARTIAL_SEP.join(v) for k, v in L.SMP2020.items()}
_EMOTION_ALIASES = {e: e for e in L.EMOTIONS} | {zh: e for e, zh in L.EMOTION_ZH.items()} | {"none": "neutral"}


@dataclass
class FinetuneResult:
    """What a fine-tuning run produced; every number here is also in `eval_report.json`."""

    out_dir: Path
    task: str
    labels: tuple[str, ...]  # the trained head's labels, in output order
    multi_label: bool
    base_model: str
    train_rows: int
    dev_rows: int
    dev_source: str  # "file" or "split"
    skipped_rows: int  # rows without text or label
    steps: int
    minutes: float  # wall time of the training loop
    dev_before: dict[str, float] | None  # the base model on the same dev set (None: the head is new)
    dev_after: dict[str, float]
    ece: dict[str, float]  # expected calibration error of the trained head before/after temperature
    temperature: dict[str, float]
    loss_start: float = float("nan")  # mean training loss over the first fifth of the steps
    loss_end: float = float("nan")  # ... and over the last fifth
    files: list[Path] = field(default_factory=list)


# -- reading -----------------------------------------------------------------------------------------


def _sniff_encoding(path: Path) -> str:
    """UTF-8 (with or without BOM) or GB18030: the encodings Chinese spreadsheets actually come in."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        return "utf-8"
    except UnicodeDecodeError:
        return "gb18030"


def read_table(path: str | os.PathLike[str], columns: Sequence[str]) -> dict[str, list[Any]]:
    """The given columns of a CSV/TSV/JSONL/Parquet file, loaded through `datasets` (Arrow, memory-mapped).

    Raises FileNotFoundError for a missing file and ValueError naming the file for a missing column.
    """
    import datasets

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    kind = READERS.get(p.suffix.lower())
    if kind is None:
        raise ValueError(f"{p}: unsupported file type {p.suffix!r}; use one of {', '.join(sorted(READERS))}")
    kwargs: dict[str, Any] = {}
    if kind == "csv":
        kwargs["encoding"] = _sniff_encoding(p)
        if p.suffix.lower() in (".tsv", ".txt"):
            kwargs["delimiter"] = "\t"
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        ds = datasets.load_dataset(kind, data_files=str(p), split="train", **kwargs)
    except Exception as e:  # datasets wraps parser errors in its own types; all mean "bad file"
        raise ValueError(f"{p}: could not read as {kind}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    finally:
        if bars:
            datasets.enable_progress_bars()
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise ValueError(f"{p}: no column {missing[0]!r} (columns: {', '.join(ds.column_names)})")
    return ds.select_columns(list(dict.fromkeys(columns))).to_dict()


def _cell(v: Any) -> str | None:
    """A label cell as a clean string: 1.0 -> "1", True -> "1", NaN/None/"" -> None."""
    if v is None:
        return None
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float):
        if math.isnan(v):
            return None
        if v.is_integer():
            return str(int(v))
    s = str(v).strip()
    return s or None


def _flag(v: Any, col: str, row: int, path: Path) -> bool:
    s = _cell(v)
    s = "" if s is None else s.lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise ValueError(f"{path}: row {row + 1}, column {col!r}: {v!r} is not a 0/1 or T/F flag")


# -- the label plan ----------------------------------------------------------------------------------


@dataclass
class LabelPlan:
    """Which head learns what: its labels, and how a row's cells become an `Example`."""

    task: str
    labels: tuple[str, ...]  # head labels (emotion labels for task=emotion, polarity labels otherwise)
    multi_label: bool
    default_taxonomy: bool
    value_map: dict[str, str] = field(default_factory=dict)  # source value -> label (single-column tasks)

    def groups(self) -> list[tuple[str, list[int]]] | None:
        """For partial labels (SMP2020's happy = like|happiness, SPEC §1): each source class with the head
        labels it allows, in first-seen order; None when every value maps to one label."""
        if self.multi_label or not any(PARTIAL_SEP in v for v in self.value_map.values()):
            return None
        out: dict[str, list[int]] = {}
        for source, target in self.value_map.items():
            out.setdefault(source, [self.labels.index(x) for x in target.split(PARTIAL_SEP)])
        return list(out.items())


def _sorted_values(values: set[str]) -> list[str]:
    try:
        return sorted(values, key=float)
    except ValueError:
        return sorted(values)


def _polarity_map(values: set[str], labels: Sequence[str] | None, polarity_labels: tuple[str, ...]) -> dict[str, str]:
    """Map source values to polarity labels: explicit order, numeric codes, or known words."""
    targets = [p for p in ("negative", "neutral", "positive") if p in polarity_labels]
    if labels:
        order = ["negative", "positive"] if len(labels) == 2 else ["negative", "neutral", "positive"]
        if len(labels) not in (2, 3):
            raise ValueError(f"task 'polarity': --labels lists the source values from negative to positive "
                             f"(2 or 3 values), got {len(labels)}")
        mapping = dict(zip(labels, order, strict=True))
    else:
        mapping = {}
        try:
            nums = sorted({float(v) for v in values})
        except ValueError:
            nums = None
        if nums is not None and len(nums) in (2, 3) and nums in ([0, 1], [-1, 1], [-1, 0, 1], [0, 1, 2]):
            order = ["negative", "positive"] if len(nums) == 2 else ["negative", "neutral", "positive"]
            mapping = {v: order[nums.index(float(v))] for v in values}
        else:
            for v in values:
                for pol, words in _POLARITY_WORDS.items():
                    if v.lower() in words:
                        mapping[v] = pol
    unknown = sorted(v for v in values if v not in mapping)
    if unknown:
        raise ValueError(f"task 'polarity': cannot map label values {unknown[:5]} to negative/neutral/positive; "
                         "pass --labels NEG,POS (or NEG,NEU,POS) naming your values in that order")
    bad = sorted({p for p in mapping.values() if p not in targets})
    if bad:
        raise ValueError(f"task 'polarity': the base model has no {bad} polarity label (it has {list(targets)})")
    return mapping


def plan_labels(
    task: str,
    label_cols: Sequence[str],
    values: set[str],
    labels: Sequence[str] | None,
    base_polarity: tuple[str, ...] = L.POLARITY,
    where: str = "",
) -> LabelPlan:
    """Decide the trained head's label set from the data and the user's `labels`.

    Default taxonomy when every value is one of EMOTIONS (or its Chinese name), else a custom set: the
    given `labels`, or the sorted unique values. Several label columns make a multi-label set named
    after the columns. `where` prefixes error messages (the file name).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    if task == "polarity":
        if len(label_cols) != 1:
            raise ValueError("task 'polarity' takes one label column")
        mapping = _polarity_map(values, labels, base_polarity)
        if len(set(mapping.values())) < 2:
            raise ValueError(f"{where}column {label_cols[0]!r} has only one class ({sorted(values)}); need two or more")
        return LabelPlan("polarity", base_polarity, False, True, mapping)
    if len(label_cols) > 1:
        if labels and list(labels) != list(label_cols):
            raise ValueError(f"multi-label: --labels must be the label columns ({', '.join(label_cols)}) or omitted")
        return LabelPlan("emotion", tuple(label_cols), True, False)
    col = label_cols[0]
    if labels:
        labs = tuple(dict.fromkeys(labels))
        unknown = sorted(values - set(labs))
        if unknown:
            raise ValueError(f"{where}column {col!r} has labels {unknown[:5]} not in --labels ({', '.join(labs)})")
        if set(labs) == set(L.EMOTIONS):
            return LabelPlan("emotion", L.EMOTIONS, False, True, {v: v for v in values})
        plan = LabelPlan("emotion", labs, False, False, {v: v for v in values})
    elif values and all(v.lower() in _EMOTION_ALIASES or v in _EMOTION_ALIASES for v in values):
        vm = {v: _EMOTION_ALIASES.get(v, _EMOTION_ALIASES.get(v.lower(), v)) for v in values}
        plan = LabelPlan("emotion", L.EMOTIONS, False, True, vm)
    elif values and all(v.lower() in _PARTIAL_ALIASES for v in values):
        # SMP2020's classes (happy, angry, sad, ...): partial labels over the taxonomy, as the default model
        # was trained (SPEC §1), instead of a 6-label head that would drop like/disgust and the expert
        plan = LabelPlan("emotion", L.EMOTIONS, False, True, {v: _PARTIAL_ALIASES[v.lower()] for v in values})
    else:
        plan = LabelPlan("emotion", tuple(_sorted_values(values)), False, False, {v: v for v in values})
    if len(set(plan.value_map.values())) < 2:
        raise ValueError(f"{where}column {col!r} has only one class ({sorted(values)}); need two or more")
    return plan


def _examples(rows: dict[str, list[Any]], text_col: str, label_cols: Sequence[str], plan: LabelPlan,
              path: Path) -> tuple[list[Example], int]:
    """Rows -> Examples (skipping rows without text or label); the returned int counts skipped rows."""
    out: list[Example] = []
    skipped = 0
    texts = rows[text_col]
    for i, t in enumerate(texts):
        text = _cell(t) if not isinstance(t, str) else t.strip()
        if not text:
            skipped += 1
            continue
        if plan.multi_label:
            present = tuple(c for c in label_cols if _flag(rows[c][i], c, i, path))
            out.append(Example(text, "finetune", emotions=present))
            continue
        v = _cell(rows[label_cols[0]][i])
        if v is None:
            skipped += 1
            continue
        if v not in plan.value_map:
            raise ValueError(f"{path}: row {i + 1}, column {label_cols[0]!r}: unknown label {v!r} "
                             f"(labels: {', '.join(plan.value_map)})")
        lab = plan.value_map[v]
        if plan.task == "polarity":
            out.append(Example(text, "finetune", polarity=lab))
        else:
            emos = tuple(lab.split(PARTIAL_SEP))
            pols = {L.EMOTION_POLARITY.get(e) for e in emos} if plan.default_taxonomy else {None}
            out.append(Example(text, "finetune", emotions=emos, polarity=pols.pop() if len(pols) == 1 else None))
    return out, skipped


def _label_key(ex: Example, plan: LabelPlan) -> str:
    if plan.task == "polarity":
        return ex.polarity or ""
    if plan.multi_label:
        return "|".join(sorted(ex.emotions or ()))
    return PARTIAL_SEP.join(ex.emotions or ("",))  # one label, or a partial label's set


def class_weights(examples: Sequence[Example], plan: LabelPlan) -> dict[str, float]:
    """Inverse-frequency weight per label (clipped, mean row weight 1): rare classes count more.

    Multi-label rows get the mean weight of their positive labels (1 for a row with none).
    """
    lo, hi = CLASS_WEIGHT_CLIP
    if plan.multi_label:
        n = len(examples)
        counts = Counter(lab for e in examples for lab in (e.emotions or ()))
        per = {lab: float(np.clip(n / (len(plan.labels) * max(counts[lab], 1)), lo, hi)) for lab in plan.labels}
        row = [float(np.mean([per[x] for x in e.emotions])) if e.emotions else 1.0 for e in examples]
        keys = [_label_key(e, plan) for e in examples]
    else:
        keys = [_label_key(e, plan) for e in examples]
        counts = Counter(keys)
        per = {k: float(np.clip(len(keys) / (len(counts) * c), lo, hi)) for k, c in counts.items()}
        row = [per[k] for k in keys]
    mean = float(np.mean(row)) if row else 1.0
    by_key: dict[str, float] = {}
    for k, w in zip(keys, row, strict=True):
        by_key[k] = round(w / mean, 4)
    return by_key


# -- the base model ----------------------------------------------------------------------------------


def _is_emotag_dir(d: Path) -> bool:
    try:
        return "emotion_labels" in json.loads((d / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def resolve_base(base_model: str | os.PathLike[str] | None) -> tuple[str, str]:
    """(kind, location): kind "emotag" (a model directory) or "hf" (an encoder checkpoint path or hub id).

    A hub id that holds an emotag model (config.json with emotion_labels) is downloaded as one.
    """
    if base_model is None:
        d = default_model_dir()
        if not (d / CONFIG_NAME).exists():
            raise FileNotFoundError(f"bundled model not found at {d}; set EMOTAG_MODEL or pass --base-model")
        return "emotag", str(d)
    p = Path(base_model)
    if p.is_dir():
        if _is_emotag_dir(p):
            return "emotag", str(p)
        if not (p / CONFIG_NAME).exists():
            raise ValueError(f"base model {p}: a directory without {CONFIG_NAME} (neither an emotag model nor a "
                             "Hugging Face checkpoint)")
        return "hf", str(p)
    if p.exists():
        raise ValueError(f"base model {p}: a file; pass a model directory or a Hugging Face checkpoint id")
    try:  # a hub id: real network code for users online; offline it fails with a one-line message
        from huggingface_hub import hf_hub_download, snapshot_download

        cfg_path = Path(hf_hub_download(str(base_model), CONFIG_NAME))
        if _is_emotag_dir(cfg_path.parent):
            local = snapshot_download(str(base_model), allow_patterns=[
                CONFIG_NAME, "*.safetensors", "tokenizer*", "special_tokens_map.json", "*.onnx", "MODEL_CARD.md",
                DIALOGUE_LEXICAL_NAME])
            return "emotag", local
    except Exception as e:  # noqa: BLE001 - any failure here means "not found or not reachable"
        raise ValueError(f"base model {base_model!r} is not a local directory and could not be fetched from the "
                         f"Hugging Face hub ({type(e).__name__})") from e
    return "hf", str(base_model)


def _load_emotag_base(src: str, plan: LabelPlan, seed: int):
    """The base model and its tokenizer; the emotion head is rebuilt when the label set changes."""
    import torch
    from tokenizers import Tokenizer
    from torch import nn

    from emotag.model.modeling import EmotagModel

    model = EmotagModel.load(src)
    cfg = model.config
    tok = Tokenizer.from_file(str(Path(src) / TOKENIZER_NAME))
    if plan.task == "emotion" and (tuple(plan.labels) != tuple(cfg.emotion_labels) or
                                   plan.multi_label != cfg.multi_label):
        old_labels, old = cfg.emotion_labels, model.emotion
        torch.manual_seed(seed)
        new = nn.Linear(old.in_features, len(plan.labels))
        with torch.no_grad():  # labels the base already knows start from its weights
            for j, lab in enumerate(plan.labels):
                if lab in old_labels and plan.multi_label == cfg.multi_label:
                    i = old_labels.index(lab)
                    new.weight[j] = old.weight[i]
                    new.bias[j] = old.bias[i]
        model.emotion = new
        if model.has_lexical:  # its emotion columns belong to the old label set: the new model goes without it
            model.drop_lexical()
            log.info("lexical expert dropped: it scores the base model's emotion labels")
        cfg.emotion_labels = tuple(plan.labels)
        cfg.multi_label = plan.multi_label
        cfg.temperature = {**cfg.temperature, "emotion": 1.0}
        log.info("emotion head rebuilt for %d labels (base had %d)", len(plan.labels), len(old_labels))
    return model, tok


def _load_hf_base(src: str, plan: LabelPlan, seed: int):
    """A fresh emotag network on a Hugging Face encoder checkpoint, with its (fast) tokenizer.

    A smaller n-gram bag than the default model's sits beside the encoder. Heads nobody supervises are removed
    (polarity for custom labels) or zeroed (intensity, valence: a constant 0.5 / 0, not noise).
    """
    import torch
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    from emotag.model.modeling import EmotagModel

    if plan.task == "polarity":
        raise ValueError("task 'polarity' keeps an emotag model's emotion head; start it from an emotag model "
                         "(--base-model DIR), or train emotions on a Hugging Face checkpoint")
    hf_tok = AutoTokenizer.from_pretrained(src)
    if not getattr(hf_tok, "is_fast", False):
        raise ValueError(f"base model {src!r}: its tokenizer is not a fast (tokenizers) tokenizer; emotag needs "
                         "tokenizer.json")
    hf_cfg = AutoConfig.from_pretrained(src)
    max_pos = int(getattr(hf_cfg, "max_position_embeddings", 130) or 130)
    cfg = EmotagConfig(
        encoder={},
        emotion_labels=tuple(plan.labels),
        polarity_labels=L.POLARITY if plan.default_taxonomy else (),
        multi_label=plan.multi_label,
        max_length=min(128, max_pos - 2),
        # a modest n-gram bag: cheap, helps on short texts, and keeps the ONNX graph's ngram_ids input
        # (with buckets=0 the exporter prunes that unused input and the runtime, which always feeds it, fails)
        ngram=NgramConfig(buckets=65536, dim=16),
        base_model=src,
    )
    torch.manual_seed(seed)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the load report lists the unused pooler: expected, not news
    try:
        model = EmotagModel(cfg, pretrained=src)
    finally:
        transformers.logging.set_verbosity(verbosity)
    with torch.no_grad():
        for head in (model.intensity, model.valence):
            head.weight.zero_()
            head.bias.zero_()
    return model, hf_tok


# -- metrics -----------------------------------------------------------------------------------------


def _softmax(z: np.ndarray, t: float = 1.0) -> np.ndarray:
    z = z.astype(np.float64) / t
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z.astype(np.float64)))


def _head(plan: LabelPlan) -> str:
    return "polarity" if plan.task == "polarity" else "emotion"


def _gold_mask(dev, plan: LabelPlan) -> np.ndarray:
    return dev.pol_mask if plan.task == "polarity" else dev.emo_mask


def head_metrics(logits: np.ndarray, mask: np.ndarray, plan: LabelPlan, temperature: float = 1.0,
                 detail: bool = False) -> dict[str, Any]:
    """Accuracy and macro-F1 of the trained head on dev (multi-label: macro/micro-F1 at p > 0.5, exact match).

    Polarity on two-class data also gets `sign_accuracy`: sign(p_pos - p_neg) against the gold label, the
    way `emotag eval` scores review sets.
    """
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

    labels = list(plan.labels)
    if plan.multi_label:
        pred = (logits > 0).astype(int)
        gold = mask.astype(int)
        m: dict[str, Any] = {
            "n": int(len(gold)),
            "exact_match": float(accuracy_score(gold, pred)),
            "macro_f1": float(f1_score(gold, pred, average="macro", zero_division=0)),
            "micro_f1": float(f1_score(gold, pred, average="micro", zero_division=0)),
        }
        if detail:
            from sklearn.metrics import multilabel_confusion_matrix

            m["report"] = classification_report(gold, pred, target_names=labels, output_dict=True, zero_division=0)
            m["confusion"] = multilabel_confusion_matrix(gold, pred).tolist()
        return m
    has = mask.sum(-1) > 0
    gold = mask[has].argmax(-1)
    z = logits[has]
    pred = z.argmax(-1)
    groups = plan.groups()
    if groups:  # partial labels: scored in the file's own classes, their labels' probabilities summed
        p = _softmax(z, temperature)
        pred = np.stack([p[:, idx].sum(-1) for _, idx in groups], -1).argmax(-1)
        allowed = {frozenset(idx): g for g, (_, idx) in enumerate(groups)}
        gold = np.array([allowed[frozenset(np.flatnonzero(row).tolist())] for row in mask[has]], dtype=int)
        labels = [name for name, _ in groups]
    present = sorted(set(gold.tolist()))
    m = {
        "n": int(has.sum()),
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_f1": float(f1_score(gold, pred, labels=present, average="macro", zero_division=0)),
    }
    if plan.task == "polarity" and {"negative", "positive"} <= set(labels):
        ineg, ipos = labels.index("negative"), labels.index("positive")
        p = _softmax(z, temperature)
        binary = np.isin(gold, [ineg, ipos])
        if binary.any():
            m["sign_accuracy"] = float(((p[binary, ipos] - p[binary, ineg] > 0) == (gold[binary] == ipos)).mean())
    if detail:
        shown = sorted(set(present) | set(pred.tolist()))
        m["report"] = classification_report(gold, pred, labels=shown, target_names=[labels[i] for i in shown],
                                            output_dict=True, zero_division=0)
        m["confusion_labels"] = [labels[i] for i in shown]
        m["confusion"] = confusion_matrix(gold, pred, labels=shown).tolist()
    return m


def calibration(logits: np.ndarray, mask: np.ndarray, plan: LabelPlan, temperature: float) -> float:
    """ECE of the trained head (multi-label: over every (row, label) decision, as binary predictions)."""
    from emotag.train.trainer import expected_calibration_error

    if plan.multi_label:
        p = _sigmoid(logits).reshape(-1)
        y = mask.reshape(-1)
        return expected_calibration_error(np.stack([1 - p, p], -1), np.stack([1 - y, y], -1))
    return expected_calibration_error(_softmax(logits, temperature), mask)


# -- anchors: keep what the data does not teach --------------------------------------------------------


def _sampled_labels(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One-hot rows, each label drawn from the row's distribution.

    Cross-entropy on a label drawn from p is an unbiased estimate of cross-entropy on p itself, so this is
    distillation to the base's soft outputs through the trainer's ordinary hard-label loss. (Letting the
    whole top-probability set count as correct was tried first: on a flat base distribution the head then
    drifts freely inside the set, e.g. every text becoming `anger`.)
    """
    cum = np.cumsum(probs, -1)
    u = rng.random((len(probs), 1)) * cum[:, -1:]
    idx = np.minimum((cum < u).sum(-1), probs.shape[-1] - 1)
    out = np.zeros_like(probs, dtype=np.float32)
    out[np.arange(len(probs)), idx] = 1.0
    return out


def add_anchors(train, base_pred: dict[str, np.ndarray], cfg: EmotagConfig, plan: LabelPlan,
                seed: int = 13) -> list[str]:
    """Fill the unsupervised targets of `train` with the base model's own predictions; returns the heads."""
    rng = np.random.default_rng(seed)
    anchored = []
    pol_free = train.pol_mask.sum(-1) == 0
    if cfg.polarity_labels and pol_free.any():
        train.pol_mask[pol_free] = _sampled_labels(_softmax(base_pred["polarity"][pol_free]), rng)
        anchored.append("polarity")
    if plan.task == "polarity":
        if cfg.multi_label:
            p = _sigmoid(base_pred["emotion"])
            train.emo_mask[:] = (rng.random(p.shape) < p).astype(np.float32)
            train.emo_has[:] = True
        else:
            train.emo_mask[:] = _sampled_labels(_softmax(base_pred["emotion"]), rng)
        anchored.append("emotion")
    for name in ("intensity", "valence"):
        free = np.isnan(getattr(train, name))
        getattr(train, name)[free] = base_pred[name][free]
        anchored.append(name)
    return anchored


# -- the report ----------------------------------------------------------------------------------------


def _cjk_font(names: Sequence[str]) -> str | None:
    """A font that can draw every character of `names`, or None (plots then use ASCII stand-ins)."""
    needed = {ord(c) for n in names for c in n if ord(c) > 127}
    if not needed:
        return "DejaVu Sans"
    from matplotlib import font_manager, ft2font

    preferred = ("Noto Sans CJK", "Noto Sans SC", "Source Han Sans", "WenQuanYi", "SimHei", "Microsoft YaHei",
                 "PingFang", "Heiti", "AR PL", "Droid Sans Fallback")
    fonts = sorted(font_manager.fontManager.ttflist, key=lambda f: not any(f.name.startswith(p) for p in preferred))
    for f in fonts:
        if "last resort" in f.name.lower():  # claims every code point, draws a box for each
            continue
        try:
            if needed <= set(ft2font.FT2Font(f.fname).get_charmap()):
                return f.name
        except Exception:  # noqa: BLE001,S112 - an unreadable font file is just not a candidate
            continue
    return None


def confusion_png(path: Path, matrix: list, labels: Sequence[str], multi_label: bool, title: str) -> dict[str, str]:
    """Draw the confusion matrix (or one 2x2 panel per label for multi-label); returns ASCII stand-ins used.

    Label names may be Chinese: a CJK-capable font is looked up, and without one the axes show L0, L1 ...
    (the mapping is returned and written into eval_report.md).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    font = _cjk_font(list(labels))
    standins = {} if font else {f"L{i}": lab for i, lab in enumerate(labels)}
    shown = list(labels) if font else list(standins)
    rc = {"font.family": [font, "DejaVu Sans"]} if font else {}  # fallback list: digits, Latin
    with plt.rc_context(rc):
        if multi_label:
            k = len(shown)
            cols = min(4, k)
            rows = math.ceil(k / cols)
            fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
            for a in axes.ravel()[k:]:
                a.axis("off")
            for i, name in enumerate(shown):
                ax = axes.ravel()[i]
                cm = np.asarray(matrix[i])
                ax.imshow(cm, cmap="Blues")
                for (r, c), v in np.ndenumerate(cm):
                    ax.text(c, r, str(v), ha="center", va="center", color="black")
                ax.set_xticks([0, 1], ["pred 0", "pred 1"])
                ax.set_yticks([0, 1], ["gold 0", "gold 1"])
                ax.set_title(name)
        else:
            cm = np.asarray(matrix)
            size = max(4.0, 0.6 * len(shown) + 2)
            fig, ax = plt.subplots(figsize=(size + 1, size))
            im = ax.imshow(cm, cmap="Blues")
            fig.colorbar(im, ax=ax, fraction=0.046)
            hi = cm.max() if cm.size else 0
            for (r, c), v in np.ndenumerate(cm):
                ax.text(c, r, str(v), ha="center", va="center", color="white" if v > hi / 2 else "black")
            ax.set_xticks(range(len(shown)), shown, rotation=45, ha="right")
            ax.set_yticks(range(len(shown)), shown)
            ax.set_xlabel("predicted")
            ax.set_ylabel("gold")
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return standins


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def write_report(out: Path, report: dict[str, Any], after_detail: dict[str, Any], plan: LabelPlan) -> list[Path]:
    """eval_report.json, eval_report.md and confusion_matrix.png next to the model."""
    labels = after_detail.get("confusion_labels", list(plan.labels))
    standins = confusion_png(out / CONFUSION_PNG, after_detail["confusion"], labels, plan.multi_label,
                             f"{report['task']} on dev (n={after_detail['n']})")
    report = {**report, "per_class": after_detail["report"], "confusion_matrix": {
        "labels": labels, "matrix": after_detail["confusion"], "png": CONFUSION_PNG, "png_label_standins": standins}}
    (out / REPORT_JSON).write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")

    before, after = report["dev_before"], report["dev_after"]
    lines = [f"# Fine-tuning report: {out.name}", "",
             f"- task: **{report['task']}**, labels: {', '.join(report['labels'])}"
             f"{' (multi-label)' if plan.multi_label else ''}",
             f"- base model: `{report['base_model']}`",
             f"- data: {report['data']['train_rows']} training rows from `{report['data']['train_path']}`, "
             f"{report['data']['dev_rows']} dev rows ({report['data']['dev_source']})"
             f"{', skipped ' + str(report['data']['skipped_rows']) + ' rows without text/label' if report['data']['skipped_rows'] else ''}",
             f"- training: {report['training']['steps']} steps, {report['training']['minutes']:.2f} min wall time, "
             f"seed {report['training']['seed']}; training loss {report['training']['train_loss_start']:.4f} "
             f"(first fifth of the steps) -> {report['training']['train_loss_end']:.4f} (last fifth)",
             "", "## Dev metrics", "", "| metric | base model | fine-tuned |", "|---|---|---|"]
    for k in after:
        if k == "n":
            continue
        lines.append(f"| {k} | {_fmt(before.get(k, '-')) if before else '-'} | {_fmt(after[k])} |")
    if not before:
        lines += ["", "The base model had no head for these labels, so there is no 'before'."]
    ece = report["calibration"]
    lines += ["", "## Per class (fine-tuned, dev)", "", "| label | precision | recall | F1 | support |",
              "|---|---|---|---|---|"]
    for lab, r in report["per_class"].items():
        if isinstance(r, dict):
            lines.append(f"| {lab} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1-score']:.3f} | "
                         f"{int(r['support'])} |")
    lines += ["", f"![confusion matrix]({CONFUSION_PNG})", ""]
    if standins:
        lines += ["No CJK font was found for the plot; its axes use: "
                  + ", ".join(f"{k} = {v}" for k, v in standins.items()), ""]
    lines += ["## Calibration", "",
              f"Expected calibration error of the {report['task']} head on dev: "
              f"{ece['ece_before']:.4f} before, {ece['ece_after']:.4f} after temperature scaling "
              f"(T = {ece['temperature']:.3f}, stored in config.json)."
              + (" Multi-label outputs are sigmoids and are not temperature-scaled." if plan.multi_label else ""),
              ""]
    if report.get("kept_heads"):
        lines += ["## Heads kept from the base model", "",
                  "Not supervised by this data; anchored to the base model's own predictions while training.", ""]
        lines += [f"- {k}: {_fmt(v)}" for k, v in report["kept_heads"].items()]
        lines.append("")
    if report["data"].get("class_weights"):
        lines += ["## Class weights", "", "Inverse-frequency loss weights (clipped to "
                  f"{CLASS_WEIGHT_CLIP[0]}..{CLASS_WEIGHT_CLIP[1]}, mean 1): "
                  + ", ".join(f"{k or '(none)'} {v:.2f}" for k, v in report["data"]["class_weights"].items()), ""]
    (out / REPORT_MD).write_text("\n".join(lines), encoding="utf-8")
    return [out / REPORT_JSON, out / REPORT_MD, out / CONFUSION_PNG]


def _model_card(out: Path, cfg: EmotagConfig, report: dict[str, Any]) -> None:
    after = report["dev_after"]
    head = "polarity" if report["task"] == "polarity" else "emotion"
    text = f"""# {cfg.name}

Fine-tuned with `emotag train` from `{report['base_model']}` on `{Path(report['data']['train_path']).name}`
({report['data']['train_rows']} rows; task `{report['task']}`).

- emotion labels: {', '.join(cfg.emotion_labels)}{' (multi-label, sigmoid)' if cfg.multi_label else ''}
- polarity labels: {', '.join(cfg.polarity_labels) or 'none (this model has no polarity head)'}
- trained head: {head}; dev {', '.join(f'{k} {_fmt(v)}' for k, v in after.items() if k != 'n')} (n={after['n']})
- temperature: {cfg.temperature}

Files: config.json, tokenizer.json, model.safetensors, model.onnx, model.int8.onnx; the evaluation is in
{REPORT_MD}. Score with `emotag score INPUT --model {out}`.
"""
    (out / "MODEL_CARD.md").write_text(text, encoding="utf-8")


# -- progress ------------------------------------------------------------------------------------------


def _progress(enabled: bool) -> tuple[Callable[[int, int, dict[str, float]], None], Callable[[], None]]:
    """A rich bar on a terminal, periodic log lines elsewhere (CI logs, notebooks, pipes)."""
    if enabled and sys.stderr.isatty() and not os.environ.get("CI"):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        prog = Progress(TextColumn("fine-tuning"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), transient=True)
        task = prog.add_task("train", total=None, loss="-")
        prog.start()

        def bar(step: int, total: int, stats: dict[str, float]) -> None:
            prog.update(task, completed=step, total=total, loss=f"{stats.get('loss', float('nan')):.3f}")

        return bar, prog.stop
    last = [time.time()]

    def lines(step: int, total: int, stats: dict[str, float]) -> None:
        if step == total or time.time() - last[0] > 30:
            last[0] = time.time()
            log.info("step %d/%d loss %.4f", step, total, stats.get("loss", float("nan")))

    return lines, lambda: None


# -- the function ----------------------------------------------------------------------------------------


def _split_dev(examples: list[Example], plan: LabelPlan, seed: int) -> tuple[list[Example], list[Example]]:
    """Stratified hold-out of DEV_FRACTION; falls back to a plain random split when a class is too rare."""
    from sklearn.model_selection import train_test_split

    if len(examples) < 10:
        raise ValueError(f"only {len(examples)} labelled rows: too few to hold out a dev set; add rows or pass --dev")
    keys = [_label_key(e, plan) for e in examples]
    n_dev = max(math.ceil(len(examples) * DEV_FRACTION), len(set(keys)))
    strat = keys if min(Counter(keys).values()) >= 2 and n_dev < len(examples) - len(set(keys)) else None
    if strat is None:
        log.warning("a class has fewer than 2 rows: dev split is random, not stratified")
    tr, dv = train_test_split(examples, test_size=n_dev, random_state=seed, stratify=strat)
    return list(tr), list(dv)


def finetune(
    train_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    dev_path: str | os.PathLike[str] | None = None,
    base_model: str | os.PathLike[str] | None = None,
    labels: Sequence[str] | str | None = None,
    text_col: str = "text",
    label_cols: Sequence[str] | str = ("label",),
    task: str = "emotion",
    epochs: float = 3.0,
    batch_size: int = 32,
    lr: float | None = None,
    seed: int = 13,
    max_minutes: float | None = None,
    progress: bool = True,
    threads: int | None = None,
    export: bool = True,
) -> FinetuneResult:
    """Fine-tune a model on a labelled table and write a complete model directory to `out_dir`.

    train_path / dev_path: CSV, TSV, JSONL or Parquet with `text_col` and the label column(s). Without a
    dev file, a stratified 12% of the training rows is held out for early stopping and calibration.
    base_model: an emotag model directory (default: the bundled model), a Hugging Face encoder checkpoint
    path or hub id (fast tokenizer required). labels: the custom label set (list or "a,b,c"); default: the
    taxonomy when every value is one of EMOTIONS, else the sorted unique values. Several `label_cols` of
    0/1 (T/F) flags train a multi-label set named after the columns. task="polarity" trains the polarity
    head from one column (0/1, neg/pos, 负面/正面 ...) and keeps the emotion head and taxonomy.
    lr: default 2e-4 from an emotag model, 5e-5 from a pretrained checkpoint. export: write ONNX fp32+int8.
    """
    import torch

    from emotag.model.features import Featurizer
    from emotag.train.trainer import EncodedSet, TrainSettings, fit, fit_temperature, predict

    t_start = time.time()
    if isinstance(label_cols, str):
        label_cols = tuple(c.strip() for c in label_cols.split(",") if c.strip())
    label_cols = tuple(label_cols)
    if isinstance(labels, str):
        labels = [x.strip() for x in labels.split(",") if x.strip()]
    if not label_cols:
        raise ValueError("no label column given")
    if epochs <= 0 or batch_size < 1:
        raise ValueError(f"epochs must be > 0 and batch size >= 1 (got {epochs}, {batch_size})")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)

    train_p = Path(train_path)
    out = Path(out_dir)
    rows = read_table(train_p, [text_col, *label_cols])
    dev_rows = read_table(dev_path, [text_col, *label_cols]) if dev_path else None

    kind, src = resolve_base(base_model)
    if kind == "emotag" and out.resolve() == Path(src).resolve():
        raise ValueError(f"output directory {out} is the base model; write the fine-tuned model elsewhere")
    if out.exists() and not out.is_dir():
        raise ValueError(f"output directory {out} is a file; name a directory (it is created if missing)")
    base_cfg = EmotagConfig.load(src) if kind == "emotag" else None
    base_polarity = base_cfg.polarity_labels if base_cfg else L.POLARITY

    def values_of(r: dict[str, list[Any]]) -> set[str]:
        if len(label_cols) > 1:
            return set()
        return {v for v in (_cell(x) for x in r[label_cols[0]]) if v is not None}

    plan = plan_labels(task, label_cols, values_of(rows), labels, base_polarity, where=f"{train_p}: ")
    if dev_rows is not None and not plan.multi_label:
        unseen = sorted(values_of(dev_rows) - set(plan.value_map))
        if unseen:
            raise ValueError(f"{dev_path}: labels {unseen[:5]} do not occur in {train_p.name} "
                             f"(labels: {', '.join(plan.value_map)})")
    examples, skipped = _examples(rows, text_col, label_cols, plan, train_p)
    if plan.multi_label:
        counts = Counter(lab for e in examples for lab in (e.emotions or ()))
        if len(counts) < 2:
            raise ValueError(f"{train_p}: fewer than two label columns have any positive row ({dict(counts)})")
    if dev_rows is not None:
        dev_ex, dev_skipped = _examples(dev_rows, text_col, label_cols, plan, Path(dev_path))
        skipped += dev_skipped
        train_ex, dev_source = examples, "file"
        if not dev_ex:
            raise ValueError(f"{dev_path}: no labelled rows")
    else:
        train_ex, dev_ex = _split_dev(examples, plan, seed)
        dev_source = "split"
    weights = class_weights(train_ex, plan)
    for e in train_ex:
        e.source = f"w:{_label_key(e, plan)}"  # the trainer's per-source multiplier carries the class weight

    # the base and its featurizer
    if kind == "emotag":
        model, tok = _load_emotag_base(src, plan, seed)
        backend_tok = tok
        lr = lr or 2e-4
    else:
        model, tok = _load_hf_base(src, plan, seed)
        backend_tok = tok.backend_tokenizer
        lr = lr or 5e-5
    cfg = model.config
    cfg.name = out.name
    cfg.base_model = str(base_model) if base_model is not None else src
    feat = Featurizer(backend_tok, cfg)
    train = EncodedSet(feat, train_ex)
    dev = EncodedSet(feat, dev_ex)
    mask = _gold_mask(dev, plan)
    head = _head(plan)

    # "before": the base on dev, where it already has this head; and anchors for the heads kept as they are
    has_head_before = kind == "emotag" and (plan.task == "polarity" or (
        tuple(base_cfg.emotion_labels) == plan.labels and base_cfg.multi_label == plan.multi_label))
    base_dev = predict(model, dev) if kind == "emotag" else None
    dev_before = None
    if has_head_before and base_dev is not None:
        t_base = base_cfg.temperature.get(head, 1.0)
        dev_before = head_metrics(base_dev[head], mask, plan, t_base)
        dev_before["ece"] = calibration(base_dev[head], mask, plan, t_base)
    anchored: list[str] = []
    if kind == "emotag":
        anchored = add_anchors(train, predict(model, train), cfg, plan, seed)
    loss_weights = {"emotion": 1.0, "polarity": 1.0, "intensity": 4.0, "valence": 4.0}
    for h in ("emotion", "polarity"):
        if h in anchored and h != head and not (h == "polarity" and plan.default_taxonomy and plan.task == "emotion"):
            loss_weights[h] = ANCHOR_WEIGHT

    # No dev evaluation in the first third of training (at least an epoch): a new head's first dev scores are
    # noise ("always the majority class" can score best) and early stopping on them ends training too soon.
    steps_per_epoch = math.ceil(len(train) / batch_size)
    total_steps = max(1, int(steps_per_epoch * epochs))
    settings = TrainSettings(
        min_steps=min(total_steps, max(steps_per_epoch, total_steps // 3)),
        epochs=epochs, batch_size=batch_size, lr=lr, ngram_lr=2e-2 * lr / 5e-4, seed=seed, max_minutes=max_minutes,
        patience=4 if steps_per_epoch >= 4 else 3, evals_per_epoch=2 if steps_per_epoch >= 4 else 1,
        warmup=0.06, loss_weights=loss_weights, source_weights={f"w:{k}": w for k, w in weights.items()},
    )

    def score_fn(pred: dict[str, np.ndarray], d: EncodedSet) -> float:
        return head_metrics(pred[head], _gold_mask(d, plan), plan)["macro_f1"]

    log.info("fine-tuning %s (%s) on %d rows, dev %d (%s); task %s, %d labels%s", src, kind, len(train), len(dev),
             dev_source, plan.task, len(plan.labels), ", multi-label" if plan.multi_label else "")
    show, stop = _progress(progress)
    losses: list[float] = []

    def callback(step: int, total: int, stats: dict[str, float]) -> None:
        losses.append(float(stats.get("loss", float("nan"))))
        show(step, total, stats)

    try:
        with warnings.catch_warnings():  # float(loss) on a graph tensor in the trainer's progress call
            warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True")
            fitted = fit(model, train, dev, settings, score_fn=score_fn, progress=callback)
    finally:
        stop()
    k = max(1, len(losses) // 5)  # mean training loss over the first and the last fifth of the steps
    loss_start, loss_end = float(np.mean(losses[:k])), float(np.mean(losses[-k:]))

    # calibration and the final numbers
    pred = predict(model, dev)
    temperature = dict(cfg.temperature)
    for h in ("emotion", "polarity"):
        hm = dev.emo_mask if h == "emotion" else dev.pol_mask
        if (hm.sum(-1) > 0).sum() >= 10 and not (h == "emotion" and cfg.multi_label) and (
                h == head or h not in anchored):
            temperature[h] = round(fit_temperature(pred[h], hm), 4)
    cfg.temperature = temperature
    t_head = 1.0 if plan.multi_label else temperature.get(head, 1.0)
    detail = head_metrics(pred[head], mask, plan, t_head, detail=True)
    dev_after = {k: v for k, v in detail.items() if k not in ("report", "confusion", "confusion_labels")}
    ece_before = calibration(pred[head], mask, plan, 1.0)
    ece_after = calibration(pred[head], mask, plan, t_head)
    dev_after["ece"] = ece_after
    kept: dict[str, float] = {}
    if base_dev is not None:
        for h in ("emotion", "polarity"):
            if h != head and h in anchored:
                kept[f"{h}_top1_agreement_with_base"] = float((pred[h].argmax(-1) == base_dev[h].argmax(-1)).mean())
        kept["intensity_mean_abs_change"] = float(np.abs(pred["intensity"] - base_dev["intensity"]).mean())

    # the model directory; the satisfaction read-out is inherited from an emotag base, and with it the
    # dialogue lexicon it reads (independent of the network, so it stays valid)
    dl = cfg.dialogue
    lexicon = Path(src) / DIALOGUE_LEXICAL_NAME if kind == "emotag" else None
    if dl.lexical_buckets and not (lexicon and lexicon.exists()):
        keep = [i for i, f in enumerate(dl.features) if f != "lexical_satisfaction"]
        dl.features = tuple(dl.features[i] for i in keep)
        dl.weights = tuple(dl.weights[i] for i in keep)
        dl.lexical_buckets = 0
    from emotag.dialogues import readout_fits

    if dl.features and not readout_fits(dl.features, cfg.emotion_labels, bool(cfg.polarity_labels)):
        # fit on the base's heads: with other labels it would read statistics this model never produces
        log.info("satisfaction read-out dropped: it reads the base model's emotion labels")
        dl.features, dl.weights, dl.bias, dl.lexical_buckets = (), (), 0.0, 0
    model.save(out, tokenizer=tok)
    files = [out / CONFIG_NAME, out / TOKENIZER_NAME, out / WEIGHTS_NAME]
    # ONNX files of an earlier model in this directory would be scored in preference to the new weights
    for stale in (ONNX_NAME, ONNX_INT8_NAME, DIALOGUE_LEXICAL_NAME):
        (out / stale).unlink(missing_ok=True)
    if dl.lexical_buckets and lexicon is not None:
        shutil.copyfile(lexicon, out / DIALOGUE_LEXICAL_NAME)
        files.append(out / DIALOGUE_LEXICAL_NAME)
    if export:
        from emotag.model.export import export_onnx

        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # onnxruntime's quantiser logs advice to the root logger
        try:
            # int8 activation ranges measured on the user's own texts, which is what the model will score
            files += export_onnx(out, quantize="int8", calibration_texts=[e.text for e in train_ex[:1024]])
        finally:
            root.setLevel(level)
    minutes_total = (time.time() - t_start) / 60
    report = {
        "task": plan.task, "labels": list(plan.labels), "multi_label": plan.multi_label,
        "base_model": cfg.base_model, "base_kind": kind,
        "data": {"train_path": str(train_p), "dev_path": str(dev_path) if dev_path else None,
                 "dev_source": dev_source, "train_rows": len(train), "dev_rows": len(dev),
                 "skipped_rows": skipped, "text_col": text_col, "label_cols": list(label_cols),
                 "value_map": plan.value_map, "class_weights": weights,
                 "train_label_counts": dict(Counter(_label_key(e, plan) for e in train_ex))},
        "dev_before": dev_before, "dev_after": dev_after,
        "calibration": {"head": head, "ece_before": ece_before, "ece_after": ece_after, "temperature": t_head},
        "kept_heads": kept, "anchored_heads": [h for h in anchored if h != head],
        "training": {"steps": fitted["steps"], "minutes": fitted["minutes"], "minutes_total": minutes_total,
                     "best_dev_macro_f1": fitted["best_dev_score"], "history": fitted["history"], "seed": seed,
                     "train_loss_start": loss_start, "train_loss_end": loss_end,
                     "settings": {k: v for k, v in asdict(settings).items() if k != "source_weights"}},
    }
    files += write_report(out, report, detail, plan)
    _model_card(out, cfg, report)
    files.append(out / "MODEL_CARD.md")
    log.info("wrote %s: dev macro-F1 %.4f%s in %.1f min", out, dev_after["macro_f1"],
             f" (base {dev_before['macro_f1']:.4f})" if dev_before else "", minutes_total)
    return FinetuneResult(
        out_dir=out, task=plan.task, labels=plan.labels, multi_label=plan.multi_label, base_model=cfg.base_model or src,
        train_rows=len(train), dev_rows=len(dev), dev_source=dev_source, skipped_rows=skipped,
        steps=fitted["steps"], minutes=fitted["minutes"], dev_before=dev_before, dev_after=dev_after,
        ece={"before": ece_before, "after": ece_after}, temperature=temperature, loss_start=loss_start,
        loss_end=loss_end, files=files,
    )
