"""Aspect categories: the built-in set, a user's TOML file (SPEC §7), and how a unit finds its category.

A unit's category comes from, in order: its aspect term matching a category term (exact, then the
longest term it contains: 包装盒 -> 包装), the aspect term's nearest category term in a learned vector
space (character and character-bigram vectors from PPMI + SVD over review text, built by
`scripts/train_aspects.py`: 外盒 sits near 盒子 and 包装), the opinion's own words (便宜 -> 价格,
很快 with no aspect stays open), then the file's `default`. A user's categories also inherit the built-in
terms of the built-in category their own terms point at, so a file listing only 包装 = ["包装", "盒子"]
still knows 瓶身 and 封口.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import numpy as np

from emotag.aspects.features import lexicon_pattern, normalize_aligned
from emotag.aspects.lexicon import BUILTIN_CATEGORIES, BUILTIN_DEFAULT, PRODUCTS, SEED_OPINIONS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RESOURCES = Path(__file__).resolve().parent / "resources"
SIMILARITY_THRESHOLD = 0.8  # an aspect this close to a listed term takes its category when the opinion says nothing
_SELF = re.compile(r"(?:本身|自身|本体)$")
_PRODUCTS = frozenset(normalize_aligned(p) for p in PRODUCTS)
STRONG_SIMILARITY = 0.9  # this close, the aspect's category wins over the opinion's


class CategoryFileError(ValueError):
    """A user's category file that cannot be used; the message is one line naming the file and problem."""


_BARE_UNICODE_KEY = re.compile(r"""^(\s*)([^\s"'#\[=][^="'#]*?)(\s*=)""", re.M)


