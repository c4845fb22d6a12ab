"""confluent-kafka clients configured the one way the project needs: keys partitioned as Java and faust do.

Producers set `partitioner=murmur2_random` because confluent-kafka's default (CRC32) would put a customer's
touchpoints on another partition than the one faust's aiokafka producer writes its changelog to.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streams.errors import LamError

_quiet = logging.getLogger("lam.librdkafka")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


def _base(bootstrap: str) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, "logger": _quiet}


def admin(bootstrap: str, **extra: Any) -> AdminClient:
    return AdminClient(_base(bootstrap) | extra)


def producer(bootstrap: str, **extra: Any) -> Producer:
    config = _base(bootstrap) | {
        "partitioner": "murmur2_random",
        "enable.idempotence": True,
        "linger.ms": 20,
        "compression.type": "lz4",
    } | extra
    return Producer(config)


def consumer(bootstrap: str, group_id: str | None = None, **extra: Any) -> Consumer:
    config = _base(bootstrap) | {
        "group.id": group_id or f"lam-{uuid.uuid4().hex[:12]}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    } | extra
    return Consumer(config)


def require_broker(bootstrap: str, timeout: float = 5.0) -> None:
    """Fail with one line, not a librdkafka retry loop, when no broker answers."""
    try:
        admin(bootstrap).list_topics(timeout=timeout)
    except KafkaException:
        raise LamError(f"no Kafka broker answers on {bootstrap}: start one with `lam broker start`") from None


def create_topics(bootstrap: str, partitions: Mapping[str, int], config: Mapping[str, str] | None = None) -> list[str]:
    """Create the topics that don't exist yet; returns those created. An existing topic is left as it is."""
    client = admin(bootstrap)
    existing = set(client.list_topics(timeout=10).topics)
    wanted = [NewTopic(name, num_partitions=n, replication_factor=1, config=dict(config or {}))
              for name, n in partitions.items() if name not in existing]
    created = []
    for name, future in (client.create_topics(wanted) if wanted else {}).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise LamError(f"could not create topic {name}: {exc.args[0].str()}") from None
    return created


def send(prod: Producer, topic: str, key: bytes, value: bytes, **options: Any) -> None:
    """Produce one record; while the local queue is full, let deliveries drain first."""
    while True:
        try:
            prod.produce(topic, value=value, key=key, **options)
            return
        except BufferError:
            prod.poll(0.1)


def deliver_all(prod: Producer, records: Iterable[tuple[str, bytes]], topic: str) -> int:
    """Produce keyed records and wait for every acknowledgement; returns how many failed."""
    failures = 0

    def on_delivery(err: KafkaError | None, _msg: Any) -> None:
        nonlocal failures
        if err is not None:
            failures += 1

    for key, value in records:
        send(prod, topic, key.encode(), value, on_delivery=on_delivery)
        prod.poll(0)
    remaining = prod.flush(60)
    return failures + remaining


def consume_exactly(cons: Consumer, topics: list[str], count: int, timeout: float = 60.0) -> list[Any]:
    """Read `count` messages from the start of `topics`, or fail after `timeout` seconds."""
    cons.subscribe(topics)
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(messages) < count and time.monotonic() < deadline:
        msg = cons.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                continue
            raise LamError(f"consume failed: {msg.error().str()}")
        messages.append(msg)
    return messages


def delete_topics(bootstrap: str, names: list[str], timeout: float = 30.0) -> None:
    """Delete topics and wait for it: the client must outlive its futures, or the request is never sent."""
    client = admin(bootstrap)
    for future in client.delete_topics(names, operation_timeout=timeout).values():
        try:
            future.result(timeout=timeout)
        except KafkaException:
            pass  # already gone
