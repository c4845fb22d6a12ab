"""`lam bench`: throughput, latency and memory of the engine beside the naive design, in one run.

    .venv/bin/lam bench [--events 2000000] [--customers 200000] [--naive-events 100000]
                        [--states 100000,1000000,10000000] [--latency-seconds 60] [--eager-latency-seconds 30]
                        [--load-shares 0.2,0.3,0.4] [--quick]

Phases: the ceiling (each hot-path stage alone), engine and naive throughput on the real broker, engine and naive
latency at half their maximum rates (under the shipped policy, the headline, and under a policy acting on every
touchpoint, the stress figure), the engine's latency at lower shares of its maximum rate (the load curve), the
worker's Kafka and Faust side alone (bench/floor.py), state memory and disk at each size. Writes
docs/benchmarks.md (its section between the `bench:engine` markers) and the "engine" key of docs/benchmarks.json.
A benchmark: it asserts nothing.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import islice
from operator import itemgetter
from pathlib import Path
from typing import Any

import torch

from bench import ceiling, cores, kafka_run, report, states
from model.artifact import load
from sim.world import World, WorldConfig
from streams import kafka
from streams.app import settle_garbage_collector
from streams.contract import Touchpoint
from streams.errors import LamError
from streams.settings import Settings
from streams.state import StateLayout

TORCH_THREADS = 1
LATENCY_RATE_SHARE = 0.5  # latency is measured at this share of the maximum rate measured in the same run
SCALE_OUT_WORKERS = 2  # one per core here: the scale-out phase runs this many workers in one consumer group
EVENTS_PER_CUSTOMER_DAY = 0.07  # the simulator's default world, measured: ~13 touchpoints per customer in 180 days
# Acts on every touchpoint (threshold 0, re-armed at once, no cool-down or limits), so each one is timed.
EAGER_POLICY = """version = 1
rearm_margin = -1.0
recent_purchase_days = 0
min_events = 1
action_ttl_hours = 48
holdout_share = 0.0

