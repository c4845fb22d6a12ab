"""Fixtures of the reliability suite: a cluster of real `lam worker` processes with fresh topics, and the ledger.

Workers get faust's `BROKER_SESSION_TIMEOUT=10` (read by faust from the environment; LAM's Settings has no field
for it): a SIGKILLed worker's partitions then move after 10 s instead of faust's default 60 s.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams import kafka, topics
from streams.settings import Settings
from streams.settings import load as load_settings
from tests.conftest import free_port, stop_process
from tests.reliability.report import LEDGER, Ledger, write
from tests.streams_support import write_policy

SCALE = float(os.environ.get("LAM_RELIABILITY_SCALE", "1"))
SESSION_TIMEOUT_S = 10
WORKER_ENV = {"BROKER_SESSION_TIMEOUT": str(SESSION_TIMEOUT_S), "BROKER_HEARTBEAT_INTERVAL": "1",
              "LAM_BATCH_SIZE": "200", "LAM_ROCKSDB_CACHE_MB": "8"}


def scaled(n: int) -> int:
    """A stream size times LAM_RELIABILITY_SCALE."""
    return max(1, int(n * SCALE))


def poll(condition: Callable[[], object], timeout: float, what: str, every: float = 0.1) -> object:
    """The first truthy value of `condition()`, polled until `timeout` seconds; fails naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def opt_outs(customers: Iterable[str]) -> list[tuple[str, bytes]]:
    return [(c, orjson.dumps({"v": 1, "customer_id": c, "status": "opt_out"})) for c in customers]


@dataclass
class Worker:
    name: str
    data_dir: Path
    web_port: int
    proc: subprocess.Popen
    stopped: bool = False  # stopped or killed by the test on purpose


class Cluster:
    """`lam worker` processes of one application (consumer group) with its own topics; workers are started by
    name, and starting a name again restarts it on its old state folder and port."""

    def __init__(self, start: Callable[[dict[str, str]], subprocess.Popen], settings: Settings,
                 env: dict[str, str], folder: Path) -> None:
        self._start, self.settings, self.env, self.folder = start, settings, env, folder
        self.workers: dict[str, Worker] = {}

    @property
    def bootstrap(self) -> str:
        return self.settings.bootstrap

    def start(self, name: str, **env: str) -> Worker:
        old = self.workers.get(name)
        assert old is None or old.proc.poll() is not None, f"worker {name} is still running"
        data_dir = old.data_dir if old else self.folder / f"state-{name}"
        port = old.web_port if old else free_port()
        proc = self._start(self.env | {"LAM_DATA_DIR": str(data_dir), "LAM_WEB_PORT": str(port)} | env)
        self.workers[name] = Worker(name, data_dir, port, proc)
        return self.workers[name]

    def kill(self, name: str) -> float:
        """SIGKILL: no commit, no flush, no goodbye to the group. Returns the time of the kill (monotonic)."""
        worker = self.workers[name]
        worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait()
        worker.stopped = True
        return time.monotonic()

    def stop(self, name: str) -> None:
        """SIGTERM: faust leaves the group and commits what it processed."""
        stop_process(self.workers[name].proc)
        self.workers[name].stopped = True

    def http(self, name: str, path: str) -> tuple[int, bytes]:
        """Status and body of a GET on a worker's web server; (0, b"") when it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.workers[name].web_port}{path}", timeout=2) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read()
        except (urllib.error.URLError, OSError):
            return 0, b""

    def ready(self, name: str) -> bool:
        return self.http(name, "/readyz")[0] == 200

    def wait_ready(self, names: Sequence[str], timeout: float = 120.0) -> None:
        poll(lambda: all(self.ready(n) for n in names), timeout, f"workers {list(names)} to be ready", every=0.25)

    def metric(self, name: str, family: str, **labels: str) -> float | None:
        """The sum of a worker's /metrics samples of `family` whose labels include `labels`; None: no answer."""
        status, body = self.http(name, "/metrics")
        if status != 200:
            return None
        return sum(s.value for f in text_string_to_metric_families(body.decode()) for s in f.samples
                   if s.name == family and labels.items() <= s.labels.items())

    def rss_mib(self, name: str) -> float:
        """Resident memory of a worker process (Linux /proc)."""
        status = Path(f"/proc/{self.workers[name].proc.pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) / 1024

    def assert_alive(self) -> None:
        dead = {w.name: w.proc.returncode for w in self.workers.values() if not w.stopped and w.proc.poll() is not None}
        assert not dead, f"workers exited on their own (exit codes): {dead}; logs in {self.folder}"

    def produce(self, topic: str, records: Sequence[tuple[str, bytes]]) -> None:
        assert kafka.deliver_all(kafka.producer(self.bootstrap), records, topic) == 0, f"produce to {topic} failed"

    def close(self) -> None:
        for worker in self.workers.values():
            stop_process(worker.proc)
        app = self.settings.app_id
        names = [t for t in kafka.admin(self.bootstrap).list_topics(timeout=10).topics if t.startswith(app + "-")]
        kafka.delete_topics(self.bootstrap, names + list(topics.required(self.settings)))


@pytest.fixture
def cluster_factory(bootstrap: str, settings: Settings, worker_factory, tiny_model_path: Path,
                    tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """`make(partitions, bootstrap=None, **LAM_env)`: a Cluster with fresh topics and application id on the
    session broker (or on `bootstrap`); its workers are stopped and its topics deleted when the test ends."""
    clusters: list[Cluster] = []

    def make(partitions: int = 12, bootstrap_servers: str | None = None, **env: str) -> Cluster:
        uid = uuid.uuid4().hex[:8]
        folder = tmp_path / f"cluster-{len(clusters)}"
        folder.mkdir()
        write_policy(folder / "policy.toml")
        full = WORKER_ENV | {
            "LAM_APP_ID": f"lam-rel-{uid}", "LAM_INPUT_TOPIC": f"r-{uid}.touchpoints",
            "LAM_CONSENT_TOPIC": f"r-{uid}.consent", "LAM_ACTION_TOPIC": f"r-{uid}.actions",
            "LAM_DEAD_LETTER_TOPIC": f"r-{uid}.deadletter", "LAM_PARTITIONS": str(partitions),
            "LAM_MODEL_PATH": str(tiny_model_path), "LAM_POLICY_PATH": str(folder / "policy.toml"),
            "LAM_BOOTSTRAP_SERVERS": bootstrap_servers or settings.bootstrap} | env
        cluster_settings = load_settings({}, os.environ | full)
        topics.ensure(cluster_settings)
        clusters.append(Cluster(worker_factory, cluster_settings, full, folder))
        return clusters[-1]

    yield make
    for cluster in clusters:
        cluster.close()


@pytest.fixture(scope="session")
def ledger() -> Ledger:
    return LEDGER


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "tests/reliability/" not in report.nodeid:
        return
    if report.when == "call" or report.outcome != "passed":
        entry = LEDGER.tests.setdefault(report.nodeid, {"outcome": "passed", "seconds": 0.0})
        entry["seconds"] = float(entry["seconds"]) + report.duration
        if report.outcome != "passed":
            entry["outcome"] = report.outcome


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    folder = os.environ.get("LAM_RELIABILITY_DOCS")
    if folder and LEDGER.tests:
        write(LEDGER, Path(folder))
