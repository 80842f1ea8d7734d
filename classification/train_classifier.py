r"""Train a species classifier on the crops of a classification dataset.

Reads classification_ds.csv, label_index.json and splits.json from
dataset_dir (made by create_classification_dataset) and the crops from
cropped_images_dir. Trains a torchvision ResNet or an efficientnet-pytorch
EfficientNet (from scratch, from ImageNet weights with --pretrained, or from
a checkpoint with --pretrained PATH), evaluates on val after every epoch (and
on test when val improves), stops after --patience epochs without a better val
top-1 accuracy (label-weighted with --label-weighted), then evaluates the best
epoch on every split and exports it to TorchScript.

Example:
    python -m classification.train_classifier run1 crops \
        --model-name resnet18 --image-size 96 --epochs 20 --batch-size 64 \
        --label-weighted --logdir run1 --num-workers 2 --seed 0 --amp

On several GPUs (one process each) or machines, the same command under torchrun:
    torchrun --nproc_per_node 4 -m classification.train_classifier run1 crops ...

Resuming (every setting comes from the run; only runtime flags may be given):
    python -m classification.train_classifier run1 crops --resume run1/20260101_120000

Writes into a new folder <logdir>/<YYYYmmdd_HHMMSS>/ (or the --resume folder):
    params.json                every setting of the run (paths relative to the folder)
    label_index.json, splits.json   the dataset's, as trained (resumes are checked
                               against them)
    ckpt_<epoch>.pt            model weights of each new best epoch
    ckpt_last.pt               full training state (for --resume), written at the end
                               of every epoch and every --checkpoint-every batches
    ckpt_<best>_compiled.pt    TorchScript export of the best epoch (with its image
                               size, normalisation and labels inside)
    events.out.tfevents.*      TensorBoard: lr, loss and accuracy per split, per-label
                               recall, confusion matrices, hparams (with
                               --log-extreme-examples N, each label's N most confident
                               right and wrong crops per split and epoch)
    resumes.jsonl              one line per resume
    outputs_<split>.csv.gz, overall_metrics.csv, confusion_matrices.npz,
    label_stats.csv            evaluation of the best epoch (as evaluate_model)
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
from collections.abc import Sequence
from pathlib import Path

from classification import metrics, models, train_config, training, utils
from classification.distributed import Dist
from classification.train_config import TrainConfig

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = utils.make_parser(__doc__)
    parser.add_argument('dataset_dir', help='folder with classification_ds.csv, '
                                            'label_index.json and splits.json')
    parser.add_argument('cropped_images_dir', help='folder the crop paths are relative to')
    parser.add_argument('--multilabel', action='store_true',
                        help='crops may have several labels (comma-separated in '
                             'classification_ds.csv): one sigmoid per label, binary '
                             'cross-entropy; top-1 counts as right when it is one of them; '
                             '--label-weighted samples by the first label')
    parser.add_argument('-m', '--model-name', default='efficientnet-b0',
                        choices=models.VALID_MODELS, help='architecture')
    parser.add_argument('--pretrained', nargs='?', const=True, default=False,
                        help='start from ImageNet weights; or give a checkpoint/state dict '
                             'path of the same architecture')
    parser.add_argument('--finetune', type=utils.nonneg_int, default=0,
                        help='epochs training only the final layer first, with batch-norm '
                             'statistics frozen (default: 0)')
    parser.add_argument('--label-weighted', action='store_true',
                        help='sample every label equally often; val/test metrics and the '
                             'choice of the best epoch are label-weighted')
    parser.add_argument('--weight-by-detection-conf', nargs='?', const=True, default=False,
                        help='sample training crops in proportion to their detection '
                             'confidence; optionally an .npz with isotonic calibration '
                             'arrays x and y')
    parser.add_argument('--recipe', choices=train_config.RECIPES, default='default',
                        help="'default': AdamW, cosine schedule, light augmentation; "
                             "'original': the original pipeline's optimizers, step decay and "
                             'augmentation (see the README)')
    parser.add_argument('--epochs', type=utils.positive_int, default=50,
                        help='maximum epochs (default: 50)')
    parser.add_argument('--batch-size', type=utils.positive_int, default=256,
                        help='crops per batch and process (default: 256)')
    parser.add_argument('--lr', type=utils.positive_float, default=None,
                        help='learning rate (default: 1e-3; with --recipe original '
                             '0.016 x batch size / 256)')
    parser.add_argument('--weight-decay', type=utils.nonneg_float, default=1e-5)
    parser.add_argument('--amp', nargs='?', const='auto', choices=train_config.AMP_CHOICES,
                        default=None,
                        help='mixed precision: bf16 autocast on CPUs; on CUDA bf16 where the '
                             'GPU has it, else fp16 with a gradient scaler (default: float32)')
    parser.add_argument('--num-workers', type=utils.nonneg_int, default=8,
                        help='data-loading processes per training process (default: 8)')
    parser.add_argument('--logdir', default='.', help='parent folder of the run folder')
    parser.add_argument('--seed', type=int, default=None,
                        help='random seed (default: random, recorded in params.json)')
    parser.add_argument('--image-size', type=utils.image_size,
                        help='input size in pixels (default: 224, or the EfficientNet size)')
    parser.add_argument('--patience', type=utils.positive_int, default=8,
                        help='stop after this many epochs without a better val accuracy')
    parser.add_argument('--device', help='torch device, e.g. cpu or cuda:1 (default: cuda if '
                                         'available; under torchrun each process takes '
                                         'the GPU of its LOCAL_RANK)')
    parser.add_argument('--log-extreme-examples', type=utils.nonneg_int, default=0,
                        metavar='N',
                        help='log to TensorBoard, per label, split and epoch, the N most '
                             'confident true positives, false positives and false negatives '
                             '(images and a table of paths; default: 0, none)')
    parser.add_argument('--checkpoint-every', type=utils.nonneg_int, default=0, metavar='N',
                        help='also write ckpt_last.pt every N batches, so a kill loses at most '
                             'N batches (default: 0, at the end of each epoch only)')
    parser.add_argument('--recompute-activations', action=argparse.BooleanOptionalAction,
                        default=None,
                        help='keep only each block\'s input for the backward pass and '
                             'recompute the rest there: about 60%% less activation memory, '
                             'a fifth to a third more time per training step; same results '
                             '(default: on with --amp on a CPU, where it costs little, '
                             'else off)')
    parser.add_argument('--resume', metavar='RUN_DIR',
                        help='continue the run in RUN_DIR where it stopped, with its own '
                             'settings')
    parser.add_argument('--add-epochs', type=utils.positive_int, default=None, metavar='K',
                        help='with --resume: train K epochs more than the run planned (the '
                             'cosine schedule is recomputed for the new total)')
    return parser


# flags a resumed run may set: they say how to run, not what to train
RESUME_FLAGS = train_config.RUNTIME_FIELDS | {'resume', 'add_epochs'}


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, set[str]]:
    """(arguments, the destinations of the options given on the command line)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    probe = build_parser()
    for action in probe._actions:
        action.default = argparse.SUPPRESS
        action.required = False
    given = set(vars(probe.parse_known_args(argv)[0]))
    if args.add_epochs is not None and not args.resume:
        parser.error('--add-epochs needs --resume')
    if args.resume:
        fixed = sorted(given - RESUME_FLAGS)
        if fixed:
            names = ', '.join('--' + f.replace('_', '-') for f in fixed)
            parser.error(f'--resume takes every training setting from the run; drop {names} '
                         '(to train longer, use --add-epochs)')
    return args, given


