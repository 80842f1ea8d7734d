r"""Train a species classifier on the crops of a classification dataset.

Reads classification_ds.csv, label_index.json and splits.json from
dataset_dir (made by create_classification_dataset) and the crops from
cropped_images_dir. Trains a torchvision ResNet or an efficientnet-pytorch
EfficientNet (from scratch, from ImageNet weights with --pretrained, or from
a checkpoint with --pretrained PATH), evaluates on val after every epoch,
stops after --patience epochs without a better val top-1 accuracy, then
evaluates the best epoch on every split and exports it to TorchScript.

Example:
    python -m classification.train_classifier run1 crops \
        --model-name resnet18 --image-size 96 --epochs 20 --batch-size 64 \
        --lr 1e-3 --label-weighted --logdir run1 --num-workers 2 --seed 0

Writes into a new folder <logdir>/<YYYYmmdd_HHMMSS>/ (or the --resume folder):
    params.json                every argument of the run
    ckpt_<epoch>.pt            model weights of each new best epoch
    ckpt_last.pt               full training state of the last epoch (for --resume)
    ckpt_<best>_compiled.pt    TorchScript export of the best epoch
    events.out.tfevents.*      TensorBoard logs (loss and accuracy per split; with
                               --log-extreme-examples N, each label's N most
                               confident right and wrong crops per split and epoch)
    outputs_<split>.csv.gz, overall_metrics.csv, confusion_matrices.npz,
    label_stats.csv            evaluation of the best epoch (as evaluate_model)
"""
from __future__ import annotations

import argparse
import logging
import random
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import UnidentifiedImageError
from torch.utils.data import WeightedRandomSampler
from torch.utils.tensorboard import SummaryWriter

from classification import train_utils, utils

logger = logging.getLogger(__name__)

SPLITS = ('train', 'val', 'test')


def example_weights(df: pd.DataFrame, weight_by_conf: bool | str) -> np.ndarray:
    """Per-crop loss weights: 1, the detection confidence, or the confidence
    calibrated through an isotonic-regression .npz (arrays ``x`` and ``y``)."""
    conf = df['confidence'].to_numpy(dtype=np.float64)
    if weight_by_conf is False:
        return np.ones(len(df))
    if weight_by_conf is True:
        return conf
    try:
        with np.load(weight_by_conf, allow_pickle=False) as npz:
            x, y = npz['x'], npz['y']
    except (OSError, KeyError, ValueError) as e:
        raise utils.InputError(f'--weight-by-detection-conf {weight_by_conf}: expected an .npz '
                               f'with arrays x and y ({e})') from e
    return np.interp(conf, x, y)


def label_sampler(labels: np.ndarray, generator: torch.Generator) -> WeightedRandomSampler:
    """Samples every label equally often (weights 1 / crops of the label)."""
    counts = np.bincount(labels)
    w = 1.0 / counts[labels]
    return WeightedRandomSampler(w.tolist(), len(labels),
                                 replacement=True, generator=generator)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def log_extreme_examples(writer: SummaryWriter, ds: train_utils.CropDataset, split: str,
                         result: train_utils.EpochResult, labels: Sequence[str], n: int,
                         epoch: int) -> None:
    """For each label, its ``n`` most confident true positives, false positives and
    false negatives of this epoch: images (as the model sees them, before
    normalization) under ``<split>/<label>/<tp|fp|fn>``, and a text table of their
    crop paths, true labels, predictions and confidences under the same tag."""
    if result.examples is None or n <= 0:
        return
    rows, true, pred, conf = result.examples
    to_pixels = train_utils.eval_pixels(ds.image_size)
    for k, label in enumerate(labels):
        for kind, pos in train_utils.extreme_examples(true, pred, conf, k, n).items():
            images, lines = [], []
            for p in pos:
                path = ds.paths[int(rows[p])]
                try:
                    images.append(to_pixels(train_utils.open_crop(ds.root / path,
                                                                  ds.image_size)))
                except (OSError, UnidentifiedImageError, ValueError):
                    continue
                lines.append(f'| {path} | {labels[int(true[p])]} | {labels[int(pred[p])]} '
                             f'| {conf[p]:.3f} |')
            if images:
                tag = f'{split}/{label}/{kind}'
                writer.add_images(tag, torch.stack(images), epoch, dataformats='NHWC')
                writer.add_text(tag, '| crop | label | predicted | confidence |\n'
                                '|---|---|---|---|\n' + '\n'.join(lines), epoch)


