"""The vocabulary: catalogue names to integer ids, with an out-of-vocabulary bucket for everything else.

Id 0 of event types and channels is the out-of-vocabulary bucket, so a new event type in the stream is
scored rather than rejected. Items: 0 means "no item", 1..P are the catalogue's products (kept apart so that
the products the heads predict never collide), and every other item id is hashed into `item_buckets` buckets
after them. The hash is CRC-32, not Python's `hash`, because it must be the same in every process.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

from streams.errors import LamError

CATALOGUE = Path(__file__).resolve().parent / "catalogue.json"
ANY = "any"  # the head for a purchase of any item, the only one meaningful on logs of arbitrary item ids


@dataclass(frozen=True, slots=True)
class Vocabulary:
    channels: tuple[str, ...]
    event_types: tuple[str, ...]
    products: tuple[str, ...]
    purchase_event_types: tuple[str, ...]
    item_buckets: int
    _channel_ids: dict[str, int] = field(init=False, repr=False, compare=False)
    _event_type_ids: dict[str, int] = field(init=False, repr=False, compare=False)
    _product_ids: dict[str, int] = field(init=False, repr=False, compare=False)
    _known_item_ids: dict[str | None, int] = field(init=False, repr=False, compare=False)  # None and the products

    def __post_init__(self) -> None:
        object.__setattr__(self, "_channel_ids", {c: i + 1 for i, c in enumerate(self.channels)})
        object.__setattr__(self, "_event_type_ids", {e: i + 1 for i, e in enumerate(self.event_types)})
        object.__setattr__(self, "_product_ids", {p: i + 1 for i, p in enumerate(self.products)})
        object.__setattr__(self, "_known_item_ids", {None: 0, **self._product_ids})

    @property
    def n_channels(self) -> int:
        return len(self.channels) + 1

    @property
    def n_event_types(self) -> int:
        return len(self.event_types) + 1

    @property
    def n_items(self) -> int:
        return 1 + len(self.products) + self.item_buckets

    @property
    def heads(self) -> tuple[str, ...]:
        """Names of the conversion heads: one per product, then "any"."""
        return (*self.products, ANY)

    def channel_ids(self, channels: Sequence[str]) -> np.ndarray:
        """(B,) int64 ids of `channels`; `map` over the dict's own `get`: no Python call per name."""
        return np.fromiter(map(self._channel_ids.get, channels, repeat(0)), dtype=np.int64, count=len(channels))

    def event_type_ids(self, event_types: Sequence[str]) -> np.ndarray:
        return np.fromiter(map(self._event_type_ids.get, event_types, repeat(0)), dtype=np.int64,
                           count=len(event_types))

    def item_ids(self, items: Sequence[str | None]) -> np.ndarray:
        """Ids of `items`: "no item" and products by a lookup of all at once, other items one by one."""
        ids = np.fromiter(map(self._known_item_ids.get, items, repeat(-1)), dtype=np.int64, count=len(items))
        for i in np.flatnonzero(ids < 0).tolist():
            ids[i] = self.item_id(items[i])
        return ids

    def item_id(self, item: str | None) -> int:
        if item is None:
            return 0
        product = self._product_ids.get(item)
        if product is not None:
            return product
        return 1 + len(self.products) + _bucket(item, self.item_buckets)

    def purchase_head(self, event_type: str, item: str | None) -> int:
        """-1 if the event is no purchase; the product's head index, or P (the "any" head) for other items."""
        if event_type not in self.purchase_event_types:
            return -1
        product = self._product_ids.get(item) if item is not None else None
        return len(self.products) if product is None else product - 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "channels": list(self.channels),
            "event_types": list(self.event_types),
            "products": list(self.products),
            "purchase_event_types": list(self.purchase_event_types),
            "item_buckets": self.item_buckets,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Vocabulary:
        try:
            return cls(
                channels=tuple(doc["channels"]),
                event_types=tuple(doc["event_types"]),
                products=tuple(doc["products"]),
                purchase_event_types=tuple(doc["purchase_event_types"]),
                item_buckets=int(doc["item_buckets"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LamError(f"catalogue: expected channels, event_types, products, purchase_event_types, "
                           f"item_buckets; got {type(exc).__name__}: {exc}") from None


@lru_cache(maxsize=1 << 18)
def _bucket(item: str, buckets: int) -> int:
    return zlib.crc32(item.encode()) % buckets


def load_catalogue(path: str | Path = CATALOGUE) -> Vocabulary:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise LamError(f"catalogue {path}: cannot read: {exc}") from None
    return Vocabulary.from_dict(doc)
