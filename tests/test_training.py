"""train_classifier, evaluate_model and the training library (models, model files, metrics,
crop data, training)."""
from __future__ import annotations

import json
import threading

import numpy as np
import pandas as pd
import pytest
import torch

from classification import (
    crop_data,
    evaluate_model,
    metrics,
    model_files,
    models,
    train_classifier,
    training,
    utils,
)
from tests.conftest import read_json


def test_training_run_files(trained_run, base_logdir):
    names = {p.name for p in trained_run.iterdir()}
    assert {'params.json', 'ckpt_last.pt', 'overall_metrics.csv', 'label_stats.csv',
            'confusion_matrices.npz', 'outputs_train.csv.gz', 'outputs_val.csv.gz'} <= names
    assert any(n.startswith('events.out.tfevents') for n in names)
    params = read_json(trained_run / 'params.json')
    assert params['model_name'] == 'resnet18' and params['image_size'] == 32
    assert params['seed'] == 1 and params['label_weighted'] is True
    labels = utils.load_label_index(base_logdir / 'label_index.json')
    out = pd.read_csv(trained_run / 'outputs_val.csv.gz')
    assert list(out.columns) == ['path', 'label', 'weight', *labels]
    np.testing.assert_allclose(out[labels].sum(axis=1), 1.0, atol=1e-4)
    table = pd.read_csv(trained_run / 'overall_metrics.csv')
    assert list(table.columns) == ['split', 'loss', 'loss_weighted', 'acc_top1', 'acc_top3',
                                   'acc_weighted_top1', 'acc_weighted_top3']
    val = table.set_index('split').loc['val']
    hit = out[labels].to_numpy().argmax(axis=1) == out['label'].map(labels.index)
    assert val['acc_top1'] == pytest.approx(100 * hit.mean())          # percent, as the original
    # label-weighted: the weight column balances the labels of the split
    w = out['weight'].to_numpy()
    assert w.sum() == pytest.approx(len(out))
    assert out.groupby('label')['weight'].sum().std() == pytest.approx(0, abs=1e-6)
    assert val['acc_weighted_top1'] == pytest.approx(100 * (w * hit).sum() / w.sum())
    cms = np.load(trained_run / 'confusion_matrices.npz')
    assert cms['val'].sum() == len(out) and cms['val'].shape == (len(labels), len(labels))


def test_torchscript_export_matches_the_checkpoint(trained_run, base_logdir):
    (compiled,) = trained_run.glob('ckpt_*_compiled.pt')
    ckpt = compiled.with_name(compiled.name.replace('_compiled', ''))
    labels = utils.load_label_index(base_logdir / 'label_index.json')
    model = models.build_model('resnet18', len(labels))
    state, _ = model_files.checkpoint_state_dict(ckpt)
    model.load_state_dict(state)
    model.eval()
    scripted = model_files.load_torchscript(compiled, torch.device('cpu'))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x), rtol=1e-4, atol=1e-5)


def test_resume_continues_from_the_last_epoch(trained_run, base_logdir, tmp_path, capsys):
    import shutil
    run = tmp_path / 'run'
    shutil.copytree(trained_run, run)
    params = read_json(run / 'params.json')
    assert train_classifier.main([str(base_logdir), str(base_logdir.parent / 'crops'),
                                  '--resume', str(run), '--add-epochs', '1',
                                  '--num-workers', '0']) == 0
    err = capsys.readouterr().err
    assert "resuming" in err and "at epoch 2" in err
    last = torch.load(run / 'ckpt_last.pt', weights_only=True)
    assert last['state']['epoch'] == 3 and last['state']['epochs'] == 3
    assert read_json(run / 'params.json') == params          # never rewritten


def test_evaluate_model_with_checkpoint_and_torchscript(trained_run, tmp_path):
    (compiled,) = trained_run.glob('ckpt_*_compiled.pt')
    ckpt = compiled.with_name(compiled.name.replace('_compiled', ''))
    compiled.unlink()                                   # re-exported by evaluate_model
    assert evaluate_model.main([str(trained_run / 'params.json'), str(ckpt), '-o',
                                str(tmp_path / 'a'), '--splits', 'val']) == 0
    assert compiled.exists()
    assert evaluate_model.main([str(trained_run / 'params.json'), str(compiled), '-o',
                                str(tmp_path / 'b'), '--splits', 'val']) == 0
    a = pd.read_csv(tmp_path / 'a' / 'overall_metrics.csv')
    b = pd.read_csv(tmp_path / 'b' / 'overall_metrics.csv')
    assert list(a['split']) == ['val']
    np.testing.assert_allclose(a['acc_top1'], b['acc_top1'])
    np.testing.assert_allclose(a['loss'], b['loss'], rtol=1e-4)
    stats = pd.read_csv(tmp_path / 'a' / 'label_stats.csv')
    assert list(stats.columns) == ['split', 'label', 'precision', 'recall', 'f1', 'count',
                                   'predicted']


