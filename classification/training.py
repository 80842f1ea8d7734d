"""Training a classifier: one process or a torchrun group (DDP), float32 or mixed
precision, checkpointed every epoch (and every N batches) and exactly resumable.

``prepare`` checks everything a run needs (labels, splits, crops, the model)
before any folder is made; ``train`` runs the epochs. Only rank 0 writes files;
every rank computes the same metrics from the same summed results, so all of
them stop at the same epoch.

Recipes:
- default: AdamW, learning rate cosine-decayed to 0 over --epochs, light
  augmentation (random resized crop 0.6-1, horizontal flip, brightness and
  contrast jitter).
- original (the original pipeline's): RMSprop (alpha 0.9, momentum 0.9) with the
  rate times 0.97 every 2.4 epochs for EfficientNet, SGD (momentum 0.9) with the
  rate divided by 10 every 8 epochs for ResNet; lr 0.016 x batch / 256; random
  resized crop 0.08-1, rotation up to 90 degrees, flips, grayscale, colour jitter.
The learning rate is a function of the epoch (and, for the cosine, of the total
number of epochs), so a resumed run trains each epoch at the rate it would have.
"""
from __future__ import annotations

import gc
import hashlib
import json
import logging
import math
import os
import random
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import UnidentifiedImageError
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from classification import crop_data, inference, metrics, model_files, models, train_config, utils
from classification.distributed import Dist
from classification.train_config import TrainConfig

logger = logging.getLogger(__name__)

CKPT_LAST = 'ckpt_last.pt'
# fault injection for the tests: 'EPOCH:BATCH' makes the process SIGKILL itself
# right after that batch (and its checkpoint, if one is due)
KILL_ENV = 'CT_TRAIN_KILL_AT'
RESUME_LOG = 'resumes.jsonl'
DATASET_DIGEST = 'dataset_digest.json'


# ---------------------------------------------------------------- recipe

def resolve_amp(amp: str | None, device: torch.device) -> str | None:
    """--amp's value for this device: bf16 on CPUs; on CUDA bf16 where the GPU has it,
    else fp16 (with a gradient scaler)."""
    if amp is None:
        return None
    if device.type != 'cuda':
        if amp == 'fp16':
            raise utils.InputError('--amp fp16 needs a CUDA device; use --amp bf16 on a CPU')
        return 'bf16'
    try:
        native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:          # torch before 2.3 had no emulation to exclude
        native_bf16 = torch.cuda.is_bf16_supported()
    if amp == 'auto':
        return 'bf16' if native_bf16 else 'fp16'
    if amp == 'bf16' and not native_bf16:
        raise utils.InputError('--amp bf16: this GPU has no native bfloat16; use --amp fp16')
    return amp


