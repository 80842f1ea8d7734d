"""map_classification_categories, aggregate_classifier_probs, and merging dataset crops."""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pandas as pd
import pytest

from classification import aggregate_classifier_probs as acp
from classification import map_classification_categories as mcc
from classification import merge_classification_detection_output as mcdo
from classification import utils
from tests.conftest import REPO, read_json, run_module
from tests.test_taxonomy import TAXONOMY


@pytest.fixture
def files(tmp_path):
    (tmp_path / 'tax.csv').write_text(TAXONOMY)
    classifier = {'wtd': {'dataset_labels': {'ds1': ['white-tailed deer']}},
                  'elk': {'dataset_labels': {'ds1': ['elk']}},
                  'deer_generic': {'dataset_labels': {'ds2': ['deer']}},
                  'turkey': {'taxa': [{'level': 'class', 'name': 'aves'}]},
                  'mystery': {'dataset_labels': {'ds2': ['unknown animal']}}}
    targets = {'cervid': {'taxa': [{'level': 'family', 'name': 'cervidae'}]},
               'bird': {'taxa': [{'level': 'class', 'name': 'aves'}]}}
    (tmp_path / 'clf.json').write_text(json.dumps(classifier))
    (tmp_path / 'tgt.json').write_text(json.dumps(targets))
    labels = ['elk', 'mystery', 'turkey', 'wtd', 'deer_generic', 'not_in_spec']
    (tmp_path / 'idx.json').write_text(json.dumps(utils.label_index_dict(labels)))
    return tmp_path


def test_every_classifier_label_goes_to_one_target(files):
    assert mcc.main([str(files / 'tgt.json'), str(files / 'clf.json'), str(files / 'tax.csv'),
                     '-o', str(files / 'map.json'), '-i', str(files / 'idx.json')]) == 0
    mapping = read_json(files / 'map.json')
    assert mapping == {'cervid': ['elk', 'wtd', 'deer_generic'], 'bird': ['turkey'],
                       'other': ['mystery', 'not_in_spec']}
    members = [m for ms in mapping.values() for m in ms]
    assert sorted(members) == sorted(utils.load_label_index(files / 'idx.json'))


def test_equal_overlap_is_an_error(files):
    tgt = {'a': {'dataset_labels': {'ds1': ['elk']}},
           'b': {'dataset_labels': {'ds1': ['white-tailed deer']}}}
    clf = {'deer': {'taxa': [{'level': 'family', 'name': 'cervidae'}],
                    'exclude': {'dataset_labels': {'ds2': ['deer']}}}}
    (files / 't2.json').write_text(json.dumps(tgt))
    (files / 'c2.json').write_text(json.dumps(clf))
    rc = utils.run_cli(lambda: mcc.main([str(files / 't2.json'), str(files / 'c2.json'),
                                         str(files / 'tax.csv'), '-o', str(files / 'm.json')]))
    assert rc == 2


def test_aggregate_sums_columns():
    df = pd.DataFrame({'path': ['a', 'b'], 'x': [0.1, 0.5], 'y': [0.2, 0.25], 'z': [0.7, 0.25]})
    out = acp.aggregate(df, {'xy': ['x', 'y'], 'other': ['z']})
    assert list(out.columns) == ['path', 'xy', 'other']
    np.testing.assert_allclose(out['xy'], [0.3, 0.75])
    with pytest.raises(utils.InputError, match='in no target'):
        acp.aggregate(df, {'xy': ['x', 'y']})
    with pytest.raises(utils.InputError, match='not a column'):
        acp.aggregate(df, {'xy': ['x', 'y', 'w'], 'other': ['z']})
    with pytest.raises(utils.InputError, match='in both'):
        acp.aggregate(df, {'xy': ['x', 'y'], 'other': ['z', 'x']})


def test_pipe_with_aggregation(project, tmp_path, request):
    """run_classifier ... - | aggregate_classifier_probs - ... | merge ... -"""
    trained_run = request.getfixturevalue('trained_run')
    base_logdir = request.getfixturevalue('base_logdir')
    from classification import crop_detections
    det = project / 'new_photos' / 'detections.json'
    crop_detections.main([str(det), str(tmp_path / 'crops'), '-i',
                          str(project / 'new_photos' / 'images'), '-t', '0.2',
                          '--logdir', str(tmp_path)])
    labels = utils.load_label_index(base_logdir / 'label_index.json')
    mapping = {'mammal': [lab for lab in labels if lab != 'turkey'], 'bird': ['turkey']}
    (tmp_path / 'map.json').write_text(json.dumps(mapping))
    (compiled,) = trained_run.glob('ckpt_*_compiled.pt')
    one = run_module('classification.run_classifier', str(compiled), str(tmp_path / 'crops'),
                     '-', '-d', str(det), '-t', '0.2', '-c', str(base_logdir / 'label_index.json'),
                     '--image-size', '32', '--num-workers', '0')
    two = run_module('classification.aggregate_classifier_probs', '-', '-t',
                     str(tmp_path / 'map.json'), '-o', '-', '-i', str(tmp_path / 'li.json'),
                     stdin=one.stdout)
    three = run_module('classification.merge_classification_detection_output', '-',
                       str(tmp_path / 'li.json'), '-j', str(det), '-o', '-', '-n', 'agg',
                       '-t', '0.0', stdin=two.stdout)
    merged = json.loads(three.stdout)
    assert merged['classification_categories'] == {'0': 'mammal', '1': 'bird'}
    n = 0
    for img in merged['images']:
        for d in img.get('detections', []):
            if d['conf'] >= 0.2 and d['category'] == '1':
                assert sum(p for _, p in d['classifications']) == pytest.approx(1.0, abs=1e-3)
                n += 1
    assert n > 0


