"""Fine-tune emotag on a team's own labelled data: the library function behind `emotag train`.

One call goes from a labelled table to a finished SPEC §6 model directory, in this order (one module per
step):

    data.py       read the table with emotag.io -> Examples; stratified dev split if no dev file; class weights
    labelplan.py  the label plan (default taxonomy, custom labels, multi-label flags, polarity task) and where
                  each custom label starts in the base (好评 -> the polarity head's `positive` row)
    base.py       the base (an emotag model directory or a Hugging Face encoder), its rebuilt head, anchors
    heads.py      dev metrics on texts; the linear head on frozen features
    report.py     eval_report.json/.md, confusion matrix, model card, progress

and the run itself (`finetune` below): zero-shot score of the base on dev (when the labels map onto its
heads) and the majority-class rate -> a regularised linear head on frozen features (L-BFGS, seconds) ->
fine-tuning of the whole network from there, with early stopping on dev -> `choose` keeps the fine-tuned
network only when it beats the linear head (or the zero-shot head, where the linear head's
cross-validation could not beat it) by more than the dev split's noise -> temperature fitted on dev -> save, export ONNX, report. Every dev number is measured
on texts through the scorer's own windows (`EncodedSet`, `Featurizer.prepare`), and the final one through
`Tagger` on the written model: the number `emotag eval` reports on the same file.

User mistakes (missing column, a single class, labels outside the chosen label set) raise ValueError
with a one-line message; the CLI turns that into exit code 1.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import random
import shutil
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emotag import labels as L
from emotag.metrics import accuracy, fit_temperature, macro_f1, majority_rate
from emotag.model.config import (
    CONFIG_NAME,
    DIALOGUE_LEXICAL_NAME,
    INCOMPLETE_NAME,
    ONNX_INT8_NAME,
    ONNX_NAME,
    TOKENIZER_NAME,
    WEIGHTS_NAME,
    EmotagConfig,
    is_model_dir,
)
from emotag.model.experts import EXPERTS_NAME
from emotag.train.corpora import Example
from emotag.train.finetune.base import (
    add_anchors,
    load_emotag_base,
    load_hf_base,
    resolve_base,
    start_from_polarity,
)
from emotag.train.finetune.data import (
    cell,
    class_weights,
    examples,
    label_key,
    label_values,
    read_table,
    regression_value,
    split_dev,
)
from emotag.train.finetune.heads import (
    add_detail,
    calibration,
    fit_linear_head,
    gold_mask,
    head_metrics,
    head_probs,
    regression_metrics,
    selection,
)
from emotag.train.finetune.labelplan import MIN_REGRESSION_ROWS, TASKS, LabelPlan, plan_labels
from emotag.train.finetune.report import (
    CONFUSION_PNG,
    REPORT_JSON,
    REPORT_MD,
    ZERO_SHOT_SCORE,
    confusion_png,
    model_card,
    progress_display,
    write_report,
)

__all__ = ["FinetuneResult", "LabelPlan", "NotBetterError", "choose", "confusion_png", "finetune", "plan_labels"]

log = logging.getLogger("emotag.finetune")

ANCHOR_WEIGHT = 0.5  # loss weight of an anchored (self-distilled) classification head


class NotBetterError(ValueError):
    """The trained model is no better than the base's zero-shot reading or the majority class on dev, and
    the output directory already holds a model: it is left as it was (pass force=True to replace it)."""


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
    dev_before: dict[str, float] | None  # the base model's zero-shot on the same dev set (None: no mapping)
    dev_after: dict[str, float]  # the written model, measured as `emotag eval` measures it
    ece: dict[str, float]  # expected calibration error of the trained head before/after temperature
    temperature: dict[str, float]
    chosen: str = "fine-tuned"  # "zero-shot" ("polarity start" for regression), "linear head" or "fine-tuned"
    majority: float = float("nan")  # dev accuracy of always answering the most frequent training class
    better: bool = True  # better than both the zero-shot score and the majority class
    verdict: str = ""  # one line for the user when `better` is False
    loss_start: float = float("nan")  # mean training loss over the first fifth of the steps
    loss_end: float = float("nan")  # ... and over the last fifth
    files: list[Path] = field(default_factory=list)
    baseline: dict[str, float] | None = None  # regression: dev metrics of predicting the training mean


def _is_better(after: dict[str, float], zero_shot: dict[str, float] | None, majority: float,
               multi_label: bool, mean: dict[str, float] | None = None) -> tuple[bool, str]:
    """Better than both baselines: accuracy above the majority rate and macro-F1 above the zero-shot's
    (regression, `mean` given: a dev MAE below predicting the training mean's and below the zero-shot
    polarity_score's linear map's)."""
    if mean is not None:
        if after["mae"] >= mean["mae"]:
            return False, (f"dev MAE {after['mae']:.3f} is not below {mean['mae']:.3f}, predicting the training "
                           "mean for every text: the model has not learnt more than the average")
        if zero_shot is not None and after["mae"] >= zero_shot["mae"]:
            return False, (f"dev MAE {after['mae']:.3f} is not below the base model's zero-shot "
                           f"{zero_shot['mae']:.3f} (a linear map of its polarity_score)")
        return True, ""
    acc = after["exact_match" if multi_label else "accuracy"]
    if acc <= majority:
        return False, (f"dev accuracy {acc:.3f} is not above the majority-class rate {majority:.3f}: "
                       "the model has not learnt more than the class balance")
    if zero_shot is not None and after["macro_f1"] <= zero_shot["macro_f1"]:
        return False, (f"dev macro-F1 {after['macro_f1']:.3f} is not above the base model's zero-shot "
                       f"{zero_shot['macro_f1']:.3f}: the base model already reads these labels as well")
    return True, ""


def choose(candidates: dict[str, dict[str, float]], n_dev: int, linear: dict[str, Any]) -> str:
    """The model to keep: the linear head's own choice (the zero-shot head where its cross-validation could
    not beat it, `linear["l2"]` None), unless the fine-tuned network's dev macro-F1 beats that choice's
    cross-validated macro-F1 by more than one standard error of the dev split, 0.5 / sqrt(n_dev) (the
    binomial one at its widest: 0.20 for 6 texts, 0.05 for 100, 0.016 for 1,000).

    Why: the simpler model's cross-validated score (every labelled text) is the steadier estimate; the
    network's dev score is optimistic (its early stop was picked on that split) and, on a small split,
    partly luck. Measured: with 24 dev texts a network that "won" on dev scored below the linear head on
    a held-out test.

    Regression (`linear["cv_neg_mae"]`): the same rule on minus the MAE, the margin being the fine-tuned
    network's dev MAE standard error.
    """
    starts = [c for c in ("zero-shot", "polarity start") if c in candidates]  # the head before any fit
    simple = starts[0] if linear["l2"] is None and starts else "linear head"
    if "fine-tuned" not in candidates:
        return simple
    tuned = candidates["fine-tuned"]
    cv = linear["cv_neg_mae"] if "cv_neg_mae" in linear else linear["cv_macro_f1"]
    simple_score = linear["cv_kept"] if "cv_kept" in linear else \
        cv["start"] if linear["l2"] is None else cv[str(linear["l2"])]
    if "mae" in tuned:
        return "fine-tuned" if -tuned["mae"] > simple_score + tuned["mae_se"] else simple
    margin = 0.5 / math.sqrt(max(n_dev, 1))
    return "fine-tuned" if tuned["macro_f1"] > simple_score + margin else simple


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
    force: bool = False,
) -> FinetuneResult:
    """Fine-tune a model on a labelled table and write a complete model directory to `out_dir`.

    train_path / dev_path: any file `emotag score` reads (csv, tsv, jsonl, json, parquet, xlsx) with
    `text_col` and the label column(s). Without a dev file, a stratified 12% of the training rows is held out
    for model choice, early stopping and calibration. base_model: an emotag model directory (default: the
    bundled model), a Hugging Face encoder checkpoint path or hub id (fast tokenizer required). labels: the
    custom label set (list or "a,b,c"); default: the taxonomy when every value is one of EMOTIONS, else the
    sorted unique values. Several `label_cols` of 0/1 (T/F) flags train a multi-label set named after the
    columns. task="polarity" trains the polarity head from one column (0/1, neg/pos, 负面/正面 ...) and keeps
    the emotion head and taxonomy. task="regression" reads a number per row (1-5 stars, a 0-1 score) with one
    sigmoid on a fixed scale (`labels` = LO,HI, default inferred) whose value the model's records carry as
    `score`. epochs=0: the linear head only, no fine-tuning of the network.
    lr: default 2e-4 from an emotag model, 5e-5 from a pretrained checkpoint. export: write ONNX fp32+int8.
    force: replace a model in `out_dir` even when the result is no better than the baselines (otherwise
    NotBetterError, and nothing is written).
    """
    import torch

    t_start = time.time()
    label_cols = tuple(c.strip() for c in label_cols.split(",") if c.strip()) if isinstance(label_cols, str) \
        else tuple(label_cols)
    if isinstance(labels, str):
        labels = [x.strip() for x in labels.split(",") if x.strip()]
    if not label_cols:
        raise ValueError("no label column given")
    if epochs < 0 or batch_size < 1:
        raise ValueError(f"epochs must be >= 0 and batch size >= 1 (got {epochs}, {batch_size})")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
    out = Path(out_dir)
    kind, src = resolve_base(base_model)
    if kind == "emotag" and out.resolve() == Path(src).resolve():
        raise ValueError(f"output directory {out} is the base model; write the fine-tuned model elsewhere")
    if out.exists() and not out.is_dir():
        raise ValueError(f"output directory {out} is a file; name a directory (it is created if missing)")
    # hidden files (.gitkeep, .DS_Store) do not make a directory someone's project
    if out.is_dir() and any(not c.name.startswith(".") for c in out.iterdir()) and not is_model_dir(out) \
            and not force:
        # the run replaces config.json, MODEL_CARD.md, ... in place: fine over an earlier emotag model,
        # data loss over anything else (a project folder, a Hugging Face checkpoint). Refused before training.
        raise ValueError(f"output directory {out} is not empty and holds no emotag model: its files would be "
                         "replaced; name a new or empty directory (--force writes into it anyway)")
    base_cfg = EmotagConfig.load(src) if kind == "emotag" else None
    data = _read_data(Path(train_path), dev_path, text_col, label_cols, labels, task, base_cfg, seed)
    run = _setup(data, kind, src, base_cfg, out, base_model, lr, seed)

    lin, lin_seconds = _linear_head(run)
    fitted, losses, settings = _fine_tune_network(run, epochs, batch_size, seed, max_minutes, progress)
    chosen = choose(run.candidates, len(run.dev.examples), lin)
    run.model.load_state_dict(run.states[chosen])
    run.model.eval()
    # the base model itself, unchanged: written as it is (its composer, domain experts, temperatures and ONNX
    # files), so that it scores exactly what the base scores
    as_base = chosen == "zero-shot" and kind == "emotag" and not run.rebuilt
    base_temperature = dict(run.cfg.temperature)
    calib = _calibrate(run)
    if as_base:
        _keep_base_temperature(run, calib, base_temperature)
    better, verdict = _is_better(calib["torch_after"], run.dev_before, data.majority, data.plan.multi_label,
                                 data.mean)
    if not better and (out / CONFIG_NAME).exists() and not (out / INCOMPLETE_NAME).exists() and not force:
        raise NotBetterError(f"not better than the baselines ({verdict}); {out} already holds a model and was "
                             "left as it was (--force replaces it)")

    calib_texts, calib_info = int8_calibration_texts(data.train_ex) if export else (None, None)
    files = _write_model(out, run.model, run.tok, run.cfg, src, kind, calib_texts, export, as_base)
    if as_base and calib_info is not None:
        calib_info = {"copied_from_base": True}  # the base's own int8 file, calibrated when it was made
    dev_after, detail = _measure_written(out, run.dev, data.plan, export)
    plan, train, dev = data.plan, run.train, run.dev
    if not plan.regression:
        dev_after["ece"] = calib["ece_after"]
    report = _report(run, chosen, better, verdict, calib, dev_after, lin, lin_seconds, fitted, losses, settings,
                     seed, t_start, train_path, dev_path, text_col, label_cols)
    report["int8_calibration"] = calib_info
    files += write_report(out, report, detail, plan.multi_label)
    files.append(model_card(out, run.cfg, report))
    key = "mae" if plan.regression else "macro_f1"
    log.info("wrote %s (%s): dev %s %.4f%s in %.1f min", out, chosen, key, dev_after[key],
             f" (zero-shot {run.dev_before[key]:.4f})" if run.dev_before else "", report["training"]["minutes_total"])
    return FinetuneResult(
        out_dir=out, task=plan.task, labels=plan.labels,
        multi_label=plan.multi_label and not plan.regression,
        base_model=run.cfg.base_model or src, train_rows=len(train.examples), dev_rows=len(dev.examples),
        dev_source=data.dev_source, skipped_rows=data.skipped, steps=fitted["steps"], minutes=fitted["minutes"],
        dev_before=run.dev_before, dev_after=dev_after, ece={"before": calib["ece_before"],
                                                              "after": calib["ece_after"]},
        temperature=run.cfg.temperature, chosen=chosen, majority=data.majority, better=better, verdict=verdict,
        loss_start=report["training"]["train_loss_start"], loss_end=report["training"]["train_loss_end"],
        files=files, baseline=data.mean,
    )


def _report(run: _Run, chosen: str, better: bool, verdict: str, calib: dict[str, Any], dev_after: dict[str, Any],
            lin: dict[str, Any], lin_seconds: float, fitted: dict[str, Any], losses: list[float], settings: Any,
            seed: int, t_start: float, train_path: Any, dev_path: Any, text_col: str, label_cols: tuple[str, ...]
            ) -> dict[str, Any]:
    """Every number of the run, as eval_report.json stores it."""
    data = run.data
    kind = run.kind
    k = max(1, len(losses) // 5)  # mean training loss over the first and the last fifth of the steps
    loss_start = float(np.mean(losses[:k])) if losses else float("nan")
    loss_end = float(np.mean(losses[-k:])) if losses else float("nan")
    plan, train, dev = data.plan, run.train, run.dev
    return {
        "task": plan.task, "labels": list(plan.labels),
        "multi_label": plan.multi_label and not plan.regression,
        "base_model": run.cfg.base_model, "base_kind": kind, "starts_from": run.start, "chosen": chosen,
        "better_than_baselines": better, "verdict": verdict,
        "data": {"train_path": str(train_path), "dev_path": str(dev_path) if dev_path else None,
                 "dev_source": data.dev_source, "train_rows": len(train.examples), "dev_rows": len(dev.examples),
                 "train_windows": len(train), "dev_windows": len(dev),
                 "skipped_rows": data.skipped + train.dropped + dev.dropped, "text_col": text_col,
                 "label_cols": list(label_cols), "value_map": plan.value_map, "class_weights": data.weights,
                 "train_label_counts": dict(Counter(label_key(e, plan) for e in data.train_ex))},
        "majority": {"label": data.majority_label, "dev_accuracy": data.majority},
        "scale": list(plan.scale) if plan.scale else None, "mean_baseline": data.mean,
        "candidates": run.candidates, "dev_before": run.dev_before, "dev_after": dev_after,
        "dev_after_torch": calib["torch_after"],
        "calibration": {"head": plan.head, "ece_before": calib["ece_before"], "ece_after": calib["ece_after"],
                        "temperature": 1.0 if plan.multi_label else run.cfg.temperature.get(plan.head, 1.0)},
        "kept_heads": calib["kept"], "anchored_heads": [h for h in run.anchored if h != plan.head],
        "linear_head": lin,
        "training": {"steps": fitted["steps"], "minutes": fitted["minutes"],
                     "minutes_total": (time.time() - t_start) / 60, "linear_head_seconds": lin_seconds,
                     "best_dev_macro_f1": fitted["best_dev_score"], "history": fitted["history"], "seed": seed,
                     "train_loss_start": loss_start, "train_loss_end": loss_end,
                     "settings": {k: v for k, v in asdict(settings).items() if k != "source_weights"}
                     if settings else None},
    }


@dataclass
class _Data:
    """The labelled rows of a run, planned and split."""

    plan: LabelPlan
    train_ex: list[Example]
    dev_ex: list[Example]
    dev_source: str  # "file" or "split"
    skipped: int
    weights: dict[str, float]  # class -> loss weight
    majority_label: str
    majority: float  # dev accuracy of always answering majority_label (NaN for regression)
    mean: dict[str, float] | None = None  # regression: dev metrics of predicting the training mean


def _first_bad_row(path: Path, rows: dict[str, list[Any]], label_cols: tuple[str, ...], task: str,
                   labels: Sequence[str] | None) -> None:
    """The row a label plan would refuse, named: a regression value that is not a number, a label outside
    --labels. plan_labels sees only the set of values, and SPEC §5 asks for file, row and problem."""
    if len(label_cols) != 1 or not (task == "regression" or (labels and task != "polarity")):
        return
    col = label_cols[0]
    allowed = set(labels or ())
    for i, raw in enumerate(rows[col]):
        v = cell(raw)
        if v is None:
            continue
        if task == "regression":
            regression_value(v, path, i, col)
        elif v not in allowed:
            raise ValueError(f"{path}: row {i + 1}, column {col!r}: label {v!r} is not in --labels "
                             f"({', '.join(dict.fromkeys(labels or ()))})")


def _read_data(train_p: Path, dev_path: str | os.PathLike[str] | None, text_col: str, label_cols: tuple[str, ...],
               labels: Sequence[str] | None, task: str, base_cfg: EmotagConfig | None, seed: int) -> _Data:
    """Read the table(s), decide the label plan, hold out dev, weigh the classes, find the majority class."""
    rows = read_table(train_p, [text_col, *label_cols])
    dev_rows = read_table(dev_path, [text_col, *label_cols]) if dev_path else None
    base_polarity = base_cfg.polarity_labels if base_cfg else EmotagConfig().polarity_labels
    _first_bad_row(train_p, rows, label_cols, task, labels)
    plan = plan_labels(task, label_cols, label_values(rows, label_cols), labels, base_polarity, where=f"{train_p}: ")
    if dev_rows is not None and not plan.multi_label and not plan.regression:
        unseen = sorted(label_values(dev_rows, label_cols) - set(plan.value_map))
        if unseen:
            raise ValueError(f"{dev_path}: labels {unseen[:5]} do not occur in {train_p.name} "
                             f"(labels: {', '.join(plan.value_map)})")
    rows_ex, skipped = examples(rows, text_col, label_cols, plan, train_p)
    if plan.regression and len(rows_ex) < MIN_REGRESSION_ROWS:
        raise ValueError(f"{train_p}: only {len(rows_ex)} rows with a text and a {label_cols[0]!r} value: too few "
                         f"to fit a regression read-out (at least {MIN_REGRESSION_ROWS})")
    if plan.multi_label and not plan.regression:
        counts = Counter(lab for e in rows_ex for lab in (e.emotions or ()))
        if len(counts) < 2:
            raise ValueError(f"{train_p}: fewer than two label columns have any positive row ({dict(counts)})")
    if dev_rows is not None:
        dev_ex, dev_skipped = examples(dev_rows, text_col, label_cols, plan, Path(dev_path))
        skipped += dev_skipped
        train_ex, dev_source = rows_ex, "file"
        if not dev_ex:
            raise ValueError(f"{dev_path}: no labelled rows")
    else:
        train_ex, dev_ex = split_dev(rows_ex, plan, seed, where=f"{train_p}: ")
        dev_source = "split"
    if not plan.multi_label and not plan.regression:
        # what the labels promised, checked on the rows that remain (skipped rows, the split): a model
        # needs two classes to learn from, and cannot be measured on a class it never saw
        seen = Counter(label_key(e, plan) for e in train_ex)
        if len(seen) < 2:
            raise ValueError(f"{train_p}: the training rows have only one class ({', '.join(seen) or 'none'}); "
                             "need two or more")
        unseen = sorted({label_key(e, plan) for e in dev_ex} - set(seen))
        if unseen:
            raise ValueError(f"{dev_path or train_p}: dev labels {unseen[:5]} do not occur in the training rows "
                             f"(labels: {', '.join(seen)})")
    weights = class_weights(train_ex, plan)
    for e in train_ex:
        e.source = f"w:{label_key(e, plan)}"  # the trainer's per-source multiplier carries the class weight
    if plan.regression:
        if len({e.target for e in train_ex}) < 2:  # type: ignore[attr-defined]
            raise ValueError(f"{train_p}: the training rows all have the same {label_cols[0]!r} value: there is "
                             "nothing to learn")
        mean = float(np.mean([e.target for e in train_ex]))  # type: ignore[attr-defined]
        gold = plan.on_scale([e.target for e in dev_ex])  # type: ignore[attr-defined]
        return _Data(plan, train_ex, dev_ex, dev_source, skipped, weights, f"{plan.on_scale(mean):.4g}",
                     float("nan"), regression_metrics(np.full(len(gold), plan.on_scale(mean)), gold))
    top, majority = majority_rate([label_key(e, plan) for e in train_ex], [label_key(e, plan) for e in dev_ex])
    return _Data(plan, train_ex, dev_ex, dev_source, skipped, weights, str(top), majority)


@dataclass
class _Run:
    """The network and its encoded data through the steps of a run, with each candidate's dev numbers."""

    data: _Data
    kind: str
    src: str
    model: Any
    tok: Any
    cfg: EmotagConfig
    train: Any  # EncodedSet
    dev: Any  # EncodedSet
    lr: float
    seed: int
    start: dict[str, str]  # custom label -> the base output it started from
    fresh: list[int]  # rows of the trained head with nothing to start from
    base_dev: dict[str, np.ndarray] | None  # the base's raw dev outputs (emotag bases)
    anchored: list[str] = field(default_factory=list)
    dev_before: dict[str, float] | None = None  # zero-shot, where the labels map onto the base's heads
    rebuilt: bool = False  # the trained head is a new one (custom labels, a Hugging Face encoder)
    candidates: dict[str, dict[str, float]] = field(default_factory=dict)
    states: dict[str, Any] = field(default_factory=dict)

    def score(self, pred: dict[str, np.ndarray], d: Any) -> float:
        """The model-choice and early-stopping metric: macro-F1 (regression: -MAE) of the trained head on
        `d`'s texts."""
        plan = self.data.plan
        return selection(head_metrics(head_probs(pred, d, plan), gold_mask(d, plan), plan), plan)

    def measure(self, name: str, metrics: dict[str, float] | None = None) -> None:
        """Record the model as it is now as candidate `name`: its weights, and its dev numbers (`metrics` when
        they were measured another way, else the network's own reading of the dev split)."""
        from emotag.train.trainer import predict

        if metrics is None:
            plan = self.data.plan
            metrics = head_metrics(head_probs(predict(self.model, self.dev), self.dev, plan),
                                   gold_mask(self.dev, plan), plan)
        self.candidates[name] = metrics
        self.states[name] = copy.deepcopy(self.model.state_dict())


