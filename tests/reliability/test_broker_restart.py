"""The broker stopped and started again while the stream flows: the workers survive, reconnect and finish with
the reference's result. The test runs its own broker (a free port, a home folder of its own sharing the jars), so
the broker others use is never touched."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import pytest

from deploy import broker
from streams.app import STATE_TABLE
from streams.settings import Settings
from tests.conftest import free_port
from tests.reliability.conftest import poll, scaled
from tests.reliability.report import Ledger
from tests.streams_support import (applied_twice, audit_actions, committed_offsets, latest_values, read_topic,
                                   received, reference, simulated, state_differences, wait_for_zero_lag)

pytestmark = pytest.mark.reliability
PARTITIONS = 6


def free_port_pair() -> int:
    """A port whose next port (the controller's) is free too."""
    while True:
        port = free_port()
        if port < 65534 and not broker.port_in_use(port + 1):
            return port


@pytest.fixture
def own_broker(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A broker of this test's own; its jars are links to the session broker's, so Maven is not run again."""
    home = tmp_path_factory.mktemp("broker-home")
    shared = broker.BrokerPaths.of(settings).jars
    (home / "jars").mkdir()
    for jar in shared.iterdir():  # links, not a linked folder: a stale stamp would make ensure_jars empty it
        (home / "jars" / jar.name).symlink_to(jar)
    (home / "jars" / ".pom-sha256").unlink()
    (home / "jars" / ".pom-sha256").write_text((shared / ".pom-sha256").read_text())
    own = dataclasses.replace(settings, home=home, broker_port=free_port_pair(), bootstrap_servers="")
    broker.start(own)
    yield own
    broker.stop(own)


def test_workers_survive_a_broker_restart_mid_stream(own_broker: Settings, cluster_factory, ledger: Ledger):
    cluster = cluster_factory(PARTITIONS, bootstrap_servers=own_broker.bootstrap,
                              LAM_BROKER_PORT=str(own_broker.broker_port))
    s = cluster.settings
    records = [(e.customer_id, e.to_wire()) for e in simulated(customers=scaled(3000), days=30, seed=9)]
    half = len(records) // 2
    for name in "ab":
        cluster.start(name)
    cluster.wait_ready("ab")

    cluster.produce(s.input_topic, records[:half])
    poll(lambda: sum(committed_offsets(cluster.bootstrap, s.app_id, s.input_topic, PARTITIONS)) > 0, 60,
         "the workers to commit progress")
    stopped_at = time.monotonic()
    broker.stop(own_broker)  # a controlled shutdown, as `lam broker stop`
    assert not broker.answers(own_broker.bootstrap, timeout=1.0)
    broker.start(own_broker)
    down_seconds = time.monotonic() - stopped_at
    cluster.assert_alive()
    cluster.produce(s.input_topic, records[half:])
    wait_for_zero_lag(cluster.bootstrap, s.app_id, s.input_topic, PARTITIONS, timeout=180)
    cluster.assert_alive()

    inputs = received(read_topic(cluster.bootstrap, s.input_topic, PARTITIONS))
    assert len(inputs) == len(records)
    engine, ref_store, ref = reference(s, inputs)
    emitted = [m.value() for m in read_topic(cluster.bootstrap, s.action_topic, PARTITIONS)]
    audit = audit_actions(emitted, [v for _, v in ref.actions])
    states = latest_values(read_topic(cluster.bootstrap, f"{s.app_id}-{STATE_TABLE}-changelog", PARTITIONS))
    mismatches = state_differences(engine, states, ref_store.values)

    ledger.add(broker_restarts=1, events=len(records), actions_expected=len(ref.actions),
               actions_emitted=len(emitted), actions_lost=len(audit.missing), actions_duplicated=len(audit.extra),
               actions_differing=len(audit.differing), redelivered_same_id=audit.redelivered,
               states_compared=len(ref_store.values), state_mismatches=len(mismatches),
               events_applied_twice=applied_twice(engine, states, ref_store.values))
    ledger.sizes["broker test: touchpoints"] = len(records)
    ledger.sizes["broker test: seconds the broker was away"] = round(down_seconds, 1)

    assert ref.actions
    assert audit.missing == [] and audit.extra == [] and audit.differing == [], audit
    assert mismatches == [], f"{len(mismatches)} states differ from the reference: {mismatches[:10]}"

