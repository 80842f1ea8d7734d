"""A hostile-input battery for the newer steps: dataset_report, propose_label_spec,
identify_mislabeled_candidates --contact-sheet, classify_sequences,
rollup_classifier_probs, merge_classification_detection_output with a taxonomic rollup
or an allow-list, and export_camtrap_dp.

Each refusal runs the real command in a subprocess and asserts exit code 2, exactly one
``error:`` line naming what is wrong, no traceback, and that nothing under the case's
folder changed (every file keeps its bytes; no file appears). Each skip case asserts
exit 0, the bad item logged and the rest done.
"""
from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from classification import utils
from tests.conftest import REPO, snapshot, write
from tests.test_camtrap_dp import DEPLOYMENTS_CSV, TAXONOMY_CSV, TIMELAPSE, make_inputs
from tests.test_camtrap_dp import photo as exif_photo
from tests.test_dataset_report import SPLIT_DOC, _base
from tests.test_rollup import LABELS, SPEC, _detections, probs_of, taxonomy_csv
from tests.test_sequences import _inputs as sequence_inputs
from tests.test_sequences import det, merged_doc

READ_ONLY = '/sys/ct-test-out'          # not writable, even for root

DR = 'classification.dataset_report'
PLS = 'classification.propose_label_spec'
IMC = 'classification.identify_mislabeled_candidates'
CS = 'classification.classify_sequences'
RCP = 'classification.rollup_classifier_probs'
M = 'classification.merge_classification_detection_output'
E = 'classification.export_camtrap_dp'


def run(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, '-m', *args], capture_output=True, text=True,
                          cwd=REPO, input=stdin)


# ------------------------------------------------------------------ inputs


def rollup_inputs(t: Path, rows: list[dict[str, float]] | None = None) -> dict[str, str]:
    """Classifier outputs of four crops, the label index, taxonomy CSV, label spec and
    detections (as tests/test_rollup.py builds them)."""
    rows = rows or [dict(red_fox=0.9, deer=0.1), dict(red_fox=0.5, swift_fox=0.35, deer=0.15),
                    dict(empty=0.5, deer=0.3, turkey=0.2),
                    dict(red_fox=0.45, deer=0.4, swift_fox=0.15)]
    files = [f'{loc}/img{k}.jpg' for loc in ('cam_00', 'cam_01') for k in range(2)]
    df = pd.DataFrame(np.concatenate([probs_of(**r) for r in rows]), columns=LABELS)
    df.insert(0, 'path', [f'{f}___crop00_mdv5a.0.0.jpg' for f in files[:len(rows)]])
    return {'csv': write(t, 'probs.csv', df.to_csv(index=False)),
            'index': write(t, 'index.json', utils.label_index_dict(LABELS)),
            'det': write(t, 'det.json', _detections()),
            'tax': write(t, 'tax.csv', taxonomy_csv()),
            'spec': write(t, 'spec.json', SPEC)}


def probs_text(t: Path, edit: Callable[[str], str]) -> None:
    path = t / 'probs.csv'
    path.write_text(edit(path.read_text()))


def rollup_args(t: Path, *extra: str, csv: str | None = None, out: str | None = None,
                edit: Callable[[Path], None] | None = None) -> list[str]:
    i = rollup_inputs(t)
    if edit is not None:
        edit(t)
    return [RCP, csv or i['csv'], i['index'], '--taxonomy-csv', i['tax'], '--label-spec',
            i['spec'], '-o', out or str(t / 'rolled.csv'), *extra]


def merge_args(t: Path, *extra: str, out: str | None = None,
               edit: Callable[[Path], None] | None = None, rollup: bool = True) -> list[str]:
    i = rollup_inputs(t)
    if edit is not None:
        edit(t)
    flags = ['--taxonomy-csv', i['tax'], '--label-spec', i['spec'],
             '--rollup-threshold', '0.8'] if rollup else []
    return [M, i['csv'], i['index'], '-j', i['det'], '-o', out or str(t / 'merged.json'),
            '-n', 'clf', *flags, *extra]


