"""``audit-gateway dlq list | show | replay``: inspect dead letters and resend them after a fix.

The commands read the local dead-letter store, ``<data-dir>/deadletters.db`` (or
``deadletter.path`` of ``--config``); with ``deadletter: {type: kafka}`` that file holds the
letters the topic could not take — read the topic itself with Kafka's tools.

``replay`` re-normalizes each payload with the *current* configuration (so a schema or
mapping fixed since now accepts the event) and sends it to the upstream of that
configuration (``upstream:``, or the embedded local audit log of a running gateway at
``--local-audit-listen``).  Rows the upstream accepts are marked replayed (kept, not listed
by default); rows that fail again stay, with their ``replay_error``.

A payload goes through intake's own admission (the routes' candidate builders, then
:meth:`gateway.sources.intake.Admitter.prepare`: map, restrictions, schema, signing, with
the destination built by :mod:`gateway.destinations` as the runtime builds it).  How it is
read back depends on where it was refused:

* at intake (``invalid_event``, ``forbidden_field_value``): one record as the source's format
  gave it → the format's ``to_event`` and the source's ``map`` (the whole mapping for ``json``);
* by the upstream (``upstream_rejected``, ``config_error``): the request item ``{"event": ...}``
  (a signed one is kept as signed);
* from a Kafka source: the message value → the format's ``decode`` → each record as above.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import SecretStr

from gateway.acks import AckGroup, AckStatus
from gateway.batching import Batch
from gateway.buffer.memory import MemoryBuffer
from gateway.config import (
    DEFAULT_DATA_DIR,
    DEFAULT_LOCAL_AUDIT_LISTEN,
    GatewayConfig,
    SourceConfig,
    default_config,
    load_config,
)
from gateway.destinations import build_schema, build_signer
from gateway.errors import ConfigError, GatewayError
from gateway.event import Event
from gateway.normalize import restrictions
from gateway.normalize.config import SchemaFieldConfig
from gateway.normalize.schema import EventInvalid
from gateway.normalize.vendors import VENDORS
from gateway.normalize.vendors.pangea import signature_of
from gateway.pipeline import Destination
from gateway.sinks.base import Sink
from gateway.sinks.deadletter.base import DeadLetter
from gateway.sinks.deadletter.local import DeadLetterDb, StoredDeadLetter
from gateway.sinks.pangea.config import UpstreamConfig
from gateway.sinks.pangea.sink import PangeaSink
from gateway.sources.intake import Admitter, Candidate
from gateway.sources.kafka.config import KafkaSourceConfig
from gateway.sources.poll.config import PollSourceConfig
from gateway.sources.poll.source import VENDOR_APIS
from gateway.sources.webhook.config import WebhookSourceConfig
from gateway.sources.webhook.pangea_api import PangeaApi
from gateway.sources.webhook.vendor_routes import VendorRoute
from gateway.telemetry.metrics import Metrics

SINK_REASONS = frozenset({"upstream_rejected", "config_error"})
"""Reasons given by the sink: their payload is the request item, not the vendor record."""
TOKEN_ENV = "AUDIT_GATEWAY_LOCAL_TOKEN"  # noqa: S105 - the variable's name, not a secret


# ---------------------------------------------------------------------------- registration


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dlq = subparsers.add_parser("dlq", help="inspect and replay dead letters")
    sub = dlq.add_subparsers(dest="dlq_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", help=f"state directory (default {DEFAULT_DATA_DIR})")
        p.add_argument("--config", help="gateway configuration (for deadletter.path, data_dir and replay)")

    ls = sub.add_parser("list", help="list dead letters (not yet replayed), oldest first")
    common(ls)
    ls.add_argument("--reason", help="only this reason (e.g. invalid_event, upstream_rejected)")
    ls.add_argument("--source", help="only this source")
    ls.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    ls.add_argument("--replayed", action="store_true", help="include rows already replayed")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(func=cmd_list)

    show = sub.add_parser("show", help="show one dead letter with its payload")
    common(show)
    show.add_argument("id", type=int)
    show.set_defaults(func=cmd_show)

    replay = sub.add_parser("replay", help="re-normalize with the current config and resend upstream")
    common(replay)
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", type=int, action="append", dest="ids", help="this dead letter (repeatable)")
    which.add_argument("--reason", help="every dead letter with this reason")
    which.add_argument("--all", action="store_true", help="every dead letter not yet replayed")
    replay.add_argument("--source", help="only dead letters of this source")
    replay.add_argument(
        "--local-audit-listen",
        help=f"the running gateway's embedded local audit log, without `upstream:` (default "
        f"{DEFAULT_LOCAL_AUDIT_LISTEN})",
    )
    replay.add_argument("--dry-run", action="store_true", help="normalize only; send nothing, mark nothing")
    replay.set_defaults(func=cmd_replay)


# ---------------------------------------------------------------------------- helpers


def _config(args: argparse.Namespace) -> GatewayConfig:
    return load_config(Path(args.config)) if args.config else default_config()


def data_dir_of(args: argparse.Namespace, config: GatewayConfig | None) -> Path:
    if args.data_dir:
        return Path(args.data_dir)
    if config is not None and config.data_dir is not None:
        return config.data_dir
    return Path(DEFAULT_DATA_DIR)


def store_path(args: argparse.Namespace, config: GatewayConfig | None) -> Path:
    data_dir = data_dir_of(args, config)
    dl = getattr(config, "deadletter", None) if config is not None else None
    if dl is not None and getattr(dl, "path", None) is not None:
        return Path(dl.path)
    return data_dir / "deadletters.db"


def _open_db(args: argparse.Namespace, config: GatewayConfig | None) -> DeadLetterDb:
    path = store_path(args, config)
    if not path.exists():
        raise ConfigError(f"no dead-letter store at {path} (give --data-dir or --config)")
    return DeadLetterDb(path)


def _time(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _payload_text(payload: bytes) -> str:
    try:
        return orjson.dumps(orjson.loads(payload), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return payload.decode("utf-8", "backslashreplace")


# ---------------------------------------------------------------------------- list / show


def cmd_list(args: argparse.Namespace) -> int:
    config = _config(args) if args.config else None
    with _open_db(args, config) as db:
        rows = db.list(reason=args.reason, source=args.source, limit=args.limit, include_replayed=args.replayed)
        if args.json:
            for r in rows:
                print(orjson.dumps({**r.summary(), "detail": r.detail}).decode())
            return 0
        print(f"{'ID':>6}  {'RECEIVED':20}  {'SOURCE':14}  {'DESTINATION':12}  {'REASON':22}  DETAIL")
        for r in rows:
            detail = r.detail if len(r.detail) <= 60 else r.detail[:57] + "..."
            mark = " (replayed)" if r.replayed_at else ""
            print(
                f"{r.id:>6}  {_time(r.received_at):20}  {r.source[:14]:14}  {(r.destination or '-')[:12]:12}  "
                f"{r.reason[:22]:22}  {detail}{mark}"
            )
        counts = db.counts()
        total = sum(counts.values())
        print(f"{len(rows)} shown; {total} not replayed" + "".join(f", {k}={v}" for k, v in counts.items()))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    config = _config(args) if args.config else None
    with _open_db(args, config) as db:
        r = db.get(args.id)
        if r is None:
            print(f"no dead letter {args.id}", file=sys.stderr)
            return 1
        print(f"id:              {r.id}")
        print(f"received_at:     {_time(r.received_at)}")
        print(f"recorded_at:     {_time(r.recorded_at)}")
        print(f"source:          {r.source}")
        print(f"destination:     {r.destination or '-'}")
        print(f"reason:          {r.reason}")
        print(f"replayed_at:     {_time(r.replayed_at)}")
        print(f"replay_attempts: {r.replay_attempts}")
        if r.replay_error:
            print(f"replay_error:    {r.replay_error}")
        print("detail:")
        try:
            print(orjson.dumps(orjson.loads(r.detail), option=orjson.OPT_INDENT_2).decode())
        except orjson.JSONDecodeError:
            print(r.detail)
        print(f"payload ({len(r.payload)} bytes):")
        print(_payload_text(r.payload))
    return 0


# ---------------------------------------------------------------------------- replay


class ReplayFailed(GatewayError):
    """A dead letter that cannot be turned into events with the current configuration."""


@dataclass
class Prepared:
    """One dead letter turned into request items for its destination."""

    letter: StoredDeadLetter
    destination: str
    items: list[bytes] = field(default_factory=list)


class _Collect:
    """Dead-letter store for the replaying sink: refusals are reported, not re-recorded."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    async def write(self, letters: list[DeadLetter]) -> None:
        self.letters.extend(letters)

    async def close(self) -> None:
        return None


