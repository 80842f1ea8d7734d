"""Propose a label specification from image counts over the taxonomy tree.

The idea is the original megaclassifier_label_spec notebook's: search the
taxonomy down to its leaves and make a label of every taxon that has enough
labeled images, as fine-grained as the counts allow (done here by working up
from the leaves).

Precisely, with ``N = min_images``, each taxon ``t`` is visited after its
children (post-order over the taxonomy tree):

* ``below(t)``: the labels already made inside the subtrees of ``t``'s
  children, and ``tops(t)``: the taxa of those labels that have no label
  taxon above them inside ``t``'s subtree.
* ``rest(t)``: the dataset labels tagged as ``t`` itself, plus ``rest(c)`` of
  each child ``c`` that did not become a label: all the images under ``t``
  that no label below takes. ``n(t)`` is their number of images.
* If ``n(t) >= N``, ``t`` becomes a label of exactly ``rest(t)``: the whole
  subtree when ``below(t)`` is empty (kind ``taxon``), else the subtree less
  ``tops(t)`` (kind ``remainder``: JSON ``"exclude": {"taxa": tops}``).
* Otherwise ``rest(t)`` is passed up to ``t``'s parent: images of a taxon too
  small to be a label stay with the nearest ancestor that becomes one.

So a split into children happens whenever a child reaches N, every label has
at least N images, and no dataset label is in two labels. The only images in
no label are those whose root's ``rest`` stays under N (``unassigned``) and
those of dataset labels without a taxonomy string (never reachable through a
taxon). The taxonomy must be a tree: a taxon with several parents is
counted under the first (by level and name); :func:`check_proposal` refuses a
proposal that then does not resolve to what was intended (load the taxonomy
with ``single_parent=True`` and give json_validator the same option).
"""
from __future__ import annotations

import csv
import io
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from classification import utils
from classification.classifier_output import NOT_PROBABILITIES
from classification.taxonomy import (
    TAXONOMY_LEVELS,
    DatasetLabel,
    LabelSpec,
    Selection,
    TaxonKey,
    Taxonomy,
    TaxonSpec,
    label_spec_to_json,
    resolve_label_spec,
)
from classification.utils import InputError
from data_management.megadb.base import MegaDB, single_class_images

logger = logging.getLogger(__name__)

WHOLE, REMAINDER = 'taxon', 'remainder'


@dataclass(frozen=True)
class ProposedLabel:
    """One proposed output label: a taxon, less the ``excluded`` taxa (the label
    taxa just below it) when its ``kind`` is ``remainder``."""
    name: str
    taxon: TaxonKey
    kind: str
    excluded: tuple[TaxonKey, ...]
    dataset_labels: tuple[DatasetLabel, ...]   # what it resolves to, sorted
    images: int


@dataclass(frozen=True)
class Proposal:
    """The labels in depth-first order (children before their parent's
    remainder), the images in no label, and the tree the labels were chosen on."""
    min_images: int
    labels: tuple[ProposedLabel, ...]
    unassigned: tuple[tuple[DatasetLabel, int], ...]
    parent_of: Mapping[TaxonKey, TaxonKey | None]

    @property
    def images(self) -> int:
        return sum(label.images for label in self.labels)

    @property
    def unassigned_images(self) -> int:
        return sum(n for _, n in self.unassigned)


def count_images(db: MegaDB, tax: Taxonomy) -> dict[DatasetLabel, int]:
    """Images per (dataset, dataset label) of the taxonomy, counted as
    json_validator selects them: an image's own class overrides its sequence's,
    and only images with exactly one class count. Datasets of the taxonomy that
    the database lacks are logged and count nothing."""
    wanted: dict[str, set[str]] = {}
    for ds, label in tax.dataset_labels:
        wanted.setdefault(ds, set()).add(label)
    counts: Counter[DatasetLabel] = Counter()
    for ds, _, images in single_class_images(db, wanted):
        counts.update((ds, cls) for _, _, cls in images if cls in wanted[ds])
    return dict(sorted(counts.items()))


def tree_parents(tax: Taxonomy) -> dict[TaxonKey, TaxonKey | None]:
    """Each taxon's parent in the tree the proposal walks: its only parent, or
    the first by (level, name) of several; None for a root."""
    return {key: min(node.parents) if node.parents else None
            for key, node in sorted(tax.nodes.items())}


def _label_names(keys: Sequence[TaxonKey]) -> dict[TaxonKey, str]:
    """The taxon's name, or ``<level> <name>`` where two label taxa share a name
    (or the name is a reserved column of classifier outputs). CSV-unsafe
    characters (a comma, a leading ``!`` or ``#``) are replaced."""
    def clean(text: str) -> str:
        text = text.replace(',', ' ').strip()
        return text.lstrip('!#').strip() or text.replace('!', '_').replace('#', '_')

    by_name = Counter(clean(name) for _, name in keys)
    out = {}
    for level, name in keys:
        base = clean(name)
        out[(level, name)] = (base if by_name[base] == 1 and base not in NOT_PROBABILITIES
                              else clean(f'{level} {name}'))
    return out


