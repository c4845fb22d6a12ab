"""Touchpoints as columns: the event table, the time split, padded batches, and labels at scoring times.

The table holds one row per touchpoint, sorted by (customer, event time), in numpy columns of ~25 bytes a
row, so 10 million touchpoints take ~250 MB; nothing per event is kept as a Python object. Customer `c`'s
touchpoints are rows `offsets[c]:offsets[c + 1]`.

A scoring point is a (customer, time `s`) pair: the customer is scored from touchpoints strictly before `s`,
and the label for head `p` is a purchase counted by `p` at a time in [s, s + horizon).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from model import encode
from model.encode import DAY_MS
from model.vocab import Vocabulary
from streams.contract import Touchpoint
from streams.errors import LamError

_CHUNK = 200_000


@dataclass(frozen=True, slots=True)
class EventTable:
    customer_ids: np.ndarray  # (C,) object: the customers' string ids
    offsets: np.ndarray  # (C + 1,) int64
    time_ms: np.ndarray  # (N,) int64
    cats: np.ndarray  # (N, 3) int32: event type, channel, item ids
    value: np.ndarray  # (N,) float32, NaN = none
    purchase: np.ndarray  # (N,) int8: head index of a purchase (P - 1 = "any" only), -1 = no purchase

    @property
    def n_events(self) -> int:
        return len(self.time_ms)

    @property
    def n_customers(self) -> int:
        return len(self.customer_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def customer_of_row(self) -> np.ndarray:
        """(N,) int32: each row's customer index."""
        return np.repeat(np.arange(self.n_customers, dtype=np.int32), self.lengths)

    def before(self, t_ms: int) -> EventTable:
        """Only the touchpoints strictly before `t_ms`; customers with none are dropped."""
        keep = self.time_ms < t_ms
        counts = np.add.reduceat(keep.astype(np.int64), self.offsets[:-1]) if self.n_events else np.zeros(0, int)
        has = counts > 0
        return EventTable(
            customer_ids=self.customer_ids[has],
            offsets=np.concatenate([[0], np.cumsum(counts[has])]).astype(np.int64),
            time_ms=self.time_ms[keep], cats=self.cats[keep], value=self.value[keep], purchase=self.purchase[keep],
        )

    def subset(self, customers: np.ndarray) -> EventTable:
        """The table of the given customer indices (ascending), e.g. a held-out group."""
        lengths = self.lengths[customers]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        rows = np.arange(offsets[-1]) - np.repeat(offsets[:-1] - self.offsets[customers], lengths)
        return EventTable(
            customer_ids=self.customer_ids[customers],
            offsets=offsets,
            time_ms=self.time_ms[rows], cats=self.cats[rows], value=self.value[rows], purchase=self.purchase[rows],
        )


def from_touchpoints(events: Iterable[Touchpoint], vocab: Vocabulary, total: int | None = None) -> EventTable:
    """Encode touchpoints into a table, a chunk at a time so memory stays at the columns' size."""
    customer_index: dict[str, int] = {}
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("cust", "time", "cats", "value", "purchase")}
    chunk: list[Touchpoint] = []

    def flush() -> None:
        parts["cust"].append(np.array([customer_index.setdefault(e.customer_id, len(customer_index))
                                       for e in chunk], dtype=np.int32))
        parts["time"].append(np.fromiter((e.event_time_ms for e in chunk), dtype=np.int64, count=len(chunk)))
        parts["cats"].append(encode.categorical(chunk, vocab).astype(np.int32))
        parts["value"].append(encode.values(chunk).astype(np.float32))
        parts["purchase"].append(np.array([vocab.purchase_head(e.event_type, e.item) for e in chunk], dtype=np.int8))
        chunk.clear()

    for event in tqdm(events, desc="reading touchpoints", unit="ev", total=total, mininterval=2, leave=False):
        chunk.append(event)
        if len(chunk) == _CHUNK:
            flush()
    if chunk:
        flush()
    if not customer_index:
        raise LamError("no touchpoints to train or evaluate on")
    cols = {k: np.concatenate(v) for k, v in parts.items()}
    order = np.lexsort((cols["time"], cols["cust"]))  # stable: equal times keep their arrival order
    counts = np.bincount(cols["cust"], minlength=len(customer_index))
    return EventTable(
        customer_ids=np.array(list(customer_index), dtype=object),
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        time_ms=cols["time"][order], cats=cols["cats"][order], value=cols["value"][order],
        purchase=cols["purchase"][order],
    )


