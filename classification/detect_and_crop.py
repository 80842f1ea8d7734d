r"""Crop training images: ground-truth boxes, else cached MegaDetector boxes.

For each image of queried_images.json, crops its ground-truth animal boxes
when the database has them (crop names without a detector suffix; person and
vehicle boxes are skipped), and otherwise the
animal boxes of the detector output cache ``<cache>/v<version>/<dataset>.json``
whose confidence is at least --threshold (``..._mdv<version>.jpg``). Photos are read
from ``<images-dir>/<dataset>/<file>``; crops go to
``<cropped-images-dir>/<dataset>/<file>___cropNN[_mdv<version>].jpg``. Crops
already present are kept, so a rerun resumes.

With --run-detector, images that have neither ground truth nor cached
detections are first run through MegaDetector locally (--detector-file, a
TorchScript export; see detection/run_detector_batch.py) and the results are
added to the cache (photos the detector cannot read are logged, not cached).
--resume-file keeps the detector's progress, so an interrupted run goes on
where it stopped.

With --save-full-images, photos missing from --images-dir are first downloaded
from their dataset's blob container (or copied from its local images_root), as
the dataset's MegaDB entry says (--megadb), and kept in --images-dir. With
--fetch-missing-images they are read from there into memory, cropped and
dropped: only the crops are written, never the full photos.

Example:
    python -m classification.detect_and_crop run1/queried_images.json run1 \
        --detector-output-cache-dir mdcache --detector-version 5a \
        --cropped-images-dir crops --images-dir images \
        --square-crops --threshold 0.8 --threads 4
    python -m classification.detect_and_crop run1/queried_images.json run1 \
        -c mdcache -v 5a --run-detector --detector-file md_v5a.0.0.torchscript \
        --resume-file run1/detector_resume.json -p crops -i images -t 0.8

Writes ``<output_dir>/detect_and_crop_log_<time>.json``: images that failed to
read or crop (with the reason) and images that have no cached detections.
"""
from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from classification import cropping, utils
from data_management.megadb.base import (
    add_megadb_flags,
    open_megadb,
)
from detection.detector_output import DetectionCache, queried_image_crops, read_queried_images

logger = logging.getLogger(__name__)


def plan_jobs(queried: Mapping[str, Mapping[str, Any]], cache_dir: str, version: str,
              images_dir: str, crops_dir: str, threshold: float
              ) -> tuple[list[cropping.ImageJob], list[str]]:
    """Crop jobs for every queried image, and the images with no detections cached."""
    cache = DetectionCache(cache_dir, version)
    jobs, missing = [], []
    for key in sorted(queried):
        crops = queried_image_crops(key, queried[key], cache, threshold)
        if crops is None:
            missing.append(key)
        elif crops:
            tasks = tuple(cropping.CropTask(utils.safe_join(crops_dir, name), box)
                          for name, box, _ in crops)
            jobs.append(cropping.ImageJob(key, utils.safe_join(images_dir, key), tasks))
    return jobs, missing


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = utils.make_parser(__doc__)
    parser.add_argument('queried_images_json', help="json_validator output, or '-'")
    parser.add_argument('output_dir', help='folder for the log file')
    parser.add_argument('-c', '--detector-output-cache-dir', required=True,
                        help='detector output cache folder (mdcache)')
    parser.add_argument('-v', '--detector-version', required=True,
                        help='MegaDetector version of the cached results, e.g. 5a')
    parser.add_argument('-d', '--run-detector', action='store_true',
                        help='run MegaDetector on the images missing from the cache first')
    parser.add_argument('--detector-file',
                        help='with -d: MegaDetector exported to TorchScript')
    parser.add_argument('--detector-image-size', type=utils.positive_int, default=1280,
                        help='with -d: the size the detector was exported at (default: 1280)')
    parser.add_argument('-r', '--resume-file',
                        help="with -d: the detector's checkpoint file (written every 100 "
                             'images, resumed from when present)')
    parser.add_argument('--device', help='with -d: torch device (default: cuda if available)')
    parser.add_argument('--save-full-images', action='store_true',
                        help='download photos missing from --images-dir from their '
                             "datasets' containers (MegaDB entries) and keep them there")
    parser.add_argument('--fetch-missing-images', action='store_true',
                        help='crop photos missing from --images-dir straight from their '
                             "datasets' containers (MegaDB entries), in memory, without "
                             'keeping them')
    add_megadb_flags(parser, 'with --save-full-images or --fetch-missing-images: the MegaDB '
                             'with the dataset entries')
    parser.add_argument('-p', '--cropped-images-dir',
                        help='where to write crops (without it, nothing is cropped)')
    parser.add_argument('-i', '--images-dir', help='folder with <dataset>/<file> photos')
    cropping.add_crop_flags(parser)
    args = parser.parse_args(argv)
    if args.run_detector and not args.detector_file:
        parser.error('--run-detector needs --detector-file')
    if args.run_detector and not args.images_dir:
        parser.error('--run-detector needs --images-dir (the local photos)')
    if args.save_full_images and not args.images_dir:
        parser.error('--save-full-images needs --images-dir (where to keep the photos)')
    if args.save_full_images and args.fetch_missing_images:
        parser.error('give one of --save-full-images (keep the photos) and '
                     '--fetch-missing-images (keep only the crops)')
    return args


