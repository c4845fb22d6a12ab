"""The state cache: rows read back as put, written once per delay, nothing acknowledged before it is written."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.cache import StateCache
from streams.state import StateLayout

LAYOUT = StateLayout(hidden_size=2, products=1, event_types=1, action_slots=4)


class Writer:
    """A store's `put_many`: every write kept, in order."""

    def __init__(self) -> None:
        self.writes: list[tuple[Any, str, int]] = []  # (context, customer, the state's last_offset)

    def put_many(self, items: Sequence[tuple[str, bytes]], context: Any) -> None:
        for customer, value in items:
            offset = int(np.frombuffer(value, dtype=LAYOUT.dtype)["last_offset"][0])
            self.writes.append((context, customer, offset))

    def last(self) -> dict[str, int]:
        return {customer: offset for _, customer, offset in self.writes}


def states(*offsets: int) -> np.ndarray:
    out = LAYOUT.fresh(len(offsets), "v", np.zeros(2, dtype=np.float32), np.zeros(1, dtype=np.float32))
    out["last_offset"] = offsets
    return out


def put(cache: StateCache, writer: Writer, epoch: int, now: float, changes: dict[str, int], context: Any = 0) -> None:
    """One batch: its customers looked up, then their new states put, as the engine does."""
    customers = list(changes)
    slots = cache.find(customers, [context] * len(customers), epoch, writer)
    cache.put(customers, [context] * len(customers), states(*changes.values()), slots, epoch, writer, now)


def test_without_a_delay_every_put_is_written_at_once_and_read_back():
    cache, writer = StateCache(LAYOUT, 8), Writer()
    put(cache, writer, 1, 0.0, {"a": 10, "b": 11})
    cache.write_due(writer, now=0.0)
    assert writer.last() == {"a": 10, "b": 11}
    assert cache.written_before() == sys.maxsize
    slots = cache.find(["b", "c"], [0, 0], 2, writer)
    assert slots[1] == -1 and cache.rows["last_offset"][slots[0]] == 11


def test_a_customer_changed_twice_within_the_delay_is_written_once_with_the_latest_state():
    cache, writer = StateCache(LAYOUT, 8, hold=1.0), Writer()
    put(cache, writer, 1, 0.0, {"a": 10})
    cache.write_due(writer, now=0.5)
    assert writer.writes == [] and cache.written_before() == 1
    put(cache, writer, 2, 0.8, {"a": 12, "b": 13})
    cache.write_due(writer, now=1.1)  # a's oldest change is due, b's is not
    assert writer.writes == [(0, "a", 12)]
    assert cache.written_before() == 2
    cache.write_due(writer, now=1.8)
    assert writer.last() == {"a": 12, "b": 13} and len(writer.writes) == 2
    assert cache.written_before() == sys.maxsize


def test_a_full_cache_evicts_the_least_recently_used_and_writes_them_first():
    cache, writer = StateCache(LAYOUT, 4, hold=60.0), Writer()
    put(cache, writer, 1, 0.0, {"a": 1, "b": 2})
    put(cache, writer, 2, 0.0, {"c": 3, "d": 4})
    put(cache, writer, 3, 0.0, {"a": 5, "e": 6})  # full: b, the least recently used, leaves, written
    assert writer.writes == [(0, "b", 2)]
    assert list(cache.find(["b", "c", "d", "a", "e"], [0] * 5, 4, writer) >= 0) == [False, True, True, True, True]


def test_a_customer_seen_under_another_context_is_written_under_the_old_one_and_read_again():
    cache, writer = StateCache(LAYOUT, 4, hold=60.0), Writer()
    put(cache, writer, 1, 0.0, {"a": 1}, context="p0")
    assert cache.find(["a"], ["p1"], 2, writer).tolist() == [-1]
    assert writer.writes == [("p0", "a", 1)]


def test_keep_drops_the_rows_of_other_contexts_and_tells_whether_unwritten_changes_went():
    cache, writer = StateCache(LAYOUT, 8, hold=60.0), Writer()
    put(cache, writer, 1, 0.0, {"a": 1}, context="p0")
    put(cache, writer, 2, 0.0, {"b": 2}, context="p1")
    cache.write_all(writer)
    assert cache.keep(lambda context: context == "p0") is False
    put(cache, writer, 3, 0.0, {"a": 3}, context="p0")
    assert cache.keep(lambda context: context == "p1") is True
    assert len(cache) == 0 and len(writer.writes) == 2


def test_forget_drops_an_unwritten_change():
    cache, writer = StateCache(LAYOUT, 8, hold=60.0), Writer()
    put(cache, writer, 1, 0.0, {"a": 1, "b": 2})
    cache.forget("a")
    cache.write_all(writer)
    assert writer.writes == [(0, "b", 2)]


batches = st.lists(st.tuples(st.floats(0.0, 2.0), st.dictionaries(st.sampled_from("abcdefgh"), st.integers(0, 99),
                                                                   min_size=1, max_size=4)), max_size=30)


@settings(max_examples=200, deadline=None)
@given(batches=batches, capacity=st.integers(4, 10), hold=st.sampled_from([0.0, 0.5, 3.0]))
def test_a_batch_below_written_before_is_in_the_store_and_the_cache_reads_the_latest(batches, capacity, hold):
    """Against a plain dict of the latest state per customer: whatever the sizes, delays and evictions, every
    batch the cache calls written has its changes (or later ones) in the writer, and a row read back is the
    latest state."""
    cache, writer, latest, now = StateCache(LAYOUT, capacity, hold), Writer(), {}, 0.0
    put_at: dict[str, int] = {}  # customer -> epoch of its latest change
    for epoch, (gap, changes) in enumerate(batches, start=1):
        now += gap
        customers = list(changes)
        slots = cache.find(customers, [0] * len(customers), epoch, writer)
        for customer, slot in zip(customers, slots.tolist()):
            if slot >= 0:
                assert cache.rows["last_offset"][slot] == latest[customer]
        cache.put(customers, [0] * len(customers), states(*changes.values()), slots, epoch, writer, now)
        cache.write_due(writer, now)
        latest.update(changes)
        put_at.update(dict.fromkeys(changes, epoch))
        written = writer.last()
        for customer, epoch_of_change in put_at.items():
            if epoch_of_change < cache.written_before():
                assert written.get(customer) == latest[customer]
    cache.write_all(writer)
    assert writer.last() == latest
