"""`lam evaluate`: the model against the baselines on the period after the training split.

Every method scores the same scoring points (each customer with history, at each daily scoring time from the
split until one horizon before the end), from touchpoints strictly before the scoring time; the label is a
purchase in [s, s + horizon). Figures: AUC, PR-AUC, calibration error (for the methods giving
probabilities), the order rate among the top share of customers per scoring time, and lift, the model's
top-share order rate over each other method's, with a customer-level bootstrap interval. On a simulated
world with its truth file there is also the telemarketing test: each day, call the model's list and the
best baseline's, and count the orders `sim.telemarketing.call` says they bring.

Nothing here is dataset-specific: horizon, split, end, scoring cadence and share are parameters, so a real
log is a configuration (its own dataset key in docs/model.json), not new code.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from model import baselines, data, measures, train
from model.artifact import LoadedModel
from model.data import EventTable, ScoringPoints
from model.encode import DAY_MS
from streams.errors import LamError
from streams.reports import merge_json, write_section

BASELINES = ("random", "recency", "rfm", "logistic_regression")
_SHARES = np.array([0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0])


@dataclass(frozen=True, slots=True)
class EvalConfig:
    dataset: str = "simulated"
    split_time_ms: int | None = None  # None: the model's own training split
    horizon_ms: int | None = None  # None: the model's own horizon
    end_time_ms: int | None = None  # None: the last touchpoint
    every_days: float = 1.0
    top_share: float = 0.05
    baseline_fit_days: int = 28  # daily scoring points before the split that fit the logistic regression
    baseline_fit_points: int = 2_000_000  # at most this many of them, drawn at random (bounds its memory)
    seed: int = 0


def iso(t_ms: int) -> str:
    """Epoch ms as an ISO-8601 UTC time, as the reports print it."""
    return datetime.fromtimestamp(t_ms // 1000, UTC).isoformat().replace("+00:00", "Z")


def baseline_scores(table: EventTable, points: ScoringPoints, model: LoadedModel, split: int, horizon: int,
                     config: EvalConfig) -> dict[str, np.ndarray]:
    vocab, rng = model.vocab, np.random.default_rng(config.seed)
    n_types, n_channels = vocab.n_event_types, vocab.n_channels
    past = table.before(split)
    fit_times = data.daily_times(split - horizon - config.baseline_fit_days * DAY_MS, split - horizon)
    fit_points = data.scoring_points(past, fit_times, horizon, len(vocab.heads))
    if len(fit_points.customer) > config.baseline_fit_points:
        fit_points = fit_points.take(np.sort(rng.choice(len(fit_points.customer), config.baseline_fit_points,
                                                        replace=False)))
    logistic = baselines.fit_logistic(baselines.aggregates(past, fit_points, n_types, n_channels),
                                      fit_points.labels[:, -1])
    n = len(points.customer)
    scores = {"random": rng.random(n), **{name: np.empty(n) for name in BASELINES[1:]}}
    # One scoring time at a time: on a log of a million visitors, the aggregates of every (customer, day)
    # point at once would take gigabytes.
    for s in tqdm(np.unique(points.time_ms), desc="baselines", unit="day", leave=False):
        at = np.flatnonzero(points.time_ms == s)
        agg = baselines.aggregates(table, points.take(at), n_types, n_channels)
        scores["recency"][at] = baselines.recency(agg)
        scores["rfm"][at] = baselines.rfm(agg, points.time_ms[at])
        scores["logistic_regression"][at] = logistic(agg)
    return scores


def _method_figures(score: np.ndarray, label: np.ndarray, chosen: np.ndarray, probability: bool,
                    customer: np.ndarray) -> dict[str, Any]:
    return {
        "auc": measures.auc(score, label),
        "pr_auc": measures.pr_auc(score, label),
        "calibration_error": measures.calibration_error(score, label) if probability else None,
        "top_calls": int(chosen.sum()),
        "top_customers": int(len(np.unique(customer[chosen]))),
        "top_orders": int(label[chosen].sum()),
        "top_order_rate": float(label[chosen].mean()),
    }


def telemarketing(world: Any, table: EventTable, points: ScoringPoints, lists: dict[str, np.ndarray],
                  seed: int) -> dict[str, Any]:
    """Call each method's list on each scoring day; orders as `sim.telemarketing.call` decides them (one
    seed for all lists, so lists sharing a customer share the outcome), and the expected order rate from the
    world's true call-success probabilities, which has no sampling noise."""
    from sim import telemarketing as tm

    out: dict[str, Any] = {}
    days = np.unique(points.time_ms)
    for name, chosen in lists.items():
        calls, orders, expected = 0, 0, 0.0
        for s in days:
            ids = table.customer_ids[points.customer[chosen & (points.time_ms == s)]]
            orders += int(np.sum(tm.call(world, ids, int(s), seed)))
            expected += float(np.sum(tm.order_probability(world, ids, int(s))))
            calls += len(ids)
        out[name] = {"calls": calls, "orders": orders, "order_rate": orders / max(calls, 1),
                     "expected_order_rate": expected / max(calls, 1)}
    return {"days": len(days), **out}


