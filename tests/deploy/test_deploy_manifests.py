"""The plain manifests in deploy/ and the objects the chart renders are valid
Kubernetes objects, lint clean, and every workload is hardened and observable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

# The oldest Kubernetes the manifests and chart support (Chart.yaml kubeVersion) and
# the newest whose schemas kubernetes-validate ships.
MIN_KUBE_VERSION = "1.30.0"
CUSTOM_RESOURCE_GROUPS = {"monitoring.coreos.com"}  # no upstream JSON schema: checked by shape


def _validate(obj: dict[str, Any], version: str) -> str | None:
    group = obj["apiVersion"].split("/")[0] if "/" in obj["apiVersion"] else ""
    if group in CUSTOM_RESOURCE_GROUPS:
        missing = [k for k in ("apiVersion", "kind", "metadata", "spec") if k not in obj]
        return f"missing {missing}" if missing else None
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        return f"{path}: {exc.message}"
    except kubernetes_validate.SchemaNotFoundError as exc:
        return exc.message
    return None


def _kind_name(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


@pytest.mark.parametrize("version", ["latest", MIN_KUBE_VERSION])
def test_every_object_validates_against_kubernetes_json_schema(manifest, version, kube_version):
    version = kube_version if version == "latest" else version
    assert manifest.objects, f"{manifest.origin} holds no objects"
    errors = {_kind_name(o): err for o in manifest.objects if (err := _validate(o, version))}
    assert not errors, f"{manifest.origin} against Kubernetes {version}: {errors}"


def test_schema_validation_rejects_a_misspelt_field(kube_version):
    bad = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "dataa": {}}
    assert _validate(bad, kube_version) is not None


def test_deploy_yaml_passes_yamllint(deploy_file, repo_root: Path):
    conf = YamlLintConfig(file=str(repo_root / "deploy" / ".yamllint"))
    path = repo_root / deploy_file
    problems = list(linter.run(path.read_text(), conf, str(path)))
    assert not problems, "\n".join(f"{deploy_file}:{p.line}:{p.column} {p.rule}: {p.message}" for p in problems)


def test_every_object_has_name_and_labels(manifest):
    for obj in manifest.objects:
        meta = obj["metadata"]
        assert meta.get("name"), f"{manifest.origin}: unnamed {obj['kind']}"
        assert meta.get("labels", {}).get("app.kubernetes.io/name"), (
            f"{manifest.origin}: {_kind_name(obj)} lacks the app.kubernetes.io/name label"
        )


def test_every_workload_sets_requests_and_limits(manifest):
    for obj in manifest.objects:
        spec = obj["spec"]["template"]["spec"] if obj["kind"] in ("Deployment", "StatefulSet") else None
        if spec is None:
            continue
        for c in spec.get("initContainers", []) + spec["containers"]:
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res.get(part, {})), (
                    f"{manifest.origin}: {_kind_name(obj)} container {c['name']} lacks {part} cpu/memory"
                )


def test_every_workload_runs_hardened(manifest):
    workloads = [o for o in manifest.objects if o["kind"] in ("Deployment", "StatefulSet")]
    assert workloads, f"{manifest.origin} has no workload"
    for obj in workloads:
        spec = obj["spec"]["template"]["spec"]
        pod_sc = spec.get("securityContext", {})
        where = f"{manifest.origin}: {_kind_name(obj)}"
        assert pod_sc.get("runAsNonRoot") is True, f"{where}: pod runAsNonRoot"
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{where}: pod seccomp"
        assert spec.get("automountServiceAccountToken") is False, f"{where}: service account token mounted"
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c.get("securityContext", {})
            who = f"{where} container {c['name']}"
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, f"{who}: runAsNonRoot"
            assert sc.get("readOnlyRootFilesystem") is True, f"{who}: readOnlyRootFilesystem"
            assert sc.get("allowPrivilegeEscalation") is False, f"{who}: allowPrivilegeEscalation"
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{who}: capabilities not all dropped"
            assert not sc.get("capabilities", {}).get("add"), f"{who}: adds capabilities"
            assert sc.get("privileged") is not True, f"{who}: privileged"
            seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
            assert seccomp.get("type") == "RuntimeDefault", f"{who}: seccomp"


def test_gateway_pods_carry_prometheus_scrape_annotations(manifest, contract):
    assert manifest.gateways, f"{manifest.origin} runs no gateway container"
    for gw in manifest.gateways:
        ann = gw.workload["spec"]["template"]["metadata"].get("annotations", {})
        assert ann.get("prometheus.io/scrape") == "true", gw.name
        assert ann.get("prometheus.io/port") == str(contract.admin_port), gw.name
        assert ann.get("prometheus.io/path") == contract.metrics_path, gw.name


def test_grace_period_outlasts_gateway_shutdown_timeout(manifest):
    for gw in manifest.gateways:
        grace = gw.pod_spec.get("terminationGracePeriodSeconds", 30)
        shutdown = gw.config.get("shutdown_timeout_secs", 30)
        pre_stop = gw.container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        assert grace > shutdown + pre_stop, (
            f"{gw.name}: terminationGracePeriodSeconds {grace} <= shutdown_timeout_secs {shutdown}"
            f" + preStop {pre_stop}: SIGKILL would cut the flush"
        )


def test_selectors_and_references_resolve_within_each_manifest(manifest):
    pods = {
        _kind_name(o): o["spec"]["template"]["metadata"]["labels"]
        for o in manifest.objects
        if o["kind"] in ("Deployment", "StatefulSet")
    }

    def selects_some_pod(selector: dict[str, str]) -> bool:
        return any(selector.items() <= labels.items() for labels in pods.values())

    for obj in manifest.objects:
        where = f"{manifest.origin}: {_kind_name(obj)}"
        kind, spec = obj["kind"], obj.get("spec", {})
        if kind in ("Deployment", "StatefulSet"):
            assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items(), where
        elif kind == "Service":
            assert selects_some_pod(spec["selector"]), f"{where} selects no pod"
        elif kind == "PodDisruptionBudget":
            assert selects_some_pod(spec["selector"]["matchLabels"]), f"{where} selects no pod"
        elif kind == "NetworkPolicy":
            assert selects_some_pod(spec["podSelector"]["matchLabels"]), f"{where} selects no pod"
        elif kind == "HorizontalPodAutoscaler":
            ref = spec["scaleTargetRef"]
            assert manifest.get(ref["kind"], ref["name"]) is not None, f"{where} scales a missing {ref}"
            assert spec["maxReplicas"] >= spec["minReplicas"] >= 1, where
        elif kind == "Ingress":
            for rule in spec["rules"]:
                for p in rule["http"]["paths"]:
                    svc = manifest.get("Service", p["backend"]["service"]["name"])
                    assert svc is not None, f"{where} routes to a missing Service"
                    port = p["backend"]["service"]["port"]
                    names = {sp.get("name") for sp in svc["spec"]["ports"]}
                    assert port.get("name") in names or port.get("number"), f"{where}: port {port}"
    for obj in manifest.objects:
        if obj["kind"] != "ServiceMonitor":
            continue
        sel = obj["spec"]["selector"]["matchLabels"]
        assert any(sel.items() <= s["metadata"].get("labels", {}).items() for s in manifest.of_kind("Service")), (
            f"{manifest.origin}: ServiceMonitor selects no Service"
        )


def test_each_deploy_mode_ships_its_objects(repo_root: Path):
    def kinds(name: str) -> set[str]:
        docs = [d for d in yaml.safe_load_all((repo_root / "deploy" / name).read_text()) if d]
        return {d["kind"] for d in docs}

    assert {"ConfigMap", "Deployment"} <= kinds("sidecar.yaml")
    assert {"ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds("consumer-group.yaml")
    assert {"ConfigMap", "Deployment", "Service", "Ingress", "NetworkPolicy", "PodDisruptionBudget"} <= kinds(
        "webhook.yaml"
    )


def test_sidecar_keeps_intake_on_loopback_beside_the_application(repo_root: Path):
    docs = [d for d in yaml.safe_load_all((repo_root / "deploy" / "sidecar.yaml").read_text()) if d]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    spec = deployment["spec"]["template"]["spec"]
    gateway = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == "audit-gateway"]
    apps = [c for c in spec["containers"] if c["name"] != "audit-gateway"]
    assert len(gateway) == 1 and apps, "sidecar.yaml must run the gateway beside an application container"
    args = gateway[0]["args"]
    assert args[args.index("--listen") + 1].startswith("127.0.0.1:")
    # a native sidecar: starts before and stops after the application
    assert gateway[0].get("restartPolicy") == "Always"
    volumes = {v["name"]: v for v in spec["volumes"]}
    token_mount = next(m for m in gateway[0]["volumeMounts"] if m["mountPath"] == "/var/run/secrets/audit-gateway")
    assert "secret" in volumes[token_mount["name"]], "the upstream token must come from a Secret"
    for app in apps:
        mounted = {m["name"] for m in app.get("volumeMounts", [])}
        assert token_mount["name"] not in mounted, "the application must not see the upstream token"


def test_consumer_group_scales_on_cpu_and_documents_lag_scaling(repo_root: Path):
    text = (repo_root / "deploy" / "consumer-group.yaml").read_text()
    docs = [d for d in yaml.safe_load_all(text) if d]
    (hpa,) = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"])
    assert "gateway_kafka_consumer_lag" in text and "type: External" in text
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    sources = yaml.safe_load(cm["data"]["gateway.yaml"])["sources"]
    assert sources and all(s["type"] == "kafka" and s["group_id"] for s in sources.values())


def test_webhook_ingress_terminates_tls_for_its_hosts(repo_root: Path):
    docs = [d for d in yaml.safe_load_all((repo_root / "deploy" / "webhook.yaml").read_text()) if d]
    (ingress,) = [d for d in docs if d["kind"] == "Ingress"]
    tls_hosts = {h for t in ingress["spec"]["tls"] for h in t["hosts"]}
    assert tls_hosts and all(t.get("secretName") for t in ingress["spec"]["tls"])
    assert {r["host"] for r in ingress["spec"]["rules"]} <= tls_hosts
