"""A hostile-input battery for every step: broken, inconsistent or hostile inputs.

Each refusal case asserts exit code 2, exactly one ``error:`` line naming what is
wrong, no traceback, and that nothing under the case's folder changed (inputs and
any outputs already there keep their bytes; no file appears). Each skip case
asserts exit 0, the bad item logged (failure log or stderr) and the rest done.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from tests.conftest import REPO, snapshot, write

READ_ONLY = '/sys/ct-test-out'          # not writable, even for root


@dataclass
class Ctx:
    """The demo project and what the pipeline made of it (all read-only here)."""
    project: Path
    base: Path                  # base_logdir: dataset CSV, label index, splits, ...
    crops: Path
    mdcache: Path
    run: Path                   # a trained run folder
    model: Path                 # its TorchScript file
    megadb: Path

    @property
    def dets(self) -> Path:
        return self.project / 'new_photos' / 'detections.json'

    @property
    def photos(self) -> Path:
        return self.project / 'new_photos' / 'images'


@pytest.fixture(scope='module')
def ctx(project, base_logdir, trained_run, model_files, megadb) -> Ctx:
    return Ctx(project, base_logdir, base_logdir.parent / 'crops',
               base_logdir.parent / 'mdcache', trained_run, model_files[0], megadb)


# ------------------------------------------------------------------ helpers


def dets_doc(c: Ctx) -> dict:
    return json.loads(c.dets.read_text())


def with_det(c: Ctx, **changes) -> dict:
    """The new photos' detections with the first box of the first photo changed."""
    doc = dets_doc(c)
    doc['images'][0]['detections'][0].update(changes)
    return doc


def dataset_copy(c: Ctx, t: Path, edit=None, files=None) -> str:
    """A copy of the dataset folder (CSV, label index, splits), optionally edited."""
    out = t / 'ds'
    out.mkdir()
    for name in ('classification_ds.csv', 'label_index.json', 'splits.json'):
        shutil.copy(c.base / name, out / name)
    if edit is not None:
        df = pd.read_csv(out / 'classification_ds.csv')
        edit(df)
        df.to_csv(out / 'classification_ds.csv', index=False)
    for name, content in (files or {}).items():
        write(out, name, content)
    return str(out)


def train(c: Ctx, t: Path, dataset: str, *flags: str) -> list[str]:
    return ['classification.train_classifier', dataset, str(c.crops), '-m', 'resnet18',
            '--image-size', '32', '--epochs', '1', '--batch-size', '16', '--num-workers', '0',
            '--logdir', str(t / 'runs'), *flags]


def bomb_jpeg(width: int = 60000, height: int = 60000) -> bytes:
    """A tiny JPEG whose header claims a decompression bomb's size."""
    buf = io.BytesIO()
    Image.new('RGB', (64, 48), (120, 90, 60)).save(buf, 'JPEG')
    data = bytearray(buf.getvalue())
    i = 2
    while i < len(data):
        marker, length = data[i + 1], struct.unpack('>H', data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC2):
            data[i + 5:i + 9] = struct.pack('>HH', height, width)
            break
        i += 2 + length
    return bytes(data)


def coco(c: Ctx, edit) -> dict:
    doc = json.loads((c.project / 'coco' / 'demo_forest.json').read_text())
    edit(doc)
    return doc


def classifier_csv(rows: str, header: str = 'path,deer,fox') -> str:
    return f'{header}\n{rows}'



def run(args: list[str], cwd: Path | None = None, env: dict | None = None,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, '-m', *args], capture_output=True, text=True,
                          cwd=cwd or REPO, input=stdin,
                          env={**os.environ, 'PYTHONUNBUFFERED': '1', **(env or {})})


# ------------------------------------------------------------------ refusals
# name: (lambda ctx, tmp -> argv (module first), a fragment of the one error line)

D = 'classification.crop_detections'
R = 'classification.run_classifier'
A = 'classification.aggregate_classifier_probs'
M = 'classification.merge_classification_detection_output'
CDS = 'classification.create_classification_dataset'
IMPORT = 'data_management.megadb.import_dataset'
DET = 'detection.run_detector_batch'


def crop(c: Ctx, t: Path, doc) -> list[str]:
    return [D, write(t, 'd.json', doc), str(t / 'crops'), '-i', str(c.photos),
            '--logdir', str(t)]


def aggregate(t: Path, csv: str) -> list[str]:
    return [A, write(t, 'c.csv', csv), '-t', write(t, 'm.json', {'x': ['deer', 'fox']}),
            '-o', str(t / 'agg.csv'), '-i', str(t / 'agg_index.json')]


def merge(c: Ctx, t: Path, csv: str, index: object = None, dets: object = None) -> list[str]:
    return [M, write(t, 'c.csv', csv),
            write(t, 'li.json', index if index is not None else {'0': 'deer', '1': 'fox'}),
            '-j', write(t, 'd.json', dets) if dets is not None else str(c.dets),
            '-o', str(t / 'merged.json'), '-n', 'x']


def cds(c: Ctx, t: Path, *flags: str, queried: str | None = None,
        cache: str | None = None) -> list[str]:
    return [CDS, str(t / 'out'), '--mode', 'csv', 'splits', '--val-frac', '0.2', '-q',
            queried or str(c.base / 'queried_images.json'), '-c', str(c.crops), '-d',
            cache or str(c.mdcache), '-v', '5a', '-t', '0.5', *flags]


def poisoned_cache(c: Ctx, t: Path, poison) -> str:
    out = t / 'mdcache'
    shutil.copytree(c.mdcache, out)
    path = next(out.rglob('demo_forest.json'))
    text = path.read_text()
    path.write_text(poison(text))
    return str(out)


