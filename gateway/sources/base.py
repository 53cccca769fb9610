"""The source contract."""

from __future__ import annotations

from typing import Protocol


class Source(Protocol):
    """Produces events into destination buffers and acts only on resolved acks.

    Start order is sinks → sources; stop order sources → sinks.  ``stop_accepting`` closes
    the door (webhooks answer 503, Kafka stops fetching); ``stop`` waits for what is in
    flight to resolve (or ``deadline`` to pass), acts on it (commit, answer) and releases.
    """

    name: str

    async def start(self) -> None: ...

    async def stop_accepting(self) -> None: ...

    async def stop(self, deadline: float) -> None:
        """``deadline`` is a ``loop.time()`` value."""
        ...
