"""``audit-gateway test FILE...``: mapping tests, like ``vector test``.

A test file names a gateway configuration and a list of cases; each case posts a raw vendor
body to one webhook source and states what must come out: the normalized events the upstream
receives, or the error the sender gets.  Each case runs the real gateway in this process
(intake, admission, the destination's schema, signing, batching and the Pangea sink), against
an in-process upstream on loopback that records what it is sent, so a passing case is exactly
what ``run`` would deliver::

    config: gateway.yaml            # relative to this file; omitted: the built-in configuration
    env: {OKTA_SECRET: test}        # ${VAR}s of the configuration, for these tests only
    tests:
      - name: an Auth0 login maps to the standard schema
        source: auth0
        body_file: auth0_login.json  # or `body:` (a string is sent as is, anything else as JSON)
        headers: {Content-Type: application/json}
        expect:
          events:
            - {message: Success Login, actor: maria@acme.example, action: s, ...}
      - name: a body that is not JSON is refused
        source: auth0
        body: "not json"
        expect:
          status: 400
          errors: [{code: BadFormat}]

Only webhook sources can be tested; every other source of the configuration is left out, the
buffer is in memory and dead letters go to a temporary folder.  A destination whose schema is
``upstream`` cannot be tested (its schema lives upstream): give it an inline schema.
Exit status: 0 all passed, 1 a case failed, 2 the test file or configuration is invalid.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from aiohttp import web
from pydantic import Field, SecretStr, ValidationError

from gateway.buffer.config import BufferConfig
from gateway.config import GatewayConfig, default_config, load_config
from gateway.configbase import StrictModel
from gateway.errors import ConfigError
from gateway.sinks.deadletter.config import DeadLetterConfig
from gateway.sinks.pangea.config import UpstreamConfig
from gateway.sources.webhook.config import WebhookSourceConfig
from gateway.telemetry.logging import setup_logging

_TOKEN = "pts_audit_gateway_test"  # noqa: S105 - the in-process upstream's token, on loopback only


class ExpectConfig(StrictModel):
    """What a case must produce; give ``events``, or ``status`` (with ``errors``), or both."""

    events: list[dict[str, Any]] | None = Field(
        default=None, description="The normalized events the upstream must receive, in order, exactly."
    )
    status: int | None = Field(
        default=None, description="The HTTP status the sender must get; default: any 2xx when `events` is given."
    )
    errors: list[dict[str, str]] | None = Field(
        default=None,
        description="Errors the answer's `result.errors` must hold, in order; each lists only the members to compare.",
    )


class CaseConfig(StrictModel):
    """One test case: a body posted to a source and its expected outcome."""

    name: str = Field(description="What the case shows; printed with its result.")
    source: str = Field(description="The webhook source (a key under the configuration's `sources`).")
    path: str | None = Field(
        default=None, description="Route to post to; default: the source's path (`/v2/log` for format `pangea`)."
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Request headers.")
    body: Any = Field(default=None, description="The body: a string is sent as is, any other value as JSON.")
    body_file: Path | None = Field(default=None, description="A file holding the body, relative to the test file.")
    expect: ExpectConfig = Field(description="The expected outcome.")


class TestFileConfig(StrictModel):
    """A file of mapping tests."""

    config: Path | None = Field(
        default=None, description="The gateway configuration, relative to the test file; default: the built-in one."
    )
    env: dict[str, str] = Field(default_factory=dict, description="Values of the configuration's ${VAR}s.")
    tests: list[CaseConfig] = Field(min_length=1, description="The cases.")


@dataclass
class Outcome:
    """What one case produced."""

    status: int
    answer: Any
    events: list[dict[str, Any]] = field(default_factory=list)


class _Upstream:
    """An in-process Pangea-compatible upstream on loopback that records every event it is sent."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v2/log", self._log)
        app.router.add_post("/v2/log_async", self._log)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self.url = ""

    async def _log(self, request: web.Request) -> web.Response:
        doc = orjson.loads(await request.read())
        items = doc.get("events", [])
        self.events.extend(item["event"] for item in items)
        results = [{"hash": f"{len(self.events) - len(items) + i:064x}"} for i in range(len(items))]
        return web.json_response(
            {
                "request_id": "prq_test",
                "request_time": "2026-01-01T00:00:00.000000Z",
                "response_time": "2026-01-01T00:00:00.000000Z",
                "status": "Success",
                "summary": "Logged",
                "result": {"results": results},
            }
        )

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        await self._runner.cleanup()


def _case_config(config: GatewayConfig, case: CaseConfig, data_dir: Path, upstream_url: str) -> GatewayConfig:
    """The configuration a case runs: its source alone, a memory buffer, the recording upstream."""
    src = config.sources.get(case.source)
    if not isinstance(src, WebhookSourceConfig):
        known = ", ".join(n for n, s in config.sources.items() if isinstance(s, WebhookSourceConfig))
        raise ConfigError(f"no webhook source {case.source!r} in the configuration (webhook sources: {known})")
    dest = config.destinations[src.destination]
    if dest.schema_ == "upstream":
        raise ConfigError(
            "a destination with `schema: upstream` cannot be tested offline; give it an inline schema",
            f"destinations.{src.destination}.schema",
        )
    return config.model_copy(
        update={
            "listen": "127.0.0.1:0",
            "admin_listen": "127.0.0.1:0",
            "data_dir": data_dir,
            "upstream": UpstreamConfig(url=upstream_url, token=SecretStr(_TOKEN)),
            "buffer": BufferConfig(),
            "deadletter": DeadLetterConfig(),
            "sources": {case.source: src},
            "destinations": {src.destination: dest},
        }
    )


