"""Property tests for the readers of every on-disk format the steps exchange.

The rule every reader obeys: any input either parses into valid records or raises
InputError with a one-line message. It never raises anything else, never hangs and
never writes a file (each input lies alone in a fresh folder, which must hold only
that file, unchanged, after the call).
"""
from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import math
import os
import signal
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from classification import csv_to_json
from classification.analyze_failed_images import failed_images, read_log
from classification.classifier_output import read_outputs
from classification.crop_data import SPLITS, read_splits
from classification.reports import MultiLabelSplit, read_multilabel_split, read_split
from classification.taxonomy import (
    TAXONOMY_CSV_COLUMNS,
    LabelSpec,
    Taxonomy,
    csv_spec_to_json,
    load_taxonomy_csv,
    parse_label_spec,
)
from classification.utils import InputError, load_label_index, read_json
from detection.detector_output import (
    DEFAULT_DETECTION_CATEGORIES,
    check_document,
    iter_detections,
    read_document,
)

# no example database: nothing is written into the working tree
FAST = settings(max_examples=100, deadline=None, database=None)
FASTER = settings(max_examples=50, deadline=None, database=None)
TIME_LIMIT_S = 20


# ---------------------------------------------------------------- the rule

class ReaderHung(BaseException):
    """Raised by the alarm into a reader that runs too long (BaseException, so that a
    reader's own ``except Exception`` cannot swallow it)."""


@contextlib.contextmanager
def _time_limit(seconds=TIME_LIMIT_S):
    def on_alarm(signum, frame):
        raise ReaderHung(f'reader still running after {seconds} s')
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _outcome(call):
    """(True, value) if call() returned, (False, error) if it raised InputError with a
    one-line message; any other exception propagates and fails the test."""
    try:
        with _time_limit():
            return True, call()
    except InputError as e:
        message = str(e)
        assert message.strip(), 'InputError without a message'
        assert '\n' not in message and '\r' not in message, \
            f'InputError message is not one line: {message!r}'
        return False, e


def _read_file(data, name, read, check):
    """Writes ``data`` as ``name`` alone in a fresh folder, applies the rule to
    ``read(path)``, and ``check(value, path)`` to what it returns."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, name)
        with open(path, 'wb') as f:
            f.write(data)
        ok, value = _outcome(lambda: read(path))
        left = sorted(os.listdir(folder))
        assert left == [name], f'the reader wrote files: {left}'
        with open(path, 'rb') as f:
            assert f.read() == data, 'the reader changed its input file'
        if ok:
            check(value, path)
    return ok, value


# ---------------------------------------------------------------- validity of what a reader returns

def _finite_number(v):
    """A JSON number (not true/false) that is a finite float."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(float(v))
    except OverflowError:
        return False


def _check_detections(doc, path=None):
    assert isinstance(doc, dict) and isinstance(doc['images'], list)
    cats = doc.get('detection_categories', DEFAULT_DETECTION_CATEGORIES)
    assert isinstance(cats, dict)
    # what the steps do with a checked document must work, and give finite numbers
    for d in iter_detections(doc):
        assert all(math.isfinite(v) for v in d.bbox), f'non-finite box passed: {d}'
        assert math.isfinite(d.conf), f'non-finite confidence passed: {d}'
    files = [img['file'] for img in doc['images']]
    assert len(set(files)) == len(files), 'an image listed twice passed the check'
    for img in doc['images']:
        assert isinstance(img, dict) and isinstance(img['file'], str)
        for det in img.get('detections') or []:
            bbox, conf = det['bbox'], det['conf']
            assert isinstance(bbox, list) and len(bbox) == 4
            assert all(_finite_number(v) for v in bbox), f'box {bbox!r} passed the check'
            assert _finite_number(conf), f'conf {conf!r} passed the check'
            assert not any(isinstance(v, bool) for v in (*bbox, conf)), \
                f'true/false as a box value or confidence passed the check: {det!r}'
            assert str(det['category']) in cats