def run_detector_on(missing: Sequence[str], args: argparse.Namespace) -> list[str]:
    """Runs the detector on images (``<dataset>/<path>``) and caches the results per
    dataset; returns the images it could not process."""
    from pathlib import Path

    from classification.models import pick_device
    from detection import detector
    from detection.detector_output import merge_into_cache
    done = (detector.read_checkpoint(args.resume_file)
            if args.resume_file and Path(args.resume_file).exists() else {})
    logger.info('running the detector on %d images', len(missing))
    doc = detector.run(args.detector_file, missing, Path(args.images_dir),
                       args.detector_image_size, detector.DEFAULT_THRESHOLD,
                       pick_device(args.device), args.threads, args.resume_file,
                       100 if args.resume_file else 0, done)
    by_dataset: dict[str, list[dict[str, Any]]] = {}
    failed = []
    for entry in doc['images']:
        if 'failure' in entry:
            failed.append(entry['file'])
            continue
        by_dataset.setdefault(entry['file'].split('/', 1)[0], []).append(entry)
    for dataset, images in sorted(by_dataset.items()):
        added, total = merge_into_cache(args.detector_output_cache_dir, args.detector_version,
                                        dataset, {**doc, 'images': images})
        logger.info('%s: cached detections of %d images (%d in the cache)', dataset, added,
                    total)
    return failed


def fetch_missing_photos(keys: Sequence[str], args: argparse.Namespace
                         ) -> list[dict[str, str]]:
    """Downloads the photos (``<dataset>/<path>``) not yet in --images-dir; returns
    the failures ({file, reason})."""
    from data_management.megadb.downloads import download
    with open_megadb(args.megadb, args.cosmos_key, must_exist=True) as db:
        datasets = db.get_datasets()
    report = download([(k, k) for k in keys], args.images_dir, datasets, args.threads,
                      only_new=True, check_dir=None)
    logger.info('photos: %d downloaded, %d already in %s, %d failed', report['downloaded'],
                report['skipped_existing'], args.images_dir, len(report['failures']))
    failures: list[dict[str, str]] = report['failures']
    return failures


def megadb_fetcher(args: argparse.Namespace) -> Callable[[cropping.ImageJob], bytes]:
    """Reads a photo from --images-dir when there, else from its dataset's container
    or images_root (MegaDB entry), into memory only."""
    from data_management import azure_blob
    from data_management.megadb.downloads import failure_reason, fetch_bytes
    with open_megadb(args.megadb, args.cosmos_key, must_exist=True) as db:
        datasets = db.get_datasets()
    containers: dict[str, Any] = {}
    lock = threading.Lock()

    def fetch(job: cropping.ImageJob) -> bytes:
        if job.source is not None and job.source.exists():
            return job.source.read_bytes()
        dataset = job.key.split('/', 1)[0]
        if dataset not in datasets:
            raise cropping.ImageUnavailable(f'dataset {dataset} is not in the MegaDB')
        try:
            with lock:                           # each container opened once
                if dataset not in containers and not datasets[dataset].get('images_root'):
                    containers[dataset] = azure_blob.open_container(
                        azure_blob.dataset_container_url(datasets[dataset]))
            return fetch_bytes(job.key, datasets[dataset], containers)
        except Exception as e:  # noqa: BLE001 - logged per photo, the run goes on
            raise cropping.ImageUnavailable(failure_reason(e)) from e

    return fetch


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    utils.setup_logging()
    utils.check_detector_version(args.detector_version)
    queried = read_queried_images(args.queried_images_json)

    def plan() -> tuple[list[cropping.ImageJob], list[str]]:
        return plan_jobs(queried, args.detector_output_cache_dir, args.detector_version,
                         args.images_dir or '.', args.cropped_images_dir or '.',
                         args.threshold)

    download_failures: list[dict[str, str]] = []
    if args.save_full_images:
        download_failures = fetch_missing_photos(sorted(queried), args)
    jobs, missing = plan()
    detector_failures: list[str] = []
    if args.run_detector and missing:
        detector_failures = run_detector_on(missing, args)
        jobs, missing = plan()
    if args.cropped_images_dir is None:
        logger.info('no --cropped-images-dir: nothing to crop')
        return 0
    if args.images_dir is None:
        raise utils.InputError('--cropped-images-dir needs --images-dir (the local photos)')
    if missing:
        logger.warning('%d images have no cached detections (run MegaDetector on them with '
                       '--run-detector, or cache its results with cache_batchapi_outputs)',
                       len(missing))
    fetch = megadb_fetcher(args) if args.fetch_missing_images else None
    report = cropping.run_crop_jobs(jobs, args.square_crops, args.check_crops_valid,
                                    args.threads, fetch)
    cropping.write_failure_log(report, args.output_dir, 'detect_and_crop',
                               {'images_without_detections': missing,
                                'detector_failures': detector_failures,
                                'download_failures': download_failures})
    return 0


if __name__ == '__main__':
    raise SystemExit(utils.run_cli(main))