async def run_case(config: GatewayConfig, case: CaseConfig, body: bytes, data_dir: Path) -> Outcome:
    """Run one case through a gateway of its own; returns the answer and the events upstream received."""
    from gateway.app import Gateway

    upstream = _Upstream()
    await upstream.start()
    try:
        cfg = _case_config(config, case, data_dir, upstream.url)
        src = cfg.sources[case.source]
        assert isinstance(src, WebhookSourceConfig)
        path = case.path or (src.route_path + "/v2/log" if src.format == "pangea" else src.route_path)
        gw = Gateway(cfg)
        await gw.start()
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.post(f"http://127.0.0.1:{gw.intake_port}{path}", data=body, headers=case.headers) as r,
            ):
                raw = await r.read()
                status = r.status
        finally:
            await gw.stop()
        try:
            answer: Any = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            answer = raw.decode(errors="replace")
        return Outcome(status, answer, list(upstream.events))
    finally:
        await upstream.stop()


def _pretty(value: Any) -> list[str]:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode().splitlines()


def _diff(what: str, expected: Any, actual: Any) -> list[str]:
    return [
        f"  {what} differ:",
        *(
            "    " + line
            for line in difflib.unified_diff(_pretty(expected), _pretty(actual), "expected", "actual", lineterm="", n=3)
        ),
    ]


def check(expect: ExpectConfig, out: Outcome) -> list[str]:
    """The mismatches between a case's expectation and its outcome, as printable lines (none: passed)."""
    problems: list[str] = []
    if expect.status is not None:
        if out.status != expect.status:
            problems.append(f"  status: expected {expect.status}, got {out.status}")
    elif expect.events is not None and not 200 <= out.status < 300:
        problems.append(f"  status: expected 2xx, got {out.status}")
    if expect.events is not None and out.events != expect.events:
        problems += _diff("events", expect.events, out.events)
    if expect.errors is not None:
        got = out.answer.get("result", {}).get("errors", []) if isinstance(out.answer, dict) else []
        got = got if isinstance(got, list) else []
        seen = [{k: e.get(k) for k in want} for want, e in zip(expect.errors, got, strict=False)]
        if len(got) != len(expect.errors) or seen != expect.errors:
            problems += _diff("errors", expect.errors, got)
    if problems and out.status >= 300 and expect.errors is None:
        problems.append(f"  answer: {orjson.dumps(out.answer).decode()[:500]}")
    return problems


def load_tests(path: Path) -> tuple[GatewayConfig, TestFileConfig]:
    """Read a test file and its configuration; raises ConfigError naming what is wrong."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    try:
        tests = TestFileConfig.model_validate(doc)
    except ValidationError as exc:
        lines = [
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        ]
        raise ConfigError(f"{path}: " + "; ".join(lines)) from None
    if tests.config is None:
        config = default_config()
    else:
        import os

        config = load_config(path.parent / tests.config, env={**os.environ, **tests.env})
    return config, tests


def _body(case: CaseConfig, base: Path) -> bytes:
    if case.body_file is not None:
        try:
            return (base / case.body_file).read_bytes()
        except OSError as exc:
            raise ConfigError(f"test {case.name!r}: cannot read body_file {case.body_file}: {exc.strerror}") from None
    if isinstance(case.body, str):
        return case.body.encode()
    return orjson.dumps(case.body)


async def run_file(path: Path, out: Any = sys.stdout) -> tuple[int, int]:
    """Run every case of one test file, printing each result; returns (passed, failed)."""
    config, tests = load_tests(path)
    passed = failed = 0
    print(f"running {len(tests.tests)} tests from {path}", file=out)
    with tempfile.TemporaryDirectory(prefix="audit-gateway-test-") as tmp:
        for i, case in enumerate(tests.tests):
            outcome = await run_case(config, case, _body(case, path.parent), Path(tmp) / str(i))
            problems = check(case.expect, outcome)
            if problems:
                failed += 1
                print(f"test {case.name} ... FAILED", file=out)
                for line in problems:
                    print(line, file=out)
            else:
                passed += 1
                print(f"test {case.name} ... passed", file=out)
    return passed, failed


def _cmd(args: argparse.Namespace) -> int:
    # The gateways the cases start log at warning and above only; their output is the cases'.
    setup_logging("info" if args.verbose else "error")

    async def main() -> tuple[int, int]:
        passed = failed = 0
        for f in args.files:
            p, fl = await run_file(Path(f))
            passed, failed = passed + p, failed + fl
        return passed, failed

    passed, failed = asyncio.run(main())
    print(f"mapping tests: {passed} passed, {failed} failed")
    return 1 if failed else 0


def register(sub: Any) -> None:
    p = sub.add_parser("test", help="run mapping tests: raw vendor bodies in, expected normalized events out")
    p.add_argument("files", nargs="+", help="YAML test files")
    p.add_argument("--verbose", action="store_true", help="show the gateways' own log lines")
    p.set_defaults(func=_cmd)
