"""Consumer lag measured from outside the workers (`lam lag`, `lam lag-exporter`), as SREs trust it.

Figures come from the broker alone, as Kafka's own consumer-group tool gets them: the group's committed offsets,
the members' assignments, and each partition's log-end offset (read-uncommitted). They keep coming when every
worker is down, which is when they matter most.

Lag in seconds is estimated from the timestamp of the message at the committed offset, the next one the group
will process: it has waited `now - timestamp`. That is exact for producer-stamped (CreateTime) topics such as
ours; a producer that stamps messages with their event time makes it an upper bound.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import OffsetSpec
from prometheus_client import start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from streams import kafka
from streams.errors import LamError
from streams.metrics import LAG_FAMILIES


class UnknownGroup(LamError):
    """The consumer group has neither members nor committed offsets."""


@dataclass(frozen=True, slots=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None  # None: assigned to a member but never committed (Kafka's tool shows "-")
    log_end: int
    lag: int | None
    lag_seconds: float | None  # None: unknown (no commit, or the message could not be read in time)


@dataclass(frozen=True, slots=True)
class GroupLag:
    group: str
    state: str
    partitions: list[PartitionLag] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(p.lag for p in self.partitions if p.lag is not None)

    @property
    def max_lag_seconds(self) -> float:
        return max((p.lag_seconds for p in self.partitions if p.lag_seconds is not None), default=0.0)


def measure(bootstrap: str, group: str, timeout: float = 10.0) -> GroupLag:
    """The group's lag per partition now. Raises LamError if no broker answers or the group does not exist."""
    admin = kafka.admin(bootstrap)  # kept referenced until every future is done: a collected client drops them
    try:
        description = admin.describe_consumer_groups([group], request_timeout=timeout)[group].result(timeout)
        request = [ConsumerGroupTopicPartitions(group)]
        listed = admin.list_consumer_group_offsets(request, request_timeout=timeout)[group].result(timeout)
    except KafkaException as exc:
        raise LamError(f"could not describe consumer group {group!r} on {bootstrap}: {exc.args[0].str()}") from None
    except TimeoutError:
        raise LamError(f"no Kafka broker answers on {bootstrap} within {timeout:g} s") from None
    committed = {(tp.topic, tp.partition): tp.offset for tp in listed.topic_partitions if tp.offset >= 0}
    assigned = {(tp.topic, tp.partition) for member in description.members for tp in member.assignment.topic_partitions}
    if not committed and description.state in (ConsumerGroupState.DEAD, ConsumerGroupState.UNKNOWN):
        raise UnknownGroup(f"consumer group {group!r} does not exist on {bootstrap}")
    keys = sorted(set(committed) | assigned)
    ends = _log_ends(admin, keys, timeout)
    behind = {k: committed[k] for k in keys if k in committed and ends[k] > committed[k]}
    stamps = _timestamps(bootstrap, behind, timeout)
    now = time.time()
    partitions = []
    for key in keys:
        offset = committed.get(key)
        lag = None if offset is None else max(ends[key] - offset, 0)
        seconds = 0.0 if lag == 0 else (max(now - stamps[key], 0.0) if key in stamps else None)
        partitions.append(PartitionLag(key[0], key[1], offset, ends[key], lag, seconds))
    return GroupLag(group, description.state.name.lower(), partitions)


def _log_ends(admin, keys: list[tuple[str, int]], timeout: float) -> dict[tuple[str, int], int]:
    if not keys:
        return {}
    futures = admin.list_offsets({TopicPartition(t, p): OffsetSpec.latest() for t, p in keys}, request_timeout=timeout)
    try:
        return {(tp.topic, tp.partition): f.result(timeout).offset for tp, f in futures.items()}
    except KafkaException as exc:
        raise LamError(f"could not read log-end offsets: {exc.args[0].str()}") from None


