"""MegaDetector inference with a YOLOv5-format TorchScript export, to batch-format results.

Photos (EXIF orientation applied) are letterboxed as YOLOv5 does, the model's raw
predictions are turned into boxes as YOLOv5 does (confidence = objectness x class
score, class-wise NMS, at most ``MAX_DETECTIONS`` per photo) and mapped back to the
photo as MegaDetector's normalized ``[x_min, y_min, width, height]``. ``run`` writes
checkpoints and resumes from them (``read_checkpoint``). The command line is
detection/run_detector_batch.py.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
import torchvision

from classification import utils
from classification.cropping import open_photo
from detection.detector_output import DEFAULT_DETECTION_CATEGORIES, FORMAT_VERSION

logger = logging.getLogger(__name__)

FAILURE_IMAGE_ACCESS = 'Failure image access'
FAILURE_INFERENCE = 'Failure inference'
DEFAULT_THRESHOLD = 0.005       # MegaDetector's default for what goes into the file
IOU_THRESHOLD = 0.45
MAX_DETECTIONS = 300
PAD_VALUE = 114 / 255
COORD_DIGITS, CONF_DIGITS = 4, 3


def letterbox(image: torch.Tensor, size: int) -> tuple[torch.Tensor, float, tuple[float, float]]:
    """A uint8 CHW image scaled to fit ``size`` x ``size`` (bilinear, half-pixel
    centres, as OpenCV's INTER_LINEAR) and padded with grey as YOLOv5 does.

    Returns (float 1 x 3 x size x size in [0, 1], scale, (x offset, y offset)), the
    offsets as YOLOv5's scale_coords computes them to map boxes back.
    """
    _, h, w = image.shape
    gain = min(size / h, size / w)
    new_w, new_h = int(round(w * gain)), int(round(h * gain))
    x = image.unsqueeze(0).float()
    if (new_w, new_h) != (w, h):
        x = torch.nn.functional.interpolate(x, size=(new_h, new_w), mode='bilinear',
                                            align_corners=False, antialias=False)
        x = x.round().clamp(0, 255)              # the resized image is 8-bit in YOLOv5
    dw, dh = (size - new_w) / 2, (size - new_h) / 2
    left, top = int(round(dw - 0.1)), int(round(dh - 0.1))
    right, bottom = size - new_w - left, size - new_h - top
    x = torch.nn.functional.pad(x / 255, (left, right, top, bottom), value=PAD_VALUE)
    return x, gain, ((size - w * gain) / 2, (size - h * gain) / 2)


def boxes_from_predictions(pred: torch.Tensor, conf_threshold: float,
                           iou_threshold: float = IOU_THRESHOLD,
                           max_det: int = MAX_DETECTIONS) -> torch.Tensor:
    """YOLOv5 raw output of one image (N x (5 + classes): centre x, centre y, w, h,
    objectness, class scores) -> K x 6 (x1, y1, x2, y2, confidence, class)."""
    pred = pred[pred[:, 4] > conf_threshold]
    if not len(pred):
        return pred.new_zeros((0, 6))
    scores = pred[:, 5:] * pred[:, 4:5]
    conf, cls = scores.max(dim=1)
    keep = conf > conf_threshold
    pred, conf, cls = pred[keep], conf[keep], cls[keep]
    xy, wh = pred[:, :2], pred[:, 2:4] / 2
    boxes = torch.cat([xy - wh, xy + wh], dim=1)
    order = torchvision.ops.batched_nms(boxes, conf, cls, iou_threshold)[:max_det]
    return torch.cat([boxes[order], conf[order, None], cls[order, None].float()], dim=1)


def to_md_detections(det: torch.Tensor, gain: float, pad: tuple[float, float],
                     width: int, height: int, class_offset: int = 1) -> list[dict[str, Any]]:
    """K x 6 boxes in letterboxed pixels -> MegaDetector detections of the photo
    (category = class index + ``class_offset``)."""
    out = []
    for x1, y1, x2, y2, conf, cls in det.tolist():
        x1 = min(max((x1 - pad[0]) / gain, 0.0), width)
        x2 = min(max((x2 - pad[0]) / gain, 0.0), width)
        y1 = min(max((y1 - pad[1]) / gain, 0.0), height)
        y2 = min(max((y2 - pad[1]) / gain, 0.0), height)
        # as MegaDetector: centre and size rounded, then the top-left corner
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        bw, bh = (x2 - x1) / width, (y2 - y1) / height
        box = [round(v, COORD_DIGITS) for v in (cx - bw / 2, cy - bh / 2, bw, bh)]
        out.append({'category': str(int(cls) + class_offset), 'conf': round(conf, CONF_DIGITS),
                    'bbox': box})
    return out


def load_detector(path: str, device: torch.device) -> torch.jit.ScriptModule:
    """A TorchScript detector; a pickled YOLOv5 .pt gets an explanation."""
    from classification.model_files import load_torchscript
    if not Path(path).is_file():
        raise utils.InputError(f'{path}: detector file not found')
    try:
        return load_torchscript(path, device)
    except utils.InputError as e:
        raise utils.InputError(
            f'{path}: not a TorchScript file. MegaDetector .pt files are pickled YOLOv5 '
            'models; export one with YOLOv5: python export.py --weights md_v5a.0.0.pt '
            '--include torchscript --imgsz 1280') from e


def list_images(source: str, recursive: bool = True) -> tuple[list[str], Path | None]:
    """(image paths, folder they are relative to or None)."""
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
    with utils.open_input_text(source) as f:
        return [line.strip() for line in f if line.strip()], None


def detect_images(model: torch.jit.ScriptModule, files: Sequence[str], sources: Sequence[Path],
                  image_size: int, threshold: float, device: torch.device,
                  threads: int = 0, class_offset: int = 1) -> Iterator[dict[str, Any]]:
    """One MegaDetector image entry per file (read from the matching source), in
    order. With ``threads`` > 0 photos are decoded on that many threads ahead of the
    model (an image queue); with 0, each in turn before its inference."""
    import numpy as np

    def load(source: Path) -> torch.Tensor | None:
        try:
            img = open_photo(source).upright()
        except (OSError, ValueError) as e:
            logger.debug('%s: %s', source, e)
            return None
        return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)

    pool = ThreadPoolExecutor(threads) if threads > 0 else None
    images: Iterator[torch.Tensor | None] = (pool.map(load, sources) if pool
                                             else map(load, sources))
    try:
        with torch.inference_mode():
            for name, image in zip(files, images, strict=True):
                if image is None:
                    yield {'file': name, 'failure': FAILURE_IMAGE_ACCESS, 'detections': None}
                    continue
                try:
                    x, gain, pad = letterbox(image.to(device), image_size)
                    pred = model(x)
                    pred = pred[0] if isinstance(pred, (tuple, list)) else pred
                    det = boxes_from_predictions(pred[0].float(), threshold)
                except RuntimeError as e:
                    logger.warning('%s: inference failed (%s)', name, str(e)[:200])
                    yield {'file': name, 'failure': FAILURE_INFERENCE, 'detections': None}
                    continue
                yield {'file': name, 'detections': to_md_detections(
                    det.cpu(), gain, pad, image.shape[2], image.shape[1], class_offset)}
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def output_document(images: list[dict[str, Any]], detector: str, threshold: float,
                    image_size: int, categories: Mapping[str, str] | None = None
                    ) -> dict[str, Any]:
    return {'info': {'detector': os.path.basename(detector),
                     'detection_completion_time': time.strftime('%Y-%m-%d %H:%M:%S'),
                     'format_version': FORMAT_VERSION,
                     'detector_metadata': {'image_size': image_size,
                                           'output_threshold': threshold}},
            'detection_categories': dict(categories or DEFAULT_DETECTION_CATEGORIES),
            'images': images}


def run(detector: str, files: Sequence[str], root: Path | None, image_size: int,
        threshold: float, device: torch.device, threads: int = 0,
        checkpoint_path: str | None = None, checkpoint_frequency: int = 0,
        done: Mapping[str, dict[str, Any]] | None = None,
        class_mapping: Mapping[str, str] | None = None,
        quiet: bool = False) -> dict[str, Any]:
    """Detections for every file (those in ``done`` are reused) as a batch document.

    ``class_mapping`` ({"0": name, ...}) names the model's classes directly (no +1,
    as the original's --class_mapping_filename); default: MegaDetector's three.
    """
    done = dict(done or {})
    todo = [f for f in files if f not in done]
    # paths relative to root must stay inside it: refused before any work
    sources = [utils.safe_join(root, f) if root else Path(f) for f in todo]
    model = load_detector(detector, device)
    if done:
        logger.info('resuming: %d of %d images already done', len(files) - len(todo),
                    len(files))
    from tqdm import tqdm
    new: dict[str, dict[str, Any]] = {}
    entries = detect_images(model, todo, sources, image_size, threshold, device, threads,
                            0 if class_mapping else 1)
    for k, entry in enumerate(tqdm(entries, total=len(todo), unit='img',
                                   disable=True if quiet else None), 1):
        new[entry['file']] = entry
        if checkpoint_path and checkpoint_frequency > 0 and k % checkpoint_frequency == 0:
            utils.write_json({'images': [*done.values(), *new.values()]}, checkpoint_path)
    results = {**done, **new}
    return output_document([results[f] for f in files], detector, threshold, image_size,
                           class_mapping)


def read_checkpoint(path: str) -> dict[str, dict[str, Any]]:
    """{file: image entry} of a checkpoint written by ``run``."""
    saved = utils.require_mapping(utils.read_json(path), path)
    return {e['file']: e for e in saved.get('images', []) if isinstance(e, dict) and 'file' in e}


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
