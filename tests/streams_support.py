"""Helpers shared by the streaming tests: an in-memory StateStore and touchpoint messages."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streams.contract import Touchpoint
from streams.decide import DAY_MS
from streams.worker import Inbound


class MemoryStore:
    """streams.worker.StateStore over dicts; `partition_of` records where each write would land."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.consent: set[str] = set()
        self.partition_of: dict[str, Any] = {}

    def get_many(self, keys: Sequence[str], contexts: Sequence[Any]) -> list[bytes | None]:
        return [self.values.get(k) for k in keys]

    def put_many(self, items: Sequence[tuple[str, bytes]], context: Any) -> None:
        for key, value in items:
            self.values[key] = value
            self.partition_of[key] = context

    def erase(self, key: str, context: Any) -> None:
        self.values.pop(key, None)

    def opted_out(self, keys: Sequence[str], contexts: Sequence[Any]) -> list[bool]:
        return [k in self.consent for k in keys]

    def opt_out(self, key: str, context: Any) -> None:
        self.consent.add(key)


def inbound(events: Sequence[Touchpoint], topic: str = "in", partitions: int = 4) -> list[Inbound]:
    """Messages as Kafka would deliver them: per-partition offsets counting up, the partition as context."""
    next_offset = [0] * partitions
    out = []
    for e in events:
        p = sum(e.customer_id.encode()) % partitions
        out.append(Inbound(topic, p, next_offset[p], e.customer_id.encode(), e.to_wire(), context=p))
        next_offset[p] += 1
    return out


T0 = 1_760_000_000_000
KINDS = [("web", "product_view"), ("web", "compare"), ("call_centre", "inquiry"), ("store", "store_visit"),
         ("app", "page_view"), ("campaign", "campaign_open")]


def history(customers: int = 30, per_customer: int = 7, seed: int = 3) -> list[Touchpoint]:
    rng = np.random.default_rng(seed)
    events = []
    for c in range(customers):
        t = T0 + int(rng.integers(0, DAY_MS))
        for _ in range(int(rng.integers(1, per_customer + 1))):
            t += int(rng.integers(60_000, 3 * DAY_MS))
            channel, kind = KINDS[int(rng.integers(len(KINDS)))]
            events.append(Touchpoint(f"c{c:04d}", t, channel, kind, item="fiber_1g"))
    return sorted(events, key=lambda e: e.event_time_ms)


def write_policy(path, holdout_share: float = 0.2) -> None:
    """A one-action policy with a threshold where an untrained model's probabilities lie, so actions happen."""
    path.write_text(f"""
version = 1
rearm_margin = 0.0
recent_purchase_days = 0
min_events = 1
action_ttl_hours = 24
holdout_share = {holdout_share}

[[actions]]
name = "call"
product = "fiber_1g"
channel = "phone"
threshold = 0.5
value = 1.0
cooldown_days = 1
""")


def drain(bootstrap: str, topic: str, expected: int, timeout: float = 90.0, settle: float = 3.0) -> list[Any]:
    """All messages of `topic` from the start: wait for `expected` of them, then `settle` seconds for extras."""
    import time

    from streams import kafka

    cons = kafka.consumer(bootstrap)
    try:
        messages = kafka.consume_exactly(cons, [topic], expected, timeout=timeout)
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:
            msg = cons.poll(0.2)
            if msg is not None and not msg.error():
                messages.append(msg)
    finally:
        cons.close()
    return messages


def wait_until_consumed(bootstrap: str, group: str, topic: str, partitions: int, timeout: float = 90.0) -> None:
    """Wait until `group` has committed every partition of `topic` up to its end (lag zero)."""
    import time

    from confluent_kafka import TopicPartition

    from streams import kafka

    cons = kafka.consumer(bootstrap, group_id=group)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = [cons.get_watermark_offsets(tp, timeout=10)[1] for tp in tps]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            committed = [tp.offset for tp in cons.committed(tps, timeout=10)]
            if committed == ends:
                return
            time.sleep(0.5)
        raise AssertionError(f"group {group} did not consume {topic} to its end: {committed} vs {ends}")
    finally:
        cons.close()


# --- Reference runs and comparisons (shared by tests/integration and tests/reliability) -----------------------------

