"""`lam train`: fit the GRU on a touchpoint log split by time, calibrate it, and write the artifact.

Time split, no leakage: only touchpoints before the split time are read for fitting, and a training example
at time s counts only if s + horizon <= split, so every label it sees is observed before the split. The
validation figures use scoring times from the split on, as `lam evaluate` does.

Examples: after each touchpoint the state is scored at the touchpoint itself (where the worker scores) and at
moments s drawn between that touchpoint and the customer's next (where a daily list scores), and the label is
a purchase in [s, s + horizon). After the epochs, each head's output weights are refitted on the daily
scoring points of the last weeks before the split and the touchpoints of those weeks (`model.refit`). A tenth
of the customers (by a hash of their id) are kept out of both; calibration is fitted on them, at daily scoring
times in the last weeks before the split.
"""

from __future__ import annotations

import resource
import time
import zlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from model import artifact, calibrate, data, encode, measures, offline, refit
from model.data import EventTable
from model.encode import DAY_MS
from model.network import ModelConfig, Network
from model.vocab import CATALOGUE, Vocabulary, load_catalogue
from streams.errors import LamError


@dataclass(frozen=True, slots=True)
class TrainConfig:
    horizon_ms: int = 7 * DAY_MS
    split_time_ms: int | None = None  # None: `data.default_split`
    epochs: int = 16
    batch_size: int = 64
    window: int = 64  # steps of truncated backpropagation
    learning_rate: float = 2e-3
    next_event_weight: float = 0.2
    draws: int = 4  # scoring moments per touchpoint and epoch: the heads are cheap, the GRU pass is shared
    at_event_weight: float = 0.25  # in days of scoring time, the weight of the moment at the touchpoint
    hidden_size: int = 64
    calibration_share: float = 0.1
    calibration_days: int = 28
    refit_days: int = 28  # daily scoring points before the split that the heads' output is refitted on; 0: none
    seed: int = 0


@dataclass(frozen=True, slots=True)
class TrainResult:
    version: str
    path: Path
    seconds: float
    n_events: int
    metrics: dict[str, Any]


def held_out(customer_ids: np.ndarray, share: float) -> np.ndarray:
    """(C,) bool: the customers kept out of fitting, chosen by a stable hash of their id."""
    return np.array([zlib.crc32(str(c).encode()) % 1000 < share * 1000 for c in customer_ids], dtype=bool)


