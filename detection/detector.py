"""MegaDetector inference with a YOLOv5-format TorchScript export, to batch-format results.

Each step mirrors MegaDetector 10.0.28 (``megadetector.detection.pytorch_detector``
in its default "classic" mode, with the YOLOv5 functions it imports) so that the
same model gives the same boxes:

- decoding (``read_photo``): Pillow, the whole photo; a truncated file is
  decoded as far as it goes (Pillow's ``LOAD_TRUNCATED_IMAGES``, set only while
  such a file is decoded again); EXIF orientation applied;
- ``letterbox_geometry`` / ``letterbox``: YOLOv5's ``letterbox(auto=True)``:
  scaled to fit ``image_size`` x ``image_size`` with OpenCV's INTER_LINEAR,
  then padded with grey 114 to the smallest rectangle whose sides are
  multiples of the model's stride (64 for the P6 models MDv5a/b), not to a
  square;
- ``boxes_from_predictions``: MegaDetector's NMS (confidence = objectness x
  class score, above the threshold, per-class NMS at IoU 0.45, at most 300);
- ``to_md_detections``: YOLOv5's ``scale_boxes`` (gain and padding recomputed
  from the padded size), boxes rounded to whole pixels, then normalized
  ``[x_min, y_min, width, height]`` truncated (not rounded) to 4 decimals and
  confidences to 3, sorted by confidence.

Deliberate differences from MegaDetector (it is wrong there): mirrored EXIF
orientations (2, 4, 5, 7) are applied, as is the orientation of grayscale and
RGBA photos (MegaDetector ignores both); CMYK, palette, LA and other modes are
converted to RGB (MegaDetector refuses them) and 16-bit grayscale is scaled to
8 bits (MegaDetector's inference fails on it); a model with more classes than
categories, a static-shape export, or an --image_size that is not a multiple
of the stride stop the run with an explanation instead of failing every photo.

The model itself is called in one place, a ``Predictor``: a 1 x 3 x H x W float
tensor in [0, 1] goes in, YOLOv5's raw predictions (1 x N x (5 + classes))
come out. ``run`` writes checkpoints and resumes from them (``read_checkpoint``).
The command line is detection/run_detector_batch.py.
"""
from __future__ import annotations

import io
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import torch
import torchvision
from PIL import Image, ImageFile

from classification import utils
from classification.cropping import to_rgb
from detection.detector_output import DEFAULT_DETECTION_CATEGORIES, check_document

logger = logging.getLogger(__name__)

# MegaDetector 10.0.28's (run_detector.FAILURE_IMAGE_OPEN / FAILURE_INFER,
# run_detector_batch.current_format_version)
FAILURE_IMAGE_ACCESS = 'image access failure'
FAILURE_INFERENCE = 'inference failure'
FORMAT_VERSION = '1.6'
DEFAULT_THRESHOLD = 0.005       # MegaDetector's default for what goes into the file
DEFAULT_IMAGE_SIZE = 1280
DEFAULT_STRIDE = 64             # what MegaDetector assumes for models without metadata
IOU_THRESHOLD = 0.45
MAX_DETECTIONS = 300
PAD_VALUE = 114
COORD_DIGITS, CONF_DIGITS = 4, 3

#: The model call: 1 x 3 x H x W float32 in [0, 1] -> raw YOLOv5 predictions
#: 1 x N x (5 + classes) (centre x, centre y, width, height in input pixels,
#: objectness, class scores).
Predictor = Callable[[torch.Tensor], torch.Tensor]

_EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the transpose that makes the stored picture upright
# (3, 6 and 8 are what MegaDetector's image.rotate(180/270/90, expand=True) does)
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
            6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}
_HIGH_BIT_DEPTH = ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I', 'F')
_TRUNCATED = threading.Lock()


# ------------------------------------------------------------------------------ photos

def decode(data: bytes) -> Image.Image:
    """The photo as stored, decoded whole by Pillow.

    A file Pillow refuses with its default settings is decoded again with
    ``ImageFile.LOAD_TRUNCATED_IMAGES`` set, as MegaDetector always decodes (it
    sets it globally on import): a truncated JPEG then gives what was there.
    The flag only turns such errors into partial results, so setting it for
    the retry alone gives MegaDetector's pixels without changing other decoding
    in the process for longer than that retry.
    """
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
        return img
    except Exception:                        # noqa: BLE001 - any decoder error: retry
        pass
    with _TRUNCATED:
        before = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            img = Image.open(io.BytesIO(data))
            img.load()
            return img
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = before


