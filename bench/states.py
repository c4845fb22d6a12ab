"""Memory and disk as the customer base grows, measured on RocksDB directly (no Kafka): states live there.

For each size, one child process writes that many states of the real layout into `partitions` RocksDB databases
opened with the worker's options; a second, fresh child loads the model, opens the databases and runs
`Engine.process` over touchpoints of random customers, reading and writing states. Children, so that each RSS
figure (VmHWM) belongs to one job and not to the benchmark's own heap.

    python -m bench.states write DIR STATES PARTITIONS CACHE_MB MODEL_VERSION HIDDEN PRODUCTS EVENT_TYPES
    python -m bench.states engine DIR STATES PARTITIONS CACHE_MB MODEL EVENTS
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from streams import cache
from streams.app import (OPTED_OUT, StaggeredOptions, get_by_partition, rocksdb_options, settle_garbage_collector,
                         write_by_partition)
from streams.settings import Settings
from streams.state import StateLayout

if TYPE_CHECKING:
    from model.artifact import LoadedModel
    from streams.decide import Policy

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_POLICY = ROOT / "streams" / "policy.toml"  # the policy every benchmark runs
_WRITE_CHUNK = 50_000


def shipped_policy(model: LoadedModel) -> Policy:
    """SHIPPED_POLICY for `model`: its actions size the states."""
    from streams.decide import load_policy

    return load_policy(SHIPPED_POLICY, model.products)


def open_databases(folder: Path, table: str, partitions: int, cache_mb: int) -> list[Any]:
    """One database per partition, as faust's RocksDB store opens them, with the same options class."""
    options = StaggeredOptions(**rocksdb_options(cache_mb))
    return [options.open(folder / f"{table}-{p}.db") for p in range(partitions)]


def partition_of(key: bytes, partitions: int) -> int:
    # Any even spread will do for memory and speed; the worker's murmur2 would cost Python time per key here.
    return zlib.crc32(key) % partitions


def customer_key(index: int) -> bytes:
    return f"c{index:08d}".encode()


class RocksStore:
    """streams.worker.StateStore over per-partition RocksDB databases (states and consent), without Faust, read and
    written as the worker's store (streams.app.TableStore) does: one multi-get per partition, and `put` staging a
    state that `flush` writes with one write batch per partition."""

    def __init__(self, folder: Path, partitions: int, cache_mb: int) -> None:
        self.partitions = partitions
        self.states = open_databases(folder, "customer-state", partitions, cache_mb)
        self.consent = open_databases(folder, "consent", partitions, cache_mb)
        self._staged: dict[int, list[tuple[bytes, bytes]]] = {}

    def get_many(self, keys: Sequence[str], contexts: Sequence[Any]) -> list[bytes | None]:
        return self._get_many(self.states, keys)

    def _get_many(self, dbs: list[Any], keys: Sequence[str]) -> list[bytes | None]:
        raw = [k.encode() for k in keys]
        return get_by_partition(dbs.__getitem__, [partition_of(k, self.partitions) for k in raw], raw)

    def put_many(self, items: Sequence[tuple[str, bytes]], context: Any) -> None:
        for key, value in items:
            raw = key.encode()
            self._staged.setdefault(partition_of(raw, self.partitions), []).append((raw, value))

    def flush(self) -> None:
        staged, self._staged = self._staged, {}
        write_by_partition(self.states.__getitem__, staged)

    def erase(self, key: str, context: Any) -> None:
        raw = key.encode()
        self.states[partition_of(raw, self.partitions)].delete(raw)

    def opted_out(self, keys: Sequence[str], contexts: Sequence[Any]) -> list[bool]:
        return [value == OPTED_OUT for value in self._get_many(self.consent, keys)]

    def opt_out(self, key: str, context: Any) -> None:
        raw = key.encode()
        self.consent[partition_of(raw, self.partitions)][raw] = OPTED_OUT

    def close(self) -> None:
        for db in self.states + self.consent:
            db.close()


