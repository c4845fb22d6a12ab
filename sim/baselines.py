"""Two reference call lists computed from the touchpoints a world shows before t, to check that the world is
neither hopeless nor trivial: a conventional recency-frequency-monetary list, and a two-line funnel score
that reads order and timing (recent deep-funnel touchpoints, discounted for heavy aimless browsing).
A sequence model should beat the funnel score; the funnel score already beats RFM about twofold.
"""

from __future__ import annotations

import numpy as np

from sim.world import DAY_MS, World
from streams.contract import catalogue

# How much each journey stage says about intent, for the funnel score.
_STAGE_WEIGHTS = {"product_view": 1.0, "compare": 2.0, "inquiry": 4.0, "store_visit": 6.0, "add_to_cart": 6.0}


def rfm_scores(world: World, t_ms: int) -> np.ndarray:
    """(N,) sum of recency, frequency and monetary quintiles (0..4 each) over touchpoints before t_ms."""
    cols, n = world.columns, world.config.customers
    past = cols.time_ms < t_ms
    cust = cols.customer[past]
    last = np.full(n, np.iinfo(np.int64).min)
    np.maximum.at(last, cust, cols.time_ms[past])
    frequency = np.bincount(cust, minlength=n)
    monetary = np.bincount(cust, weights=np.nan_to_num(cols.value[past]), minlength=n)
    return sum(_quintile(x) for x in (last, frequency, monetary))


def funnel_scores(world: World, t_ms: int, memory_days: float = 4.0) -> np.ndarray:
    """(N,) best product's recency-weighted funnel depth, zero right after buying it, damped by browsing noise."""
    cols, n, cat = world.columns, world.config.customers, catalogue()
    n_products = len(cat.products)
    past = cols.time_ms < t_ms
    cust, time_ms, kind, item = cols.customer[past], cols.time_ms[past], cols.event_type[past], cols.item[past]
    weights = np.zeros(len(cat.event_types))
    for name, w in _STAGE_WEIGHTS.items():
        weights[cat.event_types.index(name)] = w
    product = (item >= 0) & (item < n_products)
    age = (t_ms - time_ms[product]) / DAY_MS
    depth = np.zeros((n, n_products))
    np.add.at(depth, (cust[product], item[product]), weights[kind[product]] * np.exp(-age / memory_days))
    bought = product & (kind == cat.event_types.index("purchase"))
    recent = (t_ms - time_ms[bought]) < 10 * DAY_MS
    depth[cust[bought][recent], item[bought][recent]] = 0.0
    aimless = (kind == cat.event_types.index("page_view")) | ((kind == cat.event_types.index("product_view"))
                                                                & (item >= n_products))
    return depth.max(axis=1) / (1.0 + 0.3 * np.bincount(cust[aimless], minlength=n))


def top_share(scores: np.ndarray, share: float) -> np.ndarray:
    """Indices of the best-scored `share` of customers, ties broken by index for determinism."""
    k = max(1, int(len(scores) * share))
    return np.argsort(-scores, kind="stable")[:k]


def _quintile(x: np.ndarray) -> np.ndarray:
    rank = np.argsort(np.argsort(x, kind="stable"), kind="stable")
    return rank * 5 // len(x)
