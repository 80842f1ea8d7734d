r"""Validate a label specification and query MegaDB for the matching images.

Checks every taxon and dataset label of the specification against the
taxonomy CSV (and that no dataset label is claimed by two output labels,
unless --allow-multilabel), then queries the labeled-image database (an
SQLite file by default) for images whose dataset class maps to an output
label. An image-level class overrides the sequence-level one; only images
with exactly one class are used.

Example:
    python -m classification.json_validator label_spec.json taxonomy.csv \
        --megadb megadb.sqlite --output-dir run1 --json-indent 1

Writes under --output-dir:
    queried_images.json           {"<dataset>/<file>": {"dataset", "location",
                                   "class", "bbox"?, "label": [...]}}
    included_dataset_labels.txt   which dataset labels each output label took
    json_validator_log_<time>.json  with --check-blob-exists: images without a blob
Without --output-dir the specification is only validated.
"""
from __future__ import annotations

import argparse
import logging
import os
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from classification import utils
from classification.taxonomy import (
    LabelSpec,
    dataset_label_to_outputs,
    load_taxonomy_csv,
    parse_label_spec,
    resolve_label_spec,
)
from data_management.megadb.base import (
    MegaDB,
    add_megadb_flags,
    open_megadb,
    single_class_images,
)

logger = logging.getLogger(__name__)


def load_mislabeled(folder: str | os.PathLike[str] | None, dataset: str) -> dict[str, str | None]:
    """``<folder>/<dataset>.csv`` (columns file, correct_class) as {file: class or None}."""
    if folder is None:
        return {}
    path = Path(folder) / f'{dataset}.csv'
    if not path.exists():
        return {}
    df = utils.read_csv(path, dtype=str, keep_default_na=False)
    if 'file' not in df.columns:
        raise utils.InputError(f'{path}: mislabeled-images CSV needs a "file" column')
    correct = df['correct_class'] if 'correct_class' in df.columns else pd.Series(
        [''] * len(df), dtype=str)
    def said(cls: str | None) -> str:
        return repr(cls) if cls else 'none (drop the image)'

    out: dict[str, str | None] = {}
    for row, (f, c) in enumerate(zip(df['file'], correct, strict=True)):
        cls = c.strip().lower() or None
        if f in out and out[f] != cls:
            raise utils.InputError(
                f'{path}: row {row + 2}: image {f!r} is listed again with another '
                f'correct_class, {said(cls)} after {said(out[f])}; keep one row for it')
        out[f] = cls
    return out


def query_images(db: MegaDB, ds_to_labels: Mapping[str, Mapping[str, list[str]]],
                 mislabeled_dir: str | None = None) -> dict[str, dict[str, Any]]:
    """The queried-images dict, keyed by ``<dataset>/<path prefix>/<file>``, sorted."""
    out: dict[str, dict[str, Any]] = {}
    for ds, dataset, images in single_class_images(db, ds_to_labels):
        wanted = ds_to_labels[ds]
        prefix = dataset.get('path_prefix', '').strip('/')
        mislabeled = load_mislabeled(mislabeled_dir, ds)
        n_removed = n_corrected = 0
        for seq, img, cls in images:
            file = f'{prefix}/{img["file"]}' if prefix else img['file']
            if file in mislabeled:
                new = mislabeled[file]
                if new is None or new not in wanted:
                    n_removed += 1
                    continue
                cls, n_corrected = new, n_corrected + 1
            if cls not in wanted:
                continue
            entry: dict[str, Any] = {'dataset': ds,
                                     'location': seq.get('location', 'unknown_location'),
                                     'class': cls}
            if img.get('bbox'):
                entry['bbox'] = img['bbox']
            entry['label'] = sorted(wanted[cls])
            out[f'{ds}/{file}'] = entry
        if mislabeled:
            logger.info('%s: removed %d and corrected %d mislabeled images', ds, n_removed,
                        n_corrected)
    return {k: out[k] for k in sorted(out)}


