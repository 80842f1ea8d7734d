"""The demo-project generator: content, determinism, EXIF rotation, night frames."""
from __future__ import annotations

import hashlib
import json

import pandas as pd
from PIL import Image

from classification.cropping import load_image
from data_management.demo_project import CLASSES, DATASETS, generate
from tests.conftest import read_json


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_project_files_and_counts(project):
    m = read_json(project / 'manifest.json')
    assert m['labeled_images'] > 50 and m['new_images'] == 12
    assert m['night_images'] > 0 and m['rotated_images'] > 0 and m['empty_images'] > 0
    for ds in DATASETS:
        coco = read_json(project / 'coco' / f'{ds}.json')
        locs = {img['location'] for img in coco['images']}
        assert len(locs) == 4                    # 8 locations over 2 datasets
        assert all(img['width'] == 640 and img['height'] == 480 for img in coco['images'])
        with_box = {a['image_id'] for a in coco['annotations'] if 'bbox' in a}
        without_box = {img['file_name'] for img in coco['images']} - {
            i.split('/', 1)[1] for i in with_box}
        dets = read_json(project / 'detections' / f'{ds}.json')
        assert {img['file'] for img in dets['images']} == without_box
        assert 0 < len(with_box) < len(coco['images'])
        seq_lens = pd.Series([img['seq_id'] for img in coco['images']]).value_counts()
        assert set(seq_lens) <= {1, 2, 3}
    tax = pd.read_csv(project / 'taxonomy.csv')
    assert len(tax) == len(DATASETS) * (len(CLASSES) + 1)


def test_detections_are_realistic(project):
    dets = read_json(project / 'new_photos' / 'detections.json')
    assert dets['info']['format_version'] == '1.4'
    confs = [d['conf'] for img in dets['images'] for d in img['detections']]
    assert min(confs) < 0.5 < max(confs) < 1.0
    for img in dets['images']:
        for d in img['detections']:
            x, y, w, h = d['bbox']
            assert 0 <= x <= 1 and 0 <= y <= 1 and w > 0 and h > 0 and x + w <= 1.0001


def test_night_frames_are_grayscale_and_rotated_frames_have_exif(project):
    night = rotated = 0
    for path in (project / 'images').rglob('*.jpg'):
        with Image.open(path) as im:
            orientation = im.getexif().get(0x0112, 1)
            if im.mode == 'L':
                night += 1
            if orientation != 1:
                rotated += 1
                # stored sideways (or upside down); upright after the tag is applied
                upright = load_image(path)
                assert upright.size == (640, 480)
                if orientation in (6, 8):
                    assert im.size == (480, 640)
    assert night > 0 and rotated > 0


def test_same_seed_same_project(tmp_path):
    a, b, c = tmp_path / 'a', tmp_path / 'b', tmp_path / 'c'
    for out, seed in ((a, 5), (b, 5), (c, 6)):
        generate(out, seed=seed, locations=6, sequences_per_location=2, new_images=2,
                 width=320, height=240, workers=1)
    files = sorted(p.relative_to(a) for p in a.rglob('*') if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob('*') if p.is_file())
    for rel in files:
        assert _digest(a / rel) == _digest(b / rel), rel
    assert json.loads((a / 'coco/demo_forest.json').read_text()) != json.loads(
        (c / 'coco/demo_forest.json').read_text())


def test_ground_truth_box_covers_the_animal(project):
    # a ground-truth box must contain the drawn animal: its crop differs from the scenery
    coco = read_json(project / 'coco' / 'demo_forest.json')
    ann = next(a for a in coco['annotations'] if 'bbox' in a)
    img = next(i for i in coco['images'] if i['id'] == ann['image_id'])
    x, y, w, h = ann['bbox']
    assert w > 8 and h > 8
    assert x + w <= img['width'] + 1 and y + h <= img['height'] + 1
