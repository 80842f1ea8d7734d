"""Hostile label inputs: files a person writes or edits (label specifications, mislabeled
lists, Timelapse reviews, COCO and sequence imports, detections to cache, classifier
outputs) that used to give a silent wrong result or a half-written output.

Each refusal runs the real command in a subprocess and asserts exit code 2, exactly
one ``error:`` line naming what is wrong, no traceback, and that nothing under the
case's folder changed (every file keeps its bytes; no file appears).
"""
from __future__ import annotations

import gzip
import json
import re
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import run_module, snapshot, write

SPEC = {'deer': {'taxa': [{'level': 'family', 'name': 'cervidae'}]},
        'fox': {'taxa': [{'level': 'genus', 'name': 'vulpes'}]}}




def refused(t: Path, module: str, args: list[str], fragment: str) -> str:
    """Runs the step; asserts the one-line refusal and that ``t`` is unchanged."""
    before = snapshot(t)
    proc = run_module(module, *args, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if re.match(r'([\w.]+\.py: )?error: ', ln)]
    assert len(lines) == 1 and fragment in lines[0], proc.stderr[-2000:]
    assert snapshot(t) == before
    return lines[0]


def validator_args(project: Path, spec: str, db: str, out: Path, *flags: str) -> list[str]:
    return [spec, str(project / 'taxonomy.csv'), '--megadb', db, '-o', str(out), *flags]


# ------------------------------------------------------------------ 1. label spec keys

def test_label_spec_with_a_key_given_twice_is_refused(project, megadb, tmp_path):
    text = ('{"deer": {"taxa": [{"level": "family", "name": "cervidae"}]}, '
            '"deer": {"taxa": [{"level": "genus", "name": "vulpes"}]}}')
    spec = write(tmp_path, 's.json', text)
    write(tmp_path, 'o/queried_images.json', {'old': 'run'})
    refused(tmp_path, 'classification.json_validator',
            validator_args(project, spec, str(megadb), tmp_path / 'o'),
            "key 'deer' is given twice")


# ------------------------------------------------------------------ 2. --megadb not a MegaDB

def _other_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute('CREATE TABLE notes (x TEXT)')
    conn.commit()
    conn.close()


