"""The labeled-image database interface; backends live beside this module.

Scripts talk to ``MegaDB`` only, and get one from ``open_megadb``. A backend
stores two tables (datasets, sequences partitioned by dataset) and answers the
few queries the pipeline needs; anything richer is done in Python on top, so
every backend returns the same rows in the same order.
"""
from __future__ import annotations

import abc
import argparse
import logging
import os
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Any

from classification.utils import InputError
from data_management.megadb.schema import image_classes

logger = logging.getLogger(__name__)

DEFAULT_MEGADB = 'megadb.sqlite'


def add_megadb_flags(parser: argparse.ArgumentParser,
                     what: str = 'labeled-image database') -> None:
    """--megadb (default $MEGADB, else DEFAULT_MEGADB) and --cosmos-key."""
    parser.add_argument('--megadb', default=os.environ.get('MEGADB', DEFAULT_MEGADB),
                        help=f'{what}: an SQLite file, or Azure Cosmos DB as "cosmos" '
                             '(COSMOS_ENDPOINT) or its https:// endpoint, key in COSMOS_KEY '
                             f'(default: $MEGADB or {DEFAULT_MEGADB})')
    add_cosmos_key_flag(parser)


def add_cosmos_key_flag(parser: argparse.ArgumentParser) -> None:
    """--cosmos-key, for users who cannot set COSMOS_KEY (which is safer: a flag is
    visible to other users of the machine in the process list)."""
    parser.add_argument('--cosmos-key', default=None,
                        help='Cosmos DB key (default: $COSMOS_KEY, which is safer)')


class MegaDB(abc.ABC):
    """A store of dataset entries and sequence documents."""

    @abc.abstractmethod
    def upsert_dataset(self, doc: dict[str, Any]) -> None:
        """Adds or replaces a dataset entry (validated by the caller)."""

    @abc.abstractmethod
    def get_datasets(self) -> dict[str, dict[str, Any]]:
        """Every dataset entry, keyed by dataset name."""

    @abc.abstractmethod
    def replace_sequences(self, dataset: str, docs: Iterable[dict[str, Any]]) -> int:
        """Replaces all sequences of ``dataset`` with ``docs``; returns how many were written."""

    @abc.abstractmethod
    def query_sequences(self, dataset: str, classes: Collection[str] | None = None
                        ) -> Iterator[dict[str, Any]]:
        """Sequences of ``dataset`` in which some image has one of ``classes``
        (all sequences when ``classes`` is None), ordered by ``seq_id``."""

    @abc.abstractmethod
    def dataset_classes(self, dataset: str) -> dict[str, int]:
        """Number of images per class in ``dataset``."""

    @abc.abstractmethod
    def close(self) -> None:
        """Releases connections."""

    def __enter__(self) -> MegaDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


SingleClassImages = Iterator[tuple[dict[str, Any], dict[str, Any], str]]


def single_class_images(db: MegaDB, wanted: Mapping[str, Collection[str]]
                        ) -> Iterator[tuple[str, dict[str, Any], SingleClassImages]]:
    """The images a label spec selects, by dataset in name order: (dataset, its
    entry, its (sequence, image, class) for each image of a sequence holding one
    of the dataset's ``wanted`` classes that has exactly one class, an image's
    own class overriding its sequence's). Datasets the database lacks are logged
    and skipped. The class may still be one not wanted (a sequence of several)."""
    datasets = db.get_datasets()
    for ds in sorted(wanted):
        if ds not in datasets:
            logger.warning('dataset %s is in the taxonomy but not in the database; skipped', ds)
            continue
        yield ds, datasets[ds], _single_class(db.query_sequences(ds, sorted(wanted[ds])))


def _single_class(sequences: Iterable[dict[str, Any]]) -> SingleClassImages:
    for seq in sequences:
        for img in seq['images']:
            classes = image_classes(seq, img)
            if len(classes) == 1:
                yield seq, img, classes[0]


def is_cosmos_uri(uri: str) -> bool:
    return uri == 'cosmos' or uri.lower().startswith(('https://', 'http://'))


def open_megadb(uri: str, cosmos_key: str | None = None, must_exist: bool = False) -> MegaDB:
    """Opens a database: a file path (SQLite, created if missing unless
    ``must_exist``, which also opens it read-only; an existing file that is not a
    MegaDB is refused and left as it is), or Azure Cosmos DB (``cosmos`` or an
    ``https://`` endpoint, key from ``cosmos_key`` or COSMOS_KEY; see
    cosmos_db.from_uri)."""
    if not uri:
        raise InputError('no MegaDB given (use --megadb PATH)')
    if is_cosmos_uri(uri):
        from data_management.megadb.cosmos_db import from_uri
        return from_uri(uri, cosmos_key)
    if must_exist and not os.path.exists(uri):
        raise InputError(f'--megadb {uri}: no such database file (build one with '
                         'python -m data_management.megadb.import_dataset)')
    from data_management.megadb.sqlite_db import SQLiteMegaDB
    return SQLiteMegaDB(uri, must_exist=must_exist)
