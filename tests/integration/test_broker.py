"""The foundation: the real local broker keeps per-key order across several partitions."""

from __future__ import annotations

from collections import defaultdict

import pytest

from streams import kafka

pytestmark = pytest.mark.integration


def test_keyed_messages_come_back_complete_and_in_per_key_order(bootstrap, topic_factory, consumer_factory):
    topic = topic_factory(partitions=6)
    keys = [f"customer-{k}" for k in range(40)]
    records = [(keys[i % len(keys)], f"{i // len(keys)}".encode()) for i in range(2000)]

    failed = kafka.deliver_all(kafka.producer(bootstrap), records, topic)
    got = kafka.consume_exactly(consumer_factory(), [topic], len(records), timeout=60)

    assert failed == 0
    assert len(got) == len(records)
    by_key: dict[str, list[int]] = defaultdict(list)
    partitions_of: dict[str, set[int]] = defaultdict(set)
    for msg in got:
        by_key[msg.key().decode()].append(int(msg.value()))
        partitions_of[msg.key().decode()].add(msg.partition())
    assert sorted(by_key) == sorted(keys)
    assert all(seq == list(range(len(records) // len(keys))) for seq in by_key.values())
    assert all(len(p) == 1 for p in partitions_of.values()), "a key was spread over several partitions"
    assert len({p for ps in partitions_of.values() for p in ps}) > 1, "all keys landed on one partition"


def test_keys_land_on_the_partition_java_and_faust_choose(bootstrap, topic_factory, consumer_factory):
    """murmur2, as the Java client and aiokafka hash keys; confluent-kafka's CRC32 default would differ."""
    from aiokafka.partitioner import DefaultPartitioner

    topic = topic_factory(partitions=12)
    keys = [f"c{k:07d}" for k in range(100)]
    kafka.deliver_all(kafka.producer(bootstrap), [(k, b"x") for k in keys], topic)
    got = kafka.consume_exactly(consumer_factory(), [topic], len(keys))

    assert {m.key().decode(): m.partition() for m in got} == {k: DefaultPartitioner()(k.encode(), list(range(12)), []) for k in keys}
