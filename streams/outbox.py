"""What a batch sends before its states are saved: its actions and dead letters, through a librdkafka producer of
the worker's own.

Why not faust's producer (issue 8): aiokafka keeps at most one produce request in flight per broker, and a batch's
state changelog records (up to 512 KiB a partition) went through it too, so a batch's few actions waited behind
the previous batch's changelog request: 4-21 ms a batch (means over 3 s) at 16,000 touchpoints/s, while the engine
had nothing else to do. librdkafka sends from its own threads, several requests in flight, and reports only
failures back to Python.

The order of the hot path is unchanged: a batch's states are saved only once Kafka has acknowledged every action
and dead letter it sent (`sent`). A record that cannot be delivered (librdkafka retries until its
`message.timeout.ms`) makes `sent` raise, and the worker stops rather than save states whose actions are lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import KafkaError, Producer

from streams import kafka
from streams.errors import LamError
from streams.record_batches import Record

FLUSH_SECONDS = 1.0  # how long one wait for acknowledgements lasts before it looks at failures again


class Outbox:
    """Records handed to `producer` by `put`; `sent` returns once Kafka has acknowledged all of them."""

    def __init__(self, producer: Producer) -> None:
        self._producer = producer
        self._failures: list[str] = []
        self._waiter = ThreadPoolExecutor(1, thread_name_prefix="lam-send")  # waits in C, the interpreter free

    @classmethod
    def connect(cls, bootstrap: str) -> Outbox:
        # No linger: a batch's records are put at once and then waited for.
        return cls(kafka.producer(bootstrap, **{"linger.ms": 0, "delivery.report.only.error": True}))

    def put(self, topic: str, records: Iterable[Record]) -> None:
        for key, value, headers in records:
            kafka.send(self._producer, topic, key, value, headers=headers or None, on_delivery=self._failed)

    def _failed(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self._failures.append(f"{msg.topic()}: {err.str()}")

    async def sent(self) -> None:
        """Wait until every record put so far is acknowledged; raise if one could not be delivered."""
        loop = asyncio.get_running_loop()
        while True:
            remaining = await loop.run_in_executor(self._waiter, self._producer.flush, FLUSH_SECONDS)
            if self._failures:
                raise LamError(f"{len(self._failures)} action or dead-letter records not delivered "
                               f"(first: {self._failures[0]}); stopping before their states are saved")
            if not remaining:
                return

    def close(self) -> None:
        self._waiter.shutdown(wait=False)