NOT_PROBABILITIES = {'path', 'label', 'weight'}


def _check_outputs(df, path=None):
    assert isinstance(df, pd.DataFrame)
    if 'path' in df.columns:
        assert not df['path'].duplicated().any(), 'a crop listed twice passed'
    for c in df.columns:
        if c in NOT_PROBABILITIES:
            continue
        col = df[c]
        assert pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col), \
            f'probability column {c!r} is {col.dtype}: {col.tolist()[:3]}'
        v = col.to_numpy(dtype=np.float64)
        assert np.isfinite(v).all(), f'probability column {c!r} holds {v.tolist()[:3]}'
        assert ((v >= 0) & (v <= 1)).all(), f'probability column {c!r} holds {v.tolist()[:3]}'


def _check_specs(specs, path=None):
    assert isinstance(specs, dict) and specs
    for name, spec in specs.items():
        assert isinstance(spec, LabelSpec) and spec.name == name
        assert isinstance(name, str) and name.strip() and ',' not in name
        assert spec.include.taxa or spec.include.dataset_labels
        assert spec.max_count is None or (type(spec.max_count) is int and spec.max_count >= 1)
        assert not spec.prioritize or spec.max_count is not None
        assert all(isinstance(d, str) for tier in spec.prioritize for d in tier)
        for sel in (spec.include, spec.exclude):
            for t in sel.taxa:
                assert isinstance(t.level, str) and isinstance(t.name, str)
                assert t.datasets is None or all(isinstance(d, str) for d in t.datasets)
            for ds, lab in sel.dataset_labels:
                assert isinstance(ds, str) and isinstance(lab, str)


def _check_spec_json(js, path=None):
    json.dumps(js, allow_nan=False)
    _check_specs(parse_label_spec(js, 'converted'))


def _check_taxonomy(tax, path=None):
    assert isinstance(tax, Taxonomy)
    for ds, query in tax.dataset_labels:
        assert isinstance(ds, str) and ds and isinstance(query, str) and query
    for key, node in tax.nodes.items():
        assert key == (node.level, node.name) and all(isinstance(x, str) for x in key)
        assert all(p in tax.nodes for p in node.parents)
        assert all(c in tax.nodes for c in node.children)


def _check_splits(splits, path):
    raw = read_json(path)
    assert isinstance(splits, dict) and set(splits) <= set(SPLITS)
    for split, locs in splits.items():
        assert all(isinstance(loc, tuple) and len(loc) == 2
                   and all(isinstance(x, str) for x in loc) for loc in locs)
        for pair in raw[split]:
            for v in pair:
                # names, or whole numbers (as MegaDB has locations); null, true, 1.5,
                # lists or objects turned into 'None', 'True', ... are not names
                assert isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)), \
                    f'{split}: {v!r} passed as the name {str(v)!r}'


def _check_label_index(labels, path=None):
    assert isinstance(labels, list) and labels
    assert all(isinstance(x, str) and x for x in labels)
    assert len(set(labels)) == len(labels)


def _check_failed_images(paths, path=None):
    assert isinstance(paths, list)
    assert all(isinstance(p, str) and p for p in paths)
    assert len(set(paths)) == len(paths)


# ---------------------------------------------------------------- the readers, as the steps call them

def _read_outputs(path):               # aggregate_classifier_probs
    return read_outputs([path], dtype={'path': str})


def _read_eval_split(path):            # the evaluation report (single-label)
    return read_split(Path(path))


def _read_eval_multilabel(path):       # the evaluation report (multi-label)
    return read_multilabel_split(Path(path))


def _check_eval_split(value, path=None):
    split, labels = value
    assert isinstance(labels, list) and labels and len(set(labels)) == len(labels)
    n = len(split.paths)
    assert split.probs.shape == (n, len(labels)) and np.isfinite(split.probs).all()
    assert ((split.probs >= -1e-5) & (split.probs <= 1 + 1e-5)).all()
    assert all(isinstance(p, str) for p in split.paths)
    if isinstance(split, MultiLabelSplit):
        assert split.y_true.shape == (n, len(labels)) and split.y_true.dtype == bool
        assert split.y_true.any(axis=1).all(), 'a crop without a true label passed'
    else:
        assert split.y_true.shape == (n,) and ((split.y_true >= 0) &
                                               (split.y_true < len(labels))).all()