class _DryRun:
    """The sink of a dry run's destinations: ``replay`` hands it nothing; were it to, nothing is sent."""

    async def start(self) -> None:
        return None

    async def send(self, batch: Batch) -> None:
        batch.resolve_all(AckStatus.ERRORED, "dry run")

    async def check(self) -> str | None:
        return None

    async def stop(self) -> None:
        return None


class Replayer:
    """Turns stored dead letters into request items through intake's admission, and sends them.

    A letter's payload becomes candidates by the code its source uses (the vendor route's
    ``to_event`` and ``map``, the Pangea routes' item reading), and the candidates are admitted by
    :meth:`Admitter.prepare` (restrictions, the destination's schema, its signer): a replayed
    event is refused, normalized and signed exactly as intake would today.  Not done: the
    de-duplication window (a dead letter was never delivered, and replaying is deliberate).
    """

    def __init__(self, config: GatewayConfig, destinations: dict[str, Destination]) -> None:
        self.config = config
        self.destinations = destinations
        self._deadletters = _Collect()  # Admitter.prepare records nothing; admit() is not called

    def prepare(self, letter: StoredDeadLetter) -> Prepared:
        src = self.config.sources.get(letter.source)
        name = src.destination if src is not None else letter.destination
        if name is None or name not in self.destinations:
            raise ReplayFailed(f"source {letter.source!r} and destination {letter.destination!r} are not configured")
        dest = self.destinations[name]
        auth = getattr(src, "auth", None)
        if auth is not None and getattr(auth, "pass_through", False):
            # Sent upstream with its caller's token, which is not kept: replayed with the
            # gateway's, it could land where the caller may not write (issue 14).
            raise ReplayFailed(
                f"source {letter.source!r} passes its callers' tokens through: its events cannot be replayed"
                " with the gateway's credential; have the caller send them again"
            )
        check = restrictions.checker(src.restrictions if isinstance(src, WebhookSourceConfig) else None)
        admitter = Admitter(letter.source, dest, dest.metrics, self._deadletters, check)
        try:
            candidates = self._candidates(letter, src, admitter)
        except EventInvalid as exc:
            raise ReplayFailed(orjson.dumps(exc.errors).decode()) from None
        except Exception as exc:
            raise ReplayFailed(f"cannot read the payload: {exc}") from None
        if not candidates:
            raise ReplayFailed("the payload holds no event")
        valid, invalid = admitter.prepare(candidates)
        if invalid:
            raise ReplayFailed(orjson.dumps([e for cand in invalid for e in cand.errors]).decode())
        return Prepared(letter, name, [item for _i, item, _cand in valid])

    @staticmethod
    def _candidates(letter: StoredDeadLetter, src: SourceConfig | None, admitter: Admitter) -> list[Candidate]:
        """The letter's payload made into candidates by the same code as at intake."""
        payload = letter.payload
        if letter.reason in SINK_REASONS or src is None:
            # The request item the sink sent ({"event": ...}, kept as signed if signed), read as
            # the Pangea routes read an item.
            return [PangeaApi._candidate(orjson.loads(payload), "")]
        if isinstance(src, KafkaSourceConfig):
            # The message value, as the Kafka source reads it (the key and header mapping need
            # the message, which is not kept): decode, each record's to_event, the SDK's signature.
            vendor = VENDORS[src.format]
            out = []
            for i, record in enumerate(vendor.decode(payload)):
                fields, dedup = vendor.to_event(record)
                extras = signature_of(record) if src.format == "pangea" else None
                out.append(Candidate(fields, f"/{i}", record, extras, dedup))
            return out
        record = orjson.loads(payload)  # one record, as intake dead-lettered it
        if isinstance(src, PollSourceConfig):
            # A pulled record, mapped as the poll source maps it.
            fields, dedup = VENDOR_APIS[src.vendor].to_event(record)
            return [Candidate(fields, "", record, dedup_key=dedup)]
        if src.format == "pangea":
            return [PangeaApi._candidate(record, "")]
        # The vendor route's own mapping: the format's to_event and the source's map.
        return [VendorRoute(letter.source, src, admitter)._candidate(record, "")]

    async def send(self, sink: Sink, prepared: list[Prepared], batch_size: int) -> dict[int, str | None]:
        """Send every item; returns letter id → None (delivered) or the error."""
        outcome: dict[int, str | None] = {}
        flat: list[tuple[Prepared, bytes]] = [(p, item) for p in prepared for item in p.items]
        for start in range(0, len(flat), batch_size):
            chunk = flat[start : start + batch_size]
            group = AckGroup(len(chunk))
            events = [Event(item, group.ack(i), p.letter.source) for i, (p, item) in enumerate(chunk)]
            await sink.send(Batch(prepared[0].destination, events))
            for i, (p, _item) in enumerate(chunk):
                lid = p.letter.id
                if i in group.reasons:
                    reason = group.reasons[i]
                    text = reason if isinstance(reason, str) else orjson.dumps(reason, default=str).decode()
                    outcome[lid] = text
                elif lid not in outcome:
                    outcome[lid] = None
        return outcome


