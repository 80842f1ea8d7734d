"""Model files: training checkpoints (loaded with ``weights_only``) and TorchScript
exports that say how to use them.

An exported TorchScript file carries an extra file ``classifier.json`` (see
``ClassifierInfo``): the input size, the normalisation, the label names and
whether the model is multi-label. run_classifier and evaluate_model read it, so a
model is not run at the wrong size or with the wrong labels by mistake. Files
made before it (and MegaClassifier's) have no such entry and still load.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from classification import utils

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INFO_EXTRA_FILE = 'classifier.json'
MULTILABEL_EXTRA_FILE = 'multilabel'       # older exports: only this flag


@dataclass(frozen=True)
class ClassifierInfo:
    """What a TorchScript classifier needs to be used right."""
    model_name: str
    image_size: int
    labels: tuple[str, ...]
    multilabel: bool = False
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, text: str | bytes, source: str) -> ClassifierInfo:
        try:
            d = json.loads(text)
            info = cls(model_name=str(d['model_name']), image_size=int(d['image_size']),
                       labels=tuple(str(x) for x in d['labels']),
                       multilabel=bool(d['multilabel']),
                       mean=tuple(float(x) for x in d['mean']),  # type: ignore[arg-type]
                       std=tuple(float(x) for x in d['std']))  # type: ignore[arg-type]
        except (ValueError, KeyError, TypeError) as e:
            raise utils.InputError(f'{source}: unreadable {INFO_EXTRA_FILE} ({e})') from e
        if info.image_size <= 0 or len(info.mean) != 3 or len(info.std) != 3:
            raise utils.InputError(f'{source}: {INFO_EXTRA_FILE} has an invalid size or '
                                   'normalisation')
        return info


def normalisation(info: ClassifierInfo | None
                  ) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(mean, std) a model's inputs are normalised with (ImageNet's for files
    without a ClassifierInfo)."""
    return (info.mean, info.std) if info else (IMAGENET_MEAN, IMAGENET_STD)


def export_torchscript(model: nn.Module, info: ClassifierInfo, path: Path) -> Path:
    """Writes a TorchScript file runnable by run_classifier (atomically), with ``info``
    inside it.

    ResNets are scripted; EfficientNets are traced (their SiLU traces as it is).
    """
    model = model.eval().cpu()
    # TorchScript is deprecated upstream but is the file format users' tools load
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)
        if info.model_name.startswith('efficientnet'):
            example = torch.zeros(1, 3, info.image_size, info.image_size)
            scripted = torch.jit.trace(model, example)
        else:
            scripted = torch.jit.script(model)
        extra = {INFO_EXTRA_FILE: info.to_json()}
        if info.multilabel:
            extra[MULTILABEL_EXTRA_FILE] = b'true'
        with utils.atomic_path(path) as tmp:
            torch.jit.save(scripted, str(tmp), _extra_files=extra)
    return path


def compiled_path(ckpt_path: str | os.PathLike[str]) -> Path:
    """``ckpt_12.pt`` -> ``ckpt_12_compiled.pt``."""
    p = Path(ckpt_path)
    return p.with_name(f'{p.stem}_compiled{p.suffix}')


def load_torchscript(path: str | os.PathLike[str], device: torch.device) -> torch.jit.ScriptModule:
    """Loads a TorchScript classifier; a plain checkpoint gets a clear error."""
    return load_classifier(path, device)[0]


def load_classifier(path: str | os.PathLike[str], device: torch.device
                    ) -> tuple[torch.jit.ScriptModule, ClassifierInfo | None, bool]:
    """(model, its ClassifierInfo or None for files without one, whether it is
    multi-label)."""
    if not Path(path).is_file():
        raise utils.InputError(f'{path}: model file not found')
    extra = {INFO_EXTRA_FILE: '', MULTILABEL_EXTRA_FILE: ''}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', FutureWarning)
            model = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except FileNotFoundError as e:
        raise utils.InputError(f'{path}: file not found') from e
    except (RuntimeError, ValueError) as e:
        raise utils.InputError(f'{path}: not a TorchScript model (a normal checkpoint must be '
                               f'exported first with evaluate_model) ({e})') from e
    raw = extra[INFO_EXTRA_FILE]
    info = ClassifierInfo.from_json(raw, str(path)) if raw else None
    flag = extra[MULTILABEL_EXTRA_FILE]
    text = flag.decode() if isinstance(flag, bytes) else str(flag)
    multilabel = info.multilabel if info else text.strip() == 'true'
    return model.eval(), info, multilabel


def probe_outputs(model: torch.jit.ScriptModule, image_size: int, device: torch.device,
                  source: str) -> int:
    """The number of outputs of a model file without classifier metadata, from one
    run on a blank image; a file that is not a classifier (a MegaDetector file
    gives boxes) is refused in one line."""
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, 3, image_size, image_size, device=device))
    except RuntimeError as e:
        raise utils.InputError(f'{source}: cannot run on a {image_size}x{image_size} '
                               f'image ({utils.one_line(str(e))[:300]})') from e
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 1:
        raise utils.InputError(f'{source}: not a classifier (its output is not one row '
                               'of scores per image; a MegaDetector file?)')
    return int(out.shape[1])


def check_image_size(info: ClassifierInfo | None, asked: int | None, default: int = 224,
                     what: str = 'model') -> int:
    """The input size to run a model at: the file's own unless ``asked`` says
    otherwise (then with a warning, since labels change at the wrong size)."""
    if info is None:
        return asked if asked is not None else default
    if asked is not None and asked != info.image_size:
        logger.warning('--image-size %d differs from the %d px the %s was trained at: '
                       'predictions will be less accurate', asked, info.image_size, what)
        return asked
    return info.image_size


def check_labels(info: ClassifierInfo | None, labels: Sequence[str], source: str) -> None:
    """Refuses label names that differ from the ones the model was trained with."""
    if info is None or tuple(labels) == info.labels:
        return
    if sorted(labels) == sorted(info.labels):
        raise utils.InputError(f'{source}: the labels are those of the model but in another '
                               'order; its outputs would be mislabeled')
    extra = [lab for lab in labels if lab not in info.labels]
    missing = [lab for lab in info.labels if lab not in labels]
    raise utils.InputError(f"{source}: labels differ from the model's own ({len(labels)} "
                           f'against {len(info.labels)}; not in the model: {extra[:5]}, '
                           f'missing: {missing[:5]})')


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


def save_checkpoint(obj: dict[str, Any], path: Path) -> None:
    """torch.save through a temporary file and a rename: a kill leaves the old file."""
    with utils.atomic_path(path) as tmp:
        torch.save(obj, tmp)


def is_torchscript_file(path: str | os.PathLike[str]) -> bool:
    """TorchScript archives hold a ``code/`` folder; torch.save checkpoints do not."""
    try:
        with zipfile.ZipFile(path) as z:
            return any('/code/' in n or n.startswith('code/') for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False