def _read_outputs_labelled(path):      # merge_classification_detection_output
    return read_outputs([path], dtype={'path': str, 'label': str})


def _csv_to_json(path):                # csv_to_json, writing to stdout
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert csv_to_json.main([path, '-']) == 0
    return json.loads(out.getvalue())


def _load_label_spec(path):            # json_validator, map_classification_categories
    return parse_label_spec(read_json(path), path)


def _read_splits(path):
    return read_splits(Path(path))


def _read_failure_log(path, keys=None):  # analyze_failed_images
    return failed_images(read_log(path), keys, path)


READERS = {
    'detections_json': ('detections.json', read_document, _check_detections),
    'classifier_csv': ('classifier_output.csv', _read_outputs, _check_outputs),
    'classifier_csv_labelled': ('outputs_test.csv', _read_outputs_labelled, _check_outputs),
    'label_spec_csv': ('label_spec.csv', _csv_to_json, _check_spec_json),
    'label_spec_json': ('label_spec.json', _load_label_spec, _check_specs),
    'taxonomy_csv': ('taxonomy.csv', load_taxonomy_csv, _check_taxonomy),
    'splits_json': ('splits.json', _read_splits, _check_splits),
    'label_index_json': ('label_index.json', load_label_index, _check_label_index),
    'failure_log_json': ('crop_detections_log_20260101_120000.json', _read_failure_log,
                         _check_failed_images),
    'evaluation_outputs_csv': ('outputs_val.csv', _read_eval_split, _check_eval_split),
    'evaluation_outputs_multilabel_csv': ('outputs_val.csv', _read_eval_multilabel,
                                          _check_eval_split),
}


# ---------------------------------------------------------------- strategies

NASTY_TEXT = st.one_of(
    st.sampled_from(['', ' ', 'deer', 'a,b', 'a"b', "a'b", 'a\nb', 'a\r\nb', 'a\rb', '\t',
                     '\x00', 'é', 'Ωμέγα', '🦌', '0', '-1', '1e999', 'NaN', 'null', '[]', '{}',
                     '|', '#x', '!x', 'a|b']),
    st.text(max_size=10))
NASTY_NUMBER = st.one_of(
    st.floats(0, 1),
    st.sampled_from([0, 1, -1, 2, 0.5, -0.0, 1e308, -1e308, 5e-324, math.nan, math.inf,
                     -math.inf, 2 ** 63, -2 ** 63 - 1, 10 ** 400, -10 ** 400, True, False]),
    st.integers(), st.floats())
SCALAR = st.one_of(st.none(), st.booleans(), NASTY_NUMBER, NASTY_TEXT)
ANY_JSON = st.recursive(
    SCALAR, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(NASTY_TEXT, inner,
                                                                         max_size=4),
    max_leaves=12)


def _json_bytes(obj, ascii_only=False):
    return json.dumps(obj, ensure_ascii=ascii_only).encode('utf-8')


def _object_text(pairs):
    """A JSON object from (key, value) pairs, keys repeated as given."""
    return '{' + ', '.join(f'{json.dumps(k)}: {json.dumps(v)}' for k, v in pairs) + '}'


# detections JSON
CATEGORY = st.one_of(st.sampled_from(['1', '2', '3']), SCALAR)
BOX_VALUE = st.one_of(st.floats(0, 1), NASTY_NUMBER, SCALAR)
CONF = st.one_of(st.floats(0, 1), NASTY_NUMBER, SCALAR)
BBOX = st.one_of(st.lists(BOX_VALUE, min_size=4, max_size=4), st.lists(BOX_VALUE, max_size=6),
                 ANY_JSON)
