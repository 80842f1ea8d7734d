r"""Run MegaDetector (a YOLOv5-format TorchScript export) on photos; write batch-format JSON.

MegaDetector v5 is a YOLOv5 model. Its released ``.pt`` files are Python
pickles of YOLOv5 classes, which this project does not unpickle (checkpoints
are only loaded with ``weights_only=True``); export it once to TorchScript with
YOLOv5's exporter, with dynamic input shapes (photos are letterboxed to
rectangles whose size depends on their aspect ratio):

    python export.py --weights md_v5a.0.0.pt --include torchscript --imgsz 1280 --dynamic

(in a checkout of github.com/ultralytics/yolov5; with torch >= 2.6 and a YOLOv5
release that loads checkpoints with torch's default ``weights_only=True``,
prefix ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, for this one trusted file) and
give the resulting ``md_v5a.0.0.torchscript`` here. An export without
``--dynamic`` only accepts its one input shape and is refused with this hint.

The results are MegaDetector 10.0.28's (``megadetector.detection.run_detector_batch``
on the ``.pt`` file) for the same photos: each photo (EXIF orientation applied,
truncated JPEGs decoded as far as they go) is scaled to fit --image_size x
--image_size with OpenCV's bilinear resize and padded with grey 114 to the
smallest rectangle whose sides are multiples of the model's stride (the
``stride`` YOLOv5's export records in the file, else 64, MDv5's; --stride
overrides it); the model's raw predictions become boxes as MegaDetector does
(confidence = objectness x class score, above --threshold, per-class NMS at IoU
0.45, at most 300 per photo), rounded to whole pixels of the photo, written as
normalized ``[x_min, y_min, width, height]`` truncated to 4 decimals with
confidences truncated to 3; categories 1 animal, 2 person, 3 vehicle. Photos
are listed by file name and their boxes by confidence. Where MegaDetector is
wrong we differ (see detection/detector.py): mirrored EXIF orientations, and
the orientation of grayscale photos, are applied; CMYK, palette and 16-bit
photos are converted instead of failing.

Input: a folder (its images; with --recursive, its subfolders' too), one image,
or a .json list / .txt file of image paths. Photos that cannot be read get
``"failure": "image access failure"`` (and ``"inference failure"`` when the model
fails on one) with ``"detections": null``; the run goes on. With
--checkpoint_frequency N, results so far are written every N photos to
--checkpoint_path (default ``md_checkpoint_<time>.json`` beside the output), and
--resume_from_checkpoint (a file, or ``auto`` for the newest such file) skips the
photos already there. Flags keep MegaDetector's names (underscores; the
hyphenated spellings work too).

Output (format version 1.6, as MegaDetector 10):
    {"info": {"detector": "md_v5a.0.0.torchscript", "format_version": "1.6",
              "detection_completion_time": "...",
              "detector_metadata": {"megadetector_version": "v5a.0.1",
                                    "typical_detection_threshold": 0.2,
                                    "conservative_detection_threshold": 0.05,
                                    "image_size": 1280, "output_threshold": 0.005}},
     "detection_categories": {"1": "animal", "2": "person", "3": "vehicle"},
     "images": [{"file": "a.jpg", "detections": [{"category": "1", "conf": 0.926,
                                                  "bbox": [0.1, 0.2, 0.3, 0.4]}]},
                {"file": "b.jpg", "failure": "image access failure", "detections": null}]}

Example:
    python -m detection.run_detector_batch md_v5a.0.0.torchscript photos \
        detections.json --recursive --output_relative_filenames --threshold 0.005 \
        --use_image_queue --checkpoint_frequency 1000
"""
from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from classification import engines, shards, utils
from classification.distributed import Dist
from classification.shards import Shard
from detection.detector import (
    DEFAULT_IMAGE_SIZE,
    DEFAULT_THRESHOLD,
    add_max_conf,
    list_images,
    read_checkpoint,
    read_class_mapping,
    run,
)

