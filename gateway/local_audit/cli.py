"""``audit-gateway local-audit serve``: run the local audit log on its own; ``local-audit token
create|list|revoke``: manage its service tokens.

Wired by the gateway CLI as ``local_audit.cli.register(subparsers)``; the parsed namespace's
``func(args)`` runs the server until SIGINT/SIGTERM and returns the exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import signal
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pydantic
import yaml

from gateway.local_audit import oauth
from gateway.local_audit.query import parse_duration
from gateway.local_audit.server import LocalAuditServer
from gateway.local_audit.settings import (
    DEFAULT_DB_PATH,
    FaultSettings,
    LocalAuditSettings,
    load_configs_file,
)
from gateway.local_audit.tokens import ENDPOINTS, RESTRICTABLE_FIELD, create_token, list_tokens, revoke_token
from gateway.telemetry.logging import JsonFormatter

__all__ = ["build_settings", "parse_listen", "register", "serve"]

DEFAULT_LISTEN = "127.0.0.1:8090"


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) into its parts."""
    host, sep, port_s = value.rpartition(":")
    if not sep or not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host or "127.0.0.1", int(port_s)


def _ratio(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in 0..1, got {value!r}") from None
    if not 0.0 <= x <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in 0..1, got {value!r}")
    return x


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``local-audit serve`` to the gateway's sub-commands."""
    parser = subparsers.add_parser(
        "local-audit",
        help="the embedded Pangea-compatible audit log",
        description="The embedded Pangea-compatible Secure Audit Log (SQLite).",
    )
    sub = parser.add_subparsers(dest="local_audit_command", required=True, metavar="COMMAND")
    serve_p = sub.add_parser(
        "serve",
        help="run the local audit log until SIGINT/SIGTERM",
        description="Serve /v1/log, /v2/log, /v2/log_async, /v1/search, /v1/results, /v1/root, /v1/schema.",
    )
    serve_p.add_argument(
        "--listen",
        type=parse_listen,
        default=parse_listen(DEFAULT_LISTEN),
        metavar="HOST:PORT",
        help=f"address to bind (default {DEFAULT_LISTEN}; port 0 picks one)",
    )
    serve_p.add_argument(
        "--db",
        type=Path,
        default=Path(".") / DEFAULT_DB_PATH,
        metavar="FILE",
        help=f"SQLite database (default ./{DEFAULT_DB_PATH}); the generated token is kept in FILE.token",
    )
    serve_p.add_argument("--configs", type=Path, metavar="FILE", help="YAML/JSON file of configurations")
    serve_p.add_argument(
        "--synchronous",
        choices=("OFF", "NORMAL", "FULL"),
        default="NORMAL",
        help="SQLite synchronous mode (default NORMAL: safe against process crashes)",
    )
    serve_p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    faults = serve_p.add_argument_group(
        "fault injection, for tests only: needs --enable-test-faults (then also settable at runtime: POST /_faults)"
    )
    faults.add_argument(
        "--enable-test-faults",
        action="store_true",
        help="serve the fault-injection endpoints /_faults and allow the --fault-* flags (tests only)",
    )
    faults.add_argument("--fault-latency-ms", type=float, default=0.0, metavar="MS", help="delay every API call")
    faults.add_argument(
        "--fault-5xx-ratio", type=_ratio, default=0.0, metavar="R", help="share of calls answered 503/500/502"
    )
    faults.add_argument("--fault-429-ratio", type=_ratio, default=0.0, metavar="R", help="share of calls answered 429")
    faults.add_argument(
        "--fault-retry-after-secs", type=int, default=1, metavar="S", help="Retry-After on 429/503 (default 1)"
    )
    faults.add_argument(
        "--fault-202-every",
        type=int,
        default=0,
        metavar="N",
        help="answer every Nth /v1/log and /v2/log call 202 (0: never)",
    )
    faults.add_argument(
        "--fault-pending-polls",
        type=int,
        default=1,
        metavar="N",
        help="polls of /request/{id} answered 202 before the result (default 1)",
    )
    faults.add_argument("--fault-outage", action="store_true", help="answer every API call 503")
    faults.add_argument("--fault-seed", type=int, default=None, metavar="N", help="seed of the fault dice")
    serve_p.set_defaults(func=serve)
    _register_tokens(sub)
    _register_clients(sub)


def build_settings(args: argparse.Namespace) -> LocalAuditSettings:
    """Settings from parsed ``serve`` arguments; raises pydantic/YAML/OS errors on bad input."""
    host, port = args.listen
    data: dict[str, Any] = {
        "listen_host": host,
        "listen_port": port,
        "db_path": args.db,
        "synchronous": args.synchronous,
        "enable_test_faults": args.enable_test_faults,
        "faults": FaultSettings(
            latency_ms=args.fault_latency_ms,
            error_5xx_ratio=args.fault_5xx_ratio,
            error_429_ratio=args.fault_429_ratio,
            retry_after_secs=args.fault_retry_after_secs,
            accept_every_nth=args.fault_202_every,
            pending_polls=args.fault_pending_polls,
            outage=args.fault_outage,
            seed=args.fault_seed,
        ),
    }
    if args.configs is not None:
        data["configs"] = load_configs_file(args.configs)
    return LocalAuditSettings.model_validate(data)


def _setup_logging(level: str) -> None:
    logger = logging.getLogger("gateway.local_audit")
    logger.setLevel(level.upper())
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())  # the one log schema: time, level, logger, message
        logger.addHandler(handler)


