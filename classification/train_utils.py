"""The torch side shared by train_classifier, evaluate_model and run_classifier.

Model building (torchvision ResNet, efficientnet-pytorch EfficientNet),
pretrained weights (download or local file), TorchScript export and loading,
transforms, crop datasets and loaders, device choice, and the evaluation
outputs (outputs_<split>.csv.gz, overall_metrics.csv, confusion_matrices.npz,
label_stats.csv).
"""
from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import urllib.error
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import torch
import torchvision
from PIL import Image, UnidentifiedImageError
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from classification import utils
from classification.cropping import to_rgb

logger = logging.getLogger(__name__)

RESNET_MODELS = ('resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152')
EFFICIENTNET_MODELS = tuple(f'efficientnet-b{i}' for i in range(8))
VALID_MODELS = RESNET_MODELS + EFFICIENTNET_MODELS
# native input sizes of the EfficientNet family (as in efficientnet-pytorch)
EFFICIENTNET_SIZES = {'efficientnet-b0': 224, 'efficientnet-b1': 240, 'efficientnet-b2': 260,
                      'efficientnet-b3': 300, 'efficientnet-b4': 380, 'efficientnet-b5': 456,
                      'efficientnet-b6': 528, 'efficientnet-b7': 600}
T_co = TypeVar('T_co')

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_image_size(model_name: str) -> int:
    return EFFICIENTNET_SIZES.get(model_name, 224)


# ---------------------------------------------------------------- models

def _hub_hint(filename: str) -> str:
    folder = Path(torch.hub.get_dir()) / 'checkpoints'
    return (f'place the weights file at {folder / filename} (the torch hub cache, set by '
            '$TORCH_HOME), or pass --pretrained /path/to/weights.pt')


def final_layer(model: nn.Module) -> nn.Linear:
    """The classification layer (``fc`` in ResNet, ``_fc`` in EfficientNet)."""
    layer = getattr(model, 'fc', None) or getattr(model, '_fc', None)
    if not isinstance(layer, nn.Linear):
        raise TypeError(f'{type(model).__name__} has no final Linear layer')
    return layer


def _load_weights_file(model: nn.Module, path: str) -> None:
    """Loads a state dict (or a checkpoint holding one under 'model'), skipping
    tensors whose shape differs (e.g. a final layer with other classes)."""
    try:
        state, _ = checkpoint_state_dict(path)
    except utils.InputError as e:
        raise utils.InputError(f'--pretrained {e}') from e
    own = model.state_dict()
    usable = {k.removeprefix('module.'): v for k, v in state.items()}
    usable = {k: v for k, v in usable.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(own) - set(usable))
    if len(usable) == 0:
        raise utils.InputError(f'--pretrained {path}: no tensor matches the model')
    model.load_state_dict(usable, strict=False)
    logger.info('loaded %d tensors from %s; %d left as initialized%s', len(usable), path,
                len(skipped), f' ({", ".join(skipped[:4])}...)' if skipped else '')


def build_model(model_name: str, num_classes: int, pretrained: bool | str = False) -> nn.Module:
    """A classifier with ``num_classes`` outputs.

    ``pretrained``: False = random init; True = ImageNet weights (downloaded,
    or read from the torch hub cache); a path = a state dict or checkpoint of
    the same architecture (tensors of another shape, like the final layer, are
    left as initialized).
    """
    if model_name not in VALID_MODELS:
        raise utils.InputError(f'unknown model {model_name!r}; choose one of {VALID_MODELS}')
    imagenet = pretrained is True
    model: nn.Module
    if model_name in RESNET_MODELS:
        if imagenet:
            weights = torchvision.models.get_model_weights(model_name).DEFAULT
            try:
                model = torchvision.models.get_model(model_name, weights=weights)
            except (urllib.error.URLError, OSError) as e:
                filename = os.path.basename(weights.url)
                raise utils.InputError(f'cannot download ImageNet weights for {model_name} '
                                       f'({e}); {_hub_hint(filename)}') from e
            model.fc = nn.Linear(final_layer(model).in_features, num_classes)
        else:
            model = torchvision.models.get_model(model_name, weights=None,
                                                 num_classes=num_classes)
    else:
        from efficientnet_pytorch import EfficientNet
        from efficientnet_pytorch.utils import url_map
        if imagenet:
            try:
                model = EfficientNet.from_pretrained(model_name, num_classes=num_classes)
            except (urllib.error.URLError, OSError) as e:
                filename = os.path.basename(url_map[model_name])
                raise utils.InputError(f'cannot download ImageNet weights for {model_name} '
                                       f'({e}); {_hub_hint(filename)}') from e
        else:
            model = EfficientNet.from_name(model_name, num_classes=num_classes)
    if isinstance(pretrained, str):
        _load_weights_file(model, pretrained)
    return model


