"""``audit-gateway``: run | check-config | test | local-audit serve | dlq ... | bench."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway import version
from gateway.config import (
    DEFAULT_ADMIN_LISTEN,
    DEFAULT_DATA_DIR,
    DEFAULT_LISTEN,
    DEFAULT_LOCAL_AUDIT_LISTEN,
    GatewayConfig,
    default_config,
    load_config,
)
from gateway.errors import ConfigError, GatewayError, os_reason

if TYPE_CHECKING:
    from gateway.preflight import RunOptions
    from gateway.runtime import LoopFactory

__all__ = ["DEFAULT_ADMIN_LISTEN", "DEFAULT_DATA_DIR", "DEFAULT_LISTEN", "DEFAULT_LOCAL_AUDIT_LISTEN", "main"]


def _load(path: str | None) -> GatewayConfig:
    return default_config() if path is None else load_config(Path(path))


def _cmd_run(args: argparse.Namespace) -> int:
    from gateway.app import Gateway
    from gateway.httpserver import raise_fd_limit
    from gateway.preflight import preflight, raise_problems
    from gateway.runtime import event_loop_factory, run_on
    from gateway.telemetry.logging import setup_logging
    from gateway.telemetry.redact import register_config
    from gateway.workers import resolve_workers

    config = _load(args.config)
    opts = _run_options(args)
    if args.worker_index is None:
        # The checks check-config runs too, before anything is built: one line for every problem.
        # (A worker of `run --workers` skips them: its supervisor ran them, and the intake port
        # is already bound by the other workers, on purpose.)
        raise_problems(preflight(config, opts))
    loop_name, loop_factory = event_loop_factory(args.event_loop)
    workers = resolve_workers(args.workers)
    register_config(config)  # before the first log line: every configured secret is masked
    setup_logging(args.log_level or config.log_level)
    logging.getLogger(__name__).info("event loop", extra={"event_loop": loop_name, "requested": args.event_loop})
    # Every connection holds a descriptor; the intake cap is sized from this limit (httpserver).
    logging.getLogger(__name__).info("file descriptor limit", extra={"nofile": raise_fd_limit()})
    if args.worker_index is not None:
        opts = dataclasses.replace(opts, **_worker_options(args))
    if workers > 1:
        return _run_supervisor(args, config, opts, workers, loop_factory)

    async def main() -> None:
        gw = Gateway(config, opts)
        try:
            await gw.start()
        except BaseException:
            await gw.stop()
            raise
        # Everything built at start-up lives until exit: move it out of the collector's way,
        # and collect young objects less often. The hot path makes few cycles, and the
        # collector was ~25% of CPU per event in the Kafka benchmark.
        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000, 50, 100)
        await gw.run_until_stopped()

    run_on(loop_factory, main())
    return 0


def _worker_options(args: argparse.Namespace) -> dict[str, Any]:
    """A ``run --workers`` worker's own :class:`RunOptions` (none for a gateway on its own)."""
    if args.worker_index is None:
        return {}
    from gateway.httpserver import share_listening_ports
    from gateway.workers import worker_upstream

    share_listening_ports()
    return {"worker": args.worker_index, "upstream": worker_upstream()}


def _run_supervisor(
    args: argparse.Namespace, config: GatewayConfig, opts: RunOptions, workers: int, loop_factory: LoopFactory
) -> int:
    """``run --workers N`` (N > 1): the supervisor of gateway/workers.py; its exit code."""
    from gateway.app import Gateway
    from gateway.runtime import run_on
    from gateway.workers import Supervisor, SupervisorSpec

    gw = Gateway(config, opts)  # resolves the addresses and checks their exposure; never started
    worker_args = ["--event-loop", args.event_loop]
    if args.config:
        worker_args += ["--config", args.config]
    if args.log_level:
        worker_args += ["--log-level", args.log_level]
    code = 1

    async def main() -> None:
        nonlocal code
        # Without `upstream:` one embedded local audit log, here, for every worker.
        upstream = None if config.upstream is not None else await gw.embedded_upstream()
        try:
            spec = SupervisorSpec(workers, worker_args, gw.listen, gw.admin_listen, gw.data_dir, upstream)
            code = await Supervisor(spec).run()
        finally:
            if gw.local_audit is not None:
                await gw.local_audit.stop()

    run_on(loop_factory, main())
    return code


def _run_options(args: argparse.Namespace) -> RunOptions:
    from gateway.preflight import RunOptions

    config = getattr(args, "config", None)
    return RunOptions(
        listen=args.listen,
        admin_listen=args.admin_listen,
        data_dir=Path(args.data_dir) if args.data_dir else None,
        local_audit_listen=args.local_audit_listen,
        config_path=Path(config) if config else None,
        watch_config=getattr(args, "watch_config", False),
        log_level=getattr(args, "log_level", None),
    )


def _cmd_check_config(args: argparse.Namespace) -> int:
    from gateway.preflight import connect, preflight, raise_problems

    config = load_config(Path(args.file))
    problems = preflight(config, _run_options(args))
    if args.connect:
        good, bad = asyncio.run(connect(config))
        for line in good:
            print(line)
        problems += bad
    raise_problems(problems)
    print("ok")
    return 0


