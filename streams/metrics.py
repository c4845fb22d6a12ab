"""Every Prometheus metric LAM exports, defined once.

Worker metrics (`lam_*`) live in prometheus-client's default registry and are served at a worker's `/metrics`.
The lag exporter's families (`kafka_consumergroup_*`, `kafka_partition_*`) reuse kafka-lag-exporter's names,
because SREs already chart and alert on those; they are built per scrape by streams.lag from the names below.

Labels are bounded: topic, partition, reason (the text before the first ':' of a dead-letter reason), action (a
policy action name), table. Never a customer id.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Callable, Iterable, Sequence
from operator import attrgetter
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

if TYPE_CHECKING:  # the lag exporter imports this module and must not load torch through streams.worker
    from streams.worker import Inbound, Outcome

# Up to the default batch size (2000) and beyond, in powers of two.
_BATCH_BUCKETS = tuple(float(2**i) for i in range(13))
# From a fast micro-batch to a model step stuck on a starved CPU.
_PROCESSING_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Event time to action: sub-second when live, minutes to hours when catching up on a backlog.
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0)

CONSUMED = Counter("lam_messages_consumed_total", "Messages a worker took from its input topics (touchpoints and "
                   "consent), before decoding", ["topic"])
DECODED = Counter("lam_touchpoints_decoded_total", "Touchpoints that decoded and carried their customer's key")
APPLIED = Counter("lam_touchpoints_applied_total", "Touchpoints applied to a customer's state by a model step")
SKIPPED = Counter("lam_touchpoints_skipped_total", "Decoded touchpoints not applied: 'duplicate' (redelivered, "
                  "at or below the stored offset) or 'opted_out'", ["reason"])
DEAD_LETTERS = Counter("lam_dead_letters_total", "Messages sent to the dead-letter topic, by the field that was "
                       "wrong", ["reason"])
STATE_READS = Counter("lam_state_reads_total", "Customer states a batch read: 'cache' from the worker's memory, "
                      "'store' from RocksDB", ["source"])
OPT_OUTS = Counter("lam_opt_outs_total", "Consent opt-outs applied (state erased, no more actions)")
ACTIONS = Counter("lam_actions_emitted_total", "Next-best actions emitted, by policy action", ["action"])
BATCH_MESSAGES = Histogram("lam_batch_messages", "Messages per micro-batch", buckets=_BATCH_BUCKETS)
BATCH_SECONDS = Histogram("lam_batch_processing_seconds", "Wall time to process one micro-batch, emits included",
                          buckets=_PROCESSING_BUCKETS)
STEP_SECONDS = Histogram("lam_model_step_seconds", "Time spent in model steps per micro-batch",
                         buckets=_PROCESSING_BUCKETS)
ACTION_LATENCY = Histogram("lam_action_latency_seconds", "End-to-end latency: event time of the triggering "
                           "touchpoint to the action's emission", buckets=_LATENCY_BUCKETS)
REBALANCES = Counter("lam_rebalances_total", "Consumer-group rebalances this worker went through (assignments "
                     "received)")
ASSIGNED = Gauge("lam_assigned_partitions", "Partitions of the input topics assigned to this worker", ["topic"])
READY = Gauge("lam_ready", "1 when the worker has its partitions and its table recovery has finished")
MODEL = Info("lam_model", "Model artifact this worker serves")

# Built per scrape by collectors (from RocksDB and faust's recovery state), so only their names live here.
STATE_ENTRIES = ("lam_state_entries", "Entries in the worker's state tables per partition (RocksDB's "
                 "estimate-num-keys)", ["table", "partition"])
RECOVERY_REMAINING = ("lam_table_recovery_remaining_records", "Changelog records still to replay before the "
                      "table partition is recovered", ["topic", "partition"])

# The lag exporter's families: (name, help, labels). `up` itself is reserved for Prometheus's own target health.
LAG_FAMILIES: dict[str, tuple[str, list[str]]] = {
    "kafka_consumergroup_group_offset": ("Committed offset of the group on the partition", ["group", "topic",
                                                                                            "partition"]),
    "kafka_partition_latest_offset": ("Log-end offset of the partition", ["topic", "partition"]),
    "kafka_consumergroup_group_lag": ("Messages between the group's committed offset and the log end",
                                      ["group", "topic", "partition"]),
    "kafka_consumergroup_group_lag_seconds": ("Estimated seconds the group is behind: now minus the timestamp of "
                                              "the message at its committed offset", ["group", "topic", "partition"]),
    "kafka_consumergroup_group_sum_lag": ("Sum of the group's lag over its partitions", ["group"]),
    "kafka_consumergroup_group_max_lag_seconds": ("Largest lag in seconds over the group's partitions", ["group"]),
    "lam_lag_exporter_up": ("1 when the last scrape of Kafka succeeded, 0 when it failed", []),
    "lam_lag_exporter_scrape_duration_seconds": ("Seconds the last scrape of Kafka took", []),
}

_REASON = re.compile(r"[a-z_]{1,32}")


def reason_label(reason: str) -> str:
    """The bounded label of a dead-letter reason: its field name, or 'other' if it doesn't look like one.

    >>> reason_label("event_time: expected epoch ms or ISO-8601 with zone; got nothing")
    'event_time'
    """
    head = reason.split(":", 1)[0]
    return head if _REASON.fullmatch(head) else "other"


def record_batch(batch: Sequence[Inbound], outcome: Outcome, seconds: float, now_ms: int) -> None:
    """Count one processed micro-batch; `now_ms` is when its actions were emitted."""
    for topic, n in collections.Counter(map(attrgetter("topic"), batch)).items():
        CONSUMED.labels(topic).inc(n)
    counts = outcome.counts
    DECODED.inc(counts["decoded"])
    APPLIED.inc(counts["applied"])
    SKIPPED.labels("duplicate").inc(counts["duplicates_skipped"])
    SKIPPED.labels("opted_out").inc(counts["opted_out_skipped"])
    OPT_OUTS.inc(counts["opt_outs"])
    STATE_READS.labels("cache").inc(counts["cache_hits"])
    STATE_READS.labels("store").inc(counts["cache_misses"])
    for _, reason in outcome.dead_letters:
        DEAD_LETTERS.labels(reason_label(reason)).inc()
    for action, n in outcome.action_names.items():
        ACTIONS.labels(action).inc(n)
    for trigger_ms in outcome.trigger_times_ms:
        ACTION_LATENCY.observe(max(0.0, (now_ms - trigger_ms) / 1000))
    BATCH_MESSAGES.observe(len(batch))
    BATCH_SECONDS.observe(seconds)
    STEP_SECONDS.observe(outcome.step_seconds)


def record_assignment(topics: Iterable[str], assigned: Iterable[tuple[str, int]]) -> None:
    """A rebalance ended with this worker owning `assigned` (topic, partition) pairs of the input `topics`."""
    REBALANCES.inc()
    owned: dict[str, int] = {topic: 0 for topic in topics}
    for topic, _ in assigned:
        if topic in owned:
            owned[topic] += 1
    for topic, n in owned.items():
        ASSIGNED.labels(topic).set(n)


class GaugeCollector(Collector):
    """One labelled gauge family read at scrape time from `sample()`, for figures only faust or RocksDB hold."""

    def __init__(self, spec: tuple[str, str, list[str]], sample: Callable[[], Iterable[tuple[Sequence[str], float]]]):
        self.name, self.help, self.labels = spec
        self.sample = sample

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return [GaugeMetricFamily(self.name, self.help, labels=self.labels)]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.name, self.help, labels=self.labels)
        for labels, value in self.sample():
            family.add_metric(list(labels), value)
        return [family]


_GAUGES: dict[str, GaugeCollector] = {}


def register_gauge(spec: tuple[str, str, list[str]],
                   sample: Callable[[], Iterable[tuple[Sequence[str], float]]]) -> None:
    """Export the gauge family `spec`, read from `sample()`; an app built again in the same process (as tests do)
    replaces the previous app's."""
    previous = _GAUGES.pop(spec[0], None)
    if previous is not None:
        REGISTRY.unregister(previous)
    _GAUGES[spec[0]] = GaugeCollector(spec, sample)
    REGISTRY.register(_GAUGES[spec[0]])


_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
             "gauge": ("",), "info": ("_info",)}


def worker_metric_names() -> set[str]:
    """Every sample name a worker can export, for checking that dashboards and alerts chart real metrics."""
    names = {STATE_ENTRIES[0], RECOVERY_REMAINING[0]}
    for metric in (CONSUMED, DECODED, APPLIED, SKIPPED, STATE_READS, DEAD_LETTERS, OPT_OUTS, ACTIONS, BATCH_MESSAGES,
                   BATCH_SECONDS, STEP_SECONDS, ACTION_LATENCY, REBALANCES, ASSIGNED, READY, MODEL):
        for family in metric.describe():
            names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return names
