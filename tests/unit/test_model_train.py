"""A small training run on a simulated sample: it trains, calibrates, saves, loads, scores and evaluates."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model import artifact, calibrate, data, evaluate, refit, train
from model.network import ModelConfig, Network
from model.vocab import load_catalogue
from sim.world import World, WorldConfig
from streams.errors import LamError

DAY = 86_400_000
VOCAB = load_catalogue()


@pytest.fixture(scope="module")
def world() -> World:
    return World(WorldConfig(customers=2000, days=75, seed=7))


@pytest.fixture(scope="module")
def table(world: World) -> data.EventTable:
    return data.from_touchpoints(world.events(), VOCAB)


@pytest.fixture(scope="module")
def trained(table: data.EventTable, tmp_path_factory: pytest.TempPathFactory) -> tuple[train.TrainResult, Path]:
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    return train.train(table, VOCAB, train.TrainConfig(epochs=3, hidden_size=16, seed=3), path), path


def test_calibration_matches_the_observed_rate_on_held_out_data() -> None:
    rng = np.random.default_rng(0)
    truth = rng.normal(-3.5, 1.2, size=(40_000, 2))  # (n, P) true logits of rare events
    labels = rng.random(truth.shape) < calibrate.sigmoid(truth)
    raw = 0.5 * truth + 2.0  # overconfident in level, flat in slope: what an uncalibrated head looks like
    fit, held = slice(0, 20_000), slice(20_000, None)
    cal = calibrate.fit(raw[fit], labels[fit])
    before, after = calibrate.sigmoid(raw[held]).mean(axis=0), cal.apply(raw[held]).mean(axis=0)
    observed = labels[held].mean(axis=0)
    assert (np.abs(before - observed) > 0.2).all()
    np.testing.assert_allclose(after, observed, atol=0.004)
    np.testing.assert_allclose(cal.scale, 2.0, rtol=0.1)


def test_training_writes_an_artifact_that_loads_and_scores(trained: tuple[train.TrainResult, Path],
                                                           table: data.EventTable) -> None:
    result, path = trained
    model = artifact.load(path)
    assert model.version == result.version and len(model.version) == 12
    assert model.products == VOCAB.heads and model.hidden_size == 16
    assert model.training["split_time_ms"] == data.default_split(table)
    assert len(VOCAB.heads) - 1 in model.training["refitted_heads"]  # "any" has the most positives
    validation = model.metrics["validation"]["any"]
    assert validation["points"] > 1000 and validation["positives"] > 10
    assert 0.5 < validation["auc"] <= 1.0
    customer = table.customer_ids[int(np.argmax(table.lengths))]
    events = [e for e in World(WorldConfig(customers=2000, days=75, seed=7)).events() if e.customer_id == customer]
    states, probs = model.sequence(events)
    assert states.shape == (len(events), 16) and probs.shape == (len(events), len(VOCAB.heads))
    assert ((probs > 0) & (probs < 1)).all() and not np.allclose(states[0], states[-1])


def test_calibrated_probabilities_match_the_held_out_rate(trained: tuple[train.TrainResult, Path],
                                                         table: data.EventTable) -> None:
    model = artifact.load(trained[1])
    split = model.training["split_time_ms"]
    points = data.scoring_points(table, data.daily_times(split, int(table.time_ms.max()) - 7 * DAY), 7 * DAY,
                                 len(VOCAB.heads))
    logits = train.score_points(model.net, table, points)
    fit = points.customer % 2 == 0  # customers of one half fit, the other half checks
    cal = calibrate.fit(logits[fit], points.labels[fit])
    held, observed = cal.apply(logits[~fit])[:, -1], points.labels[~fit, -1]
    tolerance = 3 * np.sqrt(observed.mean() * (1 - observed.mean()) / len(observed))  # three standard errors
    assert abs(held.mean() - observed.mean()) < tolerance
    assert abs(calibrate.sigmoid(logits[~fit, -1]).mean() - observed.mean()) > abs(held.mean() - observed.mean())


def test_a_head_output_set_from_weights_is_that_affine_function_of_the_head_features() -> None:
    torch.manual_seed(0)
    net = Network(ModelConfig(n_event_types=4, n_channels=3, n_items=5, n_heads=3, hidden_size=8, head_hidden=6))
    h, context = torch.randn(50, 8), torch.randn(50, net.config.context_size)
    before = net.conversion_logits(h, context).detach()
    weights = np.random.default_rng(0).normal(size=6 + net.config.context_size)
    net.set_head_output(1, weights, bias=-2.5)
    after = net.conversion_logits(h, context).detach()
    expected = net.head_features(h, context).detach().double().numpy() @ weights - 2.5
    np.testing.assert_allclose(after[:, 1].numpy(), expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(after[:, [0, 2]], before[:, [0, 2]])


def test_refit_fits_its_daily_points_at_least_as_well_and_leaves_sparse_heads_alone(
        trained: tuple[train.TrainResult, Path], table: data.EventTable) -> None:
    model = artifact.load(trained[1])
    split = model.training["split_time_ms"]
    past = table.before(split)
    points = data.scoring_points(past, data.daily_times(split - 14 * DAY, split - 7 * DAY), 7 * DAY,
                                 len(VOCAB.heads))
    positives = points.labels.sum(axis=0)
    net = copy.deepcopy(model.net)
    net.conversion[2].bias.data += 3.0  # an output far off the daily points' level, as a stale one would be
    before = train.score_points(net, past, points)
    refitted = refit.refit_heads(net, past, points, np.ones(len(points.customer)), np.random.default_rng(0))
    after = train.score_points(net, past, points)
    assert refitted == [p for p in range(len(positives)) if positives[p] >= refit.MIN_POSITIVES]
    assert refitted and len(refitted) < len(positives)  # this world has a sparse head and a dense one
    for p in range(len(positives)):
        y = points.labels[:, p]
        if p in refitted:
            loss_before, loss_after = _log_loss(before[:, p], y), _log_loss(after[:, p], y)
            assert loss_after < loss_before
            assert abs(calibrate.sigmoid(after[:, p]).mean() - y.mean()) < 0.1 * y.mean()
        else:
            np.testing.assert_array_equal(after[:, p], before[:, p])


def _log_loss(logits: np.ndarray, y: np.ndarray) -> float:
    prob = np.clip(calibrate.sigmoid(logits), 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(prob) + (1 - y) * np.log(1 - prob)))


def test_same_seed_same_version(trained: tuple[train.TrainResult, Path], table: data.EventTable,
                                tmp_path: Path) -> None:
    again = train.train(table, VOCAB, train.TrainConfig(epochs=3, hidden_size=16, seed=3), tmp_path / "again.pt")
    assert again.version == trained[0].version


def test_missing_corrupt_and_foreign_files_are_one_line_errors(trained: tuple[train.TrainResult, Path],
                                                               tmp_path: Path) -> None:
    with pytest.raises(LamError, match="not found"):
        artifact.load(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(LamError, match="unreadable"):
        artifact.load(tmp_path / "junk.pt")
    content = torch.load(trained[1], weights_only=True)
    content["format"] = 99
    torch.save(content, tmp_path / "future.pt")
    with pytest.raises(LamError, match="format version 99"):
        artifact.load(tmp_path / "future.pt")
    content["format"] = artifact.FORMAT_VERSION
    content["weights"]["gru.bias_hh_l0"] += 1.0
    torch.save(content, tmp_path / "edited.pt")
    with pytest.raises(LamError, match="corrupt"):
        artifact.load(tmp_path / "edited.pt")


def test_evaluation_writes_markdown_json_and_plot(trained: tuple[train.TrainResult, Path], table: data.EventTable,
                                                  world: World, tmp_path: Path) -> None:
    model = artifact.load(trained[1])
    report = evaluate.evaluate(table, model, evaluate.EvalConfig(), world=world)
    assert set(report["methods"]) == {"model", *evaluate.BASELINES}
    assert report["positives"] > 0 and report["points"] > report["positives"]
    tele = report["telemarketing"]
    assert tele["model"]["calls"] == report["methods"]["model"]["top_calls"] > 0
    (tmp_path / "model.json").write_text(json.dumps({"retailrocket": {"kept": True}}))
    paths = evaluate.write(report, "simulated", tmp_path)
    doc = json.loads((tmp_path / "model.json").read_text())
    assert doc["retailrocket"] == {"kept": True} and doc["simulated"]["model_version"] == model.version
    text = (tmp_path / "model.md").read_text()
    assert "| logistic_regression |" in text and "Telemarketing" in text
    evaluate.write(report, "simulated", tmp_path)  # a second run replaces its section, not appends one
    assert (tmp_path / "model.md").read_text().count("### simulated") == 1
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluation_features_use_nothing_at_or_after_the_scoring_time(
        trained: tuple[train.TrainResult, Path], world: World) -> None:
    model = artifact.load(trained[1])
    events = list(world.events())
    split = int(model.training["split_time_ms"])
    customers = sorted({e.customer_id for e in events if e.event_time_ms < split})[:40]
    # The future: purchases, carts and views at the scoring time itself and after it, for known customers and
    # for newcomers; none of it may move a score at that scoring time.
    future = [dataclasses.replace(e, customer_id=c, event_time_ms=split + k * 3_600_000)
              for k, e in enumerate(x for x in events if x.event_type in ("purchase", "add_to_cart", "page_view"))
              if k < 120 for c in (customers[k % len(customers)], f"newcomer-{k}")]
    config = evaluate.EvalConfig()

    def scores(table: data.EventTable) -> dict[str, np.ndarray]:
        points = data.scoring_points(table, [split], DAY, len(VOCAB.heads))
        out = evaluate.baseline_scores(table, points, model, split, 7 * DAY, config)
        out["model"] = train.score_points(model.net, table, points)[:, -1]
        out["customer"] = table.customer_ids[points.customer]
        return out

    without = scores(data.from_touchpoints(events, VOCAB))
    with_future = scores(data.from_touchpoints(sorted(events + future, key=lambda e: e.event_time_ms), VOCAB))
    np.testing.assert_array_equal(without["customer"], with_future["customer"])  # no newcomer is scored
    for name in ("model", *evaluate.BASELINES):
        np.testing.assert_allclose(without[name], with_future[name], rtol=1e-6, err_msg=name)
