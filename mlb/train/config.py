"""Training configuration: one :class:`TrainConfig` for the loop, one request per recipe.

Every object here is a frozen, JSON-able pydantic model: the CLI builds them from flags, the
Prefect flows pass them as parameters, and each checkpoint stores ``model_dump(mode="json")`` of
the request it was trained from.

Learning rates (method.md section 1, "Recipe"): pre-training 1e-4, teacher fine-tuning 5e-5,
student 5e-5 (the paper's Adam at batch 16). ``TrainConfig.lr = None`` takes these per-recipe
defaults (:data:`DEFAULT_LR`); short CPU runs on the tiny benchmark need larger values
(about 3e-4 to 1e-3), so set ``lr`` explicitly there.
"""

from __future__ import annotations

import os
from typing import Annotated, Literal

from pydantic import BeforeValidator, ConfigDict, Field

from mlb.config import FrozenConfig
from mlb.data.augment import AugmentConfig
from mlb.data.trimap import DEFAULT_KERNEL_RANGE
from mlb.losses import LossConfig
from mlb.models import ModelConfig

__all__ = [
    "DEFAULT_EMA_MOMENTUM",
    "DEFAULT_LR",
    "BoundaryTarget",
    "DdcRequest",
    "RunRequest",
    "StudentRequest",
    "TeacherRequest",
    "TrainConfig",
    "TrainSummary",
]

# method.md section 1 "Recipe" (pre-training, teacher fine-tuning, student); DDC: our choice,
# the student's rate (the DDC reference fine-tunes at a similar order of magnitude).
DEFAULT_LR: dict[str, float] = {
    "teacher-pretrain": 1e-4,
    "teacher": 5e-5,
    "student": 5e-5,
    "ddc": 5e-5,
}
# method.md section 1: "0.999 per step is the usual value" for the mean teacher.
DEFAULT_EMA_MOMENTUM = 0.999


def _path_to_str(value: object) -> object:
    # Requests are stored in checkpoints (read with weights_only=True): str, never Path.
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def _name_to_model_config(value: object) -> object:
    """``"unet_r18"`` is short for ``{"name": "unet_r18"}``."""
    return {"name": value} if isinstance(value, str) else value


class _NameOrObjectSchema:
    """JSON schema of :data:`ModelField`: the model object or its name.

    The Prefect server validates flow parameters against the JSON schema pydantic builds from
    the annotation; a BeforeValidator does not show in it, so without this the documented
    ``"model": "unet_r18"`` was refused as "not of type 'object'".
    """

    def __get_pydantic_json_schema__(self, core_schema, handler):  # noqa: ANN001
        return {"anyOf": [handler(core_schema),
                          {"type": "string", "description": "a network name, short for "
                           "{\"name\": NAME}"}]}


PathText = Annotated[str, BeforeValidator(_path_to_str)]
ModelField = Annotated[ModelConfig, BeforeValidator(_name_to_model_config), _NameOrObjectSchema()]


