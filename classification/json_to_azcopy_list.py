"""Write one AzCopy file list per dataset from a queried_images.json.

For every dataset in the JSON, writes ``<output_dir>/<dataset>_images.txt`` with
one image path per line, relative to the dataset's container (the
``<dataset>/`` prefix removed), sorted, for ``azcopy cp ... --list-of-files``.

Example:
    python -m classification.json_to_azcopy_list run1/queried_images.json -o run1
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from classification import utils

logger = logging.getLogger(__name__)


def file_lists(queried: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """{dataset: sorted image paths inside the dataset}."""
    out: dict[str, list[str]] = {}
    for key, entry in queried.items():
        ds = entry.get('dataset') if isinstance(entry, Mapping) else None
        if not isinstance(ds, str) or not key.startswith(f'{ds}/'):
            raise utils.InputError(f'{key}: needs a "dataset" field that prefixes its path')
        rel = key[len(ds) + 1:]
        utils.safe_join(ds, rel)        # no '..', absolute paths or newlines in the list
        if '/' in ds or ds in ('', '.', '..') or any(ord(c) < 32 for c in ds):
            raise utils.InputError(f'{key}: dataset {ds!r} is not a plain folder name')
        out.setdefault(ds, []).append(rel)
    return {ds: sorted(files) for ds, files in sorted(out.items())}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = utils.make_parser(__doc__)
    parser.add_argument('input_json', help="queried_images.json, or '-'")
    parser.add_argument('-o', '--output-dir', default='.',
                        help='where to write the lists (default: .)')
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    utils.setup_logging()
    queried = utils.require_mapping(utils.read_json(args.input_json), args.input_json)
    for ds, files in file_lists(queried).items():
        path = utils.safe_join(args.output_dir, f'{ds}_images.txt')
        utils.write_lines(files, path)
        logger.info('%s: %d images -> %s', ds, len(files), path)
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    return 0


if __name__ == '__main__':
    raise SystemExit(utils.run_cli(main))