def received(messages: Sequence[Any]) -> list[Inbound]:
    """confluent-kafka messages as the worker receives them (the partition as context)."""
    return [Inbound(m.topic(), m.partition(), m.offset(), m.key(), m.value(), m.partition()) for m in messages]


def as_delivered(records: Sequence[tuple[str, bytes]], topic: str, partitions: int) -> list[Inbound]:
    """Where Kafka will put keyed records produced in this order into an empty topic (murmur2, as faust)."""
    from aiokafka.partitioner import DefaultPartitioner

    partitioner, next_offset, out = DefaultPartitioner(), [0] * partitions, []
    for key, value in records:
        p = partitioner(key.encode(), list(range(partitions)), [])
        out.append(Inbound(topic, p, next_offset[p], key.encode(), value, p))
        next_offset[p] += 1
    return out


def reference(settings: Any, *phases: Sequence[Inbound]) -> tuple[Any, MemoryStore, Any]:
    """What an undisturbed worker must do: the same Engine over the same messages, in per-partition order.

    Each phase is one batch, processed after the previous one was saved: a phase boundary is a point the test
    waited for (say, an opt-out the workers applied only after every earlier touchpoint). Returns the engine,
    the final store and the phases' outcomes merged.
    """
    from model.artifact import load
    from streams.decide import load_policy
    from streams.worker import Engine, Outcome

    model = load(settings.model_path)
    engine = Engine(model, load_policy(settings.policy_path, model.products), settings.consent_topic)
    store, merged = MemoryStore(), Outcome()
    for phase in phases:
        out = engine.process(sorted(phase, key=lambda m: (m.topic, m.partition, m.offset)), store, now_ms=0)
        engine.save(out, store)
        merged.actions += out.actions
        merged.dead_letters += out.dead_letters
        merged.counts.update(out.counts)
        merged.action_names.update(out.action_names)
        merged.trigger_times_ms += out.trigger_times_ms
    return engine, store, merged


def simulated(customers: int, days: float = 30.0, seed: int = 1) -> list[Touchpoint]:
    """Touchpoints of the behaviour simulator (sim.world), in event-time order: about 2 per customer per 30 days."""
    from sim.world import World, WorldConfig

    return list(World(WorldConfig(customers=customers, days=days, seed=seed)).events())


def latest_values(messages: Sequence[Any]) -> dict[str, bytes | None]:
    """The last value of each key of a compacted topic's messages (None: a tombstone)."""
    last: dict[str, tuple[int, bytes | None]] = {}
    for m in messages:
        key = m.key().decode()
        if key not in last or m.offset() > last[key][0]:
            last[key] = (m.offset(), m.value())
    return {key: value for key, (_, value) in last.items()}


def state_differences(engine: Any, actual: dict[str, bytes | None], expected: dict[str, bytes],
                      atol: float = 1e-6) -> list[str]:
    """How stored states differ from the reference's: missing or extra customers, touchpoints applied (`events`),
    last applied offset, and hidden states beyond `atol`. Empty when they agree."""
    present = {k: v for k, v in actual.items() if v is not None}
    problems = [f"{k}: no state, expected one" for k in sorted(expected.keys() - present.keys())]
    problems += [f"{k}: a state, expected none" for k in sorted(present.keys() - expected.keys())]
    keys = sorted(expected.keys() & present.keys())
    if not keys:
        return problems
    model = engine.model
    mine = engine.layout.load([present[k] for k in keys], model.version, engine._h0, engine._p0)
    theirs = engine.layout.load([expected[k] for k in keys], model.version, engine._h0, engine._p0)
    for i, key in enumerate(keys):
        if mine["events"][i] != theirs["events"][i]:
            problems.append(f"{key}: {mine['events'][i]} touchpoints applied, expected {theirs['events'][i]}")
        elif mine["last_offset"][i] != theirs["last_offset"][i]:
            problems.append(f"{key}: last offset {mine['last_offset'][i]}, expected {theirs['last_offset'][i]}")
        elif not np.allclose(mine["hidden"][i], theirs["hidden"][i], rtol=0, atol=atol):
            gap = float(np.max(np.abs(mine["hidden"][i] - theirs["hidden"][i])))
            problems.append(f"{key}: hidden state differs by {gap:.3g}")
    return problems