def evaluate(table: EventTable, model: LoadedModel, config: EvalConfig, world: Any = None) -> dict[str, Any]:
    """All figures of one dataset as a JSON-ready dict; `world` (a sim.world.World) adds the call test."""
    split = config.split_time_ms or int(model.training["split_time_ms"])
    horizon = config.horizon_ms or int(model.training["horizon_ms"])
    end = config.end_time_ms or int(table.time_ms.max())
    heads = model.products
    times = data.daily_times(split, end - horizon, config.every_days)
    points = data.scoring_points(table, times, horizon, len(heads))
    label = points.labels[:, -1]
    if not label.any():
        raise LamError("evaluation: no purchases in the evaluation period; nothing to rank")
    prob = model.calibration.apply(train.score_points(model.net, table, points, progress="scoring"))
    scores = {"model": prob[:, -1], **baseline_scores(table, points, model, split, horizon, config)}
    rng = np.random.default_rng(config.seed + 1)
    chosen = {name: measures.top_share(s, points.time_ms, config.top_share, rng) for name, s in scores.items()}
    methods = {name: _method_figures(s, label, chosen[name], name in ("model", "logistic_regression"),
                                     points.customer) for name, s in scores.items()}
    lift = {}
    for name in BASELINES:
        lo, hi = measures.bootstrap_ratio(label, chosen["model"], chosen[name], points.customer, rng)
        rate = methods[name]["top_order_rate"]
        lift[name] = {"lift": methods["model"]["top_order_rate"] / rate if rate else None, "ci95": [lo, hi]}
    best = max(BASELINES[1:], key=lambda n: methods[n]["top_order_rate"])
    report: dict[str, Any] = {
        "model_version": model.version,
        "events": table.n_events, "customers": table.n_customers,
        "split_time": iso(split), "end_time": iso(end), "horizon_days": horizon / DAY_MS,
        "scoring_times": len(times), "points": int(len(label)), "positives": int(label.sum()),
        "base_rate": float(label.mean()), "top_share": config.top_share,
        "customers_scored": int(len(np.unique(points.customer))),
        "customers_with_order": int(len(np.unique(points.customer[label]))),
        "methods": methods, "lift_of_model_over": lift, "best_baseline": best,
        "model_heads": train.head_metrics(prob, points.labels, heads),
        "lift_curve": {"shares": _SHARES.tolist(), **{
            name: measures.lift_curve(s, label, points.time_ms, _SHARES, rng).tolist() for name, s in scores.items()}},
        "training": model.training,
    }
    if world is not None:
        report["telemarketing"] = {"baseline": best, **telemarketing(
            world, table, points, {"model": chosen["model"], best: chosen[best], "random": chosen["random"]},
            config.seed)}
    return report


def _fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None or x != x else f"{x:.{digits}f}"


