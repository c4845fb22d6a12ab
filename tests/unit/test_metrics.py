"""Worker metrics and health verdicts, without a broker."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY

from streams import metrics
from streams.health import liveness, readiness
from streams.worker import Inbound, Outcome


@pytest.mark.parametrize("reason, label", [
    ("payload: expected JSON; got 'x'", "payload"),
    ("event_time: expected epoch ms or ISO-8601 with zone; got nothing", "event_time"),
    ("key: expected the customer id 'c1'; got b'c2'", "key"),
    ("Customer 4711 said: no", "other"),  # not a field name: never let free text become a label value
    ("no colon at all but long enough to be something else entirely", "other"),
])
def test_dead_letter_reasons_become_bounded_labels(reason, label):
    assert metrics.reason_label(reason) == label


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_batch_is_counted_by_topic_reason_and_action():
    names = ["lam_messages_consumed_total", "lam_touchpoints_decoded_total", "lam_dead_letters_total",
             "lam_actions_emitted_total", "lam_action_latency_seconds_count", "lam_action_latency_seconds_sum",
             "lam_batch_messages_sum", "lam_touchpoints_skipped_total", "lam_state_reads_total",
             "lam_state_reads_total"]
    labels = [{"topic": "tp"}, {}, {"reason": "payload"}, {"action": "call"}, {}, {}, {}, {"reason": "duplicate"},
              {"source": "cache"}, {"source": "store"}]
    before = [sample(n, **l) for n, l in zip(names, labels)]
    batch = [Inbound("tp", 0, i, b"c1", b"{}") for i in range(4)] + [Inbound("consent", 0, 0, b"c1", b"{}")]
    outcome = Outcome(counts=Counter(decoded=2, duplicates_skipped=1, cache_hits=3, cache_misses=1),
                      action_names=Counter(call=2),
                      trigger_times_ms=[9_000, 10_000])
    outcome.dead_letters = [(batch[2], "payload: expected JSON; got 'x'"), (batch[3], "payload: too big")]

    metrics.record_batch(batch, outcome, seconds=0.02, now_ms=12_000)

    after = [sample(n, **l) for n, l in zip(names, labels)]
    assert [a - b for a, b in zip(after, before)] == [4, 2, 2, 2, 2, 5.0, 5, 1, 3, 1]


def test_assignment_sets_partitions_per_input_topic_and_counts_a_rebalance():
    before = sample("lam_rebalances_total")
    metrics.record_assignment(["in", "consent"], [("in", 0), ("in", 3), ("consent", 0), ("in-changelog", 0)])
    assert sample("lam_rebalances_total") == before + 1
    assert sample("lam_assigned_partitions", topic="in") == 2
    assert sample("lam_assigned_partitions", topic="consent") == 1
    metrics.record_assignment(["in", "consent"], [])
    assert sample("lam_assigned_partitions", topic="in") == 0


def test_every_worker_metric_is_prefixed_and_named_by_convention():
    names = metrics.worker_metric_names()
    assert all(n.startswith("lam_") for n in names)
    assert "lam_dead_letters_total" in names and "lam_action_latency_seconds_bucket" in names
    assert all(name.startswith(("kafka_consumergroup_", "kafka_partition_", "lam_lag_exporter_"))
               for name in metrics.LAG_FAMILIES)


def app(completed: bool = True, rebalancing: bool = False, crashed: bool = False, stopping: bool = False):
    event = SimpleNamespace(is_set=lambda: completed)
    return SimpleNamespace(crashed=crashed, should_stop=stopping, rebalancing=rebalancing,
                           tables=SimpleNamespace(recovery=SimpleNamespace(completed=event)))


@pytest.mark.parametrize("state, ready", [
    ({}, True),
    ({"completed": False}, False),  # no partitions yet, or their tables still recovering
    ({"rebalancing": True}, False),  # a later rebalance: recovering the new assignment
    ({"crashed": True}, False),
])
def test_ready_only_with_partitions_and_recovered_tables(state, ready):
    assert readiness(app(**state))[0] is ready


def test_alive_unless_crashed_or_stopping():
    assert liveness(app(completed=False))[0] is True
    assert liveness(app(crashed=True)) == (False, "crashed")
    assert liveness(app(stopping=True)) == (False, "stopping")