def fill(folder: Path, states: int, partitions: int, cache_mb: int, model_version: str, layout: StateLayout,
         bar: bool = True) -> None:
    """Write `states` customer states (random hidden vectors: as incompressible as trained ones) in batches."""
    store = RocksStore(folder, partitions, cache_mb)
    rng = np.random.default_rng(0)
    progress = tqdm(total=states, unit=" states", file=sys.stderr, disable=not bar, desc="write states")
    for lo in range(0, states, _WRITE_CHUNK):
        n = min(_WRITE_CHUNK, states - lo)
        chunk = layout.fresh(n, model_version, np.zeros(layout.hidden_size, np.float32),
                             np.zeros(layout.products, np.float32))
        chunk["hidden"] = rng.standard_normal((n, layout.hidden_size), dtype=np.float32)
        chunk["last_offset"] = np.arange(lo, lo + n)
        store.put_many([(customer_key(lo + i).decode(), value) for i, value in enumerate(layout.dump(chunk))], None)
        store.flush()
        progress.update(n)
    progress.close()
    for db in store.states:
        db.flush()
    store.close()


def _engine_job(folder: Path, states: int, partitions: int, cache_mb: int, model_path: str,
                events: int) -> dict[str, Any]:
    """Touchpoints of random existing customers through Engine.process over the databases, in batches of 2000."""
    from model.artifact import load
    from streams.contract import Touchpoint
    from streams.worker import Engine, Inbound

    model = load(model_path)
    policy = shipped_policy(model)
    # The worker's default cache size: its memory counts; random customers of millions seldom meet it again.
    cached = cache.capacity(Settings().state_cache_mb, StateLayout.of(model, len(policy.actions)))
    engine = Engine(model, policy, "consent", cached_states=cached)
    store = RocksStore(folder, partitions, cache_mb)
    settle_garbage_collector()  # as the worker runs
    rng = np.random.default_rng(1)
    started, t0 = time.perf_counter(), 1_760_000_000_000
    for lo in range(0, events, 2000):
        batch = [Inbound("in", 0, states + lo + i, customer_key(c),
                         Touchpoint(customer_key(c).decode(), t0 + lo + i, "web", "product_view").to_wire())
                 for i, c in enumerate(rng.integers(0, states, min(2000, events - lo)).tolist())]
        engine.save(engine.process(batch, store, now_ms=0), store)
        store.flush()
    seconds = time.perf_counter() - started
    store.close()
    return {"events": events, "seconds": seconds}


def peak_rss_mib(pid: int | str = "self") -> float | None:
    """VmHWM (peak resident set) of a process in MiB, or None once it has gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return next(int(line.split()[1]) / 1024 for line in text.splitlines() if line.startswith("VmHWM"))


def _child(*args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "bench.states", *args], cwd=ROOT, stdout=subprocess.PIPE, check=True)
    return json.loads(out.stdout)


def disk_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def measure(sizes: Sequence[int], partitions: int, cache_mb: int, model_path: Path, workdir: Path,
            engine_events: int) -> list[dict[str, Any]]:
    """One row per size: disk, the writer's peak RSS and the RSS of the engine working over those states."""
    from model.artifact import load

    model = load(model_path)
    rows = []
    for size in sizes:
        folder = workdir / f"states-{size}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        started = time.perf_counter()
        layout = StateLayout.of(model, len(shipped_policy(model).actions))
        written = _child("write", str(folder), str(size), str(partitions), str(cache_mb), model.version,
                         str(layout.hidden_size), str(layout.products), str(layout.event_types),
                         str(layout.action_slots))
        on_disk = disk_bytes(folder)
        engine = _child("engine", str(folder), str(size), str(partitions), str(cache_mb), str(model_path),
                        str(engine_events))
        rows.append({"states": size, "disk_mib": on_disk / 2**20, "disk_bytes_per_state": on_disk / size,
                     "write_seconds": round(written["seconds"], 1), "write_peak_rss_mib": written["peak_rss_mib"],
                     "engine_rss_mib": engine["peak_rss_mib"],
                     "engine_events_per_second": round(engine["events"] / engine["seconds"]),
                     "seconds": round(time.perf_counter() - started, 1)})
        shutil.rmtree(folder, ignore_errors=True)
        print(f"bench: states {size:,}: {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def main(argv: Sequence[str]) -> None:
    job, folder, states, partitions, cache_mb = argv[0], Path(argv[1]), int(argv[2]), int(argv[3]), int(argv[4])
    started = time.perf_counter()
    if job == "write":
        fill(folder, states, partitions, cache_mb, argv[5], StateLayout(*map(int, argv[6:10])))
        result: dict[str, Any] = {"seconds": time.perf_counter() - started}
    else:
        result = _engine_job(folder, states, partitions, cache_mb, argv[5], int(argv[6]))
    print(json.dumps(result | {"peak_rss_mib": peak_rss_mib(os.getpid())}))


if __name__ == "__main__":
    main(sys.argv[1:])
