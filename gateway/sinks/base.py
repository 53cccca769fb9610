"""What a :class:`~gateway.pipeline.Destination` drives: a batch sender.

The pipeline's is a :class:`~gateway.delivery.driver.DeliveryDriver` around a sink (the three
pieces a sink implements are in :mod:`gateway.delivery.sink`).
"""

from __future__ import annotations

from typing import Protocol

from gateway.batching import Batch


class Sink(Protocol):
    """Sends batches upstream; resolves every ack of a batch exactly once.

    ``send`` returns only when every event of the batch is resolved: DELIVERED with the
    upstream's per-event result, REJECTED with a reason (after writing it to the dead-letter
    path), or ERRORED when retries ran out or the sink was stopped.  If ``send`` is cancelled
    it resolves what is open as ERRORED.

    A sender may also have a ``credentials_refused`` attribute (bool): true while the upstream
    refuses the gateway's own credential, so intake answers a full buffer with 503 (the
    gateway's fault) rather than 429.
    """

    async def start(self) -> None:
        """Open sessions; fetch credentials.  Does not fail on an unreachable upstream."""
        ...

    async def send(self, batch: Batch) -> None: ...

    async def check(self) -> str | None:
        """Readiness probe: None when the upstream is reachable and configured, else why not."""
        ...

    async def stop(self) -> None: ...
