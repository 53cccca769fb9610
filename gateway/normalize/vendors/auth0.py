"""Auth0 log streams (custom webhook): ``{log_id, data}`` records.

Bodies come in the stream's three content formats: a JSON array of records, JSON lines, or a
JSON object ``{"logs": [...]}`` (the shape Pangea's own ``/v1/log_stream`` takes).

Mapping of ``data`` (the Auth0 log event) to the standard schema:

=============  ==================================================================================
``actor``      ``user_name``, else ``user_id``, else ``client_name``, else ``client_id`` (empty
               strings skipped)
``action``     ``type``, the Auth0 event code (``s``, ``fp``, ``seacft``...); the readable name goes
               to ``message`` when there is no description
``target``     ``details.request.path`` (Management API events), else ``client_name``, else
               ``connection``, else ``audience``, else ``hostname``; a value equal to the
               actor is skipped (an application acting on its own)
``status``     from the code: ``success`` (``s*``, ``*_succeeded``, ``du``...), ``failure``
               (``f*``, ``limit_*``, ``*_failed``...), ``warning`` (``w``, ``depnote``...), else
               ``info``
``source``     ``ip``
``timestamp``  ``date``
``message``    ``description``, else the event's name (``Success Logout``), else ``Auth0 event
               <code>``: never empty
``tenant_id``  ``tenant_name`` or ``tenant`` when present
``new``        compact JSON of ``details`` (an object; anything else under ``details``) with
               ``log_id``, the vendor's event id, added (always whole, see
               :func:`~gateway.normalize.vendors.new_with_ids`)
=============  ==================================================================================

The dedup id is ``log_id`` (top level, else ``data.log_id``).
"""

from __future__ import annotations

from typing import Any, Final

from gateway.normalize.limits import clip, fit_name
from gateway.normalize.mapping import compile_paths, first, get
from gateway.normalize.vendors import new_with_ids, put_clipped, record_invalid, text_of
from gateway.normalize.vendors.json import enveloped

__all__ = ["EVENT_NAMES", "NAME", "decode", "status_of", "to_event"]

NAME = "auth0"

