"""The unit that travels the pipeline.

An :class:`Event` is what a source produced and normalization accepted: the JSON bytes of
one element of the upstream's ``events`` array (``{"event": {...}}``, plus ``signature`` and
``public_key`` when signed locally) and the :class:`~gateway.acks.Ack` that tells its source
what happened to it.  The hot path never re-serializes: request bodies are built by joining
these bytes, so a buffered event costs its bytes plus two small structs.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any

import msgspec
import orjson

from gateway.acks import Ack


class Event(msgspec.Struct, eq=False, gc=False):
    """One normalized audit event on its way upstream.

    A msgspec ``Struct`` compared by identity and not tracked by the cyclic collector, as
    :class:`~gateway.acks.Ack` is (its docstring says why that is safe).
    """

    item: bytes
    """JSON of one ``events[]`` element: ``{"event":{...}}`` (+ ``signature``/``public_key``)."""
    ack: Ack
    """Resolved exactly once by whoever ends the event's journey (sink, drop, dead letter)."""
    source: str
    """Name of the source that produced it (a metrics label and dead-letter field)."""
    dedup_key: str | None = None
    """Source-given id (Auth0 ``log_id``, Okta ``uuid``...) for de-duplication, if any."""
    want_envelope: bool = False
    """The source wants the upstream's envelope back (a verbose SDK call)."""
    v1_members: bytes | None = None
    """Members to send with it alone in a ``/v1/log`` call (``,"verbose":true,"prev_root":...``):
    a verbose SDK ``log()`` whose answer must carry the proofs only ``/v1/log`` gives
    (``unpublished_root``, ``membership_proof``, ``consistency_proof`` from its ``prev_root``)."""
    credential: str | None = None
    """``Authorization`` to deliver it with instead of the gateway's own (a pass-through caller's
    token, issue 14); memory only: a buffer that stores items does not keep it."""

    @property
    def size(self) -> int:
        return len(self.item)


item_of = attrgetter("item")
"""An event's item bytes: for ``map`` over a batch (sizes, request bodies) without a Python loop."""


def encode_item(event: dict[str, Any], extras: dict[str, Any] | None = None) -> bytes:
    """The ``events[]`` element for a normalized event, as exact-size bytes.

    orjson hands back its output buffer over-allocated (about 4 KiB whatever the length);
    an item that waits in the buffer must not keep that.  Concatenation makes the exact-size
    copy and wraps the event in one step.
    """
    if extras:
        return bytes(memoryview(orjson.dumps({"event": event, **extras})))
    return b'{"event":' + orjson.dumps(event) + b"}"
