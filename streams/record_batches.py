"""Records to Kafka as one record batch per partition, through the aiokafka producer of a Faust app.

Faust sends each message on its own: a `Topic.send` is a chain of coroutines, sensors and futures before aiokafka
appends it to a batch, and with an action per touchpoint that was a third of a worker's time (profiled). A
micro-batch's records are known at once, so each partition's share is built into one aiokafka `BatchBuilder` and
handed over with `send_batch`, the producer's own batch API. Partitions are chosen by the producer's partitioner,
as `Topic.send` would; the aiokafka producer is the one faust flushes before it commits offsets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import faust

Headers = list[tuple[str, bytes]]  # a list: the C record builder takes no other sequence
Record = tuple[bytes | None, bytes | None, Headers]  # key, value (None: a tombstone), headers


@dataclass(frozen=True, slots=True)
class Delivery:
    """One record batch handed to the producer: `future` resolves to the metadata of its first record."""

    partition: int
    records: int
    future: asyncio.Future


def producer_of(app: faust.App) -> Any:
    """The aiokafka producer under faust's: faust has no batch API of its own."""
    return app.producer._ensure_producer()


async def by_key(app: faust.App, topic: str, records: Iterable[Record]) -> dict[int, list[Record]]:
    """`records` grouped by the partition the producer's partitioner gives their keys."""
    await producer_of(app).partitions_for(topic)  # key_partition reads the topic's partitions from metadata
    grouped: dict[int, list[Record]] = {}
    for record in records:
        grouped.setdefault(app.producer.key_partition(topic, record[0]).partition, []).append(record)
    return grouped


async def send_keyed(app: faust.App, topic: str, records: Iterable[Record]) -> list[Delivery]:
    """Send `records` to the partitions of their keys, in order per partition; the deliveries are returned.
    Most micro-batches have no dead letters and few actions: nothing to send costs nothing."""
    records = list(records)
    return await send(app, topic, await by_key(app, topic, records)) if records else []


async def send(app: faust.App, topic: str, records: Mapping[int, Sequence[Record]]) -> list[Delivery]:
    """Send each partition's records, in order, as one batch (more if they overflow the producer's batch size).

    The deliveries are returned, not awaited."""
    producer = producer_of(app)
    deliveries = []
    for partition, items in records.items():
        builder = producer.create_batch()
        for key, value, headers in items:
            if builder.append(timestamp=None, key=key, value=value, headers=headers) is None:  # full
                deliveries.append(await _submit(producer, builder, topic, partition))
                builder = producer.create_batch()
                builder.append(timestamp=None, key=key, value=value, headers=headers)
        deliveries.append(await _submit(producer, builder, topic, partition))
    return deliveries


async def _submit(producer: Any, builder: Any, topic: str, partition: int) -> Delivery:
    builder.close()  # no other send joins it, so its first offset and record count give all its offsets
    future = await producer.send_batch(builder, topic, partition=partition)
    return Delivery(partition, builder.record_count(), future)
