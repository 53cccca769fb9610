"""``audit-gateway``: run | check-config | test | local-audit serve | dlq ... | bench."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

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

__all__ = ["DEFAULT_ADMIN_LISTEN", "DEFAULT_DATA_DIR", "DEFAULT_LISTEN", "DEFAULT_LOCAL_AUDIT_LISTEN", "main"]


def _load(path: str | None) -> GatewayConfig:
    return default_config() if path is None else load_config(Path(path))


def _cmd_run(args: argparse.Namespace) -> int:
    from gateway.app import Gateway
    from gateway.httpserver import raise_fd_limit
    from gateway.preflight import preflight, raise_problems
    from gateway.telemetry.logging import setup_logging
    from gateway.telemetry.redact import register_config

    config = _load(args.config)
    opts = _run_options(args)
    # The checks check-config runs too, before anything is built: one line for every problem.
    raise_problems(preflight(config, opts))
    register_config(config)  # before the first log line: every configured secret is masked
    setup_logging(args.log_level or config.log_level)
    # Every connection holds a descriptor; the intake cap is sized from this limit (httpserver).
    logging.getLogger(__name__).info("file descriptor limit", extra={"nofile": raise_fd_limit()})

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

    asyncio.run(main())
    return 0


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
