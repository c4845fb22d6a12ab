"""`lam replay`: a real touchpoint log through one worker on the real broker; its actions held against what the
customers did next, and the worker's throughput and latency on the log's real key distribution.

    .venv/bin/lam replay --events ../shared/data/retailrocket/events-2015-05-03_2015-07-31.csv.gz \\
        --mapping streams/mappings/retailrocket.toml --model-path artifacts/retailrocket.pt \\
        --policy-path streams/policies/retailrocket.toml --dataset retailrocket

Phases: the whole log goes into fresh topics in file order; one worker consumes it from the start with the model
and policy given (throughput, peak memory); every action is read back; then latency, with the log's touchpoints
re-stamped with the wall clock and offered again at half the measured rate to the same worker's states.

The actions are the real-data form of the telemarketing test. Evaluation period: from the model's split to one
horizon before the log's last touchpoint. Each (customer, day) the worker acted on in it counts once, and it
counts as an order if the customer bought within the horizon after the first trigger of that day. Beside it: the
base rates, and for each day the same number of customers chosen at that day's midnight, from what happened
before it, by each baseline of `lam evaluate` and by the same model scored as a daily batch list; those count
an order within the horizon from midnight. The worker acts during the day on what it just saw, which is what a
daily list cannot do: that difference is the point of streaming, and the daily model list shows how much of
the gain is the model and how much is acting in real time.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch
from confluent_kafka import TopicPartition

from bench import kafka_run, report
from bench.run import LATENCY_RATE_SHARE, TORCH_THREADS
from model import data, evaluate, measures, train
from model.artifact import LoadedModel, load
from model.data import EventTable
from model.encode import DAY_MS, HOUR_MS
from streams import kafka, sources
from streams.decide import load_policy
from streams.errors import LamError
from streams.reports import BENCHMARKS_TITLE, merge_json, write_section
from streams.settings import ROOT, Settings

BAR = "lam replay"


@dataclass(frozen=True)
class Options:
    events: Path
    mapping: Path | None
    dataset: str
    horizon_ms: int | None = None  # None: the model's
    latency_seconds: float = 30.0
    seed: int = 0  # tie breaks in the daily lists and the bootstrap
    docs: Path = report.DOCS

    def command(self, settings: Settings) -> str:
        mapping = f" --mapping {self.mapping}" if self.mapping else ""
        return (f".venv/bin/lam replay --events {self.events}{mapping} --model-path {settings.model_path} "
                f"--policy-path {settings.policy_path} --dataset {self.dataset}")


def read_actions(bootstrap: str, topic: str, partitions: int) -> list[dict[str, Any]]:
    """Every action event on the topic, decoded."""
    cons = kafka.consumer(bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        count = sum(cons.get_watermark_offsets(tp, timeout=10)[1] for tp in tps)
        if not count:
            return []
        return [orjson.loads(m.value()) for m in kafka.consume_exactly(cons, [topic], count, timeout=120)]
    finally:
        cons.close()


def bought_within(table: EventTable, customers: np.ndarray, after_ms: np.ndarray, horizon_ms: int) -> np.ndarray:
    """(n,) bool: customer `customers[i]` bought something in (after_ms[i], after_ms[i] + horizon_ms]."""
    rows = np.flatnonzero(table.purchase >= 0)
    # One sorted key per purchase, (customer, time), so each question is one binary search.
    scale = np.int64(1) << 42  # ms since 1970 stay below 2**42 until the year 2109
    keys = table.customer_of_row[rows].astype(np.int64) * scale + table.time_ms[rows]
    first_after = np.searchsorted(keys, customers.astype(np.int64) * scale + after_ms, side="right")
    nxt = keys[np.minimum(first_after, len(keys) - 1)] if len(keys) else np.zeros(len(customers), np.int64)
    return (first_after < len(keys)) & (nxt // scale == customers) & (nxt % scale <= after_ms + horizon_ms)


@dataclass(frozen=True)
class ActedDays:
    """The (customer, day) pairs the worker acted on in the evaluation period, with their first trigger."""

    customer: np.ndarray  # table customer index
    day_ms: np.ndarray  # midnight (UTC) of the trigger's day
    trigger_ms: np.ndarray


def acted_days(table: EventTable, actions: list[dict[str, Any]], start_ms: int, end_ms: int) -> ActedDays:
    index = {c: i for i, c in enumerate(table.customer_ids)}
    pairs = sorted((index[a["customer_id"]], a["trigger"]["event_time"]) for a in actions
                   if start_ms <= a["trigger"]["event_time"] < end_ms and a["customer_id"] in index)
    first: dict[tuple[int, int], int] = {}
    for c, t in pairs:
        first.setdefault((c, t // DAY_MS * DAY_MS), t)
    keys = np.array(list(first), dtype=np.int64).reshape(-1, 2)
    return ActedDays(keys[:, 0], keys[:, 1], np.fromiter(first.values(), dtype=np.int64, count=len(first)))


def active_base_rate(table: EventTable, start_ms: int, end_ms: int, horizon_ms: int) -> tuple[int, float]:
    """(customer, day) pairs with a touchpoint in [start, end), and the share that bought within the horizon
    after that day's first touchpoint: the rate of acting on whoever just showed up."""
    rows = np.flatnonzero((table.time_ms >= start_ms) & (table.time_ms < end_ms))
    cust, day = table.customer_of_row[rows].astype(np.int64), table.time_ms[rows] // DAY_MS
    _, first = np.unique(cust * (1 << 20) + day, return_index=True)  # rows are in time order per customer
    hit = bought_within(table, cust[first], table.time_ms[rows[first]], horizon_ms)
    return len(first), float(hit.mean()) if len(first) else 0.0


