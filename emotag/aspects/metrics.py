"""Triple F1 of opinion units against gold triples, as the project's yardstick scores them
(`../shared/tools/cli_eval.py`, SPEC §7): micro-F1 over (aspect, opinion, polarity), each gold triple
matching at most one predicted unit; exact (strings equal after removing white space, a null aspect
matches only a null one) or soft (one string contains the other). Used by `emotag eval` and
`scripts/train_aspects.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def same_text(a: str | None, b: str | None, soft: bool) -> bool:
    """Equal after removing white space, or (soft) one contains the other; None matches only None."""
    if a is None or b is None:
        return a is None and b is None
    a, b = "".join(a.split()), "".join(b.split())
    return a == b or (soft and bool(a) and bool(b) and (a in b or b in a))


def triple_f1(gold: Sequence[Sequence[Mapping[str, Any]]], pred: Sequence[Sequence[Mapping[str, Any]]],
              soft: bool) -> tuple[float, float, float]:
    """(F1, precision, recall) over texts; items are dicts with aspect, opinion and polarity."""
    tp = n_gold = n_pred = 0
    for g, q in zip(gold, pred, strict=True):
        n_gold += len(g)
        n_pred += len(q)
        used: set[int] = set()
        for a in g:
            for j, b in enumerate(q):
                if j not in used and a.get("polarity") == b.get("polarity") and \
                        same_text(a.get("aspect"), b.get("aspect"), soft) and same_text(a.get("opinion"), b.get("opinion"), soft):
                    used.add(j)
                    tp += 1
                    break
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    return (2 * p * r / (p + r) if tp else 0.0), p, r


def triple_scores(gold: Sequence[Sequence[Mapping[str, Any]]], pred: Sequence[Sequence[Mapping[str, Any]]]
                  ) -> dict[str, float]:
    """The exact and soft F1 (with precision and recall) as one flat dict."""
    out: dict[str, float] = {}
    for name, soft in (("exact", False), ("soft", True)):
        f, p, r = triple_f1(gold, pred, soft)
        out |= {f"triple_f1_{name}": round(f, 4), f"triple_p_{name}": round(p, 4), f"triple_r_{name}": round(r, 4)}
    return out
