"""Start-up checks shared by ``run`` and ``check-config``: one list of problems, all reported at once.

``run`` calls :func:`preflight` before it builds anything and ``check-config`` calls the same
function with the same ``--listen``/``--admin-listen``/``--data-dir`` flags, so ``check-config``
says ``ok`` exactly when ``run`` would get past its checks.  What is checked:

* the listen addresses parse, and a webhook source without ``auth`` is refused beyond loopback;
* every file the configuration names (``*_file``) exists, is a file and is readable; the intake
  TLS certificate and key also load;
* the data directory (and a spool or dead-letter path set apart from it) is a directory this
  process can create files in.

``upstream.token_file`` is left out on purpose: it is re-read while running (Secret rotation),
and a missing one is a retriable credential refusal the readiness probe reports.

:func:`connect` (``check-config --connect``) also calls the upstream with the configured
credential and opens a TCP connection to each Kafka broker.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from gateway.config import (
    DEFAULT_ADMIN_LISTEN,
    DEFAULT_DATA_DIR,
    DEFAULT_LISTEN,
    DEFAULT_LOCAL_AUDIT_LISTEN,
    GatewayConfig,
)
from gateway.errors import ConfigError, GatewayError, StartupError, os_reason
from gateway.sinks.pangea.config import UpstreamConfig
from gateway.sources.webhook.config import WebhookSourceConfig


def split_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) → (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"listen address {value!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - an explicit ":PORT" means all interfaces


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class RunOptions:
    """Command-line settings; each wins over the config file's value."""

    listen: str | None = None
    admin_listen: str | None = None
    data_dir: Path | None = None
    local_audit_listen: str | None = None
    config_path: Path | None = None
    """The file read again on SIGHUP (and watched with ``watch_config``); None: the built-in default."""
    watch_config: bool = False
    """Reload when the file's content changes (checked every ``watch_interval_secs``)."""
    watch_interval_secs: float = 1.0
    log_level: str | None = None
    """``run --log-level``: wins over the file's ``log_level``, which a reload then leaves alone."""
    upstream: UpstreamConfig | None = None
    """Delivers here instead of an embedded local audit log when the config has no ``upstream:``
    (a ``run --workers`` worker: the supervisor's embedded log, gateway/workers.py)."""
    worker: int | None = None
    """A ``run --workers`` worker's index: an explicit ``buffer.path`` gets ``/worker-<i>``, and
    poll sources run in worker 0 only."""


@dataclass(frozen=True)
class Placement:
    """Where the gateway listens and keeps its state: the flags, else the file, else the defaults."""

    listen: tuple[str, int]
    admin_listen: tuple[str, int]
    local_audit_listen: tuple[str, int]
    data_dir: Path


def placement(config: GatewayConfig, opts: RunOptions) -> Placement:
    """Resolve the addresses and the data directory; raises ConfigError for an address not HOST:PORT."""
    return Placement(
        listen=split_listen(opts.listen or config.listen or DEFAULT_LISTEN),
        admin_listen=split_listen(opts.admin_listen or config.admin_listen or DEFAULT_ADMIN_LISTEN),
        local_audit_listen=split_listen(
            opts.local_audit_listen or config.local_audit.listen or DEFAULT_LOCAL_AUDIT_LISTEN
        ),
        data_dir=Path(opts.data_dir or config.data_dir or DEFAULT_DATA_DIR),
    )


def exposure_problems(config: GatewayConfig, host: str) -> list[GatewayError]:
    """Beyond loopback, every webhook source must authenticate its senders: one error per source that does not."""
    if is_loopback(host):
        return []
    return [
        ConfigError(
            f"listening on {host} beyond loopback requires inbound auth on every webhook source",
            f"sources.{name}.auth",
        )
        for name, src in config.sources.items()
        # `callers:` authenticates every caller by its own token.
        if isinstance(src, WebhookSourceConfig) and src.auth is None and not src.callers
    ]


_RELOADED_FILES = frozenset({"upstream.token_file"})
"""Files re-read while running; their absence at start is not fatal (see the module doc)."""