def set_finetune(model: nn.Module, finetune: bool) -> None:
    """With ``finetune``, only the final layer is trained."""
    for p in model.parameters():
        p.requires_grad = not finetune
    for p in final_layer(model).parameters():
        p.requires_grad = True


MULTILABEL_EXTRA_FILE = 'multilabel'


def export_torchscript(model: nn.Module, model_name: str, image_size: int, path: Path,
                       multilabel: bool = False) -> Path:
    """Writes a TorchScript file runnable by run_classifier (atomically).

    ResNets are scripted; EfficientNets are traced after switching to the
    plain swish, which TorchScript accepts and which gives identical outputs.
    A multi-label model gets an extra file ``multilabel`` in the archive, so
    run_classifier turns its outputs into per-class sigmoid probabilities.
    """
    model = model.eval().cpu()
    # TorchScript is deprecated upstream but is the file format users' tools load
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)
        if model_name in EFFICIENTNET_MODELS:
            model.set_swish(memory_efficient=False)  # type: ignore[operator]
            example = torch.zeros(1, 3, image_size, image_size)
            scripted = torch.jit.trace(model, example)
            model.set_swish(memory_efficient=True)  # type: ignore[operator]
        else:
            scripted = torch.jit.script(model)
        extra = {MULTILABEL_EXTRA_FILE: b'true'} if multilabel else {}
        with utils.atomic_path(path) as tmp:
            torch.jit.save(scripted, str(tmp), _extra_files=extra)
    return path



def compiled_path(ckpt_path: str | os.PathLike[str]) -> Path:
    """``ckpt_12.pt`` -> ``ckpt_12_compiled.pt``."""
    p = Path(ckpt_path)
    return p.with_name(f'{p.stem}_compiled{p.suffix}')


def load_torchscript(path: str | os.PathLike[str], device: torch.device) -> torch.jit.ScriptModule:
    """Loads a TorchScript classifier; a plain checkpoint gets a clear error."""
    return load_torchscript_info(path, device)[0]


def load_torchscript_info(path: str | os.PathLike[str], device: torch.device
                          ) -> tuple[torch.jit.ScriptModule, bool]:
    """(model, whether export_torchscript marked it multi-label)."""
    if not Path(path).is_file():
        raise utils.InputError(f'{path}: model file not found')
    extra = {MULTILABEL_EXTRA_FILE: ''}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', FutureWarning)
            model = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except FileNotFoundError as e:
        raise utils.InputError(f'{path}: file not found') from e
    except (RuntimeError, ValueError) as e:
        raise utils.InputError(f'{path}: not a TorchScript model (a normal checkpoint must be '
                               f'exported first with evaluate_model) ({e})') from e
    flag = extra[MULTILABEL_EXTRA_FILE]
    text = flag.decode() if isinstance(flag, bytes) else str(flag)
    return model.eval(), text.strip() == 'true'


