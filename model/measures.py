"""Ranking and probability measures, defined once for training's validation figures and `lam evaluate`.

All take flat arrays over scoring points; `groups` (one id per scoring time) makes top-share selection per
scoring time, the way a daily call list is drawn.
"""

from __future__ import annotations

import numpy as np


def auc(score: np.ndarray, label: np.ndarray) -> float:
    """ROC AUC by the rank-sum formula, ties counted half; NaN with one class only."""
    label = label.astype(bool)
    n_pos, n_neg = int(label.sum()), int((~label).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mid_rank = ends - (counts - 1) / 2.0  # average 1-based rank of each distinct score
    rank_sum = mid_rank[inverse][label].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def pr_auc(score: np.ndarray, label: np.ndarray) -> float:
    """Average precision over distinct score thresholds (the step-wise area under precision-recall)."""
    label = label.astype(bool)
    n_pos = int(label.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-score, kind="stable")
    s, y = score[order], label[order]
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(y)[last_of_tie]
    seen = np.flatnonzero(last_of_tie) + 1
    precision, recall = tp / seen, tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def calibration_error(prob: np.ndarray, label: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-count bins (equal-width bins would put nearly every point of a
    rare event into the first bin)."""
    order = np.argsort(prob, kind="stable")
    gaps = [abs(prob[idx].mean() - label[idx].mean()) * len(idx)
            for idx in np.array_split(order, min(bins, len(order))) if len(idx)]
    return float(np.sum(gaps) / max(len(prob), 1))


def group_rank(score: np.ndarray, groups: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each point's 0-based rank by descending score within its group, and its group's size; ties broken at
    random so that a coarse score (RFM cells) is not favoured by the input order."""
    order = np.lexsort((rng.random(len(score)), -score, groups))
    _, start, inverse, size = np.unique(groups[order], return_index=True, return_inverse=True, return_counts=True)
    rank = np.empty(len(score), dtype=np.int64)
    rank[order] = np.arange(len(score)) - start[inverse]
    group_size = np.empty(len(score), dtype=np.int64)
    group_size[order] = size[inverse]
    return rank, group_size


def top_share(score: np.ndarray, groups: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """(n,) bool: the top `share` of points by score within each group (at least one per group)."""
    rank, size = group_rank(score, groups, rng)
    return rank < np.maximum(1, np.round(share * size))


def lift_curve(score: np.ndarray, label: np.ndarray, groups: np.ndarray, shares: np.ndarray,
               rng: np.random.Generator) -> np.ndarray:
    """(len(shares),) order rate among the top share by score divided by the overall rate."""
    rank, size = group_rank(score, groups, rng)
    return np.array([label[rank < np.maximum(1, np.round(s * size))].mean() / label.mean() for s in shares])


def bootstrap_ratio(label: np.ndarray, chosen_a: np.ndarray, chosen_b: np.ndarray, cluster: np.ndarray,
                    rng: np.random.Generator, draws: int = 1000, level: float = 0.95) -> tuple[float, float]:
    """Confidence interval of rate(A) / rate(B) by the Poisson bootstrap over clusters (customers), so a
    customer scored on many days counts as one draw."""
    # Only customers on either list move a rate: the others are left out of the draws, which on a log of a
    # million visitors and lists of a few thousand makes the bootstrap hundreds of times cheaper.
    either = chosen_a | chosen_b
    _, cid = np.unique(cluster[either], return_inverse=True)
    n = int(cid.max()) + 1 if len(cid) else 1
    y = label[either].astype(np.float64)
    # Per-customer positives and counts of each list: the bootstrap then reweights customers, not points.
    sums = [(np.bincount(cid[c], weights=y[c], minlength=n), np.bincount(cid[c], minlength=n).astype(np.float64))
            for c in (chosen_a[either], chosen_b[either])]
    ratios = []
    for start in range(0, draws, 100):
        w = rng.poisson(1.0, size=(min(100, draws - start), n)).astype(np.float64)  # (draws, customers)
        (pa, na), (pb, nb) = sums
        rate_a = (w @ pa) / np.maximum(w @ na, 1)
        rate_b = (w @ pb) / np.maximum(w @ nb, 1)
        ratios.append(rate_a / np.maximum(rate_b, 1e-12))
    lo, hi = np.quantile(np.concatenate(ratios), [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)