async def _run(settings: LocalAuditSettings) -> int:
    server = LocalAuditServer(settings)
    try:
        await server.start()
    except OSError as exc:
        print(f"local-audit: cannot start: {exc}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        print(f"local audit log on {server.base_url}, configurations: {', '.join(server.config_ids)}", flush=True)
        source = server.token_source
        if not (source == "settings" or source == "configs" or source.startswith("env ")):
            # The generated token is the operator's only way in: show it once, on stdout, not in logs.
            print(f"default token (kept in {source}): {server.token}", flush=True)
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await server.stop()
    return 0


def serve(args: argparse.Namespace) -> int:
    """Entry point of ``local-audit serve``; returns the process exit code."""
    try:
        settings = build_settings(args)
    except (pydantic.ValidationError, yaml.YAMLError, OSError, ValueError) as exc:
        print(f"local-audit: invalid configuration: {exc}", file=sys.stderr)
        return 2
    _setup_logging(args.log_level)
    return asyncio.run(_run(settings))


# -- service tokens ------------------------------------------------------------------------


def _csv(value: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


_GRANTABLE_CONFIG_ID = r"^pci_[a-z0-9_]{1,64}$"
"""What ``--configs`` takes.  Wider than the spec's ``CONFIG_ID_PATTERN`` (``pci_`` + 32 of
[a-z2-7]) on purpose: documentation and the issue's own examples write short ids such as
``pci_aaa``, and a grant may name a configuration that does not exist yet; a grant of an id no
configuration has simply gives no access."""


def _config_ids(value: str) -> list[str]:
    ids = _csv(value)
    bad = [i for i in ids if not re.fullmatch(_GRANTABLE_CONFIG_ID, i)]
    if bad:
        raise argparse.ArgumentTypeError(f"not configuration ids (pci_ + [a-z0-9_]): {', '.join(bad)}")
    return ids


def _endpoints(value: str) -> list[str]:
    names = _csv(value)
    bad = [n for n in names if n not in ENDPOINTS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown endpoints {', '.join(bad)}; known: {', '.join(ENDPOINTS)}")
    return names


def _restriction(value: str) -> tuple[str, str]:
    name, sep, allowed = value.partition("=")
    if not sep or not re.fullmatch(RESTRICTABLE_FIELD, name) or not allowed:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {value!r}")
    return name, allowed


def _expires_in(value: str) -> float:
    span = parse_duration(value)
    if span is None or span.total_seconds() <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration such as 30d, 12h or 90min, got {value!r}")
    return span.total_seconds()


def _register_tokens(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token_p = sub.add_parser(
        "token",
        help="manage service tokens (create, list, revoke)",
        description="Service tokens of the local audit log, kept (hashed) in its database.",
    )
    token_sub = token_p.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = token_sub.add_parser(
        "create",
        help="create a token; prints {id, token, expires_at} (the only time the token is shown)",
        description="Create a service token. Endpoint scopes: " + "; ".join(f"{k} ({v})" for k, v in ENDPOINTS.items()),
    )
    create.add_argument("--db", type=Path, required=True, metavar="FILE", help="the local audit log's database")
    create.add_argument("--name", required=True, help="a readable name shown by `token list`")
    create.add_argument(
        "--configs", type=_config_ids, required=True, metavar="ID,...", help="configurations the token may use"
    )
    create.add_argument(
        "--endpoints", type=_endpoints, default=None, metavar="NAME,...", help="endpoint scopes (default: all)"
    )
    create.add_argument(
        "--restrict",
        type=_restriction,
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="only events whose FIELD is VALUE may be logged and searched (repeatable; repeats of a field add values)",
    )
    create.add_argument(
        "--expires-in", type=_expires_in, default=None, metavar="DURATION", help="e.g. 30d; default: never"
    )
    create.set_defaults(func=_token_create)
    lst = token_sub.add_parser("list", help="list tokens as JSON (never their values)")
    lst.add_argument("--db", type=Path, required=True, metavar="FILE", help="the local audit log's database")
    lst.set_defaults(func=_token_list)
    revoke = token_sub.add_parser("revoke", help="revoke a token by its id (pmt_...)")
    revoke.add_argument("--db", type=Path, required=True, metavar="FILE", help="the local audit log's database")
    revoke.add_argument("id", help="the token's id, as `token create` or `token list` printed it")
    revoke.set_defaults(func=_token_revoke)


def _connect(db: Path) -> sqlite3.Connection:
    db.parent.mkdir(parents=True, exist_ok=True)
    # Autocommit; a running server holds the database in WAL mode, so this is safe beside it.
    conn = sqlite3.connect(db, isolation_level=None, timeout=10.0)
    conn.execute("PRAGMA journal_mode=WAL")
    return conn


def _with_db(db: Path, action: Callable[[sqlite3.Connection], int]) -> int:
    try:
        conn = _connect(db)
    except (OSError, sqlite3.Error) as exc:
        print(f"local-audit: cannot open {db}: {exc}", file=sys.stderr)
        return 1
    try:
        return action(conn)
    finally:
        conn.close()


def _token_create(args: argparse.Namespace) -> int:
    restrict: dict[str, list[str]] = {}
    for name, value in args.restrict:
        restrict.setdefault(name, []).append(value)
    expires_at = None if args.expires_in is None else time.time() + args.expires_in

    def act(conn: sqlite3.Connection) -> int:
        created = create_token(
            conn,
            name=args.name,
            configs=args.configs,
            endpoints=args.endpoints,
            restrict=restrict,
            expires_at=expires_at,
        )
        print(orjson.dumps(created).decode(), flush=True)
        return 0

    return _with_db(args.db, act)


def _token_list(args: argparse.Namespace) -> int:
    def act(conn: sqlite3.Connection) -> int:
        print(orjson.dumps(list_tokens(conn)).decode(), flush=True)
        return 0

    return _with_db(args.db, act)


def _token_revoke(args: argparse.Namespace) -> int:
    def act(conn: sqlite3.Connection) -> int:
        if not revoke_token(conn, args.id):
            print(f"local-audit: no active token {args.id}", file=sys.stderr)
            return 1
        print(orjson.dumps({"id": args.id, "revoked": True}).decode(), flush=True)
        return 0

    return _with_db(args.db, act)


# -- OAuth2 clients --------------------------------------------------------------------------


def _scopes(value: str) -> list[str]:
    names = [v for v in value.replace(",", " ").split() if v]
    bad = [n for n in names if n not in oauth.SCOPES]
    if not names or bad:
        raise argparse.ArgumentTypeError(
            f"unknown scopes {', '.join(bad) or value!r}; known: {', '.join(oauth.SCOPES)}"
        )
    return names


def _ttl(value: str) -> int:
    return int(_expires_in(value))


def _register_clients(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    client_p = sub.add_parser(
        "client",
        help="manage OAuth2 service clients (create, list, rotate)",
        description="OAuth2 clients (Client Credentials grant) of the local audit log. Scopes: "
        + "; ".join(f"{k} ({', '.join(sorted(v))})" for k, v in oauth.SCOPES.items()),
    )
    client_sub = client_p.add_subparsers(dest="client_command", required=True, metavar="ACTION")
    create = client_sub.add_parser(
        "create", help="create a client; prints {client_id, client_secret} (the only time the secret is shown)"
    )
    create.add_argument("--db", type=Path, required=True, metavar="FILE", help="the local audit log's database")
    create.add_argument("--name", required=True, help="a unique name")
    create.add_argument(
        "--configs", type=_config_ids, required=True, metavar="ID,...", help="configurations its tokens may use"
    )
    create.add_argument(
        "--scopes",
        type=_scopes,
        default=list(oauth.SCOPES),
        metavar="SCOPE,...",
        help="scopes its tokens may carry (space- or comma-separated; default: all)",
    )
    create.add_argument(
        "--token-ttl",
        type=_ttl,
        default=oauth.DEFAULT_TOKEN_TTL_SECS,
        metavar="DURATION",
        help="lifetime of its access tokens (default 1h)",
    )
    create.set_defaults(func=_client_create)
    lst = client_sub.add_parser("list", help="list clients as JSON (never their secrets)")
    lst.add_argument("--db", type=Path, required=True, metavar="FILE", help="the local audit log's database")
    lst.set_defaults(func=_client_list)
    rotate = client_sub.add_parser("rotate", help="give a client a new secret (the old one stops working)")
    rotate.add_argument("--db", type=Path, required=True, metavar="FILE", help="the local audit log's database")
    rotate.add_argument("client_id", help="the client's id (psa_...)")
    rotate.set_defaults(func=_client_rotate)


def _client_create(args: argparse.Namespace) -> int:
    def act(conn: sqlite3.Connection) -> int:
        try:
            made = oauth.create_client(
                conn, name=args.name, configs=args.configs, scopes=args.scopes, token_ttl_secs=args.token_ttl
            )
        except sqlite3.IntegrityError:
            print(f"local-audit: a client named {args.name!r} exists already", file=sys.stderr)
            return 1
        print(orjson.dumps(made).decode(), flush=True)
        return 0

    return _with_db(args.db, act)


def _client_list(args: argparse.Namespace) -> int:
    def act(conn: sqlite3.Connection) -> int:
        print(orjson.dumps(oauth.list_clients(conn)).decode(), flush=True)
        return 0

    return _with_db(args.db, act)


def _client_rotate(args: argparse.Namespace) -> int:
    def act(conn: sqlite3.Connection) -> int:
        rotated = oauth.rotate_secret(conn, args.client_id)
        if rotated is None:
            print(f"local-audit: no client {args.client_id}", file=sys.stderr)
            return 1
        print(orjson.dumps(rotated).decode(), flush=True)
        return 0

    return _with_db(args.db, act)
