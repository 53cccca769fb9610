"""Issue 16: start-up errors are one line naming what and where; check-config runs run's checks.

Every case runs the real command line in its own process (``python -m gateway``).
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.procs import REPO, free_port, local_audit
from tests.support.tls import self_signed


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60, cwd=REPO, env=env
    )


def run_args(tmp: Path, **over: str) -> list[str]:
    flags = {
        "--listen": f"127.0.0.1:{free_port()}",
        "--admin-listen": f"127.0.0.1:{free_port()}",
        "--local-audit-listen": f"127.0.0.1:{free_port()}",
        "--data-dir": str(tmp / "data"),
    }
    flags.update(over)
    return [x for kv in flags.items() for x in kv]


def last_line_only_error(out: subprocess.CompletedProcess[str]) -> str:
    """The error line; asserts there is exactly one and no traceback."""
    assert "Traceback" not in out.stderr, out.stderr
    errors = [line for line in out.stderr.splitlines() if not line.startswith("{")]
    assert len(errors) == 1, out.stderr
    return errors[0]


GOOD = (
    "destinations: {default: {schema: standard}}\n"
    "sources: {auth0: {type: webhook, format: auth0, path: /v1/log_stream, destination: default}}\n"
)


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


@pytest.mark.parametrize("flag", ["--listen", "--admin-listen", "--local-audit-listen"])
def test_a_port_in_use_is_one_line_naming_the_address_and_exit_code_1(
    tmp_path: Path, taken_port: int, flag: str
) -> None:
    out = cli("run", *run_args(tmp_path, **{flag: f"127.0.0.1:{taken_port}"}))
    assert out.returncode == 1
    assert last_line_only_error(out) == f"error: cannot listen on 127.0.0.1:{taken_port}: address already in use"


def test_a_data_dir_held_by_another_gateway_names_the_database_not_a_port(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", *run_args(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    ) as first:
        try:
            assert first.stderr is not None
            for line in first.stderr:  # until the first one holds its local audit log's database
                if "gateway started" in line:
                    break
            out = cli("run", *run_args(tmp_path))  # other ports, the same data dir
        finally:
            first.terminate()
            first.communicate(timeout=30)
    assert out.returncode == 1
    db = tmp_path / "data" / "local-audit.db"
    assert last_line_only_error(out) == f"error: database {db} is in use by another local audit log"


def test_a_missing_tls_file_is_one_line_naming_its_path_and_exit_code_1(tmp_path: Path) -> None:
    cert, _key = self_signed(tmp_path)
    cfg = tmp_path / "g.yaml"
    cfg.write_text(GOOD + f"intake: {{tls: {{cert_file: {cert}, key_file: {tmp_path / 'gone.key'}}}}}\n")
    out = cli("run", "--config", str(cfg), *run_args(tmp_path))
    assert out.returncode == 1
    assert last_line_only_error(out) == (
        f"error: intake.tls.key_file: cannot read {tmp_path / 'gone.key'}: no such file or directory"
    )


def test_a_tls_key_that_does_not_load_is_one_line_and_exit_code_1(tmp_path: Path) -> None:
    cert, _key = self_signed(tmp_path)
    junk = tmp_path / "junk.key"
    junk.write_text("not a key\n")
    cfg = tmp_path / "g.yaml"
    cfg.write_text(GOOD + f"intake: {{tls: {{cert_file: {cert}, key_file: {junk}}}}}\n")
    out = cli("run", "--config", str(cfg), *run_args(tmp_path))
    assert out.returncode == 1
    line = last_line_only_error(out)
    assert line.startswith(f"error: intake.tls: cannot load {cert} and {junk}: "), line


def test_an_unusable_data_dir_is_one_line_naming_it_and_exit_code_1(tmp_path: Path) -> None:
    # (The tests run as root, which may write anywhere: a regular file in the path is what stops it.)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    out = cli("run", *run_args(tmp_path, **{"--data-dir": str(blocker / "data")}))
    assert out.returncode == 1
    assert last_line_only_error(out) == (
        f"error: --data-dir: cannot use {blocker / 'data'} as a directory: {blocker} is not a directory"
    )


def test_check_config_refuses_an_okta_source_without_auth_under_a_public_listen_as_run_does(tmp_path: Path) -> None:
    cfg = tmp_path / "g.yaml"
    cfg.write_text(
        "destinations: {default: {schema: standard}}\n"
        "sources: {okta: {type: webhook, format: okta, destination: default}}\n"
    )
    assert cli("check-config", str(cfg)).returncode == 0  # loopback: fine
    public = ("--listen", f"0.0.0.0:{free_port()}")
    checked = cli("check-config", str(cfg), *public)
    ran = cli("run", "--config", str(cfg), *run_args(tmp_path, **dict([public])))
    message = (
        "configuration error: sources.okta.auth: listening on 0.0.0.0 beyond loopback"
        " requires inbound auth on every webhook source"
    )
    for out in (checked, ran):
        assert out.returncode == 2
        assert last_line_only_error(out) == message


def test_check_config_reports_every_problem_at_once(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    cfg = tmp_path / "g.yaml"
    cfg.write_text(
        GOOD + f"intake: {{tls: {{cert_file: {tmp_path / 'c.pem'}, key_file: {tmp_path / 'k.pem'}}}}}\n"
        f"data_dir: {blocker / 'data'}\n"
    )
    out = cli("check-config", str(cfg))
    assert out.returncode == 1
    line = last_line_only_error(out)
    assert f"intake.tls.cert_file: cannot read {tmp_path / 'c.pem'}: no such file or directory" in line
    assert f"intake.tls.key_file: cannot read {tmp_path / 'k.pem'}: no such file or directory" in line
    assert f"data_dir: cannot use {blocker / 'data'} as a directory: {blocker} is not a directory" in line


def test_check_config_names_every_missing_environment_variable(tmp_path: Path) -> None:
    cfg = tmp_path / "g.yaml"
    cfg.write_text(GOOD + "upstream: {url: '${AG_TEST_URL}', token: '${AG_TEST_TOKEN}'}\n")
    out = cli("check-config", str(cfg), env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 2
    assert last_line_only_error(out) == (
        "configuration error: upstream.url: environment variable AG_TEST_URL is not set;"
        " upstream.token: environment variable AG_TEST_TOKEN is not set"
    )


def test_check_config_suggests_the_closest_key_for_an_unknown_one(tmp_path: Path) -> None:
    cfg = tmp_path / "g.yaml"
    cfg.write_text(GOOD.replace("destination: default", "destinaton: default") + "bufer: {}\n")
    out = cli("check-config", str(cfg))
    assert out.returncode == 2
    line = last_line_only_error(out)
    assert "sources.auth0.destinaton: Extra inputs are not permitted; did you mean 'destination'?" in line
    assert "bufer: Extra inputs are not permitted; did you mean 'buffer'?" in line


def test_sizes_and_durations_take_units(tmp_path: Path) -> None:
    cfg = tmp_path / "g.yaml"
    cfg.write_text(GOOD + "buffer: {max_bytes: 1GiB}\nshutdown_timeout_secs: 30s\nintake: {body_timeout_secs: 1m30s}\n")
    out = cli("check-config", str(cfg))
    assert (out.returncode, out.stdout.strip()) == (0, "ok"), out.stderr
    from gateway.config import load_config

    config = load_config(cfg)
    assert config.buffer.max_bytes == 1024**3
    assert config.shutdown_timeout_secs == 30.0 and config.intake.body_timeout_secs == 90.0
    cfg.write_text(GOOD + "buffer: {max_bytes: 1 lot}\n")
    bad = cli("check-config", str(cfg))
    assert bad.returncode == 2
    assert "buffer.max_bytes: Input should be a valid integer" in bad.stderr
    assert "(bytes, or a size with a unit: 64KiB, 1GiB)" in bad.stderr


def test_check_config_connect_calls_the_upstream_with_the_credential_and_each_kafka_broker(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    closed = free_port()
    with local_audit(tmp_path, "pts_right_token") as la:
        url = la.url("local_audit")
        base = (
            "destinations: {default: {schema: standard}}\n"
            "sources:\n"
            "  hook: {type: webhook, format: auth0, destination: default}\n"
            f"  k: {{type: kafka, bootstrap_servers: '{kafka_bootstrap}', topics: [t], group_id: g,"
            " destination: default}\n"
        )
        good = tmp_path / "good.yaml"
        good.write_text(base + f"upstream: {{url: '{url}', token: pts_right_token}}\n")
        ok = cli("check-config", "--connect", str(good))
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.splitlines() == [
            f"destinations.default: upstream {url} accepts the credential",
            f"sources.k.bootstrap_servers: Kafka broker {kafka_bootstrap} reachable",
            "ok",
        ]
        assert cli("check-config", str(good)).stdout == "ok\n"  # without --connect nothing is called
        bad = tmp_path / "bad.yaml"
        bad.write_text(
            base.replace(kafka_bootstrap, f"127.0.0.1:{closed}")
            + f"upstream: {{url: '{url}', token: pts_wrong_token}}\n"
        )
        refused = cli("check-config", "--connect", str(bad))
    assert refused.returncode == 1
    line = last_line_only_error(refused)
    assert f"destinations.default: upstream {url}: upstream refused credentials" in line, line
    assert f"sources.k.bootstrap_servers: cannot connect to Kafka broker 127.0.0.1:{closed}: connection refused" in line
    assert "pts_wrong_token" not in refused.stdout + refused.stderr
