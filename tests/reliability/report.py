"""The reliability suite's ledger and the docs it writes: docs/reliability.json (counts) and docs/reliability.md.

Tests add what they did and what they found to `LEDGER`; when the suite ends, the conftest hook calls `write`
if LAM_RELIABILITY_DOCS names a folder. `python -m tests.reliability.report docs` renders the Markdown again from
the JSON in that folder.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

COMMAND = "LAM_RELIABILITY_DOCS=docs .venv/bin/pytest -m reliability tests/reliability"

# Every count the docs report, with its meaning, in the order shown.
COUNTS = {
    "kills": "workers killed with SIGKILL mid-stream",
    "graceful_stops": "workers stopped with SIGTERM mid-stream",
    "rebalances": "consumer-group membership changes forced (kill detected, join, leave, restart)",
    "broker_restarts": "broker stopped (controlled shutdown) and started again mid-stream",
    "events": "touchpoints produced (good input)",
    "bad_inputs": "malformed, truncated, oversized, wrongly typed or adversarial messages produced",
    "dead_letters": "dead letters read back, each with its reason",
    "opt_outs": "opt-outs produced",
    "actions_expected": "distinct actions of the undisturbed reference runs",
    "actions_emitted": "action messages on the action topics (copies included)",
    "actions_lost": "reference action ids never emitted",
    "actions_duplicated": "emitted action ids not in the reference (distinct extras)",
    "actions_differing": "action ids whose content differs from the reference's (emitted_at aside)",
    "redelivered_same_id": "extra copies of an action id (at-least-once; consumers drop them by action_id)",
    "actions_to_opted_out": "actions triggered after a customer's opt-out",
    "states_compared": "customer states compared with the reference (hidden to 1e-6, touchpoints applied)",
    "state_mismatches": "customer states that differ from the reference",
    "events_applied_twice": "touchpoints applied to a state more often than in the reference",
    "bad_inputs_missed": "bad messages without a dead letter, or good ones sent to it",
}


@dataclass
class Ledger:
    counts: Counter = field(default_factory=Counter)
    takeover_seconds: dict[str, dict[str, float]] = field(default_factory=dict)
    memory_mib: dict[str, float] = field(default_factory=dict)
    tests: dict[str, dict[str, object]] = field(default_factory=dict)  # nodeid -> outcome, seconds
    sizes: dict[str, object] = field(default_factory=dict)

    def add(self, **counts: int) -> None:
        unknown = set(counts) - set(COUNTS)
        if unknown:
            raise KeyError(f"not reliability counts: {sorted(unknown)}")
        self.counts.update(counts)

    def as_json(self) -> dict[str, object]:
        return {
            "command": COMMAND,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()},
            "passed": bool(self.tests) and all(t["outcome"] == "passed" for t in self.tests.values()),
            "counts": {name: int(self.counts.get(name, 0)) for name in COUNTS},
            "takeover_seconds": self.takeover_seconds,
            "worker_memory_mib": self.memory_mib,
            "sizes": self.sizes,
            "tests": self.tests,
        }


LEDGER = Ledger()


def render(doc: dict) -> str:
    counts, tests = doc["counts"], doc["tests"]
    lines = [
        "# Reliability: crashes, rebalances, broker restarts and bad input",
        "",
        "Written by the reliability suite (`tests/reliability/`, marker `reliability`) from its last run; do not edit",
        "by hand. Rerun it, and rewrite this page and `reliability.json`, with:",
        "",
        "```sh",
        doc["command"],
        "```",
        "",
        "It needs the real local broker on `LAM_BROKER_PORT` (as every broker test does) and starts a second broker",
        "of its own on a free port for the broker-restart test. `LAM_RELIABILITY_SCALE` (default 1) multiplies the",
        "stream sizes for a longer soak run, e.g. `LAM_RELIABILITY_SCALE=10`; `LAM_RELIABILITY_FUZZ` sets how many",
        "hostile payloads hypothesis generates (default 150). Without `LAM_RELIABILITY_DOCS` the suite writes nothing.",
        "",
        f"Last run: {doc['finished_at']}, {doc['machine']['cpus']} CPUs, Python {doc['machine']['python']}; "
        f"**{'all passed' if doc['passed'] else 'NOT all passed'}**.",
        "",
        "## What is tried",
        "",
        "Every worker is a real `lam worker` process (faust-streaming, RocksDB tables, the tiny untrained model and a",
        "one-action policy that fires often) in one consumer group against the real broker. Each test's result is",
        "compared with a reference: the same `Engine` run undisturbed over the same messages, read back from the",
        "input topic, in per-partition order (`tests/streams_support.py: reference`).",
        "",
        "| test | what it does |",
        "|---|---|",
        "| `test_crashes.py` | 3 workers, 12 partitions, a simulated stream produced in chunks while one worker is "
        "SIGKILLed and restarted on its old state folder, a fourth joins, one leaves with SIGTERM and another is "
        "SIGKILLed and restarted; opt-outs before the stream and mid-stream. Then: the distinct action ids equal the "
        "reference's (raw copies counted as redelivered), every action's content equals the reference's, every "
        "customer's final state (last record of the state changelog) equals the reference's (hidden state to 1e-6, "
        "touchpoints applied, last offset), no action after an opt-out, and the lag of every partition is zero. |",
        "| `test_standby.py` | 2 workers over a prefilled state table; one is SIGKILLed and the time until the "
        "survivor owns all partitions and answers `/readyz` 200 is measured, with `standby_replicas` 0 and 1. The "
        "worker with standbys must be ready sooner. |",
        "| `test_broker_restart.py` | on a broker of its own, 2 workers; the broker is stopped (controlled shutdown) "
        "while the stream flows and started again; the workers must still be running and the result must equal "
        "the reference. |",
        "| `test_hostile_input.py` | hypothesis generates malformed JSON, truncated events, oversized payloads, wrongly "
        "typed fields, NaN/Infinity, huge numbers, far-past and far-future timestamps, deeply nested attributes, "
        "invalid UTF-8 and mismatched keys, mixed twice into good traffic (including valid but odd events). Every "
        "bad message must be in the dead-letter topic with the decoder's reason and its source offset, every good "
        "one applied as in the reference, the worker alive and its memory flat between the two rounds. |",
        "",
        "## Counts",
        "",
        "| count | value | meaning |",
        "|---|---:|---|",
    ]
    lines += [f"| `{name}` | {counts.get(name, 0):,} | {meaning} |" for name, meaning in COUNTS.items()]
    if doc["takeover_seconds"]:
        lines += ["", "## Takeover after a SIGKILL", "",
                  "Seconds from the SIGKILL until the survivor owns every partition and `/readyz` answers 200 "
                  "(`to_ready`), and the part of it after the group noticed the death, which is table recovery "
                  "(`recovery`). The session timeout (faust's `broker_session_timeout`, set to 10 s for the workers "
                  "through faust's `BROKER_SESSION_TIMEOUT` variable) dominates `to_ready`.", "",
                  "| standby replicas | to_ready (s) | recovery (s) | state entries |", "|---:|---:|---:|---:|"]
        for name, t in sorted(doc["takeover_seconds"].items()):
            lines.append(f"| {name} | {t['to_ready']:.2f} | {t['recovery']:.2f} | {int(t['entries']):,} |")
    if doc["worker_memory_mib"]:
        lines += ["", "## Worker memory under hostile input", "",
                  "| when | RSS (MiB) |", "|---|---:|"]
        lines += [f"| {when} | {mib:.0f} |" for when, mib in doc["worker_memory_mib"].items()]
    lines += ["", "## Sizes", "", "| size | value |", "|---|---:|"]
    lines += [f"| {name} | {value} |" for name, value in doc["sizes"].items()]
    lines += ["", "## Tests", "", "| test | outcome | seconds |", "|---|---|---:|"]
    lines += [f"| `{nodeid}` | {t['outcome']} | {t['seconds']:.0f} |" for nodeid, t in tests.items()]
    return "\n".join(lines) + "\n"


def write(ledger: Ledger, folder: Path) -> None:
    doc = ledger.as_json()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "reliability.json").write_text(json.dumps(doc, indent=2) + "\n")
    (folder / "reliability.md").write_text(render(doc))


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs")
    (target / "reliability.md").write_text(render(json.loads((target / "reliability.json").read_text())))
