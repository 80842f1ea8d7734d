r"""Build the classification dataset CSV, the label index and location-based splits.

--mode csv: every crop on disk of an image in queried_images.json becomes one
row: crops of its ground-truth animal boxes with confidence 1.0 (its person
and vehicle boxes are left out), else detector crops (from the cache) whose
confidence is at least --threshold. Labels seen at fewer than --min-locs
locations are dropped.
--mode splits: assigns every (dataset, location) to train, val or test so
that each label's crops and locations are split close to --val-frac and
--test-frac. ``random`` scores --num-trials random assignments (seeded), a
chunk at a time with matrix products; ``smallest_first`` fills test, then
val, then train, starting from the rarest label and its smallest locations;
with --label-spec, a label's locations in the datasets its "prioritize" field
lists come first.

Example:
    python -m classification.create_classification_dataset run1 \
        --mode csv splits --queried-images-json run1/queried_images.json \
        --cropped-images-dir crops --detector-output-cache-dir mdcache \
        --detector-version 5a --threshold 0.8 --min-locs 3 \
        --val-frac 0.2 --test-frac 0.2 --method random

Writes into output_dir:
    classification_ds.csv   path, dataset, location, dataset_class, confidence, label
    label_index.json        {"0": "label_a", ...}, labels in sorted order
    splits.json             {"train": [[dataset, location], ...], "val": [...], "test": [...]}
    dataset_report/         with --mode splits (unless --no-report; --report DIR for
                            another folder): the dataset report, index.html with its
                            figures and sample crops (see classification/dataset_reports.py;
                            classification.dataset_report rewrites it or compares splits)
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from classification import dataset_reports, report_pages, split_files, utils
from classification.taxonomy import parse_label_spec
from detection.detector_output import DetectionCache, queried_image_crops, read_queried_images

logger = logging.getLogger(__name__)

SPLITS = split_files.SPLITS
CSV_NAME = 'classification_ds.csv'
CSV_COLUMNS = ['path', 'dataset', 'location', 'dataset_class', 'confidence', 'label']


def build_dataset_csv(queried: Mapping[str, Mapping[str, Any]], crops_dir: str,
                      cache_dir: str | None, version: str | None, threshold: float
                      ) -> pd.DataFrame:
    """One row per existing crop of a queried image."""
    rows: list[tuple[str, str, str, str, float, str]] = []
    cache = DetectionCache(cache_dir, version)
    crops_root = Path(crops_dir)
    for key in sorted(queried):
        entry = queried[key]
        label = ','.join(entry['label'])
        location = str(entry.get('location', 'unknown_location'))
        for crop, _, conf in queried_image_crops(key, entry, cache, threshold) or []:
            if (crops_root / crop).exists():
                rows.append((crop, entry['dataset'], location, str(entry['class']), conf, label))
    return pd.DataFrame(rows, columns=CSV_COLUMNS)


def drop_labels_with_few_locations(df: pd.DataFrame, min_locs: int) -> pd.DataFrame:
    """Removes rows whose label appears at fewer than ``min_locs`` (dataset, location)s."""
    n_locs = df.groupby('label')[['dataset', 'location']].apply(
        lambda g: len(g.drop_duplicates()))
    rare = sorted(n_locs[n_locs < min_locs].index)
    for label in rare:
        logger.warning('label %s dropped: %d locations < --min-locs %d', label,
                       n_locs[label], min_locs)
    return df[~df['label'].isin(rare)].reset_index(drop=True)


def label_list(df: pd.DataFrame) -> list[str]:
    """Sorted unique labels (a row may hold several, comma-separated)."""
    return sorted({lab for labels in df['label'] for lab in str(labels).split(',')})


# ---------------------------------------------------------------- splits

def _count_matrix(df: pd.DataFrame) -> tuple[list[tuple[str, str]], list[str], np.ndarray]:
    """(locations, labels, crops[location, label])."""
    exploded = df.assign(label=df['label'].astype(str).str.split(',')).explode('label')
    table = pd.crosstab([exploded['dataset'].astype(str), exploded['location'].astype(str)],
                        exploded['label'])
    locs = [(str(d), str(loc)) for d, loc in table.index]
    return locs, [str(c) for c in table.columns], table.to_numpy(dtype=np.float64)


def _score(assign: np.ndarray, counts: np.ndarray, fracs: np.ndarray) -> np.ndarray:
    """Score of each row of ``assign`` (trials x locations, values 0..2); lower is better.

    Sum over labels and splits of |achieved - wanted| fraction, for crops and
    for locations.

    The crops (and locations) of each label that a trial puts in val and in
    test come from one matrix product, (trials*2 x locations) one-hot rows
    against the locations x (crops, presence) table, which BLAS runs; train
    holds the rest. The sums are of whole numbers in float32, exact in any
    order while a label has fewer than 2**24 crops, so the scores are the same,
    bit for bit, as the straightforward einsum over trials x locations x splits.
    """
    n_trials, n_locs = assign.shape
    n_labels = counts.shape[1]
    presence = (counts > 0).astype(np.float64)
    table = np.hstack([counts, presence]).astype(np.float32)                # L x 2K
    held_out = (assign[:, None, :] == np.arange(1, 3)[None, :, None]).astype(np.float32)
    held = (held_out.reshape(n_trials * 2, n_locs) @ table).reshape(n_trials, 2, 2 * n_labels)
    train = table.sum(axis=0)[None, None, :] - held[:, :1] - held[:, 1:]
    per_split = np.concatenate([train, held], axis=1)                      # T x 3 x 2K
    score = np.zeros(n_trials)
    for j, mat in enumerate((counts, presence)):
        totals = mat.sum(axis=0)
        part = per_split[:, :, j * n_labels:(j + 1) * n_labels]                # T x 3 x K
        frac = part / np.maximum(totals, 1)[None, None, :]
        score += np.abs(frac - fracs[None, :, None]).sum(axis=(1, 2))
    return score


def _assignments(order: np.ndarray, n_test: int, n_val: int) -> np.ndarray:
    """Split of each location per trial (0 train, 1 val, 2 test) from ``order``
    (trials x locations, a permutation per row): the first ``n_test`` locations
    of a row go to test, the next ``n_val`` to val, the rest to train."""
    assign = np.zeros(order.shape, dtype=np.int64)
    np.put_along_axis(assign, order[:, :n_test], 2, axis=1)
    np.put_along_axis(assign, order[:, n_test:n_test + n_val], 1, axis=1)
    return assign


def split_random(df: pd.DataFrame, val_frac: float, test_frac: float, seed: int,
                 num_trials: int = 10_000, chunk: int = 1000) -> dict[str, list[list[str]]]:
    """Best of ``num_trials`` random location assignments, scored all at once per chunk."""
    locs, _, counts = _count_matrix(df)
    n = len(locs)
    n_test = int(round(test_frac * n)) if test_frac > 0 else 0
    n_val = int(round(val_frac * n)) if val_frac > 0 else 0
    if test_frac > 0:
        n_test = max(n_test, 1)
    if val_frac > 0:
        n_val = max(n_val, 1)
    if n_test + n_val >= n:
        raise utils.InputError(f'{n} locations cannot give {n_val} val and {n_test} test '
                               'locations and leave any for train; lower the fractions')
    fracs = np.array([1 - val_frac - test_frac, val_frac, test_frac])
    rng = np.random.default_rng(seed)
    best_score, best = np.inf, np.zeros(n, dtype=np.int64)
    for start in range(0, num_trials, chunk):
        t = min(chunk, num_trials - start)
        assign = _assignments(np.argsort(rng.random((t, n)), axis=1), n_test, n_val)
        scores = _score(assign, counts, fracs)
        i = int(np.argmin(scores))
        if scores[i] < best_score:
            best_score, best = float(scores[i]), assign[i]
    logger.info('random split: best score %.3f of %d trials', best_score, num_trials)
    return _to_splits(locs, best)


def split_smallest_first(df: pd.DataFrame, val_frac: float, test_frac: float,
                         prioritize: Mapping[str, Sequence[Sequence[str]]] | None = None
                         ) -> dict[str, list[list[str]]]:
    """Rarest label first: its smallest unassigned locations go to test, then val,
    until each holds its share of that label's crops; the rest go to train.

    ``prioritize`` ({label: [[datasets of tier 1], [tier 2], ...]}, the label
    specification's field) puts a label's locations from tier-1 datasets first,
    then tier 2, ..., then the other datasets, each group smallest first; so
    the test set is filled from the preferred datasets.
    """
    locs, labels, counts = _count_matrix(df)
    prioritize = prioritize or {}
    assign = np.full(len(locs), -1)
    for k in np.argsort(counts.sum(axis=0), kind='stable'):
        total = counts[:, k].sum()
        want = {2: test_frac * total, 1: val_frac * total}
        have = {s: counts[assign == s, k].sum() for s in (1, 2)}
        tiers = prioritize.get(labels[k], ())
        tier_of = {ds: t for t in range(len(tiers) - 1, -1, -1) for ds in tiers[t]}
        order = sorted((int(i) for i in np.flatnonzero(counts[:, k] > 0)),
                       key=lambda i: (tier_of.get(locs[i][0], len(tiers)), counts[i, k], i))
        for i in order:
            if assign[i] != -1:
                continue
            for s in (2, 1):
                if want[s] > 0 and have[s] < want[s]:
                    assign[i] = s
                    have[s] += counts[i, k]
                    break
            else:
                assign[i] = 0
    assign[assign == -1] = 0
    return _to_splits(locs, assign)


def _to_splits(locs: Sequence[tuple[str, str]], assign: np.ndarray) -> dict[str, list[list[str]]]:
    return {name: [list(loc) for loc, a in zip(locs, assign, strict=True) if a == s]
            for s, name in enumerate(SPLITS)}


def split_summary(df: pd.DataFrame, splits: Mapping[str, list[list[str]]]) -> pd.DataFrame:
    """Crops per label and split (for the log)."""
    where = {(d, str(loc)): s for s, locs in splits.items() for d, loc in locs}
    split_col = [where.get((d, str(loc)), 'none')
                 for d, loc in zip(df['dataset'], df['location'], strict=True)]
    return pd.crosstab(df['label'], pd.Series(split_col, name='split', index=df.index))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = utils.make_parser(__doc__)
    parser.add_argument('output_dir', help='folder for the dataset files (BASE_LOGDIR)')
    parser.add_argument('--mode', nargs='+', choices=['csv', 'splits'], default=['csv', 'splits'],
                        help='what to make (default: both)')
    parser.add_argument('--match-test', nargs=2, metavar=('CLASSIFICATION_CSV', 'SPLITS_JSON'),
                        help='reuse the test set of an earlier dataset: append its crops '
                             'from test locations and copy its test split')
    parser.add_argument('-q', '--queried-images-json', help='json_validator output')
    parser.add_argument('-c', '--cropped-images-dir', help='folder with the crops')
    parser.add_argument('-d', '--detector-output-cache-dir', help='detector output cache')
    parser.add_argument('-v', '--detector-version', help='MegaDetector version, e.g. 5a')
    parser.add_argument('-t', '--threshold', type=utils.probability, default=0.8,
                        help='minimum detection confidence of a crop (default: 0.8)')
    parser.add_argument('--min-locs', type=utils.positive_int,
                        help='drop labels seen at fewer locations')
    parser.add_argument('--val-frac', type=utils.probability, help='fraction for val')
    parser.add_argument('--test-frac', type=utils.probability,
                        help='fraction for test (not with --match-test; default 0)')
    parser.add_argument('--method', choices=['random', 'smallest_first'], default='random',
                        help='split heuristic (default: random)')
    parser.add_argument('--num-trials', type=utils.positive_int, default=10_000,
                        help='random assignments scored by --method random (default: 10000)')
    parser.add_argument('--label-spec',
                        help='label specification JSON: with --method smallest_first, fill '
                             'the test (then val) set first from the datasets its '
                             '"prioritize" field lists for each label')
    parser.add_argument('--seed', type=utils.nonneg_int, default=123,
                        help='random seed for --method random (default: 123)')
    parser.add_argument('--report', metavar='DIR',
                        help='the dataset report folder written with --mode splits '
                             '(default: output_dir/dataset_report)')
    parser.add_argument('--no-report', action='store_true',
                        help='write no dataset report')
    args = parser.parse_args(argv)
    if args.report and args.no_report:
        parser.error('--report and --no-report cannot be used together')
    if args.report and 'splits' not in args.mode:
        parser.error('--report needs --mode splits (the report shows the splits)')
    if 'csv' in args.mode:
        if not args.queried_images_json or not args.cropped_images_dir:
            parser.error('--mode csv needs --queried-images-json and --cropped-images-dir')
        if (args.detector_output_cache_dir is None) != (args.detector_version is None):
            parser.error('--detector-output-cache-dir and --detector-version go together')
    if 'splits' in args.mode:
        if args.val_frac is None:
            parser.error('--mode splits needs --val-frac')
        if args.match_test and args.test_frac is not None:
            parser.error('--match-test and --test-frac cannot be used together')
        if args.val_frac + (args.test_frac or 0) >= 1:
            parser.error('--val-frac + --test-frac must be below 1')
        if args.label_spec and args.method != 'smallest_first':
            parser.error('--label-spec needs --method smallest_first')
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    utils.setup_logging()
    out = Path(args.output_dir)
    csv_path = out / CSV_NAME
    report_dir = None
    if 'splits' in args.mode and not args.no_report:
        report_dir = report_pages.check_report_dir(
            args.report or out / dataset_reports.REPORT_DIR_NAME, report_pages.DATASET)
        here = report_dir.resolve()
        if here == out.resolve() or here in out.resolve().parents:
            raise utils.InputError(f'{report_dir}: the report folder cannot be the output '
                                   'folder or hold it (it is replaced whole)')
    # everything is read and checked first and written at the end, so a run that
    # fails leaves the outputs of the last good run as they were
    test_locs: list[tuple[str, str]] = []
    if args.match_test:
        test_locs = split_files.read_splits(Path(args.match_test[1])).get('test', [])
    writes: list[Callable[[], object]] = []
    if 'csv' in args.mode:
        if args.detector_version is not None:
            utils.check_detector_version(args.detector_version)
        queried = read_queried_images(args.queried_images_json)
        df = build_dataset_csv(queried, args.cropped_images_dir, args.detector_output_cache_dir,
                               args.detector_version, args.threshold)
        if args.min_locs:
            df = drop_labels_with_few_locations(df, args.min_locs)
        if args.match_test:
            old = utils.read_csv(args.match_test[0], dtype={'location': str, 'dataset': str})
            lacking = [c for c in CSV_COLUMNS if c not in old.columns]
            if lacking:
                raise utils.InputError(f'{args.match_test[0]}: missing columns {lacking}')
            test = set(test_locs)
            keep = [(d, str(loc)) in test for d, loc in zip(old['dataset'], old['location'],
                                                            strict=True)]
            df = pd.concat([df, old.loc[keep, CSV_COLUMNS]], ignore_index=True)
            df = df.drop_duplicates('path', keep='first').reset_index(drop=True)
        if df.empty:
            raise utils.InputError('no crops found for the queried images in '
                                   f'{args.cropped_images_dir} (did detect_and_crop run?)')
        labels = label_list(df)
        table = df
        writes += [lambda: utils.write_csv(table, csv_path),
                   lambda: utils.write_json(utils.label_index_dict(labels),
                                            out / 'label_index.json', indent=1),
                   lambda: logger.info('wrote %d crops of %d labels to %s', len(table),
                                       len(labels), csv_path)]
    if 'splits' in args.mode:
        if 'csv' not in args.mode:      # else the table just written is still in df
            df = utils.read_csv(csv_path, dtype={'location': str, 'dataset': str})
            lacking = [c for c in CSV_COLUMNS if c not in df.columns]
            if lacking or df.empty:
                raise utils.InputError(f'{csv_path}: ' + (f'missing columns {lacking}'
                                                          if lacking else 'no crops'))
        prioritize = None
        if args.label_spec:
            specs = parse_label_spec(utils.read_json(args.label_spec), args.label_spec)
            prioritize = {label: spec.prioritize for label, spec in specs.items()}
        if args.match_test:
            test_set = set(test_locs)
            in_test = [(d, str(loc)) in test_set
                       for d, loc in zip(df['dataset'], df['location'], strict=True)]
            rest = df[[not t for t in in_test]]
            val_frac = args.val_frac / max(1e-9, 1 - len(df[in_test]) / len(df))
            if args.method == 'random':
                splits = split_random(rest, min(val_frac, 0.99), 0.0, args.seed,
                                      args.num_trials)
            else:
                splits = split_smallest_first(rest, args.val_frac, 0.0, prioritize)
            splits['test'] = [[d, str(loc)] for d, loc in test_locs]
        elif args.method == 'random':
            splits = split_random(df, args.val_frac, args.test_frac or 0.0, args.seed,
                                  args.num_trials)
        else:
            splits = split_smallest_first(df, args.val_frac, args.test_frac or 0.0,
                                          prioritize)
        summary = split_summary(df, splits).to_string()
        writes += [lambda: utils.write_json(splits, out / 'splits.json', indent=1),
                   lambda: logger.info('crops per label and split:\n%s', summary)]
        if report_dir is not None:
            content = dataset_reports.summarize(
                df, None, {s: [(d, loc) for d, loc in locs] for s, locs in splits.items()})
            folder = report_dir
            # the report first: the part more likely to fail, before any file changes
            writes.insert(0, lambda: dataset_reports.write_dataset_report(
                folder, content, args.cropped_images_dir))
    for write in writes:
        write()
    return 0


if __name__ == '__main__':
    raise SystemExit(utils.run_cli(main))