def _partial_megadb(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute('CREATE TABLE datasets (dataset_name TEXT PRIMARY KEY, doc TEXT)')
    conn.commit()
    conn.close()


@pytest.mark.parametrize('module', ['classification.json_validator',
                                    'data_management.megadb.import_dataset'])
@pytest.mark.parametrize('make, fragment', [
    (lambda p: p.write_bytes(b''), 'an empty database or empty file'),
    (lambda p: p.write_text('not a database at all\n' * 50), 'not an SQLite MegaDB'),
    (_other_sqlite, "no table 'datasets'"),
    (_partial_megadb, "no table 'sequences'"),
], ids=['empty file', 'text file', 'other SQLite database', 'partial schema'])
def test_megadb_that_is_not_a_megadb_is_refused_and_never_written(
        project, module, make, fragment, tmp_path):
    db = tmp_path / 'm.sqlite'
    make(db)
    if module == 'classification.json_validator':
        args = validator_args(project, write(tmp_path, 's.json', SPEC), str(db),
                              tmp_path / 'o')
    else:
        args = [str(db), '--dataset', 'demo_forest', '--coco',
                str(project / 'coco' / 'demo_forest.json')]
    line = refused(tmp_path, module, args, fragment)
    assert 'm.sqlite' in line


# ------------------------------------------------------------------ 3. classifier outputs

def _outputs(folder: Path, split: str, rows: list[str]) -> None:
    text = 'path,label,weight,deer,fox\n' + ''.join(r + '\n' for r in rows)
    with gzip.open(folder / f'outputs_{split}.csv.gz', 'wt') as f:
        f.write(text)


GOOD_ROWS = ['ds1/loc/a.jpg___crop00_mdv5a.jpg,deer,1,0.05,0.95',
             'ds2/b.jpg___crop00.jpg,fox,1,0.9,0.1']


@pytest.mark.parametrize('row, fragment', [
    ('ds1/c.jpg___crop00.jpg,deer,1,nan,0.5', 'is not a probability'),
    ('ds1/c.jpg___crop00.jpg,deer,1,0.5,7', 'is not a probability'),
    ('ds1/c.jpg___crop00.jpg,deer,1,-0.1,0.5', 'is not a probability'),
    ('ds1/c.jpg___crop00.jpg,deer,1,abc,0.5', 'is not a probability'),
    ('ds1/c.jpg___crop00.jpg,deer,1,,0.5', 'is not a probability'),
    ('noslash.jpg,deer,1,0.0,1.0', 'not a crop file name'),
    ('../../etc/x.jpg___crop00.jpg,deer,1,0.0,1.0', 'path would leave'),
], ids=['nan', 'seven', 'negative', 'text', 'empty', 'bad crop name', 'crop leaving'])
def test_classifier_outputs_with_a_bad_row_in_any_split_write_nothing(row, fragment,
                                                                      tmp_path):
    _outputs(tmp_path, 'train', GOOD_ROWS)
    _outputs(tmp_path, 'val', GOOD_ROWS)
    _outputs(tmp_path, 'test', [*GOOD_ROWS, row])      # the last split read is the bad one
    refused(tmp_path, 'classification.identify_mislabeled_candidates',
            [str(tmp_path), '--margin', '0'], fragment)
    assert not list(tmp_path.glob('mislabeled_candidates_*'))


# ------------------------------------------------------------------ 4. COCO and sequences

def _coco(project: Path, edit) -> dict:
    doc = json.loads((project / 'coco' / 'demo_forest.json').read_text())
    edit(doc)
    return doc


def _set_image(i: int, **changes):
    return lambda d: d['images'][i].update(changes)


def _repeat_annotation_id(d: dict) -> None:
    d['annotations'].append(dict(d['annotations'][1], category_id=d['categories'][0]['id']))


@pytest.mark.parametrize('edit, fragment', [
    (_set_image(0, location=['a', 'b']), '"location" must be'),
    (_set_image(0, location={'x': 1}), '"location" must be'),
    (_set_image(0, width=-640), '"width" must be a number of pixels above 0'),
    (_set_image(0, height=0), '"height" must be a number of pixels above 0'),
    (_set_image(0, width=True), '"width" must be'),
    (_set_image(1, file_name='loc_00/a\x00b.jpg'), 'control character'),
    (_set_image(1, file_name='loc_00/a\x1bb.jpg'), 'control character'),
    (_set_image(1, file_name='loc_00/../../b.jpg'), 'path would leave'),
    (_set_image(1, file_name='/abs/b.jpg'), 'expected a relative image path'),
    (_set_image(1, file_name=''), '"file_name" must be a relative path'),
    (_repeat_annotation_id, 'duplicate annotation id'),
    (_set_image(0, frame_num='3'), '"frame_num" must be an integer'),
    (_set_image(0, seq_id=['s']), '"seq_id" must be'),
    (_set_image(0, datetime=[2020]), '"datetime" must be a string'),
], ids=['location list', 'location object', 'negative width', 'zero height', 'width true',
        'NUL in file_name', 'escape in file_name', 'dotdot file_name', 'absolute file_name',
        'empty file_name', 'repeated annotation id', 'frame_num text', 'seq_id list',
        'datetime list'])
def test_coco_import_refuses_bad_image_fields(project, megadb, edit, fragment, tmp_path):
    db = tmp_path / 'm.sqlite'
    db.write_bytes(megadb.read_bytes())
    coco = write(tmp_path, 'c.json', _coco(project, edit))
    line = refused(tmp_path, 'data_management.megadb.import_dataset',
                   [str(db), '--dataset', 'dsx', '--coco', coco], fragment)
    assert 'c.json' in line


def test_coco_sequence_with_two_locations_is_refused(project, megadb, tmp_path):
    def edit(d):
        first = d['images'][0]
        d['images'].append(dict(first, id='extra', file_name='loc_00/extra.jpg',
                                location='elsewhere'))
        d['annotations'].append(dict(d['annotations'][0], id='extra-ann', image_id='extra'))
    db = tmp_path / 'm.sqlite'
    db.write_bytes(megadb.read_bytes())
    refused(tmp_path, 'data_management.megadb.import_dataset',
            [str(db), '--dataset', 'dsx', '--coco', write(tmp_path, 'c.json',
                                                          _coco(project, edit))],
            'differs from')


SEQ = {'dataset': 'dsx', 'seq_id': 's1', 'location': 'L', 'class': ['deer'],
       'images': [{'file': 'a/1.jpg'}, {'file': 'a/2.jpg'}]}


@pytest.mark.parametrize('seqs, fragment', [
    ([{**SEQ, 'location': ['a', 'b']}], '"location" must be'),
    ([{**SEQ, 'images': [{'file': 'a/\x00.jpg'}]}], 'control character'),
    ([{**SEQ, 'images': [{'file': 'a/../../x.jpg'}]}], 'path would leave'),
    ([{**SEQ, 'images': [{'file': '/x.jpg'}]}], 'expected a relative image path'),
    ([{**SEQ, 'images': [{'file': 'a/1.jpg', 'datetime': ['x']}]}], '"datetime" must be'),
    ([{**SEQ, 'images': [{'file': 'a/1.jpg'}, {'file': 'a/1.jpg'}]}], 'is listed twice'),
    ([SEQ, {**SEQ, 'seq_id': 's2', 'images': [{'file': 'a/1.jpg'}]}],
     "is in sequences 's1' and 's2'"),
], ids=['location list', 'NUL in file', 'dotdot file', 'absolute file', 'datetime list',
        'file twice in a sequence', 'file in two sequences'])
def test_sequence_import_refuses_bad_fields(megadb, seqs, fragment, tmp_path):
    db = tmp_path / 'm.sqlite'
    db.write_bytes(megadb.read_bytes())
    refused(tmp_path, 'data_management.megadb.import_dataset',
            [str(db), '--dataset', 'dsx', '--sequences', write(tmp_path, 's.json', seqs)],
            fragment)


# ------------------------------------------------------------------ 5. caching detections

def _dets(project: Path, edit) -> dict:
    doc = json.loads((project / 'new_photos' / 'detections.json').read_text())
    edit(doc)
    return doc


def _set_file(i: int, file: str):
    return lambda d: d['images'][i].update(file=file)


def _prefixed_twin(d: dict) -> None:
    d['images'][0]['file'] = 'newds/' + d['images'][1]['file']


def _dotted_twin(d: dict) -> None:
    d['images'][0]['file'] = d['images'][1]['file'].replace('/', '/./', 1)


@pytest.mark.parametrize('edit, fragment', [
    (_set_file(0, '../../x.jpg'), 'path would leave'),
    (_set_file(0, '/abs/x.jpg'), 'expected a relative image path'),
    (_set_file(0, ''), 'expected a relative image path'),
    (_set_file(0, 'newds/'), 'expected a relative image path'),
    (_set_file(0, 'cam_00/a\nb.jpg'), 'control character'),
    (_prefixed_twin, 'is the same image as'),
    (_dotted_twin, 'is listed twice'),           # caught where detections files are read
], ids=['dotdot', 'absolute', 'empty', 'only the prefix', 'newline', 'prefixed twin',
        'dotted twin'])
def test_caching_refuses_bad_or_colliding_paths(project, edit, fragment, tmp_path):
    doc = _dets(project, edit)
    write(tmp_path, 'mdc/v5a/newds.json', {'info': {}, 'detection_categories': doc.get(
        'detection_categories', {'1': 'animal'}), 'images': []})
    refused(tmp_path, 'classification.cache_batchapi_outputs',
            [write(tmp_path, 'd.json', doc), '-f', 'detections', '-d',
             'newds', '-c', str(tmp_path / 'mdc'), '-v', '5a'], fragment)


# ------------------------------------------------------------------ 6. json_validator -m

def test_mislabeled_list_with_conflicting_rows_is_refused(project, megadb, tmp_path):
    write(tmp_path, 'mis/demo_forest.csv', 'file,correct_class\nloc_00/s000_f0.jpg,red fox\n'
          'loc_00/s001_f0.jpg,\nloc_00/s000_f0.jpg,cottontail\n')
    write(tmp_path, 'o/queried_images.json', {'old': 'run'})
    line = refused(tmp_path, 'classification.json_validator',
                   validator_args(project, write(tmp_path, 's.json', SPEC), str(megadb),
                                  tmp_path / 'o', '-m', str(tmp_path / 'mis')),
                   "'loc_00/s000_f0.jpg' is listed again")
    assert 'demo_forest.csv: row 4' in line


def test_mislabeled_list_with_repeated_identical_rows_is_accepted(project, megadb, tmp_path):
    write(tmp_path, 'mis/demo_forest.csv', 'file,correct_class\nloc_00/s000_f0.jpg,red fox\n'
          'loc_00/s000_f0.jpg,Red Fox\n')
    proc = run_module('classification.json_validator', *validator_args(
        project, write(tmp_path, 's.json', SPEC), str(megadb), tmp_path / 'o', '-m',
        str(tmp_path / 'mis')), check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / 'o' / 'queried_images.json').exists()


# ------------------------------------------------------------------ 7. save_mislabeled

HEADER = 'File,RelativePath,mislabeled,correct_class\n'


@pytest.mark.parametrize('rows, fragment', [
    ('a.jpg,ds,true,deer\na.jpg,ds,true,fox\n', 'flagged again with another correct_class'),
    ('a.jpg,ds,true,deer\nb.jpg,ds,maybe,deer\n', "mislabeled 'maybe' is not a yes/no value"),
    ('a.jpg,../../evil,true,deer\n', 'path would leave'),
    ('a.jpg,/ds,true,deer\n', 'expected a relative image path'),
    ('/etc/passwd,ds,true,deer\n', 'expected a relative image path'),
    ('"a\nb.jpg",ds,true,deer\n', 'control character'),
    ('a.jpg,,true,deer\n', 'RelativePath must start with the dataset folder'),
], ids=['same image two classes', 'unknown flag', 'dotdot dataset', 'absolute folder',
        'absolute file', 'newline in file', 'no dataset'])
def test_review_csv_with_bad_rows_is_refused(rows, fragment, tmp_path):
    write(tmp_path, 'cont/megadb_mislabeled/ds.csv', 'file,correct_class\nold.jpg,elk\n')
    refused(tmp_path, 'classification.save_mislabeled',
            [str(tmp_path / 'cont'), write(tmp_path, 'r.csv', HEADER + rows)], fragment)
    assert not (tmp_path / 'megadb_mislabeled').exists()


def test_review_is_all_or_nothing_across_datasets(tmp_path):
    write(tmp_path, 'cont/megadb_mislabeled/zz.csv', 'path,label\nold.jpg,elk\n')
    refused(tmp_path, 'classification.save_mislabeled',
            [str(tmp_path / 'cont'), write(tmp_path, 'r.csv', HEADER + 'a.jpg,aa,true,deer\n'
                                           'b.jpg,zz,yes,fox\n')],
            'lacks column(s) file, correct_class')
    assert not (tmp_path / 'cont' / 'megadb_mislabeled' / 'aa.csv').exists()


# ------------------------------------------------------------------ 8. csv_to_json

@pytest.mark.parametrize('rows, fragment', [
    ('deer,max_count,5\ndeer,max_count,7\n', 'max_count 7'),
    ('deer,max_count,5\ndeer,prioritize,"[[\'a\']]"\ndeer,prioritize,"[[\'b\']]"\n',
     'prioritize'),
], ids=['max_count', 'prioritize'])
def test_csv_spec_with_conflicting_single_values_is_refused(rows, fragment, tmp_path):
    out = write(tmp_path, 'spec.json', {'old': 'spec'})
    line = refused(tmp_path, 'classification.csv_to_json',
                   [write(tmp_path, 's.csv', 'deer,family,cervidae\n' + rows), out],
                   fragment)
    assert 'differs from' in line and "'deer'" in line


def test_csv_spec_with_repeated_rows_adds_up(tmp_path):
    spec = write(tmp_path, 's.csv', 'deer,family,cervidae\ndeer,max_count,5\n'
                 'deer,genus,odocoileus\ndeer,max_count,5\n')
    proc = run_module('classification.csv_to_json', spec, '-')
    js = json.loads(proc.stdout)
    assert js['deer']['max_count'] == 5 and len(js['deer']['taxa']) == 2


def test_failed_import_into_a_new_database_leaves_no_file(tmp_path):
    seqs = [SEQ, {**SEQ, 'seq_id': 's2', 'images': [{'file': 'a/1.jpg'}]}]
    refused(tmp_path, 'data_management.megadb.import_dataset',
            [str(tmp_path / 'new.sqlite'), '--dataset', 'dsx', '--sequences',
             write(tmp_path, 's.json', seqs)], "is in sequences 's1' and 's2'")
    assert not (tmp_path / 'new.sqlite').exists()
