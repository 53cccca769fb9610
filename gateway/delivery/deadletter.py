"""The dead-letter contract: where events refused for good are recorded with their reason."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(slots=True, frozen=True)
class DeadLetter:
    """One refused event: what it was, where it came from, why it was refused."""

    source: str
    destination: str | None
    reason: str
    """Short machine-readable reason, a :class:`~gateway.telemetry.reasons.Reason` value:
    ``invalid_event``, ``upstream_rejected``, ``decode_error``...  The codes stay in ``detail``."""
    detail: str
    """Human-readable explanation (never contains secrets)."""
    payload: bytes
    """The original bytes (a vendor record, a Kafka value) or the normalized item."""
    received_at: float
    """Unix time it was received."""


class DeadLetterStore(Protocol):
    """Records dead letters.

    ``write`` raises :class:`~gateway.errors.GatewayError` when the letters could not be
    recorded, so the caller keeps the events (the delivery driver resolves them ERRORED, to be resent)
    rather than dropping them unrecorded.
    """

    async def write(self, letters: list[DeadLetter]) -> None: ...

    async def close(self) -> None: ...
