"""The local audit log hashes and proves exactly what pangea-sdk verifies."""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from pangea.services.audit import util as sdk_util
from pangea.services.audit.models import EventEnvelope
from pangea.utils import format_datetime

from gateway.local_audit.hashing import (
    MerkleFrontier,
    NodeSource,
    consistency_proof,
    envelope_bytes,
    format_timestamp,
    membership_proof,
    range_hash,
)

_keys = st.from_regex(r"^[a-z][0-9a-z_]{0,31}$", fullmatch=True)
_values = st.one_of(
    st.text(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
)


@settings(max_examples=300)
@given(
    event=st.dictionaries(_keys, _values, max_size=8),
    signature=st.none() | st.text(max_size=40),
    public_key=st.none() | st.text(max_size=40),
)
def test_envelope_bytes_equal_the_sdk_canonical_form(
    event: dict[str, Any], signature: str | None, public_key: str | None
) -> None:
    received_at = "2026-11-22T03:04:05.123456Z"
    reference: dict[str, Any] = {"event": event, "received_at": received_at}
    if signature is not None:
        reference["signature"] = signature
    if public_key is not None:
        reference["public_key"] = public_key
    assert envelope_bytes(event, received_at, signature, public_key) == sdk_util.canonicalize_json(reference)


@settings(max_examples=200)
@given(event=st.dictionaries(_keys, _values, min_size=1, max_size=8))
def test_sdk_verifies_the_hash_of_an_envelope_parsed_from_the_wire(event: dict[str, Any]) -> None:
    stamped = format_timestamp(datetime(2026, 1, 2, 3, 4, 5, 0, tzinfo=UTC))
    data = envelope_bytes(event, stamped)
    digest = hashlib.sha256(data).hexdigest()
    # What the SDK does with a search answer: parse the JSON, build the model, verify.
    envelope = EventEnvelope(**orjson.loads(data))
    assert sdk_util.verify_envelope_hash(envelope, digest)


def test_timestamps_round_trip_through_the_sdk_format() -> None:
    for dt in (
        datetime(2026, 11, 22, 3, 4, 5, 123456, tzinfo=UTC),
        datetime(2026, 11, 22, 3, 4, 5, 0, tzinfo=UTC),
        datetime(2026, 11, 22, 5, 4, 5, 7, tzinfo=timezone(timedelta(hours=2))),
    ):
        stamped = format_timestamp(dt)
        assert stamped.endswith("Z") and len(stamped) == len("2026-11-22T03:04:05.123456Z")
        assert stamped == format_datetime(dt.astimezone(UTC))
        assert format_datetime(datetime.fromisoformat(stamped)) == stamped


class _MemoryTree:
    """Leaves and blocks kept in lists, as the SQLite store keeps them in tables."""

    def __init__(self) -> None:
        self.leaves: list[bytes] = []
        self.blocks: dict[int, bytes] = {}
        self.frontier = MerkleFrontier()
        self.roots: dict[int, bytes] = {}

    def add(self, count: int) -> None:
        for _ in range(count):
            leaf = hashlib.sha256(str(len(self.leaves)).encode()).digest()
            self.leaves.append(leaf)
            blocks: list[tuple[int, bytes]] = []
            self.frontier.extend([leaf], blocks)
            self.blocks.update(blocks)
            root = self.frontier.root()
            assert root is not None
            self.roots[self.frontier.size] = root

    def source(self) -> NodeSource:
        return NodeSource(lambda lo, hi: self.leaves[lo:hi], lambda lo, hi: [self.blocks[i] for i in range(lo, hi)])


def test_frontier_root_equals_the_rfc6962_root_of_every_size() -> None:
    tree = _MemoryTree()
    tree.add(1100)
    src = tree.source()
    for size in range(1, 1101):
        assert range_hash(src, 0, size) == tree.roots[size]


def test_sdk_verifies_membership_and_consistency_proofs() -> None:
    tree = _MemoryTree()
    tree.add(700)
    src = tree.source()
    rng = random.Random(7)
    for size in (1, 2, 3, 4, 5, 7, 8, 9, 255, 256, 257, 511, 512, 513, 700):
        for leaf in {0, size - 1, *rng.sample(range(size), min(size, 8))}:
            proof = sdk_util.decode_membership_proof(membership_proof(src, leaf, size))
            assert sdk_util.verify_membership_proof(tree.leaves[leaf], tree.roots[size], proof)
        for old in {1, size // 2 or 1, size - 1 or 1, size}:
            items = sdk_util.decode_consistency_proof(consistency_proof(src, old, size))
            assert sdk_util.verify_consistency_proof(tree.roots[size], tree.roots[old], items)


def test_a_proof_against_another_root_fails_verification() -> None:
    tree = _MemoryTree()
    tree.add(20)
    src = tree.source()
    proof = sdk_util.decode_membership_proof(membership_proof(src, 3, 20))
    assert not sdk_util.verify_membership_proof(tree.leaves[4], tree.roots[20], proof)
    assert not sdk_util.verify_membership_proof(tree.leaves[3], tree.roots[19], proof)


def test_frontier_survives_its_blob_form() -> None:
    tree = _MemoryTree()
    tree.add(300)
    again = MerkleFrontier.from_blob(tree.frontier.size, tree.frontier.to_blob())
    assert again.root() == tree.frontier.root()
    blocks: list[tuple[int, bytes]] = []
    again.extend([b"\x01" * 32], blocks)
    tree.frontier.extend([b"\x01" * 32], [])
    assert again.root() == tree.frontier.root()
