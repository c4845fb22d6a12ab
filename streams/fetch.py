"""The input topics' fetcher: librdkafka (confluent-kafka) fetches the worker's touchpoint and consent partitions in
its own threads, outside the interpreter, while the engine computes.

Why (issue 8): aiokafka parses every record in Python on faust's consumer thread, and fetches a partition again only
once faust's delivery loop, which shares the event loop with the engine, has taken its last fetch. At 15,000
touchpoints/s they reached the engine 42-67 ms old (p50) where a plain confluent-kafka consumer saw them 6 ms old,
and the parsing took ~17% of the worker's interpreter time (profiled).

faust and aiokafka still run the consumer group (faust's assignor, standbys, commits of acked offsets, the
changelogs). This fetcher joins no group: it reads the partitions that faust assigned and keeps active, from the
offsets faust's seek after each rebalance finds (`seek`), with librdkafka's `assign`, never `subscribe`.

A partition's next hand-over starts where its previous one ended (`handed_over`). Every change of what is fetched,
or from where, is an `assign` of every fetched partition from those positions, and starts a new `epoch`: librdkafka
drops what it fetched for the previous assignment, and the caller drops what it took before the change. Whatever
the caller drops for any other reason, it must `restart`, or librdkafka's read position would run past it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Set
from concurrent.futures import ThreadPoolExecutor

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message, TopicPartition
from faust.types import TP

from streams import kafka
from streams.worker import Inbound

# A backlog fills it at once (a fetch takes up to 1 MiB per partition); live traffic does not within the wait bound
# (touchpoints take ~25-50 bytes each in lz4 record batches), so there the bound decides when a fetch returns.
FETCH_MIN_BYTES = 256 * 1024
# What librdkafka may hold fetched ahead of the engine: ~55,000 touchpoints of ~150 bytes, over a second of a worker
# at full speed.
QUEUED_KIB = 8 * 1024


class InputFetcher:
    """Fetches the partitions it is told to, from where it is told to; hands messages over `max_messages` at most
    at a time, grouped by partition (`take`, `wait`)."""

    def __init__(self, bootstrap: str, group_id: str, max_wait_ms: int, max_messages: int) -> None:
        self.max_messages = max_messages
        self.epoch = 0
        self._client = kafka.consumer(bootstrap, group_id, **{
            "fetch.wait.max.ms": max_wait_ms, "fetch.min.bytes": FETCH_MIN_BYTES,
            "queued.max.messages.kbytes": QUEUED_KIB, "enable.auto.offset.store": False})
        self._next: dict[TP, int | None] = {}  # where a partition's next hand-over starts; None: its beginning
        self._fetching: frozenset[TP] = frozenset()
        self._tps: dict[tuple[str, int], TP] = {}
        self._waiter = ThreadPoolExecutor(1, thread_name_prefix="lam-fetch")  # waits in C, the interpreter free

    @property
    def fetching(self) -> frozenset[TP]:
        return self._fetching

    def next_offset(self, tp: TP) -> int | None:
        return self._next.get(tp)

    def seek(self, positions: Mapping[TP, int | None]) -> None:
        """Hand partitions over from these offsets on (None: from the partition's beginning)."""
        self._next.update(positions)
        self.restart()

    def reset(self) -> None:
        """Stop fetching, and forget every position: only a seek gives them again."""
        self._next.clear()
        self.fetch(frozenset())

    def fetch(self, tps: Set[TP]) -> None:
        """Fetch exactly those of `tps` whose position is known; a change reassigns (a new epoch)."""
        wanted = frozenset(tp for tp in tps if tp in self._next)
        if wanted != self._fetching:
            self._assign(wanted)

    def restart(self) -> None:
        """Fetch the same partitions again from their positions (a new epoch)."""
        self._assign(self._fetching)

    def _assign(self, tps: frozenset[TP]) -> None:
        self.epoch += 1
        self._fetching = tps
        self._client.assign([TopicPartition(tp.topic, tp.partition, self._start(tp)) for tp in tps])

    def _start(self, tp: TP) -> int:
        offset = self._next[tp]
        return OFFSET_BEGINNING if offset is None else offset

    def handed_over(self, tp: TP, last_offset: int) -> None:
        self._next[tp] = last_offset + 1

    def highwater(self, tp: TP) -> int:
        """The partition's end offset as of librdkafka's last fetch response."""
        return self._client.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), cached=True)[1]

    def take(self) -> list[Message]:
        """What librdkafka has fetched, without waiting."""
        return self._client.consume(self.max_messages, 0)

    async def wait(self, timeout: float) -> list[Message]:
        """What librdkafka has once a message came, or nothing after `timeout` seconds; waits in a thread of its own."""
        return await asyncio.get_running_loop().run_in_executor(self._waiter, self._wait, timeout)

    def _wait(self, timeout: float) -> list[Message]:
        # `consume(n, timeout)` returns only once it has n messages or the timeout has passed; `poll` at the first.
        first = self._client.poll(timeout)
        if first is None:
            return []
        return [first, *self._client.consume(self.max_messages - 1, 0)]

    def group(self, messages: list[Message]) -> tuple[dict[TP, list[Inbound]], list[KafkaError]]:
        """Messages as `Inbound` tuples by partition, in order, and the errors librdkafka reported among them.
        Raises KafkaException for a fatal error."""
        by_tp: dict[TP, list[Inbound]] = {}
        errors: list[KafkaError] = []
        tps = self._tps
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                errors.append(error)
                continue
            topic, partition = message.topic(), message.partition()
            tp = tps.get((topic, partition))
            if tp is None:
                tp = tps[topic, partition] = TP(topic, partition)
            batch = by_tp.get(tp)
            if batch is None:
                batch = by_tp[tp] = []
            batch.append(Inbound(topic, partition, message.offset(), message.key(), message.value(), tp))
        return by_tp, errors

    def close(self) -> None:
        """Close the client once the wait under way (if any) has returned."""
        self._waiter.shutdown(wait=True)
        self._client.close()
