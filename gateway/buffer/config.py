"""Configuration of the buffer between intake and the upstream."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from gateway.configbase import StrictModel


class BufferConfig(StrictModel):
    """Bounded buffer; when full, intake pushes back (429 / paused partitions) instead of growing."""

    type: Literal["memory", "disk"] = Field(
        default="memory", description="`memory`, or `disk`: a durable SQLite spool (answers after fsync)."
    )
    max_events: int = Field(default=100_000, ge=1, description="Capacity in events, per destination.")
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, description="Capacity in bytes, per destination.")
    path: Path | None = Field(default=None, description="Spool directory (disk only); default <data-dir>/spool.")
    fsync_interval_ms: int = Field(
        default=0, ge=0, description="Disk only. 0: fsync per write; N: group commit every N ms."
    )
