"""The decoder: every documented form is accepted, every bad form rejected with its reason, nothing raises."""

from __future__ import annotations

import doctest
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jsonschema
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

import streams.decode
from streams.contract import Touchpoint, unknown_fields
from streams.decode import MAX_ATTRIBUTE_DEPTH, MAX_PAYLOAD_BYTES, Rejected, decode, from_document

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs" / "schemas" / "touchpoint.v1.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
BASE = {"customer_id": "c0000001", "event_time": 1735689600000, "channel": "web", "event_type": "page_view"}


def wire(**fields: object) -> bytes:
    doc = {**BASE, **fields}
    return orjson.dumps({k: v for k, v in doc.items() if v is not ...})


def nested(depth: int) -> dict:
    node: dict = {"leaf": 1}
    for _ in range(depth - 1):
        node = {"child": node}
    return node


def test_docstring_examples_hold() -> None:
    result = doctest.testmod(streams.decode)
    assert result.attempted >= 4
    assert result.failed == 0


@pytest.mark.parametrize("event_time, expected_ms", [
    (1735689600000, 1735689600000),
    ("2025-01-01T00:00:00Z", 1735689600000),
    ("2025-01-01T00:00:00+00:00", 1735689600000),
    ("2025-01-01T01:00:00+01:00", 1735689600000),
    ("2024-12-31T19:00:00-05:00", 1735689600000),
    ("2025-01-01T00:00:00.250Z", 1735689600250),
    ("2025-01-01 00:00:00Z", 1735689600000),
])
def test_event_time_as_epoch_ms_or_iso_with_zone(event_time: object, expected_ms: int) -> None:
    result = decode(wire(event_time=event_time))
    assert isinstance(result, Touchpoint)
    assert result.event_time_ms == expected_ms


def test_every_optional_field() -> None:
    raw = wire(v=1, item="fiber_1g", value=540, attributes={"store": "Lyon-3", "tags": [1, 2.5, None]},
               event_id="pos-1")
    assert decode(raw) == Touchpoint("c0000001", 1735689600000, "web", "page_view", "fiber_1g", 540.0,
                                     {"store": "Lyon-3", "tags": [1, 2.5, None]}, "pos-1")


def test_nulls_absent_version_and_unknown_fields_are_fine() -> None:
    result = decode(wire(item=None, value=None, attributes=None, event_id=None, extra={"x": 1}))
    assert result == Touchpoint("c0000001", 1735689600000, "web", "page_view")


def test_unknown_channel_and_event_type_are_accepted_and_reported() -> None:
    result = decode(wire(channel="kiosk", event_type="coupon_scan"))
    assert isinstance(result, Touchpoint)
    assert unknown_fields(result) == ("channel", "event_type")
    assert unknown_fields(decode(wire())) == ()


def test_deepest_accepted_attributes() -> None:
    assert isinstance(decode(wire(attributes=nested(MAX_ATTRIBUTE_DEPTH))), Touchpoint)


BAD = [
    (b"x" * (MAX_PAYLOAD_BYTES + 1), f"payload: expected at most {MAX_PAYLOAD_BYTES} bytes; got {MAX_PAYLOAD_BYTES + 1}"),
    (b"hello", "payload: expected JSON; got 'hello'"),
    (b'{"customer_id": "c1"', "payload: expected JSON; got"),
    (b"\xff\xfe{}", "payload: expected JSON"),
    (b"[1, 2]", "payload: expected a JSON object; got list"),
    (b"null", "payload: expected a JSON object; got NoneType"),
    (wire(customer_id=...), "customer_id: expected a string of 1 to 256 characters; got nothing"),
    (wire(customer_id=123), "customer_id: expected a string of 1 to 256 characters; got int 123"),
    (wire(customer_id="c" * 257), "customer_id: expected a string of 1 to 256 characters; got str"),
    (wire(channel=""), "channel: expected a string of 1 to 256 characters; got str ''"),
    (wire(event_type=...), "event_type: expected a string of 1 to 256 characters; got nothing"),
    (wire(event_time=...), "event_time: expected epoch ms or ISO-8601 with zone; got nothing"),
    (wire(event_time=1735689600000.5), "event_time: expected epoch ms or ISO-8601 with zone; got float"),
    (wire(event_time=True), "event_time: expected epoch ms or ISO-8601 with zone; got bool True"),
    (wire(event_time="2025-01-01T00:00:00"),
     "event_time: expected epoch ms or ISO-8601 with zone; got '2025-01-01T00:00:00' (no zone)"),
    (wire(event_time="yesterday"), "event_time: expected epoch ms or ISO-8601 with zone; got 'yesterday'"),
    (wire(event_time=1735689600), "event_time: expected a time from 2000 to 2100; got 1735689600 (seconds, not ms?)"),
    (wire(event_time=-5), "event_time: expected a time from 2000 to 2100; got -5"),
    (wire(event_time=4102444800000), "event_time: expected a time from 2000 to 2100; got 4102444800000"),
    (wire(event_time="1999-12-31T23:59:59Z"), "event_time: expected a time from 2000 to 2100"),
    (wire(item=7), "item: expected a string of 1 to 256 characters or null; got int 7"),
    (wire(event_id=""), "event_id: expected a string of 1 to 256 characters or null; got str ''"),
    (wire(value="12"), "value: expected a finite number or null; got '12'"),
    (wire(value=False), "value: expected a finite number or null; got False"),
    (wire(value=...) [:-1] + b',"value":1e400}', "payload: expected JSON"),
    (wire(attributes=[1]), "attributes: expected an object or null; got list"),
    (wire(attributes=nested(MAX_ATTRIBUTE_DEPTH + 1)),
     f"attributes: expected at most {MAX_ATTRIBUTE_DEPTH} levels of nesting; got more"),
    (wire(attributes={"a": [[[[1]]]]}), f"attributes: expected at most {MAX_ATTRIBUTE_DEPTH} levels"),
    (wire(v=2), "v: expected 1; got 2"),
    (wire(v="1"), "v: expected 1; got '1'"),
]


