r"""Sum classifier probabilities into target categories.

Reads run_classifier output and a mapping {target: [classifier labels]} (from
map_classification_categories); writes the same CSV with one column per
target, the sum of its classifier labels' probabilities, and the label index
of the targets. Every classifier column must be in exactly one target.

Example:
    python -m classification.aggregate_classifier_probs classifier_output.csv.gz \
        --target-mapping target_to_classifier_labels.json \
        --output-csv classifier_output_remapped.csv.gz \
        --output-label-index label_index_remapped.json

Input and output CSV accept '-' (stdin / stdout), so the step sits in a pipe
between run_classifier and merge_classification_detection_output.
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from classification import classifier_output, utils

logger = logging.getLogger(__name__)


def aggregate(df: pd.DataFrame, mapping: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """``path`` plus one summed column per target, in mapping order."""
    if 'path' not in df.columns:
        raise utils.InputError('classifier CSV has no "path" column')
    columns = [c for c in df.columns if c != 'path']
    owner: dict[str, str] = {}
    for target, members in mapping.items():
        for m in members:
            if m in owner:
                raise utils.InputError(f'target mapping: {m!r} is in both {owner[m]!r} and '
                                       f'{target!r}')
            if m not in columns:
                raise utils.InputError(f'target mapping: {m!r} (under {target!r}) is not a '
                                       'column of the classifier CSV')
            owner[m] = target
    unmapped = [c for c in columns if c not in owner]
    if unmapped:
        raise utils.InputError(f'target mapping: classifier column(s) {unmapped[:5]} are in no '
                               'target (map_classification_categories puts them in "other")')
    sums = df[columns].to_numpy(dtype=np.float64).sum(axis=1)
    if len(sums) and sums.max() > 1.0 + 1e-3:
        i = int(sums.argmax())
        raise utils.InputError(f'classifier CSV: the probabilities of {df["path"].iloc[i]!r} '
                               f'sum to {sums[i]:.4g}; sums of a multi-label classifier\'s '
                               'outputs are not probabilities, so they cannot be aggregated')
    targets = list(mapping)
    matrix = np.zeros((len(columns), len(targets)))
    for i, c in enumerate(columns):
        matrix[i, targets.index(owner[c])] = 1.0
    summed = df[columns].to_numpy(dtype=np.float64) @ matrix
    out = pd.DataFrame(summed, columns=targets)
    out.insert(0, 'path', df['path'].to_numpy())
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = utils.make_parser(__doc__)
    parser.add_argument('classifier_results_csv', nargs='+',
                        help="run_classifier output, or '-'; or all shard files of a "
                             "--shard run (paths or a quoted glob)")
    parser.add_argument('-t', '--target-mapping', required=True,
                        help='JSON {target: [classifier labels]}')
    parser.add_argument('-o', '--output-csv', required=True, help="output CSV, or '-'")
    parser.add_argument('-i', '--output-label-index', required=True,
                        help='where to write the label index of the targets')
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    utils.setup_logging()
    utils.check_one_stdin(args.classifier_results_csv, args.target_mapping)
    mapping = utils.require_mapping(utils.read_json(args.target_mapping, unique_keys=True),
                                    args.target_mapping)
    if not all(isinstance(v, list) and all(isinstance(x, str) for x in v)
               for v in mapping.values()):
        raise utils.InputError(f'{args.target_mapping}: expected {{target: [labels]}}')
    reserved = [t for t in mapping if t in classifier_output.NOT_PROBABILITIES]
    if reserved:
        raise utils.InputError(f'{args.target_mapping}: {reserved[0]!r} cannot name a target '
                               '(it is a column of its own in classifier outputs)')
    if args.output_csv == args.output_label_index:
        raise utils.InputError(f'{args.output_csv}: given both as -o and as -i (two outputs '
                               'cannot share one file or stdout)')
    for out in (args.output_csv, args.output_label_index):
        utils.check_output_path(out, [*args.classifier_results_csv, args.target_mapping])
    targets = [t for t, members in mapping.items() if members]
    if len(targets) < len(mapping):
        logger.info('targets without classifier labels left out: %s',
                    [t for t in mapping if t not in targets])
    df = classifier_output.read_outputs(args.classifier_results_csv, dtype={'path': str})
    out = aggregate(df, {t: mapping[t] for t in targets})
    # the label index first: a merge step reading our output in a pipe reads it
    # once our output ends
    utils.write_json(utils.label_index_dict(targets), args.output_label_index, indent=1)
    utils.write_csv(out, args.output_csv, float_format='%.6g')
    logger.info('aggregated %d rows into %d targets', len(out), len(targets))
    return 0


if __name__ == '__main__':
    raise SystemExit(utils.run_cli(main))
