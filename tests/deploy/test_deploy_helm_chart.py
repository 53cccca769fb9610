"""The Helm chart lints, renders for each ci/*-values.yaml through helm-sdkpy, and
renders what each mode needs. (Schema validation, hardening and consistency of the
rendered objects are in test_deploy_manifests.py and test_deploy_consistency.py,
which run over deploy/ and the rendered chart alike.)"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

# Helm lint severities (helm.sh/helm/v4/pkg/chart/v2/lint/support).
LINT_SEVERITY = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}

# The rendered output is machine-written YAML: lint what matters (syntax, duplicate
# keys, trailing spaces, truthy values), not the layout toYaml chooses.
RENDERED_YAMLLINT = """
extends: default
rules:
  document-start: disable
  line-length: disable
  comments-indentation: disable
  comments: {min-spaces-from-content: 1}
  indentation: {spaces: consistent, indent-sequences: whatever}
  empty-lines: {max: 2, max-start: 1, max-end: 2}
"""


def test_chart_is_a_helm_v2_application_chart(repo_root: Path):
    chart = yaml.safe_load((repo_root / "helm/audit-gateway/Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "audit-gateway"
    assert chart["type"] == "application"
    assert chart["version"] and chart["appVersion"] and chart["kubeVersion"]
    templates = repo_root / "helm/audit-gateway/templates"
    assert (templates / "NOTES.txt").is_file() and (templates / "_helpers.tpl").is_file()


def test_chart_ships_one_ci_values_file_per_mode(repo_root: Path):
    modes = {yaml.safe_load(p.read_text())["mode"] for p in (repo_root / "helm/audit-gateway/ci").glob("*-values.yaml")}
    assert modes == {"consumer", "webhook"}


def test_chart_plain_yaml_passes_yamllint(repo_root: Path):
    chart = repo_root / "helm/audit-gateway"
    conf = YamlLintConfig(file=str(chart / ".yamllint"))
    files = [chart / "Chart.yaml", chart / "values.yaml", *sorted((chart / "ci").glob("*.yaml"))]
    problems = [
        f"{f.relative_to(repo_root)}:{p.line}:{p.column} {p.rule}: {p.message}"
        for f in files
        for p in linter.run(f.read_text(), conf, str(f))
    ]
    assert not problems, "\n".join(problems)


def test_every_values_key_is_documented(repo_root: Path):
    """Every key of values.yaml has a comment right above it, or sits under a key that has."""
    lines = (repo_root / "helm/audit-gateway/values.yaml").read_text().splitlines()
    key_line = re.compile(r"^(\s*)([A-Za-z_][\w.-]*):(\s|$)")
    stack: list[tuple[int, bool]] = []  # (indent, documented) of the enclosing keys
    undocumented = []
    for i, line in enumerate(lines):
        m = key_line.match(line)
        if not m:
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        prev = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        documented = prev.startswith("#") or any(d for _, d in stack)
        if not documented:
            undocumented.append(f"line {i + 1}: {m.group(2)}")
        stack.append((indent, documented))
    assert not undocumented, f"values.yaml keys without a comment: {undocumented}"


def test_helm_sdkpy_bundles_helm(helm_results):
    assert helm_results["helm_sdkpy"] and helm_results["helm"]


def test_chart_lints_clean_with_each_ci_values(helm_results, chart_case):
    lint = helm_results["results"][chart_case]["lint"]
    assert lint["TotalChartsLinted"] == 1
    findings = [
        f"{LINT_SEVERITY.get(m['Severity'], m['Severity'])} {m['Path']}" for m in lint["Messages"] if m["Severity"] >= 2
    ]
    assert not findings and not lint["Errors"], (
        f"helm lint with ci/{chart_case}-values.yaml: {findings} (helm-sdkpy drops the message text; "
        f"the render error, if any, was: {helm_results['results'][chart_case]['error']})"
    )


def test_chart_renders_with_each_ci_values(helm_results, chart_case):
    res = helm_results["results"][chart_case]
    assert res["error"] is None, f"ci/{chart_case}-values.yaml: {res['error']}"
    assert res["manifest"].strip()
    assert res["notes"] and "audit-gateway" in res["notes"]


def test_rendered_chart_passes_yamllint(helm_results, chart_case):
    conf = YamlLintConfig(RENDERED_YAMLLINT)
    problems = list(linter.run(helm_results["results"][chart_case]["manifest"], conf))
    assert not problems, "\n".join(f"{p.line}:{p.column} {p.rule}: {p.message}" for p in problems)


def test_chart_refuses_inconsistent_values_with_a_clear_message(helm_results, chart_rejects, chart_reject_case):
    expected = chart_rejects[chart_reject_case][1]
    res = helm_results["results"][chart_reject_case]
    assert res["manifest"] is None and res["error"], f"{chart_reject_case} rendered although it should fail"
    assert expected in res["error"], res["error"]


def test_consumer_mode_renders_a_kafka_consumer_group(chart_manifests):
    m = chart_manifests["consumer"]
    kinds = {o["kind"] for o in m.objects}
    assert {"ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
    assert "Ingress" not in kinds
    (gw,) = m.gateways
    assert gw.arg("--listen").startswith("127.0.0.1:"), "a consumer takes no intake from the network"
    assert all(s["type"] == "kafka" for s in gw.config["sources"].values())
    assert len({s["group_id"] for s in gw.config["sources"].values()}) == 1
    (hpa,) = m.of_kind("HorizontalPodAutoscaler")
    metrics = {x["type"]: x for x in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert metrics["External"]["external"]["metric"]["name"] == "gateway_kafka_consumer_lag"
    service_ports = {p["name"] for s in m.of_kind("Service") for p in s["spec"]["ports"]}
    assert service_ports == {"admin"}


def test_webhook_mode_renders_service_ingress_and_network_policy(chart_manifests, contract):
    m = chart_manifests["webhook"]
    kinds = {o["kind"] for o in m.objects}
    assert {"ConfigMap", "Deployment", "Service", "Ingress", "NetworkPolicy", "PodDisruptionBudget"} <= kinds
    (gw,) = m.gateways
    assert gw.arg("--listen") == f"0.0.0.0:{contract.intake_port}"
    (ingress,) = m.of_kind("Ingress")
    assert ingress["spec"]["tls"] and ingress["spec"]["tls"][0]["secretName"]
    (policy,) = m.of_kind("NetworkPolicy")
    allowed_ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert allowed_ports == {contract.intake_port, contract.admin_port}


def test_pod_template_carries_a_checksum_of_the_rendered_config(chart_manifests):
    for m in chart_manifests.values():
        for gw in m.gateways:
            ann = gw.workload["spec"]["template"]["metadata"]["annotations"]
            assert re.fullmatch(r"[0-9a-f]{64}", ann.get("checksum/config", "")), gw.name


def test_chart_uses_existing_secret_or_creates_one(chart_manifests, repo_root: Path):
    for case, m in chart_manifests.items():
        values = yaml.safe_load((repo_root / f"helm/audit-gateway/ci/{case}-values.yaml").read_text())
        (gw,) = m.gateways
        token_volumes = [v for v in gw.pod_spec["volumes"] if "secret" in v]
        assert token_volumes, f"{case}: the upstream token is not mounted from a Secret"
        secret_name = token_volumes[0]["secret"]["secretName"]
        created = m.of_kind("Secret")
        if values.get("existingSecret"):
            assert secret_name == values["existingSecret"] and not created, case
        else:
            assert [s["metadata"]["name"] for s in created] == [secret_name], case
        assert gw.config["upstream"]["token_file"] == "/var/run/secrets/audit-gateway/token"
        assert "token" not in gw.config["upstream"], f"{case}: token inlined in the ConfigMap"
