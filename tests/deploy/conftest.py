"""Fixtures of the deployment tests: the plain manifests in deploy/, the Helm chart
rendered through helm-sdkpy, and the gateway containers and configs inside both.

Tests ask for one of these parametrizing arguments (see pytest_generate_tests):
  deploy_file      one of deploy/*.yaml
  chart_case       one of helm/audit-gateway/ci/*-values.yaml (by stem)
  chart_reject_case  one of CHART_REJECTS: values the chart must refuse
  manifest_origin  any of the above: "deploy/<file>" or "chart:<case>"

helm-sdkpy needs Python >= 3.12 while the project runs on 3.11, so the first test
that needs the chart creates a venv in <repo>/.tools/helm-venv (gitignored, reused
by later runs) with a Python >= 3.12 found on this machine and installs helm-sdkpy
there; tests/deploy/helm_runner.py then lints and renders the chart in that venv.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DIR = REPO_ROOT / "deploy"
CHART_DIR = REPO_ROOT / "helm" / "audit-gateway"
CI_VALUES_DIR = CHART_DIR / "ci"
TOOLS_DIR = REPO_ROOT / ".tools"
HELM_VENV = TOOLS_DIR / "helm-venv"
HELM_RUNNER = Path(__file__).resolve().parent / "helm_runner.py"

# helm_runner.py relies on this API: Configuration(kubeconfig=<yaml>), Lint(cfg).run(path),
# Install(cfg).run(..., wait=False) returning the release with "manifest" and "info.notes".
HELM_SDKPY_REQUIREMENT = "helm-sdkpy>=0.1.32,<0.2"


@dataclass(frozen=True)
class Contract:
    """What the image, the manifests, the chart and the gateway's defaults agree on."""

    intake_port: int = 8080
    admin_port: int = 9090
    config_dir: str = "/etc/audit-gateway"
    config_path: str = "/etc/audit-gateway/gateway.yaml"
    data_dir: str = "/var/lib/audit-gateway"
    container: str = "audit-gateway"
    liveness_path: str = "/healthz"
    readiness_path: str = "/readyz"
    metrics_path: str = "/metrics"
    uid: int = 10001


CONTRACT = Contract()
CONFIG_DIR = CONTRACT.config_dir
GATEWAY_CONTAINER = CONTRACT.container
RELEASE = "audit-gateway"
NAMESPACE = "audit"

# Chart inputs that must fail to render, with the message the chart gives.
CHART_REJECTS: dict[str, tuple[dict[str, Any], str]] = {
    "reject-sidecar-mode": ({"mode": "sidecar", "existingSecret": "x"}, 'mode must be "consumer" or "webhook"'),
    "reject-short-grace-period": (
        {"existingSecret": "x", "terminationGracePeriodSeconds": 30},
        "terminationGracePeriodSeconds (30) must exceed",
    ),
    "reject-missing-upstream-token": ({}, "set existingSecret, or secret.upstreamToken"),
    "reject-ingress-in-consumer-mode": (
        {"mode": "consumer", "existingSecret": "x", "ingress": {"enabled": True}},
        "ingress.enabled needs mode: webhook",
    ),
}


def deploy_files() -> list[Path]:
    return sorted(DEPLOY_DIR.glob("*.yaml"))


def ci_values_files() -> list[Path]:
    return sorted(CI_VALUES_DIR.glob("*-values.yaml"))


def chart_case_name(path: Path) -> str:
    return path.name.removesuffix("-values.yaml")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    deploy = [f"deploy/{p.name}" for p in deploy_files()]
    chart = [f"chart:{chart_case_name(p)}" for p in ci_values_files()]
    if "deploy_file" in metafunc.fixturenames:
        metafunc.parametrize("deploy_file", deploy)
    if "chart_case" in metafunc.fixturenames:
        metafunc.parametrize("chart_case", [c.removeprefix("chart:") for c in chart])
    if "manifest_origin" in metafunc.fixturenames:
        metafunc.parametrize("manifest_origin", deploy + chart)
    if "chart_reject_case" in metafunc.fixturenames:
        metafunc.parametrize("chart_reject_case", list(CHART_REJECTS))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The first chart test may create the helm venv (a ~50 MB download): give it time.
    for item in items:
        if "helm_results" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(900))


