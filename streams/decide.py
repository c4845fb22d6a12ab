"""The action policy: from calibrated probabilities and a customer's policy fields to at most one action.

Everything is decided in event time, from the state and the touchpoint alone, so replaying the same input
decides the same actions. Operations are vectorised over the customers of one step round; only customers whose
probability crossed a threshold reach the per-customer checks.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streams.errors import LamError
from streams.state import MAX_ACTIONS

DAY_MS = 86_400_000
HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class ActionSpec:
    name: str
    product: str
    channel: str
    threshold: float
    value: float
    cooldown_ms: int


@dataclass(frozen=True, slots=True)
class Policy:
    actions: tuple[ActionSpec, ...]
    product_index: np.ndarray  # (A,) the model head of each action's product
    rearm_margin: float
    recent_purchase_ms: int
    min_events: int
    ttl_ms: int
    holdout_share: float
    contact_limits: dict[str, tuple[int, int]]  # channel -> (max contacts, window ms)

    @property
    def thresholds(self) -> np.ndarray:
        return np.array([a.threshold for a in self.actions], dtype=np.float32)


@dataclass(frozen=True, slots=True)
class Decision:
    row: int  # index into the batch's states
    action: int  # index into Policy.actions
    probability: float
    position: int  # index into the round's rows (and so into its touchpoints)


def load_policy(path: str | Path, products: Sequence[str]) -> Policy:
    """Read and validate the policy file against the model's product heads; errors are one line."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise LamError(f"policy file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise LamError(f"policy file {path} is not valid TOML: {exc}") from None
    try:
        actions = tuple(ActionSpec(name=str(a["name"]), product=str(a["product"]), channel=str(a["channel"]),
                                   threshold=float(a["threshold"]), value=float(a["value"]),
                                   cooldown_ms=int(float(a["cooldown_days"]) * DAY_MS))
                        for a in doc["actions"])
        limits = {ch: (int(v["max_contacts"]), int(float(v["window_days"]) * DAY_MS))
                  for ch, v in doc.get("contact_limits", {}).items()}
        policy = Policy(
            actions=actions,
            product_index=np.array([list(products).index(a.product) if a.product in products else -1
                                    for a in actions], dtype=np.int64),
            rearm_margin=float(doc.get("rearm_margin", 0.05)),
            recent_purchase_ms=int(float(doc.get("recent_purchase_days", 30)) * DAY_MS),
            min_events=int(doc.get("min_events", 1)),
            ttl_ms=int(float(doc.get("action_ttl_hours", 48)) * HOUR_MS),
            holdout_share=float(doc.get("holdout_share", 0.0)),
            contact_limits=limits,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise LamError(f"policy file {path}: bad or missing field {exc}") from None
    unknown = [a.product for a, i in zip(actions, policy.product_index) if i < 0]
    if unknown:
        raise LamError(f"policy file {path}: products {unknown} are not among the model's heads {list(products)}")
    if not 0 < len(actions) <= MAX_ACTIONS:
        raise LamError(f"policy file {path}: expected 1..{MAX_ACTIONS} actions, got {len(actions)}")
    if not 0.0 <= policy.holdout_share < 1.0:
        raise LamError(f"policy file {path}: holdout_share: expected 0 <= share < 1, got {policy.holdout_share}")
    return policy


def in_holdout(customer_id: str, share: float) -> bool:
    """Deterministic control-group membership from a hash of the id (stable across processes and restarts).

    >>> in_holdout("c0000001", 0.0), in_holdout("c0000001", 0.999999)
    (False, True)
    """
    digest = hashlib.blake2b(customer_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < share


def apply_feedback(policy: Policy, states: np.ndarray, rows: np.ndarray, event_types: Sequence[str],
                   items: Sequence[str | None], times: np.ndarray, purchase_types: frozenset[str]) -> None:
    """Purchases mark the product as bought; a declined offer puts its actions in cool-down."""
    for row, kind, item, t in zip(rows, event_types, items, times):
        if kind in purchase_types:
            for a, spec in enumerate(policy.actions):
                if spec.product == item:
                    states["bought"][row, a] = t
        elif kind == "offer_declined":
            for a, spec in enumerate(policy.actions):
                if spec.product == item:
                    states["cooldown"][row, a] = max(int(states["cooldown"][row, a]), int(t) + spec.cooldown_ms)


def decide(policy: Policy, states: np.ndarray, rows: np.ndarray, times: np.ndarray) -> list[Decision]:
    """Update hysteresis for `rows` after a step and return the actions to emit (one per customer at most).

    `states["probs"][rows]` must already hold the probabilities after this round's touchpoints, at event
    times `times` (ms). Chosen actions are recorded in the contact ring and start their cool-down.

    >>> import numpy as np
    >>> from streams.state import StateLayout
    >>> spec = ActionSpec("call", "p", "phone", threshold=0.5, value=1.0, cooldown_ms=DAY_MS)
    >>> policy = Policy((spec,), np.array([0]), 0.1, 0, 1, HOUR_MS, 0.0, {})
    >>> layout = StateLayout(hidden_size=2, products=1, event_types=1, action_slots=4)
    >>> states = layout.fresh(2, "v1", np.zeros(2), np.zeros(1))
    >>> states["events"] = 3
    >>> states["probs"][:, 0] = [0.7, 0.2]
    >>> [(d.row, d.action) for d in decide(policy, states, np.array([0, 1]), np.array([10, 10]))]
    [(0, 0)]
    >>> decide(policy, states, np.array([0, 1]), np.array([20, 20]))  # still above: no second firing
    []
    """
    n_actions = len(policy.actions)
    probs = states["probs"][rows][:, policy.product_index]  # (n, A)
    thresholds = policy.thresholds
    armed = states["armed"][rows, :n_actions].astype(bool)
    crossed = armed & (probs >= thresholds)
    rearm = probs < thresholds - policy.rearm_margin
    states["armed"][rows, :n_actions] = np.where(rearm, 1, np.where(crossed, 0, armed)).astype(np.uint8)
    candidates = np.flatnonzero(crossed.any(axis=1))
    decisions = []
    for i in candidates:
        row, t = int(rows[i]), int(times[i])
        if int(states["events"][row]) < policy.min_events:
            continue
        best, best_value = -1, 0.0
        for a in np.flatnonzero(crossed[i]):
            expected = float(probs[i, a]) * policy.actions[a].value
            if expected > best_value and _allowed(policy, states, row, int(a), t):
                best, best_value = int(a), expected
        if best >= 0:
            _record_contact(policy, states, row, best, t)
            decisions.append(Decision(row=row, action=best, probability=float(probs[i, best]), position=int(i)))
    return decisions


def _allowed(policy: Policy, states: np.ndarray, row: int, action: int, t: int) -> bool:
    if t < int(states["cooldown"][row, action]):
        return False
    bought = int(states["bought"][row, action])
    if bought and t - bought < policy.recent_purchase_ms:
        return False
    channel = policy.actions[action].channel
    if channel in policy.contact_limits:
        max_contacts, window = policy.contact_limits[channel]
        acts, when = states["contact_act"][row], states["contact_time"][row]
        same_channel = np.array([0 <= a < len(policy.actions) and policy.actions[a].channel == channel for a in acts])
        if int(np.count_nonzero(same_channel & (when > t - window))) >= max_contacts:
            return False
    return True


def _record_contact(policy: Policy, states: np.ndarray, row: int, action: int, t: int) -> None:
    # Python lists of the ring's few slots: numpy's per-call costs exceeded the work (one call per action).
    acts = states["contact_act"][row].tolist()
    if -1 in acts:
        slot = acts.index(-1)
    else:  # the oldest
        times = states["contact_time"][row].tolist()
        slot = times.index(min(times))
    states["contact_time"][row, slot] = t
    states["contact_act"][row, slot] = action
    states["cooldown"][row, action] = t + policy.actions[action].cooldown_ms
