"""A worker's HTTP endpoints on faust's web server: /livez, /readyz (200 or 503) and /metrics.

Readiness follows faust's own recovery: `app.tables.recovery.completed` is set once the first assignment's table
partitions have been replayed from their changelogs and the input partitions resumed, and `app.rebalancing` is
True from the start of each later rebalance until its recovery ends. A worker is ready when the first holds and
the second doesn't: it owns its partitions and serves from fully recovered state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams import metrics


def liveness(app: Any) -> tuple[bool, str]:
    """Alive unless crashed or stopping; a blocked event loop fails the probe by not answering at all."""
    if app.crashed:
        return False, "crashed"
    if app.should_stop:
        return False, "stopping"
    return True, "alive"


def readiness(app: Any) -> tuple[bool, str]:
    """Ready once the worker has its partitions and their table recovery has finished."""
    alive, why = liveness(app)
    if not alive:
        return False, why
    if not app.tables.recovery.completed.is_set():
        return False, "waiting for partitions and table recovery"
    if app.rebalancing:
        return False, "rebalancing: recovering tables for the new assignment"
    return True, "ready"


def state_entries(app: Any) -> Iterable[tuple[Sequence[str], float]]:
    """RocksDB's key estimate per open table partition (faust keeps one database per partition in `_dbs`)."""
    for table in app.tables.values():
        for partition, db in list(getattr(table.data, "_dbs", {}).items()):
            estimate = getattr(db, "property_int_value", None)  # rocksdict; other drivers are not counted
            if estimate is not None:
                yield (table.name, str(partition)), float(estimate("rocksdb.estimate-num-keys") or 0)


def recovery_remaining(app: Any) -> Iterable[tuple[Sequence[str], float]]:
    """Changelog records each active table partition still has to replay (0 once recovered)."""
    for tp, remaining in app.tables.recovery.active_remaining().items():
        yield (tp.topic, str(tp.partition)), float(max(remaining, 0))


def install(app: faust.App, input_topics: Sequence[str]) -> None:
    """Add the health and metrics routes and the scrape-time gauges to a worker's app."""

    def answer(view: faust.web.View, verdict: tuple[bool, str]) -> faust.web.Response:
        ok, why = verdict
        return view.json({"status": "ok" if ok else "unavailable", "detail": why}, status=200 if ok else 503)

    @app.page("/livez")
    async def livez(view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        return answer(view, liveness(app))

    @app.page("/readyz")
    async def readyz(view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        return answer(view, readiness(app))

    @app.page("/metrics")
    async def prometheus(view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        # As a header: aiohttp refuses a content_type argument that carries a charset.
        return view.bytes(generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.on_partitions_assigned.connect
    async def assigned(sender: Any, assigned: set, **_: Any) -> None:
        metrics.record_assignment(input_topics, ((tp.topic, tp.partition) for tp in assigned))

    metrics.READY.set_function(lambda: float(readiness(app)[0]))
    metrics.register_gauge(metrics.STATE_ENTRIES, lambda: state_entries(app))
    metrics.register_gauge(metrics.RECOVERY_REMAINING, lambda: recovery_remaining(app))
