"""The on-broker phases: one worker process (the engine or the naive design) over its own fresh topics.

Throughput: the input topic is filled first, then one worker starts and the consumer group's committed offsets
are followed to the end. Latency: a worker runs while touchpoints are produced at a fixed rate with event_time =
now, and each action's arrival is compared with its trigger's event time. A latency phase may follow a throughput
phase on the same scratch (the worker restarts on the states the throughput phase left) or run on fresh ones.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from itertools import islice
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import orjson
from confluent_kafka import ConsumerGroupState, KafkaException, TopicPartition
from tqdm import tqdm

from bench.cores import Cores, apart, cpu_seconds
from bench.report import load_average
from bench.steal import StealSeconds, cpu_times, per_second, quiet, stolen_share
from bench.states import ROOT, peak_rss_mib
from deploy import broker
from streams import kafka, produce, topics
from streams.contract import Touchpoint
from streams.errors import LamError
from streams.settings import Settings

ENGINE = ("-m", "streams.cli", "worker")
NAIVE = ("-m", "bench.naive")
FLOOR = ("-m", "bench.floor")
_POLL = 0.1  # seconds between looks at committed offsets


@dataclass(frozen=True)
class Scratch:
    """Fresh topics, application id, state folder and web port for one worker run; its LAM_* environment."""

    settings: Settings
    env: dict[str, str]

    @classmethod
    def create(cls, base: Settings, workdir: Path, model_path: Path, policy_path: Path, web_port: int) -> Scratch:
        uid = f"lam-bench-{uuid.uuid4().hex[:8]}"
        env = {"LAM_APP_ID": uid, "LAM_INPUT_TOPIC": f"{uid}.touchpoints", "LAM_CONSENT_TOPIC": f"{uid}.consent",
               "LAM_ACTION_TOPIC": f"{uid}.actions", "LAM_DEAD_LETTER_TOPIC": f"{uid}.deadletter",
               "LAM_PARTITIONS": str(base.partitions), "LAM_DATA_DIR": str(workdir / uid),
               "LAM_WEB_PORT": str(web_port), "LAM_MODEL_PATH": str(model_path),
               "LAM_POLICY_PATH": str(policy_path), "LAM_BROKER_PORT": str(base.broker_port),
               "LAM_BATCH_SIZE": str(base.batch_size), "LAM_BATCH_TIMEOUT": str(base.batch_timeout),
               "LAM_ROCKSDB_CACHE_MB": str(base.rocksdb_cache_mb), "LAM_STATE_CACHE_MB": str(base.state_cache_mb),
               "LAM_STATE_WRITE_DELAY": str(base.state_write_delay),
               "LAM_BOOTSTRAP_SERVERS": base.bootstrap_servers}
        settings = dataclasses.replace(base, app_id=uid, input_topic=env["LAM_INPUT_TOPIC"],
                                       consent_topic=env["LAM_CONSENT_TOPIC"], action_topic=env["LAM_ACTION_TOPIC"],
                                       dead_letter_topic=env["LAM_DEAD_LETTER_TOPIC"], data_dir=workdir / uid,
                                       model_path=model_path, policy_path=policy_path, web_port=web_port)
        topics.ensure(settings)
        return cls(settings, env)

    def peer(self, i: int) -> Scratch:
        """The scratch of the i-th worker process of the group (0: this one): its own state folder and web port."""
        if i == 0:
            return self
        return Scratch(self.settings, self.env | {"LAM_DATA_DIR": f"{self.env['LAM_DATA_DIR']}-{i}",
                                                  "LAM_WEB_PORT": str(free_port())})

    def partitions(self, topic: str) -> list[TopicPartition]:
        return [TopicPartition(topic, p) for p in range(self.settings.partitions)]

    def delete(self) -> None:
        """Drop every topic of this run, the changelogs faust made included (they share the app id prefix)."""
        names = [t for t in kafka.admin(self.settings.bootstrap).list_topics(timeout=10).topics
                 if t.startswith(self.settings.app_id)]
        if names:
            kafka.delete_topics(self.settings.bootstrap, names)


@contextmanager
def stopped_as_interrupted() -> Iterator[None]:
    """SIGTERM in the block raises KeyboardInterrupt, as Ctrl-C does, so a benchmark stopped by a service manager or
    `kill` still stops its workers, deletes its topics and scratch folder, and gives the local broker its cores
    back (bench/cores.py); by default the signal ends the process at once."""
    def interrupt(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Worker:
    """A worker subprocess (`argv` after the interpreter) with the scratch environment; output to a log file."""

    def __init__(self, argv: tuple[str, ...], scratch: Scratch, log: Path, own_core: bool = False) -> None:
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=os.environ | scratch.env,
                                         stdout=out, stderr=subprocess.STDOUT)
        self.log = log
        self._placed = ExitStack()  # while it runs: on a core of its own, if `own_core` (bench/cores.py)
        if own_core:
            try:
                self._placed.enter_context(apart(self.proc.pid, broker.local_pid(scratch.settings)))
            except LamError:
                self.proc.kill()  # not left running behind the error
                self.proc.wait()
                raise

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._placed.close()

    def check(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise LamError(f"worker exited with {self.proc.returncode}: {tail[0]} (log: {self.log})")

    def peak_rss_mib(self) -> float | None:
        return peak_rss_mib(self.proc.pid)

    def cpu_seconds(self) -> float:
        """User and system CPU time the worker process has used so far."""
        return cpu_seconds(self.proc.pid)


def fill(scratch: Scratch, events: Iterable[Touchpoint], total: int | None) -> None:
    done = produce.deliver(scratch.settings.bootstrap, scratch.settings.input_topic, events, total)
    if done.failed:
        raise LamError(f"{done.failed:,} touchpoints not delivered ({done.first_error})")


def _asked_again(ask: Callable[[], Any], what: str, seconds: float = 30.0) -> Any:
    """`ask()`, asked again while the broker is not ready to answer: a topic just created has partitions without a
    leader, a new group's coordinator is still loading (NOT_COORDINATOR, seen in CI). Then a one-line error."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return ask()
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise LamError(f"{what}: the broker did not answer within {seconds:g} s "
                               f"({exc.args[0].str()})") from None
            time.sleep(0.2)