def test_evaluate_model_target_mapping(trained_run, base_logdir, tmp_path):
    """A 'classifier with other labels': each dataset label split into two model labels."""
    labels = utils.load_label_index(base_logdir / 'label_index.json')
    model_labels = [f'{lab}_{k}' for lab in labels for k in (1, 2)]
    model = models.build_model('resnet18', len(model_labels))
    ts = model_files.export_torchscript(
        model, model_files.ClassifierInfo('resnet18', 32, tuple(model_labels)),
        tmp_path / 'other_compiled.pt')
    (tmp_path / 'li.json').write_text(json.dumps(utils.label_index_dict(model_labels)))
    (tmp_path / 'map.json').write_text(json.dumps(
        {lab: [f'{lab}_1', f'{lab}_2'] for lab in labels}))
    assert evaluate_model.main([str(trained_run / 'params.json'), str(ts), '-o',
                                str(tmp_path / 'o'), '--splits', 'val', '--target-mapping',
                                str(tmp_path / 'map.json'), '--label-index',
                                str(tmp_path / 'li.json')]) == 0
    out = pd.read_csv(tmp_path / 'o' / 'outputs_val.csv.gz')
    np.testing.assert_allclose(out[labels].sum(axis=1), 1.0, atol=1e-4)


def test_efficientnet_trace_matches_eager(tmp_path):
    model = models.build_model('efficientnet-b0', 4).eval()
    path = model_files.export_torchscript(
        model, model_files.ClassifierInfo('efficientnet-b0', 64, tuple('abcd')), tmp_path / 'e.pt')
    assert model_files.is_torchscript_file(path)
    scripted = model_files.load_torchscript(path, torch.device('cpu'))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x), rtol=1e-4, atol=1e-5)


def test_pretrained_from_a_checkpoint_file_skips_the_final_layer(tmp_path):
    donor = models.build_model('resnet18', 7)
    torch.save({'model': donor.state_dict(), 'epoch': 3}, tmp_path / 'donor.pt')
    model = models.build_model('resnet18', 3, str(tmp_path / 'donor.pt'))
    torch.testing.assert_close(model.conv1.weight, donor.conv1.weight)
    assert model.fc.out_features == 3


def test_imagenet_weights_come_from_the_hub_cache(tmp_path, monkeypatch):
    """What a user behind a firewall does: pre-place the file in $TORCH_HOME/hub/checkpoints."""
    import torchvision
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    filename = weights.url.rsplit('/', 1)[1]
    reference = torchvision.models.resnet18()
    (tmp_path / 'hub' / 'checkpoints').mkdir(parents=True)
    torch.save(reference.state_dict(), tmp_path / 'hub' / 'checkpoints' / filename)
    model = models.build_model('resnet18', 5, True)
    torch.testing.assert_close(model.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)
    assert model.fc.out_features == 5


def test_missing_imagenet_weights_explain_the_hub_cache(tmp_path, monkeypatch):
    import urllib.error

    import torchvision
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))

    def offline(*a, **k):
        raise urllib.error.URLError('no network')
    monkeypatch.setattr(torch.hub, 'download_url_to_file', offline)
    with pytest.raises(utils.InputError, match='hub/checkpoints/resnet18-'):
        models.build_model('resnet18', 5, True)
    assert torchvision.models.ResNet18_Weights.DEFAULT.url


def test_load_torchscript_refuses_a_plain_checkpoint(tmp_path):
    torch.save({'model': {}}, tmp_path / 'c.pt')
    with pytest.raises(utils.InputError, match='not a TorchScript'):
        model_files.load_torchscript(tmp_path / 'c.pt', torch.device('cpu'))


def test_weights_by_detection_conf(tmp_path):
    conf = np.array([0.2, 0.5, 1.0])
    np.testing.assert_allclose(training.detection_conf_weights(conf, True), [0.2, 0.5, 1.0])
    np.savez(tmp_path / 'cal.npz', x=np.array([0.0, 1.0]), y=np.array([0.0, 0.5]))
    np.testing.assert_allclose(training.detection_conf_weights(conf, str(tmp_path / 'cal.npz')),
                               [0.1, 0.25, 0.5])


