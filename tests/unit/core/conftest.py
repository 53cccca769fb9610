"""Event loops for this folder's async tests: the listener's on both that `run --event-loop` offers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest
import uvloop

BOTH_LOOPS = ("test_httpserver.py",)
"""Test modules run on asyncio's loop and on uvloop (issue 18): the connection cap and accept()
failures depend on how the loop accepts and closes sockets."""


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    if item.path.name in BOTH_LOOPS:
        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}
