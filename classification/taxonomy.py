"""Label specifications and the taxonomy graph.

Used by csv_to_json, json_validator and map_classification_categories.

The taxonomy CSV has one row per (dataset, dataset label): ``dataset_name``,
``query`` (the dataset's own label), ``taxonomy_level``, ``scientific_name``,
``common_name``, ``source`` and ``taxonomy_string``, a Python-literal list of
``[id, level, name, common_names]`` from the row's taxon up to the root. The
literal is parsed with ``ast.literal_eval`` (never ``eval``).

A label specification maps each output label to what it includes::

    {"cervid": {"taxa": [{"level": "family", "name": "cervidae",
                          "datasets": ["idfg"]}],          # datasets optional
                "dataset_labels": {"idfg": ["deer", "elk"]},
                "exclude": {"taxa": [...], "dataset_labels": {...}},
                "max_count": 50000,
                "prioritize": [["idfg_swwlf_2019"], ["idfg"]]}}
"""
from __future__ import annotations

import ast
import csv
import io
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from classification.utils import InputError, open_input_text

# (dataset, dataset label)
DatasetLabel = tuple[str, str]
TaxonKey = tuple[str, str]          # (level, name) of a taxon

TAXONOMY_LEVELS = (
    'kingdom', 'phylum', 'subphylum', 'superclass', 'class', 'subclass', 'infraclass',
    'superorder', 'order', 'suborder', 'infraorder', 'parvorder', 'superfamily', 'family',
    'subfamily', 'tribe', 'subtribe', 'genus', 'subgenus', 'species', 'subspecies',
    'variety', 'form')
TAXONOMY_CSV_COLUMNS = ('dataset_name', 'query', 'taxonomy_level', 'scientific_name',
                        'taxonomy_string')


@dataclass
class TaxonNode:
    """One taxon; ``dataset_labels`` are the labels tagged as exactly this taxon."""
    level: str
    name: str
    common_names: set[str] = field(default_factory=set)
    parents: set[tuple[str, str]] = field(default_factory=set)
    children: set[tuple[str, str]] = field(default_factory=set)
    dataset_labels: set[DatasetLabel] = field(default_factory=set)


@dataclass
class Taxonomy:
    """The taxonomy graph plus every (dataset, label) the CSV knows about."""
    nodes: dict[tuple[str, str], TaxonNode] = field(default_factory=dict)
    dataset_labels: set[DatasetLabel] = field(default_factory=set)

    def node(self, level: str, name: str) -> TaxonNode | None:
        return self.nodes.get((level.lower(), name.lower()))

    def dataset_labels_under(self, level: str, name: str) -> set[DatasetLabel]:
        """Dataset labels of this taxon and all its descendants."""
        start = self.node(level, name)
        if start is None:
            return set()
        out: set[DatasetLabel] = set()
        stack, seen = [(start.level, start.name)], set()
        while stack:
            key = stack.pop()
            if key in seen:
                continue
            seen.add(key)
            node = self.nodes[key]
            out |= node.dataset_labels
            stack.extend(node.children)
        return out


