"""The MegaDetector batch-output format (read by Timelapse), read and checked.

A document looks like::

    {"info": {"format_version": "1.6", "detector": "md_v5a.0.0.pt", ...},
     "detection_categories": {"1": "animal", "2": "person", "3": "vehicle"},
     "images": [{"file": "loc1/img.jpg", "max_detection_conf": 0.9,
                 "detections": [{"category": "1", "conf": 0.9,
                                 "bbox": [x_min, y_min, width, height]}]},
                {"file": "loc1/bad.jpg", "failure": "image access failure"}]}

Boxes are normalized to [0, 1] with the origin at the top left. ``FORMAT_VERSION``
is the version merge_classification_detection_output raises older files to (the
first with classifications); run_detector_batch writes MegaDetector's current one.
"""
from __future__ import annotations

import math
import os
import posixpath
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from classification.utils import (
    InputError,
    check_detector_version,
    crop_filename,
    detector_version_from_name,
    read_json,
    safe_join,
    write_json,
)

DEFAULT_DETECTION_CATEGORIES = {'1': 'animal', '2': 'person', '3': 'vehicle'}
FORMAT_VERSION = '1.4'


@dataclass(frozen=True)
class Detection:
    """One box of one image, with its index in the image's detection list."""
    image_file: str
    index: int
    category: str
    conf: float
    bbox: tuple[float, float, float, float]