def upright_rgb(img: Image.Image) -> np.ndarray:
    """H x W x 3 uint8 RGB of a decoded photo, EXIF orientation applied.

    Alpha is dropped (as MegaDetector does for RGBA), 16-bit and 32-bit
    grayscale are scaled to 8 bits, any other mode converted by Pillow.
    """
    try:
        method = _UPRIGHT.get(img.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:                                   # noqa: BLE001 - broken EXIF
        method = None                                   # ignored, as MegaDetector does
    if method is not None:
        img = img.transpose(method)
    if img.mode in _HIGH_BIT_DEPTH:
        img = to_rgb(img)
    elif img.mode != 'RGB':
        img = img.convert('RGB')
    return np.asarray(img)


def read_photo(path: Path) -> np.ndarray:
    """H x W x 3 uint8 RGB, upright; raises for unreadable files."""
    return upright_rgb(decode(path.read_bytes()))


# ---------------------------------------------------------------------------- letterbox

@dataclass(frozen=True)
class Letterbox:
    """Where a photo of ``width`` x ``height`` lands in the model input: resized to
    ``resized``, then padded by ``left``, ``top``, ``right``, ``bottom`` pixels."""
    width: int
    height: int
    resized: tuple[int, int]
    left: int
    top: int
    right: int
    bottom: int

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) of the model input."""
        return (self.resized[0] + self.left + self.right,
                self.resized[1] + self.top + self.bottom)


def letterbox_geometry(width: int, height: int, size: int, stride: int) -> Letterbox:
    """YOLOv5's ``letterbox(new_shape=size, auto=True, scaleup=True, stride=stride)``,
    MegaDetector's classic preprocessing: scaled to fit ``size`` x ``size``, then the
    padding that makes each side a multiple of ``stride`` (when ``size`` is one),
    split in two with the odd pixel at the bottom / right."""
    r = min(size / height, size / width)
    new_w, new_h = int(round(width * r)), int(round(height * r))
    dw, dh = (size - new_w) % stride / 2, (size - new_h) % stride / 2
    return Letterbox(width, height, (new_w, new_h),
                     int(round(dw - 0.1)), int(round(dh - 0.1)),
                     int(round(dw + 0.1)), int(round(dh + 0.1)))


def letterbox(image: np.ndarray, box: Letterbox) -> torch.Tensor:
    """An H x W x 3 uint8 photo -> the 1 x 3 x H' x W' float32 model input in [0, 1]
    (OpenCV INTER_LINEAR resize and constant grey border, as YOLOv5)."""
    if box.resized != (box.width, box.height):
        image = cv2.resize(image, box.resized, interpolation=cv2.INTER_LINEAR)
    image = cv2.copyMakeBorder(image, box.top, box.bottom, box.left, box.right,
                               cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()
    x /= 255.0
    return x.unsqueeze(0)


# --------------------------------------------------------------------- predictions -> boxes

def boxes_from_predictions(pred: torch.Tensor, conf_threshold: float,
                           iou_threshold: float = IOU_THRESHOLD,
                           max_det: int = MAX_DETECTIONS) -> torch.Tensor:
    """YOLOv5 raw output of one image (N x (5 + classes)) -> K x 6 (x1, y1, x2, y2,
    confidence, class) in input pixels, by confidence, highest first.

    MegaDetector's ``nms``: objectness and then objectness x best class score above
    the threshold, NMS class by class, at most ``max_det`` boxes.
    """
    x = pred[pred[:, 4] > conf_threshold]
    empty = pred.new_zeros((0, 6))
    if x.shape[0] == 0:
        return empty
    box = x[:, :4].clone()
    box[:, 0] = x[:, 0] - x[:, 2] / 2.0
    box[:, 1] = x[:, 1] - x[:, 3] / 2.0
    box[:, 2] = x[:, 0] + x[:, 2] / 2.0
    box[:, 3] = x[:, 1] + x[:, 3] / 2.0
    conf, cls = (x[:, 5:] * x[:, 4:5]).max(1, keepdim=True)
    keep = conf.view(-1) > conf_threshold
    if keep.sum() == 0:
        return empty
    box, conf, cls = box[keep], conf[keep], cls[keep]
    found = []
    for c in cls.unique():
        mask = (cls == c).view(-1)
        scores = conf[mask].view(-1)
        kept = torchvision.ops.nms(box[mask], scores, iou_threshold)
        if len(kept):
            found.append(torch.cat([box[mask][kept], scores[kept].unsqueeze(1),
                                    torch.full((len(kept), 1), c.item(), dtype=box.dtype,
                                               device=box.device)], 1))
    if not found:
        return empty
    det = torch.cat(found, 0)
    return det[det[:, 4].argsort(descending=True)][:max_det]


def truncate(x: float, digits: int) -> float:
    """MegaDetector's ``truncate_float``: ``x`` cut (not rounded) to ``digits`` decimals."""
    return math.floor(x * (10 ** digits)) / (10 ** digits)