def read(path: str | Path, vocab: Vocabulary, mapping: str | Path | None = None) -> EventTable:
    """The event table of a touchpoint file: JSON lines, or CSV with a `streams.sources` column mapping.
    Lines the reader rejects are counted on stderr, not fatal."""
    from streams import sources

    events = sources.EventFile(path, sources.Mapping.load(mapping) if mapping else None)
    table = from_touchpoints(events, vocab)
    print(events.summary(), file=sys.stderr)
    return table


def default_split(table: EventTable, fraction: float = 0.75) -> int:
    """Midnight (UTC) nearest `fraction` of the table's time span: train before it, validate after."""
    start, end = int(table.time_ms.min()), int(table.time_ms.max())
    return int(round((start + fraction * (end - start)) / DAY_MS)) * DAY_MS


def daily_times(start_ms: int, end_ms: int, every_days: float = 1.0) -> np.ndarray:
    """Scoring times from the first midnight at or after `start_ms` up to `end_ms` inclusive."""
    first = -(-start_ms // DAY_MS) * DAY_MS
    step = int(every_days * DAY_MS)
    return np.arange(first, end_ms + 1, step, dtype=np.int64) if end_ms >= first else np.zeros(0, np.int64)


@dataclass(frozen=True, slots=True)
class Padded:
    rows: np.ndarray  # (B, T) int64 table rows, clipped to a valid row where masked
    mask: np.ndarray  # (B, T) bool: a real touchpoint


def pad(table: EventTable, customers: np.ndarray) -> Padded:
    """Right-padded rows of the given customers' touchpoints; right padding keeps real steps first."""
    lengths = table.lengths[customers]
    t = np.arange(max(int(lengths.max()), 1) if len(customers) else 1)
    mask = t[None, :] < lengths[:, None]
    rows = table.offsets[customers][:, None] + np.minimum(t[None, :], np.maximum(lengths[:, None] - 1, 0))
    return Padded(rows=rows, mask=mask)


def features(table: EventTable, rows: np.ndarray, first_col_prev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ids (B, T, 3) and numbers (B, T, N_NUMERIC) of a window of rows; `first_col_prev` (B,) is the time of
    the touchpoint before the window's first column (0 = none)."""
    times = table.time_ms[rows]  # (B, T)
    prev = np.concatenate([first_col_prev[:, None], times[:, :-1]], axis=1)
    nums = encode.numeric(times.ravel(), prev.ravel(), table.value[rows].ravel())
    return table.cats[rows], nums.reshape(*rows.shape, encode.N_NUMERIC)


def running_counts(table: EventTable, padded: Padded, n_event_types: int) -> np.ndarray:
    """(B, T, E) float32: each customer's touchpoints per event type up to and including each position."""
    onehot = encode.type_counts(table.cats[padded.rows, 0], n_event_types) * padded.mask[..., None]
    return np.cumsum(onehot, axis=1, dtype=np.float32)


def next_purchase_gap(table: EventTable, padded: Padded, n_heads: int) -> np.ndarray:
    """(B, T, P) float64: ms from each touchpoint to the customer's next later touchpoint that is a purchase
    counted by each head (inf if none); the last head counts every purchase."""
    times = table.time_ms[padded.rows].astype(np.float64)
    purchase = np.where(padded.mask, table.purchase[padded.rows], -1)  # (B, T)
    hits = purchase[..., None] == np.arange(n_heads)  # (B, T, P)
    hits[..., -1] = purchase >= 0
    at = np.where(hits, times[..., None], np.inf)
    # Reverse running minimum, shifted one step, gives the first purchase strictly after each position.
    later = np.minimum.accumulate(at[:, ::-1], axis=1)[:, ::-1]
    nxt = np.concatenate([later[:, 1:], np.full_like(later[:, :1], np.inf)], axis=1)
    return nxt - times[..., None]


@dataclass(frozen=True, slots=True)
class ScoringPoints:
    customer: np.ndarray  # (n,) int64 customer index
    time_ms: np.ndarray  # (n,) int64 scoring time s
    last_row: np.ndarray  # (n,) int64 row of the customer's last touchpoint before s
    labels: np.ndarray  # (n, P) bool: a purchase counted by the head in [s, s + horizon)

    def take(self, index: np.ndarray) -> ScoringPoints:
        return ScoringPoints(customer=self.customer[index], time_ms=self.time_ms[index],
                             last_row=self.last_row[index], labels=self.labels[index])


def _counts_before(table: EventTable, t_ms: int, row_mask: np.ndarray | None = None) -> np.ndarray:
    """(C,) number of each customer's rows before `t_ms` (among `row_mask` rows if given)."""
    hit = table.time_ms < t_ms
    if row_mask is not None:
        hit &= row_mask
    return np.add.reduceat(hit.astype(np.int64), table.offsets[:-1])


def _purchases_by_head(table: EventTable, n_heads: int) -> list[np.ndarray]:
    """(N,) bool per head: the rows that are a purchase it counts; the last head counts every purchase."""
    return [table.purchase == p for p in range(n_heads - 1)] + [table.purchase >= 0]


def scoring_points(table: EventTable, times_ms: Iterable[int], horizon_ms: int, n_heads: int) -> ScoringPoints:
    """Every customer with a touchpoint before each scoring time, with their labels."""
    heads = _purchases_by_head(table, n_heads)
    out: dict[str, list[np.ndarray]] = {"customer": [], "time_ms": [], "last_row": [], "labels": []}
    for s in times_ms:
        seen = _counts_before(table, s)
        who = np.flatnonzero(seen > 0)
        labels = np.stack([(_counts_before(table, s + horizon_ms, m) - _counts_before(table, s, m))[who] > 0
                           for m in heads], axis=1)
        out["customer"].append(who)
        out["time_ms"].append(np.full(len(who), s, dtype=np.int64))
        out["last_row"].append(table.offsets[who] + seen[who] - 1)
        out["labels"].append(labels)
    if not out["customer"]:
        raise LamError("no scoring times: the evaluation period is shorter than the horizon")
    return ScoringPoints(**{k: np.concatenate(v) for k, v in out.items()})


def touchpoint_points(table: EventTable, start_ms: int, end_ms: int, horizon_ms: int, n_heads: int) -> ScoringPoints:
    """A scoring point right after each touchpoint in [start_ms, end_ms), where the worker scores: from the
    touchpoints up to and including it, labelled by a purchase counted by the head in a later touchpoint
    within the horizon."""
    rows = np.flatnonzero((table.time_ms >= start_ms) & (table.time_ms < end_ms))
    customer = table.customer_of_row
    heads = _purchases_by_head(table, n_heads)
    labels = np.zeros((len(rows), n_heads), dtype=bool)
    for p, is_purchase in enumerate(heads):
        purchases = np.flatnonzero(is_purchase)
        if not len(purchases):
            continue
        after = np.searchsorted(purchases, rows, side="right")
        nxt = purchases[np.minimum(after, len(purchases) - 1)]
        labels[:, p] = ((after < len(purchases)) & (customer[nxt] == customer[rows])
                        & (table.time_ms[nxt] - table.time_ms[rows] < horizon_ms))
    return ScoringPoints(customer=customer[rows].astype(np.int64), time_ms=table.time_ms[rows], last_row=rows,
                         labels=labels)


def concat(parts: Sequence[ScoringPoints]) -> ScoringPoints:
    """The points of all `parts`, in order."""
    return ScoringPoints(*(np.concatenate([getattr(p, f) for p in parts]) for f in ScoringPoints.__slots__))


def windows(length: int, window: int) -> Iterator[slice]:
    """Column slices of at most `window` steps: the unit of truncated backpropagation."""
    for start in range(0, length, window):
        yield slice(start, min(start + window, length))


def parse_time(text: str) -> int:
    """Epoch ms from an integer, a date (midnight UTC) or an ISO-8601 time with a zone; LamError otherwise."""
    from datetime import UTC, datetime

    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise LamError(f"time: expected epoch ms, YYYY-MM-DD or ISO-8601 with zone; got {text!r}") from None
    if len(text) == 10:
        t = t.replace(tzinfo=UTC)
    if t.tzinfo is None:
        raise LamError(f"time: {text!r} has no zone; add Z or an offset")
    return int(t.timestamp() * 1000)