def train(args: argparse.Namespace, run_dir: Path) -> pd.DataFrame:
    """The whole run; returns the overall metrics of the best epoch."""
    labels = utils.load_label_index(Path(args.dataset_dir) / 'label_index.json')
    frames = train_utils.load_split_frames(args.dataset_dir, labels, SPLITS, args.multilabel)
    for split in ('train', 'val'):
        if frames[split].empty:
            raise utils.InputError(f'{args.dataset_dir}: the {split} split has no crops')
    for df in frames.values():
        df['weight'] = example_weights(df, args.weight_by_detection_conf)
    device = train_utils.pick_device(args.device)
    seed_everything(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    model = train_utils.build_model(args.model_name, len(labels), args.pretrained)
    model = model.to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr,
                                  weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(args.epochs, 1))

    size = args.image_size
    datasets = {s: train_utils.CropDataset(
        args.cropped_images_dir, df['path'].tolist(),
        df['label_set' if args.multilabel else 'label_idx'].tolist(), df['weight'].tolist(),
        train_utils.train_transform(size) if s == 'train' else train_utils.eval_transform(size),
        size, len(labels) if args.multilabel else None) for s, df in frames.items()}
    sampler = (label_sampler(frames['train']['label_idx'].to_numpy(), gen)
               if args.label_weighted else None)
    train_loader = train_utils.make_loader(datasets['train'], args.batch_size, args.num_workers,
                                           device, shuffle=True, sampler=sampler, generator=gen)
    eval_loaders = {s: train_utils.make_loader(datasets[s], args.batch_size, args.num_workers,
                                               device) for s in ('val', 'test')
                    if not frames[s].empty}

    start_epoch, best_acc, best_epoch = 0, -1.0, -1
    last = run_dir / 'ckpt_last.pt'
    if last.exists():
        _, state = train_utils.checkpoint_state_dict(last)
        model.load_state_dict(state['model'])
        optimizer.load_state_dict(state['optimizer'])
        scheduler.load_state_dict(state['scheduler'])
        torch.set_rng_state(state['torch_rng'])
        gen.set_state(state['sampler_rng'])
        start_epoch, best_acc, best_epoch = state['epoch'] + 1, state['best_acc'], \
            state['best_epoch']
        logger.info('resuming %s at epoch %d (best val top-1 %.3f at epoch %d)', run_dir,
                    start_epoch, best_acc, best_epoch)

    writer = SummaryWriter(str(run_dir))
    try:
        for epoch in range(start_epoch, args.epochs):
            t0 = time.time()
            train_utils.set_finetune(model, epoch < args.finetune)
            tr = train_utils.run_epoch(model, train_loader, device, optimizer,
                                       desc=f'epoch {epoch} train')
            va = train_utils.run_epoch(model, eval_loaders['val'], device,
                                       desc=f'epoch {epoch} val')
            scheduler.step()
            for split, res in (('train', tr), ('val', va)):
                for k, v in res.metrics().items():
                    writer.add_scalar(f'{split}/{k}', v, epoch)
            writer.add_scalar('lr', optimizer.param_groups[0]['lr'], epoch)
            for split, res in (('train', tr), ('val', va)):
                log_extreme_examples(writer, datasets[split], split, res, labels,
                                     args.log_extreme_examples, epoch)
            improved = va.acc_top1 > best_acc
            if improved:
                best_acc, best_epoch = va.acc_top1, epoch
                with utils.atomic_path(run_dir / f'ckpt_{epoch}.pt') as tmp:
                    torch.save({'model': model.state_dict(), 'epoch': epoch}, tmp)
                if 'test' in eval_loaders:
                    te = train_utils.run_epoch(model, eval_loaders['test'], device,
                                               desc=f'epoch {epoch} test')
                    for k, v in te.metrics().items():
                        writer.add_scalar(f'test/{k}', v, epoch)
                    log_extreme_examples(writer, datasets['test'], 'test', te, labels,
                                         args.log_extreme_examples, epoch)
            with utils.atomic_path(last) as tmp:
                torch.save({'model': model.state_dict(), 'optimizer': optimizer.state_dict(),
                            'scheduler': scheduler.state_dict(), 'epoch': epoch,
                            'best_acc': float(best_acc), 'best_epoch': best_epoch,
                            'torch_rng': torch.get_rng_state(),
                            'sampler_rng': gen.get_state()}, tmp)
            logger.info('epoch %d: train loss %.3f top-1 %.3f | val loss %.3f top-1 %.3f%s '
                        '(%.0f s)', epoch, tr.loss, tr.acc_top1, va.loss, va.acc_top1,
                        ' *best*' if improved else '', time.time() - t0)
            if epoch - best_epoch >= args.patience:
                logger.info('no better val accuracy for %d epochs: stopping', args.patience)
                break
    finally:
        writer.close()
    if best_epoch < 0:
        raise utils.InputError('no epoch was trained (set --epochs above 0)')

    # evaluate the best epoch on every split and export it
    best_ckpt = run_dir / f'ckpt_{best_epoch}.pt'
    state, _ = train_utils.checkpoint_state_dict(best_ckpt)
    model.load_state_dict(state)
    results = train_utils.evaluate_frames(model, frames, args.cropped_images_dir, size,
                                          args.batch_size, args.num_workers, device,
                                          len(labels), multilabel=args.multilabel)
    table = train_utils.write_evaluation(run_dir, {s: frames[s] for s in results}, results,
                                         labels, args.multilabel)
    compiled = train_utils.export_torchscript(model, args.model_name, size,
                                              train_utils.compiled_path(best_ckpt),
                                              args.multilabel)
    logger.info('best epoch %d; TorchScript model: %s', best_epoch, compiled)
    return table


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = utils.make_parser(__doc__)
    parser.add_argument('dataset_dir', help='folder with classification_ds.csv, '
                                            'label_index.json and splits.json')
    parser.add_argument('cropped_images_dir', help='folder the crop paths are relative to')
    parser.add_argument('--multilabel', action='store_true',
                        help='crops may have several labels (comma-separated in '
                             'classification_ds.csv): one sigmoid per label, binary '
                             'cross-entropy; top-1 counts as right when it is one of them; '
                             '--label-weighted samples by the first label')
    parser.add_argument('-m', '--model-name', default='efficientnet-b0',
                        choices=train_utils.VALID_MODELS, help='architecture')
    parser.add_argument('--pretrained', nargs='?', const=True, default=False,
                        help='start from ImageNet weights; or give a checkpoint/state dict '
                             'path of the same architecture')
    parser.add_argument('--finetune', type=utils.nonneg_int, default=0,
                        help='epochs training only the final layer first (default: 0)')
    parser.add_argument('--label-weighted', action='store_true',
                        help='sample every label equally often')
    parser.add_argument('--weight-by-detection-conf', nargs='?', const=True, default=False,
                        help='weight each crop by its detection confidence; optionally an '
                             '.npz with isotonic calibration arrays x and y')
    parser.add_argument('--epochs', type=utils.positive_int, default=50,
                        help='maximum epochs (default: 50)')
    parser.add_argument('--batch-size', type=utils.positive_int, default=256)
    parser.add_argument('--lr', type=float, default=1e-3,
                        help='AdamW learning rate, cosine-decayed (default: 1e-3)')
    parser.add_argument('--weight-decay', type=float, default=1e-5)
    parser.add_argument('--num-workers', type=utils.nonneg_int, default=8,
                        help='data-loading processes (default: 8)')
    parser.add_argument('--logdir', default='.', help='parent folder of the run folder')
    parser.add_argument('--seed', type=int, default=None,
                        help='random seed (default: random, recorded in params.json)')
    parser.add_argument('--image-size', type=utils.positive_int,
                        help='input size in pixels (default: 224, or the EfficientNet size)')
    parser.add_argument('--patience', type=utils.positive_int, default=8,
                        help='stop after this many epochs without a better val accuracy')
    parser.add_argument('--device', help='torch device, e.g. cpu or cuda:1 (default: cuda if '
                                         'available)')
    parser.add_argument('--log-extreme-examples', type=utils.nonneg_int, default=0,
                        metavar='N',
                        help='log to TensorBoard, per label, split and epoch, the N most '
                             'confident true positives, false positives and false negatives '
                             '(images and a table of paths; default: 0, none)')
    parser.add_argument('--resume', metavar='RUN_DIR',
                        help='continue the run in RUN_DIR from its ckpt_last.pt')
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    utils.setup_logging()
    if args.resume:
        run_dir = Path(args.resume)
        params_path = run_dir / 'params.json'
        if not params_path.exists():
            raise utils.InputError(f'--resume {run_dir}: no params.json there')
        saved = utils.read_json(params_path)
        for key in ('model_name', 'image_size', 'seed', 'pretrained', 'label_weighted',
                    'multilabel',
                    'weight_by_detection_conf', 'lr', 'weight_decay', 'batch_size', 'finetune'):
            setattr(args, key, saved[key])
        args.epochs = max(args.epochs, saved['epochs'])
    else:
        if args.seed is None:
            args.seed = random.SystemRandom().randrange(2**31)
        if args.image_size is None:
            args.image_size = train_utils.default_image_size(args.model_name)
        run_dir = Path(args.logdir) / time.strftime('%Y%m%d_%H%M%S')
        n = 1
        while run_dir.exists():
            run_dir = Path(args.logdir) / f'{time.strftime("%Y%m%d_%H%M%S")}_{n}'
            n += 1
        run_dir.mkdir(parents=True)
    params = utils.args_to_params(args)
    params['run_dir'] = str(run_dir)
    utils.write_json(params, run_dir / 'params.json', indent=1)
    logger.info('run folder: %s', run_dir)
    table = train(args, run_dir)
    train_utils.log_metrics(table)
    return 0


if __name__ == '__main__':
    raise SystemExit(utils.run_cli(main))
