"""Convert a CSV label specification into the JSON label specification.

Each CSV row is ``output_label,type,content``:

    deer,family,cervidae                          a taxon, all datasets
    deer,datasettaxon,idfg|genus|odocoileus       a taxon, one dataset
    deer,row,idfg|muledeer                        one dataset label
    !deer,row,idfg|elk                            "!" excludes
    deer,max_count,5000
    deer,prioritize,"[['idfg_swwlf_2019'], ['idfg']]"

Lines starting with "#" and blank lines are skipped; the header is optional.

Example:
    python -m classification.csv_to_json label_spec.csv label_spec.json --json-indent 1
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from classification import utils
from classification.taxonomy import csv_spec_to_json

logger = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = utils.make_parser(__doc__)
    parser.add_argument('input_csv_file', help="CSV label specification, or '-'")
    parser.add_argument('output_json_path', help="where to write the JSON, or '-'")
    parser.add_argument('--json-indent', type=utils.nonneg_int,
                        help='indent the JSON by this many spaces (default: one line)')
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    utils.setup_logging()
    utils.check_output_path(args.output_json_path, [args.input_csv_file])
    with utils.open_input_text(args.input_csv_file) as f:
        text = f.read()
    js = csv_spec_to_json(text, args.input_csv_file)
    utils.write_json(js, args.output_json_path, indent=args.json_indent)
    if args.output_json_path != utils.STDIO:
        logger.info('wrote %d labels to %s', len(js), args.output_json_path)
    return 0


if __name__ == '__main__':
    raise SystemExit(utils.run_cli(main))
