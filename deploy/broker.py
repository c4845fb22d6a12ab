"""The local Apache Kafka broker: a single-node KRaft broker and controller run from Maven Central's jars.

`lam broker start|stop|status`. Everything it writes lives under `Settings.home` (git-ignored):
  jars/                 the broker's runtime, copied by Maven from deploy/kafka/pom.xml (fetched once)
  broker-<port>/        one folder per listener port: server.properties, data/, pid, and logs/ (server.log,
                        kafka.out, and kafkaServer-gc.log: the JVM's collections and their pauses)
Starting a broker that already answers is harmless; a port held by anything else is a one-line error.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from streams.errors import LamError
from streams.settings import Settings

KAFKA_DIR = Path(__file__).resolve().parent / "kafka"
POM = KAFKA_DIR / "pom.xml"
# A fixed cluster id makes formatting idempotent: `--ignore-formatted` then accepts an existing data folder.
CLUSTER_ID = "TEFNLWxvY2FsLWthZmthMQ"


@dataclass(frozen=True, slots=True)
class BrokerPaths:
    root: Path
    jars: Path
    data: Path
    logs: Path
    properties: Path
    pid: Path

    @classmethod
    def of(cls, settings: Settings) -> "BrokerPaths":
        root = settings.home / f"broker-{settings.broker_port}"
        return cls(
            root=root,
            jars=settings.home / "jars",
            data=root / "data",
            logs=root / "logs",
            properties=root / "server.properties",
            pid=root / "pid",
        )


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    candidate = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not candidate or not Path(candidate).exists():
        raise LamError("java not found: install OpenJDK 17 or newer, or set JAVA_HOME")
    return candidate


def ensure_jars(paths: BrokerPaths) -> Path:
    """Copy the broker's jars from Maven Central once; again only when the POM changes."""
    stamp = paths.jars / ".pom-sha256"
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return paths.jars
    mvn = shutil.which("mvn")
    if not mvn:
        raise LamError("mvn not found: Maven is needed once to fetch the Kafka broker's jars from Maven Central")
    if paths.jars.exists():
        shutil.rmtree(paths.jars)
    paths.jars.mkdir(parents=True)
    print("fetching the Kafka broker's jars from Maven Central (once)...", file=sys.stderr)
    cmd = [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
           f"-DoutputDirectory={paths.jars}", "-DincludeScope=runtime"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["no output"]
        raise LamError(f"mvn could not fetch the Kafka jars: {last[0]}")
    stamp.write_text(digest)
    return paths.jars


def _read_pid(paths: BrokerPaths) -> int | None:
    try:
        pid = int(paths.pid.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid if _is_our_broker(pid, paths) else None


def _is_our_broker(pid: int, paths: BrokerPaths) -> bool:
    """A recycled pid must not be mistaken for the broker: check its command line names our properties."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the pid file
    return str(paths.properties).encode() in cmdline


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def answers(bootstrap: str, timeout: float = 3.0) -> bool:
    """True when a Kafka broker at `bootstrap` returns cluster metadata."""
    from confluent_kafka import KafkaException

    from streams import kafka

    try:
        kafka.admin(bootstrap, **{"socket.timeout.ms": int(timeout * 1000)}).list_topics(timeout=timeout)
    except KafkaException:  # not up yet, or nothing listens there
        return False
    return True


def _write_properties(settings: Settings, paths: BrokerPaths) -> None:
    template = (KAFKA_DIR / "server.properties.in").read_text()
    paths.properties.write_text(template.format(
        port=settings.broker_port, controller_port=settings.controller_port, data_dir=paths.data))


def start(settings: Settings) -> str:
    """Start the broker unless ours already runs; wait until it answers. Returns a status line."""
    paths = BrokerPaths.of(settings)
    pid = _read_pid(paths)
    if pid is not None:
        if answers(settings.bootstrap):
            return f"broker already running (pid {pid}) on {settings.bootstrap}"
        _wait_until_answers(settings, paths, pid)
        return f"broker running (pid {pid}) on {settings.bootstrap}"
    java = _java()
    for port in (settings.broker_port, settings.controller_port):
        if port_in_use(port):
            raise LamError(f"port {port} on 127.0.0.1 is taken by another process: choose another with --broker-port")
    jars = ensure_jars(paths)
    for folder in (paths.data, paths.logs):
        folder.mkdir(parents=True, exist_ok=True)
    _write_properties(settings, paths)
    classpath = f"{jars}/*"
    fmt = subprocess.run(
        [java, "-cp", classpath, f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.properties'}",
         f"-Dkafka.logs.dir={paths.logs}", "kafka.tools.StorageTool", "format",
         "-t", CLUSTER_ID, "-c", str(paths.properties), "--ignore-formatted"],
        capture_output=True, text=True)
    if fmt.returncode != 0:
        last = (fmt.stdout + fmt.stderr).strip().splitlines()[-1:] or ["no output"]
        raise LamError(f"kafka storage format failed: {last[0]}")
    out = open(paths.logs / "kafka.out", "ab")
    proc = subprocess.Popen(
        # G1 at its defaults: with Kafka's launcher's 20 ms pause target it paused 10x as often, 5x as long in all,
        # and the latency tail grew on this machine (docs/runbook.md, "Action latency").
        [java, f"-Xmx{settings.broker_heap}", f"-Xms{settings.broker_heap}", "-XX:+UseG1GC",
         # Its pauses, as Kafka's own launcher logs them: a stalled broker shows up in every client's latency.
         f"-Xlog:gc*:file={paths.logs / 'kafkaServer-gc.log'}:time,uptime,tags:filecount=4,filesize=20M",
         "-Djava.awt.headless=true",
         f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.properties'}",
         f"-Dkafka.logs.dir={paths.logs}", "-cp", classpath, "kafka.Kafka", str(paths.properties)],
        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    out.close()
    paths.pid.write_text(str(proc.pid))
    _wait_until_answers(settings, paths, proc.pid)
    return f"broker started (pid {proc.pid}) on {settings.bootstrap}; logs in {paths.logs}"


def _wait_until_answers(settings: Settings, paths: BrokerPaths, pid: int) -> None:
    deadline = time.monotonic() + settings.broker_start_timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            raise LamError(f"the broker exited during start-up: see {paths.logs / 'kafka.out'}")
        if answers(settings.bootstrap, timeout=2.0):
            return
        time.sleep(0.5)
    raise LamError(f"the broker did not answer on {settings.bootstrap} within {settings.broker_start_timeout:.0f} s: "
                   f"see {paths.logs / 'server.log'}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited child of this process) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def stop(settings: Settings, timeout: float = 60.0) -> str:
    """Stop the broker cleanly (SIGTERM, a controlled shutdown), killing it only if it hangs."""
    paths = BrokerPaths.of(settings)
    pid = _read_pid(paths)
    if pid is None:
        paths.pid.unlink(missing_ok=True)
        return f"broker not running on port {settings.broker_port}"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    forced = _alive(pid)
    if forced:
        os.kill(pid, signal.SIGKILL)
    paths.pid.unlink(missing_ok=True)
    return f"broker stopped (pid {pid}{', killed after timeout' if forced else ''})"


def local_pid(settings: Settings) -> int | None:
    """The process id of the broker `lam broker start` runs on `broker_port`, if it runs and is the one used."""
    return None if settings.bootstrap_servers else _read_pid(BrokerPaths.of(settings))


def status(settings: Settings) -> tuple[bool, str]:
    paths = BrokerPaths.of(settings)
    pid = _read_pid(paths)
    if pid is None:
        return False, f"broker not running on port {settings.broker_port}"
    if answers(settings.bootstrap):
        return True, f"broker running (pid {pid}) on {settings.bootstrap}"
    return False, f"broker process {pid} is up but does not answer on {settings.bootstrap}"
