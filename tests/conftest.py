"""Shared fixtures: a small generated demo project, and the pipeline run on it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from data_management.demo_project import DATASETS, generate

REPO = Path(__file__).resolve().parents[1]
REAL_PHOTOS = REPO.parent / 'shared' / 'data' / 'real_camera_traps'


def run_module(module: str, *args: str, stdin: str | None = None, check: bool = True,
               cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Runs ``python -m module args`` in a subprocess (for pipes and exit codes)."""
    proc = subprocess.run([sys.executable, '-m', module, *args], input=stdin, text=True,
                          capture_output=True, cwd=cwd or REPO,
                          env={**os.environ, 'PYTHONUNBUFFERED': '1'})
    if check and proc.returncode != 0:
        raise AssertionError(f'{module} exited {proc.returncode}:\n{proc.stderr[-3000:]}')
    return proc


def write(t: Path, name: str, content: str | bytes | object) -> str:
    """Writes a test input under ``t`` (bytes, text, or anything else as JSON)."""
    path = t / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    else:
        path.write_text(json.dumps(content))
    return str(path)


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the SHA-256 of its bytes (to assert that a
    refused run changed nothing)."""
    import hashlib
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob('*')) if p.is_file() or p.is_symlink()}


@pytest.fixture(scope='session')
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo project: 8 locations, 640x480 photos."""
    out = tmp_path_factory.mktemp('project')
    generate(out, seed=3, locations=8, sequences_per_location=8, new_images=12,
             new_locations=2, width=640, height=480, workers=2)
    return out


@pytest.fixture(scope='session')
def megadb(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's COCO files imported into an SQLite MegaDB."""
    from data_management.megadb import import_dataset
    db = tmp_path_factory.mktemp('db') / 'megadb.sqlite'
    for ds in DATASETS:
        assert import_dataset.main([str(db), '--dataset', ds, '--coco',
                                    str(project / 'coco' / f'{ds}.json'),
                                    '--images-root', str(project / 'images' / ds)]) == 0
    return db


@pytest.fixture(scope='session')
def base_logdir(project: Path, megadb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Steps 3-7 run on the project: spec, query, cache, crops, dataset and splits."""
    from classification import (
        cache_batchapi_outputs,
        create_classification_dataset,
        csv_to_json,
        detect_and_crop,
        json_validator,
    )
    root = tmp_path_factory.mktemp('pipeline')
    base = root / 'base'
    assert csv_to_json.main([str(project / 'label_spec.csv'), str(base / 'label_spec.json')]) == 0
    assert json_validator.main([str(base / 'label_spec.json'), str(project / 'taxonomy.csv'),
                                '--megadb', str(megadb), '-o', str(base)]) == 0
    for ds in DATASETS:
        assert cache_batchapi_outputs.main([str(project / 'detections' / f'{ds}.json'), '-f',
                                            'detections', '-d', ds, '-c', str(root / 'mdcache'),
                                            '-v', '5a']) == 0
    assert detect_and_crop.main([str(base / 'queried_images.json'), str(base), '-c',
                                 str(root / 'mdcache'), '-v', '5a', '-p', str(root / 'crops'),
                                 '-i', str(project / 'images'), '--square-crops', '-t', '0.5',
                                 '-n', '2']) == 0
    assert create_classification_dataset.main([
        str(base), '--mode', 'csv', 'splits', '-q', str(base / 'queried_images.json'),
        '-c', str(root / 'crops'), '-d', str(root / 'mdcache'), '-v', '5a', '-t', '0.5',
        '--val-frac', '0.2', '--test-frac', '0.2', '--num-trials', '500']) == 0
    return base


@pytest.fixture(scope='session')
def trained_run(base_logdir: Path) -> Path:
    """A tiny ResNet-18 trained for 2 epochs at 32 px; returns its run folder."""
    from classification import train_classifier
    crops = base_logdir.parent / 'crops'
    assert train_classifier.main([str(base_logdir), str(crops), '-m', 'resnet18',
                                  '--image-size', '32', '--epochs', '2', '--batch-size', '16',
                                  '--logdir', str(base_logdir / 'runs'), '--num-workers', '0',
                                  '--seed', '1', '--label-weighted']) == 0
    (run,) = list((base_logdir / 'runs').iterdir())
    return run


@pytest.fixture(scope='session')
def new_crops(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """crop_detections' square crops of the demo's new photos (threshold 0.2)."""
    from classification import crop_detections
    out = tmp_path_factory.mktemp('new')
    assert crop_detections.main([str(project / 'new_photos' / 'detections.json'),
                                 str(out / 'crops'), '-i', str(project / 'new_photos' / 'images'),
                                 '-t', '0.2', '--square-crops', '--logdir', str(out)]) == 0
    return out / 'crops'


@pytest.fixture(scope='session')
def model_files(trained_run: Path, base_logdir: Path) -> tuple[Path, Path]:
    """(the trained run's TorchScript file, its label_index.json)."""
    (compiled,) = trained_run.glob('ckpt_*_compiled.pt')
    return compiled, base_logdir / 'label_index.json'


def read_json(path: Path) -> dict:
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope='session')
def azurite():
    """Azurite (npm, pinned in package.json) on a free loopback port, for the session."""
    from tests.emulators import Azurite
    emulator = Azurite()
    yield emulator
    emulator.stop()


@pytest.fixture
def fast_blob_retries(monkeypatch):
    """Retries without the production back-off (seconds)."""
    monkeypatch.setenv('CT_BLOB_RETRY_TOTAL', '3')
    monkeypatch.setenv('CT_BLOB_INITIAL_BACKOFF', '0.05')
    monkeypatch.setenv('CT_BLOB_INCREMENT_BASE', '0')
    monkeypatch.setenv('CT_BLOB_READ_TIMEOUT', '5')


@pytest.fixture(scope='session')
def cosmos_server():
    """The Cosmos-compatible server (npm @vercel/cosmosdb-server, pinned) for the session."""
    from tests.emulators import CosmosServer
    server = CosmosServer()
    yield server
    server.stop()


@pytest.fixture(params=['sqlite', 'cosmos'])
def megadb_uri(request, tmp_path, monkeypatch):
    """A fresh, empty MegaDB on each backend: an SQLite path, or a Cosmos endpoint
    (with COSMOS_KEY and a new COSMOS_DATABASE set, as a user would)."""
    if request.param == 'sqlite':
        return str(tmp_path / 'megadb.sqlite')
    import uuid

    from tests.emulators import COSMOS_TEST_KEY
    server = request.getfixturevalue('cosmos_server')
    monkeypatch.setenv('COSMOS_KEY', COSMOS_TEST_KEY)
    monkeypatch.setenv('COSMOS_DATABASE', f'megadb-{uuid.uuid4().hex[:12]}')
    return server.endpoint


def iou(a: list[float], b: list[float]) -> float:
    """IoU of two [x, y, w, h] boxes."""
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else float(a == b)


def unmatched(ours: list[dict], theirs: list[dict]) -> tuple[int, int]:
    """Detections of ``ours`` with no match in ``theirs`` (same file and category,
    IoU >= 0.98, confidence within 0.01), and the total."""
    by_file = {e['file']: e['detections'] or [] for e in theirs}
    missing = total = 0
    for entry in ours:
        for d in entry['detections'] or []:
            total += 1
            if not any(o['category'] == d['category'] and abs(o['conf'] - d['conf']) <= 0.01
                       and iou(o['bbox'], d['bbox']) >= 0.98 for o in by_file[entry['file']]):
                missing += 1
    return missing, total
