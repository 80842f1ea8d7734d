"""MegaDB in one embedded SQLite file: the default, with no server to run."""
from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

from classification.utils import InputError
from data_management.megadb.base import MegaDB
from data_management.megadb.schema import image_classes

_SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (
    dataset_name TEXT PRIMARY KEY,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sequences (
    dataset TEXT NOT NULL,
    seq_id TEXT NOT NULL,
    location TEXT,
    doc TEXT NOT NULL,
    PRIMARY KEY (dataset, seq_id)
);
CREATE TABLE IF NOT EXISTS sequence_classes (
    dataset TEXT NOT NULL,
    seq_id TEXT NOT NULL,
    class TEXT NOT NULL,
    n_images INTEGER NOT NULL,
    PRIMARY KEY (dataset, class, seq_id)
);
"""

# the columns of each table, as _SCHEMA creates them
_TABLES = {
    'datasets': ('dataset_name', 'doc'),
    'sequences': ('dataset', 'seq_id', 'location', 'doc'),
    'sequence_classes': ('dataset', 'seq_id', 'class', 'n_images'),
}


def _check_schema(conn: sqlite3.Connection, path: str) -> None:
    """Refuses a database that lacks our tables or columns (reading only)."""
    tables = {name for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        raise InputError(f'{path}: not an SQLite MegaDB file (an empty database or empty '
                         'file; give a new path to create one, or the MegaDB built by '
                         'python -m data_management.megadb.import_dataset)')
    for table, columns in _TABLES.items():
        if table not in tables:
            raise InputError(f'{path}: not an SQLite MegaDB file (no table {table!r}; it '
                             f'has {", ".join(sorted(tables))})')
        have = {row[1] for row in conn.execute(f'PRAGMA table_info({table})')}
        missing = [c for c in columns if c not in have]
        if missing:
            raise InputError(f'{path}: not an SQLite MegaDB file (table {table!r} lacks '
                             f'column(s) {", ".join(missing)})')


class SQLiteMegaDB(MegaDB):
    """Sequences are stored as JSON documents, with a (dataset, class) index table.

    A path that does not exist becomes a new database (unless ``must_exist``); an
    existing file must already be a MegaDB (the three tables with their columns), and
    is never changed when it is not: an empty file, another SQLite database or any
    other file is refused. With ``must_exist`` the file is opened read-only.

    Used as a context manager, the whole block is one transaction: a block that
    raises leaves the file as it was (and removes it when this block created it)."""

    def __init__(self, path: str | Path, must_exist: bool = False) -> None:
        self.path = Path(path)
        self._created = False
        if self.path.is_dir():
            raise InputError(f'{path}: is a folder, expected an SQLite MegaDB file')
        exists = self.path.exists()
        if must_exist and not exists:
            raise InputError(f'{path}: no such database file (build one with '
                             'python -m data_management.megadb.import_dataset)')
        try:
            if exists:
                if must_exist:   # readers never write, not even a journal
                    uri = self.path.resolve().as_uri() + '?mode=ro'
                    self.conn = sqlite3.connect(uri, uri=True, isolation_level=None)
                else:
                    self.conn = sqlite3.connect(self.path, isolation_level=None)
                try:
                    _check_schema(self.conn, str(path))
                except BaseException:
                    self.conn.close()
                    raise
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.conn = sqlite3.connect(self.path, isolation_level=None)
                self._created = True
                self.conn.executescript('BEGIN;' + _SCHEMA + 'COMMIT;')
        except sqlite3.OperationalError as e:   # locked, no permission, ...
            raise InputError(f'{path}: cannot open the database ({e})') from e
        except sqlite3.DatabaseError as e:
            raise InputError(f'{path}: not an SQLite MegaDB file ({e})') from e
        except OSError as e:
            raise InputError(f'{path}: cannot open the database ({e.strerror or e})') from e

    def __enter__(self) -> SQLiteMegaDB:
        self.conn.execute('BEGIN')
        return self

    def __exit__(self, *exc: object) -> None:
        failed = exc[0] is not None
        try:
            if self.conn.in_transaction:
                try:
                    self.conn.execute('ROLLBACK' if failed else 'COMMIT')
                except sqlite3.OperationalError as e:
                    raise InputError(f'{self.path}: cannot write the database ({e})') from e
        finally:
            self.close()
            if failed and self._created:     # leave no half-made database behind
                for p in (self.path, self.path.with_name(self.path.name + '-journal')):
                    p.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _atomic(self) -> Iterator[None]:
        """One write: all of it or none of it, inside the block's transaction if any."""
        try:
            self.conn.execute('SAVEPOINT megadb_write')
            try:
                yield
            except BaseException:
                self.conn.execute('ROLLBACK TO megadb_write')
                self.conn.execute('RELEASE megadb_write')
                raise
            self.conn.execute('RELEASE megadb_write')
        except sqlite3.OperationalError as e:   # read-only file, full disk, locked
            raise InputError(f'{self.path}: cannot write the database ({e})') from e

    def close(self) -> None:
        self.conn.close()

    def upsert_dataset(self, doc: dict[str, Any]) -> None:
        with self._atomic():
            self.conn.execute('INSERT OR REPLACE INTO datasets VALUES (?, ?)',
                              (doc['dataset_name'], json.dumps(doc)))

    def get_datasets(self) -> dict[str, dict[str, Any]]:
        rows = self.conn.execute('SELECT dataset_name, doc FROM datasets ORDER BY dataset_name')
        return {name: json.loads(doc) for name, doc in rows}

    def replace_sequences(self, dataset: str, docs: Iterable[dict[str, Any]]) -> int:
        seq_rows: list[tuple[Any, ...]] = []
        class_rows: list[tuple[Any, ...]] = []
        file_seq: dict[str, str] = {}
        for doc in docs:     # every check before the first write
            if doc['dataset'] != dataset:
                raise InputError(f'sequence {doc["seq_id"]}: dataset {doc["dataset"]!r} '
                                 f'is not {dataset!r}')
            for img in doc['images']:
                other = file_seq.setdefault(img['file'], doc['seq_id'])
                if other != doc['seq_id']:
                    raise InputError(f'dataset {dataset}: file {img["file"]!r} is in '
                                     f'sequences {other!r} and {doc["seq_id"]!r}')
            seq_rows.append((dataset, doc['seq_id'], doc.get('location'), json.dumps(doc)))
            counts: dict[str, int] = {}
            for img in doc['images']:
                for c in set(image_classes(doc, img)):
                    counts[c] = counts.get(c, 0) + 1
            class_rows.extend((dataset, doc['seq_id'], c, k) for c, k in counts.items())
        with self._atomic():  # one transaction: a failed import leaves the old rows
            self.conn.execute('DELETE FROM sequences WHERE dataset = ?', (dataset,))
            self.conn.execute('DELETE FROM sequence_classes WHERE dataset = ?', (dataset,))
            try:
                self.conn.executemany('INSERT INTO sequences VALUES (?, ?, ?, ?)', seq_rows)
            except sqlite3.IntegrityError as e:
                raise InputError(f'dataset {dataset}: duplicate seq_id ({e})') from e
            self.conn.executemany('INSERT INTO sequence_classes VALUES (?, ?, ?, ?)', class_rows)
        return len(seq_rows)

    def query_sequences(self, dataset: str, classes: Collection[str] | None = None
                        ) -> Iterator[dict[str, Any]]:
        if classes is None:
            cur = self.conn.execute(
                'SELECT doc FROM sequences WHERE dataset = ? ORDER BY seq_id', (dataset,))
        else:
            cur = self.conn.execute(
                'SELECT s.doc FROM sequences s WHERE s.dataset = ? AND s.seq_id IN ('
                ' SELECT seq_id FROM sequence_classes WHERE dataset = ?'
                ' AND class IN (SELECT value FROM json_each(?))) ORDER BY s.seq_id',
                (dataset, dataset, json.dumps(sorted(classes))))
        for (doc,) in cur:
            yield json.loads(doc)

    def dataset_classes(self, dataset: str) -> dict[str, int]:
        rows = self.conn.execute(
            'SELECT class, SUM(n_images) FROM sequence_classes WHERE dataset = ? '
            'GROUP BY class ORDER BY class', (dataset,))
        return {c: int(n) for c, n in rows}

