"""SQLite storage of the local audit log: appends, rollback, recovery and searches."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.local_audit.hashing import envelope_bytes
from gateway.local_audit.query import Term
from gateway.local_audit.store import SearchCriteria, Store

CID = "pci_" + "e" * 32


def _append(store: Store, messages: list[dict[str, object]], received_at: str) -> int:
    tree = store.tree(CID)
    envs = [envelope_bytes(m, received_at) for m in messages]
    with store.transaction():
        return store.append(tree, received_at, envs, [hashlib.sha256(e).digest() for e in envs])


def _criteria(*terms: Term, start: str | None = None, end: str | None = None, desc: bool = False) -> SearchCriteria:
    return SearchCriteria(
        terms=terms, restriction=(), start=start, end=end, descending=desc, order_by="received_at", max_results=100
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "log.db")
    s.open([CID])
    yield s
    s.close()


def test_appends_number_leaves_in_order_and_search_bounds_by_time(store: Store) -> None:
    assert _append(store, [{"message": "a"}, {"message": "b"}], "2026-01-01T00:00:00.000000Z") == 0
    assert _append(store, [{"message": "c", "actor": "x"}], "2026-01-02T00:00:00.000000Z") == 2
    tree = store.tree(CID)
    assert tree.size == 3
    assert store.search(tree, 3, _criteria()) == [0, 1, 2]
    assert store.search(tree, 3, _criteria(desc=True)) == [2, 1, 0]
    assert store.search(tree, 3, _criteria(start="2026-01-01T12:00:00.000000Z")) == [2]
    assert store.search(tree, 3, _criteria(end="2026-01-01T00:00:00.000000Z")) == [0, 1]
    assert store.search(tree, 2, _criteria()) == [0, 1]  # a snapshot ignores later records
    assert store.search(tree, 3, _criteria(Term("actor", "x"))) == [2]
    assert store.search(tree, 3, _criteria(Term(None, "b"))) == [1]
    ((record, proof),) = store.fetch(tree, [2], proof_size=3)
    assert '"actor":"x"' in record.envelope and proof is not None


def test_a_failed_transaction_leaves_no_trace(store: Store) -> None:
    _append(store, [{"message": "kept"}], "2026-01-01T00:00:00.000000Z")
    tree = store.tree(CID)
    root = tree.frontier.root()
    env = envelope_bytes({"message": "lost"}, "2026-01-01T00:00:01.000000Z")
    with pytest.raises(RuntimeError), store.transaction():
        store.append(tree, "2026-01-01T00:00:01.000000Z", [env], [hashlib.sha256(env).digest()])
        raise RuntimeError("boom")
    assert tree.size == 1 and tree.frontier.root() == root
    assert tree.last_received_at == "2026-01-01T00:00:00.000000Z"
    assert store.search(tree, 1, _criteria(Term(None, "lost"))) == []


def test_reopening_rebuilds_a_tree_row_that_disagrees_with_the_records(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    first = Store(path)
    first.open([CID])
    for i in range(0, 600, 100):
        _append(first, [{"message": f"m{j}"} for j in range(i, i + 100)], f"2026-01-01T00:00:{i // 100:02d}.000000Z")
    root = first.tree(CID).frontier.root()
    first.close()
    with sqlite3.connect(path) as conn:  # simulate a lost tree update
        conn.execute("UPDATE trees SET size = 0, frontier = x''")
    conn.close()
    again = Store(path)
    again.open([CID])
    try:
        tree = again.tree(CID)
        assert tree.size == 600 and tree.frontier.root() == root
        assert again.root_with_proof(tree, 600)[0] == root
        assert tree.last_received_at == "2026-01-01T00:00:05.000000Z"
    finally:
        again.close()
