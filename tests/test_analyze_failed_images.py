"""analyze_failed_images: the categories, from local folders and from Azurite."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from classification import analyze_failed_images as afi
from classification import crop_detections, utils
from tests.conftest import read_json


def _jpeg(size=(320, 240)):
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
        buf, 'JPEG', quality=90)
    return buf.getvalue()


def _files():
    good = _jpeg()
    return {'cam/good.jpg': good, 'cam/truncated.jpg': good[: len(good) // 2],
            'cam/bad.jpg': b'\xff\xd8 this is not really a jpeg', 'cam/notes.txt': b'hello'}


def test_categorize_bytes():
    files = _files()
    assert afi.categorize(files['cam/good.jpg']) == 'good'
    assert afi.categorize(files['cam/truncated.jpg']) == 'truncated'
    assert afi.categorize(files['cam/bad.jpg']) == 'bad'
    assert afi.categorize(None) == 'nonexistant'


def test_failed_images_from_logs():
    log = {'images': 3, 'failures': [{'file': 'a.jpg', 'reason': 'x'}, {'file': 'b.jpg'}],
           'images_without_detections': ['c.jpg', 'a.jpg']}
    assert afi.failed_images(log, None, 'log') == ['a.jpg', 'b.jpg', 'c.jpg']
    assert afi.failed_images(log, ['images_without_detections'], 'log') == ['c.jpg', 'a.jpg']
    assert afi.failed_images(['x.jpg', 'x.jpg'], None, 'log') == ['x.jpg']
    with pytest.raises(utils.InputError, match=r"no key\(s\) \['nope'\]"):
        afi.failed_images(log, ['nope'], 'log')
    with pytest.raises(utils.InputError, match='item 0'):
        afi.failed_images({'failures': [{'reason': 'no file'}]}, None, 'log')


def test_local_folder(tmp_path, capsys):
    for name, data in _files().items():
        (tmp_path / 'img' / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / 'img' / name).write_bytes(data)
    log = {'failures': [{'file': f} for f in [*_files(), 'cam/missing.jpg']]}
    (tmp_path / 'log.json').write_text(json.dumps(log))
    assert afi.main([str(tmp_path / 'log.json'), '-i', str(tmp_path / 'img'), '-o',
                     str(tmp_path / 'out.json')]) == 0
    assert read_json(tmp_path / 'out.json') == {
        'good': ['cam/good.jpg'], 'nonexistant': ['cam/missing.jpg'],
        'non_image': ['cam/notes.txt'], 'truncated': ['cam/truncated.jpg'],
        'bad': ['cam/bad.jpg']}
    assert 'truncated: 1' in capsys.readouterr().err
    # '-' writes the JSON to stdout, logs stay on stderr
    assert afi.main([str(tmp_path / 'log.json'), '-i', str(tmp_path / 'img')]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)['bad'] == ['cam/bad.jpg'] and 'bad: 1' in out.err


def test_usage_errors(tmp_path, capsys):
    (tmp_path / 'log.json').write_text(json.dumps({'failures': ['../../etc/passwd.jpg']}))
    assert utils.run_cli(lambda: afi.main([str(tmp_path / 'log.json'), '-i',
                                           str(tmp_path)])) == 2
    assert 'leave the folder' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        afi.parse_args([str(tmp_path / 'log.json'), '--account', 'a'])   # no container


def test_crop_log_from_blob_storage(tmp_path, azurite, fast_blob_retries, capsys):
    """crop_detections' own failure log, read from a blob URL, images in Azurite."""
    url = azurite.create_container('analyzefailed', _files())
    names = [*_files(), 'cam/missing.jpg']
    doc = {'info': {'detector': 'md_v5a.0.0.pt'}, 'detection_categories': {'1': 'animal'},
           'images': [{'file': f, 'detections': [{'category': '1', 'conf': 0.9,
                                                  'bbox': [0.1, 0.1, 0.5, 0.5]}]}
                      for f in names]}
    (tmp_path / 'det.json').write_text(json.dumps(doc))
    assert crop_detections.main([str(tmp_path / 'det.json'), str(tmp_path / 'crops'), '-c', url,
                                 '--logdir', str(tmp_path)]) == 0
    (log,) = tmp_path.glob('crop_detections_log_*.json')
    assert len(read_json(log)['failures']) == 4       # all but good.jpg
    # the log itself as a blob, read through its URL with SAS
    base, sas = url.split('?', 1)
    log_container = azurite.create_container('analyzefailedlogs', {'log.json': log.read_bytes()})
    log_url = log_container.replace('?', '/log.json?', 1)
    account, container = base.rsplit('/', 1)
    assert afi.main([log_url, '-k', 'failures', '-a', account, '-c', container, '-s', sas,
                     '-o', str(tmp_path / 'out.json')]) == 0
    assert read_json(tmp_path / 'out.json') == {
        'good': [], 'nonexistant': ['cam/missing.jpg'], 'non_image': ['cam/notes.txt'],
        'truncated': ['cam/truncated.jpg'], 'bad': ['cam/bad.jpg']}
    sig = sas.split('sig=')[1].split('&')[0]
    assert sig not in capsys.readouterr().err
    bad_url = log_container.replace('?', '/nope.json?', 1)
    assert utils.run_cli(lambda: afi.main([bad_url, '-i', str(tmp_path)])) == 2
    err = capsys.readouterr().err
    log_sig = log_container.split('sig=')[1].split('&')[0]
    assert 'blob not found' in err and 'Traceback' not in err
    assert sig not in err and log_sig not in err
