"""Declarative mappings, field restrictions, the depth check and text fitting helpers."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.normalize.limits import check_depth, clip, fit_name, json_depth_at_most
from gateway.normalize.mapping import Mapping, compile_path, get
from gateway.normalize.restrictions import check
from gateway.normalize.schema import Schema

RECORD: dict[str, Any] = {
    "data": {"user_name": "", "user_id": "auth0|1", "type": "s", "n": 0, "flag": False},
    "target": [{"id": "t1", "alternateId": "alice"}, {"id": "t2"}],
    "a.b": {"c": "dotted key"},
    "empty": {},
}


def test_dotted_paths_and_list_indexes() -> None:
    m = Mapping({"action": "data.type", "target": "target.1.id", "actor": "target.0.alternateId"})
    assert m.apply(RECORD) == {"action": "s", "target": "t2", "actor": "alice"}


def test_fallbacks_take_the_first_non_empty_value() -> None:
    m = Mapping({"actor": ["data.user_name", "data.user_id", "data.client_name"]})
    assert m.apply(RECORD) == {"actor": "auth0|1"}  # "" is skipped


def test_zero_and_false_are_values_not_empty() -> None:
    m = Mapping({"a": ["data.n", "data.type"], "b": ["data.flag", "data.type"]})
    assert m.apply(RECORD) == {"a": 0, "b": False}


def test_const_and_default() -> None:
    m = Mapping(
        {
            "status": {"const": "success"},
            "source": {"path": "data.ip", "default": "unknown"},
            "tenant_id": {"path": ["data.tenant", "data.type"], "default": "x"},
            "old": {"path": "empty"},
        }
    )
    assert m.apply(RECORD) == {"status": "success", "source": "unknown", "tenant_id": "s"}
    assert m.fields == frozenset({"status", "source", "tenant_id", "old"})


def test_missing_paths_leave_the_field_absent() -> None:
    m = Mapping({"actor": "nope.deeper", "target": "target.9.id", "action": "data.type.x", "x": "target.first"})
    assert m.apply(RECORD) == {}
    assert m.apply("not a dict") == {}


def test_escaped_dots_and_whole_record() -> None:
    m = Mapping({"message": "a\\.b.c", "new": "$"})
    out = m.apply(RECORD)
    assert out["message"] == "dotted key"
    assert out["new"] is RECORD


def test_mapped_values_are_coerced_by_the_schema() -> None:
    out = Schema.standard().normalize(Mapping({"message": "data", "actor": "data.n"}).apply(RECORD))
    assert out["actor"] == "0"
    assert out["message"].startswith('{"flag":false,')


@pytest.mark.parametrize(
    "spec",
    [
        {"actor": ""},
        {"actor": []},
        {"actor": [1]},
        {"actor": 5},
        {"actor": {"const": 1, "path": "x"}},
        {"actor": {"default": 1}},
        {"actor": "a..b"},
        {"": "a"},
    ],
)
def test_bad_specs_raise_value_error_naming_the_field(spec: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"map"):
        Mapping(spec)


def test_a_compiled_path_reads_nested_keys_and_negative_list_indexes() -> None:
    assert get(RECORD, compile_path("target.-1.id")) == "t2"
    assert get(RECORD, compile_path("data.user_id")) == "auth0|1"


# -- restrictions -----------------------------------------------------------------------------


def test_restrictions_report_forbidden_and_missing_values() -> None:
    event = {"message": "m", "tenant_id": "evil", "status": "success"}
    errors = check(event, {"tenant_id": ["acme", "globex"], "status": ["success"], "actor": ["svc"]})
    assert [(e["code"], e["source"]) for e in errors] == [
        ("ForbiddenFieldValue", "/tenant_id"),
        ("ForbiddenFieldValue", "/actor"),
    ]
    assert check(event, {"tenant_id": ["evil"]}) == []


def test_restrictions_compare_non_strings_by_their_json_text() -> None:
    assert check({"ok": True, "n": 3}, {"ok": ["true"], "n": ["3"]}) == []
    assert len(check({"obj": {"a": 1}}, {"obj": ['{"a":1}']})) == 1
    assert len(check({"x": "a"}, {"x": []})) == 1


# -- limits -----------------------------------------------------------------------------------


def nest(depth: int) -> Any:
    obj: Any = 1
    for _ in range(depth):
        obj = [obj]
    return obj


def test_depth_counts_containers() -> None:
    assert check_depth(1, 0)
    assert check_depth({}, 1)
    assert not check_depth({}, 0)
    assert check_depth({"a": [1]}, 2)
    assert not check_depth({"a": [1]}, 1)
    assert not check_depth({"a": 1, "b": {"c": []}}, 2)  # an empty container still counts
    assert check_depth(nest(64), 64)
    assert not check_depth(nest(65), 64)


_TRICKY_TEXT = st.text(alphabet='ab[]{}"\\\n\u00e9', max_size=6)
_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1), _TRICKY_TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_TRICKY_TEXT, inner, max_size=3)),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(_JSON, st.integers(min_value=0, max_value=8), st.booleans())
def test_depth_of_raw_json_agrees_with_the_walk_when_it_answers(value: Any, limit: int, lines: bool) -> None:
    """The byte-level check (issue 18) answers as check_depth on the decoded value, or None."""
    docs = [value, [value]] if lines else [value]  # JSON lines: the deepest line counts
    raw = b"\n".join(map(orjson.dumps, docs))
    quick = json_depth_at_most(raw, limit)
    if quick is not None:
        assert quick == all(check_depth(d, limit) for d in docs), raw


def test_depth_of_raw_json_answers_for_plain_bodies_and_steps_aside_for_brackets_in_strings() -> None:
    assert json_depth_at_most(b'[{"a":"x","b":{"c":[1,2]},"d":"e f"}]', 4) is True
    assert json_depth_at_most(b'[{"a":"x","d":"e\\\\f"}]', 4) is None
    assert json_depth_at_most(b'[{"a":"x","b":{"c":[1,2]}}]', 3) is False
    assert json_depth_at_most(orjson.dumps(nest(65)), 64) is False
    assert json_depth_at_most(b'{"a":"[["}', 1) is None
    assert json_depth_at_most(b'{"a":"x\\"y"}', 1) is None
    # Brackets in strings that, counted as containers, would make a body 6 deep look 4 deep;
    # strings with nothing in them next to one holding a bracket (a run of 3 quotes).
    assert json_depth_at_most(orjson.dumps([[["]]", [[["x"]]], "[["]]]), 5) is None
    assert json_depth_at_most(b'{"":"","":"]","a":[]}', 1) is None
    assert json_depth_at_most(b'{"":"","a":[""]}', 2) is True


def test_depth_check_is_iterative_on_very_deep_input() -> None:
    deep = nest(100_000)
    assert not check_depth(deep, 64)
    assert check_depth(deep, 100_000)


def test_clip_and_fit_name() -> None:
    assert clip("abc", 3) == "abc"
    assert clip("abcdef", 5) == "ab..."
    assert clip("abcdef", 2) == "ab"
    assert fit_name("user.authentication.auth_via_mfa", 32) == "user.authentication.auth_via_mfa"
    assert fit_name("repository_vulnerability_alert.dismiss", 32) == "repository_vulnerabilit~.dismiss"
    assert fit_name("protected_branch.rejected_ref_update", 32) == "protected_b~.rejected_ref_update"
    assert fit_name("x" * 40, 32) == "x" * 31 + "~"
    assert fit_name("a." + "y" * 40, 32) == ("a." + "y" * 40)[:31] + "~"
    for n in range(0, 40):
        assert len(fit_name("organization.member_invited.extra_long_part", n)) <= n
