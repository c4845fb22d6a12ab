"""The latency phase's load: touchpoints encoded ahead, released with the wall clock as their event time."""

import time
from itertools import islice

import orjson

from bench import run
from bench.kafka_run import _prepared, _ticks


def test_a_prepared_touchpoint_is_released_as_itself_stamped_with_the_wall_clock():
    events = list(islice(run._world(200, 600).events(), 500))
    before = int(time.time() * 1000)
    released = [record for tick in _ticks(_prepared(events), rate=1e9) for record in tick]
    after = int(time.time() * 1000)
    assert [key for key, _ in released] == [e.customer_id.encode() for e in events]
    for event, (_, wire) in zip(events, released):
        doc, original = orjson.loads(wire), orjson.loads(event.to_wire())
        assert before <= doc.pop("event_time") <= after
        original.pop("event_time")
        assert doc == original


def test_touchpoints_are_released_at_the_rate_in_ticks():
    prepared = _prepared(islice(run._world(500, 3000).events(), 2000))
    started = time.monotonic()
    released, ticks = 0, 0
    for tick in _ticks(prepared, rate=20_000):
        released += len(tick)
        ticks += 1
        assert released <= (time.monotonic() - started) * 20_000 + 1  # never ahead of the rate
    assert released == 2000
    assert 0.099 <= time.monotonic() - started < 1.0
    assert ticks < 500  # many touchpoints a tick, not one each
