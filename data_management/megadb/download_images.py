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
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from classification import utils
from data_management import azure_blob
from data_management.megadb.base import (
    DEFAULT_MEGADB,
    add_cosmos_key_flag,
    open_megadb,
)

logger = logging.getLogger(__name__)


def read_list(kind: str, path: str, key: str, save_key: str) -> list[tuple[str, str]]:
    """(image name, relative path to save as) pairs, in list order, without repeats."""
    items: list[tuple[str, str]] = []
    if kind == 'txt':
        with utils.open_input_text(path) as f:
            names = [line.strip() for line in f if line.strip()]
        items = [(n, n) for n in names]
    else:
        doc = utils.read_json(path)
        entries = list(doc) if isinstance(doc, Mapping) else doc
        if not isinstance(entries, list):
            raise utils.InputError(f'{path}: expected a JSON list or object')
        for i, e in enumerate(entries):
            if isinstance(e, str):
                items.append((e, e))
            elif isinstance(e, Mapping) and isinstance(e.get(key), str):
                save = e.get(save_key)
                items.append((e[key], save if isinstance(save, str) and save else e[key]))
            else:
                raise utils.InputError(f'{path}: entry {i} is neither a name nor an object with '
                                       f'a "{key}" string (see --key)')
    seen: set[str] = set()
    out = []
    for name, save in items:
        if '/' not in name:
            raise utils.InputError(f'{path}: {name!r} is not <dataset>/<path>')
        if name not in seen:
            seen.add(name)
            out.append((name, save))
    return out


def fetch_one(name: str, dest: Path, entry: Mapping[str, Any], containers: dict[str, Any]
              ) -> str | None:
    """Copies or downloads one image to dest (atomically); returns a failure reason or None."""
    dataset, rel = name.split('/', 1)
    prefix = str(entry.get('path_prefix') or '').strip('/')
    blob = f'{prefix}/{rel}' if prefix else rel
    try:
        if entry.get('images_root'):
            src = utils.safe_join(entry['images_root'], rel)
            with utils.atomic_path(dest) as tmp:
                shutil.copyfile(src, tmp)
            return None
        data = azure_blob.download_bytes(containers[dataset], blob)
    except FileNotFoundError:
        return 'not found in the local images root'
    except azure_blob.BlobNotFound:
        return 'blob not found'
    except Exception as e:  # AzureError and OS errors: log and go on
        return azure_blob.safe_error(e)
    with utils.atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return None


def download(items: Sequence[tuple[str, str]], store_dir: str, datasets: Mapping[str, Any],
             threads: int, only_new: bool, check_dir: str | None) -> dict[str, Any]:
    """Fetches every item; returns counts and failures."""
    failures: dict[str, str] = {}
    todo: list[tuple[str, Path]] = []
    skipped = 0
    containers: dict[str, Any] = {}
    for name, save in items:
        dataset = name.split('/', 1)[0]
        if dataset not in datasets:
            failures[name] = f'dataset {dataset} is not in the MegaDB'
            continue
        dest = utils.safe_join(store_dir, save)
        if only_new and (dest.exists() or (check_dir and utils.safe_join(check_dir, save)
                                           .exists())):
            skipped += 1
            continue
        entry = datasets[dataset]
        if not entry.get('images_root') and dataset not in containers:
            containers[dataset] = azure_blob.open_container(
                azure_blob.dataset_container_url(entry))
        todo.append((name, dest))
    with ThreadPoolExecutor(max(threads, 1)) as pool:
        results = pool.map(lambda t: fetch_one(t[0], t[1], datasets[t[0].split('/', 1)[0]],
                                               containers), todo)
        for (name, _), reason in zip(todo, results, strict=True):
            if reason is not None:
                failures[name] = reason
    fetched = sum(name not in failures for name, _ in todo)
    return {'requested': len(items), 'downloaded': fetched, 'skipped_existing': skipped,
            'failures': [{'image': k, 'reason': v} for k, v in sorted(failures.items())]}


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
    add_cosmos_key_flag(parser)
    parser.add_argument('-t', '--threads', type=utils.positive_int, default=1)
    parser.add_argument('--check-existing-dir', help='another folder of already fetched images')
    parser.add_argument('--megadb', default=os.environ.get('MEGADB', DEFAULT_MEGADB),
                        help='MegaDB with the dataset entries (default: $MEGADB or '
                             f'{DEFAULT_MEGADB})')
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    utils.setup_logging()
    items = read_list(args.type, args.file_list_json, args.key, args.save_key)
    with open_megadb(args.megadb, args.cosmos_key, must_exist=True) as db:
        datasets = db.get_datasets()
    report = download(items, args.store_dir, datasets, args.threads, args.only_new_images,
                      args.check_existing_dir)
    log = Path(args.store_dir) / f'download_images_log_{time.strftime("%Y%m%d_%H%M%S")}.json'
    utils.write_json(report, log, indent=1)
    logger.info('%d images: %d fetched, %d already there, %d failed; log: %s',
                report['requested'], report['downloaded'], report['skipped_existing'],
                len(report['failures']), log)
    return 0


if __name__ == '__main__':
    raise SystemExit(utils.run_cli(main))