def daily_lists(table: EventTable, model: LoadedModel, acted: ActedDays, split_ms: int, horizon_ms: int,
                seed: int) -> dict[str, Any]:
    """Each day, as many customers as the worker acted on, chosen at midnight by each baseline and by the model
    as a daily list; order rates within the horizon from midnight, and the points' base rate."""
    days, counts = np.unique(acted.day_ms, return_counts=True)
    points = data.scoring_points(table, days, horizon_ms, len(model.products))
    scores = evaluate.baseline_scores(table, points, model, split_ms, horizon_ms, evaluate.EvalConfig(seed=seed))
    scores["model_daily_list"] = model.calibration.apply(
        train.score_points(model.net, table, points, progress="scoring daily lists"))[:, -1]
    label = points.labels[:, -1]
    rng = np.random.default_rng(seed)
    budget = counts[np.searchsorted(days, points.time_ms)]
    out: dict[str, Any] = {"points": int(len(label)), "points_base_rate": float(label.mean()), "lists": {}}
    for name, score in scores.items():
        rank, _ = measures.group_rank(score, points.time_ms, rng)
        chosen = rank < budget
        out["lists"][name] = {"calls": int(chosen.sum()), "orders": int(label[chosen].sum()),
                              "order_rate": float(label[chosen].mean()),
                              "customers": points.customer[chosen], "labels": label[chosen]}
    return out


def outcomes(table: EventTable, model: LoadedModel, actions: list[dict[str, Any]], split_ms: int,
             horizon_ms: int, seed: int) -> dict[str, Any]:
    """The actions held against what happened (see the module's docstring)."""
    end_ms = int(table.time_ms.max()) - horizon_ms
    acted = acted_days(table, actions, split_ms, end_ms)
    if not len(acted.customer):
        raise LamError(f"no action was triggered between {evaluate.iso(split_ms)} and {evaluate.iso(end_ms)}: "
                       "nothing to measure (is the policy's threshold above every probability?)")
    hit = bought_within(table, acted.customer, acted.trigger_ms, horizon_ms)
    # A purchase minutes after a cart may have been on its way whatever anyone sent: the stricter count.
    later = bought_within(table, acted.customer, acted.trigger_ms + HOUR_MS, horizon_ms - HOUR_MS)
    active_pairs, active_rate = active_base_rate(table, split_ms, end_ms, horizon_ms)
    lists = daily_lists(table, model, acted, split_ms, horizon_ms, seed)
    baselines = [n for n in evaluate.BASELINES if n != "random"]
    best = max(baselines, key=lambda n: lists["lists"][n]["order_rate"])
    b = lists["lists"][best]
    # One bootstrap over customers of both lists: the worker's (customer, day) outcomes against the best list's.
    label = np.concatenate([hit, b["labels"]])
    in_worker = np.r_[np.ones(len(hit), bool), np.zeros(len(b["labels"]), bool)]
    lo, hi = measures.bootstrap_ratio(label, in_worker, ~in_worker, np.concatenate([acted.customer, b["customers"]]),
                                      np.random.default_rng(seed + 1))
    rate = float(hit.mean())
    return {
        "period": [evaluate.iso(split_ms), evaluate.iso(end_ms)], "horizon_days": horizon_ms / DAY_MS,
        "actions": len(actions), "acted_customer_days": int(len(hit)),
        "acted_customers": int(len(np.unique(acted.customer))), "acted_orders": int(hit.sum()),
        "acted_order_rate": rate,
        "acted_orders_after_an_hour": int(later.sum()), "acted_order_rate_after_an_hour": float(later.mean()),
        "active_customer_days": active_pairs, "active_base_rate": active_rate,
        "points": lists["points"], "points_base_rate": lists["points_base_rate"],
        "lists": {n: {k: v for k, v in m.items() if k in ("calls", "orders", "order_rate")}
                  for n, m in lists["lists"].items()},
        "best_baseline": best,
        "lift_over_best_baseline": rate / b["order_rate"] if b["order_rate"] else None,
        "lift_ci95": [lo, hi],
        "lift_over_active_base_rate": rate / active_rate if active_rate else None,
    }