def upstream_for(config: GatewayConfig, args: argparse.Namespace, data_dir: Path) -> UpstreamConfig:
    """``upstream:``, else the running gateway's embedded local audit log."""
    if config.upstream is not None:
        return config.upstream
    listen = args.local_audit_listen or config.local_audit.listen or DEFAULT_LOCAL_AUDIT_LISTEN
    host, _, port = listen.rpartition(":")
    token: str = os.environ.get(TOKEN_ENV) or ""
    if not token:
        token_file = data_dir / "local-audit.db.token"
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError:
            raise ConfigError(
                f"no upstream configured and no local audit token ({TOKEN_ENV} or {token_file})"
            ) from None
    host = host.strip("[]") or "127.0.0.1"
    if host in ("0.0.0.0", "::"):  # noqa: S104 - a listen address, not a bind
        host = "127.0.0.1"
    return UpstreamConfig(url=f"http://{host}:{port}", token=SecretStr(token))


async def _destinations(config: GatewayConfig, sinks: dict[str, Sink], metrics: Metrics) -> dict[str, Destination]:
    """Every configured destination as the runtime builds it (schema, signer); not started."""
    out: dict[str, Destination] = {}
    for name, dc in config.destinations.items():
        sink = sinks.get(name) or _DryRun()

        async def fetch(sink: Sink = sink, name: str = name) -> list[SchemaFieldConfig]:
            if not isinstance(sink, PangeaSink):
                raise ConfigError(
                    f"destination {name!r} fetches its schema from the upstream: replay without --dry-run"
                )
            return await sink.fetch_schema()

        schema = await build_schema(dc, fetch)
        # The buffer is never used: replay hands the items to the sink itself.
        out[name] = Destination(name, dc, MemoryBuffer(name, 1, 1, metrics), sink, schema, metrics, 1, build_signer(dc))
    return out


