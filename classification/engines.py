"""Inference engines for a classifier: PyTorch (TorchScript), OpenVINO, ONNX Runtime.

OpenVINO and ONNX Runtime run an ONNX export of the TorchScript file. The export
is made on first use and cached (``onnx_path``): beside the TorchScript file as
``<name>.onnx`` where that folder is writable, else in the user cache folder.
Each ONNX file records the SHA-256 of the TorchScript file it was made from, so
a stale export (the TorchScript file replaced) is never used.

``auto`` picks PyTorch on CUDA; on a CPU, OpenVINO where it is installed on an
x86 CPU, else ONNX Runtime where installed, else PyTorch. The two ONNX engines
are optional extras (``pip install .[openvino]`` / ``.[onnxruntime]``).

Precision: ``fp32``, or ``bf16`` (PyTorch: bfloat16 autocast; OpenVINO: its
bf16 inference precision, which needs AMX or AVX-512-BF16; ONNX Runtime has no
bf16 CPU kernels and refuses it). ``auto`` is bf16 for OpenVINO on a CPU that
has it (OpenVINO's own default there) and fp32 otherwise. ``int8`` (OpenVINO
only, never picked by ``auto``) runs a copy quantized on calibration crops; see
``classification.quantize``.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from classification import utils

if TYPE_CHECKING:
    from classification.quantize import Calibration

logger = logging.getLogger(__name__)

ENGINES = ('auto', 'torch', 'openvino', 'onnxruntime')
PRECISIONS = ('auto', 'fp32', 'bf16', 'int8')
DETECTOR_PRECISIONS = ('auto', 'fp32', 'bf16')
ONNX_OPSET = 17
_SOURCE_KEY = 'source_sha256'
# bumped when exports change (2: classifiers take any input size)
_EXPORT_VERSION = '2'
_MODULES = {'openvino': 'openvino', 'onnxruntime': 'onnxruntime'}


def installed(engine: str) -> bool:
    """Whether an engine's Python package can be imported."""
    module = _MODULES.get(engine)
    return module is None or importlib.util.find_spec(module) is not None


def _x86() -> bool:
    return platform.machine().lower() in ('x86_64', 'amd64', 'i686', 'x86')


