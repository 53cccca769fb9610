from pathlib import Path

import pytest

from gateway.config import default_config, load_config, parse_config
from gateway.errors import ConfigError

ISSUE_2_SNIPPET = """
upstream:
  url: https://audit.aws.us.pangea.cloud
  token: ${PANGEA_AUDIT_TOKEN}
  endpoint: log
destinations:
  default:
    config_id: pci_example
    schema: standard
sources:
  auth0:
    type: webhook
    path: /v1/log_stream
    format: auth0
    auth: {header: Authorization, value: "Bearer ${AUTH0_STREAM_TOKEN}"}
    destination: default
"""


def test_issue_snippet_loads_with_env_substitution_and_hides_secrets(tmp_path: Path) -> None:
    f = tmp_path / "gateway.yaml"
    f.write_text(ISSUE_2_SNIPPET)
    cfg = load_config(f, env={"PANGEA_AUDIT_TOKEN": "pts_secret", "AUTH0_STREAM_TOKEN": "s3cr3t"})
    assert cfg.upstream is not None and cfg.upstream.token is not None
    assert cfg.upstream.token.get_secret_value() == "pts_secret"
    auth = cfg.sources["auth0"].auth  # type: ignore[union-attr]
    assert auth is not None and auth.value is not None
    assert auth.value.get_secret_value() == "Bearer s3cr3t"
    dumped = repr(cfg) + str(cfg.model_dump())
    assert "pts_secret" not in dumped and "s3cr3t" not in dumped


def test_unknown_key_is_rejected_naming_its_path() -> None:
    with pytest.raises(ConfigError, match=r"sources\.auth0\.pathh: Extra inputs are not permitted"):
        parse_config(
            {
                "destinations": {"default": {}},
                "sources": {"auth0": {"type": "webhook", "format": "auth0", "destination": "default", "pathh": "/x"}},
            },
            env={},
        )


def test_missing_env_var_is_an_error_unless_defaulted() -> None:
    base = {
        "destinations": {"default": {}},
        "sources": {
            "a": {"type": "webhook", "format": "auth0", "destination": "default", "auth": {"value": "${NOPE}"}}
        },
    }
    with pytest.raises(ConfigError, match=r"sources\.a\.auth\.value: environment variable NOPE"):
        parse_config(base, env={})
    base["sources"]["a"]["auth"]["value"] = "${NOPE:-fallback}"  # type: ignore[index]
    cfg = parse_config(base, env={})
    assert cfg.sources["a"].auth.value.get_secret_value() == "fallback"  # type: ignore[union-attr]


def test_unknown_destination_is_rejected() -> None:
    with pytest.raises(ConfigError, match="unknown destination 'nope'"):
        parse_config(
            {
                "destinations": {"default": {}},
                "sources": {"a": {"type": "webhook", "format": "auth0", "destination": "nope"}},
            },
            env={},
        )


def test_batch_max_events_cannot_exceed_the_api_limit() -> None:
    with pytest.raises(ConfigError, match=r"destinations\.default\.batch\.max_events"):
        parse_config(
            {
                "destinations": {"default": {"batch": {"max_events": 1001}}},
                "sources": {"a": {"type": "webhook", "format": "auth0", "destination": "default"}},
            },
            env={},
        )


def test_upstream_requires_exactly_one_credential() -> None:
    with pytest.raises(ConfigError, match="exactly one of token, token_file, oauth2"):
        parse_config(
            {
                "upstream": {"url": "http://x"},
                "destinations": {"default": {}},
                "sources": {"a": {"type": "webhook", "format": "auth0", "destination": "default"}},
            },
            env={},
        )


def test_default_config_routes_auth0_and_the_sdk_api_to_default() -> None:
    cfg = default_config()
    assert cfg.upstream is None
    assert {s.format for s in cfg.sources.values()} == {"auth0", "pangea"}  # type: ignore[union-attr]
    assert cfg.sources["auth0"].route_path == "/v1/log_stream"  # type: ignore[union-attr]


@pytest.mark.parametrize("setting", ["buffer", "deadletter"])
def test_a_kafka_buffer_or_dead_letter_store_needs_a_topic_and_brokers(setting: str) -> None:
    base = {
        "destinations": {"default": {}},
        "sources": {"a": {"type": "webhook", "format": "auth0", "destination": "default"}},
    }
    with pytest.raises(ConfigError, match=f"{setting} type kafka requires topic and bootstrap_servers"):
        parse_config({**base, setting: {"type": "kafka"}}, env={})
    with pytest.raises(ConfigError, match=f"{setting} type kafka requires bootstrap_servers"):
        parse_config({**base, setting: {"type": "kafka", "topic": "t"}}, env={})
    cfg = parse_config(
        {**base, setting: {"type": "kafka", "topic": "t", "bootstrap_servers": "a:9092, b:9092"}}, env={}
    )
    assert getattr(cfg, setting).security.protocol == "PLAINTEXT"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # an unterminated quoted value: the key it belongs to, where it starts and where the file ends
        (
            'sources:\n  a:\n    auth: {value: "Bearer tok_7f3a}\n',
            "sources.a.auth.value: while scanning a quoted scalar (line 3, column 19):"
            " found unexpected end of stream (line 4, column 1)",
        ),
        # inside a list: the index of an item once it started (the broken one never did)
        (
            "destinations:\n  d:\n    x:\n      - {y: 1}\n      - 'tok_9b2c\n",
            "destinations.d.x: while scanning a quoted scalar (line 5, column 9):"
            " found unexpected end of stream (line 6, column 1)",
        ),
        (
            "destinations:\n  d:\n    x:\n      - {y: 1}\n      - y: 'tok_1c7e\n",
            "destinations.d.x[1].y: while scanning a quoted scalar (line 5, column 12):",
        ),
        # PyYAML quotes an alias name: elided
        ("a: [*tok_5d1e, 1\n", "a: found undefined alias '...' (line 1, column 5)"),
        # nothing parsed before the error: no key path, still the line and column
        ("'tok_0a4f\n", "while scanning a quoted scalar (line 1, column 1)"),
    ],
)
def test_a_yaml_syntax_error_names_the_key_path_and_position_but_no_value(
    tmp_path: Path, text: str, expected: str
) -> None:
    f = tmp_path / "g.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(f, env={})
    assert f"{f}: not valid YAML: {expected}" in str(err.value)
    assert "tok_" not in str(err.value)
