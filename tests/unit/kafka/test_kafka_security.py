"""Kafka TLS/SASL settings become the right aiokafka keyword arguments."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.kafka.config import KafkaSecurity
from gateway.kafka.security import client_kwargs


def test_plaintext_is_the_default() -> None:
    assert client_kwargs(KafkaSecurity()) == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("mech", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_plaintext_passes_mechanism_and_credentials(mech: str) -> None:
    kw = client_kwargs(
        KafkaSecurity.model_validate(
            {"protocol": "SASL_PLAINTEXT", "sasl_mechanism": mech, "username": "u", "password": "p"}
        )
    )
    assert kw == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mech,
        "sasl_plain_username": "u",
        "sasl_plain_password": "p",
    }


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key, cert = tmp / "k.pem", tmp / "c.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=kafka.test"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_sasl_ssl_builds_a_verifying_context_with_the_client_certificate(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    sec = KafkaSecurity.model_validate(
        {
            "protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "username": "svc",
            "password": "secret",
            "ca_file": str(cert),
            "cert_file": str(cert),
            "key_file": str(key),
        }
    )
    kw = client_kwargs(sec)
    ctx = kw.pop("ssl_context")
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert any(c.get("subject") == ((("commonName", "kafka.test"),),) for c in ctx.get_ca_certs())
    assert kw == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc",
        "sasl_plain_password": "secret",
    }


def test_ssl_without_files_uses_the_system_cas() -> None:
    kw = client_kwargs(KafkaSecurity(protocol="SSL"))
    assert isinstance(kw["ssl_context"], ssl.SSLContext) and "sasl_mechanism" not in kw


@pytest.mark.parametrize(
    "sec",
    [
        {"protocol": "SASL_SSL", "username": "u", "password": "p"},
        {"protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "username": "u"},
        {"protocol": "PLAINTEXT", "sasl_mechanism": "PLAIN", "username": "u", "password": "p"},
        {"protocol": "PLAINTEXT", "ca_file": "/etc/ssl/ca.pem"},
        {"protocol": "SSL", "cert_file": "/x.pem"},
    ],
)
def test_inconsistent_security_settings_are_config_errors(sec: dict[str, str]) -> None:
    with pytest.raises((ConfigError, ValueError)):
        client_kwargs(KafkaSecurity.model_validate(sec))


def test_unreadable_tls_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="security"):
        client_kwargs(KafkaSecurity(protocol="SSL", ca_file=tmp_path / "missing.pem"))


def test_bootstrap_servers_are_read_from_comma_separated_text_or_a_list() -> None:
    from gateway.kafka.security import bootstrap_list

    assert bootstrap_list(" a:9092, b:9092 ,") == ["a:9092", "b:9092"]
    assert bootstrap_list(["a:9092", " "]) == ["a:9092"]
    assert bootstrap_list(None) == []