def _end_offsets(cons: Any, tps: list[TopicPartition]) -> list[int]:
    """The end offset of each partition."""
    return _asked_again(lambda: [cons.get_watermark_offsets(tp, timeout=10)[1] for tp in tps], "end offsets")


def _stable_with(admin: Any, group: str, members: int) -> bool:
    """Whether the consumer group is stable with `members` members (a group not described yet is not)."""
    try:
        described = admin.describe_consumer_groups([group], request_timeout=5)[group].result()
    except KafkaException:
        return False
    return described.state == ConsumerGroupState.STABLE and len(described.members) == members


def _committed(watcher: Any, tps: list[TopicPartition]) -> int:
    """Events the group has committed over `tps` (a partition without a commit counts 0)."""
    return sum(max(tp.offset, 0) for tp in _asked_again(lambda: watcher.committed(tps, timeout=10),
                                                        "committed offsets"))


def throughput(argv: tuple[str, ...], scratch: Scratch, log: Path, timeout: float,
               workers: int = 1) -> dict[str, Any]:
    """Events per second between the group's first commit and its last commit before the input topic's end, through
    `workers` worker processes in the group (each with its own state folder and web port); CPU is theirs summed.
    With several, from the first commit once the group is stable with all of them: the first worker up commits on
    its own, and counting from then put a rebalance in the interval.

    Not up to the commit of the end: the worker commits every few seconds (faust's commit interval), so that commit
    comes up to an interval after the worker is done, and the rates of identical runs fell into steps of one
    interval in a ~35 s run (33.6, 36.5 and 40.0 thousand/s, measured). Between two commits, both ends are commit
    times."""
    s = scratch.settings
    watcher = kafka.consumer(s.bootstrap, group_id=s.app_id)  # only reads the group's offsets; never subscribes
    admin = kafka.admin(s.bootstrap)
    try:
        tps = scratch.partitions(s.input_topic)
        ends = _end_offsets(watcher, tps)
        total = sum(ends)
        bar = tqdm(total=total, unit=" events", file=sys.stderr, desc=f"{argv[-1]} consumes", dynamic_ncols=True)
        logs = [log] + [log.with_stem(f"{log.stem}-{i}") for i in range(1, workers)]
        with ExitStack() as running:
            group = [running.enter_context(Worker(argv, scratch.peer(i), logs[i])) for i in range(workers)]
            launched = time.monotonic()
            # (time, events committed, worker CPU seconds, the machine's cpu_times())
            first: tuple[float, int, float, tuple[int, int]] | None = None
            last = first
            done = 0
            settled = workers == 1
            while done < total:
                for worker in group:
                    worker.check()
                if time.monotonic() - launched > timeout:
                    raise LamError(f"{argv[-1]}: {done:,} of {total:,} events consumed after {timeout:.0f} s")
                time.sleep(_POLL)
                settled = settled or _stable_with(admin, s.app_id, workers)
                committed = _committed(watcher, tps)
                if committed > done and committed < total:
                    last = (time.monotonic(), committed, sum(worker.cpu_seconds() for worker in group), cpu_times())
                    first = first or (last if settled else None)
                done = committed
                bar.update(done - bar.n)
            finished, cpu = time.monotonic(), sum(worker.cpu_seconds() for worker in group)
            peak = max((worker.peak_rss_mib() or 0.0) for worker in group) or None
        bar.close()
        actions = sum(_end_offsets(watcher, scratch.partitions(s.action_topic)))
    finally:
        watcher.close()
    # A run short enough to be done within two commits has no interval to measure: count from launch then.
    if first is not None and last is not None and last[1] > first[1]:
        events, seconds, cpu_seconds = last[1] - first[1], last[0] - first[0], last[2] - first[2]
        rate, measured_from, stolen = events / seconds, "first commit", stolen_share(first[3], last[3])
        cpu_us, cores = cpu_seconds / events * 1e6, cpu_seconds / seconds
    else:
        rate, measured_from, stolen = total / (finished - launched), "process start (includes start-up)", None
        cpu_us, cores = cpu / max(total, 1) * 1e6, cpu / (finished - launched)
    # CPU time per event is steadier than the rate on shared cores: other work takes the rate's cores, not its time.
    return {"events": total, "seconds": round(finished - launched, 2), "events_per_second": round(rate),
            "cpu_us_per_event": round(cpu_us, 2), "cores": round(cores, 2),
            "measured_from": measured_from, "peak_rss_mib": peak, "actions": actions,
            "action_share": actions / total if total else 0.0, "load": load_average(), "stolen": stolen}


