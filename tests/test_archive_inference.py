"""run_classifier at archive scale: resume after SIGKILL, shards, torchrun, engines,
classifying straight from photos, and the readers of shard files."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from classification import classifier_output, engines, run_classifier, shards, utils
from tests.conftest import REPO, run_module

DETS = ('new_photos', 'detections.json')


def classify(model, crops, out, *flags, env=None, check=True):
    """run_classifier in a subprocess with one thread (exact comparisons)."""
    proc = subprocess.run(
        [sys.executable, '-m', 'classification.run_classifier', str(model), str(crops),
         str(out), '--num-workers', '0', '--batch-size', '1', *flags], text=True,
        capture_output=True, cwd=REPO,
        env={**os.environ, 'OMP_NUM_THREADS': '1', **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr[-3000:])
    return proc


@pytest.fixture(scope='module')
def baseline(model_files, new_crops, tmp_path_factory):
    """The unsharded, uninterrupted output (torch engine, float32)."""
    out = tmp_path_factory.mktemp('base') / 'all.csv'
    classify(model_files[0], new_crops, out, '--engine', 'torch', '--precision', 'fp32')
    return out


def test_a_killed_run_resumes_to_the_same_output(model_files, new_crops, baseline, tmp_path):
    out = tmp_path / 'o.csv.gz'
    proc = classify(model_files[0], new_crops, out, '--engine', 'torch', '--precision',
                    'fp32', env={run_classifier.KILL_ENV: '3'}, check=False)
    assert proc.returncode == -9
    part = classifier_output.part_path(str(out))
    assert not out.exists() and part.exists()
    with open(part, 'a') as f:                  # a row half-written when the kill came
        f.write('cam_9/x.jpg___crop00_mdv5a.jpg,0.1')
    proc = classify(model_files[0], new_crops, out, '--engine', 'torch', '--precision', 'fp32')
    assert 'resuming: 3 crops done' in proc.stderr
    assert not part.exists()
    assert pd.read_csv(out).equals(pd.read_csv(baseline))


def test_a_part_file_of_another_run_is_refused(model_files, new_crops, tmp_path):
    out = tmp_path / 'o.csv'
    classify(model_files[0], new_crops, out, '--engine', 'torch', '--precision', 'fp32',
             env={run_classifier.KILL_ENV: '1'}, check=False)
    proc = classify(model_files[0], new_crops, out, '--engine', 'torch', '--precision', 'bf16',
                    check=False)
    assert proc.returncode == 2 and 'a partial run with another model' in proc.stderr
    assert not out.exists()


def test_shards_and_torchrun_give_exactly_the_unsharded_output(model_files, new_crops, project,
                                                              baseline, tmp_path):
    model = model_files[0]
    flags = ('--engine', 'torch', '--precision', 'fp32')
    for k in (1, 2):
        classify(model, new_crops, tmp_path / f's{k}.csv', *flags, '--shard', f'{k}/2')
    base = pd.read_csv(baseline)
    shards = [pd.read_csv(tmp_path / f's{k}.csv') for k in (1, 2)]
    assert 0 < len(shards[0]) < len(base)
    assert pd.concat(shards, ignore_index=True).equals(base)
    assert json.loads((tmp_path / 's2.csv.shard.json').read_text())['shard'] == 2
    assert classifier_output.read_outputs([str(tmp_path / 's*.csv')]).equals(base)
    # the readers take the shard files as one run
    labels_json = model_files[1]
    dets = project.joinpath(*DETS)
    for src, name in ((str(baseline), 'one'), (str(tmp_path / 's*.csv'), 'sharded')):
        run_module('classification.merge_classification_detection_output', src,
                   str(labels_json), '-o', str(tmp_path / f'{name}.json'), '-n', 'clf',
                   '-j', str(dets))
    one, sharded = (json.loads((tmp_path / f'{n}.json').read_text()) for n in ('one', 'sharded'))
    assert one['images'] == sharded['images']
    # torchrun: two processes, one output file
    out = tmp_path / 'tr.csv'
    subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone',
                    '--nproc_per_node', '2', '-m', 'classification.run_classifier', str(model),
                    str(new_crops), str(out), '--num-workers', '0', '--batch-size', '1',
                    *flags], check=True, cwd=REPO, capture_output=True,
                   env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert out.read_bytes() == baseline.read_bytes()
    assert not list(tmp_path.glob('tr.csv*.part'))


def test_shard_files_that_are_not_one_run_are_refused(model_files, new_crops, tmp_path):
    model = model_files[0]
    for k in (1, 2, 3):
        classify(model, new_crops, tmp_path / f'a{k}.csv', '--engine', 'torch', '--precision',
                 'fp32', '--shard', f'{k}/3')
    classify(model, new_crops, tmp_path / 'b1.csv', '--engine', 'torch', '--precision',
             'bf16', '--shard', '1/3')
    shutil.copy(tmp_path / 'a1.csv', tmp_path / 'copy.csv')
    shutil.copy(tmp_path / 'a1.csv.shard.json', tmp_path / 'copy.csv.shard.json')
    mapping = tmp_path / 'map.json'
    mapping.write_text(json.dumps({'all': utils.load_label_index(model_files[1])}))
    cases = {'shard 3/3 of the run not given': ['a1.csv', 'a2.csv'],
             'of different runs': ['a2.csv', 'a3.csv', 'b1.csv'],
             'are both shard 1/3': ['a1.csv', 'a2.csv', 'a3.csv', 'copy.csv'],
             'given twice': ['a1.csv', 'a2.csv', 'a3.csv', 'a1.csv'],
             'not shards of one run_classifier': ['a1.csv', 'map.json']}
    for message, files in cases.items():
        if message == 'not shards of one run_classifier':
            (tmp_path / 'a1.csv.shard.json').rename(tmp_path / 'keep.json')
        proc = run_module('classification.aggregate_classifier_probs',
                          *[str(tmp_path / f) for f in files], '-t', str(mapping), '-o',
                          str(tmp_path / 'agg.csv'), '-i', str(tmp_path / 'agg.json'),
                          check=False)
        assert proc.returncode == 2 and message in proc.stderr, (message, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1
        assert not (tmp_path / 'agg.csv').exists()


@pytest.mark.parametrize('spec', ['3/2', '0/2', '1/0', 'a/b', '2'])
def test_bad_shard_specs_are_refused(model_files, new_crops, tmp_path, spec):
    proc = classify(model_files[0], new_crops, tmp_path / 'o.csv', '--shard', spec,
                    check=False)
    assert proc.returncode == 2 and '--shard' in proc.stderr
    assert not list(tmp_path.iterdir())


def test_a_detector_file_is_refused(new_crops, tmp_path):
    import torch

    class Detector(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
            return (x.mean(dim=1).flatten(1).unsqueeze(-1).repeat(1, 1, 8),)

    path = tmp_path / 'md.torchscript'
    torch.jit.trace(Detector(), torch.zeros(1, 3, 32, 32)).save(str(path))
    proc = classify(path, new_crops, tmp_path / 'o.csv', check=False)
    assert proc.returncode == 2 and 'not a classifier' in proc.stderr
    assert not (tmp_path / 'o.csv').exists()


def test_engines_agree_and_the_onnx_export_is_cached(model_files, new_crops, tmp_path,
                                                    monkeypatch):
    model = tmp_path / 'model.pt'
    shutil.copy(model_files[0], model)
    out = {}
    for engine, precision in [('torch', 'fp32'), ('onnxruntime', 'fp32'),
                              ('openvino', 'fp32'), ('openvino', 'bf16')]:
        out[engine, precision] = tmp_path / f'{engine}_{precision}.csv'
        classify(model, new_crops, out[engine, precision], '--engine', engine,
                 '--precision', precision)
    frames = {k: pd.read_csv(v).set_index('path') for k, v in out.items()}
    ref = frames['torch', 'fp32']
    for key, df in frames.items():
        assert list(df.index) == list(ref.index)
        tol = 0.05 if key[1] == 'bf16' else 1e-4
        np.testing.assert_allclose(df.to_numpy(), ref.to_numpy(), atol=tol, err_msg=str(key))
    onnx = model.with_suffix('.onnx')
    assert engines.onnx_source(onnx) == engines.file_sha256(model)
    stamp = onnx.stat().st_mtime_ns
    classify(model, new_crops, tmp_path / 'again.csv', '--engine', 'onnxruntime')
    assert onnx.stat().st_mtime_ns == stamp                  # reused, not exported again
    # a replaced TorchScript file never runs with the stale export
    other = tmp_path / 'other.pt'
    shutil.copy(model_files[0], other)
    shutil.copy(onnx, other.with_suffix('.onnx'))
    with open(other, 'ab') as f:
        f.write(b'\0')                                       # another file, same model
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
    import torch
    loaded = torch.jit.load(str(model_files[0]))
    path = engines.onnx_path(other, loaded, torch.zeros(1, 3, 32, 32))
    assert path.parent == tmp_path / 'cache' / 'camera-trap-classifier' / 'onnx'
    assert engines.onnx_source(path) == engines.file_sha256(other)


def test_an_engine_not_installed_gets_one_line(monkeypatch):
    import torch
    monkeypatch.setattr(engines, 'installed', lambda name: name == 'torch')
    with pytest.raises(utils.InputError, match='openvino is not installed'):
        engines.resolve_engine('openvino', torch.device('cpu'))
    assert engines.resolve_engine('auto', torch.device('cpu')) == 'torch'
    assert engines.resolve_engine('auto', torch.device('cuda')) == 'torch'


def hide_modules(*names: str) -> list[str]:
    """A python command line that runs run_classifier with ``names`` not importable."""
    hide = '; '.join(f"sys.modules['{n}'] = None" for n in names)
    return [sys.executable, '-c', f'import sys; {hide}; from classification import '
            'run_classifier, utils; sys.exit(utils.run_cli(run_classifier.main))']


@pytest.mark.parametrize('flags, hidden, message', [
    (['--engine', 'openvino'], ['openvino'], '--engine openvino: openvino is not installed'),
    (['--engine', 'onnxruntime'], ['onnxruntime'], 'onnxruntime is not installed'),
    (['--precision', 'int8', '--calibration-crops', '{crops}'], ['nncf'],
     '--precision int8: nncf is not installed'),
])
def test_an_engine_not_installed_is_refused_by_the_command(model_files, new_crops, tmp_path,
                                                           flags, hidden, message):
    flags = [f.format(crops=new_crops) for f in flags]
    proc = subprocess.run([*hide_modules(*hidden), str(model_files[0]), str(new_crops),
                           str(tmp_path / 'out' / 'o.csv'), *flags], text=True,
                          capture_output=True, cwd=REPO)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if 'Warn' not in line]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / 'out').exists()


def test_int8_runs_one_calibrated_copy_of_the_model(model_files, new_crops, baseline, tmp_path):
    model = tmp_path / 'model.pt'
    shutil.copy(model_files[0], model)
    flags = ['--engine', 'openvino', '--precision', 'int8', '--calibration-crops',
             str(new_crops), '--batch-size', '8']
    old = os.umask(0o027)
    try:
        proc = classify(model, new_crops, '-', *flags)
    finally:
        os.umask(old)
    first = pd.read_csv(io.StringIO(proc.stdout)).set_index('path')   # stdout is only data
    ref = pd.read_csv(baseline).set_index('path')
    assert list(first.index) == list(ref.index)
    assert np.abs(first.to_numpy() - ref.to_numpy()).max() < 0.2
    agree = (first.to_numpy().argmax(1) == ref.to_numpy().argmax(1)).mean()
    assert agree >= 0.9, agree
    (xml,) = tmp_path.glob('model.int8-*.xml')
    assert xml.with_suffix('.bin').is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith('.')) == []
    assert xml.stat().st_mode & 0o777 == 0o640                    # the umask, not 0600
    stamp = xml.stat().st_mtime_ns
    classify(model, new_crops, tmp_path / 'again.csv', *flags)
    assert xml.stat().st_mtime_ns == stamp                        # made once
    assert pd.read_csv(tmp_path / 'again.csv').set_index('path').equals(first)
    # another calibration set gets its own copy
    fewer = tmp_path / 'fewer'
    fewer.mkdir()
    for crop in sorted(new_crops.rglob('*.jpg'))[:5]:
        shutil.copy(crop, fewer / crop.name)
    flags[flags.index(str(new_crops))] = str(fewer)
    classify(model, new_crops, tmp_path / 'fewer.csv', *flags)
    assert len(list(tmp_path.glob('model.int8-*.xml'))) == 2


@pytest.mark.parametrize('flags, message', [
    (['--precision', 'int8'], 'go together'),
    (['--calibration-crops', '{crops}'], 'go together'),
    (['--precision', 'int8', '--calibration-crops', '{crops}', '--engine', 'onnxruntime'],
     'int8 runs on --engine openvino only'),
    (['--precision', 'int8', '--calibration-crops', '{crops}', '--engine', 'torch'],
     'int8 runs on --engine openvino only'),
    (['--precision', 'int8', '--calibration-crops', '{empty}'], 'no .jpg or .png crops'),
    (['--precision', 'int8', '--calibration-crops', '{missing}'], 'not a folder'),
])
def test_bad_int8_settings_are_refused(model_files, new_crops, tmp_path, flags, message):
    (tmp_path / 'empty').mkdir()
    flags = [f.format(crops=new_crops, empty=tmp_path / 'empty', missing=tmp_path / 'no')
             for f in flags]
    proc = classify(model_files[0], new_crops, tmp_path / 'out' / 'o.csv', *flags,
                    check=False)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / 'out').exists()


def test_classifying_from_photos_matches_the_two_step_route(project, model_files, new_crops,
                                                           baseline, tmp_path):
    out = tmp_path / 'photos.csv'
    classify(model_files[0], project / 'new_photos' / 'images', out, '--from-photos', '-d',
             str(project.joinpath(*DETS)), '-t', '0.2', '--square-crops', '--engine', 'torch',
             '--precision', 'fp32')
    direct, two_step = pd.read_csv(out), pd.read_csv(baseline)
    assert list(direct['path']) == list(two_step['path'])
    labels = list(direct.columns[1:])
    p, q = direct[labels].to_numpy(), two_step[labels].to_numpy()
    # this tiny model is nearly uniform: top-1 must agree wherever it is not a near-tie
    top2 = np.sort(q, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 0.02
    assert clear.sum() >= 5
    assert (p.argmax(1) == q.argmax(1))[clear].all()
    # the differences: JPEG re-encoding of saved crops, and libjpeg's 1/2-1/8 scaled
    # decoding aligned to the photo's blocks instead of the crop's (this 32 px model
    # sees crops decoded at 1/8; top-1 agreement on real photos: bench/bench_archive.py)
    np.testing.assert_allclose(p, q, atol=0.05)


def test_from_photos_reports_missing_and_unreadable_photos(project, model_files, baseline,
                                                          tmp_path):
    photos = tmp_path / 'photos'
    shutil.copytree(project / 'new_photos' / 'images', photos)
    used = sorted({utils.parse_crop_filename(p)[0] for p in pd.read_csv(baseline)['path']})
    files = [photos / used[0], photos / used[1]]
    files[0].unlink()
    files[1].write_bytes(b'not a photo')
    out = tmp_path / 'o.csv'
    proc = classify(model_files[0], photos, out, '--from-photos', '-d',
                    str(project.joinpath(*DETS)), '-t', '0.2')
    assert 'missing photo' in proc.stderr and 'unreadable crop' in proc.stderr
    df = pd.read_csv(out)
    assert not df['path'].str.startswith(files[1].relative_to(photos).as_posix()).any()
    assert len(df) > 0


def test_part_file_cuts_a_half_written_row(tmp_path):
    part = classifier_output.PartFile(tmp_path / 'o.part', 'run1', ['a', 'b'])
    part.append(classifier_output.format_rows(['x,1.jpg', 'y.jpg'],
                                              np.array([[0.25, 0.75], [1, 0]]), 2))
    part.append(classifier_output.format_rows(['z.jpg'], None, 2))
    part.close()
    with open(part.path, 'a') as f:
        f.write('w.jpg,0.5')
    again = classifier_output.PartFile(part.path, 'run1', ['a', 'b'])
    assert again.done() == {'x,1.jpg', 'y.jpg', 'z.jpg'}
    n, bad = classifier_output.finish(str(tmp_path / 'o.csv'), [again], ['a', 'b'])
    assert (n, bad) == (2, 1)
    assert (tmp_path / 'o.csv').read_text() == 'path,a,b\n"x,1.jpg",0.25,0.75\ny.jpg,1,0\n'


def test_shard_shares_cover_every_item_once():
    items = list(range(103))
    for n in (1, 2, 7, 200):
        parts = [shards.Shard(k, n).take(items) for k in range(1, n + 1)]
        assert sum(parts, []) == items
        for k in range(1, n + 1):
            sub = [shards.Shard(k, n).sub(r, 3).take(items) for r in range(3)]
            assert sum(sub, []) == parts[k - 1]
