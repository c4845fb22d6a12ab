"""The physical ceiling on this machine: each stage of the hot path alone, without Kafka or Faust, per touchpoint.

The ceiling is the sum of what every touchpoint must cost at least: decoding its JSON, its share of a batched GRU
step, reading and writing its customer's state in RocksDB. `Engine.process` over the same RocksDB (and over a dict)
shows what the engine's own Python adds before Kafka and Faust add theirs.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench.states import RocksStore, customer_key, fill
from model.artifact import LoadedModel
from streams.contract import Touchpoint
from streams.decide import Policy
from streams.decode import decode
from streams.state import StateLayout
from streams.worker import Engine, Inbound

BATCH = 2000
# Stages whose per-touchpoint times add up to the ceiling; the others are shown for where the time goes.
SUMMED = ("decode (streams.decode.decode)", "GRU step (LoadedModel.step, batch of 2000)",
          "RocksDB read of a state (a multi-get per partition, batches of 2000)",
          "RocksDB write of a state (a write batch per partition, batches of 2000)")


def _per_item_us(run: Callable[[], Any], items: int, repeats: int = 3) -> float:
    """Best of `repeats` runs, in µs per item: the least disturbed run on shared cores."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best / items * 1e6


class _Dict:
    """A StateStore over dicts, to time Engine.process with state access at its cheapest."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}

    def get_many(self, keys: Sequence[str], contexts: Sequence[Any]) -> list[bytes | None]:
        return [self.values.get(k) for k in keys]

    def put_many(self, items: Sequence[tuple[str, bytes]], context: Any) -> None:
        self.values.update(items)

    def erase(self, key: str, context: Any) -> None:
        self.values.pop(key, None)

    def opted_out(self, keys: Sequence[str], contexts: Sequence[Any]) -> list[bool]:
        return [False] * len(keys)

    def opt_out(self, key: str, context: Any) -> None:
        pass

    def flush(self) -> None:
        pass


def _engine_rate(model: LoadedModel, policy: Policy, messages: list[Inbound], store: Any) -> float:
    engine = Engine(model, policy, "consent")
    started = time.perf_counter()
    for lo in range(0, len(messages), BATCH):
        engine.save(engine.process(messages[lo:lo + BATCH], store, now_ms=0), store)
        store.flush()
    return len(messages) / (time.perf_counter() - started)


def _write(store: RocksStore, keys: Sequence[str], value: bytes) -> None:
    store.put_many([(key, value) for key in keys], None)
    store.flush()


def measure(model: LoadedModel, policy: Policy, events: Sequence[Touchpoint], partitions: int, cache_mb: int,
            stored_states: int) -> dict[str, Any]:
    """Per-touchpoint µs of each stage over `events` (realistic touchpoints), and Engine.process rates."""
    wire = [e.to_wire() for e in events]
    batch = list(events[:BATCH])
    h = np.random.default_rng(0).standard_normal((len(batch), model.hidden_size)).astype(np.float32)
    prev = np.array([e.event_time_ms - 3_600_000 for e in batch], dtype=np.int64)
    first = prev - 86_400_000
    counts = np.ones((len(batch), model.config.n_event_types), dtype=np.float32)
    per_event = {
        "JSON parse alone (orjson.loads)": _per_item_us(lambda: [orjson.loads(w) for w in wire], len(wire)),
        SUMMED[0]: _per_item_us(lambda: [decode(w) for w in wire], len(wire)),
        SUMMED[1]: _per_item_us(lambda: model.step(h, counts, batch, prev, first), len(batch)),
    }
    with tempfile.TemporaryDirectory(prefix="lam-bench-ceiling-") as tmp:
        layout = StateLayout.of(model, len(policy.actions))
        fill(Path(tmp), stored_states, partitions, cache_mb, model.version, layout, bar=False)
        store = RocksStore(Path(tmp), partitions, cache_mb)
        rng = np.random.default_rng(2)
        keys = [customer_key(i).decode() for i in rng.integers(0, stored_states, 20_000).tolist()]
        value = store.get_many(keys[:1], [None])[0]
        batches = [keys[lo:lo + BATCH] for lo in range(0, len(keys), BATCH)]
        per_event[SUMMED[2]] = _per_item_us(lambda: [store.get_many(b, [None] * len(b)) for b in batches], len(keys))
        per_event[SUMMED[3]] = _per_item_us(lambda: [_write(store, b, value) for b in batches], len(keys))
        messages = [Inbound("in", 0, i, e.customer_id.encode(), w) for i, (e, w) in enumerate(zip(events, wire))]
        engine_rocksdb = _engine_rate(model, policy, messages, store)
        store.close()
    ceiling_us = sum(per_event[name] for name in SUMMED)
    return {"batch": BATCH, "events": len(events), "per_event_us": {k: round(v, 3) for k, v in per_event.items()},
            "ceiling_us": round(ceiling_us, 3), "ceiling_per_second": round(1e6 / ceiling_us),
            "engine_rocksdb_per_second": round(engine_rocksdb),
            "engine_dict_per_second": round(_engine_rate(model, policy, messages, _Dict()))}
