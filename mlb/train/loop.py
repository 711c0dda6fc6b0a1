"""The training loop shared by every recipe: ``fit`` is the one entry point.

Shape of torchvision's reference ``train.py``: small functions (``build_optimizer``,
``learning_rate``, ``train_one_step``) composed by ``fit``. The model returns predictions; the
recipe's ``loss_function(prediction, batch)`` turns them into named terms with a ``total``.

Reproducibility: on the CPU a run is a pure function of its request. Weights are initialised
by the recipe after ``torch.manual_seed(seed)``, samples come from ``mlb.train.sampling`` (a
function of seed and step), the learning rate is a function of the step, and the checkpoint
carries weights, optimiser moments, EMA copy, step and the per-step loss history, so a resumed
run ends with the same weights as an uninterrupted one.

Under torchrun the same ``fit`` trains data-parallel (:mod:`mlb.train.distributed`): each rank
reads its share of the step's global batch, DistributedDataParallel averages the gradients,
rank 0 alone shows progress and writes the checkpoint, which records the world size and the
global batch (``config.batch_size`` is per process, as torchrun users expect).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Required, TypedDict, cast

import torch
from pydantic import BaseModel, TypeAdapter
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from mlb import __version__
from mlb.checkpoint import Checkpoint, load_weights, read_checkpoint, save_checkpoint
from mlb.device import resolve_device
from mlb.models import MattingOutput, ModelConfig, build_model_from_config
from mlb.train.config import RunRequest, TrainConfig, TrainSummary
from mlb.train.curves import curve_path, save_loss_curve
from mlb.train.distributed import (
    World,
    barrier,
    current_world,
    data_parallel,
    mean_over_ranks,
    process_device,
    synchronise_batch_norm,
)
from mlb.train.ema import make_ema, update_ema
from mlb.train.lineage import record_training
from mlb.train.prefetch import prefetched
from mlb.train.sampling import SeededSamples, StepSampler

__all__ = [
    "Batch",
    "LossFunction",
    "RunRecord",
    "batches",
    "build_optimizer",
    "fit",
    "initial_model",
    "learning_rate",
    "train_one_step",
    "warmup_steps",
]

# Progress lines when no bar is shown (output to a file or a pipe, or ``progress=False`` as
# in the flows): the CLI prints them on stderr, the flows forward logger ``mlb`` to Prefect.
logger = logging.getLogger(__name__.rsplit(".", 1)[0])  # "mlb.train"

class Batch(TypedDict, total=False):
    """A collated training batch, on the training device; which labels it holds is the
    recipe's: teacher (``alpha``, or ``coarse_mask`` in pre-training), student
    (``coarse_mask``, ``blended_alpha``, ``blended_boundary``), DDC (``coarse_mask``,
    ``trimap``). Shapes follow the project's conventions: ``(B, 3, H, W)`` image,
    ``(B, 1, H, W)`` maps."""

    image: Required[Tensor]
    sample_id: list[str]
    alpha: Tensor
    coarse_mask: Tensor
    blended_alpha: Tensor
    blended_boundary: Tensor
    trimap: Tensor


LossFunction = Callable[[MattingOutput, Batch], dict[str, Tensor]]


@dataclass(frozen=True)
class RunRecord:
    """What a run writes besides its weights: where, which recipe, and its full request.

    ``request`` is ``model_dump(mode="json")`` of the recipe's request: it is stored in the
    checkpoint and must be equal when the run is resumed. ``lr`` is the peak learning rate.
    """

    out: Path
    kind: str
    model_config: ModelConfig
    request: dict[str, Any]
    lr: float
    label_version: str | None = None
    ema_momentum: float | None = None
    """Keep an EMA copy (saved as ``ema_state_dict``) with this per-step momentum."""
    lineage: dict[str, Any] = field(default_factory=dict)
    """The checkpoint's ``lineage`` (``mlb.train.lineage.run_lineage``)."""
    request_defaults: dict[str, Any] = field(default_factory=dict)
    """:func:`field_defaults` of the request's type: a checkpoint written before a field
    was added resumes when the run keeps that field at its default."""
    not_compared: frozenset[str] = frozenset()
    """Dotted request fields (``train.lr``) this run never reads: a resume does not compare
    them (a teacher's mask pre-training ignores its fine-tuning settings)."""


