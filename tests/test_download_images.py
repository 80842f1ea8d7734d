"""data_management/megadb/download_images against Azurite and a local dataset."""
from __future__ import annotations

import json
import shutil

import pytest

from classification import utils
from data_management.megadb import download_images, downloads
from data_management.megadb.base import open_megadb
from tests.conftest import read_json


def test_download_from_blob_and_local(tmp_path, azurite, fast_blob_retries, capsys):
    url = azurite.create_container('dataset-a', {'pre/x/1.jpg': b'one', 'pre/2.jpg': b'two'})
    endpoint, sas = url.split('?')
    account_url = endpoint.rsplit('/', 1)[0]
    (tmp_path / 'local' / 'sub').mkdir(parents=True)
    (tmp_path / 'local' / 'sub' / '3.jpg').write_bytes(b'three')
    db = tmp_path / 'm.sqlite'
    with open_megadb(str(db)) as m:
        m.upsert_dataset({'dataset_name': 'a', 'storage_account': account_url,
                          'container': 'dataset-a', 'container_sas_key': '?' + sas,
                          'path_prefix': 'pre'})
        m.upsert_dataset({'dataset_name': 'b', 'images_root': str(tmp_path / 'local')})
    (tmp_path / 'list.txt').write_text('a/x/1.jpg\na/2.jpg\na/missing.jpg\nb/sub/3.jpg\n'
                                       'c/nope.jpg\na/2.jpg\n')
    store = tmp_path / 'store'
    args = ['txt', str(tmp_path / 'list.txt'), str(store), '--megadb', str(db), '-t', '4']
    assert download_images.main(args) == 0
    assert (store / 'a' / 'x' / '1.jpg').read_bytes() == b'one'
    assert (store / 'a' / '2.jpg').read_bytes() == b'two'
    assert (store / 'b' / 'sub' / '3.jpg').read_bytes() == b'three'
    (log,) = store.glob('download_images_log_*.json')
    report = read_json(log)
    assert report['downloaded'] == 3 and report['requested'] == 5
    assert {f['file']: f['reason'] for f in report['failures']} == {
        'a/missing.jpg': 'blob not found', 'c/nope.jpg': 'dataset c is not in the MegaDB'}
    assert sas.split('sig=')[1].split('&')[0] not in capsys.readouterr().err
    log.unlink()
    (store / 'a' / '2.jpg').write_bytes(b'kept')
    assert download_images.main([*args, '--only-new-images']) == 0
    assert (store / 'a' / '2.jpg').read_bytes() == b'kept'
    (log,) = store.glob('download_images_log_*.json')
    assert read_json(log)['skipped_existing'] == 3


def test_json_lists(tmp_path):
    (tmp_path / 'q.json').write_text(json.dumps({'a/1.jpg': {}, 'b/2.jpg': {}}))
    assert downloads.read_list('json', str(tmp_path / 'q.json'), 'file', 'download_id') \
        == [('a/1.jpg', 'a/1.jpg'), ('b/2.jpg', 'b/2.jpg')]
    (tmp_path / 'l.json').write_text(json.dumps(
        [{'file': 'a/1.jpg', 'download_id': 'x.jpg'}, {'file': 'a/2.jpg'}]))
    assert downloads.read_list('json', str(tmp_path / 'l.json'), 'file', 'download_id') \
        == [('a/1.jpg', 'x.jpg'), ('a/2.jpg', 'a/2.jpg')]
    (tmp_path / 'bad.json').write_text(json.dumps([{'path': 'a/1.jpg'}]))
    assert utils.run_cli(lambda: download_images.main(
        ['json', str(tmp_path / 'bad.json'), str(tmp_path / 's')])) == 2


def test_save_paths_cannot_escape(tmp_path):
    (tmp_path / 'l.json').write_text(json.dumps([{'file': 'a/1.jpg', 'download_id': '../x'}]))
    with open_megadb(str(tmp_path / 'm.sqlite')) as m:
        m.upsert_dataset({'dataset_name': 'a', 'images_root': str(tmp_path)})
    rc = utils.run_cli(lambda: download_images.main(
        ['json', str(tmp_path / 'l.json'), str(tmp_path / 's'), '--megadb',
         str(tmp_path / 'm.sqlite')]))
    assert rc == 2