class _ActionClock:
    """Reads the action topic from its end in a thread; keeps (arrival ms - trigger event time ms) per action.

    From the end, not the start: a latency phase after a throughput phase finds that phase's actions there.
    """

    def __init__(self, scratch: Scratch) -> None:
        self.cons = kafka.consumer(scratch.settings.bootstrap)
        self.tps = scratch.partitions(scratch.settings.action_topic)
        self.starts = _end_offsets(self.cons, self.tps)
        self.cons.assign([TopicPartition(tp.topic, tp.partition, start) for tp, start in zip(self.tps, self.starts)])
        # (trigger event time, latency, the action's emitted_at minus the trigger's event time), all ms
        self.samples: list[tuple[int, int, int]] = []
        self.positions = self.starts  # the next offset to read in each partition
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def read_up_to(self, ends: list[int]) -> bool:
        """Whether every action below `ends`, the end offset of each partition, has been read."""
        return all(p >= end for p, end in zip(self.positions, ends))

    def _run(self) -> None:
        while not self._stop.is_set():
            # One message per poll: consume(n, timeout) waits out its whole timeout unless n messages come, which
            # stamped arrivals up to its 50 ms late.
            m = self.cons.poll(0.05)
            if m is None:
                # Asked here, while idle: the consumer's calls from another thread wait for this loop's poll(). A
                # partition with nothing read yet has no position.
                self.positions = [max(tp.offset, start)
                                  for tp, start in zip(self.cons.position(self.tps), self.starts)]
            elif not m.error():
                arrived, action = time.time() * 1000, orjson.loads(m.value())
                t = action["trigger"]["event_time"]
                self.samples.append((t, int(arrived - t), action["emitted_at"] - t))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.cons.close()


