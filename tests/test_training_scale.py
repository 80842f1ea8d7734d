"""Training at scale and fidelity: 2-process DDP (gloo on CPU) under torchrun, exact
resume after SIGKILL, mixed precision, the original recipe, fine-tuning, model files
that carry their settings, evaluate_model's fidelity, and bad input."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from classification import (
    crop_data,
    evaluate_model,
    model_files,
    models,
    run_classifier,
    train_classifier,
    train_config,
    training,
    utils,
)
from tests.conftest import REPO, read_json, run_module

TINY = ['-m', 'resnet18', '--image-size', '32', '--batch-size', '8', '--num-workers', '0']


def crops_of(base_logdir: Path) -> str:
    return str(base_logdir.parent / 'crops')


def train(base_logdir: Path, logdir: Path, *extra: str, env: dict | None = None,
          check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, '-m', 'classification.train_classifier',
                           str(base_logdir), crops_of(base_logdir), '--logdir', str(logdir),
                           *extra], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, 'PYTHONUNBUFFERED': '1', **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr[-3000:])
    return proc


def torchrun(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Two processes on this machine, gloo on CPU, as a user starts them."""
    proc = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone',
                           '--nproc_per_node', '2', '-m', module, *args],
                          capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, 'PYTHONUNBUFFERED': '1', 'OMP_NUM_THREADS': '1',
                               'CUDA_VISIBLE_DEVICES': ''})
    if proc.returncode != 0:
        raise AssertionError(proc.stderr[-4000:])
    return proc


def best_ckpt(run: Path) -> Path:
    """The best epoch's checkpoint (the one exported beside it)."""
    (compiled,) = run.glob('ckpt_*_compiled.pt')
    return compiled.with_name(compiled.name.replace('_compiled', ''))


def only_run(logdir: Path) -> Path:
    (run,) = [p for p in logdir.iterdir() if p.is_dir()]
    return run


# ---------------------------------------------------------------- DDP

def test_two_process_ddp_trains_checkpoints_resumes_and_evaluates_every_crop_once(
        base_logdir, tmp_path):
    logdir = tmp_path / 'runs'
    proc = torchrun('classification.train_classifier', str(base_logdir), crops_of(base_logdir),
                    *TINY, '--epochs', '2', '--label-weighted', '--seed', '5',
                    '--checkpoint-every', '2', '--logdir', str(logdir), '--recipe', 'original',
                    '--finetune', '1')
    assert 'process 1 of 2 (gloo' in proc.stderr
    run = only_run(logdir)                    # one folder for both processes
    params = read_json(run / 'params.json')
    assert params['world_size'] == 2
    assert params['lr'] == pytest.approx(0.016 * 8 * 2 / 256)   # the whole batch of 2 x 8
    last = torch.load(run / 'ckpt_last.pt', weights_only=True)
    assert last['world_size'] == 2 and len(last['per_rank']) == 2
    assert last['state']['epoch'] == 2
    frames = crop_data.load_split_frames(base_logdir, utils.load_label_index(
        base_logdir / 'label_index.json'), crop_data.SPLITS)
    for split in ('train', 'val', 'test'):
        out = pd.read_csv(run / f'outputs_{split}.csv.gz')
        assert sorted(out['path']) == sorted(frames[split]['path'])     # each crop once
    # resumed by both processes: one more epoch
    proc = torchrun('classification.train_classifier', str(base_logdir), crops_of(base_logdir),
                    '--resume', str(run), '--add-epochs', '1', '--num-workers', '0')
    assert 'resuming' in proc.stderr
    assert torch.load(run / 'ckpt_last.pt', weights_only=True)['state']['epoch'] == 3
    assert len((run / 'resumes.jsonl').read_text().splitlines()) == 1
    # evaluate_model under torchrun equals a single process
    ckpt = best_ckpt(run)
    torchrun('classification.evaluate_model', str(run / 'params.json'), str(ckpt), '-o',
             str(tmp_path / 'ddp'), '--splits', 'val', 'test', '--num-workers', '0')
    assert evaluate_model.main([str(run / 'params.json'), str(ckpt), '-o',
                                str(tmp_path / 'one'), '--splits', 'val', 'test',
                                '--num-workers', '0']) == 0
    for split in ('val', 'test'):
        a = pd.read_csv(tmp_path / 'ddp' / f'outputs_{split}.csv.gz')
        b = pd.read_csv(tmp_path / 'one' / f'outputs_{split}.csv.gz')
        assert list(a['path']) == list(b['path']) and a['path'].is_unique
        np.testing.assert_allclose(a.iloc[:, 3:].to_numpy(), b.iloc[:, 3:].to_numpy(),
                                   atol=1e-5)


