"""The streaming engine on the real broker: a `lam worker` process, its RocksDB table and its changelog."""

from __future__ import annotations

import os
import time
import uuid

import numpy as np
import orjson
import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

from model.artifact import load
from streams import kafka, topics
from streams.app import CLEAN_STOP, CONSENT_TABLE, STATE_TABLE
from streams.settings import load as load_settings
from tests.conftest import stop_process
from tests.streams_support import (alike, as_delivered, drain, history, received, reference, wait_until_consumed,
                                   without_emitted_at, write_policy)

pytestmark = pytest.mark.integration
PARTITIONS = 4


@pytest.fixture
def world(bootstrap, tiny_model_path, tmp_path):
    """Fresh topics and application id for one test, and the settings a worker gets as LAM_* variables."""
    uid = uuid.uuid4().hex[:8]
    write_policy(tmp_path / "policy.toml")
    env = {"LAM_APP_ID": f"lam-test-{uid}", "LAM_INPUT_TOPIC": f"t-{uid}.touchpoints",
           "LAM_CONSENT_TOPIC": f"t-{uid}.consent", "LAM_ACTION_TOPIC": f"t-{uid}.actions",
           "LAM_DEAD_LETTER_TOPIC": f"t-{uid}.deadletter", "LAM_PARTITIONS": str(PARTITIONS),
           "LAM_MODEL_PATH": str(tiny_model_path), "LAM_POLICY_PATH": str(tmp_path / "policy.toml"),
           "LAM_BATCH_SIZE": "64"}
    settings = load_settings({}, os.environ | env)
    topics.ensure(settings)
    return env, settings


def produce(bootstrap: str, topic: str, records: list[tuple[str, bytes]]) -> None:
    assert kafka.deliver_all(kafka.producer(bootstrap), records, topic) == 0


def latest(messages) -> dict[bytes, object]:
    return {m.key(): m for m in sorted(messages, key=lambda m: m.offset())}


def test_touchpoints_become_the_expected_actions_states_and_dead_letters(bootstrap, world, worker_factory):
    env, s = world
    events = history(customers=40)
    bad = [("c0001", b"garbage"), ("c0002", b'{"v":1,"customer_id":"c0002"}')]
    produce(bootstrap, s.input_topic, [(e.customer_id, e.to_wire()) for e in events] + bad)
    messages = drain(bootstrap, s.input_topic, len(events) + len(bad), settle=0)
    engine, ref_store, ref = reference(s, received(messages))
    assert ref.actions, "the test policy should lead to actions"

    worker_factory(env)
    actions = drain(bootstrap, s.action_topic, len(ref.actions))
    dead = drain(bootstrap, s.dead_letter_topic, len(bad), settle=0)
    wait_until_consumed(bootstrap, s.app_id, s.input_topic, PARTITIONS)
    changelog = drain(bootstrap, f"{s.app_id}-{STATE_TABLE}-changelog", len(ref_store.values))

    assert alike(sorted((without_emitted_at(m.value()) for m in actions), key=lambda a: a["action_id"]),
                 sorted((without_emitted_at(v) for _, v in ref.actions), key=lambda a: a["action_id"]))
    assert all(m.key().decode() == orjson.loads(m.value())["customer_id"] for m in actions)
    assert sorted(dict(m.headers())["lam.reason"].decode() for m in dead) == sorted(r for _, r in ref.dead_letters)
    assert {m.value() for m in dead} == {v for _, v in bad}

    input_partition = {m.key(): m.partition() for m in messages}
    model = load(s.model_path)
    states = latest(changelog)
    assert set(states) == {k.encode() for k in ref_store.values}
    for key, record in states.items():
        assert record.partition() == input_partition[key], "state written to another partition than its input"
        mine = [e for e in events if e.customer_id == key.decode()]
        stored = engine.layout.load([record.value()], model.version, engine._h0, engine._p0)[0]
        np.testing.assert_allclose(stored["hidden"], model.sequence(mine)[0][-1], atol=1e-6)


def test_replaying_the_same_offsets_changes_nothing(bootstrap, world, worker_factory):
    env, s = world
    events = history(customers=30, seed=5)
    produce(bootstrap, s.input_topic, [(e.customer_id, e.to_wire()) for e in events])
    messages = drain(bootstrap, s.input_topic, len(events), settle=0)
    _, ref_store, ref = reference(s, received(messages))
    changelog_topic = f"{s.app_id}-{STATE_TABLE}-changelog"

    first = worker_factory(env)
    wait_until_consumed(bootstrap, s.app_id, s.input_topic, PARTITIONS)
    before = drain(bootstrap, changelog_topic, len(ref_store.values))
    stop_process(first)
    reset = ConsumerGroupTopicPartitions(s.app_id, [TopicPartition(s.input_topic, p, 0) for p in range(PARTITIONS)])
    admin = kafka.admin(bootstrap)  # kept alive: a collected client never completes its futures
    admin.alter_consumer_group_offsets([reset], request_timeout=30)[s.app_id].result(timeout=60)

    worker_factory(env)  # a new state folder: the table is recovered from its changelog first
    wait_until_consumed(bootstrap, s.app_id, s.input_topic, PARTITIONS)
    actions = drain(bootstrap, s.action_topic, len(ref.actions))
    after = drain(bootstrap, changelog_topic, len(before))

    assert len(actions) == len(ref.actions)
    assert len({orjson.loads(m.value())["action_id"] for m in actions}) == len(ref.actions)
    assert len(after) == len(before), "the replay wrote states again"


