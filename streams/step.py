"""One step round: a batched GRU update of many customers' states by one touchpoint each."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from model.artifact import LoadedModel
from streams.contract import Touchpoint
from streams.state import record_touchpoint


def step_round(model: LoadedModel, states: np.ndarray, rows: np.ndarray, events: Sequence[Touchpoint],
               offsets: np.ndarray) -> None:
    """Apply `events[i]` to `states[rows[i]]` in place with one model call; rows are distinct customers."""
    times = np.fromiter((e.event_time_ms for e in events), dtype=np.int64, count=len(events))
    before = states["probs"][rows]  # (n, P)
    first = states["first_time"][rows]
    hidden, counts, probs = model.step(states["hidden"][rows], states["type_counts"][rows], events,
                                       states["last_time"][rows], first)  # (n, H), (n, E), (n, P)
    states["hidden"][rows] = hidden
    states["type_counts"][rows] = counts
    states["probs"][rows] = probs
    states["last_offset"][rows] = offsets
    states["last_time"][rows] = times
    states["first_time"][rows] = np.where(first == 0, times, first)
    states["events"][rows] += 1
    record_touchpoint(states, rows, times, offsets, [e.event_type for e in events],
                      [e.channel for e in events], probs - before)