def _loads_toml(text: str) -> dict:
    """TOML, accepting TOML 1.1's Unicode bare keys (包装 = [...], as SPEC §7 writes them), which
    Python's TOML 1.0 reader refuses: such keys are quoted and the text parsed again."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        quoted = _BARE_UNICODE_KEY.sub(
            lambda m: m.group(0) if m.group(2).isascii() else f'{m.group(1)}"{m.group(2)}"{m.group(3)}', text)
        if quoted == text:
            raise
        return tomllib.loads(quoted)


def builtin_terms() -> list[str]:
    return sorted({t for terms in BUILTIN_CATEGORIES.values() for t in terms if len(t) >= 2})


class TermVectors:
    """Character and character-bigram vectors; a term's vector leans on its last character (the head of
    a Chinese compound: 外盒 is a kind of 盒)."""

    def __init__(self, vocab: list[str], vectors: np.ndarray) -> None:
        self.index = {w: i for i, w in enumerate(vocab)}
        self.vectors = vectors.astype(np.float32)
        self._cache: dict[str, np.ndarray | None] = {}

    @classmethod
    def load(cls, path: str | Path = RESOURCES) -> TermVectors | None:
        f = Path(path) / "vectors.npz"
        if not f.exists():
            return None
        with np.load(f) as z:
            vectors = z["vectors"]
        vocab = json.loads((Path(path) / "vectors_vocab.json").read_text(encoding="utf-8"))
        return cls(vocab, vectors)

    def vector(self, term: str) -> np.ndarray | None:
        if term in self._cache:
            return self._cache[term]
        parts: list[tuple[str, float]] = []
        if term in self.index:
            parts.append((term, 2.0))
        parts += [(term[i:i + 2], 1.0) for i in range(len(term) - 1)]
        parts += [(c, 1.0 + (k == len(term) - 1) * 1.5) for k, c in enumerate(term)]
        acc = np.zeros(self.vectors.shape[1], np.float32)
        for p, w in parts:
            i = self.index.get(p)
            if i is not None:
                acc += w * self.vectors[i]
        n = float(np.linalg.norm(acc))
        v = acc / n if n > 0 else None
        self._cache[term] = v
        return v


class CategorySet:
    """Category names with their indicative terms; `assign(aspect, opinion)` -> a name, default or None."""

    def __init__(self, categories: dict[str, list[str]], default: str | None, vectors: TermVectors | None,
                 inherit: bool = False) -> None:
        self.names = list(categories)
        self.default = default
        self.source: str = "builtin"  # or the TOML file's path: a resumed run must use the same categories
        self.vectors = vectors
        self.terms: dict[str, str] = {}
        for name, terms in categories.items():
            for t in terms:
                self.terms.setdefault(normalize_aligned(t), name)
            self.terms.setdefault(normalize_aligned(name), name)
        if inherit:
            self._inherit_builtin()
        self._by_len = sorted(self.terms, key=len, reverse=True)
        self._multi = lexicon_pattern(t for t in self.terms if len(t) >= 2)
        self._matrix: np.ndarray | None = None
        self._owners: list[str] = []
        self._cache: dict[tuple[str | None, str], str | None] = {}

    @classmethod
    def builtin(cls, path: str | Path = RESOURCES) -> CategorySet:
        return cls({k: list(v) for k, v in BUILTIN_CATEGORIES.items()}, BUILTIN_DEFAULT, TermVectors.load(path))

    @classmethod
    def from_toml(cls, file: str | Path, path: str | Path = RESOURCES) -> CategorySet:
        """A user's category file (SPEC §7); any problem raises CategoryFileError naming file and problem."""
        try:
            with open(file, "rb") as f:
                raw = f.read()
            doc = _loads_toml(raw.decode("utf-8-sig"))
        except FileNotFoundError:
            raise CategoryFileError(f"{file}: no such file") from None
        except tomllib.TOMLDecodeError as e:
            raise CategoryFileError(f"{file}: not valid TOML ({e})") from None
        except (OSError, UnicodeDecodeError) as e:
            raise CategoryFileError(f"{file}: cannot read ({e})") from None
        unknown = set(doc) - {"default", "categories"}
        if unknown:
            raise CategoryFileError(f"{file}: unknown key(s) {', '.join(sorted(unknown))}; "
                                    "expected 'default' and a [categories] table")
        cats = doc.get("categories")
        if not isinstance(cats, dict) or not cats:
            raise CategoryFileError(f"{file}: needs a non-empty [categories] table (name = [\"term\", ...])")
        clean: dict[str, list[str]] = {}
        for name, terms in cats.items():
            if not name.strip():
                raise CategoryFileError(f"{file}: category names must not be empty")
            if isinstance(terms, str):
                terms = [terms]
            if not isinstance(terms, list):
                raise CategoryFileError(f"{file}: category {name!r} must be a list of strings, "
                                        f"got {type(terms).__name__}")
            odd = next((t for t in terms if not isinstance(t, str)), None)
            if odd is not None or any(not isinstance(t, str) for t in terms):
                raise CategoryFileError(f"{file}: category {name!r} must be a list of strings; {odd!r} is not "
                                        f"a string ({type(odd).__name__})")
            clean[name] = [t.strip() for t in terms if t.strip()]
        # a term under two categories went to the first one silently: the file says two things, so ask
        seen: dict[str, str] = {}
        for name, terms in clean.items():
            for t in terms:
                other = seen.setdefault(normalize_aligned(t), name)
                if other != name:
                    raise CategoryFileError(f"{file}: term {t!r} is listed under both {other!r} and {name!r}; "
                                            "a term belongs to one category")
        default = doc.get("default")
        if default is not None and (not isinstance(default, str) or not default.strip()):
            raise CategoryFileError(f"{file}: 'default' must be a category name (a non-empty string)")
        cats = cls(clean, default, TermVectors.load(path), inherit=True)
        # the path and a hash of the bytes: `score --resume` compares this, so an edited file is a new setting
        cats.source = f"{Path(file).resolve()}#sha256={hashlib.sha256(raw).hexdigest()[:16]}"
        return cats

    def _inherit_builtin(self) -> None:
        """Each user category takes the built-in terms of the built-in category most of its own terms are
        listed in (never overriding the user's own terms)."""
        builtin = {normalize_aligned(t): k for k, ts in BUILTIN_CATEGORIES.items() for t in ts}
        votes: dict[str, dict[str, int]] = {}
        for term, name in self.terms.items():
            b = builtin.get(term)
            if b:
                votes.setdefault(name, {}).setdefault(b, 0)
                votes[name][b] += 1
        owner: dict[str, str] = {}
        for name, v in votes.items():
            best = max(v.items(), key=lambda kv: kv[1])[0]
            # one built-in category feeds one user category (the one that points at it most)
            if best not in owner or v[best] > votes[owner[best]].get(best, 0):
                owner[best] = name
        for b, name in owner.items():
            for t in BUILTIN_CATEGORIES[b]:
                self.terms.setdefault(normalize_aligned(t), name)

    def _vector_table(self) -> tuple[np.ndarray | None, list[str]]:
        """Vectors of the listed aspect-like terms (opinion words such as 漏液 or 好用 are left out: they
        would pull 精华液 towards 包装 through one shared character)."""
        if self._matrix is None and self.vectors is not None:
            rows, owners = [], []
            opinion_words = _opinion_words()
            for term, name in self.terms.items():
                v = self.vectors.vector(term) if term not in opinion_words else None
                if v is not None:
                    rows.append(v)
                    owners.append(name)
            self._matrix = np.stack(rows) if rows else np.zeros((0, self.vectors.vectors.shape[1]), np.float32)
            self._owners = owners
        return self._matrix, self._owners

    def nearest(self, term: str) -> tuple[str | None, float]:
        """The category of the most similar listed term, and that similarity."""
        if self.vectors is None:
            return None, 0.0
        m, owners = self._vector_table()
        v = self.vectors.vector(term)
        if v is None or m is None or not len(m):
            return None, 0.0
        sims = m @ v
        k = int(sims.argmax())
        return owners[k], float(sims[k])

    def _match(self, text: str) -> str | None:
        """The category of the text itself as a term, else of the longest term (2+ characters) in it."""
        hit = self.terms.get(text)
        if hit or self._multi is None:
            return hit
        best = ""
        for m in self._multi.finditer(text):
            if len(m.group()) > len(best):
                best = m.group()
        return self.terms[best] if best else None

    def assign(self, aspect: str | None, opinion: str) -> str | None:
        """The category of a unit, from its (normalised) aspect term and opinion."""
        key = (aspect, opinion)
        if key in self._cache:
            return self._cache[key]
        if aspect:  # 面膜本身 is 面膜: the self-reference names no part
            aspect = _SELF.sub("", aspect) or aspect
        cat = self._match(aspect) if aspect else None
        # a whole product (面膜, 手机) as the aspect is the product itself: its category comes from the opinion,
        # else the default, never from the vectors (which would follow its last character: 膜, 机)
        product = cat is None and aspect in _PRODUCTS
        near, sim = self.nearest(aspect) if aspect and not product and cat is None and len(aspect) <= 6 else (None, 0.0)
        if cat is None and sim >= STRONG_SIMILARITY:
            cat = near
        if cat is None:
            cat = self._match(opinion)
        if cat is None:
            core = opinion.rstrip("了的啊呀哦呢吧！!~。")
            for t in self._by_len:  # single-character opinion hints (贵, 香) only as the whole core
                if len(t) == 1 and len(core) <= 3 and core.endswith(t):
                    cat = self.terms[t]
                    break
        if cat is None and sim >= SIMILARITY_THRESHOLD:
            cat = near
        if cat is None:
            cat = self.default
        if len(self._cache) < 100_000:
            self._cache[key] = cat
        return cat


