"""Workers killed, restarted, added and removed while a stream flows: nothing lost, nothing applied twice.

Three `lam worker` processes share 12 partitions. The simulated stream is produced in six chunks with a
disturbance between them; opt-outs arrive before the stream and mid-stream. The outcome is compared with the
undisturbed reference run over the messages as they landed on the topics.
"""

from __future__ import annotations

import orjson
import pytest

from streams.app import STATE_TABLE
from tests.reliability.conftest import Cluster, opt_outs, poll, scaled
from tests.reliability.report import Ledger
from tests.streams_support import (audit_actions, applied_twice, committed_offsets, end_offsets, latest_values,
                                   read_topic, received, reference, simulated, state_differences,
                                   wait_for_zero_lag)

pytestmark = pytest.mark.reliability
PARTITIONS = 12
CHUNKS = 6


def wait_consumed(cluster: Cluster, topic: str, timeout: float = 150.0) -> list[int]:
    """Wait for lag zero on `topic`; returns the end offsets reached."""
    s = cluster.settings
    ends = end_offsets(cluster.bootstrap, topic, s.partitions)
    wait_for_zero_lag(cluster.bootstrap, s.app_id, topic, s.partitions, timeout)
    return ends


def kill_mid_stream(cluster: Cluster, name: str, since: list[int]) -> int:
    """SIGKILL `name` once the group has committed progress past `since`; returns the lag left at the kill."""
    s = cluster.settings

    def committed() -> list[int] | None:
        now = committed_offsets(cluster.bootstrap, s.app_id, s.input_topic, s.partitions)
        return now if sum(now) > sum(since) else None

    progress = poll(committed, 60, "the workers to commit progress on the new chunk")
    cluster.kill(name)
    return sum(end_offsets(cluster.bootstrap, s.input_topic, s.partitions)) - sum(progress)


def test_kills_rebalances_and_opt_outs_lose_nothing_and_apply_nothing_twice(cluster_factory, ledger: Ledger):
    cluster = cluster_factory(PARTITIONS)
    s = cluster.settings
    records = [(e.customer_id, e.to_wire()) for e in simulated(customers=scaled(6000), days=30, seed=5)]
    size = -(-len(records) // CHUNKS)
    chunks = [records[i:i + size] for i in range(0, len(records), size)]
    customers = sorted({c for c, _ in records})
    first_wave = customers[::50]  # opted out before their first touchpoint
    early = {c for chunk in chunks[:4] for c, _ in chunk}
    late = {c for chunk in chunks[4:] for c, _ in chunk}
    second_wave = sorted((early & late) - set(first_wave))[::25]  # opted out with a state, touchpoints to come
    assert first_wave and second_wave

    for name in "abc":
        cluster.start(name)
    cluster.wait_ready("abc")
    cluster.produce(s.consent_topic, opt_outs(first_wave))
    wait_consumed(cluster, s.consent_topic)

    cluster.produce(s.input_topic, chunks[0] + chunks[1])
    lag_at_kills = [kill_mid_stream(cluster, "b", since=[0] * PARTITIONS)]
    cluster.produce(s.input_topic, chunks[2])  # while b is dead and its partitions still assigned to it
    cluster.start("b")  # on its old RocksDB folder, written up to the SIGKILL
    cluster.start("d")
    cluster.wait_ready("abcd")
    cluster.produce(s.input_topic, chunks[3])
    boundary = wait_consumed(cluster, s.input_topic)

    cluster.produce(s.consent_topic, opt_outs(second_wave))
    wait_consumed(cluster, s.consent_topic)
    cluster.produce(s.input_topic, chunks[4])
    lag_at_kills.append(kill_mid_stream(cluster, "c", since=boundary))
    cluster.stop("a")
    cluster.produce(s.input_topic, chunks[5])
    cluster.start("c")
    wait_consumed(cluster, s.input_topic, timeout=240)  # every partition's lag back to zero
    wait_consumed(cluster, s.consent_topic)
    cluster.assert_alive()

    inputs = received(read_topic(cluster.bootstrap, s.input_topic, PARTITIONS))
    consents = received(read_topic(cluster.bootstrap, s.consent_topic, PARTITIONS))
    assert len(inputs) == len(records)
    wave = [[m for m in consents if m.key.decode() in set(group)] for group in (first_wave, second_wave)]
    before = [m for m in inputs if m.offset < boundary[m.partition]]
    after = [m for m in inputs if m.offset >= boundary[m.partition]]
    engine, ref_store, ref = reference(s, wave[0], before, wave[1], after)
    _, _, unopposed = reference(s, wave[0], before, after)
    assert ref.actions, "the test policy should lead to actions"
    assert len(unopposed.actions) > len(ref.actions), "the mid-stream opt-outs should prevent some actions"

    emitted = [m.value() for m in read_topic(cluster.bootstrap, s.action_topic, PARTITIONS)]
    audit = audit_actions(emitted, [v for _, v in ref.actions])
    actions = [orjson.loads(v) for v in emitted]
    after_opt_out = [a["action_id"] for a in actions if a["customer_id"] in set(first_wave) or (
        a["customer_id"] in set(second_wave) and a["trigger"]["offset"] >= boundary[a["trigger"]["partition"]])]
    states = latest_values(read_topic(cluster.bootstrap, f"{s.app_id}-{STATE_TABLE}-changelog", PARTITIONS))
    mismatches = state_differences(engine, states, ref_store.values)
    twice = applied_twice(engine, states, ref_store.values)

    ledger.add(kills=2, graceful_stops=1, rebalances=6, events=len(records), opt_outs=len(consents),
               actions_expected=len(ref.actions), actions_emitted=len(emitted), actions_lost=len(audit.missing),
               actions_duplicated=len(audit.extra), actions_differing=len(audit.differing),
               redelivered_same_id=audit.redelivered, actions_to_opted_out=len(after_opt_out),
               states_compared=len(ref_store.values), state_mismatches=len(mismatches), events_applied_twice=twice)
    ledger.sizes.update({"crash test: touchpoints": len(records), "crash test: customers": len(customers),
                         "crash test: lag at the two kills": ", ".join(map(str, lag_at_kills))})

    lost_customers = {i.split(":")[0] for i in audit.missing}
    assert after_opt_out == [], "actions for customers after their opt-out"
    assert audit.missing == [], (f"{len(audit.missing)} actions lost, e.g. {audit.missing[:5]}; their customers' "
                                 f"states: {[m for m in mismatches if m.split(':')[0] in lost_customers] or 'equal'}; "
                                 f"{len(mismatches)} states differ in all; lag at the kills {lag_at_kills}")
    assert audit.extra == [], f"{len(audit.extra)} actions not in the reference, e.g. {audit.extra[:5]}"
    assert audit.differing == [], f"actions differing from the reference: {audit.differing[:5]}"
    assert mismatches == [], f"{len(mismatches)} states differ from the reference: {mismatches[:10]}"
