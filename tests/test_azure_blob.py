"""Azure Blob Storage access, against Azurite started by the tests."""
from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from classification import crop_detections, utils
from data_management import azure_blob
from tests.conftest import read_json
from tests.emulators import FaultProxy


def _jpeg(color=(255, 0, 0)) -> bytes:
    arr = np.zeros((120, 160, 3), dtype=np.uint8)
    arr[:] = (0, 0, 255)
    arr[30:90, 40:120] = color
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, 'JPEG', quality=95)
    return buf.getvalue()


def _detections(files):
    return {'info': {'detector': 'md_v5a.0.0.pt'}, 'detection_categories': {'1': 'animal'},
            'images': [{'file': f, 'detections': [{'category': '1', 'conf': 0.9,
                                                   'bbox': [0.25, 0.25, 0.5, 0.5]}]}
                       for f in files]}


def _crop(tmp_path, url, files, *flags):
    (tmp_path / 'det.json').write_text(json.dumps(_detections(files)))
    rc = utils.run_cli(lambda: crop_detections.main(
        [str(tmp_path / 'det.json'), str(tmp_path / 'crops'), '-c', url, '-v', '5a',
         '--logdir', str(tmp_path / 'logs'), *flags]))
    logs = sorted((tmp_path / 'logs').glob('*.json'))
    return rc, read_json(logs[-1]) if logs else None


@pytest.fixture
def container(azurite, request):
    name = request.node.name.lower().replace('_', '')[:40].strip('[]-') or 'c'
    files = {'cam 1/a.jpg': _jpeg(), 'cam 1/b+c.jpg': _jpeg((0, 255, 0)),
             'truncated.jpg': _jpeg()[:400]}
    return azurite.create_container(name[:40], files)


def test_crops_from_blob_storage(tmp_path, container, capsys, fast_blob_retries):
    files = ['cam 1/a.jpg', 'cam 1/b+c.jpg', 'missing.jpg', 'truncated.jpg']
    rc, log = _crop(tmp_path, container, files, '-n', '4')
    assert rc == 0 and log['crops_written'] == 2
    reasons = {f['file']: f['reason'] for f in log['failures']}
    assert reasons['missing.jpg'] == 'blob not found in the container'
    assert 'cannot decode' in reasons['truncated.jpg']
    with Image.open(tmp_path / 'crops' / 'cam 1' / 'a.jpg___crop00_mdv5a.jpg') as im:
        r, g, b = np.asarray(im, dtype=float).reshape(-1, 3).mean(axis=0)
    assert r > 200 and b < 60
    sig = container.split('sig=')[1].split('&')[0]
    everything = capsys.readouterr().err + json.dumps(log)
    assert sig not in everything and 'sig=' not in everything


def test_save_full_images_then_local_first(tmp_path, container, azurite, fast_blob_retries):
    proxy = FaultProxy(azurite.port)
    try:
        url = proxy.url_for(container)
        rc, _ = _crop(tmp_path, url, ['cam 1/a.jpg'], '-i', str(tmp_path / 'imgs'),
                      '--save-full-images')
        saved = tmp_path / 'imgs' / 'cam 1' / 'a.jpg'
        assert rc == 0 and saved.read_bytes() == _jpeg()
        os.remove(tmp_path / 'crops' / 'cam 1' / 'a.jpg___crop00_mdv5a.jpg')
        before = proxy.requests
        rc, log = _crop(tmp_path, url, ['cam 1/a.jpg'], '-i', str(tmp_path / 'imgs'))
        assert rc == 0 and log['crops_written'] == 1
        assert proxy.requests == before            # read from the local copy
    finally:
        proxy.close()


def test_retries_with_backoff(tmp_path, container, azurite, fast_blob_retries):
    proxy = FaultProxy(azurite.port)
    try:
        url = proxy.url_for(container)
        proxy.fail_next, proxy.drop_next = 2, 1
        rc, log = _crop(tmp_path, url, ['cam 1/a.jpg'])
        assert rc == 0 and log['crops_written'] == 1 and log['failures'] == []
        assert proxy.requests >= 4
        proxy.fail_next = 100                      # more than the retries allow
        rc, log = _crop(tmp_path, url, ['cam 1/b+c.jpg'])
        assert rc == 0
        (failure,) = log['failures']
        assert failure['file'] == 'cam 1/b+c.jpg' and 'download failed' in failure['reason']
        assert 'sig=' not in failure['reason']
    finally:
        proxy.close()


def test_sas_for_another_container_is_refused(tmp_path, azurite, container, fast_blob_retries):
    other = azurite.create_container('othercontainer', {'x.jpg': _jpeg()})
    wrong = container.split('?')[0] + '?' + other.split('?')[1]
    rc, log = _crop(tmp_path, wrong, ['cam 1/a.jpg'])
    assert rc == 0 and 'download failed' in log['failures'][0]['reason']


def test_bad_container_url(tmp_path, capsys):
    rc, _ = _crop(tmp_path, 'ftp://nowhere/c?sig=TOPSECRET', ['a.jpg'])
    err = capsys.readouterr().err
    assert rc == 2 and 'https://' in err and 'TOPSECRET' not in err


def test_container_names_parsed_by_the_sdk(container):
    client = azure_blob.open_container(container)
    assert client.account_name == 'devstoreaccount1'
    assert azure_blob.blob_exists(client, 'cam 1/a.jpg')
    assert not azure_blob.blob_exists(client, 'nope.jpg')
    with pytest.raises(azure_blob.BlobNotFound):
        azure_blob.download_bytes(client, 'nope.jpg')
    assert azure_blob.describe(container).endswith('?<redacted>')


def test_safe_error_masks_sas():
    e = ValueError('GET https://a/c/x.jpg?sv=2020&sp=r&sig=abc%2Fdef failed')
    assert azure_blob.safe_error(e) == \
        'ValueError: GET https://a/c/x.jpg?sv=<redacted>&sp=<redacted>&sig=<redacted> failed'


def test_flag_rules(capsys):
    with pytest.raises(SystemExit):
        crop_detections.parse_args(['d.json', 'crops'])
    with pytest.raises(SystemExit):
        crop_detections.parse_args(['d.json', 'crops', '-i', 'x', '--save-full-images'])
