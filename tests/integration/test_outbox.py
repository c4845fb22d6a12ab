"""Actions and dead letters through the worker's own producer, on the real broker: all acknowledged once `sent`
returns, in order per key, headers kept."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest

from streams import kafka
from streams.outbox import Outbox

pytestmark = pytest.mark.integration


def test_every_record_is_on_the_topic_once_sent_returns_in_order_per_key(bootstrap, topic_factory):
    actions, letters = topic_factory(partitions=3), topic_factory(partitions=1)
    outbox = Outbox.connect(bootstrap)
    try:
        outbox.put(actions, ((f"c{i % 7}".encode(), f"{i}".encode(), []) for i in range(500)))
        outbox.put(letters, [(None, b"not json", [("lam.reason", b"payload: expected JSON")])])
        asyncio.run(outbox.sent())
    finally:
        outbox.close()
    # Acknowledged means readable at once: the end offsets already count every record.
    consumer = kafka.consumer(bootstrap)
    try:
        read = kafka.consume_exactly(consumer, [actions], 500, timeout=30)
        letter = kafka.consume_exactly(consumer, [letters], 1, timeout=30)[0]
    finally:
        consumer.close()
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for message in read:
        by_key[message.key()].append(int(message.value()))
    assert sorted(by_key) == [f"c{k}".encode() for k in range(7)]
    assert all(values == sorted(values) for values in by_key.values())
    assert sum(map(len, by_key.values())) == 500
    assert letter.key() is None and letter.value() == b"not json"
    assert letter.headers() == [("lam.reason", b"payload: expected JSON")]