# The event time a touchpoint is encoded with before its release, replaced then by the wall clock (13 digits too).
_PLACEHOLDER_MS = 9_999_999_999_999
_EVENT_TIME = b'"event_time":'


def _prepared(events: Iterable[Touchpoint], bar: tqdm | None = None) -> list[tuple[bytes, bytes, bytes]]:
    """Touchpoints encoded ahead of their release, as (key, JSON before the event time, JSON after it).

    The load generator runs on the cores of the worker it measures: simulating and encoding a touchpoint as it is
    released took ~14 of its ~20 µs (measured), a third of a core at 20,000 touchpoints/s."""
    prepared = []
    for event in events:
        wire = dataclasses.replace(event, event_time_ms=_PLACEHOLDER_MS).to_wire()
        head, _, tail = wire.partition(b"%s%d" % (_EVENT_TIME, _PLACEHOLDER_MS))
        prepared.append((event.customer_id.encode(), head + _EVENT_TIME, tail))
        if bar is not None:
            bar.update()
    return prepared


# How often the load generator releases the touchpoints that are due.
TICK_SECONDS = 0.001


def _ticks(prepared: list[tuple[bytes, bytes, bytes]], rate: float,
           bar: tqdm | None = None) -> Iterator[list[tuple[bytes, bytes]]]:
    """Keyed touchpoints released at `rate` per second: every tick, those due, each stamped with the wall clock.

    Released one by one, each with its own pacing, poll and delivery report, the touchpoints cost the generator
    11-12 µs each, over 0.2 cores at 19,000/s taken from the worker it measures; by the tick, 7-8 µs (two runs
    of 190,000 each way)."""
    started, released = time.monotonic(), 0
    while released < len(prepared):
        due = min(len(prepared), int((time.monotonic() - started) * rate) + 1)
        if due > released:
            stamp = b"%d" % int(time.time() * 1000)
            yield [(key, head + stamp + tail) for key, head, tail in prepared[released:due]]
            if bar is not None:
                bar.update(due - released)
            released = due
        time.sleep(TICK_SECONDS)


class _Load:
    """The latency phase's producer: one for the warm-up and the phase. `release` produces the ticks' touchpoints,
    each tick at once, and waits for every acknowledgement; only failures are reported back, so a delivered
    touchpoint costs no Python callback."""

    def __init__(self, bootstrap: str) -> None:
        self.failed = 0
        # A short linger: the producer's batching delay counts in the latency, as it would for a live source. No
        # topic creation: the producer outlives the phase until a garbage collection (its callback refers back to
        # it), and its metadata refreshes made the local broker create the input topic again after the run deleted
        # it (a 2,000,000-touchpoint run's topic was back on the broker after `lam bench`, 2026-11-27).
        self._producer = kafka.producer(bootstrap, **{"linger.ms": 5, "delivery.report.only.error": True,
                                                      "on_delivery": self._on_failure,
                                                      "allow.auto.create.topics": False})

    def _on_failure(self, err: Any, _msg: Any) -> None:
        self.failed += 1

    def release(self, ticks: Iterable[list[tuple[bytes, bytes]]], topic: str) -> int:
        """How many of all the touchpoints released so far were not delivered."""
        for tick in ticks:
            for key, value in tick:
                kafka.send(self._producer, topic, key, value)
            self._producer.poll(0)
        return self.failed + self._producer.flush(60)


def _wait(what: str, done: Callable[[], bool], worker: Worker, seconds: float) -> None:
    """Poll `done()` until true; fails after `seconds` or when the worker exits."""
    deadline = time.monotonic() + seconds
    while not done():
        worker.check()
        if time.monotonic() > deadline:
            raise LamError(f"{what} within {seconds:.0f} s (log: {worker.log})")
        time.sleep(0.2)