def examples(table: EventTable, padded: data.Padded, split_ms: int, config: TrainConfig,
             n_heads: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scoring offsets (K, B, T) ms after each touchpoint, labels (K, B, T, P) and example weights (K, B, T),
    0 where a position is padding or too close to the split for its label to be observed."""
    times = table.time_ms[padded.rows]  # (B, T)
    last = padded.mask & ~np.c_[padded.mask[:, 1:], np.zeros(len(times), bool)]
    # A state holds until the customer's next touchpoint, the last one's until the split.
    next_time = np.where(last, split_ms, np.c_[times[:, 1:], times[:, -1:]])
    room = np.minimum(next_time - times, split_ms - config.horizon_ms - times)  # (B, T) ms
    # Draw 0 scores at the touchpoint itself, where the worker scores; draws 1.. at uniform moments while the
    # state holds, each weighted by how long it holds, which makes their loss that of scoring every customer
    # at uniformly random times, as a daily call list does.
    k = config.draws
    offset = np.floor(rng.random((k, *times.shape)) * np.maximum(room, 0)).astype(np.int64)  # (K, B, T)
    offset[0] = 0
    valid = padded.mask & (room >= 0)
    weight = np.broadcast_to(np.where(valid, room / DAY_MS / max(k - 1, 1), 0.0), offset.shape).copy()
    weight[0] = np.where(valid, config.at_event_weight, 0.0)
    gap = data.next_purchase_gap(table, padded, n_heads)  # (B, T, P)
    labels = gap[None] - offset[..., None] < config.horizon_ms  # (K, B, T, P)
    return offset, labels, weight.astype(np.float32)


def _fit_epoch(net: Network, opt: torch.optim.Optimizer, table: EventTable, fit_customers: np.ndarray,
               split_ms: int, config: TrainConfig, rng: np.random.Generator, bar: tqdm) -> float:
    net.train()
    n_heads = net.config.n_heads
    total, count = 0.0, 0
    for batch in offline.batches_by_length(table.lengths, config.batch_size, rng, customers=fit_customers):
        padded = data.pad(table, batch)
        offset, labels, weight = examples(table, padded, split_ms, config, n_heads, rng)
        has_next = np.c_[padded.mask[:, 1:], np.zeros(len(batch), bool)]
        next_type = np.c_[table.cats[padded.rows[:, 1:], 0], np.zeros(len(batch), np.int32)]  # (B, T)
        # Each window's loss is divided by the batch's mean weight per window, not by its own weight, so a
        # long history's later windows count by their share of the scoring time, not as much as the first.
        n_windows = -(-padded.rows.shape[1] // config.window)
        total_weight = max(float(weight.sum()) / n_windows, 1e-9)
        times = table.time_ms[padded.rows]  # (B, T)
        counts = data.running_counts(table, padded, net.config.n_event_types)  # (B, T, E)
        h = net.initial_state(len(batch))  # (B, H)
        for cols in data.windows(padded.rows.shape[1], config.window):
            cats, nums = data.features(table, padded.rows[:, cols],
                                       offline.window_prev_time(table, padded.rows, cols.start))
            states = net(torch.from_numpy(cats).long(), torch.from_numpy(nums), h.detach())  # (B, L, H)
            h = states[:, -1]
            w = torch.from_numpy(weight[:, :, cols])  # (K, B, L)
            loss = torch.zeros(())
            if w.sum() > 0:
                o = offset[:, :, cols]
                since_first = times[:, cols] - times[:, :1] + o  # (K, B, L)
                context = torch.from_numpy(encode.context(
                    o, since_first, np.broadcast_to(counts[:, cols], (*o.shape, counts.shape[-1]))))
                logits = net.conversion_logits(states.expand(len(o), -1, -1, -1), context)  # (K, B, L, P)
                bce = F.binary_cross_entropy_with_logits(logits, torch.from_numpy(labels[:, :, cols]).float(),
                                                         reduction="none").mean(dim=-1)  # (K, B, L)
                loss = loss + (bce * w).sum() / total_weight
            n = torch.from_numpy(has_next[:, cols])
            if n.any():
                nxt = net.next_event_logits(states[n])
                loss = loss + config.next_event_weight * F.cross_entropy(
                    nxt, torch.from_numpy(next_type[:, cols][has_next[:, cols]]).long())
            if loss.requires_grad:
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
                total, count = total + loss.item(), count + 1
        bar.update(int(padded.mask.sum()))
    return total / max(count, 1)


def head_metrics(prob: np.ndarray, labels: np.ndarray, heads: tuple[str, ...]) -> dict[str, Any]:
    """Per head: AUC, PR-AUC, calibration error, mean probability, observed rate, points and positives."""
    return {name: {
        "auc": measures.auc(prob[:, p], labels[:, p]),
        "pr_auc": measures.pr_auc(prob[:, p], labels[:, p]),
        "calibration_error": measures.calibration_error(prob[:, p], labels[:, p]),
        "mean_probability": float(prob[:, p].mean()),
        "observed_rate": float(labels[:, p].mean()),
        "points": int(len(labels)),
        "positives": int(labels[:, p].sum()),
    } for p, name in enumerate(heads)}


def _daily_points(table: EventTable, split_ms: int, days: int, horizon_ms: int, n_heads: int
                  ) -> data.ScoringPoints | None:
    """The customers' scoring points at each midnight of the `days` before the last one whose label ends by
    the split; None if there are none."""
    last_label_time = split_ms - horizon_ms
    times = data.daily_times(last_label_time - days * DAY_MS, last_label_time)
    points = data.scoring_points(table, times, horizon_ms, n_heads) if len(times) else None
    return points if points is not None and len(points.customer) else None


def _refit_points(table: EventTable, split_ms: int, config: TrainConfig, n_heads: int
                  ) -> tuple[data.ScoringPoints, np.ndarray] | None:
    """The refit's points and their weights: the daily ones of the last `refit_days` (a day each) and the moments
    right after each touchpoint of those days (`at_event_weight`, as in training); None without daily points."""
    daily = _daily_points(table, split_ms, config.refit_days, config.horizon_ms, n_heads)
    if daily is None:
        return None
    last_label_time = split_ms - config.horizon_ms
    touch = data.touchpoint_points(table, last_label_time - config.refit_days * DAY_MS, last_label_time,
                                   config.horizon_ms, n_heads)
    weight = np.r_[np.ones(len(daily.customer)), np.full(len(touch.customer), config.at_event_weight)]
    return data.concat([daily, touch]), weight


def score_points(net: Network, table: EventTable, points: data.ScoringPoints, progress: str | None = None
                 ) -> np.ndarray:
    """(n, P) raw logits at scoring points."""
    return offline.logits_at(net, table, points.last_row, points.time_ms, progress=progress)


def train(table: EventTable, vocab: Vocabulary, config: TrainConfig, out: str | Path) -> TrainResult:
    """Fit, calibrate, validate and save; returns the artifact's version and validation metrics."""
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    split = config.split_time_ms if config.split_time_ms is not None else data.default_split(table)
    past = table.before(split)
    if past.n_events == 0 or int(past.time_ms.min()) > split - config.horizon_ms:
        raise LamError(f"split time {split}: no touchpoints at least one horizon before it to train on")
    heads = vocab.heads
    net = Network(ModelConfig(n_event_types=vocab.n_event_types, n_channels=vocab.n_channels,
                              n_items=vocab.n_items, n_heads=len(heads), hidden_size=config.hidden_size))
    opt = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    hold = held_out(past.customer_ids, config.calibration_share)
    fit_customers = np.flatnonzero(~hold)
    with tqdm(total=config.epochs * int(past.lengths[fit_customers].sum()), desc="training", unit="ev",
              mininterval=2) as bar:
        for epoch in range(config.epochs):
            loss = _fit_epoch(net, opt, past, fit_customers, split, config, rng, bar)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.4f}")

    refitted: list[int] = []
    if config.refit_days and len(fit_customers):
        fit_table = past.subset(fit_customers)
        weighted = _refit_points(fit_table, split, config, len(heads))
        if weighted is not None:
            refitted = refit.refit_heads(net, fit_table, *weighted, rng)

    calibration = calibrate.Calibration.identity(len(heads))
    if hold.any():
        calib_table = past.subset(np.flatnonzero(hold))
        points = _daily_points(calib_table, split, config.calibration_days, config.horizon_ms, len(heads))
        if points is not None:
            calibration = calibrate.fit(score_points(net, calib_table, points), points.labels)

    metrics: dict[str, Any] = {}
    val_times = data.daily_times(split, int(table.time_ms.max()) - config.horizon_ms)
    if len(val_times):
        points = data.scoring_points(table, val_times, config.horizon_ms, len(heads))
        prob = calibration.apply(score_points(net, table, points, progress="validating"))
        metrics = {"validation": head_metrics(prob, points.labels, heads)}
    training = {**asdict(config), "split_time_ms": split, "n_events": table.n_events, "refitted_heads": refitted,
                "n_train_events": past.n_events, "n_customers": table.n_customers}
    seconds = time.perf_counter() - started
    run = {"seconds": round(seconds, 1), "peak_memory_mb": round(peak_memory_mb()), "threads": torch.get_num_threads()}
    version = artifact.save(out, net, vocab, calibration, metrics, training, run)
    return TrainResult(version=version, path=Path(out), seconds=seconds, n_events=table.n_events, metrics=metrics)


def train_file(events: str | Path, out: str | Path, config: TrainConfig, catalogue: str | Path = CATALOGUE,
               mapping: str | Path | None = None, threads: int = 1, item_buckets: int | None = None) -> TrainResult:
    """`lam train`: read the event file, train, save; peak memory and wall time go into the result.
    `item_buckets` overrides the catalogue's; the artifact keeps the vocabulary it was trained with."""
    torch.set_num_threads(threads)
    vocab = load_catalogue(catalogue)
    if item_buckets is not None:
        vocab = replace(vocab, item_buckets=item_buckets)
    table = data.read(events, vocab, mapping)
    return train(table, vocab, config, out)


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