DETECTION_KEYS = {'category': CATEGORY, 'conf': CONF, 'bbox': BBOX}
DETECTION = st.one_of(
    st.fixed_dictionaries(DETECTION_KEYS, optional={'classifications': ANY_JSON}),
    st.fixed_dictionaries({}, optional={**DETECTION_KEYS, 'extra': ANY_JSON}),
    ANY_JSON)
IMAGE = st.one_of(
    st.fixed_dictionaries(
        {'file': st.one_of(st.just('loc1/img.jpg'), NASTY_TEXT)},
        optional={'detections': st.one_of(st.lists(DETECTION, max_size=3), ANY_JSON),
                  'failure': SCALAR, 'max_detection_conf': NASTY_NUMBER}),
    ANY_JSON)
DETECTION_DOC = st.one_of(
    st.fixed_dictionaries(
        {'images': st.one_of(st.lists(IMAGE, max_size=4), ANY_JSON)},
        optional={'detection_categories': st.one_of(
            st.dictionaries(NASTY_TEXT, NASTY_TEXT, max_size=3), ANY_JSON),
            'info': ANY_JSON}),
    ANY_JSON)

# classifier output CSV
PROB_CELL = st.one_of(
    st.floats(0, 1).map(lambda v: f'{v:.6g}'),
    st.sampled_from(['', 'abc', 'nan', 'NaN', 'inf', '-inf', 'Infinity', '-0.1', '1.5', '1e400',
                     '-1e400', '1e-400', '0x1', ' 0.5', '1,0', 'True', 'false', '1' * 400, 'NA',
                     'null', '0.5\n0.5', '"0.5"']),
    NASTY_TEXT)
PATH_CELL = st.one_of(st.sampled_from(['cam/img.jpg___crop00_mdv5a.jpg', 'ds/a/b.jpg___crop01.jpg']),
                      NASTY_TEXT)
LABEL_NAME = st.one_of(st.sampled_from(['deer', 'elk', 'other', 'path', 'label', 'weight']),
                       NASTY_TEXT)


@st.composite
def classifier_csv(draw):
    labels = draw(st.lists(LABEL_NAME, min_size=1, max_size=4))
    with_label = draw(st.booleans())
    header = (['path'] if draw(st.integers(0, 9)) else []) + (['label'] if with_label else [])
    header += labels
    rows = []
    for _ in range(draw(st.integers(0, 4))):
        row = [draw(PATH_CELL)] + ([draw(LABEL_NAME)] if with_label else [])
        row += [draw(PROB_CELL) for _ in labels]
        extra = draw(st.sampled_from([0, 0, 0, 0, 1, -1]))
        row = row + [draw(PROB_CELL)] if extra > 0 else row[:len(row) + extra] if extra else row
        rows.append(row)
    if draw(st.integers(0, 4)):
        buf = io.StringIO()
        csv.writer(buf, lineterminator=draw(st.sampled_from(['\n', '\r\n']))).writerows(
            [header, *rows])
        return buf.getvalue()
    return ''.join(','.join(r) + '\n' for r in [header, *rows])   # unquoted


# label specification CSV
SPEC_KIND = st.one_of(
    st.sampled_from(['row', 'datasettaxon', 'max_count', 'prioritize', 'family', 'genus',
                     'species', 'ROW', 'Family', 'bogus', '']),
    NASTY_TEXT)
SPEC_CONTENT = st.one_of(
    st.sampled_from(['ds|deer', 'ds|genus|odocoileus', 'cervidae', '5', '0', '-3', '1e3', '1_000',
                     "[['a'], ['b']]", "[['a'], 'b']", '[[1]]', '[[', '[' * 300,
                     "__import__('os')", '9' * 5000, 'ds|', '|x', 'a|b|c|d', 'ds|bogus|x']),
    NASTY_TEXT)
SPEC_LABEL = st.one_of(st.sampled_from(['deer', '!deer', 'elk', '!', ' ', '#deer']), NASTY_TEXT)


