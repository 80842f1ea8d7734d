"""Camtrap DP export: packages checked against the standard's table definitions
(tests/data/camtrap-dp-1.0, see its README) and the profile's requirements,
field by field; refusals; the deployments CSV reader under Hypothesis; the
demo project's new photos end to end."""
from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import enum
import json
import math
import posixpath
import re
import shutil
import typing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from classification import camtrap_dp, export_camtrap_dp, photo_times, utils
from tests.conftest import snapshot, write

SCHEMAS = Path(__file__).parent / 'data' / 'camtrap-dp-1.0'
DT_FORMAT = '%Y-%m-%dT%H:%M:%S%z'

# ---------------------------------------------------------------- the checker
# What Camtrap DP 1.0 requires of a package, checked here independently of the
# exporter: each table against its Table Schema (types, required, enum, ranges,
# pattern, unique, primary and foreign keys, the columns in the schema's order),
# and datapackage.json against the profile's required properties.

PROFILE_ROLES = {'contact', 'principalInvestigator', 'rightsHolder', 'publisher',
                 'contributor'}
SAMPLING_DESIGNS = {'simpleRandom', 'systematicRandom', 'clusteredRandom', 'experimental',
                    'targeted', 'opportunistic'}


def _cell_error(value: str, spec: dict[str, Any]) -> str | None:
    kind = spec['type']
    cons = spec.get('constraints', {})
    number: float | None = None
    if kind == 'string':
        pass
    elif kind == 'integer':
        if not re.fullmatch(r'[+-]?\d+', value):
            return 'not an integer'
        number = int(value)
    elif kind == 'number':
        try:
            number = float(value)
        except ValueError:
            return 'not a number'
        if not math.isfinite(number):
            return 'not finite'
    elif kind == 'boolean':
        if value not in ('true', 'false', 'True', 'False', 'TRUE', 'FALSE', '1', '0'):
            return 'not a boolean'
    elif kind == 'datetime':
        try:
            dt.datetime.strptime(value, spec.get('format', DT_FORMAT))
        except ValueError:
            return 'not a date-time in the schema format'
    elif kind == 'object':
        try:
            if not isinstance(json.loads(value), dict):
                return 'not a JSON object'
        except ValueError:
            return 'not JSON'
    else:
        raise AssertionError(f'type {kind} not handled by this checker')
    if 'enum' in cons and value not in cons['enum']:
        return f'not one of {cons["enum"]}'
    if 'pattern' in cons and not re.fullmatch(cons['pattern'], value):
        return f'does not match {cons["pattern"]}'
    if number is not None:
        if 'minimum' in cons and number < cons['minimum']:
            return f'below {cons["minimum"]}'
        if 'maximum' in cons and number > cons['maximum']:
            return f'above {cons["maximum"]}'
    return None


def table_errors(path: Path, schema: dict[str, Any]) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, encoding='utf-8', newline='') as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = [dict(zip(header, r, strict=True)) for r in reader]
    errors = []
    names = [fl['name'] for fl in schema['fields']]
    if header != names:
        errors.append(f'{path.name}: header {header} is not the schema\'s {names}')
        return errors, rows
    missing = set(schema.get('missingValues', ['']))
    for n, row in enumerate(rows, start=2):
        for spec in schema['fields']:
            value = row[spec['name']]
            if value in missing:
                if spec.get('constraints', {}).get('required'):
                    errors.append(f'{path.name}:{n}: {spec["name"]} is required')
                continue
            why = _cell_error(value, spec)
            if why:
                errors.append(f'{path.name}:{n}: {spec["name"]}={value!r} {why}')
    for spec in schema['fields']:
        if spec.get('constraints', {}).get('unique') or spec['name'] == schema.get('primaryKey'):
            values = [r[spec['name']] for r in rows if r[spec['name']] not in missing]
            if len(values) != len(set(values)):
                errors.append(f'{path.name}: {spec["name"]} values are not unique')
    return errors, rows


def package_errors(folder: Path) -> list[str]:
    """Every way the package in ``folder`` breaks Camtrap DP 1.0 (empty: valid)."""
    desc = json.loads((folder / 'datapackage.json').read_text())
    errors: list[str] = []
    for key in ('resources', 'profile', 'created', 'contributors', 'project', 'spatial',
                'temporal', 'taxonomic'):
        if key not in desc:
            errors.append(f'datapackage.json: {key} is required')
    if errors:
        return errors
    if desc['profile'] != 'https://raw.githubusercontent.com/tdwg/camtrap-dp/1.0/camtrap-dp-profile.json':
        errors.append('profile is not the Camtrap DP 1.0 profile')
    try:
        dt.datetime.strptime(desc['created'], DT_FORMAT)
    except (TypeError, ValueError):
        errors.append('created is not a date-time')
    if 'name' in desc and not re.fullmatch(r'^[a-z0-9._/-]+$', desc['name']):
        errors.append('name has characters the Data Package spec does not allow')
    contributors = desc['contributors']
    if not isinstance(contributors, list) or not contributors:
        errors.append('contributors: at least one')
    for c in contributors or []:
        if not c.get('title'):
            errors.append('contributor without title')
        if 'role' in c and c['role'] not in PROFILE_ROLES:
            errors.append(f'contributor role {c["role"]!r}')
    project = desc['project']
    for key in ('title', 'samplingDesign', 'captureMethod', 'individualAnimals',
                'observationLevel'):
        if key not in project:
            errors.append(f'project.{key} is required')
    if project.get('samplingDesign') not in SAMPLING_DESIGNS:
        errors.append('project.samplingDesign')
    if not set(project.get('captureMethod', [''])) <= {'activityDetection', 'timeLapse'}:
        errors.append('project.captureMethod')
    if not isinstance(project.get('individualAnimals'), bool):
        errors.append('project.individualAnimals must be a boolean')
    if not set(project.get('observationLevel', [''])) <= {'media', 'event'}:
        errors.append('project.observationLevel')
    spatial = desc['spatial']
    if not isinstance(spatial, dict) or spatial.get('type') not in (
            'Point', 'Polygon', 'MultiPolygon', 'MultiPoint', 'LineString'):
        errors.append('spatial is not GeoJSON')
    temporal = desc['temporal']
    for key in ('start', 'end'):
        if not re.fullmatch(r'\d{4}-\d\d-\d\d', str(temporal.get(key))):
            errors.append(f'temporal.{key} is not a date')
    for t in desc['taxonomic']:
        if not t.get('scientificName'):
            errors.append('taxonomic entry without scientificName')
        if 'taxonRank' in t and t['taxonRank'] not in camtrap_dp.TAXON_RANKS:
            errors.append(f'taxonRank {t["taxonRank"]!r}')
    resources = {r.get('name'): r for r in desc['resources']}
    tables: dict[str, list[dict[str, str]]] = {}
    for name in ('deployments', 'media', 'observations'):
        res = resources.get(name)
        if res is None:
            errors.append(f'resource {name} missing')
            continue
        if res.get('profile') != 'tabular-data-resource':
            errors.append(f'{name}: profile must be tabular-data-resource')
        if res.get('schema') != ('https://raw.githubusercontent.com/tdwg/camtrap-dp/1.0/'
                                 f'{name}-table-schema.json'):
            errors.append(f'{name}: schema is not the Camtrap DP 1.0 table schema')
        schema = json.loads((SCHEMAS / f'{name}-table-schema.json').read_text())
        table_errs, rows = table_errors(folder / res['path'], schema)
        errors += table_errs
        tables[name] = rows
        for fk in schema.get('foreignKeys', []):
            ref = fk['reference']
            if ref['resource'] not in tables:
                continue
            known = {r[ref['fields']] for r in tables[ref['resource']]}
            for r in rows:
                if r[fk['fields']] and r[fk['fields']] not in known:
                    errors.append(f'{name}: {fk["fields"]} {r[fk["fields"]]!r} not in '
                                  f'{ref["resource"]}')
    if errors:
        return errors
    # what the profile and the tables' descriptions say across files
    names = {r['scientificName'] for r in tables['observations'] if r['scientificName']}
    if names - {t['scientificName'] for t in desc['taxonomic']}:
        errors.append('taxonomic does not cover every scientificName')
    for r in tables['observations']:
        if r['observationLevel'] == 'media' and not r['mediaID']:
            errors.append('a media-level observation needs a mediaID')
        if r['bboxX'] and float(r['bboxX']) + float(r['bboxWidth']) > 1 + 1e-9:
            errors.append(f'{r["observationID"]}: box leaves the photo')
    for r in tables['deployments']:
        start, end = (dt.datetime.strptime(r[k], DT_FORMAT)
                      for k in ('deploymentStart', 'deploymentEnd'))
        if end < start:
            errors.append(f'deployment {r["deploymentID"]}: ends before it starts')
        photos = [dt.datetime.strptime(m['timestamp'], DT_FORMAT)
                  for m in tables['media'] if m['deploymentID'] == r['deploymentID']]
        if photos and (min(photos) < start or max(photos) > end):
            errors.append(f'deployment {r["deploymentID"]}: a photo outside start..end')
    days = [dt.datetime.strptime(r[k], DT_FORMAT).date().isoformat()
            for r in tables['deployments'] for k in ('deploymentStart', 'deploymentEnd')]
    if temporal['start'] > min(days) or temporal['end'] < max(days):
        errors.append('temporal does not cover the deployments')
    return errors


