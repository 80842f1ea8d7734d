r"""Merge a Timelapse export of reviewed images into the known-mislabeled lists.

Reads the CSV that Timelapse exports (columns ``File``, ``RelativePath``, a
``mislabeled`` flag and a ``correct_class`` note; the first folder of
``RelativePath`` is the dataset) and updates
``<container_path>/megadb_mislabeled/<dataset>.csv`` (columns ``file``,
``correct_class``), the files json_validator --mislabeled-images reads. Earlier
entries are kept; an image reviewed again gets its new correct_class.

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


def reviewed_to_mislabeled(df: pd.DataFrame, source: str) -> dict[str, pd.DataFrame]:
    """{dataset: DataFrame(file, correct_class)} of the rows flagged mislabeled."""
    missing = [c for c in ('File', 'RelativePath', 'mislabeled') if c not in df.columns]
    if missing:
        raise utils.InputError(f'{source}: Timelapse CSV lacks column(s) {missing}')
    flagged = df[df['mislabeled'].astype(str).str.strip().str.lower().isin(TRUE_VALUES)]
    correct = (flagged['correct_class'] if 'correct_class' in flagged.columns
               else pd.Series('', index=flagged.index))
    out: dict[str, list[tuple[str, str]]] = {}
    for line, (rel, file, cls) in enumerate(zip(flagged['RelativePath'], flagged['File'],
                                                correct.fillna(''), strict=True)):
        parts = [p for p in str(rel).replace('\\', '/').split('/') if p]
        if not parts:
            raise utils.InputError(f'{source}: flagged row {line + 1} ({file}): RelativePath '
                                   'must start with the dataset folder')
        path = '/'.join([*parts[1:], str(file)])
        out.setdefault(parts[0], []).append((path, str(cls).strip()))
    return {ds: pd.DataFrame(rows, columns=['file', 'correct_class']) for ds, rows in out.items()}


def merge_lists(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """Union by file; the new review wins; sorted by file."""
    both = pd.concat([old[['file', 'correct_class']], new], ignore_index=True)
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
    for ds, new in sorted(reviewed_to_mislabeled(df, args.input_csv).items()):
        path = utils.safe_join(folder, f'{ds}.csv')
        old = (utils.read_csv(path, dtype=str, keep_default_na=False) if path.exists()
               else pd.DataFrame(columns=['file', 'correct_class']))
        merged = merge_lists(old, new)
        utils.write_csv(merged, path)
        logger.info('%s: %d mislabeled images (%d from this review) in %s', ds, len(merged),
                    len(new), path)
    return 0


if __name__ == '__main__':
    raise SystemExit(utils.run_cli(main))
