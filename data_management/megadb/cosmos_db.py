"""MegaDB on Azure Cosmos DB (NoSQL API): the backend for tens of millions of images.

Two containers in one database: ``datasets`` (partition key ``/dataset_name``)
and ``sequences`` (partition key ``/dataset``). Every query filters on the
partition key and uses only forms that real Cosmos DB and the emulator serve
(no DISTINCT, GROUP BY or OFFSET...LIMIT; those are done in Python), and the
results are filtered and ordered in Python exactly as the SQLite backend
orders them, so both backends return the same rows.

Connection: endpoint and key from ``--megadb https://<account>.documents.azure.com:443/``
plus ``COSMOS_KEY``, or ``--megadb cosmos`` with ``COSMOS_ENDPOINT`` and
``COSMOS_KEY``; the database is ``COSMOS_DATABASE`` (default ``megadb``).
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from typing import Any
from urllib.parse import quote

from classification.utils import InputError
from data_management.megadb.base import MegaDB
from data_management.megadb.schema import image_classes, sequence_class_set

DEFAULT_DATABASE = 'megadb'
_OWN_FIELDS = ('dataset', 'seq_id', 'location', 'class', 'images')


def _doc_id(key: str) -> str:
    """A Cosmos id for a name: ids may not hold '/', '\\', '?' or '#'."""
    return quote(key, safe='')


def _clean(doc: dict[str, Any], fields: Iterable[str]) -> dict[str, Any]:
    return {k: doc[k] for k in fields if k in doc}


class CosmosMegaDB(MegaDB):
    """Sequences as Cosmos documents, one partition per dataset."""

    def __init__(self, endpoint: str, key: str, database: str = DEFAULT_DATABASE,
                 **client_kwargs: Any) -> None:
        from azure.core.exceptions import AzureError
        from azure.cosmos import CosmosClient, PartitionKey
        try:
            self.client = CosmosClient(endpoint, credential=key, **client_kwargs)
            db = self.client.create_database_if_not_exists(database)
            self.datasets = db.create_container_if_not_exists(
                'datasets', partition_key=PartitionKey(path='/dataset_name'))
            self.sequences = db.create_container_if_not_exists(
                'sequences', partition_key=PartitionKey(path='/dataset'))
        except (AzureError, ValueError) as e:
            raise InputError(f'Cosmos DB at {endpoint}: cannot connect or create the database '
                             f'({type(e).__name__}: {str(e).splitlines()[0][:200]})') from e

    def close(self) -> None:
        self.client.close()

    def upsert_dataset(self, doc: dict[str, Any]) -> None:
        self.datasets.upsert_item({**doc, 'id': _doc_id(doc['dataset_name'])})

    def get_datasets(self) -> dict[str, dict[str, Any]]:
        from data_management.megadb.schema import DATASET_FIELDS
        rows = self.datasets.query_items('SELECT * FROM d', enable_cross_partition_query=True)
        docs = [_clean(r, DATASET_FIELDS) for r in rows]
        return {d['dataset_name']: d for d in sorted(docs, key=lambda d: d['dataset_name'])}

    def _ids(self, dataset: str) -> list[str]:
        rows = self.sequences.query_items(
            'SELECT VALUE s.id FROM s WHERE s.dataset = @d',
            parameters=[{'name': '@d', 'value': dataset}], partition_key=dataset)
        return [str(r) for r in rows]

    def replace_sequences(self, dataset: str, docs: Iterable[dict[str, Any]]) -> int:
        # everything is checked before the first write; Cosmos has no transaction
        # across documents, so a failure while writing can leave the dataset half
        # replaced: import it again
        new: dict[str, dict[str, Any]] = {}
        for doc in docs:
            if doc['dataset'] != dataset:
                raise InputError(f'sequence {doc["seq_id"]}: dataset {doc["dataset"]!r} is not '
                                 f'{dataset!r}')
            doc_id = _doc_id(doc['seq_id'])
            if doc_id in new:
                raise InputError(f'dataset {dataset}: duplicate seq_id {doc["seq_id"]!r}')
            new[doc_id] = {**doc, 'id': doc_id}
        for old in self._ids(dataset):
            if old not in new:
                self.sequences.delete_item(old, partition_key=dataset)
        for item in new.values():
            self.sequences.upsert_item(item)
        return len(new)

    def query_sequences(self, dataset: str, classes: Collection[str] | None = None
                        ) -> Iterator[dict[str, Any]]:
        params: list[dict[str, Any]] = [{'name': '@d', 'value': dataset}]
        found: dict[str, dict[str, Any]] = {}
        if classes is None:
            queries = [('SELECT * FROM s WHERE s.dataset = @d', params)]
        else:
            # one query per class in forms the emulator and Cosmos both serve; a
            # superset (a sequence-level class hidden by image-level ones also
            # matches), trimmed below to what image_classes() says
            sql = ('SELECT * FROM s WHERE s.dataset = @d AND (ARRAY_CONTAINS(s["class"], @c) '
                   'OR EXISTS(SELECT VALUE im FROM im IN s.images '
                   'WHERE ARRAY_CONTAINS(im["class"], @c)))')
            queries = [(sql, [*params, {'name': '@c', 'value': c}]) for c in sorted(set(classes))]
        for sql, p in queries:
            for row in self.sequences.query_items(sql, parameters=p, partition_key=dataset):
                found[row['seq_id']] = _clean(row, _OWN_FIELDS)
        wanted = set(classes) if classes is not None else None
        for seq_id in sorted(found):
            doc = found[seq_id]
            if wanted is None or wanted & sequence_class_set(doc):
                yield doc

    def dataset_classes(self, dataset: str) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for doc in self.query_sequences(dataset):
            for img in doc['images']:
                counts.update(set(image_classes(doc, img)))
        return dict(sorted(counts.items()))


def from_uri(uri: str, key: str | None = None) -> CosmosMegaDB:
    """``cosmos`` (endpoint from COSMOS_ENDPOINT) or an ``https://`` endpoint; the key
    is ``key`` or COSMOS_KEY, the database COSMOS_DATABASE."""
    endpoint = os.environ.get('COSMOS_ENDPOINT', '') if uri == 'cosmos' else uri
    key = key or os.environ.get('COSMOS_KEY', '')
    if not endpoint:
        raise InputError('--megadb cosmos needs COSMOS_ENDPOINT (and COSMOS_KEY) set')
    if not key:
        raise InputError('a Cosmos DB MegaDB needs its key in COSMOS_KEY (or --cosmos-key)')
    kwargs: dict[str, Any] = {}
    host = endpoint.split('://', 1)[-1].split('/', 1)[0].split(':', 1)[0]
    if host in ('127.0.0.1', 'localhost'):
        kwargs['connection_verify'] = False   # a local emulator's self-signed certificate
    return CosmosMegaDB(endpoint, key, os.environ.get('COSMOS_DATABASE', DEFAULT_DATABASE),
                        **kwargs)
