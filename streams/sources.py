"""The one reader of touchpoint files, for `lam produce` and for model training.

JSON lines (each line a touchpoint in the wire form, through `streams.decode`) or CSV with a column mapping (each
row made into a document, then through the same checks), either optionally gzip-compressed. Events come out in
file order; a bad line is counted and the first reason kept, never fatal. A mapping is a small TOML file (see
streams/mappings/retailrocket.toml), optionally amended with `field=column` and `field=value` pairs, so a public
clickstream can be replayed without code.
"""

from __future__ import annotations

import csv
import gzip
import io
import tomllib
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from streams.contract import Touchpoint
from streams.decode import Rejected, decode, from_document
from streams.errors import LamError

FIELDS = ("customer_id", "event_time", "channel", "event_type", "item", "value", "event_id")
REQUIRED = ("customer_id", "event_time", "channel", "event_type")
TIME_FORMATS = ("epoch_ms", "epoch_s", "iso")


@dataclass(frozen=True)
class Mapping:
    """How CSV columns become contract fields."""

    columns: dict[str, str] = field(default_factory=dict)  # contract field -> CSV column
    constants: dict[str, str] = field(default_factory=dict)  # contract field -> value on every row
    values: dict[str, dict[str, str]] = field(default_factory=dict)  # contract field -> {CSV value: contract value}
    attributes: dict[str, str] = field(default_factory=dict)  # attribute name -> CSV column
    time_format: str = "epoch_ms"
    delimiter: str = ","

    @classmethod
    def load(cls, path: str | Path) -> Mapping:
        try:
            doc = tomllib.loads(Path(path).read_text())
        except OSError as exc:
            raise LamError(f"mapping {path}: cannot read ({exc.strerror})") from None
        except tomllib.TOMLDecodeError as exc:
            raise LamError(f"mapping {path}: not TOML ({exc})") from None
        unknown = set(doc) - {"columns", "constants", "values", "attributes", "time_format", "delimiter"}
        if unknown:
            raise LamError(f"mapping {path}: unknown keys {sorted(unknown)}")
        try:
            return cls(**doc).checked()
        except TypeError as exc:
            raise LamError(f"mapping {path}: {exc}") from None

    def amended(self, columns: Sequence[str] = (), constants: Sequence[str] = ()) -> Mapping:
        """This mapping with `field=column` and `field=value` pairs from the command line added."""
        return replace(self, columns=self.columns | _pairs(columns, "--column"),
                       constants=self.constants | _pairs(constants, "--constant")).checked()

    def checked(self) -> Mapping:
        for name in (*self.columns, *self.constants, *self.values):
            if name not in FIELDS:
                raise LamError(f"mapping: {name!r} is not a contract field; expected one of {', '.join(FIELDS)}")
        missing = [name for name in REQUIRED if name not in self.columns and name not in self.constants]
        if missing:
            raise LamError(f"mapping: no column or constant for {', '.join(missing)}")
        if self.time_format not in TIME_FORMATS:
            raise LamError(f"mapping: time_format expected one of {', '.join(TIME_FORMATS)}; got {self.time_format!r}")
        if len(self.delimiter) != 1:
            raise LamError(f"mapping: delimiter expected one character; got {self.delimiter!r}")
        return self


