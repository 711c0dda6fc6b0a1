"""``mlb train teacher|student|ddc``: the three training recipes of mlb.train.

    mlb train teacher --matte data/matte --pretrain-seg data/img data/mask \\
        --model unet_r101 --pretrain-steps 2000 --steps 1000 --out runs/teacher.pt
    mlb train student --store labels/ --labels latest --model unet_r18 --steps 2000 \\
        --init runs/teacher.pt --out runs/student.pt
    mlb train ddc --images data/img --masks data/mask --model unet_r18 --steps 2000 \\
        --out runs/ddc.pt

Each writes a checkpoint at --out (every --checkpoint-every steps and at the end) with a
loss-curve PNG next to it; --resume continues an interrupted run from it.

Data-parallel: ``--nproc N`` trains with N processes on this machine through torchrun (gloo
on the CPU, NCCL with one GPU each); ``torchrun --nproc-per-node N -m mlb train ...`` is the
same run, and the form to use across machines (README, "Training on many GPUs").
--batch-size is per process. Learning rates
default per recipe (method.md: pre-training 1e-4, fine-tuning and student 5e-5); short CPU
runs want --lr 3e-4 to 1e-3.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from mlb.cli.fields import threads_option

if TYPE_CHECKING:
    from mlb.data.augment import AugmentConfig
    from mlb.train import TrainConfig, TrainSummary

# Library imports happen where they are used: building the ``mlb`` parser imports every
# subcommand module, and torch + torchvision take seconds to import. Options left out (None)
# take the library's defaults: TrainConfig, LossConfig and AugmentConfig.


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a teacher, a student or a DDC model",
        description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    recipes = parser.add_subparsers(dest="recipe", metavar="RECIPE", required=True)
    _add_teacher(recipes)
    _add_student(recipes)
    _add_ddc(recipes)


def _add_teacher(recipes: argparse._SubParsersAction) -> None:
    parser = recipes.add_parser(
        "teacher", help="pre-train on masks (optional), fine-tune on composites")
    parser.add_argument("--matte", required=True,
                        help="matte corpus folder with fg/, alpha/ and bg/ (mlb synth layout)")
    parser.add_argument("--pretrain-seg", nargs=2, metavar=("IMAGES", "MASKS"), default=None,
                        help="segmentation corpus for mask pre-training (MSE)")
    parser.add_argument("--pretrain-steps", type=int, default=0,
                        help="pre-training steps (needs --pretrain-seg); kept as OUT.pretrain.pt")
    parser.add_argument("--pretrain-lr", type=float, default=None, help="default 1e-4")
    parser.add_argument("--init", default=None,
                        help="start from this checkpoint's weights (e.g. a segmentation model)")
    _add_common(parser)
    parser.set_defaults(func=_run_teacher)


def _add_student(recipes: argparse._SubParsersAction) -> None:
    parser = recipes.add_parser("student", help="train on a cached blended label version")
    parser.add_argument("--store", required=True, help="label store: folder or fsspec URL")
    parser.add_argument("--labels", default="latest", help="label version id (default latest)")
    parser.add_argument("--init", default=None, help="start from this checkpoint's weights")
    parser.add_argument("--weak-aug", action="store_true",
                        help="weak augmentation only (ablation; default strong)")
    ema = parser.add_mutually_exclusive_group()
    ema.add_argument("--ema", dest="ema", action="store_true", default=None,
                     help="keep an EMA copy even if the teacher's architecture differs")
    ema.add_argument("--no-ema", dest="ema", action="store_false",
                     help="no EMA copy (ablation)")
    parser.add_argument("--ddc-weight", type=float, default=0.0,
                        help="add W x (known + 10 x DDC) on the same images (default 0)")
    parser.add_argument("--boundary-target", choices=("band", "blend"), default="band",
                        help="boundary head target: the band 0.05 < blended_alpha < 0.95 "
                             "(default) or the cached blend weight")
    _add_common(parser)
    parser.set_defaults(func=_run_student)


def _add_ddc(recipes: argparse._SubParsersAction) -> None:
    parser = recipes.add_parser("ddc", help="known loss + W x DDC from coarse masks alone")
    parser.add_argument("--images", required=True, help="folder of photos")
    parser.add_argument("--masks", required=True, help="folder of coarse masks (same stems)")
    parser.add_argument("--init", default=None, help="start from this checkpoint's weights")
    parser.add_argument("--strong-aug", action="store_true", help="add colour augmentation")
    parser.add_argument("--known-loss", choices=("l1", "mse"), default="l1",
                        help="norm of the known-region loss: l1 (default, the paper's) or mse "
                             "(keeps a soft edge where the mask's edge is uncertain)")
    parser.add_argument("--consistency-weight", type=float, default=10.0,
                        help="weight of the DDC term against the known loss (default 10)")
    _add_common(parser)
    parser.set_defaults(func=_run_ddc)


# TrainConfig fields the CLI sets only when given (None: TrainConfig's default).
TRAIN_DEFAULTED = ("batch_size", "weight_decay", "warmup_steps", "seed", "device",
                   "num_workers", "checkpoint_every", "log_every")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="network: a registered name (e.g. unet_r18_w05, modnet, "
                             "unet_mobilenetv3), an 'mlb.models' entry point, or a "
                             "'module:factory' plugin spec")
    parser.add_argument("--pretrained-encoder", default=None, metavar="imagenet|PATH",
                        help="encoder weights: 'imagenet' (the library's cache; offline, a "
                             "cached copy only) or a local state_dict file")
    parser.add_argument("--steps", type=int, required=True, help="optimiser steps")
    parser.add_argument("--out", required=True, help="checkpoint path (.pt)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate")
    parser.add_argument("--weight-decay", type=float, default=None)
    parser.add_argument("--warmup-steps", type=int, default=None)
    parser.add_argument("--grad-clip", type=float, default=None,
                        help="max gradient norm (0: no clipping)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument("--no-amp", dest="amp", action="store_false",
                        help="float32 on CUDA too (no bf16 autocast)")
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--checkpoint-every", type=int, default=None)
    parser.add_argument("--log-every", type=int, default=None)
    parser.add_argument("--ema-momentum", type=float, default=None,
                        help="keep an EMA copy with this per-step momentum (e.g. 0.999)")
    parser.add_argument("--nproc", type=int, default=1,
                        help="data-parallel processes on this machine, started by torchrun "
                             "(default 1: train in this process)")
    parser.add_argument("--sync-bn", action="store_true",
                        help="BatchNorm statistics over the global batch of all processes")
    _add_augment(parser)
    parser.add_argument("--boundary-weight", type=float, default=None)
    restart = parser.add_mutually_exclusive_group()
    restart.add_argument("--resume", action="store_true",
                         help="continue the run saved at --out (a finished one is kept)")
    restart.add_argument("--overwrite", action="store_true", help="start again over --out")
    parser.add_argument("--stop-at-step", type=int, default=None,
                        help="stop (and save) at this step; --resume continues later")
    threads_option(parser)
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar and no progress lines")


def _add_augment(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--crop-size", type=int, nargs="+", default=None,
                        help="square crop sizes, one drawn per sample (default: "
                             "AugmentConfig.crop_sizes)")
    parser.add_argument("--output-size", type=int, default=None,
                        help="crops are resized to this (default: the largest crop size)")
    parser.add_argument("--aug-short-side", type=int, default=None,
                        help="short side before random scaling (0: keep the stored size; "
                             "default: AugmentConfig.short_side)")


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    from mlb.train import TrainConfig

    options = {name: getattr(args, name) for name in TRAIN_DEFAULTED
               if getattr(args, name) is not None}
    if args.grad_clip is not None:
        options["grad_clip"] = args.grad_clip or None  # 0: no clipping
    return TrainConfig(steps=args.steps, lr=args.lr, amp=args.amp,
                       ema_momentum=args.ema_momentum, sync_bn=args.sync_bn, **options)


def augment_from_args(args: argparse.Namespace) -> AugmentConfig:
    from mlb.data.augment import AugmentConfig

    crops = tuple(args.crop_size) if args.crop_size else AugmentConfig().crop_sizes
    short_side = {} if args.aug_short_side is None else {
        "short_side": args.aug_short_side or None}  # 0: keep the stored size
    return AugmentConfig(crop_sizes=crops, output_size=args.output_size or max(crops),
                         **short_side)


def _shared(args: argparse.Namespace) -> dict:
    from mlb.losses import LossConfig

    loss = {} if args.boundary_weight is None else {"boundary_weight": args.boundary_weight}
    model = args.model if args.pretrained_encoder is None else {
        "name": args.model, "options": {"pretrained_encoder": args.pretrained_encoder}}
    return {"model": model, "out": args.out, "train": train_config_from_args(args),
            "loss": LossConfig(**loss), "augment": augment_from_args(args)}


def _options(args: argparse.Namespace) -> dict:
    return {"resume": args.resume, "overwrite": args.overwrite,
            "stop_at_step": args.stop_at_step, "progress": not args.quiet}


def _run_teacher(args: argparse.Namespace) -> int:
    from mlb.train import TeacherRequest, train_teacher

    images, masks = args.pretrain_seg or (None, None)
    request = TeacherRequest(matte=args.matte, pretrain_images=images, pretrain_masks=masks,
                             pretrain_steps=args.pretrain_steps, pretrain_lr=args.pretrain_lr,
                             init=args.init, **_shared(args))
    return _train("teacher", train_teacher, request, args)


def _run_student(args: argparse.Namespace) -> int:
    from mlb.train import StudentRequest, train_student

    request = StudentRequest(store=args.store, labels=args.labels, init=args.init,
                             strong_augment=not args.weak_aug, ema=args.ema,
                             ddc_weight=args.ddc_weight,
                             boundary_target=args.boundary_target, **_shared(args))
    return _train("student", train_student, request, args)


def _run_ddc(args: argparse.Namespace) -> int:
    from mlb.train import DdcRequest, train_ddc

    shared = _shared(args)
    shared["loss"] = type(shared["loss"])(**{  # validated: a negative weight is refused
        **shared["loss"].model_dump(), "ddc_known": args.known_loss,
        "ddc_weight": args.consistency_weight})
    request = DdcRequest(images=args.images, masks=args.masks, init=args.init,
                         strong_augment=args.strong_aug, **shared)
    return _train("ddc", train_ddc, request, args)


def _train(recipe: str, train: Callable[..., TrainSummary], request: object,
           args: argparse.Namespace) -> int:
    """Train in this process, or with ``--nproc`` processes under torchrun."""
    if args.nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {args.nproc}")
    if args.nproc == 1:
        return _report(train(request, **_options(args)))
    from mlb.train.launch import LaunchConfig, launch_training

    options = _options(args)
    del options["progress"]
    summary = launch_training(recipe, request, LaunchConfig(nproc=args.nproc),  # type: ignore[arg-type]
                              on_output=lambda line: print(line, file=sys.stderr), **options)
    return _report(summary)


def _report(summary: TrainSummary) -> int:
    from mlb.train.distributed import world_from_environment

    if not world_from_environment().is_main:
        return 0  # under torchrun, rank 0 reports for the job
    state = "done" if summary.finished else "stopped"
    labels = f", labels {summary.label_version}" if summary.label_version else ""
    ranks = (f", {summary.world_size} processes (global batch {summary.global_batch})"
             if summary.world_size > 1 else "")
    print(f"{summary.kind} {state} at step {summary.steps}: loss {summary.final_loss:.4f}, "
          f"{summary.samples_per_second:.1f} samples/s{ranks}{labels} -> {summary.checkpoint}")
    if summary.curve:
        print(f"loss curve: {summary.curve}", file=sys.stderr)
    return 0
