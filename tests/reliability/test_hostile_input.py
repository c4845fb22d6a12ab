"""Hostile input: hypothesis-generated bad payloads mixed into good traffic, twice, into one worker.

Every payload is built bad or good by construction; the property first checks the decoder agrees (so a payload
the decoder misjudges is shrunk to a minimal example), then the whole corpus goes through a real worker: every bad
message must land in the dead-letter topic with the decoder's reason and its source, every good one must be
applied as in the reference, the worker must stay up, and its memory must stay flat from one round to the next.
"""

from __future__ import annotations

import os
import random

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.app import STATE_TABLE
from streams.decode import MAX_ATTRIBUTE_DEPTH, MAX_EVENT_TIME_MS, MAX_PAYLOAD_BYTES, Rejected, decode
from tests.reliability.conftest import Cluster, scaled
from tests.reliability.report import Ledger
from tests.streams_support import (T0, audit_actions, latest_values, read_topic, received, reference, simulated,
                                   state_differences, wait_for_zero_lag)

pytestmark = pytest.mark.reliability
PARTITIONS = 6
EXAMPLES = int(os.environ.get("LAM_RELIABILITY_FUZZ", "150"))
MEMORY_GROWTH_MIB = 48  # allowed RSS growth from the first round to the second

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40)
customers = st.sampled_from([f"f{i:03d}" for i in range(40)])
scalars = st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False,
                                                                                allow_infinity=False) | names
attributes = st.recursive(st.dictionaries(names, scalars, max_size=3),
                          lambda inner: st.dictionaries(names, inner, max_size=2) | st.lists(inner, max_size=2),
                          max_leaves=6).filter(lambda a: isinstance(a, dict) and _depth(a) <= MAX_ATTRIBUTE_DEPTH)


def _depth(node: object) -> int:
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
    return 0 if children is None else 1 + max(map(_depth, children), default=0)


@st.composite
def good_events(draw: st.DrawFn) -> dict:
    """Valid but odd: unicode names up to the limit, huge finite values, ISO times, nested attributes."""
    doc = {"v": 1, "customer_id": draw(customers),
           "event_time": draw(st.integers(T0, T0 + 30 * 86_400_000)),
           "channel": draw(st.sampled_from(["web", "app", "call_centre", "store"]) | names),
           "event_type": draw(st.sampled_from(["compare", "inquiry", "page_view", "purchase"]) | names)}
    if draw(st.booleans()):
        doc["value"] = draw(st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([1e308, -1e308]))
    if draw(st.booleans()):
        doc["attributes"] = draw(attributes)
    if draw(st.booleans()):
        doc["item"] = draw(st.sampled_from(["fiber_1g", "x" * 256]) | names)
    if draw(st.booleans()):
        doc["extra_field"] = draw(scalars)
    return doc


def nested(depth: int) -> dict:
    node: dict = {"leaf": 1}
    for _ in range(depth - 1):
        node = {"n": node}
    return node


WRONG = {  # field -> values of a wrong type or out of range
    "customer_id": st.sampled_from([None, 7, "", "c" * 257, ["c1"], {"id": "c1"}, True]),
    "event_time": st.sampled_from([None, 1.5e12, True, "yesterday", "2025-01-01T00:00", [T0], -1, 0]) |
    st.integers(MAX_EVENT_TIME_MS, 10**18) | st.integers(-10**18, 946_684_799_999),
    "channel": st.sampled_from([None, 1, "", ["web"], "w" * 257]),
    "event_type": st.sampled_from([None, 0.5, "", {"t": 1}]),
    "value": st.sampled_from(["12", True, [1], {"v": 1}]),
    "item": st.sampled_from([3, "", ["fiber_1g"], "i" * 257]),
    "attributes": st.sampled_from(["text", [1, 2], 5]) | st.integers(MAX_ATTRIBUTE_DEPTH + 1, 60).map(nested),
    "v": st.sampled_from([2, "1", 1.0, None, 0]),
    "event_id": st.sampled_from([5, "", ["e"]]),
}