class TrainConfig(FrozenConfig):
    """The optimisation loop: AdamW, warmup + cosine decay, clipping, bf16 autocast on GPU."""

    # An infinite rate or clip passed every bound and trained NaN weights to exit 0 (tried as
    # a new user would): no setting of the loop is meaningful at inf or NaN.
    model_config = ConfigDict(**FrozenConfig.model_config, allow_inf_nan=False)

    steps: int = Field(ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float | None = Field(None, gt=0.0)
    """Peak learning rate; None takes the recipe's default (``DEFAULT_LR``)."""
    weight_decay: float = Field(1e-4, ge=0.0)
    """AdamW decoupled decay, applied to conv/linear weights only (not norms, not biases)."""
    warmup_steps: int = Field(100, ge=0)
    """Linear warmup from lr/(warmup+1) to lr, then cosine decay to 0 at ``steps``; capped
    at ``steps // 10`` so that a short run still spends most of its steps decaying."""
    grad_clip: float | None = Field(1.0, gt=0.0)
    """Max global gradient norm; None disables clipping."""
    seed: int = Field(0, ge=0)
    """Seeds the weights' initialisation and every sample (a pure function of seed and step)."""
    device: str = "auto"
    """``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ..."""
    amp: bool = True
    """bf16 autocast; on CUDA only (the CPU stays float32 and bit-reproducible)."""
    channels_last: bool = True
    """channels-last memory format; on CUDA only."""
    sync_bn: bool = False
    """Data-parallel runs (torchrun): BatchNorm statistics over the global batch rather than
    each process's share. Matting batches per GPU are small (2-8 crops), where per-process
    statistics are noisy; with it, N processes train as one process with N x the batch."""
    num_workers: int = Field(0, ge=0)
    """DataLoader worker processes (0: read in this process)."""
    prefetch: int = Field(2, ge=0)
    """Batches read ahead in a background thread, overlapping loading with the step (0: read
    between steps). Order and values are the same either way."""
    checkpoint_every: int = Field(1000, ge=0)
    """Save the checkpoint at ``out`` every N steps (0: only at the end) for ``resume``."""
    log_every: int = Field(10, ge=1)
    """Refresh the progress bar's loss every N steps (the curve keeps every step); with no
    bar (output to a file or pipe, or progress off) log a line every N steps instead, to
    logger ``mlb.train``."""
    ema_momentum: float | None = Field(None, ge=0.0, lt=1.0)
    """Keep an EMA copy with this per-step momentum. None: the recipe decides (the student
    keeps one at ``DEFAULT_EMA_MOMENTUM`` when its architecture is the teacher's)."""


class RunRequest(FrozenConfig):
    """What every training recipe takes: the network, where it goes, where it starts, the
    loop's settings, the loss weights and the augmentation."""

    model: ModelField
    out: PathText
    init: PathText | None = None
    """Checkpoint to start from (its model weights; must be the same architecture)."""
    train: TrainConfig
    loss: LossConfig = LossConfig()
    augment: AugmentConfig = AugmentConfig()


class TeacherRequest(RunRequest):
    """Step 1 of MLB: optional pre-training on masks, then fine-tuning on composites.

    ``init`` may be an existing segmentation model; pre-training, if any, continues from it.
    """

    matte: PathText
    """Matte corpus folder with ``fg/``, ``alpha/`` and ``bg/`` (the ``mlb synth`` layout)."""
    pretrain_images: PathText | None = None
    pretrain_masks: PathText | None = None
    pretrain_steps: int = Field(0, ge=0)
    """Steps of mask pre-training (MSE); its checkpoint is kept as ``<out>.pretrain.pt``."""
    pretrain_lr: float | None = Field(None, gt=0.0)
    """None: ``DEFAULT_LR["teacher-pretrain"]`` (1e-4)."""
    photographic_composites: bool = False
    """Fine-tune on composites that look photographed (``photographic_composite``: defocus,
    light wrap, colour cast, noise, JPEG) instead of plain pastes (docs/science-notes.md)."""


BoundaryTarget = Literal["band", "blend"]
"""What a student's boundary head learns (``StudentRequest.boundary_target``)."""


class StudentRequest(RunRequest):
    """Step 2 of MLB: the student learns from a cached blended label version."""

    store: PathText
    labels: str = "latest"
    """Label version id in ``store``, or ``"latest"``."""
    strong_augment: bool = True
    """Strong (weak + colour) augmentation; False for the weak/strong ablation."""
    ema: bool | None = None
    """Keep an EMA copy: None = when the teacher has the student's architecture or
    ``train.ema_momentum`` is set; True / False force it."""
    ddc_weight: float = Field(0.0, ge=0.0)
    """Adds ``ddc_weight * (L_known + loss.ddc_weight * L_DDC)`` on the same natural images,
    with trimaps from their coarse masks (method.md section 2: combining both seeds)."""
    trimap_kernel_range: tuple[int, int] = DEFAULT_KERNEL_RANGE
    """Kernel sizes of the DDC term's trimaps (px, inclusive; ``DdcRequest``'s field)."""
    boundary_target: BoundaryTarget = "band"
    """What the boundary head learns. ``"band"`` (default): ``1[0.05 < blended_alpha <
    0.95]``, the teacher's own target applied to the labels the student learns ("the same
    loss as the teacher", method.md). ``"blend"``: the cached ``blended_boundary``, the weight
    the blend gave the teacher.

    It matters for the EMA round: the next blend weighs the EMA copy's alpha with its own
    boundary map. A student that learned ``b`` itself predicts about ``b`` again, so round 2
    keeps ``b1 * b2`` of the teacher's detail and the labels slide back to the mask wherever
    ``b`` is well under 1. Learning the band of its labels, the EMA copy marks where they are
    soft and keeps them there. Reproduction, seed 0: round-2 labels' boundary MSE 113 with
    ``"blend"`` (no better than round 1's), 89 with ``"band"``."""


class DdcRequest(RunRequest):
    """Matting without alpha labels: known loss + 10 x DDC on trimaps from coarse masks."""

    images: PathText
    masks: PathText
    strong_augment: bool = False
    """Colour augmentation changes the colour distances DDC relies on; off by default."""
    trimap_kernel_range: tuple[int, int] = DEFAULT_KERNEL_RANGE
    """Elliptical erode/dilate kernel sizes (px, inclusive; method.md section 2). The default
    is the reference's, made for ~640 px images; ``kernel_range_for(side)`` scales it to the
    training images' side (the reproduction presets do)."""


class TrainSummary(FrozenConfig):
    """What a finished (or stopped) training run returns; JSON-able for the flows."""

    checkpoint: str
    kind: Literal["teacher-pretrain", "teacher", "student", "ddc"]
    steps: int
    """Steps done so far (equals the requested steps once finished)."""
    finished: bool
    final_loss: float
    """Mean total loss over the last ``log_every`` steps."""
    seconds: float
    """Wall time of this invocation (0 when a finished checkpoint was found)."""
    samples_per_second: float
    label_version: str | None = None
    curve: str | None = None
    """The loss-curve PNG next to the checkpoint."""
    world_size: int = 1
    """Processes that trained together (torchrun's WORLD_SIZE)."""
    global_batch: int | None = None
    """Samples per optimiser step over all processes (``batch_size x world_size``)."""
