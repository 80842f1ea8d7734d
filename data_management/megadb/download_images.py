r"""Download images of MegaDB datasets from their blob containers (or local roots).

Lists of images to fetch, each image named ``<dataset>/<path in the dataset>``:
- ``txt``: one name per line (e.g. identify_mislabeled_candidates output);
- ``json``: a queried_images.json (names are its keys), a JSON list of names,
  or a JSON list of objects whose --key field holds the name (and whose
  --save-key field, when present, the file name to save it as).

Each dataset's container URL and SAS key come from its MegaDB entry
(``storage_account``, ``container``, ``container_sas_key``, ``path_prefix``);
a dataset with a local ``images_root`` is copied from there instead. Images are
saved as ``<store_dir>/<dataset>/<path>``. With --only-new-images, images already
in store_dir (or in --check-existing-dir) are skipped. Failures are logged to
``<store_dir>/download_images_log_<time>.json`` and the run goes on.

Example:
    python -m data_management.megadb.download_images txt \
        mislabeled_candidates_test_caltech.txt /data/review --megadb megadb.sqlite \
        --threads 16 --only-new-images
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from classification import utils
from data_management.megadb.base import (
    add_megadb_flags,
    open_megadb,
)
from data_management.megadb.downloads import download, read_list

logger = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = utils.make_parser(__doc__)
    parser.add_argument('type', choices=['json', 'txt'], help='kind of list')
    parser.add_argument('file_list_json', help="the list of images, or '-'")
    parser.add_argument('store_dir', help='where to save the images')
    parser.add_argument('-s', '--save-key', default='download_id',
                        help='json objects: field with the name to save as (default: '
                             'download_id)')
    parser.add_argument('-k', '--key', default='file',
                        help='json objects: field with <dataset>/<path> (default: file)')
    parser.add_argument('--only-new-images', action='store_true',
                        help='skip images already in store_dir (or --check-existing-dir)')
    parser.add_argument('-t', '--threads', type=utils.positive_int, default=1)
    parser.add_argument('--check-existing-dir', help='another folder of already fetched images')
    add_megadb_flags(parser, 'MegaDB with the dataset entries')
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    utils.setup_logging()
    items = read_list(args.type, args.file_list_json, args.key, args.save_key)
    with open_megadb(args.megadb, args.cosmos_key, must_exist=True) as db:
        datasets = db.get_datasets()
    report = download(items, args.store_dir, datasets, args.threads, args.only_new_images,
                      args.check_existing_dir)
    counts = {k: v for k, v in report.items() if k != 'failures'}
    log = utils.write_failure_log(args.store_dir, 'download_images', counts,
                                  {f['file']: f['reason'] for f in report['failures']})
    logger.info('%d images: %d fetched, %d already there, %d failed; log: %s',
                report['requested'], report['downloaded'], report['skipped_existing'],
                len(report['failures']), log)
    return 0


if __name__ == '__main__':
    raise SystemExit(utils.run_cli(main))
