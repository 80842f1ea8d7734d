r"""Import a dataset into the labeled-image database (MegaDB).

Reads COCO Camera Traps JSON (the format of the public LILA datasets) or a JSON
list of MegaDB sequence documents, validates every record, and replaces the
dataset's sequences in the database (re-importing never duplicates rows). The
dataset entry records where its images live: a local folder, or a blob
container (with SAS key and path prefix). --dataset-entries imports only
dataset entries: a JSON list of {"dataset_name", "storage_account",
"container", "container_sas_key", "path_prefix", "images_root"} objects
(``storage_account`` may also be an account endpoint URL, e.g. an emulator's).

Example:
    python -m data_management.megadb.import_dataset megadb.sqlite \
        --dataset caltech --coco caltech_camera_traps.json \
        --images-root /data/images/caltech
    python -m data_management.megadb.import_dataset megadb.sqlite \
        --dataset-entries datasets.json

Prints one summary line on stderr: sequences and images imported.
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from classification import utils
from data_management.megadb.base import add_cosmos_key_flag, open_megadb
from data_management.megadb.importers import coco_to_sequences
from data_management.megadb.schema import check_dataset_doc, check_sequence_doc

logger = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = utils.make_parser(__doc__)
    parser.add_argument('megadb', help='MegaDB: an SQLite file (created if missing), or Azure '
                                       'Cosmos DB as "cosmos" or its https:// endpoint '
                                       '(key in COSMOS_KEY)')
    add_cosmos_key_flag(parser)
    parser.add_argument('--dataset', help='dataset name (with --coco or --sequences)')
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument('--coco', help="COCO Camera Traps JSON file, or '-'")
    src.add_argument('--sequences', help="JSON list of MegaDB sequence documents, or '-'")
    src.add_argument('--dataset-entries', help="JSON list of dataset entries, or '-'")
    parser.add_argument('--images-root', help='local folder that holds the dataset images')
    parser.add_argument('--storage-account', help='Azure storage account of the images')
    parser.add_argument('--container', help='blob container of the images')
    parser.add_argument('--path-prefix', help='prefix of the image blobs in the container')
    parser.add_argument('--container-sas-key', help='SAS token for the container (kept secret)')
    args = parser.parse_args(argv)
    if args.dataset is None and not args.dataset_entries:
        parser.error('--coco and --sequences need --dataset')
    return args


def import_entries(db_uri: str, path: str, cosmos_key: str | None = None) -> int:
    """Adds or replaces every dataset entry of a JSON list; returns how many."""
    raw = utils.read_json(path)
    if not isinstance(raw, list):
        raise utils.InputError(f'{path}: expected a JSON list of dataset entries')
    entries = [check_dataset_doc(e, f'{path}: [{i}]') for i, e in enumerate(raw)]
    with open_megadb(db_uri, cosmos_key) as db:
        for e in entries:
            db.upsert_dataset(e)
    return len(entries)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    utils.setup_logging()
    if args.dataset_entries:
        n = import_entries(args.megadb, args.dataset_entries, args.cosmos_key)
        logger.info('imported %d dataset entries into %s', n, args.megadb)
        return 0
    entry = check_dataset_doc({
        'dataset_name': args.dataset, 'images_root': args.images_root,
        'storage_account': args.storage_account, 'container': args.container,
        'path_prefix': args.path_prefix, 'container_sas_key': args.container_sas_key,
    }, 'dataset entry')
    if args.coco:
        docs = coco_to_sequences(utils.read_json(args.coco), args.dataset, args.coco)
    else:
        raw = utils.read_json(args.sequences)
        if not isinstance(raw, list):
            raise utils.InputError(f'{args.sequences}: expected a JSON list of sequences')
        docs = [check_sequence_doc(d, f'{args.sequences}: [{i}]') for i, d in enumerate(raw)]
        for i, d in enumerate(docs):
            if d['dataset'] != args.dataset:
                raise utils.InputError(f'{args.sequences}: [{i}]: dataset {d["dataset"]!r} is '
                                       f'not --dataset {args.dataset!r}')
    with open_megadb(args.megadb, args.cosmos_key) as db:
        db.upsert_dataset(entry)
        n = db.replace_sequences(args.dataset, docs)
    n_images = sum(len(d['images']) for d in docs)
    logger.info('%s: imported %d sequences, %d images into %s', args.dataset, n, n_images,
                args.megadb)
    return 0


if __name__ == '__main__':
    raise SystemExit(utils.run_cli(main))