def read_table(folder: Path, name: str) -> list[dict[str, str]]:
    with open(folder / f'{name}.csv', encoding='utf-8', newline='') as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- data

def photo(path: Path, when: str | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    if when is not None:
        exif.get_ifd(photo_times.EXIF_IFD)[photo_times.DATETIME_ORIGINAL] = when
    Image.new('RGB', (32, 24), (90, 120, 60)).save(path, 'JPEG', exif=exif.tobytes())


TIMELAPSE = {
    'info': {'format_version': '1.4', 'detector': 'md_v5a.0.0.pt',
             'classifier': 'demo-resnet18',
             'classification_completion_time': '2024-06-01 10:00:00'},
    'detection_categories': {'1': 'animal', '2': 'person', '3': 'vehicle'},
    'classification_categories': {'0': 'deer', '1': 'fox'},
    'images': [
        {'file': 'cam_a/img1.jpg', 'max_detection_conf': 0.9, 'detections': [
            {'category': '1', 'conf': 0.9, 'bbox': [0.1, 0.2, 0.3, 0.4],
             'classifications': [['1', 0.8], ['0', 0.15]]},
            {'category': '2', 'conf': 0.7, 'bbox': [0.85, 0.5, 0.3, 0.2]},
            {'category': '1', 'conf': 0.05, 'bbox': [0, 0, 0.1, 0.1]}]},
        {'file': 'cam_a/img2.jpg', 'max_detection_conf': 0.0, 'detections': []},
        {'file': 'cam_b/sub/img3.jpg', 'max_detection_conf': 0.6, 'detections': [
            {'category': '1', 'conf': 0.6, 'bbox': [0.5, 0.5, 0.25, 0.25],
             'classifications': [['1000000', 1.0], ['0', 0.55]]},
            {'category': '3', 'conf': 0.4, 'bbox': [0.0, 0.0, 0.5, 0.5]}]},
        {'file': 'cam_b/img4.jpg', 'max_detection_conf': 0.1, 'detections': [
            {'category': '1', 'conf': 0.1, 'bbox': [0.1, 0.1, 0.1, 0.1]}]},
        {'file': 'cam_b/no_time.jpg', 'max_detection_conf': 0.0, 'detections': []},
        {'file': 'elsewhere/img5.jpg', 'max_detection_conf': 0.0, 'detections': []},
        {'file': 'cam_a/broken.jpg', 'failure': 'image access failure'},
    ]}

DEPLOYMENTS_CSV = ('folder,deploymentID,latitude,longitude,locationName,deploymentStart\n'
                   'cam_a,dep-a,51.5,4.25,Ridge,\n'
                   'cam_b,dep-b,-12.75,-60.5,Creek,2024-04-30T08:00:00+02:00\n')
TAXONOMY_CSV = ('label,scientificName,taxonRank,vernacularName\n'
                'deer,Cervidae,family,deer\nfox,Vulpes vulpes,species,red fox\n')


def make_inputs(tmp_path: Path) -> dict[str, str]:
    """Photos with EXIF times (one without), the merged JSON, deployments and taxa."""
    images = tmp_path / 'photos'
    photo(images / 'cam_a/img1.jpg', '2024:05:01 06:30:15')
    photo(images / 'cam_a/img2.jpg', '2024:05:03 22:00:00')
    photo(images / 'cam_b/sub/img3.jpg', '2024:05:02 12:00:01')
    photo(images / 'cam_b/img4.jpg', '2024:05:04 01:02:03')
    photo(images / 'cam_b/no_time.jpg', None)
    photo(images / 'elsewhere/img5.jpg', '2024:05:02 12:00:00')
    return {'json': write(tmp_path, 'merged.json', TIMELAPSE),
            'images': str(images),
            'deployments': write(tmp_path, 'deployments.csv', DEPLOYMENTS_CSV),
            'taxonomy': write(tmp_path, 'taxa.csv', TAXONOMY_CSV),
            'out': str(tmp_path / 'package'), 'logdir': str(tmp_path / 'logs')}


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, str]:
    return make_inputs(tmp_path)


def export_args(i: dict[str, str], *extra: str) -> list[str]:
    return [i['json'], i['out'], '--images-dir', i['images'], '--deployments',
            i['deployments'], '--title', 'Test Survey 2024', '--contributor', 'Jane Doe',
            '--utc-offset', '+02:00', '--logdir', i['logdir'], *extra]


# ---------------------------------------------------------------- tests

