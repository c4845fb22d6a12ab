"""`lam produce` against the real broker: exactly the file's events, keyed by customer, in per-key order."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import itertools
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
from aiokafka.partitioner import DefaultPartitioner
from confluent_kafka import TopicPartition

from sim.world import World, WorldConfig
from sim.write import write_jsonl
from streams import kafka, produce
from streams.cli import main
from streams.decode import decode
from streams.settings import Settings
from streams.sources import EventFile

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _read_all(consumer_factory, topic: str, count: int) -> list:
    """All `count` messages of the topic, after checking by its offsets that it holds no more."""
    consumer = consumer_factory()
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    held = sum(high - low for low, high in (consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                                            for p in partitions))
    assert held == count
    return kafka.consume_exactly(consumer, [topic], count, timeout=90)


def test_a_file_is_delivered_exactly_keyed_by_customer_in_per_key_order(
        settings: Settings, bootstrap: str, topic_factory, consumer_factory, tmp_path: Path) -> None:
    topic = topic_factory(partitions=6)
    path = tmp_path / "history.jsonl.gz"
    write_jsonl(World(WorldConfig(customers=500, days=30, seed=21)), path)
    expected = list(EventFile(path))

    result = produce.run(dataclasses.replace(settings, input_topic=topic, partitions=6),
                         produce.Plan(file=str(path)))
    got = _read_all(consumer_factory, topic, len(expected))

    assert result.delivered == len(expected) == len(got)
    by_key: dict[str, list] = defaultdict(list)
    partitioner = DefaultPartitioner()
    for msg in got:
        event = decode(msg.value())
        assert msg.key().decode() == event.customer_id
        assert msg.partition() == partitioner(msg.key(), list(range(6)), [])
        by_key[event.customer_id].append(event)
    file_by_key: dict[str, list] = defaultdict(list)
    for event in expected:
        file_by_key[event.customer_id].append(event)
    assert by_key == file_by_key


def test_the_clickstream_sample_replays_from_the_command_line(
        bootstrap: str, topic_factory, consumer_factory, capsys) -> None:
    topic = topic_factory(partitions=6)
    sample = ROOT / "tests" / "data" / "clickstream-sample.csv"
    rows = len(sample.read_text().splitlines()) - 1

    code = main(["produce", "--file", str(sample), "--mapping", str(ROOT / "streams/mappings/retailrocket.toml"),
                 "--speedup", "1e7", "--input-topic", topic, "--bootstrap-servers", bootstrap])
    got = _read_all(consumer_factory, topic, rows)

    assert code == 0
    assert f"produced {rows:,} touchpoints" in capsys.readouterr().out
    assert {decode(m.value()).event_type for m in got} == {"product_view", "add_to_cart", "purchase"}


def test_the_simulator_streams_at_a_rate(bootstrap: str, topic_factory, consumer_factory, capsys) -> None:
    topic = topic_factory(partitions=6)

    code = main(["produce", "--simulate", "--customers", "2000", "--days", "20", "--limit", "300", "--rate", "3000",
                 "--input-topic", topic, "--bootstrap-servers", bootstrap])
    got = _read_all(consumer_factory, topic, 300)

    assert code == 0
    assert len(got) == 300
    assert "produced 300 touchpoints from the simulator" in capsys.readouterr().out


def test_undelivered_messages_fail_the_run_in_one_line(bootstrap: str, tmp_path: Path, capsys) -> None:
    topic = f"test-tiny-{uuid.uuid4().hex[:10]}"
    kafka.create_topics(bootstrap, {topic: 1}, config={"max.message.bytes": "64"})
    path = tmp_path / "h.jsonl"
    write_jsonl(World(WorldConfig(customers=50, days=10, seed=1)), path)
    try:
        code = main(["produce", "--file", str(path), "--input-topic", topic, "--bootstrap-servers", bootstrap])
    finally:
        kafka.delete_topics(bootstrap, [topic])
    err = capsys.readouterr().err.strip().splitlines()

    assert code == 1
    assert err[-1].startswith("lam: error: ") and "were not delivered to " + topic in err[-1]


def test_no_broker_is_one_line(capsys) -> None:
    sample = ROOT / "tests" / "data" / "clickstream-sample.csv"
    code = main(["produce", "--file", str(sample), "--mapping", str(ROOT / "streams/mappings/retailrocket.toml"),
                 "--bootstrap-servers", "127.0.0.1:1"])
    assert code == 1
    assert capsys.readouterr().err.strip() == ("lam: error: no Kafka broker answers on 127.0.0.1:1: "
                                               "start one with `lam broker start`")


def test_the_retailrocket_log_replays_with_its_mapping_keyed_and_typed(
        retailrocket: Path, bootstrap: str, topic_factory, consumer_factory) -> None:
    rows = 5000
    topic = topic_factory(partitions=6)
    with gzip.open(retailrocket, "rt", newline="") as f:
        expected = list(itertools.islice(csv.DictReader(f), rows))
    names = {"view": "product_view", "addtocart": "add_to_cart", "transaction": "purchase"}

    code = main(["produce", "--file", str(retailrocket), "--mapping", str(ROOT / "streams/mappings/retailrocket.toml"),
                 "--limit", str(rows), "--input-topic", topic, "--bootstrap-servers", bootstrap])
    got = _read_all(consumer_factory, topic, rows)

    assert code == 0
    partitioner = DefaultPartitioner()
    sent: dict[str, list] = defaultdict(list)
    for msg in got:
        event = decode(msg.value())
        assert msg.key() == event.customer_id.encode()
        assert msg.partition() == partitioner(msg.key(), list(range(6)), [])
        sent[event.customer_id].append((event.event_time_ms, event.event_type, event.item, event.channel))
    in_file: dict[str, list] = defaultdict(list)
    for row in expected:
        in_file[row["visitorid"]].append((int(row["timestamp"]), names[row["event"]], row["itemid"], "web"))
    assert sent == in_file  # every row, as the contract's types, in the file's order per visitor