def test_detect_and_crop_save_full_images(tmp_path, azurite, fast_blob_retries, capsys):
    """detect_and_crop --save-full-images fetches the photos it lacks from the dataset's
    container (MegaDB entry), keeps them in --images-dir, then crops them."""
    import io

    from PIL import Image

    from classification import detect_and_crop
    buf = io.BytesIO()
    Image.new('RGB', (200, 100), (200, 30, 30)).save(buf, 'JPEG')
    url = azurite.create_container('dac-photos', {'cam/a.jpg': buf.getvalue()})
    endpoint, sas = url.split('?')
    db = tmp_path / 'm.sqlite'
    with open_megadb(str(db)) as m:
        m.upsert_dataset({'dataset_name': 'ds', 'storage_account': endpoint.rsplit('/', 1)[0],
                          'container': 'dac-photos', 'container_sas_key': sas})
    box = [{'category': 'animal', 'bbox': [0.1, 0.1, 0.5, 0.5]}]
    entry = {'dataset': 'ds', 'location': 'L', 'class': 'elk', 'label': ['elk'], 'bbox': box}
    (tmp_path / 'q.json').write_text(json.dumps({'ds/cam/a.jpg': entry,
                                                 'ds/missing.jpg': entry}))
    (tmp_path / 'out').mkdir()
    args = [str(tmp_path / 'q.json'), str(tmp_path / 'out'), '-c', str(tmp_path / 'mdcache'),
            '-v', '5a', '-p', str(tmp_path / 'crops'), '-i', str(tmp_path / 'images'),
            '--save-full-images', '--megadb', str(db), '-n', '2']
    assert detect_and_crop.main(args) == 0
    assert (tmp_path / 'images' / 'ds' / 'cam' / 'a.jpg').read_bytes() == buf.getvalue()
    assert (tmp_path / 'crops' / 'ds' / 'cam' / 'a.jpg___crop00.jpg').exists()
    (log,) = (tmp_path / 'out').glob('detect_and_crop_log_*.json')
    report = read_json(log)
    assert report['download_failures'] == [{'file': 'ds/missing.jpg',
                                            'reason': 'blob not found'}]
    assert [f['file'] for f in report['failures']] == ['ds/missing.jpg']
    assert sas.split('sig=')[1].split('&')[0] not in capsys.readouterr().err
    log.unlink()
    # a kept photo is not downloaded again
    (tmp_path / 'images' / 'ds' / 'cam' / 'a.jpg').write_bytes(b'kept')
    assert detect_and_crop.main(args) == 0
    assert (tmp_path / 'images' / 'ds' / 'cam' / 'a.jpg').read_bytes() == b'kept'
    assert 'photos: 0 downloaded, 1 already' in capsys.readouterr().err
    (log,) = (tmp_path / 'out').glob('detect_and_crop_log_*.json')
    log.unlink()
    with pytest.raises(SystemExit):
        detect_and_crop.parse_args(args[:6] + ['--save-full-images'])    # no --images-dir
    # --fetch-missing-images: crops straight from the container, the photo not kept
    shutil.rmtree(tmp_path / 'images')
    shutil.rmtree(tmp_path / 'crops')
    fetch_args = [a for a in args if a != '--save-full-images'] + ['--fetch-missing-images']
    assert detect_and_crop.main(fetch_args) == 0
    assert (tmp_path / 'crops' / 'ds' / 'cam' / 'a.jpg___crop00.jpg').exists()
    assert not (tmp_path / 'images').exists()
    (log,) = (tmp_path / 'out').glob('detect_and_crop_log_*.json')
    assert {f['file']: f['reason'] for f in read_json(log)['failures']} == {
        'ds/missing.jpg': 'blob not found'}
    assert sas.split('sig=')[1].split('&')[0] not in capsys.readouterr().err
    with pytest.raises(SystemExit):
        detect_and_crop.parse_args(fetch_args + ['--save-full-images'])
