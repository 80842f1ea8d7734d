"""Running a classifier over crops: probabilities for every row of a table, on one
process or spread over the processes of a torchrun group (each row on exactly one
of them, the results summed back so every process holds them all), and the
evaluation of a model on the splits of a dataset.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from classification import classifier_output, crop_data, metrics, utils
from classification.distributed import Dist
from classification.model_files import IMAGENET_MEAN, IMAGENET_STD

logger = logging.getLogger(__name__)


Runner = Callable[[torch.Tensor], torch.Tensor]


def iter_probs(run: Runner, loader: DataLoader[Any], device: torch.device, num_outputs: int,
               multilabel: bool = False, mean: Sequence[float] = IMAGENET_MEAN,
               std: Sequence[float] = IMAGENET_STD, desc: str = 'classifying',
               ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(row indices, their probabilities, rows that could not be read) per batch
    of the loader; ``run`` maps a normalized float batch on ``device`` to logits.
    Softmax outputs, or with ``multilabel`` a sigmoid per class."""
    from tqdm import tqdm
    for x, y, _, idx in tqdm(crop_data.batches(loader), total=len(loader), desc=desc,
                             leave=False, disable=None):
        ok = crop_data.readable(y)
        bad = idx[~ok].numpy()
        x, idx = (x[ok], idx[ok]) if len(bad) else (x, idx)
        if len(idx) == 0:
            yield idx.numpy(), np.zeros((0, num_outputs), dtype=np.float32), bad
            continue
        with torch.no_grad():
            logits = run(crop_data.to_model_input(x, device, mean, std))
        if logits.ndim != 2 or logits.shape[1] != num_outputs:
            raise utils.InputError(f'the model gives outputs of shape {tuple(logits.shape)}, '
                                   f'not one score for each of {num_outputs} categories')
        out = logits.float().sigmoid() if multilabel else logits.float().softmax(dim=1)
        yield idx.numpy(), out.cpu().numpy(), bad


@torch.no_grad()
def predict_probs(model: nn.Module | torch.jit.ScriptModule,
                  loader: DataLoader[Any], device: torch.device, num_outputs: int,
                  bf16: bool = False, desc: str = 'classifying', multilabel: bool = False,
                  dist: Dist | None = None, mean: Sequence[float] = IMAGENET_MEAN,
                  std: Sequence[float] = IMAGENET_STD) -> tuple[np.ndarray, list[int]]:
    """Softmax outputs (sigmoid per class with ``multilabel``) for every row of the
    loader's dataset, and the rows that could not be read (left at zero).

    With ``dist``, the loader holds this process's share of the rows
    (``crop_data.ShardSampler``) and the results of all processes are summed, so
    each process returns every row. ``bf16`` runs the model under bfloat16
    autocast; probabilities then differ from float32 in about the third digit.
    """
    model.eval()
    n = len(loader.dataset)  # type: ignore[arg-type]
    probs = np.zeros((n, num_outputs), dtype=np.float32)
    bad = np.zeros(n, dtype=np.float32)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    def run(x: torch.Tensor) -> torch.Tensor:
        with autocast:
            return model(x)

    for idx, out, unread in iter_probs(run, loader, device, num_outputs, multilabel, mean,
                                       std, desc):
        probs[idx] = out
        bad[unread] = 1
    if dist is not None and dist.enabled:
        probs, bad = dist.sum_(probs), dist.sum_(bad)
    return probs, np.flatnonzero(bad > 0).tolist()


def target_matrix(target_mapping: Mapping[str, Sequence[str]], model_labels: Sequence[str],
                  labels: Sequence[str], source: str) -> tuple[np.ndarray, list[str]]:
    """(0/1 matrix model outputs x targets, the targets): the dataset's labels in
    order, then every other target of the mapping (e.g. 'other') in its order.

    Every target is kept; a model label listed under two targets, or not in the
    model's label index, is refused.
    """
    targets = list(labels) + [t for t in target_mapping if t not in set(labels)]
    reserved = [t for t in targets if t in classifier_output.NOT_PROBABILITIES]
    if reserved:
        raise utils.InputError(f'{source}: {reserved[0]!r} cannot name a target (it is a '
                               'column of its own in the outputs)')
    col = {name: j for j, name in enumerate(targets)}
    row = {name: i for i, name in enumerate(model_labels)}
    mat = np.zeros((len(model_labels), len(targets)), dtype=np.float64)
    for target, sources in target_mapping.items():
        if not isinstance(sources, list):
            raise utils.InputError(f'{source}: {target!r} must map to a list of labels')
        for s in sources:
            if s not in row:
                raise utils.InputError(f'{source}: {s!r} (under {target!r}) is not in the '
                                       'classifier label index')
            mat[row[s], col[target]] = 1.0
    if (mat.sum(axis=1) > 1).any():
        raise utils.InputError(f'{source}: a classifier label is mapped to two targets')
    unmapped = [t for t in labels if t not in target_mapping]
    if unmapped:
        logger.warning('%s: no classifier labels for %s: their probability is 0', source,
                       unmapped[:10])
    return mat, targets


def map_probs(probs: np.ndarray, matrix: np.ndarray, multilabel: bool) -> np.ndarray:
    """Model probabilities summed per target and renormalised over the mapped model
    labels (rows sum to 1); multi-label: the largest probability per target."""
    if multilabel:
        out = np.zeros((len(probs), matrix.shape[1]), dtype=probs.dtype)
        for j in range(matrix.shape[1]):
            cols = matrix[:, j] > 0
            if cols.any():
                out[:, j] = probs[:, cols].max(axis=1)
        return out
    out = probs.astype(np.float64) @ matrix
    total = out.sum(axis=1, keepdims=True)
    return np.divide(out, total, out=np.zeros_like(out), where=total > 0).astype(np.float32)


def evaluate_frames(model: nn.Module | torch.jit.ScriptModule, frames: dict[str, pd.DataFrame],
                    crops_dir: str, image_size: int, batch_size: int, num_workers: int,
                    device: torch.device, num_outputs: int,
                    matrix: np.ndarray | None = None, multilabel: bool = False,
                    dist: Dist | None = None, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD, bf16: bool = False,
                    ) -> dict[str, metrics.EpochResult]:
    """Runs the model on every split (frames from load_split_frames with a ``weight``
    column); ``matrix`` (from target_matrix) maps its outputs to targets.
    ``multilabel``: sigmoid outputs, scored against each row's ``label_set``."""
    results = {}
    rank, world = (dist.rank, dist.world_size) if dist else (0, 1)
    for split, df in frames.items():
        if df.empty:
            continue
        ds = crop_data.CropDataset(crops_dir, df['path'].tolist(), df['label_idx'].tolist(),
                                   df['weight'].tolist(), image_size)
        loader = crop_data.make_loader(ds, batch_size, num_workers, device,
                                       crop_data.ShardSampler(len(ds), rank, world),
                                       persistent=False)
        probs, bad = predict_probs(model, loader, device, num_outputs, bf16=bf16,
                                   desc=f'eval {split}', multilabel=multilabel, dist=dist,
                                   mean=mean, std=std)
        if matrix is not None:
            probs = map_probs(probs, matrix, multilabel)
        if bad:
            names = df['path'].iloc[list(bad)[:5]].tolist()
            logger.warning('%s: %d crops could not be read and were left out (e.g. %s)', split,
                           len(bad), ', '.join(names))
        y = (metrics.multi_hot(df['label_set'].tolist(), probs.shape[1]) if multilabel
             else df['label_idx'].to_numpy())
        results[split] = metrics.metrics_from_probs(probs, y, df['weight'].to_numpy(), bad)
    return results
