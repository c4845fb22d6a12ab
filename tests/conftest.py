"""Shared fixtures. Tests that need Kafka use the real local KRaft broker, never a mock.

The `bootstrap` fixture reuses a broker that already answers (CI starts one before the tests) or starts the
local broker once for the run and stops it afterwards. If no broker can be had, the run fails; it never skips.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streams import kafka
from streams.errors import LamError
from streams.settings import Settings, load


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load()


@pytest.fixture(scope="session")
def bootstrap(settings: Settings) -> Iterator[str]:
    from deploy import broker

    started_here = False
    if not broker.answers(settings.bootstrap):
        try:
            broker.start(settings)
        except LamError as exc:
            pytest.fail(f"the local Kafka broker could not be started: {exc}", pytrace=False)
        started_here = True
    yield settings.bootstrap
    if started_here:
        broker.stop(settings)


@pytest.fixture
def topic_factory(bootstrap: str) -> Iterator[Callable[..., str]]:
    """Create uniquely named topics for one test; they are deleted when it ends."""
    created: list[str] = []

    def make(partitions: int = 6, prefix: str = "test") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        kafka.create_topics(bootstrap, {name: partitions})
        created.append(name)
        return name

    yield make
    if created:
        kafka.delete_topics(bootstrap, created)


@pytest.fixture
def consumer_factory(bootstrap: str) -> Iterator[Callable[..., object]]:
    """Consumers in fresh groups, reading from the earliest offset; closed when the test ends."""
    consumers = []

    def make(group_id: str | None = None, **extra: object):
        cons = kafka.consumer(bootstrap, group_id=group_id, **extra)
        consumers.append(cons)
        return cons

    yield make
    for cons in consumers:
        cons.close()


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory):
    """An untrained but valid model artifact (hidden size 16), for tests of the serving and streaming paths."""
    import torch

    from model import artifact
    from model.calibrate import Calibration
    from model.network import ModelConfig, Network
    from model.vocab import load_catalogue

    torch.manual_seed(7)
    vocab = load_catalogue()
    net = Network(ModelConfig(n_event_types=vocab.n_event_types, n_channels=vocab.n_channels,
                              n_items=vocab.n_items, n_heads=len(vocab.heads), hidden_size=16))
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    artifact.save(path, net, vocab, Calibration.identity(len(vocab.heads)), metrics={}, training={"seed": 7})
    return path


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def worker_factory(bootstrap: str, settings: Settings, tmp_path):
    """Start `lam worker` processes against the real broker; each gets its own state folder and web port.

    `start(env)` takes LAM_* overrides (topics, app id, model, policy) and returns the process; all are stopped
    (SIGTERM, then SIGKILL) when the test ends, and their output is in tmp_path/worker-N.log.
    """
    import os
    import subprocess
    import sys

    procs: list[subprocess.Popen] = []

    def start(env: dict[str, str]) -> subprocess.Popen:
        n = len(procs)
        full = os.environ | {"LAM_BROKER_PORT": str(settings.broker_port),
                             "LAM_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
                             "LAM_DATA_DIR": str(tmp_path / f"worker-{n}"),
                             "LAM_WEB_PORT": str(free_port())} | env
        log = open(tmp_path / f"worker-{n}.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=full, stdout=log,
                                stderr=subprocess.STDOUT)
        log.close()
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        stop_process(proc)


def stop_process(proc, timeout: float = 30.0) -> None:
    import subprocess

    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# The shared real data set (../shared/data beside the project, or LAM_SHARED_DATA): read in place, never copied.
RETAILROCKET = Path(os.environ.get("LAM_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
                    ) / "retailrocket" / "events-2015-05-03_2015-07-31.csv.gz"


@pytest.fixture
def retailrocket() -> Path:
    if not RETAILROCKET.is_file():
        pytest.skip(f"the RetailRocket log is not at {RETAILROCKET} (set LAM_SHARED_DATA)")
    return RETAILROCKET