def _timestamps(bootstrap: str, positions: dict[tuple[str, int], int], timeout: float) -> dict[tuple[str, int], float]:
    """Timestamp (epoch seconds) of the message at each (topic, partition) position; missing if not read in time."""
    if not positions:
        return {}
    consumer = kafka.consumer(bootstrap, **{"enable.partition.eof": False, "fetch.wait.max.ms": 100})
    stamps: dict[tuple[str, int], float] = {}
    try:
        consumer.assign([TopicPartition(t, p, offset) for (t, p), offset in positions.items()])
        deadline = time.monotonic() + timeout
        while len(stamps) < len(positions) and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            key = (msg.topic(), msg.partition())
            if key not in stamps:
                stamps[key] = msg.timestamp()[1] / 1000
                consumer.pause([TopicPartition(*key)])  # one message per partition is all we need
    finally:
        consumer.close()
    return stamps


def render(lag: GroupLag) -> str:
    """Columns as Kafka's consumer-group tool prints them, plus the lag in seconds, then the total."""
    def cell(value: object) -> str:
        return "-" if value is None else f"{value:.1f}" if isinstance(value, float) else str(value)

    rows = [("GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "LAG-SECONDS")]
    rows += [(lag.group, p.topic, str(p.partition), cell(p.committed), cell(p.log_end), cell(p.lag),
              cell(p.lag_seconds)) for p in lag.partitions]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.append(f"total lag {lag.total} over {len(lag.partitions)} partitions (group state {lag.state})")
    return "\n".join(lines)


def as_json(lag: GroupLag) -> str:
    return json.dumps({"group": lag.group, "state": lag.state, "total_lag": lag.total,
                       "partitions": [asdict(p) for p in lag.partitions]}, indent=2)


class LagCollector(Collector):
    """Measures the group's lag on every scrape; a failed measurement reports `lam_lag_exporter_up 0`."""

    def __init__(self, bootstrap: str, group: str, timeout: float) -> None:
        self.bootstrap, self.group, self.timeout = bootstrap, group, timeout

    def collect(self) -> Iterable[GaugeMetricFamily]:
        started = time.monotonic()
        families = {name: GaugeMetricFamily(name, help_, labels=labels)
                    for name, (help_, labels) in LAG_FAMILIES.items()}
        up = True
        try:
            self._add(families, measure(self.bootstrap, self.group, self.timeout))
        except UnknownGroup:
            pass  # workers never ran yet: Kafka answered, there is nothing to report
        except LamError as exc:
            up = False
            print(f"lam lag-exporter: scrape failed: {exc}", file=sys.stderr, flush=True)
        families["lam_lag_exporter_up"].add_metric([], 1.0 if up else 0.0)
        families["lam_lag_exporter_scrape_duration_seconds"].add_metric([], time.monotonic() - started)
        return list(families.values())

    def _add(self, families: dict[str, GaugeMetricFamily], lag: GroupLag) -> None:
        for p in lag.partitions:
            tp, gtp = [p.topic, str(p.partition)], [lag.group, p.topic, str(p.partition)]
            families["kafka_partition_latest_offset"].add_metric(tp, p.log_end)
            if p.committed is not None:
                families["kafka_consumergroup_group_offset"].add_metric(gtp, p.committed)
                families["kafka_consumergroup_group_lag"].add_metric(gtp, p.lag)
            if p.lag_seconds is not None:
                families["kafka_consumergroup_group_lag_seconds"].add_metric(gtp, p.lag_seconds)
        families["kafka_consumergroup_group_sum_lag"].add_metric([lag.group], lag.total)
        families["kafka_consumergroup_group_max_lag_seconds"].add_metric([lag.group], lag.max_lag_seconds)


def serve_exporter(bootstrap: str, group: str, port: int, timeout: float = 5.0) -> None:
    """`lam lag-exporter`: serve the group's lag at http://0.0.0.0:PORT/metrics until interrupted."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LagCollector(bootstrap, group, timeout))
    try:
        start_http_server(port, registry=registry)
    except OSError as exc:
        raise LamError(f"lag exporter cannot listen on port {port}: {exc.strerror}") from None
    print(f"lam lag-exporter: group {group} on {bootstrap}, serving http://0.0.0.0:{port}/metrics",
          file=sys.stderr, flush=True)
    threading.Event().wait()  # the HTTP server runs in a daemon thread