def propose_labels(tax: Taxonomy, counts: Mapping[DatasetLabel, int],
                   min_images: int) -> Proposal:
    """The proposal described in the module docstring. Raises InputError when no
    taxon reaches ``min_images`` (naming the largest)."""
    if min_images < 1:
        raise InputError(f'min_images must be at least 1, got {min_images}')
    parent_of = tree_parents(tax)
    children: dict[TaxonKey, list[TaxonKey]] = {key: [] for key in parent_of}
    for key, parent in parent_of.items():
        if parent is not None:
            children[parent].append(key)
    roots = sorted(key for key, parent in parent_of.items() if parent is None)

    chosen: list[tuple[TaxonKey, str, tuple[TaxonKey, ...], tuple[DatasetLabel, ...], int]] = []
    subtree_images: dict[TaxonKey, int] = {}

    def visit(key: TaxonKey) -> tuple[set[DatasetLabel], list[TaxonKey]]:
        """(rest, tops) of ``key``; appends the labels made on the way to ``chosen``."""
        rest = set(tax.nodes[key].dataset_labels)
        tops: list[TaxonKey] = []
        total = 0
        for child in sorted(children[key]):
            child_rest, child_tops = visit(child)
            rest |= child_rest
            tops.extend(child_tops)
            total += subtree_images[child]
        n = sum(counts.get(p, 0) for p in rest)
        subtree_images[key] = total + sum(counts.get(p, 0) for p in tax.nodes[key].dataset_labels)
        if n >= min_images:
            chosen.append((key, REMAINDER if tops else WHOLE, tuple(tops),
                           tuple(sorted(rest)), n))
            return set(), [key]
        return rest, tops

    unassigned: Counter[DatasetLabel] = Counter()
    for root in roots:
        rest, _ = visit(root)
        unassigned.update({p: counts.get(p, 0) for p in rest})
    tagged = {p for node in tax.nodes.values() for p in node.dataset_labels}
    unassigned.update({p: counts.get(p, 0) for p in tax.dataset_labels - tagged})
    if not chosen:
        biggest = max(roots, key=lambda k: subtree_images[k], default=None)
        most = (f'; the most under one root is {subtree_images[biggest]}, under '
                f'{biggest[0]} {biggest[1]!r}' if biggest is not None else '')
        raise InputError(f'no taxon has {min_images} or more images{most}; lower '
                         '--min-images')
    names = _label_names([c[0] for c in chosen])
    labels = tuple(ProposedLabel(names[key], key, kind, tops, pairs, n)
                   for key, kind, tops, pairs, n in chosen)
    return Proposal(min_images, labels,
                    tuple(sorted((p, n) for p, n in unassigned.items() if n > 0)), parent_of)


def to_label_specs(proposal: Proposal) -> dict[str, LabelSpec]:
    """The proposal as parsed label specifications, in proposal order."""
    return {label.name: LabelSpec(
        label.name, Selection((TaxonSpec(*label.taxon),)),
        Selection(tuple(TaxonSpec(*t) for t in label.excluded)))
        for label in proposal.labels}


def to_label_spec_json(proposal: Proposal) -> dict[str, Any]:
    """The JSON label specification (what csv_to_json writes, json_validator reads)."""
    return label_spec_to_json(to_label_specs(proposal))


def to_csv_spec(proposal: Proposal) -> str | None:
    """The CSV label specification (csv_to_json's input, to edit by hand), or None
    when a taxon's level is not one the CSV form accepts."""
    levels = {t[0] for label in proposal.labels for t in (label.taxon, *label.excluded)}
    if not levels <= set(TAXONOMY_LEVELS):
        return None
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator='\n')
    writer.writerow(['output_label', 'type', 'content'])
    for label in proposal.labels:
        writer.writerow([label.name, *label.taxon])
        for level, name in label.excluded:
            writer.writerow([f'!{label.name}', level, name])
    return buf.getvalue()


def counts_table(proposal: Proposal) -> pd.DataFrame:
    """One row per label: label, kind, level, taxon, images, datasets (``;``
    separated), dataset_labels (``dataset|label``, ``;`` separated), excluded
    (``level name``, ``;`` separated)."""
    rows = [{'label': lab.name, 'kind': lab.kind, 'level': lab.taxon[0], 'taxon': lab.taxon[1],
             'images': lab.images,
             'datasets': ';'.join(sorted({ds for ds, _ in lab.dataset_labels})),
             'dataset_labels': ';'.join(f'{ds}|{q}' for ds, q in lab.dataset_labels),
             'excluded': ';'.join(f'{lv} {nm}' for lv, nm in lab.excluded)}
            for lab in proposal.labels]
    return pd.DataFrame(rows, columns=['label', 'kind', 'level', 'taxon', 'images', 'datasets',
                                       'dataset_labels', 'excluded'])


