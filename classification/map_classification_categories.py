r"""Map a classifier's labels onto the target categories you want.

Both the targets and the classifier's labels are label specifications (taxa
and dataset labels, resolved through the taxonomy CSV to (dataset, dataset
label) pairs). A classifier label goes to the target whose pairs overlap its
own the most; every classifier label goes to exactly one target, and those
that overlap none go to "other". With --classifier-label-index, exactly the
labels of that index are mapped (labels the classifier spec lacks go to
"other").

Example:
    python -m classification.map_classification_categories \
        target_label_spec.json classifier_label_spec.json taxonomy.csv \
        --output target_to_classifier_labels.json \
        --classifier-label-index classifier_index_to_name.json

Output: JSON {target: [classifier labels], ..., "other": [...]}, the input of
aggregate_classifier_probs and of evaluate_model --target-mapping.
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence, Set

from classification import utils
from classification.taxonomy import (
    DatasetLabel,
    load_taxonomy_csv,
    parse_label_spec,
    resolve_label_spec,
)

logger = logging.getLogger(__name__)

OTHER = 'other'


def map_categories(targets: Mapping[str, Set[DatasetLabel]],
                   classifier: Mapping[str, Set[DatasetLabel]],
                   classifier_labels: Sequence[str]) -> dict[str, list[str]]:
    """{target: [classifier labels]} in target order, then "other".

    Raises InputError when a classifier label overlaps two targets equally.
    """
    if OTHER in targets:
        raise utils.InputError(f'"{OTHER}" is reserved for unmapped labels; rename that target')
    out: dict[str, list[str]] = {t: [] for t in targets}
    out[OTHER] = []
    for label in classifier_labels:
        pairs = classifier.get(label, set())
        overlap = sorted(((len(pairs & tp), t) for t, tp in targets.items() if pairs & tp),
                         key=lambda x: -x[0])
        if not overlap:
            out[OTHER].append(label)
            continue
        if len(overlap) > 1:
            if overlap[0][0] == overlap[1][0]:
                raise utils.InputError(
                    f'classifier label {label!r} overlaps targets {overlap[0][1]!r} and '
                    f'{overlap[1][1]!r} equally; make the target specifications disjoint')
            logger.warning('classifier label %r overlaps targets %s; assigned to %r', label,
                           [t for _, t in overlap], overlap[0][1])
        out[overlap[0][1]].append(label)
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = utils.make_parser(__doc__)
    parser.add_argument('desired_label_spec_json', help='label specification of the targets')
    parser.add_argument('classifier_label_spec_json', help="the classifier's label spec")
    parser.add_argument('taxonomy_csv', help='taxonomy CSV')
    parser.add_argument('-o', '--output', required=True, help="output JSON, or '-'")
    parser.add_argument('-i', '--classifier-label-index',
                        help="the classifier's label index JSON (which labels to map)")
    parser.add_argument('--json-indent', type=utils.nonneg_int, default=1)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    utils.setup_logging()
    utils.check_output_path(args.output, [args.desired_label_spec_json,
                                          args.classifier_label_spec_json, args.taxonomy_csv,
                                          args.classifier_label_index])
    taxonomy = load_taxonomy_csv(args.taxonomy_csv)
    targets = resolve_label_spec(
        parse_label_spec(utils.read_json(args.desired_label_spec_json),
                         args.desired_label_spec_json), taxonomy, allow_multilabel=True)
    classifier = resolve_label_spec(
        parse_label_spec(utils.read_json(args.classifier_label_spec_json),
                         args.classifier_label_spec_json), taxonomy, allow_multilabel=True)
    labels = (utils.load_label_index(args.classifier_label_index)
              if args.classifier_label_index else list(classifier))
    mapping = map_categories(targets, classifier, labels)
    utils.write_json(mapping, args.output, indent=args.json_indent)
    for target, members in mapping.items():
        logger.info('%s <- %s', target, ', '.join(members) or '(nothing)')
    return 0


if __name__ == '__main__':
    raise SystemExit(utils.run_cli(main))