def test_label_balanced_sampler_balances_labels():
    labels = np.array([0] * 90 + [1] * 10)
    w = crop_data.label_balance_weights(labels, 2)
    assert w.sum() == pytest.approx(100) and w[0] == pytest.approx(100 / (2 * 90))
    sampler = crop_data.EpochSampler(100, seed=0, weights=w)
    drawn = labels[[row for row, _ in sampler]]
    assert 0.35 < drawn.mean() < 0.65


def test_metrics_from_probs():
    probs = np.array([[0.7, 0.2, 0.1, 0.0], [0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.5, 0.0]])
    y = np.array([0, 0, 1])
    r = metrics.metrics_from_probs(probs, y, np.array([1.0, 1.0, 2.0]))
    assert r.acc_top1 == pytest.approx(1 / 3)
    assert r.acc_top3 == pytest.approx(2 / 3)
    assert r.acc_weighted_top1 == pytest.approx(1 / 4)
    assert r.loss == pytest.approx(-np.mean(np.log([0.7, 0.1, 0.25])))


def test_label_stats():
    y_true = np.array([0, 0, 1, 1, 2])
    y_pred = np.array([0, 1, 1, 1, 0])
    cm, stats = metrics.label_stats(y_true, y_pred, ['a', 'b', 'c', 'd'], 'val')
    assert cm.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    assert stats['precision'].tolist()[:2] == [0.5, pytest.approx(2 / 3)]
    assert stats['recall'].tolist()[:3] == [0.5, 1.0, 0.0]
    # the original's zero-division values: never predicted -> precision 0; absent -> recall NaN
    assert stats['precision'].iloc[2] == 0 and stats['precision'].iloc[3] == 0
    assert np.isnan(stats['recall'].iloc[3])
    # F1 is the harmonic mean (0 when nothing is right, empty when the label is absent)
    assert stats['f1'].iloc[0] == pytest.approx(0.5)
    assert stats['f1'].iloc[1] == pytest.approx(0.8)
    assert stats['f1'].iloc[2] == 0 and np.isnan(stats['f1'].iloc[3])
    assert stats['count'].tolist() == [2, 2, 1, 0]
    assert stats['predicted'].tolist() == [2, 3, 0, 0]


@pytest.mark.parametrize('image_size', [96, 224])
def test_batch_normalization_equals_per_image_transform(image_size):
    """eval_pixels + to_model_input (uint8 batches, normalized at once, channels-last)
    give exactly the tensors of eval_transform (ToTensor + Normalize per image)."""
    from PIL import Image
    rng = np.random.default_rng(image_size)
    imgs = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
            for h, w in ((120, 90), (300, 500), (image_size, image_size), (50, 400))]
    from torchvision import transforms as T
    eval_transform = T.Compose([
        T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(image_size), T.ToTensor(),
        T.Normalize(model_files.IMAGENET_MEAN, model_files.IMAGENET_STD)])
    per_image = torch.stack([eval_transform(im) for im in imgs])
    pixels = torch.stack([crop_data.eval_pixels(image_size)(im) for im in imgs])
    assert pixels.dtype == torch.uint8 and pixels.shape == (4, image_size, image_size, 3)
    batch = crop_data.to_model_input(pixels, torch.device('cpu'))
    assert torch.equal(batch, per_image)
    assert batch.is_contiguous(memory_format=torch.channels_last)
    floats = crop_data.to_model_input(per_image, torch.device('cpu'))
    assert torch.equal(floats, per_image)
    assert floats.is_contiguous(memory_format=torch.channels_last)


def test_prefetch_keeps_order_raises_and_stops():
    assert list(crop_data.prefetch(iter(range(50)), depth=2)) == list(range(50))

    def broken():
        yield 1
        raise ValueError('bad batch')
    with pytest.raises(ValueError, match='bad batch'):
        list(crop_data.prefetch(broken()))

    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1
    it = crop_data.prefetch(endless(), depth=2)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()                          # the consumer stops early: the thread ends
    n = len(produced)
    assert n <= 3 + 2 + 2
    assert not any(t.name == 'prefetch' and t.is_alive() for t in threading.enumerate())
    assert len(produced) == n