def parse_taxonomy_string(text: str, where: str) -> list[tuple[int | str, str, str, list[str]]]:
    """Parses ``[(id, level, name, [common names]), ...]`` safely."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as e:
        raise InputError(f'{where}: taxonomy_string is not a list literal ({e})') from e
    if not isinstance(value, (list, tuple)) or not value:
        raise InputError(f'{where}: taxonomy_string must be a non-empty list')
    out = []
    for k, entry in enumerate(value):
        if (not isinstance(entry, (list, tuple)) or len(entry) != 4
                or not isinstance(entry[1], str) or not isinstance(entry[2], str)
                or not isinstance(entry[3], (list, tuple))):
            raise InputError(f'{where}: taxonomy_string entry {k} must be '
                             '[id, level, name, [common names]]')
        out.append((entry[0], entry[1].strip().lower(), entry[2].strip().lower(),
                    [str(c) for c in entry[3]]))
    return out


def check_csv(text: str, source: str) -> None:
    """Refuses text the csv module cannot parse (a bare carriage return inside a
    field, a field over its size limit, ...) in one line."""
    try:
        for _ in csv.reader(io.StringIO(text)):
            pass
    except csv.Error as e:
        raise InputError(f'{source}: not a readable CSV file ({e})') from e


def load_taxonomy_csv(path: str | os.PathLike[str], single_parent: bool = False) -> Taxonomy:
    """Reads a taxonomy CSV into a Taxonomy; malformed rows are an InputError.

    With ``single_parent``, a taxon listed under two or more parents keeps one:
    the parent it has in the most rows of the CSV; on a tie, the parent whose
    (level, name) sorts first. Its other parents no longer include it.
    """
    with open_input_text(path) as f:
        text = f.read()
    check_csv(text, str(path))
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in TAXONOMY_CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise InputError(f'{path}: taxonomy CSV lacks column(s) {", ".join(missing)}')
    tax = Taxonomy()
    edge_rows: dict[tuple[tuple[str, str], tuple[str, str]], int] = {}
    for row in reader:
        line = reader.line_num
        dataset = (row.get('dataset_name') or '').strip()
        query = (row.get('query') or '').strip().lower()
        if not dataset or not query:
            raise InputError(f'{path}:{line}: dataset_name and query must not be empty')
        tax.dataset_labels.add((dataset, query))
        ts = (row.get('taxonomy_string') or '').strip()
        if not ts:
            continue
        lineage = parse_taxonomy_string(ts, f'{path}:{line}')
        child: tuple[str, str] | None = None
        for _, level, name, commons in lineage:
            key = (level, name)
            node = tax.nodes.setdefault(key, TaxonNode(level, name))
            node.common_names.update(commons)
            if child is not None:
                tax.nodes[child].parents.add(key)
                node.children.add(child)
                edge_rows[(child, key)] = edge_rows.get((child, key), 0) + 1
            child = key
        first = lineage[0]
        tax.nodes[(first[1], first[2])].dataset_labels.add((dataset, query))
    if single_parent:
        for key, node in tax.nodes.items():
            if len(node.parents) < 2:
                continue
            keep = min(node.parents, key=lambda p: (-edge_rows.get((key, p), 0), p))
            for p in node.parents - {keep}:
                tax.nodes[p].children.discard(key)
            node.parents = {keep}
    return tax


# ---------------------------------------------------------------- label specifications

@dataclass(frozen=True)
class TaxonSpec:
    level: str
    name: str
    datasets: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Selection:
    """What a label includes (or, under ``exclude``, removes)."""
    taxa: tuple[TaxonSpec, ...] = ()
    dataset_labels: tuple[DatasetLabel, ...] = ()


@dataclass(frozen=True)
class LabelSpec:
    name: str
    include: Selection
    exclude: Selection
    max_count: int | None = None
    prioritize: tuple[tuple[str, ...], ...] = ()


_SPEC_KEYS = {'taxa', 'dataset_labels', 'exclude', 'max_count', 'prioritize'}


def _parse_selection(obj: Mapping[str, Any], where: str) -> Selection:
    taxa = []
    raw_taxa = obj.get('taxa', [])
    if not isinstance(raw_taxa, list):
        raise InputError(f'{where}: "taxa" must be a list of {{"level", "name"}} objects')
    for k, t in enumerate(raw_taxa):
        if not isinstance(t, Mapping) or not isinstance(t.get('level'), str) or not isinstance(
                t.get('name'), str):
            raise InputError(f'{where}: taxa[{k}] needs string "level" and "name"')
        datasets = t.get('datasets')
        if datasets is not None and (not isinstance(datasets, list)
                                     or not all(isinstance(d, str) for d in datasets)):
            raise InputError(f'{where}: taxa[{k}].datasets must be a list of dataset names')
        taxa.append(TaxonSpec(t['level'].strip().lower(), t['name'].strip().lower(),
                              tuple(datasets) if datasets is not None else None))
    raw_dl = obj.get('dataset_labels', {})
    if not isinstance(raw_dl, Mapping):
        raise InputError(f'{where}: "dataset_labels" must map dataset names to label lists')
    pairs: list[DatasetLabel] = []
    for ds, labels in raw_dl.items():
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise InputError(f'{where}: dataset_labels[{ds!r}] must be a list of strings')
        pairs.extend((ds, x.strip().lower()) for x in labels)
    return Selection(tuple(taxa), tuple(pairs))


def parse_label_spec(obj: Any, source: str) -> dict[str, LabelSpec]:
    """Validates a JSON label specification; errors name the label and the field."""
    if not isinstance(obj, Mapping) or not obj:
        raise InputError(f'{source}: a label specification is a non-empty JSON object '
                         'mapping output labels to their selections')
    specs = {}
    for label, spec in obj.items():
        where = f'{source}: label {label!r}'
        if not isinstance(label, str) or not label.strip() or ',' in label:
            raise InputError(f'{where}: label names must be non-empty and have no comma')
        if not isinstance(spec, Mapping):
            raise InputError(f'{where}: expected an object')
        unknown = set(spec) - _SPEC_KEYS
        if unknown:
            raise InputError(f'{where}: unknown key(s) {sorted(unknown)}; allowed: '
                             f'{sorted(_SPEC_KEYS)}')
        include = _parse_selection(spec, where)
        if not include.taxa and not include.dataset_labels:
            raise InputError(f'{where}: selects nothing (give "taxa" or "dataset_labels")')
        exclude_obj = spec.get('exclude', {})
        if not isinstance(exclude_obj, Mapping) or set(exclude_obj) - {'taxa', 'dataset_labels'}:
            raise InputError(f'{where}: "exclude" takes only "taxa" and "dataset_labels"')
        exclude = _parse_selection(exclude_obj, f'{where} exclude')
        max_count = spec.get('max_count')
        if max_count is not None and (not isinstance(max_count, int)
                                      or isinstance(max_count, bool) or max_count < 1):
            raise InputError(f'{where}: "max_count" must be a positive integer')
        prioritize = spec.get('prioritize', [])
        if not isinstance(prioritize, list) or not all(
                isinstance(tier, list) and all(isinstance(d, str) for d in tier)
                for tier in prioritize):
            raise InputError(f'{where}: "prioritize" must be a list of lists of dataset names')
        if prioritize and max_count is None:
            raise InputError(f'{where}: "prioritize" needs "max_count"')
        specs[label] = LabelSpec(label, include, exclude, max_count,
                                 tuple(tuple(t) for t in prioritize))
    return specs


def label_spec_to_json(specs: Mapping[str, LabelSpec]) -> dict[str, Any]:
    """The JSON form of parsed specifications (inverse of parse_label_spec)."""
    def sel(s: Selection) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if s.taxa:
            out['taxa'] = [{'level': t.level, 'name': t.name,
                            **({'datasets': list(t.datasets)} if t.datasets is not None else {})}
                           for t in s.taxa]
        if s.dataset_labels:
            dl: dict[str, list[str]] = {}
            for ds, lab in s.dataset_labels:
                dl.setdefault(ds, []).append(lab)
            out['dataset_labels'] = dl
        return out

    js: dict[str, Any] = {}
    for name, spec in specs.items():
        entry = sel(spec.include)
        excl = sel(spec.exclude)
        if excl:
            entry['exclude'] = excl
        if spec.max_count is not None:
            entry['max_count'] = spec.max_count
        if spec.prioritize:
            entry['prioritize'] = [list(t) for t in spec.prioritize]
        js[name] = entry
    return js


def _select(sel: Selection, tax: Taxonomy, where: str) -> set[DatasetLabel]:
    out: set[DatasetLabel] = set()
    for t in sel.taxa:
        if tax.node(t.level, t.name) is None:
            raise InputError(f'{where}: unknown taxon {t.level} {t.name!r} (not in the '
                             'taxonomy CSV)')
        found = tax.dataset_labels_under(t.level, t.name)
        if t.datasets is not None:
            found = {p for p in found if p[0] in t.datasets}
        out |= found
    for pair in sel.dataset_labels:
        if pair not in tax.dataset_labels:
            raise InputError(f'{where}: unknown dataset label {pair[1]!r} of dataset '
                             f'{pair[0]!r} (not in the taxonomy CSV)')
        out.add(pair)
    return out


def resolve_label_spec(specs: Mapping[str, LabelSpec], tax: Taxonomy,
                       allow_multilabel: bool = False) -> dict[str, set[DatasetLabel]]:
    """Output label -> the (dataset, dataset label) pairs it includes.

    Raises InputError for an unknown taxon or dataset label, a label that
    selects nothing, or a dataset label claimed by two output labels (unless
    ``allow_multilabel``).
    """
    result: dict[str, set[DatasetLabel]] = {}
    owner: dict[DatasetLabel, str] = {}
    for name, spec in specs.items():
        where = f'label {name!r}'
        included = _select(spec.include, tax, where) - _select(spec.exclude, tax,
                                                               f'{where} exclude')
        if not included:
            raise InputError(f'{where}: matches no dataset label in the taxonomy CSV')
        if not allow_multilabel:
            for pair in sorted(included):
                if pair in owner:
                    raise InputError(
                        f'{where}: dataset label {pair[1]!r} of {pair[0]!r} is already in '
                        f'label {owner[pair]!r} (use --allow-multilabel to allow this)')
                owner[pair] = name
        result[name] = included
    return result


def dataset_label_to_outputs(resolved: Mapping[str, Iterable[DatasetLabel]]
                             ) -> dict[str, dict[str, list[str]]]:
    """{dataset: {dataset label: [output labels]}} from resolve_label_spec's result."""
    out: dict[str, dict[str, list[str]]] = {}
    for label in sorted(resolved):
        for ds, ds_label in resolved[label]:
            out.setdefault(ds, {}).setdefault(ds_label, []).append(label)
    return out