def _setup(data: _Data, kind: str, src: str, base_cfg: EmotagConfig | None, out: Path,
           base_model: str | os.PathLike[str] | None, lr: float | None, seed: int) -> _Run:
    """Load the base with its head for the plan, encode train and dev through the scorer's path, measure
    the zero-shot and majority baselines, and anchor the heads the data does not supervise."""
    from emotag.model.features import Featurizer
    from emotag.train.trainer import EncodedSet, predict

    plan = data.plan
    start: dict[str, str] = {}
    if kind == "emotag":
        model, tok, start = load_emotag_base(src, plan)
        backend_tok, lr = tok, lr or 2e-4
    else:
        model, tok = load_hf_base(src, plan, seed)
        backend_tok, lr = tok.backend_tokenizer, lr or 5e-5
    cfg = model.config
    cfg.name = out.name
    cfg.base_model = str(base_model) if base_model is not None else src
    feat = Featurizer(backend_tok, cfg)
    train, dev = EncodedSet(feat, data.train_ex), EncodedSet(feat, data.dev_ex)
    if not len(train) or not len(dev):
        raise ValueError(f"no text left after normalisation in the {'training' if not len(train) else 'dev'} rows")
    base_train = predict(model, train) if kind == "emotag" else None
    if plan.regression:  # soft targets: the sigmoid's cross-entropy is minimised at the row's 0..1 value
        for d in (train, dev):
            d.emo_mask[:, 0] = np.array([e.target for e in d.examples], dtype=np.float32)[d.text_of]
        if base_train is not None:
            start = start_from_polarity(model, train, base_train, plan)
    same_head = base_cfg is not None and plan.task == "emotion" and tuple(base_cfg.emotion_labels) == plan.labels \
        and base_cfg.multi_label == plan.multi_label
    rebuilt = kind != "emotag" or (plan.head == "emotion" and not same_head)
    fresh = [j for j, lab in enumerate(plan.labels) if lab not in start] if rebuilt else []
    run = _Run(data, kind, src, model, tok, cfg, train, dev, lr, seed, start, fresh,
               predict(model, dev) if kind == "emotag" else None, rebuilt=rebuilt)
    if plan.regression:
        run.candidates["training mean"] = dict(data.mean or {})
        if kind == "emotag" and cfg.polarity_labels:
            run.candidates[ZERO_SHOT_SCORE] = run.dev_before = _polarity_score_map(src, data)
        if start:
            run.measure("polarity start")
    else:
        run.candidates["majority class"] = {"exact_match" if plan.multi_label else "accuracy": data.majority}
    if kind == "emotag" and not plan.regression and (plan.task == "polarity" or same_head or
                                                     (start and len(start) == len(plan.labels))):
        # zero-shot: the base before any training. Its weights (or the head rebuilt from the rows the labels
        # map onto) are the candidate's state; its numbers are the base model's as users score it
        # (`Tagger.load(src)`, composer and domain experts included), so the baseline is what the base
        # really scores, not the bare network's reading of it
        run.measure("zero-shot", _zero_shot_through_tagger(src, dev, plan, start))
        run.dev_before = dict(run.candidates["zero-shot"])
        # (the calibration error is the network head's: the tagger's polarity is a label, not a distribution)
        run.dev_before["ece"] = calibration(head_probs(run.base_dev, dev, plan), gold_mask(dev, plan), plan)
    if base_train is not None:
        run.anchored = add_anchors(train, base_train, cfg, plan, seed)
    return run


