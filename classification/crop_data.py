"""Crops as model input: the dataset tables per split, decoding, augmentation,
datasets, samplers and loaders.

Training augmentation draws its random parameters from a generator seeded per
crop and epoch (``EpochSampler`` hands each crop its seed), never from torch's
global random state: a run resumed in the middle of an epoch sees exactly the
crops and augmentations an uninterrupted run would, whatever the number of
data-loading workers.
"""
from __future__ import annotations

import logging
import math
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

from classification import utils
from classification.cropping import PhotoFile, scale_box, to_rgb
from classification.model_files import IMAGENET_MEAN, IMAGENET_STD
from classification.split_files import SPLITS, read_splits

logger = logging.getLogger(__name__)

T_co = TypeVar('T_co')


# ---------------------------------------------------------------- the dataset table

def load_split_frames(dataset_dir: str | os.PathLike[str], labels: Sequence[str],
                      splits: Sequence[str], multilabel: bool = False
                      ) -> dict[str, pd.DataFrame]:
    """Rows of classification_ds.csv per split (by location), with label_idx and
    confidence.

    ``multilabel``: labels are comma-separated lists; ``label_set`` holds their
    indices and ``label_idx`` the first (for sampling by label).
    """
    base = Path(dataset_dir)
    df = utils.read_csv(base / 'classification_ds.csv', dtype={'location': str, 'dataset': str,
                                                               'label': str, 'path': str})
    missing = {'path', 'dataset', 'location', 'label'} - set(df.columns)
    if missing:
        raise utils.InputError(f'{base}/classification_ds.csv: missing columns '
                               f'{sorted(missing)}')
    split_locs = read_splits(base / 'splits.json')
    label_to_idx = {name: i for i, name in enumerate(labels)}
    if multilabel:
        parts = df['label'].str.split(',')
        unknown = sorted({lab for p in parts for lab in p} - set(label_to_idx))
        if unknown:
            raise utils.InputError(f'{base}/classification_ds.csv: labels {unknown} are not in '
                                   'the label index')
        df['label_set'] = [tuple(label_to_idx[lab] for lab in p) for p in parts]
        df['label_idx'] = [s[0] for s in df['label_set']]
    else:
        unknown = sorted(set(df['label']) - set(label_to_idx))
        if unknown:
            raise utils.InputError(f'{base}/classification_ds.csv: labels {unknown} are not in '
                                   'the label index (multi-label rows need --multilabel)')
        df['label_idx'] = df['label'].map(label_to_idx).astype(int)
    df['confidence'] = utils.confidence_column(df, f'{base}/classification_ds.csv')
    utils.check_unique_paths(df, f'{base}/classification_ds.csv')
    keys = pd.Series(list(zip(df['dataset'], df['location'], strict=True)), index=df.index)
    known = set(keys)
    listed = {loc for locs in split_locs.values() for loc in locs}
    stray = sorted(listed - known)
    if stray:
        raise utils.InputError(f'{base}/splits.json: location {list(stray[0])} has no crops in '
                               'classification_ds.csv (splits made for another dataset?)')
    unplaced = ~keys.isin(listed)
    if unplaced.any():
        logger.warning('%s: %d crops of %d locations in no split of splits.json are left out '
                       '(e.g. %s)', base, int(unplaced.sum()), len(set(keys[unplaced])),
                       list(keys[unplaced].iloc[0]))
    out = {}
    for split in splits:
        locs = {(d, loc) for d, loc in split_locs.get(split, [])}
        out[split] = df[keys.isin(locs)].reset_index(drop=True)
    return out


def label_balance_weights(label_idx: np.ndarray, num_labels: int) -> np.ndarray:
    """1 / (crops of the crop's label) x (labels present) / (crops): every label gets the
    same total weight and the weights average 1."""
    counts = np.bincount(label_idx, minlength=num_labels).astype(np.float64)
    present = int((counts > 0).sum())
    with np.errstate(divide='ignore'):
        w = 1.0 / counts[label_idx]
    return w * len(label_idx) / max(present, 1)


