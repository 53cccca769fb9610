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