def _named_files(model: BaseModel, path: str = "") -> Iterator[tuple[str, Path]]:
    """(key path, file) for every ``*_file`` field set anywhere in the configuration."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        where = f"{path}.{name}" if path else name
        if isinstance(value, Path) and name.endswith("_file"):
            yield where, value
        else:
            yield from _children(value, where)


def _children(value: Any, where: str) -> Iterator[tuple[str, Path]]:
    if isinstance(value, BaseModel):
        yield from _named_files(value, where)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _children(v, f"{where}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _children(v, f"{where}[{i}]")


def _readable(key: str, path: Path) -> StartupError | None:
    try:
        with path.open("rb") as f:
            f.read(1)
    except IsADirectoryError:
        return StartupError(f"{key}: {path} is a directory, not a file")
    except OSError as exc:
        return StartupError(f"{key}: cannot read {path}: {os_reason(exc)}")
    return None


def _writable_dir(key: str, path: Path) -> StartupError | None:
    """``path`` is (or can be made) a directory this process can create files in.

    Creates nothing that stays: an existing directory gets a probe file created and removed; a
    missing one is judged by its nearest existing parent, which ``run`` will create it in.
    """
    probe_in = path
    while not probe_in.exists():
        if probe_in.parent == probe_in:
            break
        probe_in = probe_in.parent
    if probe_in.exists() and not probe_in.is_dir():
        return StartupError(f"{key}: cannot use {path} as a directory: {probe_in} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=probe_in, prefix=".audit-gateway-probe-"):
            pass
    except OSError as exc:
        return StartupError(f"{key}: cannot write in {path}: {os_reason(exc)} ({probe_in})")
    return None


def preflight(config: GatewayConfig, options: RunOptions | None = None) -> list[GatewayError]:
    """Every problem that would stop ``run`` at start-up .

    Problems of the configuration are :class:`ConfigError` (exit code 2); problems of the machine
    (a file, a directory) are :class:`StartupError` (exit code 1).
    """
    opts = options or RunOptions()
    problems: list[GatewayError] = []
    try:
        place = placement(config, opts)
    except ConfigError as exc:
        return [exc]
    problems += exposure_problems(config, place.listen[0])
    for key, path in _named_files(config):
        if key in _RELOADED_FILES:
            continue
        bad = _readable(key, path)
        if bad is not None:
            problems.append(bad)
    tls = config.intake.tls
    if tls is not None and not any(p for p in problems if "intake.tls." in str(p)):
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(tls.cert_file, tls.key_file)
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or os_reason(exc)
            problems.append(StartupError(f"intake.tls: cannot load {tls.cert_file} and {tls.key_file}: {reason}"))
    where = "--data-dir" if opts.data_dir else "data_dir"
    dirs: dict[Path, str] = {place.data_dir: where}
    if config.buffer.type == "disk" and config.buffer.path is not None:
        dirs.setdefault(config.buffer.path, "buffer.path")
    if config.deadletter.path is not None:
        dirs.setdefault(config.deadletter.path.parent, "deadletter.path")
    for path, key in dirs.items():
        bad_dir = _writable_dir(key, path)
        if bad_dir is not None:
            problems.append(bad_dir)
    return problems


def raise_problems(problems: list[GatewayError]) -> None:
    """One error naming every problem: a ConfigError if any is one (exit code 2), else a StartupError."""
    if not problems:
        return
    if len(problems) == 1:
        raise problems[0]
    message = "; ".join(str(p) for p in problems)
    if any(isinstance(p, ConfigError) for p in problems):
        raise ConfigError(message)
    raise StartupError(message)


def _brokers(config: GatewayConfig) -> dict[str, list[str]]:
    """Key path of each ``bootstrap_servers`` set → its ``host:port`` list."""
    found: dict[str, list[str]] = {}

    def add(key: str, servers: str | list[str] | None) -> None:
        if servers:
            items = servers.split(",") if isinstance(servers, str) else servers
            found[key] = [s.strip() for s in items if s.strip()]

    for name, src in config.sources.items():
        add(f"sources.{name}.bootstrap_servers", getattr(src, "bootstrap_servers", None))
    if config.buffer.type == "kafka":
        add("buffer.bootstrap_servers", config.buffer.bootstrap_servers)
    if config.deadletter.type == "kafka":
        add("deadletter.bootstrap_servers", config.deadletter.bootstrap_servers)
    return found


async def _reach(server: str, timeout_secs: float) -> str | None:
    host, _, port = server.rpartition(":")
    try:
        _r, writer = await asyncio.wait_for(asyncio.open_connection(host.strip("[]"), int(port)), timeout_secs)
    except TimeoutError:
        return "no answer"
    except (OSError, ValueError) as exc:
        return os_reason(exc) if isinstance(exc, OSError) else "not HOST:PORT"
    writer.close()
    return None


async def connect(config: GatewayConfig, *, timeout_secs: float = 5.0) -> tuple[list[str], list[StartupError]]:
    """``check-config --connect``: (what answered, what did not).

    Each destination's upstream is asked ``POST /v1/schema`` with the configured credential (the
    readiness probe's own call: reachable, credential accepted, config_id known); each Kafka broker
    must accept a TCP connection.
    """
    from gateway.sinks.pangea.sink import PangeaSink
    from gateway.telemetry.metrics import Metrics

    good: list[str] = []
    bad: list[StartupError] = []
    if config.upstream is None:
        good.append("upstream: the embedded local audit log (nothing to connect to)")
    else:
        for name, dest in config.destinations.items():
            # The probe never records a dead letter: no store is needed.
            sink = PangeaSink(name, dest.config_id, config.upstream, Metrics(), None)  # type: ignore[arg-type]
            await sink.start()
            try:
                why = await sink.check()
            finally:
                await sink.stop()
            if why is None:
                good.append(f"destinations.{name}: upstream {config.upstream.url} accepts the credential")
            else:
                bad.append(StartupError(f"destinations.{name}: upstream {config.upstream.url}: {why}"))
    for key, servers in _brokers(config).items():
        for server in servers:
            why = await _reach(server, timeout_secs)
            if why is None:
                good.append(f"{key}: Kafka broker {server} reachable")
            else:
                bad.append(StartupError(f"{key}: cannot connect to Kafka broker {server}: {why}"))
    return good, bad
