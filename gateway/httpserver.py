"""Small helpers shared by the gateway's aiohttp listeners."""

from __future__ import annotations

from aiohttp import web


def bound_port(site: web.TCPSite | None, configured: int) -> int:
    """The port a site actually listens on (``configured`` may be 0: any free port)."""
    server = site._server if site is not None else None
    sockets = getattr(server, "sockets", None)
    if sockets:
        return int(sockets[0].getsockname()[1])
    return configured
