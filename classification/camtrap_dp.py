"""Camtrap DP 1.0 data packages from the pipeline's results.

Camtrap DP (camtrap-dp.tdwg.org) is the TDWG exchange standard for camera-trap
data that GBIF and the camera-trap platforms import: a Frictionless Data
Package of ``datapackage.json`` (project metadata) and three CSV tables,
``deployments.csv`` (one row per camera placement), ``media.csv`` (one row per
photo) and ``observations.csv`` (what was seen). This module turns a Timelapse
JSON written by merge_classification_detection_output (MegaDetector boxes with
``classifications``) plus the photos' EXIF times and a small deployments CSV
into such a package.

Observations are at media level (``observationLevel`` = ``media``): one per
detection box of at least the detection threshold, with its box
(MegaDetector's normalized top-left ``[x, y, width, height]`` is Camtrap DP's
``bboxX``/``bboxY``/``bboxWidth``/``bboxHeight``, clipped to the photo), and
one ``blank`` observation for a photo with no box above the threshold. An
animal box takes its classifier's answer as ``scientificName``, with
``classificationMethod`` ``machine``, ``classifiedBy`` the classifier's name
and ``classificationProbability`` its confidence: the taxon merge's rollup put
in its list (category ``2000000 + k``, ``taxon: <name>``, with the summed
probability), else the top class (through the taxonomy CSV when given; not the
``label: ...`` categories ``1000000 + i`` that merge --label adds). Other boxes
(person, vehicle, animals without a classification) are the detector's, with
the detector's name and confidence. A file merged with --relative-conf
(``info.classifier_metadata.relative_conf``) is refused: its confidences are
differences, not probabilities.

Event-level observations (on request, ``build_package(events=...)``): an event
is a sequence of photos (the burst a camera trap takes each time it fires, as
classify_sequences groups them). Each event gets ``observationLevel`` =
``event`` observations, mutually exclusive so that counts can be summed: one
``animal`` observation when any of its photos has an animal box of at least
the threshold (``scientificName`` and ``classificationProbability`` from the
event's combined classification, the classifier's top class; ``count`` the
most animal boxes in one of its photos), one ``human`` (with such a count),
one ``vehicle`` and one ``unknown`` (a box of another detector category;
neither with a count), and one ``blank`` when none of its photos has a box.
``eventStart``/``eventEnd`` are its first and last exported photo's times;
its media-level observations carry its ``eventID``. An event's photos must
all belong to one deployment.

The deployments CSV (UTF-8, a header row) maps photo folders to deployments:

    folder,deploymentID,latitude,longitude[,locationID][,locationName]
        [,deploymentStart][,deploymentEnd][,cameraID][,cameraModel]
        [,coordinateUncertainty]

``folder`` is a folder of the photos (relative to the photos folder, ``/``
separated; ``.`` for all): a photo belongs to the deployment of the longest
folder that holds it. Latitude and longitude are WGS84 decimal degrees. Start
and end are ISO 8601 with a time zone (``2024-05-01T12:00:00+02:00``); left
out, they are the times of the deployment's first and last photo; a photo
taken outside a given start or end is left out (a per-photo failure).

``media.filePath`` is the photo's path under the photos folder, prefixed with
``ExportSettings.media_root`` when given (a URL, or a folder relative to where
the package will sit): Camtrap DP reads a relative path as one inside the
package folder.
"""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import logging
import math
import os
import posixpath
import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from classification import utils
from detection.detector_output import category_kind, merged_with_relative_conf, same_file

logger = logging.getLogger(__name__)

VERSION = '1.0'
BASE_URL = f'https://raw.githubusercontent.com/tdwg/camtrap-dp/{VERSION}'
PROFILE_URL = f'{BASE_URL}/camtrap-dp-profile.json'
TABLES = ('deployments', 'media', 'observations')
STEP = 'export_camtrap_dp'

# merge --rollup-threshold puts a rolled-up taxon (detector_output.TAXON_ID_OFFSET
# and up) first in the list of a detection whose top label fell short
TAXON_PREFIX = 'taxon: '

# the columns each table is written with, in the standard's order
DEPLOYMENT_FIELDS = (
    'deploymentID', 'locationID', 'locationName', 'latitude', 'longitude',
    'coordinateUncertainty', 'deploymentStart', 'deploymentEnd', 'setupBy', 'cameraID',
    'cameraModel', 'cameraDelay', 'cameraHeight', 'cameraDepth', 'cameraTilt',
    'cameraHeading', 'detectionDistance', 'timestampIssues', 'baitUse', 'featureType',
    'habitat', 'deploymentGroups', 'deploymentTags', 'deploymentComments')
MEDIA_FIELDS = (
    'mediaID', 'deploymentID', 'captureMethod', 'timestamp', 'filePath', 'filePublic',
    'fileName', 'fileMediatype', 'exifData', 'favorite', 'mediaComments')