@st.composite
def bad_messages(draw: st.DrawFn) -> tuple[str, bytes]:
    """(key, value) that must be refused."""
    doc = draw(good_events())
    key, wire = doc["customer_id"], orjson.dumps(doc)
    kind = draw(st.sampled_from(["truncated", "binary", "utf8", "oversized", "wrong", "literal", "not_object",
                                 "key", "bignum"]))
    if kind == "truncated":
        return key, wire[:draw(st.integers(1, len(wire) - 1))]
    if kind == "binary":
        return key, draw(st.binary(min_size=1, max_size=300).filter(lambda b: b.strip() not in (b"", b"{}")))
    if kind == "utf8":  # invalid UTF-8 inside a JSON string
        return key, wire.replace(b'"channel":"', b'"channel":"' + draw(st.sampled_from([b"\xff", b"\xc3\x28",
                                                                                        b"\xed\xa0\x80"])), 1)
    if kind == "oversized":
        doc["attributes"] = {"blob": "x" * draw(st.integers(MAX_PAYLOAD_BYTES, 3 * MAX_PAYLOAD_BYTES))}
        return key, orjson.dumps(doc)
    if kind == "wrong":
        field = draw(st.sampled_from(sorted(WRONG)))
        doc[field] = draw(WRONG[field])
        return key, orjson.dumps(doc)
    if kind == "literal":  # NaN, Infinity, numbers beyond float or 64-bit range, as JSON text
        field = draw(st.sampled_from([b"value", b"event_time"]))
        # A 30-digit integer is a finite (if absurd) amount, which the contract accepts; as a time it is refused.
        beyond = [b"123456789012345678901234567890"] if field == b"event_time" else []
        literal = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999", *beyond]))
        return key, wire[:-1] + b',"' + field + b'":' + literal + b"}" if field.decode() not in doc else \
            wire.replace(b'"' + field + b'":', b'"' + field + b'":' + literal + b',"was":', 1)
    if kind == "not_object":
        return key, orjson.dumps(draw(st.lists(scalars, max_size=3) | scalars))
    if kind == "bignum":
        return key, wire.replace(b'"event_time":', b'"event_time":99999999999999999999', 1).replace(
            b'"event_time":99999999999999999999' + str(doc["event_time"]).encode(),
            b'"event_time":99999999999999999999', 1)
    return ("g" + key), wire  # a valid event under another customer's key


def test_bad_input_goes_to_dead_letters_and_good_input_is_applied(cluster_factory, ledger: Ledger):
    good: list[tuple[str, bytes]] = []
    bad: list[tuple[str, bytes]] = []

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
    @given(good_events(), bad_messages())
    def corpus(doc: dict, message: tuple[str, bytes]) -> None:
        wire = orjson.dumps(doc)
        assert not isinstance(decode(wire), Rejected), f"a valid event was refused: {decode(wire)}"
        key, value = message
        decoded = decode(value)
        assert isinstance(decoded, Rejected) or decoded.customer_id != key, f"a bad message was accepted: {value!r}"
        assert not isinstance(decoded, Rejected) or decoded.reason.split(":", 1)[0].isidentifier()
        good.append((doc["customer_id"], wire))
        bad.append(message)

    corpus()
    traffic = [(e.customer_id, e.to_wire()) for e in simulated(customers=scaled(1500), days=30, seed=13)]
    mixed = traffic + good + bad
    random.Random(0).shuffle(mixed)  # per-customer order of the good events does not matter to the property

    cluster: Cluster = cluster_factory(PARTITIONS)
    s = cluster.settings
    cluster.start("w")
    cluster.wait_ready("w")
    memory = {"ready": cluster.rss_mib("w")}
    for round_ in ("after round 1", "after round 2"):
        cluster.produce(s.input_topic, mixed)
        wait_for_zero_lag(cluster.bootstrap, s.app_id, s.input_topic, PARTITIONS, timeout=180)
        cluster.assert_alive()
        memory[round_] = cluster.rss_mib("w")
    assert cluster.http("w", "/livez")[0] == 200

    inputs = received(read_topic(cluster.bootstrap, s.input_topic, PARTITIONS))
    engine, ref_store, ref = reference(s, inputs)
    dead = read_topic(cluster.bootstrap, s.dead_letter_topic, PARTITIONS)
    got = {(int(h["lam.source.partition"]), int(h["lam.source.offset"])): (h["lam.reason"].decode(), m.value())
           for m in dead for h in [dict(m.headers())]}
    want = {(m.partition, m.offset): (reason, m.value) for m, reason in ref.dead_letters}
    bad_positions = {(m.partition, m.offset) for m in inputs if (m.key.decode(), m.value) in set(bad)}
    emitted = [m.value() for m in read_topic(cluster.bootstrap, s.action_topic, PARTITIONS)]
    audit = audit_actions(emitted, [v for _, v in ref.actions])
    states = latest_values(read_topic(cluster.bootstrap, f"{s.app_id}-{STATE_TABLE}-changelog", PARTITIONS))
    mismatches = state_differences(engine, states, ref_store.values)

    ledger.add(events=2 * (len(traffic) + len(good)), bad_inputs=2 * len(bad), dead_letters=len(dead),
               bad_inputs_missed=len(bad_positions ^ set(got)), actions_expected=len(ref.actions),
               actions_emitted=len(emitted), actions_lost=len(audit.missing), actions_duplicated=len(audit.extra),
               actions_differing=len(audit.differing), redelivered_same_id=audit.redelivered,
               states_compared=len(ref_store.values), state_mismatches=len(mismatches))
    ledger.memory_mib.update(memory)
    ledger.sizes["hostile test: hypothesis examples (good + bad pairs)"] = EXAMPLES
    ledger.sizes["hostile test: largest bad payload (bytes)"] = max(len(v) for _, v in bad)

    assert set(got) == bad_positions, "every bad message, and only those, in the dead-letter topic"
    assert got == want, "dead letters carry the original bytes and the decoder's reason"
    assert all(reason for reason, _ in got.values())
    assert audit.clean, audit
    assert mismatches == [], mismatches[:10]
    assert memory["after round 2"] - memory["after round 1"] < MEMORY_GROWTH_MIB, memory