def to_md_detections(det: torch.Tensor, box: Letterbox,
                     class_offset: int = 1) -> list[dict[str, Any]]:
    """K x 6 boxes in input pixels -> MegaDetector detections of the photo (category =
    class index + ``class_offset``), by confidence, highest first.

    As MegaDetector: YOLOv5's ``scale_boxes`` (the gain and padding recomputed from
    the padded input size), clipped to the photo, rounded to whole pixels, then
    normalized and truncated.
    """
    if det.shape[0] == 0:
        return []
    det = det.detach().cpu()
    w, h = box.width, box.height
    in_w, in_h = box.input_size
    gain = min(in_h / h, in_w / w)
    pad = (in_w - w * gain) / 2, (in_h - h * gain) / 2
    xyxy = det[:, :4].clone()
    xyxy[:, [0, 2]] -= pad[0]
    xyxy[:, [1, 3]] -= pad[1]
    xyxy /= gain
    xyxy[:, 0].clamp_(0, w)
    xyxy[:, 1].clamp_(0, h)
    xyxy[:, 2].clamp_(0, w)
    xyxy[:, 3].clamp_(0, h)
    xyxy = xyxy.round()
    xywh = xyxy.clone()
    xywh[:, 0] = (xyxy[:, 0] + xyxy[:, 2]) / 2
    xywh[:, 1] = (xyxy[:, 1] + xyxy[:, 3]) / 2
    xywh[:, 2] = xyxy[:, 2] - xyxy[:, 0]
    xywh[:, 3] = xyxy[:, 3] - xyxy[:, 1]
    xywh = xywh / torch.tensor([w, h, w, h])
    out = []
    # MegaDetector walks the boxes lowest confidence first, then sorts its list by
    # the truncated confidence (stable), highest first: ties end up in that order
    for (cx, cy, bw, bh), conf, cls in zip(reversed(xywh.tolist()),
                                           reversed(det[:, 4].tolist()),
                                           reversed(det[:, 5].tolist()), strict=True):
        bbox = [truncate(v, COORD_DIGITS) for v in (cx - bw / 2.0, cy - bh / 2.0, bw, bh)]
        out.append({'category': str(int(cls) + class_offset),
                    'conf': truncate(conf, CONF_DIGITS), 'bbox': bbox})
    return sorted(out, key=lambda d: d['conf'], reverse=True)


# -------------------------------------------------------------------------------- model

class TorchScriptPredictor:
    """A YOLOv5 TorchScript export as a ``Predictor``: its module, or what runs it on
    another engine (``load_predictor``); ``config`` is the ``config.txt`` YOLOv5's
    export.py stores in the file (shape, stride, names), empty if there is none."""

    def __init__(self, module: Callable[[torch.Tensor], Any], device: torch.device,
                 config: Mapping[str, Any] | None = None) -> None:
        self.module, self.device = module, device
        self.config = dict(config or {})

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(x.to(self.device))
        return out[0] if isinstance(out, (tuple, list)) else out