def _pairs(items: Sequence[str], flag: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise LamError(f"{flag}: expected FIELD=VALUE; got {item!r}")
        pairs[name] = value
    return pairs


class EventFile:
    """Touchpoints of one file, in file order; after iterating, `read`, `rejected` and `first_rejection` say how
    it went."""

    def __init__(self, path: str | Path, mapping: Mapping | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise LamError(f"{self.path}: no such file")
        self.mapping = mapping
        if mapping is None and ".csv" in self.path.suffixes:
            raise LamError(f"{self.path}: a CSV file needs a column mapping (--mapping FILE or --column FIELD=COLUMN)")
        self.read = 0
        self.rejected = 0
        self.first_rejection = ""

    def __iter__(self) -> Iterator[Touchpoint]:
        self.read = self.rejected = 0
        self.first_rejection = ""
        rows = self._csv_rows(self.mapping) if self.mapping else self._json_lines()
        try:
            for line, result in rows:
                if type(result) is Touchpoint:
                    self.read += 1
                    yield result
                else:
                    self._reject(line, result.reason if isinstance(result, Rejected) else result)
        except (OSError, EOFError, zlib.error, csv.Error) as exc:
            raise LamError(f"{self.path}: unreadable after {self.read + self.rejected} events ({exc})") from None

    def summary(self) -> str:
        bad = f"; {self.rejected:,} bad lines, the first: {self.first_rejection}" if self.rejected else ""
        return f"{self.read:,} touchpoints read from {self.path}{bad}"

    def _reject(self, line: int, reason: str) -> None:
        self.rejected += 1
        if not self.first_rejection:
            self.first_rejection = f"line {line}: {reason}"

    def _open(self) -> IO[bytes]:
        with open(self.path, "rb") as probe:
            gzipped = probe.read(2) == b"\x1f\x8b"
        return gzip.open(self.path, "rb") if gzipped else open(self.path, "rb")

    def _json_lines(self) -> Iterator[tuple[int, Touchpoint | Rejected]]:
        with self._open() as stream:
            for line, raw in enumerate(stream, 1):
                raw = raw.rstrip(b"\r\n")
                if raw:
                    yield line, decode(raw, topic=str(self.path), offset=line)

    def _csv_rows(self, mapping: Mapping) -> Iterator[tuple[int, Touchpoint | str]]:
        with self._open() as stream, io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="") as text:
            reader = csv.reader(text, delimiter=mapping.delimiter)
            header = next(reader, None)
            if header is None:
                return
            to_row = _row_converter(mapping, header, self.path)
            for line, row in enumerate(reader, 2):
                if row:
                    yield line, to_row(row)


def _row_converter(mapping: Mapping, header: list[str], path: Path) -> Callable[[list[str]], Touchpoint | str]:
    position = {name: i for i, name in enumerate(header)}
    wanted = [*mapping.columns.values(), *mapping.attributes.values()]
    absent = [column for column in wanted if column not in position]
    if absent:
        raise LamError(f"{path}: the mapping names columns {absent} that its header ({','.join(header)}) lacks")
    columns = [(name, position[column], mapping.values.get(name, {})) for name, column in mapping.columns.items()]
    attributes = [(name, position[column]) for name, column in mapping.attributes.items()]
    convert = {"event_time": _TIME_CONVERTERS[mapping.time_format], "value": _number}
    width = len(header)

    def to_row(row: list[str]) -> Touchpoint | str:
        if len(row) != width:
            return f"row: expected {width} cells; got {len(row)}"
        doc: dict[str, Any] = dict(mapping.constants)
        for name, i, renames in columns:
            cell = row[i]
            if cell:
                cell = renames.get(cell, cell)
                doc[name] = convert[name](cell) if name in convert else cell
        extra = {name: row[i] for name, i in attributes if row[i]}
        if extra:
            doc["attributes"] = extra
        return from_document(doc)

    return to_row


def _number(cell: str) -> float | str:
    try:
        return float(cell)
    except ValueError:
        return cell  # left as text, so the decoder names the problem


def _epoch(scale: int) -> Callable[[str], int | str]:
    def convert(cell: str) -> int | str:
        try:
            return round(float(cell) * scale) if scale != 1 else int(cell)
        except ValueError:
            return cell

    return convert


_TIME_CONVERTERS = {"epoch_ms": _epoch(1), "epoch_s": _epoch(1000), "iso": str}


def in_time_order(events: Iterable[Touchpoint], source: str) -> Iterator[Touchpoint]:
    """Pass events through, failing with one line at the first one earlier than its predecessor."""
    previous = None
    for n, event in enumerate(events, 1):
        if previous is not None and event.event_time_ms < previous:
            raise LamError(f"{source}: event {n:,} is {previous - event.event_time_ms} ms earlier than the one "
                           f"before it; the file is not in event-time order (replay it with --sort)")
        previous = event.event_time_ms
        yield event


def sort_by_time(events: Iterable[Touchpoint]) -> list[Touchpoint]:
    """Events in event-time order, ties kept in file order (so each customer's order is kept), held in memory."""
    return sorted(events, key=lambda e: e.event_time_ms)
