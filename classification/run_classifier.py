r"""Run a classifier on crops, or straight on the photos; write one probability per category.

The crops to classify are listed from --detections-json (every animal detection
with confidence at least --threshold, named as crop_detections names them), or
are all ``*.jpg`` files under crops_dir. With --from-photos, crops_dir is the
photos folder instead: each detection is cut from its photo in memory, exactly
as crop_detections cuts it (--square-crops as there), so an archive needs no
crop files; only the part of a JPEG the box needs is decoded. Output rows are
named as the crop files would be, so both routes give the same table (up to
the JPEG re-encoding of saved crops). Crops that are missing or cannot be read
are reported on stderr and left out of the output. Rows are sorted by path. A
model exported from train_classifier --multilabel gives one sigmoid
probability per category (they need not sum to 1); other models give softmax
probabilities.

Archive scale:
- Results are written as they come, to ``<output>.part``; rerunning the same
  command after a kill or crash continues where it stopped (at most one batch
  is lost) and gives the same output as an uninterrupted run. Memory stays flat.
- ``--shard K/N`` classifies the K-th of N equal, contiguous shares of the
  sorted crops (for array jobs or one process per machine); its output gets a
  ``.shard.json`` manifest, and aggregate_classifier_probs and
  merge_classification_detection_output take all shard files of a run (paths
  or a glob) and give the same result as one unsharded run.
- Under ``torchrun --nproc_per_node G`` each process takes its own share (and
  its own GPU, LOCAL_RANK) and rank 0 writes the one output file.
- --engine: ``torch`` (the TorchScript file; on CPUs frozen with oneDNN fusion),
  ``openvino`` or ``onnxruntime`` (an ONNX export of the file, made once and
  cached beside it or in ~/.cache). ``auto`` (default): PyTorch on CUDA; on a
  CPU OpenVINO where installed, else ONNX Runtime, else PyTorch. --precision
  bf16 (``auto``: where OpenVINO runs on a CPU with AMX/AVX-512-BF16) is several
  times faster there with probabilities off by about 0.01 (see
  docs/benchmarks.md for the top-1 agreement); fp32 gives float32 results.
  --precision int8 --calibration-crops DIR (OpenVINO, never picked by auto):
  a copy of the model quantized on up to 300 crops of DIR (say, the training
  crops), made once and kept beside the ONNX export; about twice as fast as
  bf16 for ResNets (little gain for EfficientNets). Check its agreement with
  fp32 on your crops first (docs/benchmarks.md has ours).

Example:
    python -m classification.run_classifier model_compiled.pt crops \
        classifier_output.csv.gz --detections-json detections.json \
        --classifier-categories label_index.json --batch-size 64 --num-workers 2
    python -m classification.run_classifier model_compiled.pt photos \
        classifier_output_1of4.csv.gz --from-photos -d detections.json \
        --threshold 0.2 --shard 1/4 --num-workers 0

Output (CSV; gzip if the name ends in .gz; '-' for stdout): ``path`` (relative
to crops_dir) and one column per category, in label-index order.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from classification import (
    classifier_output,
    crop_data,
    engines,
    inference,
    model_files,
    models,
    shards,
    utils,
)
from classification.classifier_output import PartFile
from classification.distributed import Dist
from classification.shards import Shard, parse_shard, run_id
from detection.detector_output import (
    Detection,
    animal_category_ids,
    iter_detections,
    read_document,
    resolve_detector_version,
)

logger = logging.getLogger(__name__)

# fault injection for the tests: the process SIGKILLs itself after this many batches
KILL_ENV = 'CT_CLASSIFY_KILL_AFTER'


@dataclass(frozen=True)
class Crops:
    """The crops of a run, sorted by name; ``photos``/``boxes`` (from-photos runs)
    say where each is cut from."""
    names: list[str]
    photos: list[str] | None = None
    boxes: list[tuple[float, float, float, float]] | None = None

    def take(self, shard: Shard) -> Crops:
        return Crops(shard.take(self.names),
                     shard.take(self.photos) if self.photos is not None else None,
                     shard.take(self.boxes) if self.boxes is not None else None)

    def without(self, done: set[str]) -> Crops:
        keep = [i for i, n in enumerate(self.names) if n not in done]
        return Crops([self.names[i] for i in keep],
                     [self.photos[i] for i in keep] if self.photos is not None else None,
                     [self.boxes[i] for i in keep] if self.boxes is not None else None)

    def digest(self) -> str:
        if self.boxes is None:
            return shards.digest(self.names)
        return shards.digest(f'{n}\0{b!r}' for n, b in zip(self.names, self.boxes, strict=True))


def _detections(detections_json: str, threshold: float, version: str | None
                ) -> tuple[str, Iterator[Detection]]:
    doc = read_document(detections_json)
    version = resolve_detector_version(doc, version, detections_json)
    return version, iter_detections(doc, threshold, animal_category_ids(doc))


def expected_crops(detections_json: str, threshold: float, version: str | None) -> list[str]:
    """Crop paths (relative to the crops folder) for every animal detection >= threshold."""
    version, dets = _detections(detections_json, threshold, version)
    return [utils.crop_filename(d.image_file, d.index, version) for d in dets]


def list_crops(crops_dir: str, detections_json: str | None, threshold: float,
               version: str | None) -> tuple[list[str], list[str]]:
    """(crops present, crops expected but missing), both sorted."""
    root = Path(crops_dir)
    if not root.is_dir():
        raise utils.InputError(f'{crops_dir}: crops folder not found')
    if detections_json is None:
        found = sorted(p.relative_to(root).as_posix() for p in root.rglob('*.jpg'))
        if not found:
            raise utils.InputError(f'{crops_dir}: no crops (*.jpg files) in it')
        return found, []
    wanted = sorted(set(expected_crops(detections_json, threshold, version)))
    present: list[str] = []
    missing: list[str] = []
    for crop in wanted:
        (present if _is_file_inside(root, crop) else missing).append(crop)
    return present, missing


def _is_file_inside(root: Path, relative: str) -> bool:
    """Whether ``relative`` names a file inside ``root``; a path that would leave it
    (or is absolute) is logged and counts as missing, and the run goes on."""
    try:
        return utils.safe_join(root, relative).is_file()
    except utils.InputError as e:
        logger.warning('refused path: %s', e)
        return False


def photo_crops(photos_dir: str, detections_json: str, threshold: float,
                version: str | None) -> tuple[Crops, list[str]]:
    """(the crops to cut from photos, sorted by crop name; photos not found)."""
    root = Path(photos_dir)
    if not root.is_dir():
        raise utils.InputError(f'{photos_dir}: photos folder not found')
    version, dets = _detections(detections_json, threshold, version)
    rows = sorted({utils.crop_filename(d.image_file, d.index, version): (d.image_file, d.bbox)
                   for d in dets}.items())
    exists: dict[str, bool] = {}
    missing: list[str] = []
    keep = []
    for name, (photo, box) in rows:
        if photo not in exists:
            exists[photo] = _is_file_inside(root, photo)
            if not exists[photo]:
                missing.append(photo)
        if exists[photo]:
            keep.append((name, photo, box))
    return Crops([r[0] for r in keep], [r[1] for r in keep], [r[2] for r in keep]), missing


def dataset(root: str, crops: Crops, image_size: int,
            square: bool = False) -> crop_data.CropDataset:
    if crops.photos is not None and crops.boxes is not None:
        return crop_data.PhotoCropDataset(root, crops.photos, crops.boxes, image_size, square)
    return crop_data.CropDataset(root, crops.names, None, None, image_size)


def classify_into(part: PartFile, engine: engines.Engine, root: str, crops: Crops,
                  num_outputs: int, image_size: int, batch_size: int, num_workers: int,
                  device: torch.device, multilabel: bool = False,
                  info: model_files.ClassifierInfo | None = None, square: bool = False,
                  ) -> list[str]:
    """Classifies ``crops``, appending each batch's rows to ``part``; returns the
    crops that could not be read (also written there, without values)."""
    if not crops.names:
        return []
    ds = dataset(root, crops, image_size, square)
    loader = crop_data.make_loader(ds, batch_size, num_workers, device, persistent=False)
    mean, std = model_files.normalisation(info)
    unreadable: list[str] = []
    kill_after = int(os.environ.get(KILL_ENV, '0'))
    for k, (idx, probs, bad) in enumerate(inference.iter_probs(
            engine.run, loader, device, num_outputs, multilabel, mean, std), 1):
        if kill_after and k > kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        names = [crops.names[i] for i in idx.tolist()]
        failed = [crops.names[i] for i in bad.tolist()]
        unreadable.extend(failed)
        text = classifier_output.format_rows(names, probs, num_outputs)
        if failed:
            text += classifier_output.format_rows(failed, None, num_outputs)
        part.append(text)
    return unreadable


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = utils.make_parser(__doc__)
    parser.add_argument('model', help='TorchScript classifier file')
    parser.add_argument('crops_dir', help='folder with the crops (with --from-photos: the '
                                          'photos)')
    parser.add_argument('output', help="output CSV (.csv or .csv.gz), or '-' for stdout")
    parser.add_argument('-d', '--detections-json',
                        help='MegaDetector output JSON listing the expected crops')
    parser.add_argument('-t', '--threshold', type=utils.probability, default=0.0,
                        help='with -d: the crop_detections threshold (default: 0)')
    parser.add_argument('-v', '--detector-version',
                        help='with -d: version in the crop names (default: from info.detector)')
    parser.add_argument('-c', '--classifier-categories',
                        help='label index JSON {"0": "name", ...} naming the outputs '
                             "(default: the model file's labels, else columns 0, 1, ...)")
    parser.add_argument('--from-photos', action='store_true',
                        help='crops_dir holds the photos: cut each detection of -d from its '
                             'photo in memory instead of reading crop files')
    parser.add_argument('--square-crops', action='store_true',
                        help='with --from-photos: as crop_detections --square-crops')
    parser.add_argument('--image-size', type=utils.image_size, default=None,
                        help="model input size in pixels (default: the model file's own, "
                             'else 224; another size than the one it was trained at is '
                             'run with a warning)')
    parser.add_argument('--batch-size', type=utils.positive_int, default=1)
    parser.add_argument('--device', type=int, default=None,
                        help='CUDA device index (default: 0 if CUDA is available, else CPU; '
                             'under torchrun, LOCAL_RANK)')
    parser.add_argument('--num-workers', type=utils.nonneg_int, default=8,
                        help='data-loading processes (default: 8)')
    parser.add_argument('--engine', choices=engines.ENGINES, default='auto',
                        help='inference engine (default: auto, the fastest installed)')
    parser.add_argument('--precision', choices=engines.PRECISIONS, default='auto',
                        help='fp32, bf16 or int8 (default: auto, bf16 only with OpenVINO on a '
                             'CPU that has it; int8 only when asked, with OpenVINO and '
                             '--calibration-crops)')
    parser.add_argument('--calibration-crops', metavar='DIR',
                        help='with --precision int8: crops (.jpg/.png, searched recursively) '
                             'to quantize the model on; up to 300 are used')
    parser.add_argument('--bf16', action='store_true', help='same as --precision bf16')
    parser.add_argument('--shard', type=parse_shard, default=None,
                        metavar='K/N', help='classify only the K-th of N shares of the crops')
    args = parser.parse_args(argv)
    if args.bf16:
        if args.precision not in ('auto', 'bf16'):
            parser.error('--bf16 contradicts --precision ' + args.precision)
        args.precision = 'bf16'
    if (args.precision == 'int8') != (args.calibration_crops is not None):
        parser.error('--precision int8 and --calibration-crops go together')
    if args.from_photos and not args.detections_json:
        parser.error('--from-photos needs --detections-json')
    if args.square_crops and not args.from_photos:
        parser.error('--square-crops needs --from-photos (crop files are cut already)')
    if args.output == '-' and (args.shard or int(os.environ.get('WORLD_SIZE', '1')) > 1):
        parser.error("a sharded or torchrun run needs an output file, not '-'")
    return args


def model_categories(model: torch.jit.ScriptModule, info: model_files.ClassifierInfo | None,
                     given: str | None, image_size: int, device: torch.device,
                     source: str) -> list[str]:
    """The output names; a file with no classifier metadata is run once on a blank
    image, which also refuses a detector given as a classifier."""
    n = None if info is not None else model_files.probe_outputs(model, image_size, device,
                                                                 source)
    if given:
        categories = utils.load_label_index(given)
        model_files.check_labels(info, categories, given)
        if n is not None and len(categories) != n:
            raise utils.InputError(f'{given}: {len(categories)} categories but the model has '
                                   f'{n} outputs')
        return categories
    return list(info.labels) if info is not None else [str(i) for i in range(n or 0)]


def int8_settings(model_path: str, calibration_crops: str | None, image_size: int,
                  info: model_files.ClassifierInfo | None) -> engines.Int8 | None:
    """How an int8 run quantizes the model (None unless --calibration-crops)."""
    if calibration_crops is None:
        return None
    from classification import quantize
    calibration = quantize.calibration_set(calibration_crops)
    mean, std = model_files.normalisation(info)
    key = quantize.int8_key(engines.file_sha256(model_path), calibration, image_size, mean, std)
    return engines.Int8(calibration, mean, std, key)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    utils.setup_logging()
    if args.detector_version is not None:
        utils.check_detector_version(args.detector_version)
    utils.check_one_stdin(args.detections_json, args.classifier_categories)
    utils.check_output_path(args.output, [args.model, args.detections_json,
                                          args.classifier_categories])
    dist = Dist.from_env(models.pick_device(args.device), timeout_minutes=24 * 60)
    device = dist.device
    model, info, multilabel = model_files.load_classifier(args.model, device)
    image_size = model_files.check_image_size(info, args.image_size)
    categories = model_categories(model, info, args.classifier_categories, image_size, device,
                                  args.model)
    if multilabel:
        logger.info('multi-label model: one sigmoid probability per category')
    engine_name = engines.resolve_engine(args.engine, device)
    precision = engines.resolve_precision(engine_name, args.precision, device)
    int8 = int8_settings(args.model, args.calibration_crops, image_size, info)
    if args.from_photos:
        crops, missing_photos = photo_crops(args.crops_dir, args.detections_json,
                                            args.threshold, args.detector_version)
        missing: list[str] = []
        for photo in missing_photos[:20]:
            logger.warning('missing photo: %s', photo)
    else:
        names, missing = list_crops(args.crops_dir, args.detections_json, args.threshold,
                                    args.detector_version)
        crops, missing_photos = Crops(names), []
        for crop in missing[:20]:
            logger.warning('missing crop: %s', crop)
    shard = args.shard or Shard()
    run = run_id(
        model=engines.file_sha256(args.model), crops=crops.digest(), categories=categories,
        image_size=image_size, engine=engine_name, precision=precision, multilabel=multilabel,
        from_photos=args.from_photos, square=args.square_crops, shards=shard.n,
        **({'int8': int8.key} if int8 else {}))
    mine = shard.sub(dist.rank, dist.world_size) if dist.enabled else shard
    tmpdir = tempfile.TemporaryDirectory() if args.output == '-' else None
    out_base = os.path.join(tmpdir.name, 'out') if tmpdir else args.output
    part = PartFile(classifier_output.part_path(out_base, mine if dist.enabled else None),
                    f'{run}/{mine.k}of{mine.n}', categories)
    try:
        part.lock()
        share = crops.take(mine)
        done = part.done(set(share.names))
        todo = share.without(done)
        if done:
            logger.info('resuming: %d crops done, %d to go', len(done), len(todo.names))
        engine = engines.load_engine(engine_name, precision, args.model, model, image_size,
                                     device, int8)
        logger.info('engine %s, %s', engine.name, engine.precision)
        with model_files.onednn_fusion(device.type == 'cpu' and engine.name == 'torch'
                                       and precision == 'fp32'):
            bad = classify_into(part, engine, args.crops_dir, todo, len(categories), image_size,
                                args.batch_size, args.num_workers, device, multilabel, info,
                                args.square_crops)
        part.close()
        for crop in bad[:20]:
            logger.warning('unreadable crop: %s', crop)
        dist.barrier()
        if dist.is_main:
            parts = [part] if not dist.enabled else [
                PartFile(classifier_output.part_path(out_base, shard.sub(r, dist.world_size)),
                         '', categories) for r in range(dist.world_size)]
            manifest = ({'run': run, 'shard': shard.k, 'shards': shard.n}
                        if shard.n > 1 else None)
            n, n_bad = classifier_output.finish(args.output, parts, categories, manifest)
            lost = (f'{len(missing_photos)} photos missing' if args.from_photos
                    else f'{len(missing)} expected crops missing')
            logger.info('classified %d crops; %s, %d unreadable%s', n, lost, n_bad,
                        '' if args.output == '-' else f'; wrote {args.output}')
        dist.barrier()
    finally:
        part.close()
        if tmpdir is not None:
            tmpdir.cleanup()
        dist.close()
    return 0


if __name__ == '__main__':
    raise SystemExit(utils.run_cli(main))
