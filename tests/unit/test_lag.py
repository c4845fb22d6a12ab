"""`lam lag` output and the lag exporter's families, with measurements stubbed (the broker side is in
tests/integration/test_operations.py)."""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streams import lag
from streams.errors import LamError

MEASURED = lag.GroupLag("lam", "empty", [
    lag.PartitionLag("in", 0, 3, 10, 7, 42.5),
    lag.PartitionLag("in", 1, 10, 10, 0, 0.0),
    lag.PartitionLag("in", 2, None, 4, None, None),  # assigned, never committed
])


def test_totals_skip_partitions_without_a_commit():
    assert MEASURED.total == 7
    assert MEASURED.max_lag_seconds == 42.5
    assert lag.GroupLag("g", "dead").max_lag_seconds == 0.0


def test_table_has_kafkas_columns_and_dashes_for_unknowns():
    lines = lag.render(MEASURED).splitlines()
    assert lines[0].split() == ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG",
                                "LAG-SECONDS"]
    assert lines[1].split() == ["lam", "in", "0", "3", "10", "7", "42.5"]
    assert lines[3].split() == ["lam", "in", "2", "-", "4", "-", "-"]
    assert lines[-1] == "total lag 7 over 3 partitions (group state empty)"


def test_json_is_for_programs():
    doc = json.loads(lag.as_json(MEASURED))
    assert doc["total_lag"] == 7 and doc["group"] == "lam"
    assert doc["partitions"][2] == {"topic": "in", "partition": 2, "committed": None, "log_end": 4, "lag": None,
                                    "lag_seconds": None}


def scrape(monkeypatch, outcome) -> dict:
    def measure(bootstrap, group, timeout):
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(lag, "measure", measure)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(lag.LagCollector("b:9092", "lam", 1.0))
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(generate_latest(registry).decode()) for s in f.samples}


def test_exporter_uses_the_lag_exporter_names_and_labels(monkeypatch):
    got = scrape(monkeypatch, MEASURED)
    assert got[("lam_lag_exporter_up", ())] == 1
    assert got[("kafka_consumergroup_group_lag", (("group", "lam"), ("partition", "0"), ("topic", "in")))] == 7
    assert got[("kafka_consumergroup_group_lag_seconds", (("group", "lam"), ("partition", "0"), ("topic", "in")))] \
        == 42.5
    assert got[("kafka_consumergroup_group_sum_lag", (("group", "lam"),))] == 7
    assert got[("kafka_partition_latest_offset", (("partition", "2"), ("topic", "in")))] == 4
    assert ("kafka_consumergroup_group_lag", (("group", "lam"), ("partition", "2"), ("topic", "in"))) not in got


def test_exporter_reports_down_when_kafka_fails_and_up_when_the_group_is_new(monkeypatch, capsys):
    down = scrape(monkeypatch, LamError("no Kafka broker answers on b:9092 within 1 s"))
    assert down[("lam_lag_exporter_up", ())] == 0
    assert not [name for name, _ in down if name.startswith("kafka_")]
    assert "scrape failed" in capsys.readouterr().err
    new = scrape(monkeypatch, lag.UnknownGroup("consumer group 'lam' does not exist on b:9092"))
    assert new[("lam_lag_exporter_up", ())] == 1