def test_package_is_valid_camtrap_dp_with_the_expected_fields(inputs):
    assert export_camtrap_dp.main(export_args(inputs, '--taxonomy', inputs['taxonomy'],
                                              '--license', 'CC-BY-4.0')) == 0
    out = Path(inputs['out'])
    assert sorted(p.name for p in out.iterdir()) == [
        'datapackage.json', 'deployments.csv', 'media.csv', 'observations.csv']
    assert package_errors(out) == []

    media = {r['filePath']: r for r in read_table(out, 'media')}
    assert set(media) == {'cam_a/img1.jpg', 'cam_a/img2.jpg', 'cam_b/sub/img3.jpg',
                          'cam_b/img4.jpg'}
    m1 = media['cam_a/img1.jpg']
    assert (m1['timestamp'], m1['deploymentID'], m1['fileName'], m1['fileMediatype'],
            m1['filePublic']) == ('2024-05-01T06:30:15+02:00', 'dep-a', 'img1.jpg',
                                  'image/jpeg', 'false')
    assert media['cam_b/sub/img3.jpg']['deploymentID'] == 'dep-b'

    obs = read_table(out, 'observations')
    by_media: dict[str, list[dict[str, str]]] = {}
    for r in obs:
        by_media.setdefault(r['mediaID'], []).append(r)
    animal, person = by_media[m1['mediaID']]        # the 0.05 box is below 0.2
    assert animal['observationType'] == 'animal'
    assert (animal['bboxX'], animal['bboxY'], animal['bboxWidth'], animal['bboxHeight']) == (
        '0.1', '0.2', '0.3', '0.4')
    assert animal['scientificName'] == 'Vulpes vulpes'            # fox, via the taxonomy
    assert animal['classificationProbability'] == '0.8'
    assert (animal['classificationMethod'], animal['classifiedBy']) == ('machine',
                                                                        'demo-resnet18')
    assert (animal['observationLevel'], animal['eventStart'], animal['eventEnd'],
            animal['count']) == ('media', m1['timestamp'], m1['timestamp'], '1')
    # the person's box ran past the right edge: clipped to the photo
    assert person['observationType'] == 'human' and person['scientificName'] == ''
    assert (float(person['bboxX']), float(person['bboxWidth'])) == (0.85, pytest.approx(0.15))
    assert (person['classifiedBy'], person['classificationProbability']) == (
        'md_v5a.0.0.pt', '0.7')
    # merge --label's true-label entry (1000000) is not the classifier's answer
    deer, vehicle = by_media[media['cam_b/sub/img3.jpg']['mediaID']]
    assert (deer['scientificName'], deer['classificationProbability']) == ('Cervidae', '0.55')
    assert vehicle['observationType'] == 'vehicle' and vehicle['count'] == ''
    for blank_photo in ('cam_a/img2.jpg', 'cam_b/img4.jpg'):
        (blank,) = by_media[media[blank_photo]['mediaID']]
        assert blank['observationType'] == 'blank' and blank['bboxX'] == ''

    deps = {r['deploymentID']: r for r in read_table(out, 'deployments')}
    assert (deps['dep-a']['deploymentStart'], deps['dep-a']['deploymentEnd']) == (
        '2024-05-01T06:30:15+02:00', '2024-05-03T22:00:00+02:00')   # from the photos
    assert (deps['dep-b']['deploymentStart'], deps['dep-b']['deploymentEnd']) == (
        '2024-04-30T08:00:00+02:00', '2024-05-04T01:02:03+02:00')   # start from the CSV
    assert (deps['dep-b']['latitude'], deps['dep-b']['longitude']) == ('-12.75', '-60.5')

    desc = json.loads((out / 'datapackage.json').read_text())
    assert desc['temporal'] == {'start': '2024-04-30', 'end': '2024-05-04'}
    assert desc['taxonomic'] == [
        {'scientificName': 'Cervidae', 'taxonRank': 'family', 'vernacularNames': {'eng': 'deer'}},
        {'scientificName': 'Vulpes vulpes', 'taxonRank': 'species',
         'vernacularNames': {'eng': 'red fox'}}]
    assert desc['spatial']['type'] == 'Polygon'
    assert desc['licenses'] == [{'name': 'CC-BY-4.0', 'scope': 'data'}]

    (log,) = Path(inputs['logdir']).glob('export_camtrap_dp_log_*.json')
    doc = json.loads(log.read_text())
    assert doc['step'] == 'export_camtrap_dp' and doc['media'] == 4 and doc['failed'] == 3
    assert [f['file'] for f in doc['failures']] == ['cam_a/broken.jpg', 'cam_b/no_time.jpg',
                                                    'elsewhere/img5.jpg']


def test_without_taxonomy_the_label_is_the_scientific_name(inputs, capsys):
    assert export_camtrap_dp.main(export_args(inputs, '--classified-by', 'mine v2')) == 0
    out = Path(inputs['out'])
    assert package_errors(out) == []
    animals = [r for r in read_table(out, 'observations') if r['scientificName']]
    assert sorted(r['scientificName'] for r in animals) == ['deer', 'fox']
    assert {r['classifiedBy'] for r in animals} == {'mine v2'}
    # said once, on stderr, naming the labels and the way out
    warnings = [line for line in capsys.readouterr().err.splitlines()
                if 'written as scientificName' in line]
    assert len(warnings) == 1 and 'deer, fox' in warnings[0] and '--taxonomy' in warnings[0]
    # with the taxonomy mapping every label: no such warning
    assert export_camtrap_dp.main(export_args(inputs, '--taxonomy', inputs['taxonomy'])) == 0
    assert 'scientificName' not in capsys.readouterr().err


