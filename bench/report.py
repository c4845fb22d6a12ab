"""Where the engine benchmark's figures go: a section of docs/benchmarks.md and a key of docs/benchmarks.json.

Other sections and keys are kept (streams.reports), so each benchmark regenerates only its own figures.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.steal import QUIET, plot
from streams.app import WRITE_BUFFER_MB
from streams.reports import BENCHMARKS_TITLE, merge_json, write_section

DOCS = Path(__file__).resolve().parent.parent / "docs"
KEY = "engine"
START, END = "<!-- bench:engine:start -->", "<!-- bench:engine:end -->"
LATENCY_PNG = "latency_by_second.png"
LOAD_PNG = "latency_by_load.png"
_PACKAGES = ("faust-streaming", "aiokafka", "confluent-kafka", "torch", "rocksdict", "numpy", "orjson")


def machine() -> dict[str, Any]:
    """The machine and the versions the figures depend on; load is sampled again beside each phase."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
            "memory_gib": round(mem_kb / 2**20, 1), "python": platform.python_version(),
            **{name: version(name) for name in _PACKAGES}}


def load_average() -> list[float]:
    """1-, 5- and 15-minute load averages: other developers share these cores, so figures carry the load."""
    return [round(x, 2) for x in os.getloadavg()]


def write(docs: Path, entry: dict[str, Any]) -> None:
    """Store `entry` under KEY in docs/benchmarks.json and its tables between our markers in docs/benchmarks.md."""
    docs.mkdir(parents=True, exist_ok=True)
    merge_json(docs / "benchmarks.json", KEY, entry)
    write_section(docs / "benchmarks.md", START, END, markdown(entry), BENCHMARKS_TITLE)
    by_second = entry["engine"]["latency"].get("by_second")
    if by_second:
        plot(by_second, docs / LATENCY_PNG, f"Engine latency by second at {entry['engine']['latency']['rate']:,}/s "
                                            "(shipped policy)")
    timed = _timed_points(entry)
    if timed:
        plot_load(timed, docs / LOAD_PNG)


def _n(x: float | None, digits: int = 0) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:,.{2 if a < b else 1}f}x" if a and b else "n/a"


def _cpu(throughput: dict[str, Any]) -> str:
    """CPU time per event and cores busy over the measured interval (older runs did not record them)."""
    if "cpu_us_per_event" not in throughput:
        return "n/a"
    return f"{throughput['cpu_us_per_event']:.1f} ({throughput['cores']:.2f})"


def _placement(e: dict[str, Any]) -> str:
    """Where the latency phases' worker ran (older runs, and `--shared-cores`, did not place it)."""
    if e.get("worker_core") is None:
        return "The worker, the broker and the benchmark's own process share every core."
    return (f"In the latency phases the worker runs on CPU {e['worker_core']}, a core of its own, and the local "
            "broker and the benchmark's own process (load generator, action reader) on the others, as when workers "
            "do not run beside the broker and the sources (bench/cores.py; `--shared-cores`: all on every core); in "
            "the throughput phases every process may run on every core.")


