"""The simulator: deterministic, calibrated against its own truth, and hard enough that order and timing matter."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from sim import baselines, telemarketing
from sim.write import JsonLines, simulate, truth_path
from sim.world import DAY_MS, World, WorldConfig
from streams.contract import catalogue


@pytest.fixture(scope="module")
def world() -> World:
    return World(WorldConfig(customers=50_000, seed=11))


def _columns_equal(a: World, b: World) -> bool:
    return all(np.array_equal(getattr(a.columns, f.name), getattr(b.columns, f.name), equal_nan=True)
               for f in dataclasses.fields(a.columns))


def test_same_seed_same_world_other_seed_other_world() -> None:
    config = WorldConfig(customers=2_000, days=60, seed=5)
    assert _columns_equal(World(config), World(config))
    assert not _columns_equal(World(config), World(dataclasses.replace(config, seed=6)))


def test_events_are_in_event_time_order_within_the_period(world: World) -> None:
    cols = world.columns
    assert np.all(np.diff(cols.time_ms) >= 0)
    assert cols.time_ms[0] >= world.config.start_ms
    assert cols.time_ms[-1] < world.config.start_ms + world.config.days * DAY_MS


def test_every_channel_type_and_product_shows_up(world: World) -> None:
    cat = catalogue()
    types = {cat.event_types[k] for k in np.unique(world.columns.event_type)}
    assert {"product_view", "compare", "inquiry", "store_visit", "add_to_cart", "campaign_open",
            "purchase"} <= types
    assert {cat.channels[k] for k in np.unique(world.columns.channel)} >= {"web", "app", "store", "call_centre",
                                                                          "campaign"}
    purchases = world.columns.event_type == cat.event_types.index("purchase")
    assert set(np.unique(world.columns.item[purchases])) == set(range(len(cat.products)))
    assert np.all(world.columns.value[purchases] > 0)


def test_fast_writer_matches_touchpoint_wire_form() -> None:
    small = World(WorldConfig(customers=300, days=30, seed=2))
    fast = "".join(JsonLines(small).lines(0, len(small.columns))).encode()
    assert fast == b"".join(tp.to_wire() + b"\n" for tp in small.events())


def test_customer_ids_round_trip(world: World) -> None:
    idx = np.array([0, 123, 49_999])
    assert world.customer_ids(idx) == ["c0000000", "c0000123", "c0049999"]
    assert np.array_equal(world.index_of(np.array(world.customer_ids(idx))), idx)


def test_propensity_is_calibrated_against_realised_purchases(world: World) -> None:
    cat, ids = catalogue(), np.arange(world.config.customers)
    for day in (60, 120):
        t = world.config.start_ms + day * DAY_MS
        expected = world.propensity(ids, t).sum()
        cols = world.columns
        window = (cols.time_ms >= t) & (cols.time_ms < t + 7 * DAY_MS)
        realised = np.count_nonzero(window & (cols.event_type == cat.event_types.index("purchase")))
        assert abs(realised - expected) < 4 * np.sqrt(expected)


def test_a_purchase_satisfies_the_need_and_churners_buy_nothing(world: World) -> None:
    cust, prod, at = (column[:500] for column in world.purchases())

    def own(offset_ms: int) -> np.ndarray:
        return np.array([world.propensity(np.array([c]), t + offset_ms)[0, k] for c, k, t in zip(cust, prod, at)])

    assert np.all(own(1) < own(-1))
    churned = np.flatnonzero(world.latent.alive_until < 100)[:200]
    assert len(churned) == 200
    assert np.all(world.propensity(churned, world.config.start_ms + 100 * DAY_MS) == 0.0)


def test_truth_file_gives_the_same_propensity(tmp_path: Path) -> None:
    world = World(WorldConfig(customers=1_000, days=40, seed=3))
    written = simulate(world, tmp_path / "h.jsonl.gz")
    assert written.truth == truth_path(tmp_path / "h.jsonl.gz")
    loaded = World.load_truth(written.truth)
    t = world.config.start_ms + 30 * DAY_MS
    assert loaded.config == world.config
    assert np.array_equal(loaded.propensity(np.arange(1_000), t), world.propensity(np.arange(1_000), t))


def test_calls_are_deterministic_and_paired_across_lists(world: World) -> None:
    t = world.config.start_ms + 90 * DAY_MS
    ids = np.arange(0, 20_000)
    first = telemarketing.call(world, ids, t, seed=1)
    assert np.array_equal(first, telemarketing.call(world, ids, t, seed=1))
    shuffled = ids[::-1]
    assert np.array_equal(telemarketing.call(world, shuffled, t, seed=1), first[::-1])
    assert not np.array_equal(telemarketing.call(world, ids, t, seed=2), first)
    assert np.array_equal(telemarketing.call(world, np.array(world.customer_ids(ids[:50])), t, seed=1), first[:50])


def test_order_and_timing_beat_rfm_at_a_five_percent_call_budget(world: World) -> None:
    ids = np.arange(world.config.customers)
    for day in (90, 150):
        t = world.config.start_ms + day * DAY_MS
        rate = {name: telemarketing.order_probability(world, baselines.top_share(scores, 0.05), t).mean()
                for name, scores in (("rfm", baselines.rfm_scores(world, t)),
                                     ("funnel", baselines.funnel_scores(world, t)),
                                     ("truth", -np.expm1(np.log1p(-world.propensity(ids, t)).sum(axis=1))))}
        assert rate["funnel"] >= 2.0 * rate["rfm"], rate
        assert rate["truth"] >= 2.0 * rate["funnel"], rate
