"""Data-parallel training under torchrun: which process this is, and what changes with N of them.

``torchrun`` (``torch.distributed.run``) starts the processes and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; nothing here launches
anything. :func:`process_group` joins the group those variables describe (NCCL when the run's
device is CUDA, gloo on the CPU) and leaves it afterwards; without them (a plain ``mlb train``)
it is a one-process world and every function below is the identity.

What a data-parallel step is (``mlb.train.loop.fit`` composes these):

- each rank reads its own share of the step's global batch (``StepSampler(ranks=, rank=)``);
- :func:`data_parallel` wraps the network in ``DistributedDataParallel``, which averages the
  gradients; the losses are means over equal per-rank batches, so the average is the
  gradient of the global batch's loss;
- ``--sync-bn``: BatchNorm statistics over the global batch instead of each rank's share
  (matting batches per GPU are small: 2-8 crops). On CUDA this is torch's ``SyncBatchNorm``;
  torch refuses it on the CPU, so there :class:`GlobalBatchNorm2d` does the same with the
  differentiable all-reduce of ``torch.distributed.nn``;
- after the optimiser step every rank holds the same weights, so the EMA copy, updated
  locally, is the same on every rank; rank 0 alone writes checkpoints and curves.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "GlobalBatchNorm2d",
    "World",
    "barrier",
    "current_world",
    "data_parallel",
    "joins_process_group",
    "mean_over_ranks",
    "process_device",
    "process_group",
    "record_failure",
    "synchronise_batch_norm",
]

# How long a rank waits for the others in a collective before failing. torchrun ends the job
# as soon as one rank dies, so this only bounds a rank that hangs.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)

R = TypeVar("R")


@dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` of ``size`` processes, ``local_rank`` on
    its machine (the CUDA device it drives)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, curves, summaries and progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer "
                         f"(torchrun sets it; unset it for a single-process run)") from None


def world_from_environment() -> World:
    """The world torchrun describes in ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``."""
    size = _env_int("WORLD_SIZE", 1)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"RANK={rank} and WORLD_SIZE={size} do not describe a process group")
    return World(rank=rank, size=size, local_rank=local_rank)


def current_world() -> World:
    """The joined process group, or a one-process world when none was joined."""
    if dist.is_available() and dist.is_initialized():
        return World(rank=dist.get_rank(), size=dist.get_world_size(),
                     local_rank=_env_int("LOCAL_RANK", 0))
    return World()


@contextmanager
def process_group(device: str) -> Iterator[World]:
    """Join torchrun's process group for the duration of a training run.

    ``device``: the run's ``TrainConfig.device``; CUDA (or ``auto`` with CUDA present) uses
    NCCL and pins this process to ``cuda:LOCAL_RANK``, the CPU uses gloo. A group that is
    already joined (a caller did it) is used and left in place.
    """
    world = world_from_environment()
    if not world.distributed or dist.is_initialized():
        yield current_world() if dist.is_initialized() else world
        return
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=COLLECTIVE_TIMEOUT)
    try:
        yield world
    finally:
        dist.destroy_process_group()


def process_device(device: torch.device, world: World) -> torch.device:
    """The device this process trains on: in a data-parallel run on CUDA, the GPU of its
    ``LOCAL_RANK`` (one GPU a process); anything else as given."""
    if world.distributed and device.type == "cuda":
        return torch.device("cuda", world.local_rank)
    return device


def barrier(world: World) -> None:
    """Wait for every rank (e.g. until rank 0 has written a checkpoint the others read)."""
    if world.distributed:
        dist.barrier()


def mean_over_ranks(values: dict[str, float], world: World) -> dict[str, float]:
    """The mean of each value over the ranks (loss terms of one step), in key order."""
    if not world.distributed:
        return values
    names = sorted(values)
    stacked = torch.tensor([values[name] for name in names], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        stacked = stacked.cuda()
    dist.all_reduce(stacked)
    return {name: float(total) / world.size for name, total in zip(names, stacked.tolist(),
                                                                     strict=True)}


def data_parallel(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """``model`` wrapped in ``DistributedDataParallel`` (gradients averaged over the ranks).

    ``find_unused_parameters``: the teacher's mask pre-training leaves the boundary head out of
    the loss; DDP must then not wait for its gradients.
    """
    if not world.distributed:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover every rank's batch (CPU ``SyncBatchNorm``).

    The per-channel count, sum and sum of squares are all-reduced with the differentiable
    collective, so the backward pass sees the global batch too. Outside training, or in a
    one-process world, it is plain BatchNorm2d. State dict keys are BatchNorm2d's.
    """

    def forward(self, input: Tensor) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return super().forward(input)
        from torch.distributed.nn.functional import all_reduce

        count = torch.full((1,), input.numel() / input.shape[1], dtype=input.dtype,
                           device=input.device)
        local = torch.cat([count, input.sum(dim=(0, 2, 3)), input.square().sum(dim=(0, 2, 3))])
        total = all_reduce(local)
        channels = input.shape[1]
        samples = total[0]
        mean = total[1:1 + channels] / samples
        variance = (total[1 + channels:] / samples - mean.square()).clamp_min(0.0)
        self._update_running_statistics(mean.detach(), variance.detach(), float(samples))
        scale = torch.rsqrt(variance + self.eps)
        normalised = (input - mean[None, :, None, None]) * scale[None, :, None, None]
        if self.affine:
            normalised = normalised * self.weight[None, :, None, None] \
                + self.bias[None, :, None, None]
        return normalised

    @torch.no_grad()
    def _update_running_statistics(self, mean: Tensor, variance: Tensor, samples: float) -> None:
        if not self.track_running_stats or self.running_mean is None:
            return
        self.num_batches_tracked += 1
        momentum = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                    else self.momentum)
        unbiased = variance * samples / max(samples - 1.0, 1.0)
        self.running_mean.lerp_(mean, momentum)
        self.running_var.lerp_(unbiased, momentum)


