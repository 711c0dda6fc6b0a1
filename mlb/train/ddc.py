"""Matting without alpha labels (method.md section 2): known loss + 10 x DDC.

The network sees only the RGB image; the trimap (from the coarse mask: foreground eroded and
background eroded with random elliptical kernels of 1-29 px) is supervision only. Trimaps are
drawn per sample after the geometric augmentation, so the kernel sizes are in pixels of the
crop the network sees.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from mlb.data.augment import strong_preset, weak_preset
from mlb.data.corpus import find_segmentation_samples
from mlb.data.datasets import SegmentationDataset
from mlb.data.trimap import trimap_from_mask
from mlb.ddc import ddc_total
from mlb.losses import LossConfig
from mlb.models import MattingOutput
from mlb.train.config import DEFAULT_LR, DdcRequest, TrainSummary
from mlb.train.distributed import joins_process_group
from mlb.train.lineage import run_lineage
from mlb.train.loop import Batch, RunRecord, field_defaults, fit, initial_model

__all__ = ["TrimapDataset", "add_trimap", "ddc_dataset", "ddc_loss_terms", "train_ddc"]


def add_trimap(item: dict[str, Any], *, rng: np.random.Generator,
               kernel_range: tuple[int, int]) -> dict[str, Any]:
    """``item`` plus ``"trimap"`` ``(1, H, W) float32`` in {0, 0.5, 1} from its
    ``"coarse_mask"`` ``(1, H, W)`` (binarised at 0.5)."""
    mask = item["coarse_mask"][0].numpy()
    trimap = trimap_from_mask(mask, rng=rng, kernel_range=kernel_range)
    return {**item, "trimap": torch.from_numpy(trimap)[None]}


class TrimapDataset(Dataset):
    """Adds a random trimap to every item of a dataset that yields ``"coarse_mask"``.

    The kernel sizes are drawn from the global torch RNG, which ``mlb.train.sampling`` seeds
    per sample, so trimaps are reproducible like the augmentation.
    """

    def __init__(self, dataset: Dataset, *, kernel_range: tuple[int, int]) -> None:
        self.dataset, self.kernel_range = dataset, kernel_range

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))
        return add_trimap(self.dataset[index], rng=rng, kernel_range=self.kernel_range)


def ddc_loss_terms(prediction: MattingOutput, batch: Batch, *, loss: LossConfig
                   ) -> dict[str, Tensor]:
    """``L_known + loss.ddc_weight * L_DDC`` on ``batch["image"]`` and ``batch["trimap"]``,
    with ``loss``'s window, neighbour count and known-loss norm."""
    return ddc_total(batch["image"], prediction.alpha, batch["trimap"],
                     ddc_weight=loss.ddc_weight, window=loss.ddc_window,
                     neighbours=loss.ddc_neighbours, known_norm=loss.ddc_known)


def ddc_dataset(request: DdcRequest) -> Dataset:
    """Natural photos with coarse masks, augmented, with a trimap per item."""
    scan = find_segmentation_samples(request.images, request.masks)
    preset = (strong_preset if request.strong_augment else weak_preset)(request.augment)
    dataset = SegmentationDataset(scan.samples, preset, skip_bad=True)
    return TrimapDataset(dataset, kernel_range=request.trimap_kernel_range)


@joins_process_group
def train_ddc(
    request: DdcRequest,
    *,
    resume: bool = False,
    overwrite: bool = False,
    stop_at_step: int | None = None,
    progress: bool = True,
) -> TrainSummary:
    """Train ``request.model`` from coarse masks alone; checkpoint at ``request.out``."""
    model = initial_model(request)
    run = RunRecord(out=Path(request.out), kind="ddc", model_config=request.model,
                    lineage=run_lineage(init=request.init),
                    request=request.model_dump(mode="json"),
                    lr=request.train.lr or DEFAULT_LR["ddc"],
                    ema_momentum=request.train.ema_momentum,
                    request_defaults=field_defaults(type(request)))

    def loss_function(prediction: MattingOutput, batch: Batch) -> dict[str, Tensor]:
        return ddc_loss_terms(prediction, batch, loss=request.loss)

    return fit(model, ddc_dataset(request), loss_function, config=request.train, run=run,
               resume=resume, overwrite=overwrite, stop_at_step=stop_at_step,
               progress=progress)
