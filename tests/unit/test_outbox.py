"""The outbox's wait: it returns once nothing is left to acknowledge, and raises on a record not delivered."""

import asyncio

import pytest
from confluent_kafka import KafkaError

from streams.errors import LamError
from streams.outbox import Outbox


class Message:
    def topic(self) -> str:
        return "actions"


class Producer:
    """librdkafka's producer as the outbox uses it: `flush` reports failures through each record's callback and
    returns how many records are still unacknowledged."""

    def __init__(self, remaining: list[int], fail: bool = False) -> None:
        self.remaining, self.fail, self.callbacks, self.flushes = remaining, fail, [], 0

    def produce(self, topic, value, key, headers=None, on_delivery=None) -> None:
        self.callbacks.append(on_delivery)

    def flush(self, timeout: float) -> int:
        self.flushes += 1
        if self.fail:
            for callback in self.callbacks:
                callback(KafkaError(KafkaError._MSG_TIMED_OUT), Message())
        return self.remaining.pop(0)


def test_sent_waits_until_nothing_is_left_unacknowledged():
    producer = Producer(remaining=[2, 1, 0])
    outbox = Outbox(producer)
    outbox.put("actions", [(b"c1", b"{}", []), (b"c2", b"{}", [])])
    asyncio.run(outbox.sent())
    assert producer.flushes == 3
    outbox.close()


def test_a_record_not_delivered_stops_the_batch_with_one_line():
    outbox = Outbox(Producer(remaining=[0], fail=True))
    outbox.put("actions", [(b"c1", b"{}", [])])
    with pytest.raises(LamError) as raised:
        asyncio.run(outbox.sent())
    assert "1 action or dead-letter records not delivered (first: actions: " in str(raised.value)
    assert "\n" not in str(raised.value)
    outbox.close()