@st.composite
def label_spec_csv(draw):
    rows = []
    if draw(st.booleans()):
        rows.append(['output_label', 'type', 'content'])
    for _ in range(draw(st.integers(0, 5))):
        row = [draw(SPEC_LABEL), draw(SPEC_KIND), draw(SPEC_CONTENT)]
        extra = draw(st.sampled_from([0, 0, 0, 0, 1, -1]))
        rows.append(row + [draw(NASTY_TEXT)] if extra > 0 else row[:extra] if extra else row)
        if not draw(st.integers(0, 5)):
            rows.append([])
    if draw(st.integers(0, 4)):
        buf = io.StringIO()
        csv.writer(buf, lineterminator=draw(st.sampled_from(['\n', '\r\n']))).writerows(rows)
        return buf.getvalue()
    return ''.join(','.join(r) + '\n' for r in rows)


def _encoded(texts):
    return st.tuples(texts, st.sampled_from(['utf-8', 'utf-8', 'utf-8', 'latin-1', 'cp1252',
                                             'utf-16', 'utf-8-sig'])).map(
        lambda t: t[0].encode(t[1], errors='replace'))


# label specification JSON
TAXON = st.one_of(
    st.fixed_dictionaries(
        {'level': st.one_of(st.sampled_from(['family', 'genus', 'bogus']), SCALAR),
         'name': st.one_of(st.sampled_from(['cervidae', 'odocoileus']), SCALAR)},
        optional={'datasets': st.one_of(st.lists(NASTY_TEXT, max_size=3), ANY_JSON)}),
    ANY_JSON)
SELECTION = {
    'taxa': st.one_of(st.lists(TAXON, max_size=3), ANY_JSON),
    'dataset_labels': st.one_of(
        st.dictionaries(NASTY_TEXT, st.one_of(st.lists(NASTY_TEXT, max_size=3), ANY_JSON),
                        max_size=3),
        ANY_JSON)}
SPEC = st.one_of(
    st.fixed_dictionaries({}, optional={
        **SELECTION,
        'exclude': st.one_of(st.fixed_dictionaries({}, optional=SELECTION), ANY_JSON),
        'max_count': st.one_of(st.integers(1, 10 ** 6), NASTY_NUMBER, SCALAR),
        'prioritize': st.one_of(st.lists(st.lists(NASTY_TEXT, max_size=2), max_size=2),
                                ANY_JSON),
        'extra': ANY_JSON}),
    ANY_JSON)
LABEL_SPEC_DOC = st.one_of(
    st.dictionaries(st.one_of(st.sampled_from(['deer', 'elk']), NASTY_TEXT), SPEC, max_size=3),
    ANY_JSON)

# taxonomy CSV
TAXONOMY_STRING = st.one_of(
    st.sampled_from(["[(1, 'family', 'cervidae', [])]",
                     "[(2, 'genus', 'odocoileus', ['mule deer']), (1, 'family', 'cervidae', [])]",
                     "[(1, 'family', 'Cervidae', ['deer', 2])]", '[]', '[1]', '()',
                     "[(1, 'a', 'b')]", 'x', '((', "[(1, 2, 3, [])]", "[(1, 'f', 'c', {1})]",
                     "__import__('os')", '[' * 300, '9' * 5000, "[(1, 'f', 'c', None)]"]),
    NASTY_TEXT)


@st.composite
def taxonomy_csv(draw):
    columns = list(TAXONOMY_CSV_COLUMNS) + ['common_name', 'source']
    columns = draw(st.permutations(columns))
    if not draw(st.integers(0, 9)):
        columns = columns[1:]
    rows = [columns]
    for _ in range(draw(st.integers(0, 4))):
        cell = {'dataset_name': st.one_of(st.just('ds'), NASTY_TEXT),
                'query': st.one_of(st.sampled_from(['deer', 'Elk']), NASTY_TEXT),
                'taxonomy_string': TAXONOMY_STRING}
        row = [draw(cell.get(c, NASTY_TEXT)) for c in columns]
        extra = draw(st.sampled_from([0, 0, 0, 1, -1]))
        rows.append(row + ['x'] if extra > 0 else row[:extra] if extra else row)
    buf = io.StringIO()
    csv.writer(buf, lineterminator='\n').writerows(rows)
    return buf.getvalue()


