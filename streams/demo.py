"""`lam demo`: the whole system on this machine, end to end, printed as it happens.

Starts the local broker, creates the topics, trains a model on a simulated history if none is there, starts a
worker and a live simulated producer (each a `lam` subprocess, logs in <home>/demo/), and prints the actions as
they arrive with a running summary. Ctrl-C (or --seconds) stops the producer, the worker, and the broker if the
demo started it.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
from confluent_kafka import TopicPartition

from streams import kafka, topics
from streams.errors import LamError
from streams.settings import Settings, env_name

TRAINING_WORLD = {"customers": 20_000, "days": 120.0, "seed": 0}
SUMMARY_EVERY = 5.0


def run(settings: Settings, seconds: float, rate: float, customers: int) -> str:
    from deploy import broker

    started_broker = not broker.status(settings)[0]
    print(broker.start(settings), flush=True)
    folder = settings.home / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    children: list[subprocess.Popen] = []
    try:
        topics.ensure(settings)
        _ensure_model(settings, folder)
        children.append(_spawn(settings, ["worker"], folder / "worker.log"))
        children.append(_spawn(settings, ["produce", "--simulate", "--rate", str(rate), "--customers",
                                          str(customers), "--seed", "1"], folder / "producer.log"))
        print(f"worker and live producer ({rate:,.0f} touchpoints/s, {customers:,} customers) started; "
              f"logs in {folder}. Ctrl-C stops.", flush=True)
        return _watch(settings, children, seconds)
    except KeyboardInterrupt:
        return "demo stopped"
    finally:
        for child in reversed(children):
            _stop(child)
        if started_broker:
            print(broker.stop(settings), flush=True)


def _ensure_model(settings: Settings, folder: Path) -> None:
    if settings.model_path.is_file():
        from model import artifact

        artifact.load(settings.model_path)  # an artifact this build can't serve fails here, in one line
        return
    from model.train import TrainConfig, train_file
    from sim.config import WorldConfig
    from sim.write import simulate
    from sim.world import World

    history = folder / "history.jsonl.gz"
    print(f"no model at {settings.model_path}: training one on a simulated history "
          f"({TRAINING_WORLD['customers']:,} customers, {TRAINING_WORLD['days']:.0f} days)...", flush=True)
    print(simulate(World(WorldConfig(**TRAINING_WORLD)), history), flush=True)
    result = train_file(history, settings.model_path, TrainConfig(epochs=6))
    print(f"model {result.version} -> {settings.model_path}", flush=True)


def _spawn(settings: Settings, args: list[str], log: Path) -> subprocess.Popen:
    env = os.environ | {env_name(f.name): str(getattr(settings, f.name)) for f in dataclasses.fields(settings)}
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "streams.cli", *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _stop(child: subprocess.Popen) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _watch(settings: Settings, children: list[subprocess.Popen], seconds: float) -> str:
    cons = kafka.consumer(settings.bootstrap, **{"auto.offset.reset": "latest"})
    cons.subscribe([settings.action_topic])
    names, control, started = Counter(), 0, time.monotonic()
    next_summary = started + SUMMARY_EVERY
    try:
        while not seconds or time.monotonic() - started < seconds:
            for child, what in zip(children, ("worker", "producer")):
                if child.poll() is not None and (what == "worker" or child.returncode != 0):
                    raise LamError(f"the {what} exited with code {child.returncode}: see its log in "
                                   f"{settings.home / 'demo'}")
            msg = cons.poll(0.5)
            if msg is not None and not msg.error():
                action = orjson.loads(msg.value())
                names[action["action"]] += 1
                control += action["control"]
                print(describe(action), flush=True)
            if time.monotonic() >= next_summary:
                print(_summary(settings, names, control, time.monotonic() - started), flush=True)
                next_summary += SUMMARY_EVERY
    finally:
        cons.close()
    return "demo finished " + _summary(settings, names, control, time.monotonic() - started).removeprefix("-- ")


def describe(action: dict) -> str:
    """One readable line per action.

    >>> describe({"customer_id": "c1", "action": "call_fiber_offer", "channel": "telemarketing", "probability": 0.41,
    ...           "threshold": 0.3, "control": False, "reasons": [{"event_type": "inquiry", "channel": "call_centre",
    ...           "contribution": 0.18}]})
    '  c1  call_fiber_offer via telemarketing  p=0.41 (>= 0.30)  why: inquiry/call_centre +0.18'
    """
    why = ", ".join(f"{r['event_type']}/{r['channel']} {r['contribution']:+.2f}" for r in action["reasons"])
    hold = "  [control: not contacted]" if action["control"] else ""
    return (f"  {action['customer_id']}  {action['action']} via {action['channel']}  "
            f"p={action['probability']:.2f} (>= {action['threshold']:.2f})  why: {why or '-'}{hold}")


def _summary(settings: Settings, names: Counter, control: int, elapsed: float) -> str:
    produced, lag = _input_progress(settings)
    by_action = ", ".join(f"{n} {name}" for name, n in names.most_common()) or "none yet"
    return (f"-- {elapsed:5.0f} s: {produced:,} touchpoints in, consumer lag {lag:,}; "
            f"{sum(names.values()):,} actions ({by_action}; {control} in the control group)")


def _input_progress(settings: Settings) -> tuple[int, int]:
    """Touchpoints in the input topic, and how many the worker's group has not committed yet."""
    cons = kafka.consumer(settings.bootstrap, group_id=settings.app_id)
    try:
        tps = [TopicPartition(settings.input_topic, p) for p in range(settings.partitions)]
        ends = [cons.get_watermark_offsets(tp, timeout=5)[1] for tp in tps]
        committed = [max(tp.offset, 0) for tp in cons.committed(tps, timeout=5)]
    finally:
        cons.close()
    return sum(ends), sum(e - c for e, c in zip(ends, committed))
