"""Sequences of camera-trap photos, and one classification per sequence.

A camera trap takes a burst of photos each time something moves in front of
it; the photos of one burst (a *sequence*) nearly always show the same animal.
This module groups the photos of a detections document into sequences and
combines the classifications of each sequence into one.

Grouping, two ways:

- ``sequences_from_coco``: the ``seq_id`` of each image of a COCO Camera Traps
  file (``file_name`` matched to the detections' ``file``). An image without a
  ``seq_id`` is a sequence of its own. The camera is the image's ``location``,
  else its folder.
- ``sequences_from_times``: per camera folder (the photo's parent folder),
  photos in time order; a new sequence starts where a photo was taken more than
  ``max_gap_seconds`` after the one before it (exactly ``max_gap_seconds``
  still continues the sequence). A photo without a time is a sequence of its
  own. Sequence ids are ``<folder>#NNNN``, counted per folder in time order
  (photos without a time last, in file order).

Combination (``combine``): the *animal detections* of a sequence are the
detections of its photos whose category is named ``animal``, whose ``conf`` is
at least the threshold and that carry a ``classifications`` list. Each one is
read as a vector over the classifier's categories (a category its list does
not name counts as 0: merge_classification_detection_output leaves out those
under its own threshold). The sequence's classification is the mean of these
vectors weighted by each detection's ``conf`` (so a faint box, often a rock or
a shadow, counts less than a clear animal; if every conf is 0, plain mean);
its top label is the category with the highest mean (the lowest category id
on a tie). A sequence without animal detections has no classification.

The classifier's categories are those of ``classification_categories`` with an
id below 1000000. merge_classification_detection_output adds two other kinds,
which are not predictions and are never combined: the true label (``--label``:
ids from 1000000, "label: <name>", confidence 1.0) and the taxon of its
taxonomic rollup (ids from 2000000, only on detections whose top label was
below the rollup threshold). A document merged with ``--relative-conf``
(``info.classifier_metadata.relative_conf``) holds differences of
confidences, not confidences, and is refused.
"""
from __future__ import annotations

import datetime as dt
import math
import posixpath
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from classification.photo_times import parse_exif_time
from classification.utils import InputError
from detection.detector_output import (
    LABEL_ID_OFFSET,
    animal_category_ids,
    category_kind,
    merged_with_relative_conf,
    same_file,
)

# the leading columns of the per-sequence CSV; then one column per category
CSV_COLUMNS = ('seq_id', 'camera', 'first_file', 'last_file', 'start_time', 'end_time',
               'photos', 'detections', 'top_label', 'top_probability')
TIME_FORMAT = '%Y-%m-%d %H:%M:%S'


@dataclass(frozen=True)
class PhotoSequence:
    """The photos of one sequence, in the order they were taken."""
    seq_id: str
    camera: str
    files: tuple[str, ...]
    times: tuple[dt.datetime | None, ...]

    @property
    def start(self) -> dt.datetime | None:
        return min((t for t in self.times if t is not None), default=None)

    @property
    def end(self) -> dt.datetime | None:
        return max((t for t in self.times if t is not None), default=None)


@dataclass(frozen=True)
class Grouping:
    """Sequences covering every photo once, with what the grouping had to guess."""
    sequences: tuple[PhotoSequence, ...]
    singletons: int = 0      # photos alone for lack of a seq_id / a time
    unused: int = 0          # images of a COCO file that the detections do not list


@dataclass(frozen=True)
class SequenceResult:
    """A sequence's combined classification (``probs`` over ``categories``)."""
    sequence: PhotoSequence
    detections: int
    probs: tuple[float, ...] | None   # None: no animal detection to combine

    def top(self) -> int | None:
        """Index of the most probable category (the first on a tie)."""
        if self.probs is None:
            return None
        return int(np.argmax(np.asarray(self.probs)))


def parse_time(value: object) -> dt.datetime | None:
    """A COCO Camera Traps ``datetime`` (``YYYY-MM-DD HH:MM:SS``, ISO 8601, or
    EXIF's ``YYYY:MM:DD HH:MM:SS``) as a naive datetime; None if unreadable.
    A time zone, if given, is dropped (camera traps keep local time)."""
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.strip()).replace(tzinfo=None)
    except ValueError:
        return parse_exif_time(value)


def _unique(seq_id: str, taken: set[str]) -> str:
    out, n = seq_id, 1
    while out in taken:
        n += 1
        out = f'{seq_id}#{n}'
    taken.add(out)
    return out