# splits.json
SPLIT_PAIR = st.one_of(
    st.lists(st.one_of(NASTY_TEXT, st.integers(0, 99)), min_size=2, max_size=2),
    st.lists(SCALAR, min_size=2, max_size=2),
    st.lists(SCALAR, max_size=3),
    ANY_JSON)
SPLITS_TEXT = st.one_of(
    st.lists(st.tuples(st.one_of(st.sampled_from(SPLITS), NASTY_TEXT),
                       st.one_of(st.lists(SPLIT_PAIR, max_size=4), ANY_JSON)),
             max_size=4).map(_object_text),
    ANY_JSON.map(json.dumps))

# label_index.json
INDEX_KEY = st.one_of(
    st.integers(0, 4).map(str),
    st.sampled_from([' 0', '00', '+1', '-1', '1_0', '٣', '', 'a', '0.0', '1e1', '9' * 5000]),
    NASTY_TEXT)
LABEL_INDEX_TEXT = st.one_of(
    st.lists(st.tuples(INDEX_KEY, st.one_of(st.sampled_from(['deer', 'elk']), SCALAR, ANY_JSON)),
             max_size=5).map(_object_text),
    ANY_JSON.map(json.dumps))

# failure logs
FAILURE = st.one_of(
    st.one_of(st.just('loc1/img.jpg'), NASTY_TEXT),
    st.fixed_dictionaries({'file': st.one_of(st.just('loc1/img.jpg'), SCALAR)},
                          optional={'reason': NASTY_TEXT}),
    ANY_JSON)
FAILURE_LOG = st.one_of(
    st.fixed_dictionaries(
        {'failures': st.one_of(st.lists(FAILURE, max_size=4), ANY_JSON)},
        optional={'images': NASTY_NUMBER, 'crops_written': NASTY_NUMBER,
                  'images_without_detections': st.lists(FAILURE, max_size=3),
                  'detector_version': SCALAR}),
    st.lists(FAILURE, max_size=4),
    ANY_JSON)


# ---------------------------------------------------------------- 1. detections JSON

@FAST
@given(doc=DETECTION_DOC)
@example(doc={'images': [{'file': 'a.jpg', 'detections': [
    {'category': '1', 'conf': 0.9, 'bbox': [math.nan, 0.0, 1.0, 1.0]}]}]})
@example(doc={'images': [{'file': 'a.jpg', 'detections': [
    {'category': '1', 'conf': 10 ** 400, 'bbox': [0, 0, 1, 1]}]}]})
@example(doc={'images': [{'file': 'a.jpg', 'detections': [
    {'category': '1', 'conf': 0.9, 'bbox': [10 ** 400, 0, 1, 1]}]}]})
@example(doc={'images': [{'file': 'a\nb.jpg', 'detections': 1}]})
def test_detections_check_document(doc):
    """check_document on structured-but-wrong documents: InputError, or a document
    whose boxes and confidences iter_detections yields as finite floats."""
    ok, value = _outcome(lambda: check_document(doc, 'detections.json'))
    if ok:
        _check_detections(value)


@FAST
@given(doc=DETECTION_DOC, ascii_only=st.booleans(), gz=st.booleans())
def test_detections_read_document(doc, ascii_only, gz):
    """read_document on those documents as (gzipped) files: the rule, files untouched."""
    data = _json_bytes(doc, ascii_only)
    _read_file(gzip.compress(data, mtime=0) if gz else data,
               'detections.json.gz' if gz else 'detections.json', read_document,
               _check_detections)


# ---------------------------------------------------------------- 2. classifier output CSV

