"""The one object users hold: `Tagger.load()`, then `tag(text)` or `tag_many(texts)`.

Data flows one way: text -> features (normalise, window, tokenise, hash n-grams) -> backend scores ->
`Result`s. Long texts are cut into sentence windows that each fit the encoder and their scores are
combined (length-weighted), so nothing is silently truncated. Windows from many texts are sorted by
length and batched together to cut padding; results still come back in input order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import islice
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np

from emotag.labels import EMOTION_POLARITY, EMOTION_ZH, POLARITY, POLARITY_ZH
from emotag.model.compose import FEATURES, Composer, Units, units_of
from emotag.model.compose import features as composition_features
from emotag.model.config import EmotagConfig, resolve_model_dir
from emotag.model.experts import EXPERTS_NAME, Experts
from emotag.model.features import Batch, Featurizer, Prepared
from emotag.runtime.backends import Backend, load_backend, run_batches
from emotag.text.sentences import contrast_clauses

# How `Tagger.tag` batches one text's windows and composer units: at most TAG_BATCH per backend call, and
# windows of similar length together, cutting a batch where padding would pass TAG_PAD_SLACK x the real
# tokens. Why not one batch: a review's 3-character negation scope padded to its 50-character window costs
# more network time than the call it saves (one process, texts interleaved, 500 review texts, 1 thread:
# 3.21 ms/text in one batch vs 2.61 one call per window vs 2.41 with slack 1.6; 2 threads: 3.01 / 3.19 / 2.74).
TAG_BATCH = 64
TAG_PAD_SLACK = 1.6


@dataclass
class Result:
    """One scored text (SPEC §2). When `error` is set every score field is None."""

    id: str | int | None
    emotion: str | None
    emotions: dict[str, float] | None
    polarity: str | None
    polarity_score: float | None
    intensity: float | None
    error: str | None = None
    # SPEC §7 opinion units (emotag.aspects.Aspect), only when asked for: tag(text, aspects=True)
    aspects: list[Any] | None = None
    # a regression model's read-out on the user's own scale (`emotag train --task regression`,
    # docs/finetune.md §6): set from `emotions` when the model's one label is a scale, `stars[1,5]`
    score: float | None = None
    # whether aspects were asked for: then a record without units (an error row) still carries
    # `aspects: null` (SPEC §7), as the CLI and the service write it
    asked_aspects: bool = field(default=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.score is None and self.emotions is not None and len(self.emotions) == 1:
            ((label, p),) = self.emotions.items()
            scale = Result.scale_of((label,))
            if scale is not None and p is not None:
                _, lo, hi = scale
                self.score = round(lo + (hi - lo) * float(p), 6)

    @staticmethod
    def scale_of(labels: Sequence[str]) -> tuple[str, float, float] | None:
        """(column, low, high) when `labels` are a regression model's (one label `name[low,high]`), else None.

        Why a label: a record is built from the model's outputs alone, and a regression model's one sigmoid
        output is its position on that scale; classification models always have two labels or more.
        """
        if len(labels) != 1:
            return None
        name, bracket, rest = labels[0].rpartition("[")
        lo, comma, hi = rest.removesuffix("]").partition(",")
        if not (bracket and comma and name and rest.endswith("]")):
            return None
        try:
            low, high = float(lo), float(hi)
        except ValueError:
            return None
        return (name, low, high) if high > low else None

    @classmethod
    def failed(cls, id: str | int | None, error: str) -> Result:
        return cls(id, None, None, None, None, None, error)

    @property
    def emotion_zh(self) -> str | None:
        """Chinese display name of the emotion, for reports."""
        return EMOTION_ZH.get(self.emotion, self.emotion) if self.emotion else None

    @property
    def polarity_zh(self) -> str | None:
        return POLARITY_ZH.get(self.polarity, self.polarity) if self.polarity else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        units = d.pop("aspects")
        if d.pop("asked_aspects") or units is not None:
            d["aspects"] = None if units is None else [a.to_dict() for a in self.aspects or []]
        if d["score"] is None:  # only a regression model's records carry `score`
            del d["score"]
        else:
            d["score"] = d.pop("score")  # after `aspects`, as the last field
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)


@dataclass
class _PreparedChunk:
    """A chunk after the text work: per-text windows (or an error message) and encoded, length-sorted batches."""

    ids: list[str | int]
    prepared: list[Prepared | str]
    n_windows: int
    batches: list[tuple[list[int], Batch]]
    aspects: list[Any] | None = None  # opinion units per scorable text, when asked for
    # composition units per scorable text, with the indices of their windows (after the texts' own windows)
    units: list[tuple[Units, dict[str, int]]] | None = None


_END = object()  # end-of-iterator sentinel


def _groups(order: list[int], lengths: list[int], batch_size: int, pad_slack: float | None) -> list[list[int]]:
    """Window indices (sorted by token count, `lengths`) cut into batches of at most `batch_size`; with
    `pad_slack`, a batch is also cut before a window whose length would make its padded size pass pad_slack x
    its real tokens."""
    if pad_slack is None:  # fixed-size batches: bigger ones of short windows were slower (tag_many)
        return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    groups: list[list[int]] = []
    cur: list[int] = []
    real = 0
    for k in order:
        n = lengths[k]
        if cur and (len(cur) >= batch_size or (len(cur) + 1) * n > pad_slack * (real + n)):
            groups.append(cur)
            cur, real = [], 0
        cur.append(k)
        real += n
    if cur:
        groups.append(cur)
    return groups


def _softmax(z: np.ndarray, t: float) -> np.ndarray:
    z = z.astype(np.float64) / t
    z -= z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


class Tagger:
    """Emotion, polarity and intensity for Chinese texts, from a model directory."""

    def __init__(self, featurizer: Featurizer, backend: Backend, model_dir: Path | None = None,
                 experts: Experts | None = None) -> None:
        """Most callers want `Tagger.load(dir)`. Built by hand, a model whose composer reads domain experts
        needs them: `model_dir` (the directory holding experts.npz, loaded from there) or `experts` (already
        loaded; wins over model_dir). Without either such a model raises ValueError here rather than
        scoring without the experts its composer was fit with."""
        self.featurizer = featurizer
        self.config: EmotagConfig = featurizer.config
        self.backend = backend
        self.model_dir = model_dir
        # read-only after construction: one Tagger is shared by threads (`emotag serve`), so scoring paths
        # take what varies per call as arguments and never set attributes
        self.composer = Composer.from_dict(self.config.composer) if self.config.composer else None
        if experts is None and model_dir is not None:
            experts = Experts.load(model_dir)
        self.experts = experts
        if self.composer is not None and tuple(self.composer.labels) != tuple(self.config.polarity_labels):
            raise ValueError(f"composer labels {self.composer.labels} differ from the polarity labels "
                             f"{self.config.polarity_labels}")
        have = set(self.experts.columns) if self.experts else set()
        missing = sorted(self.composer.experts - have) if self.composer else []
        if missing and self.experts is None and model_dir is None:
            raise ValueError(f"the model's composer reads domain experts ({', '.join(missing)}), and none were "
                             f"given: pass model_dir= (the directory with {EXPERTS_NAME}) or "
                             "experts=Experts.load(model_dir), or build the tagger with Tagger.load(model_dir)")
        if missing:
            raise ValueError(f"{model_dir if model_dir is not None else 'experts='}: the composer reads experts "
                             f"that are missing: {missing} ({EXPERTS_NAME} missing or stale)")
        # whether scoring computes the experts' logits at all: only when the composer reads them
        self._score_experts = bool(self.composer is not None and self.composer.experts and self.experts is not None)

    @classmethod
    def load(
        cls,
        model: str | os.PathLike[str] | None = None,
        backend: str = "onnx",
        threads: int | None = None,
        quantized: bool | None = None,
        parallel: bool | None = None,
    ) -> Tagger:
        """Load a model directory (None = the bundled default).

        backend: "onnx" (int8 file when present, else fp32), "onnx-fp32", "onnx-int8" or "torch".
        parallel: onnx only; score whole batches side by side, one single-threaded session per thread
        (default when threads > 1), rather than one session splitting every operator across threads.
        """
        model_dir = resolve_model_dir(model)
        config = EmotagConfig.load(model_dir)
        featurizer = Featurizer.from_dir(model_dir, config)
        return cls(featurizer, load_backend(model_dir, backend, threads, quantized, parallel), model_dir)

    @property
    def emotion_labels(self) -> tuple[str, ...]:
        return self.config.emotion_labels

    def tag(self, text: str, aspects: Any = False) -> Result:
        """Score one text; `aspects=True` also extracts its opinion units (SPEC §7).

        Its windows and the composer's units go to the backend in as few calls as padding allows
        (`TAG_PAD_SLACK`): a review's short units share one call rather than one call per window and unit."""
        return self._score_chunk([text], [0], TAG_BATCH, self._aspect_extractor(aspects), TAG_PAD_SLACK)[0]

    def _aspect_extractor(self, aspects: Any) -> Any:
        """None, the bundled extractor (aspects=True, loaded once) or the caller's own AspectExtractor."""
        if aspects is False or aspects is None:
            return None
        if aspects is True:
            if getattr(self, "_aspects", None) is None:
                from emotag.aspects import AspectExtractor

                self._aspects = AspectExtractor.load()
            return self._aspects
        if not callable(getattr(aspects, "extract_many", None)):
            raise TypeError(f"aspects= takes True, False or an emotag.aspects.AspectExtractor, not {aspects!r}")
        return aspects

    def tag_many(
        self,
        texts: Iterable[Any],
        batch_size: int = 64,
        ids: Iterable[str | int] | None = None,
        show_progress_bar: bool = False,
        chunk_size: int | None = None,
        aspects: Any = False,
    ) -> Iterator[Result]:
        """Stream results in input order; memory is bounded by three chunks of `chunk_size` texts (one
        being prepared, one being scored, one being handed back).

        A text that is not a string or is empty after normalisation yields a Result with `error` set,
        never an exception: every input gets exactly one result. Bad arguments (a bare string for
        `texts`, a batch or chunk size below 1) raise here, before anything is read. `aspects=True` (or an
        `emotag.aspects.AspectExtractor` with the caller's categories) fills `Result.aspects`.
        """
        if isinstance(texts, (str, bytes)):
            raise TypeError("tag_many() takes an iterable of texts, not one text: use tag(text) or tag_many([text])")
        for name, size in (("batch_size", batch_size), ("chunk_size", chunk_size)):
            if size is not None and (isinstance(size, bool) or not isinstance(size, Integral) or size < 1):
                raise ValueError(f"{name} must be an integer >= 1, got {size!r}")
        batch_size = int(batch_size)
        return self._tag_many(texts, batch_size, ids, show_progress_bar,
                              int(chunk_size) if chunk_size else max(batch_size * 32, 256),
                              self._aspect_extractor(aspects))

    def _tag_many(
        self, texts: Iterable[Any], batch_size: int, ids: Iterable[str | int] | None, show_progress_bar: bool,
        chunk_size: int, extractor: Any = None,
    ) -> Iterator[Result]:
        if isinstance(texts, (list, tuple)) and len(texts) <= chunk_size and not show_progress_bar:
            # one chunk: nothing to overlap, so no worker thread (score_dialogues calls this per conversation)
            chunk_ids = list(ids) if ids is not None else list(range(len(texts)))
            if len(chunk_ids) != len(texts):
                raise ValueError("ids and texts have different lengths")
            yield from self._score_chunk(texts, chunk_ids, batch_size, extractor)
            return
        it = iter(texts)
        id_it = iter(ids) if ids is not None else None
        bar = _progress(show_progress_bar)
        counter = [0, 0]  # texts read, chunks read
        deferred: list[Exception] = []  # an input error, raised once the rows read before it are scored

        def next_chunk() -> tuple[list[Any], list[str | int]] | None:
            if deferred:
                return None
            chunk: list[Any] = []
            # the first chunks are small, so scoring starts early; later ones full size, so the sessions'
            # idle time at the end of each chunk is a small share
            size = min(chunk_size, max(batch_size * 2, 64) << min(counter[1], 16))
            counter[1] += 1
            try:
                chunk.extend(islice(it, size))
            except Exception as e:  # noqa: BLE001 - re-raised below, after the rows already read
                deferred.append(e)
            if not chunk:
                if id_it is not None and not deferred and next(id_it, _END) is not _END:
                    deferred.append(ValueError("ids and texts have different lengths (more ids than texts)"))
                return None
            index = counter[0]
            chunk_ids = list(islice(id_it, len(chunk))) if id_it is not None else list(range(index, index + len(chunk)))
            if len(chunk_ids) != len(chunk):
                raise ValueError("ids and texts have different lengths")
            counter[0] += len(chunk)
            return chunk, chunk_ids

        def prepare(item: tuple[list[Any], list[str | int]] | None) -> _PreparedChunk | None:
            return None if item is None else self._prepare_chunk(item[0], item[1], batch_size, extractor)

        def score(future: Future[_PreparedChunk | None]) -> list[Result] | None:
            chunk = future.result()
            return None if chunk is None else self._score_prepared(chunk)

        # Three stages overlap: a worker thread normalises and encodes chunk i+2, another scores chunk i+1 on
        # the backend (onnxruntime releases the GIL), and the caller's thread reads the input and consumes the
        # results of chunk i (in the CLI: writes them). The input is read in the caller's thread (its
        # iterator may hold thread-bound handles, e.g. sqlite cursors).
        prep_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emotag-prepare")
        score_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emotag-score")
        try:
            scoring = score_pool.submit(score, prep_pool.submit(prepare, next_chunk()))
            while True:
                results = scoring.result()
                if results is None:
                    if deferred:
                        raise deferred[0]
                    return
                scoring = score_pool.submit(score, prep_pool.submit(prepare, next_chunk()))
                yield from results
                if bar:
                    bar(len(results))
        finally:
            prep_pool.shutdown(wait=True, cancel_futures=True)
            score_pool.shutdown(wait=True, cancel_futures=True)
            if bar:
                bar(None)

    def _score_chunk(self, texts: Sequence[Any], ids: Sequence[str | int], batch_size: int,
                     extractor: Any = None, pad_slack: float | None = None) -> list[Result]:
        return self._score_prepared(self._prepare_chunk(texts, ids, batch_size, extractor, pad_slack=pad_slack))

    def _prepare_chunk(self, texts: Sequence[Any], ids: Sequence[str | int], batch_size: int,
                       extractor: Any = None, with_units: bool | None = None, pad_slack: float | None = None
                       ) -> _PreparedChunk:
        """Normalise, window and encode a chunk: pure text work, no network. Batches hold `batch_size`
        windows of similar length; with `pad_slack`, also no more padded tokens than pad_slack x real ones."""
        prepared: list[Prepared | str] = []
        for t in texts:
            if not isinstance(t, str):
                prepared.append("text is missing" if t is None else f"text is not a string ({type(t).__name__})")
                continue
            try:
                p = self.featurizer.prepare(t)
            except Exception as e:  # noqa: BLE001 - one bad text must not sink the batch
                prepared.append(f"normalisation failed: {e}")
                continue
            prepared.append(p if p.windows else "text is empty after normalisation")
        # all windows of the chunk, sorted by length so each batch pads little
        windows: list[str] = []
        for p in prepared:
            if isinstance(p, Prepared):
                windows.extend(p.windows)
        units = None
        if self.composer is not None if with_units is None else with_units:  # the composer's units are scored as windows of their own
            units = []
            seen: dict[str, int] = {}  # a unit text is scored once per chunk (不[好吃] recurs across reviews)
            for p in prepared:
                if isinstance(p, Prepared):
                    source = self._unit_source(p)
                    u = units_of(source) if source is not None else Units()
                    where: dict[str, int] = {}
                    for t in u.texts():
                        if t not in seen:
                            seen[t] = len(windows)
                            windows.append(t)
                        where[t] = seen[t]
                    units.append((u, where))
        # sorted by token count, not characters: a SentencePiece vocabulary makes one token of several
        # characters, and batches cut by characters padded 13.5% of their cells (USE, review texts)
        tokens = self.featurizer.token_ids(windows)
        lengths = [len(t) for t in tokens]
        order = sorted(range(len(windows)), key=lengths.__getitem__)
        batches = [(sel, self.featurizer.encode([windows[k] for k in sel], [tokens[k] for k in sel]))
                   for sel in _groups(order, lengths, batch_size, pad_slack)]
        opinion_units = None
        if extractor is not None:  # text work too, so it overlaps with the network like the rest
            opinion_units = extractor.extract_many(
                [t for t, p in zip(texts, prepared, strict=True) if isinstance(p, Prepared)])
        return _PreparedChunk(list(ids), prepared, len(windows), batches, opinion_units, units)

    def _unit_source(self, p: Prepared) -> str | None:
        """The text the composer's units are found in: the whole normalised text when it fits one encoder
        window, else None (a longer text's windows already carry most of the signal; `compose.Units`).

        Why not just "has one window": with `contrast_weight != 1` the featurizer also cuts a window at
        each contrast turn (物流很快 | 但是包装破损了), so exactly the texts the `has_turn` / `after_margin`
        features are for would get no units. A text counts as fitting when its only cuts are those turns.
        For contrast_weight == 1 (the bundled model) this is the single window, as before.
        """
        if len(p.windows) == 1:
            return p.windows[0]
        if self.config.contrast_weight == 1.0:
            return None
        whole = self.featurizer.sentence_windows(p.normalized)
        if len(whole) == 1 and [c for c in contrast_clauses(whole[0]) if c.strip()] == p.windows:
            return whole[0]
        return None

    def _score_prepared(self, chunk: _PreparedChunk) -> list[Result]:
        compose = self.composer is not None and chunk.units is not None
        arrays = self._text_arrays(chunk, experts=compose and self._score_experts)
        if arrays is not None:
            texts, emo_t, pol_t, inten_t, val_t, pol_w, expert_t = arrays
            if compose:
                assert self.composer is not None and chunk.units is not None
                x = self._features(texts, chunk.units, emo_t, pol_t, pol_w, expert_t)
                pol_t = self.composer.probabilities(x, self.composition_names if expert_t is not None else FEATURES)
            rows = iter(self._results(emo_t, pol_t, inten_t, val_t))
        results: list[Result] = []
        units = iter(chunk.aspects) if chunk.aspects is not None else None
        for id_, p in zip(chunk.ids, chunk.prepared, strict=True):
            if isinstance(p, Prepared):
                emotion, emotions, polarity, score, intensity = next(rows)
                results.append(Result(id_, emotion, emotions, polarity, score, intensity,
                                      aspects=next(units) if units is not None else None))
            else:
                results.append(Result.failed(id_, p))
                results[-1].asked_aspects = chunk.aspects is not None
        return results

    def _text_arrays(self, chunk: _PreparedChunk, experts: bool = False
                     ) -> tuple[list[Prepared], np.ndarray, np.ndarray, np.ndarray,
                                np.ndarray, np.ndarray, np.ndarray | None] | None:
        """Score a chunk's windows; per scorable text its emotion and polarity probabilities, intensity,
        valence and, with `experts` (and a model that has them), the domain experts' logits (else None),
        plus the polarity probabilities of every window (the composer's units among them).

        The experts' logits are computed for the texts' own windows only: the composer reads them per text
        (a length-weighted sum over its windows), never per unit."""
        E = len(self.config.emotion_labels)
        P = len(self.config.polarity_labels)
        n_win = chunk.n_windows
        emo = np.zeros((n_win, E))
        pol = np.zeros((n_win, max(P, 1)))
        inten = np.zeros(n_win)
        val = np.zeros(n_win)
        T = self.config.temperature
        outs = run_batches(self.backend, [b for _, b in chunk.batches])
        for (sel, _), out in zip(chunk.batches, outs, strict=True):
            if self.config.multi_label:
                emo[sel] = 1.0 / (1.0 + np.exp(-out["emotion_logits"].astype(np.float64)))
            else:
                emo[sel] = _softmax(out["emotion_logits"], T.get("emotion", 1.0))
            if P:
                pol[sel] = _softmax(out["polarity_logits"], T.get("polarity", 1.0))
            inten[sel] = out["intensity"]
            val[sel] = out["valence"]
        # windows -> texts: a length-weighted sum over each text's windows (one row for most texts)
        texts = [p for p in chunk.prepared if isinstance(p, Prepared)]
        if not texts:
            return None
        first = np.cumsum([0] + [len(p.windows) for p in texts[:-1]])
        w = np.concatenate([p.weights for p in texts])
        n = len(w)  # the texts' own windows; the composer's units follow them
        expert = None
        if experts and self.experts is not None and chunk.units is not None:  # read by the composer alone
            expert = np.zeros((n, len(self.experts.names)))
            for sel, b in chunk.batches:
                own = [i for i, k in enumerate(sel) if k < n]
                if own:
                    rows = own if len(own) < len(sel) else slice(None)
                    expert[[sel[i] for i in own]] = self.experts.logits(b.ngram_ids[rows])
        return (texts, np.add.reduceat(emo[:n] * w[:, None], first), np.add.reduceat(pol[:n] * w[:, None], first),
                np.add.reduceat(inten[:n] * w, first), np.add.reduceat(val[:n] * w, first), pol,
                None if expert is None else np.add.reduceat(expert[:n] * w[:, None], first))

    @property
    def composition_names(self) -> tuple[str, ...]:
        """The columns of `composition_inputs`: compose.FEATURES, then the domain experts. logits."""
        return FEATURES + (self.experts.columns if self.experts is not None else ())

    def _features(self, texts: Sequence[Prepared], units: Sequence[tuple[Units, dict[str, int]]],
                  emo_t: np.ndarray, pol_t: np.ndarray, pol_w: np.ndarray, expert_t: np.ndarray | None
                  ) -> np.ndarray:
        """The composer's feature rows (`composition_names`) per text, from the texts' and units' scores."""
        labels = self.config.emotion_labels
        k_neu = labels.index("neutral") if "neutral" in labels else None
        rows = []
        for k, (p, (u, where)) in enumerate(zip(texts, units, strict=True)):
            e_neu = float(emo_t[k, k_neu]) if k_neu is not None else 1.0 / len(labels)
            probs = {t: pol_w[i] for t, i in where.items()}
            rows.append(composition_features(p.normalized, pol_t[k], e_neu, u, probs, self.config.polarity_labels))
        x = np.array(rows)
        return x if expert_t is None else np.concatenate([x, self.experts.text_columns(expert_t)], axis=1)

    def composition_inputs(self, texts: Sequence[str], batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """(`composition_names` rows, the emotion head's probabilities) for `texts`, computed by the same code
        that scoring runs: the inputs of `scripts/fit_composer.py`. The composer is not applied (the
        features are what it reads). Every text must be scorable (non-empty after normalisation)."""
        rows, emos = [], []
        # no state is touched: units and every expert column are asked for by argument, so a thread scoring
        # with this Tagger meanwhile (emotag serve) still applies the composer
        for s in range(0, len(texts), 2048):
            part = list(texts[s : s + 2048])
            chunk = self._prepare_chunk(part, list(range(len(part))), batch_size, with_units=True)
            bad = [t for t, p in zip(part, chunk.prepared, strict=True) if not isinstance(p, Prepared)]
            if bad:
                raise ValueError(f"cannot score {len(bad)} texts, e.g. {bad[0]!r}")
            arrays = self._text_arrays(chunk, experts=True)
            assert arrays is not None and chunk.units is not None
            texts_p, emo_t, pol_t, _, _, pol_w, expert_t = arrays
            rows.append(self._features(texts_p, chunk.units, emo_t, pol_t, pol_w, expert_t))
            emos.append(emo_t)
        if not rows:
            return np.zeros((0, len(self.composition_names))), np.zeros((0, len(self.config.emotion_labels)))
        return np.concatenate(rows), np.concatenate(emos)

    def _results(self, emo: np.ndarray, pol: np.ndarray, intensity: np.ndarray, valence: np.ndarray
                 ) -> Iterator[tuple[str, dict[str, float], str | None, float | None, float]]:
        """Per text: (emotion, emotions, polarity, polarity_score, intensity), from text-level arrays.

        The three agree (docs/taxonomy.md, "Consistent outputs"): the emotion is the most probable of those
        compatible with the polarity, and a neutral polarity's score is clipped into a small band.
        """
        labels = self.config.emotion_labels
        choice = emo.argmax(1)
        emotions = np.round(emo, 6).tolist()
        intensity = np.round(np.nan_to_num(np.clip(intensity, 0.0, 1.0), nan=0.0), 6).tolist()
        plabels = self.config.polarity_labels
        if plabels:
            pidx = pol.argmax(1)
            idx = {lab: i for i, lab in enumerate(plabels)}
            if {"positive", "negative"} <= idx.keys():
                margin = (pol[:, idx["positive"]] - pol[:, idx["negative"]]).tolist()
                if "neutral" in idx and self.config.neutral_margin > 0:
                    # a text that leans neither way clearly has no opinion (请问什么时候发货, 好的，收到)
                    weak = np.abs(np.asarray(margin)) < self.config.neutral_margin
                    pidx = np.where(weak, idx["neutral"], pidx)
            else:
                margin = [0.0] * len(pol)
            polarity = [plabels[i] for i in pidx]
            v = np.clip(valence * self.config.valence_scale, -1.0, 1.0).tolist()
            blend = self.config.polarity_valence_blend
            score = [polarity_score(m, x, blend) for m, x in zip(margin, v, strict=True)]
            if "neutral" in idx:
                band = self.config.neutral_score_band
                score = [neutral_polarity_score(s, band) if i == idx["neutral"] else s
                         for s, i in zip(score, pidx.tolist(), strict=True)]
            score = [round(s, 6) for s in score]
            allowed = emotion_polarity_table(labels, plabels)
            if allowed is not None:
                choice = np.where(allowed[pidx], emo, -np.inf).argmax(1)
        else:
            polarity, score = [None] * len(emo), [None] * len(emo)
        emotion = [labels[i] for i in choice]
        for k in range(len(emo)):
            yield emotion[k], dict(zip(labels, emotions[k], strict=True)), polarity[k], score[k], intensity[k]


def polarity_score(margin: float, valence: float, blend: float) -> float:
    """P(positive) - P(negative), its magnitude refined by the valence head (trained on human valence ratings).

    The sign is the polarity heads' decision and never changes: where the blend
    (1 - blend) * margin + blend * valence agrees with it in sign, that blend is the score; where it
    does not, the score is the shrunk margin (1 - blend) * margin. Why: the margin of a classifier ranks
    "great" and "fine" alike once both are confidently positive, while the valence head grades them.
    """
    if blend <= 0.0:
        return margin
    if blend >= 1.0:
        raise ValueError(f"polarity_valence_blend must be in [0, 1), got {blend}")

    def same_sign(x: float) -> bool:
        return (x > 0) == (margin > 0) and (x < 0) == (margin < 0)

    mixed = (1.0 - blend) * margin + blend * valence
    if same_sign(mixed):
        return mixed
    shrunk = (1.0 - blend) * margin
    return shrunk if same_sign(shrunk) else margin  # (underflow of a tiny margin)


def emotion_polarity_table(emotion_labels: Sequence[str], polarity_labels: Sequence[str]) -> np.ndarray | None:
    """Which (polarity, emotion) pairs a record may report: a (polarities x emotions) boolean table.

    An emotion agrees with a polarity when the polarity it implies (`labels.EMOTION_POLARITY`) is that
    polarity, or it implies none (surprise), or it is `neutral` (no emotion expressed fits any polarity). So
    anger/sadness/disgust/fear never go with a positive polarity, like/happiness never with a negative one,
    and a neutral polarity goes with neutral or surprise. None for label sets outside the taxonomy (a
    fine-tuned label set implies no polarity): the emotion is then the plain argmax.
    """
    if not (set(emotion_labels) <= EMOTION_POLARITY.keys() and set(polarity_labels) <= set(POLARITY)):
        return None
    table = np.array([[EMOTION_POLARITY[e] in (None, "neutral", p) for e in emotion_labels] for p in polarity_labels])
    table[~table.any(1)] = True  # a polarity no emotion of the set agrees with constrains nothing
    return table


def neutral_polarity_score(score: float, band: float) -> float:
    """The polarity_score of a text whose polarity is neutral: clipped into [-band, band].

    Why: a neutral polarity with a score of -0.6 reads as a contradiction. Neutral winning already bounds
    |P(pos) - P(neg)| by 0.5; what goes beyond the band is the valence head disagreeing with the polarity
    heads. Clipping rather than scaling keeps those scores below the band untouched: they still carry the
    valence ranking (scaling every neutral score by 1/3 cost the bundled model 2.7 points of CVAT valence
    r, clipping at 0.4 costs 0.2; docs/taxonomy.md).
    """
    band = max(band, 0.0)
    return min(max(score, -band), band)


def _progress(enabled: bool):
    """A rich progress callback (count of texts done; None to stop), or None when disabled."""
    if not enabled:
        return None
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    prog = Progress(TextColumn("scoring"), BarColumn(), TextColumn("{task.completed} texts"),
                    TextColumn("{task.speed} texts/s"), TimeElapsedColumn(), transient=True)
    task = prog.add_task("scoring", total=None)
    prog.start()

    def update(n: int | None) -> None:
        if n is None:
            prog.stop()
        else:
            prog.advance(task, n)

    return update