def synchronise_batch_norm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of ``model`` computes its statistics over the global batch.

    CUDA: torch's ``SyncBatchNorm``. CPU: :class:`GlobalBatchNorm2d` (torch's refuses the
    CPU). Weights and running statistics are kept; the returned module is ``model`` itself
    unless ``model`` is a BatchNorm layer.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _to_global_batch_norm(model)


def _to_global_batch_norm(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, GlobalBatchNorm2d):
        converted = GlobalBatchNorm2d(module.num_features, module.eps, module.momentum,
                                      module.affine, module.track_running_stats,
                                      device=module.weight.device if module.affine else None)
        converted.load_state_dict(module.state_dict())
        converted.train(module.training)
        converted.requires_grad_(any(p.requires_grad for p in module.parameters()))
        return converted
    for name, child in module.named_children():
        replaced = _to_global_batch_norm(child)
        if replaced is not child:
            setattr(module, name, replaced)
    return module


def joins_process_group(recipe: Callable[..., R]) -> Callable[..., R]:
    """Run a ``train_*`` recipe inside torchrun's process group (if it started this process).

    The recipe's first argument is its request; ``request.train.device`` picks the backend.
    Outside torchrun the recipe runs as it is.
    """

    @functools.wraps(recipe)
    def run(request: Any, *args: Any, **kwargs: Any) -> R:
        with process_group(request.train.device):
            return recipe(request, *args, **kwargs)

    return run


def record_failure(message: str, world: World | None = None) -> str:
    """Name this rank in ``message`` and leave it where torchrun reports a failed process.

    torchrun gives each process an error file (``TORCHELASTIC_ERROR_FILE``); what is written
    there, in torchelastic's format, is what its failure summary and
    :func:`mlb.train.launch.launch_training` show. Returns the message with the rank.
    """
    world = world or world_from_environment()
    if world.distributed:
        message = f"rank {world.rank}: {message}"
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        document = {"message": {"message": message, "extraInfo": {
            "py_callstack": "", "timestamp": str(int(time.time()))}}}
        with open(path, "w", encoding="utf-8") as file:
            json.dump(document, file)
    return message
