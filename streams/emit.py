"""What leaves the worker: next-best-action events (contract in docs/action.md) and dead letters.

An action's id is derived from the customer and the triggering touchpoint's partition and offset, so a
redelivered touchpoint that is processed again yields the same id and campaign systems can drop the duplicate.
A dead letter keeps the original bytes as its value; why it was refused and where it came from travel as headers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson

from streams.decide import Decision, Policy, in_holdout

ACTION_SCHEMA_VERSION = 1
TOP_REASONS = 3


@dataclass(frozen=True, slots=True)
class Trigger:
    topic: str
    partition: int
    offset: int
    event_id: str | None
    event_time_ms: int


def action_id(customer_id: str, partition: int, offset: int) -> str:
    """
    >>> action_id("c1", 3, 42)
    'c1:3:42'
    """
    return f"{customer_id}:{partition}:{offset}"


def reasons(state: np.void, product: int) -> list[dict]:
    """The recent touchpoints that raised this product's probability most, largest first."""
    # Python lists of the ring's few slots: numpy's per-call costs exceeded the work (profiled, one per action).
    deltas = state["ring_delta"][:, product].tolist()
    times = state["ring_time"].tolist()
    top = sorted((i for i, (t, d) in enumerate(zip(times, deltas)) if t and d > 0), key=lambda i: -deltas[i])
    types, channels, offsets = state["ring_type"], state["ring_channel"], state["ring_offset"]
    return [{
        "event_type": types[i].decode(errors="replace"),
        "channel": channels[i].decode(errors="replace"),
        "event_time": times[i],
        "offset": int(offsets[i]),
        "contribution": round(deltas[i], 6),
    } for i in top[:TOP_REASONS]]


def action_event(policy: Policy, decision: Decision, customer_id: str, state: np.void, trigger: Trigger,
                 model_version: str, emitted_at_ms: int) -> bytes:
    spec = policy.actions[decision.action]
    return orjson.dumps({
        "v": ACTION_SCHEMA_VERSION,
        "action_id": action_id(customer_id, trigger.partition, trigger.offset),
        "customer_id": customer_id,
        "action": spec.name,
        "channel": spec.channel,
        "product": spec.product,
        "probability": round(decision.probability, 6),
        "threshold": spec.threshold,
        "expected_value": round(decision.probability * spec.value, 4),
        "control": in_holdout(customer_id, policy.holdout_share),
        "model_version": model_version,
        "trigger": {"topic": trigger.topic, "partition": trigger.partition, "offset": trigger.offset,
                    "event_id": trigger.event_id, "event_time": trigger.event_time_ms},
        "reasons": reasons(state, int(policy.product_index[decision.action])),
        "emitted_at": emitted_at_ms,
        "expires_at": trigger.event_time_ms + policy.ttl_ms,
    })


def dead_letter_headers(reason: str, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    return [("lam.reason", reason.encode()), ("lam.source.topic", topic.encode()),
            ("lam.source.partition", str(partition).encode()), ("lam.source.offset", str(offset).encode())]