def sequence_args(t: Path, doc_edit: Callable[[dict], None] | None = None,
                  coco_edit: Callable[[dict], None] | None = None, *extra: str) -> list[str]:
    merged, coco, doc = sequence_inputs(t)
    if doc_edit is not None:
        doc_edit(doc)
        write(t, 'merged.json', doc)
    if coco_edit is not None:
        c = json.loads((t / 'coco.json').read_text())
        coco_edit(c)
        write(t, 'coco.json', c)
    return [CS, merged, str(t / 'seq.csv'), '--coco', coco, *extra]


def camtrap_args(t: Path, *extra: str, doc: dict | None = None, deployments: str | bytes |
                 None = None, taxonomy: str | bytes | None = None,
                 out: str | None = None) -> list[str]:
    i = make_inputs(t)
    if doc is not None:
        (t / 'merged.json').write_text(json.dumps(doc))
    if deployments is not None:
        write(t, 'deployments.csv', deployments)
    args = [E, i['json'], out or i['out'], '--images-dir', i['images'], '--deployments',
            i['deployments'], '--title', 'Survey', '--contributor', 'Jane Doe',
            '--utc-offset', '+02:00', '--logdir', i['logdir'], *extra]
    if taxonomy is not None:
        args += ['--taxonomy', write(t, 'taxa.csv', taxonomy)]
    return args


def timelapse(edit: Callable[[dict], None]) -> dict:
    doc = json.loads(json.dumps(TIMELAPSE))
    edit(doc)
    return doc


def first_det(doc: dict) -> dict:
    return doc['images'][0]['detections'][0]


def report_args(t: Path, *extra: str, df: pd.DataFrame | None = None, splits: object = None,
                edit: Callable[[Path], None] | None = None) -> list[str]:
    base = _base(t, df, splits)
    if edit is not None:
        edit(base)
    return [DR, str(base), *extra]


def run_folder(t: Path) -> tuple[Path, Path]:
    """A run folder with outputs_test.csv.gz and a crops folder (as
    tests/test_contact_sheet.py builds it)."""
    run_dir, crops = t / 'run', t / 'crops'
    run_dir.mkdir()
    rows = [['ds1/a.jpg___crop00.jpg', 'elk', 1, 0.02, 0.97, 0.01],
            ['ds1/b.jpg___crop00.jpg', 'deer', 1, 0.30, 0.10, 0.60],
            ['ds2/c.jpg___crop00.jpg', 'fox', 1, 0.05, 0.05, 0.90],
            ['ds2/d.jpg___crop00.jpg', 'fox', 1, 0.90, 0.05, 0.05]]
    df = pd.DataFrame(rows, columns=['path', 'label', 'weight', 'elk', 'deer', 'fox'])
    utils.write_csv(df, run_dir / 'outputs_test.csv.gz')
    for k, path in enumerate(df['path']):
        (crops / path).parent.mkdir(parents=True, exist_ok=True)
        Image.new('RGB', (60, 40), (40 * k, 90, 160)).save(crops / path)
    return run_dir, crops


def replaced(args: list[str], changes: dict[int, str]) -> list[str]:
    return [changes.get(k, a) for k, a in enumerate(args)]


def then(args: list[str], action: Callable[[], object]) -> list[str]:
    action()
    return args


def sheet_args(t: Path, *extra: str, edit=None, sheet: str | None = None) -> list[str]:
    run_dir, crops = run_folder(t)
    if edit is not None:
        edit(t)
    return [IMC, str(run_dir), '--margin', '0.3', '--contact-sheet',
            sheet or str(t / 'sheet'), '-c', str(crops), *extra]


def _set_outputs(t: Path, df: pd.DataFrame) -> None:
    (t / 'run' / 'outputs_test.csv.gz').write_bytes(gzip.compress(
        df.to_csv(index=False).encode()))