def test_the_checker_finds_what_breaks_the_standard(inputs):
    """The checker above is what the exporter is held to: it must catch breakage."""
    assert export_camtrap_dp.main(export_args(inputs)) == 0
    out = Path(inputs['out'])
    assert package_errors(out) == []

    def broken(table: str, column: str, value: str) -> list[str]:
        copy = out.parent / 'broken'
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(out, copy)
        rows = read_table(copy, table)
        rows[0][column] = value
        with open(copy / f'{table}.csv', 'w', encoding='utf-8', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return package_errors(copy)

    assert broken('observations', 'bboxX', '1.5')
    assert broken('observations', 'observationType', 'animals')
    assert broken('observations', 'classificationProbability', '-0.1')
    assert broken('observations', 'mediaID', 'nope')
    assert broken('observations', 'eventStart', '2024-05-01 06:30:15')
    assert broken('media', 'timestamp', '2024-05-01T06:30:15')     # no time zone
    assert broken('media', 'mediaID', '')
    assert broken('deployments', 'latitude', '91')
    desc = json.loads((out / 'datapackage.json').read_text())
    del desc['project']['samplingDesign']
    (out / 'datapackage.json').write_text(json.dumps(desc))
    assert package_errors(out)


def _independent_tables() -> list[tuple[str, type]]:
    """The three tables as the ``camtrapdp`` package (PyPI, installed by make test)
    reads them: one dataclass per table, written by others from the same standard."""
    import camtrapdp
    return [('deployments', camtrapdp.Deployment), ('media', camtrapdp.Media),
            ('observations', camtrapdp.Observation)]


def _enum_of(annotation: Any) -> type[enum.Enum] | None:
    for t in (annotation, *typing.get_args(annotation)):
        if isinstance(t, type) and issubclass(t, enum.Enum):
            return t
    return None


def test_our_table_definitions_agree_with_an_independent_reading_of_the_standard():
    """tests/data/camtrap-dp-1.0 is our own rendition of the standard; the camtrapdp
    package is another. Both must name the same columns in the same order, require
    the same ones and allow the same values."""
    for table, cls in _independent_tables():
        schema = json.loads((SCHEMAS / f'{table}-table-schema.json').read_text())
        ours = {f['name']: f.get('constraints', {}) for f in schema['fields']}
        theirs = dataclasses.fields(cls)
        assert list(ours) == [f.name for f in theirs], table
        for f in theirs:
            optional = type(None) in typing.get_args(f.type)
            assert ours[f.name].get('required', False) == (not optional), (table, f.name)
            kind = _enum_of(f.type)
            if kind is not None and len(kind):   # camtrapdp 0.1.0 left Sex's values out
                assert set(ours[f.name]['enum']) == {m.value for m in kind}, (table, f.name)


def test_the_package_is_read_by_an_independent_camtrap_dp_library(inputs):
    """Every row of an exported package loads into camtrapdp's dataclasses (no
    column it does not know, none it requires missing) with every coded value one
    of its enumerations."""
    assert export_camtrap_dp.main(export_args(inputs, '--taxonomy', inputs['taxonomy'])) == 0
    out = Path(inputs['out'])
    for table, cls in _independent_tables():
        rows = cls.from_csv(str(out / f'{table}.csv'))   # type: ignore[attr-defined]
        assert rows, table
        for row in rows:
            for f in dataclasses.fields(cls):
                kind = _enum_of(f.type)
                value = getattr(row, f.name)
                if kind is not None and len(kind) and value != '':
                    kind(value)                           # ValueError if not allowed


# ---------------------------------------------------------------- events

def _animal(conf: float, fox: float, deer: float) -> dict[str, Any]:
    return {'category': '1', 'conf': conf, 'bbox': [0.1, 0.1, 0.2, 0.2],
            'classifications': [['1', fox], ['0', deer]]}


EVENTS_TIMELAPSE = {
    **TIMELAPSE,
    'images': [
        # a burst of three: fox, then a fox and a deer-ish box, then a person
        {'file': 'cam_x/p1.jpg', 'detections': [_animal(0.9, 0.7, 0.3)]},
        {'file': 'cam_x/p2.jpg', 'detections': [_animal(0.5, 0.4, 0.6),
                                                _animal(0.8, 0.9, 0.1)]},
        {'file': 'cam_x/p3.jpg', 'detections': [
            _animal(0.1, 0.0, 1.0),                                # below the threshold
            {'category': '2', 'conf': 0.8, 'bbox': [0.5, 0.5, 0.2, 0.2]}]},
        {'file': 'cam_x/p4.jpg', 'detections': []},                # an empty trigger
        {'file': 'cam_x/p5.jpg', 'detections': [
            {'category': '3', 'conf': 0.5, 'bbox': [0.0, 0.0, 0.5, 0.5]}]},
        {'file': 'cam_y/p6.jpg', 'detections': [_animal(0.8, 0.1, 0.9)]},
    ]}
EVENT_TIMES = {'cam_x/p1.jpg': '2024:05:01 10:00:00', 'cam_x/p2.jpg': '2024:05:01 10:00:02',
               'cam_x/p3.jpg': '2024:05:01 10:00:04', 'cam_x/p4.jpg': '2024:05:01 12:00:00',
               'cam_x/p5.jpg': '2024:05:01 12:05:00', 'cam_y/p6.jpg': '2024:05:01 10:00:01'}


@pytest.fixture
def event_inputs(tmp_path: Path) -> dict[str, str]:
    for file, when in EVENT_TIMES.items():
        photo(tmp_path / 'photos' / file, when)
    deployments = ('folder,deploymentID,latitude,longitude\n'
                   'cam_x,dep-x,51.5,4.25\ncam_y,dep-y,51.6,4.3\n')
    return {'json': write(tmp_path, 'merged.json', EVENTS_TIMELAPSE),
            'images': str(tmp_path / 'photos'),
            'deployments': write(tmp_path, 'deployments.csv', deployments),
            'taxonomy': write(tmp_path, 'taxa.csv', TAXONOMY_CSV),
            'out': str(tmp_path / 'package'), 'logdir': str(tmp_path / 'logs')}


def _events(out: Path) -> dict[str, dict[str, dict[str, str]]]:
    """Event-level observations by eventID, then observationType."""
    events: dict[str, dict[str, dict[str, str]]] = {}
    for r in read_table(out, 'observations'):
        if r['observationLevel'] == 'event':
            assert r['mediaID'] == '' and r['bboxX'] == ''
            events.setdefault(r['eventID'], {})[r['observationType']] = r
    return events


def test_event_level_observations_from_exif_bursts(event_inputs):
    assert export_camtrap_dp.main(export_args(event_inputs, '--taxonomy',
                                              event_inputs['taxonomy'], '--events')) == 0
    out = Path(event_inputs['out'])
    assert package_errors(out) == []
    events = _events(out)
    assert sorted(events) == ['cam_x#0001', 'cam_x#0002', 'cam_x#0003', 'cam_y#0001']
    burst = events['cam_x#0001']
    assert sorted(burst) == ['animal', 'human']
    fox = burst['animal']
    # conf-weighted mean of the three boxes of at least 0.2: fox (0.9*0.7 + 0.5*0.4 +
    # 0.8*0.9) / 2.2; the most animals in one photo: 2
    assert (fox['scientificName'], fox['count'], fox['classifiedBy']) == (
        'Vulpes vulpes', '2', 'demo-resnet18')
    assert float(fox['classificationProbability']) == pytest.approx(1.55 / 2.2, abs=1e-6)
    assert (fox['eventStart'], fox['eventEnd'], fox['deploymentID']) == (
        '2024-05-01T10:00:00+02:00', '2024-05-01T10:00:04+02:00', 'dep-x')
    assert burst['human']['count'] == '1' and burst['human']['scientificName'] == ''
    assert sorted(events['cam_x#0002']) == ['blank']           # p4 alone: nothing seen
    assert sorted(events['cam_x#0003']) == ['vehicle']
    assert events['cam_x#0003']['vehicle']['count'] == ''
    deer = events['cam_y#0001']['animal']                      # another camera, same minute
    assert (deer['scientificName'], deer['count'], deer['deploymentID']) == (
        'Cervidae', '1', 'dep-y')
    assert float(deer['classificationProbability']) == pytest.approx(0.9)
    # the media-level observations are linked to their event
    media = {r['mediaID']: r['fileName'] for r in read_table(out, 'media')}
    linked = {(media[r['mediaID']], r['eventID']) for r in read_table(out, 'observations')
              if r['observationLevel'] == 'media'}
    assert linked == {('p1.jpg', 'cam_x#0001'), ('p2.jpg', 'cam_x#0001'),
                      ('p3.jpg', 'cam_x#0001'), ('p4.jpg', 'cam_x#0002'),
                      ('p5.jpg', 'cam_x#0003'), ('p6.jpg', 'cam_y#0001')}
    for table, cls in _independent_tables():
        assert cls.from_csv(str(out / f'{table}.csv'))  # type: ignore[attr-defined]


def test_event_grouping_follows_the_gap_and_the_coco_sequences(event_inputs, tmp_path):
    assert export_camtrap_dp.main(export_args(event_inputs, '--events',
                                              '--max-gap-seconds', '1')) == 0
    out = Path(event_inputs['out'])
    assert len([e for e in _events(out) if e.startswith('cam_x')]) == 5   # every photo alone
    coco = {'images': [{'file_name': f, 'seq_id': s, 'location': f.split('/')[0]}
                       for f, s in [('cam_x/p1.jpg', 'A'), ('cam_x/p2.jpg', 'A'),
                                    ('cam_x/p3.jpg', 'A'), ('cam_x/p4.jpg', 'B'),
                                    ('cam_x/p5.jpg', 'B'), ('cam_y/p6.jpg', 'C')]]}
    assert export_camtrap_dp.main(export_args(
        event_inputs, '--events', '--coco', write(tmp_path, 'coco.json', coco))) == 0
    events = _events(out)
    assert sorted(events) == ['A', 'B', 'C']
    assert sorted(events['B']) == ['vehicle']           # p4's empty frame is in the burst
    assert events['A']['animal']['scientificName'] == 'fox'    # no taxonomy: the label
    assert package_errors(out) == []


def test_a_photo_left_out_does_not_split_its_burst(event_inputs, tmp_path):
    """Events are classify_sequences' sequences (same ids), cut down to the photos
    in the package: p2 failed at the detector, yet p1 and p3 stay one event."""
    doc = json.loads(Path(event_inputs['json']).read_text())
    doc['images'][1] = {'file': 'cam_x/p2.jpg', 'failure': 'image access failure'}
    # category names that would clash in the sequence CSV are fine here
    doc['classification_categories'] = {'0': 'deer', '1': 'photos'}
    write(tmp_path, 'merged.json', doc)
    # p1 -> p3 is 4 s, over the gap; p1 -> p2 -> p3 is 2 s steps
    assert export_camtrap_dp.main(export_args(event_inputs, '--events',
                                              '--max-gap-seconds', '3')) == 0
    out = Path(event_inputs['out'])
    events = _events(out)
    assert sorted(events) == ['cam_x#0001', 'cam_x#0002', 'cam_x#0003', 'cam_y#0001']
    fox = events['cam_x#0001']['animal']
    assert (fox['eventStart'], fox['eventEnd'], fox['count']) == (
        '2024-05-01T10:00:00+02:00', '2024-05-01T10:00:04+02:00', '1')
    assert (fox['scientificName'], fox['classificationProbability']) == ('photos', '0.7')
    desc = json.loads((out / 'datapackage.json').read_text())
    assert desc['project']['observationLevel'] == ['media', 'event']
    assert package_errors(out) == []
    assert export_camtrap_dp.main(export_args(event_inputs)) == 0
    assert json.loads((out / 'datapackage.json').read_text())['project'][
        'observationLevel'] == ['media']


def test_event_refusals(event_inputs, tmp_path, capsys):
    out = Path(event_inputs['out'])
    coco = {'images': [{'file_name': f, 'seq_id': 'one'} for f in EVENT_TIMES]}
    assert _refusal(event_inputs, capsys, export_args(
        event_inputs, '--events', '--coco', write(tmp_path, 'coco.json', coco))) \
        .startswith('error: event one: its photos are in deployments dep-x and dep-y')
    assert not out.exists()
    coco['images'] = [{'file_name': f, 'seq_id': ' '} for f in EVENT_TIMES]
    assert "seq_id ' ' is empty" in _refusal(event_inputs, capsys, export_args(
        event_inputs, '--events', '--coco', write(tmp_path, 'coco.json', coco)))
    for extra in (['--coco', 'x.json'], ['--max-gap-seconds', '5'],
                  ['--events', '--coco', 'x.json', '--max-gap-seconds', '5']):
        with pytest.raises(SystemExit) as e:
            export_camtrap_dp.main(export_args(event_inputs, *extra))
        assert e.value.code == 2
    assert not out.exists()


def test_events_as_a_library_call():
    """build_package checks the events it is given."""
    settings = camtrap_dp.ExportSettings(title='t', contributor='c')
    deps = camtrap_dp.parse_deployments('folder,deploymentID,latitude,longitude\n.,d,0,0\n')
    doc = {**EVENTS_TIMELAPSE, 'images': EVENTS_TIMELAPSE['images'][:2]}
    times = {'cam_x/p1.jpg': dt.datetime(2024, 5, 1, 10), 'cam_x/p2.jpg': None}
    twice = [camtrap_dp.Event('a', ('cam_x/p1.jpg',)), camtrap_dp.Event('b', ('cam_x/p1.jpg',))]
    with pytest.raises(utils.InputError, match='is in two events'):
        camtrap_dp.build_package(doc, times, deps, settings, events=twice)
    with pytest.raises(utils.InputError, match='not a classifier category'):
        camtrap_dp.build_package(doc, times, deps, settings, events=[
            camtrap_dp.Event('a', ('cam_x/p1.jpg',), '1000000', 0.5)])
    # p2 has no time: left out, so its event has no observations
    package = camtrap_dp.build_package(doc, times, deps, settings, events=[
        camtrap_dp.Event('a', ('cam_x/p1.jpg',), '1', 0.7),
        camtrap_dp.Event('b', ('cam_x/p2.jpg',))])
    rows = [r for r in package.tables['observations'] if r['observationLevel'] == 'event']
    assert [(r['eventID'], r['observationType'], r['scientificName'], r['count'],
             r['classificationProbability']) for r in rows] == [('a', 'animal', 'fox', '1',
                                                                 '0.7')]


def test_bbox_mapping_clips_to_the_photo():
    assert camtrap_dp.camtrap_bbox([0.1, 0.2, 0.3, 0.4]) == (0.1, 0.2, 0.3, 0.4)
    assert camtrap_dp.camtrap_bbox([-0.1, 0.9, 0.3, 0.3]) == (0.0, 0.9, 0.2, pytest.approx(0.1))
    assert camtrap_dp.camtrap_bbox([1.2, 0.5, 0.1, 0.1]) is None
    assert camtrap_dp.camtrap_bbox([0.5, 0.5, 0.0, 0.1]) is None


@given(st.lists(st.floats(-2, 3), min_size=4, max_size=4))
def test_any_box_maps_inside_the_photo_or_to_none(bbox):
    got = camtrap_dp.camtrap_bbox(bbox)
    if got is not None:
        x, y, w, h = got
        assert 0 <= x <= 1 and 0 <= y <= 1 and 0 < w and 0 < h
        assert x + w <= 1 + 1e-12 and y + h <= 1 + 1e-12


def test_an_older_package_is_replaced(inputs):
    assert export_camtrap_dp.main(export_args(inputs)) == 0
    first = (Path(inputs['out']) / 'datapackage.json').read_text()
    assert export_camtrap_dp.main(export_args(inputs, '--title', 'Second')) == 0
    assert json.loads((Path(inputs['out']) / 'datapackage.json').read_text())['title'] == \
        'Second' != json.loads(first)['title']
    assert not list(Path(inputs['out']).parent.glob('.package*'))


def _refusal(i: dict[str, str], capsys, args: list[str]) -> str:
    before = snapshot(Path(i['json']).parent)
    code = utils.run_cli(lambda: export_camtrap_dp.main(args))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith('error: ')
    assert not any(line.startswith('error') for line in err[:-1])
    assert snapshot(Path(i['json']).parent) == before        # nothing written
    return err[-1]


@pytest.mark.parametrize('csv_text, says', [
    ('folder,deploymentID,latitude,longitude\ncam_a,d1,95,4\n', 'latitude'),
    ('folder,deploymentID,latitude,longitude\ncam_a,d1,nan,4\n', 'latitude'),
    ('folder,deploymentID,latitude\ncam_a,d1,5\n', 'missing column'),
    ('folder,deploymentID,latitude,longitude,lat\ncam_a,d1,5,4,5\n', "unknown column 'lat'"),
    ('folder,deploymentID,latitude,longitude\ncam_a,d1,5,4\ncam_b,d1,5,4\n', 'twice'),
    ('folder,deploymentID,latitude,longitude\ncam_a,d1,5,4\ncam_a/,d2,5,4\n', 'twice'),
    ('folder,deploymentID,latitude,longitude\n../x,d1,5,4\n', 'leave'),
    ('folder,deploymentID,latitude,longitude,deploymentStart\ncam_a,d1,5,4,2024-05-01\n',
     'time zone'),
    ('folder,deploymentID,latitude,longitude,deploymentStart,deploymentEnd\n'
     'cam_a,d1,5,4,2024-05-02T00:00:00Z,2024-05-01T00:00:00Z\n', 'before'),
    ('', 'empty file'),
    ('folder,deploymentID,latitude,longitude\n', 'no rows'),
])
def test_bad_deployments_csv_is_refused(inputs, capsys, csv_text, says):
    write(Path(inputs['json']).parent, 'deployments.csv', csv_text)
    assert says in _refusal(inputs, capsys, export_args(inputs))


def test_other_refusals(inputs, capsys, tmp_path):
    # an output folder that is not a package
    other = tmp_path / 'notes'
    other.mkdir()
    (other / 'keep.txt').write_text('mine')
    args = export_args(inputs)
    args[1] = str(other)
    assert 'not a Camtrap DP package' in _refusal(inputs, capsys, args)
    assert (other / 'keep.txt').read_text() == 'mine'
    # no deployment folder matches any photo
    write(tmp_path, 'deployments.csv', 'folder,deploymentID,latitude,longitude\nzzz,d,1,1\n')
    assert 'no photo could be exported' in _refusal(inputs, capsys, export_args(inputs))
    write(tmp_path, 'deployments.csv', DEPLOYMENTS_CSV)
    # a confidence that is no probability
    doc = json.loads(json.dumps(TIMELAPSE))
    doc['images'][0]['detections'][0]['classifications'] = [['1', -0.3]]
    write(tmp_path, 'merged.json', doc)
    assert 'not from 0 to 1' in _refusal(inputs, capsys, export_args(inputs))
    # a classification category the JSON does not name
    doc['images'][0]['detections'][0]['classifications'] = [['7', 0.9]]
    write(tmp_path, 'merged.json', doc)
    assert "'7'" in _refusal(inputs, capsys, export_args(inputs))
    write(tmp_path, 'merged.json', TIMELAPSE)
    write(tmp_path, 'taxa.csv', 'label,scientificName,taxonRank\nfox,Vulpes,genera\n')
    assert 'taxonRank' in _refusal(inputs, capsys,
                                   export_args(inputs, '--taxonomy', inputs['taxonomy']))


def test_relative_conf_file_is_refused(inputs, capsys, tmp_path):
    """merge --relative-conf lists the classes that beat the given label and by how
    much: plausible-looking numbers that are not probabilities. The file says so in
    info.classifier_metadata.relative_conf, and the export refuses it."""
    doc = json.loads(json.dumps(TIMELAPSE))
    doc['info']['classifier_metadata'] = {'relative_conf': True}
    doc['classification_categories']['1000000'] = 'label: deer'
    doc['images'][0]['detections'][0]['classifications'] = [['1000000', 1.0], ['1', 0.35]]
    write(tmp_path, 'merged.json', doc)
    says = _refusal(inputs, capsys, export_args(inputs))
    assert 'relative-conf' in says and 'relative_conf' in says
    assert not Path(inputs['out']).exists()
    # the same file without the mark exports (the key is what decides)
    doc['info']['classifier_metadata'] = {'relative_conf': False}
    write(tmp_path, 'merged.json', doc)
    assert export_camtrap_dp.main(export_args(inputs)) == 0


def test_photos_outside_their_deployment_are_failures(inputs):
    """Only deploymentStart given and every photo of the deployment earlier: the
    photos are failures (not media of a deployment that ends before it starts)."""
    write(Path(inputs['json']).parent, 'deployments.csv',
          'folder,deploymentID,latitude,longitude,deploymentStart,deploymentEnd\n'
          'cam_a,dep-a,51.5,4.25,,2024-05-02T00:00:00+02:00\n'
          'cam_b,dep-b,-12.75,-60.5,2024-05-10T08:00:00+02:00,\n')
    assert export_camtrap_dp.main(export_args(inputs)) == 0
    out = Path(inputs['out'])
    assert package_errors(out) == []
    assert [r['filePath'] for r in read_table(out, 'media')] == ['cam_a/img1.jpg']
    deps = read_table(out, 'deployments')
    assert [(d['deploymentID'], d['deploymentStart'], d['deploymentEnd']) for d in deps] == [
        ('dep-a', '2024-05-01T06:30:15+02:00', '2024-05-02T00:00:00+02:00')]
    (log,) = Path(inputs['logdir']).glob('export_camtrap_dp_log_*.json')
    reasons = {f['file']: f['reason'] for f in json.loads(log.read_text())['failures']}
    for late in ('cam_a/img2.jpg', 'cam_b/sub/img3.jpg', 'cam_b/img4.jpg'):
        assert reasons[late].startswith('outside its deployment')
    assert 'dep-b' in reasons['cam_b/img4.jpg'] and '2024-05-04T01:02:03+02:00' in \
        reasons['cam_b/img4.jpg']


def test_a_deployment_ending_before_it_starts_is_refused():
    start = dt.datetime(2024, 5, 10, tzinfo=dt.timezone.utc)
    dep = camtrap_dp.Deployment(('cam',), 'd1', 1.0, 2.0, start=start)
    earlier = [dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc)]
    with pytest.raises(utils.InputError, match='d1: deploymentEnd .* before'):
        camtrap_dp.deployment_bounds(dep, earlier)
    later = [start + dt.timedelta(days=2), start + dt.timedelta(days=1)]
    assert camtrap_dp.deployment_bounds(dep, later) == (start, later[0])
    assert camtrap_dp.deployment_bounds(dep, []) is None