def test_epoch_sampler_shares_are_disjoint_and_cover_one_sample():
    w = np.array([1.0] * 10 + [5.0] * 3)
    one = crop_data.EpochSampler(13, seed=3, weights=w)
    one.set_epoch(4)
    whole = [r for r, _ in one]
    shares = []
    for rank in range(2):
        s = crop_data.EpochSampler(13, seed=3, weights=w, rank=rank, world_size=2)
        s.set_epoch(4)
        shares.append([r for r, _ in s])
    assert len(shares[0]) == len(shares[1]) == 7
    merged = [x for pair in zip(*shares, strict=True) for x in pair][:13]
    assert merged == whole                          # one epoch's sample, dealt out
    s = crop_data.EpochSampler(13, seed=3, weights=w)
    s.set_epoch(5)
    assert [r for r, _ in s] != whole               # seeded per epoch
    s.set_epoch(4, start=5)
    assert list(s) == list(one)[5:]                 # a resumed epoch skips what was done


# ---------------------------------------------------------------- exact resume

def test_resume_after_sigkill_mid_epoch_gives_the_uninterrupted_model(base_logdir, tmp_path):
    """EfficientNet (dropout, drop-connect) with augmentation: a run killed with SIGKILL
    in the middle of epoch 1 and resumed ends with exactly the uninterrupted model."""
    args = ['-m', 'efficientnet-b0', '--image-size', '32', '--batch-size', '8',
            '--num-workers', '0', '--epochs', '2', '--seed', '11', '--checkpoint-every', '2',
            '--recipe', 'original']
    train(base_logdir, tmp_path / 'a', *args)
    killed = train(base_logdir, tmp_path / 'b', *args,
                   env={training.KILL_ENV: '1:3'}, check=False)
    assert killed.returncode == -signal.SIGKILL
    run_b = only_run(tmp_path / 'b')
    state = torch.load(run_b / 'ckpt_last.pt', weights_only=True)['state']
    assert (state['epoch'], state['batch']) == (1, 2)      # lost one batch
    (run_b / '.ckpt_last.pt.stale.tmp').write_bytes(b'half a checkpoint')
    resumed = train(base_logdir, tmp_path / 'unused', '--resume', str(run_b),
                    '--num-workers', '0')
    assert 'at epoch 1, batch 2' in resumed.stderr
    assert not list(run_b.glob('.*.tmp'))                     # stale temporaries removed
    run_a = only_run(tmp_path / 'a')
    a = torch.load(run_a / 'ckpt_last.pt', weights_only=True)
    b = torch.load(run_b / 'ckpt_last.pt', weights_only=True)
    for k, v in a['model'].items():
        assert torch.equal(v, b['model'][k]), k
    assert a['state']['best_epoch'] == b['state']['best_epoch']
    pd.testing.assert_frame_equal(pd.read_csv(run_a / 'overall_metrics.csv'),
                                  pd.read_csv(run_b / 'overall_metrics.csv'))


# ---------------------------------------------------------------- recipe, precision

def test_amp_original_recipe_and_finetune(base_logdir, trained_run, tmp_path):
    best = best_ckpt(trained_run)
    train(base_logdir, tmp_path / 'r', *TINY, '--epochs', '1', '--amp', '--recipe',
          'original', '--pretrained', str(best), '--finetune', '1', '--seed', '2')
    run = only_run(tmp_path / 'r')
    params = read_json(run / 'params.json')
    assert params['amp'] == 'auto' and params['recipe'] == 'original'
    assert params['lr'] == pytest.approx(0.016 * 8 / 256)
    last = torch.load(run / 'ckpt_last.pt', weights_only=True)
    group = last['optimizer']['param_groups'][0]
    assert group['momentum'] == 0.9 and 'nesterov' in group          # SGD for ResNet
    before = torch.load(best, weights_only=True)['model']
    after = last['model']
    # fine-tuning: only the head moved; batch-norm statistics stayed frozen
    assert torch.equal(before['bn1.running_mean'], after['bn1.running_mean'])
    assert torch.equal(before['layer1.0.conv1.weight'], after['layer1.0.conv1.weight'])
    assert not torch.equal(before['fc.weight'], after['fc.weight'])