def field_defaults(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON defaults of ``model``'s fields, nested into required sub-models (a required
    ``train: TrainConfig`` gives TrainConfig's defaults)."""
    defaults: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if not info.is_required():
            value = info.get_default(call_default_factory=True)
            defaults[name] = (value.model_dump(mode="json") if isinstance(value, BaseModel)
                              else TypeAdapter(Any).dump_python(value, mode="json"))
        elif isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            defaults[name] = field_defaults(info.annotation)
    return defaults


def _with_defaults(stored: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``stored`` with the fields it lacks taken from ``defaults``, at every depth."""
    filled = dict(stored)
    for key, default in defaults.items():
        if key not in filled:
            filled[key] = default
        elif isinstance(default, dict) and isinstance(filled[key], dict):
            filled[key] = _with_defaults(filled[key], default)
    return filled


@dataclass
class _State:
    """The mutable part of a run, restored from a checkpoint on resume."""

    step: int
    history: dict[str, list[float]]


def learning_rate(step: int, *, peak: float, warmup_steps: int, total_steps: int) -> float:
    """Rate of the step with 0-based index ``step``: linear warmup, then cosine decay to 0.

    Warmup goes from ``peak / (warmup + 1)`` up to ``peak`` (never 0, so step 0 learns);
    the cosine then runs over the remaining steps and reaches 0 after the last one.
    """
    if step < warmup_steps:
        return peak * (step + 1) / (warmup_steps + 1)
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_steps(config: TrainConfig) -> int:
    """``config.warmup_steps``, capped at a tenth of the run so that short runs still decay."""
    return min(config.warmup_steps, config.steps // 10)


def build_optimizer(model: nn.Module, *, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with decay on conv / linear weights only: norms and biases are not shrunk
    (torchvision's ``norm_weight_decay`` practice; decaying BN scales hurts small nets)."""
    decayed, plain = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decayed if parameter.ndim > 1 else plain).append(parameter)
    groups = [
        {"params": decayed, "weight_decay": weight_decay},
        {"params": plain, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr)


def _to_device(batch: Batch, device: torch.device, *, channels_last: bool) -> Batch:
    """Tensors to ``device``; the network's input in channels-last when asked (labels stay
    contiguous: the losses reshape them)."""
    moved = cast(Batch, {key: value.to(device, non_blocking=True)
                         if isinstance(value, Tensor) else value for key, value in batch.items()})
    if channels_last:
        moved["image"] = moved["image"].contiguous(memory_format=torch.channels_last)
    return moved


def train_one_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    loss_function: LossFunction,
    *,
    lr: float,
    config: TrainConfig,
    device: torch.device,
) -> dict[str, float]:
    """One optimiser step on ``batch`` (``"image"`` ``(B, 3, H, W)`` plus the recipe's labels).

    The forward pass runs under bf16 autocast on CUDA (``config.amp``); the loss is computed in
    float32 outside it. Returns the loss terms and the gradient norm as floats.
    """
    use_cuda = device.type == "cuda"
    batch = _to_device(batch, device, channels_last=use_cuda and config.channels_last)
    for group in optimizer.param_groups:
        group["lr"] = lr
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_cuda and config.amp):
        prediction = model(batch["image"])
    prediction = MattingOutput(*(output.float() for output in prediction))
    terms = loss_function(prediction, batch)
    optimizer.zero_grad(set_to_none=True)
    terms["total"].backward()
    grad_norm = _clip_gradients(model, config.grad_clip)
    optimizer.step()
    values = {name: float(value.detach()) for name, value in terms.items()}
    values["grad_norm"] = grad_norm
    return values


def _clip_gradients(model: nn.Module, grad_clip: float | None) -> float:
    parameters = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(parameters, grad_clip or float("inf"))
    return float(norm)


def _check_finite(values: dict[str, float], step: int) -> None:
    if not math.isfinite(values["total"]):
        raise ValueError(
            f"training diverged: loss is {values['total']} at step {step} "
            f"(terms {values}); lower the learning rate or check the labels"
        )


