"""The one file reader: JSON lines and mapped CSV, gzip or not, bad lines counted, event-time order checked."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from sim.world import World, WorldConfig
from sim.write import write_clickstream_csv, write_jsonl
from streams.contract import Touchpoint
from streams.errors import LamError
from streams.sources import EventFile, Mapping, in_time_order, sort_by_time

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tests" / "data" / "clickstream-sample.csv"
SAMPLE_WORLD = WorldConfig(customers=1_000, days=30, seed=7)  # what made SAMPLE; see the first test
RETAILROCKET = ROOT / "streams" / "mappings" / "retailrocket.toml"


def test_shipped_sample_is_what_the_simulator_writes(tmp_path: Path) -> None:
    write_clickstream_csv(World(SAMPLE_WORLD), tmp_path / "sample.csv")
    assert (tmp_path / "sample.csv").read_bytes() == SAMPLE.read_bytes()


def test_clickstream_sample_replays_through_the_retailrocket_mapping() -> None:
    source = EventFile(SAMPLE, Mapping.load(RETAILROCKET))
    events = list(source)
    rows = SAMPLE.read_text().splitlines()[1:]
    assert source.rejected == 0
    assert len(events) == len(rows) == source.read
    assert {e.event_type for e in events} == {"product_view", "add_to_cart", "purchase"}
    assert {e.channel for e in events} == {"web"}
    first = rows[0].split(",")
    assert (events[0].event_time_ms, events[0].customer_id, events[0].item) == (int(first[0]), first[1], first[3])
    purchases = [e for e in events if e.event_type == "purchase"]
    assert purchases and all(e.attributes and e.attributes["transaction_id"] for e in purchases)
    assert all(e.attributes is None for e in events if e.event_type != "purchase")
    assert list(in_time_order(events, "sample")) == events


def test_jsonl_plain_and_gzip_read_the_same_touchpoints(tmp_path: Path) -> None:
    world = World(WorldConfig(customers=300, days=20, seed=4))
    write_jsonl(world, tmp_path / "a.jsonl")
    write_jsonl(world, tmp_path / "a.jsonl.gz")
    plain, packed = list(EventFile(tmp_path / "a.jsonl")), list(EventFile(tmp_path / "a.jsonl.gz"))
    assert plain == packed == list(world.events())


def test_bad_lines_are_counted_with_the_first_reason(tmp_path: Path) -> None:
    good = Touchpoint("c1", 1735689600000, "web", "page_view").to_wire()
    path = tmp_path / "mixed.jsonl.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\n".join([good, b"not json", good, b"", b'{"customer_id":"c2"}', good]) + b"\n")
    source = EventFile(path)
    assert len(list(source)) == 3
    assert source.rejected == 2
    assert source.first_rejection.startswith("line 2: payload: expected JSON")
    assert "2 bad lines" in source.summary()


def test_csv_rows_are_checked_like_json(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("ts;user;what;amount\n"
                    "2025-01-01T10:00:00Z;u1;buy;12.5\n"
                    "2025-01-01T10:00:00;u2;buy;3\n"
                    "2025-01-01T11:00:00+01:00;u3;browse;\n"
                    "2025-01-01T12:00:00Z;u4;buy;lots\n"
                    "2025-01-01T12:00:00Z;u5\n")
    mapping = Mapping(columns={"event_time": "ts", "customer_id": "user", "event_type": "what", "value": "amount"},
                      constants={"channel": "store"}, values={"event_type": {"buy": "purchase"}},
                      time_format="iso", delimiter=";").checked()
    source = EventFile(path, mapping)
    events = list(source)
    assert events == [Touchpoint("u1", 1735725600000, "store", "purchase", value=12.5),
                      Touchpoint("u3", 1735725600000, "store", "browse")]
    assert source.rejected == 3
    assert source.first_rejection == ("line 3: event_time: expected epoch ms or ISO-8601 with zone; "
                                      "got '2025-01-01T10:00:00' (no zone)")


def test_epoch_seconds_and_command_line_amendments(tmp_path: Path) -> None:
    path = tmp_path / "s.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write("t,who,kind\n1735689600,a,view\n1735689601.5,b,view\n")
    mapping = Mapping(time_format="epoch_s").amended(["event_time=t", "customer_id=who", "event_type=kind"],
                                                     ["channel=web"])
    assert [(e.customer_id, e.event_time_ms) for e in EventFile(path, mapping)] == [("a", 1735689600000),
                                                                                      ("b", 1735689601500)]


@pytest.mark.parametrize("mapping, message", [
    (lambda: Mapping().amended(["customer_id=a"]), "no column or constant for event_time, channel, event_type"),
    (lambda: Mapping().amended(["when=a"]), "'when' is not a contract field"),
    (lambda: Mapping().amended(["customer_id"]), "--column: expected FIELD=VALUE; got 'customer_id'"),
    (lambda: Mapping(time_format="unix").amended(["customer_id=a", "event_time=b", "channel=c", "event_type=d"]),
     "time_format expected one of"),
])
def test_bad_mappings_fail_in_one_line(mapping, message: str) -> None:
    with pytest.raises(LamError, match=message):
        mapping()


def test_bad_mapping_files_and_headers(tmp_path: Path) -> None:
    (tmp_path / "broken.toml").write_text("columns = [")
    with pytest.raises(LamError, match="not TOML"):
        Mapping.load(tmp_path / "broken.toml")
    with pytest.raises(LamError, match="cannot read"):
        Mapping.load(tmp_path / "absent.toml")
    (tmp_path / "log.csv").write_text("time,user\n1,2\n")
    with pytest.raises(LamError, match=r"names columns \['visitorid', 'event', 'itemid', 'transactionid'\]"):
        list(EventFile(tmp_path / "log.csv", Mapping.load(RETAILROCKET).amended(["event_time=time"])))


def test_missing_files_and_csv_without_mapping_fail_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(LamError, match="no such file"):
        EventFile(tmp_path / "absent.jsonl")
    with pytest.raises(LamError, match="needs a column mapping"):
        EventFile(SAMPLE)


def test_damaged_gzip_fails_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(gzip.compress(b"\n".join(Touchpoint("c1", 1735689600000 + i, "web", "x").to_wire()
                                              for i in range(2000)))[:-40])
    with pytest.raises(LamError, match="unreadable after"):
        list(EventFile(path))


def test_time_order_check_and_sort() -> None:
    a, b, c = (Touchpoint(cid, t, "web", "x") for cid, t in (("a", 2), ("b", 1), ("c", 2)))
    assert sort_by_time([a, b, c]) == [b, a, c]
    with pytest.raises(LamError, match="event 2 is 1 ms earlier"):
        list(in_time_order([a, b, c], "f.jsonl"))