# --------------------------------------------------------------------------- YAML


def load_yaml_documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of values: maps merge, a null in the override deletes the key."""
    out = dict(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# --------------------------------------------------------------------------- manifests


@dataclass(frozen=True)
class GatewayWorkload:
    """One workload running the gateway, with the config its ConfigMap carries."""

    origin: str
    workload: dict[str, Any]
    pod_spec: dict[str, Any]
    container: dict[str, Any]
    config_map: dict[str, Any]
    config_text: str
    config: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.origin}:{self.workload['kind']}/{self.workload['metadata']['name']}"

    def arg(self, flag: str) -> str | None:
        args = list(self.container.get("args") or [])
        return args[args.index(flag) + 1] if flag in args else None


@dataclass(frozen=True)
class Manifest:
    origin: str
    objects: list[dict[str, Any]]
    gateways: list[GatewayWorkload] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o.get("kind") == kind]

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        return next((o for o in self.of_kind(kind) if o["metadata"]["name"] == name), None)


WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")


def pod_spec_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    if obj.get("kind") in WORKLOAD_KINDS:
        return obj["spec"]["template"]["spec"]
    return None


def all_containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(pod_spec.get("initContainers") or []) + list(pod_spec.get("containers") or [])


def build_manifest(origin: str, objects: list[dict[str, Any]]) -> Manifest:
    gateways = []
    for obj in objects:
        spec = pod_spec_of(obj)
        if spec is None:
            continue
        for container in all_containers(spec):
            if container["name"] != GATEWAY_CONTAINER:
                continue
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts") or []}
            assert CONFIG_DIR in mounts, f"{origin}: gateway container mounts nothing at {CONFIG_DIR}"
            volume = next(v for v in spec.get("volumes") or [] if v["name"] == mounts[CONFIG_DIR])
            assert "configMap" in volume, f"{origin}: {CONFIG_DIR} is not a ConfigMap volume"
            cm_name = volume["configMap"]["name"]
            cm = next((o for o in objects if o.get("kind") == "ConfigMap" and o["metadata"]["name"] == cm_name), None)
            assert cm is not None, f"{origin}: ConfigMap {cm_name} mounted at {CONFIG_DIR} is not defined"
            text = cm["data"]["gateway.yaml"]
            gateways.append(GatewayWorkload(origin, obj, spec, container, cm, text, yaml.safe_load(text)))
    return Manifest(origin, objects, gateways)


# --------------------------------------------------------------------------- helm venv


def _python_candidates() -> list[str]:
    found: list[str] = []
    for name in ("python3.12", "python3.13", "python3.14"):
        path = shutil.which(name)
        if path:
            found.append(path)
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    for pattern in ("3.12*", "3.13*", "3.14*"):
        found.extend(sorted(glob.glob(str(pyenv_root / "versions" / pattern / "bin" / "python3"))))
    system = shutil.which("python3")  # last resort: used only if it is >= 3.12 itself
    if system:
        found.append(system)
    return list(dict.fromkeys(found))


def find_python_312() -> str:
    """A Python >= 3.12 that really runs (pyenv shims of uninstalled versions do not)."""
    tried = []
    for candidate in _python_candidates():
        try:
            proc = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info >= (3, 12))"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        except OSError as exc:
            tried.append(f"{candidate}: {exc}")
            continue
        if proc.returncode == 0 and proc.stdout.strip() == "True":
            return candidate
        tried.append(f"{candidate}: exit {proc.returncode} {proc.stderr.strip()[:200]}")
    pytest.fail(
        "helm-sdkpy needs Python >= 3.12 and none was found (looked for python3.12/3.13/3.14/python3 on PATH "
        f"and under $PYENV_ROOT/versions). Install one, e.g. `pyenv install 3.12`. Tried: {tried or 'nothing'}",
        pytrace=False,
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run(cmd: list[str], what: str, timeout: float) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        pytest.fail(
            f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}", pytrace=False
        )
    return proc


@pytest.fixture(scope="session")
def helm_venv_python() -> str:
    """<repo>/.tools/helm-venv/bin/python with helm-sdkpy, created once and reused."""
    venv_python = HELM_VENV / "bin" / "python"
    stamp = HELM_VENV / ".requirement"
    with _locked(TOOLS_DIR / "helm-venv.lock"):
        ready = (
            venv_python.exists()
            and stamp.exists()
            and stamp.read_text() == HELM_SDKPY_REQUIREMENT
            and subprocess.run(
                [str(venv_python), "-c", "import helm_sdkpy"], capture_output=True, timeout=120, check=False
            ).returncode
            == 0
        )
        if not ready:
            shutil.rmtree(HELM_VENV, ignore_errors=True)
            python = find_python_312()
            _run([python, "-m", "venv", str(HELM_VENV)], "creating the helm venv", 300)
            _run(
                [
                    str(venv_python),
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    HELM_SDKPY_REQUIREMENT,
                ],
                f"pip install {HELM_SDKPY_REQUIREMENT}",
                780,
            )
            stamp.write_text(HELM_SDKPY_REQUIREMENT)
    return str(venv_python)


@pytest.fixture(scope="session")
def kube_version() -> str:
    """The newest Kubernetes version whose schemas kubernetes-validate ships."""
    import kubernetes_validate

    return str(kubernetes_validate.latest_version())


@pytest.fixture(scope="session")
def helm_results(helm_venv_python: str, kube_version: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Lint and render the chart once per ci/*-values.yaml (and the CHART_REJECTS inputs)."""
    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    cases = []
    for path in ci_values_files():
        values = yaml.safe_load(path.read_text()) or {}
        cases.append({"name": chart_case_name(path), "values": values, "lint_values": deep_merge(defaults, values)})
    for name, (values, _) in CHART_REJECTS.items():
        cases.append({"name": name, "values": values, "lint_values": None})
    work = tmp_path_factory.mktemp("helm")
    job, result = work / "job.json", work / "result.json"
    job.write_text(
        json.dumps(
            {
                "chart": str(CHART_DIR),
                "release": RELEASE,
                "namespace": NAMESPACE,
                "kube_version": kube_version,
                "cases": cases,
            }
        )
    )
    _run([helm_venv_python, str(HELM_RUNNER), str(job), str(result)], "helm_runner.py", 600)
    return json.loads(result.read_text())


