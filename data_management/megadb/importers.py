"""Turning public dataset files into MegaDB documents.

``coco_to_sequences`` reads COCO Camera Traps JSON (the format of the LILA
datasets): images carry ``location``, ``seq_id``, ``frame_num``, ``datetime``,
``width`` and ``height``; annotations carry ``category_id`` and, for some, a
``bbox`` in pixels. Image-level classes and normalized boxes come out.
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from classification.utils import InputError
from data_management.megadb.schema import check_image_file, check_sequence_doc

# COCO category names (lower-cased) whose boxes are people or vehicles, as LILA
# datasets name them; every other category's boxes are 'animal' boxes.
PERSON_NAMES = {'person', 'persons', 'human', 'humans', 'people', 'homo sapiens'}
VEHICLE_NAMES = {'vehicle', 'vehicles', 'car', 'cars', 'truck', 'bus', 'motorcycle',
                 'motorbike', 'bicycle'}


def _box_category(name: str) -> str:
    if name in PERSON_NAMES:
        return 'person'
    if name in VEHICLE_NAMES:
        return 'vehicle'
    return 'animal'


def _is_id(value: Any) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _check_image(img: Mapping[str, Any], where: str) -> None:
    """The fields of a COCO image record: refused when of the wrong kind (rather than
    stored as the text of a list, or a size that no box fits)."""
    check_image_file(img['file_name'], where, 'file_name')
    where = f'{where} ({img["file_name"]})'
    for key in ('location', 'seq_id'):
        value = img.get(key)
        if value is not None and (not _is_id(value) or value == ''):
            raise InputError(f'{where}: "{key}" must be a non-empty string or an integer, '
                             f'not {value!r}')
    for key in ('width', 'height'):
        value = img.get(key)
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                  or not math.isfinite(value) or value <= 0):
            raise InputError(f'{where}: "{key}" must be a number of pixels above 0, '
                             f'not {value!r}')
    frame = img.get('frame_num')
    if frame is not None and (not isinstance(frame, int) or isinstance(frame, bool)):
        raise InputError(f'{where}: "frame_num" must be an integer, not {frame!r}')
    dt = img.get('datetime')
    if dt is not None and not isinstance(dt, str):
        raise InputError(f'{where}: "datetime" must be a string, not {dt!r}')


def coco_to_sequences(coco: Any, dataset: str, source: str) -> list[dict[str, Any]]:
    """Sequence documents for one dataset from a COCO Camera Traps document.

    Images without annotations are left out (they carry no label). Raises
    InputError naming ``source``, the record and the field that is wrong.
    """
    if not isinstance(coco, Mapping):
        raise InputError(f'{source}: expected a COCO Camera Traps JSON object')
    for key in ('images', 'annotations', 'categories'):
        if not isinstance(coco.get(key), list):
            raise InputError(f'{source}: missing "{key}" list (is this COCO Camera Traps JSON?)')
    categories: dict[Any, str] = {}
    for i, cat in enumerate(coco['categories']):
        if not isinstance(cat, Mapping) or not _is_id(cat.get('id')) or not isinstance(
                cat.get('name'), str):
            raise InputError(f'{source}: categories[{i}] needs "id" (a number or string) '
                             'and "name"')
        if cat['id'] in categories:
            raise InputError(f'{source}: categories[{i}]: duplicate category id {cat["id"]!r}')
        categories[cat['id']] = cat['name'].strip().lower()
    images: dict[Any, Mapping[str, Any]] = {}
    files: set[str] = set()
    for i, img in enumerate(coco['images']):
        if not isinstance(img, Mapping) or not _is_id(img.get('id')) or not isinstance(
                img.get('file_name'), str):
            raise InputError(f'{source}: images[{i}] needs "id" (a number or string) and '
                             '"file_name"')
        if img['id'] in images:
            raise InputError(f'{source}: images[{i}]: duplicate image id {img["id"]!r}')
        _check_image(img, f'{source}: images[{i}]')
        if img['file_name'] in files:
            raise InputError(f'{source}: images[{i}]: file {img["file_name"]!r} is listed '
                             'twice')
        files.add(img['file_name'])
        images[img['id']] = img
    classes: dict[Any, set[str]] = defaultdict(set)
    boxes: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    ann_ids: set[Any] = set()
    for i, ann in enumerate(coco['annotations']):
        if not isinstance(ann, Mapping):
            raise InputError(f'{source}: annotations[{i}]: expected an object')
        ann_id = ann.get('id')
        if ann_id is not None:
            if not _is_id(ann_id):
                raise InputError(f'{source}: annotations[{i}]: "id" must be a number or a '
                                 f'string, not {ann_id!r}')
            if ann_id in ann_ids:
                raise InputError(f'{source}: annotations[{i}]: duplicate annotation id '
                                 f'{ann_id!r}')
            ann_ids.add(ann_id)
        img = images.get(ann.get('image_id')) if _is_id(ann.get('image_id')) else None
        if img is None:
            raise InputError(f'{source}: annotations[{i}]: unknown image_id {ann.get("image_id")!r}')
        name = (categories.get(ann.get('category_id')) if _is_id(ann.get('category_id'))
                else None)
        if name is None:
            raise InputError(
                f'{source}: annotations[{i}]: unknown category_id {ann.get("category_id")!r}')
        classes[img['id']].add(name)
        bbox = ann.get('bbox')
        if bbox is None:
            continue
        w, h = img.get('width'), img.get('height')
        if not isinstance(w, (int, float)) or not isinstance(h, (int, float)) or w <= 0 or h <= 0:
            raise InputError(f'{source}: image {img["file_name"]}: a box needs the image '
                             '"width" and "height"')
        if (not isinstance(bbox, list) or len(bbox) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                           and math.isfinite(v) for v in bbox)
                or not (bbox[2] > 0 and bbox[3] > 0)):
            raise InputError(f'{source}: annotations[{i}]: "bbox" must be [x, y, width, height] '
                             'in pixels, finite, with width and height above 0')
        x, y, bw, bh = (float(v) for v in bbox)
        # the part of the box inside the image (a box wholly outside it is an error,
        # not a sliver at its edge)
        x1, y1 = min(max(x / w, 0.0), 1.0), min(max(y / h, 0.0), 1.0)
        x2, y2 = min(max((x + bw) / w, 0.0), 1.0), min(max((y + bh) / h, 0.0), 1.0)
        if x2 <= x1 or y2 <= y1:
            raise InputError(f'{source}: annotations[{i}]: "bbox" {bbox} lies outside its '
                             f'{w}x{h} image')
        boxes[img['id']].append({'category': _box_category(name),
                                 'bbox': [round(v, 4) for v in (x1, y1, x2 - x1, y2 - y1)]})

    seqs: dict[str, dict[str, Any]] = {}
    for img_id, img in images.items():
        if img_id not in classes:
            continue
        seq_id = str(img_id if img.get('seq_id') is None else img['seq_id'])
        seq = seqs.setdefault(seq_id, {'dataset': dataset, 'seq_id': seq_id, 'images': []})
        if img.get('location') is not None:
            location = str(img['location'])
            if seq.setdefault('location', location) != location:
                raise InputError(f'{source}: image {img["file_name"]!r}: location '
                                 f'{location!r} differs from {seq["location"]!r} of another '
                                 f'image of its sequence {seq_id!r}')
        entry: dict[str, Any] = {'file': img['file_name'], 'class': sorted(classes[img_id])}
        if img.get('frame_num') is not None:
            entry['frame_num'] = img['frame_num']
        if img.get('datetime') is not None:
            entry['datetime'] = img['datetime']
        if boxes.get(img_id):
            entry['bbox'] = boxes[img_id]
        seq['images'].append(entry)
    out = []
    for seq_id in sorted(seqs):
        seq = seqs[seq_id]
        seq['images'].sort(key=lambda im: (im.get('frame_num', 0), im['file']))
        out.append(check_sequence_doc(seq, f'{source}: sequence'))
    return out