def test_an_empty_output_folder_is_used(inputs):
    Path(inputs['out']).mkdir()
    assert export_camtrap_dp.main(export_args(inputs)) == 0
    assert package_errors(Path(inputs['out'])) == []


@pytest.mark.parametrize('where', ['.', 'logs'])
def test_a_log_folder_in_the_package_is_refused(inputs, capsys, where):
    args = export_args(inputs)
    args[args.index('--logdir') + 1] = str(Path(inputs['out']) / where)
    assert '--logdir' in _refusal(inputs, capsys, args)
    assert not Path(inputs['out']).exists()


def _rollup_doc() -> dict[str, Any]:
    """A merged file as merge --rollup-threshold writes it: taxa as 2000000 + k,
    named 'taxon: <name>', described by their taxonomy string, first in the list of
    a detection whose top label fell short; merge --label's entry before it."""
    doc = json.loads(json.dumps(TIMELAPSE))
    doc['info']['classifier_metadata'] = {'taxonomic_rollup_threshold': 0.6}
    doc['classification_categories'] = {
        '0': 'deer', '1': 'fox', '2': 'wolf', '1000000': 'label: deer',
        '2000003': 'taxon: canidae', '2000005': 'taxon: mammalia'}
    doc['classification_category_descriptions'] = {
        '0': 'animalia;chordata;mammalia;artiodactyla;cervidae;deer',
        '1': 'animalia;chordata;mammalia;carnivora;canidae;vulpes;vulpes vulpes',
        '2': 'animalia;chordata;mammalia;carnivora;canidae;canis;canis lupus',
        '1000000': 'animalia;chordata;mammalia;artiodactyla;cervidae;deer',
        '2000003': 'animalia;chordata;mammalia;carnivora;canidae',
        '2000005': 'animalia;chordata;mammalia'}
    dets = doc['images'][0]['detections']
    dets[0]['classifications'] = [['2000003', 0.75], ['1', 0.45], ['2', 0.3], ['0', 0.2]]
    dets2 = doc['images'][2]['detections']         # cam_b/sub/img3.jpg, --label first
    dets2[0]['classifications'] = [['1000000', 1.0], ['2000005', 0.7], ['0', 0.4],
                                   ['1', 0.3]]
    return doc