def resolve_engine(asked: str, device: torch.device) -> str:
    """The engine to run: ``asked``, or for ``auto`` the fastest one installed.
    An engine asked for but not installed, or an ONNX engine on CUDA, is refused."""
    if asked not in ENGINES:
        raise utils.InputError(f'--engine must be one of {ENGINES}')
    if asked == 'auto':
        if device.type != 'cpu':
            return 'torch'
        if _x86() and installed('openvino'):
            return 'openvino'
        return 'onnxruntime' if installed('onnxruntime') else 'torch'
    if asked != 'torch':
        if not installed(asked):
            raise utils.InputError(f'--engine {asked}: {asked} is not installed (pip install '
                                   f'"{asked}", or this project with its [{asked}] extra)')
        if device.type != 'cpu':
            raise utils.InputError(f'--engine {asked} runs on the CPU; use --engine torch '
                                   'with a GPU')
    return asked


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file, computed once per process for each version of it (a
    model file is hashed both for its ONNX export and for a run's identity)."""
    st = os.stat(path)
    return _sha256(os.path.abspath(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=16)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def cache_dir() -> Path:
    """Where ONNX exports go when the model's folder is not writable."""
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return Path(base) / 'camera-trap-classifier' / 'onnx'


def _export_props(path: str | os.PathLike[str]) -> dict[str, str] | None:
    """The metadata ``export_onnx`` records in a file (None if not ONNX)."""
    import onnx
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - any unreadable file is simply not a usable export
        return None
    return {p.key: p.value for p in model.metadata_props}


def onnx_source(path: str | os.PathLike[str]) -> str | None:
    """The TorchScript SHA-256 an ONNX export of this version records (None if
    unreadable, absent, or made by another version of ``export_onnx``)."""
    return _source(_export_props(path))


def _source(props: dict[str, str] | None) -> str | None:
    if props is None or props.get('export_version') != _EXPORT_VERSION:
        return None
    return props.get(_SOURCE_KEY)


def export_onnx(model: torch.nn.Module | torch.jit.ScriptModule, example: torch.Tensor,
                path: str | os.PathLike[str], source_sha: str,
                dynamic: dict[int, str] | None = None) -> Path:
    """Writes ``model`` as ONNX (input ``x`` with the ``dynamic`` axes, default the
    batch; first output ``y``), atomically, recording ``source_sha`` (the
    TorchScript file's SHA-256)."""
    import warnings

    import onnx
    out = Path(path)
    axes = dynamic or {0: 'n'}
    with utils.atomic_path(out) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(model.cpu().eval(), (example,), str(tmp), dynamo=False,
                          input_names=['x'], output_names=['y'], dynamic_axes={'x': axes},
                          opset_version=ONNX_OPSET)
        proto = onnx.load(str(tmp))
        for key, value in ((_SOURCE_KEY, source_sha), ('export_version', _EXPORT_VERSION)):
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(tmp))
    return out


def onnx_path(model_path: str | os.PathLike[str], model: torch.nn.Module | torch.jit.ScriptModule,
              example: torch.Tensor, dynamic: dict[int, str] | None = None) -> Path:
    """An ONNX export of the TorchScript file ``model_path`` (``model`` as loaded;
    ``example`` an input, ``dynamic`` its axes of any size, default the batch):
    ``<name>.onnx`` beside it or in the cache folder when one made from this very
    file exists, else a new export there (beside it if the folder is writable)."""
    sha = file_sha256(model_path)
    src = Path(model_path)
    beside = src.with_suffix('.onnx')
    shape = 'x'.join(str(v) for v in example.shape[1:])
    cached = cache_dir() / f'{sha[:24]}_{shape}.onnx'
    props = _export_props(beside) if beside.is_file() else None
    if _source(props) == sha:
        return beside
    if cached.is_file() and onnx_source(cached) == sha:
        return cached
    # beside the model unless another file is there (an export made by an older
    # version of this project is replaced)
    stale = props is not None and _SOURCE_KEY in props and _source(props) is None
    target = beside if os.access(src.parent, os.W_OK) and (not beside.exists() or stale) \
        else cached
    logger.info('exporting the model to ONNX (once): %s', target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return export_onnx(model, example, target, sha, dynamic)
    except OSError as e:
        if not utils.is_output_error(e):
            raise
        raise utils.InputError(f'cannot write the ONNX export of {model_path} to {target} '
                               f'({utils.os_error_message(e)}): make that folder or '
                               'XDG_CACHE_HOME writable, or use --engine torch') from e


Runner = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Engine:
    """A loaded model: ``run`` takes a normalized float NCHW batch on ``device``
    and returns float32 logits."""
    name: str
    precision: str
    run: Runner


def _torch_runner(model: torch.nn.Module | torch.jit.ScriptModule, device: torch.device,
                  bf16: bool) -> Runner:
    """Runs the model; a TorchScript model is first run once more on each new input
    shape, so that every real batch runs the optimized (fused) graph: TorchScript's
    profiling executor runs the first call of a shape unoptimized, whose results
    differ at float rounding, and a resumed or sharded run would then differ from
    an uninterrupted one."""
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    seen: set[tuple[int, ...]] = set()
    warm = isinstance(model, torch.jit.ScriptModule)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), autocast:
            if warm and tuple(x.shape) not in seen:
                seen.add(tuple(x.shape))
                model(x)
            return model(x).float()
    return run


def _cpu_has_bf16() -> bool:
    try:
        import openvino as ov
        caps = ov.Core().get_property('CPU', 'OPTIMIZATION_CAPABILITIES')
    except Exception:  # noqa: BLE001 - no OpenVINO: no bf16 there
        return False
    return 'BF16' in [str(c).upper() for c in caps]


def _as_array(x: torch.Tensor) -> np.ndarray:
    """A batch as the contiguous float32 NCHW array the ONNX engines take."""
    return np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)


