"""SQLite storage of the local audit log: one append-only table and one Merkle tree per configuration.

Layout (WAL mode):

* ``trees(tree_id, config_id, size, frontier, last_received_at)``: one row per configuration,
  updated in the same transaction as the records, so the tree and the records never disagree.
* ``records_<tree_id>(leaf INTEGER PRIMARY KEY, received_at, hash, envelope)``: the leaf index
  is the rowid, so range reads (proofs, time bounds) cost no extra index on the insert path.
  ``envelope`` is the canonical JSON that was hashed, kept as TEXT so SQLite's JSON functions
  can search it and answers can splice it verbatim.
* ``blocks_<tree_id>(idx, hash)``: roots of completed 256-leaf subtrees, so proofs and
  historical roots read O(n/256) rows at worst, not every leaf.
* ``async_results(request_id, ...)``: answers of 202-accepted calls, written in the transaction
  that stored their events, so a poll after a restart still finds them.

Writes happen on the event loop thread (short transactions, no fsync with synchronous=NORMAL);
searches run on one worker thread through a second, read-only connection.
"""

# Table names are built from integer tree ids and JSON paths from schema-checked field ids
# ([a-z][0-9a-z_]*); every value is a bound parameter.  Hence no S608 here.
# ruff: noqa: S608

from __future__ import annotations

import errno
import fcntl
import os
import re
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from hashlib import sha256
from itertools import repeat
from pathlib import Path

from gateway.local_audit import oauth
from gateway.local_audit.hashing import (
    MerkleFrontier,
    NodeSource,
    consistency_proof,
    membership_proof,
    range_hash,
)
from gateway.local_audit.query import Term
from gateway.local_audit.tokens import Grant, ensure_schema, grant_config, lookup_token

__all__ = ["SearchCriteria", "Store", "StoredRecord", "Tree"]

_RECENT_ROOTS = 4096
_NEEDS_JSON_ESCAPE = re.compile(r'["\\\x00-\x1f]')


@dataclass(frozen=True, slots=True)
class SearchCriteria:
    """A validated search: terms (AND), exact-match restrictions, time bounds and order."""

    terms: tuple[Term, ...]
    restriction: tuple[tuple[str, tuple[str, ...]], ...]
    start: str | None
    end: str | None
    descending: bool
    order_by: str
    max_results: int


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """One record as a search answers it."""

    leaf: int
    hash: bytes
    envelope: str


@dataclass(eq=False)
class Tree:
    """In-memory state of one configuration's log."""

    config_id: str
    tree_id: int
    name: str
    frontier: MerkleFrontier
    last_received_at: str
    records: str
    blocks: str
    node_cache: dict[tuple[int, int], bytes] = field(default_factory=dict)
    recent_roots: OrderedDict[str, int] = field(default_factory=OrderedDict)
    writer_nodes: NodeSource | None = None
    reader_nodes: NodeSource | None = None
    # Sizes and times of the roots published so far, oldest first (see Store.publish).
    published: list[tuple[int, str]] = field(default_factory=list)

    @property
    def published_size(self) -> int:
        """Size of the latest published root; 0 when none is."""
        return self.published[-1][0] if self.published else 0

    def published_at(self, size: int) -> str | None:
        """When the first published root covering ``size`` records was published, if one is."""
        lo, hi = 0, len(self.published)
        while lo < hi:  # first publication with size >= the asked one
            mid = (lo + hi) // 2
            if self.published[mid][0] < size:
                lo = mid + 1
            else:
                hi = mid
        return self.published[lo][1] if lo < len(self.published) else None

    @property
    def size(self) -> int:
        """Number of records."""
        return self.frontier.size

    def remember_root(self) -> bytes | None:
        """Compute the current root and remember its size, for ``prev_root`` look-ups."""
        root = self.frontier.root()
        if root is not None:
            self.recent_roots[root.hex()] = self.frontier.size
            self.recent_roots.move_to_end(root.hex())
            while len(self.recent_roots) > _RECENT_ROOTS:
                self.recent_roots.popitem(last=False)
        return root