def test_an_opted_out_customer_gets_no_action_and_loses_its_state(bootstrap, world, worker_factory):
    env, s = world
    records = [(e.customer_id, e.to_wire()) for e in history(customers=30, seed=11)]
    half = len(records) // 2
    _, _, unopposed = reference(s, as_delivered(records, s.input_topic, PARTITIONS))
    first_half = {(m.partition, m.offset) for m in as_delivered(records[:half], s.input_topic, PARTITIONS)}
    later = [a for a in map(orjson.loads, (v for _, v in unopposed.actions))
             if (a["trigger"]["partition"], a["trigger"]["offset"]) not in first_half]
    assert later, "the test needs a customer who would be acted on after the opt-out"
    target = later[0]["customer_id"]

    produce(bootstrap, s.input_topic, records[:half])
    worker_factory(env)
    wait_until_consumed(bootstrap, s.app_id, s.input_topic, PARTITIONS)
    produce(bootstrap, s.consent_topic, [(target, orjson.dumps({"v": 1, "customer_id": target, "status": "opt_out"}))])
    drain(bootstrap, f"{s.app_id}-{CONSENT_TABLE}-changelog", 1, settle=0)
    produce(bootstrap, s.input_topic, records[half:])
    wait_until_consumed(bootstrap, s.app_id, s.input_topic, PARTITIONS)

    actions = [orjson.loads(m.value()) for m in drain(bootstrap, s.action_topic, 1)]
    states = latest(drain(bootstrap, f"{s.app_id}-{STATE_TABLE}-changelog", 1))
    assert [a for a in actions if a["customer_id"] == target
            and (a["trigger"]["partition"], a["trigger"]["offset"]) not in first_half] == []
    assert len(actions) == len(unopposed.actions) - len([a for a in later if a["customer_id"] == target])
    assert states[target.encode()].value() is None, "the opt-out must leave a tombstone"


def committed_offsets(watcher, topic: str) -> list[int]:
    return [max(tp.offset, 0) for tp in watcher.committed([TopicPartition(topic, p) for p in range(PARTITIONS)],
                                                           timeout=10)]


def test_a_worker_stopped_mid_stream_writes_the_states_it_held_and_stops_cleanly(bootstrap, world, worker_factory,
                                                                                 tmp_path):
    """The worker holds changed states in memory for a second and acks their touchpoints after: a stop under load
    must write them, let their offsets be committed and end (it once waited for those acks forever). The delay is
    set short: with the default's, the first commit would come after the whole stream."""
    env, s = world
    events = history(customers=25_000, seed=11)
    produce(bootstrap, s.input_topic, [(e.customer_id, e.to_wire()) for e in events])
    proc = worker_factory({**env, "LAM_STATE_WRITE_DELAY": "1"})
    watcher = kafka.consumer(bootstrap, group_id=s.app_id)
    deadline = time.monotonic() + 120
    while sum(committed_offsets(watcher, s.input_topic)) == 0:
        assert proc.poll() is None and time.monotonic() < deadline, "the worker committed nothing"
        time.sleep(0.1)
    proc.terminate()
    assert proc.wait(60) == 0
    assert (tmp_path / "worker-0" / CLEAN_STOP).exists()
    committed = committed_offsets(watcher, s.input_topic)
    watcher.close()
    assert sum(committed) < len(events), "the stop should come mid-stream"
    messages = drain(bootstrap, s.input_topic, len(events), settle=0)
    applied = [m for m in messages if m.offset() < committed[m.partition()]]
    customers = {m.key() for m in applied}
    states = latest(drain(bootstrap, f"{s.app_id}-{STATE_TABLE}-changelog", len(customers), settle=1))
    engine = reference(s)[0]
    last_offset = {key: engine.layout.load([m.value()], engine.model.version, engine._h0, engine._p0)[0]["last_offset"]
                   for key, m in states.items()}
    # Every committed touchpoint is applied in the state its customer has in the changelog.
    assert all(last_offset[m.key()] >= m.offset() for m in applied)
