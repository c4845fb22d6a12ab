"""`lam replay` end to end on the real broker, on a log in the clickstream CSV layout that the project's own
simulator writes, with a model trained on it: the command runs, and its figures add up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from model import data, train
from model.vocab import load_catalogue
from sim.world import World, WorldConfig
from sim.write import write_clickstream_csv
from streams.settings import ROOT

pytestmark = pytest.mark.integration
MAPPING = ROOT / "streams" / "mappings" / "retailrocket.toml"
# Acts on nearly every touchpoint of a customer with two, so a short log still gives actions to count.
POLICY = """version = 1
rearm_margin = -1.0
recent_purchase_days = 0
min_events = 2
action_ttl_hours = 48
holdout_share = 0.1

[[actions]]
name = "email_any"
product = "any"
channel = "email"
threshold = 0.0
value = 1.0
cooldown_days = 0
"""


def test_replay_holds_the_actions_against_what_happened_and_writes_its_sections(bootstrap, settings, tmp_path):
    log = tmp_path / "clicks.csv"
    write_clickstream_csv(World(WorldConfig(customers=600, days=40, seed=3)), log)
    vocab = load_catalogue()
    model = tmp_path / "model.pt"
    train.train(data.read(log, vocab, MAPPING), vocab, train.TrainConfig(epochs=1, hidden_size=8), model)
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    (tmp_path / "model.json").write_text(json.dumps({"simulated": {"kept": True}}))
    env = os.environ | {"LAM_BROKER_PORT": str(settings.broker_port),
                        "LAM_BOOTSTRAP_SERVERS": settings.bootstrap_servers}

    done = subprocess.run([sys.executable, "-m", "streams.cli", "replay", "--events", str(log), "--mapping",
                           str(MAPPING), "--dataset", "sample", "--model-path", str(model), "--policy-path",
                           str(policy), "--latency-seconds", "3", "--docs-dir", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stderr[-3000:]

    doc = json.loads((tmp_path / "model.json").read_text())
    assert doc["simulated"] == {"kept": True}
    o = doc["replay_sample"]["outcomes"]
    assert 0 < o["acted_customer_days"] <= o["actions"]
    assert 0 <= o["acted_orders_after_an_hour"] <= o["acted_orders"] <= o["acted_customer_days"]
    assert o["acted_order_rate"] == pytest.approx(o["acted_orders"] / o["acted_customer_days"])
    for name in ("recency", "rfm", "logistic_regression", "model_daily_list"):
        assert o["lists"][name]["calls"] == o["acted_customer_days"]  # the same number per day as the worker
    bench = json.loads((tmp_path / "benchmarks.json").read_text())["replay_sample"]
    assert bench["throughput"]["events"] == len(log.read_text().splitlines()) - 1
    assert bench["latency"]["actions"] > 0
    assert "<!-- bench:replay-sample:start -->" in (tmp_path / "benchmarks.md").read_text()
    assert "### sample: the worker's actions against what happened" in (tmp_path / "model.md").read_text()