logger = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = utils.make_parser(__doc__)
    parser.add_argument('detector_file',
                        help='MegaDetector exported to TorchScript (with --dynamic)')
    parser.add_argument('image_file',
                        help='folder of images, one image, or .json/.txt list of paths')
    parser.add_argument('output_file', help="batch-format JSON to write, or '-'")
    parser.add_argument('--recursive', action='store_true',
                        help='with a folder: its subfolders too')
    parser.add_argument('--output_relative_filenames', '--output-relative-filenames',
                        action='store_true',
                        help='with a folder: paths relative to it (default: joined to it)')
    parser.add_argument('--include_max_conf', '--include-max-conf', action='store_true',
                        help='add each image\'s max_detection_conf (legacy field)')
    parser.add_argument('--quiet', action='store_true', help='no progress bar or info logs')
    parser.add_argument('--image_size', '--image-size', type=utils.positive_int,
                        default=DEFAULT_IMAGE_SIZE,
                        help='photos are scaled to fit a square of this size, a multiple of '
                             f'the stride (default: {DEFAULT_IMAGE_SIZE})')
    parser.add_argument('--stride', type=utils.positive_int, default=None,
                        help='pad to multiples of this (default: the stride the YOLOv5 '
                             'export recorded, else 64)')
    parser.add_argument('--use_image_queue', '--use-image-queue', action='store_true',
                        help='decode photos on background threads ahead of the model')
    parser.add_argument('--threshold', type=utils.probability, default=DEFAULT_THRESHOLD,
                        help=f'lowest confidence written (default: {DEFAULT_THRESHOLD})')
    parser.add_argument('--checkpoint_frequency', '--checkpoint-frequency', type=int,
                        default=-1, help='write results so far every N images (default: -1, '
                                         'never)')
    parser.add_argument('--checkpoint_path', '--checkpoint-path',
                        help='checkpoint file (default: md_checkpoint_<time>.json beside the '
                             'output file)')
    parser.add_argument('--resume_from_checkpoint', '--resume-from-checkpoint',
                        metavar='CHECKPOINT',
                        help="skip the images in this checkpoint ('auto': the newest "
                             'md_checkpoint_*.json beside the output file)')
    parser.add_argument('--allow_checkpoint_overwrite', '--allow-checkpoint-overwrite',
                        action='store_true', help='let a checkpoint replace an existing file')
    parser.add_argument('--ncores', type=utils.nonneg_int, default=0,
                        help='CPU threads for inference, and decoding threads with '
                             '--use_image_queue (default: 0, all cores / 2 threads)')
    parser.add_argument('--class_mapping_filename', '--class-mapping-filename',
                        help='JSON {"0": "name", ...} for a detector with other classes '
                             '(category ids then start at 0)')
    parser.add_argument('--device', help='torch device (default: cuda if available; under '
                                         'torchrun, the GPU of LOCAL_RANK)')
    parser.add_argument('--engine', choices=engines.ENGINES, default='auto',
                        help='inference engine (default: auto: OpenVINO on an x86 CPU where '
                             'installed, else ONNX Runtime, else PyTorch; PyTorch on CUDA)')
    parser.add_argument('--precision', choices=engines.DETECTOR_PRECISIONS, default='auto',
                        help='fp32 or bf16 (default: auto, fp32: the detections of '
                             'MegaDetector; bf16 is several times faster on CPUs with AMX '
                             'but moves boxes and confidences slightly)')
    parser.add_argument('--shard', type=shards.parse_shard, default=None, metavar='K/N',
                        help='detect only the K-th of N shares of the (sorted) photos')
    args = parser.parse_args(argv)
    if args.output_file == '-' and (args.shard or int(os.environ.get('WORLD_SIZE', '1')) > 1):
        parser.error("a sharded or torchrun run needs an output file, not '-'")
    return args


def rank_path(path: str | None, shard: Shard | None) -> str | None:
    """A file of one process of a torchrun run: ``x.json`` -> ``x.<K>of<N>.json``."""
    if path is None or shard is None:
        return path
    p = Path(path)
    return str(p.with_name(f'{p.stem}.{shard.k}of{shard.n}{p.suffix}'))


def part_file(output: str, shard: Shard) -> str:
    """Where one process of a torchrun run leaves its share for rank 0 to join."""
    return f'{output}.{shard.k}of{shard.n}.part'


