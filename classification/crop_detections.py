r"""Crop the MegaDetector boxes of new photos, ready for run_classifier.

Every animal detection with confidence at least --threshold becomes one RGB JPEG,
``<cropped_images_dir>/<file>___cropNN_mdv<version>.jpg`` (NN = the box's index
in the image's detection list). EXIF orientation is applied first, as
MegaDetector does. Crops already present are kept, so an interrupted run
resumes. Photos that cannot be read, and boxes that have no area inside the
photo, are logged and the run goes on. Each photo is decoded once, and a JPEG
only as far as its boxes need (the crops' pixels are those of a full decode).

Photos are read from --images-dir; those not there are downloaded from
--container-url (an Azure Blob Storage container URL with a SAS token; blob
name = the image path in the detections JSON), and with --save-full-images
kept in --images-dir.

Example:
    python -m classification.crop_detections detections.json crops \
        --images-dir photos --threshold 0.2 --square-crops --threads 4 --logdir .
    python -m classification.crop_detections detections.json crops \
        --container-url "https://account.blob.core.windows.net/photos?sv=...&sig=..." \
        --images-dir photos --save-full-images --threads 16

Writes ``<logdir>/crop_detections_log_<time>.json`` with every failed image and why.
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from classification import cropping, utils
from detection.detector_output import (
    animal_category_ids,
    iter_detections,
    read_document,
    resolve_detector_version,
)

logger = logging.getLogger(__name__)


def plan_jobs(doc: Mapping[str, Any], images_dir: str | None, crops_dir: str, version: str,
              threshold: float) -> tuple[list[cropping.ImageJob], dict[str, str]]:
    """One job per photo with at least one box above the threshold, in file order;
    and the photos refused, with why (a path that is absolute or leaves the
    folders), which are logged as failures while the others are cropped."""
    by_image: dict[str, list[cropping.CropTask]] = {}
    sources: dict[str, Path | None] = {}
    refused: dict[str, str] = {}
    for det in iter_detections(doc, threshold, animal_category_ids(doc)):
        if det.image_file in refused:
            continue
        try:
            name = utils.crop_filename(det.image_file, det.index, version)
            out = utils.safe_join(crops_dir, name)
            if det.image_file not in sources:
                sources[det.image_file] = (utils.safe_join(images_dir, det.image_file)
                                           if images_dir else None)
        except utils.InputError as e:
            refused[det.image_file] = f'refused path: {e}'
            by_image.pop(det.image_file, None)
            continue
        by_image.setdefault(det.image_file, []).append(cropping.CropTask(out, det.bbox))
    jobs = [cropping.ImageJob(f, sources[f], tuple(tasks)) for f, tasks in by_image.items()]
    return jobs, refused


def blob_fetcher(container_url: str, save_full_images: bool
                 ) -> Callable[[cropping.ImageJob], bytes]:
    """Reads a photo locally when present, else downloads it (and maybe keeps it)."""
    from azure.core.exceptions import AzureError

    from data_management import azure_blob
    container = azure_blob.open_container(container_url)

    def fetch(job: cropping.ImageJob) -> bytes:
        if job.source is not None and job.source.exists():
            return job.source.read_bytes()
        try:
            data = azure_blob.download_bytes(container, job.key)
        except azure_blob.BlobNotFound as e:
            raise cropping.ImageUnavailable('blob not found in the container') from e
        except AzureError as e:
            raise cropping.ImageUnavailable(
                f'download failed: {azure_blob.safe_error(e)}') from e
        if save_full_images and job.source is not None:
            with utils.atomic_path(job.source) as tmp:
                tmp.write_bytes(data)
        return data

    return fetch


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = utils.make_parser(__doc__)
    parser.add_argument('detections_json', help="MegaDetector output JSON, or '-'")
    parser.add_argument('cropped_images_dir', help='where to write the crops')
    parser.add_argument('-i', '--images-dir',
                        help='folder the image paths of the detections are relative to')
    parser.add_argument('-c', '--container-url',
                        help='Azure Blob Storage container URL with SAS token, for photos not '
                             'in --images-dir')
    parser.add_argument('--save-full-images', action='store_true',
                        help='keep downloaded photos in --images-dir')
    parser.add_argument('-v', '--detector-version',
                        help='version for crop names, e.g. 5a (default: from info.detector)')
    cropping.add_crop_flags(parser)
    parser.add_argument('--logdir', default='.', help='folder for the log file (default: .)')
    args = parser.parse_args(argv)
    if args.images_dir is None and args.container_url is None:
        parser.error('give --images-dir, --container-url, or both')
    if args.save_full_images and not (args.images_dir and args.container_url):
        parser.error('--save-full-images needs --container-url and --images-dir')
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    utils.setup_logging()
    doc = read_document(args.detections_json)
    version = resolve_detector_version(doc, args.detector_version, args.detections_json)
    jobs, refused = plan_jobs(doc, args.images_dir, args.cropped_images_dir, version,
                              args.threshold)
    for name, why in list(refused.items())[:20]:
        logger.warning('%s: %s', name, why)
    utils.writable_dir(args.cropped_images_dir)
    utils.writable_dir(args.logdir)
    fetch = blob_fetcher(args.container_url, args.save_full_images) if args.container_url \
        else None
    report = cropping.run_crop_jobs(jobs, args.square_crops, args.check_crops_valid,
                                    args.threads, fetch)
    report.images += len(refused)
    report.failures.update(refused)
    cropping.write_failure_log(report, args.logdir, 'crop_detections',
                               {'detector_version': version})
    return 0


if __name__ == '__main__':
    raise SystemExit(utils.run_cli(main))
