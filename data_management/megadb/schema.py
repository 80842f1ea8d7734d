"""Documents stored in the labeled-image database (MegaDB), and their checks.

``datasets``: one document per dataset::

    {"dataset_name": "caltech", "storage_account": "...", "container": "...",
     "container_sas_key": "<secret>", "path_prefix": "cct_images",
     "images_root": "/data/images/caltech"}          # all but the name optional

``sequences`` (partitioned by ``dataset``)::

    {"dataset": "caltech", "seq_id": "6f0a...", "location": "13", "class": ["deer"],
     "images": [{"file": "cct_images/x.jpg", "frame_num": 1, "datetime": "...",
                 "class": ["deer"], "bbox": [{"category": "animal",
                                             "bbox": [x, y, w, h]}]}]}

An image-level ``class`` overrides the sequence-level one; ``empty`` means no
animal. Boxes are normalized [x_min, y_min, width, height].
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from classification.utils import InputError, safe_join

DATASET_FIELDS = ('dataset_name', 'storage_account', 'container', 'container_sas_key',
                  'path_prefix', 'images_root')
SECRET_FIELDS = ('container_sas_key',)


def check_dataset_doc(doc: Any, where: str) -> dict[str, Any]:
    """Validates a dataset entry; returns a clean copy with only known fields."""
    if not isinstance(doc, Mapping):
        raise InputError(f'{where}: expected an object')
    name = doc.get('dataset_name')
    if not isinstance(name, str) or not name or '/' in name:
        raise InputError(f'{where}: "dataset_name" must be a non-empty name without "/"')
    out: dict[str, Any] = {'dataset_name': name}
    for field in DATASET_FIELDS[1:]:
        value = doc.get(field)
        if value is None:
            continue
        if not isinstance(value, str):
            raise InputError(f'{where} ({name}): "{field}" must be a string')
        out[field] = value
    return out


def check_image_file(file: Any, where: str, field: str = 'file') -> str:
    """An image path relative to the dataset root: a non-empty string, not absolute,
    without a ".." folder or a control character (NUL, newline, ...)."""
    if not isinstance(file, str) or not file:
        raise InputError(f'{where}: "{field}" must be a relative path inside the dataset')
    try:
        safe_join('<dataset root>', file)
    except InputError as e:
        raise InputError(f'{where}: "{field}" must be a relative path inside the dataset: '
                         f'{e}') from e
    return file


def _check_classes(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(c, str) and c for c in value):
        raise InputError(f'{where}: "class" must be a list of non-empty strings')
    return [c.lower() for c in value]


def _check_bboxes(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise InputError(f'{where}: "bbox" must be a list of {{"category", "bbox"}} objects')
    out = []
    for k, box in enumerate(value):
        if not isinstance(box, Mapping):
            raise InputError(f'{where}: bbox[{k}] must be an object')
        coords = box.get('bbox')
        if (not isinstance(coords, list) or len(coords) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                           for v in coords)):
            raise InputError(f'{where}: bbox[{k}].bbox must be [x, y, width, height]')
        if not all(-0.01 <= v <= 1.01 for v in coords):
            raise InputError(f'{where}: bbox[{k}].bbox must be normalized to [0, 1]')
        out.append({'category': str(box.get('category', 'animal')),
                    'bbox': [float(v) for v in coords]})
    return out


def check_sequence_doc(doc: Any, where: str) -> dict[str, Any]:
    """Validates a sequence document; returns a normalized copy.

    Raises InputError naming the record (``where``, dataset, seq_id) and field.
    """
    if not isinstance(doc, Mapping):
        raise InputError(f'{where}: expected an object')
    dataset, seq_id = doc.get('dataset'), doc.get('seq_id')
    if not isinstance(dataset, str) or not dataset:
        raise InputError(f'{where}: "dataset" must be a non-empty string')
    if not isinstance(seq_id, (str, int)) or isinstance(seq_id, bool) or seq_id == '':
        raise InputError(f'{where} ({dataset}): "seq_id" must be a non-empty string')
    where = f'{where} ({dataset}/{seq_id})'
    out: dict[str, Any] = {'dataset': dataset, 'seq_id': str(seq_id)}
    location = doc.get('location')
    if location is not None:
        if not isinstance(location, (str, int)) or isinstance(location, bool) or location == '':
            raise InputError(f'{where}: "location" must be a non-empty string, not '
                             f'{location!r}')
        out['location'] = str(location)
    if 'class' in doc:
        out['class'] = _check_classes(doc['class'], where)
    images = doc.get('images')
    if not isinstance(images, list) or not images:
        raise InputError(f'{where}: "images" must be a non-empty list')
    out_images = []
    files: set[str] = set()
    for i, img in enumerate(images):
        iwhere = f'{where} images[{i}]'
        if not isinstance(img, Mapping):
            raise InputError(f'{iwhere}: expected an object')
        file = check_image_file(img.get('file'), iwhere)
        if file in files:
            raise InputError(f'{iwhere}: file {file!r} is listed twice')
        files.add(file)
        o: dict[str, Any] = {'file': file}
        if 'frame_num' in img and img['frame_num'] is not None:
            if not isinstance(img['frame_num'], int) or isinstance(img['frame_num'], bool):
                raise InputError(f'{iwhere}: "frame_num" must be an integer')
            o['frame_num'] = img['frame_num']
        if img.get('datetime') is not None:
            if not isinstance(img['datetime'], str):
                raise InputError(f'{iwhere}: "datetime" must be a string')
            o['datetime'] = img['datetime']
        if 'class' in img:
            o['class'] = _check_classes(img['class'], iwhere)
        if 'bbox' in img:
            o['bbox'] = _check_bboxes(img['bbox'], iwhere)
        out_images.append(o)
    if 'class' not in out and not all('class' in o for o in out_images):
        raise InputError(f'{where}: no "class" on the sequence or on every image')
    out['images'] = out_images
    return out


def image_classes(seq: Mapping[str, Any], image: Mapping[str, Any]) -> list[str]:
    """An image's classes: its own ``class`` if set, else the sequence's."""
    classes = image.get('class')
    if classes is None:
        classes = seq.get('class', [])
    return list(classes)


def sequence_class_set(seq: Mapping[str, Any]) -> set[str]:
    """Every class that applies to at least one image of the sequence."""
    return {c for img in seq['images'] for c in image_classes(seq, img)}


def redact_dataset(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A dataset document with secrets masked, for printing."""
    return {k: ('<redacted>' if k in SECRET_FIELDS and v else v) for k, v in doc.items()}
