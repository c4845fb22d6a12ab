"""The model's part of a batch: every touchpoint's new state in a few batched GRU calls (`step_batch`), then
each round's states stored in turn (`apply_round`), so the policy sees them round by round."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model.artifact import LoadedModel
from streams.batch import Plan
from streams.contract import Touchpoint
from streams.state import record_touchpoint


@dataclass(frozen=True, slots=True)
class Stepped:
    """The state (N, H), counts (N, E) and probabilities (N, P) after each of a batch's touchpoints, in the order
    of its plan."""

    hidden: np.ndarray
    counts: np.ndarray
    probs: np.ndarray


def step_batch(model: LoadedModel, states: np.ndarray, plan: Plan, events: Sequence[Touchpoint]) -> Stepped:
    """Step `states[plan.rows[i]]` through its touchpoints of the batch, `events` in the plan's order, without
    storing.

    A round by round model call cost a fixed ~0.3 ms each, and a log's heavy visitors made dozens of rounds per
    batch (RetailRocket: 36 on average, measured); grouped by length, the whole batch takes a few calls."""
    rows = plan.rows
    return Stepped(*model.step_sequences(states["hidden"][rows], states["type_counts"][rows], events, plan.lengths,
                                         states["last_time"][rows], states["first_time"][rows]))


def apply_round(stepped: Stepped, at: np.ndarray, states: np.ndarray, rows: np.ndarray, times: np.ndarray,
                offsets: np.ndarray, types: np.ndarray, channels: np.ndarray) -> None:
    """Store in `states[rows]` what their touchpoints of this round (at `at` in the plan's order; event `times`,
    input `offsets`, `types` and `channels` as `streams.state.ring_names`) left."""
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
    record_touchpoint(states, rows, times, offsets, types, channels, probs - before)
