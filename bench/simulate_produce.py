"""Benchmark: simulator throughput (writing a 1M-customer history) and producer throughput into the real broker.

    .venv/bin/python bench/simulate_produce.py [--customers 1000000] [--replay 3000000] [--live 1000000]

Writes its figures into docs/benchmarks.md between the `bench:simulate-produce` markers (other sections are kept)
and into docs/benchmarks.json under "simulate_produce". A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shlex
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import confluent_kafka
import numpy as np
import orjson

from sim.write import simulate
from streams.reports import BENCHMARKS_TITLE, merge_json, write_section
from sim.world import World, WorldConfig
from streams import kafka, produce
from streams.errors import LamError
from streams.settings import load

DOCS = Path(__file__).resolve().parent.parent / "docs"
START, END = "<!-- bench:simulate-produce:start -->", "<!-- bench:simulate-produce:end -->"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000, help="customers of the simulated world")
    parser.add_argument("--replay", type=int, default=3_000_000, help="events of the file to produce")
    parser.add_argument("--live", type=int, default=1_000_000, help="events to produce from the live simulator")
    parser.add_argument("--partitions", type=int, default=12, help="partitions of the scratch topics")
    args = parser.parse_args()
    settings = load()
    kafka.require_broker(settings.bootstrap)
    config = WorldConfig(customers=args.customers)
    with tempfile.TemporaryDirectory(prefix="lam-bench-") as tmp:
        path = Path(tmp) / "history.jsonl.gz"
        started = time.perf_counter()
        world = World(config)
        world.columns  # generation alone, before formatting and compression
        generated = time.perf_counter() - started
        written = simulate(world, path)
        simulated = {"customers": config.customers, "days": config.days, "events": written.events,
                     "generate_seconds": round(generated, 2), "total_seconds": round(generated + written.seconds, 2),
                     "events_per_second": round(written.events / (generated + written.seconds)),
                     "file_bytes": path.stat().st_size}
        print(f"simulate: {simulated}", file=sys.stderr)
        replay = _produce(settings, args.partitions, produce.Plan(file=str(path), limit=args.replay))
    live = _produce(settings, args.partitions, produce.Plan(world=config, limit=args.live))
    _record({"simulate": simulated, "produce_file": replay, "produce_live_simulator": live}, args)


def _produce(settings: Any, partitions: int, plan: produce.Plan) -> dict[str, Any]:
    topic = f"lam.bench.{uuid.uuid4().hex[:8]}"
    try:
        result = produce.run(dataclasses.replace(settings, input_topic=topic, partitions=partitions), plan)
    finally:
        kafka.delete_topics(settings.bootstrap, [topic])
    figures = {"events": result.delivered, "seconds": round(result.seconds, 2),
               "events_per_second": round(result.delivered / result.seconds), "partitions": partitions}
    print(f"produce: {figures}", file=sys.stderr)
    return figures


def _machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
            "memory_gib": round(mem_kb / 2**20, 1),
            "python": platform.python_version(), "numpy": np.__version__, "orjson": orjson.__version__,
            "confluent_kafka": confluent_kafka.__version__, "librdkafka": confluent_kafka.libversion()[0]}


def _record(figures: dict[str, Any], args: argparse.Namespace) -> None:
    command = ".venv/bin/python bench/simulate_produce.py " + shlex.join(
        [f"--{k}={v}" for k, v in vars(args).items()])
    entry = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "command": command,
             "machine": _machine(), **figures}
    merge_json(DOCS / "benchmarks.json", "simulate_produce", entry)
    write_section(DOCS / "benchmarks.md", START, END, _markdown(entry), BENCHMARKS_TITLE)


def _markdown(e: dict[str, Any]) -> str:
    s, f, live, m = e["simulate"], e["produce_file"], e["produce_live_simulator"], e["machine"]
    return "\n".join([
        START,
        "## Simulator and producer throughput",
        "",
        f"Measured {e['date']} with `{e['command']}` on {m['cpu']} ({m['cores']} cores shared with other work, "
        f"{m['memory_gib']} GiB), Python {m['python']}, numpy {m['numpy']}, orjson {m['orjson']}, "
        f"confluent-kafka {m['confluent_kafka']} (librdkafka {m['librdkafka']}), the local single-node broker.",
        "",
        "| what | events | seconds | events/s |",
        "|---|---:|---:|---:|",
        f"| `lam simulate`: {s['customers']:,} customers, {s['days']:g} days, gzip JSON lines + truth "
        f"({s['file_bytes'] / 2**20:,.0f} MiB) | {s['events']:,} | {s['total_seconds']:,} "
        f"(generation {s['generate_seconds']}) | {s['events_per_second']:,} |",
        f"| `lam produce --file` (read, decode, encode, send, all acknowledged), {f['partitions']} partitions "
        f"| {f['events']:,} | {f['seconds']:,} | {f['events_per_second']:,} |",
        f"| `lam produce --simulate` (live simulator, as fast as possible), {live['partitions']} partitions "
        f"| {live['events']:,} | {live['seconds']:,} | {live['events_per_second']:,} |",
        "",
        "Producer figures count from the first send to the last acknowledgement (idempotent producer, lz4, "
        "murmur2 partitioning, keyed by customer id).",
        END,
    ])


if __name__ == "__main__":
    try:
        main()
    except LamError as exc:
        sys.exit(f"bench: error: {exc}")
