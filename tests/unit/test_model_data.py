"""Labels, the time split and the event table: what a training example may and may not see."""

from __future__ import annotations

import numpy as np

from model import data, encode, measures
from model.train import TrainConfig, examples
from model.vocab import load_catalogue
from streams.contract import Touchpoint

DAY = 86_400_000
T0 = 1_735_689_600_000  # a midnight
VOCAB = load_catalogue()


def _tp(customer: str, day: float, event_type: str = "page_view", item: str | None = None) -> Touchpoint:
    return Touchpoint(customer, T0 + int(day * DAY), "web", event_type, item, 49.0 if event_type == "purchase" else None)


def _world(rng: np.random.Generator, customers: int = 30, days: int = 60) -> list[Touchpoint]:
    out = []
    for c in range(customers):
        for day in np.sort(rng.uniform(0, days, size=rng.integers(1, 40))):
            kind = rng.choice(["page_view", "product_view", "purchase"], p=[0.6, 0.3, 0.1])
            out.append(_tp(f"c{c}", day, kind, rng.choice(VOCAB.products) if kind != "page_view" else None))
    return sorted(out, key=lambda e: e.event_time_ms)


def test_table_sorts_by_customer_then_time_and_keeps_ties_in_arrival_order() -> None:
    events = [_tp("b", 2), _tp("a", 1, "compare"), _tp("a", 1, "purchase", "tv_bundle"), _tp("a", 0.5)]
    table = data.from_touchpoints(events, VOCAB)
    assert list(table.customer_ids) == ["b", "a"]
    a = slice(table.offsets[1], table.offsets[2])
    assert list(table.time_ms[a]) == [T0 + DAY // 2, T0 + DAY, T0 + DAY]
    assert list(table.cats[a, 0]) == VOCAB.event_type_ids(["page_view", "compare", "purchase"]).tolist()
    assert list(table.purchase[a]) == [-1, -1, VOCAB.products.index("tv_bundle")]


def test_unknown_values_go_to_the_out_of_vocabulary_bucket() -> None:
    cats = encode.categorical([Touchpoint("c", T0, "pigeon", "telepathy", "fiber_1g"),
                               Touchpoint("c", T0, "web", "purchase", "no-such-item")], VOCAB)
    assert cats[0, 0] == 0 and cats[0, 1] == 0 and cats[0, 2] == 1 + VOCAB.products.index("fiber_1g")
    assert cats[1, 2] > len(VOCAB.products) and VOCAB.purchase_head("purchase", "no-such-item") == len(VOCAB.products)


def test_scoring_points_see_only_the_past_and_label_the_horizon() -> None:
    events = [_tp("a", 0.5), _tp("a", 3, "purchase", "fiber_1g"), _tp("a", 12, "purchase", "gift-card"),
              _tp("b", 5)]
    table = data.from_touchpoints(events, VOCAB)
    points = data.scoring_points(table, [T0 + DAY, T0 + 3 * DAY, T0 + 6 * DAY], 7 * DAY, len(VOCAB.heads))
    got = {(table.customer_ids[c], int((s - T0) // DAY)): (int(table.time_ms[r] - T0) / DAY, tuple(lab))
           for c, s, r, lab in zip(points.customer, points.time_ms, points.last_row, points.labels)}
    fiber = tuple(p == "fiber_1g" for p in VOCAB.products)
    assert got == {
        ("a", 1): (0.5, (*fiber, True)),  # the purchase on day 3 is within 7 days
        ("a", 3): (0.5, (*fiber, True)),  # a purchase at s itself is the future, not the past
        ("a", 6): (3.0, (*(False,) * len(VOCAB.products), True)),  # only the gift card on day 12: "any"
        ("b", 6): (5.0, (*(False,) * len(VOCAB.products), False)),  # b has no history before day 5
    }


def test_touchpoint_points_score_right_after_each_touchpoint_and_label_later_purchases() -> None:
    events = [_tp("a", 0.5), _tp("a", 3, "purchase", "fiber_1g"), _tp("a", 4), _tp("a", 12, "purchase", "gift-card"),
              _tp("b", 5), _tp("b", 20, "purchase", "fiber_1g")]
    table = data.from_touchpoints(events, VOCAB)
    points = data.touchpoint_points(table, T0, T0 + 12 * DAY, 7 * DAY, len(VOCAB.heads))
    assert (table.time_ms[points.last_row] == points.time_ms).all()  # the state right after the touchpoint
    got = {(table.customer_ids[c], (s - T0) / DAY): tuple(lab)
           for c, s, lab in zip(points.customer, points.time_ms, points.labels)}
    fiber, none = tuple(p == "fiber_1g" for p in VOCAB.products), (False,) * len(VOCAB.products)
    assert got == {
        ("a", 0.5): (*fiber, True),  # the purchase on day 3 is within 7 days
        ("a", 3.0): (*none, False),  # its own purchase is the past; the next is 9 days on
        ("a", 4.0): (*none, False),  # day 12 is 8 days on
        ("b", 5.0): (*none, False),  # day 20 is 15 days on; day 12 and later are outside the window
    }


def test_training_examples_do_not_change_with_anything_after_the_split() -> None:
    rng = np.random.default_rng(0)
    events = _world(rng)
    split, config = T0 + 40 * DAY, TrainConfig(horizon_ms=7 * DAY, draws=3)
    future = [_tp(f"c{c}", 40 + d, "purchase", "fiber_1g") for c in range(30) for d in (0.0, 0.1, 5)]
    views = []
    for extra in ([], future):
        table = data.from_touchpoints(sorted(events + extra, key=lambda e: e.event_time_ms), VOCAB).before(split)
        padded = data.pad(table, np.arange(table.n_customers))
        offset, labels, weight = examples(table, padded, split, config, len(VOCAB.heads), np.random.default_rng(1))
        times = table.time_ms[padded.rows]
        scored = (times + offset)[weight > 0]
        assert scored.max() + config.horizon_ms <= split  # every label is observed before the split
        assert (weight[:, ~padded.mask] == 0).all()
        views.append((offset, labels, weight))
    for before, after in zip(*views):
        np.testing.assert_array_equal(before, after)


def test_labels_count_purchases_within_the_horizon_after_the_scoring_moment() -> None:
    events = [_tp("a", 0), _tp("a", 2), _tp("a", 8, "purchase", "tv_bundle"), _tp("a", 20)]
    table = data.from_touchpoints(events, VOCAB)
    padded = data.pad(table, np.arange(1))
    gap = data.next_purchase_gap(table, padded, len(VOCAB.heads))[0]  # (T, P)
    tv, any_ = VOCAB.products.index("tv_bundle"), -1
    assert list(gap[:, tv] / DAY) == [8, 6, np.inf, np.inf] and list(gap[:, any_] / DAY) == [8, 6, np.inf, np.inf]
    assert np.isinf(gap[:, VOCAB.products.index("fiber_1g")]).all()
    split = T0 + 30 * DAY
    offset, labels, weight = examples(table, padded, split, TrainConfig(horizon_ms=7 * DAY, draws=64),
                                      len(VOCAB.heads), np.random.default_rng(0))
    moment = (offset[:, 0] / DAY)[:, :2]  # (K, 2): drawn moments after the first two touchpoints, in days
    assert (moment[:, 0] < 2).all() and (moment[:, 1] < 6).all()  # a state holds until the next touchpoint
    np.testing.assert_array_equal(labels[:, 0, :2, any_], (gap[:2, any_] / DAY - moment) < 7)


def test_measures_match_their_definitions() -> None:
    rng = np.random.default_rng(5)
    score, label = rng.integers(0, 6, 400).astype(float), rng.random(400) < 0.3
    pairs = score[label][:, None] - score[~label][None, :]
    assert abs(measures.auc(score, label) - ((pairs > 0).mean() + 0.5 * (pairs == 0).mean())) < 1e-12
    assert abs(measures.auc(-score, label) - (1 - measures.auc(score, label))) < 1e-12
    assert measures.auc(score + 10 * label, label) == 1.0
    assert measures.pr_auc(np.arange(4.0), np.array([0, 0, 1, 1])) == 1.0
    groups = np.repeat([0, 1], 200)
    chosen = measures.top_share(score, groups, 0.05, rng)
    assert chosen[:200].sum() == 10 and chosen[200:].sum() == 10


def test_parse_time_accepts_dates_zoned_times_and_epoch_ms() -> None:
    assert data.parse_time("2025-01-01") == T0 == data.parse_time("2025-01-01T00:00:00Z") == data.parse_time(str(T0))
    try:
        data.parse_time("2025-01-01T00:00:00")
    except Exception as exc:  # noqa: BLE001 - the type is checked below
        assert "zone" in str(exc) and type(exc).__name__ == "LamError"
    else:
        raise AssertionError("a naive time was accepted")


def test_bootstrap_interval_covers_the_ratio_and_ignores_customers_on_neither_list() -> None:
    rng = np.random.default_rng(2)
    n = 4000
    customer = rng.integers(0, 800, n)
    label = rng.random(n) < np.where(customer < 400, 0.3, 0.1)
    a, b = customer < 400, (customer >= 400) & (customer < 800)
    lo, hi = measures.bootstrap_ratio(label, a, b, customer, np.random.default_rng(0))
    assert lo < label[a].mean() / label[b].mean() < hi and lo > 1.5
    # Customers on neither list, however many, change nothing.
    extra = np.arange(10_000) + 1000
    wider = measures.bootstrap_ratio(np.r_[label, np.ones(len(extra), bool)], np.r_[a, np.zeros(len(extra), bool)],
                                     np.r_[b, np.zeros(len(extra), bool)], np.r_[customer, extra],
                                     np.random.default_rng(0))
    assert wider == (lo, hi)
