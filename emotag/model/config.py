"""The model directory contract (SPEC §6): what `config.json` holds and how a directory is found.

This module is torch-free: the ONNX scoring path reads the same config as training does.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from emotag.labels import EMOTIONS, POLARITY
from emotag.text.normalize import NormalizeOptions

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
ONNX_NAME = "model.onnx"
# Fewer int8 calibration texts than this set ranges that clip other texts: `export-onnx` warns, `emotag
# train` tops its training texts up with the packaged sample (export.default_calibration_texts). Here, not
# in export.py, so the CLI can read it without importing torch.
MIN_CALIBRATION_TEXTS = 100
ONNX_INT8_NAME = "model.int8.onnx"
TOKENIZER_NAME = "tokenizer.json"
DIALOGUE_LEXICAL_NAME = "dialogue_lexical.npy"
# present while `emotag train` writes a model directory: a run stopped there (Ctrl-C, a kill) left weights and
# config of one model beside ONNX files of another, or none; such a directory is refused, not scored
INCOMPLETE_NAME = ".incomplete"

# The bundled default model, committed in the repository (or installed beside the package).
_REPO_MODELS = Path(__file__).resolve().parents[2] / "models"
DEFAULT_MODEL_NAME = "emotag-zh-small"


@dataclass
class NgramConfig:
    """The wide half of the model: a hashed character n-gram bag (fastText-style) beside the encoder.

    buckets = 0 disables it (e.g. when fine-tuning a large pretrained encoder).
    """

    buckets: int = 262144
    dim: int = 32
    orders: tuple[int, ...] = (1, 2, 3)


@dataclass
class LexicalConfig:
    """The lexical expert: a TF-IDF linear model over the same n-gram ids, added to the network's logits.

    buckets = 0 disables it. `scales` weigh its contribution per head (emotion, polarity, intensity, valence;
    chosen on dev by scripts/train_lexical.py). Its weights are fit apart from the encoder, never by SGD with it.
    """

    buckets: int = 0
    scales: dict[str, float] = field(
        default_factory=lambda: {"emotion": 1.0, "polarity": 1.0, "intensity": 1.0, "valence": 1.0}
    )


@dataclass
class DialogueConfig:
    """Linear read-out of conversation satisfaction from customer-turn statistics (fit on STC-3 train)."""

    features: tuple[str, ...] = ("mean_polarity", "last_polarity", "min_polarity", "first_polarity", "mean_anger")
    weights: tuple[float, ...] = (1.2, 0.6, 0.3, 0.0, -0.5)
    bias: float = 0.0
    # > 0: the feature `lexical_satisfaction` is a TF-IDF ridge over the customer turns' n-grams, its idf and
    # weights in dialogue_lexical.npy (2 x lexical_buckets float32; plain .npy, loaded without pickle)
    lexical_buckets: int = 0


@dataclass
class EmotagConfig:
    """Everything needed to rebuild the network and to prepare its inputs exactly as in training."""

    encoder: dict[str, Any] = field(default_factory=dict)  # a transformers config dict (model_type, sizes)
    emotion_labels: tuple[str, ...] = EMOTIONS
    polarity_labels: tuple[str, ...] = POLARITY
    multi_label: bool = False  # custom label sets may be multi-label (sigmoid per label)
    max_length: int = 128
    ngram: NgramConfig = field(default_factory=NgramConfig)
    lexical: LexicalConfig = field(default_factory=LexicalConfig)
    normalization: NormalizeOptions = field(default_factory=NormalizeOptions)
    temperature: dict[str, float] = field(default_factory=lambda: {"emotion": 1.0, "polarity": 1.0})
    # polarity_score = P(pos) - P(neg), magnitude refined by the valence head (see tagger.polarity_score);
    # valence_scale stretches the valence head (trained on CVAT's narrow range) to the margin's spread
    polarity_valence_blend: float = 0.0
    valence_scale: float = 1.0
    # a neutral-polarity text's polarity_score is clipped into [-band, band] (tagger.neutral_polarity_score)
    neutral_score_band: float = 0.4
    # polarity is neutral when |P(positive) - P(negative)| is below this margin, whatever the argmax
    # (tagger._results); chosen on the 3-way tune splits, 0 = the plain argmax (models before v0.3)
    neutral_margin: float = 0.0
    # contrast (物流很快但是包装破损了): with a weight k != 1, windows are also cut before contrast markers
    # and each clause after a turn counts k times more when window scores are combined
    # (features.window_weights); 1 = no contrast cut (models before v0.3)
    contrast_weight: float = 1.0
    # the learned composition stage (emotag.model.compose.Composer.to_dict): clause, negation-scope and form
    # features -> polarity probabilities; None = the polarity heads decide alone (models before v0.4)
    composer: dict[str, Any] | None = None
    dialogue: DialogueConfig = field(default_factory=DialogueConfig)
    base_model: str | None = None
    name: str = DEFAULT_MODEL_NAME
    version: str = "0.1.0"
    format_version: int = FORMAT_VERSION

    @property
    def window_chars(self) -> int:
        """Characters per scoring window: every token covers >= 1 character, so windows never truncate."""
        return self.max_length - 2

    @property
    def has_polarity_head(self) -> bool:
        return bool(self.polarity_labels)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["normalization"] = self.normalization.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EmotagConfig:
        d = dict(d)
        fv = d.get("format_version", FORMAT_VERSION)
        if fv > FORMAT_VERSION:
            raise ValueError(
                f"model format version {fv} is newer than this emotag supports ({FORMAT_VERSION}); upgrade emotag"
            )
        ng = d.pop("ngram", None) or {}
        dl = d.pop("dialogue", None) or {}
        lx = d.pop("lexical", None) or {}
        norm = NormalizeOptions.from_dict(d.pop("normalization", None))
        known = set(cls.__dataclass_fields__)
        kwargs = {k: v for k, v in d.items() if k in known}
        for k in ("emotion_labels", "polarity_labels"):
            if k in kwargs:
                kwargs[k] = tuple(kwargs[k])
        return cls(
            ngram=NgramConfig(**{**ng, "orders": tuple(ng.get("orders", (1, 2, 3)))}),
            dialogue=DialogueConfig(
                **{k: tuple(v) if isinstance(v, list) else v for k, v in dl.items()}
            ),
            lexical=LexicalConfig(**lx),
            normalization=norm,
            **kwargs,
        )

    def save(self, directory: str | os.PathLike[str]) -> None:
        path = Path(directory) / CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> EmotagConfig:
        path = Path(directory) / CONFIG_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{directory}: not an emotag model directory (no {CONFIG_NAME})") from None
        except (ValueError, UnicodeDecodeError) as e:  # a hand-edited or truncated config
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: not an emotag config (a JSON object)")
        if "emotion_labels" not in data:
            raise ValueError(f"{path}: not an emotag config (no emotion_labels); train it with `emotag train`")
        return cls.from_dict(data)


def default_model_dir() -> Path:
    """Where the bundled default model lives: $EMOTAG_MODEL, else models/<default> beside the package."""
    env = os.environ.get("EMOTAG_MODEL")
    if env:
        return Path(env)
    return _REPO_MODELS / DEFAULT_MODEL_NAME


def resolve_model_dir(model: str | os.PathLike[str] | None) -> Path:
    """A local model directory for `model` (None = bundled default). Hub ids are handled by training code."""
    if model is None:
        path = default_model_dir()
        if not (path / CONFIG_NAME).exists():
            raise FileNotFoundError(
                f"bundled model not found at {path}; set EMOTAG_MODEL or pass --model DIR"
            )
        return path
    path = Path(model)
    if path.is_dir():
        if (path / INCOMPLETE_NAME).exists():
            raise ValueError(f"{path}: incomplete model: an emotag train run stopped while writing it; run it "
                             "again (it replaces this directory without --force)")
        return path
    if _looks_like_hub_id(str(model)) and not path.exists():
        return _download_from_hub(str(model))
    raise FileNotFoundError(f"model {model!r}: no such directory")


def is_model_dir(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is an emotag model directory (or one an `emotag train` run was writing: INCOMPLETE_NAME).

    Stricter than "has a config.json": a Hugging Face checkpoint or someone's own project has one too, and
    `emotag train -o DIR` replaces an emotag model's files but must never replace theirs. emotag's config
    is a JSON object with its encoder, its emotion labels and its format version (`EmotagConfig.to_dict`).
    """
    p = Path(path)
    if (p / INCOMPLETE_NAME).is_file():
        return True
    try:
        data = json.loads((p / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return (isinstance(data, dict) and isinstance(data.get("encoder"), dict)
            and isinstance(data.get("emotion_labels"), list) and isinstance(data.get("format_version"), int))


def _looks_like_hub_id(name: str) -> bool:
    """`owner/name`, unless `owner` is a local directory: `models/mine` mistyped must not go to the network."""
    parts = name.split("/")
    return len(parts) == 2 and all(p and not p.startswith(".") for p in parts) and not Path(parts[0]).is_dir()


# Every kind of file a model directory holds (config and logs .json, ONNX graphs, weights .safetensors, the
# model card .md, lexical tables .npy, the domain experts' experts.npz): a hub download fetches only these,
# and a directory missing one of them loads differently or not at all (tests/test_tagger_paths.py checks
# the bundled model's files against this list).
HUB_PATTERNS: tuple[str, ...] = ("*.json", "*.onnx", "*.safetensors", "*.md", "*.npy", "*.npz")


def _download_from_hub(repo_id: str) -> Path:
    """A model pushed to the Hugging Face hub after `emotag train` (needs network and huggingface_hub)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise FileNotFoundError(
            f"model {repo_id!r} is not a local directory, and huggingface_hub (installed with "
            "`emotag[train]`) is needed to fetch it from the hub"
        ) from None
    try:
        path = Path(snapshot_download(repo_id, allow_patterns=list(HUB_PATTERNS)))
    except Exception as e:  # noqa: BLE001 - offline, unknown repo, auth: all are "cannot get this model"
        why = (str(e).splitlines() or [type(e).__name__])[0]
        raise FileNotFoundError(f"model {repo_id!r}: not a local directory and not downloadable ({why})") from None
    if not (path / CONFIG_NAME).exists():
        raise FileNotFoundError(f"model {repo_id!r} has no {CONFIG_NAME}: it was not made by `emotag train`")
    return path
