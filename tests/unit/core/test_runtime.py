"""``run --event-loop``: which loop each choice gives (gateway/runtime.py)."""

from __future__ import annotations

import asyncio
import sys

import pytest
import uvloop

from gateway.errors import ConfigError
from gateway.runtime import event_loop_factory, run_on


def loop_type_run_by(choice: str) -> tuple[str, type[asyncio.AbstractEventLoop]]:
    name, factory = event_loop_factory(choice)
    seen: list[type[asyncio.AbstractEventLoop]] = []

    async def main() -> None:
        seen.append(type(asyncio.get_running_loop()))

    run_on(factory, main())
    return name, seen[0]


def test_auto_and_uvloop_run_on_uvloop_when_it_is_installed() -> None:
    assert loop_type_run_by("auto") == ("uvloop", uvloop.Loop)
    assert loop_type_run_by("uvloop") == ("uvloop", uvloop.Loop)


def test_asyncio_runs_on_asyncios_own_loop_even_with_uvloop_installed() -> None:
    name, loop_type = loop_type_run_by("asyncio")
    assert name == "asyncio" and issubclass(loop_type, asyncio.BaseEventLoop)
    assert not issubclass(loop_type, uvloop.Loop)


def test_auto_falls_back_to_asyncio_without_uvloop_but_uvloop_by_name_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError
    name, loop_type = loop_type_run_by("auto")
    assert name == "asyncio" and not issubclass(loop_type, uvloop.Loop)
    expected = r"--event-loop: uvloop is not installed \(pip install 'audit-gateway\[uvloop\]'\)"
    with pytest.raises(ConfigError, match=expected):
        event_loop_factory("uvloop")


def test_an_unknown_event_loop_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown event loop 'trio'"):
        event_loop_factory("trio")