def load_detector(path: str, device: torch.device) -> TorchScriptPredictor:
    """A TorchScript detector; a pickled YOLOv5 .pt gets an explanation."""
    import warnings
    if not Path(path).is_file():
        raise utils.InputError(f'{path}: detector file not found')
    extra = {'config.txt': ''}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', FutureWarning)     # TorchScript is the format
            module = torch.jit.load(path, map_location=device, _extra_files=extra)
    except (RuntimeError, ValueError) as e:
        raise utils.InputError(
            f'{path}: not a TorchScript file. MegaDetector .pt files are pickled YOLOv5 '
            'models; export one with YOLOv5 (with dynamic input shapes): python export.py '
            '--weights md_v5a.0.0.pt --include torchscript --imgsz 1280 --dynamic') from e
    config: dict[str, Any] = {}
    raw = extra['config.txt']
    if raw:
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            config = parsed
    return TorchScriptPredictor(module.eval(), device, config)


def load_predictor(path: str, device: torch.device, engine: str = 'torch',
                   precision: str = 'fp32', image_size: int = DEFAULT_IMAGE_SIZE,
                   fallback: bool = False) -> TorchScriptPredictor:
    """The detector on ``engine`` (resolved by classification.engines) at ``precision``:
    the TorchScript file itself (bf16: under autocast), or on a CPU its ONNX export
    (any batch, height and width; made once, cached like a classifier's) run by
    OpenVINO or ONNX Runtime. ``fallback`` (``--engine auto``): a model that cannot
    be exported or loaded there runs on PyTorch instead, with a warning."""
    from classification import engines
    torchscript = load_detector(path, device if engine == 'torch' else torch.device('cpu'))
    if engine != 'torch':
        stride = model_stride(torchscript.config)
        side = max(stride, image_size // stride * stride)
        probe = probe_input(stride)
        try:
            with torch.inference_mode():
                expected = torchscript(probe)
        except Exception:  # noqa: BLE001 - check_detector explains what is wrong
            return torchscript
        try:
            # the file as it is: the engines read its first output, the predictions
            scripted = cast(torch.jit.ScriptModule, torchscript.module)
            onnx = engines.onnx_path(path, scripted, torch.zeros(1, 3, side, side),
                                     {0: 'n', 2: 'h', 3: 'w'})
            run = engines.onnx_engine(engine, precision, onnx).run
            got = run(probe)
            if tuple(got.shape) != tuple(expected.shape):
                raise RuntimeError(f'its export gives shape {tuple(got.shape)} where the '
                                   f'model gives {tuple(expected.shape)}')
            return TorchScriptPredictor(run, torch.device('cpu'), torchscript.config)
        except Exception as e:  # noqa: BLE001 - exporters and engines raise anything
            reason = str(e).strip().splitlines()[-1][:200] if str(e).strip() else repr(e)
            if not fallback:
                raise utils.InputError(f'{path}: cannot run on {engine} ({reason})') from e
            logger.warning('%s: cannot run on %s (%s); running on PyTorch', path, engine,
                           reason)
            precision = 'fp32'
    if precision == 'bf16':
        call = torchscript.module

        def bf16(x: torch.Tensor) -> Any:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                return call(x)
        return TorchScriptPredictor(bf16, device, torchscript.config)
    return torchscript


def model_stride(config: Mapping[str, Any]) -> int:
    """The stride YOLOv5's export recorded, else MegaDetector's default (64)."""
    stride = config.get('stride')
    return stride if isinstance(stride, int) and stride > 0 else DEFAULT_STRIDE


def probe_input(stride: int) -> torch.Tensor:
    """A small non-square input (2 x 3 strides) that any dynamic-shape export takes."""
    return torch.zeros(1, 3, 2 * stride, 3 * stride)


def check_detector(predict: Predictor, stride: int, image_size: int, n_categories: int,
                   source: str) -> None:
    """Fails early, with the fix, for what would otherwise fail every photo: a model
    exported for one input shape only, more classes than categories, or an
    --image_size that is not a multiple of the stride."""
    if image_size % stride:
        raise utils.InputError(
            f'--image_size {image_size} is not a multiple of the model\'s stride {stride}: '
            f'use e.g. {max(stride, image_size // stride * stride)}')
    probe = probe_input(stride)
    try:
        with torch.inference_mode():
            out = predict(probe)
    except (RuntimeError, torch.jit.Error) as e:
        raise utils.InputError(
            f'{source}: the model does not accept a {3 * stride} x {2 * stride} input; '
            'photos are letterboxed to rectangles, so export it with dynamic input shapes '
            '(YOLOv5: python export.py --weights md_v5a.0.0.pt --include torchscript '
            f'--imgsz 1280 --dynamic) ({str(e).strip().splitlines()[-1][:200]})') from e
    if out.dim() != 3 or out.shape[-1] < 6:
        raise utils.InputError(f'{source}: expected YOLOv5 predictions (1 x N x (5 + '
                               f'classes)), got shape {tuple(out.shape)}')
    n_classes = out.shape[-1] - 5
    if n_classes > n_categories:
        raise utils.InputError(
            f'{source}: the model predicts {n_classes} classes but there are '
            f'{n_categories} detection categories; name them with --class_mapping_filename')


# ------------------------------------------------------------------------------ a run

def list_images(source: str, recursive: bool = True) -> tuple[list[str], Path | None]:
    """(image paths, folder they are relative to or None): a folder's images, one
    image, or a .json list / .txt file of paths."""
    p = Path(source)
    if p.is_dir():
        pattern = '**/*' if recursive else '*'
        files = sorted(f.relative_to(p).as_posix() for f in p.glob(pattern)
                       if f.is_file() and f.suffix.lower() in utils.IMAGE_EXTENSIONS)
        return files, p
    if source.endswith('.json'):
        doc = utils.read_json(source)
        if not isinstance(doc, list) or not all(isinstance(x, str) for x in doc):
            raise utils.InputError(f'{source}: expected a JSON list of image paths')
        return list(doc), None
    if p.suffix.lower() in utils.IMAGE_EXTENSIONS:
        return [source], None
    with utils.open_input_text(source) as f:
        return [line.strip() for line in f if line.strip()], None


def detect_images(predict: Predictor, files: Sequence[str], sources: Sequence[Path],
                  image_size: int, stride: int, threshold: float, threads: int = 0,
                  class_offset: int = 1) -> Iterator[dict[str, Any]]:
    """One MegaDetector image entry per file (read from the matching source), in
    order. With ``threads`` > 0 photos are decoded and letterboxed on that many
    threads ahead of the model (an image queue); with 0, each in turn before its
    inference."""

    def prepare(source: Path) -> tuple[torch.Tensor, Letterbox] | None:
        try:       # as MegaDetector, a photo that cannot be letterboxed counts as unreadable
            image = read_photo(source)
            box = letterbox_geometry(image.shape[1], image.shape[0], image_size, stride)
            return letterbox(image, box), box
        except Exception as e:                       # noqa: BLE001 - any reason: logged
            logger.warning('%s: cannot read the photo (%s)', source, e)
            return None

    pool = ThreadPoolExecutor(threads) if threads > 0 else None
    inputs: Iterator[tuple[torch.Tensor, Letterbox] | None] = (
        pool.map(prepare, sources) if pool else map(prepare, sources))
    try:
        with torch.inference_mode():
            for name, prepared in zip(files, inputs, strict=True):
                if prepared is None:
                    yield {'file': name, 'failure': FAILURE_IMAGE_ACCESS, 'detections': None}
                    continue
                x, box = prepared
                try:
                    pred = predict(x)                    # the one model call
                    det = boxes_from_predictions(pred[0].float(), threshold)
                except (RuntimeError, torch.jit.Error) as e:
                    logger.warning('%s: inference failed (%s)', name, str(e)[:200])
                    yield {'file': name, 'failure': FAILURE_INFERENCE, 'detections': None}
                    continue
                yield {'file': name, 'detections': to_md_detections(det, box, class_offset)}
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def detector_metadata(detector: str) -> dict[str, Any]:
    """``info.detector_metadata`` as MegaDetector writes it: the version from the
    file name and the thresholds it recommends (which Timelapse reads)."""
    name = os.path.basename(detector).lower()
    for key, version in (('v5a', 'v5a.0.1'), ('v5b', 'v5b.0.1')):
        if key in name:
            return {'megadetector_version': version, 'typical_detection_threshold': 0.2,
                    'conservative_detection_threshold': 0.05}
    return {'megadetector_version': 'unknown', 'typical_detection_threshold': 0.2,
            'conservative_detection_threshold': 0.1}


def output_document(images: list[dict[str, Any]], detector: str, threshold: float,
                    image_size: int, categories: Mapping[str, str] | None = None
                    ) -> dict[str, Any]:
    return {'info': {'detector': os.path.basename(detector),
                     'detection_completion_time': time.strftime('%Y-%m-%d %H:%M:%S'),
                     'format_version': FORMAT_VERSION,
                     'detector_metadata': {**detector_metadata(detector),
                                           'image_size': image_size,
                                           'output_threshold': threshold}},
            'detection_categories': dict(categories or DEFAULT_DETECTION_CATEGORIES),
            'images': images}


def run(detector: str, files: Sequence[str], root: Path | None, image_size: int,
        threshold: float, device: torch.device, threads: int = 0,
        checkpoint_path: str | None = None, checkpoint_frequency: int = 0,
        done: Mapping[str, dict[str, Any]] | None = None,
        class_mapping: Mapping[str, str] | None = None,
        quiet: bool = False, stride: int | None = None, engine: str = 'torch',
        precision: str = 'fp32', fallback: bool = False) -> dict[str, Any]:
    """Detections for every file (those in ``done`` are reused) as a batch document.

    ``class_mapping`` ({"0": name, ...}) names the model's classes directly (no +1,
    as the original's --class_mapping_filename); default: MegaDetector's three.
    ``stride``: the letterbox's (default: the model's, see ``model_stride``).
    ``engine`` and ``precision``: see ``load_predictor``.
    """
    done = dict(done or {})
    todo = [f for f in files if f not in done]
    # paths relative to root must stay inside it: refused before any work
    sources = [utils.safe_join(root, f) if root else Path(f) for f in todo]
    model = load_predictor(detector, device, engine, precision, image_size, fallback)
    stride = stride or model_stride(model.config)
    categories = dict(class_mapping or DEFAULT_DETECTION_CATEGORIES)
    check_detector(model, stride, image_size, len(categories), detector)
    if done:
        logger.info('resuming: %d of %d images already done', len(files) - len(todo),
                    len(files))
    from tqdm import tqdm
    new: dict[str, dict[str, Any]] = {}
    entries = detect_images(model, todo, sources, image_size, stride, threshold, threads,
                            0 if class_mapping else 1)
    for k, entry in enumerate(tqdm(entries, total=len(todo), unit='img',
                                   disable=True if quiet else None), 1):
        new[entry['file']] = entry
        if checkpoint_path and checkpoint_frequency > 0 and k % checkpoint_frequency == 0:
            utils.write_json({'images': [*done.values(), *new.values()]}, checkpoint_path)
    results = {**done, **new}
    return output_document([results[f] for f in files], detector, threshold, image_size,
                           class_mapping)


def read_checkpoint(path: str, categories: Mapping[str, str] | None = None
                    ) -> dict[str, dict[str, Any]]:
    """{file: image entry} of a checkpoint written by ``run``, checked as a
    detections file is (a damaged or edited checkpoint would otherwise be copied
    into the output); ``categories``: the detector's (--class_mapping_filename)."""
    saved = utils.require_mapping(utils.read_json(path), path)
    doc = check_document({'images': saved.get('images'),
                          'detection_categories': dict(categories or
                                                       DEFAULT_DETECTION_CATEGORIES)}, path)
    return {e['file']: e for e in doc['images']}


def add_max_conf(doc: Mapping[str, Any]) -> None:
    """The legacy per-image ``max_detection_conf`` field (--include_max_conf)."""
    for entry in doc['images']:
        if entry.get('detections') is not None:
            entry['max_detection_conf'] = max((d['conf'] for d in entry['detections']),
                                              default=0.0)


def read_class_mapping(path: str) -> dict[str, str]:
    mapping = utils.require_mapping(utils.read_json(path), path)
    if not mapping or not all(isinstance(k, str) and k.isdigit() and isinstance(v, str)
                              for k, v in mapping.items()):
        raise utils.InputError(f'{path}: expected {{"0": "class name", ...}}')
    return dict(mapping)