def _ordered(sequences: list[PhotoSequence]) -> tuple[PhotoSequence, ...]:
    """By camera, then start time (sequences without a time last), then id."""
    return tuple(sorted(sequences, key=lambda s: (
        s.camera, s.start is None, s.start or dt.datetime.min, s.seq_id)))


def _label(value: object) -> str | None:
    """A seq_id or location as text; None when absent. Refuses other JSON types."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f'must be a string or an integer, not {value!r}'[:120])
    return str(value)


def sequences_from_coco(coco: Any, files: Sequence[str], source: str) -> Grouping:
    """Sequences of ``files`` (the detections' photos) from a COCO Camera Traps
    document's images (``file_name``, ``seq_id``; ``location``, ``frame_num``
    and ``datetime`` when present).

    Raises InputError, naming ``source`` and the image, for a document that is
    not COCO Camera Traps, a ``file_name`` given twice, a photo of ``files``
    that the document does not list, or a ``seq_id`` spanning two locations.
    """
    if not isinstance(coco, Mapping) or not isinstance(coco.get('images'), list):
        raise InputError(f'{source}: expected a COCO Camera Traps JSON object with an '
                         '"images" list')
    entries: dict[str, tuple[str | None, str | None, int | None, dt.datetime | None]] = {}
    for i, img in enumerate(coco['images']):
        if not isinstance(img, Mapping) or not isinstance(img.get('file_name'), str):
            raise InputError(f'{source}: images[{i}] has no "file_name" string')
        key = same_file(img['file_name'])
        if key in entries:
            raise InputError(f'{source}: images[{i}]: {img["file_name"]!r} is listed twice')
        try:
            seq, loc = _label(img.get('seq_id')), _label(img.get('location'))
        except ValueError as e:
            raise InputError(f'{source}: images[{i}] ({img["file_name"]!r}): "seq_id" and '
                             f'"location" {e}') from e
        frame = img.get('frame_num')
        if frame is not None and (isinstance(frame, bool) or not isinstance(frame, int)):
            raise InputError(f'{source}: images[{i}] ({img["file_name"]!r}): "frame_num" must '
                             'be an integer')
        entries[key] = (seq, loc, frame, parse_time(img.get('datetime')))
    wanted = {same_file(f): f for f in files}
    missing = sorted(f for k, f in wanted.items() if k not in entries)
    if missing:
        raise InputError(f'{source}: {len(missing)} photo(s) of the detections file are not '
                         f'in it, e.g. {missing[0]!r} (its file_name values must be the '
                         'detections\' "file" paths)')
    members: dict[str, list[tuple[str, str | None, int | None, dt.datetime | None]]] = {}
    alone: list[tuple[str, str | None, dt.datetime | None]] = []
    for key, file in wanted.items():
        seq, loc, frame, when = entries[key]
        if seq is None:
            alone.append((file, loc, when))
        else:
            members.setdefault(seq, []).append((file, loc, frame, when))
    taken: set[str] = set()
    out = []
    for seq, photos in members.items():
        locs = sorted({loc for _, loc, _, _ in photos if loc is not None})
        if len(locs) > 1:
            raise InputError(f'{source}: seq_id {seq!r} spans locations {locs[:2]} (one '
                             'sequence is taken by one camera)')
        photos.sort(key=lambda p: (p[2] is None, p[2] or 0, p[3] is None,
                                   p[3] or dt.datetime.min, p[0]))
        camera = locs[0] if locs else posixpath.dirname(same_file(photos[0][0]))
        out.append(PhotoSequence(_unique(seq, taken), camera, tuple(p[0] for p in photos),
                                 tuple(p[3] for p in photos)))
    for file, loc, when in sorted(alone, key=lambda a: a[0]):
        camera = loc if loc is not None else posixpath.dirname(same_file(file))
        out.append(PhotoSequence(_unique(f'photo:{file}', taken), camera, (file,), (when,)))
    return Grouping(_ordered(out), singletons=len(alone), unused=len(entries) - len(wanted))


def sequences_from_times(times: Mapping[str, dt.datetime | None], max_gap_seconds: float
                         ) -> Grouping:
    """Sequences of the photos ``times`` names, per camera folder and time gap
    (see the module docstring)."""
    if not (max_gap_seconds > 0 and math.isfinite(max_gap_seconds)):
        raise InputError(f'the time gap must be a number of seconds above 0, not '
                         f'{max_gap_seconds}')
    gap = dt.timedelta(seconds=max_gap_seconds)
    cameras: dict[str, list[tuple[str, dt.datetime | None]]] = {}
    for file, when in times.items():
        cameras.setdefault(posixpath.dirname(same_file(file)), []).append((file, when))
    out: list[PhotoSequence] = []
    singletons = 0
    for camera, photos in cameras.items():
        timed = sorted(((w, f) for f, w in photos if w is not None))
        runs: list[list[tuple[dt.datetime, str]]] = []
        for when, file in timed:
            if runs and when - runs[-1][-1][0] <= gap:
                runs[-1].append((when, file))
            else:
                runs.append([(when, file)])
        untimed = sorted(f for f, w in photos if w is None)
        singletons += len(untimed)
        groups: list[tuple[tuple[str, ...], tuple[dt.datetime | None, ...]]] = [
            (tuple(f for _, f in run), tuple(w for w, _ in run)) for run in runs]
        groups += [((f,), (None,)) for f in untimed]
        for n, (files, whens) in enumerate(groups, 1):
            out.append(PhotoSequence(f'{camera}#{n:04d}', camera, files, whens))
    return Grouping(_ordered(out), singletons=singletons)


def category_order(doc: Mapping[str, Any], source: str, csv_columns: bool = True
                   ) -> list[tuple[str, str]]:
    """The classifier's ``classification_categories`` (ids below 1000000) as
    (id, name) pairs in id order (numeric ids by value). Raises InputError for a
    document without them, or merged with ``--relative-conf``."""
    cats = doc.get('classification_categories')
    if not isinstance(cats, Mapping) or not cats:
        raise InputError(f'{source}: no "classification_categories" (run '
                         'merge_classification_detection_output on it first)')
    if not all(isinstance(k, str) and isinstance(v, str) and v for k, v in cats.items()):
        raise InputError(f'{source}: "classification_categories" must map ids to names')
    if merged_with_relative_conf(doc):
        raise InputError(f'{source}: merged with --relative-conf (its confidences are '
                         'differences from the true label\'s, not probabilities); merge '
                         'without it to combine sequences')
    own = {k: v for k, v in cats.items() if category_kind(k) == 'classifier'}
    if not own:
        raise InputError(f'{source}: no classifier categories (ids below {LABEL_ID_OFFSET}), '
                         'only true labels or taxa: nothing to combine')
    names = list(own.values())
    clash = sorted({n for n in names if names.count(n) > 1} | (set(names) & set(CSV_COLUMNS)))
    if clash and csv_columns:       # the names become columns of the sequence CSV
        raise InputError(f'{source}: classification category name {clash[0]!r} is used twice '
                         'or names a column of the sequence CSV; rename it')
    return sorted(own.items(),
                  key=lambda kv: (not kv[0].isdigit(), int(kv[0]) if kv[0].isdigit() else 0,
                                  kv[0]))


def _vector(det: Mapping[str, Any], index: Mapping[str, int], others: Collection[str],
            where: str) -> np.ndarray:
    """A detection's classifier confidences over ``index``; entries of ``others``
    (true labels, taxa) are checked and left out."""
    lst = det['classifications']
    if not isinstance(lst, list):
        raise InputError(f'{where}: "classifications" must be a list of [category, confidence]')
    vec = np.zeros(len(index))
    for item in lst:
        if (not isinstance(item, list) or len(item) != 2
                or (str(item[0]) not in index and str(item[0]) not in others)
                or isinstance(item[1], bool) or not isinstance(item[1], (int, float))
                or not 0 <= item[1] <= 1):
            raise InputError(f'{where}: classification {str(item)[:60]} is not [a category of '
                             'classification_categories, a confidence from 0 to 1]')
        k = index.get(str(item[0]))
        if k is not None:
            vec[k] = max(vec[k], float(item[1]))
    return vec


def _other_categories(doc: Mapping[str, Any]) -> frozenset[str]:
    """Ids of the categories that are not the classifier's (true labels, taxa)."""
    return frozenset(k for k in doc['classification_categories']
                     if category_kind(k) != 'classifier')


