import json
import os
import subprocess
import sys
import time

import pytest

from bench import cores
from streams.errors import LamError

# Waits for a line, then reports the cores of its first thread and of a thread it starts only then.
CHILD = """
import json, os, sys, threading
sys.stdin.readline()
seen = {}
thread = threading.Thread(target=lambda: seen.update(late=sorted(os.sched_getaffinity(0))))
thread.start(); thread.join()
print(json.dumps({"first": sorted(os.sched_getaffinity(0)), **seen}), flush=True)
"""

needs_two = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores or more")


def _child() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


@needs_two
def test_the_worker_gets_a_core_of_its_own_and_the_others_get_theirs_back_after():
    mine = os.sched_getaffinity(0)
    core = cores.own_core()
    worker, broker = _child(), _child()
    try:
        with cores.apart(worker.pid, broker.pid):
            assert os.sched_getaffinity(0) == mine - {core}
            assert os.sched_getaffinity(broker.pid) == mine - {core}
            worker.stdin.write("go\n")
            worker.stdin.flush()
            # Its threads started after the placement inherit it.
            assert json.loads(worker.stdout.readline()) == {"first": [core], "late": [core]}
        assert os.sched_getaffinity(0) == mine
        assert os.sched_getaffinity(broker.pid) == mine
    finally:
        for child in (worker, broker):
            child.kill()
            child.communicate()  # closes its pipes


@needs_two
def test_without_a_local_broker_only_the_worker_and_this_process_move():
    mine, core = os.sched_getaffinity(0), cores.own_core()
    worker = _child()
    try:
        with cores.apart(worker.pid, None):
            assert os.sched_getaffinity(worker.pid) == {core}
            assert os.sched_getaffinity(0) == mine - {core}
        assert os.sched_getaffinity(0) == mine
    finally:
        worker.kill()
        worker.communicate()  # closes its pipes


def test_a_process_watched_for_cores_has_used_some_and_none_is_not_watched():
    watched = cores.Cores(os.getpid())
    busy_until = time.monotonic() + 0.2  # several clock ticks of CPU time, whatever the machine's speed
    while time.monotonic() < busy_until:
        pass
    assert watched.busy() > 0
    assert cores.Cores(None).busy() is None


def test_a_worker_that_has_already_exited_is_left_to_the_phase_to_report():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    mine = os.sched_getaffinity(0)
    with cores.apart(gone.pid, None):
        pass
    assert os.sched_getaffinity(0) == mine


@needs_two
def test_a_process_that_may_not_be_moved_is_a_one_line_error(monkeypatch):
    def refused(pid, cpus):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setaffinity", refused)
    with pytest.raises(LamError, match=r"^cannot move process 1 to CPU .*Operation not permitted.*--shared-cores$"):
        with cores.apart(1, None):
            pass
