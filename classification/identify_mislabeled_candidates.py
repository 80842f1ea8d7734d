r"""List the images whose crops the classifier confidently puts in another class.

Reads ``<logdir>/outputs_<split>.csv.gz`` (written by train_classifier and
evaluate_model: ``path``, ``label``, ``weight`` and one probability column per
class). A crop is a candidate when the top predicted class beats the crop's
label by at least --margin: max_c p(c) - p(label) >= margin. Its source image
(the crop path without the ``___cropNN...`` part) goes to
``<logdir>/mislabeled_candidates_<split>_<dataset>.txt``, one path per line,
sorted and without repeats; the dataset is the first folder of the crop path.
Paths are relative to the dataset's container (for ``azcopy --list-of-files``),
or with --include-dataset-in-filename start with ``<dataset>/`` (for
data_management/megadb/download_images ``txt``).

Example:
    python -m classification.identify_mislabeled_candidates $BASE_LOGDIR/$LOGDIR \
        --margin 0.95 --splits test --include-dataset-in-filename
    python -m data_management.megadb.download_images txt \
        $BASE_LOGDIR/$LOGDIR/mislabeled_candidates_test_<dataset>.txt review_images
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from classification import utils
from classification.classifier_output import check_probabilities

logger = logging.getLogger(__name__)

SPLITS = ('train', 'val', 'test')
META_COLUMNS = ('path', 'label', 'weight')


def margins(df: pd.DataFrame, source: str) -> np.ndarray:
    """max over classes of p(class) - p(label), per row of an outputs table."""
    for name in ('path', 'label'):
        if name not in df.columns:
            raise utils.InputError(f'{source}: no "{name}" column')
    df = check_probabilities(df, source)   # each a number from 0 to 1, each crop once
    classes = [c for c in df.columns if c not in META_COLUMNS]
    label_col = pd.Index(classes).get_indexer(pd.Index(df['label'].astype(str)))
    if (label_col < 0).any():
        row = int(np.flatnonzero(label_col < 0)[0])
        raise utils.InputError(f'{source}: row {row + 2}: label {df["label"].iloc[row]!r} '
                               'has no probability column')
    try:
        probs = df[classes].to_numpy(dtype=np.float64)
    except ValueError as e:
        raise utils.InputError(f'{source}: probability columns must be numbers ({e})') from e
    return probs.max(axis=1) - probs[np.arange(len(df)), label_col]


def candidates(df: pd.DataFrame, margin: float, include_dataset: bool,
               source: str) -> dict[str, list[str]]:
    """{dataset: sorted unique image paths} of the crops at or above the margin."""
    out: dict[str, set[str]] = {}
    chosen = df['path'][margins(df, source) >= margin]
    for crop in chosen.astype(str):
        try:
            image = utils.parse_crop_filename(crop)[0]
        except utils.InputError as e:
            raise utils.InputError(f'{source}: {e}') from e
        try:
            utils.safe_join('<crops folder>', image)
        except utils.InputError as e:
            raise utils.InputError(f'{source}: crop {crop!r}: {e}') from e
        dataset, sep, rest = image.partition('/')
        if not sep or not rest:
            raise utils.InputError(f'{source}: crop {crop!r} is not under a <dataset>/ folder')
        out.setdefault(dataset, set()).add(image if include_dataset else rest)
    return {ds: sorted(files) for ds, files in sorted(out.items())}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = utils.make_parser(__doc__)
    parser.add_argument('logdir', help='training run folder with outputs_<split>.csv.gz')
    parser.add_argument('--margin', type=utils.probability, default=0.5,
                        help='how far the top class must beat the label (default: 0.5)')
    parser.add_argument('--splits', nargs='+', choices=SPLITS,
                        help='splits to look at (default: each with an outputs file)')
    parser.add_argument('-d', '--include-dataset-in-filename', action='store_true',
                        help='start each path with <dataset>/ (for download_images)')
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    utils.setup_logging()
    logdir = Path(args.logdir)
    if not logdir.is_dir():
        raise utils.InputError(f'{logdir}: folder not found')
    splits = args.splits or [s for s in SPLITS if (logdir / f'outputs_{s}.csv.gz').is_file()]
    if not splits:
        raise utils.InputError(f'{logdir}: no outputs_<split>.csv.gz (run evaluate_model)')
    # every split is read and checked before any list is written
    outputs: list[tuple[str, Path, list[str]]] = []
    for split in splits:
        source = str(logdir / f'outputs_{split}.csv.gz')
        df = utils.read_csv(source, dtype={'path': str, 'label': str})
        lists = candidates(df, args.margin, args.include_dataset_in_filename, source)
        for dataset, files in lists.items():
            try:
                path = utils.safe_join(logdir, f'mislabeled_candidates_{split}_{dataset}.txt')
            except utils.InputError as e:
                raise utils.InputError(f'{source}: dataset folder {dataset!r} cannot name a '
                                       f'file ({e})') from e
            outputs.append((split, path, files))
        if not lists:
            logger.info('%s: no crop beats its label by %.2f or more', split, args.margin)
    for split, path, files in outputs:
        utils.write_lines(files, path)
        logger.info('%s: %d candidate images -> %s', split, len(files), path)
    return 0


if __name__ == '__main__':
    raise SystemExit(utils.run_cli(main))
