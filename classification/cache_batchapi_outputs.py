r"""Cache MegaDetector results for a dataset in the detector output cache.

Merges a MegaDetector output JSON (``--format detections``: what a local run of
MegaDetector writes) into ``<cache dir>/v<version>/<dataset>.json``. Results for
images already cached are replaced; other cached images are kept. Image paths
must be relative to the dataset root (a leading ``<dataset>/`` is removed); an
absolute path, one with ``..`` or a control character, and two entries for one
image (``<dataset>/a.jpg`` and ``a.jpg``) are refused.
The hosted Batch API is gone, so its ``response`` documents are not accepted.

Example:
    python -m classification.cache_batchapi_outputs detections.json \
        --format detections --dataset caltech \
        --detector-output-cache-dir mdcache --detector-version 5a
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from classification import utils
from detection.detector_output import check_document, merge_into_cache, resolve_detector_version

logger = logging.getLogger(__name__)


def normalized_files(doc: Mapping[str, Any], dataset: str, source: str) -> dict[str, Any]:
    """``doc`` with each image path written one way, ``<dataset>/<path>`` with
    ``a/./b.jpg`` and ``a//b.jpg`` as ``a/b.jpg`` (the cache is looked up by that
    form). Refuses image paths that are empty, absolute, leave the dataset (``..``) or hold
    a control character, and two entries that are one image once the leading
    ``<dataset>/`` is removed (``ds/a.jpg`` and ``a.jpg``, or ``a/./b.jpg`` and
    ``a/b.jpg``): the cache would keep one of them, silently."""
    prefix = f'{dataset}/'
    seen: dict[str, str] = {}
    for i, img in enumerate(doc['images']):
        file = img['file']
        rel = file[len(prefix):] if file.startswith(prefix) else file
        try:
            key = '/'.join(utils.safe_join('<dataset>', rel).parts[1:])
        except utils.InputError as e:
            raise utils.InputError(f'{source}: images[{i}]: {file!r} is not an image path '
                                   f'inside dataset {dataset!r} ({e})') from e
        if key in seen:
            raise utils.InputError(f'{source}: images[{i}]: {file!r} is the same image as '
                                   f'{seen[key]!r} (both are {dataset}/{key}); keep one')
        seen[key] = file
    images = [{**img, 'file': prefix + key} for img, key in zip(doc['images'], seen, strict=True)]
    return {**doc, 'images': images}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = utils.make_parser(__doc__)
    parser.add_argument('json_file', help="MegaDetector output JSON, or '-'")
    parser.add_argument('-f', '--format', choices=['detections'], required=True,
                        help='kind of input file: detections = MegaDetector output JSON')
    parser.add_argument('-d', '--dataset', required=True, help='dataset name')
    parser.add_argument('-c', '--detector-output-cache-dir', required=True,
                        help='the detector output cache folder (mdcache)')
    parser.add_argument('-v', '--detector-version',
                        help='MegaDetector version, e.g. 5a (default: from info.detector)')
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    utils.setup_logging()
    doc = check_document(utils.read_json(args.json_file), args.json_file)
    version = resolve_detector_version(doc, args.detector_version, args.json_file)
    doc = normalized_files(doc, args.dataset, args.json_file)
    n_new, n_total = merge_into_cache(args.detector_output_cache_dir, version, args.dataset, doc)
    logger.info('%s: cached %d images (now %d) for MegaDetector v%s', args.dataset, n_new,
                n_total, version)
    return 0


if __name__ == '__main__':
    raise SystemExit(utils.run_cli(main))
