"""The README's main command: `lam demo` runs the whole system and shows actions."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid

import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.integration


def test_demo_trains_a_model_streams_touchpoints_and_prints_actions(bootstrap, settings, tmp_path):
    uid = uuid.uuid4().hex[:8]
    env = os.environ | {
        "LAM_BROKER_PORT": str(settings.broker_port), "LAM_HOME": str(settings.home),
        "LAM_MODEL_PATH": str(tmp_path / "model.pt"), "LAM_DATA_DIR": str(tmp_path / "state"),
        "LAM_APP_ID": f"lam-demo-{uid}", "LAM_INPUT_TOPIC": f"demo-{uid}.touchpoints",
        "LAM_CONSENT_TOPIC": f"demo-{uid}.consent", "LAM_ACTION_TOPIC": f"demo-{uid}.actions",
        "LAM_DEAD_LETTER_TOPIC": f"demo-{uid}.deadletter", "LAM_PARTITIONS": "4", "LAM_WEB_PORT": str(free_port()),
    }
    done = subprocess.run([sys.executable, "-m", "streams.cli", "demo", "--seconds", "40", "--rate", "1000"],
                          env=env, capture_output=True, text=True, timeout=300)

    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "model.pt").is_file()
    actions = [line for line in done.stdout.splitlines() if " via " in line and "p=" in line]
    assert actions, done.stdout[-2000:]
    final = done.stdout.strip().splitlines()[-1]
    assert final.startswith("demo finished")
    assert int(re.search(r"([\d,]+) actions", final).group(1).replace(",", "")) == len(actions)