def optimize_for_cpu(model: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """Freezes a TorchScript model (weights become constants) for CPU inference.

    Run it under ``onednn_fusion()``, which lets oneDNN fuse convolutions with
    their batch norms and activations: outputs equal to float32 rounding,
    about 1.5x faster than the model as loaded. Falls back to the model as
    loaded if freezing fails.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            return torch.jit.freeze(model.eval())
    except Exception as e:  # an unusual graph: keep the working model
        logger.warning('freezing the TorchScript model failed (%s); running as loaded', e)
        return model


@contextlib.contextmanager
def onednn_fusion(enabled: bool = True) -> Iterator[None]:
    """Turns on TorchScript's oneDNN graph fusion (a process-wide switch) for a block."""
    torch.jit.enable_onednn_fusion(enabled)
    try:
        yield
    finally:
        torch.jit.enable_onednn_fusion(False)


def pick_device(device: int | str | None = None) -> torch.device:
    """CUDA (the given index, or 0) when available, else the CPU."""
    if isinstance(device, str):
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device('cuda', device or 0)
    if device is not None:
        logger.warning('--device %s asked for, but CUDA is not available: using the CPU', device)
    return torch.device('cpu')


# ---------------------------------------------------------------- data

def train_transform(image_size: int) -> Callable[[Image.Image], torch.Tensor]:
    return T.Compose([
        T.RandomResizedCrop(image_size, scale=(0.6, 1.0), ratio=(0.8, 1.25)),
        T.RandomHorizontalFlip(),
        T.ColorJitter(brightness=0.25, contrast=0.25),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def eval_transform(image_size: int) -> Callable[[Image.Image], torch.Tensor]:
    """As the original pipeline (and so MegaClassifier) expects: the shorter side
    resized to ``image_size`` (bicubic), then a centred square crop."""
    return T.Compose([
        T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(image_size),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def eval_pixels(image_size: int) -> Callable[[Image.Image], torch.Tensor]:
    """eval_transform up to the pixels: an HWC uint8 tensor, 4x smaller to batch
    and move than floats. ``to_model_input`` then scales and normalizes whole
    batches with the same float operations as ToTensor + Normalize (identical
    values), already in channels-last layout."""
    resize = T.Compose([T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC),
                        T.CenterCrop(image_size)])

    def pixels(img: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.array(resize(img), dtype=np.uint8))

    return pixels


def to_model_input(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A loader batch as float NCHW in channels-last layout on ``device``.

    uint8 NHWC batches (``eval_pixels``) are scaled to [0, 1] and normalized
    here; float NCHW batches are only moved and laid out channels-last.
    """
    x = x.to(device, non_blocking=True)
    if x.dtype == torch.uint8:
        # NHWC permuted to NCHW is already channels-last; .float() keeps the strides
        x = x.permute(0, 3, 1, 2).float().div_(255)
        mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=device).view(1, 3, 1, 1)
        return x.sub_(mean).div_(std)
    return x.contiguous(memory_format=torch.channels_last)


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


def open_crop(path: Path, image_size: int) -> Image.Image:
    """Decodes a crop as RGB, letting libjpeg downscale (draft mode) while the
    result stays at least ``image_size`` on both sides."""
    with Image.open(path) as img:
        if img.format == 'JPEG':
            img.draft('RGB', (image_size, image_size))
        img.load()
        return to_rgb(img)


class CropDataset(Dataset[tuple[torch.Tensor, Any, float, int]]):
    """(image tensor, label, weight, row index) for each crop.

    The label is its index, or with ``num_classes`` (multi-label) a 0/1 float
    vector built from a sequence of label indices. A crop that cannot be read
    gives a placeholder image and label -1 (all -1 when multi-label); callers
    drop such rows and report them.
    """

    def __init__(self, root: str | os.PathLike[str], paths: Sequence[str],
                 labels: Sequence[Any] | None, weights: Sequence[float] | None,
                 transform: Callable[[Image.Image], torch.Tensor], image_size: int,
                 num_classes: int | None = None) -> None:
        self.root = Path(root)
        self.paths = list(paths)
        self.labels: list[Any] = list(labels) if labels is not None else [0] * len(self.paths)
        self.weights = list(weights) if weights is not None else [1.0] * len(self.paths)
        self.transform = transform
        self.image_size = image_size
        self.num_classes = num_classes

    def _label(self, i: int, readable: bool) -> Any:
        if self.num_classes is None:
            return self.labels[i] if readable else -1
        target = torch.zeros(self.num_classes) if readable else -torch.ones(self.num_classes)
        if readable:
            target[list(self.labels[i])] = 1.0
        return target

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Any, float, int]:
        try:
            img = open_crop(self.root / self.paths[i], self.image_size)
        except (OSError, UnidentifiedImageError, ValueError):
            # a placeholder of the transform's shape and type; callers drop label -1
            blank = Image.new('RGB', (self.image_size, self.image_size))
            return self.transform(blank), self._label(i, False), 0.0, i
        return self.transform(img), self._label(i, True), self.weights[i], i


def make_loader(ds: CropDataset, batch_size: int, num_workers: int, device: torch.device,
                shuffle: bool = False, sampler: torch.utils.data.Sampler[int] | None = None,
                generator: torch.Generator | None = None,
                ) -> DataLoader[tuple[torch.Tensor, Any, float, int]]:
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle and sampler is None,
                      sampler=sampler, num_workers=num_workers, generator=generator,
                      pin_memory=device.type == 'cuda',
                      persistent_workers=num_workers > 0)


# ---------------------------------------------------------------- evaluation

@dataclass
class EpochResult:
    loss: float
    acc_top1: float
    acc_top3: float
    loss_weighted: float
    acc_weighted_top1: float
    acc_weighted_top3: float
    probs: np.ndarray | None = None       # N x C, in dataset order
    unreadable: tuple[int, ...] = ()
    # per example seen by run_epoch: dataset row, true label, top-1 label, its probability
    examples: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None

    def metrics(self) -> dict[str, float]:
        return {'loss': self.loss, 'acc_top1': self.acc_top1, 'acc_top3': self.acc_top3,
                'loss_weighted': self.loss_weighted, 'acc_weighted_top1': self.acc_weighted_top1,
                'acc_weighted_top3': self.acc_weighted_top3}


def readable(y: torch.Tensor) -> torch.Tensor:
    """Rows of a label batch whose crop could be read (CropDataset marks the others
    with label -1, or all -1 for multi-label rows)."""
    return (y >= 0).all(dim=1) if y.ndim == 2 else y >= 0


def run_epoch(model: nn.Module, loader: DataLoader[Any], device: torch.device,
              optimizer: torch.optim.Optimizer | None = None, desc: str = '') -> EpochResult:
    """One pass over ``loader``: trains when ``optimizer`` is given, else evaluates."""
    from tqdm import tqdm
    training = optimizer is not None
    model.train(training)
    n_seen = 0
    sums = np.zeros(6)  # loss, top1, top3, weighted loss, weighted top1, weighted top3
    total_w = 0.0
    unreadable: list[int] = []
    seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
    with torch.set_grad_enabled(training):
        for x, y, w, idx in tqdm(loader, desc=desc, leave=False, disable=None):
            multilabel = y.ndim == 2            # 0/1 targets per class
            ok = readable(y)
            if not bool(ok.all()):
                unreadable.extend(int(i) for i in idx[~ok])
                x, y, w, idx = x[ok], y[ok], w[ok], idx[ok]
                if len(y) == 0:
                    continue
            x = to_model_input(x, device)
            y = y.to(device, non_blocking=True)
            w = w.to(device, dtype=torch.float32, non_blocking=True)
            logits = model(x)
            if multilabel:   # one sigmoid per class; summed so the scale matches softmax CE
                losses = nn.functional.binary_cross_entropy_with_logits(
                    logits, y, reduction='none').sum(dim=1)
            else:
                losses = nn.functional.cross_entropy(logits, y, reduction='none')
            if training:
                assert optimizer is not None
                optimizer.zero_grad(set_to_none=True)
                (losses * w).sum().div(max(float(w.sum()), 1e-8)).backward()
                optimizer.step()
            with torch.no_grad():
                k = min(3, logits.shape[1])
                top = logits.topk(k, dim=1).indices
                if multilabel:   # right when the top class is one of the true ones
                    hit1 = y.gather(1, top[:, :1])[:, 0]
                    hit3 = y.gather(1, top).amax(dim=1)
                    conf = logits.float().sigmoid().gather(1, top[:, :1])[:, 0]
                    # the true label shown for an example: the predicted one if right,
                    # else its first true label
                    true = torch.where(hit1 > 0, top[:, 0], y.argmax(dim=1))
                else:
                    hit1 = (top[:, 0] == y).float()
                    hit3 = (top == y[:, None]).any(dim=1).float()
                    conf = logits.float().softmax(dim=1).gather(1, top[:, :1])[:, 0]
                    true = y
                seen.append((idx, true.cpu(), top[:, 0].cpu(), conf.cpu()))
                batch = torch.stack([losses, hit1, hit3, losses * w, hit1 * w, hit3 * w])
                sums[:3] += batch[:3].sum(dim=1).cpu().numpy()
                sums[3:] += batch[3:].sum(dim=1).cpu().numpy()
                n_seen += len(y)
                total_w += float(w.sum())
    n, tw = max(n_seen, 1), max(total_w, 1e-8)
    examples = None
    if seen:
        cols = [torch.cat([b[j] for b in seen]).numpy() for j in range(4)]
        examples = (cols[0].astype(np.int64), cols[1].astype(np.int64),
                    cols[2].astype(np.int64), cols[3].astype(np.float64))
    return EpochResult(float(sums[0] / n), float(sums[1] / n), float(sums[2] / n),
                       float(sums[3] / tw), float(sums[4] / tw), float(sums[5] / tw), None,
                       tuple(unreadable), examples)


def extreme_examples(true: np.ndarray, pred: np.ndarray, conf: np.ndarray, label: int,
                     n: int) -> dict[str, np.ndarray]:
    """Positions (into the arrays) of a label's most confident examples, at most ``n``
    each: ``tp`` (right), ``fp`` (predicted as the label, wrongly), ``fn`` (of the
    label, predicted as another); most confident first, ties by position."""
    groups = {'tp': (true == label) & (pred == label),
              'fp': (true != label) & (pred == label),
              'fn': (true == label) & (pred != label)}
    out = {}
    for name, mask in groups.items():
        where = np.flatnonzero(mask)
        out[name] = where[np.argsort(-conf[where], kind='stable')[:n]]
    return out


def label_stats(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str],
                split: str) -> tuple[np.ndarray, pd.DataFrame]:
    """(confusion matrix with rows = truth, per-label precision and recall) via scikit-learn;
    a label never predicted (or never present) gets NaN precision (or recall)."""
    from sklearn.metrics import (
        confusion_matrix,
        multilabel_confusion_matrix,
        precision_score,
        recall_score,
    )
    idx = list(range(len(labels)))
    if y_true.ndim == 2:     # multi-label indicator matrices
        cm = multilabel_confusion_matrix(y_true, y_pred)
    else:
        cm = confusion_matrix(y_true, y_pred, labels=idx)
    precision = precision_score(y_true, y_pred, labels=idx, average=None, zero_division=np.nan)
    recall = recall_score(y_true, y_pred, labels=idx, average=None, zero_division=np.nan)
    return cm, pd.DataFrame({'split': split, 'label': list(labels), 'precision': precision,
                             'recall': recall})


def write_evaluation(out_dir: Path, split_frames: dict[str, pd.DataFrame],
                     results: dict[str, EpochResult], labels: Sequence[str],
                     multilabel: bool = False) -> pd.DataFrame:
    """Writes outputs_<split>.csv.gz, overall_metrics.csv, confusion_matrices.npz and
    label_stats.csv; returns the overall metrics table.

    Multi-label: a class counts as predicted when its probability is at least
    0.5; confusion_matrices.npz holds one 2 x 2 matrix per label (sklearn's
    multilabel_confusion_matrix) and precision/recall are per label. The frames are
    load_split_frames' (their label_idx, or label_set when multi-label, are the truth).
    """
    overall, stats, cms = [], [], {}
    for split, df in split_frames.items():
        res = results[split]
        assert res.probs is not None
        keep = np.ones(len(df), dtype=bool)
        keep[list(res.unreadable)] = False
        probs = res.probs[keep]
        sub = df[keep].reset_index(drop=True)
        out = pd.DataFrame({'path': sub['path'], 'label': sub['label'],
                            'weight': sub['weight']})
        out = pd.concat([out, pd.DataFrame(probs, columns=list(labels))], axis=1)
        utils.write_csv(out, out_dir / f'outputs_{split}.csv.gz')
        if multilabel:
            y_hot = multi_hot(sub['label_set'].tolist(), len(labels)).astype(np.int64)
            cms[split], stats_split = label_stats(y_hot, (probs >= 0.5).astype(np.int64),
                                                  labels, split)
        else:
            y_true = sub['label_idx'].to_numpy(dtype=np.int64)
            cms[split], stats_split = label_stats(y_true, probs.argmax(axis=1), labels, split)
        stats.append(stats_split)
        overall.append({'split': split, **res.metrics()})
    table = pd.DataFrame(overall)
    utils.write_csv(table, out_dir / 'overall_metrics.csv')
    utils.write_csv(pd.concat(stats, ignore_index=True), out_dir / 'label_stats.csv')
    with utils.atomic_path(out_dir / 'confusion_matrices.npz') as tmp:
        with open(tmp, 'wb') as f:
            np.savez_compressed(f, **cms)  # type: ignore[arg-type]
    return table


def log_metrics(table: pd.DataFrame) -> None:
    """One log line per split of an overall_metrics table."""
    for row in table.itertuples():
        logger.info('%s: top-1 %.3f, top-3 %.3f, loss %.3f', row.split, row.acc_top1,
                    row.acc_top3, row.loss)


def load_split_frames(dataset_dir: str | os.PathLike[str], labels: Sequence[str],
                      splits: Sequence[str], multilabel: bool = False
                      ) -> dict[str, pd.DataFrame]:
    """Rows of classification_ds.csv per split (by location), with label_idx and weight.

    ``multilabel``: labels are comma-separated lists; ``label_set`` holds their
    indices and ``label_idx`` the first (for sampling by label).
    """
    base = Path(dataset_dir)
    df = utils.read_csv(base / 'classification_ds.csv', dtype={'location': str, 'dataset': str,
                                                               'label': str, 'path': str})
    split_locs = utils.read_json(base / 'splits.json')
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
    if 'weight' not in df.columns:
        df['weight'] = 1.0
    keys = pd.Series(list(zip(df['dataset'], df['location'], strict=True)), index=df.index)
    out = {}
    for split in splits:
        locs = {(d, str(loc)) for d, loc in split_locs.get(split, [])}
        out[split] = df[keys.isin(locs)].reset_index(drop=True)
    return out


def checkpoint_state_dict(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model state dict, whole checkpoint) from a training checkpoint, loaded safely."""
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except FileNotFoundError as e:
        raise utils.InputError(f'{path}: checkpoint not found') from e
    except Exception as e:  # torch raises many types for bad files
        raise utils.InputError(f'{path}: not a loadable checkpoint ({e})') from e
    if isinstance(ckpt, dict) and isinstance(ckpt.get('model'), dict):
        return ckpt['model'], ckpt
    if isinstance(ckpt, dict):
        return ckpt, {}
    raise utils.InputError(f'{path}: expected a checkpoint dict')


def is_torchscript_file(path: str | os.PathLike[str]) -> bool:
    """TorchScript archives hold a ``code/`` folder; torch.save checkpoints do not."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as z:
            return any('/code/' in n or n.startswith('code/') for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


@torch.no_grad()
def predict_probs(model: nn.Module | torch.jit.ScriptModule,
                  loader: DataLoader[Any], device: torch.device, num_outputs: int,
                  bf16: bool = False, desc: str = 'classifying', multilabel: bool = False
                  ) -> tuple[np.ndarray, list[int]]:
    """Softmax outputs (sigmoid per class with ``multilabel``) for every row of the
    loader's dataset (rows that could not be read are left at zero and returned as
    the second value).

    ``bf16`` runs the model under bfloat16 autocast (CPU with AMX/AVX-512 bf16,
    or CUDA); probabilities then differ from float32 in about the third digit.
    """
    from tqdm import tqdm
    model.eval()
    probs = np.zeros((len(loader.dataset), num_outputs), dtype=np.float32)  # type: ignore
    unreadable: list[int] = []
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    batches: Iterable[Any] = loader if loader.num_workers > 0 else prefetch(loader)
    for x, y, _, idx in tqdm(batches, total=len(loader), desc=desc, leave=False,
                             disable=None):
        ok = readable(y)
        if not bool(ok.all()):
            unreadable.extend(int(i) for i in idx[~ok])
            x, idx = x[ok], idx[ok]
            if len(idx) == 0:
                continue
        x = to_model_input(x, device)
        with autocast:
            logits = model(x)
        if logits.shape[1] != num_outputs:
            raise utils.InputError(f'the model has {logits.shape[1]} outputs but '
                                   f'{num_outputs} categories were given')
        out = logits.float().sigmoid() if multilabel else logits.float().softmax(dim=1)
        probs[idx.numpy()] = out.cpu().numpy()
    return probs, sorted(unreadable)


def multi_hot(label_sets: Sequence[Sequence[int]], num_classes: int) -> np.ndarray:
    """N x C 0/1 matrix of each row's label indices."""
    out = np.zeros((len(label_sets), num_classes), dtype=np.float64)
    for i, labels in enumerate(label_sets):
        out[i, list(labels)] = 1.0
    return out


def metrics_from_probs(probs: np.ndarray, y: np.ndarray, w: np.ndarray,
                       unreadable: Sequence[int] = ()) -> EpochResult:
    """Loss and top-1/top-3 accuracy, plain and weighted, over the readable rows.

    ``y``: label indices (loss: cross-entropy of the probabilities), or an N x C
    0/1 matrix for multi-label rows (loss: binary cross-entropy summed over
    classes; a hit is a top class that is one of the true ones).
    """
    keep = np.ones(len(y), dtype=bool)
    keep[list(unreadable)] = False
    p, yy, ww = probs[keep], y[keep], w[keep].astype(np.float64)
    if len(yy) == 0:
        return EpochResult(float('nan'), float('nan'), float('nan'), float('nan'),
                           float('nan'), float('nan'), probs, tuple(unreadable))
    order = np.argsort(-p, axis=1, kind='stable')
    if yy.ndim == 2:
        pc = np.clip(p, 1e-12, 1 - 1e-12)
        loss = -(yy * np.log(pc) + (1 - yy) * np.log(1 - pc)).sum(axis=1)
        hit1 = np.take_along_axis(yy, order[:, :1], axis=1)[:, 0] > 0
        hit3 = np.take_along_axis(yy, order[:, :3], axis=1).max(axis=1) > 0
    else:
        loss = -np.log(np.clip(p[np.arange(len(yy)), yy], 1e-12, None))
        hit1 = order[:, 0] == yy
        hit3 = (order[:, :3] == yy[:, None]).any(axis=1)
    tw = max(ww.sum(), 1e-12)
    return EpochResult(float(loss.mean()), float(hit1.mean()), float(hit3.mean()),
                       float((loss * ww).sum() / tw), float((hit1 * ww).sum() / tw),
                       float((hit3 * ww).sum() / tw), probs, tuple(unreadable))


def evaluate_frames(model: nn.Module | torch.jit.ScriptModule, frames: dict[str, pd.DataFrame],
                    crops_dir: str, image_size: int, batch_size: int, num_workers: int,
                    device: torch.device, num_outputs: int,
                    aggregate: np.ndarray | None = None,
                    multilabel: bool = False) -> dict[str, EpochResult]:
    """Runs the model on every split; ``aggregate`` (outputs x labels, 0/1) sums
    model outputs into the dataset's labels (for a classifier with other labels;
    multi-label: the largest of them). ``multilabel``: sigmoid outputs, scored
    against each row's ``label_set`` (from load_split_frames)."""
    results = {}
    for split, df in frames.items():
        if df.empty:
            continue
        loader = make_loader(CropDataset(crops_dir, df['path'].tolist(),
                                         df['label_idx'].tolist(), df['weight'].tolist(),
                                         eval_pixels(image_size), image_size),
                             batch_size, num_workers, device)
        probs, bad = predict_probs(model, loader, device, num_outputs, desc=f'eval {split}',
                                   multilabel=multilabel)
        if aggregate is not None:
            probs = ((probs[:, :, None] * aggregate[None]).max(axis=1) if multilabel
                     else probs @ aggregate)
        if bad:
            logger.warning('%s: %d crops could not be read and were left out', split, len(bad))
        y = (multi_hot(df['label_set'].tolist(), probs.shape[1]) if multilabel
             else df['label_idx'].to_numpy())
        results[split] = metrics_from_probs(probs, y, df['weight'].to_numpy(), bad)
    return results
