r"""Write the dataset report of a classification dataset: a folder to open in a
browser showing, per label, its crops and locations in each split, imbalance
flags, crops per label as bar charts, the detection confidence of its crops, a
grid of sample crops, and optionally how a second splits.json assigns the same
locations. create_classification_dataset writes this report itself after
making splits; this script rewrites it, or compares two split assignments.

Example:
    python -m classification.dataset_report run1 --cropped-images-dir crops \
        --compare-splits run2/splits.json

Reads from BASE_LOGDIR: classification_ds.csv, label_index.json and splits.json
(or --splits-json). The label index must name the CSV's labels, and each
splits.json only locations with crops in the CSV; otherwise nothing is written.

Writes (default BASE_LOGDIR/dataset_report; an existing folder is replaced only
if it is a report):
    index.html           the page
    counts_<k>.png       crops per label, stacked by split (50 labels a figure)
    confidence_<k>.png   share of each label's crops per detection-confidence bin
    thumbs/*.jpg         sample crops (--samples-per-label a label)
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from classification import dataset_reports, utils

logger = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = utils.make_parser(__doc__)
    parser.add_argument('base_logdir', help='the dataset folder (create_classification_dataset '
                                            'output_dir)')
    parser.add_argument('-c', '--cropped-images-dir',
                        help='folder with the crops, for the sample grid (without it the '
                             'samples are listed by name)')
    parser.add_argument('--report', metavar='DIR',
                        help='report folder (default: BASE_LOGDIR/dataset_report)')
    parser.add_argument('--splits-json', help='the splits to report (default: '
                                              'BASE_LOGDIR/splits.json)')
    parser.add_argument('--compare-splits', metavar='SPLITS_JSON',
                        help='a second splits.json of the same dataset to compare with')
    parser.add_argument('--samples-per-label', type=utils.nonneg_int, default=8,
                        help='sample crops shown per label (default: 8)')
    parser.add_argument('--rare-fraction', type=utils.probability, default=0.1,
                        help='flag labels with fewer crops than this fraction of the '
                             'median label (default: 0.1)')
    parser.add_argument('--dominant-location', type=utils.probability, default=0.9,
                        help='flag labels with at least this share of their crops at one '
                             'location (default: 0.9)')
    parser.add_argument('--share-tolerance', type=utils.nonneg_float, default=0.5,
                        help="flag labels whose share of a split is off the dataset's share "
                             'by more than this fraction of it (default: 0.5)')
    parser.add_argument('--seed', type=utils.nonneg_int, default=0,
                        help='seed for drawing the sample crops (default: 0)')
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    utils.setup_logging()
    crops = args.cropped_images_dir
    if crops is not None and not Path(crops).is_dir():
        raise utils.InputError(f'{crops}: not a folder (--cropped-images-dir)')
    settings = dataset_reports.ReportSettings(
        samples_per_label=args.samples_per_label, rare_fraction=args.rare_fraction,
        dominant_location=args.dominant_location, share_tolerance=args.share_tolerance,
        seed=args.seed)
    report = args.report or Path(args.base_logdir) / dataset_reports.REPORT_DIR_NAME
    dataset_reports.report_from_files(args.base_logdir, report, crops, args.compare_splits,
                                      settings, args.splits_json)
    if crops is None:
        logger.warning('no --cropped-images-dir: the sample crops are listed by name only')
    return 0


if __name__ == '__main__':
    raise SystemExit(utils.run_cli(main))