def _zero_shot_through_tagger(src: str, dev: Any, plan: LabelPlan, start: dict[str, str]) -> dict[str, float]:
    """The base model's dev metrics as `emotag score` / `emotag eval` read it: `Tagger.load(src)` (ONNX when
    the directory has it), each label's probability taken from the base output it maps onto (the label
    itself for the base's own head; `start`'s "polarity:positive" / "emotion:anger" for mapped labels;
    polarity through `_polarity_probability`, as `emotag eval` reads polarity)."""
    import torch

    from emotag.tagger import Tagger

    backend = "onnx" if any((Path(src) / f).exists() for f in (ONNX_INT8_NAME, ONNX_NAME)) else "torch"
    tagger = Tagger.load(src, backend=backend, threads=torch.get_num_threads())  # the run's --threads
    results = list(tagger.tag_many([e.text for e in dev.examples], batch_size=64))
    if plan.task == "emotion" and not plan.multi_label and not start and not plan.groups() and \
            not _smp_file(plan) and tuple(tagger.config.emotion_labels) == plan.labels:
        # the base's own head: the label users read. Macro-F1 over the classes present, as the candidates
        # it is compared with are measured (SMP2020's summed classes: `head_metrics` on the probabilities)
        return _as_eval_reads(results, dev.examples, plan, judged=False)
    source = [start.get(lab, f"{plan.head}:{lab}").split(":", 1) for lab in plan.labels]
    probs = np.zeros((len(dev.examples), len(plan.labels)))
    for i, r in enumerate(results):
        if r.error is None:
            probs[i] = [_polarity_probability(r, lab) if head == "polarity" else (r.emotions or {}).get(lab, 0.0)
                        for head, lab in source]
    return head_metrics(probs, gold_mask(dev, plan), plan)