OBSERVATION_FIELDS = (
    'observationID', 'deploymentID', 'mediaID', 'eventID', 'eventStart', 'eventEnd',
    'observationLevel', 'observationType', 'cameraSetupType', 'scientificName', 'count',
    'lifeStage', 'sex', 'behavior', 'individualID', 'individualPositionRadius',
    'individualPositionAngle', 'individualSpeed', 'bboxX', 'bboxY', 'bboxWidth',
    'bboxHeight', 'classificationMethod', 'classifiedBy', 'classificationTimestamp',
    'classificationProbability', 'observationTags', 'observationComments')
TABLE_FIELDS = {'deployments': DEPLOYMENT_FIELDS, 'media': MEDIA_FIELDS,
                'observations': OBSERVATION_FIELDS}

# the deployments CSV a user writes
REQUIRED_COLUMNS = ('folder', 'deploymentID', 'latitude', 'longitude')
OPTIONAL_COLUMNS = ('locationID', 'locationName', 'deploymentStart', 'deploymentEnd',
                    'cameraID', 'cameraModel', 'coordinateUncertainty')
TAXONOMY_COLUMNS = ('label', 'scientificName')
TAXONOMY_OPTIONAL = ('taxonRank', 'vernacularName')
TAXON_RANKS = ('kingdom', 'phylum', 'class', 'order', 'family', 'genus', 'species',
               'subspecies')

MEDIATYPES = {'.jpg': 'image/jpeg', '.jpeg': 'image/jpeg', '.png': 'image/png',
              '.tif': 'image/tiff', '.tiff': 'image/tiff', '.bmp': 'image/bmp',
              '.gif': 'image/gif', '.webp': 'image/webp'}
# detector category names (lower case) and the observationType they become
OBSERVATION_TYPES = {'animal': 'animal', 'person': 'human', 'human': 'human',
                     'vehicle': 'vehicle'}
OFFSET_RE = re.compile(r'^(Z|[+-](0\d|1[0-4]):[0-5]\d)$')
# ISO 8601 with a time zone, as Camtrap DP writes its times
TIME_RE = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)$')
URL_RE = re.compile(r'^[A-Za-z][A-Za-z0-9+.-]*://[^/\s]')


class SamplingDesign(str, Enum):
    SIMPLE_RANDOM = 'simpleRandom'
    SYSTEMATIC_RANDOM = 'systematicRandom'
    CLUSTERED_RANDOM = 'clusteredRandom'
    EXPERIMENTAL = 'experimental'
    TARGETED = 'targeted'
    OPPORTUNISTIC = 'opportunistic'


class CaptureMethod(str, Enum):
    ACTIVITY_DETECTION = 'activityDetection'
    TIME_LAPSE = 'timeLapse'


@dataclass(frozen=True)
class Deployment:
    """One row of the deployments CSV."""
    folder: tuple[str, ...]       # path parts; () is the whole photos folder
    deployment_id: str
    latitude: float
    longitude: float
    location_id: str = ''
    location_name: str = ''
    start: dt.datetime | None = None     # aware
    end: dt.datetime | None = None
    camera_id: str = ''
    camera_model: str = ''
    coordinate_uncertainty: int | None = None


@dataclass(frozen=True)
class Taxon:
    scientific_name: str
    rank: str = ''
    vernacular_name: str = ''


@dataclass(frozen=True)
class ExportSettings:
    """What a package says about its project (the profile requires it)."""
    title: str
    contributor: str
    utc_offset: str = 'Z'            # of the cameras' clocks: 'Z' or '+hh:mm'
    threshold: float = 0.2           # detection confidence for an observation
    sampling_design: SamplingDesign = SamplingDesign.OPPORTUNISTIC
    capture_method: CaptureMethod = CaptureMethod.ACTIVITY_DETECTION
    license: str | None = None       # an Open Definition id, e.g. CC-BY-4.0
    classified_by: str | None = None  # instead of info.classifier
    media_root: str | None = None    # filePath prefix: a URL or a relative folder
    created: dt.datetime | None = None  # default: now (UTC)


@dataclass(frozen=True)
class Event:
    """A sequence of photos for event-level observations: its photos (the
    detections JSON's ``file`` values) and its combined classification, the
    classifier category id and probability (None: no animal box to combine)."""
    event_id: str
    files: tuple[str, ...]
    category: str | None = None
    probability: float | None = None


@dataclass
class Package:
    """A package in memory: the descriptor and the rows of each table."""
    descriptor: dict[str, Any]
    tables: dict[str, list[dict[str, str]]]
    failures: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------- readers

def _tz(offset: str) -> dt.timezone:
    if offset == 'Z':
        return dt.timezone.utc
    sign = -1 if offset[0] == '-' else 1
    return dt.timezone(sign * dt.timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])))


def check_utc_offset(text: str) -> str:
    """'Z' or '+hh:mm' / '-hh:mm' (the offset of the cameras' clocks)."""
    if not OFFSET_RE.match(text):
        raise utils.InputError(f'{text!r}: a UTC offset is Z, +hh:mm or -hh:mm '
                               '(e.g. +02:00)')
    return text