def _outputs(t: Path) -> pd.DataFrame:
    return pd.read_csv(t / 'run' / 'outputs_test.csv.gz')


def _nan_prob(t: Path) -> None:
    df = _outputs(t)
    df.loc[1, 'fox'] = float('nan')
    _set_outputs(t, df)


def _prob_above_one(t: Path) -> None:
    df = _outputs(t)
    df.loc[0, 'deer'] = 1.5
    _set_outputs(t, df)


def _no_label(t: Path) -> None:
    _set_outputs(t, _outputs(t).drop(columns=['label']))


def _crop_twice(t: Path) -> None:
    df = _outputs(t)
    _set_outputs(t, pd.concat([df, df.iloc[:1]]))


def _escaping_path(t: Path) -> None:
    df = _outputs(t)
    df.loc[0, 'path'] = '../../../etc/x.jpg___crop00.jpg'
    _set_outputs(t, df)


def _truncated_gz(t: Path) -> None:
    path = t / 'run' / 'outputs_test.csv.gz'
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


# ------------------------------------------------------------------ refusals
# name: (lambda tmp -> argv (module first), a fragment of the one error line)

BIG = '9' * 400

CASES: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    # --- rollup_classifier_probs
    'rollup: non-UTF-8 classifier CSV': (lambda t: rollup_args(t, edit=lambda t: (
        t / 'probs.csv').write_bytes(b'path,deer\n\xff\xfe.jpg,0.5\n')), 'not UTF-8'),
    'rollup: empty classifier CSV': (lambda t: rollup_args(t, edit=lambda t: write(
        t, 'probs.csv', '')), 'not a readable CSV file'),
    'rollup: NaN probability': (lambda t: rollup_args(t, edit=lambda t: probs_text(
        t, lambda s: s.replace('0.9,', 'nan,', 1))), "'nan' is not a probability"),
    'rollup: probability 1.5': (lambda t: rollup_args(t, edit=lambda t: probs_text(
        t, lambda s: s.replace('0.9,', '1.5,', 1))), "'1.5' is not a probability"),
    'rollup: negative probability': (lambda t: rollup_args(t, edit=lambda t: probs_text(
        t, lambda s: s.replace('0.9,', '-0.9,', 1))), "'-0.9' is not a probability"),
    'rollup: huge integer probability': (lambda t: rollup_args(t, edit=lambda t: probs_text(
        t, lambda s: s.replace('0.9,', BIG + ',', 1))), 'is not a probability'),
    'rollup: a crop listed twice': (lambda t: rollup_args(t, edit=lambda t: probs_text(
        t, lambda s: s + s.splitlines()[1] + '\n')), 'is listed twice'),
    'rollup: label index is a list': (lambda t: rollup_args(t, edit=lambda t: write(
        t, 'index.json', LABELS)), 'expected a non-empty JSON object'),
    'rollup: truncated label spec': (lambda t: rollup_args(t, edit=lambda t: write(
        t, 'spec.json', json.dumps(SPEC)[:40])), 'not valid JSON'),
    'rollup: taxonomy CSV without taxonomy_string': (lambda t: rollup_args(
        t, edit=lambda t: write(t, 'tax.csv', pd.read_csv(t / 'tax.csv').drop(
            columns=['taxonomy_string']).to_csv(index=False))), 'taxonomy_string'),
    'rollup: output is the classifier CSV': (lambda t: rollup_args(
        t, out=str(t / 'probs.csv')), 'is also an input'),
    'rollup: stdin twice': (lambda t: [RCP, '-', '-', '--taxonomy-csv', 'x', '--label-spec',
                                       'y', '-o', str(t / 'o.csv')], 'stdin'),
    'rollup: unwritable output': (lambda t: rollup_args(t, out=READ_ONLY + '/o.csv'),
                                  READ_ONLY),
    'rollup: NaN threshold': (lambda t: rollup_args(t, '-t', 'nan'), '--threshold'),
    'rollup: allow-list JSON of strings': (lambda t: rollup_args(
        t, '--allow-list', write(t, 'allow.json', {'cam_00': 'deer'})), 'expected a non-empty list of label names'),
    'rollup: allow-list not UTF-8': (lambda t: rollup_args(
        t, '--allow-list', write(t, 'allow.csv', b'location,label\ncam_\xff,deer\n')),
        'not UTF-8'),
    # --- merge with a rollup or an allow-list
    'merge: non-UTF-8 label spec': (lambda t: merge_args(t, edit=lambda t: (
        t / 'spec.json').write_bytes(b'{"deer\xff": {}}')), 'not UTF-8'),
    'merge: empty taxonomy CSV': (lambda t: merge_args(t, edit=lambda t: write(
        t, 'tax.csv', '')), 'lacks column(s)'),
    'merge: label spec is a list': (lambda t: merge_args(t, edit=lambda t: write(
        t, 'spec.json', [1, 2])), 'a label specification is a non-empty JSON object'),
    'merge: rollup threshold 1.5': (lambda t: merge_args(t, edit=lambda t: None)[:-1] + [
        '1.5'], '--rollup-threshold'),
    'merge: empty allow-list': (lambda t: merge_args(
        t, '--allow-list', write(t, 'allow.csv', ''), rollup=False), 'no location,label rows'),
    'merge: allow-list JSON truncated': (lambda t: merge_args(
        t, '--allow-list', write(t, 'allow.json', '{"cam_00": ["deer"'), rollup=False),
        'not valid JSON'),
    'merge: allow-list without a label column': (lambda t: merge_args(
        t, '--allow-list', write(t, 'allow.csv', 'location,species\ncam_00,deer\n'),
        rollup=False), 'starts with the header location,label'),
    'merge: output is the taxonomy CSV': (lambda t: merge_args(
        t, out=str(t / 'tax.csv')), 'is also an input'),
    'merge: output is the allow-list': (lambda t: merge_args(
        t, '--allow-list', write(t, 'allow.csv', 'location,label\ncam_00,deer\n'),
        out=str(t / 'allow.csv'), rollup=False), 'is also an input'),
    'merge: output is the classifier CSV': (lambda t: merge_args(
        t, out=str(t / 'probs.csv')), 'is also an input'),
    'merge: unwritable output': (lambda t: merge_args(t, out=READ_ONLY + '/m.json'),
                                 READ_ONLY),
    # --- classify_sequences
    'sequences: truncated detections JSON': (lambda t: then(sequence_args(t), lambda: write(
        t, 'merged.json', '{"images": [')), 'not valid JSON'),
    'sequences: classification id not in classification_categories': (lambda t: sequence_args(
        t, lambda d: d['images'][0]['detections'][0].update(classifications=[['7', 0.9]])),
        "'7'"),
    'sequences: NaN classification confidence': (lambda t: sequence_args(
        t, lambda d: d['images'][0]['detections'][0].update(
            classifications=[['0', float('nan')]])), 'a confidence from 0 to 1'),
    'sequences: huge integer confidence': (lambda t: then(sequence_args(t), lambda: probs_json_big(t)),
        'a confidence from 0 to 1'),
    'sequences: images is an object': (lambda t: sequence_args(
        t, lambda d: d.update(images={'a': 1})), 'missing "images" list'),
    'sequences: a photo listed twice': (lambda t: sequence_args(
        t, lambda d: d['images'].append(d['images'][0])), 'twice'),
    'sequences: non-UTF-8 COCO file': (lambda t: then(sequence_args(t), lambda: write(
        t, 'coco.json', b'{"images": ["\xff"]}')), 'not UTF-8'),
    'sequences: stdin twice': (lambda t: [CS, '-', str(t / 'seq.csv'), '--coco', '-'],
                               'stdin'),
    'sequences: unwritable output': (lambda t: sequence_args(t)[:2] + [
        READ_ONLY + '/seq.csv'] + sequence_args(t)[3:], READ_ONLY),
    # --- export_camtrap_dp
    'camtrap: non-UTF-8 deployments CSV': (lambda t: camtrap_args(
        t, deployments=b'folder,deploymentID,latitude,longitude\ncam_\xff,d,1,1\n'),
        'not UTF-8'),
    'camtrap: huge integer latitude': (lambda t: camtrap_args(
        t, deployments=f'folder,deploymentID,latitude,longitude\ncam_a,d,{BIG},1\n'),
        'latitude'),
    'camtrap: classification id not in classification_categories': (lambda t: camtrap_args(
        t, doc=timelapse(lambda d: first_det(d).update(
            classifications=[['99999999999999999999', 0.9]]))), '99999999999999999999'),
    'camtrap: NaN detection confidence': (lambda t: camtrap_args(
        t, doc=timelapse(lambda d: first_det(d).update(conf=float('nan')))), '"conf" must be a number from 0 to 1'),
    'camtrap: detections is a string': (lambda t: camtrap_args(
        t, doc=timelapse(lambda d: d['images'][0].update(detections='many'))), '"detections" must be a list'),
    'camtrap: taxonomy label twice': (lambda t: camtrap_args(
        t, taxonomy=TAXONOMY_CSV + 'fox,Vulpes,genus,fox\n'), "label 'fox' is given twice"),
    'camtrap: stdin twice': (lambda t: replaced(camtrap_args(t), {1: '-', 6: '-'}),
                             'stdin'),
    'camtrap: unwritable package folder': (lambda t: camtrap_args(
        t, out=READ_ONLY + '/package'), READ_ONLY),
    'camtrap: the photos folder as the package': (lambda t: camtrap_args(
        t, out=str(t / 'photos')), 'not a Camtrap DP package'),
    'camtrap: --events --coco that is not COCO': (lambda t: camtrap_args(
        t, '--events', '--coco', write(t, 'coco.json', [1, 2])),
        'expected a COCO Camera Traps JSON object'),
    'camtrap: --events --coco without a photo': (lambda t: camtrap_args(
        t, '--events', '--coco', write(t, 'coco.json', {'images': [
            {'file_name': 'cam_a/img1.jpg', 'seq_id': 's'}]})), 'are not in it'),
    'camtrap: --events --coco non-UTF-8': (lambda t: camtrap_args(
        t, '--events', '--coco', write(t, 'coco.json', b'{"images": ["\xff"]}')),
        'not UTF-8'),
    'camtrap: --events, stdin twice': (lambda t: replaced(
        camtrap_args(t, '--events', '--coco', '-'), {1: '-'}), 'stdin'),
    # --- dataset_report
    'report: non-UTF-8 dataset CSV': (lambda t: report_args(t, edit=lambda b: (
        b / 'classification_ds.csv').write_bytes(b'path,label\n\xff,x\n')), 'not UTF-8'),
    'report: dataset CSV without a label column': (lambda t: report_args(t, edit=lambda b: (
        b / 'classification_ds.csv').write_text(pd.read_csv(
            b / 'classification_ds.csv').drop(columns=['label']).to_csv(index=False))),
        "missing columns ['label']"),
    'report: splits.json is a list': (lambda t: report_args(t, splits=[1, 2]),
                                      'expected {"train"'),
    'report: NaN confidence': (lambda t: report_args(t, edit=lambda b: (
        b / 'classification_ds.csv').write_text(pd.read_csv(
            b / 'classification_ds.csv').assign(confidence=float('nan')).to_csv(
                index=False, na_rep='NaN'))), 'it must be a number from 0 to 1'),
    'report: truncated label index': (lambda t: report_args(t, edit=lambda b: write(
        b, 'label_index.json', '{"0": "bat", ')), 'not valid JSON'),
    'report: a location in two splits': (lambda t: report_args(t, splits={
        **SPLIT_DOC, 'val': SPLIT_DOC['val'] + [['ds', 'L0']]}), "is in both 'train' and 'val'"),
    'report: unwritable report folder': (lambda t: report_args(
        t, '--report', READ_ONLY + '/r'), READ_ONLY),
    'report: non-UTF-8 compared splits': (lambda t: report_args(
        t, '--compare-splits', write(t, 'other.json', b'{"train": [["\xff", "L1"]]}')),
        'not UTF-8'),
    # --- identify_mislabeled_candidates --contact-sheet
    'mislabeled: truncated gzip outputs': (lambda t: sheet_args(t, edit=_truncated_gz),
                                           'not a readable CSV file'),
    'mislabeled: NaN probability': (lambda t: sheet_args(t, edit=_nan_prob),
                                    "'nan' is not a probability"),
    'mislabeled: probability 1.5': (lambda t: sheet_args(t, edit=_prob_above_one),
                                    "'1.5' is not a probability"),
    'mislabeled: no label column': (lambda t: sheet_args(t, edit=_no_label), '"label"'),
    'mislabeled: a crop listed twice': (lambda t: sheet_args(t, edit=_crop_twice),
                                        'is listed twice'),
    'mislabeled: a crop path leaving the crops folder': (lambda t: sheet_args(
        t, edit=_escaping_path), 'would leave the folder'),
    'mislabeled: unwritable contact sheet': (lambda t: sheet_args(
        t, sheet=READ_ONLY + '/sheet'), READ_ONLY),
    'mislabeled: contact sheet is the run folder': (lambda t: sheet_args(
        t, sheet=str(t / 'run')), 'not a report folder'),
}