def main(argv: Sequence[str] | None = None) -> int:
    from classification.models import pick_device
    args = parse_args(argv)
    utils.setup_logging()
    if args.quiet:
        logging.getLogger().setLevel(logging.WARNING)
    files, root = list_images(args.image_file, args.recursive)
    if not files:
        raise utils.InputError(f'{args.image_file}: no images found')
    if len(set(files)) != len(files):
        logger.warning('%d photos are listed more than once; each is detected once',
                       len(files) - len(set(files)))
    files = sorted(set(files))
    if Path(args.output_file).suffix.lower() in utils.IMAGE_EXTENSIONS:
        raise utils.InputError(f'{args.output_file}: the output would replace a photo; give '
                               'it a .json name')
    utils.check_output_path(args.output_file, [args.detector_file, args.image_file])
    dist = Dist.from_env(pick_device(args.device), timeout_minutes=24 * 60)
    engine = engines.resolve_engine(args.engine, dist.device)
    # auto: float32, whose detections match MegaDetector's (bf16's move boxes and
    # confidences slightly: measured in bench/bench_detector.py)
    precision = engines.resolve_precision(engine, 'fp32' if args.precision == 'auto'
                                          else args.precision, dist.device)
    shard = args.shard or Shard()
    mine = shard.sub(dist.rank, dist.world_size) if dist.enabled else shard
    part = mine if dist.enabled else None       # this process writes a part of the output
    out_dir = Path(args.output_file).parent if args.output_file != '-' else Path('.')
    if args.output_file != '-':
        utils.writable_dir(out_dir)     # before the model is loaded (or exported)
    checkpoint_path = args.checkpoint_path
    if args.checkpoint_frequency > 0 and checkpoint_path is None:
        checkpoint_path = str(out_dir / f'md_checkpoint_{time.strftime("%Y%m%d%H%M%S")}.json')
    resume = args.resume_from_checkpoint
    if resume == 'auto':
        found = sorted(out_dir.glob('md_checkpoint_*.json'))
        if part is not None:
            found = [f for f in found if f.stem.endswith(f'.{part.k}of{part.n}')]
        if not found:
            raise utils.InputError(f'--resume_from_checkpoint auto: no md_checkpoint_*.json in '
                                   f'{out_dir}')
        resume = str(found[-1])
    elif part is not None:
        resume = rank_path(resume, part)
    if part is not None and checkpoint_path and not checkpoint_path.endswith(
            f'.{part.k}of{part.n}.json'):
        checkpoint_path = rank_path(checkpoint_path, part)
    if checkpoint_path and args.checkpoint_frequency > 0 and Path(checkpoint_path).exists() \
            and not args.allow_checkpoint_overwrite and checkpoint_path != resume:
        raise utils.InputError(f'{checkpoint_path}: checkpoint exists (use '
                               '--allow_checkpoint_overwrite or --resume_from_checkpoint)')
    mapping = read_class_mapping(args.class_mapping_filename) \
        if args.class_mapping_filename else None
    done: dict[str, dict[str, Any]] = read_checkpoint(resume, mapping) if resume else {}
    if args.ncores:
        torch.set_num_threads(args.ncores)
    threads = (args.ncores or 2) if args.use_image_queue else 0
    try:
        doc = run(args.detector_file, mine.take(files), root, args.image_size, args.threshold,
                  dist.device, threads, checkpoint_path, args.checkpoint_frequency, done,
                  mapping, args.quiet, args.stride, engine, precision, args.engine == 'auto')
        if args.include_max_conf:
            add_max_conf(doc)
        if root is not None and not args.output_relative_filenames:
            for entry in doc['images']:
                entry['file'] = (root / entry['file']).as_posix()
        doc['images'].sort(key=lambda entry: entry['file'])      # as MegaDetector
        if part is not None:
            utils.write_json(doc, part_file(args.output_file, part), indent=1)
            dist.barrier()
            if dist.is_main:
                parts = [part_file(args.output_file, shard.sub(r, dist.world_size))
                         for r in range(dist.world_size)]
                docs = [utils.read_json(p) for p in parts]
                doc['images'] = [e for d in docs for e in d['images']]
                for p in parts:
                    Path(p).unlink()
        if dist.is_main:
            utils.write_json(doc, args.output_file, indent=1)
            if shard.n > 1:
                shards.write_manifest(args.output_file, {
                    'run': shards.run_id(detector=engines.file_sha256(args.detector_file),
                                         files=shards.digest(files),
                                         image_size=args.image_size, threshold=args.threshold,
                                         stride=args.stride, engine=engine, precision=precision,
                                         classes=mapping, relative=args.output_relative_filenames),
                    'shard': shard.k, 'shards': shard.n, 'images': len(doc['images'])})
            n_fail = sum('failure' in e for e in doc['images'])
            logger.info('%d images, %d failed; wrote %s', len(doc['images']), n_fail,
                        args.output_file)
        dist.barrier()
    finally:
        dist.close()
    return 0


if __name__ == '__main__':
    raise SystemExit(utils.run_cli(main))
