"""The README's sidecar snippet is the SDK configuration that works with pangea-sdk 6.x: run it as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from pangea.config import PangeaConfig
from pangea.services import Audit

from tests.support.procs import gateway

REPO = Path(__file__).resolve().parents[2]
TOKEN = "pts_sidecar_snippet_token"


def _snippet() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("For the **sidecar**", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 1, "the README's sidecar section shows one Python snippet"
    return str(blocks[0])


def test_the_readme_sidecar_snippet_logs_through_the_gateway_with_the_sdk(tmp_path: Path) -> None:
    snippet = _snippet()
    manifest = (REPO / "deploy/sidecar.yaml").read_text()
    # The manifest sets the variable the snippet reads, to the sidecar's loopback address.
    assert re.search(r"name: AUDIT_GATEWAY_URL\s*\n\s*value: http://127\.0\.0\.1:8080", manifest)
    assert "base_url_template" in manifest and "insecure=True" not in manifest
    with gateway(tmp_path, env={"AUDIT_GATEWAY_LOCAL_TOKEN": TOKEN}) as gw:
        env = {**os.environ, "PANGEA_AUDIT_TOKEN": "any-token-on-loopback", "AUDIT_GATEWAY_URL": gw.url()}
        run = subprocess.run([sys.executable, "-c", snippet], env=env, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        la = Audit(TOKEN, config=PangeaConfig(base_url_template=gw.url("local_audit"), poll_result_timeout=30))
        events = []
        for _ in range(100):
            events = list(la.search(query="actor:payments-api", verify_events=True).result.events)
            if events:
                break
        assert [(e.envelope.event["message"], e.envelope.event["action"]) for e in events] == [
            ("payment approved", "approve")
        ]