def add_eval_weights(frames: dict[str, pd.DataFrame], label_weighted: bool,
                     num_labels: int) -> None:
    """The ``weight`` column of each split: label-balancing within the split with
    --label-weighted (the weighted metrics then weigh every label equally), else 1."""
    for df in frames.values():
        df['weight'] = (label_balance_weights(df['label_idx'].to_numpy(), num_labels)
                        if label_weighted and len(df) else 1.0)


def label_difference(run: Sequence[str], dataset: Sequence[str]) -> str | None:
    """How the dataset's labels differ from a run's (None: the same, in order)."""
    if list(run) == list(dataset):
        return None
    added, removed = sorted(set(dataset) - set(run)), sorted(set(run) - set(dataset))
    if added or removed:
        return (f'labels differ: the dataset adds {added[:5]} and lacks {removed[:5]}')
    first = next(i for i, (a, b) in enumerate(zip(run, dataset, strict=True)) if a != b)
    return (f'label order differs: index {first} is {run[first]!r} in the run but '
            f'{dataset[first]!r} in the dataset')


def split_difference(run: dict[str, list[tuple[str, str]]],
                     dataset: dict[str, list[tuple[str, str]]]) -> str | None:
    """How the dataset's splits differ from a run's (None: the same locations)."""
    for split in SPLITS:
        a, b = set(run.get(split, [])), set(dataset.get(split, []))
        if a != b:
            moved = sorted(a ^ b)[0]
            return (f'splits differ: {split} has {len(b - a)} locations more and {len(a - b)} '
                    f'fewer than in the run (e.g. {moved[0]}/{moved[1]})')
    return None


# ---------------------------------------------------------------- pixels

def open_crop(path: Path, image_size: int) -> Image.Image:
    """Decodes a crop as RGB, letting libjpeg downscale (draft mode) while the
    result stays at least ``image_size`` on both sides."""
    with Image.open(path) as img:
        if img.format == 'JPEG':
            img.draft('RGB', (image_size, image_size))
        img.load()
        return to_rgb(img)


def draft_factor(size: tuple[int, int], image_size: int) -> int:
    """The scale (1, 2, 4 or 8) by which Pillow's JPEG draft mode decodes an image
    of ``size`` asked for at least ``image_size`` on both sides."""
    scale = min(size[0] // image_size, size[1] // image_size)
    return next(f for f in (8, 4, 2, 1) if scale >= f or f == 1)


def _hwc_uint8(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img, dtype=np.uint8))


def eval_pixels(image_size: int) -> Callable[[Image.Image], torch.Tensor]:
    """The evaluation transform, as the original pipeline (and so MegaClassifier)
    expects: the shorter side resized to ``image_size`` (bicubic), then a centred
    square crop; returned as an HWC uint8 tensor, 4x smaller to batch and move
    than floats. ``to_model_input`` scales and normalizes whole batches with the
    same float operations as ToTensor + Normalize (identical values)."""
    def pixels(img: Image.Image) -> torch.Tensor:
        img = F.resize(img, image_size, interpolation=InterpolationMode.BICUBIC)
        return _hwc_uint8(F.center_crop(img, [image_size, image_size]))

    return pixels


@dataclass(frozen=True)
class Augmentation:
    """Training augmentation, applied in this order: random resized crop,
    rotation, horizontal and vertical flips, grayscale, colour jitter (brightness,
    contrast, saturation, hue in a random order, as torchvision's ColorJitter)."""
    scale: tuple[float, float] = (0.6, 1.0)
    ratio: tuple[float, float] = (0.8, 1.25)
    rotation: float = 0.0            # degrees, uniform in [-rotation, rotation]
    hflip: float = 0.5
    vflip: float = 0.0
    grayscale: float = 0.0
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.0
    hue: float = 0.0


