"""The ways of choosing customers that the model must beat, all scored at the same scoring points.

- random: a coin for each point.
- recency: the most recently active first.
- rfm: the classic recency-frequency-monetary ranking: quintile scores (1-5) of recency of the last
  touchpoint, touchpoints in the last `FREQUENCY_DAYS`, and purchase value to date, summed; ties broken at
  random when a list is drawn.
- logistic regression on aggregate counts: touchpoints per event type and channel over the whole history and
  the last `RECENT_DAYS`, recency, tenure and purchase value (log scaled, standardised), fitted on scoring
  points before the split whose labels end before it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from model.calibrate import fit_standardised, sigmoid
from model.data import EventTable, ScoringPoints
from model.encode import DAY_MS, HOUR_MS

RECENT_DAYS = 7
FREQUENCY_DAYS = 30
_RIDGE = 1.0  # on standardised features; the counts are many and correlated


@dataclass(frozen=True, slots=True)
class Aggregates:
    """Per scoring point (n rows), what an analyst's SQL would compute from touchpoints before it."""
    by_type: np.ndarray  # (n, E) touchpoints per event type, whole history
    recent_by_type: np.ndarray  # (n, E) the same over the last RECENT_DAYS
    by_channel: np.ndarray  # (n, Ch)
    frequency: np.ndarray  # (n,) touchpoints in the last FREQUENCY_DAYS
    monetary: np.ndarray  # (n,) purchase value to date
    recency_ms: np.ndarray  # (n,)
    tenure_ms: np.ndarray  # (n,) since the first touchpoint


def aggregates(table: EventTable, points: ScoringPoints, n_event_types: int, n_channels: int) -> Aggregates:
    cust = table.customer_of_row
    event_type, channel = table.cats[:, 0].astype(np.int64), table.cats[:, 1].astype(np.int64)
    purchase_value = np.where((table.purchase >= 0) & ~np.isnan(table.value), table.value, 0.0)
    n, c = len(points.customer), table.n_customers
    out = {"by_type": np.zeros((n, n_event_types)), "recent_by_type": np.zeros((n, n_event_types)),
           "by_channel": np.zeros((n, n_channels)), "frequency": np.zeros(n), "monetary": np.zeros(n)}

    def per_customer(mask: np.ndarray, key: np.ndarray | None = None, size: int = 1,
                     weights: np.ndarray | None = None) -> np.ndarray:
        k = cust[mask].astype(np.int64) * size + (0 if key is None else key[mask])
        counts = np.bincount(k, weights=None if weights is None else weights[mask], minlength=c * size)
        return counts.reshape(c, size) if size > 1 else counts

    for s in np.unique(points.time_ms):
        at = np.flatnonzero(points.time_ms == s)
        who = points.customer[at]
        before = table.time_ms < s
        out["by_type"][at] = per_customer(before, event_type, n_event_types)[who]
        out["recent_by_type"][at] = per_customer(before & (table.time_ms >= s - RECENT_DAYS * DAY_MS),
                                                 event_type, n_event_types)[who]
        out["by_channel"][at] = per_customer(before, channel, n_channels)[who]
        out["frequency"][at] = per_customer(before & (table.time_ms >= s - FREQUENCY_DAYS * DAY_MS))[who]
        out["monetary"][at] = per_customer(before, weights=purchase_value)[who]
    return Aggregates(**out, recency_ms=points.time_ms - table.time_ms[points.last_row],
                      tenure_ms=points.time_ms - table.time_ms[table.offsets[points.customer]])


def _quintile(x: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """1-5 by quintile of x within each group; equal values share a quintile."""
    out = np.zeros(len(x))
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        edges = np.quantile(x[idx], [0.2, 0.4, 0.6, 0.8])
        out[idx] = 1 + np.searchsorted(edges, x[idx], side="right")
    return out


def rfm(agg: Aggregates, groups: np.ndarray) -> np.ndarray:
    return (_quintile(-agg.recency_ms.astype(np.float64), groups) + _quintile(agg.frequency, groups)
            + _quintile(agg.monetary, groups))


def recency(agg: Aggregates) -> np.ndarray:
    return -agg.recency_ms.astype(np.float64)


def design(agg: Aggregates) -> np.ndarray:
    """(n, F) log-scaled features of the logistic regression."""
    return np.column_stack([
        np.log1p(agg.by_type), np.log1p(agg.recent_by_type), np.log1p(agg.by_channel),
        np.log1p(agg.frequency), np.log1p(np.maximum(agg.monetary, 0)),
        np.log1p(agg.recency_ms / HOUR_MS), np.log1p(agg.tenure_ms / HOUR_MS),
    ])


def fit_logistic(agg: Aggregates, label: np.ndarray) -> Callable[[Aggregates], np.ndarray]:
    """Fit on training aggregates and 0/1 labels (n,); returns a scorer giving probabilities."""
    w, bias = fit_standardised(design(agg), label, ridge=_RIDGE)
    return lambda a: sigmoid(design(a) @ w + bias)