def test_learning_rate_schedules():
    cfg = train_config.TrainConfig('d', 'c', model_name='efficientnet-b0', recipe='original',
                                   lr=0.004)
    assert training.learning_rate(cfg, 0, 10) == 0.004
    assert training.learning_rate(cfg, 3, 10) == pytest.approx(0.004 * 0.97 ** (3 / 2.4))
    res = train_config.TrainConfig('d', 'c', model_name='resnet18', recipe='original', lr=0.1)
    assert training.learning_rate(res, 7, 50) == pytest.approx(0.1)
    assert training.learning_rate(res, 8, 50) == pytest.approx(0.01)
    cos = train_config.TrainConfig('d', 'c', lr=1e-3)
    assert training.learning_rate(cos, 0, 4) == 1e-3
    assert training.learning_rate(cos, 2, 4) == pytest.approx(5e-4)


def test_augmentation_is_a_function_of_the_seed():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), np.uint8))
    aug = crop_data.augment_pixels(32, crop_data.ORIGINAL_AUGMENTATION)
    a = aug(img, torch.Generator().manual_seed(5))
    torch.manual_seed(123)                           # the global state plays no part
    b = aug(img, torch.Generator().manual_seed(5))
    c = aug(img, torch.Generator().manual_seed(6))
    assert a.shape == (32, 32, 3) and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_efficientnet_b8_and_l2_are_choices():
    assert {'efficientnet-b8', 'efficientnet-l2'} <= set(models.VALID_MODELS)
    assert models.default_image_size('efficientnet-l2') == 800
    with pytest.raises(utils.InputError, match='no standard ImageNet weights'):
        models.build_model('efficientnet-l2', 3, True)


# ---------------------------------------------------------------- model files

def test_model_file_carries_its_settings(trained_run, base_logdir, tmp_path, capsys):
    (compiled,) = trained_run.glob('ckpt_*_compiled.pt')
    _, info, multilabel = model_files.load_classifier(compiled, torch.device('cpu'))
    labels = utils.load_label_index(base_logdir / 'label_index.json')
    assert info is not None and not multilabel
    assert (info.image_size, info.labels, info.model_name) == (32, tuple(labels), 'resnet18')
    out = pd.read_csv(trained_run / 'outputs_val.csv.gz')
    crops = Path(crops_of(base_logdir))
    sub = tmp_path / 'crops'
    for p in out['path'][:12]:
        (sub / p).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(crops / p, sub / p)
    # no --image-size, no categories: the file's own (same outputs as the run's evaluation)
    assert run_classifier.main([str(compiled), str(sub), str(tmp_path / 'a.csv'),
                                '--num-workers', '0', '--batch-size', '4',
                                '--precision', 'fp32']) == 0
    a = pd.read_csv(tmp_path / 'a.csv').set_index('path')
    ref = out.set_index('path').loc[a.index, labels]
    np.testing.assert_allclose(a[labels].to_numpy(), ref.to_numpy(), atol=2e-4)
    capsys.readouterr()
    assert run_classifier.main([str(compiled), str(sub), str(tmp_path / 'b.csv'),
                                '--num-workers', '0', '--image-size', '64']) == 0
    assert 'differs from the 32 px' in capsys.readouterr().err
    (tmp_path / 'li.json').write_text(json.dumps(utils.label_index_dict(labels[::-1])))
    proc = run_module('classification.run_classifier', str(compiled), str(sub),
                      str(tmp_path / 'c.csv'), '-c', str(tmp_path / 'li.json'), check=False)
    assert proc.returncode == 2 and 'another order' in proc.stderr
    assert not (tmp_path / 'c.csv').exists()


# ---------------------------------------------------------------- evaluate_model fidelity