DEFAULT_AUGMENTATION = Augmentation()
# the original pipeline's training transform
ORIGINAL_AUGMENTATION = Augmentation(scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), rotation=90.0,
                                     hflip=0.5, vflip=0.1, grayscale=0.1, brightness=0.25,
                                     contrast=0.25, saturation=0.25, hue=0.0)


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=g))


def _crop_params(g: torch.Generator, width: int, height: int, scale: tuple[float, float],
                 ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a random resized crop (torchvision's rule)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * _uniform(g, *scale)
        aspect = math.exp(_uniform(g, *log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (), generator=g))
            left = int(torch.randint(0, width - w + 1, (), generator=g))
            return top, left, h, w
    in_ratio = width / height       # fallback: the central crop within the ratio range
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def augment_decode_size(image_size: int, aug: Augmentation) -> int:
    """The smallest side a crop may be decoded at (JPEG draft mode) so that the
    smallest random crop still has ``image_size`` pixels across."""
    return math.ceil(image_size / math.sqrt(aug.scale[0]))


def augment_pixels(image_size: int, aug: Augmentation
                   ) -> Callable[[Image.Image, torch.Generator], torch.Tensor]:
    """The training transform: PIL image and generator -> HWC uint8 tensor."""
    def pixels(img: Image.Image, g: torch.Generator) -> torch.Tensor:
        top, left, h, w = _crop_params(g, img.width, img.height, aug.scale, aug.ratio)
        img = F.resized_crop(img, top, left, h, w, [image_size, image_size],
                             interpolation=InterpolationMode.BILINEAR, antialias=True)
        if aug.rotation:
            img = F.rotate(img, _uniform(g, -aug.rotation, aug.rotation))
        if aug.hflip and float(torch.rand((), generator=g)) < aug.hflip:
            img = F.hflip(img)
        if aug.vflip and float(torch.rand((), generator=g)) < aug.vflip:
            img = F.vflip(img)
        if aug.grayscale and float(torch.rand((), generator=g)) < aug.grayscale:
            img = F.rgb_to_grayscale(img, num_output_channels=3)
        jitter = {0: (aug.brightness, F.adjust_brightness), 1: (aug.contrast, F.adjust_contrast),
                  2: (aug.saturation, F.adjust_saturation)}
        for k in torch.randperm(4, generator=g).tolist():
            if k == 3:
                if aug.hue:
                    img = F.adjust_hue(img, _uniform(g, -aug.hue, aug.hue))
                continue
            amount, fn = jitter[k]
            if amount:
                img = fn(img, _uniform(g, max(0.0, 1 - amount), 1 + amount))
        return _hwc_uint8(img)

    return pixels


def to_model_input(x: torch.Tensor, device: torch.device,
                   mean: Sequence[float] = IMAGENET_MEAN,
                   std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """A loader batch as float NCHW in channels-last layout on ``device``.

    uint8 NHWC batches are scaled to [0, 1] and normalized here; float NCHW
    batches are only moved and laid out channels-last.
    """
    x = x.to(device, non_blocking=True)
    if x.dtype == torch.uint8:
        # NHWC permuted to NCHW is already channels-last; .float() keeps the strides
        x = x.permute(0, 3, 1, 2).float().div_(255)
        m = torch.tensor(mean, dtype=x.dtype, device=device).view(1, 3, 1, 1)
        s = torch.tensor(std, dtype=x.dtype, device=device).view(1, 3, 1, 1)
        return x.sub_(m).div_(s)
    return x.contiguous(memory_format=torch.channels_last)


# ---------------------------------------------------------------- datasets and sampling

class CropDataset(Dataset[tuple[torch.Tensor, Any, float, int]]):
    """(HWC uint8 image, label, weight, row index) for each crop.

    Keys are row indices (evaluation, ``eval_pixels``) or, for training, the
    (row, seed) pairs of an ``EpochSampler`` (with ``augment``). The label is
    its index, or with ``num_classes`` (multi-label) a 0/1 float vector built
    from a sequence of label indices. A crop that cannot be read gives a
    placeholder image and label -1 (all -1 when multi-label); callers drop such
    rows and report them.
    """

    def __init__(self, root: str | os.PathLike[str], paths: Sequence[str],
                 labels: Sequence[Any] | None, weights: Sequence[float] | None,
                 image_size: int,
                 augment: Callable[[Image.Image, torch.Generator], torch.Tensor] | None = None,
                 num_classes: int | None = None, decode_size: int | None = None) -> None:
        self.root = Path(root)
        self.paths = list(paths)
        self.labels: list[Any] = list(labels) if labels is not None else [0] * len(self.paths)
        self.weights = list(weights) if weights is not None else [1.0] * len(self.paths)
        self.image_size = image_size
        self.pixels = eval_pixels(image_size)
        self.augment = augment
        self.num_classes = num_classes
        self.decode_size = decode_size or image_size

    def _label(self, i: int, readable: bool) -> Any:
        if self.num_classes is None:
            return self.labels[i] if readable else -1
        target = torch.zeros(self.num_classes) if readable else -torch.ones(self.num_classes)
        if readable:
            target[list(self.labels[i])] = 1.0
        return target

    def __len__(self) -> int:
        return len(self.paths)

    def open(self, i: int) -> Image.Image:
        """The RGB crop of row ``i``; raises OSError / ValueError when unreadable."""
        return open_crop(self.root / self.paths[i], self.decode_size)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, Any, float, int]:
        i, seed = key if isinstance(key, tuple) else (key, None)
        try:
            img = self.open(i)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
            blank = torch.zeros(self.image_size, self.image_size, 3, dtype=torch.uint8)
            return blank, self._label(i, False), 0.0, i
        if self.augment is not None and seed is not None:
            x = self.augment(img, torch.Generator().manual_seed(seed))
        else:
            x = self.pixels(img)
        return x, self._label(i, True), self.weights[i], i


class PhotoCropDataset(CropDataset):
    """Crops cut from the photos themselves (no crop files): row ``i`` is the box
    ``boxes[i]`` (normalized [x, y, w, h], upright coordinates as MegaDetector
    gives them) of the photo ``photos[i]`` under ``root``, cut as crop_detections
    cuts it (``square``: the smallest square around it, padded black) and
    decoded only as far as the box needs."""

    def __init__(self, root: str | os.PathLike[str], photos: Sequence[str],
                 boxes: Sequence[Sequence[float]], image_size: int,
                 square: bool = False) -> None:
        super().__init__(root, photos, None, None, image_size)
        self.boxes = [tuple(b) for b in boxes]
        self.square = square

    def open(self, i: int) -> Image.Image:
        photo = PhotoFile(utils.safe_join(self.root, self.paths[i]).read_bytes())
        box = utils.crop_box(self.boxes[i], *photo.size, self.square)
        if box is None:
            raise ValueError('box has zero area or lies outside the image')
        # decoded at the scale libjpeg would decode the saved crop at (open_crop's
        # draft mode: 1/2, 1/4 or 1/8 while still at least decode_size)
        factor = draft_factor((box[2] - box[0], box[3] - box[1]), self.decode_size)
        return photo.decode([box], factor).crop(scale_box(box, factor))


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + 17) % (2**63 - 1)


class EpochSampler(Sampler[tuple[int, int]]):
    """This rank's share of one epoch's sample of the training rows.

    The epoch's sample is drawn from a generator seeded by (seed, epoch): a
    shuffle of every row, or with ``weights`` as many rows drawn with
    replacement in proportion to them. Rank r of w takes positions r, r+w,
    r+2w... (the sample is padded by repeating its start, so every rank gets
    the same number), so ranks draw disjoint shares of one sample. Each position
    yields (row, seed of that crop's augmentation). ``set_epoch(epoch, start)``
    chooses the epoch and skips the first ``start`` positions of this rank's
    share (a run resumed mid-epoch).
    """

    def __init__(self, num_rows: int, seed: int, weights: np.ndarray | None = None,
                 rank: int = 0, world_size: int = 1) -> None:
        self.num_rows, self.seed, self.rank, self.world_size = num_rows, seed, rank, world_size
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def share_size(self) -> int:
        return math.ceil(self.num_rows / self.world_size)

    def epoch_share(self) -> list[tuple[int, int]]:
        g = torch.Generator().manual_seed(_epoch_seed(self.seed, self.epoch))
        if self.weights is None:
            rows = torch.randperm(self.num_rows, generator=g)
        else:
            rows = torch.multinomial(self.weights, self.num_rows, replacement=True, generator=g)
        seeds = torch.randint(0, 2**62, (self.num_rows,), generator=g)
        total = self.share_size() * self.world_size
        if total > self.num_rows:          # repeat the sample's start (several times if tiny)
            reps = math.ceil(total / self.num_rows)
            rows, seeds = rows.repeat(reps)[:total], seeds.repeat(reps)[:total]
        mine = slice(self.rank, total, self.world_size)
        return list(zip(rows[mine].tolist(), seeds[mine].tolist(), strict=True))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self.epoch_share()[self.start:])

    def __len__(self) -> int:
        return max(self.share_size() - self.start, 0)


