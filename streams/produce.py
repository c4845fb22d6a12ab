"""`lam produce`: touchpoints into the input topic, keyed by customer id, from a file or the live simulator.

A file (JSON lines or mapped CSV, optionally gzip; see `streams.sources`) is replayed in event-time order, as fast
as possible, at `--rate` events per second, or at `--speedup` times its original pace. The simulator streams a
fresh world's touchpoints the same way. Delivery is acknowledged for every message; any message not delivered
makes the run fail with one line after the rest were flushed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from confluent_kafka import KafkaError
from tqdm import tqdm

from sim.config import WorldConfig
from streams import kafka, sources
from streams.contract import Touchpoint
from streams.errors import LamError
from streams.settings import Settings

_POLL_EVERY = 1_000  # serve delivery callbacks and refresh the progress bar every this many messages
_MIN_SLEEP = 0.002  # seconds; shorter waits are left to accumulate, as sleeping that little is imprecise


@dataclass(frozen=True)
class Plan:
    """What to produce: a file (with its CSV mapping, if any) or the simulator (a WorldConfig), and how fast."""

    file: str | None = None
    mapping: sources.Mapping | None = None
    sort: bool = False
    world: WorldConfig | None = None
    rate: float | None = None
    speedup: float | None = None
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    delivered: int
    failed: int
    seconds: float
    first_error: str


@dataclass(frozen=True, slots=True)
class Produced:
    topic: str
    source: str
    delivered: int
    seconds: float
    read_note: str

    def __str__(self) -> str:
        rate = self.delivered / self.seconds if self.seconds > 0 else 0.0
        return (f"produced {self.delivered:,} touchpoints from {self.source} to {self.topic} in {self.seconds:.1f} s "
                f"({rate:,.0f} events/s); {self.read_note}")


def run(settings: Settings, plan: Plan) -> Produced:
    """Produce the plan's touchpoints to `settings.input_topic`; raise LamError if any was not delivered."""
    for name in ("rate", "speedup", "limit"):
        value = getattr(plan, name)
        if value is not None and value <= 0:
            raise LamError(f"--{name}: expected a positive number; got {value}")
    kafka.require_broker(settings.bootstrap)
    events, total, source, note = _source(plan)
    kafka.create_topics(settings.bootstrap, {settings.input_topic: settings.partitions})
    if total is not None and plan.limit is not None:
        total = min(total, plan.limit)
    done = deliver(settings.bootstrap, settings.input_topic, _paced(islice(events, plan.limit), plan), total)
    if done.failed:
        raise LamError(f"{done.failed:,} of {done.failed + done.delivered:,} touchpoints were not delivered "
                       f"to {settings.input_topic} (first error: {done.first_error})")
    return Produced(settings.input_topic, source, done.delivered, done.seconds, note())


def _source(plan: Plan) -> tuple[Iterable[Touchpoint], int | None, str, Callable[[], str]]:
    """The touchpoints, their count if known, a name for them, and a note on reading them for the summary."""
    if plan.world is not None:
        from sim.world import World

        world = World(plan.world)
        shape = f"{plan.world.customers:,} customers over {plan.world.days:g} days"
        return world.events(), len(world.columns), f"the simulator (seed {plan.world.seed})", lambda: shape
    if plan.file is None:
        raise LamError("produce: give --file FILE or --simulate")
    reader = sources.EventFile(plan.file, plan.mapping)
    if plan.sort:
        ordered = sources.sort_by_time(reader)
        return ordered, len(ordered), plan.file, reader.summary
    return sources.in_time_order(reader, plan.file), None, plan.file, reader.summary


def _paced(events: Iterable[Touchpoint], plan: Plan) -> Iterator[Touchpoint]:
    """Events released at `rate` per second or at `speedup` times their event-time pace; else as they come."""
    if plan.rate is None and plan.speedup is None:
        yield from events
        return
    started = time.monotonic()
    first_ms: int | None = None
    for n, event in enumerate(events):
        if plan.rate is not None:
            due = started + n / plan.rate
        else:
            first_ms = event.event_time_ms if first_ms is None else first_ms
            due = started + (event.event_time_ms - first_ms) / 1000.0 / plan.speedup
        ahead = due - time.monotonic()
        if ahead > _MIN_SLEEP:
            time.sleep(ahead)
        yield event


def deliver(bootstrap: str, topic: str, events: Iterable[Touchpoint], total: int | None = None) -> Delivery:
    """Send each touchpoint keyed by its customer id and wait for every acknowledgement."""
    delivered = failed = 0
    first_error = ""

    def on_delivery(err: KafkaError | None, _msg: Any) -> None:
        nonlocal delivered, failed, first_error
        if err is None:
            delivered += 1
        else:
            failed += 1
            first_error = first_error or err.str()

    producer = kafka.producer(bootstrap)
    bar = tqdm(total=total, unit=" events", file=sys.stderr, mininterval=0.5, smoothing=0.1, dynamic_ncols=True,
               desc=f"-> {topic}")
    started = time.monotonic()
    sent = 0
    try:
        for event in events:
            value, key = event.to_wire(), event.customer_id.encode()
            while True:
                try:
                    producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
                    break
                except BufferError:  # the local queue is full: let acknowledgements drain it
                    producer.poll(0.05)
            sent += 1
            if sent % _POLL_EVERY == 0:
                producer.poll(0)
                bar.update(_POLL_EVERY)
                if failed:
                    bar.set_postfix(failed=failed, refresh=False)
    finally:
        unflushed = producer.flush(60)
        bar.update(sent - bar.n)
        bar.close()
    if unflushed:
        failed += unflushed
        first_error = first_error or f"{unflushed} still queued after 60 s"
    return Delivery(delivered, failed, time.monotonic() - started, first_error)
