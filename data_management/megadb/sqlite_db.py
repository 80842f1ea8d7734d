"""MegaDB in one embedded SQLite file: the default, with no server to run."""
from __future__ import annotations

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


class SQLiteMegaDB(MegaDB):
    """Sequences are stored as JSON documents, with a (dataset, class) index table."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.exists() and self.path.is_dir():
            raise InputError(f'{path}: is a folder, expected an SQLite MegaDB file')
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(self.path)
            self.conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise InputError(f'{path}: not an SQLite MegaDB file ({e})') from e

    def close(self) -> None:
        self.conn.close()

    def upsert_dataset(self, doc: dict[str, Any]) -> None:
        with self.conn:
            self.conn.execute('INSERT OR REPLACE INTO datasets VALUES (?, ?)',
                              (doc['dataset_name'], json.dumps(doc)))

    def get_datasets(self) -> dict[str, dict[str, Any]]:
        rows = self.conn.execute('SELECT dataset_name, doc FROM datasets ORDER BY dataset_name')
        return {name: json.loads(doc) for name, doc in rows}

    def replace_sequences(self, dataset: str, docs: Iterable[dict[str, Any]]) -> int:
        n = 0
        with self.conn:  # one transaction: a failed import leaves the old rows
            self.conn.execute('DELETE FROM sequences WHERE dataset = ?', (dataset,))
            self.conn.execute('DELETE FROM sequence_classes WHERE dataset = ?', (dataset,))
            seq_rows: list[tuple[Any, ...]] = []
            class_rows: list[tuple[Any, ...]] = []
            for doc in docs:
                if doc['dataset'] != dataset:
                    raise InputError(f'sequence {doc["seq_id"]}: dataset {doc["dataset"]!r} '
                                     f'is not {dataset!r}')
                seq_rows.append((dataset, doc['seq_id'], doc.get('location'), json.dumps(doc)))
                counts: dict[str, int] = {}
                for img in doc['images']:
                    for c in set(image_classes(doc, img)):
                        counts[c] = counts.get(c, 0) + 1
                class_rows.extend((dataset, doc['seq_id'], c, k) for c, k in counts.items())
                n += 1
            try:
                self.conn.executemany('INSERT INTO sequences VALUES (?, ?, ?, ?)', seq_rows)
            except sqlite3.IntegrityError as e:
                raise InputError(f'dataset {dataset}: duplicate seq_id ({e})') from e
            self.conn.executemany('INSERT INTO sequence_classes VALUES (?, ?, ?, ?)', class_rows)
        return n

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