class ShardSampler(Sampler[int]):
    """Rows rank, rank + world_size, ... in order: each row on exactly one rank."""

    def __init__(self, num_rows: int, rank: int = 0, world_size: int = 1) -> None:
        self.rows = range(rank, num_rows, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


def make_loader(ds: CropDataset, batch_size: int, num_workers: int, device: torch.device,
                sampler: Sampler[Any] | None = None, persistent: bool = True,
                ) -> DataLoader[tuple[torch.Tensor, Any, float, int]]:
    """Batches in the sampler's order (default: every row in order). The loader's
    own generator is fixed, so making an iterator never draws from torch's global
    random state (which the model's dropout uses)."""
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      generator=torch.Generator().manual_seed(0),
                      pin_memory=device.type == 'cuda',
                      persistent_workers=persistent and num_workers > 0)


def readable(y: torch.Tensor) -> torch.Tensor:
    """Rows of a label batch whose crop could be read (CropDataset marks the others
    with label -1, or all -1 for multi-label rows)."""
    return (y >= 0).all(dim=1) if y.ndim == 2 else y >= 0


def prefetch(items: Iterable[T_co], depth: int = 2) -> Iterator[T_co]:
    """Iterates ``items`` on a background thread, ``depth`` items ahead.

    With in-process data loading (--num-workers 0), crops of the next batch are
    decoded and resized (Pillow releases the GIL) while the model runs.
    Exceptions of the background thread are raised here.
    """
    q: queue.Queue[tuple[bool, Any]] = queue.Queue(depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                q.put((True, item))
            q.put((False, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            q.put((False, e))

    thread = threading.Thread(target=work, name='prefetch', daemon=True)
    thread.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():      # unblock a producer waiting on a full queue
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass


def decode_threads() -> int:
    """Threads decoding crops in process (one per core, at most 8)."""
    return max(1, min(8, os.cpu_count() or 1))


def _threaded(loader: DataLoader[Any], threads: int) -> Iterator[Any]:
    """The loader's batches, each batch's crops decoded on ``threads`` threads."""
    assert loader.batch_sampler is not None
    dataset: Any = loader.dataset
    with ThreadPoolExecutor(threads, thread_name_prefix='decode') as pool:
        for rows in loader.batch_sampler:
            yield loader.collate_fn(list(pool.map(dataset.__getitem__, rows)))


def batches(loader: DataLoader[Any]) -> Iterable[Any]:
    """The loader's batches. Without worker processes, the next batch is made on a
    background thread while the model runs, its crops decoded on one thread per
    core (Pillow and the region decoder release the GIL while they work): with a
    fast engine, decoding is what limits the speed, and threads share the cores
    with the engine better than worker processes do."""
    if loader.num_workers > 0:
        return loader
    return prefetch(_threaded(loader, decode_threads()))
