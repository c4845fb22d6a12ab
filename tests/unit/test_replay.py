"""`lam replay`'s outcome arithmetic: which actions count, and when a customer counts as having bought."""

from __future__ import annotations

import numpy as np

from bench.replay import acted_days, active_base_rate, bought_within
from model import data
from model.vocab import load_catalogue
from streams.contract import Touchpoint

DAY = 86_400_000
HOUR = 3_600_000
T0 = 1_435_708_800_000  # 2015-07-01, a midnight
VOCAB = load_catalogue()


def _tp(customer: str, t: int, event_type: str = "product_view") -> Touchpoint:
    return Touchpoint(customer, t, "web", event_type, "12345")


TABLE = data.from_touchpoints(sorted([
    _tp("a", T0 + HOUR), _tp("a", T0 + 2 * HOUR, "purchase"), _tp("a", T0 + 9 * DAY, "purchase"),
    _tp("b", T0 + 3 * HOUR), _tp("b", T0 + 8 * DAY, "purchase"),
    _tp("c", T0 + DAY), _tp("c", T0 + DAY + HOUR),
], key=lambda e: e.event_time_ms), VOCAB)


def _index(*customers: str) -> np.ndarray:
    ids = list(TABLE.customer_ids)
    return np.array([ids.index(c) for c in customers])


def test_bought_within_counts_purchases_after_the_moment_up_to_the_horizon() -> None:
    who = _index("a", "a", "a", "b", "b", "c")
    after = np.array([T0 + HOUR, T0 + 2 * HOUR, T0 + 2 * DAY, T0 + 3 * HOUR, T0 + HOUR + DAY, T0 + DAY])
    got = bought_within(TABLE, who, after, 7 * DAY)
    # a: the purchase an hour later; not the one at the moment itself (that was the past); the day-9 one from
    # day 2; b: day 8 is beyond 7 days of hour 3 but within 7 days of day 1; c never buys.
    assert list(got) == [True, False, True, False, True, False]


def test_each_customer_day_counts_once_from_its_first_trigger_inside_the_period() -> None:
    actions = [{"customer_id": c, "trigger": {"event_time": t}} for c, t in (
        ("a", T0 + 2 * HOUR), ("a", T0 + HOUR), ("c", T0 + DAY + HOUR), ("b", T0 - HOUR), ("c", T0 + 20 * DAY))]
    acted = acted_days(TABLE, actions, T0, T0 + 10 * DAY)
    got = sorted(zip(TABLE.customer_ids[acted.customer], acted.day_ms, acted.trigger_ms))
    assert got == [("a", T0, T0 + HOUR), ("c", T0 + DAY, T0 + DAY + HOUR)]


def test_the_active_base_rate_starts_at_each_days_first_touchpoint() -> None:
    pairs, rate = active_base_rate(TABLE, T0, T0 + 2 * DAY, 7 * DAY)
    # (a, day 0) from hour 1 buys at hour 2; (b, day 0) from hour 3 does not buy by day 7 + 3 h; (c, day 1) never.
    assert (pairs, rate) == (3, 1 / 3)
