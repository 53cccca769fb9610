"""Compatibility re-export: the one retry classifier lives in :mod:`gateway.delivery.retry`."""

from __future__ import annotations

from gateway.delivery.retry import Verdict, backoff_secs, classify, parse_retry_after, retry_reason

__all__ = ["Verdict", "backoff_secs", "classify", "parse_retry_after", "retry_reason"]
