"""Bad input of every kind: one line on stderr naming what is wrong, exit code 2."""
from __future__ import annotations

import json

import pytest

from tests.conftest import run_module

TAXONOMY = ('dataset_name,query,taxonomy_level,scientific_name,taxonomy_string\n'
            'ds,deer,family,cervidae,"[(1, \'family\', \'cervidae\', [])]"\n')


def _write(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    return str(tmp_path / name)


CASES = {
    # label specifications
    'spec not JSON': (lambda t: ['classification.json_validator', _write(t, 's.json', '{x'),
                                 _write(t, 't.csv', TAXONOMY)], 's.json: not valid JSON'),
    'unknown taxon': (lambda t: ['classification.json_validator', _write(
        t, 's.json', json.dumps({'x': {'taxa': [{'level': 'genus', 'name': 'felis'}]}})),
        _write(t, 't.csv', TAXONOMY)], "unknown taxon genus 'felis'"),
    'unknown dataset label': (lambda t: ['classification.json_validator', _write(
        t, 's.json', json.dumps({'x': {'dataset_labels': {'ds': ['elk']}}})),
        _write(t, 't.csv', TAXONOMY)], "unknown dataset label 'elk'"),
    'label claimed twice': (lambda t: ['classification.json_validator', _write(
        t, 's.json', json.dumps({'x': {'dataset_labels': {'ds': ['deer']}},
                                 'y': {'taxa': [{'level': 'family', 'name': 'cervidae'}]}})),
        _write(t, 't.csv', TAXONOMY)], 'already in label'),
    'malformed CSV spec row': (lambda t: ['classification.csv_to_json',
                                          _write(t, 's.csv', 'deer,family\n'), '-'],
                               's.csv:1: expected 3 columns'),
    # taxonomy CSV
    'taxonomy missing column': (lambda t: ['classification.json_validator', _write(
        t, 's.json', json.dumps({'x': {'dataset_labels': {'ds': ['deer']}}})),
        _write(t, 't.csv', 'dataset_name,query\nds,deer\n')], 'lacks column'),
    'taxonomy string not a literal': (lambda t: ['classification.json_validator', _write(
        t, 's.json', json.dumps({'x': {'dataset_labels': {'ds': ['deer']}}})),
        _write(t, 't.csv', TAXONOMY.replace("[(1, 'family', 'cervidae', [])]", 'os.system(1)'))],
        't.csv:2: taxonomy_string'),
    # COCO files
    'COCO unknown image': (lambda t: ['data_management.megadb.import_dataset',
                                      str(t / 'm.sqlite'), '--dataset', 'ds', '--coco', _write(
        t, 'c.json', json.dumps({'images': [], 'categories': [{'id': 1, 'name': 'deer'}],
                                 'annotations': [{'image_id': 5, 'category_id': 1}]}))],
        'annotations[0]: unknown image_id 5'),
    'COCO not an object': (lambda t: ['data_management.megadb.import_dataset',
                                      str(t / 'm.sqlite'), '--dataset', 'ds', '--coco',
                                      _write(t, 'c.json', '[1, 2]')], 'expected a COCO'),
    'sequence without images': (lambda t: ['data_management.megadb.import_dataset',
                                           str(t / 'm.sqlite'), '--dataset', 'ds', '--sequences',
                                           _write(t, 'q.json', json.dumps(
                                               [{'dataset': 'ds', 'seq_id': 'a',
                                                 'class': ['x'], 'images': []}]))],
                                '(ds/a): "images" must be a non-empty list'),
    # mislabeled CSV
    'mislabeled CSV without file column': (lambda t: [
        'classification.json_validator', _write(
            t, 's.json', json.dumps({'x': {'dataset_labels': {'ds': ['deer']}}})),
        _write(t, 't.csv', TAXONOMY), '--megadb', _db(t), '-o', str(t / 'o'),
        '-m', _folder(t, 'mis', 'ds.csv', 'name,correct_class\na.jpg,\n')],
        'needs a "file" column'),
    'Timelapse export without flag column': (lambda t: [
        'classification.save_mislabeled', str(t), _write(t, 'r.csv', 'File,RelativePath\na,ds\n')],
        "lacks column(s) ['mislabeled']"),
    # detections
    'detections with a bad box': (lambda t: [
        'classification.crop_detections', _write(t, 'd.json', json.dumps(
            {'images': [{'file': 'a.jpg', 'detections': [
                {'category': '1', 'conf': 0.9, 'bbox': [0, 0]}]}]})), str(t / 'c'), '-i', str(t)],
        'a.jpg: detection 0: "bbox"'),
}


def _db(tmp_path):
    from data_management.megadb.base import open_megadb
    path = tmp_path / 'db.sqlite'
    with open_megadb(str(path)) as db:
        db.upsert_dataset({'dataset_name': 'ds'})
        db.replace_sequences('ds', [{'dataset': 'ds', 'seq_id': 's', 'class': ['deer'],
                                     'images': [{'file': 'a.jpg'}]}])
    return str(path)


def _folder(tmp_path, name, file, text):
    (tmp_path / name).mkdir()
    (tmp_path / name / file).write_text(text)
    return str(tmp_path / name)


@pytest.mark.parametrize('case', sorted(CASES))
def test_bad_input_gives_one_line_and_exit_2(case, tmp_path):
    make_args, expected = CASES[case]
    module, *args = make_args(tmp_path)
    proc = run_module(module, *args, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith('error: ')]
    assert len(lines) == 1 and expected in lines[0], proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr
