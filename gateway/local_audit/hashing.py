"""Record hashing and the Merkle tree, byte-for-byte as ``pangea-sdk`` verifies them.

What the SDK checks (``pangea/services/audit/util.py``):

* ``verify_envelope_hash(envelope, hash)`` is
  ``sha256(json.dumps(normalize_log(envelope.model_dump(exclude_none=True)), ensure_ascii=False,
  allow_nan=False, separators=(",", ":"), sort_keys=True).encode("utf-8")).hexdigest()``.
  ``model_dump`` turns ``received_at`` back into ``format_datetime(dt)``, i.e.
  ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (always six fraction digits, ``Z``); the server therefore
  stamps exactly that form, or the round trip through ``datetime`` would change the bytes.
  ``exclude_none`` means absent optional keys (``signature``, ``public_key``) must be absent,
  not ``null``, in what we hash.
* Membership proofs are ``"l:<hex>,r:<hex>,..."`` from the leaf upwards; ``l`` means the proof
  node is the left operand: ``node = sha256(proof + node)``.  No leaf/node prefix bytes: the
  leaf is the record hash itself.  The tree shape is RFC 6962's (left subtree = largest power
  of two below the size), so a tree of size ``n`` is the right fold of its perfect subtrees.
* Consistency proofs are lists of ``"x:<hex>,<membership proof of that node>"``; the first
  item is the smallest (right-most) perfect subtree of the old tree, folding
  ``root = sha256(item + root)`` over the rest rebuilds the old root.

The fast path serialises with orjson.  It is byte-identical to the stdlib canonical form for the
values a validated event can hold (str, int within 64 bits, bool, nested dicts with ASCII keys);
the tests check it against the SDK's own ``canonicalize_json``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any

import orjson

__all__ = [
    "BLOCK_LEVEL",
    "MerkleFrontier",
    "NodeSource",
    "consistency_proof",
    "envelope_bytes",
    "fold_root",
    "format_timestamp",
    "hash_pair",
    "largest_power_of_two_below",
    "membership_proof",
    "range_hash",
    "utc_now",
]

_SORT = orjson.OPT_SORT_KEYS

# Perfect subtrees of 2**BLOCK_LEVEL leaves are persisted as they complete, so proofs and
# historical roots never need more than 2**BLOCK_LEVEL leaf reads per tree level.
BLOCK_LEVEL = 8


def utc_now() -> datetime:
    """Current time, timezone-aware UTC."""
    return datetime.now(UTC)


def format_timestamp(dt: datetime) -> str:
    """RFC 3339 UTC with microseconds and ``Z``: exactly ``pangea.utils.format_datetime``'s output."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def envelope_bytes(
    event: dict[str, Any], received_at: str, signature: str | None = None, public_key: str | None = None
) -> bytes:
    """Canonical JSON of the stored envelope ``{event, public_key?, received_at, signature?}``.

    Keys are emitted in sorted order by construction (``event`` < ``public_key`` <
    ``received_at`` < ``signature``) so only the event itself needs sorting.  ``received_at`` is
    server-made and ASCII, so it is spliced in without escaping.
    """
    ev = orjson.dumps(event, option=_SORT)
    if signature is None and public_key is None:
        return b'{"event":' + ev + b',"received_at":"' + received_at.encode() + b'"}'
    parts = [b'{"event":', ev]
    if public_key is not None:
        parts += [b',"public_key":', orjson.dumps(public_key)]
    parts += [b',"received_at":"', received_at.encode(), b'"']
    if signature is not None:
        parts += [b',"signature":', orjson.dumps(signature)]
    parts.append(b"}")
    return b"".join(parts)


def hash_pair(left: bytes, right: bytes) -> bytes:
    """Interior node: ``sha256(left || right)``, as ``pangea.services.audit.util.hash_pair``."""
    return sha256(left + right).digest()


def largest_power_of_two_below(n: int) -> int:
    """Largest power of two strictly below ``n`` (``n >= 2``): RFC 6962's split point."""
    return 1 << ((n - 1).bit_length() - 1)


def fold_root(subtrees: list[bytes]) -> bytes:
    """Root from the perfect subtrees of a tree, left to right (largest first)."""
    root = subtrees[-1]
    for node in reversed(subtrees[:-1]):
        root = hash_pair(node, root)
    return root