def _cmd_tap(args: argparse.Namespace) -> int:
    """Print the events a running gateway's admin port streams on ``GET /tap``, one JSON line each."""
    import aiohttp

    from gateway.errors import StartupError

    given = (("source", args.source), ("destination", args.destination), ("stage", args.stage))
    query = {k: v for k, v in given if v is not None}
    if args.limit is not None:
        query["limit"] = str(args.limit)
    url = f"http://{args.admin}/tap"

    async def main() -> int:
        # No total timeout: a quiet stream waits for the next event as long as it takes.
        timeout = aiohttp.ClientTimeout(total=None, connect=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            try:
                async with session.get(url, params=query) as resp:
                    if resp.status != 200:
                        body = await resp.text()
                        raise StartupError(f"{url}: HTTP {resp.status}: {body[:200]}")
                    async for line in resp.content:
                        sys.stdout.write(line.decode())
                        sys.stdout.flush()
            except aiohttp.ClientConnectionError as exc:
                reason = os_reason(exc) if isinstance(exc, OSError) and exc.errno else type(exc).__name__
                raise StartupError(f"cannot connect to the admin port {args.admin}: {reason}") from None
        return 0

    return asyncio.run(main())


def _placement_flags(parser: argparse.ArgumentParser) -> None:
    """The flags ``run`` and ``check-config`` share: check-config checks what run would use."""
    parser.add_argument("--listen", help=f"intake HOST:PORT (default {DEFAULT_LISTEN})")
    parser.add_argument(
        "--admin-listen", help=f"admin HOST:PORT for /metrics /healthz /readyz (default {DEFAULT_ADMIN_LISTEN})"
    )
    parser.add_argument("--data-dir", help=f"state directory (default {DEFAULT_DATA_DIR})")
    parser.add_argument(
        "--local-audit-listen",
        help=f"embedded local audit log HOST:PORT, used without `upstream:` (default {DEFAULT_LOCAL_AUDIT_LISTEN})",
    )


def _add_run_runtime_args(run: argparse.ArgumentParser) -> None:
    """``run``'s process settings: the event loop and the worker processes (issue 18)."""
    from gateway.runtime import EVENT_LOOPS

    run.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default="auto",
        help="auto (default): uvloop when installed (the 'uvloop' extra), else asyncio's own loop",
    )
    run.add_argument(
        "--workers",
        default="1",
        help="worker processes sharing the intake port; auto: the CPUs this process may use (default 1)",
    )
    run.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)  # set by the supervisor for its workers


def build_parser(*, bench: bool = False) -> argparse.ArgumentParser:
    """The command line; ``bench``: with the ``bench`` command's arguments (imports :mod:`gateway.bench`)."""
    parser = argparse.ArgumentParser(
        prog="audit-gateway",
        description="Moves security audit events from Kafka and webhooks into a Secure Audit Log.",
    )
    parser.add_argument("--version", action="version", version=f"audit-gateway {version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the gateway")
    run.add_argument("--config", help="YAML configuration; omitted: the built-in default")
    _placement_flags(run)
    run.add_argument(
        "--watch-config",
        action="store_true",
        help="reload the configuration when its file changes (SIGHUP always reloads it)",
    )
    run.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="wins over the configuration's log_level"
    )
    _add_run_runtime_args(run)
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser(
        "check-config",
        help="run every start-up check of `run` on a configuration file (all problems at once) and exit",
    )
    check.add_argument("file")
    _placement_flags(check)
    check.add_argument(
        "--connect",
        action="store_true",
        help="also call the upstream with the configured credential and connect to each Kafka broker",
    )
    check.set_defaults(func=_cmd_check_config)

    tap = sub.add_parser(
        "tap",
        help="print events passing through a running gateway as JSON lines (secrets redacted)",
        description="Watch events pass, sampled (a slow reader skips events), from the admin port's GET /tap.",
    )
    tap.add_argument(
        "--admin", default=DEFAULT_ADMIN_LISTEN, help=f"the gateway's admin HOST:PORT ({DEFAULT_ADMIN_LISTEN})"
    )
    tap.add_argument("--source", help="only this source's events")
    tap.add_argument("--destination", help="only this destination's events")
    tap.add_argument("--stage", choices=["received", "normalized", "delivered", "rejected"], help="only this stage")
    tap.add_argument("--limit", type=int, help="stop after this many events")
    tap.set_defaults(func=_cmd_tap)

    from gateway import deadletter_cli, maptest
    from gateway.local_audit import cli as local_audit_cli

    local_audit_cli.register(sub)
    if bench:
        from gateway import bench as bench_tool

        bench_tool.register(sub)
    else:
        # Listed for --help only: the runtime never imports the benchmark tooling.
        sub.add_parser("bench", help="benchmark the webhook path side by side with a bare pipe (separate processes)")
    deadletter_cli.register(sub)
    maptest.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(bench=argv[:1] == ["bench"])
    args = parser.parse_args(argv)
    from gateway.telemetry.logging import setup_logging

    # One log schema for every command (time, level, logger, message); `run`, `local-audit serve`
    # and `test` set their own level.
    setup_logging("warning")
    try:
        code: int = args.func(args)
        return code
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except GatewayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        # The net under the start-up checks: one line naming what and where, never a traceback.
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{os_reason(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
