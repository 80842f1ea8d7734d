"""Taxonomic rollup of classifier probabilities, and geographic allow-lists.

Where each classifier label sits in the taxonomy
-----------------------------------------------
A label's taxon comes from its entry in the label specification, read against
the taxonomy CSV (``load_taxonomy_csv(single_parent=True)``: a taxon with two
parents keeps the one it has in most rows, so the taxa form a tree):

- the taxa its ``taxa`` list names place it; several taxa place it at their
  lowest common ancestor (``datasets`` restrictions and ``exclude`` play no part);
- only a label without ``taxa`` is placed by its ``dataset_labels``, each at
  the taxon its row's ``taxonomy_string`` starts with, several again at their
  lowest common ancestor. (A coarse dataset label, like a "bird" that means
  turkeys in one dataset, would otherwise drag a species label up to its class.)
- a label with nothing in the tree (its dataset labels have no taxonomy_string,
  or its taxa have no common ancestor) stays outside the tree: its description
  is its own name and its probability never counts toward a taxon.

A taxon's description is the names of its lineage from the root down, joined
by ``;`` (``animalia;chordata;mammalia;carnivora;canidae;vulpes``), the
MegaDetector format's ``classification_category_descriptions`` style.

Rollup
------
For one crop with label probabilities ``p`` and a threshold ``T``: when the top
label has ``p >= T`` the label stands. Otherwise each taxon on some label's
lineage gets the sum of the probabilities of the labels at or below it, and the
answer is the lowest taxon whose sum reaches ``T``: a taxon reaching it none of
whose descendants does. With ``T > 0.5`` at most one taxon is such; with a lower
``T`` several may be, and the one of the most specific level (species before
genus before family ...) wins, then the larger sum, then the first description
in sort order. A level outside ``taxonomy.TAXONOMY_LEVELS`` counts as the level of
its nearest ancestor of a known level. ``max_level`` (e.g. ``class``) keeps
taxa above that level out of the answer. When no taxon reaches ``T`` the answer
is "none" (unknown). Sums are compared with a tolerance of 1e-9.

Only some taxa can be answers (``LabelTaxa.answerable``): those with at least
two labels at or below them, none of whose children holds all of those labels
(the child is the answer), and which do not hold every label in the tree. The
probabilities of a crop sum to 1, so the taxon above every label (the root, or
the lowest common ancestor of all labels) would reach any threshold whenever
nothing lower does: it would turn every "none" into e.g. "animalia 1.0", which
says no more than the detector's "animal".

Allow-lists
-----------
An allow-list names the labels that may occur at each location, as CSV::

    location,label
    cam_00,deer
    cam_00,fox
    *,deer

or as JSON ``{"cam_00": ["deer", "fox"], "*": ["deer"]}`` (chosen by the
``.json`` / ``.json.gz`` suffix). A CSV may start with a UTF-8 byte order mark
(Excel's "CSV UTF-8"). Every label must be a classifier label. Locations are
folder paths compared with ``/`` separators, without empty or ``.`` parts
(``./north/cam_00/`` is ``north/cam_00``), and case-sensitively. A photo's
location is the longest of its folder prefixes that the list names
(``north/cam_00/img.jpg`` is at ``north/cam_00`` if listed, else at
``north``); ``*`` is the location of every photo matching no other entry, and
photos matching nothing are left unfiltered. A listed location that no photo
falls under is logged (``log_unused_locations``). For a photo at a listed
location, the other labels' probabilities become 0 and the rest are scaled to
sum to 1 (a crop with nothing left keeps all zeros).
"""
from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import pandas as pd

from classification import utils
from classification.taxonomy import (
    TAXONOMY_LEVELS,
    LabelSpec,
    TaxonKey,
    Taxonomy,
    check_csv,
    csv_spec_to_json,
    load_taxonomy_csv,
    parse_label_spec,
)

logger = logging.getLogger(__name__)

TOLERANCE = 1e-9
DEFAULT_LOCATION = '*'
_CHUNK_ROWS = 65536


# ---------------------------------------------------------------- labels in the tree

@dataclass(frozen=True)
class Taxon:
    """One taxon with its lineage (root first, itself last)."""
    level: str
    name: str
    lineage: tuple[TaxonKey, ...]

    @property
    def description(self) -> str:
        return ';'.join(name for _, name in self.lineage)


