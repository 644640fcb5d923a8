"""Training the neural span tagger (neural.py) with torch: a CRF loss over the nine BIO tags.

Only `scripts/train_aspects.py --neural` and the parity test import this (torch is in the [train] extra);
scoring reads the exported numpy arrays. The network: a 256-wide character table initialised from the
bundled network's token embeddings (a Chinese character is one WordPiece token there), a linear map to
the tagger's width, plus one learned row per lexicon mark and clause distance; residual dilated
convolutions; a linear layer to the tag scores; transitions and start scores with the same allowed-move
mask as tagger.viterbi. Export folds the 256-wide table and its map into one [vocab, width] table.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from emotag.aspects.features import LEXICONS
from emotag.aspects.neural import MAX_DIST, N_MARKS, UNK, NeuralTagger, encode
from emotag.aspects.tagger import N_TAGS, allowed_starts, allowed_transitions, length_batches

MASKED = -1e4


class ConvTagger(nn.Module):
    """The torch twin of NeuralTagger.emissions."""

    def __init__(self, vocab_size: int, width: int = 64, dilations: Sequence[int] = (1, 2, 4, 8),
                 emb_dim: int = 256, dropout: float = 0.2, n_bigrams: int = 0, n_aux: int = 0,
                 n_aux_states: int = 0, n_word_codes: int = 0) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab_size, emb_dim, padding_idx=0)
        self.proj = nn.Linear(emb_dim, width)
        self.inputs = nn.ModuleList([nn.Embedding(N_MARKS, width) for _ in LEXICONS]
                                    + [nn.Embedding(MAX_DIST + 1, width) for _ in range(2)])
        if n_bigrams:  # row 0: a bigram not in the list
            self.inputs.append(nn.Embedding(n_bigrams + 1, width))
        if n_word_codes:  # row 0: no dictionary word starts here
            self.inputs.append(nn.Embedding(n_word_codes, width))
        self.dilations = list(dilations)
        self.convs = nn.ModuleList([nn.Conv1d(width, width, 3, padding=d, dilation=d) for d in self.dilations])
        self.out = nn.Linear(width, N_TAGS)
        # training only (never exported): a second head on the same states predicting a teacher's tag per
        # character (LAC's part of speech x word begin/inside), so the states carry word boundaries
        self.aux = nn.Linear(width, n_aux) if n_aux else None
        self.aux_states = nn.Linear(width, n_aux_states) if n_aux_states else None  # or its hidden states
        self.drop = nn.Dropout(dropout)
        self.trans = nn.Parameter(torch.zeros(N_TAGS, N_TAGS))
        self.start = nn.Parameter(torch.zeros(N_TAGS))
        for t in self.inputs:
            nn.init.normal_(t.weight, std=0.1)

    def forward(self, codes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """codes [B, L, 1 + len(LEXICONS) + 2] (encode's columns), mask [B, L] -> scores [B, L, T]."""
        return self.out(self.states(codes, mask)) * mask.unsqueeze(-1).float()

    def states(self, codes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The last block's output [B, L, width] (zeros past each sentence's end)."""
        h = self.proj(self.emb(codes[..., 0]))
        for j, t in enumerate(self.inputs):
            h = h + t(codes[..., j + 1])
        m = mask.unsqueeze(-1).float()
        h = self.drop(h) * m
        for conv in self.convs:
            y = torch.relu(conv(h.transpose(1, 2)).transpose(1, 2))
            h = h + self.drop(y) * m
        return h

    def masked_moves(self) -> tuple[torch.Tensor, torch.Tensor]:
        ok = torch.from_numpy(allowed_transitions())
        st = torch.from_numpy(allowed_starts())
        return (torch.where(ok, self.trans, torch.full_like(self.trans, MASKED)),
                torch.where(st, self.start, torch.full_like(self.start, MASKED)))


def crf_nll(em: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor, trans: torch.Tensor,
            start: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of the gold paths, summed over the batch (masked moves already applied)."""
    B, L, _ = em.shape
    lengths = mask.sum(1)
    gold = start[tags[:, 0]] + em.gather(2, tags.unsqueeze(-1)).squeeze(-1).mul(mask).sum(1)
    if L > 1:
        gold = gold + (trans[tags[:, :-1], tags[:, 1:]] * mask[:, 1:]).sum(1)
    alpha = start.unsqueeze(0) + em[:, 0]
    for i in range(1, L):
        nxt = torch.logsumexp(alpha.unsqueeze(2) + trans.unsqueeze(0), 1) + em[:, i]
        alpha = torch.where((lengths > i).unsqueeze(1), nxt, alpha)
    return (torch.logsumexp(alpha, 1) - gold).sum()


def valid_path(tags: np.ndarray) -> np.ndarray:
    """Overlapping gold opinions can leave an I- tag after another kind's tag: it becomes a B- tag, so
    every gold path is one the decoder may produce."""
    ok = allowed_transitions()
    tags = tags.copy()
    for i in range(len(tags)):
        prev_ok = ok[tags[i - 1], tags[i]] if i else tags[i] not in (2, 4, 6, 8)
        if not prev_ok:
            tags[i] -= 1
    return tags


def network_char_rows(model_dir: Path) -> tuple[np.ndarray, dict[str, int], int]:
    """(token table, {character: row}, [UNK] row) of an emotag network: a WordPiece vocabulary's
    one-character tokens, or a SentencePiece (Unigram) vocabulary's one-character pieces (the plain piece
    before its word-initial "\u2581" form). Read through `EmotagModel.load`, so tables kept in the int8
    ONNX file are read too."""
    from emotag.model.modeling import EmotagModel

    model = EmotagModel.load(model_dir)
    emb = model.encoder.embeddings
    table = (emb.weight if hasattr(emb, "weight") else emb.word_embeddings.weight).detach().float().numpy()
    vocab = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    if isinstance(vocab, dict):  # WordPiece: {token: id}
        return table, {k: v for k, v in vocab.items() if len(k) == 1}, vocab.get("[UNK]", 1)
    ids = {piece: i for i, (piece, _) in enumerate(vocab)}  # Unigram: [[piece, score], ...], id = position
    singles = {p: i for p, i in ids.items() if len(p) == 1 and p != "\u2581"}
    for p, i in ids.items():
        if len(p) == 2 and p[0] == "\u2581":
            singles.setdefault(p[1], i)
    return table, singles, ids.get("[UNK]", 0)


def char_vocab(texts: Sequence[str], model_dir: Path, min_count: int = 2, lac: object = None
               ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Characters the tagger knows: the network's single-character tokens (`model_dir`, an emotag model)
    plus training characters seen `min_count` times; and their starting rows (the network's token table as
    `EmotagModel.load` reads it; a character it lacks starts random with the table's spread).
    Returns (vocab, rows, known)."""
    from collections import Counter

    table, singles, unk = network_char_rows(model_dir)
    counts = Counter(c for t in texts for c in t)
    chars = sorted(set(singles) | {c for c, n in counts.items() if n >= min_count})
    vocab = ["", "[UNK]"] + chars
    rng = np.random.default_rng(0)
    spread = float(table.std())
    rows = rng.normal(0, spread, (len(vocab), table.shape[1])).astype(np.float32)
    rows[0] = 0
    known = np.zeros(len(vocab), bool)
    for i, c in enumerate(vocab[2:], start=2):
        if c in singles:
            rows[i] = table[singles[c]]
            known[i] = True
    rows[UNK] = table[unk]
    if lac is not None:  # LAC's 128-wide rows beside them, rescaled to the same spread (row 0 stays zero)
        extra, _ = lac.char_rows(vocab)  # type: ignore[attr-defined]
        extra = extra * (spread / float(extra.std()))
        extra[0] = 0
        rows = np.concatenate([rows, extra.astype(np.float32)], 1)
    return vocab, rows, known


def export(model: ConvTagger, vocab: list[str], lexicons: dict, o_bias: float = 0.0,
           bigrams: np.ndarray | None = None, words: tuple[np.ndarray, np.ndarray] | None = None) -> NeuralTagger:
    """The numpy tagger: the character table folded through its linear map, conv taps as [in, out]."""
    with torch.no_grad():
        char_table = model.proj(model.emb.weight).numpy().copy()
        in_bias = np.zeros(char_table.shape[1], np.float32)
        char_table[0] = 0  # padding never reaches the numpy forward
        arrays = {
            "char_table": char_table,
            "in_bias": in_bias,
            "conv_w": np.stack([c.weight.permute(2, 1, 0).numpy() for c in model.convs]),  # [tap, in, out]
            "conv_b": np.stack([c.bias.numpy() for c in model.convs]),
            "out_w": model.out.weight.T.numpy().copy(),
            "out_b": model.out.bias.numpy().copy(),
            "trans": model.trans.numpy().copy(),
            "start": model.start.numpy().copy(),
            "dilations": np.array(model.dilations, np.int64),
            "o_bias": np.array([o_bias], np.float32),
        }
        for j, t in enumerate(model.inputs[:len(LEXICONS) + 2]):
            arrays[f"input_table_{j}"] = t.weight.numpy().copy()
        if bigrams is not None:
            arrays["bigram_keys"] = bigrams
            arrays["bigram_table"] = model.inputs[len(LEXICONS) + 2].weight.numpy().copy()
        if words is not None:
            arrays["word_keys"], arrays["word_codes"] = words
            arrays["word_table"] = model.inputs[-1].weight.numpy().copy()
    return NeuralTagger(vocab, arrays, dict(lexicons))


def batch_tensors(rows: list[np.ndarray], gold: list[np.ndarray] | None = None, pad: int = 0
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    L = max(len(r) for r in rows)
    codes = np.zeros((len(rows), L, rows[0].shape[1]), np.int64)
    mask = np.zeros((len(rows), L), bool)
    tags = np.full((len(rows), L), pad, np.int64) if gold is not None else None
    for k, r in enumerate(rows):
        codes[k, :len(r)] = r
        mask[k, :len(r)] = True
        if tags is not None and gold is not None:
            tags[k, :len(r)] = gold[k]
    return (torch.from_numpy(codes), torch.from_numpy(mask),
            torch.from_numpy(tags) if tags is not None else None)


def train_neural(texts: list[str], gold: list[np.ndarray], fold_patterns: list[list], fold_of: list[int],
                 lexicons: dict, model_dir: Path, score: Callable[[NeuralTagger], float] | None,
                 epochs: int = 12, width: int = 64, dilations: Sequence[int] = (1, 2, 4, 8), batch: int = 32,
                 lr: float = 2e-3, dropout: float = 0.2, patience: int = 3, seed: int = 0,
                 max_minutes: float = 25.0, checkpoint: Path | None = None, ema: float = 0.999,
                 bigram_min_count: int = 0, lac: object = None, lac_emb: bool = False,
                 aux_tags: list[np.ndarray] | None = None, distill: float = 0.0,
                 aux_states: list[np.ndarray] | None = None, distill_states: float = 0.0,
                 words: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[NeuralTagger, dict]:
    """Adam on the CRF loss, one thread; after each epoch the exported numpy tagger is scored with `score`
    (exact + soft triple F1 on the tuning half) and the best kept. What is scored and exported is an
    exponential moving average of the weights (`ema` per step; 0 = the last weights): the per-epoch
    scores of the raw weights swing by a point or two on this small, noisily annotated data. Lexicon marks of a training sentence
    come from its fold's lexicon (built from the other half), as for the perceptron.

    With `lac` (emotag.aspects.lac.Lac) and `lac_emb`, each character's starting row also holds LAC's own
    128-wide row (folded into the exported table like the rest). With `aux_tags` (a teacher tag id per
    character of every text, e.g. LAC's) and `distill` > 0, a training-only head predicts them from the
    last block's states, its cross-entropy (summed over characters, times `distill`) added to the CRF loss;
    with `aux_states` (a teacher's vector per character) and `distill_states`, a linear map of the states
    regresses them (squared error summed over characters, times `distill_states`). With `words` (sorted
    neural.word_hashes keys of dictionary words and a code per word, 1..), each character also reads a
    learned row for the longest dictionary word starting there (neural.word_codes)."""
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    vocab, rows, _ = char_vocab(texts, model_dir, lac=lac if lac_emb else None)
    ids = {c: i for i, c in enumerate(vocab)}
    bigrams = None
    if bigram_min_count:  # character bigrams seen at least this often in training
        from collections import Counter

        from emotag.aspects.neural import bigram_keys
        counts: Counter = Counter()
        for t in texts:
            cps = np.frombuffer(t.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
            counts.update(bigram_keys(cps, np.array([len(t) - 1])).tolist() if len(t) else [])
        bigrams = np.array(sorted(k for k, n in counts.items() if n >= bigram_min_count), dtype=np.uint64)
        print(f"neural: {len(bigrams):,} bigrams (count >= {bigram_min_count})", flush=True)
    codes: list[np.ndarray] = [None] * len(texts)  # type: ignore[list-item]
    for f, pats in enumerate(fold_patterns):
        idx = [i for i in range(len(texts)) if fold_of[i] == f]
        _, c, off = encode([texts[i] for i in idx], ids, pats, bigrams, words)
        for j, i in enumerate(idx):
            codes[i] = c[off[j]:off[j + 1]]
    gold = [valid_path(g) for g in gold]
    n_aux = int(max(int(t.max()) for t in aux_tags if len(t)) + 1) if aux_tags is not None and distill > 0 else 0
    n_st = int(next(s.shape[1] for s in aux_states if len(s))) if aux_states is not None and distill_states > 0 else 0
    model = ConvTagger(len(vocab), width, dilations, rows.shape[1], dropout, len(bigrams) if bigrams is not None else 0,
                       n_aux, n_st, int(words[1].max()) + 1 if words is not None else 0)
    with torch.no_grad():
        model.emb.weight.copy_(torch.from_numpy(rows))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    avg = copy.deepcopy(model)
    avg_params = [(pa, pm) for pa, pm in zip(avg.parameters(), model.parameters(), strict=True)]
    rng = np.random.default_rng(seed)
    t_start = time.time()
    best: tuple[float, int, NeuralTagger] | None = None
    log: dict = {"epochs": []}
    for ep in range(epochs):
        t0 = time.time()
        model.train()
        batches = length_batches(rng, [len(t) for t in texts], batch)
        total = 0.0
        for sel in batches:
            c, m, tg = batch_tensors([codes[i] for i in sel], [gold[i] for i in sel])
            h = model.states(c, m)
            em = model.out(h) * m.unsqueeze(-1).float()
            trans, start = model.masked_moves()
            loss = crf_nll(em, tg, m, trans, start) / len(sel)
            if model.aux is not None and aux_tags is not None:
                _, _, at = batch_tensors([codes[i] for i in sel], [aux_tags[i] for i in sel], pad=-100)
                assert at is not None
                ce = nn.functional.cross_entropy(model.aux(h).reshape(-1, n_aux), at.reshape(-1),
                                                 ignore_index=-100, reduction="sum")
                loss = loss + distill * ce / len(sel)
            if model.aux_states is not None and aux_states is not None:
                Lb = m.shape[1]
                tgt = torch.from_numpy(np.stack([np.pad(aux_states[i].astype(np.float32), ((0, Lb - len(aux_states[i])), (0, 0)))
                                                 for i in sel]))
                se = ((model.aux_states(h) - tgt) ** 2).sum(-1).mul(m).sum()
                loss = loss + distill_states * se / len(sel)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            with torch.no_grad():
                for pa, pm in avg_params:
                    pa.mul_(ema).add_(pm.detach(), alpha=1 - ema)
            total += float(loss.detach()) * len(sel)
        avg.eval()
        tagger = export(avg, vocab, lexicons, bigrams=bigrams, words=words)
        val = score(tagger) if score is not None else -float(ep)
        entry = {"epoch": ep + 1, "loss": round(total / len(texts), 4), "tune": round(val, 4),
                 "seconds": round(time.time() - t0, 1)}
        log["epochs"].append(entry)
        print("neural", json.dumps(entry), flush=True)
        if best is None or val > best[0]:
            best = (val, ep + 1, tagger)
            if checkpoint is not None:  # the best epoch so far: numpy export and torch weights
                tagger.save(checkpoint)
                torch.save(avg.state_dict(), checkpoint / "neural_torch.pt")
                (checkpoint / "neural_log.json").write_text(json.dumps(log), encoding="utf-8")
        elif score is not None and ep + 1 - best[1] >= patience:
            break
        spent = time.time() - t_start
        if spent + spent / (ep + 1) > max_minutes * 60:
            print(f"neural: stopping, another epoch would pass {max_minutes} minutes", flush=True)
            break
    assert best is not None
    log["best_epoch"] = best[1]
    log["best_tune"] = round(best[0], 4)
    print(f"neural: best epoch {best[1]} (tune {best[0]:.4f})", flush=True)
    return best[2], log