@lru_cache(maxsize=1)
def _opinion_words() -> frozenset[str]:
    words = set(SEED_OPINIONS)
    f = RESOURCES / "lexicons.json"
    if f.exists():
        lex = json.loads(f.read_text(encoding="utf-8"))
        words.update(lex.get("positive", []), lex.get("negative", []))
    return frozenset(normalize_aligned(w) for w in words)


def _corpus(data: Path) -> Iterable[str]:
    import csv

    for name in ("online_shopping_10_cats.csv", "ChnSentiCorp_htl_all.csv"):
        p = data / "reviews_polarity" / name
        if p.exists():
            with open(p, encoding="utf-8-sig", newline="") as f:
                for r in csv.DictReader(f):
                    yield r.get("review") or ""
    p = data / "chinese_aste" / "train.jsonl"
    if p.exists():
        with open(p, encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)["text"]
    p = data / "sentic_reviews" / "sentic_reviews.tsv"
    if p.exists():
        with open(p, encoding="utf-8") as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) > 1:
                    yield parts[1]


def train_vectors(data: str | Path, out: str | Path, n_chars: int = 4000, n_bigrams: int = 12000,
                  n_context: int = 3000, dim: int = 48, window: int = 2) -> None:
    """PPMI + SVD vectors for characters and character bigrams (context: characters within `window`)."""
    from collections import Counter

    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import svds

    texts = [normalize_aligned(t) for t in _corpus(Path(data)) if t]
    cc, bc = Counter(), Counter()
    for t in texts:
        cc.update(t)
        bc.update(t[i:i + 2] for i in range(len(t) - 1))
    is_word = lambda s: all("\u4e00" <= c <= "\u9fff" for c in s)  # noqa: E731
    chars = [c for c, _ in cc.most_common() if is_word(c)][:n_chars]
    bigrams = [b for b, _ in bc.most_common() if is_word(b)][:n_bigrams]
    ctx = [c for c, _ in cc.most_common(n_context)]
    vocab = chars + bigrams
    ti = {w: i for i, w in enumerate(vocab)}
    ci = {c: i for i, c in enumerate(ctx)}
    counts: Counter[tuple[int, int]] = Counter()
    for t in texts:
        n = len(t)
        for size in (1, 2):
            for i in range(n - size + 1):
                w = ti.get(t[i:i + size])
                if w is None:
                    continue
                for j in range(max(0, i - window), min(n, i + size + window)):
                    if i <= j < i + size:
                        continue
                    c = ci.get(t[j])
                    if c is not None:
                        counts[(w, c)] += 1
    rows = np.fromiter((k[0] for k in counts), np.int64, len(counts))
    cols = np.fromiter((k[1] for k in counts), np.int64, len(counts))
    vals = np.fromiter(counts.values(), np.float64, len(counts))
    total = vals.sum()
    rs = np.bincount(rows, vals, len(vocab))
    cs = np.bincount(cols, vals, len(ctx)) ** 0.75
    pmi = np.log(vals * cs.sum() / (rs[rows] * cs[cols]) + 1e-12) - np.log(total / total)
    keep = pmi > 0
    m = coo_matrix((pmi[keep], (rows[keep], cols[keep])), shape=(len(vocab), len(ctx))).tocsr()
    u, s, _ = svds(m, k=dim, random_state=0)
    vec = u * np.sqrt(s)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True) + 1e-9
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "vectors.npz", vectors=vec.astype(np.float16))
    (out / "vectors_vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
