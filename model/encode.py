"""Touchpoints to model inputs; the one encoding that training and serving share.

A touchpoint becomes three ids (event type, channel, item; see `model.vocab`) and `N_NUMERIC` numbers:
log hours since the customer's previous touchpoint (and a flag for "none"), time of day and of week on the
unit circle (so 23:59 sits next to 00:00), and a signed log of the value (and a flag for "none").
Both paths call `numeric` on whole arrays, so there is no per-event Python beyond the id lookups.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from model.vocab import Vocabulary
from streams.contract import Touchpoint

N_NUMERIC = 8
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS
_LOG_SCALE = 4.0  # log1p(hours) reaches ~9 over a year; dividing keeps inputs near unit scale


def categorical(events: Sequence[Touchpoint], vocab: Vocabulary) -> np.ndarray:
    """(B, 3) int64: event type, channel and item ids."""
    et, ch, it = vocab.event_type_id, vocab.channel_id, vocab.item_id
    ids = [(et(e.event_type), ch(e.channel), it(e.item)) for e in events]
    return np.array(ids, dtype=np.int64).reshape(len(events), 3)


def numeric(time_ms: np.ndarray, prev_time_ms: np.ndarray, value: np.ndarray) -> np.ndarray:
    """(B, N_NUMERIC) float32 from event times (B,), previous times (B,; 0 = none) and values (B,; NaN = none)."""
    time_ms = np.asarray(time_ms, dtype=np.int64)
    prev_time_ms = np.asarray(prev_time_ms, dtype=np.int64)
    value = np.asarray(value, dtype=np.float64)
    first = prev_time_ms == 0
    gap_hours = np.where(first, 0, np.maximum(time_ms - prev_time_ms, 0)) / HOUR_MS
    day = 2 * np.pi * (time_ms % DAY_MS) / DAY_MS
    week = 2 * np.pi * (time_ms % WEEK_MS) / WEEK_MS
    has_value = ~np.isnan(value)
    v = np.where(has_value, value, 0.0)
    out = np.stack([
        np.log1p(gap_hours) / _LOG_SCALE, first,
        np.sin(day), np.cos(day), np.sin(week), np.cos(week),
        np.sign(v) * np.log1p(np.abs(v)) / _LOG_SCALE, has_value,
    ], axis=1)
    return out.astype(np.float32)


def elapsed(elapsed_ms: np.ndarray) -> np.ndarray:
    """(B, 1) float32: log hours from the last touchpoint to the scoring time, the heads' clock input."""
    hours = np.maximum(np.asarray(elapsed_ms, dtype=np.float64), 0) / HOUR_MS
    return (np.log1p(hours) / _LOG_SCALE).astype(np.float32).reshape(-1, 1)


def values(events: Sequence[Touchpoint]) -> np.ndarray:
    """(B,) float64 values, NaN where a touchpoint has none."""
    return np.array([np.nan if e.value is None else e.value for e in events], dtype=np.float64)


def encode(events: Sequence[Touchpoint], prev_time_ms: np.ndarray, vocab: Vocabulary) -> tuple[np.ndarray, np.ndarray]:
    """Ids (B, 3) and numbers (B, N_NUMERIC) for a batch of touchpoints."""
    times = np.fromiter((e.event_time_ms for e in events), dtype=np.int64, count=len(events))
    return categorical(events, vocab), numeric(times, prev_time_ms, values(events))