def probs_json_big(t: Path) -> str:
    text = (t / 'merged.json').read_text().replace('0.7]', BIG + ']', 1)
    return write(t, 'merged.json', text)


def check_refusal(t: Path, args: list[str], fragment: str, stdin: str | None = None) -> None:
    before = snapshot(t)
    proc = run(args, stdin)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    # ours, or argparse's ("prog.py: error: ...", after its usage lines)
    lines = [ln for ln in proc.stderr.splitlines() if re.match(r'([\w.]+\.py: )?error: ', ln)]
    assert len(lines) == 1 and fragment in lines[0], proc.stderr[-2000:]
    assert snapshot(t) == before                    # nothing written or changed
    assert not Path(READ_ONLY).exists()


def test_the_battery_is_large_enough():
    assert len(CASES) + len(PROPOSE_CASES) >= 40


@pytest.mark.parametrize('case', sorted(CASES))
def test_refused_in_one_line_with_nothing_changed(case, tmp_path):
    make_args, expected = CASES[case]
    args = make_args(tmp_path)
    check_refusal(tmp_path, args, expected, stdin='{}' if 'stdin' in case else None)


# ------------------------------------------------------------------ propose_label_spec

PROPOSE_CASES: dict[str, tuple[Callable[[Path], str | bytes | None], list[str], str]] = {
    # name: (taxonomy CSV content (None: the project's), extra flags, fragment)
    'non-UTF-8 taxonomy': (lambda p: b'dataset_name,query\nd,\xff\n', [], 'not UTF-8'),
    'empty taxonomy': (lambda p: '', [], 'tax.csv'),
    'truncated taxonomy_string': (lambda p: (
        'dataset_name,query,taxonomy_level,scientific_name,taxonomy_string\n'
        'demo_forest,deer,family,cervidae,"[(1, \'family\', \'cervidae\'"\n'), [], 'tax.csv'),
    'taxonomy without a query column': (lambda p: pd.read_csv(p / 'taxonomy.csv').drop(
        columns=['query']).to_csv(index=False), [], 'query'),
    'unwritable output folder': (lambda p: None, ['-o', READ_ONLY + '/spec'], READ_ONLY),
    'output folder is a file': (lambda p: None, ['-o', 'TAX'], 'is a file'),
    'huge --min-images': (lambda p: None, ['-n', BIG], 'no taxon has'),
}