def _start_state(
    run: RunRecord,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: nn.Module | None,
    *,
    resume: bool,
    overwrite: bool,
    global_batch: int,
) -> _State:
    """A fresh state, or the one saved at ``run.out`` when resuming (same request and global
    batch only)."""
    if run.out.is_dir():
        raise ValueError(f"{run.out} is a folder; --out must name a checkpoint file "
                         f"(e.g. {run.out / 'student.pt'})")
    if not run.out.exists() or overwrite:
        return _State(step=0, history={})
    if not resume:
        raise ValueError(
            f"{run.out} exists; pass resume to continue it or overwrite to start again"
        )
    checkpoint = read_checkpoint(run.out)
    _check_same_run(checkpoint, run)
    _check_same_global_batch(checkpoint, run, global_batch)
    model.load_state_dict(checkpoint.state_dict)
    if checkpoint.optimizer_state is not None:
        optimizer.load_state_dict(checkpoint.optimizer_state)
    if ema is not None and checkpoint.ema_state_dict is not None:
        ema.load_state_dict(checkpoint.ema_state_dict)
    history = {name: list(values) for name, values in checkpoint.history.items()}
    return _State(step=checkpoint.step, history=history)


# TrainConfig fields that decide how a run is carried out, not what it computes (samples
# are a pure function of seed and step): a resume may change them.
RUN_CONTROL_FIELDS = frozenset({"checkpoint_every", "log_every", "num_workers", "prefetch"})


def _outcome(request: dict[str, Any], not_compared: frozenset[str] = frozenset()
             ) -> dict[str, Any]:
    """``request`` without the run-control fields of its ``train`` config and without the
    dotted fields ``not_compared``.

    ``batch_size`` is per process: how many processes share a step is checked on the global
    batch instead (:func:`_check_same_global_batch`).
    """
    dropped = not_compared | {f"train.{key}" for key in RUN_CONTROL_FIELDS | {"batch_size"}}
    return _without(request, dropped)


def _without(record: dict[str, Any], dotted: frozenset[str], prefix: str = "") -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if name in dotted:
            continue
        kept[key] = (_without(value, dotted, f"{name}.") if isinstance(value, dict)
                     else value)
    return kept


def _check_same_run(checkpoint: Checkpoint, run: RunRecord) -> None:
    """Resuming under another request would silently mix two runs: refuse it."""
    # Fields added to a request type later are absent from older checkpoints: their runs had
    # the defaults, so such a checkpoint still resumes when the field is left at its default.
    stored = _outcome(_with_defaults(checkpoint.train_config.get("request", {}),
                                     run.request_defaults), run.not_compared)
    wanted = _outcome(_with_defaults(run.request, run.request_defaults), run.not_compared)
    if checkpoint.kind != run.kind or stored != wanted:
        kinds = ("" if checkpoint.kind == run.kind
                 else f"kind {checkpoint.kind!r} vs {run.kind!r}; ")
        raise ValueError(
            f"cannot resume {run.out}: it was written by another run ({kinds}differing "
            f"request fields: {', '.join(_differing(stored, wanted)) or 'none'}); start again "
            "over it (mlb train --overwrite, or remove the file) or write elsewhere (another "
            "--out or --work)"
        )


def _differing(stored: Any, wanted: Any, prefix: str = "") -> list[str]:
    """Dotted names of the fields that differ, down to the innermost dict (``loss.ddc_known``)."""
    if not (isinstance(stored, dict) and isinstance(wanted, dict)):
        return [prefix] if stored != wanted and prefix else []
    return [name for key in sorted(set(stored) | set(wanted))
            for name in _differing(stored.get(key), wanted.get(key),
                                   f"{prefix}.{key}" if prefix else key)]


def _check_same_global_batch(checkpoint: Checkpoint, run: RunRecord, global_batch: int) -> None:
    """Samples are a function of (seed, step, global batch): another number of processes may
    continue a run only with the same global batch (e.g. 2 x 4 after 1 x 8)."""
    stored = checkpoint.train_config.get("global_batch")
    if stored is None:  # written before data-parallel training: one process
        stored = checkpoint.train_config.get("request", {}).get("train", {}).get("batch_size")
    if stored != global_batch:
        world = checkpoint.train_config.get("world_size", 1)
        raise ValueError(
            f"cannot resume {run.out}: it was trained with a global batch of {stored} "
            f"({world} process(es)); this run's is {global_batch}; use a --batch-size and "
            f"number of processes whose product is {stored}, or pass overwrite to start again"
        )


def _record(
    history: dict[str, list[float]], step: int, lr: float, values: dict[str, float]
) -> None:
    for name, value in {"step": float(step), "lr": lr, **values}.items():
        history.setdefault(name, []).append(value)


