"""Fixtures of the local audit log's tests: a server in this process on a free port, an HTTP session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.local_audit.server import TOKEN_ENV, LocalAuditServer
from gateway.local_audit.settings import LocalAuditSettings


@pytest.fixture(autouse=True)
def _no_token_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A token in the environment would become the server's: these tests choose their own."""
    monkeypatch.delenv(TOKEN_ENV, raising=False)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[LocalAuditServer]:
    srv = LocalAuditServer(LocalAuditSettings(listen_port=0, db_path=tmp_path / "audit.db"))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
