r"""Run a TorchScript classifier on crops; write one probability per category.

The crops to classify are listed from --detections-json (every animal detection
with confidence at least --threshold, named as crop_detections names them), or
are all ``*.jpg`` files under crops_dir. Crops that are missing or cannot be
read are reported on stderr with their count and left out of the output.
Rows are sorted by path. A model exported from train_classifier --multilabel
(marked inside its TorchScript file) gives one sigmoid probability per category
(they need not sum to 1); other models give softmax probabilities.

Speed on CPUs (measured in bench/bench_inference.py): the model is frozen and
run with TorchScript's oneDNN graph fusion (convolutions fused with batch
norms and activations) on channels-last inputs; probabilities change only at
float32 rounding level, and it is about 1.5x faster than the model as loaded.
JPEG crops are decoded at reduced scale when still at least --image-size
(libjpeg draft mode), batched as 8-bit pixels and normalized a batch at a time
(the same values as per-image ToTensor + Normalize); with --num-workers 0 the
next batch is read on a background thread while the model runs. --bf16 runs the
model under bfloat16 autocast: faster again on CPUs with AMX/AVX-512-BF16 and
on GPUs, with probabilities off by up to about 0.01 (top-1 labels rarely
change). Torch uses one thread per core; on a machine with few cores use
--num-workers 0, since loader processes compete with the model for the cores.

Example:
    python -m classification.run_classifier model_compiled.pt crops \
        classifier_output.csv.gz --detections-json detections.json \
        --classifier-categories label_index.json --image-size 224 \
        --batch-size 64 --num-workers 2

Output (CSV; gzip if the name ends in .gz; '-' for stdout): ``path`` (relative
to crops_dir) and one column per category, in label-index order.
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from classification import crop_data, inference, model_files, models, utils
from detection.detector_output import (
    animal_category_ids,
    check_document,
    iter_detections,
    resolve_detector_version,
)

logger = logging.getLogger(__name__)


def expected_crops(detections_json: str, threshold: float, version: str | None) -> list[str]:
    """Crop paths (relative to the crops folder) for every animal detection >= threshold."""
    doc = check_document(utils.read_json(detections_json), detections_json)
    version = resolve_detector_version(doc, version, detections_json)
    return [utils.crop_filename(d.image_file, d.index, version)
            for d in iter_detections(doc, threshold, animal_category_ids(doc))]


def list_crops(crops_dir: str, detections_json: str | None, threshold: float,
               version: str | None) -> tuple[list[str], list[str]]:
    """(crops present, crops expected but missing), both sorted."""
    root = Path(crops_dir)
    if not root.is_dir():
        raise utils.InputError(f'{crops_dir}: crops folder not found')
    if detections_json is None:
        return sorted(p.relative_to(root).as_posix() for p in root.rglob('*.jpg')), []
    wanted = sorted(set(expected_crops(detections_json, threshold, version)))
    present: list[str] = []
    missing: list[str] = []
    for crop in wanted:
        (present if utils.safe_join(root, crop).is_file() else missing).append(crop)
    return present, missing


def classify(model: torch.nn.Module | torch.jit.ScriptModule, crops_dir: str,
             crops: Sequence[str], categories: Sequence[str], image_size: int, batch_size: int,
             num_workers: int, device: torch.device, bf16: bool = False,
             multilabel: bool = False, info: model_files.ClassifierInfo | None = None
             ) -> tuple[pd.DataFrame, list[str]]:
    """(probabilities table, unreadable crops); ``multilabel``: a sigmoid per class
    instead of the softmax."""
    ds = crop_data.CropDataset(crops_dir, crops, None, None, image_size)
    loader = crop_data.make_loader(ds, batch_size, num_workers, device)
    mean, std = model_files.normalisation(info)
    probs, bad = inference.predict_probs(model, loader, device, len(categories), bf16=bf16,
                                         multilabel=multilabel, mean=mean, std=std)
    keep = sorted(set(range(len(crops))) - set(bad))
    df = pd.DataFrame(probs[keep], columns=list(categories))
    df.insert(0, 'path', [crops[i] for i in keep])
    return df, [crops[i] for i in bad]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = utils.make_parser(__doc__)
    parser.add_argument('model', help='TorchScript classifier file')
    parser.add_argument('crops_dir', help='folder with the crops')
    parser.add_argument('output', help="output CSV (.csv or .csv.gz), or '-' for stdout")
    parser.add_argument('-d', '--detections-json',
                        help='MegaDetector output JSON listing the expected crops')
    parser.add_argument('-t', '--threshold', type=utils.probability, default=0.0,
                        help='with -d: the crop_detections threshold (default: 0)')
    parser.add_argument('-v', '--detector-version',
                        help='with -d: version in the crop names (default: from info.detector)')
    parser.add_argument('-c', '--classifier-categories',
                        help='label index JSON {"0": "name", ...} naming the outputs '
                             '(default: columns named 0, 1, ...)')
    parser.add_argument('--image-size', type=utils.positive_int, default=None,
                        help="model input size in pixels (default: the model file's own, "
                             'else 224; another size than the one it was trained at is '
                             'run with a warning)')
    parser.add_argument('--batch-size', type=utils.positive_int, default=1)
    parser.add_argument('--device', type=int, default=None,
                        help='CUDA device index (default: 0 if CUDA is available, else CPU)')
    parser.add_argument('--num-workers', type=utils.nonneg_int, default=8,
                        help='data-loading processes (default: 8)')
    parser.add_argument('--bf16', action='store_true',
                        help='bfloat16 autocast: faster on AMX CPUs and GPUs, probabilities '
                             'differ from float32 in about the third decimal')
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    utils.setup_logging()
    if args.detector_version is not None:
        utils.check_detector_version(args.detector_version)
    device = models.pick_device(args.device)
    model, info, multilabel = model_files.load_classifier(args.model, device)
    image_size = model_files.check_image_size(info, args.image_size)
    if multilabel:
        logger.info('multi-label model: one sigmoid probability per category')
    if args.bf16:
        # autocast runs faster on the unfrozen graph with channels-last weights
        model = model.to(memory_format=torch.channels_last)
    elif device.type == 'cpu':
        model = model_files.optimize_for_cpu(model)
    crops, missing = list_crops(args.crops_dir, args.detections_json, args.threshold,
                                args.detector_version)
    if args.classifier_categories:
        categories = utils.load_label_index(args.classifier_categories)
        model_files.check_labels(info, categories, args.classifier_categories)
    elif info is not None:
        categories = list(info.labels)
    else:
        with torch.no_grad():
            n = model(torch.zeros(1, 3, image_size, image_size, device=device)).shape[1]
        categories = [str(i) for i in range(n)]
    for crop in missing[:20]:
        logger.warning('missing crop: %s', crop)
    with model_files.onednn_fusion(device.type == 'cpu' and not args.bf16):
        df, bad = classify(model, args.crops_dir, crops, categories, image_size,
                           args.batch_size, args.num_workers, device, args.bf16,
                           multilabel, info)
    for crop in bad[:20]:
        logger.warning('unreadable crop: %s', crop)
    utils.write_csv(df, args.output, float_format='%.6g')
    logger.info('classified %d crops; %d expected crops missing, %d unreadable%s', len(df),
                len(missing), len(bad), '' if args.output == '-' else f'; wrote {args.output}')
    return 0


if __name__ == '__main__':
    raise SystemExit(utils.run_cli(main))
