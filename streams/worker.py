"""The hot path: one batch of Kafka messages in, state updates, actions and dead letters out.

    decode -> group by customer -> load states -> skip redeliveries -> step (batched) -> per round: store, decide,
    emit -> save

`Engine.process` is a plain function of the batch and a `StateStore`, so it runs the same under Faust (streams/app.py
adapts a Faust table to StateStore) and in unit tests and benchmarks without a broker.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np

from model.artifact import LoadedModel
from streams.batch import group_by_customer, rounds
from streams.contract import Touchpoint
from streams.decide import Policy, apply_feedback, decide
from streams.decode import Rejected, decode, decode_consent
from streams.emit import Trigger, action_event
from streams.state import StateLayout
from streams.step import apply_round, step_batch


class Inbound(NamedTuple):
    """One consumed message; `context` is what the store needs to write on its partition (under Faust, its topic
    partition). A tuple: the consumer builds one per touchpoint, and a frozen dataclass took 2.6x as long (measured)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    context: Any = None


class StateStore(Protocol):
    def get_many(self, keys: Sequence[str], contexts: Sequence[Any]) -> list[bytes | None]: ...
    def put(self, key: str, value: bytes, context: Any) -> None: ...
    def erase(self, key: str, context: Any) -> None: ...
    def opted_out(self, keys: Sequence[str], contexts: Sequence[Any]) -> list[bool]: ...
    def opt_out(self, key: str, context: Any) -> None: ...


@dataclass(slots=True)
class Outcome:
    actions: list[tuple[str, bytes]] = field(default_factory=list)  # (customer id, action event)
    dead_letters: list[tuple[Inbound, str]] = field(default_factory=list)  # (message, reason)
    counts: Counter = field(default_factory=Counter)
    action_names: Counter = field(default_factory=Counter)
    trigger_times_ms: list[int] = field(default_factory=list)  # event time of each action's trigger
    step_seconds: float = 0.0  # time spent in model steps
    writes: list[tuple[str, bytes, Any]] = field(default_factory=list)  # (customer, state, context) to store