def learning_rate(config: TrainConfig, epoch: int, total_epochs: int) -> float:
    """The learning rate of ``epoch`` (0-based)."""
    if config.recipe == 'original':
        if models.is_efficientnet(config.model_name):
            return config.lr * (0.97 ** (1 / 2.4)) ** epoch
        return config.lr * 0.1 ** (epoch // 8)
    return config.lr * 0.5 * (1 + math.cos(math.pi * epoch / max(total_epochs, 1)))


def make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = model.parameters()
    if config.recipe == 'original':
        if models.is_efficientnet(config.model_name):
            return torch.optim.RMSprop(params, lr=config.lr, alpha=0.9, momentum=0.9,
                                       weight_decay=config.weight_decay)
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9,
                               weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def augmentation(config: TrainConfig) -> crop_data.Augmentation:
    return (crop_data.ORIGINAL_AUGMENTATION if config.recipe == 'original'
            else crop_data.DEFAULT_AUGMENTATION)


def detection_conf_weights(conf: np.ndarray, weight_by_conf: bool | str) -> np.ndarray:
    """Sampling weights from detection confidences: the confidence itself, or the
    confidence calibrated through an isotonic-regression .npz (arrays ``x``, ``y``)."""
    if weight_by_conf is True:
        return conf
    try:
        with np.load(str(weight_by_conf), allow_pickle=False) as npz:
            x, y = npz['x'], npz['y']
    except (OSError, KeyError, ValueError) as e:
        raise utils.InputError(f'--weight-by-detection-conf {weight_by_conf}: expected an .npz '
                               f'with arrays x and y ({e})') from e
    if (x.ndim != 1 or x.shape != y.shape or len(x) < 2 or not np.isfinite(x).all()
            or not np.isfinite(y).all() or (np.diff(x) <= 0).any()):
        raise utils.InputError(f'--weight-by-detection-conf {weight_by_conf}: x and y must be '
                               'finite 1-D arrays of the same length with x increasing')
    return np.interp(conf, x, y)


def train_sampling_weights(df: pd.DataFrame, config: TrainConfig,
                           num_labels: int) -> np.ndarray | None:
    """Weights of the training sampler (None: a plain shuffle): label-balancing with
    --label-weighted, times the detection confidence with --weight-by-detection-conf."""
    w: np.ndarray | None = None
    if config.label_weighted:
        w = crop_data.label_balance_weights(df['label_idx'].to_numpy(), num_labels)
    if config.weight_by_detection_conf is not False:
        conf = detection_conf_weights(df['confidence'].to_numpy(),
                                      config.weight_by_detection_conf)
        w = conf if w is None else w * conf
    if w is not None and (not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0):
        raise utils.InputError('the training sampling weights are not finite non-negative '
                               'numbers with a positive sum (check the confidences and the '
                               'calibration file)')
    return w


# ---------------------------------------------------------------- preparing a run

@dataclass
class Prepared:
    """What ``prepare`` checked and built."""
    config: TrainConfig
    labels: list[str]
    splits: dict[str, list[tuple[str, str]]]
    frames: dict[str, pd.DataFrame]
    model: nn.Module
    device: torch.device
    amp: str | None


def check_crops_present(frames: dict[str, pd.DataFrame], crops_dir: str,
                        sample: int = 2000) -> None:
    """Refuses a crops folder that holds none of the dataset's crops (checked on up
    to ``sample`` random rows of each split), and warns when some are missing."""
    root = Path(crops_dir)
    if not root.is_dir():
        raise utils.InputError(f'{crops_dir}: crops folder not found')
    rng = random.Random(0)
    for split, df in frames.items():
        if df.empty:
            continue
        paths = df['path'].tolist()
        picked = paths if len(paths) <= sample else rng.sample(paths, sample)
        found = sum((root / p).is_file() for p in picked)
        if found == 0:
            raise utils.InputError(f'{crops_dir}: holds none of the {split} crops of the '
                                   f'dataset (checked {len(picked)}, e.g. {picked[0]})')
        if found < len(picked):
            logger.warning('%s: %d of %d %s crops checked are missing; they will be skipped',
                           crops_dir, len(picked) - found, len(picked), split)


def prepare(config: TrainConfig, device: torch.device, resume: bool = False) -> Prepared:
    """Everything a run needs, checked; no file is written. A resumed run's model is
    built without its --pretrained weights (the checkpoint replaces them all)."""
    base = Path(config.dataset_dir)
    labels = utils.load_label_index(base / 'label_index.json')
    splits = crop_data.read_splits(base / 'splits.json')
    frames = crop_data.load_split_frames(base, labels, crop_data.SPLITS, config.multilabel)
    for split in ('train', 'val'):
        if frames[split].empty:
            raise utils.InputError(f'{base}: the {split} split has no crops')
    if config.multilabel and config.label_weighted:
        logger.info('--label-weighted with --multilabel balances by each crop\'s first label')
    check_crops_present(frames, config.cropped_images_dir)
    crop_data.add_eval_weights(frames, config.label_weighted, len(labels))
    train_sampling_weights(frames['train'], config, len(labels))     # checked early
    amp = resolve_amp(config.amp, device)
    torch.manual_seed(config.seed)
    model = models.build_model(config.model_name, len(labels),
                               False if resume else config.pretrained)
    return Prepared(config, labels, splits, frames, model, device, amp)


def check_resume_dataset(run_dir: Path, prepared: Prepared) -> None:
    """Refuses to resume a run against a dataset with other labels or splits."""
    where = f'--resume {run_dir}'
    run_labels = utils.load_label_index(run_dir / 'label_index.json')
    diff = crop_data.label_difference(run_labels, prepared.labels)
    if diff:
        raise utils.InputError(f'{where}: {diff}')
    diff = crop_data.split_difference(crop_data.read_splits(run_dir / 'splits.json'),
                                      prepared.splits)
    if diff:
        raise utils.InputError(f'{where}: {diff}')
    saved = run_dir / DATASET_DIGEST
    if saved.is_file():                 # runs started before it was written have none
        was = utils.require_mapping(utils.read_json(saved), str(saved))
        now = dataset_digest(prepared.frames)
        if was.get('digest') != now['digest']:
            raise utils.InputError(f'{where}: the crops, labels or confidences of the dataset '
                                   f'changed since the run started ({was.get("crops")} crops '
                                   f'then, {now["crops"]} now)')


def dataset_digest(frames: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """A SHA-256 of what a run trains and selects on: each split's crops with their
    labels and detection confidences (a resume is checked against it)."""
    h = hashlib.sha256()
    n = 0
    for split in sorted(frames):
        df = frames[split].sort_values('path')
        cols = [c for c in ('path', 'label', 'confidence') if c in df.columns]
        h.update(split.encode() + b'\0')
        h.update(df[cols].to_csv(index=False).encode())
        n += len(df)
    return {'digest': h.hexdigest(), 'crops': n}


def run_config(run_dir: Path) -> TrainConfig:
    """The config saved in a run folder (refuses a folder that is not a run)."""
    params_path = run_dir / 'params.json'
    if not run_dir.is_dir():
        raise utils.InputError(f'--resume {run_dir}: folder not found')
    if not params_path.is_file() or not (run_dir / CKPT_LAST).is_file():
        raise utils.InputError(f'--resume {run_dir}: not a training run (needs params.json '
                               f'and {CKPT_LAST})')
    params = utils.require_mapping(utils.read_json(params_path), str(params_path))
    return TrainConfig.from_params(dict(params), str(params_path), run_dir)


def new_run_dir(logdir: str, dist: Dist) -> Path:
    """<logdir>/<YYYYmmdd_HHMMSS>[_n], named on rank 0 for every rank (not made yet)."""
    name = None
    if dist.is_main:
        stamp = time.strftime('%Y%m%d_%H%M%S')
        run_dir, n = Path(logdir) / stamp, 1
        while run_dir.exists():
            run_dir, n = Path(logdir) / f'{stamp}_{n}', n + 1
        name = str(run_dir)
    return Path(dist.broadcast(name))


def start_run_dir(run_dir: Path, prepared: Prepared, world_size: int = 1) -> None:
    """Makes the run folder with params.json and copies of the label index and splits
    (what a resume is checked against). Rank 0 only."""
    run_dir.mkdir(parents=True)
    params = prepared.config.to_params()
    params['world_size'] = world_size           # processes the run started with
    for key in ('dataset_dir', 'cropped_images_dir'):   # evaluable from any folder
        params[key] = os.path.relpath(os.path.abspath(params[key]), os.path.abspath(run_dir))
    params['run_dir'] = str(run_dir)
    utils.write_json(params, run_dir / 'params.json', indent=1)
    utils.write_json(utils.label_index_dict(prepared.labels), run_dir / 'label_index.json')
    utils.write_json({s: [list(x) for x in locs] for s, locs in prepared.splits.items()},
                     run_dir / 'splits.json')
    utils.write_json(dataset_digest(prepared.frames), run_dir / DATASET_DIGEST)


def clean_stale_temporaries(run_dir: Path) -> None:
    """Removes temporary files a killed process left while writing a checkpoint."""
    for tmp in run_dir.glob('.*.tmp'):
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------- TensorBoard

class Board:
    """TensorBoard on rank 0; a no-op elsewhere."""

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(run_dir))

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        if self.writer:
            for k, v in values.items():
                self.writer.add_scalar(f'{prefix}{k}', v, step)

    def split_result(self, split: str, res: metrics.EpochResult, labels: Sequence[str],
                     epoch: int) -> None:
        if not self.writer:
            return
        self.scalars(f'{split}/', res.metrics(), epoch)
        if res.confusion is not None:
            _, recall = metrics.precision_recall(res.confusion)
            self.scalars(f'{split}/label_recall/', {lab: float(np.nan_to_num(r))
                                                    for lab, r in zip(labels, recall,
                                                                      strict=True)}, epoch)
            fig = metrics.confusion_figure(res.confusion, labels, f'{split}, epoch {epoch}')
            self.writer.add_figure(f'confusion_matrix/{split}', fig, epoch, close=False)

    def extreme_examples(self, paths: Sequence[str], root: Path, image_size: int, split: str,
                         res: metrics.EpochResult, labels: Sequence[str], n: int,
                         epoch: int) -> None:
        """For each label, its ``n`` most confident true positives, false positives and
        false negatives: images (as the model sees them at evaluation, before
        normalization) under ``<split>/<label>/<tp|fp|fn>`` and a table of their
        crop paths, labels, predictions and confidences under the same tag."""
        if not self.writer or res.examples is None or n <= 0:
            return
        rows, true, pred, conf = res.examples
        to_pixels = crop_data.eval_pixels(image_size)
        for k, label in enumerate(labels):
            for kind, pos in metrics.extreme_examples(true, pred, conf, k, n).items():
                images, lines = [], []
                for p in pos:
                    path = paths[int(rows[p])]
                    try:
                        images.append(to_pixels(crop_data.open_crop(root / path, image_size)))
                    except (OSError, UnidentifiedImageError, ValueError):
                        continue
                    lines.append(f'| {path} | {labels[int(true[p])]} | '
                                 f'{labels[int(pred[p])]} | {conf[p]:.3f} |')
                if images:
                    tag = f'{split}/{label}/{kind}'
                    self.writer.add_images(tag, torch.stack(images), epoch, dataformats='NHWC')
                    self.writer.add_text(tag, '| crop | label | predicted | confidence |\n'
                                         '|---|---|---|---|\n' + '\n'.join(lines), epoch)

    def hparams(self, config: TrainConfig, best: dict[str, float]) -> None:
        if self.writer:
            hp = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                  for k, v in config.to_params().items()
                  if k in ('model_name', 'multilabel', 'finetune', 'batch_size', 'epochs',
                           'lr', 'recipe', 'label_weighted', 'image_size')}
            hp['amp'] = str(config.amp)
            self.writer.add_hparams(hp, {f'hparam/{k}': v for k, v in best.items()},
                                    run_name='hparams')

    def close(self) -> None:
        if self.writer:
            self.writer.close()


