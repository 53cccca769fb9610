"""Root configuration: a YAML file validated by pydantic, composed of each component's config.

``${VAR}`` and ``${VAR:-default}`` are substituted in string values before validation
(``$${`` escapes); a missing variable without a default is an error naming the key path.
Validation errors name the offending key path, e.g. ``sources.auth0.pathh: Extra inputs...``;
YAML syntax errors name the key path (where known), line and column.  Neither ever quotes a
value or a line of the file: a token may be what is on it.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Self, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from gateway.buffer.config import BufferConfig
from gateway.configbase import StrictModel
from gateway.dedup import DedupConfig
from gateway.errors import ConfigError
from gateway.pipeline.config import BatchConfig, DestinationConfig, SigningConfig
from gateway.sinks.deadletter.config import DeadLetterConfig
from gateway.sinks.pangea.config import UpstreamConfig
from gateway.sources.kafka.config import KafkaSourceConfig
from gateway.sources.poll.config import PollSourceConfig
from gateway.sources.webhook.config import IntakeServerConfig, WebhookSourceConfig

DEFAULT_LISTEN = "127.0.0.1:8080"
DEFAULT_ADMIN_LISTEN = "127.0.0.1:9090"
DEFAULT_LOCAL_AUDIT_LISTEN = "127.0.0.1:8090"
DEFAULT_DATA_DIR = "./audit-gateway-data"

__all__ = [
    "DEFAULT_ADMIN_LISTEN",
    "DEFAULT_DATA_DIR",
    "DEFAULT_LISTEN",
    "DEFAULT_LOCAL_AUDIT_LISTEN",
    "BatchConfig",
    "DestinationConfig",
    "GatewayConfig",
    "SigningConfig",
]


SourceConfig = Annotated[WebhookSourceConfig | KafkaSourceConfig | PollSourceConfig, Field(discriminator="type")]


class LocalAuditEmbedConfig(StrictModel):
    """The embedded local audit log, started when `upstream` is omitted."""

    listen: str | None = Field(default=None, description="HOST:PORT; default 127.0.0.1:8090 (or --local-audit-listen).")


class TapConfig(StrictModel):
    """What `audit-gateway tap` shows (GET /tap on the admin port)."""

    redact_fields: list[str] = Field(
        default_factory=list,
        description="Event fields (dotted paths: `actor`, `new.password`) tap shows as `***`; secrets always are.",
    )


class GatewayConfig(StrictModel):
    """The whole gateway."""

    listen: str | None = Field(default=None, description="Intake HOST:PORT; --listen wins; default 127.0.0.1:8080.")
    admin_listen: str | None = Field(
        default=None, description="Admin HOST:PORT (/metrics, /healthz, /readyz); --admin-listen wins."
    )
    data_dir: Path | None = Field(default=None, description="State directory; --data-dir wins.")
    shutdown_timeout_secs: float = Field(default=30.0, gt=0, description="SIGTERM: longest wait for the flush.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="Log level.")
    access_log: bool = Field(
        default=False,
        description="Log one line per intake request (method, path without query, status, duration, remote).",
    )
    stats_interval_secs: float = Field(
        default=60.0,
        ge=0,
        description=(
            "Log a stats line (events in, out, retrying, dead-lettered per source and destination) this often;"
            " 0: never."
        ),
    )
    tap: TapConfig = Field(default_factory=TapConfig, description="`audit-gateway tap` settings.")
    upstream: UpstreamConfig | None = Field(
        default=None, description="The audit log; omitted: the embedded local audit log."
    )
    local_audit: LocalAuditEmbedConfig = Field(
        default_factory=LocalAuditEmbedConfig, description="Embedded local audit log settings."
    )
    intake: IntakeServerConfig = Field(
        default_factory=IntakeServerConfig, description="HTTP intake listener settings (TLS, timeouts)."
    )
    buffer: BufferConfig = Field(default_factory=BufferConfig, description="Buffering between intake and upstream.")
    dedup: DedupConfig = Field(default_factory=DedupConfig, description="Dropping resent events by their source id.")
    deadletter: DeadLetterConfig = Field(
        default_factory=DeadLetterConfig, description="Where events refused for good are recorded."
    )
    destinations: dict[str, DestinationConfig] = Field(
        min_length=1, description="Audit configurations upstream, by name."
    )
    sources: dict[str, SourceConfig] = Field(min_length=1, description="Where events come from, by name.")

    @model_validator(mode="after")
    def _references(self) -> Self:
        for name, src in self.sources.items():
            for target in src.targets:
                if target not in self.destinations:
                    raise ValueError(f"sources.{name}.destination: unknown destination {target!r}")
            first = self.destinations[src.destination]
            for target in src.targets[1:]:
                other = self.destinations[target]
                # Fan-out copies the event as normalized for the first destination.
                if other.schema_ != first.schema_ or other.signing != first.signing:
                    raise ValueError(
                        f"sources.{name}.destinations: {target!r} must have the schema and signing of"
                        f" {src.destination!r} (a fan-out sends each destination the same normalized event)"
                    )
            for i, caller in enumerate(getattr(src, "callers", None) or []):
                for d in caller.destinations:
                    if d not in self.destinations:
                        raise ValueError(f"sources.{name}.callers.{i}.destinations: unknown destination {d!r}")
        for name, src in self.sources.items():
            auth = getattr(src, "auth", None)
            if auth is not None and auth.pass_through and self.buffer.type != "memory":
                # A stored event keeps its item only: delivered later, it would go with the
                # gateway's credential, not its caller's.
                raise ValueError(f"sources.{name}.auth.pass_through: needs buffer type memory")
        paths: dict[str, str] = {}
        for name, src in self.sources.items():
            if isinstance(src, WebhookSourceConfig):
                key = f"{src.format == 'pangea'}:{src.route_path}"
                if key in paths:
                    raise ValueError(f"sources.{name}.path: route already used by source {paths[key]!r}")
                paths[key] = name
        return self


_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _substitute(value: Any, path: str, env: dict[str, str], missing: list[str]) -> Any:
    """``${VAR}`` substituted in every string; each variable not set goes into ``missing``
    (``key.path: environment variable X is not set``), so all of them are reported at once."""
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            missing.append(f"{path or '<root>'}: environment variable {name} is not set")
            return ""

        return _VAR.sub(repl, value)
    if isinstance(value, dict):
        return {k: _substitute(v, f"{path}.{k}" if path else str(k), env, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, f"{path}[{i}]", env, missing) for i, v in enumerate(value)]
    return value


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("webhook", "kafka", "poll") and out.startswith("sources."):
            continue  # the discriminator tag pydantic inserts; not a key the user wrote
        else:
            out += f".{part}" if out else str(part)
    return out


def _describe(err: ErrorDetails) -> str:
    """A pydantic error's message without the offending value (it may be a secret)."""
    ctx = err.get("ctx") or {}
    if err["type"] == "union_tag_invalid":
        # pydantic's message quotes the tag the file gave
        return f"unknown {ctx.get('discriminator', 'tag')}; expected one of {ctx.get('expected_tags', '')}"
    msg = err["msg"]
    value = err.get("input")
    if isinstance(value, str) and len(value) >= 3 and value in msg:
        msg = msg.replace(value, "<value>")
    return msg


