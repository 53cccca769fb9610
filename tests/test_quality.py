"""The codebase stays strictly typed and lint-clean: mypy --strict and ruff run as part of the suite."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.support.procs import REPO


def test_ruff_reports_no_findings() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "gateway", "tests"], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_strict_reports_no_errors() -> None:
    out = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr


# Built by concatenation so that this file does not match its own patterns.
_OUTSIDE_READS = re.compile(
    "|".join(
        [
            r"\.\./" + "shared",  # a relative path beside the repository
            r"/\s*['\"]" + "shared" + r"['\"]",  # a path joined with a "shared" part
            r"/\s*['\"]\.\." + r"['\"]",  # a path joined with "..": it climbs out of where it started
        ]
    )
)
_TEXT_SUFFIXES = {"", ".py", ".md", ".toml", ".yaml", ".yml", ".json", ".cfg", ".ini", ".txt", ".sh", ".tpl"}


def test_nothing_in_the_repository_reads_beside_it() -> None:
    files = [REPO / "README.md", REPO / "pyproject.toml"]
    for top in ("gateway", "tests", "deploy", "helm", ".ci"):
        files += [p for p in (REPO / top).rglob("*") if p.is_file() and p.suffix in _TEXT_SUFFIXES]
    found = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for path in files
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if _OUTSIDE_READS.search(line)
    ]
    assert found == [], "reads outside the repository:\n" + "\n".join(found)


def test_the_runtime_and_the_test_support_do_not_import_the_benchmark_tooling() -> None:
    probe = (
        "import sys\n"
        "import gateway.cli, gateway.app, gateway.deadletter_cli, gateway.local_audit.server\n"
        "import tests.support.procs, tests.kafka_broker\n"
        "gateway.cli.build_parser()\n"
        "print(sorted(m for m in sys.modules if m == 'gateway.bench' or m.startswith('tests.perf')))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_imports_follow_the_layers_declared_in_pyproject() -> None:
    """``lint-imports``: the ``[tool.importlinter]`` contracts of pyproject.toml (layers, top to bottom)."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(lint_imports), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