def markdown(report: dict[str, Any], dataset: str) -> str:
    share = f"{report['top_share']:.0%}"
    lines = [
        f"### {dataset}", "",
        f"Model `{report['model_version']}`; {report['events']:,} touchpoints of {report['customers']:,} customers; "
        f"split {report['split_time']}, scored daily until {report['end_time']} minus the "
        f"{report['horizon_days']:g}-day horizon: {report['scoring_times']} scoring times, {report['points']:,} "
        f"(customer, day) points of {report['customers_scored']:,} customers, {report['positives']:,} with an order "
        f"(base rate {report['base_rate']:.4f}) from {report['customers_with_order']:,} customers who ordered. "
        f"Lift intervals: customer-level bootstrap (1,000 draws).", "",
        f"| method | AUC | PR-AUC | calibration error | calls in top {share} (customers) | orders | order rate "
        f"| model's lift over it (95% CI) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in report["methods"].items():
        lift = report["lift_of_model_over"].get(name)
        lift_text = f"{_fmt(lift['lift'], 2)} ({_fmt(lift['ci95'][0], 2)}–{_fmt(lift['ci95'][1], 2)})" if lift else ""
        lines.append(f"| {name} | {_fmt(m['auc'])} | {_fmt(m['pr_auc'])} | {_fmt(m['calibration_error'], 4)} "
                     f"| {m['top_calls']:,} ({m['top_customers']:,}) | {m['top_orders']:,} "
                     f"| {_fmt(m['top_order_rate'], 4)} | {lift_text} |")
    lines += ["", "Model, per conversion head:", "",
              "| head | AUC | mean probability | observed rate | positives |", "|---|---|---|---|---|"]
    for head, m in report["model_heads"].items():
        lines.append(f"| {head} | {_fmt(m['auc'])} | {_fmt(m['mean_probability'], 4)} "
                     f"| {_fmt(m['observed_rate'], 4)} | {m['positives']:,} |")
    tele = report.get("telemarketing")
    if tele:
        lines += ["", f"Telemarketing test over {tele['days']} simulated days (top {share} called each day):", "",
                  "| list | calls | orders | order rate | expected order rate (true probabilities) |",
                  "|---|---|---|---|---|"]
        for name in ("model", tele["baseline"], "random"):
            lines.append(f"| {name} | {tele[name]['calls']:,} | {tele[name]['orders']:,} "
                         f"| {_fmt(tele[name]['order_rate'], 4)} | {_fmt(tele[name]['expected_order_rate'], 4)} |")
    return "\n".join(lines) + "\n"


def plot_lift(report: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = report["lift_curve"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in ("model", *BASELINES):
        ax.plot(np.array(curve["shares"]) * 100, curve[name], marker="o", ms=3, label=name)
    ax.axvline(report["top_share"] * 100, color="grey", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("customers called (top %, per scoring day)")
    ax.set_ylabel("order rate / base rate")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def finite(x: Any) -> Any:
    """NaN (an AUC with one class) as null, numpy scalars as plain numbers: strict JSON."""
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    return x.item() if isinstance(x, np.generic) else x


def write(report: dict[str, Any], dataset: str, out_dir: str | Path) -> list[Path]:
    """Merge the figures into model.json and model.md (other datasets' entries kept) and draw the lift PNG."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path, png_path = out / "model.json", out / "model.md", out / f"lift_{dataset}.png"
    merge_json(json_path, dataset, finite(report))
    begin, end = f"<!-- lam evaluate: {dataset} -->", f"<!-- /lam evaluate: {dataset} -->"
    block = f"{begin}\n{markdown(report, dataset)}\n![lift]({png_path.name})\n{end}"
    write_section(md_path, begin, end, block, "# Model evaluation")
    plot_lift(report, png_path, f"Lift over base rate ({dataset})")
    return [md_path, json_path, png_path]


def evaluate_file(events: str | Path, model_path: str | Path, out_dir: str | Path, config: EvalConfig,
                  mapping: str | Path | None = None, truth: str | Path | None = None, threads: int = 1
                  ) -> tuple[dict[str, Any], list[Path]]:
    """`lam evaluate`: score the file's evaluation period and write the figures. A simulator's truth file
    (`truth`, or FILE.truth.npz beside the events as `lam simulate` writes it) adds the telemarketing test."""
    import torch

    from model.artifact import load

    torch.set_num_threads(threads)
    model = load(model_path)
    table = data.read(events, model.vocab, mapping)
    truth = Path(truth) if truth else Path(f"{events}.truth.npz")
    world = None
    if truth.is_file():
        from sim.world import World

        world = World.load_truth(truth)
    report = evaluate(table, model, config, world)
    report["events_file"] = Path(events).name
    report["training_run"] = model.run
    return report, write(report, config.dataset, out_dir)