@FAST
@given(text=classifier_csv(), labelled=st.booleans())
@example(text='path,deer\ncam/a.jpg___crop00_mdv5a.jpg,abc\n', labelled=False)
@example(text='path,deer\ncam/a.jpg___crop00_mdv5a.jpg,1.5\n', labelled=False)
@example(text='path,deer\ncam/a.jpg___crop00_mdv5a.jpg,nan\n', labelled=False)
@example(text='path,deer\ncam/a.jpg___crop00_mdv5a.jpg,\n', labelled=False)
@example(text='path,deer\na.jpg,0.5\nb.jpg,0.5,0.5,0.5\n', labelled=False)
@example(text='path,deer\n"a\nb.jpg",abc\n', labelled=False)
def test_classifier_output_read_outputs(text, labelled):
    """read_outputs (as aggregate_classifier_probs and merge_classification_detection_output
    call it): InputError, or every probability column finite and in [0, 1]."""
    _read_file(text.encode('utf-8'), 'classifier_output.csv',
               _read_outputs_labelled if labelled else _read_outputs, _check_outputs)


@FAST
@given(text=classifier_csv(), multilabel=st.booleans())
@example(text='path,label,deer\na.jpg,deer,NA\n', multilabel=False)
@example(text='path,label,deer,elk\na.jpg,"deer,elk",0.5,0.5\nb.jpg,,0.5,0.5\n', multilabel=True)
@example(text='path,label,deer,elk\na.jpg,"deer, elk",0.5,0.5\n', multilabel=True)
@example(text='path,label,deer\n,deer,0.5\n', multilabel=False)
@example(text='path,label,weight\n', multilabel=False)
@example(text='path,label,weight\n', multilabel=True)
def test_evaluation_outputs_for_the_report(text, multilabel):
    """The evaluation report's readers of outputs_<split>.csv(.gz): InputError, or
    crops with true labels among the columns and probabilities from 0 to 1."""
    _read_file(text.encode('utf-8'), 'outputs_val.csv',
               _read_eval_multilabel if multilabel else _read_eval_split, _check_eval_split)


# ---------------------------------------------------------------- 3. label specifications

@FAST
@given(text=st.one_of(label_spec_csv(), st.text(max_size=60)))
@example(text='deer,family,cervidae\relk,family,cervidae\r')
@example(text='deer,family,' + 'x' * 140_000 + '\n')
def test_label_spec_csv_to_json(text):
    """csv_spec_to_json (the library half of csv_to_json): InputError, or a JSON
    specification that parse_label_spec accepts."""
    ok, value = _outcome(lambda: csv_spec_to_json(text, 'label_spec.csv'))
    if ok:
        _check_spec_json(value)


@FAST
@given(data=st.one_of(_encoded(label_spec_csv()), st.binary(max_size=80)))
@example(data=b'deer,family,cervid\xe6\n')
@example(data='deer,family,cervidae\n'.encode('utf-16'))
def test_label_spec_csv_file(data):
    """csv_to_json on a file of any bytes (non-UTF-8 included), writing to stdout."""
    _read_file(data, 'label_spec.csv', _csv_to_json, _check_spec_json)


@FAST
@given(spec=LABEL_SPEC_DOC, ascii_only=st.booleans())
def test_label_spec_json(spec, ascii_only):
    """The label-spec JSON loader of json_validator: InputError or valid LabelSpecs."""
    _read_file(_json_bytes(spec, ascii_only), 'label_spec.json', _load_label_spec, _check_specs)


@FAST
@given(data=st.one_of(_encoded(taxonomy_csv()), st.binary(max_size=80)))
@example(data=b'dataset_name,query,taxonomy_level,scientific_name,taxonomy_string\n'
              b'ds,d\xe9er,family,cervidae,"[(1, \'family\', \'cervidae\', [])]"\n')
@example(data=b'dataset_name,query,taxonomy_level,scientific_name,taxonomy_string\r'
              b'ds,deer,family,cervidae,"[(1, \'family\', \'cervidae\', [])]"\r')
