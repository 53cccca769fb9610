"""Per-event results of a ``/v2/log`` answer, kept as the upstream wrote them (issue 18).

The sink hands each event's result on as its JSON text (``msgspec.Raw``) unless some result
carries an ``envelope`` (then as dicts, so an answer can leave the envelope out); the SDK
routes splice raw results into their answer.  Both must say exactly what the parsed results say.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import msgspec
import orjson
import pytest

from gateway.sinks.pangea.request_builder import parse_answer
from gateway.sources.webhook.pangea_api import _bulk_result

HASH = "ab" * 32


def log_answer(results: list[Any], *, spaced: bool = False) -> bytes:
    body = {"request_id": "prq_x", "status": "Success", "summary": "Logged", "result": {"results": results}}
    if spaced:  # an upstream that does not write compact JSON
        return orjson.dumps(body, option=orjson.OPT_INDENT_2)
    return orjson.dumps(body)


def answered(results: list[Any], verbose: bool) -> Any:
    adm = SimpleNamespace(group=SimpleNamespace(results=results))
    shaped = _bulk_result(adm, verbose)  # type: ignore[arg-type]  # only .group.results is read
    return orjson.loads(orjson.dumps({"result": shaped}))["result"]


@pytest.mark.parametrize("spaced", [False, True])
def test_results_without_envelopes_are_kept_as_json_text_equal_to_the_parsed_ones(spaced: bool) -> None:
    parsed = [{"hash": HASH, "unpublished_root": "r" * 8, "n": i} for i in range(5)]
    answer = parse_answer(200, log_answer(parsed, spaced=spaced), {})
    results = answer.results(5)
    assert results is not None and all(type(r) is msgspec.Raw for r in results)
    assert [msgspec.json.decode(r) for r in results] == parsed
    # Spliced into the SDK's answer as they are: the same JSON, verbose or not.
    assert answered(results, False) == {"results": parsed}
    assert answered(results, True) == {"results": parsed}


def test_results_with_an_envelope_are_dicts_and_the_envelope_only_goes_to_a_verbose_caller() -> None:
    parsed = [{"hash": HASH, "envelope": {"event": {"message": "m"}}}, {"hash": HASH}]
    results = parse_answer(200, log_answer(parsed), {}).results(2)
    assert results == parsed
    assert answered(results, True) == {"results": parsed}
    assert answered(results, False) == {"results": [{"hash": HASH}, {"hash": HASH}]}


def test_a_request_split_over_two_batches_mixes_text_and_dict_results_and_answers_them_all() -> None:
    raw = parse_answer(200, log_answer([{"hash": "1" * 64}]), {}).results(1)
    enveloped = parse_answer(200, log_answer([{"hash": "2" * 64, "envelope": {"e": 1}}]), {}).results(1)
    assert raw is not None and enveloped is not None
    mixed = [raw[0], enveloped[0], None]  # None: a duplicate, no result of its own
    assert answered(mixed, False) == {"results": [{"hash": "1" * 64}, {"hash": "2" * 64}]}
    assert answered(mixed, True) == {"results": [{"hash": "1" * 64}, {"hash": "2" * 64, "envelope": {"e": 1}}]}


@pytest.mark.parametrize(
    "body",
    [
        log_answer([{"hash": HASH}]),  # one result for two events
        log_answer([{"hash": HASH}, "not an object"]),
        log_answer([["{"], {"hash": HASH}]),  # an array whose text holds a "{" of its own
        log_answer([{"hash": HASH}, 7], spaced=True),
        b'{"status":"Success","result":{}}',
        b"<html>proxy error</html>",
    ],
)
def test_an_answer_without_one_result_object_per_event_gives_no_results(body: bytes) -> None:
    assert parse_answer(200, body, {}).results(2) is None