def combined_detections(img: Mapping[str, Any], animals: set[str], threshold: float
                        ) -> list[int]:
    """Indices of an image's detections that a sequence combines."""
    return [j for j, d in enumerate(img.get('detections') or [])
            if str(d.get('category')) in animals and d.get('conf', 0) >= threshold
            and 'classifications' in d]


def combine(doc: Mapping[str, Any], grouping: Grouping, threshold: float, source: str,
            csv_columns: bool = True) -> list[SequenceResult]:
    """Each sequence's mean classification (see the module docstring), in the
    order of ``grouping`` (over ``category_order(doc, source, csv_columns)``).
    ``doc`` is a checked detections document with classifications; every photo of
    ``grouping`` must be one of its images. Raises InputError for a malformed
    classification, naming photo and box."""
    cats = category_order(doc, source, csv_columns)
    index = {k: i for i, (k, _) in enumerate(cats)}
    others = _other_categories(doc)
    animals = animal_category_ids(doc)
    by_file = {same_file(img['file']): img for img in doc['images']}
    results = []
    for seq in grouping.sequences:
        vectors, weights = [], []
        for file in seq.files:
            img = by_file[same_file(file)]
            for j in combined_detections(img, animals, threshold):
                vectors.append(_vector(img['detections'][j], index, others,
                                       f'{source}: {file}: detection {j}'))
                weights.append(float(img['detections'][j]['conf']))
        probs = None
        if vectors:
            # all weights are at least the threshold; a threshold of 0 may leave none above 0
            w = np.asarray(weights) if sum(weights) > 0 else np.ones(len(weights))
            probs = tuple(float(p) for p in np.average(vectors, axis=0, weights=w))
        results.append(SequenceResult(seq, len(vectors), probs))
    return results


