"""How ``audit-gateway run`` drives its process: the event loop implementation.

``uvloop`` (libuv under asyncio's API) is an optional extra: ``pip install 'audit-gateway[uvloop]'``;
the container image installs it.  ``--event-loop auto`` uses it when it can be imported and
asyncio's own loop otherwise, so a plain install runs unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from gateway.errors import ConfigError

EVENT_LOOPS = ("auto", "asyncio", "uvloop")
"""``run --event-loop`` choices; ``auto``: uvloop when importable, else asyncio."""

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def event_loop_factory(choice: str) -> tuple[str, LoopFactory]:
    """``(name of the loop used, factory)`` for an :data:`EVENT_LOOPS` choice.

    Raises :class:`ConfigError` for ``uvloop`` when it is not installed (asked for by name, a
    silent fallback would make a benchmark measure the wrong loop).
    """
    if choice not in EVENT_LOOPS:
        raise ConfigError(f"unknown event loop {choice!r}; one of {', '.join(EVENT_LOOPS)}", "--event-loop")
    if choice == "asyncio":
        return "asyncio", asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError("uvloop is not installed (pip install 'audit-gateway[uvloop]')", "--event-loop") from None
        return "asyncio", asyncio.new_event_loop
    factory: LoopFactory = uvloop.new_event_loop
    return "uvloop", factory


def run_on(factory: LoopFactory, main: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run(main)`` on a loop made by ``factory`` (Python 3.11's ``asyncio.run`` takes none)."""
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)