@pytest.mark.parametrize('case', sorted(PROPOSE_CASES))
def test_propose_label_spec_refusals(case, project, megadb, tmp_path):
    content, extra, fragment = PROPOSE_CASES[case]
    text = content(project)
    tax = str(project / 'taxonomy.csv') if text is None else write(tmp_path, 'tax.csv', text)
    out = str(tmp_path / 'spec')
    flags = ['-n', '5']
    extra = [tax if x == 'TAX' else x for x in extra]
    if '-o' in extra:
        out = extra[extra.index('-o') + 1]
        extra = [x for x in extra if x not in ('-o', out)]
    if '-n' in extra:
        flags = []
    check_refusal(tmp_path, [PLS, tax, out, '--megadb', str(megadb), *flags, *extra],
                  fragment)
    assert not (tmp_path / 'spec').exists()


# ------------------------------------------------------------------ accepted or skipped


def test_allow_list_with_bom_and_crlf_reads_as_the_plain_one(tmp_path):
    plain = 'location,label\r\ncam_00,deer\r\ncam_00,empty\r\n'
    for name, data in (('a.csv', plain.replace('\r\n', '\n').encode()),
                       ('b.csv', b'\xef\xbb\xbf' + plain.encode())):
        write(tmp_path, name, data)
        proc = run(rollup_args(tmp_path, '--allow-list', str(tmp_path / name),
                               out=str(tmp_path / f'{name}.out')))
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / 'a.csv.out').read_bytes() == (tmp_path / 'b.csv.out').read_bytes()
    # the allow-list changed the answer of cam_00/img0 (red_fox 0.9 -> deer only)
    table = pd.read_csv(tmp_path / 'a.csv.out')
    assert table.loc[0, 'name'] == 'deer'