def parse_time(text: str, where: str) -> dt.datetime:
    """An ISO 8601 date-time with a time zone (what Camtrap DP requires)."""
    try:
        value = dt.datetime.fromisoformat(text.strip().replace('Z', '+00:00'))
    except ValueError as e:
        raise utils.InputError(f'{where}: {text!r} is not an ISO 8601 date-time '
                               '(YYYY-MM-DDThh:mm:ss+hh:mm)') from e
    if value.tzinfo is None or value.utcoffset() is None:
        raise utils.InputError(f'{where}: {text!r} has no time zone (add Z or +hh:mm)')
    return value


def format_time(value: dt.datetime) -> str:
    """``YYYY-MM-DDThh:mm:ss`` with ``Z`` or ``±hh:mm`` (whole seconds)."""
    text = value.replace(microsecond=0).isoformat()
    return text[:-6] + 'Z' if text.endswith('+00:00') else text


def folder_parts(text: str, where: str) -> tuple[str, ...]:
    """A photo folder as path parts; '.' (or '') is the whole photos folder."""
    rel = text.strip().replace('\\', '/')
    if rel in ('', '.', './'):
        return ()
    utils.safe_join('.', rel)     # refuses absolute paths, '..' and control characters
    return tuple(p for p in rel.split('/') if p not in ('', '.'))