def test_extreme_examples_selection():
    true = np.array([0, 0, 0, 1, 1, 2, 0])
    pred = np.array([0, 0, 1, 0, 1, 0, 2])
    conf = np.array([0.6, 0.9, 0.8, 0.95, 0.7, 0.5, 0.4])
    ex = metrics.extreme_examples(true, pred, conf, 0, 2)
    assert ex['tp'].tolist() == [1, 0]          # most confident first
    assert ex['fp'].tolist() == [3, 5]          # predicted 0, truly 1 and 2
    assert ex['fn'].tolist() == [2, 6]          # truly 0, predicted 1 and 2
    assert metrics.extreme_examples(true, pred, conf, 0, 1)['fp'].tolist() == [3]
    assert all(len(v) == 0 for v in metrics.extreme_examples(
        true, pred, conf, 5, 3).values())


def test_log_extreme_examples_writes_images_and_tables(base_logdir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    crops = base_logdir.parent / 'crops'
    assert train_classifier.main([str(base_logdir), str(crops), '-m', 'resnet18',
                                  '--image-size', '32', '--epochs', '1', '--batch-size', '32',
                                  '--logdir', str(tmp_path), '--num-workers', '0', '--seed',
                                  '2', '--log-extreme-examples', '2']) == 0
    (run,) = list(tmp_path.iterdir())
    acc = EventAccumulator(str(run), size_guidance={'images': 0, 'tensors': 0})
    acc.Reload()
    image_tags = acc.Tags()['images']
    labels = list(utils.load_label_index(base_logdir / 'label_index.json'))
    for split in ('train', 'val'):
        assert any(t.startswith(f'{split}/') for t in image_tags), image_tags
    # item 10: a confusion-matrix image per split, per-label recall, the lr as trained
    assert {'confusion_matrix/train', 'confusion_matrix/val'} <= set(image_tags)
    scalars = acc.Tags()['scalars']
    assert {f'val/label_recall/{lab}' for lab in labels} <= set(scalars)
    (lr,) = acc.Scalars('lr')
    assert lr.step == 0 and lr.value == pytest.approx(1e-3)       # epoch 0's own rate
    assert acc.Scalars('val/acc_top1')[0].value > 1                # percent
    for tag in [t for t in image_tags if not t.startswith('confusion_matrix/')]:
        split, label, kind = tag.split('/')
        assert split in ('train', 'val', 'test') and label in labels
        assert kind in ('tp', 'fp', 'fn')
        (event,) = acc.Images(tag)
        assert event.step == 0 and event.height == 32 and event.width in (32, 64)  # 1-2 crops
    texts = acc.Tags()['tensors']
    assert set(t.replace('/text_summary', '') for t in texts) >= {
        t for t in image_tags if not t.startswith('confusion_matrix/')}


def test_multilabel_metrics_from_probs():
    probs = np.array([[0.9, 0.8, 0.1], [0.2, 0.7, 0.6], [0.1, 0.2, 0.3]])
    y = metrics.multi_hot([(0, 1), (2,), (0,)], 3)
    res = metrics.metrics_from_probs(probs, y, np.ones(3))
    assert res.acc_top1 == pytest.approx(1 / 3)         # only row 0: top class 0 is true
    assert res.acc_top3 == pytest.approx(1.0)
    pc = np.clip(probs, 1e-12, 1 - 1e-12)
    bce = -(y * np.log(pc) + (1 - y) * np.log(1 - pc)).sum(axis=1).mean()
    assert res.loss == pytest.approx(bce)


@pytest.fixture(scope='module')
def multilabel_run(base_logdir, tmp_path_factory):
    """The demo dataset with a third of the crops given a second label, trained with
    --multilabel for 2 epochs at 32 px."""
    import shutil
    data = tmp_path_factory.mktemp('multilabel_ds')
    for name in ('label_index.json', 'splits.json'):
        shutil.copy(base_logdir / name, data / name)
    labels = utils.load_label_index(base_logdir / 'label_index.json')
    df = pd.read_csv(base_logdir / 'classification_ds.csv', dtype=str)
    second = [labels[(labels.index(lab) + 1) % len(labels)] for lab in df['label']]
    df['label'] = [f'{lab},{extra}' if i % 3 == 0 else lab
                   for i, (lab, extra) in enumerate(zip(df['label'], second, strict=True))]
    df.to_csv(data / 'classification_ds.csv', index=False)
    crops = base_logdir.parent / 'crops'
    logdir = tmp_path_factory.mktemp('multilabel_runs')
    args = [str(data), str(crops), '-m', 'resnet18', '--image-size', '32', '--epochs', '2',
            '--batch-size', '16', '--logdir', str(logdir), '--num-workers', '0', '--seed', '3']
    # without --multilabel the comma-separated labels are a clear error
    assert utils.run_cli(lambda: train_classifier.main(args)) == 2
    for extra in logdir.iterdir():
        shutil.rmtree(extra)
    assert train_classifier.main([*args, '--multilabel', '--log-extreme-examples', '1']) == 0
    (run,) = list(logdir.iterdir())
    return run, data, labels


def test_multilabel_training_outputs(multilabel_run):
    run, data, labels = multilabel_run
    assert read_json(run / 'params.json')['multilabel'] is True
    out = pd.read_csv(run / 'outputs_val.csv.gz')
    probs = out[labels].to_numpy()
    assert ((probs >= 0) & (probs <= 1)).all()
    assert np.abs(probs.sum(axis=1) - 1).max() > 0.05        # sigmoids, not a softmax
    assert out['label'].str.contains(',').any()
    cms = np.load(run / 'confusion_matrices.npz')
    assert cms['val'].shape == (len(labels), 2, 2) and (cms['val'].sum(axis=(1, 2)) ==
                                                        len(out)).all()
    table = pd.read_csv(run / 'overall_metrics.csv').set_index('split')
    true_sets = [set(v.split(',')) for v in out['label']]
    top = [labels[i] for i in probs.argmax(axis=1)]
    hit = np.mean([t in s for t, s in zip(top, true_sets, strict=True)])
    assert table.loc['val', 'acc_top1'] == pytest.approx(100 * hit)
    # the multi-label evaluation report, opened in a real browser
    from tests.browser import CHROMIUM, DRIVER, assert_renders
    page = (run / 'report' / 'index.html').read_text()
    assert 'multi-label' in page and 'exact match' in page and 'mAP' in page
    for split in ('train', 'val', 'test'):
        for kind in ('label_scores', 'reliability'):
            assert (run / 'report' / f'{kind}_{split}.png').stat().st_size > 5000
    assert 'Most frequent false alarms' in page and 'wrongly given' in page
    assert list((run / 'report' / 'thumbs').glob('*.jpg'))
    if CHROMIUM and DRIVER:
        assert_renders(run / 'report' / 'index.html', min_images=6)


def test_multilabel_torchscript_run_classifier_and_evaluate(multilabel_run, trained_run,
                                                            base_logdir, tmp_path):
    import shutil

    from classification import run_classifier
    run, data, labels = multilabel_run
    (compiled,) = run.glob('ckpt_*_compiled.pt')
    assert model_files.load_classifier(compiled, torch.device('cpu'))[2] is True
    (single,) = trained_run.glob('ckpt_*_compiled.pt')
    assert model_files.load_classifier(single, torch.device('cpu'))[2] is False
    # run_classifier gives the same sigmoid probabilities as the run's evaluation
    out = pd.read_csv(run / 'outputs_val.csv.gz')
    crops = base_logdir.parent / 'crops'
    sub = tmp_path / 'crops'
    for p in out['path'][:20]:
        (sub / p).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(crops / p, sub / p)
    (tmp_path / 'li.json').write_text(json.dumps(utils.label_index_dict(labels)))
    assert run_classifier.main([str(compiled), str(sub), str(tmp_path / 'o.csv'),
                                '--image-size', '32', '--batch-size', '8', '--num-workers',
                                '0', '-c', str(tmp_path / 'li.json'),
                                '--precision', 'fp32']) == 0
    got = pd.read_csv(tmp_path / 'o.csv').set_index('path')
    want = out.set_index('path').loc[got.index, labels]
    np.testing.assert_allclose(got[labels].to_numpy(), want.to_numpy(), atol=2e-4)
    # evaluate_model on the checkpoint reads multilabel from params.json
    ckpt = compiled.with_name(compiled.name.replace('_compiled', ''))
    assert evaluate_model.main([str(run / 'params.json'), str(ckpt), '-o',
                                str(tmp_path / 'ev'), '--splits', 'val']) == 0
    a = pd.read_csv(tmp_path / 'ev' / 'overall_metrics.csv')
    b = pd.read_csv(run / 'overall_metrics.csv').set_index('split').loc[['val']]
    np.testing.assert_allclose(a['acc_top1'], b['acc_top1'])
    np.testing.assert_allclose(a['loss'], b['loss'], rtol=1e-4)