def poison_box(text: str) -> str:
    doc = json.loads(text)
    doc['images'][0]['detections'] = [{'category': '1', 'conf': 0.9,
                                       'bbox': [0.1, 0.1, float('inf'), 0.2]}]
    return json.dumps(doc)


def poison_types(text: str) -> str:
    doc = json.loads(text)
    doc['images'][0]['detections'] = 'many'
    return json.dumps(doc)


def existing_dataset(t: Path) -> None:
    """Outputs of an earlier good run, which a failed run must leave as they were."""
    write(t, 'out/classification_ds.csv', 'path,dataset,location,dataset_class,confidence,'
          'label\nold.jpg,ds,l,deer,0.9,deer\n')
    write(t, 'out/splits.json', {'train': [['ds', 'l']]})


SPEC = {'deer': {'dataset_labels': {'demo_forest': ['white-tailed deer']}}}
TAXONOMY_ROW = ('dataset_name,query,taxonomy_level,scientific_name,taxonomy_string\n'
                'ds,deer,family,cervidae,"[(1, \'family\', \'cervidae\', [])]"\n')

CASES = {
    # --- label spec and taxonomy
    'csv_to_json: non-UTF-8 spec': (lambda c, t: [
        'classification.csv_to_json', write(t, 's.csv', b'deer,dataset_label,ds:d\xe9er\n'),
        str(t / 's.json')], 'not UTF-8 text'),
    'csv_to_json: read-only output': (lambda c, t: [
        'classification.csv_to_json', str(c.project / 'label_spec.csv'),
        READ_ONLY + '/s.json'], READ_ONLY),
    'json_validator: non-UTF-8 taxonomy': (lambda c, t: [
        'classification.json_validator', write(t, 's.json', SPEC),
        write(t, 't.csv', TAXONOMY_ROW.encode() + b'ds,\xff,family,x,"[]"\n'),
        '--megadb', str(c.megadb), '-o', str(t / 'o')], 'not UTF-8 text'),
    'json_validator: spec is a list': (lambda c, t: [
        'classification.json_validator', write(t, 's.json', [1, 2]),
        str(c.project / 'taxonomy.csv'), '--megadb', str(c.megadb), '-o', str(t / 'o')],
        's.json'),
    'json_validator: read-only output': (lambda c, t: [
        'classification.json_validator', write(t, 's.json', json.loads(
            (c.base / 'label_spec.json').read_text())), str(c.project / 'taxonomy.csv'),
        '--megadb', str(c.megadb), '-o', READ_ONLY], READ_ONLY),
    'json_validator: MegaDB missing': (lambda c, t: [
        'classification.json_validator', write(t, 's.json', SPEC),
        str(c.project / 'taxonomy.csv'), '--megadb', str(t / 'none.sqlite'), '-o',
        str(t / 'o')], 'none.sqlite'),
    # --- COCO Camera Traps import
    'COCO: duplicate category id': (lambda c, t: [
        IMPORT, str(t / 'm.sqlite'), '--dataset', 'ds', '--coco', write(t, 'c.json', coco(
            c, lambda d: d['categories'].append(dict(d['categories'][0], name='zzz'))))],
        'duplicate category id'),
    'COCO: a file listed twice': (lambda c, t: [
        IMPORT, str(t / 'm.sqlite'), '--dataset', 'ds', '--coco', write(t, 'c.json', coco(
            c, lambda d: d['images'].append(dict(d['images'][0], id='other'))))],
        'is listed twice'),
    'COCO: NaN box': (lambda c, t: [
        IMPORT, str(t / 'm.sqlite'), '--dataset', 'ds', '--coco', write(t, 'c.json', coco(
            c, lambda d: d['annotations'][0].update(bbox=[float('nan'), 1, 5, 5])))],
        '"bbox" must be'),
    'COCO: box wholly outside the image': (lambda c, t: [
        IMPORT, str(t / 'm.sqlite'), '--dataset', 'ds', '--coco', write(t, 'c.json', coco(
            c, lambda d: d['annotations'][0].update(bbox=[5000, 5000, 10, 10])))],
        'lies outside'),
    'COCO: image id is a list': (lambda c, t: [
        IMPORT, str(t / 'm.sqlite'), '--dataset', 'ds', '--coco', write(t, 'c.json', coco(
            c, lambda d: d['annotations'][0].update(image_id=[1])))], 'unknown image_id'),
    'COCO: category id is true': (lambda c, t: [
        IMPORT, str(t / 'm.sqlite'), '--dataset', 'ds', '--coco', write(t, 'c.json', coco(
            c, lambda d: d['categories'][0].update(id=True)))], 'categories[0] needs "id"'),
    'COCO: non-UTF-8 file': (lambda c, t: [
        IMPORT, str(t / 'm.sqlite'), '--dataset', 'ds', '--coco',
        write(t, 'c.json', b'{"images": ["\xff"]}')], 'not UTF-8 text'),
    # --- detections files (crop_detections)
    'detections: a photo listed twice': (lambda c, t: crop(c, t, (lambda d: {
        **d, 'images': d['images'] + d['images'][:1]})(dets_doc(c))), 'is listed twice'),
    'detections: NaN confidence': (lambda c, t: crop(c, t, with_det(c, conf=float('nan'))),
                                   '"conf" must be a number from 0 to 1'),
    'detections: confidence 1.5': (lambda c, t: crop(c, t, with_det(c, conf=1.5)),
                                   '"conf" must be a number from 0 to 1'),
    'detections: negative confidence': (lambda c, t: crop(c, t, with_det(c, conf=-0.1)),
                                        '"conf" must be a number from 0 to 1'),
    'detections: infinite box': (lambda c, t: crop(c, t, with_det(
        c, bbox=[0.1, 0.1, float('inf'), 0.1])), '"bbox" must be'),
    'detections: negative box width': (lambda c, t: crop(c, t, with_det(
        c, bbox=[0.5, 0.5, -0.2, 0.1])), '"bbox" must be'),
    'detections: box of strings': (lambda c, t: crop(c, t, with_det(
        c, bbox=['0', '0', '1', '1'])), '"bbox" must be'),
    'detections: boolean confidence': (lambda c, t: crop(c, t, with_det(c, conf=True)),
                                       '"conf" must be a number'),
    'detections: unknown category': (lambda c, t: crop(c, t, with_det(c, category='9')),
                                     "unknown category '9'"),
    'detections: "detections" not a list': (lambda c, t: crop(c, t, (lambda d: (
        d['images'][0].update(detections='x'), d)[1])(dets_doc(c))), 'must be a list'),
    'detections: "images" not a list': (lambda c, t: crop(c, t, {'images': {}}),
                                        'missing "images" list'),
    'detections: truncated JSON': (lambda c, t: crop(c, t, c.dets.read_text()[:300]),
                                   'not valid JSON'),
    'detections: non-UTF-8': (lambda c, t: crop(c, t, b'{"images": [{"file": "\xe9"}]}'),
                              'not UTF-8 text'),
    'crop_detections: read-only crops folder': (lambda c, t: [
        D, str(c.dets), READ_ONLY, '-i', str(c.photos), '--logdir', str(t)], READ_ONLY),
    # --- detector output cache and dataset creation
    'mdcache: truncated file': (lambda c, t: cds(c, t, cache=poisoned_cache(
        c, t, lambda s: s[:len(s) // 2])), 'not valid JSON'),
    'mdcache: infinite box': (lambda c, t: cds(c, t, cache=poisoned_cache(c, t, poison_box)),
                              '"bbox" must be'),
    'mdcache: wrong types': (lambda c, t: cds(c, t, cache=poisoned_cache(c, t, poison_types)),
                             'must be a list'),
    'create_dataset: queried images not an object': (lambda c, t: (existing_dataset(t), cds(
        c, t, queried=write(t, 'q.json', [1, 2])))[1], 'q.json'),
    'create_dataset: malformed --match-test splits keeps old outputs': (lambda c, t: (
        existing_dataset(t), cds(c, t, '--match-test', str(c.base / 'classification_ds.csv'),
                                 write(t, 'bad_splits.json', {'test': 5})))[1],
        "'test' must be one of"),
    'create_dataset: --match-test CSV lacks columns': (lambda c, t: (
        existing_dataset(t), cds(c, t, '--match-test', write(t, 'old.csv', 'path\nx.jpg\n'),
                                 str(c.base / 'splits.json')))[1], 'missing columns'),
    'create_dataset: splits of a CSV lacking columns': (lambda c, t: [
        CDS, str(Path(write(t, 'out/classification_ds.csv', 'path,label\na,b\n')).parent),
        '--mode', 'splits', '--val-frac', '0.2'], 'missing columns'),
    'create_dataset: read-only output': (lambda c, t: [
        CDS, READ_ONLY, '--mode', 'csv', '-q', str(c.base / 'queried_images.json'), '-c',
        str(c.crops), '-d', str(c.mdcache), '-v', '5a', '-t', '0.5'], READ_ONLY),
    # --- training
    'train: NaN detection confidence': (lambda c, t: train(c, t, dataset_copy(
        c, t, lambda df: df.__setitem__('confidence', float('nan')))),
        'must be a number from 0 to 1'),
    'train: negative detection confidence': (lambda c, t: train(c, t, dataset_copy(
        c, t, lambda df: df.loc.__setitem__((0, 'confidence'), -0.5))),
        'must be a number from 0 to 1'),
    'train: detection confidence above 1': (lambda c, t: train(c, t, dataset_copy(
        c, t, lambda df: df.loc.__setitem__((0, 'confidence'), 1.5))),
        'must be a number from 0 to 1'),
    'train: crops folder without the dataset\'s crops': (lambda c, t: [
        'classification.train_classifier', dataset_copy(c, t),
        str(Path(write(t, 'crops/x/a.jpg', b'')).parent.parent), '-m', 'resnet18',
        '--epochs', '1', '--logdir', str(t / 'runs'), '--num-workers', '0'],
        'holds none of the'),
    'train: splits.json with a number for a split': (lambda c, t: train(c, t, dataset_copy(
        c, t, files={'splits.json': {'train': [['a', 'b']], 'val': 3}})), "'val' must be"),
    'train: a location in two splits': (lambda c, t: train(c, t, dataset_copy(
        c, t, files={'splits.json': (lambda s: {**s, 'val': s['val'] + s['train'][:1]})(
            json.loads((c.base / 'splits.json').read_text()))})), 'is in both'),
    'train: splits.json not JSON': (lambda c, t: train(c, t, dataset_copy(
        c, t, files={'splits.json': '{"train": [['})), 'not valid JSON'),
    'train: dataset CSV lacks the label column': (lambda c, t: train(c, t, dataset_copy(
        c, t, lambda df: df.pop('label'))), 'missing columns'),
    'train: dataset CSV not UTF-8': (lambda c, t: train(c, t, dataset_copy(
        c, t, files={'classification_ds.csv': b'path,label\n\xff\n'})), 'not UTF-8 text'),
    'train: label index not JSON': (lambda c, t: train(c, t, dataset_copy(
        c, t, files={'label_index.json': 'deer'})), 'label_index.json'),
    'train: --lr nan': (lambda c, t: train(c, t, dataset_copy(c, t), '--lr', 'nan'), '--lr'),
    'train: --lr -1': (lambda c, t: train(c, t, dataset_copy(c, t), '--lr', '-1'), '--lr'),
    'train: --epochs 0': (lambda c, t: train(c, t, dataset_copy(c, t), '--epochs', '0'),
                          '--epochs'),
    'train: read-only logdir': (lambda c, t: [
        *train(c, t, dataset_copy(c, t))[:-2], '--logdir', READ_ONLY], READ_ONLY),
    'train: --resume of a folder that is not a run': (lambda c, t: [
        'classification.train_classifier', dataset_copy(c, t), str(c.crops), '--resume',
        str(Path(write(t, 'notarun/x.txt', '')).parent)], 'not a training run'),
    # --- evaluation
    'evaluate: a detector file as the model': (lambda c, t: [
        'classification.evaluate_model', str(c.run / 'params.json'), detector_file(t), '-o',
        str(t / 'ev')], 'not a classifier'),
    'evaluate: params.json not JSON': (lambda c, t: [
        'classification.evaluate_model', write(t, 'params.json', '{'), str(c.model), '-o',
        str(t / 'ev')], 'not valid JSON'),
    'evaluate: checkpoint not a checkpoint': (lambda c, t: [
        'classification.evaluate_model', str(c.run / 'params.json'),
        write(t, 'ckpt_1.pt', b'not a checkpoint'), '-o', str(t / 'ev')], 'ckpt_1.pt'),
    'evaluate: read-only output': (lambda c, t: [
        'classification.evaluate_model', str(c.run / 'params.json'), str(c.model), '-o',
        READ_ONLY], READ_ONLY),
    # --- classifying
    'run_classifier: a detector file': (lambda c, t: [
        R, detector_file(t), str(c.crops), str(t / 'o.csv'), '--num-workers', '0'],
        'not a classifier'),
    'run_classifier: not a model file': (lambda c, t: [
        R, write(t, 'm.pt', b'garbage'), str(c.crops), str(t / 'o.csv')],
        'not a TorchScript model'),
    'run_classifier: --shard 3/2': (lambda c, t: [
        R, str(c.model), str(c.crops), str(t / 'o.csv'), '--shard', '3/2'], '--shard'),
    'run_classifier: categories of another count': (lambda c, t: [
        R, str(c.model), str(c.crops), str(t / 'o.csv'), '-c',
        write(t, 'li.json', {'0': 'a', '1': 'b'}), '--num-workers', '0'], 'li.json'),
    'run_classifier: crops folder missing': (lambda c, t: [
        R, str(c.model), str(t / 'nothing'), str(t / 'o.csv')], 'not found'),
    'run_classifier: read-only output': (lambda c, t: [
        R, str(c.model), str(c.crops), READ_ONLY + '/o.csv', '--num-workers', '0'], READ_ONLY),
    'run_classifier: int8 without calibration crops': (lambda c, t: [
        R, str(c.model), str(c.crops), str(t / 'o.csv'), '--precision', 'int8'],
        'go together'),
    'run_classifier: onnxruntime in bf16': (lambda c, t: [
        R, str(c.model), str(c.crops), str(t / 'o.csv'), '--engine', 'onnxruntime',
        '--precision', 'bf16'], 'no bf16'),
    'run_classifier: detections with a photo twice': (lambda c, t: [
        R, str(c.model), str(c.crops), str(t / 'o.csv'), '-d', write(t, 'd.json', (
            lambda d: {**d, 'images': d['images'] + d['images'][:1]})(dets_doc(c)))],
        'is listed twice'),
    'run_detector_batch: a classifier as the detector': (lambda c, t: [
        DET, str(c.model), str(c.photos), str(t / 'det.json'), '--recursive'],
        'expected YOLOv5 predictions'),
    'run_detector_batch: --shard 0/2': (lambda c, t: [
        DET, detector_file(t), str(c.photos), str(t / 'det.json'), '--shard', '0/2'],
        '--shard'),
    'run_detector_batch: read-only output': (lambda c, t: [
        DET, detector_file(t), str(c.photos), READ_ONLY + '/det.json', '--recursive'],
        READ_ONLY),
    # --- classifier outputs: aggregate and merge
    'aggregate: a non-numeric probability': (lambda c, t: aggregate(t, classifier_csv(
        'a.jpg,0.5,abc\n')), "'abc' is not a probability"),
    'aggregate: a probability above 1': (lambda c, t: aggregate(t, classifier_csv(
        'a.jpg,0.5,1.5\n')), 'is not a probability'),
    'aggregate: an empty probability': (lambda c, t: aggregate(t, classifier_csv(
        'a.jpg,0.5,\n')), 'is not a probability'),
    'aggregate: a crop listed twice': (lambda c, t: aggregate(t, classifier_csv(
        'a.jpg,0.5,0.5\na.jpg,0.4,0.6\n')), 'is listed twice'),
    'aggregate: no path column': (lambda c, t: aggregate(t, classifier_csv(
        'a.jpg,0.5,0.5\n', 'file,deer,fox')), 'no "path" column'),
    'aggregate: target mapping is a list': (lambda c, t: [
        A, write(t, 'c.csv', classifier_csv('a.jpg,0.5,0.5\n')), '-t', write(t, 'm.json', [1]),
        '-o', str(t / 'agg.csv'), '-i', str(t / 'i.json')], 'm.json'),
    'aggregate: read-only output': (lambda c, t: [
        *aggregate(t, classifier_csv('a.jpg,0.5,0.5\n'))[:-4], '-o', READ_ONLY + '/a.csv',
        '-i', READ_ONLY + '/i.json'], READ_ONLY),
    'merge: a non-numeric probability': (lambda c, t: merge(c, t, classifier_csv(
        'cam_00/img_0000.jpg___crop00_mdv5a.jpg,0.5,x\n')), "'x' is not a probability"),
    'merge: label index not JSON': (lambda c, t: merge(c, t, classifier_csv(
        'cam_00/img_0000.jpg___crop00_mdv5a.jpg,0.5,0.5\n'), index='{'), 'not valid JSON'),
    'merge: detections with a photo listed twice': (lambda c, t: merge(c, t, classifier_csv(
        'cam_00/img_0000.jpg___crop00_mdv5a.jpg,0.5,0.5\n'), dets=(
            lambda d: {**d, 'images': d['images'] + d['images'][:1]})(dets_doc(c))),
        'is listed twice'),
    'merge: two unsharded outputs': (lambda c, t: [
        M, write(t, 'a.csv', classifier_csv('a.jpg,0.5,0.5\n')),
        write(t, 'b.csv', classifier_csv('b.jpg,0.5,0.5\n')),
        write(t, 'li.json', {'0': 'deer', '1': 'fox'}), '-j', str(c.dets), '-o',
        str(t / 'm.json'), '-n', 'x'], 'not shards of one'),
    # --- helpers
    'json_to_azcopy_list: a path with ..': (lambda c, t: [
        'classification.json_to_azcopy_list', write(t, 'q.json', {
            'ds/../../etc/passwd': {'dataset': 'ds'}}), '-o', str(t / 'lists')],
        'path would leave'),
    'json_to_azcopy_list: a path with a newline': (lambda c, t: [
        'classification.json_to_azcopy_list', write(t, 'q.json', {
            'ds/a.jpg\nds/evil.jpg': {'dataset': 'ds'}}), '-o', str(t / 'lists')],
        'control character'),
    'json_to_azcopy_list: an absolute path': (lambda c, t: [
        'classification.json_to_azcopy_list', write(t, 'q.json', {
            'ds//etc/passwd': {'dataset': 'ds'}}), '-o', str(t / 'lists')],
        'expected a relative'),
    'json_to_azcopy_list: read-only output': (lambda c, t: [
        'classification.json_to_azcopy_list', write(t, 'q.json', {'ds/a.jpg': {
            'dataset': 'ds'}}), '-o', READ_ONLY], READ_ONLY),
    'analyze_failed_images: log not JSON': (lambda c, t: [
        'classification.analyze_failed_images', write(t, 'log.json', '{"failures": ['),
        '-i', str(t)], 'not valid JSON'),
    'analyze_failed_images: items of a wrong type': (lambda c, t: [
        'classification.analyze_failed_images', write(t, 'log.json', {'failures': [1, 2]}),
        '-i', str(t)], 'item 0'),
    'download_images: list not JSON': (lambda c, t: [
        'data_management.megadb.download_images', 'json', write(t, 'l.json', '['),
        str(t / 'store'), '--megadb', str(c.megadb)], 'not valid JSON'),
    'cache_batchapi_outputs: NaN confidence': (lambda c, t: [
        'classification.cache_batchapi_outputs', write(t, 'd.json', with_det(
            c, conf=float('nan'))), '-f', 'detections', '-d', 'ds', '-c', str(t / 'cache'),
        '-v', '5a'], '"conf" must be a number from 0 to 1'),
    'identify_mislabeled: not a run folder': (lambda c, t: [
        'classification.identify_mislabeled_candidates', str(t)], str(Path('/'))),
    # --- found by an adversarial sweep
    'run_classifier: output is the model file': (lambda c, t: [
        R, (lambda m: (shutil.copy(c.model, m), str(m))[1])(t / 'm.pt'), str(c.crops),
        str(t / 'm.pt'), '--num-workers', '0'], 'is also an input'),
    'run_classifier: output is a folder': (lambda c, t: [
        R, str(c.model), str(c.crops), str(Path(write(t, 'od/x', '')).parent)],
        'is a folder'),
    'run_classifier: a crops folder without crops': (lambda c, t: [
        R, str(c.model), str(Path(write(t, 'empty/x.txt', '')).parent), str(t / 'o.csv')],
        'no crops'),
    'run_classifier: --image-size 100000': (lambda c, t: [
        R, str(c.model), str(c.crops), str(t / 'o.csv'), '--image-size', '100000'],
        '--image-size'),
    'run_detector_batch: a poisoned checkpoint': (lambda c, t: [
        DET, detector_file(t), str(c.photos), str(t / 'det.json'), '--recursive',
        '--output_relative_filenames', '--resume_from_checkpoint', write(t, 'ck.json', {
            'images': [{'file': 'cam_00/img_0000.jpg', 'detections': [
                {'category': '9', 'conf': 0.5, 'bbox': [0, 0, 'a', 9]}]}]})],
        '"bbox" must be'),
    'run_detector_batch: output named like a photo': (lambda c, t: [
        DET, detector_file(t), str(c.photos), str(t / 'x.jpg'), '--recursive'],
        'would replace a photo'),
    'create_dataset: a label that is a string': (lambda c, t: cds(c, t, queried=write(
        t, 'q.json', queried(c, label='turkey'))), '"label" must be a list'),
    'create_dataset: a location that is null': (lambda c, t: cds(c, t, queried=write(
        t, 'q.json', queried(c, location=None))), '"location" must be'),
    'create_dataset: a ground-truth box of strings': (lambda c, t: cds(c, t, queried=write(
        t, 'q.json', queried(c, bbox=[{'category': 'animal', 'bbox': [0, 0, 'x', 1]}]))),
        '"bbox" must be a list'),
    'create_dataset: --seed -1': (lambda c, t: cds(c, t, '--seed', '-1'), '--seed'),
    'merge: fewer label names than probability columns': (lambda c, t: merge(
        c, t, classifier_csv('cam_00/img_0000.jpg___crop00_mdv5a.jpg,0.5,0.3,0.2\n',
                             'path,deer,fox,turkey')), 'do not match the label index'),
    'merge: crops of another detector version': (lambda c, t: merge(c, t, classifier_csv(
        'cam_00/img_0000.jpg___crop00_mdv4.1.jpg,0.5,0.5\n')), 'cannot be merged'),
    'aggregate: -o and -i the same file': (lambda c, t: [
        *aggregate(t, classifier_csv('a.jpg,0.5,0.5\n'))[:-4], '-o', str(t / 'x'), '-i',
        str(t / 'x')], 'given both'),
    'aggregate: a target named path': (lambda c, t: [
        A, write(t, 'c.csv', classifier_csv('a.jpg,0.5,0.5\n')), '-t',
        write(t, 'm.json', {'path': ['deer', 'fox']}), '-o', str(t / 'agg.csv'), '-i',
        str(t / 'i.json')], 'cannot name a target'),
    'aggregate: probabilities summing above 1': (lambda c, t: aggregate(t, classifier_csv(
        'a.jpg,0.9,0.9\n')), 'sum to 1.8'),
    'aggregate: output is the input': (lambda c, t: [
        A, write(t, 'c.csv', classifier_csv('a.jpg,0.5,0.5\n')), '-t',
        write(t, 'm.json', {'x': ['deer', 'fox']}), '-o', str(t / 'c.csv'), '-i',
        str(t / 'i.json')], 'is also an input'),
    'csv_to_json: output is the input': (lambda c, t: [
        'classification.csv_to_json', write(t, 's.csv', 'deer,family,cervidae\n'),
        str(t / 's.csv')], 'is also an input'),
    'map_classification_categories: output is a label spec': (lambda c, t: [
        'classification.map_classification_categories', write(t, 'd.json', SPEC),
        write(t, 'c.json', SPEC), str(c.project / 'taxonomy.csv'), '-o', str(t / 'd.json')],
        'is also an input'),
    'train: splits naming a location without crops': (lambda c, t: train(c, t, dataset_copy(
        c, t, files={'splits.json': (lambda s: {**s, 'train': s['train'] + [['x', 'y']]})(
            json.loads((c.base / 'splits.json').read_text()))})), 'has no crops'),
    'train: a crop listed twice in the dataset': (lambda c, t: train(c, t, dataset_copy(
        c, t, files={'classification_ds.csv': (lambda text: text + text.splitlines()[1]
                                               + '\n')((c.base / 'classification_ds.csv')
                                                       .read_text())})), 'is listed twice'),
    'train: resume with a truncated last checkpoint': (lambda c, t: [
        'classification.train_classifier', str(c.base), str(c.crops), '--resume',
        run_copy(c, t, lambda run: (run / 'ckpt_last.pt').write_bytes(
            (c.run / 'ckpt_last.pt').read_bytes()[:5000]))], 'ckpt_last.pt'),
    'train: resume after the dataset rows were relabelled': (lambda c, t: [
        'classification.train_classifier', dataset_copy(c, t, swap_two_labels), str(c.crops),
        '--resume', run_copy(c, t), '--add-epochs', '1'], 'changed since the run started'),
    # --- a second sweep
    'evaluate: params.json with image_size -1': (lambda c, t: [
        'classification.evaluate_model', write(t, 'params.json', {**json.loads(
            (c.run / 'params.json').read_text()), 'image_size': -1}), str(checkpoint(c.run)),
        '-o', str(t / 'ev'), '--dataset-dir', str(c.base), '--crops-dir', str(c.crops)],
        'image_size -1'),
    'evaluate: params.json that would re-export the model with other settings': (
        lambda c, t: (lambda run: [
            'classification.evaluate_model', write(t, 'params.json', {**json.loads(
                (c.run / 'params.json').read_text()), 'multilabel': True}),
            str(checkpoint(run)), '-o', str(t / 'ev'), '--dataset-dir', str(c.base),
            '--crops-dir', str(c.crops)])(Path(run_copy(c, t))),
        'exists with other settings'),
    'evaluate: a target named weight': (lambda c, t: [
        'classification.evaluate_model', str(c.run / 'params.json'), str(c.model), '-o',
        str(t / 'ev'), '--target-mapping', write(t, 'm.json', {'weight': ['deer']}),
        '--label-index', str(c.base / 'label_index.json')],
        "'weight' cannot name a target"),
    'aggregate: -o and -i both stdout': (lambda c, t: [
        *aggregate(t, classifier_csv('a.jpg,0.5,0.5\n'))[:-4], '-o', '-', '-i', '-'],
        'given both'),
    'merge: the CSV and the label index both from stdin': (lambda c, t: [
        M, '-', '-', '-j', str(c.dets), '-o', str(t / 'm.json'), '-n', 'x'],
        'only one input can be read from stdin'),
    'run_classifier: detections and categories both from stdin': (lambda c, t: [
        R, str(c.model), str(c.crops), str(t / 'o.csv'), '-d', '-', '-c', '-'],
        'only one input can be read from stdin'),
    'aggregate: the CSV and the mapping both from stdin': (lambda c, t: [
        A, '-', '-t', '-', '-o', str(t / 'a.csv'), '-i', str(t / 'i.json')],
        'only one input can be read from stdin'),
    'run_classifier: categories with a label the model lacks': (lambda c, t: [
        R, str(c.model), str(c.crops), str(t / 'o.csv'), '-c', write(t, 'li.json', {
            **(lambda li: {**li, str(len(li)): 'zebra'})(
                json.loads((c.base / 'label_index.json').read_text()))}),
        '--num-workers', '0'], "not in the model: ['zebra']"),
}


def queried(c: Ctx, **changes) -> dict:
    doc = json.loads((c.base / 'queried_images.json').read_text())
    first = next(iter(doc))
    doc[first] = {**doc[first], **changes}
    return doc


def checkpoint(run: Path) -> Path:
    """The run's best checkpoint (the one its TorchScript file was exported from)."""
    (compiled,) = run.glob('ckpt_*_compiled.pt')
    return compiled.with_name(compiled.name.replace('_compiled', ''))


def run_copy(c: Ctx, t: Path, edit=None) -> str:
    out = t / 'run'
    shutil.copytree(c.run, out)
    if edit is not None:
        edit(out)
    return str(out)


def swap_two_labels(df: pd.DataFrame) -> None:
    """Two crops of different labels exchange labels: the same label set, other data."""
    a = df.index[df['label'] == df['label'].iloc[0]][0]
    b = df.index[df['label'] != df['label'].iloc[0]][0]
    df.loc[a, 'label'], df.loc[b, 'label'] = df.loc[b, 'label'], df.loc[a, 'label']


def detector_file(t: Path) -> str:
    """A TorchScript file shaped like a detector (boxes, not one row of scores)."""
    import torch

    class Detector(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
            return (x.mean(dim=1).flatten(1).unsqueeze(-1).repeat(1, 1, 8),)

    path = t / 'md.torchscript'
    if not path.exists():
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            torch.jit.trace(Detector(), torch.zeros(1, 3, 32, 32)).save(str(path))
    return str(path)


def test_the_battery_is_large_enough():
    assert len(CASES) >= 80


@pytest.mark.parametrize('case', sorted(CASES))
def test_refused_in_one_line_with_nothing_changed(case, ctx, tmp_path):
    make_args, expected = CASES[case]
    args = make_args(ctx, tmp_path)
    before = snapshot(tmp_path)
    proc = run(args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    # ours, or argparse's ("prog.py: error: ...", after its usage lines)
    lines = [ln for ln in proc.stderr.splitlines() if re.match(r'([\w.]+\.py: )?error: ', ln)]
    assert len(lines) == 1 and expected in lines[0], proc.stderr[-2000:]
    assert snapshot(tmp_path) == before                    # nothing written or changed
    assert not Path(READ_ONLY).exists()


# ------------------------------------------------------------------ logged and skipped

def failure_log(folder: Path, step: str) -> dict:
    (path,) = folder.glob(f'{step}_log_*.json')
    doc = json.loads(path.read_text())
    assert doc['failure_log_version'] == 1 and doc['step'] == step
    assert all(set(f) == {'file', 'reason'} for f in doc['failures'])
    return doc


def test_a_path_leaving_the_photos_folder_is_skipped_and_logged(ctx, tmp_path):
    doc = dets_doc(ctx)
    bad = json.loads(json.dumps(doc['images'][0]))
    bad['file'] = '../../etc/x.jpg'
    doc['images'].append(bad)
    proc = run(crop(ctx, tmp_path, doc))
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = failure_log(tmp_path, 'crop_detections')
    reasons = {f['file']: f['reason'] for f in log['failures']}
    assert 'refused path' in reasons['../../etc/x.jpg']
    assert log['crops_written'] > 0                       # the rest of the run went on
    assert not (tmp_path.parent / 'etc').exists()


def test_a_box_wholly_outside_its_photo_is_skipped_and_logged(ctx, tmp_path):
    doc = with_det(ctx, bbox=[1.2, 1.3, 0.2, 0.2], conf=0.99)
    proc = run(crop(ctx, tmp_path, doc))
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = failure_log(tmp_path, 'crop_detections')
    first = doc['images'][0]['file']
    assert 'outside the image' in {f['file']: f['reason'] for f in log['failures']}[first]
    assert not list((tmp_path / 'crops').glob(f'{first}___crop00_*'))
    assert log['crops_invalid_box'] == 1


@pytest.fixture
def bomb_photos(ctx, tmp_path):
    """Two real photos and a decompression bomb (a JPEG header claiming 60000^2 px)."""
    photos = tmp_path / 'photos'
    photos.mkdir()
    doc = dets_doc(ctx)
    doc['images'] = doc['images'][:2]
    for entry in doc['images']:
        shutil.copy(ctx.photos / entry['file'], photos / Path(entry['file']).name)
        entry['file'] = Path(entry['file']).name
    (photos / 'bomb.jpg').write_bytes(bomb_jpeg())
    doc['images'].append({**json.loads(json.dumps(doc['images'][0])), 'file': 'bomb.jpg'})
    (tmp_path / 'd.json').write_text(json.dumps(doc))
    return photos, tmp_path / 'd.json'


def test_decompression_bombs_are_skipped_and_logged_by_every_step(ctx, tmp_path,
                                                                   bomb_photos):
    photos, dets = bomb_photos
    # crop_detections
    proc = run([D, str(dets), str(tmp_path / 'crops'), '-i', str(photos), '--logdir',
                str(tmp_path), '-t', '0.0'])
    assert proc.returncode == 0, proc.stderr[-2000:]
    reasons = {f['file']: f['reason'] for f in failure_log(tmp_path, 'crop_detections')[
        'failures']}
    assert 'decompression bomb' in reasons['bomb.jpg']
    crops = sorted((tmp_path / 'crops').glob('*.jpg'))
    assert crops and not any(p.name.startswith('bomb') for p in crops)
    # run_classifier on crops, one of them a bomb
    (tmp_path / 'crops' / 'zz_bomb.jpg').write_bytes(bomb_jpeg())
    out = tmp_path / 'classes.csv'
    proc = run([R, str(ctx.model), str(tmp_path / 'crops'), str(out), '--num-workers', '0'])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'unreadable crop: zz_bomb.jpg' in proc.stderr
    assert len(pd.read_csv(out)) == len(crops)
    # run_classifier straight from the photos
    proc = run([R, str(ctx.model), str(photos), str(tmp_path / 'from_photos.csv'),
                '--from-photos', '-d', str(dets), '--num-workers', '0'])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'unreadable crop: bomb.jpg___crop00' in proc.stderr
    assert len(pd.read_csv(tmp_path / 'from_photos.csv')) == len(crops)
    # run_detector_batch
    proc = run([DET, detector_file(tmp_path), str(photos), str(tmp_path / 'det.json'),
                '--engine', 'torch', '--image_size', '64', '--output_relative_filenames'])
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = {e['file']: e for e in json.loads((tmp_path / 'det.json').read_text())['images']}
    assert found['bomb.jpg']['failure'] == 'image access failure'
    assert all('failure' not in e for name, e in found.items() if name != 'bomb.jpg')


def test_training_and_evaluation_skip_a_decompression_bomb(ctx, tmp_path):
    crops = tmp_path / 'crops'
    shutil.copytree(ctx.crops, crops)
    df = pd.read_csv(ctx.base / 'classification_ds.csv')
    bombed = df['path'].iloc[0]
    (crops / bombed).write_bytes(bomb_jpeg())
    dataset = dataset_copy(ctx, tmp_path)
    proc = run(['classification.train_classifier', dataset, str(crops), '-m', 'resnet18',
                '--image-size', '32', '--epochs', '1', '--batch-size', '16', '--num-workers',
                '0', '--logdir', str(tmp_path / 'runs')])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'unreadable' in proc.stderr and bombed in proc.stderr
    (run_dir,) = (tmp_path / 'runs').iterdir()
    assert list(run_dir.glob('ckpt_*_compiled.pt'))


def test_a_missing_region_decoder_is_said_once_at_run_time(ctx, tmp_path):
    code = ("import sys; sys.modules['classification._jpegregion'] = None; "
            "from classification import crop_detections, utils; "
            "sys.exit(utils.run_cli(crop_detections.main))")
    proc = subprocess.run([sys.executable, '-c', code, str(ctx.dets), str(tmp_path / 'c'),
                           '-i', str(ctx.photos), '--logdir', str(tmp_path), '--threads', '2'],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.count('region decoder') == 1
    assert list((tmp_path / 'c').rglob('*.jpg'))


def test_outputs_honour_the_umask(ctx, tmp_path):
    code = ("import os, sys; os.umask(0o027); "
            "from classification import crop_detections, utils; "
            "sys.exit(utils.run_cli(crop_detections.main))")
    proc = subprocess.run([sys.executable, '-c', code, str(ctx.dets), str(tmp_path / 'c'),
                           '-i', str(ctx.photos), '--logdir', str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    files = [*tmp_path.glob('*.json'), *(tmp_path / 'c').rglob('*.jpg')]
    assert len(files) > 1
    assert {p.stat().st_mode & 0o777 for p in files} == {0o640}


@pytest.mark.parametrize('env, message', [
    ({'WORLD_SIZE': 'x'}, "WORLD_SIZE 'x' is not a number"),
    ({'WORLD_SIZE': '2', 'RANK': '5', 'LOCAL_RANK': '0', 'MASTER_ADDR': '127.0.0.1',
      'MASTER_PORT': '1'}, 'RANK 5 / LOCAL_RANK 0 do not fit WORLD_SIZE 2'),
    ({'WORLD_SIZE': '2', 'RANK': '1', 'LOCAL_RANK': '1'}, 'MASTER_ADDR/MASTER_PORT'),
])
@pytest.mark.parametrize('step', [R, DET])
def test_inconsistent_torchrun_settings_are_refused(ctx, tmp_path, env, message, step):
    model = ctx.model if step == R else detector_file(tmp_path)
    before = snapshot(tmp_path)
    proc = run([step, str(model), str(ctx.crops if step == R else ctx.photos),
                str(tmp_path / 'out' / 'o.json'), '--recursive' if step == DET else '-v5a'],
               env={k: v for k, v in env.items()})
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    assert message in proc.stderr.strip().splitlines()[-1]
    assert snapshot(tmp_path) == before


def test_a_second_run_writing_the_same_output_is_refused(ctx, tmp_path):
    import fcntl
    out = tmp_path / 'o.csv'
    with open(f'{out}.part.lock', 'w') as held:         # a first run holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = run([R, str(ctx.model), str(ctx.crops), str(out), '--num-workers', '0'])
    assert proc.returncode == 2 and 'another run is writing this output' in proc.stderr
    assert not out.exists() and not Path(f'{out}.part').exists()
    proc = run([R, str(ctx.model), str(ctx.crops), str(out), '--num-workers', '0'])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not Path(f'{out}.part.lock').exists()


def test_a_photo_with_more_than_100_boxes_is_cropped_and_classified_whole(ctx, tmp_path):
    doc = dets_doc(ctx)
    first = doc['images'][0]
    first['detections'] = [{'category': '1', 'conf': 0.9,
                            'bbox': [0.005 * (i % 10), 0.005 * (i // 10), 0.3, 0.3]}
                           for i in range(120)]
    doc['images'] = [first]
    proc = run(crop(ctx, tmp_path, doc))
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = sorted(p.name for p in (tmp_path / 'crops').rglob('*.jpg'))
    assert len(names) == 120 and any('___crop119_' in n for n in names)
    proc = run([R, str(ctx.model), str(ctx.photos), str(tmp_path / 'p.csv'), '--from-photos',
                '-d', str(tmp_path / 'd.json'), '--num-workers', '0'])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(pd.read_csv(tmp_path / 'p.csv')) == 120
