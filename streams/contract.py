"""The touchpoint: one customer interaction on any channel, as every stage of the system sees it.

Its wire form (JSON, schema version 1) is documented in docs/touchpoint.md and docs/schemas/touchpoint.v1.json;
`streams.decode` is the one place that turns bytes into a Touchpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class Touchpoint:
    customer_id: str
    event_time_ms: int  # epoch milliseconds, UTC
    channel: str
    event_type: str
    item: str | None = None
    value: float | None = None
    attributes: Mapping[str, Any] | None = None
    event_id: str | None = None

    def to_wire(self) -> bytes:
        """The JSON bytes of this touchpoint, with optional fields left out when absent."""
        doc: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "customer_id": self.customer_id,
            "event_time": self.event_time_ms,
            "channel": self.channel,
            "event_type": self.event_type,
        }
        for name in ("item", "value", "attributes", "event_id"):
            value = getattr(self, name)
            if value is not None:
                doc[name] = value
        return orjson.dumps(doc)
