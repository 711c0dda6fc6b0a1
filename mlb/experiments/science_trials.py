"""Small controlled trials behind docs/science-notes.md (issue 15), rerunnable.

    python -m mlb.experiments.science_trials seg --preset cpu --steps 300
    python -m mlb.experiments.science_trials teacher --preset cpu --steps 300 [--photographic] \
        [--alpha-norm mse]
    python -m mlb.experiments.science_trials ddc --preset cpu --steps 200 --window 11 \
        --kernels 1 29 [--weight 10] [--known mse] [--lr 3e-4]
    python -m mlb.experiments.science_trials trimaps --preset cpu
    python -m mlb.experiments.science_trials seg --preset cpu256 --work W --steps 200 \
        --model unet_r18_w05 --crop 96 --crop-sizes 96 120 --backgrounds patterns

All trials share one segmentation-only teacher (``seg``: mask pre-training with the preset's
recipe, ``<work>/trial/base.pretrain.pt``) and the preset's built-in corpora, train one
variant from it with ``--threads`` (default 1) and print its scores on the natural validation
set (and, for teachers, on composite validation) as one JSON line. ``--model``, ``--crop``,
``--crop-sizes``, ``--backgrounds`` and ``--short-side`` replace the preset's teacher
network, crop, crop sides, composite background pool and scoring short side (give each
setting its own ``--work``: the base and the data live there); ``--lr`` the peak learning
rate of the trial's own training.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mlb.cli.errors import error_line
from mlb.data.imageio import read_alpha, read_mask
from mlb.data.trimap import erode_trimap
from mlb.experiments.reproduce import PRESETS, ReproduceConfig, _score
from mlb.experiments.reproduce_data import Corpora, ReproduceData, prepare_corpora
from mlb.losses import LossConfig
from mlb.train import DdcRequest, TeacherRequest, train_ddc, train_teacher
from mlb.train.teacher import pretrain_path

__all__ = ["ddc_trial", "seg_teacher", "teacher_trial", "trial_config", "trimap_errors"]


def _data(config: ReproduceConfig) -> Corpora:
    """The preset's built-in corpora (generated once under ``<work>/data``)."""
    return prepare_corpora(ReproduceData(), config.built_in(), Path(config.work) / "data",
                           composite_validation=True)


def seg_teacher(config: ReproduceConfig, steps: int, *, lr: float | None = None) -> Path:
    """The shared segmentation-only teacher: ``steps`` of mask pre-training (resumable) at
    the peak rate ``lr`` (None: the preset's ``lr``)."""
    data = _data(config)
    out = Path(config.work) / "trial" / "base.pt"
    train_teacher(TeacherRequest(
        matte=data.matte, pretrain_images=data.natural_images,
        pretrain_masks=data.natural_masks, model=config.teacher_model, out=str(out),
        pretrain_steps=steps, pretrain_lr=config.lr if lr is None else lr, train=config.train(1, 0),
        augment=config.augment, loss=config.teacher_loss,
    ), resume=True, progress=False, stop_at_step=steps)
    return pretrain_path(out)


def _base(config: ReproduceConfig) -> Path:
    """The shared segmentation-only teacher, which ``seg`` trains first."""
    base = pretrain_path(Path(config.work) / "trial" / "base.pt")
    if not base.is_file():
        raise ValueError(f"{base} does not exist: run the 'seg' trial first with the same "
                         "--preset and --work")
    return base


def teacher_trial(config: ReproduceConfig, steps: int, *, photographic: bool,
                  lr: float | None = None) -> dict:
    """Fine-tune the shared teacher on composites (plain or photographic) for ``steps``, with
    the alpha term of its loss as ``config.teacher_alpha_norm`` says, at the peak rate ``lr``
    (None: the preset's ``finetune_lr``)."""
    base = _base(config)  # before the data: a missing base is found in a second
    data = _data(config)
    name = "photographic" if photographic else "plain"
    name += "" if config.teacher_alpha_norm == "l1" else f"-{config.teacher_alpha_norm}"
    name += "" if lr is None else f"-lr{lr:g}"
    checkpoint = Path(config.work) / "trial" / f"teacher-{name}-{steps}.pt"
    train_teacher(TeacherRequest(
        matte=data.matte, model=config.teacher_model, out=str(checkpoint),
        init=str(base), augment=config.augment,
        train=config.train(steps, 0, lr=config.finetune_lr if lr is None else lr),
        loss=config.teacher_loss,
        photographic_composites=photographic,
    ), resume=True, progress=False)
    return {"natural": _score(config, data, checkpoint),
            "composite": _score(config, data, checkpoint, domain="composite")}