@dataclass(frozen=True)
class LabelTaxa:
    """Each classifier label's taxon (None: outside the tree), and every taxon on
    some label's lineage (sorted by description)."""
    labels: tuple[str, ...]
    label_taxon: tuple[Taxon | None, ...]
    taxa: tuple[Taxon, ...]
    _index: dict[TaxonKey, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._index.update({(t.level, t.name): i for i, t in enumerate(self.taxa)})

    def label_description(self, i: int) -> str:
        taxon = self.label_taxon[i]
        return taxon.description if taxon is not None else self.labels[i]

    def membership(self) -> np.ndarray:
        """labels x taxa: 1 where the taxon is on the label's lineage (itself included)."""
        m = np.zeros((len(self.labels), len(self.taxa)))
        for i, taxon in enumerate(self.label_taxon):
            for key in taxon.lineage if taxon is not None else ():
                m[i, self._index[key]] = 1.0
        return m

    def strict_descendants(self) -> np.ndarray:
        """taxa x taxa: [t, u] = 1 where u lies strictly below t."""
        d = np.zeros((len(self.taxa), len(self.taxa)))
        for u, taxon in enumerate(self.taxa):
            for key in taxon.lineage[:-1]:
                d[self._index[key], u] = 1.0
        return d

    def answerable(self) -> np.ndarray:
        """Per taxon, whether rollup can answer it: at least two labels lie at or
        below it, none of its children holds them all (that child comes first),
        and it does not hold every label in the tree (probabilities sum to 1, so
        such a taxon would always reach the threshold, and says no more than the
        detector's "animal")."""
        counts = self.membership().sum(axis=0)
        in_tree = sum(t is not None for t in self.label_taxon)
        ok = (counts >= 2) & (counts < in_tree)
        for t, taxon in enumerate(self.taxa):
            if len(taxon.lineage) > 1:
                parent = self._index[taxon.lineage[-2]]
                if counts[parent] == counts[t]:
                    ok[parent] = False
        return ok

    def allowed(self, max_level: str | None = None) -> np.ndarray:
        """Per taxon, whether it can be an answer: answerable and, with
        ``max_level``, at that level or below."""
        if max_level is not None and max_level not in TAXONOMY_LEVELS:
            raise utils.InputError(f'unknown taxonomy level {max_level!r}')
        ok = self.answerable()
        if max_level is not None:
            ok &= self.effective_ranks() >= TAXONOMY_LEVELS.index(max_level)
        return ok

    def effective_ranks(self) -> np.ndarray:
        """Per taxon, its level's position in TAXONOMY_LEVELS (0 = kingdom); an
        unknown level takes its nearest known ancestor's (-1 when none)."""
        ranks = np.full(len(self.taxa), -1, dtype=np.int64)
        for t, taxon in enumerate(self.taxa):
            for level, _ in reversed(taxon.lineage):
                if level in TAXONOMY_LEVELS:
                    ranks[t] = TAXONOMY_LEVELS.index(level)
                    break
        return ranks


def taxon_category_names(lt: LabelTaxa, max_level: str | None = None) -> dict[int, str]:
    """{index into ``lt.taxa``: category name} of the taxa rollup can answer (at
    ``max_level`` or below):
    ``taxon: <name>``, so that a taxon never takes the name of a label (such as
    a remainder label named after its family); ``taxon: <name> (<level>)`` where
    two such taxa share a name."""
    picked = np.flatnonzero(lt.allowed(max_level)).tolist()
    counts: dict[str, int] = {}
    for k in picked:
        counts[lt.taxa[k].name] = counts.get(lt.taxa[k].name, 0) + 1
    return {k: (f'taxon: {lt.taxa[k].name}' if counts[lt.taxa[k].name] == 1
                else f'taxon: {lt.taxa[k].name} ({lt.taxa[k].level})') for k in picked}


def _lineage(tax: Taxonomy, key: TaxonKey) -> tuple[TaxonKey, ...]:
    chain = [key]
    seen = {key}
    node = tax.nodes[key]
    while node.parents:
        (parent,) = node.parents          # single_parent: at most one
        if parent in seen:
            raise utils.InputError(f'taxonomy CSV: taxon {key[0]} {key[1]!r} is its own '
                                   'ancestor (its lineages form a loop)')
        seen.add(parent)
        chain.append(parent)
        node = tax.nodes[parent]
    return tuple(reversed(chain))


def _common_ancestor(lineages: Sequence[tuple[TaxonKey, ...]]) -> tuple[TaxonKey, ...]:
    common = lineages[0]
    for lin in lineages[1:]:
        n = 0
        while n < min(len(common), len(lin)) and common[n] == lin[n]:
            n += 1
        common = common[:n]
    return common


def label_taxa(labels: Sequence[str], specs: Mapping[str, LabelSpec], tax: Taxonomy,
               spec_source: str = 'label specification') -> LabelTaxa:
    """Places each label in the tree (module docstring); a label missing from the
    specification, or a taxon or dataset label missing from the taxonomy, is an
    InputError."""
    missing = [lab for lab in labels if lab not in specs]
    if missing:
        raise utils.InputError(f'{spec_source}: classifier label(s) {missing[:5]} are not in '
                               'the label specification (the label index must match it)')
    tagged: dict[tuple[str, str], TaxonKey] = {}
    for key, node in tax.nodes.items():
        for pair in node.dataset_labels:
            tagged[pair] = key
    placed: list[Taxon | None] = []
    every: dict[TaxonKey, Taxon] = {}
    for lab in labels:
        spec = specs[lab]
        keys: list[TaxonKey] = []
        for t in spec.include.taxa:
            if tax.node(t.level, t.name) is None:
                raise utils.InputError(f'{spec_source}: label {lab!r}: taxon {t.level} '
                                       f'{t.name!r} is not in the taxonomy CSV')
            keys.append((t.level, t.name))
        if not keys:
            for pair in spec.include.dataset_labels:
                if pair not in tax.dataset_labels:
                    raise utils.InputError(f'{spec_source}: label {lab!r}: dataset label '
                                           f'{pair[1]!r} of {pair[0]!r} is not in the '
                                           'taxonomy CSV')
                if pair in tagged:
                    keys.append(tagged[pair])
        common = _common_ancestor([_lineage(tax, k) for k in keys]) if keys else ()
        if not common:
            placed.append(None)
            continue
        for n in range(1, len(common) + 1):
            every.setdefault(common[n - 1], Taxon(*common[n - 1], common[:n]))
        placed.append(every[common[-1]])
    taxa = tuple(sorted(every.values(), key=lambda t: (t.description, t.lineage)))
    return LabelTaxa(tuple(labels), tuple(placed), taxa)


def read_label_spec(path: str | os.PathLike[str]) -> dict[str, LabelSpec]:
    """A label specification, JSON or (by its ``.csv`` suffix) CSV."""
    if str(path).lower().endswith(('.csv', '.csv.gz')):
        with utils.open_input_text(path) as f:
            text = f.read()
        return parse_label_spec(csv_spec_to_json(text, str(path)), str(path))
    return parse_label_spec(utils.read_json(path, unique_keys=True), str(path))


def load_label_taxa(labels: Sequence[str], label_spec: str | os.PathLike[str],
                    taxonomy_csv: str | os.PathLike[str]) -> LabelTaxa:
    return label_taxa(labels, read_label_spec(label_spec),
                      load_taxonomy_csv(taxonomy_csv, single_parent=True), str(label_spec))


# ---------------------------------------------------------------- rollup

class Outcome(str, Enum):
    LABEL = 'label'        # the top label reached the threshold
    TAXON = 'taxon'        # a taxon's summed probability did
    NONE = 'none'          # nothing did


@dataclass(frozen=True)
class RollupResult:
    """Per row: outcome code (0 label, 1 taxon, 2 none), the top label's index,
    the taxon's index into LabelTaxa.taxa (-1 unless rolled up) and the
    probability of the answer (the label's, the taxon's sum; NaN for none)."""
    code: np.ndarray
    label: np.ndarray
    taxon: np.ndarray
    prob: np.ndarray

    OUTCOMES = (Outcome.LABEL, Outcome.TAXON, Outcome.NONE)


def rollup(probs: np.ndarray, lt: LabelTaxa, threshold: float,
           max_level: str | None = None) -> RollupResult:
    """Rolls each row of ``probs`` (rows x labels of ``lt``) up the tree."""
    allowed = lt.allowed(max_level)
    probs = np.asarray(probs, dtype=np.float64)
    n = len(probs)
    member, below = lt.membership(), lt.strict_descendants().T
    ranks = lt.effective_ranks()
    top = probs.argmax(axis=1) if probs.shape[1] else np.zeros(n, dtype=np.int64)
    top_p = probs[np.arange(n), top] if probs.shape[1] else np.zeros(n)
    code = np.where(top_p >= threshold - TOLERANCE, 0, 2).astype(np.int8)
    taxon = np.full(n, -1, dtype=np.int64)
    prob = np.where(code == 0, top_p, np.nan)
    todo = np.flatnonzero(code == 2)
    for start in range(0, len(todo), _CHUNK_ROWS):
        rows = todo[start:start + _CHUNK_ROWS]
        sums = probs[rows] @ member
        reach = (sums >= threshold - TOLERANCE) & allowed
        lowest = reach & ~((reach.astype(np.float64) @ below) > 0)
        rank = np.where(lowest, ranks, np.iinfo(np.int64).min)
        best = lowest & (rank == rank.max(axis=1, keepdims=True))
        best_sum = np.where(best, sums, -np.inf).max(axis=1, keepdims=True)
        best &= sums >= best_sum - 1e-12
        found = best.any(axis=1)
        pick = best.argmax(axis=1)
        hit = rows[found]
        code[hit] = 1
        taxon[hit] = pick[found]
        prob[hit] = sums[found, pick[found]]
    return RollupResult(code, top.astype(np.int64), taxon, prob)


def rollup_table(paths: Sequence[str], lt: LabelTaxa, result: RollupResult) -> pd.DataFrame:
    """One row per crop: ``path``, ``outcome`` (label, taxon or none), ``name`` (the
    label or taxon; empty for none), ``level`` (of the label's or taxon's place in
    the tree), ``prob``, ``description`` (taxonomy string)."""
    label_level = [t.level if t is not None else '' for t in lt.label_taxon]
    label_desc = [lt.label_description(i) for i in range(len(lt.labels))]
    names, levels, descs = [], [], []
    for code, lab, tax in zip(result.code.tolist(), result.label.tolist(),
                              result.taxon.tolist(), strict=True):
        if code == 0:
            names.append(lt.labels[lab])
            levels.append(label_level[lab])
            descs.append(label_desc[lab])
        elif code == 1:
            t = lt.taxa[tax]
            names.append(t.name)
            levels.append(t.level)
            descs.append(t.description)
        else:
            names.append('')
            levels.append('')
            descs.append('')
    return pd.DataFrame({'path': list(paths),
                         'outcome': [RollupResult.OUTCOMES[c].value for c in result.code],
                         'name': names, 'level': levels, 'prob': np.round(result.prob, 4),
                         'description': descs})


# ---------------------------------------------------------------- allow-lists

AllowList = dict[str, frozenset[str]]


def _location_key(text: str) -> str:
    """A folder path as the allow-list compares it: ``/`` separators, no empty or
    ``.`` parts (``./north//cam_00/`` is ``north/cam_00``); case is kept."""
    parts = text.strip().replace('\\', '/').split('/')
    return '/'.join(p for p in parts if p not in ('', '.'))


def _add(out: dict[str, set[str]], location: str, label: str, labels: frozenset[str],
         where: str) -> None:
    key = _location_key(location)
    if not key:
        raise utils.InputError(f'{where}: empty location')
    lab = label.strip()
    if lab not in labels:
        raise utils.InputError(f'{where}: {lab!r} (location {key!r}) is not a classifier label '
                               f'(labels: {", ".join(sorted(labels)[:10])})')
    out.setdefault(key, set()).add(lab)


def parse_allow_list_json(obj: object, labels: Iterable[str], source: str) -> AllowList:
    """``{location: [labels]}`` checked against the classifier's labels."""
    known = frozenset(labels)
    if not isinstance(obj, Mapping) or not obj:
        raise utils.InputError(f'{source}: an allow-list is a non-empty JSON object '
                               '{"location": ["label", ...]}')
    out: dict[str, set[str]] = {}
    for location, labs in obj.items():
        where = f'{source}: location {location!r}'
        if not isinstance(labs, list) or not labs or not all(isinstance(x, str) for x in labs):
            raise utils.InputError(f'{where}: expected a non-empty list of label names')
        if _location_key(str(location)) in out:
            raise utils.InputError(f'{where}: this location is given twice')
        for lab in labs:
            _add(out, str(location), lab, known, where)
    return {k: frozenset(v) for k, v in out.items()}


def parse_allow_list_csv(text: str, labels: Iterable[str], source: str) -> AllowList:
    """``location,label`` rows (the header first; blank lines and ``#`` lines skipped)."""
    known = frozenset(labels)
    check_csv(text, source)
    reader = csv.reader(io.StringIO(text))
    out: dict[str, set[str]] = {}
    header = False
    for row in reader:
        where = f'{source}:{reader.line_num}'
        if not row or not ''.join(row).strip() or row[0].lstrip().startswith('#'):
            continue
        if not header:
            if [c.strip().lower() for c in row] != ['location', 'label']:
                raise utils.InputError(f'{where}: an allow-list CSV starts with the header '
                                       'location,label')
            header = True
            continue
        if len(row) != 2:
            raise utils.InputError(f'{where}: expected 2 columns location,label, got {len(row)}')
        _add(out, row[0], row[1], known, where)
    if not out:
        raise utils.InputError(f'{source}: no location,label rows')
    return {k: frozenset(v) for k, v in out.items()}


def read_allow_list(path: str | os.PathLike[str], labels: Iterable[str]) -> AllowList:
    """An allow-list file, JSON by its ``.json``/``.json.gz`` suffix, else CSV."""
    if str(path).lower().endswith(('.json', '.json.gz')):
        return parse_allow_list_json(utils.read_json(path, unique_keys=True), labels,
                                     str(path))
    with utils.open_input_text(path) as f:     # non-UTF-8 text: its InputError
        text = f.read()
    # a byte order mark, as Excel writes "CSV UTF-8" (utf-8-sig)
    return parse_allow_list_csv(text.removeprefix('\ufeff'), labels, str(path))


def photo_location(photo: str, locations: Collection[str]) -> str | None:
    """The allow-list entry a photo falls under: its longest listed folder prefix,
    else ``*`` when listed, else None."""
    keys = locations
    parts = _location_key(photo).split('/')[:-1]
    for k in range(len(parts), 0, -1):
        prefix = '/'.join(parts[:k])
        if prefix in keys:
            return prefix
    return DEFAULT_LOCATION if DEFAULT_LOCATION in keys else None


def _photo_folders(photos: Sequence[str] | pd.Series) -> tuple[np.ndarray, Sequence[str]]:
    """Per photo, an index into the distinct ``<folder>/x`` paths (what
    photo_location reads), and those paths."""
    series = pd.Series(photos, dtype=str).reset_index(drop=True)
    if series.empty:            # (str.rpartition of an empty Series has no columns)
        return np.zeros(0, dtype=np.int64), []
    folders = series.str.replace('\\', '/', regex=False).str.rpartition('/')[0] + '/x'
    codes, uniques = pd.factorize(folders)
    return np.asarray(codes), list(uniques)


def unused_locations(photos: Sequence[str] | pd.Series,
                     allow: Mapping[str, frozenset[str]]) -> list[str]:
    """The listed locations (``*`` aside) that no photo falls under, sorted."""
    return _unused([photo_location(f, allow) for f in _photo_folders(photos)[1]], allow)


def _unused(used: Iterable[str | None], allow: Mapping[str, frozenset[str]]) -> list[str]:
    """The listed locations (``*`` aside) not among ``used``, sorted."""
    taken = set(used)
    return sorted(loc for loc in allow if loc != DEFAULT_LOCATION and loc not in taken)


def log_unused_locations(photos: Sequence[str] | pd.Series,
                         allow: Mapping[str, frozenset[str]], limit: int = 20) -> list[str]:
    """Warns of each listed location no photo falls under (the first ``limit`` by
    name, then how many more), pointing out a photo folder that differs only in
    case. Returns those locations."""
    folders = _photo_folders(photos)[1]         # once: photos may be millions
    return _log_unused(folders, [photo_location(f, allow) for f in folders], allow, limit)


def _log_unused(folders: Sequence[str], used: Sequence[str | None],
                allow: Mapping[str, frozenset[str]], limit: int = 20) -> list[str]:
    """log_unused_locations of the distinct photo ``folders`` and the location
    each falls under (``used``)."""
    unused = _unused(used, allow)
    if not unused:
        return unused
    by_lower: dict[str, str] = {}
    for folder in folders:
        parts = _location_key(folder).split('/')[:-1]
        for k in range(1, len(parts) + 1):
            prefix = '/'.join(parts[:k])
            by_lower.setdefault(prefix.lower(), prefix)
    for loc in unused[:limit]:
        near = by_lower.get(loc.lower())
        hint = (f' (photos are in {near!r}: location names are case-sensitive)'
                if near is not None else '')
        logger.warning('allow-list: location %r matches no photo%s', loc, hint)
    if len(unused) > limit:
        logger.warning('allow-list: and %d more location(s) that match no photo',
                       len(unused) - limit)
    return unused


def apply_allow_list(probs: np.ndarray, photos: Sequence[str] | pd.Series,
                     labels: Sequence[str], allow: Mapping[str, frozenset[str]]
                     ) -> tuple[np.ndarray, int, int]:
    """Zeroes the labels not allowed at each row's photo's location and rescales the
    rest to sum to 1. Returns (new probabilities, rows at no listed location,
    rows left with nothing)."""
    codes, uniques = _photo_folders(photos)
    located = [photo_location(f, allow) for f in uniques]
    return _apply_allow_list(probs, codes, located, labels, allow)


def _apply_allow_list(probs: np.ndarray, codes: np.ndarray, located: Sequence[str | None],
                      labels: Sequence[str], allow: Mapping[str, frozenset[str]]
                      ) -> tuple[np.ndarray, int, int]:
    """apply_allow_list, given each row's folder (``codes``) and the location
    each folder falls under (``located``)."""
    probs = np.array(probs, dtype=np.float64)
    locs = sorted(allow)
    mask = np.ones((len(locs) + 1, len(labels)))          # last row: unfiltered
    for i, loc in enumerate(locs):
        mask[i] = [lab in allow[loc] for lab in labels]
    where = {loc: i for i, loc in enumerate(locs)}
    folder_row = np.array([where.get(loc or '', len(locs)) for loc in located],
                          dtype=np.int64)
    row_mask = mask[folder_row[codes]]
    unmatched = int((folder_row[codes] == len(locs)).sum())
    probs *= row_mask
    total = probs.sum(axis=1, keepdims=True)
    emptied = int((total[:, 0] <= 0).sum())
    np.divide(probs, total, out=probs, where=total > 0)
    return probs, unmatched, emptied


def filter_by_allow_list(probs: np.ndarray, photos: Sequence[str] | pd.Series,
                         labels: Sequence[str], allow: Mapping[str, frozenset[str]]
                         ) -> np.ndarray:
    """apply_allow_list, with the warnings a run gives: listed locations no photo
    falls under (log_unused_locations), crops at no listed location and crops
    left with no allowed label. The photos' folders are located once."""
    codes, uniques = _photo_folders(photos)
    located = [photo_location(f, allow) for f in uniques]
    probs, unmatched, emptied = _apply_allow_list(probs, codes, located, labels, allow)
    _log_unused(uniques, located, allow)
    if unmatched:
        logger.warning('allow-list: %d crop(s) of photos at no listed location, left '
                       'unfiltered', unmatched)
    if emptied:
        logger.warning('allow-list: %d crop(s) had probability only for labels not '
                       'allowed at their location; they are left with none', emptied)
    return probs


# ---------------------------------------------------------------- settings

@dataclass(frozen=True)
class RollupOptions:
    """What merge adds: descriptions (``label_taxa``), the rollup (``threshold``,
    optionally ``max_level``) and geographic filtering (``allow_list``)."""
    label_taxa: LabelTaxa | None = None
    threshold: float | None = None
    max_level: str | None = None
    allow_list: Mapping[str, frozenset[str]] | None = None