EVENT_NAMES: Final[dict[str, str]] = {
    "acls_summary": "Network ACLs Summary",
    "actions_execution_failed": "Actions Execution Failed",
    "api_limit": "Rate Limit on the Authentication or Management APIs",
    "api_limit_warning": "Rate Limit Warning",
    "appi": "API Peak Performance Initiated",
    "ciba_exchange_failed": "Failed CIBA Exchange",
    "ciba_exchange_succeeded": "Successful CIBA Exchange",
    "ciba_start_failed": "Failed CIBA Start",
    "ciba_start_succeeded": "Successful CIBA Start",
    "cls": "Code/Link Sent",
    "cs": "Code Sent",
    "depnote": "Deprecation Notice",
    "du": "Deleted User",
    "f": "Failed Login",
    "fapi": "Failed Management API Operation",
    "fc": "Failed by Connector",
    "fce": "Failed Change Email",
    "fco": "Failed by CORS",
    "fcoa": "Failed Cross-Origin Authentication",
    "fcp": "Failed Change Password",
    "fcph": "Failed Post Change Password Hook",
    "fcpn": "Failed Change Phone Number",
    "fcpr": "Failed Change Password Request",
    "fcpro": "Failed Connector Provisioning",
    "fcu": "Failed Change Username",
    "fd": "Failed Delegation",
    "fdeac": "Failed Device Activation",
    "fdeaz": "Failed Device Authorization Request",
    "fdecc": "User Canceled Device Confirmation",
    "fdu": "Failed User Deletion",
    "feacft": "Failed Exchange (Authorization Code for Access Token)",
    "feccft": "Failed Exchange (Client Credentials for Access Token)",
    "fede": "Failed Exchange (Device Code for Access Token)",
    "fens": "Failed Exchange (Native Social Login)",
    "feoobft": "Failed Exchange (Password and OOB Challenge for Access Token)",
    "feotpft": "Failed Exchange (Password and OTP Challenge for Access Token)",
    "fepft": "Failed Exchange (Password for Access Token)",
    "fepotpft": "Failed Exchange (Passwordless OTP for Access Token)",
    "fercft": "Failed Exchange (Password and MFA Recovery Code for Access Token)",
    "ferrt": "Failed Exchange (Rotating Refresh Token)",
    "fertft": "Failed Exchange (Refresh Token for Access Token)",
    "fi": "Failed Invite Accept",
    "flo": "Failed Logout",
    "fn": "Failed Sending Notification",
    "fp": "Failed Login (Incorrect Password)",
    "fs": "Failed Signup",
    "fsa": "Failed Silent Authentication",
    "fu": "Failed Login (Invalid Email/Username)",
    "fui": "Failed Users Import",
    "fv": "Failed Verification Email",
    "fvr": "Failed Verification Email Request",
    "gd_auth_failed": "MFA Authentication Failed",
    "gd_auth_rejected": "MFA Authentication Rejected",
    "gd_auth_succeed": "MFA Authentication Succeeded",
    "gd_enrollment_complete": "MFA Enrollment Complete",
    "gd_otp_rate_limit_exceed": "MFA OTP Rate Limit Exceeded",
    "gd_recovery_failed": "MFA Recovery Failed",
    "gd_recovery_rate_limit_exceed": "MFA Recovery Rate Limit Exceeded",
    "gd_recovery_succeed": "MFA Recovery Succeeded",
    "gd_send_pn": "MFA Push Notification Sent",
    "gd_send_sms": "MFA SMS Sent",
    "gd_start_auth": "MFA Authentication Started",
    "gd_start_enroll": "MFA Enrollment Started",
    "gd_unenroll": "MFA Device Unenrolled",
    "gd_update_device_account": "MFA Device Account Updated",
    "limit_delegation": "Too Many Calls to /delegation",
    "limit_mu": "Blocked IP Address",
    "limit_sul": "Blocked User (Too Many Logins)",
    "limit_wc": "Blocked Account (Too Many Failed Logins)",
    "mfar": "MFA Required",
    "mgmt_api_read": "Management API Read Operation",
    "oidc_backchannel_logout_failed": "Failed OIDC Back-Channel Logout",
    "oidc_backchannel_logout_succeeded": "Successful OIDC Back-Channel Logout",
    "pla": "Pre-Login Assessment",
    "pwd_leak": "Breached Password",
    "resource_cleanup": "Refresh Tokens Cleaned Up",
    "s": "Success Login",
    "sapi": "Success Management API Operation",
    "scoa": "Success Cross-Origin Authentication",
    "scp": "Success Change Password",
    "scph": "Success Post Change Password Hook",
    "scpn": "Success Change Phone Number",
    "scpr": "Success Change Password Request",
    "scu": "Success Change Username",
    "sd": "Success Delegation",
    "sdu": "Success User Deletion",
    "seacft": "Success Exchange (Authorization Code for Access Token)",
    "seccft": "Success Exchange (Client Credentials for Access Token)",
    "sede": "Success Exchange (Device Code for Access Token)",
    "sens": "Success Exchange (Native Social Login)",
    "seoobft": "Success Exchange (Password and OOB Challenge for Access Token)",
    "seotpft": "Success Exchange (Password and OTP Challenge for Access Token)",
    "sepft": "Success Exchange (Password for Access Token)",
    "sercft": "Success Exchange (Password and MFA Recovery Code for Access Token)",
    "srrt": "Success Revocation of Refresh Token",
    "sertft": "Success Exchange (Refresh Token for Access Token)",
    "si": "Successful Invite Accept",
    "slo": "Success Logout",
    "ss": "Success Signup",
    "ssa": "Success Silent Authentication",
    "sui": "Success Users Import",
    "sv": "Success Verification Email",
    "svr": "Success Verification Email Request",
    "ublkdu": "Account Unblocked",
    "w": "Warning During Login",
    "wn": "Notification",
}
"""Readable names of Auth0 log event codes (used when an event has no description)."""

