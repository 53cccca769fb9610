"""Files behind ``/v1/download_results``: search or export results as gzip CSV or JSON lines.

* ``json``: one JSON object per line, each exactly a search result event
  (``{envelope, hash, published, leaf_index?, membership_proof?}``), so a downloaded record
  verifies as a searched one does.
* ``csv``: a header row, then one row per record: ``received_at``, the schema's fields in
  schema order, ``signature``, ``public_key``, ``hash``, ``published``, ``leaf_index`` and,
  verbose, ``membership_proof``.  Strings as they are, other values as JSON.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Callable, Iterable
from typing import Any, Literal

import orjson

from gateway.local_audit.store import StoredRecord

__all__ = ["DownloadFormat", "render"]

DownloadFormat = Literal["csv", "json"]

Fetch = Callable[[list[int]], list[tuple[StoredRecord, str | None]]]
_CHUNK = 1000


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def event_item(rec: StoredRecord, proof: str | None, published_size: int) -> dict[str, Any]:
    """A stored record as the spec's search-result event: envelope, hash, published, leaf index, proof.

    Under a published root its proof is against that root, and ``leaf_index`` lets the SDK check
    the roots of sizes ``leaf_index`` and ``leaf_index + 1``; the spec leaves ``leaf_index`` null
    for unpublished records.
    """
    published = rec.leaf < published_size
    item: dict[str, Any] = {
        "envelope": orjson.Fragment(rec.envelope.encode()),
        "hash": rec.hash.hex(),
        "published": published,
    }
    if published:
        item["leaf_index"] = rec.leaf
    if proof is not None:
        item["membership_proof"] = proof
    return item


def render(
    fmt: DownloadFormat,
    leaves: list[int],
    fetch: Fetch,
    fields: Iterable[str],
    published_size: int,
    verbose: bool,
) -> bytes:
    """The gzip-compressed file of ``leaves`` (records read through ``fetch``, 1000 at a time)."""
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        text = io.TextIOWrapper(gz, encoding="utf-8", newline="")
        names = list(fields)
        writer = csv.writer(text, lineterminator="\r\n")
        if fmt == "csv":
            header = ["received_at", *names, "signature", "public_key", "hash", "published", "leaf_index"]
            writer.writerow([*header, "membership_proof"] if verbose else header)
        for lo in range(0, len(leaves), _CHUNK):
            for rec, proof in fetch(leaves[lo : lo + _CHUNK]):
                if fmt == "json":
                    text.write(orjson.dumps(event_item(rec, proof, published_size)).decode())
                    text.write("\n")
                    continue
                published = rec.leaf < published_size
                envelope = orjson.loads(rec.envelope)
                event = envelope.get("event", {})
                row = [
                    envelope.get("received_at", ""),
                    *(_cell(event.get(n)) for n in names),
                    envelope.get("signature", ""),
                    envelope.get("public_key", ""),
                    rec.hash.hex(),
                    "true" if published else "false",
                    str(rec.leaf) if published else "",
                ]
                writer.writerow([*row, proof or ""] if verbose else row)
        text.flush()
        text.detach()
    return raw.getvalue()
