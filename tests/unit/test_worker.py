"""The hot path without a broker: parity with the offline model, redelivery, batching, consent, bad input."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from model.artifact import load
from streams.decide import DAY_MS, ActionSpec, Policy
from streams.worker import Engine, Inbound
from tests.streams_support import MemoryStore, history, inbound


@pytest.fixture(scope="module")
def model(tiny_model_path):
    return load(tiny_model_path)


@pytest.fixture(scope="module")
def policy(model):
    # Thresholds at the untrained model's typical probabilities, so that some customers cross them.
    spec = ActionSpec("call", "fiber_1g", "phone", threshold=0.5, value=1.0, cooldown_ms=DAY_MS)
    return Policy((spec,), np.array([model.products.index("fiber_1g")]), 0.0, 0, 1, DAY_MS, 0.2, {})


def run(model, policy, messages, batch_size):
    engine, store, actions = Engine(model, policy, consent_topic="consent"), MemoryStore(), []
    for i in range(0, len(messages), batch_size):
        out = engine.process(messages[i:i + batch_size], store, now_ms=0)
        engine.save(out, store)
        actions += [orjson.loads(a) for _, a in out.actions]
    return engine, store, actions


def test_streamed_states_equal_the_offline_pass(model, policy):
    events = history()
    engine, store, _ = run(model, policy, inbound(events), batch_size=64)
    for customer in {e.customer_id for e in events}:
        mine = [e for e in events if e.customer_id == customer]
        states, probs = model.sequence(mine)
        stored = engine.layout.load([store.values[customer]], model.version, engine._h0, engine._p0)[0]
        np.testing.assert_allclose(stored["hidden"], states[-1], atol=1e-6)
        np.testing.assert_allclose(stored["probs"], probs[-1], atol=1e-6)
        assert stored["events"] == len(mine)


def test_batch_size_changes_nothing(model, policy):
    messages = inbound(history())
    engine, one_store, one_actions = run(model, policy, messages, batch_size=1)
    _, big_store, big_actions = run(model, policy, messages, batch_size=1000)
    assert one_actions, "the test policy should produce actions"
    assert sorted(a["action_id"] for a in one_actions) == sorted(a["action_id"] for a in big_actions)
    assert one_store.values.keys() == big_store.values.keys()
    keys = sorted(one_store.values)
    one, big = (engine.layout.load([s.values[k] for k in keys], model.version, engine._h0, engine._p0)
                for s in (one_store, big_store))
    np.testing.assert_allclose(one["hidden"], big["hidden"], atol=1e-6)
    assert (one["last_offset"] == big["last_offset"]).all() and (one["armed"] == big["armed"]).all()


def test_a_small_cache_with_a_long_write_delay_changes_nothing(model, policy):
    messages = inbound(history())
    _, plain_store, plain_actions = run(model, policy, messages, batch_size=20)
    engine, store, actions = Engine(model, policy, "consent", cached_states=24, write_delay=5.0), MemoryStore(), []
    for i in range(0, len(messages), 20):
        out = engine.process(messages[i:i + 20], store, now_ms=0)
        engine.save(out, store, now=i / 20)
        actions += [orjson.loads(a) for _, a in out.actions]
        assert out.counts["cache_hits"] + out.counts["cache_misses"] == len({m.key for m in messages[i:i + 20]})
    assert engine.written_before() <= engine.epoch - 4, "the last five seconds' batches are not written yet"
    assert store.values != plain_store.values
    engine.write_all(store)
    assert actions == plain_actions
    assert store.values == plain_store.values


def test_redelivered_messages_change_nothing_and_emit_nothing(model, policy):
    messages = inbound(history())
    engine, store, actions = run(model, policy, messages, batch_size=50)
    before = dict(store.values)
    again = engine.process(messages, store, now_ms=0)
    engine.save(again, store)
    assert again.customers == []
    assert actions and again.actions == []
    assert again.counts["duplicates_skipped"] == len(messages)
    assert store.values == before


def test_every_action_is_triggered_by_a_touchpoint_of_its_customer(model, policy):
    messages = inbound(history())
    _, _, actions = run(model, policy, messages, batch_size=100)
    customer_at = {(m.partition, m.offset): m.key.decode() for m in messages}
    assert len({a["customer_id"] for a in actions}) > 1
    for action in actions:
        assert customer_at[action["trigger"]["partition"], action["trigger"]["offset"]] == action["customer_id"]


def test_actions_carry_every_field(model, policy):
    _, _, actions = run(model, policy, inbound(history()), batch_size=100)
    action = actions[0]
    customer, partition, offset = action["action_id"].split(":")
    assert customer == action["customer_id"]
    assert (int(partition), int(offset)) == (action["trigger"]["partition"], action["trigger"]["offset"])
    assert action["action"] == "call" and action["channel"] == "phone" and action["product"] == "fiber_1g"
    assert action["probability"] >= action["threshold"] == 0.5
    assert action["model_version"] == model.version
    assert action["expires_at"] == action["trigger"]["event_time"] + DAY_MS
    assert all(r["contribution"] > 0 for r in action["reasons"])


def test_opted_out_customers_get_no_action_and_lose_their_state(model, policy):
    events = history()
    _, _, actions = run(model, policy, inbound(events), batch_size=100)
    target = actions[0]["customer_id"]
    consent = Inbound("consent", 0, 0, target.encode(),
                      orjson.dumps({"v": 1, "customer_id": target, "status": "opt_out"}), context=0)
    engine, store = Engine(model, policy, consent_topic="consent"), MemoryStore()
    store.values[target] = b"old state"
    engine.process([consent], store, now_ms=0)
    out = engine.process(inbound(events), store, now_ms=0)
    engine.save(out, store)
    assert target not in store.values
    assert all(orjson.loads(a)["customer_id"] != target for _, a in out.actions)
    assert out.counts["opted_out_skipped"] == sum(e.customer_id == target for e in events)


def test_bad_messages_become_dead_letters_and_the_rest_goes_on(model, policy):
    good = inbound(history(customers=5))
    bad = [Inbound("in", 0, 10_000, b"c1", b"{not json", 0),
           Inbound("in", 0, 10_001, b"c1", orjson.dumps({"v": 1, "customer_id": "c1"}), 0),
           Inbound("in", 0, 10_002, b"someone-else", good[0].value, 0)]
    engine, store = Engine(model, policy, consent_topic="consent"), MemoryStore()
    out = engine.process(bad[:2] + good + bad[2:], store, now_ms=0)
    assert [m.offset for m, _ in out.dead_letters] == [10_000, 10_001, 10_002]
    assert all(reason for _, reason in out.dead_letters)
    assert "key" in out.dead_letters[2][1]
    assert out.counts["applied"] == len(good)


def test_consent_is_looked_up_only_for_customers_without_a_stored_state(model, policy):
    events = history(customers=6)
    messages = inbound(events)
    seen = {"c0000", "c0001", "c0002"}
    engine, store = Engine(model, policy, consent_topic="consent"), MemoryStore()
    out = engine.process([m for m, e in zip(messages, events) if e.customer_id in seen], store, now_ms=0)
    engine.save(out, store)
    asked: list[str] = []
    opted_out = store.opted_out
    store.opted_out = lambda keys, contexts: asked.extend(keys) or opted_out(keys, contexts)
    engine.process(messages, store, now_ms=0)
    assert set(store.values) == seen
    assert sorted(asked) == ["c0003", "c0004", "c0005"]
