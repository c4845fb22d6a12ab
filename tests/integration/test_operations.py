"""Operations on the real broker: a worker's /metrics and health endpoints, `lam lag` against Kafka's own
consumer-group tool, and the lag exporter with and without Kafka."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter

import pytest
from confluent_kafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from streams import kafka
from streams.metrics import reason_label
from tests.conftest import free_port, stop_process
from tests.integration.test_worker import PARTITIONS, produce, received, reference, world  # noqa: F401 (fixture)
from tests.streams_support import drain, history, wait_until_consumed

pytestmark = pytest.mark.integration


def get(url: str) -> tuple[int, str]:
    """Status and body of a GET; (0, "") while nothing listens yet."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return 0, ""


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(metrics: dict, name: str, **labels: str) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


def wait_for(check, timeout: float = 90.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_worker_is_ready_after_recovery_and_its_metrics_count_what_was_produced(bootstrap, world, worker_factory):
    env, s = world
    env = env | {"LAM_WEB_PORT": str(free_port())}
    base = f"http://127.0.0.1:{env['LAM_WEB_PORT']}"
    worker_factory(env)
    first = wait_for(lambda: get(base + "/readyz")[0], what="the worker's web server")
    assert first == 503, "a worker must not be ready before it has its partitions and recovered its tables"
    assert get(base + "/livez")[0] == 200
    wait_for(lambda: get(base + "/readyz")[0] == 200, what="readiness")

    events = history(customers=40, seed=13)
    bad = [("c0001", b"garbage"), ("c0002", b'{"v":1,"customer_id":"c0002"}'), ("c0003", b"[]")]
    produce(bootstrap, s.input_topic, [(e.customer_id, e.to_wire()) for e in events] + bad)
    _, _, ref = reference(s, received(drain(bootstrap, s.input_topic, len(events) + len(bad), settle=0)))
    wait_until_consumed(bootstrap, s.app_id, s.input_topic, PARTITIONS)
    # Offsets are committed after a batch is processed, and its metrics are recorded before that.
    metrics = samples(get(base + "/metrics")[1])

    assert value(metrics, "lam_messages_consumed_total", topic=s.input_topic) == len(events) + len(bad)
    assert value(metrics, "lam_touchpoints_decoded_total") == len(events)
    assert value(metrics, "lam_touchpoints_applied_total") == len(events)
    reasons = Counter(reason_label(r) for _, r in ref.dead_letters)
    assert len(reasons) >= 2, "the test needs dead letters of more than one reason"
    for reason, n in reasons.items():
        assert value(metrics, "lam_dead_letters_total", reason=reason) == n
    assert ref.action_names, "the test policy should lead to actions"
    for action, n in ref.action_names.items():
        assert value(metrics, "lam_actions_emitted_total", action=action) == n
    assert value(metrics, "lam_action_latency_seconds_count") == len(ref.actions)
    assert value(metrics, "lam_batch_messages_sum") == len(events) + len(bad)
    assert value(metrics, "lam_assigned_partitions", topic=s.input_topic) == PARTITIONS
    assert value(metrics, "lam_rebalances_total") >= 1
    assert value(metrics, "lam_ready") == 1
    assert sum(v for (name, labels), v in metrics.items() if name == "lam_state_entries"
               and ("table", "customer-state") in labels) > 0
    assert not any("customer" in k for (_, labels) in metrics for k, _ in labels), "no customer ids in labels"


@pytest.fixture
def partially_consumed(bootstrap, topic_factory, consumer_factory):
    """A group that read 3 of partition 0's 10 messages, all of partition 1's and none of partition 2's."""
    topic = topic_factory(partitions=3, prefix="lag")
    producer = kafka.producer(bootstrap)
    for p in range(3):
        for i in range(10):
            producer.produce(topic, value=b"m%d" % i, key=b"k", partition=p)
    assert producer.flush(30) == 0
    group = f"lag-{uuid.uuid4().hex[:8]}"
    consumer = consumer_factory(group)
    consumer.assign([TopicPartition(topic, 0, 0), TopicPartition(topic, 1, 0)])
    read = Counter()
    while read[0] < 3 or read[1] < 10:
        msg = consumer.poll(1.0)
        if msg is not None and not msg.error() and read[msg.partition()] < (3 if msg.partition() == 0 else 10):
            read[msg.partition()] += 1
    consumer.commit(offsets=[TopicPartition(topic, 0, 3), TopicPartition(topic, 1, 10)], asynchronous=False)
    return topic, group, {(topic, 0): (3, 10, 7), (topic, 1): (10, 10, 0)}


def kafka_tool(settings, group: str) -> dict[tuple[str, int], tuple[int, int, int]]:
    """(committed, log end, lag) per partition from Kafka's own ConsumerGroupCommand."""
    jars, bootstrap = settings.home / "jars" / "*", settings.bootstrap
    out = subprocess.run(["java", "-cp", str(jars), "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
                          "--bootstrap-server", bootstrap, "--describe", "--group", group],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    rows = [line.split() for line in out.splitlines() if line.startswith(group + " ")]
    return {(r[1], int(r[2])): (int(r[3]), int(r[4]), int(r[5])) for r in rows}


def lam(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], capture_output=True, text=True, timeout=60)


def test_lam_lag_agrees_with_kafkas_consumer_group_tool(bootstrap, settings, partially_consumed):
    topic, group, expected = partially_consumed
    result = lam("lag", "--group", group, "--json", "--bootstrap-servers", bootstrap)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    ours = {(p["topic"], p["partition"]): (p["committed"], p["log_end"], p["lag"]) for p in report["partitions"]}

    assert ours == expected
    assert ours == kafka_tool(settings, group)
    assert report["total_lag"] == 7
    seconds = {p["partition"]: p["lag_seconds"] for p in report["partitions"]}
    assert seconds[1] == 0.0 and 0.0 <= seconds[0] < 120, "lag seconds: the waiting message was produced just now"

    table = lam("lag", "--group", group, "--bootstrap-servers", bootstrap)
    assert table.returncode == 0 and "total lag 7 over 2 partitions" in table.stdout
    unknown = lam("lag", "--group", f"nobody-{uuid.uuid4().hex[:6]}", "--bootstrap-servers", bootstrap)
    assert unknown.returncode == 1 and unknown.stderr.count("\n") == 1 and "does not exist" in unknown.stderr


def scrape_exporter(bootstrap: str, group: str) -> dict:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "lag-exporter", "--group", group,
                             "--bootstrap-servers", bootstrap, "--lag-exporter-port", str(port), "--lag-timeout", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        status, body = wait_for(lambda: (lambda r: r if r[0] else None)(get(f"http://127.0.0.1:{port}/metrics")),
                                timeout=30, what="the lag exporter")
        assert status == 200
        return samples(body)
    finally:
        stop_process(proc)


def test_lag_exporter_reports_without_workers_and_drops_up_when_kafka_is_unreachable(bootstrap, partially_consumed):
    topic, group, expected = partially_consumed
    metrics = scrape_exporter(bootstrap, group)
    assert value(metrics, "lam_lag_exporter_up") == 1
    for (t, p), (committed, log_end, lag) in expected.items():
        labels = {"group": group, "topic": t, "partition": str(p)}
        assert value(metrics, "kafka_consumergroup_group_offset", **labels) == committed
        assert value(metrics, "kafka_consumergroup_group_lag", **labels) == lag
        assert value(metrics, "kafka_partition_latest_offset", topic=t, partition=str(p)) == log_end
    assert value(metrics, "kafka_consumergroup_group_sum_lag", group=group) == 7
    assert value(metrics, "kafka_consumergroup_group_lag_seconds", group=group, topic=topic, partition="0") > 0

    down = scrape_exporter(f"127.0.0.1:{free_port()}", group)
    assert value(down, "lam_lag_exporter_up") == 0
    assert not any(name.startswith("kafka_") for name, _ in down)
