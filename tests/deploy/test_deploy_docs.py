"""The operator docs (README.md "Run on Kubernetes", deploy/README.md, the chart README) point
at files that exist and their YAML snippets parse."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

DOCS = ["README.md", "deploy/README.md", "helm/audit-gateway/README.md"]
REPO_PATH = re.compile(r"`((?:deploy|helm|docs|tests)/[\w./*-]+)`")


@pytest.mark.parametrize("doc", DOCS)
def test_docs_name_only_files_that_exist(repo_root: Path, doc: str):
    text = (repo_root / doc).read_text()
    missing = [p for p in REPO_PATH.findall(text) if not list(repo_root.glob(p.rstrip("/")))]
    assert not missing, f"{doc} names missing paths: {missing}"


@pytest.mark.parametrize("doc", DOCS)
def test_docs_yaml_snippets_parse(repo_root: Path, doc: str):
    text = (repo_root / doc).read_text()
    for block in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL):
        yaml.safe_load(block.replace("<<", "").replace(">>", ""))


def test_kubernetes_guide_covers_each_way_secrets_scaling_and_restarts(repo_root: Path):
    readme = (repo_root / "README.md").read_text()
    assert "\n## Run on Kubernetes\n" in readme
    text = readme.split("\n## Run on Kubernetes\n", 1)[1].split("\n## ", 1)[0]
    for needle in (
        "helm install",
        "ci/webhook-values.yaml",
        "ci/consumer-values.yaml",
        "deploy/sidecar.yaml",
        "kubectl -n audit apply -f deploy/",
        "existingSecret",
        "token_file",
        "gateway_kafka_consumer_lag",
        "emptyDir",
        "PersistentVolumeClaim",
        "terminationGracePeriodSeconds",
        "check-config",
    ):
        assert needle in text, f"README.md does not mention {needle}"


def _created_secrets(text: str) -> dict[str, set[str]]:
    """``kubectl create secret generic NAME --from-file=KEY=... --from-literal=KEY=...`` → {NAME: keys}.

    A command runs on over lines ending in a backslash (in a shell block or a YAML comment).
    """
    out: dict[str, set[str]] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.search(r"create secret generic ([\w.-]+)", line)
        if not m:
            continue
        command = line
        while command.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            command += " " + lines[i]
        out.setdefault(m.group(1), set()).update(re.findall(r"--from-(?:file|literal)=([\w.-]+)=", command))
    return out


def test_the_secret_the_readme_creates_is_the_one_every_manifest_and_the_chart_example_read(repo_root: Path):
    readme = (repo_root / "README.md").read_text()
    created = _created_secrets(readme)
    assert list(created) == ["audit-gateway-credentials"], created
    keys = created["audit-gateway-credentials"]
    for f in ("deploy/webhook.yaml", "deploy/sidecar.yaml", "deploy/consumer-group.yaml"):
        text = (repo_root / f).read_text()
        docs = list(yaml.safe_load_all(text))
        volumes = [
            v["secret"]
            for d in docs
            if d and d.get("kind") == "Deployment"
            for v in d["spec"]["template"]["spec"].get("volumes", [])
            if "secret" in v
        ]
        env_refs = re.findall(r"secretKeyRef:\s*\n\s*name: ([\w.-]+)\s*\n\s*key: ([\w.-]+)", text)
        assert volumes, f
        for vol in volumes:
            assert vol["secretName"] == "audit-gateway-credentials", (f, vol)
            assert {i["key"] for i in vol.get("items", [])} <= keys, (f, vol)
        for name, key in env_refs:
            assert name == "audit-gateway-credentials" and key in keys, (f, name, key)
        # The file's own "before applying" note creates the same Secret.
        assert set(_created_secrets(text)) == {"audit-gateway-credentials"}, f
    chart_ci = (repo_root / "helm/audit-gateway/ci/webhook-values.yaml").read_text()
    assert yaml.safe_load(chart_ci)["existingSecret"] == "audit-gateway-credentials"
