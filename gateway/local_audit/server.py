"""The local audit log: a Pangea-compatible Secure Audit Log server on aiohttp and SQLite.

Routes (all answers are Pangea envelopes ``{request_id, request_time, response_time, status,
summary, result}``; every route but ``GET /request/{id}`` takes a JSON body; all need
``Authorization: Bearer <token>``):

==========================  ===========================================================
``POST /v1/log``            one event; ``result = {hash, envelope?, unpublished_root?, ...}``
``POST /v2/log``            1..1000 events; ``result = {results: [{hash, envelope?, ...}]}``
``POST /v2/log_async``      same body; 202 ``result = {location, retry_counter, ttl_mins}``
``POST /v1/log_stream``     Auth0 log-stream records (``{"logs": [...]}``) as standard events; ``result = {}``
``GET /request/{id}``       202 while "in progress", then 200 with the original call's answer
``POST /v1/export``         202; the export is then pollable at ``/request/{id}``
``POST /v1/download_results``  ``{dest_url, expires_at}`` for a search (``result_id``) or an export
``GET /v1/download/{key}``  the gzip CSV / JSON lines file behind a ``dest_url`` (the key is the credential)
``POST /v1/search``         query / time range / order; first page, ``id`` for paging
``POST /v1/results``        a page of an earlier search
``POST /v1/root``           Merkle root of the log (or of its first ``tree_size`` records), with
                            ``consistency_proof``, and ``url``/``published_at`` once published
``POST /v1/schema``         the configuration's AuditSchema
``POST /v1beta/config...``  configurations: get, ``/create``, ``/update``, ``/delete``, ``/list``,
                            ``/partition_overrides`` (see ``configs.py``)
``POST /arweave/graphql``   publication store (public, Arweave-shaped): which roots are published
``GET /arweave/{id}/``      one published root
``POST /_faults``           test-only (``enable_test_faults``): change fault knobs
``GET /_faults``            test-only: the knobs in force
``GET /_stats``             admin: call, storage and fault counters
==========================  ===========================================================

Bearer tokens are the settings' tokens (the default token) or service tokens from
``local-audit token create`` (``tokens.py``): configurations, endpoint scopes, field
restrictions (403 ``ForbiddenFieldValue``) and expiry.  Roots are published every
``publish_interval_secs``; records under the latest published root are answered ``published``
with their ``leaf_index`` and a proof against that root (``result.root``).

A request's events are validated against its configuration's schema and the whole request is
rejected, one error per offending field (``source`` a JSON pointer such as
``/events/3/event/actor``), as the real service does.  Accepted events are hashed and
inserted in one transaction (see ``store.py``); a faulted call stores nothing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import os
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote_plus

import orjson
import pydantic
from aiohttp import web

from gateway.errors import GatewayError
from gateway.local_audit import oauth
from gateway.local_audit.configs import (
    ConfigListRequest,
    PartitionOverridesRequest,
    ServiceConfigBody,
    body_from_settings,
    pydantic_errors,
    runtime_settings,
    version_errors,
)
from gateway.local_audit.exports import DownloadFormat, event_item, render
from gateway.local_audit.faults import FaultDecision, FaultInjector
from gateway.local_audit.hashing import envelope_bytes, format_timestamp, utc_now
from gateway.local_audit.query import QueryError, Term, is_rfc3339, parse_duration, parse_query, parse_time
from gateway.local_audit.settings import (
    AuditConfigSettings,
    LocalAuditSettings,
    SchemaFieldSettings,
)
from gateway.local_audit.store import SearchCriteria, Store, StoredRecord, Tree
from gateway.local_audit.tokens import Grant, create_token, introspect_token, new_id, revoke_digest, token_digest
from gateway.normalize.schema import EventInvalid
from gateway.normalize.vendors import DecodeError, auth0

__all__ = ["TOKEN_ENV", "LocalAuditServer", "resolve_default_token", "token_file_path"]

log = logging.getLogger("gateway.local_audit")

TOKEN_ENV: Final = "AUDIT_GATEWAY_LOCAL_TOKEN"  # noqa: S105 - a variable name, not a secret
MAX_EVENTS: Final = 1000
_SIG_MAX: Final = 256
_SEARCH_DEFAULT_LIMIT: Final = 20
_SEARCH_MAX_RESULTS: Final = 10_000
_SEARCH_DEFAULT_START: Final = timedelta(days=14)  # spec: "Defaults to 14 days of data"
_MAX_SEARCHES: Final = 1000
_MAX_PENDING: Final = 100_000
# The spec's enum for order_by with the standard schema.
_STANDARD_ORDER_BY: Final = frozenset(
    ("actor", "action", "message", "received_at", "source", "status", "target", "timestamp")
)
_RESTRICTION_KEYS: Final = frozenset(("actor", "action", "source", "status", "target", "tenant_id"))
_V1_LOG_KEYS: Final = frozenset(
    ("event", "verbose", "signature", "public_key", "config_id", "prev_root", "return_hash")
)
_V2_ITEM_KEYS: Final = frozenset(("event", "signature", "public_key"))
_SEARCH_KEYS: Final = frozenset(
    (
        "query",
        "start",
        "end",
        "config_id",
        "max_results",
        "verbose",
        "limit",
        "order",
        "order_by",
        "search_restriction",
        "return_context",
    )
)
_ROOT_KEYS: Final = frozenset(("config_id", "tree_size"))
_EXPORT_KEYS: Final = frozenset(("config_id", "start", "end", "verbose", "order", "order_by", "format"))
_DOWNLOAD_KEYS: Final = frozenset(
    ("result_id", "request_id", "format", "config_id", "assert_search_restriction", "return_context")
)
_RESULT_ID: Final = re.compile(r"^pas_[a-z0-9]{32}$")
_REQUEST_ID: Final = re.compile(r"^prq_[a-z0-9]{32}$")
_FORMATS: Final = ("csv", "json")
_SCHEMA_KEYS: Final = frozenset(("config_id",))
_MISSING: Final = object()
# Where the publication store is served: Arweave-shaped (GraphQL look-up by tree_name and
# tree_size tags, then GET of the transaction), the place pangea-sdk reads published roots from.
_PUBLICATION_PREFIX: Final = "/arweave"
_GRAPHQL_TAG: Final = re.compile(r'name:\s*"(tree_size|tree_name)"\s*values:\s*\[([^\]]*)\]')
_PREV_ROOT: Final = re.compile(r"^[a-z0-9]{64}")  # the spec's pattern, unanchored at the end as written

Errors = list[dict[str, str]]


_new_id = new_id


def _ptr(*parts: str | int) -> str:
    """RFC 6901 JSON pointer from path parts."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _err(code: str, detail: str, source: str) -> dict[str, str]:
    return {"code": code, "detail": detail, "source": source}


