"""The benchmark's questions to the broker are asked again while it is not ready, then fail in one line."""

import pytest
from confluent_kafka import KafkaError, KafkaException

from bench.kafka_run import _asked_again
from streams.errors import LamError


def _not_coordinator() -> KafkaException:
    return KafkaException(KafkaError(KafkaError.NOT_COORDINATOR, "Broker: Not coordinator"))


def test_a_broker_not_ready_yet_is_asked_again():
    answers = iter([_not_coordinator(), _not_coordinator(), [7, 8]])

    def ask():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert _asked_again(ask, "committed offsets") == [7, 8]


def test_a_broker_that_never_answers_is_a_one_line_error():
    def ask():
        raise _not_coordinator()

    with pytest.raises(LamError) as caught:
        _asked_again(ask, "committed offsets", seconds=0.3)
    message = str(caught.value)
    assert message.startswith("committed offsets: the broker did not answer within 0.3 s")
    assert "Not coordinator" in message and "\n" not in message
