"""The trained head's numbers and its first fit: dev metrics on texts, and a linear head on frozen features.

Every dev number here is measured on texts the way scoring reads them: window scores from the network,
temperature-scaled per window, combined by length (`EncodedSet.text_outputs`), then compared with gold.

`fit_linear_head` is the first step of every run (SetFit's order): a regularised linear head on the base
model's frozen features, by L-BFGS, seconds on CPU. It is pulled toward the head's starting rows (the
base's own head where the labels map onto it), so a few dozen examples adjust the base's reading rather
than replace it, and its strength is chosen by cross-validation over all labelled texts. Fine-tuning the
whole network comes after, and is kept only if it beats this on dev.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from emotag.metrics import accuracy, confusion, expected_calibration_error, macro_f1, pearson, per_class
from emotag.train.finetune.labelplan import LabelPlan

L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)  # strengths tried for the linear head, each a pull toward its start
# the lexical expert's columns get a thousandth of it. Measured on car-forum aspects, 64 per class, test
# macro-F1: expert alone 0.839 (sklearn char TF-IDF + LR 0.826), network features alone 0.405, both with
# one strength 1e-5 0.733 (the dense features overfit), 1e-3 / 1e-6 0.835, 1e-2 / 1e-5 0.838
LEXICAL_L2_RATIO = 1e-3
# levers tried on the 64-per-class curve (`scripts/finetune_curve.py --levers`, docs/finetune.md §9) and not
# kept: z-scored features (the fitted head folded back onto raw features), more L-BFGS iterations, fresh
# rows starting at 0 rather than at their random initialisation
STANDARDIZE = False
LBFGS_ITERS = 100
FRESH_AT_ZERO = False
# a head with no start at all (every label new to the base): also try the two linear models apart and summed,
# the lexical expert's columns fitted alone as a char TF-IDF + logistic regression (its C by cross-validation)
# beside the head on frozen features (its L2 by cross-validation), logits mixed (1 - m) * head + m * expert
# with m by cross-validation too; kept over the joint fit above only when its cross-validated score is higher
STACKED = True
EXPERT_C_GRID = (1.0, 10.0, 100.0, 1000.0)  # sklearn's C: the penalty is ||V||^2 / (2 C rows)
MIX_GRID = tuple(round(0.1 * i, 1) for i in range(11))  # 0: the head alone, 1: the expert alone
EXPERT_ITERS = 200


def regression_metrics(pred: Any, gold: Any) -> dict[str, Any]:
    """Pearson r, MAE and RMSE of scores against gold values, both on the user's scale; `mae_se` is the
    MAE's standard error (the noise margin model choice uses). One function for the training report and
    `emotag eval`, so both give the same numbers on the same rows."""
    p, g = np.asarray(pred, dtype=np.float64), np.asarray(gold, dtype=np.float64)
    err = np.abs(p - g)
    n = len(g)
    constant = n == 0 or np.ptp(p) == 0  # (np.std of equal floats can round to 1e-17, and r to noise)
    return {"n": int(n), "pearson_r": 0.0 if constant else pearson(p.tolist(), g.tolist()),
            "mae": float(err.mean()) if n else float("nan"),
            "rmse": float(np.sqrt((err ** 2).mean())) if n else float("nan"),
            "mae_se": float(err.std() / np.sqrt(n)) if n > 1 else float("inf")}


def selection(m: dict[str, Any], plan: LabelPlan) -> float:
    """The number model choice and early stopping maximise: macro-F1, or minus the MAE for regression."""
    return -m["mae"] if plan.regression else m["macro_f1"]


def gold_mask(data: Any, plan: LabelPlan) -> np.ndarray:
    """Text-level gold rows of the trained head (1 on every allowed label)."""
    return data.text_rows(data.pol_mask if plan.task == "polarity" else data.emo_mask)


def head_probs(pred: dict[str, np.ndarray], data: Any, plan: LabelPlan,
               temperature: dict[str, float] | None = None) -> np.ndarray:
    """The trained head's per-text probabilities, as `Tagger` returns them."""
    return data.text_outputs(pred, temperature)[plan.head]


