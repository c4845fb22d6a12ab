"""`lam bench --quick` end to end on the real broker, so the benchmark can't rot; figures are not checked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from bench import cores, kafka_run
from bench.report import END, LATENCY_PNG, LOAD_PNG, START
from deploy import broker
from streams import kafka
from streams.settings import ROOT

pytestmark = pytest.mark.integration
OTHER_SECTION = "<!-- bench:other:start -->\n## Another benchmark\n<!-- bench:other:end -->\n"


def test_quick_bench_writes_every_section_and_keeps_the_others(bootstrap, settings, tiny_model_path, tmp_path):
    (tmp_path / "benchmarks.md").write_text("# Benchmarks\n\n" + OTHER_SECTION)
    (tmp_path / "benchmarks.json").write_text(json.dumps({"other": {"kept": True}}))
    env = os.environ | {"LAM_BROKER_PORT": str(settings.broker_port),
                        "LAM_BOOTSTRAP_SERVERS": settings.bootstrap_servers}
    local_broker = broker.local_pid(settings)
    broker_cores = None if local_broker is None else os.sched_getaffinity(local_broker)
    done = subprocess.run([sys.executable, "-m", "streams.cli", "bench", "--quick", "--docs-dir", str(tmp_path),
                           "--model-path", str(tiny_model_path)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=540)
    assert done.returncode == 0, done.stderr[-3000:]

    doc = json.loads((tmp_path / "benchmarks.json").read_text())
    assert doc["other"] == {"kept": True}
    entry = doc["engine"]
    for design in ("engine", "naive"):
        assert entry[design]["throughput"]["events_per_second"] > 0
        assert entry[design]["throughput"]["peak_rss_mib"] > 0
        assert all(0 <= entry[design][phase]["stolen"] <= 1 for phase in ("latency", "latency_eager"))
        # The shipped policy may not act on the tiny model's few touchpoints; the eager policy acts on every one.
        assert entry[design]["latency"]["offered"] > 0 and entry[design]["latency"]["worker_cores"] > 0
        # The benchmark's own process, which produces the touchpoints, and the broker when `lam broker start` runs it.
        assert entry[design]["latency"]["bench_cores"] > 0
        if not settings.bootstrap_servers:
            assert entry[design]["latency"]["broker_cores"] > 0
        assert entry[design]["latency_eager"]["actions"] > 0
        eager = entry[design]["latency_eager"]
        assert 0 < eager["p50"] <= eager["p99"]
        assert 0 <= eager["emitted_p50"] <= eager["p50"] and eager["emitted_p99"] <= eager["p99"]
        # Steal, second by second: every second with samples has a share, and the quiet ones are among them.
        assert eager["by_second"] and all(0 <= share <= 1 for *_, share in eager["by_second"])
        assert sum(row[1] for row in eager["by_second"]) <= eager["actions"]
        assert eager["quiet"]["seconds"] <= eager["quiet"]["of_seconds"] == len(eager["by_second"])
    # The latency phases' worker had a core of its own, and the local broker got its cores back after them.
    assert entry["worker_core"] == cores.own_core()
    if local_broker is not None:
        assert os.sched_getaffinity(local_broker) == broker_cores
    assert entry["ceiling"]["ceiling_per_second"] > 0 and entry["ceiling"]["engine_rocksdb_per_second"] > 0
    assert entry["floor"]["throughput"]["events"] == entry["engine"]["throughput"]["events"]
    assert entry["scale_out"]["workers"] == 2
    assert entry["scale_out"]["throughput"]["events"] == entry["engine"]["throughput"]["events"]
    assert entry["scale_out"]["throughput"]["events_per_second"] > 0
    assert 0 < entry["worker_bound_per_second"] < entry["ceiling"]["ceiling_per_second"]
    assert [s["states"] for s in entry["states"]] == [10_000] and entry["states"][0]["disk_mib"] > 0
    # The load curve: the quick run's one lower share, then the headline's half of the maximum rate.
    curve = entry["engine"]["load_curve"]
    assert [p["share"] for p in curve] == [0.25, 0.5]
    assert curve[0]["rate"] < curve[1]["rate"] == entry["engine"]["latency"]["rate"]
    assert all(p["offered"] > 0 and p["worker_cores"] > 0 and "by_second" in p for p in curve)
    assert "load_curve" not in entry["naive"]  # the naive design is measured at the headline's rate only

    text = (tmp_path / "benchmarks.md").read_text()
    assert OTHER_SECTION in text and text.count(START) == 1 and text.count(END) == 1
    for heading in ("## Streaming engine", "### Latency as the offered rate grows", "### Scale-out",
                    "### State memory", "### The ceiling", "Targets:", "over the seconds with steal under"):
        assert heading in text
    assert (tmp_path / LATENCY_PNG).exists() == bool(entry["engine"]["latency"]["by_second"])
    assert (tmp_path / LOAD_PNG).exists() == any(p["p99"] is not None for p in curve)
    assert "events/s" in done.stdout


def test_a_bench_stopped_in_a_latency_phase_cleans_up_as_an_interrupted_one(bootstrap, settings, tiny_model_path,
                                                                             tmp_path):
    local_broker = broker.local_pid(settings)
    if local_broker is None or cores.own_core() is None:
        pytest.skip("needs the local broker (`lam broker start`) and two cores")
    admin = kafka.admin(settings.bootstrap)
    topics_before = set(admin.list_topics(timeout=10).topics)
    broker_cores = os.sched_getaffinity(local_broker)
    env = os.environ | {"LAM_BROKER_PORT": str(settings.broker_port)}
    bench = subprocess.Popen([sys.executable, "-m", "streams.cli", "bench", "--quick", "--docs-dir", str(tmp_path),
                              "--model-path", str(tiny_model_path)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        # The first latency phase has begun when the broker is moved off the worker's core.
        while os.sched_getaffinity(local_broker) == broker_cores:
            assert bench.poll() is None and time.monotonic() < deadline, "no latency phase began"
            time.sleep(0.05)
        bench.send_signal(signal.SIGTERM)
        _, err = bench.communicate(timeout=120)
    finally:
        bench.kill()
    assert bench.returncode == 130 and err.strip().endswith("lam: interrupted")
    assert os.sched_getaffinity(local_broker) == broker_cores
    assert not {t for t in admin.list_topics(timeout=10).topics if t.startswith("lam-bench-")} - topics_before


def test_the_latency_phase_producer_does_not_bring_back_a_deleted_topic(bootstrap, topic_factory):
    topic = topic_factory(partitions=2, prefix="lam-bench-load")
    load = kafka_run._Load(bootstrap)
    assert load.release([[(b"c1", b"{}")]], topic) == 0
    kafka.delete_topics(bootstrap, [topic])
    # What the producer's periodic metadata refresh asks for; the broker creates the topic if the client allows it.
    load._producer.list_topics(topic, timeout=10)
    assert topic not in kafka.admin(bootstrap).list_topics(timeout=10).topics