def _openvino_runner(path: Path, bf16: bool) -> Runner:
    import openvino as ov
    core = ov.Core()
    config: dict[str, Any] = {'INFERENCE_PRECISION_HINT': 'bf16' if bf16 else 'f32',
                              'PERFORMANCE_HINT': 'LATENCY'}
    compiled = core.compile_model(str(path), 'CPU', config)
    request = compiled.create_infer_request()

    def run(x: torch.Tensor) -> torch.Tensor:
        out = request.infer({0: _as_array(x)})
        return torch.from_numpy(np.array(out[compiled.output(0)], dtype=np.float32))
    return run


def _onnxruntime_runner(path: Path) -> Runner:
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(session.run(None, {name: _as_array(x)})[0],
                                           dtype=np.float32))
    return run


def resolve_precision(engine: str, asked: str, device: torch.device) -> str:
    if asked not in PRECISIONS:
        raise utils.InputError(f'--precision must be one of {PRECISIONS}')
    if engine == 'onnxruntime' and asked == 'bf16':
        raise utils.InputError('--engine onnxruntime has no bf16 on CPUs; use --engine '
                               'openvino or torch for bf16')
    if asked == 'int8':
        from classification import quantize
        if engine != 'openvino':
            raise utils.InputError(f'--precision int8 runs on --engine openvino only (this run '
                                   f'would use {engine})')
        if not quantize.nncf_installed():
            raise utils.InputError('--precision int8: nncf is not installed (pip install '
                                   'nncf, or this project with its [openvino] extra)')
    if asked != 'auto':
        return asked
    return 'bf16' if engine == 'openvino' and _cpu_has_bf16() else 'fp32'


def load_engine(engine: str, precision: str, model_path: str | os.PathLike[str],
                model: torch.nn.Module | torch.jit.ScriptModule, image_size: int,
                device: torch.device, int8: Int8 | None = None) -> Engine:
    """A classifier ready to run on ``engine`` (already resolved) at ``precision``
    (already resolved). ``model`` is the loaded TorchScript model; the torch engine
    runs it (frozen with oneDNN fusion on CPUs in fp32), the others its ONNX export
    (for int8, its quantized copy made with ``int8``'s calibration crops)."""
    from classification import model_files
    if engine == 'torch':
        bf16 = precision == 'bf16'
        if bf16:
            # autocast runs faster on the unfrozen graph with channels-last weights
            model = model.to(memory_format=torch.channels_last)
        elif device.type == 'cpu' and isinstance(model, torch.jit.ScriptModule):
            model = model_files.optimize_for_cpu(model)
        return Engine('torch', precision, _torch_runner(model, device, bf16))
    path = onnx_path(model_path, model, torch.zeros(1, 3, image_size, image_size),
                     {0: 'n', 2: 'h', 3: 'w'})
    if precision == 'int8':
        from classification import quantize
        if int8 is None:
            raise utils.InputError('--precision int8 needs --calibration-crops')
        path = quantize.int8_model(path, int8.key, int8.calibration, image_size, int8.mean,
                                   int8.std)
    return onnx_engine(engine, precision, path)


@dataclass(frozen=True)
class Int8:
    """How a classifier is quantized: its calibration crops, the normalisation of
    its inputs, and the key of the result (``quantize.int8_key``)."""
    calibration: Calibration
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    key: str


def onnx_engine(engine: str, precision: str, path: Path) -> Engine:
    """An ONNX file run by OpenVINO or ONNX Runtime on the CPU."""
    if engine == 'openvino':
        # an int8 model keeps float32 where it is not quantized
        return Engine('openvino', precision, _openvino_runner(path, precision == 'bf16'))
    return Engine('onnxruntime', precision, _onnxruntime_runner(path))
