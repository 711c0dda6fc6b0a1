"""Supervised matting losses shared by the teacher and the student (method.md section 1).

``matting_loss`` is ``L_matte(pred, alpha) + lambda * BCE(boundary_logit, boundary)`` with
``L_matte`` = L1 + Laplacian-pyramid L1 (our choice, the usual human-matting recipe) and
``lambda`` = 0.01 (confirmed by the paper's ablation). Every function is pure: tensors in,
a tensor or a dict of named terms with ``total`` out, on the inputs' device and dtype.
"""

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from mlb.config import FrozenConfig

# method.md section 1: boundary = 1[0.05 < alpha < 0.95] (confirmed threshold).
BOUNDARY_LOW = 0.05
BOUNDARY_HIGH = 0.95

# The 5x5 binomial approximation of a Gaussian (outer product of [1, 4, 6, 4, 1] / 16).
_BINOMIAL_5 = (1.0, 4.0, 6.0, 4.0, 1.0)


class LossConfig(FrozenConfig):
    """Loss weights; the defaults are the paper's (boundary) and the DDC reference's (ddc)."""

    boundary_weight: float = Field(default=0.01, ge=0.0, allow_inf_nan=False)
    laplacian_levels: int = Field(default=5, ge=1)
    alpha_norm: Literal["l1", "mse"] = "l1"
    """Norm of ``matting_loss``'s per-pixel alpha term: "l1" (our recipe's, the usual one) or
    "mse" (the trial of docs/science-notes.md section 2: an uncertain edge is hedged)."""
    ddc_weight: float = Field(default=10.0, ge=0.0, allow_inf_nan=False)
    ddc_window: int = Field(default=11, ge=1)
    """Odd side of DDC's search window (11 in the reference, at 512 px crops)."""
    ddc_neighbours: int = Field(default=11, ge=1)
    """Candidates DDC keeps per pixel, the pixel itself included (11 in the reference)."""
    ddc_known: Literal["l1", "mse"] = "l1"
    """Norm of DDC's known-region loss: "l1" is the reference's; "mse" is our option, which
    lets a network keep a soft ramp where the coarse mask's edge is uncertain
    (``mlb.ddc.known_loss``; trials in docs/science-notes.md section 1)."""

    @model_validator(mode="after")
    def _ddc_window_fits(self) -> "LossConfig":
        if self.ddc_window % 2 == 0:
            raise ValueError(f"ddc_window must be odd, got {self.ddc_window}")
        if self.ddc_neighbours > self.ddc_window**2:
            raise ValueError(f"ddc_neighbours must be <= ddc_window**2 = {self.ddc_window**2}, "
                             f"got {self.ddc_neighbours}")
        return self


def boundary_target(alpha: torch.Tensor) -> torch.Tensor:
    """The boundary map ``1[0.05 < alpha < 0.95]``, in ``alpha``'s dtype.

    Args:
        alpha: ``(B, 1, H, W)`` floating, in [0, 1] (any shape works).

    Returns:
        Same shape, dtype and device as ``alpha``; values 0 or 1.
    """
    return ((alpha > BOUNDARY_LOW) & (alpha < BOUNDARY_HIGH)).to(alpha.dtype)


def _check_same_shape(**tensors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"expected tensors of one shape (B, 1, H, W), got {shapes}")
    for name, shape in shapes.items():
        if len(shape) != 4:
            raise ValueError(f"{name} must be 4-D (B, C, H, W), got shape {shape}")


def _gauss_blur(x: torch.Tensor) -> torch.Tensor:
    """5x5 binomial blur of ``(N, 1, H, W)`` with reflect padding (needs H, W >= 3)."""
    taps = torch.tensor(_BINOMIAL_5, dtype=x.dtype, device=x.device)
    kernel = (torch.outer(taps, taps) / 256.0)[None, None]
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel)


def _pad_to_even(x: torch.Tensor) -> torch.Tensor:
    """Repeat the last row / column of an odd side, so that no pixel is dropped."""
    height, width = x.shape[-2:]
    return F.pad(x, (0, width % 2, 0, height % 2), mode="replicate")


