"""`lam smoke`: prove the broker works end to end with a keyed produce/consume round trip."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict

from streams import kafka
from streams.errors import LamError
from streams.settings import Settings


def roundtrip(settings: Settings, messages: int = 1000, partitions: int = 6, keys: int = 50) -> str:
    """Produce `messages` keyed messages to a fresh topic, read them all back, and check per-key order."""
    kafka.require_broker(settings.bootstrap)
    topic = f"lam-smoke-{uuid.uuid4().hex[:8]}"
    kafka.create_topics(settings.bootstrap, {topic: partitions})
    records = [(f"customer-{i % keys}", f"{i % keys}:{i // keys}".encode()) for i in range(messages)]
    started = time.monotonic()
    failed = kafka.deliver_all(kafka.producer(settings.bootstrap), records, topic)
    if failed:
        raise LamError(f"{failed} of {messages} messages were not delivered to {topic}")
    cons = kafka.consumer(settings.bootstrap)
    try:
        got = kafka.consume_exactly(cons, [topic], messages)
    finally:
        cons.close()
    elapsed = time.monotonic() - started
    if len(got) != messages:
        raise LamError(f"read back {len(got)} of {messages} messages from {topic}")
    sequences: dict[bytes, list[int]] = defaultdict(list)
    for msg in got:
        sequences[msg.key()].append(int(msg.value().split(b":")[1]))
    out_of_order = [k for k, seq in sequences.items() if seq != sorted(seq)]
    if out_of_order:
        raise LamError(f"{len(out_of_order)} keys came back out of order from {topic}")
    kafka.delete_topics(settings.bootstrap, [topic])
    return (f"round trip ok: {messages} messages, {len(sequences)} keys, {partitions} partitions, "
            f"per-key order kept, {elapsed:.2f} s on {settings.bootstrap}")
