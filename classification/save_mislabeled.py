r"""Merge a Timelapse export of reviewed images into the known-mislabeled lists.

Reads the CSV that Timelapse exports (columns ``File``, ``RelativePath``, a
``mislabeled`` flag and a ``correct_class`` note; the first folder of
``RelativePath`` is the dataset) and updates
``<container_path>/megadb_mislabeled/<dataset>.csv`` (columns ``file``,
``correct_class``), the files json_validator --mislabeled-images reads. Earlier
entries are kept; an image reviewed again gets its new correct_class. The
``mislabeled`` flag must be a yes/no value (true/false, yes/no, y/n, t/f, 1/0) or
empty; an image flagged twice with different classes, and a path that is absolute
or leaves its folder, are refused, and then no list is written.

Example:
    python -m classification.save_mislabeled /path/to/classifier-training \
        mislabeled_images.csv
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from classification import utils

logger = logging.getLogger(__name__)

TRUE_VALUES = {'true', '1', 'yes', 'y', 't'}
FALSE_VALUES = {'false', '0', 'no', 'n', 'f', ''}
LIST_COLUMNS = ('file', 'correct_class')


def _flag(value: str, where: str) -> bool:
    text = value.strip().lower()
    if text in TRUE_VALUES:
        return True
    if text in FALSE_VALUES:
        return False
    raise utils.InputError(f'{where}: mislabeled {value!r} is not a yes/no value (one of '
                           f'{", ".join(sorted(TRUE_VALUES | FALSE_VALUES - {""}))} or empty)')


def reviewed_to_mislabeled(df: pd.DataFrame, source: str) -> dict[str, pd.DataFrame]:
    """{dataset: DataFrame(file, correct_class)} of the rows flagged mislabeled.

    Refuses (InputError naming the row) a mislabeled value that is not yes/no, a
    RelativePath or File that is absolute, leaves its folder (``..``) or holds a
    control character, and an image flagged twice with different classes."""
    missing = [c for c in ('File', 'RelativePath', 'mislabeled') if c not in df.columns]
    if missing:
        raise utils.InputError(f'{source}: Timelapse CSV lacks column(s) {missing}')
    correct = (df['correct_class'] if 'correct_class' in df.columns
               else pd.Series('', index=df.index))
    out: dict[str, dict[str, str]] = {}
    for row, (rel, file, flag, cls) in enumerate(zip(
            df['RelativePath'].astype(str), df['File'].astype(str), df['mislabeled'].astype(str),
            correct.fillna('').astype(str), strict=True)):
        where = f'{source}: row {row + 2} ({file!r})'
        if not _flag(flag, where):
            continue
        if not rel.strip('/\\. '):
            raise utils.InputError(f'{where}: RelativePath must start with the dataset folder')
        try:
            folders = utils.safe_join('<reviewed images>', rel).parts[1:]
            name = utils.safe_join('<dataset folder>', file).parts[1:]
        except utils.InputError as e:
            raise utils.InputError(f'{where}: {e}') from e
        dataset, path = folders[0], '/'.join([*folders[1:], *name])
        cls = cls.strip()
        listed = out.setdefault(dataset, {})
        if path in listed and listed[path].lower() != cls.lower():
            raise utils.InputError(f'{where}: image {dataset}/{path} is flagged again with '
                                   f'another correct_class ({cls!r} after {listed[path]!r}); '
                                   'keep one row for it')
        listed[path] = cls
    return {ds: pd.DataFrame(sorted(rows.items()), columns=list(LIST_COLUMNS))
            for ds, rows in out.items()}


def merge_lists(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """Union by file; the new review wins; sorted by file."""
    both = pd.concat([old[list(LIST_COLUMNS)], new], ignore_index=True)
    both = both.drop_duplicates('file', keep='last')
    return both.sort_values('file').reset_index(drop=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = utils.make_parser(__doc__)
    parser.add_argument('container_path', help='folder holding megadb_mislabeled/')
    parser.add_argument('input_csv', help="Timelapse CSV export, or '-'")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    utils.setup_logging()
    df = utils.read_csv(args.input_csv, dtype=str, keep_default_na=False)
    folder = Path(args.container_path) / 'megadb_mislabeled'
    # every list is read and merged before any is written
    merged: list[tuple[str, Path, pd.DataFrame, int]] = []
    for ds, new in sorted(reviewed_to_mislabeled(df, args.input_csv).items()):
        path = utils.safe_join(folder, f'{ds}.csv')
        if path.exists():
            old = utils.read_csv(path, dtype=str, keep_default_na=False)
            lacking = [c for c in LIST_COLUMNS if c not in old.columns]
            if lacking:
                raise utils.InputError(f'{path}: mislabeled-images list lacks column(s) '
                                       f'{", ".join(lacking)}')
        else:
            old = pd.DataFrame(columns=list(LIST_COLUMNS))
        merged.append((ds, path, merge_lists(old, new), len(new)))
    for ds, path, table, n_new in merged:
        utils.write_csv(table, path)
        logger.info('%s: %d mislabeled images (%d from this review) in %s', ds, len(table),
                    n_new, path)
    return 0


if __name__ == '__main__':
    raise SystemExit(utils.run_cli(main))