def _laplacian_levels(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Band-pass levels ``current - up(down(current))`` of ``(N, 1, H, W)``, finest first.

    A level is built only while both sides of the current image are at least 3 px: odd sides
    are padded to even by repeating the edge, and reflect padding of the 5x5 blur then always
    has room. Smaller images therefore get fewer levels (none when a side is under 3 px).
    """
    pyramid = []
    current = x
    for _ in range(levels):
        height, width = current.shape[-2:]
        if min(height, width) < 3:
            break
        even = _pad_to_even(current)
        down = _gauss_blur(even)[..., ::2, ::2]
        up = torch.zeros_like(even)
        up[..., ::2, ::2] = down * 4.0  # zero insertion keeps 1/4 of the kernel mass
        up = _gauss_blur(up)
        pyramid.append((even - up)[..., :height, :width])
        current = down
    return pyramid


def laplacian_loss(
    pred_alpha: torch.Tensor, true_alpha: torch.Tensor, *, levels: int = 5
) -> torch.Tensor:
    """Laplacian-pyramid L1: ``sum_l 2**l * mean|lap_l(pred) - lap_l(true)| / levels``.

    Level weights ``2**l`` and the division by ``levels`` follow the common human-matting
    recipe (RobustVideoMatting, ViTMatte). Blur: 5x5 binomial kernel, reflect padding. Any
    ``H, W`` works: odd sides are edge-padded to even at each level, and levels stop early once
    a side falls under 3 px (missing levels contribute 0; a 5x5 image gets 2 levels, a 512x512
    one all 5). A constant offset between ``pred`` and ``true`` costs nothing here (the L1 term
    sees it).

    Args:
        pred_alpha: ``(B, C, H, W)`` floating.
        true_alpha: same shape, dtype and device.
        levels: number of pyramid levels, >= 1.

    Returns:
        Scalar tensor in ``pred_alpha``'s dtype, >= 0.
    """
    _check_same_shape(pred_alpha=pred_alpha, true_alpha=true_alpha)
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    batch, channels, height, width = pred_alpha.shape
    both = torch.cat([pred_alpha, true_alpha]).reshape(2 * batch * channels, 1, height, width)
    loss = pred_alpha.sum() * 0.0  # stays on the graph when no level fits (tiny images)
    for level, band in enumerate(_laplacian_levels(both, levels)):
        pred_band, true_band = band.chunk(2)
        loss = loss + (2**level) * F.l1_loss(pred_band, true_band)
    return loss / levels


def matting_loss(
    pred_alpha: torch.Tensor,
    pred_boundary_logit: torch.Tensor,
    true_alpha: torch.Tensor,
    *,
    true_boundary: torch.Tensor | None = None,
    boundary_weight: float = 0.01,
    laplacian_levels: int = 5,
    alpha_norm: Literal["l1", "mse"] = "l1",
) -> dict[str, torch.Tensor]:
    """The teacher / student loss ``L1 + Laplacian + boundary_weight * BCE`` as named terms.

    Args:
        pred_alpha: ``(B, 1, H, W)`` floating in [0, 1] (after the sigmoid).
        pred_boundary_logit: same shape; the boundary head's logit (before any sigmoid).
        true_alpha: same shape; the alpha label in [0, 1] (true or ``blended_alpha``).
        true_boundary: same shape, in [0, 1]; soft targets are fine (a student may pass the
            cached ``blended_boundary``). Default: ``boundary_target(true_alpha)``.
        boundary_weight: lambda, 0.01 in the paper.
        laplacian_levels: pyramid levels of the Laplacian term.
        alpha_norm: "l1", or "mse": the alpha term is then a mean squared error, named
            ``"mse"`` in place of ``"l1"``.

    Returns:
        ``{"l1", "laplacian", "boundary_bce", "total"}``, scalar tensors; ``boundary_bce`` is
        unweighted, ``total = l1 + laplacian + boundary_weight * boundary_bce``.
    """
    if alpha_norm not in ("l1", "mse"):
        raise ValueError(f"alpha_norm must be 'l1' or 'mse', got {alpha_norm!r}")
    if true_boundary is None:
        true_boundary = boundary_target(true_alpha)
    _check_same_shape(
        pred_alpha=pred_alpha,
        pred_boundary_logit=pred_boundary_logit,
        true_alpha=true_alpha,
        true_boundary=true_boundary,
    )
    per_pixel = (F.l1_loss if alpha_norm == "l1" else F.mse_loss)(pred_alpha, true_alpha)
    laplacian = laplacian_loss(pred_alpha, true_alpha, levels=laplacian_levels)
    bce = F.binary_cross_entropy_with_logits(pred_boundary_logit, true_boundary)
    total = per_pixel + laplacian + boundary_weight * bce
    return {alpha_norm: per_pixel, "laplacian": laplacian, "boundary_bce": bce, "total": total}