def test_the_readme_pipe_runs_as_written_from_a_clean_folder(project, tmp_path, request):
    """The README's "As one pipe" block, verbatim, in a folder holding only its inputs
    (merge must not read label_index_remapped.json before aggregate writes it)."""
    import re
    import subprocess
    trained_run = request.getfixturevalue('trained_run')
    base_logdir = request.getfixturevalue('base_logdir')
    text = (REPO / 'README.md').read_text()
    block = re.search(r'### As one pipe\n```bash\n(.*?)```', text, re.S)
    assert block is not None
    from classification import crop_detections
    det = project / 'new_photos' / 'detections.json'
    assert crop_detections.main([str(det), str(tmp_path / 'crops'), '-i',
                                 str(project / 'new_photos' / 'images'), '-t', '0.2',
                                 '--logdir', str(tmp_path / 'logs')]) == 0
    clean = tmp_path / 'clean'
    clean.mkdir()
    (compiled,) = trained_run.glob('ckpt_*_compiled.pt')
    (clean / 'model_compiled.pt').symlink_to(compiled)
    (clean / 'crops').symlink_to(tmp_path / 'crops')
    (clean / 'detections.json').symlink_to(det)
    (clean / 'label_index.json').symlink_to(base_logdir / 'label_index.json')
    labels = utils.load_label_index(base_logdir / 'label_index.json')
    (clean / 'target_to_classifier_labels.json').write_text(json.dumps(
        {'mammal': [lab for lab in labels if lab != 'turkey'], 'bird': ['turkey']}))
    proc = subprocess.run(['bash', '-o', 'pipefail', '-c', block.group(1)], cwd=clean,
                          capture_output=True, text=True,
                          env={**os.environ, 'PYTHONPATH': str(REPO), 'PATH': os.pathsep.join(
                              [os.path.dirname(sys.executable), os.environ['PATH']])})
    assert proc.returncode == 0, proc.stderr[-3000:]
    merged = json.loads((clean / 'merged.json').read_text())
    assert merged['classification_categories'] == {'0': 'mammal', '1': 'bird'}
    assert any(d.get('classifications') for img in merged['images']
               for d in img.get('detections') or [])


def test_merge_queried_images_mode(base_logdir, trained_run, tmp_path):
    root = base_logdir.parent
    out = tmp_path / 'merged.json'
    assert mcdo.main([str(trained_run / 'outputs_val.csv.gz'), str(base_logdir / 'label_index.json'),
                      '-q', str(base_logdir / 'queried_images.json'), '-c', str(root / 'mdcache'),
                      '-v', '5a', '-o', str(out), '-n', 'mine', '--label', 'first']) == 0
    merged = read_json(out)
    val = pd.read_csv(trained_run / 'outputs_val.csv.gz')
    labels = utils.load_label_index(base_logdir / 'label_index.json')
    n_classified = sum('classifications' in d for img in merged['images']
                       for d in img['detections'])
    assert n_classified == len(val)
    queried = read_json(base_logdir / 'queried_images.json')
    for img in merged['images']:
        assert img['file'] in queried
        for d in img['detections']:
            if 'classifications' in d:
                first = d['classifications'][0]
                true = queried[img['file']]['label'][0]
                assert first == [str(labels.index(true) + 1_000_000), 1.0]
        if 'bbox' in queried[img['file']]:
            assert all(d['conf'] == 1.0 for d in img['detections'])
    assert merged['classification_categories']['1000000'] == f'label: {labels[0]}'
    from tests.test_cli import assert_valid_megadetector_output
    assert_valid_megadetector_output(out)


def test_relative_conf_and_label_only():
    df = pd.DataFrame({'path': ['a.jpg___crop00_mdv5a.jpg'], 'label': ['b'],
                       'a': [0.7], 'b': [0.2], 'c': [0.1]})
    lists = mcdo.classification_lists(df, ['a', 'b', 'c'], 0.1, None, relative_conf=True)
    assert lists == [[['0', 0.5]]]
    only_label = df[['path', 'label']]
    assert mcdo.classification_lists(only_label, ['a', 'b', 'c'], 0.1) == [[['1000001', 1.0]]]
    with pytest.raises(utils.InputError, match='relative-conf'):
        mcdo.classification_lists(df.drop(columns='label'), ['a', 'b', 'c'], 0.1,
                                  relative_conf=True)


def test_select_rows():
    df = pd.DataFrame({'path': [f'{d}/{i}.jpg___crop00.jpg' for d in ('x', 'y') for i in range(6)],
                       'label': ['p', 'q', 'q', 'q', 'q', 'q'] * 2})
    assert len(mcdo.select_rows(df, ['x'], None, 0)) == 6
    s = mcdo.select_rows(df, None, 3, seed=4)
    assert s['label'].value_counts().to_dict() == {'q': 3, 'p': 2}
    assert s.equals(mcdo.select_rows(df, None, 3, seed=4))


def test_merge_needs_exactly_one_input_mode():
    with pytest.raises(SystemExit):
        mcdo.parse_args(['c.csv', 'l.json', '-o', 'o', '-n', 'x'])
    with pytest.raises(SystemExit):
        mcdo.parse_args(['c.csv', 'l.json', '-o', 'o', '-n', 'x', '-q', 'q.json'])