def _recent_loss(history: dict[str, list[float]], window: int) -> float:
    totals = history.get("total", [])
    recent = totals[-window:]
    return sum(recent) / len(recent) if recent else float("nan")


def _save(
    run: RunRecord,
    state: _State,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: nn.Module | None,
    *,
    config: TrainConfig,
    metrics: dict[str, float],
    world: World,
) -> None:
    if not world.is_main:
        return
    checkpoint = Checkpoint(
        model_config=run.model_config,
        state_dict=_cpu_state(model),
        kind=run.kind,
        ema_state_dict=None if ema is None else _cpu_state(ema),
        optimizer_state=optimizer.state_dict(),
        step=state.step,
        train_config={"request": run.request, "lr": run.lr, "ema_momentum": run.ema_momentum,
                      "mlb_version": __version__, "world_size": world.size,
                      "global_batch": config.batch_size * world.size},
        label_version=run.label_version,
        metrics=metrics,
        history=state.history,
        lineage=run.lineage,
    )
    save_checkpoint(checkpoint, run.out)
    save_loss_curve(
        {k: v for k, v in state.history.items() if k != "grad_norm"},
        curve_path(run.out),
        title=f"{run.kind} {run.model_config.name} ({state.step}/{config.steps} steps)",
    )


def _cpu_state(model: nn.Module) -> dict[str, Tensor]:
    # Plain contiguous CPU tensors: the file loads anywhere and has no channels-last strides.
    return {name: value.detach().cpu().contiguous() for name, value in model.state_dict().items()}


def batches(dataset: Dataset, config: TrainConfig, *, start: int, stop: int,
            device: torch.device, world: World | None = None) -> Iterator[Batch]:
    """The batches of steps ``start .. stop - 1``: seeded per (step, slot), read by
    ``config.num_workers`` workers and ``config.prefetch`` batches ahead; in a data-parallel
    run this rank's share of each step."""
    world = world or World()
    sampler = StepSampler(
        len(dataset), batch_size=config.batch_size, seed=config.seed, start=start, stop=stop,
        ranks=world.size, rank=world.rank,
    )
    loader = DataLoader(
        SeededSamples(dataset, seed=config.seed),
        batch_sampler=sampler,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
    )
    return prefetched(loader, config.prefetch)


def initial_model(request: RunRequest) -> nn.Module:
    """The network a recipe starts from: ``request.init``'s weights, or fresh weights drawn
    under ``request.train.seed`` (seeded first, so both starts are reproducible)."""
    torch.manual_seed(request.train.seed)
    model = build_model_from_config(request.model)
    if request.init is not None:
        load_weights(model, request.init, model_config=request.model)
    return model


