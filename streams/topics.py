"""The topics the system needs, with the partition counts the design needs (`lam topics create`).

Input and consent topics must have the same partition count as the state changelogs (co-partitioning), so all
four are created with `Settings.partitions`. Faust creates its own changelog topics.
"""

from __future__ import annotations

from streams import kafka
from streams.settings import Settings


def required(settings: Settings) -> dict[str, int]:
    return {name: settings.partitions for name in (
        settings.input_topic, settings.consent_topic, settings.action_topic, settings.dead_letter_topic)}


def ensure(settings: Settings) -> list[str]:
    """Create the missing topics; returns those created. Fails in one line if no broker answers."""
    kafka.require_broker(settings.bootstrap)
    return kafka.create_topics(settings.bootstrap, required(settings))
