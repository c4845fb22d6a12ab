"""The model's part of a batch: every touchpoint's new state in a few batched GRU calls (`step_batch`), then
each round's states stored in turn (`apply_round`), so the policy sees them round by round."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model.artifact import LoadedModel
from streams.contract import Touchpoint
from streams.state import record_touchpoint


@dataclass(frozen=True, slots=True)
class Stepped:
    """The state (N, H), counts (N, E) and probabilities (N, P) after each of a batch's touchpoints, customer
    after customer; `start[c]` is where customer c's touchpoints begin."""

    hidden: np.ndarray
    counts: np.ndarray
    probs: np.ndarray
    start: np.ndarray


def step_batch(model: LoadedModel, states: np.ndarray, customers: np.ndarray,
               sequences: Sequence[Sequence[Touchpoint]]) -> Stepped:
    """Step `states[customers[i]]` through `sequences[i]`, its touchpoints of the batch in order, without storing.

    A round by round model call cost a fixed ~0.3 ms each, and a log's heavy visitors made dozens of rounds per
    batch (RetailRocket: 36 on average, measured); grouped by length, the whole batch takes a few calls."""
    hidden, counts, probs = model.step_sequences(states["hidden"][customers], states["type_counts"][customers],
                                                 sequences, states["last_time"][customers],
                                                 states["first_time"][customers])
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    start = np.zeros(len(states), dtype=np.int64)
    start[customers] = np.cumsum(lengths) - lengths
    return Stepped(hidden, counts, probs, start)


def apply_round(stepped: Stepped, depth: int, states: np.ndarray, rows: np.ndarray, events: Sequence[Touchpoint],
                times: np.ndarray, offsets: np.ndarray) -> None:
    """Store in `states[rows]` what `events[i]` (at `times[i]`), the `depth`-th touchpoint of row i in the batch,
    left."""
    at = stepped.start[rows] + depth
    before = states["probs"][rows]  # (n, P)
    first = states["first_time"][rows]
    probs = stepped.probs[at]
    states["hidden"][rows] = stepped.hidden[at]
    states["type_counts"][rows] = stepped.counts[at]
    states["probs"][rows] = probs
    states["last_offset"][rows] = offsets
    states["last_time"][rows] = times
    states["first_time"][rows] = np.where(first == 0, times, first)
    states["events"][rows] += 1
    record_touchpoint(states, rows, times, offsets, [e.event_type for e in events],
                      [e.channel for e in events], probs - before)
