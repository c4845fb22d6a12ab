"""Writing a world's touchpoints to files: the JSON lines that `lam simulate` makes for training, and the
clickstream CSV layout (timestamp, visitorid, event, itemid, transactionid) that shop logs such as RetailRocket use,
so the CSV replay path can be tested on simulated data.
"""

from __future__ import annotations

import gzip
import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from sim.config import FORMATS
from sim.generate import item_names
from sim.world import World, campaign_name
from streams.contract import SCHEMA_VERSION, catalogue
from streams.errors import LamError

_CHUNK = 200_000
_VALUE = ',"value":'
# Simulator event types kept in the clickstream layout, under the names such shop logs use.
CLICKSTREAM_EVENTS = {"product_view": "view", "add_to_cart": "addtocart", "purchase": "transaction"}


@dataclass(frozen=True, slots=True)
class Written:
    path: Path
    events: int
    customers: int
    seconds: float
    truth: Path

    def __str__(self) -> str:
        rate = self.events / self.seconds if self.seconds > 0 else float("inf")
        return (f"wrote {self.events:,} touchpoints of {self.customers:,} customers to {self.path} "
                f"in {self.seconds:.1f} s ({rate:,.0f} events/s); truth in {self.truth}")


@contextmanager
def open_out(path: Path) -> Iterator[IO[str]]:
    """A text file for writing, gzip-compressed (fast level: these files are rewritten often) if named *.gz."""
    try:
        raw = gzip.open(path, "wb", compresslevel=1) if path.suffix == ".gz" else open(path, "wb")
    except OSError as exc:
        raise LamError(f"cannot write {path}: {exc.strerror}") from None
    with raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
        yield text


def truth_path(path: Path) -> Path:
    return path.with_name(path.name + ".truth.npz")


def simulate(world: World, out: str | Path, fmt: str = "jsonl") -> Written:
    """Write the world's touchpoints in event-time order, and its ground truth beside them."""
    path = Path(out)
    started = time.perf_counter()
    writer = {FORMATS[0]: write_jsonl, FORMATS[1]: write_clickstream_csv}[fmt]
    truth = truth_path(path)
    try:
        count = writer(world, path)
        world.save_truth(truth)
    except OSError as exc:  # a full disk or a vanished folder, mid-write
        raise LamError(f"cannot write {path}: {exc.strerror or exc}") from None
    return Written(path, count, world.config.customers, time.perf_counter() - started, truth)


class JsonLines:
    """Formats a world's events as JSON lines, byte for byte what `Touchpoint.to_wire` makes, without building
    touchpoints: every line is pasted together from pieces made once per customer, kind and item."""

    def __init__(self, world: World) -> None:
        cat = catalogue()
        self.cols = world.columns
        self.heads = [f'{{"v":{SCHEMA_VERSION},"customer_id":"{cid}","event_time":' for cid in world.customer_ids()]
        self.kinds = [f',"channel":"{ch}","event_type":"{et}"' for ch in cat.channels for et in cat.event_types]
        self.n_types = len(cat.event_types)
        self.items = ["", *(f',"item":"{name}"' for name in item_names())]
        self.campaigns = [f',"attributes":{{"campaign":"{campaign_name(k)}"}}'
                          for k in range(int(self.cols.campaign.max(initial=-1)) + 1)]

    def lines(self, lo: int, hi: int) -> list[str]:
        cols, heads, kinds, n_types, items, campaigns = (self.cols, self.heads, self.kinds, self.n_types,
                                                         self.items, self.campaigns)
        s = slice(lo, hi)
        return [f'{heads[c]}{t}{kinds[ch * n_types + et]}{items[it + 1]}{"" if v != v else _VALUE + repr(v)}'
                f'{"" if cp < 0 else campaigns[cp]}}}\n'
                for c, t, ch, et, it, v, cp in zip(cols.customer[s].tolist(), cols.time_ms[s].tolist(),
                                                   cols.channel[s].tolist(), cols.event_type[s].tolist(),
                                                   cols.item[s].tolist(), cols.value[s].tolist(),
                                                   cols.campaign[s].tolist())]


def write_jsonl(world: World, path: Path) -> int:
    total = len(world.columns)
    formatter = JsonLines(world)
    with open_out(path) as out:
        for lo in range(0, total, _CHUNK):
            out.writelines(formatter.lines(lo, min(lo + _CHUNK, total)))
    return total


def write_clickstream_csv(world: World, path: Path) -> int:
    """Views, add-to-carts and purchases in the clickstream layout; visitor and item ids are integers."""
    cols, cat = world.columns, catalogue()
    names = np.full(len(cat.event_types), "", dtype=object)
    for ours, theirs in CLICKSTREAM_EVENTS.items():
        names[cat.event_types.index(ours)] = theirs
    keep = np.flatnonzero(names[cols.event_type] != "")
    purchase = cat.event_types.index("purchase")
    transaction = np.cumsum(cols.event_type[keep] == purchase)
    with open_out(path) as out:
        out.write("timestamp,visitorid,event,itemid,transactionid\n")
        out.writelines(f"{t},{c},{names[et]},{it},{tx if et == purchase else ''}\n"
                       for t, c, et, it, tx in zip(cols.time_ms[keep].tolist(), cols.customer[keep].tolist(),
                                                   cols.event_type[keep].tolist(), cols.item[keep].tolist(),
                                                   transaction.tolist()))
    return len(keep)