def applied_twice(engine: Any, actual: dict[str, bytes | None], expected: dict[str, bytes]) -> int:
    """Touchpoints applied more often than in the reference, summed over customers."""
    keys = sorted(k for k in expected.keys() & actual.keys() if actual[k] is not None)
    if not keys:
        return 0
    v = engine.model.version
    mine = engine.layout.load([actual[k] for k in keys], v, engine._h0, engine._p0)["events"].astype(np.int64)
    theirs = engine.layout.load([expected[k] for k in keys], v, engine._h0, engine._p0)["events"].astype(np.int64)
    return int(np.clip(mine - theirs, 0, None).sum())


def without_emitted_at(raw: bytes) -> dict:
    import orjson

    action = orjson.loads(raw)
    action.pop("emitted_at")
    return action


@dataclass(frozen=True, slots=True)
class ActionAudit:
    """Actions on the topic against the reference's, by action id."""

    missing: list[str]  # in the reference, never emitted: lost
    extra: list[str]  # emitted, not in the reference: wrongly emitted
    redelivered: int  # copies beyond the first of an id (at-least-once; consumers drop them by id)
    differing: list[str]  # ids whose copies differ from the reference's action (emitted_at aside)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.extra or self.differing)


def alike(a: Any, b: Any, tolerance: float = 1e-5) -> bool:
    """Equal, but for floats within `tolerance`: a GRU step over a batch of another size may round the last
    float32 digit differently (BLAS picks kernels by shape), so probabilities can differ in their 6th decimal."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) <= tolerance
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(alike(a[k], b[k], tolerance) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(alike(x, y, tolerance) for x, y in zip(a, b))
    return a == b


def audit_actions(emitted: Sequence[bytes], expected: Sequence[bytes]) -> ActionAudit:
    want = {a["action_id"]: a for a in map(without_emitted_at, expected)}
    copies = Counter()
    differing = set()
    for raw in emitted:
        action = without_emitted_at(raw)
        copies[action["action_id"]] += 1
        if action["action_id"] in want and not alike(action, want[action["action_id"]]):
            differing.add(action["action_id"])
    return ActionAudit(missing=sorted(want.keys() - copies.keys()), extra=sorted(copies.keys() - want.keys()),
                       redelivered=sum(copies.values()) - len(copies), differing=sorted(differing))


def end_offsets(bootstrap: str, topic: str, partitions: int) -> list[int]:
    """Each partition's log-end offset."""
    from confluent_kafka import TopicPartition

    from streams import kafka

    cons = kafka.consumer(bootstrap)
    try:
        return [cons.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)]
    finally:
        cons.close()


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> list[int]:
    """The group's committed offset of each partition (0 where it never committed)."""
    from confluent_kafka import TopicPartition

    from streams import kafka

    cons = kafka.consumer(bootstrap, group_id=group)
    try:
        tps = cons.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return [max(tp.offset, 0) for tp in tps]
    finally:
        cons.close()


def wait_for_offsets(bootstrap: str, group: str, topic: str, targets: Sequence[int], timeout: float = 90.0) -> None:
    """Wait until `group` has committed every partition of `topic` at least up to `targets` (a partition with
    target 0, never written, needs no commit)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        committed = committed_offsets(bootstrap, group, topic, len(targets))
        if all(c >= t for c, t in zip(committed, targets)):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"group {group} did not reach {list(targets)} on {topic}: committed {committed}")
        time.sleep(0.3)


def wait_for_zero_lag(bootstrap: str, group: str, topic: str, partitions: int, timeout: float = 90.0) -> None:
    """Wait until `group` has committed every partition of `topic` up to its current end (lag zero)."""
    wait_for_offsets(bootstrap, group, topic, end_offsets(bootstrap, topic, partitions), timeout)


def read_topic(bootstrap: str, topic: str, partitions: int, timeout: float = 90.0) -> list[Any]:
    """Every message of `topic` up to its current end."""
    total = sum(end_offsets(bootstrap, topic, partitions))
    messages = drain(bootstrap, topic, total, timeout=timeout, settle=0)
    assert len(messages) >= total, f"read {len(messages)} of the {total} messages of {topic}"
    return messages
