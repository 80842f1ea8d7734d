"""splits.json, the locations of each split (written by
create_classification_dataset, read by training, evaluation and the dataset
report). Kept free of torch so that reading it is quick."""
from __future__ import annotations

from pathlib import Path

from classification import utils

SPLITS = ('train', 'val', 'test')


def read_splits(path: Path) -> dict[str, list[tuple[str, str]]]:
    """splits.json as {split: [(dataset, location), ...]}, checked."""
    raw = utils.read_json(path, unique_keys=True)
    if not isinstance(raw, dict):
        raise utils.InputError(f'{path}: expected {{"train": [[dataset, location], ...], ...}}')
    out: dict[str, list[tuple[str, str]]] = {}
    where: dict[tuple[str, str], str] = {}
    for split, locs in raw.items():
        if split not in SPLITS or not isinstance(locs, list) or not all(
                isinstance(x, list) and len(x) == 2
                and all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in x)
                for x in locs):
            raise utils.InputError(f'{path}: {split!r} must be one of {list(SPLITS)} with a '
                                   'list of [dataset, location] pairs (strings)')
        out[split] = [(str(d), str(loc)) for d, loc in locs]
        for loc in out[split]:
            if loc in where:
                raise utils.InputError(f'{path}: location {list(loc)} is in both '
                                       f'{where[loc]!r} and {split!r}')
            where[loc] = split
    return out
