r"""Roll classifier probabilities up the taxonomy: one answer per crop, as CSV.

For users without Timelapse: for each crop of a run_classifier CSV, the top
label when its probability reaches --threshold, else the lowest taxon whose
labels' summed probability does, else nothing (rules: classification/rollup.py;
merge_classification_detection_output --rollup-threshold does the same in the
Timelapse JSON). --allow-list first keeps to the labels allowed at each photo's
location (the crop path's longest listed folder prefix, or "*"; case-sensitive),
and warns of each listed location that matches no crop. A taxon holding every
label of the tree is never an answer: such crops get none.

Example:
    python -m classification.rollup_classifier_probs classifier_output.csv.gz \
        label_index.json --taxonomy-csv taxonomy.csv --label-spec label_spec.json \
        --threshold 0.8 --allow-list allowed_labels.csv -o rollup.csv

Output CSV (or '-' for stdout), one row per crop in input order:
    path          the crop, as in the input
    outcome       label (the top label reached the threshold), taxon (a taxon did)
                  or none
    name          the label or the taxon (empty for none)
    level         the taxonomy level of the label's or taxon's place in the tree
                  (empty for a label outside the taxonomy, and for none)
    prob          the label's probability or the taxon's sum (empty for none)
    description   its taxonomy string, root first, ";"-separated
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

import numpy as np

from classification import classifier_output, rollup, utils
from classification.taxonomy import TAXONOMY_LEVELS

logger = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = utils.make_parser(__doc__)
    parser.add_argument('classifier_csv', nargs='+',
                        help="run_classifier output, or '-'; or all shard files of a --shard "
                             'run (paths or a quoted glob)')
    parser.add_argument('label_index_json', help='label index JSON of the CSV columns')
    parser.add_argument('--taxonomy-csv', required=True, help='taxonomy CSV')
    parser.add_argument('--label-spec', required=True,
                        help="label specification (JSON, or CSV by its suffix) of the "
                             "classifier's labels")
    parser.add_argument('-t', '--threshold', type=utils.probability, default=0.8,
                        help='probability a label or taxon must reach (default: 0.8)')
    parser.add_argument('--max-level', choices=TAXONOMY_LEVELS, metavar='LEVEL',
                        help='never roll up above this level (e.g. class)')
    parser.add_argument('--allow-list',
                        help='labels allowed per location (CSV location,label or JSON '
                             '{location: [labels]})')
    parser.add_argument('-o', '--output-csv', required=True, help="output CSV, or '-'")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    utils.setup_logging()
    inputs = [*args.classifier_csv, args.label_index_json, args.taxonomy_csv, args.label_spec,
              args.allow_list]
    utils.check_one_stdin(*inputs)
    utils.check_output_path(args.output_csv, inputs)
    df = classifier_output.read_outputs(args.classifier_csv, dtype={'path': str})
    labels = utils.load_label_index(args.label_index_json)
    columns = [c for c in df.columns if c not in classifier_output.NOT_PROBABILITIES]
    if sorted(columns) != sorted(labels):
        raise utils.InputError(f'{args.classifier_csv[0]}: its probability columns do not match '
                               f'the label index {args.label_index_json}')
    lt = rollup.load_label_taxa(labels, args.label_spec, args.taxonomy_csv)
    probs = df[labels].to_numpy(dtype=np.float64)
    if args.allow_list:
        allow = rollup.read_allow_list(args.allow_list, labels)
        probs = rollup.filter_by_allow_list(probs, df['path'], labels, allow)
    result = rollup.rollup(probs, lt, args.threshold, args.max_level)
    utils.write_csv(rollup.rollup_table(df['path'].tolist(), lt, result), args.output_csv)
    counts = np.bincount(result.code, minlength=3)
    logger.info('%d crop(s): %d keep their label, %d rolled up to a taxon, %d reach no taxon',
                len(df), counts[0], counts[1], counts[2])
    return 0


if __name__ == '__main__':
    raise SystemExit(utils.run_cli(main))
