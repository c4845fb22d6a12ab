"""`lam broker start|stop|status` are safe to repeat, fail in one line when the port is taken, and the broker logs."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from deploy import broker
from streams.cli import main

pytestmark = pytest.mark.integration


def _free_broker_port() -> int:
    """A port that is free together with the next one, the controller's: `broker start` checks both before it
    looks for Maven, and an ephemeral port's neighbour is often some client connection's."""
    for _ in range(100):
        with socket.socket() as probe, socket.socket() as neighbour:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
            try:
                neighbour.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no two adjacent free ports on 127.0.0.1")


def test_start_and_status_on_a_running_broker_are_harmless(bootstrap, settings, capsys):
    port = ["--broker-port", str(settings.broker_port)]
    assert main(["broker", "start", *port]) == 0
    assert main(["broker", "status", *port]) == 0
    out = capsys.readouterr().out
    assert "running" in out and bootstrap in out


def test_the_local_broker_writes_its_log(bootstrap, settings):
    # Kafka's POMs bring the SLF4J 1 API, which found no binding, and the broker logged nothing (deploy/kafka/pom.xml).
    if broker.local_pid(settings) is None:
        pytest.skip("the broker in use is not one `lam broker start` runs: its log is elsewhere")
    # Any INFO line: a long-running broker's log rolls over (50 MB), the start-up lines with it.
    log = broker.BrokerPaths.of(settings).logs / "server.log"
    assert "] INFO " in log.read_text(errors="replace")


def test_start_on_a_taken_port_is_a_one_line_error(tmp_path, capsys):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        assert main(["broker", "start", "--broker-port", str(port), "--home", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is taken" in err and err.count("\n") == 1


def test_status_and_stop_without_a_broker(tmp_path, capsys):
    args = ["--broker-port", "1", "--home", str(tmp_path)]
    assert main(["broker", "status", *args]) == 3
    assert main(["broker", "stop", *args]) == 0
    assert capsys.readouterr().out.count("not running") == 2


def test_missing_java_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    assert main(["broker", "start", "--broker-port", str(_free_broker_port()), "--home", str(tmp_path)]) == 1
    assert "java not found" in capsys.readouterr().err


def test_missing_maven_is_a_one_line_error_when_jars_are_not_cached(tmp_path, monkeypatch, capsys):
    java_home = Path(shutil.which("java")).resolve().parent.parent
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("JAVA_HOME", str(java_home))
    assert main(["broker", "start", "--broker-port", str(_free_broker_port()), "--home", str(tmp_path)]) == 1
    assert "mvn not found" in capsys.readouterr().err