def fit(
    model: nn.Module,
    dataset: Dataset,
    loss_function: LossFunction,
    *,
    config: TrainConfig,
    run: RunRecord,
    resume: bool = False,
    overwrite: bool = False,
    stop_at_step: int | None = None,
    progress: bool = True,
) -> TrainSummary:
    """Train ``model`` for ``config.steps`` steps and save the checkpoint at ``run.out``.

    Args:
        model: the network, freshly initialised or loaded; moved to the run's device.
        dataset: map-style, items are dicts with ``"image"`` ``(3, h, w)`` and the labels
            ``loss_function`` reads; every item of a batch must have one size.
        loss_function: ``(prediction, batch) -> {"total", ...}`` scalar tensors.
        config: the loop's settings.
        run: output path, recipe name, model config, request, peak lr and EMA momentum.
        resume: continue from the checkpoint at ``run.out`` when it exists (it must come from
            the same request); a finished one is returned as it is.
        overwrite: start from scratch even when ``run.out`` exists (else ValueError).
        stop_at_step: stop (and save) once this step is reached, before ``config.steps``;
            a later call with ``resume`` continues (time-limited job slots, tests).
        progress: show a tqdm bar (also off when stderr is not a terminal).

    Returns:
        The run's :class:`TrainSummary`; the checkpoint is saved every
        ``config.checkpoint_every`` steps and at the end, with a loss-curve PNG next to it.
    """
    world = current_world()
    device = process_device(resolve_device(config.device), world)
    model = _place(model, device, channels_last=config.channels_last)
    if config.sync_bn and world.distributed:
        model = synchronise_batch_norm(model, device)
    optimizer = build_optimizer(model, lr=run.lr, weight_decay=config.weight_decay)
    ema = make_ema(model) if run.ema_momentum is not None else None
    state = _start_state(run, model, optimizer, ema, resume=resume, overwrite=overwrite,
                         global_batch=config.batch_size * world.size)
    stop = config.steps if stop_at_step is None else min(config.steps, stop_at_step)
    if state.step >= stop:
        return _summary(run, state, config, seconds=0.0, samples=0, world=world)
    if world.is_main and "label_version" in run.lineage:
        # Beside the label version, once the run is known to go ahead (a refused resume or
        # overwrite records nothing): one record per checkpoint, not one per process.
        record_training(run.lineage, checkpoint=run.out, kind=run.kind,
                        model=run.model_config.name, steps=config.steps)
    model.train()
    trained = data_parallel(model, world, device)
    started, samples, first_step = time.perf_counter(), 0, state.step
    bar = tqdm(total=config.steps, initial=state.step, desc=run.kind, unit="step",
               disable=None if progress and world.is_main else True, dynamic_ncols=True)
    with bar, closing(batches(dataset, config, start=state.step, stop=stop,
                              device=device, world=world)) as stream:
        for batch in stream:
            lr = learning_rate(state.step, peak=run.lr, warmup_steps=warmup_steps(config),
                               total_steps=config.steps)
            values = train_one_step(trained, optimizer, batch, loss_function, lr=lr,
                                    config=config, device=device)
            values = mean_over_ranks(values, world)
            _check_finite(values, state.step)
            if ema is not None:
                update_ema(ema, model, momentum=run.ema_momentum)
            state.step += 1
            samples += batch["image"].shape[0] * world.size
            _record(state.history, state.step, lr, values)
            bar.update(1)
            if state.step % config.log_every == 0 or state.step == stop:
                elapsed = time.perf_counter() - started
                _show(bar, state, config, samples_per_second=samples / elapsed)
                if bar.disable and world.is_main:
                    _log_progress(run, state, config, lr=lr, samples_per_second=samples / elapsed,
                                  seconds_left=elapsed / (state.step - first_step)
                                  * (config.steps - state.step))
            if _periodic_save_due(state.step, stop, config.checkpoint_every):
                _save(run, state, model, optimizer, ema, config=config, metrics={},
                      world=world)
    seconds = time.perf_counter() - started
    metrics = {"final_loss": _recent_loss(state.history, config.log_every),
               "samples_per_second": samples / seconds}
    _save(run, state, model, optimizer, ema, config=config, metrics=metrics, world=world)
    barrier(world)  # the checkpoint is complete before any rank goes on to read it
    return _summary(run, state, config, seconds=seconds, samples=samples, world=world)


def _place(model: nn.Module, device: torch.device, *, channels_last: bool) -> nn.Module:
    model = model.to(device)
    if device.type == "cuda":
        # Crops are resized to one output size, so cuDNN's autotuner pays off after a step.
        torch.backends.cudnn.benchmark = True
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
    return model


def _show(bar: tqdm, state: _State, config: TrainConfig, *, samples_per_second: float) -> None:
    loss = _recent_loss(state.history, config.log_every)
    bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{samples_per_second:.1f}")


def _log_progress(run: RunRecord, state: _State, config: TrainConfig, *, lr: float,
                  samples_per_second: float, seconds_left: float) -> None:
    loss = _recent_loss(state.history, config.log_every)
    logger.info("%s step %d/%d: loss %.4f, lr %.2e, %.1f samples/s, %.0f s left -> %s",
                run.kind, state.step, config.steps, loss, lr, samples_per_second, seconds_left,
                run.out)


def _periodic_save_due(step: int, stop: int, every: int) -> bool:
    # The last step of the call is saved anyway, with its metrics.
    return every > 0 and step % every == 0 and step < stop


def _summary(run: RunRecord, state: _State, config: TrainConfig, *, seconds: float,
             samples: int, world: World) -> TrainSummary:
    return TrainSummary(
        checkpoint=str(run.out),
        kind=run.kind,
        steps=state.step,
        finished=state.step >= config.steps,
        final_loss=_recent_loss(state.history, config.log_every),
        seconds=seconds,
        samples_per_second=samples / seconds if seconds > 0 else 0.0,
        label_version=run.label_version,
        curve=str(curve_path(run.out)) if curve_path(run.out).exists() else None,
        world_size=world.size,
        global_batch=config.batch_size * world.size,
    )
