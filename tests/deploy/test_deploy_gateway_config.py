"""The gateway configuration carried by each ConfigMap (deploy/ and the rendered chart)
is accepted by `audit-gateway check-config`, and is safe for how it is run."""

from __future__ import annotations

import subprocess

LOOPBACK_PREFIXES = ("127.", "localhost:", "[::1]:")


def test_shipped_gateway_config_passes_check_config(manifest, tmp_path, audit_gateway_cli, dummy_env_for):
    assert manifest.gateways, f"{manifest.origin} runs no gateway"
    for i, gw in enumerate(manifest.gateways):
        path = tmp_path / f"gateway-{i}.yaml"
        path.write_text(gw.config_text)
        proc = subprocess.run(
            [*audit_gateway_cli, "check-config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            env=dummy_env_for(gw.config_text),
            check=False,
        )
        assert proc.returncode == 0, (
            f"{gw.name}: check-config exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
        assert proc.stdout.strip().splitlines()[-1:] == ["ok"], proc.stdout


def test_check_config_rejects_a_broken_copy_of_the_shipped_config(
    tmp_path, audit_gateway_cli, dummy_env_for, repo_root
):
    """Guards the test above: check-config must really validate, naming the bad key."""
    import yaml

    docs = yaml.safe_load_all((repo_root / "deploy/webhook.yaml").read_text())
    text = next(d for d in docs if d and d["kind"] == "ConfigMap")["data"]["gateway.yaml"]
    broken = text.replace("max_in_flight:", "max_in_flightt:")
    assert broken != text
    path = tmp_path / "broken.yaml"
    path.write_text(broken)
    proc = subprocess.run(
        [*audit_gateway_cli, "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=dummy_env_for(text),
        check=False,
    )
    assert proc.returncode != 0
    assert "max_in_flightt" in proc.stdout + proc.stderr


def test_gateway_listening_beyond_loopback_authenticates_every_webhook(manifest):
    """The gateway refuses to start otherwise; catch it before a rollout does."""
    for gw in manifest.gateways:
        listen = gw.arg("--listen") or "127.0.0.1:8080"
        if listen.startswith(LOOPBACK_PREFIXES):
            continue
        unauthenticated = [
            name for name, src in gw.config["sources"].items() if src["type"] == "webhook" and not src.get("auth")
        ]
        assert not unauthenticated, f"{gw.name} listens on {listen} with unauthenticated {unauthenticated}"


def test_shipped_configs_keep_secrets_out_of_the_configmap(manifest):
    for gw in manifest.gateways:
        upstream = gw.config.get("upstream")
        assert upstream, f"{gw.name}: Kubernetes deployments always configure an upstream"
        assert "token" not in upstream and "token_file" in upstream, gw.name
        for src in gw.config["sources"].values():
            value = (src.get("auth") or {}).get("value")
            if value is not None:
                assert "${" in value, f"{gw.name}: inbound token written into the ConfigMap"


def test_disk_spool_lives_on_the_data_volume(manifest, contract):
    for gw in manifest.gateways:
        buffer = gw.config.get("buffer", {})
        if buffer.get("type") == "disk":
            assert str(buffer.get("path", f"{contract.data_dir}/spool")).startswith(contract.data_dir + "/"), gw.name