def _polarity_score_map(src: str, data: _Data) -> dict[str, float]:
    """The regression baseline where the base reads polarity: its zero-shot `polarity_score` (through
    `Tagger`, the field users see) mapped onto the user's scale by least squares on the training texts,
    measured on dev; `polarity_score_r` is the raw field's Pearson r with the dev values."""
    from emotag.tagger import Tagger

    plan = data.plan
    tagger = Tagger.load(src, backend="torch")

    def scores(rows: list[Example]) -> tuple[np.ndarray, np.ndarray]:
        res = list(tagger.tag_many([e.text for e in rows], batch_size=64))
        ok = [k for k, r in enumerate(res) if r.error is None]
        return (np.array([res[k].polarity_score for k in ok], dtype=np.float64),
                plan.on_scale([rows[k].target for k in ok]))  # type: ignore[attr-defined]

    x, y = scores(data.train_ex)
    slope, icept = np.polyfit(x, y, 1) if np.std(x) > 0 else (0.0, float(np.mean(y)))
    lo, hi = plan.scale or (0.0, 1.0)
    xd, yd = scores(data.dev_ex)
    m = regression_metrics(np.clip(icept + slope * xd, lo, hi), yd)
    m["polarity_score_r"] = float(np.corrcoef(xd, yd)[0, 1]) if np.std(xd) > 0 and np.std(yd) > 0 else 0.0
    return m


