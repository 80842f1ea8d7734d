r"""Evaluate a trained classifier on the splits of a classification dataset.

Takes the params.json of a training run and a checkpoint: a normal training
checkpoint (``ckpt_<epoch>.pt``, which is also exported to TorchScript beside
it as ``ckpt_<epoch>_compiled.pt``) or a TorchScript file. A classifier with
other labels (e.g. MegaClassifier) is evaluated through --target-mapping
(target label -> classifier labels, from map_classification_categories) and
its own --label-index: its probabilities are summed per target and renormalised
over the mapped classifier labels, so each row sums to 1. Every target of the
mapping is kept (e.g. 'other', after the dataset's labels), and the targets'
label index is written as label_index.json.

Relative folders in params.json are taken from the run folder (the folder of
params.json), so this works from any working folder; --dataset-dir and
--crops-dir override them. Under torchrun each process evaluates its share of
the crops and rank 0 writes the files.

Example:
    python -m classification.evaluate_model run1/20260101_120000/params.json \
        run1/20260101_120000/ckpt_12.pt --output-dir run1/20260101_120000 \
        --splits train val test --batch-size 256

``--splits`` with no value only exports the TorchScript model (as the original).

Writes into --output-dir:
    outputs_<split>.csv.gz   path, label, weight (label-balancing with
                             --label-weighted runs, else 1), one probability column
                             per label
    overall_metrics.csv      split, loss, loss_weighted, acc_top1, acc_top3,
                             acc_weighted_top1, acc_weighted_top3 (accuracies in %)
    confusion_matrices.npz   one labels x labels array per split (rows = truth)
    label_stats.csv          split, label, precision, recall, f1 (fractions; precision 0
                             when a label is never predicted, recall and f1 empty when
                             absent), count (crops of the label), predicted (crops
                             predicted as it)
    report/index.html        the evaluation report: figures and tables per split
                             (see classification/reports.py)
    label_index.json         with --target-mapping: the targets, in column order
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from classification import (
    crop_data,
    inference,
    metrics,
    model_files,
    models,
    report_pages,
    reports,
    utils,
)
from classification.distributed import Dist
from classification.train_config import resolve_run_path

logger = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = utils.make_parser(__doc__)
    parser.add_argument('params_json', help="params.json of the training run")
    parser.add_argument('ckpt_path', help='training checkpoint or TorchScript model')
    parser.add_argument('-o', '--output-dir', required=True, help='where to write the results')
    parser.add_argument('--splits', nargs='*', choices=crop_data.SPLITS, default=None,
                        help='splits to evaluate (default: all three; the flag with no '
                             'value: only export the TorchScript model)')
    parser.add_argument('--target-mapping',
                        help='JSON {target label: [classifier labels]} for a classifier '
                             'with other labels (needs --label-index)')
    parser.add_argument('--label-index', help="the classifier's own label index JSON")
    parser.add_argument('--model-name', choices=models.VALID_MODELS,
                        help='architecture (default: from params.json)')
    parser.add_argument('--batch-size', type=utils.positive_int)
    parser.add_argument('--num-workers', type=utils.nonneg_int)
    parser.add_argument('--dataset-dir', help='dataset folder (default: from params.json)')
    parser.add_argument('--crops-dir', help='crops folder (default: from params.json)')
    parser.add_argument('--image-size', type=utils.image_size,
                        help='input size (default: the model file\'s, else params.json\'s)')
    parser.add_argument('--device', help='torch device (default: cuda if available)')
    parser.add_argument('--report', metavar='DIR',
                        help='the evaluation report folder (default: <output-dir>/report)')
    parser.add_argument('--no-report', action='store_true',
                        help='write no report (the CSV files only)')
    args = parser.parse_args(argv)
    if args.target_mapping and not args.label_index:
        parser.error('--target-mapping needs --label-index')
    return args


_LIMITS = {'image_size': (8, utils.MAX_IMAGE_SIZE), 'batch_size': (1, None),
           'num_workers': (0, None)}


def _setting(given: Any, params: dict[str, Any], key: str, default: Any = None) -> Any:
    """The command line's value when given (zero included), else params.json's
    (checked: a whole number in range for the sizes and counts)."""
    if given is not None:
        return given
    value = params.get(key)
    if value is None:
        return default
    if key in _LIMITS:
        low, high = _LIMITS[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (
                high is not None and value > high):
            raise utils.InputError(f'params.json: {key} {value!r} is not a whole number '
                                   f'from {low}' + (f' to {high}' if high else ''))
    return value


def check_against_run(run_dir: Path, model_labels: Sequence[str], dataset_dir: str,
                      label_index: str | None) -> None:
    """Refuses labels other than the run's own (its copy of label_index.json), and
    warns when the dataset's splits are not those the run was trained with."""
    if (run_dir / 'label_index.json').is_file() and not label_index:
        diff = crop_data.label_difference(
            utils.load_label_index(run_dir / 'label_index.json'), model_labels)
        if diff:
            raise utils.InputError(f'{dataset_dir}: not the labels of the run in {run_dir}: '
                                   f'{diff}')
    if (run_dir / 'splits.json').is_file() and (Path(dataset_dir) / 'splits.json').is_file():
        diff = crop_data.split_difference(crop_data.read_splits(run_dir / 'splits.json'),
                                          crop_data.read_splits(Path(dataset_dir) /
                                                                'splits.json'))
        if diff:
            logger.warning('%s: %s; a "val" or "test" figure may include crops the model '
                           'was trained on', dataset_dir, diff)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    utils.setup_logging()
    params_path = Path(args.params_json)
    params = dict(utils.require_mapping(utils.read_json(params_path), args.params_json))
    run_dir = params_path.parent
    model_name = _setting(args.model_name, params, 'model_name')
    dataset_dir = args.dataset_dir or params.get('dataset_dir')
    crops_dir = args.crops_dir or params.get('cropped_images_dir')
    if not dataset_dir or not crops_dir or not model_name:
        raise utils.InputError(f'{args.params_json}: needs dataset_dir, cropped_images_dir '
                               'and model_name')
    if not args.dataset_dir:
        dataset_dir = str(resolve_run_path(run_dir, dataset_dir))
    if not args.crops_dir:
        crops_dir = str(resolve_run_path(run_dir, crops_dir))
    batch_size = _setting(args.batch_size, params, 'batch_size', 64)
    num_workers = _setting(args.num_workers, params, 'num_workers', 0)
    labels = utils.load_label_index(Path(dataset_dir) / 'label_index.json')
    model_labels = utils.load_label_index(args.label_index) if args.label_index else labels
    check_against_run(run_dir, model_labels, dataset_dir, args.label_index)
    report_dir = None if args.no_report else report_pages.check_report_dir(
        args.report or Path(args.output_dir) / 'report', report_pages.EVALUATION)
    dist = Dist.from_env(models.pick_device(args.device))
    device = dist.device
    multilabel = params.get('multilabel', False)
    if not isinstance(multilabel, bool):
        raise utils.InputError(f'params.json: multilabel {multilabel!r} is not true or false')
    image_size = _setting(args.image_size, params, 'image_size',
                          models.default_image_size(model_name))

    try:
        model: nn.Module
        info: model_files.ClassifierInfo | None
        if model_files.is_torchscript_file(args.ckpt_path):
            model, info, marked = model_files.load_classifier(args.ckpt_path, device)
            multilabel = multilabel or marked
            image_size = model_files.check_image_size(info, args.image_size, image_size)
            model_files.check_labels(info, model_labels,
                                     args.label_index or f'{dataset_dir}/label_index.json')
            if info is None:
                n = model_files.probe_outputs(model, image_size, device, args.ckpt_path)
                if n != len(model_labels):
                    raise utils.InputError(f'{args.ckpt_path}: {n} outputs, but '
                                           f'{len(model_labels)} labels')
        else:
            state, _ = model_files.checkpoint_state_dict(args.ckpt_path)
            model = models.build_model(model_name, len(model_labels))
            try:
                model.load_state_dict(state)
            except RuntimeError as e:
                raise utils.InputError(f'{args.ckpt_path}: does not fit {model_name} with '
                                       f'{len(model_labels)} labels ({str(e)[:200]})') from e
            info = model_files.ClassifierInfo(model_name, image_size, tuple(model_labels),
                                              multilabel)
            compiled = model_files.compiled_path(args.ckpt_path)
            if compiled.is_file():
                _, old_info, _ = model_files.load_classifier(compiled, torch.device('cpu'))
                if old_info is not None and old_info != info:
                    raise utils.InputError(
                        f'{compiled}: exists with other settings ({old_info.model_name}, '
                        f'{old_info.image_size} px, multilabel {old_info.multilabel}, '
                        f'{len(old_info.labels)} labels) than these ({info.model_name}, '
                        f'{info.image_size} px, multilabel {info.multilabel}, '
                        f'{len(info.labels)} labels): check params.json, or evaluate the '
                        'TorchScript file itself')
            if dist.is_main:
                out = model_files.export_torchscript(model, info, compiled)
                logger.info('TorchScript model: %s', out)
            model = model.to(device)
        splits = list(crop_data.SPLITS) if args.splits is None else args.splits
        if not splits:
            logger.info('no splits given: only exported the model')
            return 0

        matrix, targets = None, list(labels)
        if args.target_mapping:
            mapping = utils.require_mapping(utils.read_json(args.target_mapping),
                                            args.target_mapping)
            matrix, targets = inference.target_matrix(dict(mapping), model_labels, labels,
                                                      args.target_mapping)
        frames = crop_data.load_split_frames(dataset_dir, targets, splits, multilabel)
        crop_data.add_eval_weights(frames, bool(params.get('label_weighted', False)),
                                  len(targets))
        mean, std = model_files.normalisation(info)
        results = inference.evaluate_frames(model, frames, crops_dir, image_size, batch_size,
                                            num_workers, device, len(model_labels), matrix,
                                            multilabel, dist, mean, std)
        if dist.is_main:
            out_dir = Path(args.output_dir)
            table = metrics.write_evaluation(out_dir, {s: frames[s] for s in results}, results,
                                             targets, multilabel)
            if matrix is not None:
                utils.write_json(utils.label_index_dict(targets), out_dir / 'label_index.json')
            metrics.log_metrics(table)
            if report_dir is not None:
                reports.report_from_outputs(out_dir, report_dir, crops_dir,
                                            Path(dataset_dir) / 'classification_ds.csv',
                                            list(results), multilabel)
    finally:
        dist.close()
    return 0


if __name__ == '__main__':
    raise SystemExit(utils.run_cli(main))