# ---------------------------------------------------------------- CSV specifications

def csv_spec_to_json(text: str, source: str) -> dict[str, Any]:
    """Converts the CSV label specification to its JSON form.

    Rows are ``output_label,type,content``; ``!label`` excludes; types are
    ``row`` (``dataset|label``), ``datasettaxon`` (``dataset|level|name``), a
    taxonomy level (content is the taxon name), ``max_count`` and
    ``prioritize`` (a list-of-lists literal). Blank lines and lines starting
    with ``#`` are skipped; the header row is optional. Rows of a label add up,
    but ``max_count`` and ``prioritize`` take one value each: a row that changes
    an earlier one is an InputError.
    """
    js: dict[str, dict[str, Any]] = {}
    check_csv(text, source)
    reader = csv.reader(io.StringIO(text))
    for row in reader:
        line = reader.line_num
        where = f'{source}:{line}'
        if not row or not ''.join(row).strip() or row[0].lstrip().startswith('#'):
            continue
        cells = [c.strip() for c in row]
        if [c.lower() for c in cells[:3]] == ['output_label', 'type', 'content']:
            continue
        if len(cells) != 3:
            raise InputError(f'{where}: expected 3 columns output_label,type,content, '
                             f'got {len(cells)} (quote a content that has commas)')
        label, kind, content = cells[0], cells[1].lower(), cells[2]
        exclude = label.startswith('!')
        label = label[1:].strip() if exclude else label
        if not label:
            raise InputError(f'{where}: empty output label')
        if not content:
            raise InputError(f'{where}: empty content for type {kind!r}')
        spec = js.setdefault(label, {})
        target = spec.setdefault('exclude', {}) if exclude else spec
        if kind == 'row':
            parts = content.split('|')
            if len(parts) != 2 or not all(p.strip() for p in parts):
                raise InputError(f'{where}: row content must be <dataset>|<dataset label>')
            target.setdefault('dataset_labels', {}).setdefault(
                parts[0].strip(), []).append(parts[1].strip())
        elif kind == 'datasettaxon':
            parts = content.split('|')
            if len(parts) != 3 or not all(p.strip() for p in parts):
                raise InputError(f'{where}: datasettaxon content must be '
                                 '<dataset>|<taxon level>|<taxon name>')
            _check_level(parts[1].strip().lower(), where)
            target.setdefault('taxa', []).append({'level': parts[1].strip().lower(),
                                                  'name': parts[2].strip(),
                                                  'datasets': [parts[0].strip()]})
        elif kind == 'max_count':
            if exclude:
                raise InputError(f'{where}: max_count cannot be excluded')
            try:
                count = int(content)
            except ValueError as e:
                raise InputError(f'{where}: max_count must be an integer') from e
            if count < 1:
                raise InputError(f'{where}: max_count must be at least 1')
            _set_once(spec, 'max_count', count, label, where)
        elif kind == 'prioritize':
            if exclude:
                raise InputError(f'{where}: prioritize cannot be excluded')
            try:
                tiers = ast.literal_eval(content)
            except (ValueError, SyntaxError) as e:
                raise InputError(f'{where}: prioritize must be a list of lists of dataset '
                                 f'names, like "[[\'a\', \'b\'], [\'c\']]"') from e
            if not isinstance(tiers, list) or not all(
                    isinstance(t, list) and all(isinstance(d, str) for d in t) for t in tiers):
                raise InputError(f'{where}: prioritize must be a list of lists of strings')
            _set_once(spec, 'prioritize', tiers, label, where)
        else:
            _check_level(kind, where)
            target.setdefault('taxa', []).append({'level': kind, 'name': content})
    if not js:
        raise InputError(f'{source}: no label rows found')
    # validate the result with the JSON rules (e.g. prioritize needs max_count)
    parse_label_spec(js, source)
    return js


def _set_once(spec: dict[str, Any], key: str, value: Any, label: str, where: str) -> None:
    """Sets a single-valued field; a second row may repeat it but not change it."""
    if key in spec and spec[key] != value:
        raise InputError(f'{where}: {key} {value!r} for label {label!r} differs from the '
                         f'{spec[key]!r} of an earlier row; give it once')
    spec[key] = value


def _check_level(level: str, where: str) -> None:
    if level not in TAXONOMY_LEVELS:
        raise InputError(f'{where}: unknown type or taxonomy level {level!r}; expected row, '
                         f'datasettaxon, max_count, prioritize or one of '
                         f'{", ".join(TAXONOMY_LEVELS)}')