def _linear_head(run: _Run) -> tuple[dict[str, Any], float]:
    """Step 1: the trained head alone on frozen features; recorded as candidate "linear head"."""
    t0 = time.time()
    row_w = np.array([run.data.weights.get(s[2:], 1.0) for s in run.train.sources], dtype=np.float32)
    plan = run.data.plan
    has_start = bool(run.start) if plan.regression else run.dev_before is not None
    lin = fit_linear_head(run.model, run.train, run.dev, plan, row_w, run.fresh, has_start, seed=run.seed)
    seconds = time.time() - t0
    run.measure("linear head")
    reg = run.data.plan.regression
    cv = lin["cv_neg_mae" if reg else "cv_macro_f1"]
    best = lin["cv_kept"]
    st = lin.get("stacked")
    what = ("kept the polarity start" if reg else "kept the zero-shot head") if lin["l2"] is None else \
        f"L2 {lin['l2']:g}" if lin["form"] != "stacked" else \
        f"head (L2 {st['l2']:g}) and lexical expert (C {st['C']:g}) fitted apart, mixed {1 - st['mix']:.1f} / {st['mix']:.1f}"
    log.info("linear head on frozen features: %s (cross-validated %s %.4f on %d texts%s) in %.1f s",
             what, "MAE" if reg else "macro-F1",
             -best if reg else best, lin["texts"],
             f", zero-shot {cv['start']:.4f}" if run.dev_before is not None and not reg else "", seconds)
    return lin, seconds