class Store:
    """The database; create, then :meth:`open`, and :meth:`close` when done."""

    def __init__(self, path: Path, synchronous: str = "NORMAL") -> None:
        self.path = path
        self._synchronous = synchronous
        self._w: sqlite3.Connection | None = None
        self._r: sqlite3.Connection | None = None
        self._trees: dict[str, Tree] = {}
        self._backups: dict[int, tuple[MerkleFrontier, str]] | None = None
        self._reader_lock = threading.Lock()
        self._lock_fd: int | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def open(self, config_ids: Iterable[str]) -> None:
        """Open (creating if needed) the database and a tree for each configuration."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        try:
            self._open(config_ids)
        except BaseException:
            self.close()
            raise

    def _open(self, config_ids: Iterable[str]) -> None:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per request.
        w = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._w = w
        w.execute("PRAGMA journal_mode=WAL")
        w.execute(f"PRAGMA synchronous={self._synchronous}")
        w.execute("PRAGMA temp_store=MEMORY")
        w.execute("PRAGMA cache_size=-65536")
        w.execute(
            "CREATE TABLE IF NOT EXISTS trees (tree_id INTEGER PRIMARY KEY, config_id TEXT NOT NULL UNIQUE,"
            " size INTEGER NOT NULL, frontier BLOB NOT NULL, last_received_at TEXT NOT NULL)"
        )
        w.execute(
            "CREATE TABLE IF NOT EXISTS async_results (request_id TEXT PRIMARY KEY, config_id TEXT NOT NULL,"
            " expires_at REAL NOT NULL, body BLOB NOT NULL)"
        )
        w.execute(
            "CREATE TABLE IF NOT EXISTS configs (id TEXT PRIMARY KEY, body TEXT NOT NULL, created_at TEXT NOT NULL,"
            " updated_at TEXT NOT NULL, origin TEXT NOT NULL, owner BLOB)"
        )
        w.execute(
            "CREATE TABLE IF NOT EXISTS published_roots (tree_id INTEGER NOT NULL, size INTEGER NOT NULL,"
            " root_hash TEXT NOT NULL, published_at TEXT NOT NULL, PRIMARY KEY (tree_id, size))"
        )
        ensure_schema(w)
        oauth.ensure_schema(w)
        for config_id in config_ids:
            self._open_tree(config_id)
        # The reader is used from the search worker thread only (check_same_thread=False because
        # it is created here, on the loop thread).
        r = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        r.execute("PRAGMA query_only=ON")
        self._r = r
        for tree in self._trees.values():
            tree.reader_nodes = self._node_source(r, tree)

    def close(self) -> None:
        """Close both connections and release the database (idempotent)."""
        for conn in (self._r, self._w):
            if conn is not None:
                conn.close()
        self._r = self._w = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _take_lock(self) -> None:
        """Refuse to share the database: the tree's frontier lives in this process's memory, so a
        second writer (say, an old process still shutting down) would fork the log."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OSError(errno.EBUSY, f"database {self.path} is in use by another local audit log") from None
        self._lock_fd = fd

    @property
    def _writer(self) -> sqlite3.Connection:
        if self._w is None:
            raise RuntimeError("store is not open")
        return self._w

    @property
    def sql(self) -> sqlite3.Connection:
        """The writer connection, for the token and client tables (loop thread, autocommit)."""
        return self._writer

    @property
    def _reader(self) -> sqlite3.Connection:
        if self._r is None:
            raise RuntimeError("store is not open")
        return self._r

    def _open_tree(self, config_id: str) -> None:
        w = self._writer
        row = w.execute(
            "SELECT tree_id, size, frontier, last_received_at FROM trees WHERE config_id = ?", (config_id,)
        ).fetchone()
        if row is None:
            cur = w.execute(
                "INSERT INTO trees (config_id, size, frontier, last_received_at) VALUES (?, 0, x'', '')",
                (config_id,),
            )
            assert cur.lastrowid is not None
            row = (cur.lastrowid, 0, b"", "")
        tree_id, size, blob, last = row
        tree = Tree(
            config_id=config_id,
            tree_id=tree_id,
            name=sha256(f"audit-gateway-local:{config_id}".encode()).hexdigest(),
            frontier=MerkleFrontier.from_blob(size, blob),
            last_received_at=last,
            records=f"records_{tree_id}",
            blocks=f"blocks_{tree_id}",
        )
        w.execute(
            f"CREATE TABLE IF NOT EXISTS {tree.records} (leaf INTEGER PRIMARY KEY, received_at TEXT NOT NULL,"
            " hash BLOB NOT NULL, envelope TEXT NOT NULL)"
        )
        w.execute(f"CREATE TABLE IF NOT EXISTS {tree.blocks} (idx INTEGER PRIMARY KEY, hash BLOB NOT NULL)")
        (max_leaf,) = w.execute(f"SELECT max(leaf) FROM {tree.records}").fetchone()
        if (max_leaf if max_leaf is not None else -1) != size - 1:
            self._rebuild(tree)  # the tree row is written with the records; differing means outside edits
        tree.writer_nodes = self._node_source(w, tree)
        tree.published = [
            (size, at)
            for size, at in w.execute(
                "SELECT size, published_at FROM published_roots WHERE tree_id = ? AND size <= ? ORDER BY size",
                (tree.tree_id, tree.size),
            )
        ]
        self._trees[config_id] = tree

    def _rebuild(self, tree: Tree) -> None:
        """Recompute a tree's frontier and blocks from its records."""
        w = self._writer
        frontier = MerkleFrontier()
        blocks: list[tuple[int, bytes]] = []
        last = ""
        rows = w.execute(f"SELECT leaf, received_at, hash FROM {tree.records} ORDER BY leaf")
        for expected, (leaf, received_at, digest) in enumerate(rows):
            if leaf != expected:
                raise RuntimeError(f"{tree.records}: leaf {expected} is missing; the log was edited")
            frontier.extend([digest], blocks)
            last = received_at
        w.execute("BEGIN")
        w.execute(f"DELETE FROM {tree.blocks}")
        w.executemany(f"INSERT INTO {tree.blocks} (idx, hash) VALUES (?, ?)", blocks)
        w.execute(
            "UPDATE trees SET size = ?, frontier = ?, last_received_at = ? WHERE tree_id = ?",
            (frontier.size, frontier.to_blob(), last, tree.tree_id),
        )
        w.execute("COMMIT")
        tree.frontier = frontier
        tree.last_received_at = last
        tree.node_cache.clear()

    def _node_source(self, conn: sqlite3.Connection, tree: Tree) -> NodeSource:
        records, blocks = tree.records, tree.blocks

        def leaves(lo: int, hi: int) -> list[bytes]:
            return [
                r[0]
                for r in conn.execute(
                    f"SELECT hash FROM {records} WHERE leaf >= ? AND leaf < ? ORDER BY leaf", (lo, hi)
                )
            ]

        def block_hashes(lo: int, hi: int) -> list[bytes]:
            return [
                r[0]
                for r in conn.execute(f"SELECT hash FROM {blocks} WHERE idx >= ? AND idx < ? ORDER BY idx", (lo, hi))
            ]

        return NodeSource(leaves, block_hashes, cache=tree.node_cache)

    # -- trees -----------------------------------------------------------------------------

    def tree(self, config_id: str) -> Tree:
        """The tree of a configuration opened at start or with :meth:`add_tree`."""
        return self._trees[config_id]

    def add_tree(self, config_id: str) -> Tree:
        """Open (creating if needed) the tree of a configuration while serving (loop thread)."""
        if config_id not in self._trees:
            self._open_tree(config_id)
            self._trees[config_id].reader_nodes = self._node_source(self._reader, self._trees[config_id])
        return self._trees[config_id]

    # -- configurations and tokens (loop thread) -------------------------------------------

    def config_rows(self) -> list[tuple[str, str, str, str, str, bytes | None]]:
        """``(id, body, created_at, updated_at, origin, owner)`` of every kept configuration; ``owner``
        is the digest of the settings token that created it over the API, if one did."""
        return [
            (r[0], r[1], r[2], r[3], r[4], r[5])
            for r in self._writer.execute(
                "SELECT id, body, created_at, updated_at, origin, owner FROM configs ORDER BY created_at, id"
            )
        ]

    def put_config(
        self, config_id: str, body: str, created_at: str, updated_at: str, origin: str, owner: bytes | None
    ) -> None:
        """Insert or replace a configuration row."""
        self._writer.execute(
            "INSERT OR REPLACE INTO configs (id, body, created_at, updated_at, origin, owner)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (config_id, body, created_at, updated_at, origin, owner),
        )

    def delete_config(self, config_id: str) -> None:
        """Forget a configuration (its records stay in its table, unreachable)."""
        self._writer.execute("DELETE FROM configs WHERE id = ?", (config_id,))

    def publish(self, tree: Tree, published_at: str) -> bool:
        """Publish the tree's current root if it grew since the last publication (loop thread)."""
        root = tree.frontier.root()
        if root is None or tree.size <= tree.published_size:
            return False
        self._writer.execute(
            "INSERT OR REPLACE INTO published_roots (tree_id, size, root_hash, published_at) VALUES (?, ?, ?, ?)",
            (tree.tree_id, tree.size, root.hex(), published_at),
        )
        tree.published.append((tree.size, published_at))
        return True

    def lookup_token(self, digest: bytes, now: float) -> Grant | None:
        """The grant of an active service token (or OAuth2 access token) with this digest."""
        return lookup_token(self._writer, digest, now)

    def grant_config(self, token_id: str, config_id: str) -> None:
        """Give a service token access to a configuration."""
        grant_config(self._writer, token_id, config_id)

    def trees(self) -> list[Tree]:
        """All open trees."""
        return list(self._trees.values())

    # -- writes (event loop thread) --------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction; on failure the database and the in-memory trees roll back."""
        w = self._writer
        w.execute("BEGIN")
        self._backups = {}
        try:
            yield
            w.execute("COMMIT")
        except BaseException:
            if w.in_transaction:
                w.execute("ROLLBACK")
            for tree in self._trees.values():
                backup = self._backups.get(tree.tree_id)
                if backup is not None:
                    tree.frontier, tree.last_received_at = backup
                    # Nodes hashed from rolled-back leaves must not outlive them.
                    tree.node_cache.clear()
            raise
        finally:
            self._backups = None

    def append(self, tree: Tree, received_at: str, envelopes: list[bytes], digests: list[bytes]) -> int:
        """Insert records (inside :meth:`transaction`); returns the leaf index of the first."""
        if self._backups is None:
            raise RuntimeError("append() outside transaction()")
        if tree.tree_id not in self._backups:
            self._backups[tree.tree_id] = (tree.frontier.copy(), tree.last_received_at)
        w = self._writer
        start = tree.frontier.size
        w.executemany(
            f"INSERT INTO {tree.records} (leaf, received_at, hash, envelope) VALUES (?, ?, ?, ?)",
            zip(
                range(start, start + len(digests)),
                repeat(received_at),
                digests,
                [e.decode() for e in envelopes],
                strict=False,
            ),
        )
        blocks: list[tuple[int, bytes]] = []
        tree.frontier.extend(digests, blocks)
        if blocks:
            w.executemany(f"INSERT INTO {tree.blocks} (idx, hash) VALUES (?, ?)", blocks)
        tree.last_received_at = received_at
        w.execute(
            "UPDATE trees SET size = ?, frontier = ?, last_received_at = ? WHERE tree_id = ?",
            (tree.frontier.size, tree.frontier.to_blob(), received_at, tree.tree_id),
        )
        return start

    def put_async_result(self, request_id: str, config_id: str, expires_at: float, body: bytes) -> None:
        """Keep the answer of a 202-accepted call for polling (inside :meth:`transaction`)."""
        self._writer.execute(
            "INSERT OR REPLACE INTO async_results (request_id, config_id, expires_at, body) VALUES (?, ?, ?, ?)",
            (request_id, config_id, expires_at, body),
        )

    def get_async_result(self, request_id: str, now: float) -> tuple[str, bytes] | None:
        """``(config_id, body)`` of a kept answer not yet expired."""
        row = self._writer.execute(
            "SELECT config_id, body FROM async_results WHERE request_id = ? AND expires_at > ?", (request_id, now)
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def purge_async_results(self, now: float) -> None:
        """Forget expired 202 answers."""
        self._writer.execute("DELETE FROM async_results WHERE expires_at <= ?", (now,))

    # -- proofs ----------------------------------------------------------------------------

    def membership_proofs(self, tree: Tree, leaves: Iterable[int], size: int) -> list[str]:
        """Membership proofs (loop thread, sees the open transaction) against the first ``size`` leaves."""
        assert tree.writer_nodes is not None
        return [membership_proof(tree.writer_nodes, leaf, size) for leaf in leaves]

    def consistency_proof(self, tree: Tree, old_size: int, new_size: int) -> list[str]:
        """Consistency proof from ``old_size`` to ``new_size`` (loop thread)."""
        assert tree.writer_nodes is not None
        return consistency_proof(tree.writer_nodes, old_size, new_size)

    def root_with_proof(self, tree: Tree, size: int) -> tuple[bytes, list[str] | None]:
        """Root of the first ``size`` leaves and the consistency proof from ``size - 1`` (worker thread)."""
        assert tree.reader_nodes is not None
        with self._reader_lock:
            root = range_hash(tree.reader_nodes, 0, size)
            proof = consistency_proof(tree.reader_nodes, size - 1, size) if size > 1 else None
            return root, proof

    # -- reads (search worker thread) ------------------------------------------------------

    def _bound(self, tree: Tree, ts: str, size: int, inclusive: bool) -> int:
        """First leaf below ``size`` whose received_at is >= ``ts`` (> when ``inclusive``)."""
        r = self._reader
        lo, hi = 0, size
        sql = f"SELECT received_at FROM {tree.records} WHERE leaf = ?"
        while lo < hi:
            mid = (lo + hi) // 2
            (value,) = r.execute(sql, (mid,)).fetchone()
            if value < ts or (inclusive and value == ts):
                lo = mid + 1
            else:
                hi = mid
        return lo

    def search(self, tree: Tree, size: int, criteria: SearchCriteria) -> list[int]:
        """Leaf indexes matching ``criteria`` among the first ``size`` records, in answer order."""
        with self._reader_lock:
            lo = self._bound(tree, criteria.start, size, False) if criteria.start else 0
            hi = self._bound(tree, criteria.end, size, True) if criteria.end else size
            if lo >= hi:
                return []
            where = ["leaf >= ?", "leaf < ?"]
            params: list[object] = [lo, hi]
            for term in criteria.terms:
                if term.field is None:
                    if not _NEEDS_JSON_ESCAPE.search(term.value):
                        # Cheap pre-filter on the raw text (values are stored unescaped unless they
                        # hold quotes, backslashes or control characters); json_each confirms.
                        where.append("instr(envelope, ?) > 0")
                        params.append(term.value)
                    where.append(
                        "EXISTS (SELECT 1 FROM json_each(envelope, '$.event') AS j WHERE instr(j.value, ?) > 0)"
                    )
                else:
                    # Field ids are schema-checked ([a-z][0-9a-z_]*), so splicing them is safe.
                    where.append(f"instr(json_extract(envelope, '$.event.{term.field}'), ?) > 0")
                params.append(term.value)
            for name, values in criteria.restriction:
                if values:
                    marks = ", ".join("?" * len(values))
                    where.append(f"json_extract(envelope, '$.event.{name}') IN ({marks})")
                    params.extend(values)
            direction = "DESC" if criteria.descending else "ASC"
            order = f"leaf {direction}"
            if criteria.order_by != "received_at":
                order = f"json_extract(envelope, '$.event.{criteria.order_by}') {direction}, {order}"
            sql = f"SELECT leaf FROM {tree.records} WHERE {' AND '.join(where)} ORDER BY {order} LIMIT ?"
            params.append(criteria.max_results)
            return [row[0] for row in self._reader.execute(sql, params)]

    def fetch(
        self, tree: Tree, leaves: list[int], proof_size: int | None, published_size: int = 0
    ) -> list[tuple[StoredRecord, str | None]]:
        """Records of ``leaves`` (in that order), with membership proofs when ``proof_size`` is given:
        against the published root (``published_size``) for the records it covers, else against
        the root of ``proof_size`` records."""
        if not leaves:
            return []
        with self._reader_lock:
            marks = ", ".join("?" * len(leaves))
            rows = {
                leaf: StoredRecord(leaf, digest, envelope)
                for leaf, digest, envelope in self._reader.execute(
                    f"SELECT leaf, hash, envelope FROM {tree.records} WHERE leaf IN ({marks})", leaves
                )
            }
            out: list[tuple[StoredRecord, str | None]] = []
            for leaf in leaves:
                proof = None
                if proof_size is not None:
                    assert tree.reader_nodes is not None
                    size = published_size if leaf < published_size else proof_size
                    proof = membership_proof(tree.reader_nodes, leaf, size)
                out.append((rows[leaf], proof))
            return out
