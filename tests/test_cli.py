"""Every step's command line: both invocation styles, --help, and the demo end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import REPO, read_json, run_module

# every script of classification/ (a module with a main), the new ones included
STEPS = sorted(p.stem for p in (REPO / 'classification').glob('*.py')
               if 'def main(' in p.read_text() and p.stem != 'commands')


@pytest.mark.parametrize('step', STEPS)
def test_module_help(step):
    proc = run_module(f'classification.{step}', '--help')
    assert 'Example:' in proc.stdout and f'classification.{step}' in proc.stdout
    # multi-line example commands keep their backslash line continuations
    example = proc.stdout.split('Example:', 1)[1].split('\noptions:', 1)[0]
    assert max(len(line) for line in example.splitlines()) <= 100


@pytest.mark.parametrize('script', ['classification/run_classifier.py',
                                    'classification/json_validator.py',
                                    'data_management/megadb/import_dataset.py',
                                    'data_management/megadb/download_images.py',
                                    'data_management/demo_project.py',
                                    'detection/run_detector_batch.py'])
def test_script_path_invocation(script):
    proc = subprocess.run([sys.executable, script, '--help'], cwd=REPO, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert 'Example:' in proc.stdout


def test_usage_errors_exit_2_without_traceback(tmp_path):
    proc = run_module('classification.crop_detections', str(tmp_path / 'missing.json'),
                      str(tmp_path / 'crops'), '-i', str(tmp_path), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith('missing.json: file not found')
    assert 'Traceback' not in proc.stderr


def assert_valid_megadetector_output(path):
    """The independent validator of the megadetector package (installed by make test)."""
    from megadetector.postprocessing.validate_batch_results import (
        ValidateBatchResultsOptions,
        validate_batch_results,
    )
    options = ValidateBatchResultsOptions()
    options.raise_errors = True
    result = validate_batch_results(str(path), options)['validation_results']
    assert result['errors'] == [] and result['warnings'] == [], result


def test_demo_end_to_end(tmp_path):
    """make demo's script at reduced size: every step runs and the JSON is complete."""
    out = tmp_path / 'demo'
    env = {**os.environ, 'DEMO_DIR': str(out), 'DEMO_LOCATIONS': '8', 'DEMO_SEQUENCES': '8',
           'DEMO_NEW_IMAGES': '10', 'DEMO_WIDTH': '800', 'DEMO_HEIGHT': '600',
           'DEMO_EPOCHS': '2', 'DEMO_IMAGE_SIZE': '32', 'PYTHON': sys.executable}
    proc = subprocess.run(['bash', str(REPO / 'demo' / 'run_demo.sh')], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'test-split top-1 accuracy:' in proc.stdout
    merged = read_json(out / 'new_photos' / 'detections_with_classifications.json')
    assert merged['classification_categories'] and merged['info']['classifier']
    n = 0
    for img in merged['images']:
        for d in img.get('detections', []):
            if d['conf'] >= 0.2 and d['category'] == '1':
                assert d['classifications'], img['file']
                n += 1
    assert n > 0
    assert_valid_megadetector_output(out / 'new_photos' / 'detections_with_classifications.json')
    assert set(merged['classification_category_descriptions']) == set(
        merged['classification_categories'])
    assert_valid_megadetector_output(out / 'new_photos' / 'detections_smoothed.json')
    new = out / 'new_photos'
    assert (new / 'sequences.csv').read_text().startswith('seq_id,')
    assert (new / 'camtrap_dp' / 'datapackage.json').is_file()
    # one event per sequence of the sequence CSV (same grouping), each with its observations
    seqs = pd.read_csv(new / 'sequences.csv', keep_default_na=False)
    obs = pd.read_csv(new / 'camtrap_dp' / 'observations.csv', keep_default_na=False)
    events = obs[obs['observationLevel'] == 'event']
    assert set(events['eventID']) == set(seqs['seq_id'])
    animals = events[events['observationType'] == 'animal'].set_index('eventID')
    with_animal = seqs[seqs['top_label'] != ''].set_index('seq_id')
    assert set(animals.index) == set(with_animal.index)
    assert (animals.loc[with_animal.index, 'scientificName'] == with_animal['top_label']).all()
    (run,) = {p.parent for p in (out / 'base_logdir').glob('*/params.json')}
    for report in (out / 'base_logdir' / 'dataset_report', run / 'report',
                   run / 'mislabeled_review'):
        assert (report / 'index.html').is_file(), report
    # the demo ends by saying where the evaluation report is
    assert proc.stdout.strip().splitlines()[-1] == (
        f'open in a browser: {run}/report/index.html (the evaluation report)')
    # rerunning replaces the demo's own folder but never a foreign one
    (tmp_path / 'foreign').mkdir()
    env['DEMO_DIR'] = str(tmp_path / 'foreign')
    proc = subprocess.run(['bash', str(REPO / 'demo' / 'run_demo.sh')], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and 'not made by the demo' in proc.stderr
    json.dumps(merged)


CLI_FLAGS = REPO.parent / 'shared' / 'reference' / 'cli_flags.md'


@pytest.mark.skipif(not CLI_FLAGS.exists(), reason='reference/cli_flags.md not available')
def test_every_original_flag_is_accepted(capsys):
    """Each flag of the original scripts (reference/cli_flags.md) is in its --help."""
    import importlib
    import re
    checked = 0
    for section in re.split(r'^## ', CLI_FLAGS.read_text(), flags=re.M)[1:]:
        head, *lines = section.splitlines()
        module = importlib.import_module(head.strip().removesuffix('.py').replace('/', '.'))
        flags = [f for line in lines if (m := re.match(r'- `([^`]+)`', line))
                 for f in m.group(1).split() if f.startswith('-')]
        with pytest.raises(SystemExit):
            module.parse_args(['--help'])
        help_text = capsys.readouterr().out
        missing = [f for f in flags if not re.search(re.escape(f) + r'\b', help_text)]
        assert missing == [], f'{head}: {missing}'
        checked += len(flags)
    assert checked > 100