@pytest.mark.parametrize("raw, reason", BAD, ids=[reason.split(";")[0][:50] for _, reason in BAD])
def test_each_bad_form_is_rejected_with_its_reason(raw: bytes, reason: str) -> None:
    result = decode(raw, topic="in", partition=3, offset=42)
    assert isinstance(result, Rejected)
    assert result.reason.startswith(reason), result.reason
    assert (result.raw, result.topic, result.partition, result.offset) == (raw, "in", 3, 42)
    assert result.field == reason.split(":")[0]


def test_non_finite_numbers_from_other_sources_are_rejected() -> None:
    assert from_document({**BASE, "value": float("inf")}) == "value: expected a finite number or null; got inf"
    assert from_document({**BASE, "attributes": {"x": float("nan")}}) == "attributes: expected finite numbers; got nan"


names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40)
json_leaves = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False,
                                                                                    allow_infinity=False) | names
attribute_values = st.recursive(json_leaves, lambda inner: st.lists(inner, max_size=3)
                                | st.dictionaries(names, inner, max_size=3), max_leaves=8)
touchpoints = st.builds(
    Touchpoint,
    customer_id=names,
    event_time_ms=st.integers(streams.decode.MIN_EVENT_TIME_MS, streams.decode.MAX_EVENT_TIME_MS - 1),
    channel=names,
    event_type=names,
    item=st.none() | names,
    value=st.none() | st.floats(allow_nan=False, allow_infinity=False),
    attributes=st.none() | st.dictionaries(names, attribute_values, max_size=3),
    event_id=st.none() | names,
)


def _depth(node: object) -> int:
    if isinstance(node, dict):
        return 1 + max((_depth(v) for v in node.values()), default=0)
    if isinstance(node, list):
        return 1 + max((_depth(v) for v in node), default=0)
    return 0


@given(touchpoints)
def test_wire_form_round_trips_and_matches_the_schema(tp: Touchpoint) -> None:
    raw = tp.to_wire()
    result = decode(raw)
    if tp.attributes is not None and _depth(tp.attributes) > MAX_ATTRIBUTE_DEPTH:
        assert isinstance(result, Rejected)
        with pytest.raises(jsonschema.ValidationError):
            VALIDATOR.validate(orjson.loads(raw))
    else:
        assert result == tp
        VALIDATOR.validate(orjson.loads(raw))


@given(st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30),
                    timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=5, minutes=30)),
                                               timezone(timedelta(hours=-8))])))
def test_any_iso_time_with_zone_means_the_same_instant_as_epoch_ms(moment: datetime) -> None:
    result = decode(wire(event_time=moment.isoformat()))
    expected = (moment - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(milliseconds=1)
    assert isinstance(result, Touchpoint)
    assert result.event_time_ms == expected
    VALIDATOR.validate({**BASE, "event_time": moment.isoformat()})


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    assert isinstance(decode(raw), Touchpoint | Rejected)


@given(st.dictionaries(st.sampled_from([*BASE, "v", "item", "value", "attributes", "event_id"]), attribute_values))
def test_arbitrary_documents_never_raise_and_rejections_name_a_field(doc: dict) -> None:
    result = decode(orjson.dumps(doc))
    assert isinstance(result, Touchpoint | Rejected)
    if isinstance(result, Rejected):
        assert result.field in {*BASE, "v", "item", "value", "attributes", "event_id", "payload"}


def test_schema_examples_decode_and_validate() -> None:
    for example in SCHEMA["examples"]:
        VALIDATOR.validate(example)
        assert isinstance(decode(orjson.dumps(example)), Touchpoint)


def test_schema_rejects_what_the_decoder_rejects() -> None:
    for bad in ({**BASE, "event_time": "2025-01-01T00:00:00"}, {**BASE, "event_time": 1735689600},
                {k: v for k, v in BASE.items() if k != "channel"}, {**BASE, "attributes": nested(5)}):
        assert isinstance(decode(orjson.dumps(bad)), Rejected)
        with pytest.raises(jsonschema.ValidationError):
            VALIDATOR.validate(bad)