def run(settings: Settings, options: Options) -> dict[str, Any]:
    os.environ["OMP_NUM_THREADS"] = str(TORCH_THREADS)
    torch.set_num_threads(TORCH_THREADS)
    kafka.require_broker(settings.bootstrap)
    model = load(settings.model_path)
    load_policy(settings.policy_path, model.products)  # a bad policy fails here, not in the worker
    events = sources.EventFile(options.events, sources.Mapping.load(options.mapping) if options.mapping else None)
    horizon = options.horizon_ms or int(model.training["horizon_ms"])
    entry: dict[str, Any] = {"date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                             "command": options.command(settings), "machine": report.machine(),
                             "dataset": options.dataset, "events_file": options.events.name,
                             "model": f"{model.version} (hidden size {model.hidden_size})",
                             "partitions": settings.partitions, "batch_size": settings.batch_size}
    with tempfile.TemporaryDirectory(prefix="lam-replay-") as tmp:
        workdir = Path(tmp)
        scratch = kafka_run.Scratch.create(settings, workdir, settings.model_path, settings.policy_path,
                                           kafka_run.free_port())
        try:
            report.progress(f"{BAR}: loading {options.events} into {scratch.settings.input_topic}")
            kafka_run.fill(scratch, events, None)
            report.progress(events.summary())
            tp = kafka_run.throughput(kafka_run.ENGINE, scratch, workdir / "throughput.log",
                                      timeout=max(900.0, events.read / 100))  # < 100 events/s has failed
            report.progress(f"{BAR} throughput: {tp}")
            actions = read_actions(settings.bootstrap, scratch.settings.action_topic, settings.partitions)
            # The log once more, on the states the whole of it left, so the policy's history rules (minimum of
            # touchpoints, cool-downs, contact limits) apply as they would live.
            lat = kafka_run.latency(kafka_run.ENGINE, scratch, workdir / "latency.log", iter(events),
                                    rate=max(1.0, tp["events_per_second"] * LATENCY_RATE_SHARE),
                                    seconds=options.latency_seconds)
        finally:
            scratch.delete()
        report.progress(f"{BAR} latency: {lat}")
    entry["throughput"], entry["latency"] = tp, lat
    report.progress(f"{BAR}: reading {options.events} to hold the actions against what happened")
    table = data.read(options.events, model.vocab, options.mapping)
    entry["outcomes"] = outcomes(table, model, actions, int(model.training["split_time_ms"]), horizon,
                                 options.seed)
    write(options.docs, entry)
    return entry


def markdown_benchmark(e: dict[str, Any]) -> str:
    tp, lat = e["throughput"], e["latency"]
    return "\n".join([
        f"<!-- bench:replay-{e['dataset']}:start -->",
        f"## The engine on a real log: {e['dataset']}",
        "",
        f"Measured {e['date']} with `{e['command']}` on {e['machine']['cpu']} ({e['machine']['cores']} cores "
        f"shared with other work); model {e['model']}; {e['partitions']} partitions; batches of up to "
        f"{e['batch_size']:,}; one torch thread. The log's own customers and order: a few heavy visitors and a "
        f"long tail of one-event ones (`{e['events_file']}`).",
        "",
        "| measure | engine (`lam worker`) |",
        "|---|---:|",
        f"| touchpoints consumed | {tp['events']:,} |",
        f"| sustained throughput, events/s per worker process | {tp['events_per_second']:,} |",
        f"| peak resident memory, MiB | {tp['peak_rss_mib'] or 0:,.0f} |",
        f"| actions (shipped policy for this log) | {tp['actions']:,} ({tp['action_share']:.2%} of touchpoints) |",
        f"| latency p50 / p95 / p99, ms, at {lat['rate']:,} events/s ({lat['actions']:,} actions timed) "
        f"| {lat['p50']} / {lat['p95']} / {lat['p99']} |",
        f"| load average (1 min) during throughput / latency | {tp['load'][0]:.2f} / {lat['load'][0]:.2f} |",
        "",
        "Throughput and latency are measured as for the simulated figures above (latency under the shipped "
        "policy for this log, with its touchpoints offered again, re-stamped with the wall clock, on the states "
        "the throughput phase left).",
        f"<!-- bench:replay-{e['dataset']}:end -->",
    ])


