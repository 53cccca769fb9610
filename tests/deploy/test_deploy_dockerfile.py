"""deploy/Dockerfile: multi-stage wheel build, non-root numeric user, the agreed
ports and entrypoint, read-only-root friendly, and no secrets baked in.

No Docker engine runs in CI, so these read the Dockerfile (continuation lines
joined, comments dropped) rather than build it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SECRET_WORDS = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|PRIVATE_?KEY|CREDENTIAL", re.IGNORECASE)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]


def _parse(path: Path) -> tuple[list[tuple[str, str]], list[Stage]]:
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    instructions = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    stages: list[Stage] = []
    for kw, rest in instructions:
        if kw == "FROM":
            parts = rest.split()
            parts = [p for p in parts if not p.startswith("--")]
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name))
        elif stages:
            stages[-1].instructions.append((kw, rest))
    return instructions, stages


@pytest.fixture(scope="module")
def dockerfile(repo_root: Path) -> tuple[list[tuple[str, str]], list[Stage]]:
    return _parse(repo_root / "deploy/Dockerfile")


def test_image_is_built_in_stages_from_python_slim(dockerfile):
    instructions, stages = dockerfile
    assert len(stages) >= 2, "multi-stage: a builder stage and a runtime stage"
    args = {rest.split("=", 1)[0]: rest.split("=", 1)[1] for kw, rest in instructions if kw == "ARG" and "=" in rest}
    bases = [re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), s.base) for s in stages]
    assert all(re.fullmatch(r"python:3\.11-slim(-\w+)?", b) for b in bases), bases


def test_wheels_are_built_once_and_installed_offline_in_the_final_stage(dockerfile):
    _, stages = dockerfile
    builder, final = stages[0], stages[-1]
    assert any("pip wheel" in r for r in builder.all("RUN")), "the builder builds wheels"
    installs = [r for r in final.all("RUN") if "pip install" in r]
    assert installs, "the final stage installs the wheels"
    assert all("--no-index" in r for r in installs), "the final stage must not fetch from an index"
    assert any(f"from={builder.name}" in r for r in installs) or any(
        f"--from={builder.name}" in r for r in final.all("COPY")
    ), "the final stage takes its wheels from the builder"
    assert not any("pip wheel" in r for r in final.all("RUN")), "wheels are built once"


def test_final_stage_runs_as_a_numeric_non_root_user(dockerfile):
    _, stages = dockerfile
    users = stages[-1].all("USER")
    assert users, "the final stage sets USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, f"USER {users[-1]}: numeric and not root (runAsNonRoot needs a number)"
    assert not gid or (gid.isdigit() and int(gid) != 0)


def test_image_exposes_intake_and_admin_ports(dockerfile, contract):
    _, stages = dockerfile
    exposed = {int(p.split("/")[0]) for rest in stages[-1].all("EXPOSE") for p in rest.split()}
    assert exposed == {contract.intake_port, contract.admin_port}


def test_entrypoint_and_cmd_run_the_gateway_in_exec_form(dockerfile, contract):
    _, stages = dockerfile
    assert json.loads(stages[-1].all("ENTRYPOINT")[-1]) == ["audit-gateway"]
    assert json.loads(stages[-1].all("CMD")[-1]) == [
        "run",
        "--config",
        contract.config_path,
        "--listen",
        f"0.0.0.0:{contract.intake_port}",
        "--admin-listen",
        f"0.0.0.0:{contract.admin_port}",
        "--data-dir",
        contract.data_dir,
    ]


def test_image_works_with_a_read_only_root_filesystem(dockerfile, contract):
    _, stages = dockerfile
    final = stages[-1]
    env = " ".join(final.all("ENV"))
    assert re.search(r"\bPYTHONDONTWRITEBYTECODE=1\b", env), "no .pyc writes at run time"
    assert any(contract.data_dir in v for v in final.all("VOLUME")), "the data dir is a volume"
    assert any(f"chown -R {contract.uid}:{contract.uid} {contract.data_dir}" in r for r in final.all("RUN")), (
        "the data dir belongs to the runtime user"
    )


def test_no_secret_is_baked_into_the_image(dockerfile, repo_root: Path):
    instructions, _ = dockerfile
    for kw, rest in instructions:
        if kw in ("ENV", "ARG", "LABEL"):
            for assignment in re.findall(r"([A-Za-z_][\w.-]*)=", rest) or [rest.split()[0]]:
                assert not SECRET_WORDS.search(assignment), f"{kw} {rest}: a secret must not be built in"
        if kw in ("COPY", "ADD"):
            assert not re.search(r"\.env\b|\.pem\b|\.key\b|token|secret", rest, re.IGNORECASE), f"{kw} {rest}"
    ignore = (repo_root / "deploy/Dockerfile.dockerignore").read_text().splitlines()
    first_rule = next(line for line in ignore if line and not line.startswith("#"))
    assert first_rule == "*", "the build context is an allow-list: nothing but the sources reaches the builder"
