"""Runs `helm lint` and the equivalent of `helm template` through helm-sdkpy.

Executed by tests/deploy/conftest.py with the Python (>= 3.12) of the venv in
.tools/helm-venv, where helm-sdkpy is installed; it uses only the standard library
and helm_sdkpy, never the project's own venv.

    python helm_runner.py JOB.json RESULT.json

JOB: {"chart": DIR, "release": NAME, "namespace": NS, "kube_version": "1.37.0",
      "cases": [{"name": ..., "values": {...}, "lint_values": {...}}]}

helm-sdkpy (0.1.x) wraps Helm 4 as a shared library but exposes neither
`helm template` nor a dry-run install, and its Lint takes no values. So:

* lint: the chart is copied, its values.yaml replaced by `lint_values` (the chart's
  defaults merged with the case's values, as `helm lint -f` would see them), and
  helm_sdkpy.Lint runs on the copy. Helm's lint messages keep their severity and
  path but lose their text (Go errors marshal to {}), so the install below is what
  explains a broken template.
* template: helm_sdkpy.Install runs against a minimal fake Kubernetes API server on
  127.0.0.1 (discovery, /version, 404 for every lookup, echo for every create)
  with HELM_DRIVER=memory. The release it returns carries the rendered manifest
  and NOTES.txt, exactly what `helm template` prints; nothing leaves this machine.
"""

from __future__ import annotations

import os
import sys
import tempfile

# The Go runtime inside helm-sdkpy takes its environment from the process's start
# (the envp handed to the shared library's initializers), so changing os.environ
# here would not reach it: re-execute with HELM_DRIVER=memory (release records stay
# in memory, nothing needs a cluster's Secrets) and Helm's cache, config and data
# directories in a temporary directory instead of $HOME.
if os.environ.get("HELM_RUNNER_HOME") is None:
    _home = tempfile.mkdtemp(prefix="helm-home-")
    _env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    _env.update(HELM_DRIVER="memory", HELM_RUNNER_HOME=_home)
    for _var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        _env[_var] = os.path.join(_home, _var.lower())
    os.execve(sys.executable, [sys.executable, *sys.argv], _env)
_HELM_HOME = os.environ["HELM_RUNNER_HOME"]

import asyncio  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import threading  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402

import helm_sdkpy  # noqa: E402

# Group versions and kinds the fake API server announces (what the chart may render).
RESOURCES: dict[str, list[tuple[str, str, bool]]] = {
    "v1": [
        ("ConfigMap", "configmaps", True),
        ("Secret", "secrets", True),
        ("Service", "services", True),
        ("ServiceAccount", "serviceaccounts", True),
        ("PersistentVolumeClaim", "persistentvolumeclaims", True),
        ("Pod", "pods", True),
        ("Namespace", "namespaces", False),
    ],
    "apps/v1": [("Deployment", "deployments", True), ("StatefulSet", "statefulsets", True)],
    "autoscaling/v2": [("HorizontalPodAutoscaler", "horizontalpodautoscalers", True)],
    "policy/v1": [("PodDisruptionBudget", "poddisruptionbudgets", True)],
    "networking.k8s.io/v1": [("Ingress", "ingresses", True), ("NetworkPolicy", "networkpolicies", True)],
    "monitoring.coreos.com/v1": [("ServiceMonitor", "servicemonitors", True)],
}

NOT_FOUND = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}


def make_handler(kube_version: str, created: list[dict]) -> type[BaseHTTPRequestHandler]:
    major, minor = kube_version.split(".")[:2]

    class FakeKubeAPI(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def _send(self, code: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/version":
                return self._send(
                    200, {"major": major, "minor": minor, "gitVersion": f"v{kube_version}", "platform": "linux/amd64"}
                )
            if path == "/api":
                return self._send(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
            if path == "/apis":
                groups: dict[str, list[dict]] = {}
                for gv in RESOURCES:
                    if "/" in gv:
                        group, version = gv.split("/")
                        groups.setdefault(group, []).append({"groupVersion": gv, "version": version})
                return self._send(
                    200,
                    {
                        "kind": "APIGroupList",
                        "apiVersion": "v1",
                        "groups": [{"name": g, "versions": vs, "preferredVersion": vs[0]} for g, vs in groups.items()],
                    },
                )
            gv = path[len("/api/") :] if path.startswith("/api/") else path[len("/apis/") :]
            if gv in RESOURCES:
                return self._send(
                    200,
                    {
                        "kind": "APIResourceList",
                        "apiVersion": "v1",
                        "groupVersion": gv,
                        "resources": [
                            {
                                "name": plural,
                                "singularName": kind.lower(),
                                "namespaced": ns,
                                "kind": kind,
                                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                            }
                            for kind, plural, ns in RESOURCES[gv]
                        ],
                    },
                )
            return self._send(404, NOT_FOUND)  # no object exists yet

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            created.append(body)
            return self._send(201, body)

        def do_PUT(self) -> None:
            return self.do_POST()

        def do_PATCH(self) -> None:
            return self.do_POST()

        def do_DELETE(self) -> None:
            return self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})

    return FakeKubeAPI


def kubeconfig(port: int, namespace: str) -> str:
    return f"""apiVersion: v1
kind: Config
clusters:
  - name: fake
    cluster: {{server: "http://127.0.0.1:{port}"}}
users:
  - name: fake
    user: {{token: fake}}
contexts:
  - name: fake
    context: {{cluster: fake, user: fake, namespace: {namespace}}}
current-context: fake
"""


async def lint(chart: str, values: dict, workdir: str) -> dict:
    copy = os.path.join(workdir, os.path.basename(chart.rstrip("/")))
    shutil.copytree(chart, copy)
    with open(os.path.join(copy, "values.yaml"), "w") as f:
        json.dump(values, f)  # JSON is YAML
    cfg = helm_sdkpy.Configuration(namespace="default")
    return await helm_sdkpy.Lint(cfg).run(copy)


async def render(chart: str, release: str, namespace: str, values: dict, kube_version: str) -> dict:
    created: list[dict] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(kube_version, created))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        cfg = helm_sdkpy.Configuration(namespace=namespace, kubeconfig=kubeconfig(server.server_address[1], namespace))
        try:
            rel = await helm_sdkpy.Install(cfg).run(release, chart, values=values, wait=False, timeout=60)
        except helm_sdkpy.HelmError as exc:
            return {"error": str(exc), "manifest": None, "notes": None, "created": created}
        info = rel.get("info") or {}
        return {"error": None, "manifest": rel.get("manifest"), "notes": info.get("notes"), "created": created}
    finally:
        server.shutdown()
        server.server_close()


async def main(job_path: str, result_path: str) -> None:
    with open(job_path) as f:
        job = json.load(f)
    results: dict[str, dict] = {}
    for case in job["cases"]:
        with tempfile.TemporaryDirectory(prefix="helm-lint-") as workdir:
            lint_result = await lint(job["chart"], case["lint_values"], workdir)
        rendered = await render(job["chart"], job["release"], job["namespace"], case["values"], job["kube_version"])
        results[case["name"]] = {"lint": lint_result, **rendered}
    out = {"helm_sdkpy": helm_sdkpy.__version__, "helm": helm_sdkpy.get_version(), "results": results}
    with open(result_path, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    try:
        asyncio.run(main(sys.argv[1], sys.argv[2]))
    finally:
        shutil.rmtree(_HELM_HOME, ignore_errors=True)
