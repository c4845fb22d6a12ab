"""The input fetcher against the real broker: partitions from the positions it is given, nothing from before a
change of them, and nothing once reset."""

from __future__ import annotations

import asyncio

import pytest
from faust.types import TP

from streams import kafka
from streams.fetch import InputFetcher
from streams.worker import Inbound

pytestmark = pytest.mark.integration


def _fill(bootstrap: str, topic: str, per_partition: int) -> None:
    producer = kafka.producer(bootstrap)
    for partition in (0, 1):
        for i in range(per_partition):
            producer.produce(topic, key=f"k{i}".encode(), value=f"{partition}:{i}".encode(), partition=partition)
    assert producer.flush(30) == 0


async def _take(fetcher: InputFetcher, count: int, timeout: float = 30.0) -> dict[TP, list[Inbound]]:
    """At least `count` messages (all the fetcher has, grouped), or what came within `timeout` seconds."""
    taken: dict[TP, list[Inbound]] = {}
    deadline = asyncio.get_running_loop().time() + timeout
    while sum(map(len, taken.values())) < count and asyncio.get_running_loop().time() < deadline:
        by_tp, errors = fetcher.group(fetcher.take() or await fetcher.wait(0.2))
        assert errors == []
        for tp, messages in by_tp.items():
            taken.setdefault(tp, []).extend(messages)
            fetcher.handed_over(tp, messages[-1].offset)
    return taken


def test_partitions_come_from_their_positions_and_nothing_from_before_a_change(bootstrap, topic_factory):
    topic = topic_factory(partitions=2)
    _fill(bootstrap, topic, 500)
    tp0, tp1 = TP(topic, 0), TP(topic, 1)

    async def scenario() -> None:
        fetcher = InputFetcher(bootstrap, "test-fetch", max_wait_ms=5, max_messages=100)
        try:
            fetcher.fetch({tp0, tp1})
            assert fetcher.fetching == frozenset()  # no position yet: nothing is fetched

            fetcher.seek({tp0: None, tp1: 400})
            fetcher.fetch({tp0, tp1})
            taken = await _take(fetcher, 600)
            assert [m.offset for m in taken[tp0]] == list(range(500))
            assert [m.offset for m in taken[tp1]] == list(range(400, 500))
            first = taken[tp1][0]
            assert (first.topic, first.partition, first.key, first.value, first.context) == (
                topic, 1, b"k400", b"1:400", tp1)

            epoch = fetcher.epoch
            fetcher.seek({tp0: 10})  # back, with what librdkafka fetched ahead dropped
            assert fetcher.epoch > epoch
            again = await _take(fetcher, 490)
            assert [m.offset for m in again[tp0]] == list(range(10, 500)) and tp1 not in again

            fetcher.handed_over(tp1, 449)  # as if 450-499 were dropped: a restart fetches them again
            fetcher.restart()
            assert [m.offset for m in (await _take(fetcher, 50))[tp1]] == list(range(450, 500))

            fetcher.reset()
            assert fetcher.fetching == frozenset() and fetcher.next_offset(tp0) is None
            _fill(bootstrap, topic, 5)
            assert await _take(fetcher, 1, timeout=1.0) == {}
            fetcher.fetch({tp0})
            assert fetcher.fetching == frozenset()  # forgotten: it waits for a seek
        finally:
            fetcher.close()

    asyncio.run(scenario())
