"""Standby replicas: a worker taking over a SIGKILLed worker's partitions is ready sooner with them than without.

The state table is prefilled (its changelog written directly, before any worker starts) so that recovering a
partition from the changelog takes measurable time. Two workers share the partitions; one is killed and the
survivor's takeover is timed, once with `standby_replicas=0` and once with 1.
"""

from __future__ import annotations

import time

import pytest

from streams import kafka
from streams.app import STATE_TABLE
from tests.reliability.conftest import SESSION_TIMEOUT_S, Cluster, poll, scaled
from tests.reliability.report import Ledger

pytestmark = pytest.mark.reliability
PARTITIONS = 12
ASSIGNED = "lam_assigned_partitions"
ENTRIES = "lam_state_entries"


def prefill(cluster: Cluster, customers: int) -> None:
    """`customers` fresh states in the state changelog, each on its key's partition (murmur2, as faust)."""
    from model.artifact import load
    from streams.decide import load_policy
    from streams.state import StateLayout

    s = cluster.settings
    model = load(s.model_path)
    layout = StateLayout.of(model, len(load_policy(s.policy_path, model.products).actions))
    value = layout.dump(layout.fresh(1, model.version, model.initial_state(1)[0], model.initial_probabilities()))[0]
    changelog = f"{s.app_id}-{STATE_TABLE}-changelog"
    kafka.create_topics(cluster.bootstrap, {changelog: PARTITIONS}, {"cleanup.policy": "compact"})
    cluster.produce(changelog, [(f"s{i:08d}", value) for i in range(customers)])


def entries(cluster: Cluster, name: str) -> float:
    return cluster.metric(name, ENTRIES, table=STATE_TABLE) or 0.0


def takeover(cluster_factory, standbys: int, customers: int) -> dict[str, float]:
    cluster = cluster_factory(PARTITIONS, LAM_STANDBY_REPLICAS=str(standbys))
    prefill(cluster, customers)
    for name in "ab":
        cluster.start(name)
    input_topic = cluster.settings.input_topic
    poll(lambda: all(cluster.ready(n) and cluster.metric(n, ASSIGNED, topic=input_topic) == PARTITIONS / 2
                     for n in "ab"), 300, "both workers to own half the partitions and be ready", every=0.5)
    if standbys:  # the survivor-to-be must hold the whole table: its active half and the other half as standby
        poll(lambda: entries(cluster, "b") >= 0.95 * customers, 180, "the standby partitions to catch up", every=0.5)
    held_before = entries(cluster, "b")

    killed = cluster.kill("a")
    noticed = None
    while True:  # polled tightly: the interval bounds the measurement's resolution
        owned = cluster.metric("b", ASSIGNED, topic=input_topic)
        ready = cluster.ready("b")
        now = time.monotonic()
        if noticed is None and (owned == PARTITIONS or not ready):
            noticed = now  # the group saw the death: a rebalance began
        if noticed is not None and owned == PARTITIONS and ready:
            break
        assert now - killed < 180, "the survivor did not take over within 180 s"
        time.sleep(0.05)
    cluster.assert_alive()
    assert entries(cluster, "b") >= 0.95 * customers, "the survivor should hold every customer's state"
    cluster.close()
    return {"to_ready": now - killed, "recovery": now - noticed, "entries": float(customers),
            "held_before_kill": held_before}


def test_standby_replicas_make_a_takeover_ready_sooner(cluster_factory, ledger: Ledger):
    customers = scaled(60_000)
    without = takeover(cluster_factory, standbys=0, customers=customers)
    with_standby = takeover(cluster_factory, standbys=1, customers=customers)
    ledger.takeover_seconds.update({"0": without, "1": with_standby})
    ledger.add(kills=2, rebalances=2)
    ledger.sizes["standby test: prefilled customer states"] = customers

    assert without["to_ready"] >= SESSION_TIMEOUT_S * 0.5, "the takeover cannot precede the session timeout"
    assert with_standby["recovery"] < without["recovery"], (with_standby, without)
    assert with_standby["to_ready"] < without["to_ready"], (with_standby, without)