def _absolute(value: bool | str) -> bool | str:
    """A file path as an absolute one (a resumed run may start in another folder)."""
    return os.path.abspath(value) if isinstance(value, str) else value


def new_config(args: argparse.Namespace, world_size: int) -> TrainConfig:
    """A new run's settings; the original recipe's default rate follows the whole
    batch of all ``world_size`` processes (as it followed DataParallel's batch)."""
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    default_lr = train_config.default_lr(args.recipe, args.batch_size * world_size)
    return TrainConfig(
        dataset_dir=args.dataset_dir, cropped_images_dir=args.cropped_images_dir,
        model_name=args.model_name, pretrained=_absolute(args.pretrained),
        finetune=args.finetune, label_weighted=args.label_weighted,
        weight_by_detection_conf=_absolute(args.weight_by_detection_conf),
        multilabel=args.multilabel, recipe=args.recipe, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr if args.lr is not None else default_lr,
        weight_decay=args.weight_decay, seed=seed,
        image_size=args.image_size or models.default_image_size(args.model_name),
        patience=args.patience, amp=args.amp, log_extreme_examples=args.log_extreme_examples,
        num_workers=args.num_workers, device=args.device,
        checkpoint_every=args.checkpoint_every, logdir=args.logdir,
        recompute_activations=args.recompute_activations).checked()


def main(argv: Sequence[str] | None = None) -> int:
    args, given = parse_args(argv)
    utils.setup_logging()
    dist = Dist.from_env(models.pick_device(args.device))
    if not dist.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        if args.resume:
            run_dir = Path(args.resume)
            # the run's own runtime settings unless given again
            config = training.run_config(run_dir).with_runtime(
                dataset_dir=args.dataset_dir, cropped_images_dir=args.cropped_images_dir,
                **{k: getattr(args, k) for k in given & train_config.RUNTIME_FIELDS
                   if k not in ('dataset_dir', 'cropped_images_dir', 'logdir')})
        else:
            config = new_config(args, dist.world_size)
        prepared = training.prepare(config, dist.device, resume=bool(args.resume))
        made = False
        if args.resume:
            training.check_resume_dataset(run_dir, prepared)
            training.load_resumable(run_dir)    # before anything is written there
            if dist.is_main:
                training.clean_stale_temporaries(run_dir)
                training.log_resume(run_dir, args.add_epochs or 0, dist.world_size)
        else:
            run_dir = training.new_run_dir(config.logdir, dist)
            if dist.is_main:
                training.start_run_dir(run_dir, prepared, dist.world_size)
                made = True
        dist.barrier()
        logger.info('run folder: %s', run_dir)
        try:
            trainer = training.Trainer(prepared, run_dir, dist)
            trainer.run(args.add_epochs or 0, resume=bool(args.resume))
        except BaseException:
            # a run that failed before its first checkpoint leaves no folder behind
            if made and not (run_dir / training.CKPT_LAST).exists():
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        table = trainer.finish()
        if table is not None:
            metrics.log_metrics(table)
    finally:
        dist.close()
    return 0


if __name__ == '__main__':
    raise SystemExit(utils.run_cli(main))