# ---------------------------------------------------------------- the loop

@dataclass
class TrainState:
    """What ckpt_last.pt holds besides the model and optimizer."""
    epoch: int = 0                 # the epoch to train (or being trained)
    batch: int = 0                 # batches of ``epoch`` already trained (this rank)
    epochs: int = 0                # total epochs of the run (params.json's, or extended)
    best_acc: float = 0.0
    best_epoch: int = -1
    best_metrics: dict[str, float] = field(default_factory=dict)
    stopped: bool = False          # stopped early (patience)
    patience_from: int = -1        # --add-epochs: patience counts from here again


def _tensors(obj: Any) -> Any:
    """numpy arrays as tensors (checkpoints are loaded with weights_only)."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, dict):
        return {k: _tensors(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_tensors(v) for v in obj]
    return obj


def _rng_state(device: torch.device) -> dict[str, Any]:
    state = {'torch': torch.get_rng_state()}
    if device.type == 'cuda':
        state['cuda'] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state['torch'])
    if device.type == 'cuda' and 'cuda' in state:
        torch.cuda.set_rng_state(state['cuda'], device)


class Trainer:
    def __init__(self, prepared: Prepared, run_dir: Path, dist: Dist) -> None:
        self.p, self.config, self.run_dir, self.dist = prepared, prepared.config, run_dir, dist
        self.device = prepared.device
        self.labels = prepared.labels
        self.model = prepared.model.to(self.device).to(memory_format=torch.channels_last)
        if train_config.recompute_activations(self.config, self.device.type):
            models.recompute_activations(self.model)
        self.optimizer = make_optimizer(self.config, self.model)
        self.amp_dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(prepared.amp or '')
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=prepared.amp == 'fp16')
        self.state = TrainState(epochs=self.config.epochs)
        self.running = metrics.RunningMetrics.empty(len(self.labels))
        size, frames = self.config.image_size, prepared.frames
        multilabel = len(self.labels) if self.config.multilabel else None
        label_col = 'label_set' if self.config.multilabel else 'label_idx'
        aug = augmentation(self.config)
        train_ds = crop_data.CropDataset(
            self.config.cropped_images_dir, frames['train']['path'].tolist(),
            frames['train'][label_col].tolist(), None, size,
            augment=crop_data.augment_pixels(size, aug), num_classes=multilabel,
            decode_size=crop_data.augment_decode_size(size, aug))
        seed = self.config.seed
        self.sampler = crop_data.EpochSampler(
            len(frames['train']), seed,
            train_sampling_weights(frames['train'], self.config, len(self.labels)),
            dist.rank, dist.world_size)
        workers = self.config.num_workers
        self.train_loader = crop_data.make_loader(train_ds, self.config.batch_size, workers,
                                                  self.device, self.sampler)
        self.board = Board(run_dir, dist.is_main)
        self._ddp: nn.Module | None = None
        self._ddp_finetune: bool | None = None
        self._unreadable: set[int] = set()

    # ------------------------------------------------------------ checkpoints

    def save_last(self) -> None:
        """ckpt_last.pt (all ranks take part: the running sums and random states of
        every rank are saved, by rank 0)."""
        per_rank = self.dist.all_gather({'rng': _tensors(_rng_state(self.device)),
                                         'running': _tensors(self.running.state())})
        if self.dist.is_main:
            model_files.save_checkpoint({
                'model': self.model.state_dict(), 'optimizer': self.optimizer.state_dict(),
                'scaler': self.scaler.state_dict(), 'state': vars(self.state).copy(),
                'world_size': self.dist.world_size, 'per_rank': per_rank,
                'labels': list(self.labels)}, self.run_dir / CKPT_LAST)
        self.dist.barrier()

    def load_last(self, add_epochs: int) -> None:
        ckpt = load_resumable(self.run_dir)
        self.model.load_state_dict(ckpt['model'])
        self.optimizer.load_state_dict(ckpt['optimizer'])
        if ckpt.get('scaler'):
            self.scaler.load_state_dict(ckpt['scaler'])
        self.state = TrainState(**ckpt['state'])
        if add_epochs:
            self.state.epochs += add_epochs
            self.state.stopped = False
            self.state.patience_from = self.state.epoch - 1
        per_rank = ckpt.get('per_rank') or []
        if ckpt.get('world_size') == self.dist.world_size and len(per_rank) > self.dist.rank:
            mine = per_rank[self.dist.rank]
            _set_rng_state(mine['rng'], self.device)
            if self.state.batch:
                self.running = metrics.RunningMetrics.from_state(mine['running'])
        else:
            if self.state.batch:
                raise utils.InputError(
                    f'--resume {self.run_dir}: stopped in the middle of an epoch with '
                    f'{ckpt.get("world_size")} processes; resume it with as many')
            logger.warning('resuming with %d processes where the run had %s: the result '
                           'will not be identical to an uninterrupted run',
                           self.dist.world_size, ckpt.get('world_size'))

    # ------------------------------------------------------------ epochs

    def wrapped(self, finetune: bool) -> nn.Module:
        """The model to train: itself, or under DDP a wrapper made for the set of
        trainable parameters of this phase (fine-tuning the head, or all)."""
        models.set_finetune(self.model, finetune)
        if not self.dist.enabled:
            return self.model
        if self._ddp is None or self._ddp_finetune != finetune:
            self._ddp = None           # the old wrapper's hooks go with it
            gc.collect()
            ids = [self.device.index] if self.device.type == 'cuda' else None
            self._ddp = DistributedDataParallel(self.model, device_ids=ids)
            self._ddp_finetune = finetune
        return self._ddp

    def train_epoch(self, epoch: int, on_batch: Callable[[int], None]) -> None:
        from tqdm import tqdm
        finetune = epoch < self.config.finetune
        net = self.wrapped(finetune)
        net.train(not finetune)        # fine-tuning: batch norms and dropout as at inference
        self.sampler.set_epoch(epoch, self.state.batch * self.config.batch_size)
        multilabel = self.config.multilabel
        batch_no = self.state.batch
        autocast = torch.autocast(self.device.type, dtype=self.amp_dtype or torch.bfloat16,
                                  enabled=self.amp_dtype is not None)
        for x, y, _, idx in tqdm(self.train_loader, desc=f'epoch {epoch} train', leave=False,
                                 disable=None):
            ok = crop_data.readable(y)
            none_ok = not bool(ok.any())
            if not self.dist.any(not none_ok):     # no crop of this step could be read
                batch_no += 1
                self.state.batch = batch_no
                on_batch(batch_no)
                continue
            if not bool(ok.all()):
                self.report_unreadable(idx[~ok].tolist())
            if not none_ok and not bool(ok.all()):
                x, y, idx = x[ok], y[ok], idx[ok]
            x = crop_data.to_model_input(x, self.device)
            y = y.to(self.device, non_blocking=True)
            with autocast:
                logits = net(x)
            logits = logits.float()
            if multilabel:
                target = y.clamp(min=0)
                losses = nn.functional.binary_cross_entropy_with_logits(
                    logits, target, reduction='none').sum(dim=1)
            else:
                losses = nn.functional.cross_entropy(logits, y.clamp(min=0), reduction='none')
            # a batch with no readable crop on this rank still takes part (zero loss) when
            # other ranks have some, so that the processes of a DDP group stay in step
            loss = losses.mean() * (0.0 if none_ok else 1.0)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if not none_ok:
                with torch.no_grad():
                    k = min(3, logits.shape[1])
                    top = logits.topk(k, dim=1).indices
                    conf = (logits.sigmoid() if multilabel
                            else logits.softmax(dim=1)).gather(1, top[:, :1])[:, 0]
                    if multilabel:
                        hit1 = y.gather(1, top[:, :1])[:, 0] > 0
                        hit3 = y.gather(1, top).amax(dim=1) > 0
                        true = torch.where(hit1, top[:, 0], y.argmax(dim=1))
                    else:
                        hit1, hit3, true = top[:, 0] == y, (top == y[:, None]).any(dim=1), y
                    self.running.add(losses.detach().cpu().numpy(), hit1.cpu().numpy(),
                                     hit3.cpu().numpy(), idx.numpy(), true.cpu().numpy(),
                                     top[:, 0].cpu().numpy(), conf.cpu().numpy())
            batch_no += 1
            self.state.batch = batch_no
            on_batch(batch_no)

    def epoch_result(self) -> metrics.EpochResult:
        """The training pass's metrics over every rank."""
        s = self.running.state()
        sums = self.dist.sum_(s['sums'])
        cm = self.dist.sum_(s['confusion'].astype(np.float64)).astype(np.int64)
        examples = None
        if self.config.log_extreme_examples > 0:
            parts = self.dist.all_gather((s['rows'], s['true'], s['pred'], s['conf']))
            examples = tuple(np.concatenate([p[j] for p in parts]) for j in range(4))
        n = max(sums[0], 1)
        loss, top1, top3 = (float(v / n) for v in sums[1:])
        return metrics.EpochResult(loss, top1, top3, loss, top1, top3, None, (),
                                   examples, cm)  # type: ignore[arg-type]

    def report_unreadable(self, rows: list[int]) -> None:
        """Logs each training crop that could not be read (skipped), once per run
        and at most 20 of them by name."""
        paths = self.train_loader.dataset.paths  # type: ignore[attr-defined]
        for i in rows:
            if i not in self._unreadable:
                self._unreadable.add(i)
                if len(self._unreadable) <= 20:
                    logger.warning('unreadable training crop skipped: %s', paths[i])

    def evaluate(self, split: str) -> metrics.EpochResult:
        """The model on one split, every crop on one rank, results on all."""
        return inference.evaluate_frames(
            self.model, {split: self.p.frames[split]}, self.config.cropped_images_dir,
            self.config.image_size, self.config.batch_size, self.config.num_workers,
            self.device, len(self.labels), multilabel=self.config.multilabel, dist=self.dist,
            bf16=self.amp_dtype == torch.bfloat16)[split]

    def log_split(self, split: str, res: metrics.EpochResult, epoch: int) -> None:
        self.board.split_result(split, res, self.labels, epoch)
        self.board.extreme_examples(self.p.frames[split]['path'].tolist(),
                                    Path(self.config.cropped_images_dir),
                                    self.config.image_size, split, res, self.labels,
                                    self.config.log_extreme_examples, epoch)

    def run(self, add_epochs: int = 0, resume: bool = False) -> None:
        if resume:
            self.load_last(add_epochs)
            logger.info('resuming %s at epoch %d%s (best val top-1 %.2f%% at epoch %d)',
                        self.run_dir, self.state.epoch,
                        f', batch {self.state.batch}' if self.state.batch else '',
                        100 * self.state.best_acc, self.state.best_epoch)
        else:
            torch.manual_seed(self.config.seed + self.dist.rank)
        every = self.config.checkpoint_every
        per_epoch = math.ceil(self.sampler.share_size() / self.config.batch_size)
        kill_at = os.environ.get(KILL_ENV)

        def on_batch(batch_no: int) -> None:
            if every and batch_no % every == 0 and batch_no < per_epoch:
                self.save_last()
            if kill_at == f'{self.state.epoch}:{batch_no}':
                os.kill(os.getpid(), signal.SIGKILL)

        weighted = self.config.label_weighted
        try:
            while self.state.epoch < self.state.epochs and not self.state.stopped:
                epoch, t0 = self.state.epoch, time.time()
                lr = learning_rate(self.config, epoch, self.state.epochs)
                for group in self.optimizer.param_groups:
                    group['lr'] = lr
                self.board.scalars('', {'lr': lr}, epoch)
                self.train_epoch(epoch, on_batch)
                self.dist.sync_buffers(self.model)    # every rank evaluates one model
                tr = self.epoch_result()
                self.log_split('train', tr, epoch)
                va = self.evaluate('val')
                self.log_split('val', va, epoch)
                acc = va.selection_accuracy(weighted)
                improved = acc > self.state.best_acc or self.state.best_epoch < 0
                if improved:
                    self.state.best_acc, self.state.best_epoch = acc, epoch
                    self.state.best_metrics = {
                        **{f'train/{k}': v for k, v in tr.metrics().items()},
                        **{f'val/{k}': v for k, v in va.metrics().items()}, 'epoch': epoch}
                    if self.dist.is_main:
                        model_files.save_checkpoint(
                            {'model': self.model.state_dict(), 'epoch': epoch,
                             'val/acc': 100 * acc}, self.run_dir / f'ckpt_{epoch}.pt')
                    if not self.p.frames['test'].empty:
                        self.log_split('test', self.evaluate('test'), epoch)
                self.state.epoch, self.state.batch = epoch + 1, 0
                self.running = metrics.RunningMetrics.empty(len(self.labels))
                stop = (epoch - max(self.state.best_epoch, self.state.patience_from)
                        >= self.config.patience)
                self.state.stopped = stop
                self.save_last()
                logger.info('epoch %d (lr %.3g): train loss %.3f top-1 %.2f%% | val loss %.3f '
                            'top-1 %.2f%%%s%s (%.0f s)', epoch, lr, tr.loss, 100 * tr.acc_top1,
                            va.loss_weighted if weighted else va.loss,
                            100 * acc, ' (label-weighted)' if weighted else '',
                            ' *best*' if improved else '', time.time() - t0)
                if stop:
                    logger.info('no better val accuracy for %d epochs: stopping',
                                self.config.patience)
                    break
        finally:
            if self.state.best_metrics:
                self.board.hparams(self.config, self.state.best_metrics)
            self.board.close()

    def finish(self) -> pd.DataFrame | None:
        """Evaluates the best epoch on every split and exports it (rank 0 writes);
        returns the overall metrics on rank 0."""
        best = self.state.best_epoch
        if best < 0:
            raise utils.InputError('no epoch was trained')
        best_ckpt = self.run_dir / f'ckpt_{best}.pt'
        self.dist.barrier()
        state, _ = model_files.checkpoint_state_dict(best_ckpt)
        self.model.load_state_dict(state)
        results = {s: self.evaluate(s) for s, df in self.p.frames.items() if not df.empty}
        if not self.dist.is_main:
            return None
        table = metrics.write_evaluation(self.run_dir, {s: self.p.frames[s] for s in results},
                                         results, self.labels, self.config.multilabel)
        info = model_files.ClassifierInfo(self.config.model_name, self.config.image_size,
                                          tuple(self.labels), self.config.multilabel)
        compiled = model_files.export_torchscript(models.plain_forward(self.model), info,
                                                  model_files.compiled_path(best_ckpt))
        logger.info('best epoch %d; TorchScript model: %s', best, compiled)
        from classification import reports
        reports.report_from_outputs(
            self.run_dir, self.run_dir / 'report', self.config.cropped_images_dir,
            Path(self.config.dataset_dir) / 'classification_ds.csv', list(results),
            self.config.multilabel)
        return table


def load_resumable(run_dir: Path) -> dict[str, Any]:
    """The run's last checkpoint, checked to be one a run can resume from (called
    before anything is written to the run folder, and again to resume)."""
    _, ckpt = model_files.checkpoint_state_dict(run_dir / CKPT_LAST)
    if not ckpt or not isinstance(ckpt.get('state'), dict) or 'model' not in ckpt \
            or 'optimizer' not in ckpt:
        raise utils.InputError(f'{run_dir / CKPT_LAST}: not a resumable checkpoint '
                               '(made by an older version: train a new run, or start one '
                               'from it with --pretrained)')
    return ckpt


def log_resume(run_dir: Path, add_epochs: int, world_size: int) -> None:
    """Appends a line to resumes.jsonl: params.json is never rewritten."""
    line = json.dumps({'time': time.strftime('%Y-%m-%dT%H:%M:%S'), 'add_epochs': add_epochs,
                       'world_size': world_size})
    with open(run_dir / RESUME_LOG, 'a', encoding='utf-8') as f:
        f.write(line + '\n')
