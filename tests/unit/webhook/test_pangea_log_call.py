"""The compiled ``/v2/log`` path (:meth:`FastPath.log_call`) agrees with the full path, or steps aside.

The full path is what ``PangeaApi`` does with a body otherwise: ``_parse`` (JSON, depth, the
members allowed), ``_events`` (a non-empty array within the cap, each an object with an
``event`` object and nothing but ``signature``/``public_key`` beside it), then each event
through :meth:`Schema.normalize` and ``encode_item``.  For any body, the compiled path must
either answer ``None`` or give the same items (equal JSON), ``verbose`` and ``config_id`` as
the full path would admit with no error; and it must take the plain valid call (else it is no fast path).
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import ValidationFailed
from gateway.event import encode_item
from gateway.normalize.config import SchemaFieldConfig
from gateway.normalize.fastpath import LOG_CALL_DEPTH
from gateway.normalize.limits import check_depth
from gateway.normalize.schema import EventInvalid, Schema
from gateway.sources.webhook.config import WebhookSourceConfig
from gateway.sources.webhook.pangea_api import _V2_KEYS, PangeaApi

STANDARD = Schema.standard()
CUSTOM = Schema.from_fields(
    [
        SchemaFieldConfig(id="message", type="text", required=True, size=64),
        SchemaFieldConfig(id="count", type="integer"),
        SchemaFieldConfig(id="ok", type="boolean"),
        SchemaFieldConfig(id="at", type="datetime", required=True),
        SchemaFieldConfig(id="class", type="string", size=8),
    ]
)
CAP = 5


def _api() -> PangeaApi:
    config = WebhookSourceConfig.model_validate(
        {"type": "webhook", "format": "pangea", "destination": "default", "max_events_per_request": CAP}
    )
    # Only the parsing helpers are used: they read the source's config, nothing else.
    return PangeaApi("sdk", config, None, {})  # type: ignore[arg-type]


API = _api()


def full_path(schema: Schema, raw: bytes) -> tuple[list[bytes], bool, Any, Any] | None:
    """What the full path admits of ``raw`` when it admits every event and words no error."""
    try:
        body = API._parse(raw, _V2_KEYS)
        candidates = API._events(body)
    except ValidationFailed:
        return None
    items = []
    for cand in candidates:
        if cand.fields is None or cand.extras:
            return None  # refused, or signed by the client: not the plain call
        try:
            items.append(encode_item(schema.normalize(cand.fields)))
        except EventInvalid:
            return None
    return items, bool(body.get("verbose")), body.get("config_id"), body.get("prev_root")


def agree(schema: Schema, raw: bytes) -> Any:
    fast = schema.fast_path().log_call(raw, CAP)
    if fast is not None:
        slow = full_path(schema, raw)
        assert slow is not None, f"compiled path accepted what the full path refuses: {raw!r}"
        # The same events (members in the schema's order, not the body's: the upstream reads
        # them alike), as the Kafka fast path's test holds its items to.
        assert list(map(orjson.loads, fast.items)) == list(map(orjson.loads, slow[0])), raw
        assert (fast.verbose, fast.config_id, fast.prev_root) == slow[1:], raw
    return fast


EVENT = b'{"message":"m","actor":"a","timestamp":"2026-11-22T03:04:05.123Z"}'


@pytest.mark.parametrize(
    "raw",
    [
        b'{"events":[{"event":' + EVENT + b"}]}",
        b'{"events":[{"event":' + EVENT + b'},{"event":{"message":"n","actor":null}}],"verbose":true}',
        b'{"config_id":"pci_x","events":[{"event":' + EVENT + b'}],"verbose":false,"prev_root":"r"}',
        b'{"events":[{"event":{"message":"caf\\u00e9","timestamp":"2026-11-22 03:04:05.1+02:00"}}],"verbose":null}',
    ],
)
def test_plain_valid_calls_take_the_compiled_path_with_the_full_paths_items(raw: bytes) -> None:
    assert agree(STANDARD, raw) is not None


@pytest.mark.parametrize(
    "raw",
    [
        b'{"events":[]}',
        b'{"events":[' + b",".join([b'{"event":' + EVENT + b"}"] * (CAP + 1)) + b"]}",
        b'{"events":[{"event":' + EVENT + b',"signature":"s","public_key":"k"}]}',  # client-signed
        b'{"events":[{"event":' + EVENT + b',"x":1}]}',  # unknown item member
        b'{"events":[' + EVENT + b"]}",  # no event wrapper
        b'{"events":[{"event":' + EVENT + b'}],"x":1}',  # unknown body member
        b'{"events":[{"event":' + EVENT + b'}],"verbose":1}',  # truthy, not a boolean
        b'{"events":[{"event":' + EVENT + b'}],"config_id":7}',
        b'{"events":[{"event":{"message":"m","actor":42}}]}',  # coerced by the full path
        b'{"events":[{"event":{"message":"m","colour":"red"}}]}',  # unknown field
        b'{"events":[{"event":{"actor":"a"}}]}',  # message missing
        b'{"events":[{"event":{"message":"m\\ud800"}}]}',  # lone surrogate
        b'{"events":[{"event":' + EVENT + b"}]",  # truncated
        b'[{"event":' + EVENT + b"}]",
        b"",
    ],
)
def test_bodies_needing_more_than_validation_leave_the_compiled_path(raw: bytes) -> None:
    assert agree(STANDARD, raw) is None


def test_the_plain_call_nests_exactly_as_deep_as_the_compiled_path_says() -> None:
    """PangeaApi sends bodies to the full path when its depth limit is below LOG_CALL_DEPTH."""
    body = orjson.loads(b'{"events":[{"event":' + EVENT + b'}],"verbose":true}')
    assert check_depth(body, LOG_CALL_DEPTH)
    assert not check_depth(body, LOG_CALL_DEPTH - 1)


# -- generated: the two paths never disagree -----------------------------------------------

_datetimes = st.sampled_from(
    ["2024-06-11T08:15:12Z", "2024-06-11T08:15:12.345Z", "2024-06-11 08:15:12.123456789Z", "2024-02-30T08:15:12Z",
     "2024-06-11", "1718093712"]
)  # fmt: skip
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.text(alphabet="ab", min_size=30, max_size=70),
    st.text(alphabet=st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010), max_size=2),
    _datetimes,
)
_values = st.one_of(
    _scalars, st.lists(_scalars, max_size=2), st.dictionaries(st.text(max_size=3), _scalars, max_size=1)
)
_keys = st.sampled_from(["message", "actor", "action", "status", "timestamp", "count", "ok", "at", "class", "colour"])


def _js(v: Any) -> str:
    return json.dumps(v)


_VALID_DATETIMES = st.sampled_from(["2024-06-11T08:15:12Z", "2024-06-11T08:15:12.345Z", "2024-06-11 08:15:12.5+02:00"])


def _valid(f: SchemaFieldConfig) -> st.SearchStrategy[Any]:
    """Values the field takes as they are."""
    if f.type == "datetime":
        return _VALID_DATETIMES
    if f.type == "integer":
        return st.integers(min_value=-(2**63), max_value=2**63 - 1)
    if f.type == "boolean":
        return st.booleans()
    return st.text(max_size=f.size or 40)


def _fitting(f: SchemaFieldConfig) -> st.SearchStrategy[Any]:
    """Values that mostly fit the field, some that do not."""
    if f.type == "datetime":
        return _datetimes
    if f.type == "integer":
        return st.one_of(st.integers(), st.floats())
    if f.type == "boolean":
        return st.one_of(st.booleans(), st.just("true"))
    return st.text(max_size=(f.size or 40) + 2)


@st.composite
def _event(draw: st.DrawFn, schema: Schema, plain: bool) -> str:
    if plain:  # every member valid as it is: the call the compiled path is for
        fields = draw(st.lists(st.sampled_from(schema.fields), max_size=6, unique_by=lambda f: f.id))
        required = [f for f in schema.fields if f.required and f not in fields]
        members = [(f.id, draw(_valid(f))) for f in [*required, *fields]]
        return "{" + ",".join(f"{_js(k)}:{_js(v)}" for k, v in members) + "}"
    fitting = st.sampled_from(schema.fields).flatmap(lambda f: st.tuples(st.just(f.id), _fitting(f)))
    members = draw(st.lists(st.one_of(fitting, fitting, fitting, st.tuples(_keys, _values)), max_size=6))
    if draw(st.booleans()):
        members.insert(0, ("message", draw(st.text(max_size=8))))
    return "{" + ",".join(f"{_js(k)}:{_js(v)}" for k, v in members) + "}"


@st.composite
def _body(draw: st.DrawFn, schema: Schema) -> bytes:
    plain = draw(st.booleans())
    items = []
    for _ in range(draw(st.integers(min_value=1 if plain else 0, max_value=CAP if plain else CAP + 1))):
        ev = draw(_event(schema, plain and draw(st.integers(min_value=0, max_value=20)) > 0))
        shapes = ["item"] * 20 + ["signed", "extra", "bare", "scalar"]
        shape = "item" if plain else draw(st.sampled_from(shapes))
        items.append(
            {
                "item": '{"event":' + ev + "}",
                "signed": '{"event":' + ev + ',"signature":"s"}',
                "extra": '{"event":' + ev + ',"x":1}',
                "bare": ev,
                "scalar": "3",
            }[shape]
        )
    members = [f'"events":[{",".join(items)}]']
    for key, values in (
        ("verbose", st.one_of(st.booleans(), st.none(), _scalars)),
        ("config_id", st.one_of(st.text(max_size=6), st.none(), _scalars)),
        ("prev_root", st.one_of(st.text(max_size=6), _scalars)),
        ("other", _scalars),
    ):
        if draw(st.integers(min_value=0, max_value=3)) == 0:
            members.insert(draw(st.integers(min_value=0, max_value=len(members))), f"{_js(key)}:{_js(draw(values))}")
    return ("{" + ",".join(members) + "}").encode("utf-8", "surrogatepass")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_generated_bodies_the_compiled_path_takes_are_admitted_alike(data: st.DataObject) -> None:
    schema = data.draw(st.sampled_from([STANDARD, CUSTOM]))
    agree(schema, data.draw(_body(schema)))
