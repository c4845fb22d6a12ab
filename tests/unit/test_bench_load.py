"""The latency phase's load: touchpoints encoded ahead, released with the wall clock as their event time."""

import time
from itertools import islice

import orjson

from bench import run
from bench.kafka_run import _prepared, _records


def test_a_prepared_touchpoint_is_released_as_itself_stamped_with_the_wall_clock():
    events = list(islice(run._world(200, 600).events(), 500))
    before = int(time.time() * 1000)
    released = list(_records(_prepared(events), rate=1e9))
    after = int(time.time() * 1000)
    assert [key for key, _ in released] == [e.customer_id for e in events]
    for event, (_, wire) in zip(events, released):
        doc, original = orjson.loads(wire), orjson.loads(event.to_wire())
        assert before <= doc.pop("event_time") <= after
        original.pop("event_time")
        assert doc == original
