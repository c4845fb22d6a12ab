"""The machine's cores during an on-broker phase: which process runs where, and how much of them each one used.

On a machine of two cores the measured worker, the local broker and the benchmark's own process (the load generator
and the action reader) would otherwise share both. `apart` gives the worker one core of its own and the others the
rest, as in a deployment where workers do not run beside the broker and the sources. Interleaved runs at 22,000
touchpoints/s, those the hypervisor left alone: median p50 / p95 / p99 of 47 / 120 / 189 ms so placed (7 runs),
60 / 191 / 264 ms with every core shared (3 runs; docs/runbook.md).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from streams.errors import LamError


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # fields from the 3rd
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


class Cores:
    """Cores a process used from the creation of this object on; the benchmark's own process counts its threads, the
    load generator's and the action clock's."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.started, self.cpu = time.monotonic(), self._seconds()

    def _seconds(self) -> float:
        if self.pid is None:
            return 0.0
        if self.pid == os.getpid():
            own = os.times()
            return own.user + own.system
        return cpu_seconds(self.pid)

    def busy(self) -> float | None:
        """None for a process not watched (a broker not started by `lam broker start`)."""
        if self.pid is None:
            return None
        return round((self._seconds() - self.cpu) / (time.monotonic() - self.started), 2)


def _place(pid: int, cpus: set[int]) -> None:
    """Run every thread of `pid` on `cpus`; nothing if it has exited (its exit is reported where it is watched). The
    process's first thread goes first: threads it starts from then on inherit its set, and those started before are
    in the listing."""
    try:
        os.sched_setaffinity(pid, cpus)
        tasks = [int(task.name) for task in Path(f"/proc/{pid}/task").iterdir()]
    except (ProcessLookupError, FileNotFoundError):
        return
    except OSError as exc:  # another user's process, or cores outside its cgroup's
        raise LamError(f"cannot move process {pid} to CPU {','.join(map(str, sorted(cpus)))} ({exc.strerror}): "
                       "run with --shared-cores") from None
    for task in tasks:
        try:
            os.sched_setaffinity(task, cpus)
        except ProcessLookupError:  # the thread ended since the listing
            pass


@contextmanager
def _placed(pid: int, cpus: set[int]) -> Iterator[None]:
    """`pid`'s threads on `cpus` until the block ends, then back on the cores they had."""
    try:
        before = os.sched_getaffinity(pid)
    except ProcessLookupError:
        yield
        return
    _place(pid, cpus)
    try:
        yield
    finally:
        _place(pid, before)


def own_core() -> int | None:
    """The core `apart` gives a worker: the last of those this process may use, or None with fewer than two."""
    usable = os.sched_getaffinity(0)
    return max(usable) if len(usable) > 1 else None


@contextmanager
def apart(worker: int, broker: int | None) -> Iterator[None]:
    """The `worker` process on a core of its own, and the `broker` (None: not a local one) and this process on the
    others, until the block ends; nothing moves on a machine of one core."""
    core = own_core()
    if core is None:
        yield
        return
    rest = os.sched_getaffinity(0) - {core}
    with ExitStack() as placed:
        _place(worker, {core})  # not given back: the worker ends with the block
        placed.enter_context(_placed(os.getpid(), rest))
        if broker is not None:
            placed.enter_context(_placed(broker, rest))
        yield
