"""Ports (8080 intake, 9090 admin), probe paths (/healthz, /readyz), the config path
and the data directory agree across the Dockerfile, deploy/, the rendered chart and
the gateway's own defaults."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import yaml


def _dockerfile_instructions(repo_root: Path) -> list[tuple[str, str]]:
    text = (repo_root / "deploy/Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def test_dockerfile_cmd_uses_the_agreed_ports_and_paths(repo_root, contract):
    instructions = _dockerfile_instructions(repo_root)
    cmd = json.loads(next(rest for kw, rest in reversed(instructions) if kw == "CMD"))
    expose = {int(p.split("/")[0]) for kw, rest in instructions if kw == "EXPOSE" for p in rest.split()}
    flags = dict(zip(cmd[1::2], cmd[2::2], strict=False))
    assert flags["--config"] == contract.config_path
    assert flags["--data-dir"] == contract.data_dir
    assert _port(flags["--listen"]) == contract.intake_port
    assert _port(flags["--admin-listen"]) == contract.admin_port
    assert expose == {contract.intake_port, contract.admin_port}
    assert any(kw == "VOLUME" and contract.data_dir in rest for kw, rest in instructions)


def test_gateway_containers_use_the_agreed_args_ports_and_mounts(manifest, contract):
    assert manifest.gateways, f"{manifest.origin} runs no gateway"
    for gw in manifest.gateways:
        assert gw.container["args"][0] == "run", gw.name
        assert gw.arg("--config") == contract.config_path, gw.name
        assert gw.arg("--data-dir") == contract.data_dir, gw.name
        assert _port(gw.arg("--listen")) == contract.intake_port, gw.name
        assert gw.arg("--admin-listen") == f"0.0.0.0:{contract.admin_port}", (
            f"{gw.name}: the admin port must listen beyond loopback for kubelet probes and Prometheus"
        )
        ports = {p["name"]: p["containerPort"] for p in gw.container["ports"]}
        assert ports["admin"] == contract.admin_port, gw.name
        if "http" in ports:
            assert ports["http"] == contract.intake_port, gw.name
        mounts = {m["mountPath"]: m for m in gw.container["volumeMounts"]}
        assert mounts[contract.config_dir].get("readOnly") is True, gw.name
        assert contract.data_dir in mounts, f"{gw.name}: no volume at {contract.data_dir}"
        assert "gateway.yaml" in gw.config_map["data"], gw.name


def test_gateway_probes_hit_health_endpoints_on_the_admin_port(manifest, contract):
    for gw in manifest.gateways:
        for probe, path in (
            ("livenessProbe", contract.liveness_path),
            ("readinessProbe", contract.readiness_path),
        ):
            get = gw.container[probe]["httpGet"]
            assert get["path"] == path, f"{gw.name} {probe}"
            assert get["port"] in ("admin", contract.admin_port), f"{gw.name} {probe}"
        if "startupProbe" in gw.container:
            assert gw.container["startupProbe"]["httpGet"]["path"] == contract.liveness_path


def test_services_target_the_named_container_ports(manifest, contract):
    named = {"http": contract.intake_port, "admin": contract.admin_port}
    for svc in manifest.of_kind("Service"):
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in named, f"{manifest.origin}: {svc['metadata']['name']} {p}"
            assert p["port"] == named[p["targetPort"]], f"{manifest.origin}: keep Service ports equal to targets"


def test_chart_renders_the_same_contract_as_deploy(chart_manifests, repo_root):
    """deploy/webhook.yaml and the chart's webhook mode run the gateway alike."""
    docs = [d for d in yaml.safe_load_all((repo_root / "deploy/webhook.yaml").read_text()) if d]
    (plain,) = [d for d in docs if d["kind"] == "Deployment"]
    (chart_gw,) = chart_manifests["webhook"].gateways
    plain_container = plain["spec"]["template"]["spec"]["containers"][0]
    assert plain_container["args"] == chart_gw.container["args"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert plain_container[probe] == chart_gw.container[probe], probe
    assert plain_container["securityContext"] == chart_gw.container["securityContext"]
    assert (
        plain["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        == chart_gw.pod_spec["terminationGracePeriodSeconds"]
    )


def test_cli_default_ports_match_the_container_ports(contract):
    """The defaults the lead defines (gateway.cli: DEFAULT_LISTEN, DEFAULT_ADMIN_LISTEN)."""
    module = importlib.import_module("gateway.cli")
    assert _port(module.DEFAULT_LISTEN) == contract.intake_port
    assert _port(module.DEFAULT_ADMIN_LISTEN) == contract.admin_port