def test_evaluate_model_keeps_other_and_writes_the_targets(trained_run, base_logdir,
                                                           tmp_path):
    labels = utils.load_label_index(base_logdir / 'label_index.json')
    model_labels = [*labels, 'human', 'car']
    model = models.build_model('resnet18', len(model_labels))
    ts = model_files.export_torchscript(
        model, model_files.ClassifierInfo('resnet18', 32, tuple(model_labels)),
        tmp_path / 'm_compiled.pt')
    (tmp_path / 'li.json').write_text(json.dumps(utils.label_index_dict(model_labels)))
    mapping = {**{lab: [lab] for lab in labels}, 'other': ['human', 'car']}
    (tmp_path / 'map.json').write_text(json.dumps(mapping))
    assert evaluate_model.main([str(trained_run / 'params.json'), str(ts), '-o',
                                str(tmp_path / 'o'), '--splits', 'val', '--target-mapping',
                                str(tmp_path / 'map.json'), '--label-index',
                                str(tmp_path / 'li.json'), '--num-workers', '0']) == 0
    out = pd.read_csv(tmp_path / 'o' / 'outputs_val.csv.gz')
    assert list(out.columns[3:]) == [*labels, 'other']
    np.testing.assert_allclose(out[[*labels, 'other']].sum(axis=1), 1.0, atol=1e-5)
    assert utils.load_label_index(tmp_path / 'o' / 'label_index.json') == [*labels, 'other']
    assert np.load(tmp_path / 'o' / 'confusion_matrices.npz')['val'].shape == (
        len(labels) + 1, len(labels) + 1)


def test_evaluate_model_splits_flag_alone_only_exports(trained_run, base_logdir, tmp_path):
    run = tmp_path / 'run'
    shutil.copytree(trained_run, run)
    ckpt = best_ckpt(run)
    model_files.compiled_path(ckpt).unlink()
    assert evaluate_model.main([str(run / 'params.json'), str(ckpt), '-o', str(tmp_path / 'o'),
                                '--dataset-dir', str(base_logdir), '--crops-dir',
                                crops_of(base_logdir), '--splits']) == 0
    assert model_files.compiled_path(ckpt).exists()
    assert not (tmp_path / 'o').exists()


