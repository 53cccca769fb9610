"""The command line: check-config, exposure refusal, and the README's config reference."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from gateway.config_doc import reference
from tests.support.procs import REPO, free_port


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60, cwd=REPO, env=env
    )


def test_check_config_accepts_a_valid_file_and_names_the_bad_key_of_an_invalid_one(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        "destinations: {default: {schema: standard}}\n"
        "sources: {auth0: {type: webhook, format: auth0, path: /v1/log_stream, destination: default}}\n"
    )
    ok = cli("check-config", str(good))
    assert ok.returncode == 0 and ok.stdout.strip() == "ok"
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("path:", "paht:"))
    refused = cli("check-config", str(bad))
    assert refused.returncode == 2
    assert "sources.auth0.paht: Extra inputs are not permitted" in refused.stderr


def test_run_refuses_to_listen_beyond_loopback_without_inbound_auth(tmp_path: Path) -> None:
    out = cli(
        "run", "--listen", f"0.0.0.0:{free_port()}", "--admin-listen", f"127.0.0.1:{free_port()}",
        "--data-dir", str(tmp_path),
    )  # fmt: skip
    assert out.returncode == 2
    assert "beyond loopback requires inbound auth" in out.stderr
    assert re.search(r"sources\.\w+\.auth", out.stderr)


def test_secrets_never_reach_the_check_config_output(tmp_path: Path) -> None:
    cfg = tmp_path / "g.yaml"
    cfg.write_text(
        "upstream: {url: 'http://127.0.0.1:1', token: pts_TOPSECRET}\n"
        "destinations: {default: {}}\n"
        "sources: {a: {type: webhook, format: auth0, destination: default, auth: {value: 'Bearer HUSH'},"
        " unknown_key: 1}}\n"
    )
    out = cli("check-config", str(cfg))
    assert out.returncode == 2
    assert "TOPSECRET" not in out.stderr + out.stdout and "HUSH" not in out.stderr + out.stdout


def test_readme_documents_every_configuration_key() -> None:
    readme = (REPO / "README.md").read_text()
    assert reference() in readme, "README's configuration reference is stale: run python -m gateway.config_doc"


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert f"```sh\n{ci}\n```" in readme
