"""One typed configuration object for every `lam` command.

Each field has a default and a one-line description. A field is set, in order of precedence, by its flag
(`--broker-port 19092`), by its environment variable (`LAM_BROKER_PORT=19092`), or by its default.
Values are parsed and validated once, here; errors name the field, the flag and the variable.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from streams.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent


def _setting(default: Any, help: str, secret: bool = False) -> Any:
    return field(default=default, metadata={"help": help, "secret": secret})


@dataclass(frozen=True, slots=True)
class Settings:
    # The local broker and where its files live.
    home: Path = _setting(ROOT / ".lam", "folder for the local broker's jars, data and logs (git-ignored)")
    broker_port: int = _setting(9092, "port of the local broker's PLAINTEXT listener; its controller uses the next one")
    # Kafka's own launcher gives 1 GiB. In 512 MiB, ~160 MiB of live byte arrays (the log cleaner's 128 MiB dedupe
    # buffer for the compacted changelogs among them) kept G1 in concurrent and mixed collections: 36 pauses, 636 ms
    # over 110 s of a latency run at 19,374/s, against 5 pauses, 166 ms over 105 s in 1 GiB (GC logs, issue 8).
    broker_heap: str = _setting("1g", "Java heap of the local broker (-Xmx)")
    broker_start_timeout: float = _setting(90.0, "seconds to wait for the local broker to answer after start")
    bootstrap_servers: str = _setting("", "Kafka bootstrap servers; empty means the local broker on 127.0.0.1")

    # The streaming worker: topics, state, batching, model and policy.
    app_id: str = _setting("lam", "Faust application id: the consumer group and the prefix of its changelog topics")
    input_topic: str = _setting("lam.touchpoints", "topic of touchpoint events, keyed by customer id")
    consent_topic: str = _setting("lam.consent", "topic of consent changes (opt-outs), keyed by customer id")
    action_topic: str = _setting("lam.actions", "topic the next-best-action events are written to")
    dead_letter_topic: str = _setting("lam.deadletter", "topic of messages that could not be decoded, with the reason")
    partitions: int = _setting(12, "partitions of the input, consent and state changelog topics (the unit of scale)")
    batch_size: int = _setting(2000, "most touchpoints a worker takes into one micro-batch")
    batch_timeout: float = _setting(0.02, "seconds a micro-batch waits for more touchpoints after the previous batch")
    standby_replicas: int = _setting(0, "standby copies of each state partition kept warm by other workers")
    session_timeout: float = _setting(10.0, "seconds without heartbeats before a worker's partitions move to others")
    data_dir: Path = _setting(ROOT / ".lam" / "worker",
                              "folder of the worker's RocksDB state; discarded (rebuilt from the changelogs) after "
                              "a stop that was not clean")
    web_port: int = _setting(6066, "port of the worker's HTTP server (health, metrics)")
    model_path: Path = _setting(ROOT / "artifacts" / "model.pt", "model artifact the worker serves")
    policy_path: Path = _setting(ROOT / "streams" / "policy.toml", "action policy: actions, thresholds, limits")
    # 12 x 64 MiB of cache made a worker peak at 1.6 GB over 2M touchpoints of 200,000 customers; 12 x 24 MiB at
    # 1.1 GB, at 23,722 vs 24,578 events/s (within run-to-run noise). Raise it when a partition's hot states outgrow it.
    rocksdb_cache_mb: int = _setting(24, "RocksDB block cache per state partition (MiB)")
    # streams/cache.py. 384 MiB holds ~448,000 states of the shipped layout (898 bytes), filled as customers come;
    # with `state_write_delay` it decides how much of a live stream's state work stays in memory (below).
    state_cache_mb: int = _setting(384, "memory for the customer states a worker keeps between batches (MiB); "
                                        "reads of them skip RocksDB")
    # Interleaved runs at 16,371 touchpoints/s (issue 8, three pairs): 5 s against 1 s wrote fewer states (a customer
    # who comes back within it is written once), p99 latency 108/166/177 against 190/335/224 ms, throughput 39,743-
    # 47,201 against 36,611-40,898/s. 10 s gained nothing more then; 30 s outgrew the state cache of 128 MiB. With 15 s
    # and 384 MiB, at 24,000/s (about half the throughput phase's rate), interleaved with 5 s and 128 MiB: p99 83, 1,523
    # and 288 ms against 5,575, 388 and 4,252; throughput 57,217, 37,191 and 51,464/s against 33,588, 55,985 and
    # 37,613 (384 MiB with 5 s: p99 2,229 and 8,358). Live traffic comes back to a customer less often per second
    # than a backlog does: with 5 s, most live touchpoints wrote their state and many read it from RocksDB, and a live
    # touchpoint cost the worker ~1.8x the CPU of a backlog's (profiled: reads 4.8 against 0.5 µs, writes 3.8 against
    # 1.1). Kafka Streams holds its cache's changes for its commit interval, 30 s by default.
    state_write_delay: float = _setting(15.0, "seconds a changed state may stay in memory before it is written to "
                                             "RocksDB and its changelog; offsets are committed after")
    # torch's default, a thread per core, made a worker at 2,000 touchpoints/s busy 0.74 cores instead of 0.38
    # (measured): its idle threads spin between the small steps of a micro-batch, on cores the broker needs.
    # Workers scale out as processes in the consumer group, not as threads inside one.
    torch_threads: int = _setting(1, "threads torch uses for the model's steps in a worker")

    # Operations: consumer lag measured from outside the workers.
    lag_exporter_port: int = _setting(9308, "port of `lam lag-exporter`'s /metrics")
    lag_timeout: float = _setting(5.0, "seconds `lam lag` and the lag exporter wait for Kafka before failing")

    @property
    def bootstrap(self) -> str:
        return self.bootstrap_servers or f"127.0.0.1:{self.broker_port}"

    @property
    def controller_port(self) -> int:
        return self.broker_port + 1

    def describe(self) -> str:
        """Settings as `name = value` lines, secrets masked, for the start-up banner."""
        lines = []
        for f in fields(self):
            value = getattr(self, f.name)
            shown = "****" if f.metadata.get("secret") and value else value
            lines.append(f"  {f.name} = {shown}")
        return "\n".join(lines)


def env_name(name: str) -> str:
    return "LAM_" + name.upper()


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


_KINDS = {"int": int, "float": float, "str": str, "bool": bool, "Path": Path}


def _parse(f: dataclasses.Field, raw: str, source: str) -> Any:
    kind = _KINDS[f.type]
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError
        return kind(raw)
    except ValueError:
        raise UsageError(f"{f.name}: expected {kind.__name__}, got {raw!r} (from {source})") from None


def load(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build Settings: `overrides` (parsed flags, None meaning unset) beat `LAM_*` variables beat defaults."""
    environ = os.environ if environ is None else environ
    overrides = overrides or {}
    values: dict[str, Any] = {}
    for f in fields(Settings):
        if overrides.get(f.name) is not None:
            raw, source = overrides[f.name], flag_name(f.name)
        elif env_name(f.name) in environ:
            raw, source = environ[env_name(f.name)], env_name(f.name)
        else:
            continue
        values[f.name] = _parse(f, raw, source) if isinstance(raw, str) else raw
    settings = Settings(**values)
    _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    if not 1 <= s.broker_port <= 65534:
        raise UsageError(f"broker_port: expected 1..65534, got {s.broker_port} "
                         f"({flag_name('broker_port')} / {env_name('broker_port')})")
    for name in ("partitions", "batch_size", "web_port", "lag_exporter_port", "torch_threads", "state_cache_mb"):
        if getattr(s, name) < 1:
            raise UsageError(f"{name}: expected >= 1, got {getattr(s, name)} ({flag_name(name)} / {env_name(name)})")
    if s.lag_timeout <= 0:
        raise UsageError(f"lag_timeout: expected > 0 seconds, got {s.lag_timeout}")
    if s.session_timeout < 1:
        raise UsageError(f"session_timeout: expected >= 1 second, got {s.session_timeout}")
    if s.state_write_delay < 0:
        raise UsageError(f"state_write_delay: expected >= 0 seconds, got {s.state_write_delay}")
    if s.batch_timeout <= 0:
        raise UsageError(f"batch_timeout: expected > 0 seconds, got {s.batch_timeout}")
    if s.broker_start_timeout <= 0:
        raise UsageError(f"broker_start_timeout: expected > 0 seconds, got {s.broker_start_timeout}")
