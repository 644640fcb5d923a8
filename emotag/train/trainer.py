"""Multi-task, multi-source training on CPU: partial labels, masked heads, length-bucketed batches.

Every example carries whatever supervision its source has; the loss of a head is computed only on the
examples that supervise it. An emotion label that maps to a *set* of our labels (SMP2020 `happy` ->
{like, happiness}) is a partial label: the loss maximises the probability mass on the set
(-log sum_{k in S} p_k), as SPEC §1 asks, instead of picking one member.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from emotag.metrics import combine_windows, expected_calibration_error, fit_temperature, sigmoid, softmax
from emotag.model.features import Featurizer, hash_ngrams
from emotag.model.modeling import EmotagModel
from emotag.train.corpora import Example

log = logging.getLogger("emotag.train")


@dataclass
class TrainSettings:
    epochs: float = 3.0
    batch_size: int = 64
    lr: float = 5e-4
    ngram_lr: float = 2e-2
    weight_decay: float = 0.01
    warmup: float = 0.05
    seed: int = 13
    max_minutes: float | None = None
    patience: int = 2  # early stopping: evaluations without improvement
    min_steps: int = 0  # no dev evaluation (so no early stopping or best pick) before this step
    evals_per_epoch: int = 2
    loss_weights: dict[str, float] = field(
        default_factory=lambda: {"emotion": 1.0, "polarity": 1.0, "intensity": 4.0, "valence": 4.0}
    )
    source_weights: dict[str, float] = field(default_factory=dict)  # per-source loss multiplier
    repeat_sources: dict[str, int] = field(default_factory=dict)  # upsample small sources
    threads: int | None = None


class EncodedSet:
    """A corpus turned into model inputs once, so epochs cost only the network.

    Texts go through the scorer's own path, `Featurizer.prepare` (normalise, cut into sentence windows,
    token-aware for byte-level vocabularies) and `Featurizer.token_ids` / `hash_ngrams`: a long text is
    all of its windows here, as in `Tagger`, never its first `window_chars` characters. Why: a dev metric
    measured on cut texts is not the metric `emotag eval` then reports, and the end of a review (where the
    complaint often is) would never be trained on.

    Rows are windows: `ids`, `grams`, `texts`, `sources` and the target arrays (`emo_mask`, `pol_mask`,
    `intensity`, `valence`, `emo_has`) have one row per window, each window carrying its text's labels.
    `first[k]` is the row of text k's first window and `weights` each window's share of its text
    (`Prepared.weights`: its length, contrast-weighted when the model asks),
    the weights `Tagger` combines window scores with (see `text_outputs`). `examples` are the texts that
    have at least one window (a text empty after normalisation has nothing to train on; `dropped` counts
    them).
    """

    def __init__(self, featurizer: Featurizer, examples: Sequence[Example], normalized: bool = False) -> None:
        cfg = featurizer.config
        self.config = cfg
        kept: list[Example] = []
        windows: list[str] = []
        weights: list[float] = []
        first: list[int] = []
        for ex in examples:
            p = featurizer.prepare(ex.text, normalized=normalized)
            if not p.windows:
                continue
            first.append(len(windows))
            kept.append(ex)
            windows.extend(p.windows)
            weights.extend(p.weights)
        self.dropped = len(examples) - len(kept)
        self.examples = kept
        self.texts = windows
        self.first = np.asarray(first, dtype=np.int64)
        self.weights = np.asarray(weights, dtype=np.float64)
        counts = np.diff(np.append(self.first, len(windows)))
        self.text_of = np.repeat(np.arange(len(kept)), counts)
        self.ids = featurizer.token_ids(windows)
        self.grams = [hash_ngrams(t, cfg.ngram) for t in windows]
        n, E = len(kept), len(cfg.emotion_labels)
        P = max(len(cfg.polarity_labels), 1)
        emo_mask = np.zeros((n, E), dtype=np.float32)
        pol_mask = np.zeros((n, P), dtype=np.float32)
        intensity = np.full(n, np.nan, dtype=np.float32)
        valence = np.full(n, np.nan, dtype=np.float32)
        eidx = {lab: i for i, lab in enumerate(cfg.emotion_labels)}
        pidx = {lab: i for i, lab in enumerate(cfg.polarity_labels)}
        for i, ex in enumerate(kept):
            if ex.emotions:
                for lab in ex.emotions:
                    if lab in eidx:
                        emo_mask[i, eidx[lab]] = 1.0
            if ex.polarity in pidx:
                pol_mask[i, pidx[ex.polarity]] = 1.0
            if ex.intensity is not None:
                intensity[i] = ex.intensity
            if ex.valence is not None:
                valence[i] = ex.valence
        # multi-label only: a row whose labels are all absent (emotions=()) is an explicit negative for every
        # label, not an unlabelled row; rows labelled in another label set stay unsupervised as before
        emo_has = np.array([ex.emotions is not None and (not ex.emotions or any(lab in eidx for lab in ex.emotions))
                            for ex in kept], dtype=bool)
        # text rows -> window rows
        w2t = self.text_of
        self.emo_mask, self.pol_mask, self.emo_has = emo_mask[w2t], pol_mask[w2t], emo_has[w2t]
        self.intensity, self.valence = intensity[w2t], valence[w2t]
        self.sources = [kept[t].source for t in w2t]
        self.pad_id = featurizer.pad_id

    def text_rows(self, window_rows: np.ndarray) -> np.ndarray:
        """A per-window target array (all windows of a text share its targets) as one row per text."""
        return window_rows[self.first]

    def text_outputs(self, pred: dict[str, np.ndarray], temperature: dict[str, float] | None = None
                     ) -> dict[str, np.ndarray]:
        """Per-text outputs from `predict`'s per-window logits, combined exactly as `Tagger` combines them:
        softmax with the head's temperature (sigmoid for a multi-label emotion head) per window, then the
        sum over the text's windows weighted by `Prepared.weights`."""
        t = self.config.temperature if temperature is None else temperature
        emo = sigmoid(pred["emotion"]) if self.config.multi_label else softmax(pred["emotion"], t.get("emotion", 1.0))
        out = {"emotion": emo, "polarity": softmax(pred["polarity"], t.get("polarity", 1.0)),
               "intensity": pred["intensity"], "valence": pred["valence"]}
        return {k: combine_windows(v, self.weights, self.first) for k, v in out.items()}

    def __len__(self) -> int:
        """Rows, i.e. windows (`len(self.examples)` texts)."""
        return len(self.texts)

    def batches(self, batch_size: int, shuffle: bool, rng: random.Random | None = None,
                indices: Sequence[int] | None = None) -> Iterator[list[int]]:
        """Length-bucketed batches: sort within chunks of 50 batches, then shuffle the batch order."""
        idx = list(range(len(self))) if indices is None else list(indices)
        if shuffle:
            (rng or random).shuffle(idx)
        chunk = batch_size * 50
        out = []
        for s in range(0, len(idx), chunk):
            part = sorted(idx[s : s + chunk], key=lambda i: len(self.ids[i]))
            out.extend(part[j : j + batch_size] for j in range(0, len(part), batch_size))
        if shuffle:
            (rng or random).shuffle(out)
        yield from out

    def collate(self, idx: Sequence[int]) -> dict[str, torch.Tensor]:
        width = max(len(self.ids[i]) for i in idx)
        gw = max((self.grams[i].shape[0] for i in idx), default=1) or 1
        ids = np.full((len(idx), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(idx), width), dtype=np.int64)
        grams = np.zeros((len(idx), gw), dtype=np.int64)
        for r, i in enumerate(idx):
            n = len(self.ids[i])
            ids[r, :n] = self.ids[i]
            mask[r, :n] = 1
            grams[r, : self.grams[i].shape[0]] = self.grams[i]
        ix = np.asarray(idx)
        return {
            "input_ids": torch.from_numpy(ids),
            "attention_mask": torch.from_numpy(mask),
            "ngram_ids": torch.from_numpy(grams),
            "emo_mask": torch.from_numpy(self.emo_mask[ix]),
            "emo_has": torch.from_numpy(self.emo_has[ix]),
            "pol_mask": torch.from_numpy(self.pol_mask[ix]),
            "intensity": torch.from_numpy(self.intensity[ix]),
            "valence": torch.from_numpy(self.valence[ix]),
        }