[[actions]]
name = "call_fiber_offer"
product = "fiber_1g"
channel = "telemarketing"
threshold = 0.0
value = 1.0
cooldown_days = 0
"""


@dataclass(frozen=True)
class Options:
    events: int = 2_000_000
    customers: int = 200_000
    naive_events: int = 100_000
    states: tuple[int, ...] = (100_000, 1_000_000, 10_000_000)
    latency_seconds: float = 60.0  # the shipped policy acted on 3% of them in reduced runs: ~8,000 samples at 4,500/s
    eager_latency_seconds: float = 30.0
    # The engine's latency is measured at these shares of its maximum rate too (shipped policy, `latency_seconds`
    # each), beside the half-rate headline: the rate up to which a worker keeps a given tail.
    load_shares: tuple[float, ...] = (0.2, 0.3, 0.4)
    state_engine_events: int = 100_000  # touchpoints the engine applies over each state database
    ceiling_events: int = 20_000
    own_core: bool = True  # latency phases: the worker on a core of its own (bench/cores.py); --shared-cores: not
    quick: bool = False
    docs: Path = report.DOCS

    @property
    def command(self) -> str:
        flags = (" --quick" if self.quick else "") + ("" if self.own_core else " --shared-cores")
        return (f".venv/bin/lam bench --events {self.events} --customers {self.customers} --naive-events "
                f"{self.naive_events} --states {','.join(map(str, self.states))} --latency-seconds "
                f"{self.latency_seconds:g} --eager-latency-seconds {self.eager_latency_seconds:g} --load-shares "
                f"{','.join(f'{share:g}' for share in self.load_shares)}{flags}")


# Small enough for the test suite (well under a minute of Kafka work), large enough to exercise every phase.
QUICK = Options(events=20_000, customers=4_000, naive_events=2_000, states=(10_000,), latency_seconds=4.0,
                eager_latency_seconds=4.0, load_shares=(0.25,), state_engine_events=4_000, ceiling_events=4_000,
                quick=True)


def _world(customers: int, events: int) -> World:
    """A simulated world with at least `events` touchpoints (its first `events` in time order are used)."""
    days = max(30.0, 1.2 * events / (customers * EVENTS_PER_CUSTOMER_DAY))
    world = World(WorldConfig(customers=customers, days=days, seed=1))
    if len(world.columns) < events:
        raise LamError(f"the simulated world has {len(world.columns):,} touchpoints, fewer than --events {events:,}; "
                       "give more --customers")
    return world


def _endless(world: World, skip: int = 0) -> Iterator[Touchpoint]:
    """The world's touchpoints after the first `skip`, then over and over, for latency phases longer than its
    history."""
    yield from islice(world.events(), skip, None)
    while True:
        yield from world.events()


@contextmanager
def _loaded(settings: Settings, argv: tuple[str, ...], world: World, events: int, workdir: Path,
            policy: Path, workers: int = 1) -> Iterator[tuple[kafka_run.Scratch, dict[str, Any]]]:
    """Fresh topics whose input holds the world's first `events` touchpoints, and the throughput of `workers`
    processes of `argv` over them; the topics are deleted on leaving."""
    name = argv[-1].removeprefix("bench.") + (f"-x{workers}" if workers > 1 else "")
    scratch = kafka_run.Scratch.create(settings, workdir, settings.model_path, policy, kafka_run.free_port())
    try:
        report.progress(f"{name}: loading {events:,} touchpoints into {scratch.settings.input_topic}")
        kafka_run.fill(scratch, islice(world.events(), events), events)
        tp = kafka_run.throughput(argv, scratch, workdir / f"{name}-throughput.log", timeout=max(600.0, events / 100),
                                  workers=workers)
        report.progress(f"{name} throughput: {tp}")
        yield scratch, tp
    finally:
        scratch.delete()


def _on_broker(settings: Settings, argv: tuple[str, ...], world: World, events: int, options: Options,
               workdir: Path, eager: Path, load_shares: tuple[float, ...] = ()) -> dict[str, Any]:
    """Throughput over `events` preloaded touchpoints, then latency at LATENCY_RATE_SHARE of that rate: under the
    shipped policy on the states the throughput phase left (the headline), and under the eager policy on fresh
    ones (the stress figure); and under the shipped policy at each of `load_shares` of that rate (the curve)."""
    name = argv[-1].removeprefix("bench.")
    curve: list[dict[str, Any]] = []
    with _loaded(settings, argv, world, events, workdir, states.SHIPPED_POLICY) as (scratch, tp):
        rate = max(1.0, tp["events_per_second"] * LATENCY_RATE_SHARE)
        # The world goes on where the throughput phase stopped, so its customers have the states a live worker's
        # would have (the policy's minimum of touchpoints, cool-downs and contact limits apply as in production).
        live = _endless(world, events)
        lat = kafka_run.latency(argv, scratch, workdir / f"{name}-latency.log", live, rate=rate,
                                seconds=options.latency_seconds, own_core=options.own_core)
        report.progress(f"{name} latency: {lat}")
        for share in sorted(set(load_shares) - {LATENCY_RATE_SHARE}):  # the headline is the curve's point there
            point = kafka_run.latency(argv, scratch, workdir / f"{name}-latency-{share:g}.log", live,
                                      rate=max(1.0, tp["events_per_second"] * share),
                                      seconds=options.latency_seconds, own_core=options.own_core)
            curve.append(_point(share, point))
            report.progress(f"{name} latency at {share:g} of the maximum rate: {curve[-1]}")
    scratch = kafka_run.Scratch.create(settings, workdir, settings.model_path, eager, kafka_run.free_port())
    try:
        eager_lat = kafka_run.latency(argv, scratch, workdir / f"{name}-latency-eager.log", _endless(world),
                                      rate=rate, seconds=options.eager_latency_seconds, own_core=options.own_core)
    finally:
        scratch.delete()
    report.progress(f"{name} latency, eager policy: {eager_lat}")
    result = {"throughput": tp, "latency": lat, "latency_eager": eager_lat}
    if load_shares:
        result["load_curve"] = sorted(curve + [_point(LATENCY_RATE_SHARE, lat)], key=itemgetter("share"))
    return result


def _point(share: float, phase: dict[str, Any]) -> dict[str, Any]:
    """A latency phase on the load curve, with its figures second by second (what explains a tail)."""
    return {"share": share, **phase}


def _floor(settings: Settings, world: World, events: int, workdir: Path) -> dict[str, Any]:
    """Throughput of the worker's Kafka and Faust side alone (bench/floor.py) over the engine's touchpoints."""
    with _loaded(settings, kafka_run.FLOOR, world, events, workdir, states.SHIPPED_POLICY) as (_, tp):
        return {"throughput": tp}


def _scale_out(settings: Settings, world: World, events: int, workdir: Path) -> dict[str, Any]:
    """Throughput of SCALE_OUT_WORKERS engine workers in one consumer group over the engine's touchpoints."""
    with _loaded(settings, kafka_run.ENGINE, world, events, workdir, states.SHIPPED_POLICY,
                 workers=SCALE_OUT_WORKERS) as (_, tp):
        return {"workers": SCALE_OUT_WORKERS, "throughput": tp}