def _fine_tune_network(run: _Run, epochs: float, batch_size: int, seed: int, max_minutes: float | None,
                       progress: bool) -> tuple[dict[str, Any], list[float], Any]:
    """Step 2: the whole network from the linear head, early stopping on dev (the trainer restores the
    best evaluation); recorded as candidate "fine-tuned". Skipped for epochs=0 or a perfect dev score."""
    from emotag.train.trainer import TrainSettings, fit

    fitted: dict[str, Any] = {"steps": 0, "minutes": 0.0, "best_dev_score": None, "history": []}
    losses: list[float] = []
    if epochs <= 0:
        return fitted, losses, None
    if not run.data.plan.regression and max(run.candidates[c]["macro_f1"] for c in run.states) >= 1.0:
        log.info("no fine-tuning of the network: dev macro-F1 is already 1.0")
        return fitted, losses, None
    plan, train = run.data.plan, run.train
    loss_weights = {"emotion": 1.0, "polarity": 1.0, "intensity": 4.0, "valence": 4.0}
    for h in ("emotion", "polarity"):
        if h in run.anchored and h != plan.head and not (h == "polarity" and plan.default_taxonomy):
            loss_weights[h] = ANCHOR_WEIGHT
    steps_per_epoch = math.ceil(len(train) / batch_size)
    total_steps = max(1, int(steps_per_epoch * epochs))
    settings = TrainSettings(
        min_steps=min(total_steps, steps_per_epoch), epochs=epochs, batch_size=batch_size, lr=run.lr,
        ngram_lr=2e-2 * run.lr / 5e-4, seed=seed, max_minutes=max_minutes,
        patience=4 if steps_per_epoch >= 4 else 3, evals_per_epoch=2 if steps_per_epoch >= 4 else 1, warmup=0.06,
        loss_weights=loss_weights, source_weights={f"w:{k}": w for k, w in run.data.weights.items()},
    )
    log.info("fine-tuning %s (%s) on %d texts, dev %d (%s); task %s, %d labels%s", run.src, run.kind,
             len(train.examples), len(run.dev.examples), run.data.dev_source, plan.task, len(plan.labels),
             ", multi-label" if plan.multi_label else "")
    show, stop = progress_display(progress)

    def callback(step: int, total: int, stats: dict[str, float]) -> None:
        losses.append(float(stats.get("loss", float("nan"))))
        show(step, total, stats)

    try:
        with warnings.catch_warnings():  # float(loss) on a graph tensor in the trainer's progress call
            warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True")
            fitted = fit(run.model, train, run.dev, settings, score_fn=run.score, progress=callback)
    finally:
        stop()
    run.measure("fine-tuned")
    return fitted, losses, settings