class Engine:
    def __init__(self, model: LoadedModel, policy: Policy, consent_topic: str,
                 purchase_types: frozenset[str] = frozenset({"purchase", "offer_accepted"})) -> None:
        self.model = model
        self.policy = policy
        self.consent_topic = consent_topic
        self.purchase_types = purchase_types
        self.layout = StateLayout.of(model, len(policy.actions))
        self._h0 = model.initial_state(1)[0]
        self._p0 = model.initial_probabilities()

    def process(self, batch: Sequence[Inbound], store: StateStore, now_ms: int) -> Outcome:
        out = Outcome()
        touchpoints: list[tuple[Inbound, Touchpoint]] = []
        for message in batch:
            if message.topic == self.consent_topic:
                self._consent(message, store, out)
                continue
            decoded = decode(message.value, message.topic, message.partition, message.offset)
            if isinstance(decoded, Rejected):
                out.dead_letters.append((message, decoded.reason))
            elif message.key is not None and message.key != decoded.customer_id.encode():
                out.dead_letters.append((message, f"key: expected the customer id {decoded.customer_id!r}; "
                                                  f"got {message.key[:64]!r}"))
            else:
                touchpoints.append((message, decoded))
        out.counts["dead_letters"] += len(out.dead_letters)
        out.counts["decoded"] += len(touchpoints)
        if touchpoints:
            self._apply(touchpoints, store, now_ms, out)
        return out

    def _consent(self, message: Inbound, store: StateStore, out: Outcome) -> None:
        decoded = decode_consent(message.value, message.topic, message.partition, message.offset)
        if isinstance(decoded, Rejected):
            out.dead_letters.append((message, decoded.reason))
        else:
            store.opt_out(decoded, message.context)
            store.erase(decoded, message.context)
            out.counts["opt_outs"] += 1

    def _apply(self, touchpoints: list[tuple[Inbound, Touchpoint]], store: StateStore, now_ms: int,
               out: Outcome) -> None:
        groups = group_by_customer([t.customer_id for _, t in touchpoints])
        customers = list(groups)
        last_msgs = [touchpoints[positions[-1]][0] for positions in groups.values()]
        contexts = [m.context for m in last_msgs]
        stored = store.get_many(customers, contexts)
        blocked = self._opted_out(customers, contexts, stored, store)
        states = self.layout.load(stored, self.model.version, self._h0, self._p0)
        # A redelivered touchpoint (at or below the stored offset) was applied before: skip it. The offsets as
        # Python ints: indexing the structured array per touchpoint costs more than the rest of this loop.
        last_offsets = states["last_offset"].tolist()
        fresh = [[p for p in positions if touchpoints[p][0].offset > last_offsets[c] and not blocked[c]]
                 for c, positions in enumerate(groups.values())]
        out.counts["duplicates_skipped"] += sum(len(g) for g in groups.values()) - sum(map(len, fresh))
        out.counts["opted_out_skipped"] += sum(len(g) for c, g in enumerate(groups.values()) if blocked[c])
        stepping = [c for c, positions in enumerate(fresh) if positions]
        if stepping:
            self._step(touchpoints, fresh, stepping, states, now_ms, out)
        values = self.layout.dump(states)
        out.writes = [(customer, values[c], contexts[c]) for c, customer in enumerate(customers) if fresh[c]]

    def _step(self, touchpoints: list[tuple[Inbound, Touchpoint]], fresh: list[list[int]], stepping: list[int],
              states: np.ndarray, now_ms: int, out: Outcome) -> None:
        """The model steps of the batch at once, then round by round: the states stored, the policy applied."""
        started = time.perf_counter()
        stepped = step_batch(self.model, states, np.array(stepping, dtype=np.int64),
                             [[touchpoints[p][1] for p in fresh[c]] for c in stepping])
        out.step_seconds += time.perf_counter() - started
        for depth, round_ in enumerate(rounds(fresh)):
            rows = np.fromiter((c for c, _ in round_), dtype=np.int64, count=len(round_))
            msgs = [touchpoints[p][0] for _, p in round_]
            events = [touchpoints[p][1] for _, p in round_]
            times = np.fromiter((e.event_time_ms for e in events), dtype=np.int64, count=len(events))
            apply_round(stepped, depth, states, rows, events, times,
                        np.fromiter((m.offset for m in msgs), dtype=np.int64, count=len(msgs)))
            apply_feedback(self.policy, states, rows, [e.event_type for e in events], [e.item for e in events],
                           times, self.purchase_types)
            for decision in decide(self.policy, states, rows, times):
                msg, event = msgs[decision.position], events[decision.position]
                trigger = Trigger(msg.topic, msg.partition, msg.offset, event.event_id, event.event_time_ms)
                out.actions.append((event.customer_id, action_event(
                    self.policy, decision, event.customer_id, states[decision.row], trigger,
                    self.model.version, now_ms)))
                out.action_names[self.policy.actions[decision.action].name] += 1
                out.trigger_times_ms.append(event.event_time_ms)
            out.counts["applied"] += len(round_)

    @staticmethod
    def _opted_out(customers: list[str], contexts: list[Any], stored: list[bytes | None],
                   store: StateStore) -> list[bool]:
        """Which customers opted out. Only those without a stored state are looked up: an opt-out erases the
        customer's state and no state of an opted-out customer is written after it, so a stored state means no
        opt-out. A second multi-get per batch saved (~2 µs per touchpoint over RocksDB, measured)."""
        blocked = [False] * len(customers)
        unknown = [c for c, value in enumerate(stored) if value is None]
        if unknown:
            found = store.opted_out([customers[c] for c in unknown], [contexts[c] for c in unknown])
            for c, opted_out in zip(unknown, found):
                blocked[c] = opted_out
        return blocked

    @staticmethod
    def save(outcome: Outcome, store: StateStore, owned: Callable[[Any], bool] = lambda context: True) -> None:
        """Store the batch's new states. Call it only once the batch's actions are acknowledged by Kafka: a
        state records its touchpoints as applied, so an action lost before it was stored would never be
        emitted again, while one stored twice is dropped downstream by its id. States of partitions this worker
        no longer `owned` (a rebalance moved them meanwhile) are not written: their new owner redoes the work
        from the last committed offset, and a late write here would land after its writes in the changelog."""
        for customer, value, context in outcome.writes:
            if owned(context):
                store.put(customer, value, context)