def run(settings: Settings, options: Options) -> dict[str, Any]:
    """Every phase, in one run; returns the entry written to the docs."""
    # One torch thread in every process of the run (workers and children inherit the variable): throughput is
    # per core, and on shared cores torch's default of one thread per core makes each step wait for its threads.
    os.environ["OMP_NUM_THREADS"] = str(TORCH_THREADS)
    torch.set_num_threads(TORCH_THREADS)
    kafka.require_broker(settings.bootstrap)
    model = load(settings.model_path)
    policy = states.shipped_policy(model)
    settle_garbage_collector()  # the ceiling's stages run under the worker's collector settings
    world = _world(options.customers, options.events)
    entry: dict[str, Any] = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "command": options.command,
        "machine": report.machine(), "model": f"{model.version} (hidden size {model.hidden_size})",
        "partitions": settings.partitions, "batch_size": settings.batch_size, "torch_threads": TORCH_THREADS,
        "batch_timeout": settings.batch_timeout, "state_cache_mb": settings.state_cache_mb,
        "state_write_delay": settings.state_write_delay,
        "worker_core": cores.own_core() if options.own_core else None,
        "state_bytes": StateLayout.of(model, len(policy.actions)).dtype.itemsize,
        "customers": options.customers, "states_engine_events": options.state_engine_events,
    }
    with tempfile.TemporaryDirectory(prefix="lam-bench-") as tmp:
        workdir = Path(tmp)
        eager = workdir / "eager-policy.toml"
        eager.write_text(EAGER_POLICY)
        report.progress("ceiling: each stage alone")
        entry["ceiling"] = ceiling.measure(model, policy, list(islice(world.events(), options.ceiling_events)),
                                           settings.partitions, settings.rocksdb_cache_mb,
                                           min(options.customers, 200_000))
        entry["ceiling"]["load"] = report.load_average()
        report.progress(f"ceiling: {entry['ceiling']}")
        entry["engine"] = _on_broker(settings, kafka_run.ENGINE, world, options.events, options, workdir, eager,
                                     options.load_shares)
        entry["naive"] = _on_broker(settings, kafka_run.NAIVE, world, options.naive_events, options, workdir, eager)
        entry["floor"] = _floor(settings, world, options.events, workdir)
        entry["scale_out"] = _scale_out(settings, world, options.events, workdir)
        entry["states"] = states.measure(options.states, settings.partitions, settings.rocksdb_cache_mb,
                                         settings.model_path, workdir, options.state_engine_events)
    rate = entry["engine"]["throughput"]["events_per_second"]
    # The most one worker process can do: every stage a touchpoint passes, each timed alone, added up.
    bound_us = entry["ceiling"]["ceiling_us"] + 1e6 / max(1, entry["floor"]["throughput"]["events_per_second"])
    entry["worker_bound_per_second"] = round(1e6 / bound_us)
    entry["ratios"] = {
        "throughput": round(rate / max(1, entry["naive"]["throughput"]["events_per_second"]), 2),
        "p99_latency": _ratio(entry["naive"]["latency"]["p99"], entry["engine"]["latency"]["p99"]),
        "engine_share_of_ceiling": round(rate / entry["ceiling"]["ceiling_per_second"], 3),
        "engine_share_of_worker_bound": round(rate / entry["worker_bound_per_second"], 3),
    }
    report.write(options.docs, entry)
    return entry


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def summary(entry: dict[str, Any]) -> str:
    eng, nai, r = entry["engine"], entry["naive"], entry["ratios"]
    lines = [f"throughput: engine {eng['throughput']['events_per_second']:,} events/s, naive "
             f"{nai['throughput']['events_per_second']:,} events/s: {r['throughput']}x",
             *(f"latency p50/p95/p99 ms{label}: engine {_percentiles(eng[key])}; naive {_percentiles(nai[key])}"
               for key, label in (("latency", ""), ("latency_eager", ", eager policy (stress)"))),
             "engine latency p99 ms by share of its maximum rate: "
             + ", ".join(f"{p['share']:g}: {p['p99']}" for p in eng["load_curve"]),
             f"peak RSS MiB: engine {eng['throughput']['peak_rss_mib']}, naive {nai['throughput']['peak_rss_mib']}",
             f"ceiling: {entry['ceiling']['ceiling_per_second']:,} events/s; "
             f"engine at {r['engine_share_of_ceiling']:.0%} of it",
             f"Kafka and Faust alone: {entry['floor']['throughput']['events_per_second']:,} events/s; one worker "
             f"process at most {entry['worker_bound_per_second']:,} events/s, engine at "
             f"{r['engine_share_of_worker_bound']:.0%} of it",
             f"{entry['scale_out']['workers']} workers in one group: "
             f"{entry['scale_out']['throughput']['events_per_second']:,} events/s together"]
    lines += [f"states {s['states']:,}: {s['disk_mib']:,.0f} MiB on disk, engine RSS {s['engine_rss_mib']:,.0f} MiB"
              for s in entry["states"]]
    return "\n".join(lines)


def _percentiles(lat: dict[str, Any]) -> str:
    return f"{lat['p50']}/{lat['p95']}/{lat['p99']} at {lat['rate']:,}/s ({lat['actions']:,} actions)"


def options_from(quick: bool, **given: Any) -> Options:
    """The quick or full defaults, with the values given (None: not given) put over them."""
    return dataclasses.replace(QUICK if quick else Options(), **{k: v for k, v in given.items() if v is not None})


def main(settings: Settings, quick: bool, docs: str | None, **given: Any) -> int:
    """`lam bench`: run, write the docs, print the figures to stdout."""
    with kafka_run.stopped_as_interrupted():
        print(summary(run(settings, options_from(quick, docs=Path(docs) if docs else None, **given))))
    return 0