def test_taxonomy_csv(data):
    """load_taxonomy_csv (read by json_validator with the spec): InputError or a taxonomy."""
    _read_file(data, 'taxonomy.csv', load_taxonomy_csv, _check_taxonomy)


# ---------------------------------------------------------------- 4. splits.json

@FAST
@given(text=SPLITS_TEXT)
@example(text='{"train": [[null, {"a": 1}]]}')
def test_splits_json(text):
    """read_splits: InputError, or {split: [(dataset, location), ...]} from real names."""
    _read_file(text.encode('utf-8'), 'splits.json', _read_splits, _check_splits)


# ---------------------------------------------------------------- 5. label_index.json

@FAST
@given(text=LABEL_INDEX_TEXT)
@example(text='{"0": "deer", "00": {}}')
@example(text='{"0": null, " 0": null}')
def test_label_index_json(text):
    """load_label_index: InputError, or a non-empty list of unique non-empty names."""
    _read_file(text.encode('utf-8'), 'label_index.json', load_label_index, _check_label_index)


# ---------------------------------------------------------------- 6. failure logs

@FAST
@given(log=FAILURE_LOG,
       keys=st.sampled_from([None, ['failures'], ['failures', 'images_without_detections']]))
def test_failure_log_json(log, keys):
    """analyze_failed_images' reader (read_log + failed_images): InputError, or a list of
    unique non-empty image paths."""
    _read_file(_json_bytes(log), 'crop_detections_log_20260101_120000.json',
               lambda p: _read_failure_log(p, keys), _check_failed_images)


# ---------------------------------------------------------------- every reader: any bytes

@pytest.mark.parametrize('reader', sorted(READERS))
@FASTER
@given(data=st.one_of(st.binary(max_size=120), _encoded(st.text(max_size=60)),
                      ANY_JSON.map(_json_bytes)))
def test_reader_arbitrary_bytes(reader, data):
    name, read, check = READERS[reader]
    _read_file(data, name, read, check)


PATHOLOGICAL = {
    'empty': b'',
    'blank': b'  \n\n',
    'deep_json_array': b'[' * 100_000 + b']' * 100_000,
    'deep_json_object': b'{"a":' * 100_000 + b'1' + b'}' * 100_000,
    'json_int_5000_digits': b'1' * 5000,
    'json_nan_inf': b'[NaN, Infinity, -Infinity]',
    'json_utf8_bom': b'\xef\xbb\xbf{"0": "deer"}',
    'json_utf16': '{"0": "deer"}'.encode('utf-16'),
    'csv_latin1': b'path,deer\ncam/d\xe9er.jpg,0.5\n',
    'csv_field_over_128k': b'deer,family,' + b'x' * 140_000 + b'\n',
    'csv_lone_cr': b'path,deer\rcam/a.jpg,0.5\r',
    'csv_nul': b'path,deer\ncam/a\x00.jpg,0.5\n',
    'csv_ragged': b'path,deer\na.jpg,0.5\nb.jpg,0.5,0.5,0.5\n',
    'csv_unclosed_quote': b'path,deer\n"a.jpg,0.5\n',
}


@pytest.mark.parametrize('payload', sorted(PATHOLOGICAL))
@pytest.mark.parametrize('reader', sorted(READERS))
def test_reader_pathological_input(reader, payload):
    name, read, check = READERS[reader]
    _read_file(PATHOLOGICAL[payload], name, read, check)


@st.composite
def corrupt_gzip(draw):
    data = bytearray(gzip.compress(draw(st.binary(min_size=1, max_size=200)) * 4, mtime=0))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(10, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    cut = draw(st.sampled_from([None, None, -8, 12]))
    return bytes(data[:cut])


@pytest.mark.parametrize('reader', sorted(READERS))
@FASTER
@given(data=corrupt_gzip())
@example(data=b'\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03' + b'\xff' * 20)
def test_reader_corrupt_gzip(reader, data):
    """Every reader takes gzip by the .gz suffix; a damaged stream is an InputError."""
    name, read, check = READERS[reader]
    _read_file(data, name + '.gz', read, check)