_STATUS: Final[dict[str, str]] = {
    "acls_summary": "info",
    "api_limit": "failure",
    "api_limit_warning": "warning",
    "appi": "info",
    "cls": "success",
    "cs": "success",
    "depnote": "warning",
    "du": "success",
    "gd_auth_rejected": "failure",
    "gd_otp_rate_limit_exceed": "failure",
    "gd_recovery_rate_limit_exceed": "failure",
    "mfar": "info",
    "mgmt_api_read": "success",
    "pla": "info",
    "pwd_leak": "warning",
    "resource_cleanup": "info",
    "ublkdu": "success",
    "wn": "info",
}


_ACTOR_PATHS: Final = compile_paths("user_name", "user_id", "client_name", "client_id")
_TARGET_PATHS: Final = compile_paths("details.request.path", "client_name", "connection", "audience", "hostname")
_TENANT_PATHS: Final = compile_paths("tenant_name", "tenant")


def status_of(code: str) -> str:
    """``success``, ``failure``, ``warning`` or ``info`` for an Auth0 event code."""
    known = _STATUS.get(code)
    if known is not None:
        return known
    if code.endswith(("_failed", "_failure")) or code.startswith("limit_"):
        return "failure"
    if code.endswith(("_succeeded", "_succeed", "_success", "_complete")):
        return "success"
    if code.startswith("gd_"):
        return "info"
    if code.startswith("sys_"):
        return "info"
    if code.startswith("f"):
        return "failure"
    if code.startswith("s"):
        return "success"
    if code.startswith("w"):
        return "warning"
    return "info"


def decode(body: bytes, content_type: str | None = None) -> list[Any]:
    """Records of a log-stream body: JSON array, JSON lines, or ``{"logs": [...]}``."""
    return enveloped(body, "logs", unless="data", what="log records")


def to_event(record: Any) -> tuple[dict[str, Any], str | None]:
    """Standard-schema fields of one ``{log_id, data}`` record and its ``log_id``."""
    if not isinstance(record, dict):
        raise record_invalid(f"an Auth0 log record must be an object, not {type(record).__name__}")
    data = record.get("data")
    if not isinstance(data, dict):
        raise record_invalid("an Auth0 log record needs a `data` object", "/data")
    code = text_of(data.get("type"))
    if code is None:
        raise record_invalid("an Auth0 log event needs a `type` code", "/data/type")

    ev: dict[str, Any] = {"action": fit_name(code, 32), "status": status_of(code)}
    actor = text_of(first(data, _ACTOR_PATHS))
    put_clipped(ev, "actor", actor, 128)
    for path in _TARGET_PATHS:
        target = text_of(get(data, path))
        if target is not None and target != actor:
            ev["target"] = clip(target, 128)
            break
    put_clipped(ev, "source", text_of(data.get("ip")), 128)
    date = data.get("date")
    if date is not None and date != "":
        ev["timestamp"] = date  # RFC 3339 from Auth0; the schema validates and canonicalizes it
    put_clipped(ev, "tenant_id", text_of(first(data, _TENANT_PATHS)), 128)
    description = text_of(data.get("description"))
    message = description.strip() if description else ""
    ev["message"] = clip(message or EVENT_NAMES.get(code) or f"Auth0 event {code}", 32766)
    log_id = text_of(record.get("log_id")) or text_of(data.get("log_id"))
    details = data.get("details")
    detail = details if isinstance(details, dict) else ({"details": details} if details else {})
    put_clipped(ev, "new", new_with_ids(detail, {"log_id": log_id}), 32766)
    return ev, log_id
