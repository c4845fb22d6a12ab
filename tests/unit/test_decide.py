"""The action policy: hysteresis, cool-down, contact limits, feedback, hold-out; property-based where it matters."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from streams.decide import DAY_MS, ActionSpec, Policy, apply_feedback, decide, in_holdout, load_policy
from streams.errors import LamError
from streams.state import StateLayout

ROOT = Path(__file__).resolve().parents[2]
HEADS = ("fiber_1g", "mobile_5g", "tv_bundle", "device_upgrade", "any")


def make_policy(threshold=0.5, margin=0.1, cooldown_ms=0, limits=None, min_events=1, recent_purchase_ms=0):
    spec = ActionSpec("call", "fiber_1g", "phone", threshold=threshold, value=1.0, cooldown_ms=cooldown_ms)
    return Policy((spec,), np.array([0]), margin, recent_purchase_ms, min_events, DAY_MS, 0.0, limits or {})


def one_customer():
    layout = StateLayout(hidden_size=2, products=len(HEADS), event_types=1, action_slots=4)
    states = layout.fresh(1, "v", np.zeros(2), np.zeros(len(HEADS)))
    states["events"] = 10
    return states


def run(policy, probs, times):
    states, fired = one_customer(), []
    for p, t in zip(probs, times):
        states["probs"][0, 0] = p
        if decide(policy, states, np.array([0]), np.array([t])):
            fired.append((p, t))
    return fired


probabilities = st.lists(st.floats(0, 1, width=32), min_size=1, max_size=60)


@given(probabilities)
def test_fires_only_on_upward_crossings_separated_by_a_rearm(probs):
    policy = make_policy()
    times = list(range(1, len(probs) + 1))
    fired_at = {t for _, t in run(policy, probs, times)}
    armed = True
    for p, t in zip(probs, times):
        should = armed and p >= 0.5
        assert (t in fired_at) == should
        armed = p < 0.4 or (armed and not should)


@given(probabilities, st.integers(0, 10))
def test_decisions_are_deterministic_in_event_time(probs, step):
    policy = make_policy(cooldown_ms=5)
    times = [i * step for i in range(1, len(probs) + 1)]
    assert run(policy, probs, times) == run(policy, probs, times)


@given(st.lists(st.integers(0, 30 * DAY_MS), min_size=1, max_size=40, unique=True))
@settings(max_examples=60)
def test_contact_limit_holds_in_every_window(times):
    times = sorted(times)
    policy = make_policy(margin=0.0, limits={"phone": (2, 7 * DAY_MS)})
    # alternate above/below so that every other touchpoint is a fresh upward crossing
    probs = [0.9 if i % 2 == 0 else 0.1 for i in range(len(times))]
    fired = [t for _, t in run(policy, probs, times)]
    for t in fired:
        assert sum(1 for u in fired if t - 7 * DAY_MS < u <= t) <= 2


def test_cooldown_and_recent_purchase_suppress():
    policy = make_policy(margin=0.0, cooldown_ms=100, recent_purchase_ms=1000)
    assert [t for _, t in run(policy, [0.9, 0.1, 0.9, 0.1, 0.9], [0, 10, 50, 60, 150])] == [0, 150]
    states = one_customer()
    apply_feedback(policy, states, np.array([0]), ["purchase"], ["fiber_1g"], np.array([500]), frozenset({"purchase"}))
    states["probs"][0, 0] = 0.9
    assert decide(policy, states, np.array([0]), np.array([900])) == []


def test_a_declined_offer_starts_the_cooldown():
    policy = make_policy(cooldown_ms=1000)
    states = one_customer()
    apply_feedback(policy, states, np.array([0]), ["offer_declined"], ["fiber_1g"], np.array([100]), frozenset())
    states["probs"][0, 0] = 0.9
    assert decide(policy, states, np.array([0]), np.array([500])) == []
    assert int(states["cooldown"][0, 0]) == 1100


def test_highest_expected_value_wins():
    cheap = ActionSpec("email", "fiber_1g", "email", 0.5, value=1.0, cooldown_ms=0)
    dear = ActionSpec("call", "mobile_5g", "phone", 0.5, value=10.0, cooldown_ms=0)
    policy = Policy((cheap, dear), np.array([0, 1]), 0.1, 0, 1, DAY_MS, 0.0, {})
    states = one_customer()
    states["probs"][0, :2] = [0.9, 0.6]
    (decision,) = decide(policy, states, np.array([0]), np.array([1]))
    assert policy.actions[decision.action].name == "call"


def test_too_few_events_are_not_acted_on():
    policy = make_policy(min_events=3)
    states = one_customer()
    states["events"] = 2
    states["probs"][0, 0] = 0.9
    assert decide(policy, states, np.array([0]), np.array([1])) == []


@given(st.text(min_size=1, max_size=20))
def test_holdout_is_a_stable_function_of_the_id(customer):
    assert in_holdout(customer, 0.3) == in_holdout(customer, 0.3)
    assert not in_holdout(customer, 0.0)


def test_holdout_share_is_respected():
    share = np.mean([in_holdout(f"c{i:07d}", 0.1) for i in range(20000)])
    assert 0.09 < share < 0.11


def test_the_shipped_policy_loads_and_bad_ones_fail_in_one_line(tmp_path):
    policy = load_policy(ROOT / "streams" / "policy.toml", HEADS)
    assert len(policy.actions) == 4
    bad = tmp_path / "p.toml"
    bad.write_text('[[actions]]\nname="x"\nproduct="nope"\nchannel="c"\nthreshold=0.5\nvalue=1\ncooldown_days=1\n')
    with pytest.raises(LamError, match="not among the model's heads"):
        load_policy(bad, HEADS)
    bad.write_text("actions = [")
    with pytest.raises(LamError, match="not valid TOML"):
        load_policy(bad, HEADS)
    with pytest.raises(LamError, match="not found"):
        load_policy(tmp_path / "missing.toml", HEADS)