def head_metrics(probs: np.ndarray, mask: np.ndarray, plan: LabelPlan, detail: bool = False) -> dict[str, Any]:
    """Accuracy and macro-F1 of the trained head on dev texts (multi-label: macro/micro-F1 at p > 0.5 and
    exact match). With `detail`: per-class precision/recall/F1/support and the confusion matrix.

    Polarity on two-class data also gets `sign_accuracy`: sign(p_pos - p_neg) against the gold label, the
    way `emotag eval` scores review sets.
    """
    labels = list(plan.labels)
    if plan.regression:  # one sigmoid on 0..1, gold the row's target on 0..1 (LabelPlan.unit)
        return regression_metrics(plan.on_scale(probs[:, 0]), plan.on_scale(mask[:, 0]))
    if plan.multi_label:
        pred, gold = probs > 0.5, mask > 0.5
        tp = (pred & gold).sum(0)
        fp, fn = (pred & ~gold).sum(0), (~pred & gold).sum(0)
        f1 = np.where(tp > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
        m: dict[str, Any] = {
            "n": int(len(gold)), "exact_match": float((pred == gold).all(1).mean()),
            "macro_f1": float(f1.mean()),
            "micro_f1": float(2 * tp.sum() / max(2 * tp.sum() + fp.sum() + fn.sum(), 1)),
        }
        if detail:
            m["per_class"] = {lab: {"precision": float(tp[j] / max(tp[j] + fp[j], 1)),
                                    "recall": float(tp[j] / max(tp[j] + fn[j], 1)), "f1": float(f1[j]),
                                    "support": int(gold[:, j].sum())} for j, lab in enumerate(labels)}
            m["confusion_labels"] = labels
            m["confusion"] = [[[int((~gold[:, j] & ~pred[:, j]).sum()), int(fp[j])],
                               [int(fn[j]), int(tp[j])]] for j in range(len(labels))]
        return m
    has = mask.sum(-1) > 0
    p, gm = probs[has], mask[has]
    groups = plan.groups()
    if groups:  # partial labels: scored in the file's own classes, their labels' probabilities summed
        names = [name for name, _ in groups]
        allowed = {frozenset(idx): name for name, idx in groups}
        pred = [names[k] for k in np.stack([p[:, idx].sum(-1) for _, idx in groups], -1).argmax(-1)]
        gold = [allowed[frozenset(np.flatnonzero(row).tolist())] for row in gm]
        labels = names
    else:
        pred = [labels[k] for k in p.argmax(-1)]
        gold = [labels[k] for k in gm.argmax(-1)]
    present = [lab for lab in labels if lab in set(gold)]
    m = {"n": int(has.sum()), "accuracy": accuracy(gold, pred), "macro_f1": macro_f1(gold, pred, present)}
    if plan.task == "polarity" and {"negative", "positive"} <= set(labels):
        ineg, ipos = labels.index("negative"), labels.index("positive")
        binary = np.isin(gm.argmax(-1), [ineg, ipos])
        if binary.any():
            m["sign_accuracy"] = float(((p[binary, ipos] - p[binary, ineg] > 0) == (gm[binary].argmax(-1) == ipos))
                                       .mean())
    if detail:
        add_detail(m, gold, pred, labels)
    return m


def add_detail(m: dict[str, Any], gold: list[Any], pred: list[Any], labels: list[Any]) -> None:
    """The report's per-class table and confusion matrix, over the labels that occur in gold or pred: one
    home for the head's metrics and the written model's (the eval_report reads both the same way)."""
    shown = [lab for lab in labels if lab in set(gold) | set(pred)]
    m["per_class"] = per_class(gold, pred, shown)
    m["confusion_labels"] = shown
    m["confusion"] = confusion(gold, pred, shown).tolist()


def calibration(probs: np.ndarray, mask: np.ndarray, plan: LabelPlan) -> float:
    """ECE of the trained head on texts (multi-label: over every (text, label) decision, as binary)."""
    if plan.multi_label:
        p, y = probs.reshape(-1), mask.reshape(-1)
        return expected_calibration_error(np.stack([1 - p, p], -1), np.stack([1 - y, y], -1))
    return expected_calibration_error(probs, mask)


def _frozen(model: Any, data: Any, plan: LabelPlan) -> tuple[Any, Any]:
    """(features, fixed logit offset) per window: the head's input and the lexical expert's share."""
    import torch

    model.eval()
    feats, offs = [], []
    order = list(range(len(data)))
    with torch.no_grad():
        for s in range(0, len(order), 256):
            b = data.collate(order[s:s + 256])
            feats.append(model.features(b["input_ids"], b["attention_mask"], b["ngram_ids"]))
            head = getattr(model, plan.head)
            off = torch.zeros(feats[-1].shape[0], head.out_features)
            if model.has_lexical:
                z = model.lexical_logits(b["ngram_ids"])
                E = model.emotion.out_features
                cols = slice(0, E) if plan.head == "emotion" else slice(E, E + head.out_features)
                off = model.config.lexical.scales.get(plan.head, 1.0) * z[:, cols]
            offs.append(off)
    return torch.cat(feats), torch.cat(offs)


def _text_metrics(z: np.ndarray, weights: np.ndarray, first: np.ndarray, gold: np.ndarray, plan: LabelPlan,
                  temperature: float) -> dict[str, Any]:
    """`head_metrics` on texts of the trained head's window logits `z`, combined as scoring combines them."""
    from emotag.metrics import combine_windows, sigmoid, softmax

    probs = sigmoid(z) if plan.multi_label else softmax(z, temperature)
    return head_metrics(combine_windows(probs, weights, first), gold, plan)


def fit_linear_head(model: Any, train: Any, dev: Any, plan: LabelPlan, row_weight: np.ndarray,
                    fresh_rows: list[int], has_start: bool, folds: int = 3, seed: int = 13) -> dict[str, Any]:
    """Fit the trained head alone on frozen features (L-BFGS), with the lexical expert's columns for it
    where the base has an expert (`_Lexical`), the L2 strength chosen by cross-validation.

    The penalty pulls each row toward its start (`fresh_rows`, rows with nothing to start from, toward 0).
    The strengths are compared by `folds`-fold cross-validation over every labelled text (training and dev
    rows together), and so is the start itself where it means something (`has_start`: the base's own or
    mapped head, i.e. the zero-shot head): the start is kept unless the best strength beats it by more than
    one standard error (0.5 / sqrt(texts)). Why cross-validation: a 12% dev split of 48 rows is 6 texts,
    and a choice made on 6 texts is luck; all 48 give a usable estimate, and fitting a linear head 12 times
    on cached features costs seconds to a minute. The final head is fitted on the training rows only, so dev stays
    unseen for early stopping and calibration. Sets the head in `model`; returns {"l2" (None: the start
    was kept), "cv_macro_f1" per strength and for the start, "texts", "stacked" (`_stack_cv`'s choice, or
    None where it was not tried), "form" ("start", "joint" or "stacked": what was kept) and "cv_kept" (its
    cross-validated score)}.

    A head with no start at all (`STACKED`) also tries the head and the expert's columns fitted apart and
    mixed (`_stack_cv`), kept when its cross-validated score beats the joint fit's.
    """
    import torch

    from emotag.train.trainer import multilabel_bce, partial_nll

    head = getattr(model, plan.head)
    F_tr, off_tr = _frozen(model, train, plan)
    F_dv, off_dv = _frozen(model, dev, plan)
    w0, b0 = head.weight.detach().clone(), head.bias.detach().clone()
    anchor = w0.clone()
    anchor[fresh_rows] = 0.0
    if FRESH_AT_ZERO:
        w0 = anchor.clone()
    lex = _Lexical(model, plan, list(train.grams) + list(dev.grams)) if model.has_lexical else None
    key = "pol_mask" if plan.task == "polarity" else "emo_mask"
    F, off = torch.cat([F_tr, F_dv]), torch.cat([off_tr, off_dv])
    target = torch.from_numpy(np.concatenate([getattr(train, key), getattr(dev, key)]))
    has = torch.from_numpy(np.concatenate([train.emo_has, dev.emo_has]))
    rw = torch.from_numpy(np.concatenate([row_weight, np.ones(len(dev))]).astype(np.float32))
    text_of = np.concatenate([train.text_of, dev.text_of + len(train.examples)])
    weights = np.concatenate([train.weights, dev.weights])
    first = np.concatenate([train.first, dev.first + len(train)])
    gold = np.concatenate([gold_mask(train, plan), gold_mask(dev, plan)])
    temperature = model.config.temperature.get(plan.head, 1.0)

    if lex is not None:
        off = off - lex.scale * lex.logits(lex.weight0, np.arange(len(F)))  # the expert's share is fitted too
    if STANDARDIZE:  # fit on z-scored features; (W, b) there is (W / sd, b - W / sd . mu) on raw ones
        mu, sd = F.mean(0), F.std(0).clamp_min(1e-6)
        F = (F - mu) / sd
        b0 = b0 + w0 @ mu
        w0, anchor = w0 * sd, anchor * sd

    def to_model(W: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not STANDARDIZE:
            return W, b
        return W / sd, b - (W / sd) @ mu

    def loss_of(z: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
        per = multilabel_bce(z, target[sel], has[sel]) if plan.multi_label else partial_nll(z, target[sel])
        return (per * rw[sel]).sum() / rw[sel].sum()

    def fit(rows: np.ndarray, l2: float, with_lex: bool = True
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        W, b = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(b0.clone())
        params = [W, b]
        L = None
        if lex is not None and with_lex:
            L = torch.nn.Parameter(lex.weight0.clone())
            params.append(L)
            X = lex.rows(rows)
        opt = torch.optim.LBFGS(params, lr=1.0, max_iter=LBFGS_ITERS, history_size=10, line_search_fn="strong_wolfe")
        sel = torch.from_numpy(rows)

        def closure() -> torch.Tensor:
            opt.zero_grad()
            z = F[sel] @ W.T + b + off[sel]
            penalty = l2 * ((W - anchor) ** 2).sum()
            if L is not None:
                z = z + lex.scale * sparse_matmul(X, L)
                penalty = penalty + l2 * LEXICAL_L2_RATIO * ((L - lex.weight0) ** 2).sum()
            loss = loss_of(z, sel) + penalty
            loss.backward()
            return loss

        opt.step(closure)
        return W.detach(), b.detach(), None if L is None else L.detach()

    def fit_expert(rows: np.ndarray, c: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The expert's columns alone, V and an intercept: logistic regression on the rows' TF-IDF."""
        V = torch.nn.Parameter(torch.zeros_like(lex.weight0))
        c0 = torch.nn.Parameter(torch.zeros(lex.weight0.shape[1]))
        X = lex.rows(rows)
        sel = torch.from_numpy(rows)
        l2 = 1.0 / (2.0 * c * len(rows))
        opt = torch.optim.LBFGS([V, c0], lr=1.0, max_iter=EXPERT_ITERS, history_size=10,
                                line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = loss_of(sparse_matmul(X, V) + c0, sel) + l2 * (V ** 2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        return V.detach(), c0.detach()

    def logits(rows: np.ndarray, W: torch.Tensor, b: torch.Tensor, L: torch.Tensor | None) -> np.ndarray:
        sel = torch.from_numpy(rows)
        z = F[sel] @ W.T + b + off[sel]
        if L is not None:
            z = z + lex.scale * lex.logits(L, rows)
        return z.numpy()

    # one torch thread for the fits: their tensors are small, and on a busy machine a second thread made the
    # L-BFGS steps spin (300 texts: 18 s with one thread, over 5 minutes with two beside other jobs)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        n_texts = len(gold)
        fold = np.random.default_rng(seed).permutation(n_texts) % max(2, min(folds, n_texts))
        fold_w = fold[text_of]
        everything = np.arange(len(F))
        with torch.no_grad():
            at_start = _text_metrics(logits(everything, w0, b0, None if lex is None else lex.weight0), weights, first,
                                     gold, plan, temperature)
            cv = {"start": selection(at_start, plan)}
            for l2 in L2_GRID:
                z = np.zeros((len(F), w0.shape[0]), dtype=np.float32)
                for f in np.unique(fold_w):
                    with torch.enable_grad():
                        W, b, L = fit(np.flatnonzero(fold_w != f), l2)
                    out = np.flatnonzero(fold_w == f)
                    z[out] = logits(out, W, b, L)
                cv[str(l2)] = selection(_text_metrics(z, weights, first, gold, plan, temperature), plan)
        best = max(L2_GRID, key=lambda x: cv[str(x)])
        # one standard error: of a macro-F1 at its widest, or of the start's MAE
        margin = at_start["mae_se"] if plan.regression else 0.5 / np.sqrt(n_texts)
        keep_start = has_start and cv["start"] >= cv[str(best)] - margin
        stacked = None
        if (STACKED and lex is not None and not plan.regression and not has_start and not STANDARDIZE
                and len(fresh_rows) == w0.shape[0]):
            stacked = _stack_cv(fold_w, len(F), w0.shape[0], fit, fit_expert, logits,
                                lambda rows, V, c: (lex.logits(V, rows) + c).numpy(),
                                lambda z: selection(_text_metrics(z, weights, first, gold, plan, temperature), plan))
            stacked["kept"] = stacked["cv"] > cv[str(best)]
        if stacked is not None and stacked["kept"]:
            tr = np.arange(len(F_tr))
            m = stacked["mix"]
            W, b, _ = fit(tr, stacked["l2"], with_lex=False)
            V, c0 = fit_expert(tr, stacked["C"])
            off0 = off[0] if len(off) else torch.zeros_like(b)  # the expert's own bias, a constant offset
            with torch.no_grad():
                # (1 - m) (F W + b + off0) + m (X V + c0), written as the model computes it: the head, then the
                # expert's columns times their scale, then its bias (unchanged, inside off0)
                head.weight.copy_((1 - m) * W)
                head.bias.copy_((1 - m) * b + m * c0 - m * off0)
                lex.store(model, m * V / lex.scale)
        elif not keep_start:
            W, b, L = fit(np.arange(len(F_tr)), best)
            W, b = to_model(W, b)
            with torch.no_grad():
                head.weight.copy_(W)
                head.bias.copy_(b)
                if L is not None:
                    lex.store(model, L)
    finally:
        torch.set_num_threads(threads)
    kept = "stacked" if stacked is not None and stacked["kept"] else "start" if keep_start else str(best)
    return {"l2": None if keep_start else best, "cv_neg_mae" if plan.regression else "cv_macro_f1": cv,
            "texts": n_texts, "lexical_expert": lex is not None, "stacked": stacked,
            "form": {"stacked": "stacked", "start": "start"}.get(kept, "joint"),
            "cv_kept": stacked["cv"] if kept == "stacked" else cv[kept]}


def _stack_cv(fold_w: np.ndarray, n_rows: int, k: int, fit: Any, fit_expert: Any, head_logits: Any,
              expert_logits: Any, score: Any) -> dict[str, Any]:
    """Cross-validated choice of the stacked head: out-of-fold logits of the head alone per L2 strength and
    of the expert alone per C (the same folds as the joint fit), then every (L2, C, mix) scored on their
    mixed logits. Returns {"l2", "C", "mix", "cv" (its cross-validated score), "grid" (the best score per
    mix)}.

    Why apart: fitted jointly under one penalty, the dense frozen features (trained for sentiment) and the
    sparse TF-IDF columns (which know the new labels' words) compete for the same budget, and one relative
    strength (`LEXICAL_L2_RATIO`) is not right for every task; apart, each gets its own strength, chosen by
    cross-validation like the TF-IDF baseline's C, and the mix decides how much each counts."""
    import torch

    heads = {l2: np.zeros((n_rows, k), dtype=np.float32) for l2 in L2_GRID}
    experts = {c: np.zeros((n_rows, k), dtype=np.float32) for c in EXPERT_C_GRID}
    for f in np.unique(fold_w):
        inside, out = np.flatnonzero(fold_w != f), np.flatnonzero(fold_w == f)
        for l2 in L2_GRID:
            W, b, _ = fit(inside, l2, with_lex=False)
            with torch.no_grad():
                heads[l2][out] = head_logits(out, W, b, None)
        for c in EXPERT_C_GRID:
            V, c0 = fit_expert(inside, c)
            with torch.no_grad():
                experts[c][out] = expert_logits(out, V, c0)
    best: dict[str, Any] = {"cv": -np.inf}
    grid: dict[str, float] = {}
    for m in MIX_GRID:
        for l2 in L2_GRID if m < 1 else L2_GRID[:1]:  # (the head's strength does not matter at m = 1)
            for c in EXPERT_C_GRID if m > 0 else EXPERT_C_GRID[:1]:
                s = float(score((1 - m) * heads[l2] + m * experts[c]))
                grid[str(m)] = max(grid.get(str(m), -np.inf), s)
                if s > best["cv"]:
                    best = {"l2": l2, "C": c, "mix": m, "cv": s}
    return {**best, "grid": grid}


def torch_index(idx: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(idx.astype(np.int64))


class _Lexical:
    """The lexical expert's columns of the trained head, as a second linear model fitted with the head:
    TF-IDF rows of every window (training then dev) and the columns' starting weights.

    Why: the frozen network carries what the base learnt (polarity, emotion); the words of a new label set
    (油耗, 动力, 价格 for car-forum aspects) are in the TF-IDF expert's buckets, which a char TF-IDF +
    logistic regression would use. Fitting those columns too is that baseline, inside the model's graph.
    """

    def __init__(self, model: Any, plan: LabelPlan, grams: list[np.ndarray]) -> None:
        from emotag.train.lexical import design_matrix

        E = model.emotion.out_features
        k = getattr(model, plan.head).out_features
        self.cols = slice(0, E) if plan.head == "emotion" else slice(E, E + k)
        self.scale = float(model.config.lexical.scales.get(plan.head, 1.0))
        X = design_matrix(grams, model.lex_idf.numpy()).tocsc()
        # only the buckets these texts use can move (a few percent of the table): a far smaller problem
        self.used = np.flatnonzero(np.diff(X.indptr) > 0)
        self.X = X[:, self.used].tocsr()
        self.weight0 = model.lex_weight[torch_index(self.used), self.cols].detach().clone()

    def store(self, model: Any, L: Any) -> None:
        """Write fitted columns back into the model's expert (rows of unused buckets are untouched)."""
        model.lex_weight[torch_index(self.used), self.cols] = L

    def rows(self, rows: np.ndarray) -> Any:
        """The TF-IDF rows `rows`, as the first argument of `sparse_matmul`."""
        X = self.X[rows].tocsr()
        return X, X.T.tocsr()

    def logits(self, L: Any, rows: np.ndarray) -> Any:
        return sparse_matmul(self.rows(rows), L)


def sparse_matmul(X: tuple[Any, Any], L: Any) -> Any:
    """X @ L for a scipy CSR matrix X (given with its transpose) and a torch tensor L, differentiable in L.

    Why not torch.sparse.mm: its backward re-coalesces the sparse matrix on every call, which made a
    linear head on 300 hotel reviews take minutes; scipy's CSR products take milliseconds.
    """
    import torch

    class _MatMul(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, weight: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(np.asarray(X[0] @ weight.detach().numpy(), dtype=np.float32))

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(np.asarray(X[1] @ grad.numpy(), dtype=np.float32))

    return _MatMul.apply(L)