async def replay(args: argparse.Namespace, config: GatewayConfig, out: Any = sys.stdout) -> int:
    data_dir = data_dir_of(args, config)
    db = _open_db(args, config)
    try:
        if args.ids:
            letters = db.list(ids=args.ids, include_replayed=True, source=args.source)
            missing = sorted(set(args.ids) - {r.id for r in letters})
            for m in missing:
                print(f"{m}: no such dead letter", file=out)
        else:
            letters = db.list(reason=None if args.all else args.reason, source=args.source)
        if not letters:
            print("nothing to replay", file=out)
            return 0
        upstream = None if args.dry_run else upstream_for(config, args, data_dir)
        metrics = Metrics()
        collect = _Collect()
        sinks: dict[str, Sink] = {}
        if upstream is not None:
            for name, dc in config.destinations.items():
                if dc.sink is not None:  # a destination with a sink of its own (Kafka), as the runtime builds it
                    from gateway.delivery.driver import DeliveryDriver
                    from gateway.sinks.kafka.sink import KafkaSink

                    sinks[name] = DeliveryDriver(KafkaSink(name, dc.sink), dc.sink.retry, metrics, collect)
                else:
                    sinks[name] = PangeaSink(name, dc.config_id, upstream, metrics, collect)
                await sinks[name].start()
        try:
            replayer = Replayer(config, await _destinations(config, sinks, metrics))
            failures: list[tuple[int, str]] = []
            by_dest: dict[str, list[Prepared]] = {}
            for letter in letters:
                try:
                    p = replayer.prepare(letter)
                except ReplayFailed as exc:
                    failures.append((letter.id, str(exc)))
                    continue
                by_dest.setdefault(p.destination, []).append(p)
            delivered: list[int] = []
            if args.dry_run:
                n = sum(len(v) for v in by_dest.values())
                print(f"dry run: {n} would be sent, {len(failures)} still fail", file=out)
                for lid, err in failures:
                    print(f"{lid}: {err}", file=out)
                return 0 if not failures else 1
            for dest, prepared in by_dest.items():
                size = config.destinations[dest].batch.max_events
                outcome = await replayer.send(sinks[dest], prepared, size)
                for lid, result in outcome.items():
                    if result is None:
                        delivered.append(lid)
                    else:
                        failures.append((lid, result))
        finally:
            for s in sinks.values():
                await s.stop()
        if delivered:
            db.mark_replayed(delivered)
        if failures:
            db.mark_failed(failures)
        print(f"replayed {len(delivered)}, failed {len(failures)}", file=out)
        for lid, err in failures:
            print(f"{lid}: {err[:300]}", file=out)
        return 0 if not failures else 1
    finally:
        db.close()


def cmd_replay(args: argparse.Namespace) -> int:
    config = _config(args)
    started = time.monotonic()
    code = asyncio.run(replay(args, config))
    print(f"({time.monotonic() - started:.1f}s)", file=sys.stderr)
    return code
