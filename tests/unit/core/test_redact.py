"""Configured secrets are masked in log lines and readiness reasons (issue 12, case 5)."""

from __future__ import annotations

import base64
import logging

import orjson
from pydantic import SecretStr

from gateway.config import GatewayConfig
from gateway.telemetry import redact
from gateway.telemetry.logging import JsonFormatter


def config_with_secrets() -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "upstream": {
                "url": "http://127.0.0.1:1",
                "oauth2": {
                    "token_url": "http://127.0.0.1:1/oauth/token",
                    "client_id": "psa_redact_client",
                    "client_secret": 'pck_redact "quoted" secret',
                },
            },
            "sources": {
                "okta": {
                    "type": "webhook",
                    "format": "okta",
                    "destination": "default",
                    "auth": {"header": "Authorization", "value": "okta-redact-shared-value"},
                }
            },
            "destinations": {"default": {"schema": "standard"}},
        }
    )


def log_line(message: str, **extra: object) -> str:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, message, None, None)
    record.__dict__.update(extra)
    return JsonFormatter().format(record)


def test_every_configured_secret_and_the_oauth2_basic_value_are_masked_in_log_lines() -> None:
    redact.register_config(config_with_secrets())
    basic = base64.b64encode(b'psa_redact_client:pck_redact "quoted" secret').decode()
    line = log_line(
        "token endpoint said: Basic " + basic,
        peer='client_secret=pck_redact "quoted" secret',  # JSON-escaped in the line: masked too
        header="okta-redact-shared-value",
    )
    parsed = orjson.loads(line)
    assert parsed["message"] == "token endpoint said: Basic ***"
    assert parsed["peer"] == "client_secret=***"
    assert parsed["header"] == "***"
    assert "quoted" not in line and basic not in line


def test_secrets_obtained_at_run_time_are_masked_and_short_values_are_left_alone() -> None:
    redact.register(SecretStr("pts_obtained_at_run_time"), "abc", "", None)
    assert redact.redact("Bearer pts_obtained_at_run_time; abc") == "Bearer ***; abc"