class ApiError(GatewayError):
    """An error answer: HTTP status, Pangea status, summary and optional validation errors."""

    def __init__(
        self,
        http_status: int,
        status: str,
        summary: str,
        errors: Errors | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(summary)
        self.http_status = http_status
        self.status = status
        self.summary = summary
        self.errors = errors
        self.headers = headers


def _validation(errors: Errors) -> ApiError:
    n = len(errors)
    return ApiError(400, "ValidationError", f"There {'was' if n == 1 else 'were'} {n} error(s) in the request", errors)


# -- event validation ---------------------------------------------------------------------

_STR, _INT, _BOOL, _DT = 0, 1, 2, 3
_KIND = {"string": _STR, "string-unindexed": _STR, "text": _STR, "integer": _INT, "boolean": _BOOL, "datetime": _DT}


class EventValidator:
    """Checks events against one schema; appends one error per offending field."""

    def __init__(self, fields: tuple[SchemaFieldSettings, ...]) -> None:
        self._specs: dict[str, tuple[int, int | None]] = {f.id: (_KIND[f.type], f.size) for f in fields}
        self._required = tuple(f.id for f in fields if f.required)

    def validate(self, event: Any, base: str, errors: Errors) -> None:
        """Validate ``event`` found at JSON pointer ``base``."""
        if type(event) is not dict:
            errors.append(_err("InvalidObject", "the event must be a JSON object", base))
            return
        specs = self._specs
        for key, value in event.items():
            spec = specs.get(key)
            if spec is None:
                errors.append(_err("UnexpectedProperty", f"{key!r} is not a field of the schema", base + _ptr(key)))
                continue
            kind, size = spec
            if kind in (_STR, _DT):
                if type(value) is not str:
                    errors.append(_err("InvalidString", f"{key!r} must be a string", base + _ptr(key)))
                elif size is not None and len(value) > size:
                    errors.append(
                        _err(
                            "AboveMaxLength",
                            f"{key!r} is {len(value)} characters long; the maximum is {size}",
                            base + _ptr(key),
                        )
                    )
                elif kind == _DT and not is_rfc3339(value):
                    errors.append(_err("BadFormatDateTime", f"{key!r} must be an RFC 3339 date-time", base + _ptr(key)))
            elif kind == _INT:
                if type(value) is not int:
                    errors.append(_err("InvalidInteger", f"{key!r} must be an integer", base + _ptr(key)))
            elif type(value) is not bool:
                errors.append(_err("InvalidBool", f"{key!r} must be a boolean", base + _ptr(key)))
        for name in self._required:
            if name not in event:
                errors.append(_err("FieldRequired", f"{name!r} is required", base + _ptr(name)))


def _opt_bool(body: dict[str, Any], key: str, errors: Errors, default: bool) -> bool:
    value = body.get(key, _MISSING)
    if value is _MISSING or value is None:
        return default
    if type(value) is not bool:
        errors.append(_err("InvalidBool", f"{key!r} must be a boolean", _ptr(key)))
        return default
    return bool(value)


def _opt_int(body: dict[str, Any], key: str, errors: Errors, lo: int | None, hi: int | None) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if type(value) is not int:
        errors.append(_err("InvalidInteger", f"{key!r} must be an integer", _ptr(key)))
        return None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"{lo if lo is not None else '-inf'}..{hi if hi is not None else 'inf'}"
        errors.append(_err("NotWithinRange", f"{key!r} must be within {bounds}", _ptr(key)))
        return None
    return int(value)


def _opt_str(
    body: dict[str, Any], key: str, errors: Errors, base: str = "", max_length: int | None = None
) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if type(value) is not str:
        errors.append(_err("InvalidString", f"{key!r} must be a string", base + _ptr(key)))
        return None
    if max_length is not None and len(value) > max_length:
        errors.append(
            _err(
                "AboveMaxLength",
                f"{key!r} is {len(value)} characters long; the maximum is {max_length}",
                base + _ptr(key),
            )
        )
        return None
    return str(value)


def _unexpected(body: dict[str, Any], allowed: frozenset[str], errors: Errors, base: str = "") -> None:
    for key in body:
        if key not in allowed:
            errors.append(_err("UnexpectedProperty", f"unexpected property {key!r}", base + _ptr(key)))


_FORBIDDEN_SUMMARY: Final = "A field value was supplied that is not allowed by the token's field restrictions."


def _check_restrictions(grant: Grant, events: list[tuple[Any, str]]) -> None:
    """403 ForbiddenFieldValue unless every event's restricted fields hold allowed values."""
    errors: Errors = []
    for event, base in events:
        for name, allowed in grant.restrict:
            value = event.get(name)
            if value not in allowed:
                errors.append(
                    _err(
                        "ForbiddenFieldValue",
                        f"the token may only log {name!r} values {', '.join(sorted(allowed))}",
                        base + _ptr(name),
                    )
                )
    if errors:
        raise ApiError(403, "ForbiddenFieldValue", _FORBIDDEN_SUMMARY, errors)


def _restricted_search(grant: Grant, asked: dict[str, list[str]]) -> dict[str, list[str]]:
    """The search restriction in force: the caller's, narrowed to the token's field restrictions."""
    if not grant.restrict:
        return asked
    out = dict(asked)
    for name, allowed in grant.restrict:
        values = asked.get(name)
        if values is None:
            out[name] = sorted(allowed)
        elif not set(values) <= allowed:
            err = _err(
                "ForbiddenFieldValue",
                f"the token may only search {name!r} values {', '.join(sorted(allowed))}",
                _ptr("search_restriction", name),
            )
            raise ApiError(403, "ForbiddenFieldValue", _FORBIDDEN_SUMMARY, [err])
    return out


def _remember(table: OrderedDict[str, Any], key: str, value: Any) -> None:
    """Keep ``value``; drop expired entries and the oldest beyond the bound."""
    now = time.time()
    for old in [k for k, v in table.items() if v.expires <= now]:
        del table[old]
    table[key] = value
    while len(table) > _MAX_SEARCHES:
        table.popitem(last=False)


# -- token resolution -----------------------------------------------------------------------


def token_file_path(db_path: Path) -> Path:
    """Where the generated default token is kept: next to the database, ``<db>.token``."""
    return db_path.with_name(db_path.name + ".token")


def resolve_default_token(settings: LocalAuditSettings) -> tuple[str, str]:
    """The default token and where it came from: settings, env, or the ``<db>.token`` file.

    The file is created with mode 0600 when missing and reused on restart, so a gateway
    configured with its content keeps working across restarts of the local log.
    """
    if settings.default_token is not None:
        return settings.default_token.get_secret_value(), "settings"
    env = os.environ.get(TOKEN_ENV, "").strip()
    if env:
        return env, f"env {TOKEN_ENV}"
    path = token_file_path(settings.db_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        token = ""
    if token:
        if path.stat().st_mode & 0o077:
            log.warning("token file is readable by other users", extra={"path": str(path)})
        return token, str(path)
    token = _new_id("pts_")
    # O_EXCL: two servers racing on one database must not overwrite each other's token.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
    return token, str(path)


# -- server state -------------------------------------------------------------------------


@dataclass(eq=False)
class _Config:
    settings: AuditConfigSettings
    validator: EventValidator
    tree: Tree
    fields: frozenset[str]
    order_by: frozenset[str]
    schema_result: dict[str, Any]
    # The AuditServiceConfig as /v1beta/config answers it (without id and timestamps).
    body: dict[str, Any]
    created_at: str
    updated_at: str
    origin: str  # "settings": from the settings (read-only over the API); "api": created over the API
    retention: timedelta | None
    owner: bytes | None  # digest of the settings token that created it over the API, if one did


_NO_GRANT: Final = Grant(configs=frozenset())


@dataclass(frozen=True, slots=True)
class _Call:
    request_id: str
    request_time: str
    grant: Grant

    @property
    def configs(self) -> frozenset[str]:
        """Configurations the caller's token may use."""
        return self.grant.configs


@dataclass(eq=False)
class _Search:
    config_id: str
    leaves: list[int]
    size: int
    root_hex: str | None
    verbose: bool
    restriction: dict[str, list[str]]
    expires: float
    published_size: int
    # The restriction the records were selected with (the caller's and the token's).
    effective: dict[str, list[str]]

    def visible_to(self, grant: Grant) -> bool:
        """Whether a token may read these results: its configuration, and no record outside its
        field restrictions (a restricted token cannot page through an unrestricted search)."""
        if self.config_id not in grant.configs:
            return False
        for name, allowed in grant.restrict:
            values = self.effective.get(name)
            if values is None or not set(values) <= allowed:
                return False
        return True


@dataclass(eq=False)
class _Download:
    search: _Search
    format: DownloadFormat
    expires: float


@dataclass(eq=False)
class _Pending:
    remaining: int
    polls: int = 0


def _schema_result(cfg: AuditConfigSettings) -> dict[str, Any]:
    fields = []
    for f in cfg.schema_fields:
        item: dict[str, Any] = {"id": f.id, "type": f.type, "required": f.required, "redact": f.redact}
        for key in ("size", "name", "description", "partitioned", "ui_default_visible"):
            value = getattr(f, key)
            if value is not None:
                item[key] = value
        fields.append(item)
    schema = cfg.schema_
    result: dict[str, Any] = {
        "client_signable": True if schema is None else schema.client_signable,
        "save_malformed": "reject" if schema is None else schema.save_malformed,
        "tamper_proofing": True if schema is None else schema.tamper_proofing,
        "fields": fields,
    }
    if schema is not None:
        for key in ("vendor_id", "json_path"):
            value = getattr(schema, key)
            if value is not None:
                result[key] = value
    return result


class LocalAuditServer:
    """The server; ``await start()``, use :attr:`base_url` and :attr:`token`, ``await stop()``."""

    def __init__(self, settings: LocalAuditSettings, *, clock: Callable[[], float] = time.time) -> None:
        """``clock``: wall time in seconds, for token expiry (tests inject one)."""
        self.settings = settings
        self._clock = clock
        self.faults = FaultInjector(settings.faults)
        self._store: Store | None = None
        self._configs: dict[str, _Config] = {}
        # Tokens of the settings (the default token included), keyed by digest: the configurations
        # each may use.  Sets, because configurations created over the API join them.
        self._static: dict[bytes, set[str]] = {}
        self._token = ""
        self._token_source = ""
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._executor: ThreadPoolExecutor | None = None
        self._searches: OrderedDict[str, _Search] = OrderedDict()
        self._exports: OrderedDict[str, _Search] = OrderedDict()
        self._downloads: OrderedDict[str, _Download] = OrderedDict()
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._async_writes = 0
        self._publisher: asyncio.Task[None] | None = None
        self.calls: dict[str, int] = {}
        self.stored_events = 0
        self.rejected_calls = 0

    # -- public API ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for)."""
        return self._port

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` to give ``PangeaConfig(base_url_template=...)`` or the gateway."""
        host = self.settings.listen_host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self._port}"

    @property
    def token(self) -> str:
        """The default token: valid for every configuration that lists no tokens of its own."""
        return self._token

    @property
    def token_source(self) -> str:
        """Where :attr:`token` came from (``settings``, ``env ...``, a file path, or ``configs``)."""
        return self._token_source

    @property
    def config_ids(self) -> list[str]:
        """Ids of the configurations served, in settings order."""
        return list(self._configs)

    async def start(self) -> None:
        """Open the database and bind the listening socket."""
        settings = self.settings
        store = Store(settings.db_path, settings.synchronous)
        self._store = store
        try:
            store.open(c.id for c in settings.configs)
            self._setup_configs()
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-audit-search")
            if settings.publish_interval_secs > 0:
                self._publisher = asyncio.create_task(self._publish_loop(settings.publish_interval_secs))
            app = web.Application(client_max_size=settings.max_body_bytes)
            self._routes(app)
            # No access log: a line per request costs more than storing its events.
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, settings.listen_host, settings.listen_port)
            await site.start()
            addresses = self._runner.addresses
            self._port = int(addresses[0][1]) if addresses else settings.listen_port
        except BaseException:
            await self.stop()
            raise
        log.info(
            "local audit log listening",
            extra={
                "url": self.base_url,
                "db": str(settings.db_path),
                "configs": self.config_ids,
                "records": {t.config_id: t.size for t in store.trees()},
                "token_source": self._token_source,
            },
        )

    async def stop(self) -> None:
        """Stop serving and close the database (idempotent)."""
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher
            self._publisher = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._store is not None:
            self._store.close()
            self._store = None
            log.info("local audit log stopped", extra={"stored_events": self.stored_events})

    # -- setup -----------------------------------------------------------------------------

    def _setup_configs(self) -> None:
        store = self._db
        needs_default = any(not c.tokens for c in self.settings.configs)
        grants: dict[str, set[str]] = {}
        if needs_default:
            self._token, self._token_source = resolve_default_token(self.settings)
        rows = {r[0]: r for r in store.config_rows()}
        now = format_timestamp(utc_now())
        for cfg in self.settings.configs:
            tokens = [t.get_secret_value() for t in cfg.tokens] or [self._token]
            for token in tokens:
                grants.setdefault(token, set()).add(cfg.id)
            body = body_from_settings(cfg)
            row = rows.pop(cfg.id, None)
            created_at = row[2] if row is not None else now
            updated_at = row[3] if row is not None and orjson.loads(row[1]) == body else now
            store.put_config(cfg.id, orjson.dumps(body).decode(), created_at, updated_at, "settings", None)
            self._add_config(cfg, body, created_at, updated_at, "settings")
        if not needs_default:
            self._token = self.settings.configs[0].tokens[0].get_secret_value()
            self._token_source = "configs"  # noqa: S105 - a provenance label
        # Keyed by the token's digest: no token text is kept in a dict that might be dumped.
        self._static = {token_digest(t): ids for t, ids in grants.items()}
        for cid, body_text, created_at, updated_at, origin, owner in rows.values():
            if origin != "api":
                continue  # a configuration the settings no longer list
            body = orjson.loads(body_text)
            self._add_config(runtime_settings(cid, body), body, created_at, updated_at, origin, owner)
            if owner is not None and owner in self._static:
                self._static[owner].add(cid)

    def _add_config(
        self,
        cfg: AuditConfigSettings,
        body: dict[str, Any],
        created_at: str,
        updated_at: str,
        origin: str,
        owner: bytes | None = None,
    ) -> _Config:
        fields = cfg.schema_fields
        ids = frozenset(f.id for f in fields)
        config = _Config(
            settings=cfg,
            validator=EventValidator(fields),
            tree=self._db.add_tree(cfg.id),
            fields=ids,
            order_by=_STANDARD_ORDER_BY if cfg.schema_ is None else ids | {"received_at"},
            schema_result=_schema_result(cfg),
            body=body,
            created_at=created_at,
            updated_at=updated_at,
            origin=origin,
            retention=parse_duration(cfg.retention) if cfg.retention is not None else None,
            owner=owner,
        )
        self._configs[cfg.id] = config
        return config

    def _routes(self, app: web.Application) -> None:
        r = app.router
        r.add_post("/v1/log", self._api("v1/log", self._v1_log, scope="log"))
        r.add_post("/v2/log", self._api("v2/log", functools.partial(self._v2_log, async_mode=False), scope="log"))
        r.add_post(
            "/v2/log_async", self._api("v2/log_async", functools.partial(self._v2_log, async_mode=True), scope="log")
        )
        r.add_post("/v1/log_stream", self._api("v1/log_stream", self._log_stream, scope="log_stream"))
        r.add_get("/request/{request_id}", self._api("request", self._poll))
        r.add_post("/v1/search", self._api("v1/search", self._search, scope="search"))
        r.add_post("/v1/results", self._api("v1/results", self._results, scope="search"))
        r.add_post("/v1/root", self._api("v1/root", self._root, scope="root"))
        r.add_post("/v1/export", self._api("v1/export", self._export, scope="export"))
        # Scope checked inside: `search` for search results, `export` for exports.
        r.add_post("/v1/download_results", self._api("v1/download_results", self._download_results))
        # Presigned-URL style, as the service's dest_url: the unguessable key is the credential.
        r.add_get("/v1/download/{key}", self._api("v1/download", self._download, admin=True, auth=False))
        r.add_post("/v1/schema", self._api("v1/schema", self._schema, scope="schema"))
        r.add_post("/v1beta/config", self._api("v1beta/config", self._config_get, scope="config"))
        r.add_post("/v1beta/config/create", self._api("v1beta/config/create", self._config_create, scope="config"))
        r.add_post("/v1beta/config/update", self._api("v1beta/config/update", self._config_update, scope="config"))
        r.add_post("/v1beta/config/delete", self._api("v1beta/config/delete", self._config_delete, scope="config"))
        r.add_post("/v1beta/config/list", self._api("v1beta/config/list", self._config_list, scope="config"))
        r.add_post(
            "/v1beta/config/partition_overrides",
            self._api("v1beta/config/partition_overrides", self._config_partition_overrides, scope="config"),
        )
        r.add_get(
            "/.well-known/oauth-authorization-server", self._api("oauth", self._oauth_metadata, admin=True, auth=False)
        )
        r.add_post("/v1beta/oauth/token", self._api("oauth", self._oauth_token, admin=True, auth=False))
        r.add_post("/v1beta/oauth/token/introspect", self._api("oauth", self._oauth_introspect, admin=True, auth=False))
        r.add_post("/v1beta/oauth/token/revoke", self._api("oauth", self._oauth_revoke, admin=True, auth=False))
        if self.settings.enable_test_faults:
            # Test-only: whoever holds a token could otherwise switch the log into an outage.
            r.add_post("/_faults", self._api("_faults", self._set_faults, admin=True))
            r.add_get("/_faults", self._api("_faults", self._get_faults, admin=True))
        r.add_get("/_stats", self._api("_stats", self._stats, admin=True))
        # The publication store is public, as Arweave is: published roots are meant to be read by anyone.
        publications = self._api("publications", self._publication_lookup, admin=True, auth=False)
        r.add_post(_PUBLICATION_PREFIX + "/graphql", publications)
        publication = self._api("publications", self._publication, admin=True, auth=False)
        r.add_get(_PUBLICATION_PREFIX + "/{tx_id}/", publication)
        r.add_get(_PUBLICATION_PREFIX + "/{tx_id}", publication)
        # Last: anything else gets a Pangea NotFound envelope rather than aiohttp's text page.
        r.add_route("*", "/{tail:.*}", self._api("not_found", self._not_found, admin=True, auth=False))

    # -- plumbing --------------------------------------------------------------------------

    def _response(
        self,
        call: _Call,
        http_status: int,
        status: str,
        summary: str,
        result: Any,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        body = orjson.dumps(
            {
                "request_id": call.request_id,
                "request_time": call.request_time,
                "response_time": format_timestamp(utc_now()),
                "status": status,
                "summary": summary,
                "result": result,
            }
        )
        hdrs = {"X-Request-Id": call.request_id}
        if headers:
            hdrs.update(headers)
        return web.Response(body=body, status=http_status, content_type="application/json", headers=hdrs)

    def _error_response(self, call: _Call, exc: ApiError) -> web.Response:
        result = {"errors": exc.errors} if exc.errors is not None else None
        return self._response(call, exc.http_status, exc.status, exc.summary, result, exc.headers)

    def _api(
        self,
        name: str,
        impl: Callable[[web.Request, _Call], Awaitable[web.Response]],
        *,
        admin: bool = False,
        auth: bool = True,
        scope: str | None = None,
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """Wrap a handler: ids, fault injection (API routes), auth, endpoint scope, and error envelopes."""

        async def handler(request: web.Request) -> web.StreamResponse:
            call = _Call(_new_id("prq_"), format_timestamp(utc_now()), _NO_GRANT)
            self.calls[name] = self.calls.get(name, 0) + 1
            try:
                if not admin:
                    await self.faults.delay()
                    decision = self.faults.decide()
                    if decision is not None:
                        return self._fault_response(call, decision)
                if auth:
                    call = _Call(call.request_id, call.request_time, self._authenticate(request))
                    if scope is not None and not call.grant.allows(scope):
                        raise ApiError(403, "Unauthorized", f"The token has no access to the {scope} endpoints")
                return await impl(request, call)
            except ApiError as exc:
                if exc.status == "ValidationError":
                    self.rejected_calls += 1
                return self._error_response(call, exc)
            except web.HTTPRequestEntityTooLarge:
                limit = self.settings.max_body_bytes
                err = _err("IsTooBig", f"the request body is larger than {limit} bytes", "")
                return self._error_response(call, ApiError(413, "ValidationError", "Request body too large", [err]))
            except web.HTTPException as exc:
                return self._error_response(call, ApiError(exc.status, "InternalError", exc.reason))
            except Exception:
                # The trace goes to our log only; callers get a bare InternalError.
                log.exception("unhandled error", extra={"endpoint": name, "request_id": call.request_id})
                return self._error_response(call, ApiError(500, "InternalError", "Internal server error"))

        return handler

    def _fault_response(self, call: _Call, decision: FaultDecision) -> web.Response:
        headers = {"Retry-After": str(decision.retry_after)} if decision.retry_after is not None else None
        log.debug("fault injected", extra={"kind": decision.kind, "status": decision.http_status})
        return self._response(call, decision.http_status, decision.pangea_status, decision.summary, None, headers)

    def _authenticate(self, request: web.Request) -> Grant:
        """The caller's grant: a settings token (memory) or an active service token (database)."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        grant: Grant | None = None
        if scheme.lower() == "bearer" and token:
            digest = token_digest(token)
            static = self._static.get(digest)
            if static is not None:
                grant = Grant(configs=frozenset(static), owner=digest)
            else:
                # Expired and revoked tokens are not found: the same 401 as an unknown token.
                grant = self._db.lookup_token(digest, self._clock())
        if grant is None:
            raise ApiError(
                401, "Unauthorized", "Not authorized to access this resource", headers={"WWW-Authenticate": "Bearer"}
            )
        return grant

    async def _json_body(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        if not raw.strip():
            return {}
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _validation([_err("InvalidObject", f"the request body is not valid JSON: {exc}", "")]) from None
        if type(body) is not dict:
            raise _validation([_err("InvalidObject", "the request body must be a JSON object", "")])
        return body

    def _resolve(self, call: _Call, body: dict[str, Any]) -> _Config:
        """The configuration a call addresses, from ``config_id`` or the token's only one."""
        cid = body.get("config_id")
        if cid is None:
            # Only configurations that exist count: a token may name ones created later or deleted.
            usable = [c for c in call.configs if c in self._configs]
            if len(usable) == 1:
                return self._configs[usable[0]]
            if not usable:
                raise ApiError(403, "MissingConfigIDScope", "The token has access to no configuration")
            raise ApiError(
                400,
                "AmbiguousConfigID",
                "The token is valid for several configurations; config_id is required",
            )
        if type(cid) is not str:
            raise _validation([_err("InvalidString", "'config_id' must be a string", "/config_id")])
        if not cid:
            raise ApiError(400, "MissingConfigID", "config_id is empty")
        if cid not in call.configs or cid not in self._configs:
            raise ApiError(403, "MissingConfigIDScope", f"The token has no access to configuration {cid}")
        return self._configs[cid]

    @property
    def _db(self) -> Store:
        if self._store is None:
            raise ApiError(503, "ServiceNotAvailable", "The local audit log is stopping")
        return self._store

    async def _in_worker(self, fn: Callable[[], Any]) -> Any:
        if self._executor is None:
            raise ApiError(503, "ServiceNotAvailable", "The local audit log is stopping")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _location(self, request: web.Request, request_id: str) -> str:
        host = request.host or f"{self.settings.listen_host}:{self._port}"
        return f"{request.scheme}://{host}/request/{request_id}"

    # -- logging endpoints -----------------------------------------------------------------

    async def _v1_log(self, request: web.Request, call: _Call) -> web.Response:
        body = await self._json_body(request)
        cfg = self._resolve(call, body)
        errors: Errors = []
        _unexpected(body, _V1_LOG_KEYS, errors)
        verbose = _opt_bool(body, "verbose", errors, False)
        _opt_bool(body, "return_hash", errors, True)  # the hash is always returned
        event = body.get("event", _MISSING)
        if event is _MISSING:
            errors.append(_err("FieldRequired", "'event' is required", "/event"))
        else:
            cfg.validator.validate(event, "/event", errors)
        signature = _opt_str(body, "signature", errors, max_length=_SIG_MAX)
        public_key = _opt_str(body, "public_key", errors, max_length=_SIG_MAX)
        prev_root = _opt_str(body, "prev_root", errors)
        if prev_root is not None and not _PREV_ROOT.match(prev_root):
            errors.append(_err("DoesNotMatchPattern", "'prev_root' must match ^[a-z0-9]{64}", "/prev_root"))
        if errors:
            raise _validation(errors)
        if call.grant.restrict:
            _check_restrictions(call.grant, [(event, "/event")])
        accepted = self.faults.accept_this_call()
        return self._commit(request, call, cfg, [(event, signature, public_key)], verbose, True, prev_root, accepted)

    async def _v2_log(self, request: web.Request, call: _Call, *, async_mode: bool) -> web.Response:
        body = await self._json_body(request)
        cfg = self._resolve(call, body)
        errors: Errors = []
        verbose = _opt_bool(body, "verbose", errors, False)
        events = body.get("events", _MISSING)
        items: list[tuple[Any, str | None, str | None]] = []
        if events is _MISSING:
            errors.append(_err("FieldRequired", "'events' is required", "/events"))
        elif type(events) is not list:
            errors.append(_err("InvalidArray", "'events' must be an array", "/events"))
        elif not events:
            errors.append(_err("BelowMinItems", "'events' needs at least 1 item", "/events"))
        elif len(events) > MAX_EVENTS:
            errors.append(
                _err("AboveMaxItems", f"'events' has {len(events)} items; the maximum is {MAX_EVENTS}", "/events")
            )
        else:
            validate = cfg.validator.validate
            for i, item in enumerate(events):
                if type(item) is not dict:
                    errors.append(_err("InvalidObject", "each item of 'events' must be an object", _ptr("events", i)))
                    continue
                event = item.get("event", _MISSING)
                if event is _MISSING:
                    errors.append(_err("FieldRequired", "'event' is required", _ptr("events", i, "event")))
                else:
                    validate(event, f"/events/{i}/event", errors)
                if len(item) == 1:  # the hot path: {"event": {...}} only
                    items.append((event, None, None))
                    continue
                base = _ptr("events", i)
                _unexpected(item, _V2_ITEM_KEYS, errors, base)
                signature = _opt_str(item, "signature", errors, base, _SIG_MAX)
                public_key = _opt_str(item, "public_key", errors, base, _SIG_MAX)
                items.append((event, signature, public_key))
        if errors:
            raise _validation(errors)
        if call.grant.restrict:
            _check_restrictions(call.grant, [(it[0], f"/events/{i}/event") for i, it in enumerate(items)])
        accepted = async_mode or self.faults.accept_this_call()
        return self._commit(request, call, cfg, items, verbose, False, None, accepted)

    async def _log_stream(self, request: web.Request, call: _Call) -> web.Response:
        """Auth0 log-stream bodies (``{"logs": [{log_id, data}, ...]}``, as pangea-sdk's
        ``log_stream()`` sends them), mapped to standard-schema events as the gateway maps them."""
        raw = await request.read()
        try:
            doc = orjson.loads(raw) if raw.strip() else None
        except orjson.JSONDecodeError:
            doc = None  # JSON lines: auth0.decode reads them
        body: dict[str, Any] = {}
        if isinstance(doc, dict):
            body = dict(doc)
            config_id = body.pop("config_id", None)
            cfg = self._resolve(call, {} if config_id is None else {"config_id": config_id})
            raw = orjson.dumps(body)
        else:
            cfg = self._resolve(call, {})
        if cfg.settings.schema_ is not None:
            raise ApiError(400, "InvalidSchema", "Log streams need a configuration with the standard schema")
        try:
            records = auth0.decode(raw)
        except DecodeError as exc:
            raise _validation([_err("InvalidObject", exc.detail, "/logs")]) from None
        errors: Errors = []
        if not records:
            errors.append(_err("BelowMinItems", "'logs' needs at least 1 record", "/logs"))
        elif len(records) > MAX_EVENTS:
            errors.append(
                _err("AboveMaxItems", f"'logs' has {len(records)} records; the maximum is {MAX_EVENTS}", "/logs")
            )
        items: list[tuple[Any, str | None, str | None]] = []
        for i, record in enumerate(records[:MAX_EVENTS]):
            base = _ptr("logs", i)
            try:
                event, _ = auth0.to_event(record)
            except EventInvalid as exc:
                errors.extend(_err(e["code"], e["detail"], base + e["source"]) for e in exc.errors)
                continue
            cfg.validator.validate(event, base, errors)
            items.append((event, None, None))
        if errors:
            raise _validation(errors)
        if call.grant.restrict:
            _check_restrictions(call.grant, [(it[0], _ptr("logs", i)) for i, it in enumerate(items)])
        return self._commit(request, call, cfg, items, False, False, None, False, stream=True)

    def _commit(
        self,
        request: web.Request,
        call: _Call,
        cfg: _Config,
        items: list[tuple[Any, str | None, str | None]],
        verbose: bool,
        single: bool,
        prev_root: str | None,
        accepted: bool,
        *,
        stream: bool = False,
    ) -> web.Response:
        """Hash and store validated events in one transaction; answer 200, or 202 when ``accepted``.

        ``stream``: the answer of /v1/log_stream, whose result is ``{}``."""
        store = self._db
        tree = cfg.tree
        # One stamp per request; never earlier than the last one, so received_at follows leaf order
        # (searches bound time ranges by bisecting the leaves).
        received_at = format_timestamp(utc_now())
        if received_at < tree.last_received_at:
            received_at = tree.last_received_at
        envelopes = [envelope_bytes(ev, received_at, sig, pub) for ev, sig, pub in items]
        digests = [sha256(e).digest() for e in envelopes]
        n = len(digests)
        summary = f"Logged {n} record(s)"
        with store.transaction():
            start = store.append(tree, received_at, envelopes, digests)
            root = tree.remember_root()
            results: list[dict[str, Any]]
            if verbose and single:
                # /v1/log answers AuditLogResponse: the unpublished root and the record's proof.
                assert root is not None
                root_hex = root.hex()
                proofs = store.membership_proofs(tree, range(start, start + n), tree.size)
                results = [
                    {
                        "envelope": orjson.Fragment(env),
                        "hash": d.hex(),
                        "unpublished_root": root_hex,
                        "membership_proof": proof,
                    }
                    for env, d, proof in zip(envelopes, digests, proofs, strict=True)
                ]
            elif verbose:
                # /v2/log answers AuditLogResponseV2: envelope and hash only, no proofs.
                results = [
                    {"envelope": orjson.Fragment(env), "hash": d.hex()}
                    for env, d in zip(envelopes, digests, strict=True)
                ]
            else:
                results = [{"hash": d.hex()} for d in digests]
            result: dict[str, Any]
            if single:
                result = results[0]
                old_size = tree.recent_roots.get(prev_root) if prev_root else None
                if verbose and old_size is not None and old_size < tree.size:
                    result["consistency_proof"] = store.consistency_proof(tree, old_size, tree.size)
            elif stream:
                result = {}
            else:
                result = {"results": results}
            if accepted:
                final = orjson.dumps(
                    {
                        "request_id": call.request_id,
                        "request_time": call.request_time,
                        "response_time": format_timestamp(utc_now()),
                        "status": "Success",
                        "summary": summary,
                        "result": result,
                    }
                )
                expires = time.time() + self.settings.async_result_ttl_mins * 60
                store.put_async_result(call.request_id, cfg.settings.id, expires, final)
        self.stored_events += n
        if log.isEnabledFor(logging.DEBUG):
            log.debug("stored", extra={"config_id": cfg.settings.id, "events": n, "size": tree.size})
        if not accepted:
            return self._response(call, 200, "Success", summary, result)
        self._async_writes += 1
        if self._async_writes % 1000 == 0:
            store.purge_async_results(time.time())
        self._pending[call.request_id] = _Pending(self.faults.settings.pending_polls)
        while len(self._pending) > _MAX_PENDING:
            self._pending.popitem(last=False)
        return self._accepted(request, call, 0)

    def _accepted(self, request: web.Request, call: _Call, retry_counter: int) -> web.Response:
        result = {
            "location": self._location(request, call.request_id),
            "retry_counter": retry_counter,
            "ttl_mins": self.settings.async_result_ttl_mins,
        }
        return self._response(
            call, 202, "Accepted", "Your request is in progress. Poll the location for the result.", result
        )

    async def _poll(self, request: web.Request, call: _Call) -> web.Response:
        request_id = request.match_info["request_id"]
        found = self._db.get_async_result(request_id, time.time())
        if found is None or found[0] not in call.configs:
            raise ApiError(404, "NotFound", f"No request {request_id} is known")
        pending = self._pending.get(request_id)
        if pending is not None:
            pending.polls += 1
            if pending.remaining > 0:
                pending.remaining -= 1
                # The original request_id, as the SDK polls with the id of the last answer it got.
                return self._accepted(request, _Call(request_id, call.request_time, call.grant), pending.polls)
            del self._pending[request_id]
        return web.Response(
            body=found[1], status=200, content_type="application/json", headers={"X-Request-Id": request_id}
        )

    # -- search ----------------------------------------------------------------------------

    @staticmethod
    def _event_items(records: list[tuple[StoredRecord, str | None]], published_size: int) -> list[dict[str, Any]]:
        return [event_item(rec, proof, published_size) for rec, proof in records]

    async def _published_root(self, request: web.Request, tree: Tree, size: int) -> dict[str, Any] | None:
        """AuditRoot of ``size`` records with ``url`` and ``published_at`` if a published root covers it."""
        published_at = tree.published_at(size)
        if published_at is None or size == 0:
            return None
        store = self._db
        root, proof = await self._in_worker(functools.partial(store.root_with_proof, tree, size))
        data: dict[str, Any] = {
            "tree_name": tree.name,
            "size": size,
            "root_hash": root.hex(),
            "url": self._publication_url(request, tree, size),
            "published_at": published_at,
        }
        if proof is not None:
            data["consistency_proof"] = proof
        return data

    def _publication_url(self, request: web.Request, tree: Tree, size: int) -> str:
        host = request.host or f"{self.settings.listen_host}:{self._port}"
        return f"{request.scheme}://{host}{_PUBLICATION_PREFIX}/{tree.name}_{size}/"

    @staticmethod
    def _unpublished_root(tree: Tree, size: int, root_hex: str | None) -> dict[str, Any] | None:
        if root_hex is None or size == 0:
            return None
        return {"root_hash": root_hex, "size": size, "tree_name": tree.name}

    async def _search(self, request: web.Request, call: _Call) -> web.Response:
        body = await self._json_body(request)
        cfg = self._resolve(call, body)
        errors: Errors = []
        _unexpected(body, _SEARCH_KEYS, errors)
        query = _opt_str(body, "query", errors) or ""
        now = utc_now()
        start, end = self._time_range(body, cfg, errors, now, _SEARCH_DEFAULT_START)
        max_results = _opt_int(body, "max_results", errors, 1, _SEARCH_MAX_RESULTS) or _SEARCH_MAX_RESULTS
        limit = _opt_int(body, "limit", errors, 0, None)
        limit = _SEARCH_DEFAULT_LIMIT if limit is None else limit
        verbose = _opt_bool(body, "verbose", errors, True)
        _opt_bool(body, "return_context", errors, False)
        descending, order_by = self._ordering(body, cfg, errors)
        restriction = self._restriction(body.get("search_restriction"), cfg, errors, "/search_restriction")
        effective = _restricted_search(call.grant, restriction)
        terms: list[Term] = []
        try:
            terms = parse_query(query, cfg.fields)
        except QueryError as exc:
            errors.append(_err("BadFormat", str(exc), "/query"))
        if errors:
            raise _validation(errors)
        tree = cfg.tree
        size = tree.size
        root = tree.frontier.root()
        root_hex = root.hex() if root is not None else None
        criteria = SearchCriteria(
            terms=tuple(terms),
            restriction=tuple((k, tuple(v)) for k, v in sorted(effective.items())),
            start=start,
            end=end,
            descending=descending,
            order_by=order_by,
            max_results=max_results,
        )
        store = self._db
        leaves: list[int] = await self._in_worker(functools.partial(store.search, tree, size, criteria))
        page = leaves[:limit]
        published_size = min(tree.published_size, size) if verbose else 0
        records = await self._in_worker(
            functools.partial(store.fetch, tree, page, size if verbose else None, published_size)
        )
        search_id = _new_id("pas_")
        expires = time.time() + self.settings.search_ttl_secs
        self._remember_search(
            search_id,
            _Search(cfg.settings.id, leaves, size, root_hex, verbose, restriction, expires, published_size, effective),
        )
        result: dict[str, Any] = {
            "id": search_id,
            "count": len(leaves),
            "events": self._event_items(records, published_size),
            "expires_at": format_timestamp(now + timedelta(seconds=self.settings.search_ttl_secs)),
        }
        published = await self._published_root(request, tree, published_size) if published_size else None
        if published is not None:
            result["root"] = published
        unpublished = self._unpublished_root(tree, size, root_hex) if verbose else None
        if unpublished is not None:
            result["unpublished_root"] = unpublished
        return self._response(call, 200, "Success", f"Found {len(leaves)} event(s)", result)

    @staticmethod
    def _time_range(
        body: dict[str, Any], cfg: _Config, errors: Errors, now: datetime, default_start: timedelta | None
    ) -> tuple[str | None, str | None]:
        """``start``/``end`` (DateTimeRel) as UTC timestamps, the start raised to the retention."""
        bounds: dict[str, str | None] = {"start": None, "end": None}
        for key in bounds:
            value = _opt_str(body, key, errors, max_length=128)
            if value is None:
                continue
            try:
                bounds[key] = format_timestamp(parse_time(value, now))
            except QueryError as exc:
                errors.append(_err("BadFormatDateTime", str(exc), _ptr(key)))
        start = bounds["start"]
        if body.get("start") is None and default_start is not None:
            start = format_timestamp(now - default_start)
        if cfg.retention is not None:
            # Records older than the configuration's retention are no longer answered.
            try:
                floor = format_timestamp(now - cfg.retention)
            except OverflowError:  # a retention longer than the calendar: nothing is too old
                floor = ""
            start = floor if start is None or start < floor else start
        return start, bounds["end"]

    @staticmethod
    def _ordering(body: dict[str, Any], cfg: _Config, errors: Errors) -> tuple[bool, str]:
        """``(descending, order_by)`` from ``order`` and ``order_by``."""
        order = body.get("order")
        if order is not None and order not in ("asc", "desc"):
            errors.append(_err("NotEnumMember", "'order' must be one of asc, desc", "/order"))
        order_by = body.get("order_by")
        if order_by is not None and order_by not in cfg.order_by:
            errors.append(
                _err("NotEnumMember", f"'order_by' must be one of {', '.join(sorted(cfg.order_by))}", "/order_by")
            )
        return order != "asc", order_by if isinstance(order_by, str) else "received_at"

    @staticmethod
    def _restriction(value: Any, cfg: _Config, errors: Errors, base: str) -> dict[str, list[str]]:
        if value is None:
            return {}
        if type(value) is not dict:
            errors.append(_err("InvalidObject", "must be an object", base))
            return {}
        out: dict[str, list[str]] = {}
        for key, values in value.items():
            if key not in _RESTRICTION_KEYS:
                errors.append(_err("UnexpectedProperty", f"unexpected property {key!r}", base + _ptr(key)))
                continue
            if type(values) is not list:
                errors.append(_err("InvalidArray", f"{key!r} must be an array of strings", base + _ptr(key)))
                continue
            bad = [i for i, v in enumerate(values) if type(v) is not str]
            for i in bad:
                errors.append(_err("InvalidString", "must be a string", base + _ptr(key, i)))
            if not bad and values:
                out[key] = sorted(set(values))
        return out

    def _remember_search(self, search_id: str, search: _Search) -> None:
        _remember(self._searches, search_id, search)

    async def _results(self, request: web.Request, call: _Call) -> web.Response:
        body = await self._json_body(request)
        errors: Errors = []
        search_id = body.get("id", _MISSING)
        if search_id is _MISSING:
            errors.append(_err("FieldRequired", "'id' is required", "/id"))
        elif type(search_id) is not str:
            errors.append(_err("InvalidString", "'id' must be a string", "/id"))
        limit = _opt_int(body, "limit", errors, 0, None)
        limit = _SEARCH_DEFAULT_LIMIT if limit is None else limit
        offset = _opt_int(body, "offset", errors, 0, None) or 0
        _opt_bool(body, "return_context", errors, False)
        asserted = body.get("assert_search_restriction")
        if errors:
            raise _validation(errors)
        search = self._searches.get(search_id) if isinstance(search_id, str) else None
        if search is None or search.expires <= time.time() or not search.visible_to(call.grant):
            raise _validation([_err("DoesNotExist", "no such search result id (unknown or expired)", "/id")])
        cid = body.get("config_id")
        if cid is not None and cid != search.config_id:
            raise _validation([_err("DoesNotExist", "this search belongs to another configuration", "/id")])
        cfg = self._configs[search.config_id]
        if asserted is not None:
            wanted = self._restriction(asserted, cfg, errors, "/assert_search_restriction")
            if errors:
                raise _validation(errors)
            if wanted != search.restriction:
                raise _validation(
                    [
                        _err(
                            "BadState",
                            "the search was made with another search_restriction",
                            "/assert_search_restriction",
                        )
                    ]
                )
        if offset > len(search.leaves):
            raise ApiError(400, "BadOffset", f"offset {offset} is beyond the {len(search.leaves)} result(s)")
        page = search.leaves[offset : offset + limit]
        store = self._db
        records = await self._in_worker(
            functools.partial(
                store.fetch, cfg.tree, page, search.size if search.verbose else None, search.published_size
            )
        )
        result: dict[str, Any] = {
            "count": len(search.leaves),
            "events": self._event_items(records, search.published_size),
        }
        if search.published_size:
            published = await self._published_root(request, cfg.tree, search.published_size)
            if published is not None:
                result["root"] = published
        unpublished = self._unpublished_root(cfg.tree, search.size, search.root_hex) if search.verbose else None
        if unpublished is not None:
            result["unpublished_root"] = unpublished
        return self._response(call, 200, "Success", f"Found {len(page)} event(s)", result)

    # -- export and download ---------------------------------------------------------------

    async def _export(self, request: web.Request, call: _Call) -> web.Response:
        body = await self._json_body(request)
        cfg = self._resolve(call, body)
        errors: Errors = []
        _unexpected(body, _EXPORT_KEYS, errors)
        start, end = self._time_range(body, cfg, errors, utc_now(), None)
        verbose = _opt_bool(body, "verbose", errors, True)
        descending, order_by = self._ordering(body, cfg, errors)
        fmt = body.get("format", "csv")
        if fmt not in _FORMATS:
            errors.append(_err("NotEnumMember", "'format' must be one of csv, json", "/format"))
        if errors:
            raise _validation(errors)
        tree = cfg.tree
        size = tree.size
        root = tree.frontier.root()
        criteria = SearchCriteria(
            terms=(),
            restriction=tuple((k, tuple(sorted(v))) for k, v in sorted(call.grant.restrict)),
            start=start,
            end=end,
            descending=descending,
            order_by=order_by,
            max_results=max(size, 1),
        )
        store = self._db
        leaves: list[int] = await self._in_worker(functools.partial(store.search, tree, size, criteria))
        ttl = self.settings.async_result_ttl_mins * 60
        published_size = min(tree.published_size, size) if verbose else 0
        export = _Search(
            cfg.settings.id,
            leaves,
            size,
            root.hex() if root is not None else None,
            verbose,
            {},
            time.time() + ttl,
            published_size,
            {k: sorted(v) for k, v in call.grant.restrict},
        )
        _remember(self._exports, call.request_id, export)
        done = orjson.dumps(
            {
                "request_id": call.request_id,
                "request_time": call.request_time,
                "response_time": format_timestamp(utc_now()),
                "status": "Success",
                "summary": f"Exported {len(leaves)} record(s)",
                "result": {},
            }
        )
        with store.transaction():
            store.put_async_result(call.request_id, cfg.settings.id, time.time() + ttl, done)
        # The spec's export is asynchronous: 202 now, the (empty) result at /request/{id}.
        return self._accepted(request, call, 0)

    async def _download_results(self, request: web.Request, call: _Call) -> web.Response:
        body = await self._json_body(request)
        errors: Errors = []
        _unexpected(body, _DOWNLOAD_KEYS, errors)
        result_id = _opt_str(body, "result_id", errors)
        request_id = _opt_str(body, "request_id", errors)
        if result_id is not None and not _RESULT_ID.match(result_id):
            errors.append(_err("DoesNotMatchPattern", "'result_id' must match ^pas_[a-z0-9]{32}$", "/result_id"))
        if request_id is not None and not _REQUEST_ID.match(request_id):
            errors.append(_err("DoesNotMatchPattern", "'request_id' must match ^prq_[a-z0-9]{32}$", "/request_id"))
        if "result_id" not in body and "request_id" not in body:
            errors.append(_err("FieldRequired", "one of 'result_id' or 'request_id' is required", "/result_id"))
        elif "result_id" in body and "request_id" in body:
            errors.append(_err("UnexpectedProperty", "'result_id' and 'request_id' are exclusive", "/request_id"))
        fmt = body.get("format", "csv")
        if fmt not in _FORMATS:
            errors.append(_err("NotEnumMember", "'format' must be one of csv, json", "/format"))
        _opt_bool(body, "return_context", errors, False)
        cid = _opt_str(body, "config_id", errors)
        if errors:
            raise _validation(errors)
        scope = "search" if result_id is not None else "export"
        if not call.grant.allows(scope):
            raise ApiError(403, "Unauthorized", f"The token has no access to the {scope} endpoints")
        key, source = (result_id, "/result_id") if result_id is not None else (request_id, "/request_id")
        assert key is not None
        found = (self._searches if result_id is not None else self._exports).get(key)
        if found is None or found.expires <= time.time() or not found.visible_to(call.grant):
            raise _validation([_err("DoesNotExist", "no such result (unknown or expired)", source)])
        if cid is not None and cid != found.config_id:
            raise _validation([_err("DoesNotExist", "this result belongs to another configuration", source)])
        cfg = self._configs.get(found.config_id)
        if cfg is None:
            raise _validation([_err("DoesNotExist", "the result's configuration was deleted", source)])
        asserted = body.get("assert_search_restriction")
        if asserted is not None:
            wanted = self._restriction(asserted, cfg, errors, "/assert_search_restriction")
            if errors:
                raise _validation(errors)
            if wanted != found.restriction:
                raise _validation(
                    [
                        _err(
                            "BadState",
                            "the search was made with another search_restriction",
                            "/assert_search_restriction",
                        )
                    ]
                )
        download_key = _new_id("pdl_")
        _remember(self._downloads, download_key, _Download(found, fmt, found.expires))
        host = request.host or f"{self.settings.listen_host}:{self._port}"
        result = {
            "dest_url": f"{request.scheme}://{host}/v1/download/{download_key}",
            "expires_at": format_timestamp(datetime.fromtimestamp(found.expires, UTC)),
        }
        return self._response(call, 200, "Success", "Download ready", result)

    async def _download(self, request: web.Request, call: _Call) -> web.Response:
        key = request.match_info["key"]
        download = self._downloads.get(key)
        if download is None or download.expires <= time.time():
            raise ApiError(404, "NotFound", "No such download (unknown or expired)")
        search = download.search
        cfg = self._configs.get(search.config_id)
        if cfg is None:
            raise ApiError(404, "NotFound", "The download's configuration was deleted")
        store = self._db
        proof_size = search.size if search.verbose else None

        def fetch(leaves: list[int]) -> list[tuple[StoredRecord, str | None]]:
            return store.fetch(cfg.tree, leaves, proof_size, search.published_size)

        fields = [f.id for f in cfg.settings.schema_fields]
        data = await self._in_worker(
            functools.partial(
                render, download.format, search.leaves, fetch, fields, search.published_size, search.verbose
            )
        )
        return web.Response(
            body=data,
            content_type="application/gzip",
            headers={"Content-Disposition": f'attachment; filename="{key}.{download.format}.gz"'},
        )

    # -- root and schema -------------------------------------------------------------------

    async def _root(self, request: web.Request, call: _Call) -> web.Response:
        body = await self._json_body(request)
        cfg = self._resolve(call, body)
        errors: Errors = []
        _unexpected(body, _ROOT_KEYS, errors)
        tree_size = _opt_int(body, "tree_size", errors, 1, None)
        if errors:
            raise _validation(errors)
        tree = cfg.tree
        size = tree.size
        if size == 0:
            # As documented upstream: status TreeNotFound with HTTP 200 while nothing is logged.
            raise ApiError(200, "TreeNotFound", "No record has been logged yet; the tree is empty")
        if tree_size is not None and tree_size > size:
            raise _validation([_err("NotWithinRange", f"'tree_size' must be within 1..{size}", "/tree_size")])
        tree_size = size if tree_size is None else tree_size
        data = await self._published_root(request, tree, tree_size)
        if data is None:
            # Not published yet: AuditUnpublishedRoot (no url, no published_at).
            store = self._db
            root, proof = await self._in_worker(functools.partial(store.root_with_proof, tree, tree_size))
            data = {"tree_name": tree.name, "size": tree_size, "root_hash": root.hex()}
            if proof is not None:
                data["consistency_proof"] = proof
        # The spec's result is AuditRoot itself; pangea-sdk's RootResult reads `result.data`.
        # Both shapes at once keep either reader working.
        return self._response(call, 200, "Success", "Root retrieved", {**data, "data": data})

    async def _schema(self, request: web.Request, call: _Call) -> web.Response:
        body = await self._json_body(request)
        cfg = self._resolve(call, body)
        errors: Errors = []
        _unexpected(body, _SCHEMA_KEYS, errors)
        if errors:
            raise _validation(errors)
        return self._response(call, 200, "Success", "Schema retrieved", cfg.schema_result)

    # -- configurations (/v1beta/config*) -------------------------------------------------

    def _config_result(self, cfg: _Config) -> dict[str, Any]:
        return {"id": cfg.settings.id, **cfg.body, "created_at": cfg.created_at, "updated_at": cfg.updated_at}

    def _config_by_id(self, call: _Call, body: dict[str, Any]) -> _Config:
        """The configuration ``body["id"]`` names, if the caller's token may use it."""
        cid = body.get("id", _MISSING)
        if cid is _MISSING:
            raise _validation([_err("FieldRequired", "'id' is required", "/id")])
        if type(cid) is not str:
            raise _validation([_err("InvalidString", "'id' must be a string", "/id")])
        cfg = self._configs.get(cid)
        if cfg is None or cid not in call.configs:
            # Unknown and foreign ids answer alike: a token learns nothing of others' configurations.
            raise ApiError(403, "MissingConfigIDScope", f"The token has no access to configuration {cid}")
        return cfg

    @staticmethod
    def _parse_config_body(body: dict[str, Any]) -> ServiceConfigBody:
        try:
            parsed = ServiceConfigBody.model_validate(body, strict=True)
        except pydantic.ValidationError as exc:
            raise _validation(pydantic_errors(exc)) from None
        errors = version_errors(parsed, body)
        if errors:
            raise _validation(errors)
        return parsed

    async def _config_get(self, request: web.Request, call: _Call) -> web.Response:
        body = await self._json_body(request)
        errors: Errors = []
        _unexpected(body, frozenset(("id",)), errors)
        if errors:
            raise _validation(errors)
        cfg = self._config_by_id(call, body)
        return self._response(call, 200, "Success", "Configuration retrieved", self._config_result(cfg))

    async def _config_create(self, request: web.Request, call: _Call) -> web.Response:
        body = await self._json_body(request)
        errors: Errors = []
        if "id" in body:
            errors.append(_err("UnexpectedProperty", "creating a config does not accept an id", "/id"))
        if "name" not in body:
            errors.append(_err("FieldRequired", "'name' is required", "/name"))
        if errors:
            raise _validation(errors)
        parsed = self._parse_config_body(body)
        cid = _new_id("pci_")
        stored = parsed.stored()
        runtime = runtime_settings(cid, stored)
        now = format_timestamp(utc_now())
        store = self._db
        with store.transaction():
            store.put_config(cid, orjson.dumps(stored).decode(), now, now, "api", call.grant.owner)
            if call.grant.token_id is not None:
                store.grant_config(call.grant.token_id, cid)
        cfg = self._add_config(runtime, stored, now, now, "api", call.grant.owner)
        if call.grant.owner is not None:
            self._static[call.grant.owner].add(cid)
        log.info("configuration created", extra={"config_id": cid})
        return self._response(call, 200, "Success", "Configuration created", self._config_result(cfg))

    def _writable(self, cfg: _Config) -> None:
        if cfg.origin != "api":
            raise _validation(
                [
                    _err(
                        "ReadOnly",
                        "this configuration comes from the server's settings; change it there",
                        "/id",
                    )
                ]
            )

    def _save_config(self, cfg: _Config, body: dict[str, Any]) -> _Config:
        now = format_timestamp(utc_now())
        cid = cfg.settings.id
        store = self._db
        with store.transaction():
            store.put_config(cid, orjson.dumps(body).decode(), cfg.created_at, now, cfg.origin, cfg.owner)
        return self._add_config(runtime_settings(cid, body), body, cfg.created_at, now, cfg.origin, cfg.owner)

    async def _config_update(self, request: web.Request, call: _Call) -> web.Response:
        body = await self._json_body(request)
        errors: Errors = [
            _err("FieldRequired", f"{key!r} is required", f"/{key}")
            for key in ("id", "name", "updated_at")
            if key not in body
        ]
        if errors:
            raise _validation(errors)
        parsed = self._parse_config_body(body)
        cfg = self._config_by_id(call, body)
        self._writable(cfg)
        stored = parsed.stored()
        if parsed.updated_at is not None and not self._same_time(parsed.updated_at, cfg.updated_at):
            errors.append(
                _err("BadState", "the configuration changed since 'updated_at'; read it again", "/updated_at")
            )
        if stored["version"] != cfg.body.get("version", 1):
            errors.append(_err("BadState", "'version' cannot change", "/version"))
        if "schema" in body and stored.get("schema") != cfg.body.get("schema"):
            errors.append(_err("BadState", "'schema' is only settable at create time", "/schema"))
        if errors:
            raise _validation(errors)
        if "schema" in cfg.body:
            stored["schema"] = cfg.body["schema"]
        if "partition_overrides" in cfg.body and "partition_overrides" not in body:
            stored["partition_overrides"] = cfg.body["partition_overrides"]
        saved = self._save_config(cfg, stored)
        return self._response(call, 200, "Success", "Configuration updated", self._config_result(saved))

    @staticmethod
    def _same_time(given: str, stored: str) -> bool:
        try:
            return format_timestamp(parse_time(given, utc_now())) == stored
        except QueryError:
            return False

    async def _config_delete(self, request: web.Request, call: _Call) -> web.Response:
        body = await self._json_body(request)
        errors: Errors = []
        _unexpected(body, frozenset(("id",)), errors)
        if errors:
            raise _validation(errors)
        cfg = self._config_by_id(call, body)
        self._writable(cfg)
        cid = cfg.settings.id
        store = self._db
        with store.transaction():
            store.delete_config(cid)
        del self._configs[cid]
        for ids in self._static.values():
            ids.discard(cid)
        log.info("configuration deleted", extra={"config_id": cid})
        return self._response(call, 200, "Success", "Configuration deleted", self._config_result(cfg))

    async def _config_list(self, request: web.Request, call: _Call) -> web.Response:
        body = await self._json_body(request)
        try:
            req = ConfigListRequest.model_validate(body, strict=True)
        except pydantic.ValidationError as exc:
            raise _validation(pydantic_errors(exc)) from None
        items = [self._configs[c] for c in sorted(call.configs) if c in self._configs]
        flt = req.filter
        errors: Errors = []
        if flt is not None:
            if flt.id is not None:
                items = [c for c in items if c.settings.id == flt.id]
            if flt.id__in is not None:
                items = [c for c in items if c.settings.id in flt.id__in]
            for part in flt.id__contains or ():
                items = [c for c in items if part in c.settings.id]
            now = utc_now()
            for key, value in flt.model_dump(exclude_none=True).items():
                name, _, op = key.partition("__")
                if name not in ("created_at", "updated_at"):
                    continue
                try:
                    bound = format_timestamp(parse_time(value, now))
                except QueryError as exc:
                    errors.append(_err("BadFormatDateTime", str(exc), _ptr("filter", key)))
                    continue
                test: Callable[[str], bool] = {
                    "": lambda v, b=bound: v == b,
                    "gt": lambda v, b=bound: v > b,
                    "gte": lambda v, b=bound: v >= b,
                    "lt": lambda v, b=bound: v < b,
                    "lte": lambda v, b=bound: v <= b,
                }[op]
                items = [c for c in items if test(c.created_at if name == "created_at" else c.updated_at)]
        offset = 0
        if req.last is not None:
            if not req.last.isdigit():
                errors.append(_err("InvalidValue", "'last' must be a value from a previous answer", "/last"))
            else:
                offset = int(req.last)
        if errors:
            raise _validation(errors)
        key = req.order_by or "created_at"
        items.sort(
            key=lambda c: (getattr(c, key) if key != "id" else c.settings.id, c.settings.id),
            reverse=req.order == "desc",
        )
        size = req.size or 20
        page = items[offset : offset + size]
        result: dict[str, Any] = {"count": len(items), "items": [self._config_result(c) for c in page]}
        if offset + size < len(items):
            result["last"] = str(offset + size)
        return self._response(call, 200, "Success", f"Found {len(items)} configuration(s)", result)

    async def _config_partition_overrides(self, request: web.Request, call: _Call) -> web.Response:
        body = await self._json_body(request)
        try:
            req = PartitionOverridesRequest.model_validate(body, strict=True)
        except pydantic.ValidationError as exc:
            raise _validation(pydantic_errors(exc)) from None
        cfg = self._config_by_id(call, body)
        self._writable(cfg)
        partitioned = cfg.settings.schema_ is not None and any(f.partitioned for f in cfg.settings.schema_.fields)
        if cfg.body.get("version") != 3 or not partitioned:
            raise ApiError(
                400, "InvalidSchema", "Partition overrides need a version 3 configuration with a partitioned field"
            )
        errors: Errors = []
        for value, retention in req.overrides.items():
            span = parse_duration(retention.cold_storage) if retention.cold_storage is not None else None
            if span is not None and span.days < 180:
                errors.append(
                    _err(
                        "NotWithinRange",
                        "'cold_storage' must be at least 180d",
                        _ptr("overrides", value, "cold_storage"),
                    )
                )
        if errors:
            raise _validation(errors)
        stored = dict(cfg.body)
        merged = dict(stored.get("partition_overrides") or {})
        merged.update({k: v.model_dump(exclude_none=True) for k, v in req.overrides.items()})
        stored["partition_overrides"] = merged
        self._save_config(cfg, stored)
        return self._response(call, 200, "Success", "Partition overrides updated", {})

    # -- OAuth2 client credentials (RFC 6749 section 4.4, RFC 7662, RFC 7009) --------------

    def _issuer(self, request: web.Request) -> str:
        host = request.host or f"{self.settings.listen_host}:{self._port}"
        return f"{request.scheme}://{host}"

    async def _oauth_metadata(self, request: web.Request, call: _Call) -> web.Response:
        issuer = self._issuer(request)
        return web.json_response(
            {
                "issuer": issuer,
                "token_endpoint": issuer + "/v1beta/oauth/token",
                "introspection_endpoint": issuer + "/v1beta/oauth/token/introspect",
                "revocation_endpoint": issuer + "/v1beta/oauth/token/revoke",
                "grant_types_supported": ["client_credentials"],
                "response_types_supported": ["token"],
                "scopes_supported": sorted(oauth.SCOPES),
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            }
        )

    @staticmethod
    def _oauth_error(status: int, error: str, description: str) -> web.Response:
        headers = {"Cache-Control": "no-store"}
        if error == "invalid_client":
            headers["WWW-Authenticate"] = 'Basic realm="local-audit"'
        return web.json_response({"error": error, "error_description": description}, status=status, headers=headers)

    async def _oauth_client(self, request: web.Request) -> tuple[oauth.Client | None, dict[str, str]]:
        """The authenticated client (client_secret_basic or client_secret_post) and the form."""
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        header = request.headers.get("Authorization", "")
        client_id = secret = None
        if header[:6].lower() == "basic ":
            try:
                decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                return None, form
            # RFC 6749 section 2.3.1: id and secret are form-urlencoded before base64.
            raw_id, sep, raw_secret = decoded.partition(":")
            if not sep or "client_secret" in form:
                return None, form  # one authentication method per request
            client_id, secret = unquote_plus(raw_id), unquote_plus(raw_secret)
        else:
            client_id, secret = form.get("client_id"), form.get("client_secret")
        if not client_id or not secret:
            return None, form
        return oauth.find_client(self._db.sql, client_id, secret), form

    async def _oauth_token(self, request: web.Request, call: _Call) -> web.Response:
        client, form = await self._oauth_client(request)
        grant_type = form.get("grant_type")
        if grant_type is None:
            return self._oauth_error(400, "invalid_request", "grant_type is required")
        if client is None:
            return self._oauth_error(401, "invalid_client", "Client authentication failed")
        if grant_type != "client_credentials":
            return self._oauth_error(400, "unsupported_grant_type", "Only client_credentials is supported")
        requested = form.get("scope")
        granted = set(client.scopes)
        if requested is not None:
            asked = set(requested.split())
            if not asked or not asked <= granted:
                return self._oauth_error(400, "invalid_scope", "The scope is not within the client's scopes")
            granted = asked
        ttl = client.token_ttl_secs
        asked_ttl = form.get("expires_in")
        if asked_ttl is not None:
            if not asked_ttl.isdigit() or not 1 <= int(asked_ttl) <= ttl:
                return self._oauth_error(400, "invalid_request", f"expires_in must be within 1..{ttl}")
            ttl = int(asked_ttl)
        now = self._clock()
        scope = " ".join(sorted(granted))
        issued = create_token(
            self._db.sql,
            name=client.name,
            configs=client.configs,
            endpoints=oauth.scope_endpoints(granted),
            restrict={},
            expires_at=now + ttl,
            client_id=client.client_id,
            scope=scope,
            now=now,
        )
        log.info("access token issued", extra={"client_id": client.client_id, "token_id": issued["id"]})
        return web.json_response(
            {"access_token": issued["token"], "token_type": "Bearer", "expires_in": ttl, "scope": scope},
            headers={"Cache-Control": "no-store"},
        )

    async def _oauth_introspect(self, request: web.Request, call: _Call) -> web.Response:
        client, form = await self._oauth_client(request)
        token = form.get("token")
        info = None
        if client is not None and token:
            info = introspect_token(self._db.sql, token_digest(token), self._clock())
        if info is None or client is None or info["client_id"] != client.client_id:
            # Inactive, unknown, another client's, or an unauthenticated request: nothing more.
            return web.json_response({"active": False}, headers={"Cache-Control": "no-store"})
        iat = int(info["issued_at"])
        answer: dict[str, Any] = {
            "iss": self._issuer(request),
            "sub": client.client_id,
            "iat": iat,
            "nbf": iat,
            "jti": info["id"],
            "client_id": client.client_id,
            "token_type": "Bearer",
            "username": client.name,
            "scope": info["scope"] or "",
            "active": True,
        }
        if info["expires_at"] is not None:
            answer["exp"] = int(info["expires_at"])
        return web.json_response(answer, headers={"Cache-Control": "no-store"})

    async def _oauth_revoke(self, request: web.Request, call: _Call) -> web.Response:
        client, form = await self._oauth_client(request)
        if client is None:
            return self._oauth_error(401, "invalid_client", "Client authentication failed")
        token = form.get("token")
        if not token:
            return self._oauth_error(400, "invalid_request", "token is required")
        if not revoke_digest(self._db.sql, token_digest(token), client.client_id):
            return web.json_response({"error": "invalid_request", "error_description": "The token does not exist"})
        log.info("access token revoked", extra={"client_id": client.client_id})
        return web.Response(status=200)

    # -- published roots -------------------------------------------------------------------

    def publish_roots(self) -> list[str]:
        """Publish the root of every configuration whose log grew; returns their ids.

        Runs every ``publish_interval_secs``; tests call it directly instead of waiting.
        """
        store = self._db
        now = format_timestamp(utc_now())
        done = []
        with store.transaction():
            for cid, cfg in self._configs.items():
                if store.publish(cfg.tree, now):
                    done.append(cid)
        if done:
            log.info("roots published", extra={"configs": done})
        return done

    async def _publish_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                self.publish_roots()
            except Exception:
                # A failed publication is retried at the next tick; serving goes on.
                log.exception("publishing roots failed")

    def _tree_named(self, name: str) -> Tree | None:
        for cfg in self._configs.values():
            if cfg.tree.name == name:
                return cfg.tree
        return None

    async def _publication_lookup(self, request: web.Request, call: _Call) -> web.Response:
        """Arweave's GraphQL transaction look-up, for the ``tree_name`` and ``tree_size`` tags."""
        body = await self._json_body(request)
        query = body.get("query")
        if type(query) is not str:
            raise _validation([_err("InvalidString", "'query' must be a GraphQL query string", "/query")])
        tags: dict[str, list[str]] = {}
        for name, values in _GRAPHQL_TAG.findall(query):
            tags[name] = re.findall(r'"([^"]*)"', values)
        names = tags.get("tree_name", [])
        tree = self._tree_named(names[0]) if len(names) == 1 else None
        edges = []
        if tree is not None:
            for value in tags.get("tree_size", []):
                if value.isdigit() and 0 < int(value) <= tree.published_size:
                    edges.append(
                        {
                            "node": {
                                "id": f"{tree.name}_{int(value)}",
                                "tags": [
                                    {"name": "tree_size", "value": str(int(value))},
                                    {"name": "tree_name", "value": tree.name},
                                ],
                            }
                        }
                    )
        answer = {"data": {"transactions": {"edges": edges}}}
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def _publication(self, request: web.Request, call: _Call) -> web.Response:
        """One published root, as the Arweave transaction that carries it."""
        name, _, size_s = request.match_info["tx_id"].rpartition("_")
        tree = self._tree_named(name)
        data = None
        if tree is not None and size_s.isdigit() and 0 < int(size_s) <= tree.published_size:
            data = await self._published_root(request, tree, int(size_s))
        if data is None:
            raise ApiError(404, "NotFound", "No such publication")
        return web.Response(body=orjson.dumps(data), content_type="application/json")

    # -- admin -----------------------------------------------------------------------------

    async def _set_faults(self, request: web.Request, call: _Call) -> web.Response:
        body = await self._json_body(request)
        reset = body.pop("reset", False)
        if type(reset) is not bool:
            raise _validation([_err("InvalidBool", "'reset' must be a boolean", "/reset")])
        try:
            settings = self.faults.update(body, reset=reset)
        except pydantic.ValidationError as exc:
            raise _validation(
                [_err("BadFormat", e["msg"], _ptr(*(str(p) for p in e["loc"]))) for e in exc.errors()]
            ) from None
        log.info("faults changed", extra={"faults": settings.model_dump()})
        return self._response(call, 200, "Success", "Faults updated", settings.model_dump())

    async def _get_faults(self, request: web.Request, call: _Call) -> web.Response:
        return self._response(call, 200, "Success", "Faults in force", self.faults.settings.model_dump())

    async def _stats(self, request: web.Request, call: _Call) -> web.Response:
        result = {
            "calls": sum(v for k, v in self.calls.items() if not k.startswith("_") and k != "not_found"),
            "calls_by_endpoint": dict(self.calls),
            "stored_events": self.stored_events,
            "rejected_calls": self.rejected_calls,
            "faults_injected": dict(self.faults.injected),
            "records": {t.config_id: t.size for t in self._db.trees()},
        }
        return self._response(call, 200, "Success", "Statistics", result)

    async def _not_found(self, request: web.Request, call: _Call) -> web.Response:
        raise ApiError(404, "NotFound", f"{request.method} {request.path} is not an endpoint of this service")
