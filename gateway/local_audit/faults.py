"""Fault injection for the local audit log: latency, 5xx, 429, outages and 202 answers.

The knobs (:class:`~gateway.local_audit.settings.FaultSettings`) come from CLI flags at start
and can be changed at runtime through ``POST /_faults``, so a test can open and close an
outage while the gateway runs.  A faulted call is answered before its body is read, so
nothing it carried is stored; that is what makes a retry by the client safe to count.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

from gateway.local_audit.settings import FaultSettings

__all__ = ["FAULT_KINDS", "FaultDecision", "FaultInjector"]

FAULT_KINDS = ("latency", "outage", "error_5xx", "error_429", "accepted_202")

_5XX: tuple[tuple[int, str], ...] = ((503, "ServiceNotAvailable"), (500, "InternalError"), (502, "InternalError"))


@dataclass(frozen=True, slots=True)
class FaultDecision:
    """An injected failure answer: HTTP status, Pangea status and optional Retry-After."""

    http_status: int
    pangea_status: str
    summary: str
    kind: str
    retry_after: int | None


class FaultInjector:
    """Rolls the fault dice for each API call and counts what it injected."""

    def __init__(self, settings: FaultSettings) -> None:
        self._settings = settings
        self._rng = random.Random(settings.seed)
        self._accept_counter = 0
        self.injected: dict[str, int] = dict.fromkeys(FAULT_KINDS, 0)

    @property
    def settings(self) -> FaultSettings:
        """The knobs in force."""
        return self._settings

    def update(self, changes: dict[str, Any], *, reset: bool = False) -> FaultSettings:
        """Apply a partial change (validated; raises pydantic.ValidationError); ``reset`` starts from all-off."""
        base = FaultSettings() if reset else self._settings
        merged = FaultSettings.model_validate({**base.model_dump(), **changes})
        if merged.seed is not None and (reset or "seed" in changes):
            self._rng.seed(merged.seed)
        if merged.accept_every_nth != self._settings.accept_every_nth:
            self._accept_counter = 0  # "every Nth" counts from the change, as a test expects
        self._settings = merged
        return merged

    async def delay(self) -> None:
        """Sleep the configured latency, if any."""
        ms = self._settings.latency_ms
        if ms > 0:
            self.injected["latency"] += 1
            await asyncio.sleep(ms / 1000.0)

    def decide(self) -> FaultDecision | None:
        """The failure to answer this call with, or None to serve it."""
        s = self._settings
        if s.outage:
            self.injected["outage"] += 1
            return FaultDecision(
                503, "ServiceNotAvailable", "Service is unavailable (injected outage)", "outage", s.retry_after_secs
            )
        if s.error_5xx_ratio <= 0 and s.error_429_ratio <= 0:
            return None
        roll = self._rng.random()
        if roll < s.error_5xx_ratio:
            self.injected["error_5xx"] += 1
            status, pangea_status = self._rng.choice(_5XX)
            return FaultDecision(
                status,
                pangea_status,
                f"Injected error {status}",
                "error_5xx",
                s.retry_after_secs if status == 503 else None,
            )
        if roll < s.error_5xx_ratio + s.error_429_ratio:
            self.injected["error_429"] += 1
            return FaultDecision(
                429, "TooManyRequests", "Too many requests (injected)", "error_429", s.retry_after_secs
            )
        return None

    def accept_this_call(self) -> bool:
        """For /v1/log and /v2/log: whether this call is answered 202 (every Nth call)."""
        n = self._settings.accept_every_nth
        if n <= 0:
            return False
        self._accept_counter += 1
        if self._accept_counter % n:
            return False
        self.injected["accepted_202"] += 1
        return True