class MerkleFrontier:
    """The right edge of an append-only tree: one perfect-subtree root per set bit of ``size``.

    Appending costs O(1) amortised hashes and the root O(log n), so the tree can follow the
    ingest rate; the frontier is persisted with every batch (it is at most 64 hashes).
    """

    __slots__ = ("nodes", "size")

    def __init__(self, size: int = 0, nodes: list[bytes] | None = None) -> None:
        self.size = size
        self.nodes: list[bytes] = list(nodes or [])
        if len(self.nodes) != size.bit_count():
            raise ValueError(f"frontier of a tree of size {size} needs {size.bit_count()} nodes")

    @classmethod
    def from_blob(cls, size: int, blob: bytes) -> MerkleFrontier:
        """Rebuild from the concatenated 32-byte hashes stored by ``to_blob``."""
        return cls(size, [blob[i : i + 32] for i in range(0, len(blob), 32)])

    def to_blob(self) -> bytes:
        """The nodes, concatenated (largest subtree first)."""
        return b"".join(self.nodes)

    def copy(self) -> MerkleFrontier:
        """An independent copy (to roll back a failed transaction)."""
        return MerkleFrontier(self.size, self.nodes)

    def extend(self, leaves: Iterable[bytes], blocks: list[tuple[int, bytes]]) -> None:
        """Append leaf hashes; completed ``2**BLOCK_LEVEL``-leaf subtrees go to ``blocks``."""
        nodes = self.nodes
        size = self.size
        for leaf in leaves:
            node = leaf
            n = size
            level = 0
            # Each trailing 1 bit of the old size is a perfect subtree the new leaf completes.
            while n & 1:
                node = sha256(nodes.pop() + node).digest()
                level += 1
                n >>= 1
                if level == BLOCK_LEVEL:
                    blocks.append((((size + 1) >> BLOCK_LEVEL) - 1, node))
            nodes.append(node)
            size += 1
        self.size = size

    def root(self) -> bytes | None:
        """Current root, or None for an empty tree."""
        return fold_root(self.nodes) if self.nodes else None


class NodeSource:
    """Perfect-subtree hashes of one tree, from persisted leaves and blocks, memoised.

    A perfect aligned subtree never changes once complete, so the memo never needs
    invalidation; it is bounded by clearing when it grows past ``max_cached``.
    """

    def __init__(
        self,
        read_leaves: Callable[[int, int], list[bytes]],
        read_blocks: Callable[[int, int], list[bytes]],
        cache: dict[tuple[int, int], bytes] | None = None,
        max_cached: int = 200_000,
    ) -> None:
        self._read_leaves = read_leaves
        self._read_blocks = read_blocks
        # Shareable between sources reading the same tree through different connections.
        self._cache: dict[tuple[int, int], bytes] = {} if cache is None else cache
        self._max_cached = max_cached

    def node(self, level: int, index: int) -> bytes:
        """Hash of leaves ``[index * 2**level, (index + 1) * 2**level)``; they must exist."""
        key = (level, index)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if level <= BLOCK_LEVEL:
            if level == BLOCK_LEVEL:
                hashes = self._read_blocks(index, index + 1)
            else:
                hashes = self._read_leaves(index << level, (index + 1) << level)
                hashes = _reduce(hashes)
        else:
            span = level - BLOCK_LEVEL
            hashes = _reduce(self._read_blocks(index << span, (index + 1) << span))
        if len(hashes) != 1:
            raise LookupError(f"tree node ({level}, {index}) is not complete in the store")
        if level:  # single leaves are one indexed read anyway; keep the memo for real work
            if len(self._cache) >= self._max_cached:
                self._cache.clear()
            self._cache[key] = hashes[0]
        return hashes[0]


def _reduce(hashes: list[bytes]) -> list[bytes]:
    """Pairwise-hash a power-of-two list of sibling nodes up to its single root."""
    while len(hashes) > 1:
        hashes = [sha256(hashes[i] + hashes[i + 1]).digest() for i in range(0, len(hashes) - 1, 2)]
    return hashes


def range_hash(src: NodeSource, lo: int, hi: int) -> bytes:
    """RFC 6962 MTH of leaves ``[lo, hi)`` where ``lo`` is aligned as the tree's splits make it."""
    n = hi - lo
    if n & (n - 1) == 0 and lo % n == 0:
        return src.node(n.bit_length() - 1, lo // n)
    k = largest_power_of_two_below(n)
    return hash_pair(range_hash(src, lo, lo + k), range_hash(src, lo + k, hi))


def _path(src: NodeSource, target_lo: int, target_hi: int, size: int) -> list[str]:
    """Audit path of the node covering ``[target_lo, target_hi)`` in a tree of ``size`` leaves."""
    lo, hi = 0, size
    items: list[str] = []
    while (lo, hi) != (target_lo, target_hi):
        split = lo + largest_power_of_two_below(hi - lo)
        if target_hi <= split:
            items.append("r:" + range_hash(src, split, hi).hex())
            hi = split
        else:
            items.append("l:" + range_hash(src, lo, split).hex())
            lo = split
    items.reverse()  # the SDK walks from the leaf upwards
    return items


def membership_proof(src: NodeSource, leaf: int, size: int) -> str:
    """The SDK's membership proof string for ``leaf`` in the tree of the first ``size`` leaves."""
    return ",".join(_path(src, leaf, leaf + 1, size))


def consistency_proof(src: NodeSource, old_size: int, new_size: int) -> list[str]:
    """The SDK's consistency proof from the tree of ``old_size`` leaves to ``new_size`` leaves."""
    if not 0 < old_size <= new_size:
        raise ValueError("consistency proof needs 0 < old_size <= new_size")
    subtrees: list[tuple[int, int]] = []  # perfect subtrees of the old tree, left to right
    lo = 0
    for bit in reversed(range(old_size.bit_length())):
        width = 1 << bit
        if old_size & width:
            subtrees.append((lo, lo + width))
            lo += width
    items = []
    for s_lo, s_hi in reversed(subtrees):  # smallest (right-most) first, as the SDK folds
        node = range_hash(src, s_lo, s_hi).hex()
        items.append("x:" + node + "," + ",".join(_path(src, s_lo, s_hi, new_size)))
    return items
