"""The serving path (one touchpoint at a time, batched across customers) equals the offline path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model import artifact, calibrate
from model.network import ModelConfig, Network
from model.vocab import load_catalogue
from streams.contract import Touchpoint

DAY = 86_400_000
T0 = 1_735_689_600_000


def _history(customer: str, n: int, seed: int) -> list[Touchpoint]:
    rng = np.random.default_rng(seed)
    kinds = [("page_view", "web", None), ("product_view", "app", "fiber_1g"), ("compare", "web", "tv_bundle"),
             ("purchase", "store", "mobile_5g"), ("unheard_of", "pigeon", "accessory-17"), ("inquiry", "call_centre", None)]
    times = T0 + np.cumsum(rng.exponential(DAY / 3, size=n)).astype(np.int64)
    out = []
    for t in times:
        et, ch, item = kinds[rng.integers(len(kinds))]
        out.append(Touchpoint(customer, int(t), ch, et, item, float(rng.integers(0, 90)) if et == "purchase" else None))
    return out


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> artifact.LoadedModel:
    torch.manual_seed(3)
    vocab = load_catalogue()
    net = Network(ModelConfig(n_event_types=vocab.n_event_types, n_channels=vocab.n_channels,
                              n_items=vocab.n_items, n_heads=len(vocab.heads), hidden_size=32))
    with torch.no_grad():  # larger than the initial weights, so that a drift between the paths would show
        for p in net.parameters():
            p.mul_(3.0)
    cal = calibrate.Calibration(scale=np.linspace(0.5, 1.5, len(vocab.heads), dtype=np.float32),
                                shift=np.full(len(vocab.heads), -2.0, np.float32))
    path = tmp_path_factory.mktemp("parity") / "model.pt"
    artifact.save(path, net, vocab, cal, {}, {"split_time_ms": T0, "horizon_ms": 7 * DAY})
    return artifact.load(path)


def test_step_by_step_equals_the_sequence(model: artifact.LoadedModel) -> None:
    events = _history("c1", 300, seed=1)
    states, probs = model.sequence(events)
    h, prev = model.initial_state(1), np.zeros(1, np.int64)
    counts, first = np.zeros((1, model.config.n_event_types), np.float32), np.zeros(1, np.int64)
    for t, event in enumerate(events):
        h, counts, p = model.step(h, counts, [event], prev, first)
        prev = np.array([event.event_time_ms])
        first = np.array([events[0].event_time_ms])
        np.testing.assert_allclose(h[0], states[t], atol=1e-5)
        np.testing.assert_allclose(p[0], probs[t], atol=1e-5)
    assert counts.sum() == len(events) and counts[0, 0] == sum(e.event_type == "unheard_of" for e in events)
    since_first = prev - first
    np.testing.assert_allclose(model.score(h, counts, since_first), probs[-1:], atol=1e-6)


def test_a_batch_of_customers_interleaved_equals_each_sequence(model: artifact.LoadedModel) -> None:
    histories = [_history(f"c{i}", 40 + 7 * i, seed=10 + i) for i in range(6)]
    offline = [model.sequence(h) for h in histories]
    h = model.initial_state(len(histories))
    counts = np.zeros((len(histories), model.config.n_event_types), np.float32)
    prev, first = np.zeros(len(histories), np.int64), np.array([x[0].event_time_ms for x in histories])
    probs = np.zeros((len(histories), len(model.products)), np.float32)
    for t in range(max(len(x) for x in histories)):
        rows = [i for i, x in enumerate(histories) if t < len(x)]  # customers still active step together
        events = [histories[i][t] for i in rows]
        new, counts[rows], probs[rows] = model.step(h[rows], counts[rows], events, prev[rows], first[rows])
        assert new.dtype == np.float32 and new.shape == (len(rows), model.hidden_size)
        assert ((probs[rows] > 0) & (probs[rows] < 1)).all()
        h[rows] = new
        prev[rows] = [e.event_time_ms for e in events]
    for i, (states, last_probs) in enumerate(offline):
        np.testing.assert_allclose(h[i], states[-1], atol=1e-5)
        np.testing.assert_allclose(probs[i], last_probs[-1], atol=1e-5)


def test_scores_change_with_time_since_the_last_and_first_touchpoint_and_with_counts(
        model: artifact.LoadedModel) -> None:
    states, _ = model.sequence(_history("c9", 20, seed=9))
    h = np.repeat(states[-1:], 3, axis=0)
    counts = np.ones((3, model.config.n_event_types), np.float32)
    since_first = np.full(3, 10 * DAY)
    probs = model.score(h, counts, since_first, np.array([0, DAY, 30 * DAY]))
    assert not np.allclose(probs[0], probs[2])
    np.testing.assert_allclose(model.score(h[:1], counts[:1], since_first[:1]), probs[:1], atol=1e-7)
    assert not np.allclose(model.score(h[:1], counts[:1], np.array([90 * DAY])), probs[:1])
    assert not np.allclose(model.score(h[:1], 5 * counts[:1], since_first[:1]), probs[:1])


def test_heads_are_products_then_any(model: artifact.LoadedModel) -> None:
    assert model.products == ("fiber_1g", "mobile_5g", "tv_bundle", "device_upgrade", "any")
    assert model.initial_state(4).shape == (4, model.hidden_size)


def test_customers_stepped_through_their_touchpoints_at_once_equal_each_sequence(model: artifact.LoadedModel) -> None:
    # Lengths 1, 2, 3 (padded to 4), 5 and 17 (padded to 32): one call per length bucket; then each customer's
    # continuation from a stored state, as a later batch would step it.
    histories = [_history(f"c{i}", n, seed=30 + i) for i, n in enumerate((1, 2, 3, 5, 17, 9))]
    offline = [model.sequence(h) for h in histories]
    cut = [min(len(h), 4) for h in histories]
    zeros = np.zeros(len(histories), np.int64)
    h0 = model.initial_state(len(histories))
    counts0 = np.zeros((len(histories), model.config.n_event_types), np.float32)
    states, counts, probs = model.step_sequences(h0, counts0, [e for h, k in zip(histories, cut) for e in h[:k]],
                                                 np.array(cut), zeros, zeros)
    ends = np.cumsum(cut) - 1
    assert states.shape == (sum(cut), model.hidden_size) and counts[ends].sum(axis=1).tolist() == cut
    flat = np.concatenate([offline[i][0][:k] for i, k in enumerate(cut)])
    np.testing.assert_allclose(states, flat, atol=1e-5)
    np.testing.assert_allclose(probs, np.concatenate([offline[i][1][:k] for i, k in enumerate(cut)]), atol=1e-5)
    rest = [i for i, h in enumerate(histories) if len(h) > cut[i]]
    prev = np.array([histories[i][cut[i] - 1].event_time_ms for i in rest])
    first = np.array([histories[i][0].event_time_ms for i in rest])
    states, _, probs = model.step_sequences(states[ends[rest]], counts[ends[rest]],
                                            [e for i in rest for e in histories[i][cut[i]:]],
                                            np.array([len(histories[i]) - cut[i] for i in rest]), prev, first)
    np.testing.assert_allclose(states, np.concatenate([offline[i][0][cut[i]:] for i in rest]), atol=1e-5)
    np.testing.assert_allclose(probs, np.concatenate([offline[i][1][cut[i]:] for i in rest]), atol=1e-5)
