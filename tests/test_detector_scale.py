"""run_detector_batch at archive scale: engines (PyTorch, OpenVINO, ONNX Runtime),
--shard K/N read back whole by the steps that read detections, and torchrun."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from classification import utils
from detection import detector_output
from tests.conftest import REPO, unmatched


class TinyYolo(torch.nn.Module):
    """A seeded YOLOv5-shaped detector with stride 32: one prediction per 32 x 32 cell
    (centre, size, objectness, three class scores), for any input size."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv = torch.nn.Conv2d(3, 8, 32, stride=32)
        with torch.no_grad():
            self.conv.weight.mul_(8.0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        y = self.conv(x).sigmoid()
        b, _, h, w = y.shape
        gy, gx = torch.meshgrid(torch.arange(h, dtype=y.dtype), torch.arange(w, dtype=y.dtype),
                                indexing='ij')
        cx = (gx + y[:, 0] * 2 - 0.5) * 32
        cy = (gy + y[:, 1] * 2 - 0.5) * 32
        out = torch.stack([cx, cy, y[:, 2] * 96, y[:, 3] * 96, y[:, 4], y[:, 5], y[:, 6],
                           y[:, 7]], dim=-1)
        return (out.reshape(b, -1, 8),)


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """(the TorchScript file, traced with dynamic shapes as YOLOv5 --dynamic does, and a
    folder of photos of several sizes)."""
    root = tmp_path_factory.mktemp('tiny')
    model = TinyYolo().eval()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        traced = torch.jit.trace(model, torch.zeros(1, 3, 64, 96))
        path = root / 'md_tiny.torchscript'
        torch.jit.save(traced, str(path), _extra_files={'config.txt': json.dumps({'stride': 32})})
    x = torch.rand(1, 3, 160, 96)
    assert torch.equal(traced(x)[0], model(x)[0])            # any input shape
    rng = np.random.default_rng(0)
    photos = root / 'photos'
    for i, (w, h) in enumerate([(640, 480), (480, 640), (300, 200), (800, 450), (333, 333),
                                (640, 480), (512, 384)]):
        (photos / f'cam{i % 2}').mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 255, (h // 16, w // 16, 3), dtype=np.uint8)
        Image.fromarray(arr).resize((w, h), Image.Resampling.BICUBIC).save(
            photos / f'cam{i % 2}' / f'img{i}.jpg', quality=92)
    return path, photos


def detect(model, photos, out, *flags, check=True, torchrun=0):
    launcher = ([sys.executable, '-m', 'torch.distributed.run', '--standalone',
                 '--nproc_per_node', str(torchrun)] if torchrun else [sys.executable])
    proc = subprocess.run([*launcher, '-m', 'detection.run_detector_batch', str(model),
                           str(photos), str(out), '--recursive', '--output_relative_filenames',
                           '--image_size', '320', '--threshold', '0.2', *flags],
                          text=True, capture_output=True, cwd=REPO,
                          env={**os.environ, 'OMP_NUM_THREADS': '1'})
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr[-3000:])
    return proc


def images(path):
    return json.loads(path.read_text())['images']


def test_engines_give_the_same_detections(tiny, tmp_path):
    model, photos = tiny
    ref = tmp_path / 'torch.json'
    detect(model, photos, ref, '--engine', 'torch')
    base = images(ref)
    assert sum(len(e['detections']) for e in base) > 20
    # (bf16 parity depends on the network: measured on a MegaDetector-shaped one in
    # bench/bench_detector.py; this toy one only has to run)
    for engine, precision in [('onnxruntime', 'fp32'), ('openvino', 'fp32'),
                              ('openvino', 'bf16')]:
        out = tmp_path / f'{engine}_{precision}.json'
        detect(model, photos, out, '--engine', engine, '--precision', precision)
        other = images(out)
        assert [e['file'] for e in other] == [e['file'] for e in base]
        for a, b in ((other, base), (base, other)):
            missing, total = unmatched(a, b)
            limit = 0.01 if precision == 'fp32' else 0.2
            assert missing <= limit * total, (engine, precision, missing, total)
    # the ONNX export is cached beside the model, made once
    assert model.with_suffix('.onnx').exists()


def test_shards_and_torchrun_give_the_unsharded_detections(tiny, tmp_path):
    model, photos = tiny
    flags = ('--engine', 'torch')
    detect(model, photos, tmp_path / 'all.json', *flags)
    for k in (1, 2, 3):
        detect(model, photos, tmp_path / f'part_{k}of3.json', *flags, '--shard', f'{k}/3')
    base = images(tmp_path / 'all.json')
    parts = [images(tmp_path / f'part_{k}of3.json') for k in (1, 2, 3)]
    assert all(parts) and sum(parts, []) == base
    joined = detector_output.read_document(str(tmp_path / 'part_*of3.json'))
    assert joined['images'] == base
    # a step that reads detections takes the shard files as one run
    from classification import run_classifier
    names = run_classifier.expected_crops(str(tmp_path / 'part_*of3.json'), 0.2, '5a')
    assert names == run_classifier.expected_crops(str(tmp_path / 'all.json'), 0.2, '5a')
    # two processes, one output
    detect(model, photos, tmp_path / 'tr.json', *flags, torchrun=2)
    assert images(tmp_path / 'tr.json') == base
    assert not list(tmp_path.glob('tr.json*.part'))


def test_detector_shards_of_different_runs_are_refused(tiny, tmp_path):
    model, photos = tiny
    detect(model, photos, tmp_path / 'a_1of2.json', '--engine', 'torch', '--shard', '1/2')
    detect(model, photos, tmp_path / 'a_2of2.json', '--engine', 'torch', '--shard', '2/2',
           '--threshold', '0.5')
    with pytest.raises(utils.InputError, match='different runs'):
        detector_output.read_document(str(tmp_path / 'a_*of2.json'))
    proc = detect(model, photos, tmp_path / 'b.json', '--shard', '0/2', check=False)
    assert proc.returncode == 2 and '--shard' in proc.stderr
    proc = detect(model, photos, '-', '--shard', '1/2', check=False)
    assert proc.returncode == 2 and 'needs an output file' in proc.stderr


def test_a_classifier_given_as_detector_is_refused(model_files, tmp_path, tiny):
    _, photos = tiny
    proc = detect(model_files[0], photos, tmp_path / 'o.json', '--engine', 'torch',
                  check=False)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / 'o.json').exists()