def markdown(e: dict[str, Any]) -> str:
    m, eng, nai = e["machine"], e["engine"], e["naive"]
    lines = [
        START,
        "## Streaming engine: throughput, latency and memory, beside the naive pipeline",
        "",
        f"Measured {e['date']} with `{e['command']}` on {m['cpu']} ({m['cores']} cores shared with other "
        f"developers' work, so figures are noisy; load averages and the hypervisor's steal are recorded beside "
        f"each phase), "
        f"{m['memory_gib']} GiB, "
        f"Python {m['python']}, faust-streaming {m['faust-streaming']}, aiokafka {m['aiokafka']}, "
        f"confluent-kafka {m['confluent-kafka']}, torch {m['torch']}, rocksdict {m['rocksdict']}, numpy {m['numpy']}, "
        f"orjson {m['orjson']}; the local single-node broker; model {e['model']}; {e['partitions']} partitions; "
        f"batches of up to {e['batch_size']:,}, closed {e['batch_timeout'] * 1000:g} ms after the previous one; a "
        f"state cache of {e['state_cache_mb']} MiB whose changes are written {e['state_write_delay']:g} s after "
        f"they are made; {e['torch_threads']} torch thread per process (OMP_NUM_THREADS, set by the benchmark for "
        f"every process: the figures are per core). {_placement(e)}",
        "",
        "| measure | engine (`lam worker`) | naive (`bench/naive.py`) | engine / naive |",
        "|---|---:|---:|---:|",
        f"| touchpoints consumed | {eng['throughput']['events']:,} | {nai['throughput']['events']:,} | |",
        f"| sustained throughput, events/s per worker process | {_n(eng['throughput']['events_per_second'])} "
        f"| {_n(nai['throughput']['events_per_second'])} "
        f"| {_ratio(eng['throughput']['events_per_second'], nai['throughput']['events_per_second'])} |",
        f"| worker CPU per touchpoint, µs (cores busy) | {_cpu(eng['throughput'])} | {_cpu(nai['throughput'])} "
        f"| {_ratio(eng['throughput'].get('cpu_us_per_event'), nai['throughput'].get('cpu_us_per_event'))} |",
        f"| peak resident memory, MiB | {_n(eng['throughput']['peak_rss_mib'])} "
        f"| {_n(nai['throughput']['peak_rss_mib'])} | |",
        f"| share of touchpoints that led to an action | {eng['throughput']['action_share']:.2%} "
        f"| {nai['throughput']['action_share']:.2%} | |",
    ]
    for key, what in (("latency", "shipped policy"), ("latency_eager", "stress: an action per touchpoint")):
        lines += _latency_rows(key, what, eng, nai)
    lines += [
        f"| load average (1 min) during throughput / latency / stress | {eng['throughput']['load'][0]} / "
        f"{eng['latency']['load'][0]} / {eng['latency_eager']['load'][0]} | {nai['throughput']['load'][0]} / "
        f"{nai['latency']['load'][0]} / {nai['latency_eager']['load'][0]} | |",
        f"| CPU time taken by the hypervisor (steal) during throughput / latency / stress | "
        f"{_stolen(eng)} | {_stolen(nai)} | |",
        "",
        "Throughput: N simulated touchpoints of M customers are loaded into a fresh input topic first; one worker "
        "process then starts on it with a fresh application id and state folder, and the rate counts the events "
        "committed between the consumer group's first commit and its last commit before the topic's end (start-up, "
        "rebalance and the wait for the worker's next commit after its last batch are left out). Policy: the "
        "shipped `streams/policy.toml`. Worker CPU is the process's user and system time over the same interval, "
        "per touchpoint: steadier than the rate when other work takes these cores. Peak memory is the worker's "
        "VmHWM. "
        "The naive design runs the first naive-events touchpoints of the same stream (a rate is comparable). "
        "Latency (the headline): touchpoints produced at half the maximum rate measured above, with event_time = "
        "wall clock at production (producer linger 5 ms; the touchpoints are simulated and encoded before the phase "
        "starts and released by the millisecond, so that the load generator takes little of the cores it shares "
        "with the worker), to a worker "
        "restarted on the throughput phase's topics "
        "and states, under the same shipped policy; the touchpoints are the simulated world's next ones, so its "
        "customers have states and the policy's minimum of touchpoints, cool-downs and contact limits apply (in "
        "wall-clock time: a customer's first gap spans from the simulated history to now). "
        "Latency is the arrival time of an action at a consumer minus its trigger's event_time; only touchpoints "
        "that lead to an action are timed, so the sample count is given beside the offered touchpoints (a 99th "
        "percentile of n samples rests on its n/100 slowest: under 1,000 samples, read it as indicative). "
        "The engine stamps an action's `emitted_at` as it starts the batch of its trigger, the naive design as it "
        "sends it: for the engine, the share up to `emitted_at` is the trigger's way to the batch (producer, "
        "broker, fetch and the wait for the batch in progress), the rest the batch's work and the action's "
        "delivery. "
        "Stress: the same rate to a fresh worker under a policy that acts on every touchpoint (threshold 0, re-arm "
        "always, no cool-down, no contact limits), so every touchpoint is timed; it sends an action per touchpoint, "
        "work the shipped policy does not do, so the worker runs closer to its capacity. Both include the worker's "
        "batch wait (`--batch-timeout`). CPU is each process's user and system time over the seconds touchpoints "
        "are offered: the worker's, the local broker's (n/a for a broker `lam broker start` did not start) and "
        "the benchmark's own, whose threads produce the touchpoints and read the actions back.",
        "",
        *_by_second(eng["latency"]),
        *_load_curve(e),
        *_scale_out(e),
        "### State memory as the customer base grows",
        "",
        "| customer states | on disk, MiB | bytes per state on disk | peak RSS, MiB (writer) "
        "| peak RSS, MiB (engine over RocksDB) | engine events/s over RocksDB |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for s in e["states"]:
        lines.append(f"| {s['states']:,} | {_n(s['disk_mib'])} | {_n(s['disk_bytes_per_state'])} "
                     f"| {_n(s['write_peak_rss_mib'])} | {_n(s['engine_rss_mib'])} "
                     f"| {_n(s['engine_events_per_second'])} |")
    c, rate = e["ceiling"], eng["throughput"]["events_per_second"]
    floor, bound = e["floor"]["throughput"], e["worker_bound_per_second"]
    lines += [
        "",
        f"States of the real layout ({e['state_bytes']:,} bytes) are written into {e['partitions']} RocksDB "
        "databases opened with the worker's options (`StaggeredOptions`, faust's RocksDBOptions with the table "
        "options of streams/app.py and a write buffer per partition); then a fresh process loads the model, opens "
        "them and runs `Engine.process`, with the worker's default state cache (`--state-cache-mb`), over batches "
        f"of touchpoints of random customers ({e['states_engine_events']:,} touchpoints, reads and writes: random "
        "customers of a large base seldom meet the cache again, so nearly every state is read from RocksDB); its "
        "VmHWM is the RSS column, so it includes Python, torch, the model and the cache (not Faust or Kafka "
        "clients). RocksDB's share is bounded by the block caches (one per partition, `--rocksdb-cache-mb` each) "
        f"and memtables (2 x {WRITE_BUFFER_MB} MiB per partition), the cache's by its size, not by the number of "
        "states; on disk, blocks are compressed.",
        "",
        "### The ceiling: the same work without Kafka or Faust",
        "",
        "| stage, per touchpoint | µs | events/s alone |",
        "|---|---:|---:|",
    ]
    for name, us in c["per_event_us"].items():
        lines.append(f"| {name} | {us:.2f} | {_n(1e6 / us if us else None)} |")
    lines += [
        f"| the physical ceiling: decode + GRU step + RocksDB read + RocksDB write | {c['ceiling_us']:.2f} "
        f"| {_n(c['ceiling_per_second'])} |",
        f"| `Engine.process` over RocksDB, batches of {c['batch']:,}, no Kafka "
        f"| {1e6 / c['engine_rocksdb_per_second']:.2f} | {_n(c['engine_rocksdb_per_second'])} |",
        f"| Kafka and Faust alone: the worker's app with an engine that does nothing (`bench/floor.py`), "
        f"{floor['events']:,} touchpoints on the broker | {1e6 / floor['events_per_second']:.2f} "
        f"| {_n(floor['events_per_second'])} |",
        f"| one worker process at most: the ceiling's stages + Kafka and Faust alone | {1e6 / bound:.2f} "
        f"| {_n(bound)} |",
        "",
        f"The engine under Kafka and Faust reaches {rate / c['ceiling_per_second']:.0%} "
        f"of the ceiling, {rate / c['engine_rocksdb_per_second']:.0%} of "
        f"`Engine.process` alone and {e['ratios']['engine_share_of_worker_bound']:.0%} of the most one worker "
        "process can do here: the sum of the stages every touchpoint must pass, each timed alone. librdkafka fetches "
        "and parses the input outside the interpreter; every stage, the group, the commits and the sends of states "
        "and actions run under the worker's one interpreter lock.",
        "",
        f"Targets: >= 50,000 events/s per worker ({_verdict(eng['throughput']['events_per_second'] >= 50_000)}"
        f"{'' if bound >= 50_000 else f', and above the bound of one worker process here, {bound:,}/s'}), "
        f">= 10x the naive design ({_verdict(_ok_ratio(eng, nai))}), p99 < 100 ms at half the maximum rate "
        f"({_verdict(eng['latency']['p99'] is not None and eng['latency']['p99'] < 100)}), RSS < 1.5 GB with "
        f"10 million states ({_ten_million(e)}).",
        END,
    ]
    return "\n".join(lines)


def _scale_out(e: dict[str, Any]) -> list[str]:
    """Scale is more workers in the consumer group: the same touchpoints through several worker processes."""
    one, many = e["engine"]["throughput"], e["scale_out"]["throughput"]
    workers = e["scale_out"]["workers"]
    return [
        "### Scale-out: more workers in the consumer group",
        "",
        "| worker processes in the group | events/s, all together | worker CPU per touchpoint, µs (cores busy) "
        "| load average (1 min) |",
        "|---:|---:|---:|---:|",
        f"| 1 | {_n(one['events_per_second'])} | {_cpu(one)} | {one['load'][0]} |",
        f"| {workers} | {_n(many['events_per_second'])} | {_cpu(many)} | {many['load'][0]} |",
        "",
        f"The throughput phase's touchpoints, loaded again into fresh topics, through {workers} worker processes "
        "of one application id (each with its own state folder): Kafka gives each a share of the partitions. "
        f"On this machine's {e['machine']['cores']} cores the broker and the workers share the same cores. CPU "
        "is the workers' summed user and system time. The rate counts from the first commit once the group is "
        "stable with all of them.",
        "",
    ]


def _timed_points(e: dict[str, Any]) -> list[dict[str, Any]]:
    """The load curve's phases that timed actions (older runs have no curve)."""
    return [point for point in e["engine"].get("load_curve", []) if point["p99"] is not None]


def _load_curve(e: dict[str, Any]) -> list[str]:
    """The engine's latency at each share of its maximum rate measured, the headline's half among them."""
    curve = e["engine"].get("load_curve")
    if not curve:
        return []
    lines = ["### Latency as the offered rate grows", "",
             "| share of the maximum rate | offered events/s | actions timed | p50 / p95 / p99, ms | worker cores "
             "| steal |", "|---:|---:|---:|---|---:|---:|"]
    lines += [f"| {p['share']:g} | {_n(p['rate'])} | {p['actions']:,} | {_percentiles(p, '')} "
              f"| {_n(p['worker_cores'], 2)} | {'n/a' if p['stolen'] is None else format(p['stolen'], '.0%')} |"
              for p in curve]
    timed = _timed_points(e)
    within = [f"{p['share']:g}" for p in timed if p["p99"] < 100]
    verdict = (f"p99 was under 100 ms at {', '.join(within)} of the maximum rate in this run" if within
               else "p99 was 100 ms or more at every rate measured")
    lines += ["", "The headline's latency phase again at other shares of the maximum rate: each a worker restarted "
              "on the same topics and states for the same seconds, the simulated world's touchpoints going on where "
              f"the previous phase left them. {verdict}.", ""]
    return lines + ([f"![engine latency by offered rate]({LOAD_PNG})", ""] if timed else [])


def plot_load(points: list[dict[str, Any]], path: Path) -> None:
    """p50, p95 and p99 (log scale) against the offered rate, with the target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = [p["rate"] for p in points]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key, color in (("p99", "tab:red"), ("p95", "tab:purple"), ("p50", "tab:blue")):
        ax.plot(rates, [p[key] for p in points], marker="o", label=key, color=color)
    for p in points:
        ax.annotate(f"{p['share']:g} of max", (p["rate"], p["p99"]), textcoords="offset points", xytext=(4, 6),
                    fontsize=8)
    ax.axhline(100, color="grey", linestyle=":", label="target p99 (100 ms)")
    ax.set_yscale("log")
    ax.set_xlabel("offered touchpoints per second")
    ax.set_ylabel("event time to action, ms")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Engine latency by offered rate (shipped policy)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _latency_rows(key: str, what: str, eng: dict[str, Any], nai: dict[str, Any]) -> list[str]:
    """Percentile rows and the phase's rate and sample count, for the latency phase under `key`."""
    a, b = eng[key], nai[key]
    rows = [f"| latency {p}, ms, {what} (event time to action on the output topic) | {_n(a[p], 1)} "
            f"| {_n(b[p], 1)} | {_ratio(a[p], b[p])} |" for p in ("p50", "p95", "p99")]
    rows.append(f"| {what}: of which event time to the action's `emitted_at`, p50 / p95 / p99, ms "
                f"| {_percentiles(a, 'emitted_')} | {_percentiles(b, 'emitted_')} | |")
    rows.append(f"| {what}: over the seconds with steal under {QUIET:.0%}, p50 / p95 / p99, ms (seconds: quiet "
                f"/ all) | {_quiet(a)} | {_quiet(b)} | |")
    rows.append(f"| {what}: offered events/s; touchpoints offered / actions timed; CPU, cores: worker / broker / "
                f"load generator and action reader | {_offered(a)} | {_offered(b)} | |")
    return rows


def _offered(phase: dict[str, Any]) -> str:
    cores = " / ".join("n/a" if phase.get(key) is None else str(phase[key])
                       for key in ("worker_cores", "broker_cores", "bench_cores"))
    return f"{_n(phase['rate'])}; {phase['offered']:,} / {phase['actions']:,}; {cores}"


def _by_second(phase: dict[str, Any]) -> list[str]:
    if not phase.get("by_second"):
        return []
    return [f"Steal: the hypervisor's share of the machine's cores is sampled every second of each latency phase "
            f"(bench/steal.py), and the quiet seconds' percentiles are those of the actions whose trigger fell in a "
            f"second when it took under {QUIET:.0%}. The engine's latency phase, second by second:", "",
            f"![engine latency and steal by second]({LATENCY_PNG})", ""]


def _quiet(phase: dict[str, Any]) -> str:
    if "quiet" not in phase:
        return "n/a"
    calm = phase["quiet"]
    return f"{_percentiles(calm, '')} ({calm['seconds']} / {calm['of_seconds']})"


def _stolen(design: dict[str, Any]) -> str:
    shares = [design[phase].get("stolen") for phase in ("throughput", "latency", "latency_eager")]
    return " / ".join("n/a" if share is None else f"{share:.0%}" for share in shares)


def _percentiles(phase: dict[str, Any], prefix: str) -> str:
    return " / ".join(_n(phase.get(f"{prefix}{p}"), 1) for p in ("p50", "p95", "p99"))


def _ok_ratio(eng: dict[str, Any], nai: dict[str, Any]) -> bool:
    a, b = eng["throughput"]["events_per_second"], nai["throughput"]["events_per_second"]
    return bool(a and b and a / b >= 10)


def _verdict(ok: bool) -> str:
    return "met" if ok else "not met"


def _ten_million(e: dict[str, Any]) -> str:
    row = next((s for s in e["states"] if s["states"] == 10_000_000), None)
    if row is None:
        return "not measured in this run"
    worker = e["engine"]["throughput"]["peak_rss_mib"]
    return (f"{_verdict(row['engine_rss_mib'] * 2**20 < 1.5e9)} by the engine over RocksDB, "
            f"{row['engine_rss_mib']:,.0f} MiB; the Faust worker itself peaked at {worker:,.0f} MiB with "
            f"{e['customers']:,} customers, {_verdict(worker * 2**20 < 1.5e9)} for it")


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)
