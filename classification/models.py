"""Classifier architectures: building them, ImageNet or local weights, fine-tuning
(only the head trains, batch-norm statistics frozen) and device choice.

ResNets come from torchvision, EfficientNets (b0-b8, l2) from efficientnet-pytorch.
"""
from __future__ import annotations

import contextlib
import logging
import os
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from classification import model_files, utils

logger = logging.getLogger(__name__)

RESNET_MODELS = ('resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152')
EFFICIENTNET_MODELS = (*(f'efficientnet-b{i}' for i in range(9)), 'efficientnet-l2')
VALID_MODELS = RESNET_MODELS + EFFICIENTNET_MODELS
# native input sizes of the EfficientNet family (as in efficientnet-pytorch)
EFFICIENTNET_SIZES = {'efficientnet-b0': 224, 'efficientnet-b1': 240, 'efficientnet-b2': 260,
                      'efficientnet-b3': 300, 'efficientnet-b4': 380, 'efficientnet-b5': 456,
                      'efficientnet-b6': 528, 'efficientnet-b7': 600, 'efficientnet-b8': 672,
                      'efficientnet-l2': 800}


def default_image_size(model_name: str) -> int:
    return EFFICIENTNET_SIZES.get(model_name, 224)


def is_efficientnet(model_name: str) -> bool:
    return model_name in EFFICIENTNET_MODELS


def _hub_hint(filename: str) -> str:
    folder = Path(torch.hub.get_dir()) / 'checkpoints'
    return (f'place the weights file at {folder / filename} (the torch hub cache, set by '
            '$TORCH_HOME), or pass --pretrained /path/to/weights.pt')


def final_layer(model: nn.Module) -> nn.Linear:
    """The classification layer (``fc`` in ResNet, ``_fc`` in EfficientNet)."""
    layer = getattr(model, 'fc', None) or getattr(model, '_fc', None)
    if not isinstance(layer, nn.Linear):
        raise TypeError(f'{type(model).__name__} has no final Linear layer')
    return layer


def _load_weights_file(model: nn.Module, path: str) -> None:
    """Loads a state dict (or a checkpoint holding one under 'model'), skipping
    tensors whose shape differs (e.g. a final layer with other classes)."""
    try:
        state, _ = model_files.checkpoint_state_dict(path)
    except utils.InputError as e:
        raise utils.InputError(f'--pretrained {e}') from e
    own = model.state_dict()
    usable = {k.removeprefix('module.'): v for k, v in state.items()}
    usable = {k: v for k, v in usable.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(own) - set(usable))
    if len(usable) == 0:
        raise utils.InputError(f'--pretrained {path}: no tensor matches the model')
    model.load_state_dict(usable, strict=False)
    logger.info('loaded %d tensors from %s; %d left as initialized%s', len(usable), path,
                len(skipped), f' ({", ".join(skipped[:4])}...)' if skipped else '')


def use_native_silu(model: nn.Module) -> nn.Module:
    """Gives an efficient-pytorch EfficientNet torch's fused SiLU (the same function
    as its swish, x * sigmoid(x)): one kernel forward and backward, which trains
    faster than the package's custom autograd swish, keeps as little memory, and
    can be traced to TorchScript and ONNX as it is."""
    silu = nn.SiLU()
    for module in model.modules():
        if hasattr(module, '_swish'):
            module._swish = silu
    return model


