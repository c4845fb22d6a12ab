"""The offline path over an event table: batches of whole customer histories, run window by window.

Training and scoring both walk customers in batches of similar length (so little of a batch is padding) and
split long histories into windows whose final state seeds the next window; in training that is truncated
backpropagation, here in scoring it bounds memory to one window of states at a time.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tqdm import tqdm

from model import encode
from model.data import EventTable, features, pad, running_counts, windows
from model.network import Network


def batches_by_length(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None = None,
                      customers: np.ndarray | None = None, max_cells: int = 1 << 18) -> list[np.ndarray]:
    """Customer indices in batches of similar history length, each at most `batch_size` customers and (but for
    a single very long history) `max_cells` padded steps, which bounds a batch's memory on logs with bots;
    batch order shuffled when `rng` is given."""
    customers = np.arange(len(lengths)) if customers is None else customers
    order = customers[np.argsort(lengths[customers], kind="stable")]
    batches, start = [], 0
    while start < len(order):
        # Sorted ascending, so the batch's longest history is its last; shrink the batch to fit the budget.
        size = min(batch_size, len(order) - start)
        while size > 1 and size * int(lengths[order[start + size - 1]]) > max_cells:
            size //= 2
        batches.append(order[start:start + size])
        start += size
    if rng is not None:
        rng.shuffle(batches)
    return batches


def window_prev_time(table: EventTable, rows: np.ndarray, start: int) -> np.ndarray:
    """(B,) time of the touchpoint before column `start` of padded `rows` (B, T); 0 at a history's start."""
    return table.time_ms[rows[:, start - 1]] if start > 0 else np.zeros(len(rows), dtype=np.int64)


def states_at(net: Network, table: EventTable, rows: np.ndarray, batch_size: int = 512,
              window: int = 256, progress: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The state (n, H) float32 and the running counts per event type (n, E) right after each of the given
    distinct table rows (n,)."""
    slot = np.full(table.n_events, -1, dtype=np.int64)
    slot[rows] = np.arange(len(rows))
    out = np.zeros((len(rows), net.config.hidden_size), dtype=np.float32)
    out_counts = np.zeros((len(rows), net.config.n_event_types), dtype=np.float32)
    customers = np.unique(table.customer_of_row[rows])
    net.eval()
    with torch.inference_mode():
        for batch in tqdm(batches_by_length(table.lengths, batch_size, customers=customers),
                          desc=progress, disable=progress is None, leave=False, unit="batch"):
            padded = pad(table, batch)
            counts = running_counts(table, padded, net.config.n_event_types)  # (B, T, E)
            h = net.initial_state(len(batch))  # (B, H)
            for cols in windows(padded.rows.shape[1], window):
                r = padded.rows[:, cols]  # (B, L)
                cats, nums = features(table, r, window_prev_time(table, padded.rows, cols.start))
                states = net(torch.from_numpy(cats).long(), torch.from_numpy(nums), h)  # (B, L, H)
                h = states[:, -1]
                s = slot[r]
                sel = padded.mask[:, cols] & (s >= 0)
                out[s[sel]] = states.numpy()[sel]
                out_counts[s[sel]] = counts[:, cols][sel]
    return out, out_counts


def heads_at(net: Network, table: EventTable, rows: np.ndarray, times_ms: np.ndarray,
             head: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], width: int,
             progress: str | None = None, chunk: int = 1 << 16) -> np.ndarray:
    """(n, width) float32: `head(state, context)` of the customers owning `rows` (n,), scored at `times_ms` (n,).
    States are kept once per distinct row and the head runs in chunks, so memory stays near the output's
    size when millions of (customer, day) points share few touchpoints."""
    uniq, inverse = np.unique(rows, return_inverse=True)
    states, counts = states_at(net, table, uniq, progress=progress)  # (U, H), (U, E)
    first_time = table.time_ms[table.offsets[np.searchsorted(table.offsets, rows, side="right") - 1]]  # (n,)
    out = np.empty((len(rows), width), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(rows), chunk):
            part = slice(start, start + chunk)
            context = encode.context(times_ms[part] - table.time_ms[rows[part]], times_ms[part] - first_time[part],
                                     counts[inverse[part]])
            out[part] = head(torch.from_numpy(states[inverse[part]]), torch.from_numpy(context)).numpy()
    return out


def logits_at(net: Network, table: EventTable, rows: np.ndarray, times_ms: np.ndarray,
              progress: str | None = None) -> np.ndarray:
    """(n, P) raw conversion logits of the customers owning `rows` (n,), scored at `times_ms` (n,)."""
    return heads_at(net, table, rows, times_ms, net.conversion_logits, net.config.n_heads, progress)
