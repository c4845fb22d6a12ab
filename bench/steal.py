"""The hypervisor's share of the cores, second by second, beside a latency phase's samples.

The benchmark machine is a virtual machine whose two cores other guests share: in some seconds of a phase the
hypervisor took most of a core ("steal"), and the latency of the touchpoints of those seconds rose from tens of
milliseconds to seconds (issue 8). The phase's percentiles stay the headline; the same percentiles over its quiet
seconds, when the hypervisor took under `QUIET` of the cores' time, show what the worker does when it has the
machine, and the plot shows latency and steal second by second.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

# Quiet: under 5% of the cores' time taken. The slowest phases so far were those with steal above 10%.
QUIET = 0.05


def cpu_times() -> tuple[int, int]:
    """(stolen, all) CPU time of the machine's cores since boot, in clock ticks (/proc/stat); (0, 0) without it.

    A virtual machine's hypervisor takes some of its cores' time for other guests ("steal"). On the benchmark machine
    it took up to 30% and the same code ran at half the rate from one hour to the next (issue 8); the load average
    does not show it."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return (ticks[7] if len(ticks) > 7 else 0), sum(ticks[:8])


def stolen_share(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    """The share of the cores' time the hypervisor took between two `cpu_times()`; None if unknown."""
    return round((after[0] - before[0]) / (after[1] - before[1]), 3) if after[1] > before[1] else None


class StealSeconds:
    """While entered, the hypervisor's share of the cores' time in each wall-clock second: {epoch second: share}."""

    def __init__(self) -> None:
        self.shares: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StealSeconds:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        before = cpu_times()
        # Sampled at each second's start, so that a second's share is that of the seconds its samples are binned in.
        while not self._stop.wait(1.0 - time.time() % 1.0):
            after = cpu_times()
            share = stolen_share(before, after)
            if share is not None:
                self.shares[int(time.time()) - 1] = share
            before = after


def per_second(samples: np.ndarray, shares: dict[int, float]) -> list[list[float]]:
    """[second from the first, actions, p50 ms, p99 ms, steal share] of each second with samples and a share;
    `samples` is (n, 2): a trigger's event time (epoch ms) and its latency (ms)."""
    if not len(samples):
        return []
    seconds = samples[:, 0].astype(np.int64) // 1000
    first, rows = int(seconds.min()), []
    for second in np.unique(seconds).tolist():
        if second in shares:
            latency = samples[seconds == second, 1]
            rows.append([second - first, len(latency), round(float(np.percentile(latency, 50)), 1),
                         round(float(np.percentile(latency, 99)), 1), round(shares[second], 3)])
    return rows


def quiet(samples: np.ndarray, shares: dict[int, float]) -> dict[str, Any]:
    """Latency percentiles over the samples of the seconds with steal under QUIET, and how many seconds those are."""
    seconds = samples[:, 0].astype(np.int64) // 1000 if len(samples) else np.zeros(0, dtype=np.int64)
    calm = {s for s, share in shares.items() if share < QUIET}
    picked = samples[np.isin(seconds, list(calm)), 1] if calm else np.zeros(0)
    measured = {int(s) for s in np.unique(seconds).tolist()} & shares.keys()
    pct = np.percentile(picked, [50, 95, 99]).round(1).tolist() if len(picked) else [None] * 3
    return {"below": QUIET, "seconds": len(measured & calm), "of_seconds": len(measured), "actions": len(picked),
            "p50": pct[0], "p95": pct[1], "p99": pct[2]}


def plot(rows: list[list[float]], path: Path, title: str) -> None:
    """Each second's p50 and p99 latency (log scale) over the phase, and the hypervisor's share of the cores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = np.array(rows, dtype=np.float64).reshape(-1, 5)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(data[:, 0], data[:, 3], label="p99 of the second's actions", color="tab:red")
    ax.plot(data[:, 0], data[:, 2], label="p50", color="tab:blue")
    ax.axhline(100, color="grey", linestyle=":", label="target p99 (100 ms)")
    ax.set_yscale("log")
    ax.set_xlabel("seconds into the phase (by trigger event time)")
    ax.set_ylabel("event time to action, ms")
    share = ax.twinx()
    share.fill_between(data[:, 0], data[:, 4] * 100, step="mid", alpha=0.25, color="tab:orange",
                       label="hypervisor's share of the cores (steal)")
    share.set_ylabel("steal, % of the cores' time")
    share.set_ylim(0, 100)
    lines, labels = ax.get_legend_handles_labels()
    more, names = share.get_legend_handles_labels()
    ax.legend(lines + more, labels + names, loc="upper left", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
