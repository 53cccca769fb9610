"""Compatibility re-export: the dead-letter contract lives in :mod:`gateway.delivery.deadletter`
(the delivery driver writes dead letters, and sits below the sinks)."""

from __future__ import annotations

from gateway.delivery.deadletter import DeadLetter, DeadLetterStore

__all__ = ["DeadLetter", "DeadLetterStore"]