def latency(argv: tuple[str, ...], scratch: Scratch, log: Path, events: Iterator[Touchpoint], rate: float,
            seconds: float, own_core: bool = False) -> dict[str, Any]:
    """Percentiles of event-time-to-action latency for touchpoints offered at `rate` per second for `seconds`, the
    worker on a core of its own if `own_core` (bench/cores.py).

    Every action of a touchpoint offered in the phase is a sample, whatever the worker's policy: under a policy
    that acts on few touchpoints the phase needs to be long enough for a meaningful 99th percentile (`actions`).
    Beside them, the same percentiles over the seconds the hypervisor left the cores alone (`quiet`), and each
    second's (`by_second`, by trigger event time; see bench/steal.py).
    """
    s = scratch.settings
    clock = _ActionClock(scratch)
    watcher = kafka.consumer(s.bootstrap, group_id=s.app_id)  # only reads the group's offsets; never subscribes
    inputs, outputs = scratch.partitions(s.input_topic), scratch.partitions(s.action_topic)
    load = _Load(s.bootstrap)
    count = int(rate * seconds)
    encoding = f"{argv[-1]}: encoding the phase's touchpoints"
    with tqdm(total=count, unit=" events", file=sys.stderr, desc=encoding) as bar:
        prepared = _prepared(islice(events, count), bar)
    try:
        with Worker(argv, scratch, log, own_core) as worker:
            # Warm-up, whatever the policy: touchpoints until the worker has committed some of them (it has joined,
            # recovered its tables and processed batches).
            before = _committed(watcher, inputs)
            deadline = time.monotonic() + 120
            while _committed(watcher, inputs) <= before:
                worker.check()
                if time.monotonic() > deadline:
                    raise LamError(f"{argv[-1]}: nothing committed within 120 s of start (log: {log})")
                load.release(_ticks(_prepared(islice(events, 10)), 100), s.input_topic)
                time.sleep(0.5)
            started_ms, cpu, machine = int(time.time() * 1000), worker.cpu_seconds(), cpu_times()
            broker_cores, bench_cores = Cores(broker.local_pid(s)), Cores(os.getpid())
            bar = tqdm(total=count, unit=" events", file=sys.stderr, desc=f"{argv[-1]} at {rate:,.0f}/s")
            with StealSeconds() as steal:
                failed = load.release(_ticks(prepared, rate, bar), s.input_topic)
                bar.close()
                cores = (worker.cpu_seconds() - cpu) / (time.time() - started_ms / 1000)
                others = {"broker_cores": broker_cores.busy(), "bench_cores": bench_cores.busy()}
                stolen = stolen_share(machine, cpu_times())
                if failed:
                    raise LamError(f"{failed:,} touchpoints not delivered to {s.input_topic}")
                # Drained: every touchpoint committed (the worker sends a batch's actions before it commits the
                # batch), and every action on the topic read.
                end = sum(_end_offsets(watcher, inputs))
                _wait(f"{argv[-1]}: the offered touchpoints not all committed",
                      lambda: _committed(watcher, inputs) >= end, worker, 60)
                actions = _end_offsets(watcher, outputs)
                _wait(f"{argv[-1]}: actions not all read back", lambda: clock.read_up_to(actions), worker, 15)
    finally:
        clock.close()
        watcher.close()
    timed = np.array([sample for sample in clock.samples if sample[0] >= started_ms], dtype=np.float64).reshape(-1, 3)
    by_trigger, timed = timed[:, :2], timed[:, 1:]
    lat = timed[:, 0]
    pct = np.percentile(lat, [50, 95, 99]) if len(lat) else [None] * 3
    stamped = np.percentile(timed[:, 1], [50, 95, 99]) if len(lat) else [None] * 3
    return {"rate": round(rate), "seconds": seconds, "offered": count, "actions": int(len(lat)),
            "p50": _round(pct[0]), "p95": _round(pct[1]), "p99": _round(pct[2]),
            "emitted_p50": _round(stamped[0]), "emitted_p95": _round(stamped[1]), "emitted_p99": _round(stamped[2]),
            "max": _round(lat.max()) if len(lat) else None, "worker_cores": round(cores, 2), **others,
            "load": load_average(),
            "stolen": stolen, "quiet": quiet(by_trigger, steal.shares),
            "by_second": per_second(by_trigger, steal.shares)}


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 1)