def test_evaluate_model_from_another_folder_and_crops_override(trained_run, base_logdir,
                                                               tmp_path, monkeypatch):
    """Relative folders of params.json are taken from the run folder; --crops-dir wins."""
    monkeypatch.chdir(tmp_path)
    params = read_json(trained_run / 'params.json')
    assert not Path(params['cropped_images_dir']).is_absolute()
    ckpt = best_ckpt(trained_run)
    assert evaluate_model.main([str(trained_run / 'params.json'), str(ckpt), '-o', 'a',
                                '--splits', 'val', '--num-workers', '0']) == 0
    moved = tmp_path / 'moved_crops'
    shutil.copytree(crops_of(base_logdir), moved)
    assert evaluate_model.main([str(trained_run / 'params.json'), str(ckpt), '-o', 'b',
                                '--splits', 'val', '--crops-dir', str(moved)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv('a/outputs_val.csv.gz'),
                                  pd.read_csv('b/outputs_val.csv.gz'))
    assert evaluate_model._setting(0, {'num_workers': 8}, 'num_workers') == 0


def test_label_stats_and_overall_metrics_units(trained_run):
    table = pd.read_csv(trained_run / 'overall_metrics.csv')
    assert list(table.columns) == ['split', 'loss', 'loss_weighted', 'acc_top1', 'acc_top3',
                                   'acc_weighted_top1', 'acc_weighted_top3']
    assert table['acc_top3'].max() > 1                 # percent
    stats = pd.read_csv(trained_run / 'label_stats.csv')
    assert list(stats.columns) == ['split', 'label', 'precision', 'recall', 'f1', 'count',
                                   'predicted']
    assert stats['precision'].between(0, 1).all()      # never predicted: 0, not empty


# ---------------------------------------------------------------- bad input

def _labels_changed(base: Path, tmp: Path, how: str) -> Path:
    data = tmp / f'ds_{how}'
    shutil.copytree(base, data, ignore=shutil.ignore_patterns('runs'))
    labels = utils.load_label_index(base / 'label_index.json')
    if how == 'renamed':
        new = [f'{labels[0]}_x', *labels[1:]]
        df = pd.read_csv(data / 'classification_ds.csv', dtype=str)
        df['label'] = df['label'].replace(labels[0], new[0])
        df.to_csv(data / 'classification_ds.csv', index=False)
    elif how == 'reordered':
        new = labels[::-1]
    else:
        new = labels
        splits = read_json(data / 'splits.json')
        splits['train'].append(splits['val'].pop())
        (data / 'splits.json').write_text(json.dumps(splits))
    (data / 'label_index.json').write_text(json.dumps(utils.label_index_dict(new)))
    return data


@pytest.mark.parametrize(('how', 'message'), [('renamed', 'labels differ'),
                                              ('reordered', 'label order differs'),
                                              ('splits', 'splits differ')])
def test_resume_against_another_dataset_is_refused(base_logdir, trained_run, tmp_path, how,
                                                   message):
    run = tmp_path / 'run'
    shutil.copytree(trained_run, run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    data = _labels_changed(base_logdir, tmp_path, how)
    proc = run_module('classification.train_classifier', str(data), crops_of(base_logdir),
                      '--resume', str(run), '--add-epochs', '1', check=False)
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


@pytest.mark.parametrize(('extra', 'message'), [
    (['--lr', 'nan'], 'nan is not a finite'), (['--lr', 'inf'], 'not a finite'),
    (['--lr', '0'], 'must be above 0'), (['--lr', '-1'], 'must be above 0'),
    (['--amp', 'fp16'], 'needs a CUDA device'),
    (['--add-epochs', '2'], '--add-epochs needs --resume'),
])
def test_bad_training_flags_exit_2_and_leave_no_run_folder(base_logdir, tmp_path, extra,
                                                          message):
    proc = run_module('classification.train_classifier', str(base_logdir),
                      crops_of(base_logdir), *TINY, '--epochs', '1', '--logdir',
                      str(tmp_path / 'runs'), *extra, check=False)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not (tmp_path / 'runs').exists() or not any((tmp_path / 'runs').iterdir())


def test_crops_folder_without_the_datasets_crops_is_refused(base_logdir, tmp_path):
    (tmp_path / 'empty').mkdir()
    proc = run_module('classification.train_classifier', str(base_logdir),
                      str(tmp_path / 'empty'), *TINY, '--logdir', str(tmp_path / 'runs'),
                      check=False)
    assert proc.returncode == 2 and 'holds none of the train crops' in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / 'runs').exists()


def test_resume_refuses_a_folder_that_is_not_a_run_and_changed_settings(base_logdir,
                                                                        trained_run, tmp_path):
    (tmp_path / 'x').mkdir()
    proc = run_module('classification.train_classifier', str(base_logdir),
                      crops_of(base_logdir), '--resume', str(tmp_path / 'x'), check=False)
    assert proc.returncode == 2 and 'not a training run' in proc.stderr
    proc = run_module('classification.train_classifier', str(base_logdir),
                      crops_of(base_logdir), '--resume', str(trained_run), '--lr', '0.1',
                      '--epochs', '9', check=False)
    assert proc.returncode == 2 and 'drop --epochs, --lr' in proc.stderr


def test_nan_confidence_in_the_dataset_is_refused(base_logdir, tmp_path):
    data = tmp_path / 'ds'
    shutil.copytree(base_logdir, data, ignore=shutil.ignore_patterns('runs'))
    df = pd.read_csv(data / 'classification_ds.csv', dtype=str)
    df.loc[3, 'confidence'] = 'nan'
    df.to_csv(data / 'classification_ds.csv', index=False)
    proc = run_module('classification.train_classifier', str(data), crops_of(base_logdir),
                      *TINY, '--logdir', str(tmp_path / 'runs'), '--weight-by-detection-conf',
                      check=False)
    assert proc.returncode == 2 and 'must be a number from 0 to 1' in proc.stderr
    assert not (tmp_path / 'runs').exists()


@pytest.mark.parametrize('name', ['resnet18', 'efficientnet-b0'])
def test_recompute_activations_gives_the_same_gradients(name, tmp_path):
    grads, states = [], []
    for recompute in (False, True):
        torch.manual_seed(0)
        model = models.build_model(name, 3).train()
        if recompute:
            models.recompute_activations(model)
        x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        torch.manual_seed(2)                    # the same dropout / drop-connect draws
        model(x).logsumexp(dim=1).sum().backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    for k, g in grads[0].items():
        torch.testing.assert_close(grads[1][k], g, rtol=1e-5, atol=1e-6)
    for k, v in states[0].items():              # batch-norm statistics updated once
        torch.testing.assert_close(states[1][k], v, rtol=1e-6, atol=1e-7)
    path = model_files.export_torchscript(models.plain_forward(model),
                                          model_files.ClassifierInfo(name, 32, ('a', 'b', 'c')),
                                          tmp_path / 'm.pt')
    assert model_files.is_torchscript_file(path)


def test_amp_on_a_cpu_recomputes_activations_unless_told_not_to():
    resolve = train_config.recompute_activations
    for flags, device, expected in [([], 'cpu', False), (['--amp'], 'cpu', True),
                                    (['--amp'], 'cuda', False),
                                    (['--amp', '--no-recompute-activations'], 'cpu', False),
                                    (['--recompute-activations'], 'cuda', True)]:
        args = train_classifier.parse_args(['d', 'c', *flags])[0]
        config = train_classifier.new_config(args, world_size=1)
        assert resolve(config, device) is expected, (flags, device)
        assert train_config.TrainConfig.from_params(config.to_params(), 'p') == config
    with pytest.raises(utils.InputError, match='recompute_activations must be'):
        train_config.TrainConfig('d', 'c', recompute_activations='yes').checked()  # type: ignore[arg-type]


def test_add_epochs_after_an_early_stop_trains_at_least_patience_epochs(base_logdir, tmp_path):
    train(base_logdir, tmp_path / 'r', *TINY, '--epochs', '1', '--patience', '2', '--seed', '4')
    run = only_run(tmp_path / 'r')
    ckpt = torch.load(run / 'ckpt_last.pt', weights_only=True)
    # as if the run had stopped early at epoch 5, its best epoch long before
    ckpt['state'].update(epoch=6, epochs=6, best_epoch=0, stopped=True)
    torch.save(ckpt, run / 'ckpt_last.pt')
    train(base_logdir, tmp_path / 'unused', '--resume', str(run), '--num-workers', '0')
    assert torch.load(run / 'ckpt_last.pt', weights_only=True)['state']['epoch'] == 6
    train(base_logdir, tmp_path / 'unused', '--resume', str(run), '--add-epochs', '3',
          '--num-workers', '0')
    state = torch.load(run / 'ckpt_last.pt', weights_only=True)['state']
    assert state['epoch'] >= 8                  # patience counts from the extension


def test_calibration_file_is_checked(tmp_path):
    np.savez(tmp_path / 'bad.npz', x=np.array([0.0, 0.5, 1.0]), y=np.array([0.0, 1.0]))
    with pytest.raises(utils.InputError, match='same length with x increasing'):
        training.detection_conf_weights(np.array([0.3]), str(tmp_path / 'bad.npz'))


def test_evaluate_model_refuses_a_dataset_with_other_labels_than_the_run(
        base_logdir, trained_run, tmp_path):
    data = _labels_changed(base_logdir, tmp_path, 'reordered')
    proc = run_module('classification.evaluate_model', str(trained_run / 'params.json'),
                      str(best_ckpt(trained_run)), '-o', str(tmp_path / 'o'), '--dataset-dir',
                      str(data), check=False)
    assert proc.returncode == 2 and 'label order differs' in proc.stderr
    assert not (tmp_path / 'o').exists()


def test_resume_keeps_the_runs_runtime_settings(base_logdir, tmp_path):
    train(base_logdir, tmp_path / 'r', *TINY, '--epochs', '1', '--checkpoint-every', '3',
          '--seed', '4')
    run = only_run(tmp_path / 'r')
    args, given = train_classifier.parse_args([str(base_logdir), 'c', '--resume', str(run)])
    assert 'checkpoint_every' not in given
    config = training.run_config(run)
    assert config.checkpoint_every == 3 and config.num_workers == 0