def test_a_rolled_up_taxon_is_the_scientific_name(inputs, tmp_path):
    write(tmp_path, 'merged.json', _rollup_doc())
    assert export_camtrap_dp.main(export_args(inputs)) == 0
    out = Path(inputs['out'])
    assert package_errors(out) == []
    animals = {r['observationID'].split('-')[0]: r for r in read_table(out, 'observations')
               if r['scientificName']}
    media = {r['filePath']: r['mediaID'] for r in read_table(out, 'media')}
    fox_box = animals[media['cam_a/img1.jpg']]
    assert (fox_box['scientificName'], fox_box['classificationProbability']) == (
        'canidae', '0.75')                # the taxon and its sum, not 'fox' at 0.45
    labelled = animals[media['cam_b/sub/img3.jpg']]
    assert (labelled['scientificName'], labelled['classificationProbability']) == (
        'mammalia', '0.7')                # not the 'label: deer' entry, not deer at 0.4
    desc = json.loads((out / 'datapackage.json').read_text())
    assert desc['taxonomic'] == [{'scientificName': 'canidae'},      # rank unknown
                                 {'scientificName': 'mammalia'}]
    # the taxonomy CSV gives the taxa their names and ranks (by label or by name)
    write(tmp_path, 'taxa.csv', 'label,scientificName,taxonRank\n'
                                'canidae,Canidae,family\nmammals,Mammalia,class\n'
                                'fox,Vulpes vulpes,species\n')
    assert export_camtrap_dp.main(export_args(inputs, '--taxonomy', inputs['taxonomy'])) == 0
    assert package_errors(out) == []
    names = {r['scientificName'] for r in read_table(out, 'observations')} - {''}
    assert names == {'Canidae', 'Mammalia'}
    desc = json.loads((out / 'datapackage.json').read_text())
    assert desc['taxonomic'] == [{'scientificName': 'Canidae', 'taxonRank': 'family'},
                                 {'scientificName': 'Mammalia', 'taxonRank': 'class'}]