def check_proposal(proposal: Proposal, tax: Taxonomy) -> None:
    """Refuses a proposal whose JSON form would not resolve (as json_validator
    resolves it) to the dataset labels each label was chosen for: that happens
    only when a taxon with several parents was counted under one of them."""
    several = sorted(key for key, node in tax.nodes.items() if len(node.parents) > 1)
    advice = ('; load the taxonomy with one parent per taxon (--single-parent-taxonomy, '
              'here and in json_validator)')
    if several:
        level, name = several[0]
        parents = ', '.join(f'{lv} {nm}' for lv, nm in sorted(tax.nodes[several[0]].parents))
        advice += f' ({level} {name} has parents {parents})'
    try:
        resolved = resolve_label_spec(to_label_specs(proposal), tax)
    except InputError as e:
        why = str(e).replace(' (use --allow-multilabel to allow this)', '')  # not its flag
        raise InputError(f'the proposed specification does not resolve: {why}{advice}') from e
    for label in proposal.labels:
        if resolved[label.name] != set(label.dataset_labels):
            raise InputError(f'label {label.name!r} would select other dataset labels than the '
                             f'counted ones{advice}')


# ---------------------------------------------------------------- the tree figure

def drawn_tree(proposal: Proposal) -> dict[TaxonKey, list[TaxonKey]]:
    """The tree drawn for a proposal, as {taxon: children}: the label taxa and
    their ancestors, less the ancestors that are not labels and have a single
    child there (a chain kingdom > phylum > class is drawn as one edge); roots
    are kept. Children are sorted."""
    keep: set[TaxonKey] = set()
    for label in proposal.labels:
        key: TaxonKey | None = label.taxon
        while key is not None and key not in keep:
            keep.add(key)
            key = proposal.parent_of.get(key)
    kids: dict[TaxonKey, list[TaxonKey]] = {k: [] for k in keep}
    for k in keep:
        parent = proposal.parent_of.get(k)
        if parent is not None:
            kids[parent].append(k)
    is_label = {label.taxon for label in proposal.labels}

    def drawn_children(k: TaxonKey) -> list[TaxonKey]:
        out = []
        for c in sorted(kids[k]):
            while c not in is_label and len(kids[c]) == 1:
                c = kids[c][0]
            out.append(c)
        return out

    roots = sorted(k for k in keep if proposal.parent_of.get(k) is None)
    tree: dict[TaxonKey, list[TaxonKey]] = {}
    stack = list(roots)
    while stack:
        k = stack.pop()
        tree[k] = drawn_children(k)
        stack.extend(tree[k])
    return {k: tree[k] for k in [*roots, *sorted(set(tree) - set(roots))]}


def tree_figure(proposal: Proposal, title: str) -> Any:
    """A matplotlib Figure of :func:`drawn_tree`, roots on the left, one row per
    leaf (so it stays readable with hundreds of labels); label taxa are marked
    and show their label name and image count."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib.figure import Figure

    tree = drawn_tree(proposal)
    labels = {label.taxon: label for label in proposal.labels}
    children = set(c for kids in tree.values() for c in kids)
    roots = [k for k in tree if k not in children]
    pos: dict[TaxonKey, tuple[int, float]] = {}
    row = 0

    def place(k: TaxonKey, depth: int) -> float:
        nonlocal row
        if not tree[k]:
            y = float(row)
            row += 1
        else:
            ys = [place(c, depth + 1) for c in tree[k]]
            y = (min(ys) + max(ys)) / 2
        pos[k] = (depth, y)
        return y

    for r in roots:
        place(r, 0)
    depth = max(d for d, _ in pos.values())
    width = min(3.0 + 2.4 * (depth + 1), 60.0)
    height = min(1.5 + 0.32 * max(row, 3), 300.0)
    fig = Figure(figsize=(width, height))
    ax = fig.subplots()
    colours = {WHOLE: 'tab:blue', REMAINDER: 'tab:orange'}
    for k, kids in tree.items():
        x, y = pos[k]
        for c in kids:
            cx, cy = pos[c]
            ax.plot([x, x + 0.15, x + 0.15, cx], [y, y, cy, cy], color='0.6', lw=1, zorder=1)
    for k, (x, y) in pos.items():
        lab = labels.get(k)
        if lab is None:
            ax.scatter([x], [y], s=16, color='0.5', zorder=2)
            text = f'{k[0]} {k[1]}'
            style: dict[str, Any] = {'color': '0.35', 'fontstyle': 'italic'}
        else:
            ax.scatter([x], [y], s=46, color=colours[lab.kind], zorder=3)
            text = f'{lab.name} ({lab.images})'
            style = {'color': 'black', 'fontweight': 'bold'}
        text = utils.figure_text(text)
        if not tree[k]:     # a leaf: the name to its right
            ax.text(x + 0.08, y, text, ha='left', va='center', fontsize=9, **style)
        else:               # above the edge that comes in from the left
            ax.text(x - 0.06, y - 0.12, text, ha='right', va='bottom', fontsize=8, **style)
    ax.set_xlim(-1.0, depth + 2.2)
    ax.set_ylim(row - 0.4, -0.9)
    ax.axis('off')
    ax.set_title(f'{title}\nblue: a label of the whole taxon; orange: a label of the taxon '
                 'less the labels below it; grey: a taxon that is not a label', fontsize=10)
    fig.tight_layout()
    return fig
