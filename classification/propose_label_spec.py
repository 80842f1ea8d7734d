r"""Propose a label specification: the taxa with enough labeled images.

Counts the images of every (dataset, dataset label) of the taxonomy CSV in the
labeled-image database (as json_validator will select them: one class per
image), then works up the taxonomy from its leaves to its roots: a taxon
becomes a label when the images under it that no label below takes number at
least --min-images; a taxon with fewer passes its images up to its parent. So
labels are as fine-grained as the counts allow, each has at least
--min-images images, and no dataset label is in two labels. A label whose
subtree holds other labels is the taxon less those labels (an ``exclude``).
See classification/label_proposals.py for the exact rule.

Example:
    python -m classification.propose_label_spec taxonomy.csv --megadb megadb.sqlite \
        --min-images 1000 $BASE_LOGDIR
    python -m classification.json_validator $BASE_LOGDIR/label_spec.json taxonomy.csv \
        --megadb megadb.sqlite --output-dir $BASE_LOGDIR

Writes under OUTPUT_DIR:
    label_spec.json          the JSON label specification (json_validator's input)
    label_spec.csv           the same as a CSV specification, to edit by hand and
                             convert with csv_to_json (left out when a taxon's level
                             is not one the CSV form knows)
    label_spec_counts.csv    label, kind (taxon | remainder), level, taxon, images,
                             datasets, dataset_labels, excluded
    label_spec_report/       index.html: the taxonomy tree of the labels
                             (taxonomy_tree.png), the counts table and the images
                             left in no label
"""
from __future__ import annotations

import argparse
import html
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from classification import label_proposals, report_pages, utils
from classification.taxonomy import load_taxonomy_csv
from data_management.megadb.base import (
    add_megadb_flags,
    open_megadb,
)

logger = logging.getLogger(__name__)

REPORT = 'label_spec_report'
OUTPUTS = ('label_spec.json', 'label_spec.csv', 'label_spec_counts.csv')


@dataclass(frozen=True)
class Settings:
    taxonomy_csv: str
    megadb: str
    cosmos_key: str | None
    min_images: int
    single_parent: bool
    output_dir: Path
    json_indent: int | None


def report_body(proposal: label_proposals.Proposal, counts: pd.DataFrame, folder: Path,
                source: str) -> str:
    """The report page's body; writes taxonomy_tree.png into ``folder``."""
    fig = label_proposals.tree_figure(
        proposal, f'{len(proposal.labels)} labels with at least {proposal.min_images} images')
    tree = report_pages.save_figure(fig, folder, 'taxonomy_tree.png',
                                    'taxonomy tree of the proposed labels')
    parts = [f'<p>From {html.escape(source)}: <b>{len(proposal.labels)}</b> labels with at '
             f'least {proposal.min_images} images each, {proposal.images} images in all; '
             f'{proposal.unassigned_images} images in no label.</p>', f'<div>{tree}</div>',
             '<h2>Labels</h2>',
             counts.to_html(index=False, classes='stats')]
    if proposal.unassigned:
        rows = ''.join(f'<tr><td>{html.escape(ds)}</td><td>{html.escape(q)}</td><td>{n}</td>'
                       '</tr>' for (ds, q), n in proposal.unassigned)
        parts.append('<h2>Images in no label</h2><p>Too few under their root taxon, or '
                     'their dataset label has no taxon.</p><table class="stats"><tr>'
                     f'<th>dataset</th><th>dataset label</th><th>images</th></tr>{rows}</table>')
    return '\n'.join(parts)


def run(settings: Settings) -> label_proposals.Proposal:
    """Counts, proposes, checks and writes (see the module docstring)."""
    if settings.output_dir.exists() and not settings.output_dir.is_dir():
        raise utils.InputError(f'{settings.output_dir}: is a file; give a folder')
    report_pages.check_report_dir(settings.output_dir / REPORT, report_pages.LABEL_SPEC)
    for name in OUTPUTS:
        utils.check_output_path(settings.output_dir / name, [settings.taxonomy_csv,
                                                             settings.megadb])
    tax = load_taxonomy_csv(settings.taxonomy_csv, single_parent=settings.single_parent)
    with open_megadb(settings.megadb, settings.cosmos_key, must_exist=True) as db:
        counts = label_proposals.count_images(db, tax)
    logger.info('%d images of %d dataset labels of the taxonomy', sum(counts.values()),
                len(counts))
    proposal = label_proposals.propose_labels(tax, counts, settings.min_images)
    label_proposals.check_proposal(proposal, tax)
    out = utils.writable_dir(settings.output_dir)
    csv_spec = label_proposals.to_csv_spec(proposal)
    if csv_spec is None:
        logger.warning('a taxon level is not one the CSV specification knows: no '
                       'label_spec.csv written')
    spec = json.dumps(label_proposals.to_label_spec_json(proposal), indent=settings.json_indent,
                      ensure_ascii=False) + '\n'
    table = label_proposals.counts_table(proposal)
    # the report first (the part more likely to fail), then the files, together
    report_pages.write_report_folder(
        out / REPORT, 'Proposed label specification',
        lambda folder: report_body(proposal, table, folder, settings.taxonomy_csv),
        report_pages.LABEL_SPEC)
    files = [(out / 'label_spec.json', spec),
             (out / 'label_spec_counts.csv', table.to_csv(index=False))]
    if csv_spec is not None:
        files.append((out / 'label_spec.csv', csv_spec))
    utils.write_together(files)
    for label in proposal.labels:
        logger.info('%s (%s %s, %s): %d images', label.name, *label.taxon, label.kind,
                    label.images)
    logger.info('%d labels, %d images; %d images in no label -> %s', len(proposal.labels),
                proposal.images, proposal.unassigned_images,
                out / 'label_spec.json')
    return proposal


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = utils.make_parser(__doc__)
    parser.add_argument('taxonomy_csv', help='taxonomy CSV')
    parser.add_argument('output_dir', help='folder to write the specification and report in')
    add_megadb_flags(parser)
    parser.add_argument('-n', '--min-images', type=utils.positive_int, required=True,
                        help='the fewest images a label may have')
    parser.add_argument('--single-parent-taxonomy', action='store_true',
                        help='give each taxon one parent: the one it has in the most rows of '
                             'the taxonomy CSV (then give json_validator this flag too)')
    parser.add_argument('--json-indent', type=utils.nonneg_int, default=1,
                        help='indent label_spec.json by this many spaces (default: 1)')
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    utils.setup_logging()
    run(Settings(args.taxonomy_csv, args.megadb, args.cosmos_key, args.min_images,
                 args.single_parent_taxonomy, Path(args.output_dir), args.json_indent))
    return 0


if __name__ == '__main__':
    raise SystemExit(utils.run_cli(main))