def test_taxon_categories_are_read_with_or_without_the_prefix():
    assert camtrap_dp.taxon_name('taxon: canis lupus') == 'canis lupus'
    assert camtrap_dp.taxon_name('canidae') == 'canidae'
    det = {'classifications': [['1000002', 1.0], ['3', 0.5], ['2000001', 0.8]]}
    assert camtrap_dp.classifier_answer(det, 's', 'f') == camtrap_dp.Answer(
        '2000001', 0.8, True)
    det = {'classifications': [['1000002', 1.0], ['3', 0.5], ['4', 0.3]]}
    assert camtrap_dp.classifier_answer(det, 's', 'f') == camtrap_dp.Answer('3', 0.5, False)


def test_media_root_prefixes_file_paths(inputs, tmp_path):
    doc = json.loads(json.dumps(TIMELAPSE))
    doc['images'][1]['file'] = 'cam_a/night shot #2.jpg'
    (Path(inputs['images']) / 'cam_a/img2.jpg').rename(
        Path(inputs['images']) / 'cam_a/night shot #2.jpg')
    write(tmp_path, 'merged.json', doc)
    out = Path(inputs['out'])
    assert export_camtrap_dp.main(export_args(
        inputs, '--media-root', 'https://data.example.org/survey/photos/')) == 0
    assert package_errors(out) == []
    paths = sorted(r['filePath'] for r in read_table(out, 'media'))
    assert paths == ['https://data.example.org/survey/photos/cam_a/img1.jpg',
                     'https://data.example.org/survey/photos/cam_a/night%20shot%20%232.jpg',
                     'https://data.example.org/survey/photos/cam_b/img4.jpg',
                     'https://data.example.org/survey/photos/cam_b/sub/img3.jpg']
    assert {r['fileName'] for r in read_table(out, 'media')} >= {'night shot #2.jpg'}
    assert export_camtrap_dp.main(export_args(inputs, '--media-root', '..\\photos')) == 0
    paths = sorted(r['filePath'] for r in read_table(out, 'media'))
    assert paths[0] == '../photos/cam_a/img1.jpg'
    # a relative path resolves from the package folder to the photo
    assert (out / paths[0]).resolve() == (Path(inputs['images']) / 'cam_a/img1.jpg').resolve()
    assert export_camtrap_dp.main(export_args(inputs)) == 0        # default: as before
    assert sorted(r['filePath'] for r in read_table(out, 'media'))[0] == 'cam_a/img1.jpg'


