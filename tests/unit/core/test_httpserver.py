"""gateway.httpserver: accept() failures logged once a second with a count; the fd budget."""

from __future__ import annotations

import asyncio
import errno
import logging
from typing import Any

import pytest

from gateway.httpserver import FD_RESERVE, AcceptErrorLimiter, connection_budget


def accept_failure() -> dict[str, Any]:
    return {"message": AcceptErrorLimiter.MESSAGE, "exception": OSError(errno.EMFILE, "Too many open files")}


async def test_accept_failures_are_logged_once_per_interval_with_their_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    try:
        limiter = AcceptErrorLimiter.install(loop)
        assert AcceptErrorLimiter.install(loop) is limiter
        with caplog.at_level(logging.WARNING, logger="gateway.httpserver"):
            for _ in range(1000):
                loop.call_exception_handler(accept_failure())
            lines = [r for r in caplog.records if r.name == "gateway.httpserver"]
            assert [getattr(r, "failures", None) for r in lines] == [1]
            assert getattr(lines[0], "error", None) == "Too many open files"
            # The interval's timer fires (called here rather than waited for): one line, the rest counted.
            limiter._tick()
            limiter._tick()  # nothing new since: no line, and the timer stops
            lines = [r for r in caplog.records if r.name == "gateway.httpserver"]
            assert [getattr(r, "failures", None) for r in lines] == [1, 999]
            assert limiter._timer is None
    finally:
        loop.set_exception_handler(previous)


async def test_other_loop_errors_still_reach_the_previous_handler() -> None:
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    seen: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        AcceptErrorLimiter.install(loop)
        loop.call_exception_handler({"message": "something else"})
        loop.call_exception_handler(accept_failure())
        assert [c["message"] for c in seen] == ["something else"]
    finally:
        loop.set_exception_handler(previous)


def test_the_connection_cap_leaves_the_reserve_of_the_fd_limit() -> None:
    assert connection_budget(4096, fd_limit=512) == 512 - FD_RESERVE
    assert connection_budget(100, fd_limit=512) == 100
    assert connection_budget(4096, fd_limit=1_048_576) == 4096
    assert connection_budget(4096, fd_limit=FD_RESERVE) == 1
