"""Micro-benchmark of the normalize hot paths (not a test; no timing is asserted anywhere).

Run: .venv/bin/python tests/unit/normalize/bench_normalize.py
"""

from __future__ import annotations

import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.normalize.schema import Schema
from gateway.normalize.vendors import auth0

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "vendors"


def per_call(fn: Callable[[], Any], number: int, per: int = 1) -> float:
    """Best of 5 runs, in microseconds per item."""
    return min(timeit.repeat(fn, number=number, repeat=5)) / number / per * 1e6


def main() -> None:
    schema = Schema.standard()
    base = {"message": "User login", "actor": "maria.lopez@acme.example", "action": "login", "target": "Acme Portal",
            "status": "success", "source": "203.0.113.24", "tenant_id": "acme"}  # fmt: skip
    cases = {
        "standard normalize, 7 string fields": base,
        "standard normalize, + timestamp ...Z": dict(base, timestamp="2024-06-11T08:15:12.345Z"),
        "standard normalize, + timestamp +02:00": dict(base, timestamp="2024-06-11T10:15:12.345+02:00"),
        "standard normalize, + epoch ms timestamp": dict(base, timestamp=1718093712345),
    }
    for name, event in cases.items():
        print(f"{name}: {per_call(lambda e=event: schema.normalize(e), 200_000):.2f} us/event")  # type: ignore[misc]

    body = (FIXTURES / "auth0_batch1_jsonarray.json").read_bytes()
    n = len(auth0.decode(body))
    print(f"auth0 decode+to_event: {per_call(lambda: [auth0.to_event(r) for r in auth0.decode(body)], 20_000, n):.2f}"
          " us/event")  # fmt: skip
    full = per_call(lambda: [schema.normalize(auth0.to_event(r)[0]) for r in auth0.decode(body)], 20_000, n)
    print(f"auth0 decode+to_event+normalize: {full:.2f} us/event")


if __name__ == "__main__":
    main()