def _time_text(when: dt.datetime | None) -> str:
    return '' if when is None else when.strftime(TIME_FORMAT)


def results_table(results: Sequence[SequenceResult], categories: Sequence[tuple[str, str]]
                  ) -> pd.DataFrame:
    """The per-sequence CSV: CSV_COLUMNS, then one column per category name (the
    combined probabilities; blank for a sequence without animal detections)."""
    names = [name for _, name in categories]
    rows = []
    for r in results:
        s, top = r.sequence, r.top()
        row: dict[str, Any] = {
            'seq_id': s.seq_id, 'camera': s.camera, 'first_file': s.files[0],
            'last_file': s.files[-1], 'start_time': _time_text(s.start),
            'end_time': _time_text(s.end), 'photos': len(s.files), 'detections': r.detections,
            'top_label': '' if top is None else names[top],
            'top_probability': math.nan if top is None or r.probs is None else r.probs[top]}
        row.update(zip(names, r.probs or [math.nan] * len(names), strict=True))
        rows.append(row)
    return pd.DataFrame(rows, columns=[*CSV_COLUMNS, *names])


def classification_list(probs: Sequence[float], categories: Sequence[tuple[str, str]]
                        ) -> list[list[Any]]:
    """``[[category id, confidence], ...]`` as Timelapse reads it: highest first,
    rounded to 4 places, zeros left out."""
    order = sorted(range(len(probs)), key=lambda i: (-probs[i], i))
    return [[categories[i][0], round(probs[i], 4)] for i in order if round(probs[i], 4) > 0]


def smoothed_document(doc: Mapping[str, Any], results: Sequence[SequenceResult],
                      threshold: float, settings: Mapping[str, Any], source: str
                      ) -> dict[str, Any]:
    """A copy of ``doc`` in which every detection that a sequence combined carries
    the sequence's classification list instead of its own; other detections and
    fields are kept. A combined detection keeps its true-label entries (after the
    sequence's list) and loses its rollup taxa (they answered its own
    classification). ``info.sequence_smoothing`` records ``settings``, the
    number of sequences, the number of taxon entries dropped (when there were
    any) and the time."""
    cats = category_order(doc, source)
    animals = animal_category_ids(doc)
    lists: dict[str, list[list[Any]]] = {}
    for r in results:
        if r.probs is not None:
            combined = classification_list(r.probs, cats)
            for f in r.sequence.files:
                lists[same_file(f)] = combined
    images = []
    dropped = 0
    for img in doc['images']:
        own = lists.get(same_file(img['file']))
        idx = combined_detections(img, animals, threshold) if own is not None else []
        if own is None or not idx:
            images.append(img)
            continue
        dets = [dict(d) for d in img['detections']]
        for j in idx:
            kinds = [category_kind(str(item[0])) for item in dets[j]['classifications']]
            dropped += kinds.count('taxon')
            labels = [list(item) for item, kind in zip(dets[j]['classifications'], kinds,
                                                       strict=True) if kind == 'label']
            dets[j]['classifications'] = [list(item) for item in own] + labels
        images.append({**img, 'detections': dets})
    info = dict(doc.get('info') or {})
    smoothing = {**settings, 'sequences': len(results)}
    if dropped:
        smoothing['rollup_entries_dropped'] = dropped
    info['sequence_smoothing'] = {**smoothing,
                                  'completion_time': time.strftime('%Y-%m-%d %H:%M:%S')}
    return {**doc, 'info': info, 'images': images}