def partial_nll(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-row -log(sum of softmax mass on the allowed set); 0 where the row has no label."""
    has = mask.sum(-1) > 0
    allowed = logits.masked_fill(mask <= 0, -1e9)
    nll = torch.logsumexp(logits, -1) - torch.logsumexp(allowed, -1)
    return torch.where(has, nll, torch.zeros_like(nll))


def multilabel_bce(logits: torch.Tensor, mask: torch.Tensor, has: torch.Tensor) -> torch.Tensor:
    bce = nn.functional.binary_cross_entropy_with_logits(logits, mask, reduction="none").mean(-1)
    return torch.where(has, bce, torch.zeros_like(bce))


def compute_loss(model: EmotagModel, batch: dict[str, torch.Tensor], weights: dict[str, float],
                 row_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    emo, pol, inten, val = model(batch["input_ids"], batch["attention_mask"], batch["ngram_ids"])
    rw = row_weight if row_weight is not None else torch.ones(emo.shape[0])
    parts: dict[str, torch.Tensor] = {}
    emo_has = batch["emo_mask"].sum(-1) > 0
    if model.config.multi_label:
        emo_has = batch.get("emo_has", emo_has)
        parts["emotion"] = multilabel_bce(emo, batch["emo_mask"], emo_has)
    else:
        parts["emotion"] = partial_nll(emo, batch["emo_mask"])
    pol_has = batch["pol_mask"].sum(-1) > 0
    parts["polarity"] = partial_nll(pol, batch["pol_mask"])
    has = {"emotion": emo_has, "polarity": pol_has}
    for name, pred in (("intensity", inten), ("valence", val)):
        target = batch[name]
        ok = ~torch.isnan(target)
        parts[name] = torch.where(ok, (pred - torch.nan_to_num(target)) ** 2, torch.zeros_like(pred))
        has[name] = ok
    total = torch.zeros(())
    stats = {}
    for name, per_row in parts.items():
        n = (has[name].float() * rw).sum()
        if n > 0:
            loss = (per_row * rw).sum() / n
            total = total + weights.get(name, 1.0) * loss
            stats[name] = float(loss.detach())
    return total, stats


@torch.no_grad()
def predict(model: EmotagModel, data: EncodedSet, batch_size: int = 128) -> dict[str, np.ndarray]:
    """Raw outputs for every row (window) of `data`, in order (logits before temperature); per-text
    scores are `data.text_outputs(predict(...))`."""
    model.eval()
    n = len(data)
    E, P = len(model.config.emotion_labels), max(len(model.config.polarity_labels), 1)
    out = {"emotion": np.zeros((n, E), np.float32), "polarity": np.zeros((n, P), np.float32),
           "intensity": np.zeros(n, np.float32), "valence": np.zeros(n, np.float32)}
    for idx in data.batches(batch_size, shuffle=False):
        b = data.collate(idx)
        emo, pol, inten, val = model(b["input_ids"], b["attention_mask"], b["ngram_ids"])
        out["emotion"][idx] = emo.numpy()
        out["polarity"][idx] = pol.numpy()
        out["intensity"][idx] = inten.numpy()
        out["valence"][idx] = val.numpy()
    return out


def partial_accuracy(logits: np.ndarray, mask: np.ndarray) -> float:
    has = mask.sum(-1) > 0
    if not has.any():
        return float("nan")
    pred = logits.argmax(-1)
    return float(mask[np.arange(len(pred)), pred][has].mean())


def calibrate(pred: dict[str, np.ndarray], dev: EncodedSet) -> tuple[dict[str, float], dict[str, float],
                                                                     dict[str, float]]:
    """Temperatures for the emotion and polarity heads fitted on dev, with ECE before and after.

    Measured on texts (window probabilities combined as scoring combines them), not on windows."""
    masks = {"emotion": dev.text_rows(dev.emo_mask), "polarity": dev.text_rows(dev.pol_mask)}
    ones = {"emotion": 1.0, "polarity": 1.0}
    plain = dev.text_outputs(pred, ones)
    before = {k: expected_calibration_error(plain[k], m) for k, m in masks.items()}
    temperature = {k: fit_temperature(pred[k], m, dev.weights, dev.first) for k, m in masks.items()}
    scaled = dev.text_outputs(pred, temperature)
    after = {k: expected_calibration_error(scaled[k], m) for k, m in masks.items()}
    return temperature, before, after


def _optimizers(model: EmotagModel, s: TrainSettings, total_steps: int):
    dense, no_decay = [], []
    for name, p in model.named_parameters():
        if name.startswith("ngram."):
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name or "embeddings" in name else dense).append(p)
    opts = [torch.optim.AdamW([{"params": dense, "weight_decay": s.weight_decay},
                               {"params": no_decay, "weight_decay": 0.0}], lr=s.lr)]
    if model.ngram is not None:
        opts.append(torch.optim.SparseAdam(list(model.ngram.parameters()), lr=s.ngram_lr))
    warm = max(1, int(total_steps * s.warmup))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.02, 1.0 - (step - warm) / max(1, total_steps - warm))

    scheds = [torch.optim.lr_scheduler.LambdaLR(o, factor) for o in opts]
    return opts, scheds


def fit(
    model: EmotagModel,
    train: EncodedSet,
    dev: EncodedSet | None,
    settings: TrainSettings,
    score_fn: Callable[[dict[str, np.ndarray], EncodedSet], float] | None = None,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
) -> dict[str, object]:
    """Train with early stopping on `score_fn(dev predictions)`; the best weights are restored."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    base_idx = []
    for i, src in enumerate(train.sources):
        base_idx.extend([i] * settings.repeat_sources.get(src, 1))
    row_w = np.array([settings.source_weights.get(s, 1.0) for s in train.sources], dtype=np.float32)
    steps_per_epoch = math.ceil(len(base_idx) / settings.batch_size)
    total = max(1, int(steps_per_epoch * settings.epochs))
    opts, scheds = _optimizers(model, settings, total)
    eval_every = max(1, steps_per_epoch // max(1, settings.evals_per_epoch))
    score_fn = score_fn or default_score
    best, best_state, bad, history = -float("inf"), None, 0, []
    step, t0 = 0, time.time()
    stop = False
    model.train()
    while not stop:
        for idx in train.batches(settings.batch_size, shuffle=True, rng=rng, indices=base_idx):
            b = train.collate(idx)
            loss, stats = compute_loss(model, b, settings.loss_weights, torch.from_numpy(row_w[idx]))
            for o in opts:
                o.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_([p for n, p in model.named_parameters() if not n.startswith("ngram.")], 1.0)
            for o, sch in zip(opts, scheds, strict=True):
                o.step()
                sch.step()
            step += 1
            if progress:
                progress(step, total, {"loss": loss.item(), **stats})
            over_time = settings.max_minutes is not None and (time.time() - t0) / 60 > settings.max_minutes
            due = (step % eval_every == 0 and step >= settings.min_steps) or step >= total or over_time
            if dev is not None and due:
                score = score_fn(predict(model, dev), dev)
                history.append({"step": step, "minutes": round((time.time() - t0) / 60, 2), "dev_score": score})
                log.info("step %d/%d dev score %.4f (%.1f min)", step, total, score, (time.time() - t0) / 60)
                if score > best:
                    best, bad = score, 0
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    bad += 1
                model.train()
                if bad >= settings.patience:
                    stop = True
            if step >= total or over_time or stop:
                stop = True
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return {"steps": step, "minutes": (time.time() - t0) / 60, "best_dev_score": best, "history": history}


def default_score(pred: dict[str, np.ndarray], dev: EncodedSet) -> float:
    """Mean of the supervised heads' dev accuracies on texts (partial-label accuracy for emotion)."""
    probs = dev.text_outputs(pred)
    scores = [partial_accuracy(probs["emotion"], dev.text_rows(dev.emo_mask)),
              partial_accuracy(probs["polarity"], dev.text_rows(dev.pol_mask))]
    scores = [s for s in scores if not math.isnan(s)]
    return float(np.mean(scores)) if scores else 0.0
