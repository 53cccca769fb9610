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


def test_config_errors_name_the_key_path_and_line_but_never_print_a_value(tmp_path: Path) -> None:
    """Issue 12 case 7: PyYAML quotes the offending line; the token on it must not reach the output."""
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "destinations: {default: {}}\n"
        "sources:\n"
        "  a:\n"
        "    type: webhook\n"
        "    format: auth0\n"
        "    destination: default\n"
        '    auth: {value: "Bearer tok_LITERAL_5e1f}\n'
    )
    tab = tmp_path / "tab.yaml"
    tab.write_text("upstream:\n  url: http://127.0.0.1:1\n\ttoken: pts_TABBED_77c0\n")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(
        "destinations: {default: {}}\n"
        "sources: {a: {type: webhook_tok_TYPO_93ab, destination: default}}\n"
        "log_level: tok_LEVEL_0d2c\n"
        "shutdown_timeout_secs: tok_SECS_61fa\n"
    )
    data_dir = str(tmp_path / "data")
    runs = {
        "check-config broken": cli("check-config", str(broken)),
        "run broken": cli("run", "--config", str(broken), "--data-dir", data_dir),
        "check-config tab": cli("check-config", str(tab)),
        "check-config wrong": cli("check-config", str(wrong)),
        "run wrong": cli("run", "--config", str(wrong), "--data-dir", data_dir),
    }
    for what, out in runs.items():
        assert out.returncode == 2, (what, out.stderr)
        assert "Traceback" not in out.stderr, (what, out.stderr)
        for token in ("tok_LITERAL", "pts_TABBED", "tok_TYPO", "tok_LEVEL", "tok_SECS", "input_value"):
            assert token not in out.stdout + out.stderr, (what, token, out.stderr)
    # still useful: the key path and where in the file
    assert "sources.a.auth.value: while scanning a quoted scalar (line 7, column 19)" in runs["run broken"].stderr
    assert "found character '\\t' that cannot start any token (line 3, column 1)" in runs["check-config tab"].stderr
    wrong_err = runs["check-config wrong"].stderr
    assert "sources.a: unknown 'type'; expected one of 'webhook', 'kafka'" in wrong_err
    assert "log_level: Input should be 'debug', 'info', 'warning' or 'error'" in wrong_err
    assert "shutdown_timeout_secs: Input should be a valid number" in wrong_err
