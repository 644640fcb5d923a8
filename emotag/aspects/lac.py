"""Baidu LAC (Lexical Analysis of Chinese) read without Paddle: its weights and a numpy forward.

Why: the aspect tagger's main error is where an opinion span begins and ends, and LAC was trained on a
large corpus for exactly the word boundaries and parts of speech that the restaurant triples leave
implicit. LAC (Apache-2.0; Jiao, Zhenyu et al., "Chinese Lexical Analysis with Deep Bi-GRU-CRF Network",
arXiv:1807.01882, 2018) ships in the `lac` sdist as Paddle parameter files: a character/word table
(58,224 x 128), two bidirectional GRU layers (128 per direction), a linear layer to 49 tags (part of
speech or entity type x B/I, `conf/tag.dic`) and CRF transitions. This module reads those files and runs
the network on single characters (q2b.dic mapped, no word segmentation). Only training uses it
(scripts/train_aspects.py --lac); whatever a tagger takes from it is derived at training time (character
rows folded into its table, a word table), so scoring never reads LAC. Measured on the tuning half, none
of those uses beat the tagger without them (docs/aspects.md), and the shipped tagger holds nothing of LAC.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

PIP_HINT = ("pip download --no-deps --no-build-isolation lac==2.1.2 (setuptools<70 and wheel installed), "
            "then tar xzf lac-2.1.2.tar.gz")
PADDLE_FP32 = 5  # VarType.FP32 in Paddle's framework.proto


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    r = s = 0
    while True:
        c = buf[i]
        i += 1
        r |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return r, i


def read_lod_tensor(path: str | Path) -> np.ndarray:
    """One parameter file as Paddle's save_persistables writes it: uint32 version, uint64 LoD level and
    that many (uint64 byte size, offsets) blocks, uint32 tensor version, int32 size of a TensorDesc
    protobuf (field 1 data type, field 2 dims, packed or not), then the raw little-endian data. Float32 only."""
    buf = Path(path).read_bytes()
    i = 4
    (lod_level,) = struct.unpack_from("<Q", buf, i)
    i += 8
    for _ in range(lod_level):
        (n,) = struct.unpack_from("<Q", buf, i)
        i += 8 + n
    i += 4
    (dsz,) = struct.unpack_from("<i", buf, i)
    i += 4
    desc, i = buf[i:i + dsz], i + dsz
    j, dtype, dims = 0, None, []
    while j < len(desc):
        key, j = _varint(desc, j)
        field, wire = key >> 3, key & 7
        if wire == 0:
            v, j = _varint(desc, j)
            if field == 1:
                dtype = v
            elif field == 2:
                dims.append(v)
        elif wire == 2:
            ln, j = _varint(desc, j)
            end = j + ln
            while j < end:
                v, j = _varint(desc, j)
                dims.append(v)
        else:
            raise ValueError(f"{path}: unexpected protobuf wire type {wire} in the tensor description")
    if dtype != PADDLE_FP32:
        raise ValueError(f"{path}: data type {dtype}, only float32 ({PADDLE_FP32}) is read")
    count = int(np.prod(dims)) if dims else 1
    if len(buf) - i < 4 * count:
        raise ValueError(f"{path}: {len(buf) - i} bytes of data for shape {dims}")
    return np.frombuffer(buf, dtype="<f4", count=count, offset=i).reshape(dims).astype(np.float32)


def _read_dic(path: Path) -> list[tuple[str, str]]:
    out = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if line:
            a, _, b = line.partition("\t")
            out.append((a, b))
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


def gru(x: np.ndarray, lengths: np.ndarray, w: np.ndarray, b: np.ndarray, reverse: bool) -> np.ndarray:
    """Paddle's dynamic_gru (origin_mode off) over right-padded inputs: x [B, L, 3H] the projected
    inputs, w (H, 3H) stored flat as (H, 2H) update|reset weights then (H, H) candidate weights, b [3H].
    u, r = sigmoid(x_ur + h W_ur); c = tanh(x_c + (r * h) W_c); h = (1 - u) h + u c. The reverse
    direction starts at each text's own last character; padded positions come out as zeros."""
    B, L, H3 = x.shape
    H = H3 // 3
    flat = w.reshape(-1)
    w_ur, w_c = flat[:2 * H * H].reshape(H, 2 * H), flat[2 * H * H:].reshape(H, H)
    x = x + b.reshape(-1)
    pos = np.arange(L)
    valid = pos[None, :] < lengths[:, None]
    if reverse:  # read each text backwards from its own end; padding stays at the right
        src = np.where(valid, lengths[:, None] - 1 - pos[None, :], pos[None, :])
        x = np.take_along_axis(x, src[..., None], 1)
    h = np.zeros((B, H), np.float32)
    out = np.zeros((B, L, H), np.float32)
    for t in range(L):
        g = x[:, t]
        ur = _sigmoid(g[:, :2 * H] + h @ w_ur)
        u, r = ur[:, :H], ur[:, H:]
        c = np.tanh(g[:, 2 * H:] + (r * h) @ w_c)
        h = np.where(valid[:, t:t + 1], (1 - u) * h + u * c, h)
        out[:, t] = h
    out[~valid] = 0
    if reverse:
        out = np.take_along_axis(out, src[..., None], 1)
        out[~valid] = 0
    return out


