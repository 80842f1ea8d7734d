r"""Sort the images that a step reported as failed by what is wrong with them.

Reads a JSON log of failed images (a local file, '-', or a blob URL with SAS
token): every list under the given --json-keys (default: every top-level key
holding a list), whose items are image paths or objects with a ``file`` field,
as in the logs of crop_detections, detect_and_crop and download_images. Each
image is then looked up in the container (--account, --container,
--sas-token) or in --images-dir and put in one category:

- ``good``: opens and decodes without trouble (the failure was elsewhere)
- ``nonexistant``: no such blob or file (the original's spelling, kept)
- ``non_image``: its extension is not an image type (not downloaded)
- ``truncated``: decodes only when Pillow may fill in missing data
- ``bad``: exists but does not decode at all

Writes ``{category: [image paths, sorted]}`` as JSON to --output ('-', the
default, is stdout) and logs the count of each category.

Example:
    python -m classification.analyze_failed_images crop_detections_log_20260101_120000.json \
        --json-keys failures --account myaccount --container photos --sas-token "sv=...&sig=..." \
        --output failed_images_analysis.json
    python -m classification.analyze_failed_images detect_and_crop_log.json \
        --images-dir /data/photos -o -
"""
from __future__ import annotations

import argparse
import io
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image, ImageFile, UnidentifiedImageError

from classification import utils

logger = logging.getLogger(__name__)

CATEGORIES = ('good', 'nonexistant', 'non_image', 'truncated', 'bad')

Fetch = Callable[[str], bytes | None]   # the image's bytes, or None if it does not exist


def failed_images(log: Any, keys: Sequence[str] | None, source: str) -> list[str]:
    """The image paths listed under ``keys`` (default: all list-valued keys), unique, in
    order of first appearance."""
    if isinstance(log, list):
        groups: list[Any] = [log]
        if keys:
            raise utils.InputError(f'{source}: --json-keys given, but the log is a list')
    elif isinstance(log, Mapping):
        if keys:
            missing = [k for k in keys if k not in log]
            if missing:
                raise utils.InputError(f'{source}: no key(s) {missing}; it has '
                                       f'{sorted(log)}')
            groups = [log[k] for k in keys]
        else:
            groups = [v for v in log.values() if isinstance(v, list)]
    else:
        raise utils.InputError(f'{source}: expected a JSON object or list')
    seen: dict[str, None] = {}
    for group in groups:
        if not isinstance(group, list):
            raise utils.InputError(f'{source}: a --json-keys value is not a list')
        for i, item in enumerate(group):
            # "image": download logs written before the one failure-log schema
            path = (item.get('file', item.get('image')) if isinstance(item, Mapping)
                    else item)
            if not isinstance(path, str) or not path:
                raise utils.InputError(f'{source}: item {i} is neither an image path nor an '
                                       'object with a "file" path')
            seen.setdefault(path, None)
    return list(seen)


def decodes(data: bytes, allow_truncated: bool) -> bool:
    """True if Pillow decodes the whole image (optionally filling in missing data)."""
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = allow_truncated
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
        return True
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError,
            Image.DecompressionBombError):
        return False
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved


def categorize(data: bytes | None) -> str:
    """The category of one image's bytes (None: it does not exist)."""
    if data is None:
        return 'nonexistant'
    if decodes(data, allow_truncated=False):
        return 'good'
    return 'truncated' if decodes(data, allow_truncated=True) else 'bad'


def analyze(paths: Iterable[str], fetch: Fetch, threads: int = 1) -> dict[str, list[str]]:
    """{category: sorted paths}. Downloads run on ``threads`` threads; decoding runs in
    this thread (Pillow's truncated-image switch is process-wide)."""
    result: dict[str, list[str]] = {c: [] for c in CATEGORIES}
    to_fetch = []
    for path in paths:
        if os.path.splitext(path)[1].lower() not in utils.IMAGE_EXTENSIONS:
            result['non_image'].append(path)
        else:
            to_fetch.append(path)
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for path, data in zip(to_fetch, pool.map(fetch, to_fetch), strict=True):
            result[categorize(data)].append(path)
    return {c: sorted(v) for c, v in result.items()}


def local_fetcher(images_dir: str) -> Fetch:
    def fetch(path: str) -> bytes | None:
        try:
            return utils.safe_join(images_dir, path).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
    return fetch


def blob_fetcher(container_url: str) -> Fetch:
    from azure.core.exceptions import AzureError

    from data_management import azure_blob
    container = azure_blob.open_container(container_url)

    def fetch(path: str) -> bytes | None:
        try:
            return azure_blob.download_bytes(container, path)
        except azure_blob.BlobNotFound:
            return None
        except AzureError as e:
            raise utils.InputError(f'{path}: download failed: {azure_blob.safe_error(e)}'
                                   ) from e
    return fetch


def read_log(source: str) -> Any:
    """The JSON log from a file, '-', or a blob URL with SAS token."""
    if source.lower().startswith(('https://', 'http://')):
        import json

        from data_management import azure_blob
        data = azure_blob.download_blob_url(source)
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise utils.InputError(f'{azure_blob.describe(source)}: not valid JSON ({e})') from e
    return utils.read_json(source)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = utils.make_parser(__doc__)
    parser.add_argument('failed_images', metavar='URL_OR_PATH',
                        help="JSON log of failed images: a file, '-', or a blob URL with SAS")
    parser.add_argument('-k', '--json-keys', nargs='*',
                        help='keys of the lists of failed images (default: every list)')
    parser.add_argument('-a', '--account',
                        help='storage account name (or endpoint URL) of the images')
    parser.add_argument('-c', '--container', help='container of the images')
    parser.add_argument('-s', '--sas-token', help='SAS token for the container')
    parser.add_argument('-i', '--images-dir',
                        help='folder with the images, instead of a container')
    parser.add_argument('-n', '--threads', type=utils.positive_int, default=8,
                        help='parallel downloads (default: 8)')
    parser.add_argument('-o', '--output', default='-',
                        help="where to write the categories JSON (default: '-', stdout)")
    args = parser.parse_args(argv)
    if args.images_dir is None and not (args.account and args.container):
        parser.error('give --account and --container (and --sas-token), or --images-dir')
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    utils.setup_logging()
    if not args.failed_images.lower().startswith('http'):
        utils.check_output_path(args.output, [args.failed_images])
    paths = failed_images(read_log(args.failed_images), args.json_keys,
                          'log' if args.failed_images.lower().startswith('http')
                          else args.failed_images)
    if args.images_dir is not None:
        if not Path(args.images_dir).is_dir():
            raise utils.InputError(f'{args.images_dir}: folder not found')
        fetch = local_fetcher(args.images_dir)
    else:
        from data_management import azure_blob
        fetch = blob_fetcher(azure_blob.dataset_container_url({
            'storage_account': args.account, 'container': args.container,
            'container_sas_key': args.sas_token or ''}))
    result = analyze(paths, fetch, args.threads)
    for category in CATEGORIES:
        logger.info('%s: %d', category, len(result[category]))
    utils.write_json(result, args.output, indent=1)
    return 0


if __name__ == '__main__':
    raise SystemExit(utils.run_cli(main))
