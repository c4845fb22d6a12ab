"""What Kafka and Faust alone cost a worker per touchpoint: `lam worker` with an engine that does no work.

    python -m bench.floor        (configured like `lam worker`, through LAM_* variables)

The worker's own app (streams.app: consumer, inbox, batch loop, acks, commits) around an engine whose `process`
only counts its batch: nothing decoded, no state read or written, no model step, no action. Its throughput is what
the Kafka side of one worker process allows any engine; with the engine's own stages alone (bench/ceiling.py) it
bounds what one worker process of this design can reach on the machine.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

from streams import topics
from streams.app import Worker, create_app, settle_garbage_collector
from streams.settings import load as load_settings
from streams.worker import Inbound, Outcome, StateStore


class IdleEngine:
    """The engine's interface to streams.app, doing nothing but count."""

    model = SimpleNamespace(version="idle")

    def process(self, batch: Sequence[Inbound], store: StateStore, now_ms: int) -> Outcome:
        outcome = Outcome()
        outcome.counts["decoded"] = len(batch)
        return outcome

    @staticmethod
    def save(outcome: Outcome, store: StateStore, owned: Callable[[Any], bool] = lambda context: True) -> None:
        """Nothing to store."""

    @staticmethod
    def write_all(store: StateStore) -> None:
        """Nothing held."""

    @staticmethod
    def written_before() -> int:
        return sys.maxsize  # nothing held: every batch may be acked

    @staticmethod
    def keep(owned: Callable[[Any], bool]) -> bool:
        return False


def main() -> None:
    settings = load_settings()
    topics.ensure(settings)
    app = create_app(settings, IdleEngine())  # type: ignore[arg-type]  # streams.app needs only this interface
    settle_garbage_collector()
    Worker(app, settings.data_dir, loglevel="warning", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