@given(st.lists(st.text(st.characters(codec='utf-8', exclude_categories=('Cs', 'Cc')),
                       min_size=1, max_size=6).filter(lambda t: '/' not in t and
                                                      t.strip('.') != ''),
                min_size=1, max_size=4))
def test_any_photo_path_becomes_a_url_under_the_media_root(parts):
    import urllib.parse
    rel = '/'.join(parts).replace('\\', '_')
    root = camtrap_dp.check_media_root('https://example.org/a b/')
    got = camtrap_dp.media_file_path(rel, root)
    assert not any(c.isspace() for c in got[len(root):])
    assert urllib.parse.unquote(got) == f'{root}/{posixpath.normpath(rel)}'


@pytest.mark.parametrize('root', ['/srv/photos', 'C:\\photos', 'file:///x'])
def test_absolute_media_root_is_a_usage_error(inputs, capsys, root):
    with pytest.raises(SystemExit) as e:
        export_camtrap_dp.main(export_args(inputs, '--media-root', root))
    assert e.value.code == 2 and '--media-root' in capsys.readouterr().err
    assert not Path(inputs['out']).exists()


def test_bad_utc_offset_is_a_usage_error(inputs, capsys):
    with pytest.raises(SystemExit) as e:
        export_camtrap_dp.main([*export_args(inputs)[:-2], '--utc-offset', '2h'])
    assert e.value.code == 2 and 'UTC offset' in capsys.readouterr().err
    assert not Path(inputs['out']).exists()


# ---------------------------------------------------------------- the CSV reader

_ids = st.text(st.characters(codec='utf-8', exclude_categories=('Cs', 'Cc', 'Zs', 'Zl', 'Zp')),
               min_size=1, max_size=8)
_folders = st.lists(st.text('abcXYZ_-09', min_size=1, max_size=5), min_size=1, max_size=3
                    ).map('/'.join)


@given(st.lists(st.tuples(_ids, _folders, st.floats(-90, 90), st.floats(-180, 180),
                          st.one_of(st.none(), st.datetimes(
                              min_value=dt.datetime(2000, 1, 1),
                              max_value=dt.datetime(2040, 1, 1)))),
                min_size=1, max_size=6, unique_by=(lambda r: r[0], lambda r: r[1])))
def test_deployments_csv_round_trip(rows):
    buf = ['folder,deploymentID,latitude,longitude,deploymentStart']
    for dep_id, folder, lat, lon, start in rows:
        when = '' if start is None else start.replace(tzinfo=dt.timezone.utc).isoformat()
        cells = [folder, dep_id, repr(lat), repr(lon), when]
        out = io_csv_line(cells)
        buf.append(out)
    got = camtrap_dp.parse_deployments('\n'.join(buf) + '\n')
    assert [(d.deployment_id, '/'.join(d.folder), d.latitude, d.longitude) for d in got] == [
        (r[0].strip(), r[1], r[2], r[3]) for r in rows]
    assert [d.start for d in got] == [
        None if r[4] is None else r[4].replace(tzinfo=dt.timezone.utc) for r in rows]


def io_csv_line(cells: list[str]) -> str:
    import io
    f = io.StringIO()
    csv.writer(f, lineterminator='').writerow(cells)
    return f.getvalue()


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=200),
                 st.lists(st.lists(st.sampled_from(
                     ['folder', 'deploymentID', 'latitude', 'longitude', 'cam', '1.5', '-200',
                      '', '"', 'inf', '2024-01-01T00:00:00Z', '..', '/abs', 'deploymentEnd',
                      'coordinateUncertainty', '0', '12']), max_size=6), max_size=5).map(
                     lambda rows: '\n'.join(','.join(r) for r in rows))))
def test_any_deployments_text_is_read_or_refused_in_one_line(text):
    try:
        got = camtrap_dp.parse_deployments(text)
    except utils.InputError as e:
        assert '\n' not in str(e)
        return
    for d in got:
        assert -90 <= d.latitude <= 90 and -180 <= d.longitude <= 180 and d.deployment_id


# ---------------------------------------------------------------- the demo

def test_demo_new_photos_end_to_end(project, tmp_path):
    """The demo's new photos (detections of the demo run) with synthetic
    classifications and EXIF times written onto copies (the demo's own times are
    not relied on) make a valid package of every photo."""
    src = project / 'new_photos'
    doc = json.loads((src / 'detections.json').read_text())
    doc['classification_categories'] = {'0': 'deer', '1': 'fox', '2': 'rabbit'}
    doc['info']['classifier'] = 'synthetic'
    images = tmp_path / 'images'
    start = dt.datetime(2024, 3, 1, 6, 0, 0)
    for n, img in enumerate(doc['images']):
        for k, det in enumerate(img.get('detections') or []):
            if det['category'] == '1':
                det['classifications'] = [[str((n + k) % 3), 0.9 - 0.1 * k]]
        with Image.open(src / 'images' / img['file']) as im:
            im.load()
            dest = images / img['file']
            dest.parent.mkdir(parents=True, exist_ok=True)
            exif = Image.Exif()
            exif.get_ifd(photo_times.EXIF_IFD)[photo_times.DATETIME_ORIGINAL] = (
                start + dt.timedelta(minutes=7 * n)).strftime(photo_times.EXIF_FORMAT)
            im.save(dest, 'JPEG', exif=exif.tobytes())
    folders = sorted({img['file'].split('/')[0] for img in doc['images']})
    deployments = 'folder,deploymentID,latitude,longitude\n' + ''.join(
        f'{f},{f},{45 + i / 10},{7 + i / 10}\n' for i, f in enumerate(folders))
    i = {'json': write(tmp_path, 'merged.json', doc), 'images': str(images),
         'deployments': write(tmp_path, 'deployments.csv', deployments),
         'out': str(tmp_path / 'package'), 'logdir': str(tmp_path / 'logs')}
    assert export_camtrap_dp.main(export_args(i, '--utc-offset', 'Z')) == 0
    out = Path(i['out'])
    assert package_errors(out) == []
    assert len(read_table(out, 'media')) == len(doc['images'])
    assert {r['deploymentID'] for r in read_table(out, 'deployments')} == set(folders)
    boxes = sum(d['conf'] >= 0.2 for img in doc['images'] for d in img.get('detections') or [])
    obs = read_table(out, 'observations')
    assert sum(r['bboxX'] != '' for r in obs) == boxes
    assert {r['scientificName'] for r in obs} - {''} <= {'deer', 'fox', 'rabbit'}
