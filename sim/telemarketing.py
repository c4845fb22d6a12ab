"""Telemarketing against the ground truth: which calls of a call list turn into orders.

A call at time t reaches a customer with 7-day purchase propensities pi_p(t). It sells product p with
probability `call_effect` * pi_p (the call brings forward a purchase the customer was leaning to), and
sells anything at all to a customer with no intent with probability `call_base_rate`; churned customers
buy nothing. Outcomes come from one uniform draw per customer of the whole world, seeded by (seed, t), so
two call lists made for the same moment and seed agree on every customer they share: list comparisons
are paired, not blurred by sampling noise.
"""

from __future__ import annotations

import numpy as np

from sim.world import DAY_MS, World


def order_probability(world: World, customer_ids: np.ndarray, t_ms: int) -> np.ndarray:
    """(n,) chance that a call at t_ms turns into an order."""
    cfg = world.config
    idx = world.index_of(customer_ids)
    propensity = world.propensity(idx, t_ms)  # (n, P)
    with_intent = -np.expm1(np.log1p(-cfg.call_effect * propensity).sum(axis=1))
    alive = world.latent.alive_until[idx] > (t_ms - cfg.start_ms) / DAY_MS
    return np.where(alive, cfg.call_base_rate + (1.0 - cfg.call_base_rate) * with_intent, 0.0)


def call(world: World, customer_ids: np.ndarray, t_ms: int, seed: int) -> np.ndarray:
    """(n,) bool: whether each call of the list, made at t_ms, turns into an order."""
    idx = world.index_of(customer_ids)
    draw = np.random.default_rng([seed, t_ms]).random(world.config.customers)
    return draw[idx] < order_probability(world, idx, t_ms)
