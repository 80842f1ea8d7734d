"""Recalibrates the batch-norm statistics of a briefly trained classifier and
exports it as TorchScript, for benchmarks that need decisive outputs.

An EfficientNet trained from scratch for a few epochs keeps running statistics
near their initial values (efficientnet-pytorch's batch norms update them with
momentum 0.01), so at evaluation it outputs nearly uniform probabilities and a
top-1 agreement figure means little. This recomputes the statistics as plain
averages over the training crops (model in training mode, no gradients) and
exports the result with the run's labels and size.

Example:
    .venv/bin/python bench/recalibrate_bn.py bench/out/demo224/b0/<run>/ckpt_last.pt \
        bench/out/demo224/base_logdir bench/out/demo224/crops bench/out/demo224/b0_bn.pt
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from classification import crop_data, model_files, models, utils


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('checkpoint')
    parser.add_argument('dataset_dir')
    parser.add_argument('crops_dir')
    parser.add_argument('output')
    parser.add_argument('--batch-size', type=int, default=32)
    args = parser.parse_args()
    run = Path(args.checkpoint).parent
    params = json.loads((run / 'params.json').read_text())
    labels = utils.load_label_index(run / 'label_index.json')
    state, _ = model_files.checkpoint_state_dict(args.checkpoint)
    model = models.build_model(params['model_name'], len(labels))
    model.load_state_dict(state)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None                        # cumulative average
    frames = crop_data.load_split_frames(args.dataset_dir, labels, ['train'])
    size = params['image_size']
    ds = crop_data.CropDataset(args.crops_dir, frames['train']['path'].tolist(), None, None, size)
    loader = crop_data.make_loader(ds, args.batch_size, 0, torch.device('cpu'))
    model.train()
    with torch.no_grad():
        for x, *_ in loader:
            model(crop_data.to_model_input(x, torch.device('cpu')))
    info = model_files.ClassifierInfo(params['model_name'], size, tuple(labels))
    model_files.export_torchscript(models.plain_forward(model), info, Path(args.output))
    print(args.output)


if __name__ == '__main__':
    main()
