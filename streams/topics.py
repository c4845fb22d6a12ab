"""The topics the system needs, with the partition counts the design needs (`lam topics create`).

Input and consent topics must have the same partition count as the state changelogs (co-partitioning), so all
four are created with `Settings.partitions`, and so are the changelog topics of the worker's two tables.
"""

from __future__ import annotations

from streams import kafka
from streams.settings import Settings


STATE_TABLE = "customer-state"
CONSENT_TABLE = "consent"


def required(settings: Settings) -> dict[str, int]:
    return {name: settings.partitions for name in (
        settings.input_topic, settings.consent_topic, settings.action_topic, settings.dead_letter_topic)}


def changelogs(settings: Settings) -> dict[str, int]:
    """The changelog topics of the worker's tables, named as faust names them."""
    return {f"{settings.app_id}-{table}-changelog": settings.partitions for table in (STATE_TABLE, CONSENT_TABLE)}


def ensure(settings: Settings) -> list[str]:
    """Create the missing topics, changelogs included; returns those created. Fails in one line if no broker answers.

    Faust would create the changelogs itself when a worker starts, but workers starting together race: a worker
    whose consumer fetched its metadata before another one created a changelog keeps a metadata without it, and
    faust then raises PartitionsMismatch ("changelog has 0 partitions") at that table's first write, which
    crashes the worker in the middle of a batch: opt-outs are lost and the batch's offsets are never acked.
    """
    kafka.require_broker(settings.bootstrap)
    return (kafka.create_topics(settings.bootstrap, required(settings))
            + kafka.create_topics(settings.bootstrap, changelogs(settings), {"cleanup.policy": "compact"}))