@pytest.fixture(scope="session")
def chart_manifests(helm_results: dict) -> dict[str, Manifest]:
    out = {}
    for path in ci_values_files():
        name = chart_case_name(path)
        res = helm_results["results"][name]
        if res["error"] or not res["manifest"]:
            pytest.fail(f"chart did not render with ci/{path.name}: {res['error']}", pytrace=False)
        out[name] = build_manifest(f"chart:{name}", load_yaml_documents(res["manifest"]))
    return out


@pytest.fixture
def manifest(request: pytest.FixtureRequest, manifest_origin: str) -> Manifest:
    if manifest_origin.startswith("chart:"):
        manifests: dict[str, Manifest] = request.getfixturevalue("chart_manifests")
        return manifests[manifest_origin.removeprefix("chart:")]
    path = REPO_ROOT / manifest_origin
    return build_manifest(manifest_origin, load_yaml_documents(path.read_text()))


# --------------------------------------------------------------------------- gateway CLI

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _dummy_env_for(config_text: str) -> dict[str, str]:
    """The environment plus a dummy value for every ${VAR} (without default) the config uses."""
    env = dict(os.environ)
    for name in _ENV_REF.findall(config_text):
        env[name] = f"dummy-{name.lower()}"
    env.setdefault("PANGEA_AUDIT_TOKEN", "pts_dummy_token")
    return env


@pytest.fixture(scope="session")
def contract() -> Contract:
    return CONTRACT


@pytest.fixture(scope="session")
def dummy_env_for() -> Any:
    """dummy_env_for(config_text) -> os.environ plus a dummy for each ${VAR} the config needs."""
    return _dummy_env_for


@pytest.fixture(scope="session")
def audit_gateway_cli() -> list[str]:
    """The installed `audit-gateway` console script of this venv."""
    script = Path(sys.executable).parent / "audit-gateway"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from gateway.cli import main; sys.exit(main())"]


@pytest.fixture(scope="session")
def chart_rejects() -> dict[str, tuple[dict[str, Any], str]]:
    """Values the chart must refuse, by case name, with the message it must give."""
    return CHART_REJECTS


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