def _calibrate(run: _Run) -> dict[str, Any]:
    """Temperatures fitted on dev texts (the trained head, and heads that are neither trained nor anchored),
    the trained head's ECE before/after, and how far the kept heads moved from the base."""
    from emotag.train.trainer import predict

    plan, dev, cfg = run.data.plan, run.dev, run.cfg
    pred = predict(run.model, dev)
    temperature = dict(cfg.temperature)
    for h in ("emotion", "polarity"):
        hm = dev.text_rows(dev.emo_mask if h == "emotion" else dev.pol_mask)
        if (hm.sum(-1) > 0).sum() >= 10 and not (h == "emotion" and cfg.multi_label) and (
                h == plan.head or h not in run.anchored):
            temperature[h] = round(fit_temperature(pred[h], hm, dev.weights, dev.first), 4)
    mask = gold_mask(dev, plan)
    nan = float("nan")  # regression: a score, not a class probability, so no calibration error
    out: dict[str, Any] = {
        "ece_before": nan if plan.regression else
        calibration(head_probs(pred, dev, plan, {**temperature, plan.head: 1.0}), mask, plan),
        "ece_after": nan if plan.regression else calibration(head_probs(pred, dev, plan, temperature), mask, plan),
        "torch_after": head_metrics(head_probs(pred, dev, plan, temperature), mask, plan), "kept": {}}
    cfg.temperature = temperature
    if run.base_dev is not None:
        now, base = dev.text_outputs(pred), dev.text_outputs(run.base_dev)
        for h in ("emotion", "polarity"):
            if h != plan.head and h in run.anchored:
                out["kept"][f"{h}_top1_agreement_with_base"] = float((now[h].argmax(-1) == base[h].argmax(-1)).mean())
        out["kept"]["intensity_mean_abs_change"] = float(np.abs(now["intensity"] - base["intensity"]).mean())
    return out


def _keep_base_temperature(run: _Run, calib: dict[str, Any], base_temperature: dict[str, float]) -> None:
    """Undo `_calibrate`'s temperatures for a model written as the base: the base's own temperatures (which
    its composer's inputs were fitted under) stay, and the report's "after" numbers are the base's."""
    from emotag.train.trainer import predict

    plan, dev = run.data.plan, run.dev
    run.cfg.temperature = base_temperature
    pred = predict(run.model, dev)
    probs = head_probs(pred, dev, plan, base_temperature)
    calib["ece_after"] = calibration(probs, gold_mask(dev, plan), plan)
    calib["torch_after"] = head_metrics(probs, gold_mask(dev, plan), plan)


CALIBRATION_MAX_TEXTS = 1024  # training texts the int8 ranges are measured on (the first ones)


def int8_calibration_texts(train_ex: Sequence[Example]) -> tuple[list[str], dict[str, Any]]:
    """The texts the int8 file's activation ranges are measured on, and what they are (for the report).

    The training texts, which look like what the model will score; when there are fewer than
    MIN_CALIBRATION_TEXTS, topped up with emotag's own calibration sample (`export-onnx`'s default). Why:
    ranges set by a handful of texts clip what other texts reach (24 training rows: the int8 file's top
    emotion differed from torch's on 2 of 92 texts, where SPEC §2 asks for 99% agreement).
    """
    from emotag.model.config import MIN_CALIBRATION_TEXTS
    from emotag.model.export import default_calibration_texts

    own = [e.text for e in train_ex[:CALIBRATION_MAX_TEXTS]]
    extra: list[str] = []
    if len(own) < MIN_CALIBRATION_TEXTS:
        extra = default_calibration_texts()[: MIN_CALIBRATION_TEXTS - len(own)]
        log.info("int8 calibration: %d training text%s, fewer than %d: topped up with %d of emotag's sample "
                 "texts", len(own), "s" if len(own) != 1 else "", MIN_CALIBRATION_TEXTS, len(extra))
    return own + extra, {"texts": len(own) + len(extra), "training_texts": len(own), "sample_texts": len(extra)}


def _write_model(out: Path, model: Any, tok: Any, cfg: EmotagConfig, src: str, kind: str,
                 calibration_texts: list[str] | None, export: bool, as_base: bool = False) -> list[Path]:
    """The model directory; the satisfaction read-out is inherited from an emotag base, and with it the
    dialogue lexicon it reads (independent of the network, so it stays valid).

    `as_base` (the zero-shot candidate kept on the base's own heads, i.e. the network unchanged): the base's
    composer stays in the config and its domain experts (`experts.npz`) and ONNX files are copied, so the
    written model scores exactly as the base does. Any other result drops the composer (below) and the
    experts it alone reads."""
    from emotag.dialogues import readout_fits

    dl = cfg.dialogue
    lexicon = Path(src) / DIALOGUE_LEXICAL_NAME if kind == "emotag" else None
    if dl.lexical_buckets and not (lexicon and lexicon.exists()):
        keep = [i for i, f in enumerate(dl.features) if f != "lexical_satisfaction"]
        dl.features = tuple(dl.features[i] for i in keep)
        dl.weights = tuple(dl.weights[i] for i in keep)
        dl.lexical_buckets = 0
    if dl.features and not readout_fits(dl.features, cfg.emotion_labels, bool(cfg.polarity_labels)):
        # fit on the base's heads: with other labels it would read statistics this model never produces
        log.info("satisfaction read-out dropped: it reads the base model's emotion labels")
        dl.features, dl.weights, dl.bias, dl.lexical_buckets = (), (), 0.0, 0
    # the composer (emotag.model.compose) was fit on the base network's scores, beside the base's domain
    # experts: a tuned network reads differently, so the fine-tuned model's heads decide polarity alone
    # (a base written as it is keeps it: its network is the one the composer was fit on)
    if not as_base:
        cfg.composer = None
    # until the last file is written the directory says it is incomplete (resolve_model_dir refuses it), and
    # an earlier model's report and card go first: they must never describe these weights
    out.mkdir(parents=True, exist_ok=True)
    (out / INCOMPLETE_NAME).write_text("an emotag train run is writing this model\n", encoding="utf-8")
    for stale in (REPORT_JSON, REPORT_MD, CONFUSION_PNG, "MODEL_CARD.md"):
        (out / stale).unlink(missing_ok=True)
    model.save(out, tokenizer=tok)
    files = [out / CONFIG_NAME, out / TOKENIZER_NAME, out / WEIGHTS_NAME]
    # ONNX files of an earlier model in this directory would be scored in preference to the new weights
    for stale in (ONNX_NAME, ONNX_INT8_NAME, DIALOGUE_LEXICAL_NAME, EXPERTS_NAME):
        (out / stale).unlink(missing_ok=True)
    if dl.lexical_buckets and lexicon is not None:
        shutil.copyfile(lexicon, out / DIALOGUE_LEXICAL_NAME)
        files.append(out / DIALOGUE_LEXICAL_NAME)
    copied = []
    if as_base:
        names = [EXPERTS_NAME] + ([ONNX_NAME, ONNX_INT8_NAME] if export else [])
        copied = [n for n in names if (Path(src) / n).exists()]
        for name in copied:
            shutil.copyfile(Path(src) / name, out / name)
            files.append(out / name)
    if export and not any(n.endswith(".onnx") for n in copied):
        from emotag.model.export import export_onnx

        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # onnxruntime's quantiser logs advice to the root logger
        try:
            # int8 activation ranges measured on the user's own texts, which is what the model will score
            # (`int8_calibration_texts`); `writing`: this run holds the directory's incomplete marker
            files += export_onnx(out, quantize="int8", calibration_texts=calibration_texts, writing=True)
        finally:
            root.setLevel(level)
    (out / INCOMPLETE_NAME).unlink()
    return files


