r"""Evaluate a trained classifier on the splits of a classification dataset.

Takes the params.json of a training run and a checkpoint: a normal training
checkpoint (``ckpt_<epoch>.pt``, which is also exported to TorchScript beside
it as ``ckpt_<epoch>_compiled.pt``) or a TorchScript file. A classifier with
other labels (e.g. MegaClassifier) is evaluated through --target-mapping
(dataset label -> classifier labels, from map_classification_categories) and
its own --label-index: its probabilities are summed per dataset label.

Example:
    python -m classification.evaluate_model run1/20260101_120000/params.json \
        run1/20260101_120000/ckpt_12.pt --output-dir run1/20260101_120000 \
        --splits train val test --batch-size 256

Writes into --output-dir:
    outputs_<split>.csv.gz   path, label, weight, one probability column per label
    overall_metrics.csv      split, loss, acc_top1, acc_top3, loss_weighted,
                             acc_weighted_top1, acc_weighted_top3
    confusion_matrices.npz   one labels x labels array per split (rows = truth)
    label_stats.csv          split, label, precision, recall
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import nn

from classification import train_utils, utils

logger = logging.getLogger(__name__)

SPLITS = ('train', 'val', 'test')


def mapping_matrix(target_mapping: dict[str, list[str]], model_labels: Sequence[str],
                   labels: Sequence[str], source: str) -> np.ndarray:
    """0/1 matrix (model outputs x dataset labels) from {label: [model labels]}."""
    mat = np.zeros((len(model_labels), len(labels)), dtype=np.float32)
    col = {name: j for j, name in enumerate(labels)}
    row = {name: i for i, name in enumerate(model_labels)}
    for target, sources in target_mapping.items():
        if target not in col:
            continue
        for s in sources:
            if s not in row:
                raise utils.InputError(f'{source}: {s!r} (under {target!r}) is not in the '
                                       'classifier label index')
            mat[row[s], col[target]] = 1.0
    if (mat.sum(axis=1) > 1).any():
        raise utils.InputError(f'{source}: a classifier label is mapped to two targets')
    return mat


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = utils.make_parser(__doc__)
    parser.add_argument('params_json', help="params.json of the training run")
    parser.add_argument('ckpt_path', help='training checkpoint or TorchScript model')
    parser.add_argument('-o', '--output-dir', required=True, help='where to write the results')
    parser.add_argument('--splits', nargs='*', choices=SPLITS, default=[],
                        help='splits to evaluate (default: all three)')
    parser.add_argument('--target-mapping',
                        help='JSON {dataset label: [classifier labels]} for a classifier '
                             'with other labels (needs --label-index)')
    parser.add_argument('--label-index', help="the classifier's own label index JSON")
    parser.add_argument('--model-name', choices=train_utils.VALID_MODELS,
                        help='architecture (default: from params.json)')
    parser.add_argument('--batch-size', type=utils.positive_int)
    parser.add_argument('--num-workers', type=utils.nonneg_int)
    parser.add_argument('--dataset-dir', help='dataset folder (default: from params.json)')
    parser.add_argument('--image-size', type=utils.positive_int,
                        help='input size (default: from params.json)')
    parser.add_argument('--device', help='torch device (default: cuda if available)')
    args = parser.parse_args(argv)
    if args.target_mapping and not args.label_index:
        parser.error('--target-mapping needs --label-index')
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    utils.setup_logging()
    params = utils.require_mapping(utils.read_json(args.params_json), args.params_json)
    get = lambda key, default=None: getattr(args, key, None) or params.get(key, default)  # noqa: E731
    dataset_dir = get('dataset_dir')
    model_name = get('model_name')
    image_size = get('image_size') or train_utils.default_image_size(model_name)
    batch_size, num_workers = get('batch_size', 64), get('num_workers', 0)
    crops_dir = params.get('cropped_images_dir')
    if not dataset_dir or not crops_dir or not model_name:
        raise utils.InputError(f'{args.params_json}: needs dataset_dir, cropped_images_dir '
                               'and model_name')
    labels = utils.load_label_index(Path(dataset_dir) / 'label_index.json')
    model_labels = utils.load_label_index(args.label_index) if args.label_index else labels
    device = train_utils.pick_device(args.device)

    multilabel = bool(params.get('multilabel', False))
    model: nn.Module
    if train_utils.is_torchscript_file(args.ckpt_path):
        model, marked = train_utils.load_torchscript_info(args.ckpt_path, device)
        multilabel = multilabel or marked
    else:
        state, _ = train_utils.checkpoint_state_dict(args.ckpt_path)
        model = train_utils.build_model(model_name, len(model_labels))
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise utils.InputError(f'{args.ckpt_path}: does not fit {model_name} with '
                                   f'{len(model_labels)} labels ({str(e)[:200]})') from e
        out = train_utils.export_torchscript(model, model_name, image_size,
                                             train_utils.compiled_path(args.ckpt_path),
                                             multilabel)
        logger.info('TorchScript model: %s', out)
        model = model.to(device)

    aggregate = None
    if args.target_mapping:
        aggregate = mapping_matrix(utils.read_json(args.target_mapping), model_labels, labels,
                                   args.target_mapping)
    splits = args.splits or list(SPLITS)
    frames = train_utils.load_split_frames(dataset_dir, labels, splits, multilabel)
    results = train_utils.evaluate_frames(model, frames, crops_dir, image_size, batch_size,
                                          num_workers, device, len(model_labels), aggregate,
                                          multilabel)
    table = train_utils.write_evaluation(Path(args.output_dir),
                                         {s: frames[s] for s in results}, results, labels,
                                         multilabel)
    train_utils.log_metrics(table)
    return 0


if __name__ == '__main__':
    raise SystemExit(utils.run_cli(main))