def _number(text: str, where: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not low <= value <= high:
        raise utils.InputError(f'{where}: {text!r} is not a number from {low:g} to {high:g}')
    return value


def _csv_rows(text: str, source: str, required: Sequence[str], optional: Sequence[str]
              ) -> list[tuple[int, dict[str, str]]]:
    """The rows of a small CSV a person writes: a header with the required columns,
    no unknown or repeated column, no row longer than the header."""
    reader = csv.reader(io.StringIO(text.lstrip('\ufeff'), newline=''))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise utils.InputError(f'{source}: empty file; expected a header row '
                               f'({",".join(required)})') from None
    except csv.Error as e:
        raise utils.InputError(f'{source}: not a CSV file ({e})') from e
    missing = [c for c in required if c not in header]
    if missing:
        raise utils.InputError(f'{source}: missing column(s) {", ".join(missing)} '
                               f'(needs {",".join(required)})')
    unknown = [c for c in header if c not in required and c not in optional]
    if unknown:
        raise utils.InputError(f'{source}: unknown column {unknown[0]!r} (known: '
                               f'{", ".join((*required, *optional))})')
    if len(set(header)) != len(header):
        raise utils.InputError(f'{source}: a column is named twice')
    rows = []
    try:
        for n, cells in enumerate(reader, start=2):
            if not any(c.strip() for c in cells):
                continue
            if len(cells) > len(header):
                raise utils.InputError(f'{source}: line {n} has {len(cells)} cells, the '
                                       f'header {len(header)}')
            cells = cells + [''] * (len(header) - len(cells))
            rows.append((n, {h: c.strip() for h, c in zip(header, cells, strict=True)}))
    except csv.Error as e:
        raise utils.InputError(f'{source}: not a CSV file ({e})') from e
    if not rows:
        raise utils.InputError(f'{source}: no rows under the header')
    return rows


def parse_deployments(text: str, source: str = 'deployments CSV') -> list[Deployment]:
    """The deployments CSV (module docstring), checked: InputError naming the line
    and the cell for anything wrong."""
    out: list[Deployment] = []
    ids: set[str] = set()
    folders: set[tuple[str, ...]] = set()
    for n, row in _csv_rows(text, source, REQUIRED_COLUMNS, OPTIONAL_COLUMNS):
        where = f'{source}: line {n}'
        dep_id = row['deploymentID']
        if not dep_id:
            raise utils.InputError(f'{where}: empty deploymentID')
        if dep_id in ids:
            raise utils.InputError(f'{where}: deploymentID {dep_id!r} is given twice')
        folder = folder_parts(row['folder'], f'{where}: folder')
        if folder in folders:
            raise utils.InputError(f'{where}: folder {row["folder"]!r} is given twice')
        lat = _number(row['latitude'], f'{where}: latitude', -90, 90)
        lon = _number(row['longitude'], f'{where}: longitude', -180, 180)
        start = (parse_time(row['deploymentStart'], f'{where}: deploymentStart')
                 if row.get('deploymentStart') else None)
        end = (parse_time(row['deploymentEnd'], f'{where}: deploymentEnd')
               if row.get('deploymentEnd') else None)
        if start is not None and end is not None and end < start:
            raise utils.InputError(f'{where}: deploymentEnd is before deploymentStart')
        uncertainty = None
        if row.get('coordinateUncertainty'):
            text_u = row['coordinateUncertainty']
            if not re.fullmatch(r'[0-9]+', text_u) or int(text_u) < 1:
                raise utils.InputError(f'{where}: coordinateUncertainty {text_u!r} is not a '
                                       'whole number of meters, at least 1')
            uncertainty = int(text_u)
        ids.add(dep_id)
        folders.add(folder)
        out.append(Deployment(folder, dep_id, lat, lon, row.get('locationID', ''),
                              row.get('locationName', ''), start, end,
                              row.get('cameraID', ''), row.get('cameraModel', ''),
                              uncertainty))
    return out


def read_deployments(path: str | os.PathLike[str]) -> list[Deployment]:
    with utils.open_input_text(path) as f:
        return parse_deployments(f.read(), str(path))


def parse_taxonomy(text: str, source: str = 'taxonomy CSV') -> dict[str, Taxon]:
    """``label,scientificName[,taxonRank][,vernacularName]``: {classifier label: taxon}."""
    out: dict[str, Taxon] = {}
    for n, row in _csv_rows(text, source, TAXONOMY_COLUMNS, TAXONOMY_OPTIONAL):
        where = f'{source}: line {n}'
        if not row['label'] or not row['scientificName']:
            raise utils.InputError(f'{where}: empty label or scientificName')
        if row['label'] in out:
            raise utils.InputError(f'{where}: label {row["label"]!r} is given twice')
        rank = row.get('taxonRank', '')
        if rank and rank not in TAXON_RANKS:
            raise utils.InputError(f'{where}: taxonRank {rank!r} is not one of '
                                   f'{", ".join(TAXON_RANKS)}')
        out[row['label']] = Taxon(row['scientificName'], rank, row.get('vernacularName', ''))
    return out


def read_taxonomy(path: str | os.PathLike[str]) -> dict[str, Taxon]:
    with utils.open_input_text(path) as f:
        return parse_taxonomy(f.read(), str(path))


def check_media_root(text: str) -> str:
    """The --media-root prefix of ``media.filePath``: a URL (``scheme://host/...``)
    or a relative folder (``/`` separated, ``..`` allowed: relative to where the
    package folder will sit); '' for none. An absolute local path is refused: it
    would not survive the package being moved or published."""
    root = text.strip()
    if URL_RE.match(root):
        return root.rstrip('/')
    root = root.replace('\\', '/')
    if root.startswith('/') or re.match(r'^[A-Za-z]:', root) or '://' in root:
        raise utils.InputError(f'--media-root {text!r}: give a URL (https://...) or a folder '
                               'relative to where the package will sit, not an absolute path')
    if any(ord(c) < 32 for c in root):
        raise utils.InputError(f'--media-root {text!r}: has control characters')
    root = posixpath.normpath(root) if root else ''
    return '' if root == '.' else root


def media_file_path(file: str, media_root: str | None = None) -> str:
    """``media.filePath`` of the photo ``file`` (relative to the photos folder):
    under ``media_root`` (checked by check_media_root) when given, URL-quoted
    under a URL."""
    rel = same_file(file)
    if not media_root:
        return rel
    if URL_RE.match(media_root):
        return f'{media_root}/{urllib.parse.quote(rel, safe="/")}'
    return posixpath.join(media_root, rel)


def check_document(doc: Mapping[str, Any], source: str = 'detections JSON') -> None:
    """Refuses a Timelapse JSON whose confidences are not probabilities: one merged
    with --relative-conf (``info.classifier_metadata.relative_conf``), whose
    entries are the classes that beat the given label and by how much."""
    if merged_with_relative_conf(doc):
        raise utils.InputError(
            f'{source}: merged with --relative-conf (info.classifier_metadata.relative_conf): '
            'its classifications are the classes that beat the given label and by how '
            'much, not probabilities; export a file merged without --relative-conf')


# ---------------------------------------------------------------- building

def deployment_of(file: str, deployments: Sequence[Deployment]) -> Deployment | None:
    """The deployment whose folder is the longest one holding ``file``."""
    parts = tuple(p for p in same_file(file).split('/')
                  if p not in ('', '.'))
    best: Deployment | None = None
    for dep in deployments:
        if parts[:len(dep.folder)] == dep.folder and len(dep.folder) < len(parts):
            if best is None or len(dep.folder) > len(best.folder):
                best = dep
    return best


def media_id(file: str) -> str:
    """A stable identifier of a photo (the same file gets the same id every run)."""
    return 'm' + hashlib.sha256(file.encode('utf-8')).hexdigest()[:16]


def _num(value: float) -> str:
    """A number as the CSV writes it: at most 6 decimals, no trailing zeros."""
    text = f'{value:.6f}'.rstrip('0').rstrip('.')
    return '0' if text in ('', '-0') else text


def camtrap_bbox(bbox: Sequence[float]) -> tuple[float, float, float, float] | None:
    """MegaDetector's normalized ``[x_min, y_min, width, height]`` (origin at the top
    left, as in Camtrap DP) clipped to the photo; None for a box with no area left."""
    x, y, w, h = (float(v) for v in bbox)
    x0, y0 = min(max(x, 0.0), 1.0), min(max(y, 0.0), 1.0)
    x1, y1 = min(max(x + w, 0.0), 1.0), min(max(y + h, 0.0), 1.0)
    # rounded as written, so that x + width stays within 1 in the CSV too
    bx, by = round(x0, 6), round(y0, 6)
    bw, bh = round(min(x1 - x0, 1.0 - bx), 6), round(min(y1 - y0, 1.0 - by), 6)
    if bw <= 0 or bh <= 0:
        return None
    return bx, by, bw, bh


@dataclass(frozen=True)
class Answer:
    """The classifier's answer for one detection."""
    category: str       # its classification category id
    confidence: float
    rolled_up: bool     # a taxon of merge's rollup (else a classifier label)


def classifier_answer(det: Mapping[str, Any], source: str, file: str) -> Answer | None:
    """A detection's answer: the rolled-up taxon (id >= 2000000) when merge put one
    in its list, else the most confident classifier label, leaving out merge
    --label's true-label entries (ids 1000000 to 1999999); None when there is none."""
    best: Answer | None = None
    for entry in det.get('classifications') or []:
        if (not isinstance(entry, list) or len(entry) != 2
                or isinstance(entry[1], bool) or not isinstance(entry[1], (int, float))):
            raise utils.InputError(f'{source}: {file}: a classification is not '
                                   '[category id, confidence]')
        cat, conf = str(entry[0]), float(entry[1])
        if not (math.isfinite(conf) and 0 <= conf <= 1 + 1e-6):
            raise utils.InputError(f'{source}: {file}: classification confidence {conf!r} '
                                   'is not from 0 to 1')
        conf = min(conf, 1.0)       # a rolled-up sum may round just above 1
        kind = category_kind(cat)
        if kind == 'taxon':
            return Answer(cat, conf, True)
        if kind == 'label':         # a person's label, not the classifier's
            continue
        if best is None or conf > best.confidence:
            best = Answer(cat, conf, False)
    return best


def taxon_name(category_name: str) -> str:
    """The taxon of a rollup category name (``taxon: canidae`` -> ``canidae``)."""
    name = category_name.strip()
    if name.startswith(TAXON_PREFIX):
        name = name[len(TAXON_PREFIX):].strip()
    return name


def rollup_taxon(name: str, taxonomy: Mapping[str, Taxon]) -> Taxon:
    """A rolled-up taxon as written: the taxonomy CSV's row for it (its ``label``
    the taxon's name, or its ``scientificName`` the same up to case) gives the
    scientific name, rank and vernacular name; otherwise the name alone (no rank)."""
    if name in taxonomy:
        return taxonomy[name]
    for taxon in taxonomy.values():
        if taxon.scientific_name.casefold() == name.casefold():
            return taxon
    return Taxon(name)


def deployment_bounds(dep: Deployment, stamps: Sequence[dt.datetime]
                      ) -> tuple[dt.datetime, dt.datetime] | None:
    """A deployment's start and end: the CSV's, a missing one filled in with the
    time of its first or last photo; None when a bound is neither given nor has a
    photo. InputError when the end would fall before the start."""
    start = dep.start or (min(stamps) if stamps else None)
    end = dep.end or (max(stamps) if stamps else None)
    if start is None or end is None:
        return None
    if end < start:
        raise utils.InputError(
            f'deployment {dep.deployment_id}: deploymentEnd {format_time(end)} would be '
            f'before deploymentStart {format_time(start)}; check the deployments CSV, '
            '--utc-offset and the camera clock')
    return start, end


@dataclass(frozen=True)
class _Placed:
    """Where and when an exported photo was taken, and its media type."""
    deployment: Deployment
    stamp: dt.datetime          # aware: the camera clock at --utc-offset
    mediatype: str


def place_photo(img: Mapping[str, Any], times: Mapping[str, dt.datetime | None],
                deployments: Sequence[Deployment], tz: dt.tzinfo) -> _Placed | str:
    """A photo of the detections JSON placed for the package, or why it is left out."""
    file = img['file']
    if img.get('failure'):
        return f'detector failure: {img["failure"]}'
    dep = deployment_of(file, deployments)
    if dep is None:
        return 'in no folder of the deployments CSV'
    naive = times.get(file)
    if naive is None:
        return 'no photo time (file missing or unreadable, or no EXIF DateTimeOriginal/DateTime)'
    mediatype = MEDIATYPES.get(posixpath.splitext(file)[1].lower())
    if mediatype is None:
        return 'not a photo type Camtrap DP media are written for'
    stamp = naive.replace(tzinfo=tz)
    if (dep.start is not None and stamp < dep.start) or (
            dep.end is not None and stamp > dep.end):
        return (f'outside its deployment: taken {format_time(stamp)}, deployment '
                f'{dep.deployment_id} runs from '
                f'{format_time(dep.start) if dep.start else "its first photo"} to '
                f'{format_time(dep.end) if dep.end else "its last photo"} (check '
                '--utc-offset, the camera clock and the deployments CSV)')
    return _Placed(dep, stamp, mediatype)


def exported_images(doc: Mapping[str, Any], times: Mapping[str, dt.datetime | None],
                    deployments: Sequence[Deployment], utc_offset: str
                    ) -> list[dict[str, Any]]:
    """The images of ``doc`` that a package built from the same inputs exports
    (for grouping them into events first)."""
    tz = _tz(check_utc_offset(utc_offset))
    return [img for img in doc['images']
            if isinstance(place_photo(img, times, deployments, tz), _Placed)]


def _blank_row(fields: Sequence[str]) -> dict[str, str]:
    return dict.fromkeys(fields, '')


@dataclass(frozen=True)
class _Exported:
    """What event-level observations need of an exported photo."""
    stamp: dt.datetime
    deployment_id: str
    boxes: Mapping[str, int]        # observationType -> boxes of at least the threshold


def _event_index(events: Sequence[Event], source: str) -> dict[str, str]:
    """Each photo's event id; InputError for a repeated event id or a photo in
    two events."""
    index: dict[str, str] = {}
    ids: set[str] = set()
    for event in events:
        if not event.event_id or event.event_id in ids:
            raise utils.InputError(f'{source}: event id {event.event_id!r} is empty or '
                                   'given twice')
        ids.add(event.event_id)
        for file in event.files:
            key = same_file(file)
            if key in index:
                raise utils.InputError(f'{source}: {file} is in two events ({index[key]} and '
                                       f'{event.event_id})')
            index[key] = event.event_id
    return index


def _event_rows(event: Event, exported: Mapping[str, _Exported], detector: str,
                classifier: str, taxon: Taxon | None) -> list[dict[str, str]]:
    """The event-level observations of one event (see the module docstring)."""
    photos = [exported[k] for k in (same_file(f) for f in event.files) if k in exported]
    if not photos:
        return []
    deps = sorted({p.deployment_id for p in photos})
    if len(deps) > 1:
        raise utils.InputError(f'event {event.event_id}: its photos are in deployments '
                               f'{deps[0]} and {deps[1]}; a sequence is one camera\'s (check '
                               'the sequences and the deployments CSV)')
    base = {**_blank_row(OBSERVATION_FIELDS), 'deploymentID': deps[0],
            'eventID': event.event_id, 'observationLevel': 'event',
            'eventStart': format_time(min(p.stamp for p in photos)),
            'eventEnd': format_time(max(p.stamp for p in photos)),
            'classificationMethod': 'machine', 'classifiedBy': detector}
    rows = []
    for kind in ('animal', 'human', 'vehicle', 'unknown'):
        most = max(p.boxes.get(kind, 0) for p in photos)
        if not most:
            continue
        row = {**base, 'observationID': f'{event.event_id}:{kind}', 'observationType': kind}
        if kind in ('animal', 'human'):
            row['count'] = str(most)
        if kind == 'animal' and taxon is not None and event.probability is not None:
            row.update({'scientificName': taxon.scientific_name, 'classifiedBy': classifier,
                        'classificationProbability': _num(min(event.probability, 1.0))})
        rows.append(row)
    if not rows:
        rows.append({**base, 'observationID': f'{event.event_id}:blank',
                     'observationType': 'blank'})
    return rows


def build_package(doc: Mapping[str, Any], times: Mapping[str, dt.datetime | None],
                  deployments: Sequence[Deployment], settings: ExportSettings,
                  taxonomy: Mapping[str, Taxon] | None = None, source: str = 'detections JSON',
                  events: Sequence[Event] | None = None) -> Package:
    """The package of a checked Timelapse JSON ``doc``: ``times`` holds each photo's
    (naive, camera clock) time or None. Photos with no time, no deployment, a
    detector failure or an unknown file type are left out and listed in
    ``failures``, and so are photos taken outside their deployment's given start
    or end. With ``events`` (each photo in at most one), event-level observations
    are added (see the module docstring); an event without exported photos gets
    none. Raises InputError when nothing is left or the inputs disagree."""
    check_document(doc, source)
    tz = _tz(check_utc_offset(settings.utc_offset))
    media_root = check_media_root(settings.media_root or '')
    det_cats = {str(k): str(v) for k, v in
                (doc.get('detection_categories') or {'1': 'animal', '2': 'person',
                                                     '3': 'vehicle'}).items()}
    cls_cats = {str(k): str(v) for k, v in (doc.get('classification_categories') or {}).items()}
    info = doc.get('info')
    info = info if isinstance(info, dict) else {}
    detector = str(info.get('detector') or 'MegaDetector')
    classifier = settings.classified_by or str(info.get('classifier') or 'classifier')
    taxonomy = taxonomy or {}
    written_labels: set[str] = set()
    failures: dict[str, str] = {}
    media: list[dict[str, str]] = []
    observations: list[dict[str, str]] = []
    dep_times: dict[str, list[dt.datetime]] = {}
    taxa: dict[str, Taxon] = {}
    unknown_labels: set[str] = set()
    seen_ids: dict[str, str] = {}
    event_of = _event_index(events or (), source)
    exported: dict[str, _Exported] = {}

    def taxon_of(label: str, rolled_up: bool) -> Taxon:
        """The taxon written for a classification category name (and noted for
        the descriptor's taxonomic coverage)."""
        if rolled_up:
            taxon = rollup_taxon(taxon_name(label), taxonomy)
        else:
            found = taxonomy.get(label)
            if found is None:
                unknown_labels.add(label)
                found = Taxon(label)
            taxon = found
            written_labels.add(label)
        known = taxa.get(taxon.scientific_name)
        if known is None or (taxon.rank and not known.rank):
            taxa[taxon.scientific_name] = taxon
        return taxon

    for img in doc['images']:
        file = img['file']
        placed = place_photo(img, times, deployments, tz)
        if isinstance(placed, str):
            failures[file] = placed
            continue
        dep, stamp, mediatype = placed.deployment, placed.stamp, placed.mediatype
        when = format_time(stamp)
        mid = media_id(file)
        if mid in seen_ids:     # two paths hashing alike: keep the ids unique
            raise utils.InputError(f'{source}: {file} and {seen_ids[mid]} get the same '
                                   'mediaID')
        seen_ids[mid] = file
        dep_times.setdefault(dep.deployment_id, []).append(stamp)
        media.append({**_blank_row(MEDIA_FIELDS), 'mediaID': mid,
                      'deploymentID': dep.deployment_id,
                      'captureMethod': settings.capture_method.value, 'timestamp': when,
                      'filePath': media_file_path(file, media_root),
                      'filePublic': 'false', 'fileName': posixpath.basename(file),
                      'fileMediatype': mediatype})
        base = {**_blank_row(OBSERVATION_FIELDS), 'deploymentID': dep.deployment_id,
                'mediaID': mid, 'eventStart': when, 'eventEnd': when,
                'eventID': event_of.get(same_file(file), ''),
                'observationLevel': 'media', 'classificationMethod': 'machine'}
        boxes = 0
        per_type: dict[str, int] = {}
        for idx, det in enumerate(img.get('detections') or []):
            if det['conf'] < settings.threshold:
                continue
            cat_name = det_cats.get(str(det['category']), '').lower()
            row = {**base, 'observationID': f'{mid}-{idx}',
                   'observationType': OBSERVATION_TYPES.get(cat_name, 'unknown'),
                   'classifiedBy': detector,
                   'classificationProbability': _num(float(det['conf']))}
            box = camtrap_bbox(det['bbox'])
            if box is not None:
                row.update(zip(('bboxX', 'bboxY', 'bboxWidth', 'bboxHeight'),
                               map(_num, box), strict=True))
            if row['observationType'] in ('animal', 'human'):
                row['count'] = '1'
            top = classifier_answer(det, source, file) if cat_name == 'animal' else None
            if top is not None:
                label = cls_cats.get(top.category)
                if label is None:
                    raise utils.InputError(f'{source}: {file}: classification category '
                                           f'{top.category!r} is not in '
                                           'classification_categories')
                taxon = taxon_of(label, top.rolled_up)
                row.update({'scientificName': taxon.scientific_name, 'classifiedBy': classifier,
                            'classificationProbability': _num(top.confidence)})
            observations.append(row)
            boxes += 1
            per_type[row['observationType']] = per_type.get(row['observationType'], 0) + 1
        if boxes == 0:
            observations.append({**base, 'observationID': f'{mid}-blank',
                                 'observationType': 'blank', 'classifiedBy': detector})
        exported[same_file(file)] = _Exported(stamp, dep.deployment_id, per_type)
    for event in events or ():
        if not any(same_file(f) in exported for f in event.files):
            continue                        # none of its photos is in the package
        label = None
        if event.category is not None:
            label = cls_cats.get(event.category)
            if label is None or category_kind(event.category) != 'classifier':
                raise utils.InputError(f'event {event.event_id}: category {event.category!r} '
                                       'is not a classifier category of the detections JSON')
        observations += _event_rows(event, exported, detector, classifier,
                                    taxon_of(label, False) if label is not None else None)
    if not media:
        reasons: dict[str, int] = {}
        for why in failures.values():
            reasons[why.split(':')[0]] = reasons.get(why.split(':')[0], 0) + 1
        summary = '; '.join(f'{n} {why}' for why, n in sorted(reasons.items()))
        raise utils.InputError(f'{source}: no photo could be exported '
                               f'({summary or "the file lists no photos"}): check '
                               '--images-dir and the deployments CSV')
    if taxonomy and unknown_labels:
        logger.warning('labels not in the taxonomy CSV, written as scientificName as they '
                       'are: %s', ', '.join(sorted(unknown_labels)))
    elif not taxonomy and written_labels:
        logger.warning('no taxonomy CSV: the classifier labels (%s) are written as '
                       'scientificName as they are; give --taxonomy to map them to '
                       'scientific names', ', '.join(sorted(written_labels)))
    dep_rows = []
    for dep in deployments:
        bounds = deployment_bounds(dep, dep_times.get(dep.deployment_id, []))
        if bounds is None:
            logger.warning('deployment %s: no photos in it and no start/end given; left out',
                           dep.deployment_id)
            continue
        start, end = bounds
        dep_rows.append({**_blank_row(DEPLOYMENT_FIELDS), 'deploymentID': dep.deployment_id,
                         'locationID': dep.location_id, 'locationName': dep.location_name,
                         'latitude': _num(dep.latitude), 'longitude': _num(dep.longitude),
                         'coordinateUncertainty': ('' if dep.coordinate_uncertainty is None
                                                   else str(dep.coordinate_uncertainty)),
                         'deploymentStart': format_time(start),
                         'deploymentEnd': format_time(end), 'cameraID': dep.camera_id,
                         'cameraModel': dep.camera_model})
    levels = [lv for lv in ('media', 'event')
              if any(r['observationLevel'] == lv for r in observations)]
    descriptor = package_descriptor(dep_rows, media, taxa, settings, levels)
    return Package(descriptor, {'deployments': dep_rows, 'media': media,
                                'observations': observations}, failures)


def _spatial(dep_rows: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    """GeoJSON of the deployments: their point, or the box around them."""
    lats = [float(r['latitude']) for r in dep_rows]
    lons = [float(r['longitude']) for r in dep_rows]
    if min(lats) == max(lats) and min(lons) == max(lons):
        return {'type': 'Point', 'coordinates': [lons[0], lats[0]]}
    w, e, s, n = min(lons), max(lons), min(lats), max(lats)
    return {'type': 'Polygon', 'coordinates': [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}


def package_descriptor(dep_rows: Sequence[Mapping[str, str]],
                       media: Sequence[Mapping[str, str]], taxa: Mapping[str, Taxon],
                       settings: ExportSettings, levels: Sequence[str] = ('media',)
                       ) -> dict[str, Any]:
    """datapackage.json: the Camtrap DP profile's required metadata and the three
    resources, each pointing at its table schema; ``levels``: the observation
    levels the package holds."""
    created = settings.created or dt.datetime.now(dt.timezone.utc)
    starts = sorted(r['deploymentStart'] for r in dep_rows)
    ends = sorted(r['deploymentEnd'] for r in dep_rows)
    dates = sorted(parse_time(t, 'time').date() for t in (*starts, *ends))
    taxonomic = []
    for name in sorted(taxa):
        taxon = taxa[name]
        entry: dict[str, Any] = {'scientificName': name}
        if taxon.rank:
            entry['taxonRank'] = taxon.rank
        if taxon.vernacular_name:
            entry['vernacularNames'] = {'eng': taxon.vernacular_name}
        taxonomic.append(entry)
    desc: dict[str, Any] = {
        'name': re.sub(r'[^a-z0-9._/-]+', '-', settings.title.lower()).strip('-') or 'camtrap-dp',
        'title': settings.title,
        'profile': PROFILE_URL,
        'created': format_time(created),
        'contributors': [{'title': settings.contributor, 'role': 'contact'}],
        'sources': [{'title': 'camera-trap-classifier (MegaDetector boxes, species '
                              'classifier)'}],
        'project': {'title': settings.title,
                    'samplingDesign': settings.sampling_design.value,
                    'captureMethod': [settings.capture_method.value],
                    'individualAnimals': False,
                    'observationLevel': list(levels)},
        'spatial': _spatial(dep_rows),
        'temporal': {'start': dates[0].isoformat(), 'end': dates[-1].isoformat()},
        'taxonomic': taxonomic,
        'resources': [{'name': name, 'path': f'{name}.csv',
                       'profile': 'tabular-data-resource', 'format': 'csv',
                       'mediatype': 'text/csv', 'encoding': 'utf-8',
                       'schema': f'{BASE_URL}/{name}-table-schema.json'} for name in TABLES],
    }
    if settings.license:
        desc['licenses'] = [{'name': settings.license, 'scope': 'data'}]
    logger.info('package: %d deployments, %d media', len(dep_rows), len(media))
    return desc


# ---------------------------------------------------------------- writing

def is_package_dir(path: Path) -> bool:
    """A folder this step wrote: datapackage.json with the Camtrap DP profile and
    nothing but the package's files."""
    try:
        desc = utils.read_json(path / 'datapackage.json')
    except (utils.InputError, OSError):
        return False
    names = {p.name for p in path.iterdir()}
    return (isinstance(desc, dict) and desc.get('profile') == PROFILE_URL
            and names <= {'datapackage.json', *(f'{t}.csv' for t in TABLES)})


def check_output_dir(path: str | os.PathLike[str]) -> Path:
    """Refuses an output that exists and is neither an empty folder nor a package
    this step wrote (either is replaced)."""
    target = Path(path)
    if target.exists() and not (target.is_dir() and (not any(target.iterdir())
                                                     or is_package_dir(target))):
        raise utils.InputError(f'{target}: exists and is not a Camtrap DP package written '
                               'by this step; give another output folder or move it away')
    return target


def table_text(rows: Iterable[Mapping[str, str]], fields: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), lineterminator='\n')
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_package(package: Package, output_dir: str | os.PathLike[str]) -> Path:
    """Writes the package into a temporary folder beside ``output_dir`` and renames
    it there (replacing an older package only), with the umask's modes."""
    target = check_output_dir(output_dir)
    with utils.atomic_dir(target) as tmp:
        for name in TABLES:
            (tmp / f'{name}.csv').write_text(table_text(package.tables[name],
                                                        TABLE_FIELDS[name]),
                                             encoding='utf-8', newline='')
        utils.write_json(package.descriptor, tmp / 'datapackage.json', indent=2)
    return target