def build_model(model_name: str, num_classes: int, pretrained: bool | str = False) -> nn.Module:
    """A classifier with ``num_classes`` outputs.

    ``pretrained``: False = random init; True = ImageNet weights (downloaded,
    or read from the torch hub cache); a path = a state dict or checkpoint of
    the same architecture (tensors of another shape, like the final layer, are
    left as initialized).
    """
    if model_name not in VALID_MODELS:
        raise utils.InputError(f'unknown model {model_name!r}; choose one of {VALID_MODELS}')
    imagenet = pretrained is True
    model: nn.Module
    if model_name in RESNET_MODELS:
        if imagenet:
            weights = torchvision.models.get_model_weights(model_name).DEFAULT
            try:
                model = torchvision.models.get_model(model_name, weights=weights)
            except (urllib.error.URLError, OSError) as e:
                filename = os.path.basename(weights.url)
                raise utils.InputError(f'cannot download ImageNet weights for {model_name} '
                                       f'({e}); {_hub_hint(filename)}') from e
            model.fc = nn.Linear(final_layer(model).in_features, num_classes)
        else:
            model = torchvision.models.get_model(model_name, weights=None,
                                                 num_classes=num_classes)
    else:
        from efficientnet_pytorch import EfficientNet
        from efficientnet_pytorch.utils import url_map
        if imagenet:
            if model_name not in url_map:
                raise utils.InputError(
                    f'efficientnet-pytorch has no standard ImageNet weights for {model_name}; '
                    'train from scratch or pass --pretrained /path/to/weights.pt')
            try:
                model = EfficientNet.from_pretrained(model_name, num_classes=num_classes)
            except (urllib.error.URLError, OSError) as e:
                filename = os.path.basename(url_map[model_name])
                raise utils.InputError(f'cannot download ImageNet weights for {model_name} '
                                       f'({e}); {_hub_hint(filename)}') from e
        else:
            model = EfficientNet.from_name(model_name, num_classes=num_classes)
        use_native_silu(model)
    if isinstance(pretrained, str):
        _load_weights_file(model, pretrained)
    return model


def recompute_activations(model: nn.Module) -> nn.Module:
    """Activation checkpointing: each block (EfficientNet MBConv, ResNet residual block)
    keeps only its input for the backward pass and runs its forward again there. About
    60% less activation memory for about a third more time per training step. Outputs,
    gradients and the state dict are those of the plain model: the forward run again
    during the backward pass puts its block's batch-norm statistics back as the first
    run left them. Evaluation and export (no gradients) run the blocks as they are."""
    from torch.utils.checkpoint import checkpoint

    blocks = list(getattr(model, '_blocks', []))
    for name in ('layer1', 'layer2', 'layer3', 'layer4'):
        blocks += list(getattr(model, name, []))
    for block in blocks:
        plain = block.forward
        buffers = [b for m in block.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                   for b in m.buffers()]

        def contexts(_buffers: list[torch.Tensor] = buffers
                     ) -> tuple[contextlib.AbstractContextManager[None],
                                contextlib.AbstractContextManager[None]]:
            return contextlib.nullcontext(), _buffers_kept(_buffers)

        def forward(*args: Any, _plain: Any = plain, _contexts: Any = contexts,
                    **kwargs: Any) -> Any:
            if torch.is_grad_enabled():
                return checkpoint(_plain, *args, use_reentrant=False, context_fn=_contexts,
                                  **kwargs)
            return _plain(*args, **kwargs)

        block.forward = forward
    return model


@contextlib.contextmanager
def _buffers_kept(buffers: list[torch.Tensor]) -> Iterator[None]:
    """Restores ``buffers`` (running statistics, batch counts) after the block."""
    saved = [b.detach().clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, s in zip(buffers, saved, strict=True):
                b.copy_(s)


def plain_forward(model: nn.Module) -> nn.Module:
    """Undoes ``recompute_activations`` (before scripting or tracing a model)."""
    for module in model.modules():
        module.__dict__.pop('forward', None)
    return model


def set_finetune(model: nn.Module, finetune: bool) -> None:
    """With ``finetune``, only the final layer is trained: every other parameter is
    frozen and every batch norm keeps its running statistics (eval mode). Call it
    after ``model.train()``."""
    for p in model.parameters():
        p.requires_grad = not finetune
    head = final_layer(model)
    for p in head.parameters():
        p.requires_grad = True
    if finetune:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def pick_device(device: int | str | None = None) -> torch.device:
    """CUDA (the given index, or 0) when available, else the CPU."""
    if isinstance(device, str):
        try:
            return torch.device(device)
        except RuntimeError as e:
            raise utils.InputError(f'--device {device}: not a torch device (e.g. cpu, cuda, '
                                   'cuda:1)') from e
    if torch.cuda.is_available():
        return torch.device('cuda', device or 0)
    if device is not None:
        logger.warning('--device %s asked for, but CUDA is not available: using the CPU', device)
    return torch.device('cpu')