def _measure_written(out: Path, dev: Any, plan: LabelPlan, export: bool
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The written model's dev metrics through `Tagger` (ONNX when exported, as `emotag eval` loads it):
    the numbers `emotag eval` reports on the same texts. Returns (summary, detail)."""
    from emotag.tagger import Tagger

    tagger = Tagger.load(out, backend="onnx" if export else "torch")
    results = list(tagger.tag_many([e.text for e in dev.examples], batch_size=64))
    cfg = tagger.config
    if plan.regression:  # the records' `score`, as `emotag eval` reads it
        gold = plan.on_scale([e.target for e in dev.examples])
        m = regression_metrics([r.score for r in results], gold)
        return m, m
    if plan.task == "polarity":
        probs = np.array([[_polarity_probability(r, lab) for lab in cfg.polarity_labels] for r in results])
        detail = head_metrics(probs, gold_mask(dev, plan), plan, detail=True)
    elif plan.multi_label or (plan.groups() and not _smp_file(plan)):
        # sigmoids, or partial labels `emotag eval` has no reading for (not SMP2020's): the probabilities
        probs = np.array([[(r.emotions or {}).get(lab, 0.0) for lab in cfg.emotion_labels] for r in results])
        detail = head_metrics(probs, gold_mask(dev, plan), plan, detail=True)
    else:
        detail = _as_eval_reads(results, dev.examples, plan, detail=True)
    return {k: v for k, v in detail.items() if k not in ("per_class", "confusion", "confusion_labels")}, detail


def _smp_file(plan: LabelPlan) -> bool:
    """Labels `emotag eval` reads as an SMP2020 file (happy, angry, sad ...: its `_kind` check)."""
    sources = {v.lower() for v in plan.value_map}  # in any case (HAPPY, Angry), as eval reads them
    return plan.default_taxonomy and sources <= set(L.SMP2020) and bool(sources & {"happy", "angry", "sad"})


def _as_eval_reads(results: Sequence[Any], rows: Sequence[Example], plan: LabelPlan, detail: bool = False,
                   judged: bool = True) -> dict[str, Any]:
    """Accuracy and macro-F1 of single-label emotion records, read the way `emotag eval` reads them
    (emotag.evaluate `_labels`, `_nlpcc`, `_smp2020`), so that the report's final numbers are the ones it
    prints on the same file.

    The predicted class is the record's `emotion`, what a user reads: docs/taxonomy.md's consistency rule
    (the emotion follows the polarity) can make it differ from the most probable entry of `emotions`.
    SMP2020 labels (happy = like|happiness ...) are the exception, as in `emotag eval`: the one of the six
    classes whose labels' summed probability is highest. Macro-F1 is over the gold classes present, or,
    with `judged`, over the fixed class set `emotag eval` judges SMP2020 (its six) and NLPCC (`none`
    labels: the eight emotions) files on.
    """
    if _smp_file(plan):
        names = {groups: name for name, groups in L.SMP2020.items()}
        gold = [names.get(tuple(e.emotions or ()), "") for e in rows]
        pred = [max(L.SMP2020, key=lambda k, r=r: sum((r.emotions or {}).get(x, 0.0) for x in L.SMP2020[k]))
                for r in results]
        classes = list(L.SMP2020)
    else:
        gold = [(e.emotions or ("",))[0] for e in rows]
        pred = [r.emotion or "" for r in results]
        nlpcc = plan.default_taxonomy and "none" in plan.value_map and set(plan.value_map) <= set(L.NLPCC)
        classes = list(L.EMOTIONS) if nlpcc else [lab for lab in plan.labels if lab in set(gold)]
    if not judged:
        classes = [lab for lab in classes if lab in set(gold)]
    m: dict[str, Any] = {"n": len(gold), "accuracy": accuracy(gold, pred), "macro_f1": macro_f1(gold, pred, classes)}
    if detail:
        add_detail(m, gold, pred, classes)
    return m


def _polarity_probability(r: Any, label: str) -> float:
    """A stand-in for the polarity distribution `Result` does not carry: one-hot on its polarity label,
    nudged by polarity_score so that p(positive) - p(negative) has the score's sign, as `emotag eval`
    reads review polarity."""
    nudge = {"negative": -1e-3, "positive": 1e-3}.get(label, 0.0) * (r.polarity_score or 0.0)
    return (1.0 if r.polarity == label else 0.0) + nudge