def remove_missing_images(images: Mapping[str, dict[str, Any]],
                          datasets: Mapping[str, Mapping[str, Any]], local_dir: str | None,
                          threads: int = 16) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Keeps the images whose blob exists in their dataset's container (looking in
    ``<local_dir>/<dataset>/<file>`` first when given); returns (kept, missing)."""
    from concurrent.futures import ThreadPoolExecutor

    from data_management import azure_blob
    containers: dict[str, Any] = {}
    for ds in sorted({e['dataset'] for e in images.values()}):
        containers[ds] = azure_blob.open_container(
            azure_blob.dataset_container_url(dict(datasets.get(ds, {'dataset_name': ds}))))

    def exists(key: str) -> bool:
        ds, file = key.split('/', 1)
        if local_dir is not None and utils.safe_join(local_dir, key).exists():
            return True
        try:
            return azure_blob.blob_exists(containers[ds], file)
        except Exception as e:  # AzureError, network: count as missing, say why
            logger.warning('%s: cannot check the blob (%s)', key, azure_blob.safe_error(e))
            return False

    keys = sorted(images)
    with ThreadPoolExecutor(threads) as pool:
        found = list(pool.map(exists, keys))
    missing = [k for k, ok in zip(keys, found, strict=True) if not ok]
    return {k: images[k] for k, ok in zip(keys, found, strict=True) if ok}, missing


def sample_max_count(images: Mapping[str, dict[str, Any]], specs: Mapping[str, LabelSpec],
                     seed: int) -> dict[str, dict[str, Any]]:
    """Keeps at most ``max_count`` images per label, drawing first from the
    ``prioritize`` tiers in order, then from all datasets. Deterministic for a seed."""
    rng = random.Random(seed)
    keep: set[str] = set()
    by_label: dict[str, list[str]] = {}
    for path, entry in images.items():
        for label in entry['label']:
            by_label.setdefault(label, []).append(path)
    for label, spec in specs.items():
        paths = by_label.get(label, [])
        if spec.max_count is None:
            keep.update(paths)
            continue
        quota = spec.max_count
        tiers: list[tuple[str, ...] | None] = [*spec.prioritize, None]
        for tier in tiers:
            pool = [p for p in paths if tier is None or images[p]['dataset'] in tier]
            quota -= sum(p in keep for p in pool)
            pool = sorted(p for p in pool if p not in keep)
            take = max(0, min(quota, len(pool)))
            keep.update(rng.sample(pool, take))
            quota -= take
            if quota <= 0:
                break
    return {k: images[k] for k in sorted(keep)}


def drop_rare_labels(images: Mapping[str, dict[str, Any]], min_locs: int
                     ) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Removes labels seen at fewer than ``min_locs`` (dataset, location) pairs."""
    locs: dict[str, set[tuple[str, str]]] = {}
    for entry in images.values():
        for label in entry['label']:
            locs.setdefault(label, set()).add((entry['dataset'], str(entry['location'])))
    rare = sorted(lab for lab, s in locs.items() if len(s) < min_locs)
    out = {}
    for path, entry in images.items():
        labels = [lab for lab in entry['label'] if lab not in rare]
        if labels:
            out[path] = {**entry, 'label': labels}
    return out, rare


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = utils.make_parser(__doc__)
    parser.add_argument('label_spec_json', help="label specification JSON, or '-'")
    parser.add_argument('taxonomy_csv', help='taxonomy CSV')
    add_megadb_flags(parser)
    parser.add_argument('--allow-multilabel', action='store_true',
                        help='allow a dataset label in several output labels')
    parser.add_argument('--single-parent-taxonomy', action='store_true',
                        help='give each taxon one parent: the one it has in the most rows of '
                             'the taxonomy CSV (ties: the first by level and name)')
    parser.add_argument('-c', '--check-blob-exists', nargs='?', const=True,
                        help='drop queried images whose blob is not in the dataset container; '
                             'optionally a local folder (<folder>/<dataset>/<file>) to look in '
                             'first')
    parser.add_argument('--min-locs', type=utils.positive_int,
                        help='drop labels whose images come from fewer locations')
    parser.add_argument('-o', '--output-dir',
                        help='write queried_images.json here (else only validate)')
    parser.add_argument('--json-indent', type=utils.nonneg_int,
                        help='indent JSON output by this many spaces')
    parser.add_argument('--seed', type=int, default=123,
                        help='seed for max_count sampling (default: 123)')
    parser.add_argument('-m', '--mislabeled-images',
                        help='folder of <dataset>.csv files (file, correct_class) of known '
                             'mislabeled images: dropped, or relabeled when correct_class set')
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    utils.setup_logging()
    specs = parse_label_spec(utils.read_json(args.label_spec_json, unique_keys=True),
                             args.label_spec_json)
    taxonomy = load_taxonomy_csv(args.taxonomy_csv, single_parent=args.single_parent_taxonomy)
    resolved = resolve_label_spec(specs, taxonomy, allow_multilabel=args.allow_multilabel)
    for label in sorted(resolved):
        logger.info('label %s: %d dataset labels', label, len(resolved[label]))
    if args.output_dir is None:
        logger.info('label specification is valid (no --output-dir: nothing queried)')
        return 0
    if args.mislabeled_images and not Path(args.mislabeled_images).is_dir():
        raise utils.InputError(f'--mislabeled-images {args.mislabeled_images}: not a folder')
    ds_to_labels = dataset_label_to_outputs(resolved)
    with open_megadb(args.megadb, args.cosmos_key, must_exist=True) as db:
        images = query_images(db, ds_to_labels, args.mislabeled_images)
        datasets = db.get_datasets()
    out = Path(args.output_dir)
    if args.check_blob_exists:
        local = None if args.check_blob_exists is True else str(args.check_blob_exists)
        images, missing = remove_missing_images(images, datasets, local)
        logger.info('%d queried images have no blob and were dropped', len(missing))
        if missing:
            log = utils.new_log_path(out, 'json_validator')
            utils.write_json({'nonexistent_images': missing}, log, indent=1)
    if args.min_locs:
        images, rare = drop_rare_labels(images, args.min_locs)
        for label in rare:
            logger.warning('label %s dropped: fewer than %d locations', label, args.min_locs)
    images = sample_max_count(images, specs, args.seed)
    utils.write_json(images, out / 'queried_images.json', indent=args.json_indent)
    lines = []
    for label in sorted(resolved):
        lines.append(f'{label}:')
        lines.extend(f'  {ds}|{dl}' for ds, dl in sorted(resolved[label]))
    utils.write_text('\n'.join(lines) + '\n', out / 'included_dataset_labels.txt')
    counts = Counter(lab for e in images.values() for lab in e['label'])
    for label in sorted(specs):
        logger.info('%s: %d images', label, counts.get(label, 0))
    logger.info('wrote %d images to %s', len(images), out / 'queried_images.json')
    return 0


if __name__ == '__main__':
    raise SystemExit(utils.run_cli(main))
