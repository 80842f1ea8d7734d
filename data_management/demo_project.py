r"""Generate the embedded demo camera-trap project (no downloaded data).

Draws full-size camera-trap photos procedurally: two datasets, a dozen or more
camera locations each with its own scenery, five animal classes whose shape,
colour and texture differ (deer, fox, rabbit, turkey, skunk) while size, pose,
position and lighting vary; grayscale night frames, EXIF-rotated photos,
sequences of 1-3 frames and empty frames. Every photo carries its EXIF
DateTimeOriginal (the frames of a sequence seconds apart, sequences at one
camera hours apart). The new photos come in sequences of 2-5 frames of one
animal (or none) at one camera, frames 1-3 s apart, sequences at a camera 10
minutes to 4 hours apart. Deterministic for a seed.

Example:
    python -m data_management.demo_project demo_output/project --seed 0 \
        --locations 14 --sequences-per-location 14 --new-images 40

Writes under OUTPUT_DIR:
    images/<dataset>/<location>/<seq>_<frame>.jpg   labeled photos
    coco/<dataset>.json            COCO Camera Traps JSON (locations, sequences,
                                   labels; pixel boxes for part of the images)
    detections/<dataset>.json      MegaDetector output for the images without
                                   ground-truth boxes (realistic confidences,
                                   a few false positives)
    taxonomy.csv                   taxonomy CSV covering every dataset label
    label_spec.csv                 CSV label specification (csv_to_json input)
    new_photos/images/...          unlabeled photos from new locations
    new_photos/detections.json     MegaDetector output for them
    new_photos/ground_truth.json   {file: class} for checking the classifier
    new_photos/coco.json           COCO Camera Traps JSON of the new photos: their
                                   camera (location), sequence (seq_id, frame_num),
                                   time and true class (categories: 'empty' and
                                   the classes), for checking sequence results
    manifest.json                  counts and paths of the above
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

from classification import utils

logger = logging.getLogger(__name__)

CLASSES = ('deer', 'fox', 'rabbit', 'turkey', 'skunk')
DATASETS = ('demo_forest', 'demo_plains')
DETECTOR = 'md_v5a.0.0.pt'

# dataset label of each class in each dataset, as a labeler would have typed it
DATASET_LABELS: dict[str, dict[str, str]] = {
    'demo_forest': {'deer': 'white-tailed deer', 'fox': 'red fox', 'rabbit': 'cottontail',
                    'turkey': 'wild turkey', 'skunk': 'striped skunk', 'empty': 'empty'},
    'demo_plains': {'deer': 'deer', 'fox': 'fox', 'rabbit': 'rabbit', 'turkey': 'bird',
                    'skunk': 'skunk', 'empty': 'empty'},
}

# taxonomy rows: (level, scientific name, common name) of each dataset label, and lineages
_LINEAGE = {
    'white-tailed deer': [('species', 'odocoileus virginianus', 'white-tailed deer'),
                          ('genus', 'odocoileus', ''), ('family', 'cervidae', 'deer'),
                          ('order', 'artiodactyla', ''), ('class', 'mammalia', 'mammals')],
    'deer': [('family', 'cervidae', 'deer'), ('order', 'artiodactyla', ''),
             ('class', 'mammalia', 'mammals')],
    'red fox': [('species', 'vulpes vulpes', 'red fox'), ('genus', 'vulpes', ''),
                ('family', 'canidae', 'dogs'), ('order', 'carnivora', 'carnivores'),
                ('class', 'mammalia', 'mammals')],
    'fox': [('genus', 'vulpes', 'foxes'), ('family', 'canidae', 'dogs'),
            ('order', 'carnivora', 'carnivores'), ('class', 'mammalia', 'mammals')],
    'cottontail': [('genus', 'sylvilagus', 'cottontail rabbits'),
                   ('family', 'leporidae', 'rabbits and hares'), ('order', 'lagomorpha', ''),
                   ('class', 'mammalia', 'mammals')],
    'rabbit': [('family', 'leporidae', 'rabbits and hares'), ('order', 'lagomorpha', ''),
               ('class', 'mammalia', 'mammals')],
    'wild turkey': [('species', 'meleagris gallopavo', 'wild turkey'),
                    ('genus', 'meleagris', 'turkeys'), ('family', 'phasianidae', ''),
                    ('order', 'galliformes', ''), ('class', 'aves', 'birds')],
    'bird': [('class', 'aves', 'birds')],
    'striped skunk': [('species', 'mephitis mephitis', 'striped skunk'),
                      ('genus', 'mephitis', ''), ('family', 'mephitidae', 'skunks'),
                      ('order', 'carnivora', 'carnivores'), ('class', 'mammalia', 'mammals')],
    'skunk': [('family', 'mephitidae', 'skunks'), ('order', 'carnivora', 'carnivores'),
              ('class', 'mammalia', 'mammals')],
}
_ROOT = [('phylum', 'chordata', ''), ('kingdom', 'animalia', 'animals')]

LABEL_SPEC_CSV = """output_label,type,content
deer,family,cervidae
fox,genus,vulpes
rabbit,family,leporidae
turkey,datasettaxon,demo_forest|species|meleagris gallopavo
turkey,row,demo_plains|bird
skunk,family,mephitidae
"""


@dataclass(frozen=True)
class Shot:
    """One photo to draw."""
    out_path: str
    location_seed: int
    image_seed: int
    cls: str                 # a key of CLASSES, or 'empty'
    n_animals: int
    frame: int
    night: bool
    orientation: int         # EXIF orientation tag (1 = upright)
    width: int
    height: int
    anchor: tuple[float, float, float] = field(default=(0.5, 0.7, 0.2))  # x, y, scale
    taken: dt.datetime | None = None   # written as EXIF DateTimeOriginal and DateTime


# ---------------------------------------------------------------- scenery

@lru_cache(maxsize=4)
def _scene(location_seed: int, width: int, height: int) -> np.ndarray:
    """The background of one camera location, float32 HxWx3 in [0, 255]."""
    rng = np.random.default_rng(location_seed)
    img = Image.new('RGB', (width, height))
    draw: Any = ImageDraw.Draw(img)  # drawing calls take lists; Pillow's stubs want tuples
    horizon = int(height * rng.uniform(0.25, 0.55))
    sky_top = rng.uniform([90, 120, 160], [170, 200, 240])
    sky_bottom = sky_top + rng.uniform(20, 50)
    for y in range(horizon):
        t = y / max(horizon - 1, 1)
        c = tuple(int(v) for v in np.clip(sky_top * (1 - t) + sky_bottom * t, 0, 255))
        draw.line([(0, y), (width, y)], fill=c)
    ground = rng.uniform([60, 70, 30], [140, 130, 80])
    draw.rectangle([0, horizon, width, height], fill=tuple(int(v) for v in ground))
    # far hills
    for _ in range(int(rng.integers(1, 4))):
        cx, r = rng.uniform(0, width), rng.uniform(0.2, 0.5) * width
        col = tuple(int(v) for v in np.clip(ground * rng.uniform(0.6, 0.9), 0, 255))
        draw.ellipse([cx - r, horizon - r * 0.25, cx + r, horizon + r * 0.25], fill=col)
    # trees, back to front
    n_trees = int(rng.integers(2, 9))
    for _ in range(n_trees):
        x = rng.uniform(0, width)
        base = rng.uniform(horizon, height * 1.05)
        scale = (base - horizon + 40) / height
        trunk_w, tree_h = 40 * scale + 6, rng.uniform(0.6, 1.3) * height * scale + 60
        trunk = tuple(int(v) for v in rng.uniform([50, 35, 20], [100, 75, 50]))
        draw.rectangle([x - trunk_w / 2, base - tree_h, x + trunk_w / 2, base], fill=trunk)
        leaf = tuple(int(v) for v in rng.uniform([20, 60, 15], [70, 130, 60]))
        cw = tree_h * rng.uniform(0.3, 0.5)
        draw.ellipse([x - cw, base - tree_h * 1.25, x + cw, base - tree_h * 0.55], fill=leaf)
    # rocks and bushes
    for _ in range(int(rng.integers(3, 12))):
        x, yb = rng.uniform(0, width), rng.uniform(horizon, height)
        r = rng.uniform(0.02, 0.08) * width * (yb - horizon + 50) / height
        col = tuple(int(v) for v in rng.uniform([80, 80, 70], [160, 150, 140]))
        draw.ellipse([x - r, yb - r * 0.6, x + r, yb + r * 0.3], fill=col)
    arr = np.asarray(img, dtype=np.float32)
    # grass / soil texture: smooth noise upscaled from a coarse grid, plus fine grain
    coarse = rng.normal(0, 1, size=(height // 24 + 1, width // 24 + 1)).astype(np.float32)
    noise = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))
    arr += noise[..., None] * rng.uniform(6, 14)
    return np.clip(arr, 0, 255)


# ---------------------------------------------------------------- animals

def _c(rgb: Sequence[float], rng: np.random.Generator, jitter: float = 0.12
       ) -> tuple[int, int, int]:
    v = np.asarray(rgb, dtype=np.float64) * rng.uniform(1 - jitter, 1 + jitter, size=3)
    r, g, b = (int(x) for x in np.clip(v, 0, 255))
    return (r, g, b)


def _draw_animal(cls: str, rng: np.random.Generator) -> Image.Image:
    """An RGBA sprite of one animal facing right, on a transparent 400x300 canvas."""
    im = Image.new('RGBA', (400, 300), (0, 0, 0, 0))
    d: Any = ImageDraw.Draw(im)
    if cls == 'deer':
        body = _c((150, 100, 60), rng)
        leg = _c((110, 75, 45), rng)
        for x in (130, 160, 250, 275):
            d.rectangle([x, 170, x + 12, 285], fill=leg)
        d.ellipse([110, 100, 300, 190], fill=body)
        d.polygon([(270, 130), (300, 40), (330, 50), (300, 140)], fill=body)   # neck
        d.ellipse([295, 25, 360, 65], fill=body)                              # head
        d.ellipse([100, 110, 125, 135], fill=(245, 245, 240, 255))             # white tail
        for _ in range(int(rng.integers(6, 14))):                              # spots
            sx, sy = rng.uniform(140, 270), rng.uniform(110, 160)
            d.ellipse([sx, sy, sx + 9, sy + 9], fill=(235, 225, 205, 255))
        if rng.random() < 0.6:                                                 # antlers
            ant = (90, 70, 50, 255)
            d.line([(310, 30), (295, 0)], fill=ant, width=6)
            d.line([(330, 30), (345, 0)], fill=ant, width=6)
            d.line([(300, 12), (285, 8)], fill=ant, width=5)
            d.line([(340, 12), (356, 8)], fill=ant, width=5)
    elif cls == 'fox':
        body = _c((225, 115, 35), rng)
        dark = (40, 25, 20, 255)
        for x in (150, 175, 245, 265):
            d.rectangle([x, 200, x + 12, 265], fill=dark)
        d.ellipse([130, 150, 300, 215], fill=body)
        d.polygon([(140, 175), (30, 140), (15, 175), (40, 210), (140, 200)], fill=body)  # tail
        d.ellipse([10, 160, 45, 200], fill=(250, 250, 250, 255))               # tail tip
        d.ellipse([280, 130, 350, 185], fill=body)                             # head
        d.polygon([(340, 150), (385, 165), (340, 178)], fill=body)             # snout
        d.polygon([(290, 140), (300, 95), (318, 135)], fill=body)              # ears
        d.polygon([(315, 135), (330, 92), (342, 138)], fill=body)
        d.ellipse([300, 165, 350, 195], fill=(245, 240, 230, 255))            # white chin
    elif cls == 'rabbit':
        body = _c((140, 125, 110), rng, 0.08)
        d.ellipse([120, 150, 270, 270], fill=body)
        d.ellipse([230, 120, 310, 200], fill=body)                             # head
        d.ellipse([240, 10, 265, 140], fill=body)                              # long ears
        d.ellipse([270, 15, 295, 140], fill=body)
        d.ellipse([105, 190, 140, 225], fill=(250, 250, 250, 255))            # cotton tail
        d.ellipse([280, 145, 292, 157], fill=(20, 20, 20, 255))               # eye
    elif cls == 'turkey':
        body = _c((85, 60, 40), rng, 0.1)
        stripe_a, stripe_b = (120, 80, 45, 255), (30, 25, 20, 255)
        n = 9
        for k in range(n):                                                     # tail fan
            a0 = 150 + k * (120 / n)
            d.pieslice([20, 10, 240, 230], a0, a0 + 120 / n,
                       fill=stripe_a if k % 2 else stripe_b)
        d.ellipse([110, 90, 270, 230], fill=body)
        d.rectangle([250, 60, 268, 140], fill=(170, 150, 140, 255))            # neck
        d.ellipse([240, 30, 290, 75], fill=_c((200, 40, 40), rng, 0.1))        # red head
        d.line([(170, 225), (165, 290)], fill=(150, 110, 80, 255), width=6)
        d.line([(215, 225), (220, 290)], fill=(150, 110, 80, 255), width=6)
    elif cls == 'skunk':
        black = _c((22, 20, 20), rng, 0.2)
        white = (240, 240, 235, 255)
        for x in (160, 180, 240, 258):
            d.rectangle([x, 200, x + 12, 250], fill=black)
        d.ellipse([140, 140, 290, 220], fill=black)
        d.ellipse([270, 160, 330, 210], fill=black)                            # head
        d.polygon([(150, 170), (90, 60), (60, 30), (40, 80), (120, 190)], fill=black)  # tail
        d.line([(280, 165), (200, 150), (120, 170), (80, 80)], fill=white, width=14)
        d.line([(210, 165), (150, 185)], fill=white, width=10)
        d.line([(300, 165), (318, 185)], fill=white, width=6)                  # face stripe
    else:
        raise ValueError(cls)
    return im


def _place_animal(canvas: np.ndarray, cls: str, rng: np.random.Generator, cx: float, cy: float,
                  scale: float, night: bool) -> list[float] | None:
    """Pastes an animal centred near (cx, cy) (fractions); returns its normalized box."""
    h, w = canvas.shape[:2]
    sprite = _draw_animal(cls, rng)
    if rng.random() < 0.5:
        sprite = sprite.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    sprite = sprite.rotate(float(rng.uniform(-10, 10)), resample=Image.Resampling.BILINEAR,
                           expand=True)
    target_w = max(int(scale * w * rng.uniform(0.9, 1.1)), 24)
    aspect = sprite.height / sprite.width * rng.uniform(0.9, 1.1)
    sprite = sprite.resize((target_w, max(int(target_w * aspect), 16)),
                           Image.Resampling.BILINEAR)
    if rng.random() < 0.3:
        sprite = sprite.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))  # motion blur
    s = np.asarray(sprite, dtype=np.float32)
    rgb, alpha = s[..., :3], s[..., 3:] / 255.0
    if night:  # infrared flash: animals glow
        rgb = np.clip(rgb * 0.5 + 110, 0, 255)
    sh, sw = s.shape[:2]
    x0 = int(cx * w - sw / 2)
    y0 = int(cy * h - sh / 2)
    # clip to the canvas (animals may be cut at the frame edge)
    ax0, ay0 = max(x0, 0), max(y0, 0)
    ax1, ay1 = min(x0 + sw, w), min(y0 + sh, h)
    if ax1 - ax0 < 8 or ay1 - ay0 < 8:
        return None
    sub_a = alpha[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0]
    sub_rgb = rgb[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0]
    region = canvas[ay0:ay1, ax0:ax1]
    light = rng.uniform(0.7, 1.15)
    canvas[ay0:ay1, ax0:ax1] = region * (1 - sub_a) + sub_rgb * light * sub_a
    mask = sub_a[..., 0] > 0.3
    if not mask.any():
        return None
    ys, xs = np.nonzero(mask)
    bx0, bx1 = (ax0 + xs.min()) / w, (ax0 + xs.max() + 1) / w
    by0, by1 = (ay0 + ys.min()) / h, (ay0 + ys.max() + 1) / h
    return [round(bx0, 4), round(by0, 4), round(bx1 - bx0, 4), round(by1 - by0, 4)]


_EXIF_ORIENTATION = 0x0112
_EXIF_IFD, _EXIF_DATETIME_ORIGINAL, _EXIF_DATETIME = 0x8769, 0x9003, 0x0132
# how to store an upright picture so that a viewer applying the tag shows it upright
_STORE_TRANSPOSE = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90,
                    8: Image.Transpose.ROTATE_270}


def render(shot: Shot) -> dict[str, Any]:
    """Draws and saves one photo; returns its boxes (normalized, upright frame)."""
    rng = np.random.default_rng(shot.image_seed)
    canvas = _scene(shot.location_seed, shot.width, shot.height).copy()
    # time of day: a global light level and a soft gradient shadow
    light = rng.uniform(0.75, 1.2)
    grad = np.linspace(rng.uniform(0.85, 1.0), rng.uniform(0.9, 1.1), shot.width,
                       dtype=np.float32)
    canvas *= light * grad[None, :, None]
    if shot.night:
        gray = canvas.mean(axis=2, keepdims=True) * 0.35
        canvas = np.repeat(gray, 3, axis=2)
    boxes = []
    if shot.cls != 'empty':
        ax, ay, ascale = shot.anchor
        for k in range(shot.n_animals):
            dx = (shot.frame * 0.06 + k * 0.22) * (1 if ax < 0.5 else -1)
            box = _place_animal(canvas, shot.cls, rng, ax + dx + rng.uniform(-0.03, 0.03),
                                ay + rng.uniform(-0.03, 0.03), ascale * rng.uniform(0.85, 1.15),
                                shot.night)
            if box is not None:
                boxes.append(box)
    if shot.night:  # vignette + sensor noise
        yy, xx = np.mgrid[0:shot.height, 0:shot.width].astype(np.float32)
        r = np.hypot((xx - shot.width / 2) / shot.width, (yy - shot.height / 2) / shot.height)
        canvas *= np.clip(1.25 - r * 1.1, 0.3, 1.0)[..., None]
    canvas += rng.normal(0, 4.0, size=(shot.height // 4, shot.width // 4, 1)).repeat(
        4, axis=0).repeat(4, axis=1)[: shot.height, : shot.width]
    arr = np.clip(canvas, 0, 255).astype(np.uint8)
    img = Image.fromarray(arr[..., 0] if shot.night else arr, 'L' if shot.night else 'RGB')
    exif = Image.Exif()
    if shot.orientation != 1:
        img = img.transpose(_STORE_TRANSPOSE[shot.orientation])
        exif[_EXIF_ORIENTATION] = shot.orientation
    if shot.taken is not None:
        stamp = shot.taken.strftime('%Y:%m:%d %H:%M:%S')
        exif[_EXIF_DATETIME] = stamp
        exif.get_ifd(_EXIF_IFD)[_EXIF_DATETIME_ORIGINAL] = stamp
    Path(shot.out_path).parent.mkdir(parents=True, exist_ok=True)
    img.save(shot.out_path, 'JPEG', quality=85, exif=exif.tobytes())
    return {'boxes': boxes}


# ---------------------------------------------------------------- simulated MegaDetector

def simulate_detections(boxes: list[list[float]], night: bool, rng: np.random.Generator
                        ) -> list[dict[str, Any]]:
    """MegaDetector-like detections for the true boxes, with misses and false positives."""
    dets = []
    for box in boxes:
        conf = float(np.clip(rng.beta(8, 1.2) - (0.1 if night else 0.0), 0.05, 0.999))
        if rng.random() < 0.04:
            conf = float(rng.uniform(0.05, 0.3))   # a weak detection of a real animal
        jit = rng.normal(0, 0.006, size=4)
        x, y, w, h = box[0] + jit[0], box[1] + jit[1], box[2] + jit[2], box[3] + jit[3]
        x, y = min(max(x, 0.0), 1.0), min(max(y, 0.0), 1.0)
        w, h = min(max(w, 0.001), 1.0 - x), min(max(h, 0.001), 1.0 - y)
        dets.append({'category': '1', 'conf': round(conf, 3),
                     'bbox': [round(x, 4), round(y, 4), round(w, 4), round(h, 4)]})
    if rng.random() < 0.12:  # false positive on a rock or a tree
        w, h = rng.uniform(0.03, 0.15), rng.uniform(0.03, 0.15)
        x, y = rng.uniform(0, 1 - w), rng.uniform(0.3, 1 - h)
        dets.append({'category': '2' if rng.random() < 0.1 else '1',
                     'conf': round(float(rng.uniform(0.05, 0.45)), 3),
                     'bbox': [round(x, 4), round(y, 4), round(w, 4), round(h, 4)]})
    return dets


def detector_document(images: list[dict[str, Any]]) -> dict[str, Any]:
    """A MegaDetector batch-output document."""
    return {
        'info': {'format_version': '1.4', 'detector': DETECTOR,
                 'detection_completion_time': '2026-01-01 00:00:00',
                 'detector_metadata': {'megadetector_version': 'v5a.0.0',
                                       'typical_detection_threshold': 0.2,
                                       'conservative_detection_threshold': 0.05}},
        'detection_categories': {'1': 'animal', '2': 'person', '3': 'vehicle'},
        'images': images,
    }


def _coco_time(taken: dt.datetime | None) -> str | None:
    """A time as COCO Camera Traps writes it (``YYYY-MM-DD HH:MM:SS``)."""
    return None if taken is None else taken.strftime('%Y-%m-%d %H:%M:%S')


def _with_max_conf(file: str, dets: list[dict[str, Any]]) -> dict[str, Any]:
    return {'file': file, 'max_detection_conf': max((d['conf'] for d in dets), default=0.0),
            'detections': dets}


def taxonomy_rows() -> list[dict[str, str]]:
    """Rows of the taxonomy CSV for every dataset label of the demo."""
    ids: dict[tuple[str, str], int] = {}

    def taxon_id(level: str, name: str) -> int:
        return ids.setdefault((level, name), len(ids) + 1)

    rows = []
    for dataset, labels in DATASET_LABELS.items():
        for key, label in labels.items():
            if key == 'empty':
                rows.append({'dataset_name': dataset, 'query': label, 'taxonomy_level': '',
                             'scientific_name': '', 'common_name': 'empty',
                             'source': '', 'taxonomy_string': ''})
                continue
            lineage = _LINEAGE[label] + _ROOT
            entries = [[taxon_id(lv, nm), lv, nm, [cn] if cn else []] for lv, nm, cn in lineage]
            level, sci, common = lineage[0]
            rows.append({'dataset_name': dataset, 'query': label, 'taxonomy_level': level,
                         'scientific_name': sci, 'common_name': common or label,
                         'source': 'demo', 'taxonomy_string': repr(entries)})
    return rows


# ---------------------------------------------------------------- the project

LABELED_START = dt.datetime(2025, 6, 1, 5, 0, 0)
NEW_START = dt.datetime(2025, 7, 1, 0, 0, 0)


def labeled_time(location: int, sequence: int, frame: int) -> dt.datetime:
    """When a labeled photo was taken: sequences at a location 5 h 17 min apart
    (locations offset by 11 min), frames 2 s apart. Not drawn from the random
    stream, so the labeled photos stay the same for a seed."""
    return LABELED_START + dt.timedelta(minutes=317 * sequence + 11 * location,
                                        seconds=2 * frame)


@dataclass(frozen=True)
class NewShot:
    """One new (unlabeled) photo and the sequence it belongs to."""
    camera: str
    seq_id: str
    frame: int
    shot: Shot


def plan_shots(out: Path, seed: int, locations: int, sequences_per_location: int,
               new_images: int, new_locations: int, width: int, height: int
               ) -> tuple[list[tuple[str, str, str, int, Shot]], list[NewShot]]:
    """Decides every photo: ((dataset, location, seq_id, frame, shot) list, new shots).

    The new photos come in sequences of 2-5 frames (the last one may be shorter,
    to make ``new_images`` in all), given to the cameras in turn; the frames of a
    sequence show one animal (or none) moving, 1-3 s apart; the sequences at a
    camera are 10 minutes to 4 hours apart. Files stay ``cam_KK/img_IIII.jpg``
    with I counted over all new photos.
    """
    rng = np.random.default_rng(seed)
    labeled = []
    for loc in range(locations):
        dataset = DATASETS[loc % len(DATASETS)]
        location = f'loc_{loc:02d}'
        loc_seed = int(rng.integers(2**31))
        # each location sees most classes, with its own mix
        weights = rng.dirichlet(np.ones(len(CLASSES)) * 2.0)
        for s in range(sequences_per_location):
            cls = 'empty' if rng.random() < 0.1 else str(rng.choice(CLASSES, p=weights))
            n_frames = int(rng.integers(1, 4))
            night = bool(rng.random() < 0.15)
            n_animals = 2 if rng.random() < 0.12 else 1
            anchor = (float(rng.uniform(0.2, 0.8)), float(rng.uniform(0.55, 0.8)),
                      float(rng.uniform(0.08, 0.28)))
            seq_id = f'{dataset}_{location}_s{s:03d}'
            for f in range(n_frames):
                orient = int(rng.choice([6, 8, 3])) if rng.random() < 0.06 else 1
                path = out / 'images' / dataset / location / f's{s:03d}_f{f}.jpg'
                shot = Shot(str(path), loc_seed, int(rng.integers(2**31)), cls, n_animals, f,
                            night, orient, width, height, anchor, labeled_time(loc, s, f))
                labeled.append((dataset, location, seq_id, f, shot))
    new: list[NewShot] = []
    new_loc_seeds = [int(rng.integers(2**31)) for _ in range(max(new_locations, 1))]
    clocks = [NEW_START + dt.timedelta(minutes=int(rng.integers(0, 600)))
              for _ in new_loc_seeds]
    seqs_at = [0] * len(new_loc_seeds)
    n_seq = 0
    while len(new) < new_images:
        k = n_seq % len(new_loc_seeds)
        n_seq += 1
        camera = f'cam_{k:02d}'
        seq_id = f'{camera}_s{seqs_at[k]:03d}'
        seqs_at[k] += 1
        n_frames = min(int(rng.integers(2, 6)), new_images - len(new))
        cls = 'empty' if rng.random() < 0.1 else str(rng.choice(CLASSES))
        night = bool(rng.random() < 0.15)
        anchor = (float(rng.uniform(0.2, 0.8)), float(rng.uniform(0.55, 0.8)),
                  float(rng.uniform(0.08, 0.28)))
        taken = clocks[k] + dt.timedelta(seconds=int(rng.integers(600, 4 * 3600)))
        for f in range(n_frames):
            if f:
                taken += dt.timedelta(seconds=int(rng.integers(1, 4)))
            orient = int(rng.choice([6, 8, 3])) if rng.random() < 0.08 else 1
            path = out / 'new_photos' / 'images' / camera / f'img_{len(new):04d}.jpg'
            new.append(NewShot(camera, seq_id, f, Shot(
                str(path), new_loc_seeds[k], int(rng.integers(2**31)), cls, 1, f, night,
                orient, width, height, anchor, taken)))
        clocks[k] = taken
    return labeled, new


def generate(out: Path, seed: int = 0, locations: int = 14, sequences_per_location: int = 14,
             new_images: int = 40, new_locations: int = 3, width: int = 1920,
             height: int = 1080, gt_box_fraction: float = 0.5, workers: int = 0
             ) -> dict[str, Any]:
    """Writes the whole demo project under ``out``; returns the manifest."""
    if locations < 6:
        raise utils.InputError('--locations must be at least 6 (3 splits x 2 datasets)')
    labeled, new = plan_shots(out, seed, locations, sequences_per_location, new_images,
                              new_locations, width, height)
    shots = [s for *_, s in labeled] + [n.shot for n in new]
    workers = workers or min(os.cpu_count() or 1, 8)
    if workers > 1:
        # sort by location so that each worker's scene cache is reused
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(render, shots, chunksize=4))
    else:
        results = [render(s) for s in shots]
    boxes = [r['boxes'] for r in results]
    rng = np.random.default_rng(seed + 1)

    # COCO Camera Traps JSON per dataset, detections for the images without GT boxes
    seq_has_gt = {seq: bool(rng.random() < gt_box_fraction)
                  for _, _, seq, _, _ in labeled}
    cocos: dict[str, dict[str, Any]] = {
        d: {'info': {'version': '1.0', 'description': f'{d}: generated demo dataset'},
            'images': [], 'annotations': [],
            'categories': [{'id': i, 'name': DATASET_LABELS[d][c]}
                           for i, c in enumerate(('empty', *CLASSES))]}
        for d in DATASETS}
    det_images: dict[str, list[dict[str, Any]]] = {d: [] for d in DATASETS}
    cat_id = {c: i for i, c in enumerate(('empty', *CLASSES))}
    seq_frames: dict[str, int] = {}
    for _, _, seq, _, _ in labeled:
        seq_frames[seq] = seq_frames.get(seq, 0) + 1
    for (dataset, location, seq, frame, shot), bxs in zip(labeled, boxes[:len(labeled)], strict=True):
        coco = cocos[dataset]
        file = os.path.relpath(shot.out_path, out / 'images' / dataset).replace(os.sep, '/')
        img_id = f'{dataset}/{file}'
        coco['images'].append({'id': img_id, 'file_name': file, 'width': width,
                               'height': height, 'location': location, 'seq_id': seq,
                               'frame_num': frame, 'seq_num_frames': seq_frames[seq],
                               'datetime': _coco_time(shot.taken)})
        cls = shot.cls if bxs or shot.cls == 'empty' else 'empty'
        if seq_has_gt[seq] and bxs:
            for k, b in enumerate(bxs):
                coco['annotations'].append({
                    'id': f'{img_id}#{k}', 'image_id': img_id, 'category_id': cat_id[cls],
                    'bbox': [round(b[0] * width, 1), round(b[1] * height, 1),
                             round(b[2] * width, 1), round(b[3] * height, 1)]})
        else:
            coco['annotations'].append({'id': f'{img_id}#0', 'image_id': img_id,
                                        'category_id': cat_id[cls]})
            det_images[dataset].append(
                _with_max_conf(file, simulate_detections(bxs, shot.night, rng)))

    new_images_out, truth = [], {}
    new_coco: dict[str, Any] = {
        'info': {'version': '1.0', 'description': 'new photos of the demo: cameras, '
                 'sequences, times and true classes'},
        'images': [], 'annotations': [],
        'categories': [{'id': i, 'name': c} for c, i in cat_id.items()]}
    new_seq_frames: dict[str, int] = {}
    for n in new:
        new_seq_frames[n.seq_id] = new_seq_frames.get(n.seq_id, 0) + 1
    for n, bxs in zip(new, boxes[len(labeled):], strict=True):
        shot = n.shot
        file = os.path.relpath(shot.out_path, out / 'new_photos' / 'images').replace(os.sep, '/')
        new_images_out.append(_with_max_conf(file, simulate_detections(bxs, shot.night, rng)))
        truth[file] = shot.cls if bxs else 'empty'
        new_coco['images'].append({'id': file, 'file_name': file, 'width': width,
                                   'height': height, 'location': n.camera,
                                   'seq_id': n.seq_id, 'frame_num': n.frame,
                                   'seq_num_frames': new_seq_frames[n.seq_id],
                                   'datetime': _coco_time(shot.taken)})
        new_coco['annotations'].append({'id': f'{file}#0', 'image_id': file,
                                        'category_id': cat_id[truth[file]]})

    for d in DATASETS:
        utils.write_json(cocos[d], out / 'coco' / f'{d}.json', indent=1)
        utils.write_json(detector_document(det_images[d]), out / 'detections' / f'{d}.json',
                         indent=1)
    utils.write_json(detector_document(new_images_out), out / 'new_photos' / 'detections.json',
                     indent=1)
    utils.write_json(truth, out / 'new_photos' / 'ground_truth.json', indent=1)
    utils.write_json(new_coco, out / 'new_photos' / 'coco.json', indent=1)
    rows = taxonomy_rows()
    utils.write_csv(pd.DataFrame(rows), out / 'taxonomy.csv')
    utils.write_text(LABEL_SPEC_CSV, out / 'label_spec.csv')
    manifest = {
        'seed': seed, 'datasets': list(DATASETS), 'classes': list(CLASSES),
        'labeled_images': len(labeled), 'new_images': len(new),
        'new_sequences': len(new_seq_frames),
        'locations': locations, 'width': width, 'height': height,
        'night_images': sum(s.night for s in shots),
        'rotated_images': sum(s.orientation != 1 for s in shots),
        'empty_images': sum(s.cls == 'empty' for s in shots),
        'images_with_gt_boxes': sum(len(c['images']) for c in cocos.values())
        - sum(len(v) for v in det_images.values()),
        'detector': DETECTOR,
    }
    utils.write_json(manifest, out / 'manifest.json', indent=1)
    return manifest


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = utils.make_parser(__doc__)
    parser.add_argument('output_dir', help='folder to write the project into')
    parser.add_argument('--seed', type=int, default=0, help='random seed (default: 0)')
    parser.add_argument('--locations', type=utils.positive_int, default=14,
                        help='labeled camera locations, split over 2 datasets (default: 14)')
    parser.add_argument('--sequences-per-location', type=utils.positive_int, default=14,
                        help='sequences of 1-3 frames per location (default: 14)')
    parser.add_argument('--new-images', type=utils.nonneg_int, default=40,
                        help='unlabeled photos from new locations (default: 40)')
    parser.add_argument('--new-locations', type=utils.positive_int, default=3,
                        help='camera locations of the new photos (default: 3)')
    parser.add_argument('--width', type=utils.positive_int, default=1920)
    parser.add_argument('--height', type=utils.positive_int, default=1080)
    parser.add_argument('--gt-box-fraction', type=utils.probability, default=0.5,
                        help='fraction of sequences with ground-truth boxes (default: 0.5)')
    parser.add_argument('--workers', type=utils.nonneg_int, default=0,
                        help='processes drawing photos (default: one per core)')
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    utils.setup_logging()
    manifest = generate(Path(args.output_dir), seed=args.seed, locations=args.locations,
                        sequences_per_location=args.sequences_per_location,
                        new_images=args.new_images, new_locations=args.new_locations,
                        width=args.width, height=args.height,
                        gt_box_fraction=args.gt_box_fraction, workers=args.workers)
    logger.info('demo project in %s: %d labeled photos, %d new photos', args.output_dir,
                manifest['labeled_images'], manifest['new_images'])
    return 0


if __name__ == '__main__':
    raise SystemExit(utils.run_cli(main))

