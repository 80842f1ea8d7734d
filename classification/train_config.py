"""The settings of a training run: one frozen, typed object, built from the command
line for a new run or from the run's params.json when it is resumed.

params.json holds every field of ``TrainConfig`` (plus ``run_dir``); it is
written once when the run starts and never rewritten. The settings that only
say how to run (``RUNTIME_FIELDS``: workers, device, checkpoint interval, data
folders) may differ when a run is resumed; all others are the run's own.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from classification import models, utils

RECIPES = ('default', 'original')
AMP_CHOICES = ('auto', 'bf16', 'fp16')
RUNTIME_FIELDS = frozenset({'dataset_dir', 'cropped_images_dir', 'num_workers', 'device',
                            'checkpoint_every', 'logdir', 'recompute_activations'})


@dataclass(frozen=True)
class TrainConfig:
    dataset_dir: str
    cropped_images_dir: str
    model_name: str = 'efficientnet-b0'
    pretrained: bool | str = False
    finetune: int = 0                      # epochs training only the head
    label_weighted: bool = False
    weight_by_detection_conf: bool | str = False
    multilabel: bool = False
    recipe: str = 'default'
    epochs: int = 50
    batch_size: int = 256
    lr: float = 1e-3                       # resolved (recipe default) before the run
    weight_decay: float = 1e-5
    seed: int = 0
    image_size: int = 224
    patience: int = 8
    amp: str | None = None                 # None (float32), 'auto', 'bf16' or 'fp16'
    log_extreme_examples: int = 0
    num_workers: int = 8
    device: str | None = None
    checkpoint_every: int = 0              # batches; 0: at the end of each epoch only
    recompute_activations: bool | None = None  # activation checkpointing; None: auto
    logdir: str = '.'

    def to_params(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_params(cls, params: dict[str, Any], source: str,
                    run_dir: Path | None = None) -> TrainConfig:
        """The config saved in a run's params.json (unknown keys are ignored; runs
        made before a setting existed get its default). Relative folders are taken
        from ``run_dir`` (where they exist there; runs of older versions saved them
        relative to the working folder)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in params.items() if k in known}
        for key in ('dataset_dir', 'cropped_images_dir'):
            if not isinstance(values.get(key), str):
                raise utils.InputError(f'{source}: no {key} (is this a training run?)')
            if run_dir is not None:
                values[key] = str(resolve_run_path(run_dir, values[key]))
        try:
            config = cls(**values)
        except TypeError as e:
            raise utils.InputError(f'{source}: {e}') from e
        return config.checked(source)

    def checked(self, source: str = 'settings') -> TrainConfig:
        """Refuses values no run can use."""
        if self.model_name not in models.VALID_MODELS:
            raise utils.InputError(f'{source}: unknown model {self.model_name!r}')
        if self.recipe not in RECIPES:
            raise utils.InputError(f'{source}: recipe must be one of {RECIPES}')
        if self.amp is not None and self.amp not in AMP_CHOICES:
            raise utils.InputError(f'{source}: amp must be one of {AMP_CHOICES}')
        for name in ('lr',):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise utils.InputError(f'{source}: {name} must be a finite number above 0, '
                                       f'not {value!r}')
        if (not isinstance(self.weight_decay, (int, float)) or not math.isfinite(self.weight_decay)
                or self.weight_decay < 0):
            raise utils.InputError(f'{source}: weight_decay must be finite and at least 0')
        for name in ('epochs', 'batch_size', 'image_size', 'patience'):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise utils.InputError(f'{source}: {name} must be a positive integer')
        for name in ('seed', 'finetune', 'num_workers', 'checkpoint_every',
                     'log_extreme_examples'):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or (
                    name != 'seed' and value < 0):
                raise utils.InputError(f'{source}: {name} must be a whole number'
                                       f'{"" if name == "seed" else " of at least 0"}')
        for name in ('label_weighted', 'multilabel'):
            if not isinstance(getattr(self, name), bool):
                raise utils.InputError(f'{source}: {name} must be true or false')
        if not isinstance(self.recompute_activations, (bool, type(None))):
            raise utils.InputError(f'{source}: recompute_activations must be true, false '
                                   'or null')
        for name in ('pretrained', 'weight_by_detection_conf'):
            if not isinstance(getattr(self, name), (bool, str)):
                raise utils.InputError(f'{source}: {name} must be true, false or a path')
        return self

    def with_runtime(self, **changes: Any) -> TrainConfig:
        """This config with some runtime settings changed (resuming a run)."""
        wrong = set(changes) - RUNTIME_FIELDS
        if wrong:
            raise ValueError(f'not runtime settings: {sorted(wrong)}')
        return replace(self, **changes)


def recompute_activations(config: TrainConfig, device_type: str) -> bool:
    """Whether to recompute activations: as asked, else with AMP on a CPU, where it
    halves peak memory for a few percent of the run time (on a GPU it costs more)."""
    if config.recompute_activations is not None:
        return config.recompute_activations
    return config.amp is not None and device_type == 'cpu'


def default_lr(recipe: str, batch_size: int) -> float:
    """The default recipe's AdamW 1e-3; the original's 0.016 per 256 crops of a batch."""
    return 0.016 * batch_size / 256 if recipe == 'original' else 1e-3


def resolve_run_path(run_dir: Path, path: str) -> Path:
    """A folder named in a run's params.json: absolute as it is; relative, from the
    run folder, or (runs of older versions) from the working folder where only
    that exists."""
    p = Path(path)
    if p.is_absolute():
        return p
    from_run = run_dir / p
    return p if not from_run.exists() and p.exists() else from_run