class Lac:
    """LAC's lexical network on single characters."""

    def __init__(self, params: dict[str, np.ndarray], vocab: dict[str, int], q2b: dict[str, str],
                 tags: list[str]) -> None:
        self.p = params
        self.vocab = vocab
        self.q2b = q2b
        self.tags = tags
        self.oov = vocab["OOV"]

    @classmethod
    def load(cls, path: str | Path) -> Lac:
        """From LAC's model directory (`.../LAC/lac_model`) or the sdist root above it; a missing one is a
        one-line error saying how to fetch it."""
        path = Path(path)
        for cand in (path, path / "lac_model", path / "LAC" / "lac_model"):
            if (cand / "model" / "word_emb").is_file():
                path = cand
                break
        else:
            raise SystemExit(f"no LAC model under {path} (expected lac_model/model/word_emb): {PIP_HINT}")
        names = ["word_emb", "crfw"] + [f"fc_{i}.{t}_0" for i in range(5) for t in "wb"] + [
            f"gru_{i}.{t}_0" for i in range(4) for t in "wb"]
        params = {k: read_lod_tensor(path / "model" / k) for k in names}
        vocab = {w: int(i) for i, w in _read_dic(path / "conf" / "word.dic")}
        q2b = dict(_read_dic(path / "conf" / "q2b.dic"))
        names_of = dict((int(i), t) for i, t in _read_dic(path / "conf" / "tag.dic"))  # a later line wins, as in LAC
        return cls(params, vocab, q2b, [names_of.get(i, str(i)) for i in range(params["crfw"].shape[1])])

    def char_id(self, ch: str) -> int:
        ch = self.q2b.get(ch, ch)
        return self.vocab.get(ch, self.oov)

    def char_rows(self, chars: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """LAC's 128-wide table rows of `chars` (single characters) and whether LAC knows each."""
        ids = np.array([self.char_id(c) if len(c) == 1 else self.oov for c in chars], np.int64)
        return self.p["word_emb"][ids].copy(), ids != self.oov

    def forward(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(states [B, L, 256] of the top BiGRU layer, tag scores [B, L, len(tags)], lengths) for texts
        right-padded to the longest; rows past a text's end are zeros."""
        lengths = np.array([len(t) for t in texts], np.int64)
        L = max(int(lengths.max()) if len(lengths) else 0, 1)
        ids = np.full((len(texts), L), self.oov, np.int64)
        for k, t in enumerate(texts):
            ids[k, :len(t)] = [self.char_id(c) for c in t]
        x = self.p["word_emb"][ids]
        for layer in range(2):
            f, r = 2 * layer, 2 * layer + 1
            fw = gru(x @ self.p[f"fc_{f}.w_0"] + self.p[f"fc_{f}.b_0"], lengths, self.p[f"gru_{f}.w_0"],
                     self.p[f"gru_{f}.b_0"], False)
            bw = gru(x @ self.p[f"fc_{r}.w_0"] + self.p[f"fc_{r}.b_0"], lengths, self.p[f"gru_{r}.w_0"],
                     self.p[f"gru_{r}.b_0"], True)
            x = np.concatenate([fw, bw], -1)
        em = x @ self.p["fc_4.w_0"] + self.p["fc_4.b_0"]
        em[np.arange(L)[None, :] >= lengths[:, None]] = 0
        return x, em, lengths

    def decode(self, em: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
        """Viterbi with LAC's CRF (crfw rows: start, end, then the [K, K] transitions), per text."""
        crf = self.p["crfw"]
        start, end, trans = crf[0], crf[1], crf[2:]
        B, L, _ = em.shape
        score = start + em[:, 0]
        back = np.zeros((B, L, len(start)), np.int64)
        for t in range(1, L):
            m = score[:, :, None] + trans[None]
            back[:, t] = m.argmax(1)
            nxt = m.max(1) + em[:, t]
            score = np.where((lengths > t)[:, None], nxt, score)
        score = score + end
        out = []
        for k, n in enumerate(lengths.tolist()):
            path = [int(score[k].argmax())]
            for t in range(n - 1, 0, -1):
                path.append(int(back[k, t, path[-1]]))
            out.append(np.array(path[::-1], np.int64))
        return out

    def tag(self, texts: Sequence[str], batch: int = 64) -> list[np.ndarray]:
        """LAC's tag ids per character, texts batched by length."""
        return self.run(texts, batch)[0]

    def run(self, texts: Sequence[str], batch: int = 64, states: bool = False
            ) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
        """Per text: LAC's tag ids per character and (with `states`) its top-layer states [n, 256] as
        float16; texts batched by length."""
        order = np.argsort([len(t) for t in texts], kind="stable")
        tags: list[np.ndarray] = [np.zeros(0, np.int64)] * len(texts)
        out_states: list[np.ndarray] | None = [np.zeros((0, 0), np.float16)] * len(texts) if states else None
        for s in range(0, len(order), batch):
            sel = order[s:s + batch]
            sub = [texts[i] for i in sel]
            if not any(sub):
                continue
            st, em, lengths = self.forward(sub)
            for k, (i, path) in enumerate(zip(sel, self.decode(em, lengths), strict=True)):
                n = len(texts[i])
                tags[i] = path[:n]
                if out_states is not None:
                    out_states[i] = st[k, :n].astype(np.float16)
        return tags, out_states


    def word_dictionary(self, texts: Sequence[str], max_len: int = 4, min_count: int = 2, batch: int = 128
                        ) -> tuple[list[str], np.ndarray]:
        """The words LAC segments in `texts` (1..`max_len` characters, seen `min_count` times) and a code per
        word: 1 + part-of-speech class * max_len + length - 1, the class being the word's most frequent LAC
        tag (tag id // 2: the B/I pairs of conf/tag.dic; 'O' is a class too). Why from running text and not
        LAC's dictionaries: its word table and segmentation list lack common words (但是, 本身) that the
        network segments by itself. What the neural tagger reads through neural.word_codes, so LAC's
        segmentation and parts of speech reach scoring as one table lookup."""
        from collections import Counter

        counts: dict[str, Counter] = {}
        for text, tags in zip(texts, self.tag(texts, batch), strict=True):
            start = 0
            for i in range(1, len(text) + 1):
                if i == len(text) or tags[i] % 2 == 0 or tags[i] == len(self.tags) - 1 or tags[i] // 2 != tags[start] // 2:
                    w = text[start:i]
                    if len(w) <= max_len and not w.isspace():
                        counts.setdefault(w, Counter())[int(tags[start]) // 2] += 1
                    start = i
        ordered = sorted(w for w, c in counts.items() if sum(c.values()) >= min_count)
        codes = np.array([1 + counts[w].most_common(1)[0][0] * max_len + len(w) - 1 for w in ordered], np.int64)
        return ordered, codes


__all__ = ["PIP_HINT", "Lac", "gru", "read_lod_tensor"]
