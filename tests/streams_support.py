"""Helpers shared by the streaming tests: an in-memory StateStore and touchpoint messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from streams.contract import Touchpoint
from streams.decide import DAY_MS
from streams.worker import Inbound


class MemoryStore:
    """streams.worker.StateStore over dicts; `partition_of` records where each write would land."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.consent: set[str] = set()
        self.partition_of: dict[str, Any] = {}

    def get_many(self, keys: Sequence[str], contexts: Sequence[Any]) -> list[bytes | None]:
        return [self.values.get(k) for k in keys]

    def put(self, key: str, value: bytes, context: Any) -> None:
        self.values[key] = value
        self.partition_of[key] = context

    def erase(self, key: str, context: Any) -> None:
        self.values.pop(key, None)

    def opted_out(self, keys: Sequence[str], contexts: Sequence[Any]) -> list[bool]:
        return [k in self.consent for k in keys]

    def opt_out(self, key: str, context: Any) -> None:
        self.consent.add(key)


def inbound(events: Sequence[Touchpoint], topic: str = "in", partitions: int = 4) -> list[Inbound]:
    """Messages as Kafka would deliver them: per-partition offsets counting up, the partition as context."""
    next_offset = [0] * partitions
    out = []
    for e in events:
        p = sum(e.customer_id.encode()) % partitions
        out.append(Inbound(topic, p, next_offset[p], e.customer_id.encode(), e.to_wire(), context=p))
        next_offset[p] += 1
    return out


T0 = 1_760_000_000_000
KINDS = [("web", "product_view"), ("web", "compare"), ("call_centre", "inquiry"), ("store", "store_visit"),
         ("app", "page_view"), ("campaign", "campaign_open")]


def history(customers: int = 30, per_customer: int = 7, seed: int = 3) -> list[Touchpoint]:
    rng = np.random.default_rng(seed)
    events = []
    for c in range(customers):
        t = T0 + int(rng.integers(0, DAY_MS))
        for _ in range(int(rng.integers(1, per_customer + 1))):
            t += int(rng.integers(60_000, 3 * DAY_MS))
            channel, kind = KINDS[int(rng.integers(len(KINDS)))]
            events.append(Touchpoint(f"c{c:04d}", t, channel, kind, item="fiber_1g"))
    return sorted(events, key=lambda e: e.event_time_ms)


def write_policy(path, holdout_share: float = 0.2) -> None:
    """A one-action policy with a threshold where an untrained model's probabilities lie, so actions happen."""
    path.write_text(f"""
version = 1
rearm_margin = 0.0
recent_purchase_days = 0
min_events = 1
action_ttl_hours = 24
holdout_share = {holdout_share}

[[actions]]
name = "call"
product = "fiber_1g"
channel = "phone"
threshold = 0.5
value = 1.0
cooldown_days = 1
""")


def drain(bootstrap: str, topic: str, expected: int, timeout: float = 90.0, settle: float = 3.0) -> list[Any]:
    """All messages of `topic` from the start: wait for `expected` of them, then `settle` seconds for extras."""
    import time

    from streams import kafka

    cons = kafka.consumer(bootstrap)
    try:
        messages = kafka.consume_exactly(cons, [topic], expected, timeout=timeout)
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:
            msg = cons.poll(0.2)
            if msg is not None and not msg.error():
                messages.append(msg)
    finally:
        cons.close()
    return messages


def wait_until_consumed(bootstrap: str, group: str, topic: str, partitions: int, timeout: float = 90.0) -> None:
    """Wait until `group` has committed every partition of `topic` up to its end (lag zero)."""
    import time

    from confluent_kafka import TopicPartition

    from streams import kafka

    cons = kafka.consumer(bootstrap, group_id=group)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = [cons.get_watermark_offsets(tp, timeout=10)[1] for tp in tps]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            committed = [tp.offset for tp in cons.committed(tps, timeout=10)]
            if committed == ends:
                return
            time.sleep(0.5)
        raise AssertionError(f"group {group} did not consume {topic} to its end: {committed} vs {ends}")
    finally:
        cons.close()
