"""audit-gateway: security audit events from webhooks, the Pangea API and Kafka into a Secure Audit Log."""

from __future__ import annotations


def version() -> str:
    """The installed package's version (``0+unknown`` when run from a tree that was never installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("audit-gateway")
    except PackageNotFoundError:
        return "0+unknown"