def test_deployments_with_bom_and_crlf_export_as_the_plain_one(tmp_path):
    a, b = tmp_path / 'a', tmp_path / 'b'
    crlf = DEPLOYMENTS_CSV.replace('\n', '\r\n').encode()
    for folder, deployments in ((a, DEPLOYMENTS_CSV.encode()), (b, b'\xef\xbb\xbf' + crlf)):
        folder.mkdir()
        proc = run(camtrap_args(folder, deployments=deployments))
        assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ('deployments.csv', 'media.csv', 'observations.csv'):
        assert (a / 'package' / name).read_bytes() == (b / 'package' / name).read_bytes(), name
    assert 'dep-a' in (b / 'package' / 'deployments.csv').read_text()


def test_photos_without_exif_times_are_logged_and_skipped_by_the_export(tmp_path):
    proc = run(camtrap_args(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    (log,) = (tmp_path / 'logs').glob('export_camtrap_dp_log_*.json')
    reasons = {f['file']: f['reason'] for f in json.loads(log.read_text())['failures']}
    assert 'cam_b/no_time.jpg' in reasons
    media = pd.read_csv(tmp_path / 'package' / 'media.csv')
    assert not media['filePath'].str.contains('no_time').any()
    assert media['filePath'].str.contains('img1').any()


def test_photos_without_exif_times_in_sequences_by_time(tmp_path):
    """classify_sequences --images-dir: a photo without a time is its own sequence (or
    logged), never a crash, and the timed photos are still grouped."""
    images = tmp_path / 'photos'
    exif_photo(images / 'cam/1.jpg', '2025:07:01 06:00:00')
    exif_photo(images / 'cam/2.jpg', '2025:07:01 06:00:10')
    exif_photo(images / 'cam/3.jpg', None)
    doc = merged_doc([(f'cam/{k}.jpg', [det(0.9, [['0', 0.8]])]) for k in (1, 2, 3)])
    proc = run([CS, write(tmp_path, 'm.json', doc), str(tmp_path / 'seq.csv'),
                '--images-dir', str(images)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '1 photos without a readable time: each is a sequence of its own' in proc.stderr
    assert '3 photos in 2 sequences' in proc.stderr
    table = pd.read_csv(tmp_path / 'seq.csv')
    assert len(table) == 2