def _is_number(value: Any) -> TypeGuard[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:       # an integer too large for a float
        return False


# category ids merge_classification_detection_output adds beside the classifier's
LABEL_ID_OFFSET = 1_000_000     # the true label (--label), "label: <name>"
TAXON_ID_OFFSET = 2_000_000     # a taxon of the taxonomic rollup, "taxon: <name>"


def category_kind(cat_id: str) -> str:
    """``'classifier'``, ``'label'`` (a true label) or ``'taxon'`` (a rollup taxon),
    by the ranges of ids merge_classification_detection_output uses."""
    if not cat_id.isdigit():
        return 'classifier'
    n = int(cat_id)
    return 'taxon' if n >= TAXON_ID_OFFSET else 'label' if n >= LABEL_ID_OFFSET else 'classifier'


def merged_with_relative_conf(doc: Mapping[str, Any]) -> bool:
    """Whether ``doc`` was merged with --relative-conf (its
    ``info.classifier_metadata.relative_conf`` mark): its classifications are the
    classes that beat the given label and by how much, not probabilities."""
    info = doc.get('info')
    meta = info.get('classifier_metadata') if isinstance(info, Mapping) else None
    return isinstance(meta, Mapping) and meta.get('relative_conf') not in (None, False)


def same_file(name: str) -> str:
    """One spelling of a photo path (``a/./b.jpg``, ``a\\b.jpg`` and ``a//b.jpg``
    name the same photo)."""
    return posixpath.normpath(name.replace('\\', '/'))


def check_document(doc: Any, source: str) -> dict[str, Any]:
    """Checks the parts of a detector-output document that the pipeline relies on.

    Raises InputError naming the file, the image and the field that is wrong.
    """
    if not isinstance(doc, dict):
        raise InputError(f'{source}: expected a MegaDetector output JSON object')
    images = doc.get('images')
    if not isinstance(images, list):
        raise InputError(f'{source}: missing "images" list (is this MegaDetector output?)')
    cats = doc.get('detection_categories', DEFAULT_DETECTION_CATEGORIES)
    if not isinstance(cats, dict):
        raise InputError(f'{source}: "detection_categories" must be an object')
    seen: set[str] = set()
    for i, img in enumerate(images):
        if not isinstance(img, dict) or not isinstance(img.get('file'), str):
            raise InputError(f'{source}: images[{i}] has no "file" string')
        # the same photo however it is written ("a/./b.jpg", "a//b.jpg")
        same = same_file(img['file'])
        if same in seen:
            raise InputError(f'{source}: images[{i}]: {img["file"]!r} is listed twice (its '
                             'crops would overwrite each other)')
        seen.add(same)
        dets = img.get('detections')
        if dets is None:
            continue
        if not isinstance(dets, list):
            raise InputError(f'{source}: {img["file"]}: "detections" must be a list')
        for j, det in enumerate(dets):
            where = f'{source}: {img["file"]}: detection {j}'
            if not isinstance(det, dict):
                raise InputError(f'{where}: expected an object')
            bbox = det.get('bbox')
            if (not isinstance(bbox, list) or len(bbox) != 4
                    or not all(_is_number(v) for v in bbox) or bbox[2] < 0 or bbox[3] < 0):
                raise InputError(f'{where}: "bbox" must be [x, y, width, height], finite '
                                 'numbers with width and height not below 0')
            conf = det.get('conf')
            if not _is_number(conf) or not 0 <= conf <= 1:
                raise InputError(f'{where}: "conf" must be a number from 0 to 1')
            if str(det.get('category')) not in cats:
                raise InputError(f'{where}: unknown category {det.get("category")!r}')
    return doc


def read_document(source: str) -> dict[str, Any]:
    """A MegaDetector output file ('-': stdin), checked; or, for a glob pattern, the
    shard files of one run_detector_batch --shard run joined into one document
    (images in shard order, as one unsharded run writes them; shards of different
    runs, or a missing or repeated shard, refused)."""
    from classification import shards
    files = shards.expand([source])
    if len(files) == 1:
        return check_document(read_json(files[0]), files[0])
    files = shards.check_shards(files, 'run_detector_batch --shard')
    docs = [check_document(read_json(f), f) for f in files]
    for f, doc in zip(files[1:], docs[1:], strict=True):
        if doc.get('detection_categories') != docs[0].get('detection_categories'):
            raise InputError(f'{f}: detection categories differ from {files[0]}')
    return {**docs[0], 'images': [e for doc in docs for e in doc['images']]}


def iter_detections(doc: Mapping[str, Any], threshold: float = 0.0,
                    categories: set[str] | None = None) -> Iterator[Detection]:
    """Boxes with conf >= threshold (and of the given categories), in file order.

    ``index`` is the box's position in the image's full detection list, so crop
    names stay the same whatever the threshold.
    """
    for img in doc['images']:
        for idx, det in enumerate(img.get('detections') or []):
            cat = str(det['category'])
            if det['conf'] < threshold or (categories is not None and cat not in categories):
                continue
            yield Detection(img['file'], idx, cat, float(det['conf']),
                            tuple(float(v) for v in det['bbox']))  # type: ignore[arg-type]


def animal_category_ids(doc: Mapping[str, Any]) -> set[str]:
    """The category ids named 'animal' (the ones classifiers are run on)."""
    cats = doc.get('detection_categories', DEFAULT_DETECTION_CATEGORIES)
    return {k for k, v in cats.items() if str(v).lower() == 'animal'}


def resolve_detector_version(doc: Mapping[str, Any], given: str | None, source: str) -> str:
    """``given`` (--detector-version) if set, else derived from info.detector by the
    one rule of classification.utils.detector_version_from_name."""
    if given is not None:
        return check_detector_version(given)
    name = detector_name(doc)
    if name is None:
        raise InputError(f'{source}: no info.detector; pass --detector-version')
    return detector_version_from_name(name)


def detector_name(doc: Mapping[str, Any]) -> str | None:
    """``info.detector`` if present."""
    info = doc.get('info')
    if isinstance(info, dict) and isinstance(info.get('detector'), str):
        return str(info['detector'])
    return None


# ---------------------------------------------------------------- the detector output cache

def cache_path(cache_dir: str | os.PathLike[str], version: str, dataset: str) -> Path:
    """``<cache_dir>/v<version>/<dataset>.json``."""
    check_detector_version(version)
    if not dataset or '/' in dataset or dataset in ('.', '..'):
        raise InputError(f'dataset name {dataset!r} cannot be a cache file name')
    return Path(cache_dir) / f'v{version}' / f'{dataset}.json'


def load_cache(cache_dir: str | os.PathLike[str], version: str, dataset: str
               ) -> dict[str, Any] | None:
    """The cached detector output of a dataset, or None if there is none."""
    path = cache_path(cache_dir, version, dataset)
    if not path.exists():
        return None
    return check_document(read_json(path), str(path))


def merge_into_cache(cache_dir: str | os.PathLike[str], version: str, dataset: str,
                     doc: Mapping[str, Any]) -> tuple[int, int]:
    """Merges new results for a dataset into its cache file (atomically).

    Image paths may carry a leading ``<dataset>/``, which is removed. Results
    for the same image replace the cached ones; other images are kept.
    Returns (images added or replaced, images in the cache now).
    """
    old = load_cache(cache_dir, version, dataset)
    cats = dict(doc.get('detection_categories', DEFAULT_DETECTION_CATEGORIES))
    images: dict[str, dict[str, Any]] = {}
    if old is not None:
        old_cats = old.get('detection_categories', DEFAULT_DETECTION_CATEGORIES)
        if old_cats != cats:
            raise InputError(f'{cache_path(cache_dir, version, dataset)}: cached detection '
                             f'categories {old_cats} differ from the new ones {cats}')
        images = {img['file']: img for img in old['images']}
    prefix = f'{dataset}/'
    n_new = 0
    for img in doc['images']:
        img = dict(img)
        if img['file'].startswith(prefix):
            img['file'] = img['file'][len(prefix):]
        images[img['file']] = img
        n_new += 1
    info = dict(doc.get('info', {}))
    merged = {'info': info, 'detection_categories': cats,
              'images': [images[k] for k in sorted(images)]}
    write_json(merged, cache_path(cache_dir, version, dataset))
    return n_new, len(images)


def read_queried_images(path: str) -> dict[str, dict[str, Any]]:
    """queried_images.json (json_validator's output), checked: each entry an
    object with a "dataset" string that prefixes its key, a "location" string or
    number, a "label" list of non-empty strings, and optional ground-truth
    "bbox" boxes (objects with a "category" and four finite numbers); key
    paths stay inside their dataset folder."""
    doc = read_json(path)
    if not isinstance(doc, dict):
        raise InputError(f'{path}: expected a JSON object {{"dataset/path": {{...}}, ...}}')
    for key, entry in doc.items():
        where = f'{path}: {key!r}'
        if not isinstance(entry, dict):
            raise InputError(f'{where}: expected an object')
        ds = entry.get('dataset')
        if not isinstance(ds, str) or not ds or not key.startswith(f'{ds}/'):
            raise InputError(f'{where}: needs a "dataset" string that prefixes its path')
        safe_join(ds, key[len(ds) + 1:])
        loc = entry.get('location')
        if isinstance(loc, bool) or not isinstance(loc, (str, int)) or loc == '':
            raise InputError(f'{where}: "location" must be a string or a number')
        labels = entry.get('label')
        if not isinstance(labels, list) or not labels or not all(
                isinstance(v, str) and v for v in labels):
            raise InputError(f'{where}: "label" must be a list of label names')
        boxes = entry.get('bbox')
        if boxes is None:
            continue
        if not isinstance(boxes, list) or not all(
                isinstance(b, dict) and isinstance(b.get('category'), str)
                and isinstance(b.get('bbox'), list) and len(b['bbox']) == 4
                and all(_is_number(v) for v in b['bbox']) for b in boxes):
            raise InputError(f'{where}: "bbox" must be a list of {{"category", "bbox": '
                             '[x, y, width, height]} objects with finite numbers')
    return doc


def _box(b: Any) -> tuple[float, float, float, float]:
    return float(b[0]), float(b[1]), float(b[2]), float(b[3])


class DetectionCache:
    """The detector output cache of one version, each dataset read once when first used."""

    def __init__(self, cache_dir: str | os.PathLike[str] | None, version: str | None) -> None:
        self.cache_dir, self.version = cache_dir, version
        self._images: dict[str, dict[str, Any]] = {}
        self._animal: dict[str, set[str]] = {}

    def _load(self, dataset: str) -> None:
        if dataset in self._images:
            return
        doc = None
        if self.cache_dir is not None and self.version is not None:
            doc = load_cache(self.cache_dir, self.version, dataset)
        doc = doc or {'images': []}
        self._images[dataset] = {img['file']: img for img in doc['images']}
        self._animal[dataset] = animal_category_ids(doc)

    def image(self, dataset: str, file: str) -> dict[str, Any] | None:
        """The cached entry of an image (path inside the dataset), or None."""
        self._load(dataset)
        return self._images[dataset].get(file)

    def animal_ids(self, dataset: str) -> set[str]:
        self._load(dataset)
        return self._animal[dataset]


def is_animal_box(box: Mapping[str, Any]) -> bool:
    """Whether a ground-truth box of queried_images.json (``{"category", "bbox"}``)
    is an animal's; a box without a category counts as one, as in the database."""
    return str(box.get('category', 'animal')).strip().lower() == 'animal'


def queried_image_crops(key: str, entry: Mapping[str, Any], cache: DetectionCache,
                        threshold: float
                        ) -> list[tuple[str, tuple[float, float, float, float], float]] | None:
    """The crops of one queried image as (crop name, normalized box, confidence).

    An image with ground-truth boxes gets one crop per animal box (confidence
    1.0, names without a detector suffix, numbered by the box's position among
    all the image's boxes); its person and vehicle boxes are not cropped, since
    the image's species label is not theirs. If none of its boxes is an animal,
    the list is empty: the ground truth says where the animals are, so the
    detector is not asked. An image without ground truth gets its cached animal
    detections of at least ``threshold``. None when it has no ground truth and
    no usable cached detections.
    """
    dataset = entry['dataset']
    if not key.startswith(f'{dataset}/'):
        raise InputError(f'{key}: image key does not start with its dataset {dataset}/')
    if entry.get('bbox'):
        return [(crop_filename(key, i, None), _box(b['bbox']), 1.0)
                for i, b in enumerate(entry['bbox']) if is_animal_box(b)]
    img = cache.image(dataset, key[len(dataset) + 1:])
    if img is None or 'failure' in img or cache.version is None:
        return None
    animal = cache.animal_ids(dataset)
    return [(crop_filename(key, i, cache.version), _box(det['bbox']), float(det['conf']))
            for i, det in enumerate(img.get('detections') or [])
            if det['conf'] >= threshold and str(det['category']) in animal]