def markdown_outcomes(e: dict[str, Any]) -> str:
    o = e["outcomes"]
    best = o["best_baseline"]
    rows = [f"| worker's actions (in real time) | {o['acted_customer_days']:,} | {o['acted_orders']:,} "
            f"| {o['acted_order_rate']:.4f} |",
            f"| worker's actions, counting only orders from an hour after the trigger | {o['acted_customer_days']:,} "
            f"| {o['acted_orders_after_an_hour']:,} | {o['acted_order_rate_after_an_hour']:.4f} |"]
    rows += [f"| {name} (daily list, same number per day) | {m['calls']:,} | {m['orders']:,} | {m['order_rate']:.4f} |"
             for name, m in o["lists"].items()]
    lift = o["lift_over_best_baseline"]
    return "\n".join([
        f"<!-- lam replay: {e['dataset']} -->",
        f"### {e['dataset']}: the worker's actions against what happened",
        "",
        f"`{e['command']}` replayed {e['throughput']['events']:,} touchpoints through one worker with model "
        f"{e['model']}; {o['actions']:,} actions. In {o['period'][0]} – {o['period'][1]} the worker acted on "
        f"{o['acted_customer_days']:,} (customer, day) pairs of {o['acted_customers']:,} customers; an order is a "
        f"purchase within {o['horizon_days']:g} days after the day's first trigger (after midnight for the daily "
        "lists, which see only what happened before that day).",
        "",
        "| who is acted on | (customer, day) | orders | order rate |",
        "|---|---:|---:|---:|",
        *rows,
        f"| base rate: everyone active that day, from their first touchpoint | {o['active_customer_days']:,} | "
        f"| {o['active_base_rate']:.4f} |",
        f"| base rate: every customer with history, from midnight | {o['points']:,} | "
        f"| {o['points_base_rate']:.4f} |",
        "",
        f"Worker over the best baseline ({best}): {lift or 0:.2f}x (95% CI {o['lift_ci95'][0]:.2f}–"
        f"{o['lift_ci95'][1]:.2f}, customer-level bootstrap); over the active base rate: "
        f"{o['lift_over_active_base_rate'] or 0:.2f}x.",
        f"<!-- /lam replay: {e['dataset']} -->",
    ])


def write(docs: Path, entry: dict[str, Any]) -> None:
    docs.mkdir(parents=True, exist_ok=True)
    key = f"replay_{entry['dataset']}"
    bench_md = markdown_benchmark(entry)
    write_section(docs / "benchmarks.md", bench_md.splitlines()[0], bench_md.splitlines()[-1], bench_md,
                  BENCHMARKS_TITLE)
    merge_json(docs / "benchmarks.json", key, {k: v for k, v in entry.items() if k != "outcomes"})
    model_md = markdown_outcomes(entry)
    write_section(docs / "model.md", model_md.splitlines()[0], model_md.splitlines()[-1], model_md,
                  "# Model evaluation")
    merge_json(docs / "model.json", key, evaluate.finite(entry))


def main(settings: Settings, args: Any) -> int:
    options = Options(events=Path(args.events), mapping=Path(args.mapping) if args.mapping else None,
                      dataset=args.dataset, docs=Path(args.docs_dir) if args.docs_dir else report.DOCS,
                      latency_seconds=args.latency_seconds,
                      horizon_ms=round(args.horizon_days * DAY_MS) if args.horizon_days else None)
    with kafka_run.stopped_as_interrupted():
        entry = run(settings, options)
    o, tp, lat = entry["outcomes"], entry["throughput"], entry["latency"]
    print(f"throughput {tp['events_per_second']:,} events/s, peak RSS {tp['peak_rss_mib']} MiB; latency "
          f"p50/p95/p99 {lat['p50']}/{lat['p95']}/{lat['p99']} ms at {lat['rate']:,}/s\n"
          f"acted on {o['acted_customer_days']:,} customer-days: order rate {o['acted_order_rate']:.4f}; best daily "
          f"baseline {o['best_baseline']} {o['lists'][o['best_baseline']]['order_rate']:.4f}; active base rate "
          f"{o['active_base_rate']:.4f}", file=sys.stdout)
    return 0