def _tagged(model: type[BaseModel], tag: str) -> bool:
    field = model.model_fields.get("type")
    return field is not None and tag in get_args(field.annotation)


def _member(annotation: Any, loc: tuple[int | str, ...]) -> Any:
    """The model inside ``X | None``, ``dict[str, X]``, ``list[X]``, ``Annotated[A | B, ...]``;
    of a union, the member whose ``type`` tag is in ``loc``."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
            continue
        if origin in (dict, list):
            # the next location part is the key or index: the model is the value type
            return _Keyed(get_args(annotation)[-1])
        if origin in (Union, UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
            for m in members:
                if (
                    isinstance(m, type)
                    and issubclass(m, BaseModel)
                    and any(isinstance(p, str) and _tagged(m, p) for p in loc)
                ):
                    return m
            return None
        return annotation


class _Keyed:
    """A ``dict``/``list`` step of :func:`_did_you_mean`: the next location part is a key, skipped."""

    def __init__(self, value: Any) -> None:
        self.value = value


def _did_you_mean(loc: tuple[int | str, ...]) -> str:
    model: Any = GatewayConfig
    parts = list(loc[:-1])
    i = 0
    while i < len(parts):
        part = parts[i]
        if isinstance(model, _Keyed):
            model = _member(model.value, loc)
            i += 1
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return ""
        if isinstance(part, str) and part in model.model_fields:
            model = _member(model.model_fields[part].annotation, loc)
        elif not (isinstance(part, str) and _tagged(model, part)):
            return ""
        i += 1
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return ""
    wrong = str(loc[-1])
    close = difflib.get_close_matches(wrong, list(model.model_fields), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _hint(err: ErrorDetails) -> str:
    """What would have been right: the closest known key for an unknown one, the unit syntax."""
    loc = err["loc"]
    if err["type"] == "extra_forbidden" and loc:
        return _did_you_mean(loc)
    key = str(loc[-1]) if loc else ""
    if err["type"] in ("int_parsing", "float_parsing"):
        if key.endswith("_bytes"):
            return " (bytes, or a size with a unit: 64KiB, 1GiB)"
        if key.endswith("_secs"):
            return " (seconds, or a duration with a unit: 500ms, 30s, 5m)"
    return ""


def parse_config(data: Any, env: dict[str, str] | None = None) -> GatewayConfig:
    """Validate a parsed YAML document; raises ConfigError naming every bad key path (never its value)."""
    if not isinstance(data, dict):
        raise ConfigError("the configuration must be a mapping")
    missing: list[str] = []
    data = _substitute(data, "", dict(os.environ) if env is None else env, missing)
    if missing:
        raise ConfigError("; ".join(missing))
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            lines.append(f"{_loc(err['loc']) or '<root>'}: {_describe(err)}{_hint(err)}")
        raise ConfigError("; ".join(lines)) from None


_QUOTED = re.compile(r"'([^']*)'")


def _unquote_values(text: str) -> str:
    """PyYAML quotes what it found (an alias, a tag, a character): keep only the harmless ones."""

    def repl(m: re.Match[str]) -> str:
        inner = m.group(1)
        harmless = len(inner) <= 2 or inner.startswith(("<", "tag:", "!"))
        return m.group(0) if harmless else "'...'"

    return _QUOTED.sub(repl, text)


def _key_path_at_error(text: str, stop: int | None) -> str:
    """The key path PyYAML was inside when it stopped, from the events it parsed before failing.

    ``stop`` is the error's offset in ``text`` (events from there on are ignored).  Only mapping
    keys and sequence indexes go into the path, never a scalar value.
    """
    # One frame per open collection: [is a mapping, its current key or index, inside that key's
    # value (or that item)].  A mapping frame not inside a value is waiting for its next key.
    stack: list[list[Any]] = []

    def value_done() -> None:
        if stack:
            stack[-1][2] = False

    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if stop is not None and event.start_mark is not None and event.start_mark.index >= stop:
                break
            if isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
                stack.pop()
                value_done()
                continue
            if not isinstance(event, yaml.NodeEvent):
                continue
            parent = stack[-1] if stack else None
            if parent is not None and parent[0] and not parent[2]:
                # a mapping key (a collection as a key is not a config key: "?")
                parent[1], parent[2] = (event.value if isinstance(event, yaml.ScalarEvent) else "?"), True
                if isinstance(event, yaml.ScalarEvent | yaml.AliasEvent):
                    continue
            elif parent is not None and not parent[0]:
                parent[1], parent[2] = parent[1] + 1, True
            if isinstance(event, yaml.MappingStartEvent):
                stack.append([True, None, False])
            elif isinstance(event, yaml.SequenceStartEvent):
                stack.append([False, -1, False])
            else:
                value_done()
    except yaml.YAMLError:
        pass
    out = ""
    for is_map, key, inside in stack:
        if not inside:
            break
        out += (f".{key}" if out else str(key)) if is_map else f"[{key}]"
    return out


def _yaml_error(exc: yaml.YAMLError, text: str) -> str:
    """PyYAML's error without the quoted source line it prints (that line may hold a secret)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        parts = []
        for what, mark in ((exc.context, exc.context_mark), (exc.problem, exc.problem_mark)):
            if what:
                where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
                parts.append(_unquote_values(what) + where)
        key = _key_path_at_error(text, exc.problem_mark.index if exc.problem_mark is not None else None)
        return (f"{key}: " if key else "") + ": ".join(parts)
    if isinstance(exc, yaml.reader.ReaderError):
        return f"{exc.reason} at character {exc.position}"
    return type(exc).__name__


def load_config(path: Path, env: dict[str, str] | None = None) -> GatewayConfig:
    """Read and validate a YAML configuration file; errors name key paths and lines, never values."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 (byte {exc.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_error(exc, text)}") from None
    return parse_config(data, env)


def default_config() -> GatewayConfig:
    """`audit-gateway run` without --config: Auth0 log stream + Pangea-compatible API to `default`."""
    return parse_config(
        {
            "destinations": {"default": {"schema": "standard"}},
            "sources": {
                "auth0": {"type": "webhook", "format": "auth0", "path": "/v1/log_stream", "destination": "default"},
                "sdk": {"type": "webhook", "format": "pangea", "destination": "default"},
            },
        },
        env={},
    )