def ddc_trial(config: ReproduceConfig, steps: int, *, window: int, kernels: tuple[int, int],
              weight: float, known: str = "l1", lr: float | None = None) -> dict:
    """DDC-only training from the shared teacher with one window / kernels / weight / known
    norm / peak learning rate (None: the preset's students' rate)."""
    base = _base(config)
    data = _data(config)
    name = f"ddc-w{window}-k{kernels[0]}-{kernels[1]}-x{weight:g}-{steps}"
    name += "" if known == "l1" else f"-{known}"
    name += "" if lr is None else f"-lr{lr:g}"
    checkpoint = Path(config.work) / "trial" / f"{name}.pt"
    train_ddc(DdcRequest(
        images=data.natural_images, masks=data.natural_masks,
        model=config.teacher_model, out=str(checkpoint), init=str(base),
        train=config.train(steps, 0, lr=lr), augment=config.augment,
        trimap_kernel_range=kernels,
        loss=LossConfig(ddc_weight=weight, ddc_window=window, ddc_neighbours=window,
                        ddc_known=known),
    ), resume=True, progress=False)
    return {"natural": _score(config, data, checkpoint)}


def trimap_errors(config: ReproduceConfig, kernels: tuple[int, ...] = (1, 3, 5, 9, 15, 29),
                  count: int = 64) -> dict[int, dict[str, float]]:
    """Per kernel size: the share of unknown pixels, and of known pixels the true alpha
    contradicts (``|alpha - trimap| > 0.5``), over the natural corpus's first ``count``."""
    data = _data(config)
    masks_dir, alphas_dir = Path(data.natural_masks), Path(data.natural_alphas or "")
    stems = sorted(path.stem for path in masks_dir.iterdir())[:count]
    masks = [read_mask(masks_dir / f"{stem}.png") for stem in stems]
    alphas = [read_alpha(alphas_dir / f"{stem}.png") for stem in stems]
    result = {}
    for kernel in kernels:
        unknown = wrong = known = total = 0
        for mask, alpha in zip(masks, alphas, strict=True):
            trimap = erode_trimap(mask, foreground_kernel=kernel, background_kernel=kernel)
            is_known = trimap != 0.5
            unknown += int((~is_known).sum())
            total += trimap.size
            known += int(is_known.sum())
            wrong += int((np.abs(alpha - trimap) > 0.5)[is_known].sum())
        result[kernel] = {"unknown": unknown / total, "wrong_known": wrong / max(known, 1)}
    return result


def _positive(kind: type) -> Callable[[str], float]:
    """An argparse type: a finite number above 0 (argparse prints a bad one as one line)."""
    def parse(text: str) -> float:
        value = kind(text)
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mlb.experiments.science_trials")
    parser.add_argument("trial", choices=["seg", "teacher", "ddc", "trimaps"])
    parser.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    parser.add_argument("--work", default=".mlb-work/science")
    parser.add_argument("--steps", type=_positive(int), default=300)
    parser.add_argument("--photographic", action="store_true")
    parser.add_argument("--window", type=int, default=11)
    parser.add_argument("--kernels", type=int, nargs=2, default=(1, 29))
    parser.add_argument("--weight", type=float, default=10.0)
    parser.add_argument("--known", choices=["l1", "mse"], default="l1")
    parser.add_argument("--alpha-norm", choices=["l1", "mse"], default=None,
                        help="the teacher fine-tuning's alpha term (preset's)")
    parser.add_argument("--lr", type=_positive(float), default=None)
    parser.add_argument("--threads", type=_positive(int), default=1)
    parser.add_argument("--model", default=None, help="the teacher network (preset's)")
    parser.add_argument("--crop", type=int, default=None)
    parser.add_argument("--crop-sizes", type=int, nargs="+", default=None)
    parser.add_argument("--backgrounds", choices=["patterns", "scenes"], default=None)
    parser.add_argument("--short-side", type=_positive(int), default=None,
                        help="inference short side of the scores (preset's)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    try:
        result = _run(args, trial_config(args))
    except ValueError as error:  # a missing base, a bad setting: one line, no traceback
        parser.exit(2, f"{parser.prog}: error: {error_line(error)}\n")
    print(json.dumps({"trial": args.trial, **vars(args), "result": result,
                      "seconds": round(time.perf_counter() - started, 1)}))


def trial_config(args: argparse.Namespace) -> ReproduceConfig:
    """The preset with the trial's replacements, validated (pydantic's ValidationError is a
    ValueError: ``main`` prints a bad value as one line)."""
    replaced = {"work": args.work, "teacher_model": args.model, "crop": args.crop,
                "crop_sizes": args.crop_sizes, "composite_backgrounds": args.backgrounds,
                "inference_short_side": args.short_side,
                "teacher_alpha_norm": args.alpha_norm}
    fields = PRESETS[args.preset].model_dump()
    fields.update({key: value for key, value in replaced.items() if value is not None})
    return ReproduceConfig.model_validate(fields)  # an unknown network too: before any data


def _run(args: argparse.Namespace, config: ReproduceConfig) -> dict:
    if args.trial == "seg":
        checkpoint = seg_teacher(config, args.steps, lr=args.lr)
        result = {"natural": _score(config, _data(config), checkpoint)}
    elif args.trial == "teacher":
        result = teacher_trial(config, args.steps, photographic=args.photographic,
                               lr=args.lr)
    elif args.trial == "ddc":
        result = ddc_trial(config, args.steps, window=args.window,
                           kernels=tuple(args.kernels), weight=args.weight,
                           known=args.known, lr=args.lr)
    else:
        result = trimap_errors(config)
    return result


if __name__ == "__main__":
    main()
