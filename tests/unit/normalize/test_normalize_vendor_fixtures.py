"""Every vendor sample in tests/fixtures/vendors decodes, maps, and passes the standard schema."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.normalize.schema import Schema
from gateway.normalize.vendors import VENDORS, DecodeError, auth0, github, okta, splunk_hec
from tests.support.procs import REPO, VENDOR_FIXTURES

FIXTURES = VENDOR_FIXTURES
STANDARD = Schema.standard()


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def mapped(
    vendor: str, body: bytes, content_type: str | None = "application/json"
) -> list[tuple[dict[str, Any], str | None]]:
    v = VENDORS[vendor]
    out = []
    for record in v.decode(body, content_type):
        fields, dedup = v.to_event(record)
        out.append((STANDARD.normalize(fields), dedup))
    return out


def github_record(n: int) -> dict[str, Any]:
    [body_path] = FIXTURES.glob(f"github_delivery{n}_*_body.json")
    headers = json.loads(body_path.with_name(body_path.name.replace("_body", "_headers")).read_text())["headers"]
    [payload] = github.decode(body_path.read_bytes(), headers["Content-Type"])
    return {"event": headers["X-GitHub-Event"], "delivery": headers["X-GitHub-Delivery"], "payload": payload}


def test_fixture_directory_is_inside_the_repository() -> None:
    assert (FIXTURES / "README.md").is_file()
    assert FIXTURES.resolve().is_relative_to(REPO.resolve())


def test_every_body_fixture_passes_the_standard_schema() -> None:
    bodies = {
        "auth0_batch1_jsonarray.json": ("auth0", 5),
        "auth0_batch2_jsonobject.json": ("auth0", 4),
        "auth0_batch3_jsonlines.jsonl": ("auth0", 6),
        "okta_eventhook_post1.json": ("okta", 3),
        "okta_eventhook_post2.json": ("okta", 3),
        "splunk_hec_event_single.json": ("splunk_hec", 1),
        "splunk_hec_batch_concatenated.txt": ("splunk_hec", 7),
    }
    for name, (vendor, count) in bodies.items():
        events = mapped(vendor, load(name))
        assert len(events) == count, name
        for event, _ in events:
            assert event["message"], name
    for n in (1, 2, 3):
        event, delivery = github.to_event(github_record(n))
        assert STANDARD.normalize(event)["message"]
        assert delivery
    raw = [
        STANDARD.normalize(splunk_hec.to_event(r)[0]) for r in splunk_hec.decode_raw(load("splunk_hec_raw_body.txt"))
    ]
    assert len(raw) == 3


# -- Auth0 ------------------------------------------------------------------------------------


def test_auth0_json_array_maps_login_success_to_user_app_and_ip() -> None:
    events = mapped("auth0", load("auth0_batch1_jsonarray.json"))
    event, log_id = events[0]
    assert log_id == "90020240611081512345600000000000000001223372036854775807"
    assert event["actor"] == "maria.lopez@acme.example"
    assert event["action"] == "s"
    assert event["status"] == "success"
    assert event["target"] == "Acme Portal"
    assert event["source"] == "203.0.113.24"
    assert event["timestamp"] == "2024-06-11T08:15:12.345000Z"
    assert event["message"] == "Success Login"  # no description: the event code's name
    assert json.loads(event["new"])["session_id"] == "hZ3k9Qw2LmP0xY7tR5vB1nC8"


def test_auth0_failure_without_user_keeps_description_and_has_no_actor() -> None:
    event, _ = mapped("auth0", load("auth0_batch1_jsonarray.json"))[1]
    assert event["action"] == "f"
    assert event["status"] == "failure"
    assert "actor" not in event
    assert event["message"].startswith("Callback URL mismatch.")
    assert event["target"] == "acme-prod.us.auth0.com"


def test_auth0_codes_map_to_status() -> None:
    statuses = [e["status"] for e, _ in mapped("auth0", load("auth0_batch1_jsonarray.json"))]
    assert statuses == ["success", "failure", "failure", "success", "success"]  # s f fp seacft slo
    statuses = [e["status"] for e, _ in mapped("auth0", load("auth0_batch3_jsonlines.jsonl"))]
    assert statuses == ["success", "failure", "failure", "failure", "warning", "failure"]  # ss fs fu feacft w fsa


def test_auth0_empty_description_falls_back_to_event_name() -> None:
    event, _ = mapped("auth0", load("auth0_batch1_jsonarray.json"))[4]
    assert event["action"] == "slo"
    assert event["message"] == "Success Logout"


def test_auth0_logs_object_maps_management_api_events() -> None:
    events = mapped("auth0", load("auth0_batch2_jsonobject.json"))
    sapi, fapi, limit_wc, du = (e for e, _ in events)
    assert sapi["actor"] == "google-oauth2|104857600000000000001"  # client_name is "": skipped
    assert sapi["target"] == "/api/v2/clients"
    assert sapi["message"] == "Create a client"
    assert json.loads(sapi["new"])["response"]["statusCode"] == 201
    assert fapi["actor"] == "Billing Worker"
    assert fapi["status"] == "failure"
    assert limit_wc["status"] == "failure"
    assert limit_wc["source"] == "2001:db8:85a3::8a2e:370:7334"
    assert du["actor"] == "old.contractor@acme.example"
    assert du["target"] == "Username-Password-Authentication"


def test_auth0_json_lines_skip_empty_user_id() -> None:
    events = [e for e, _ in mapped("auth0", load("auth0_batch3_jsonlines.jsonl"))]
    assert events[2]["actor"] == "admin"  # fu: user_id "" is skipped for user_name
    assert events[3]["actor"] == "Acme Portal"  # feacft: no user at all, the application
    assert events[3]["target"] == "acme-prod.us.auth0.com"  # not the actor again
    assert events[4]["actor"] == "kQ3xV8pL2sN5rT9wY1zA4bC6dE8fG0hJ"  # w: only a client_id
    # details {} is not worth sending; the vendor's event id is, always.
    assert json.loads(events[4]["new"]) == {"log_id": "90020240612101414555500000000000000001223372036854775820"}
    assert events[5]["target"] == "https://api.acme.example"  # fsa: the audience


def test_auth0_dedup_ids_are_log_ids() -> None:
    ids = [d for _, d in mapped("auth0", load("auth0_batch3_jsonlines.jsonl"))]
    assert ids[0] == "90020240612101010101000000000000000001223372036854775816"
    assert len(set(ids)) == 6


# -- Okta -------------------------------------------------------------------------------------


def test_okta_event_hook_maps_actor_outcome_and_ip() -> None:
    events = mapped("okta", load("okta_eventhook_post1.json"))
    (failure, uuid), (challenge, _), (success, _) = events
    assert uuid == "6c1b4a2e-27f1-11ef-9a1b-2b7f3c4d5e6f"
    assert failure["actor"] == "maria.lopez@acme.example"
    assert failure["action"] == "user.session.start"
    assert failure["status"] == "failure"
    assert failure["source"] == "198.51.100.77"
    assert failure["timestamp"] == "2024-06-11T08:20:01.123000Z"
    assert failure["message"] == "User login to Okta"
    assert "target" not in failure  # target: null
    assert challenge["status"] == "challenge"
    assert challenge["target"] == "Default Policy, 00p1abvweGGDW10Ur4x6"  # alternateId "unknown" -> displayName
    assert success["status"] == "success"


def test_okta_32_character_event_type_fits_action_whole() -> None:
    events = mapped("okta", load("okta_eventhook_post2.json"))
    mfa, _ = events[2]
    assert len("user.authentication.auth_via_mfa") == 32
    assert mfa["action"] == "user.authentication.auth_via_mfa"
    assert mfa["status"] == "failure"


def test_okta_several_targets_are_joined_and_kept_in_full_in_new() -> None:
    group_add, _ = mapped("okta", load("okta_eventhook_post2.json"))[1]
    assert group_add["actor"] == "it.admin@acme.example"
    assert group_add["target"] == "new.hire@acme.example, Super Admins"
    detail = json.loads(group_add["new"])
    assert [t["type"] for t in detail["target"]] == ["User", "UserGroup"]
    assert detail["eventType"] == "group.user_membership.add"


# -- GitHub -----------------------------------------------------------------------------------


def test_github_repository_privatized_maps_per_readme() -> None:
    event, delivery = github.to_event(github_record(2))
    event = STANDARD.normalize(event)
    assert delivery == "1c6e7b81-27f6-11ef-8e4a-3c1d7e2f9a01"
    assert event["actor"] == "Codertocat"
    assert event["action"] == "repository.privatized"
    assert event["target"] == "Octocoders/Hello-World"
    assert event["tenant_id"] == "Octocoders"
    assert "timestamp" not in event  # the upstream stamps received_at


def test_github_member_invited_targets_the_invitee() -> None:
    event, delivery = github.to_event(github_record(3))
    event = STANDARD.normalize(event)
    assert delivery == "2d7f8c92-27f6-11ef-8e4a-3c1d7e2f9a01"
    assert event["action"] == "organization.member_invited"
    assert event["actor"] == "Codertocat"
    assert event["target"] == "hacktocat"
    assert event["tenant_id"] == "Octocoders"
    assert json.loads(event["new"])["invitation"]["role"] == "direct_member"


def test_github_ping_is_recognized() -> None:
    record = github_record(1)
    assert github.is_ping(record["event"])
    assert not github.is_ping("repository")


# -- Splunk HEC -------------------------------------------------------------------------------


def test_hec_concatenated_batch_gives_seven_events() -> None:
    events = mapped("splunk_hec", load("splunk_hec_batch_concatenated.txt"))
    assert len(events) == 7
    repo_create, api_request, rejected, streaming, plain, glued1, glued2 = events
    assert repo_create[1] == "Nm4EoecTsz6kAS-87bAEfA"
    assert repo_create[0]["actor"] == "maria-lopez"
    assert repo_create[0]["action"] == "repo.create"
    assert repo_create[0]["target"] == "acme-eng/payments-service"
    assert repo_create[0]["tenant_id"] == "acme-eng"
    assert repo_create[0]["timestamp"] == "2024-06-11T11:21:03.961000Z"  # @timestamp, milliseconds
    assert api_request[0]["status"] == "200"
    assert api_request[0]["source"] == "github.com"  # the envelope's host
    assert rejected[0]["action"] == "protected_b~.rejected_ref_update"  # 37 characters, cut to 32
    assert "protected_branch.rejected_ref_update" in rejected[0]["message"]
    assert streaming[0]["target"] == "acme-corp"  # no repo or org: the business
    assert plain == (
        {"message": "plain string event from a generic HEC client", "timestamp": "2024-06-11T11:21:30.500000Z"},
        None,
    )
    assert json.loads(glued1[0]["message"]) == {"message": "first glued object", "level": "INFO"}
    assert glued2[0]["timestamp"] == "2024-06-11T11:21:32.000000Z"


def test_hec_single_event_uses_envelope_host_as_source() -> None:
    [(event, dedup)] = mapped("splunk_hec", load("splunk_hec_event_single.json"))
    assert dedup == "Nm4EoecTsz6kAS-87bAEfA"
    assert event["source"] == "github.com"
    assert json.loads(event["new"])["visibility"] == "internal"


def test_hec_raw_body_gives_one_event_per_line() -> None:
    lines = splunk_hec.decode_raw(load("splunk_hec_raw_body.txt"))
    assert len(lines) == 3
    event, dedup = splunk_hec.to_event(lines[2])
    assert dedup is None
    assert event == {"message": lines[2]}
    assert event["message"].startswith("2024-06-11T11:21:09Z sudo: maria")


def test_okta_verification_request_is_not_an_event_body() -> None:
    # The verification is a GET without a body: the route answers it; an empty body is refused.
    with pytest.raises(DecodeError):
        okta.decode(b"")
    with pytest.raises(DecodeError):
        auth0.decode(b"  \n")
