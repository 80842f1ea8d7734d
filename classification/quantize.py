"""int8 classifiers for OpenVINO: post-training quantization with NNCF.

``run_classifier --precision int8 --calibration-crops DIR`` runs an int8 copy of
the classifier's ONNX export. NNCF (OpenVINO's own quantization library)
measures the activation ranges on up to ``CALIBRATION_SIZE`` crops of DIR,
preprocessed exactly as run_classifier preprocesses crops, and writes an
OpenVINO IR pair (``.xml`` + ``.bin``) beside the ONNX export. The file name
carries a key of everything the result depends on (the TorchScript file, the
calibration crops' names and bytes, the input size and normalisation, the NNCF
version), so a changed model or calibration set never reuses a stale copy, and
every shard or process of a run with the same inputs gets the same file.

On CPUs with AVX-512 VNNI or AMX, int8 ResNets run about twice as fast as bf16;
depthwise networks (EfficientNet) gain little. Check the agreement with fp32 on
your own crops (bench/bench_archive.py reports it) before using it.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from classification import crop_data, utils

logger = logging.getLogger(__name__)

CALIBRATION_SIZE = 300
# bumped when the quantization recipe changes
_RECIPE = '1'
_SUFFIXES = ('.jpg', '.jpeg', '.png')


@dataclass(frozen=True)
class Calibration:
    """The crops an int8 model is calibrated on: ``names`` relative to ``root``,
    and ``digest``, a SHA-256 of their names and bytes."""
    root: str
    names: tuple[str, ...]
    digest: str


def nncf_installed() -> bool:
    return importlib.util.find_spec('nncf') is not None


def calibration_set(root: str | os.PathLike[str], size: int = CALIBRATION_SIZE) -> Calibration:
    """Up to ``size`` image files under ``root``, evenly spaced over their sorted
    relative paths (so the choice is the same on every machine)."""
    base = Path(root)
    if not base.is_dir():
        raise utils.InputError(f'--calibration-crops {root}: not a folder')
    names = sorted(p.relative_to(base).as_posix() for p in base.rglob('*')
                   if p.suffix.lower() in _SUFFIXES and p.is_file())
    if not names:
        raise utils.InputError(f'--calibration-crops {root}: no .jpg or .png crops in it')
    if len(names) > size:
        names = [names[int(i)] for i in np.linspace(0, len(names) - 1, size)]
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode() + b'\0')
        h.update(hashlib.sha256((base / name).read_bytes()).digest())
    return Calibration(str(base), tuple(names), h.hexdigest())


def int8_key(model_sha: str, calibration: Calibration, image_size: int,
             mean: Sequence[float], std: Sequence[float]) -> str:
    """What an int8 copy depends on, as a short hex key."""
    parts = [_RECIPE, model_sha, calibration.digest, str(image_size), repr(tuple(mean)),
             repr(tuple(std)), importlib.metadata.version('nncf')]
    return hashlib.sha256('\n'.join(parts).encode()).hexdigest()[:16]


def calibration_inputs(calibration: Calibration, image_size: int, mean: Sequence[float],
                       std: Sequence[float]) -> list[np.ndarray]:
    """The calibration crops as run_classifier feeds them to a model: one
    normalised float32 NCHW array per crop (unreadable ones left out)."""
    ds = crop_data.CropDataset(calibration.root, list(calibration.names), None, None,
                               image_size)
    loader = crop_data.make_loader(ds, 32, 0, torch.device('cpu'), persistent=False)
    out: list[np.ndarray] = []
    for x, y, _, _ in crop_data.batches(loader):
        ok = crop_data.readable(y)
        batch = crop_data.to_model_input(x[ok], torch.device('cpu'), mean, std)
        out.extend(np.ascontiguousarray(b[None].numpy(), dtype=np.float32) for b in batch)
    if not out:
        raise utils.InputError(f'--calibration-crops {calibration.root}: none of its crops '
                               'could be read')
    return out


def int8_model(onnx: Path, key: str, calibration: Calibration, image_size: int,
               mean: Sequence[float], std: Sequence[float]) -> Path:
    """The int8 OpenVINO IR of ``onnx`` for ``key`` (see ``int8_key``), made once
    beside it: ``<name>.int8-<key>.xml`` and its ``.bin``. Written to a temporary
    name and renamed (.bin first, the .xml last), so a killed run leaves no file
    that looks complete."""
    target = onnx.with_name(f'{onnx.stem}.int8-{key}.xml')
    if target.is_file() and target.with_suffix('.bin').is_file():
        return target
    logger.info('quantizing the model to int8 on %d crops of %s (once): %s',
                len(calibration.names), calibration.root, target)
    inputs = calibration_inputs(calibration, image_size, mean, std)
    # NNCF draws its progress bar on stdout, which may be the run's data ('-')
    # and its import makes torch warn that this machine has no CUDA
    logging.getLogger('torch.utils.cpp_extension').setLevel(logging.ERROR)
    with contextlib.redirect_stdout(sys.stderr):
        import nncf
        import openvino as ov
        model = ov.Core().read_model(str(onnx))
        quantized = nncf.quantize(model, nncf.Dataset(inputs), subset_size=len(inputs),
                                  preset=nncf.QuantizationPreset.PERFORMANCE)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix='.int8-') as tmp:
        staged = Path(tmp) / target.name
        ov.save_model(quantized, str(staged), compress_to_fp16=False)
        for path in (staged.with_suffix('.bin'), staged):
            os.chmod(path, utils.file_mode())
            os.replace(path, target.parent / path.name)
    return target
