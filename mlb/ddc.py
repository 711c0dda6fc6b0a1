"""The DDC loss: matting from an RGB image and a trimap alone (method.md section 2).

``L = L_known + ddc_weight * L_DDC``. For every pixel ``i`` the ``neighbours`` (11) pixels ``j``
of its ``window x window`` (11x11) window with the smallest colour distance
``d_ij = ||I_i - I_j||_2`` are kept, and ``|d_ij - (alpha_i - alpha_j)|`` is penalised with the
SIGNED alpha difference. For a mutual pair the two terms add up to a hinge: alpha may change
across a colour edge at most as much as the colour does. Both the image and alpha are zero-padded
outside the frame, as in the reference code (poppuppy/alpha-free-matting, ``consistency``), so
near the border the padding pixels (colour 0, alpha 0) are candidates like any other.

Two implementations of ``L_DDC`` that give the same value and gradient:

- ``ddc_loss_unfold``: the reference form; ``F.unfold`` materialises all ``window**2``
  candidates of every pixel (about 1.5 GB of colours at batch 4, 512x512, float32);
- ``ddc_loss``: the memory-lean form; under ``no_grad`` it ranks the candidates of one row tile
  at a time (strided views of the zero-padded image, never the whole batch's candidates), keeps
  the distance and offset of the nearest ones, then gathers alpha of the kept neighbours by flat
  index from the padded alpha, which is the only step autograd sees.

Tie rule (both implementations): candidates are ranked by squared colour distance, and among
equal distances the spatially nearer offset wins (smaller ``dy**2 + dx**2``, then raster order
of the window). Ties are common on 8-bit images, and the reference's ``torch.topk`` leaves them
unspecified; with this rule the pixel itself is always kept (distance 0, offset 0), and in a flat
region the kept neighbours are the nearest ones rather than the top row of the window. Both
forms rank with one ``topk`` over unique int64 keys (distance bits, then tie rank), which is
deterministic and several times faster than a stable sort. float32 (and narrower) distances
are ranked exactly; float64 distances drop their last ``ceil(log2(window**2))`` mantissa bits
(7 for 11x11), so distances equal to ~1e-13 relative count as ties.

The image is treated as a constant: no gradient flows into it (it is the network's input).
"""

import math
from typing import Literal

import torch
import torch.nn.functional as F

# Pixels per row tile of the selection in ``ddc_loss``: about 6 KB of transient buffers per
# pixel at 11x11 (candidate colours, distances, keys). On one CPU thread 4096 to 16384 pixels
# were equally fast; with two threads small tiles pay for many short parallel regions: forward
# + backward at batch 4, 512x512 took 12.1 / 9.2 / 6.1 s with 8192 / 16384 / 32768 pixels
# per tile (peak growth 430 / 350 / 470 MB; the unfold form: 7.4 s, 4.8 GB; row 4 of
# docs/benchmarks.md). So tiles take an eighth of the chunk's pixels, within these bounds:
# at most ~200 MB of buffers, and always far below the unfold form's footprint.
_MIN_TILE_PIXELS = 1 << 13
_MAX_TILE_PIXELS = 1 << 15
_TILES_PER_CHUNK = 8
_MAX_WINDOW = 181  # 181**2 window positions still fit int16
# The reference's 11x11 window (and its 11 kept candidates) belongs to 512 px training crops
# of photos of about that size or larger.
REFERENCE_WINDOW = 11
REFERENCE_CROP = 512


def window_for(side: int) -> int:
    """The reference's 11 px window at 512 px, scaled to images of ``side`` px: odd, >= 3.

    The window is a neighbourhood in the scene, not in pixels: at 96 px an 11x11 window spans
    an eighth of the image and links similar colours across the person (hair and a
    hair-coloured background), where the reference links a pixel to its immediate surround.
    The reference keeps as many candidates as the window's side (``topk(k=kernel_size)``), so
    the scaled window keeps ``window_for(side)`` neighbours too. 96 -> 3, 256 -> 5, 512 -> 11.
    """
    if side < 1:
        raise ValueError(f"side must be >= 1, got {side}")
    nearest_odd = 2 * round((REFERENCE_WINDOW * side / REFERENCE_CROP - 1) / 2) + 1
    return max(3, nearest_odd)


def known_loss(pred_alpha: torch.Tensor, trimap: torch.Tensor, *,
               norm: Literal["l1", "mse"] = "l1") -> torch.Tensor:
    """Mean of ``|alpha - trimap|`` (``norm`` "l1", method.md) or of ``(alpha - trimap)**2``
    ("mse", our option) over the known pixels of the whole batch.

    Known pixels are trimap background (< 1/3, target 0) and foreground (>= 2/3, target 1),
    the reference's thresholds (85 and 170 of 255); with exact 0 / 0.5 / 1 trimaps this is
    "trimap 0 or 1". With no known pixel in the batch the loss is 0, still on the autograd
    graph (its gradient is zero), so a training step never divides by zero.

    Args:
        pred_alpha: ``(B, 1, H, W)`` floating in [0, 1].
        trimap: same shape; 0 background, 0.5 unknown, 1 foreground.
        norm: "l1" (the paper's) or "mse": squared errors punish a soft value near the
            trimap's edge far less than a confident wrong one, so a network that hedges an
            uncertain edge position is not pushed to commit to the coarse mask's edge.

    Returns:
        Scalar tensor in ``pred_alpha``'s dtype, in [0, 1].
    """
    if norm not in ("l1", "mse"):
        raise ValueError(f"norm must be 'l1' or 'mse', got {norm!r}")
    if pred_alpha.shape != trimap.shape or pred_alpha.ndim != 4:
        raise ValueError(
            f"pred_alpha and trimap must share one (B, 1, H, W) shape, "
            f"got {tuple(pred_alpha.shape)} and {tuple(trimap.shape)}"
        )
    background = trimap < 1.0 / 3.0
    foreground = trimap >= 2.0 / 3.0
    known = (background | foreground).to(pred_alpha.dtype)
    difference = pred_alpha - foreground.to(pred_alpha.dtype)
    error = (difference.abs() if norm == "l1" else difference.square()) * known
    return error.sum() / known.sum().clamp_min(1.0)


def _check_ddc_inputs(
    image: torch.Tensor, pred_alpha: torch.Tensor, window: int, neighbours: int
) -> None:
    if image.ndim != 4 or pred_alpha.ndim != 4 or pred_alpha.shape[1] != 1:
        raise ValueError(
            f"expected image (B, C, H, W) and pred_alpha (B, 1, H, W), "
            f"got {tuple(image.shape)} and {tuple(pred_alpha.shape)}"
        )
    if image.shape[0] != pred_alpha.shape[0] or image.shape[2:] != pred_alpha.shape[2:]:
        raise ValueError(
            f"image {tuple(image.shape)} and pred_alpha {tuple(pred_alpha.shape)} "
            f"differ in batch or size"
        )
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be an odd number >= 1, got {window}")
    if window > _MAX_WINDOW:
        raise ValueError(
            f"window must be <= {_MAX_WINDOW} (window positions are int16), got {window}"
        )
    if not 1 <= neighbours <= window * window:
        raise ValueError(f"neighbours must be in [1, window**2 = {window**2}], got {neighbours}")


def _window_offsets(window: int) -> list[tuple[int, int]]:
    """``(dy, dx)`` offsets of the window in tie-rule order: nearer first, then raster order."""
    radius = window // 2
    raster = [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]
    return sorted(raster, key=lambda offset: offset[0] ** 2 + offset[1] ** 2)  # sort is stable


def _squared_distance(centre: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """``sum_c (centre - candidates)**2`` over dim 1, channel by channel in a fixed order.

    Both implementations call this on the same values, so their distances (and therefore their
    rankings) agree bit for bit.
    """
    squared = (centre - candidates).square()
    total = squared[:, 0]
    for channel in range(1, squared.shape[1]):
        total = total + squared[:, channel]
    return total


def _tie_ranks(window: int, device: torch.device) -> torch.Tensor:
    """``(window**2,)`` int64: the tie-rule rank of each window position in raster order."""
    radius = window // 2
    ranks = torch.empty(window * window, dtype=torch.int64)
    for rank, (dy, dx) in enumerate(_window_offsets(window)):
        ranks[(dy + radius) * window + dx + radius] = rank
    return ranks.to(device)


def _ranking_key(squared: torch.Tensor, tie_ranks: torch.Tensor) -> torch.Tensor:
    """Unique int64 keys ordering candidates by (squared distance, tie rank).

    Non-negative IEEE floats order like their bit patterns; the bits are shifted left to make
    room for the candidate's tie rank. float64 gives up its lowest mantissa bits for the rank;
    narrower floats are widened to float32, exactly.

    Args:
        squared: ``(B, N, ...)`` floating, >= 0; candidates along dim 1.
        tie_ranks: ``(N,)`` int64, a permutation of ``range(N)``.
    """
    rank_bits = max(1, (squared.shape[1] - 1).bit_length())
    if squared.dtype == torch.float64:
        value = squared.view(torch.int64) >> rank_bits
    else:
        value = squared.float().view(torch.int32).long()
    rank = tie_ranks.view(1, -1, *([1] * (squared.ndim - 2)))
    return (value << rank_bits) | rank


def _select(
    squared: torch.Tensor, neighbours: int, tie_ranks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``neighbours`` nearest candidates along dim 1: ``(squared distance, position)``."""
    key = _ranking_key(squared, tie_ranks)
    _, position = torch.topk(key, neighbours, dim=1, largest=False, sorted=False)
    return torch.gather(squared, 1, position), position


def _consistency_sum(
    pred_alpha: torch.Tensor, distance: torch.Tensor, neighbour_alpha: torch.Tensor
) -> torch.Tensor:
    """``sum |d_ij - (alpha_i - alpha_j)|`` over every kept pair."""
    return (distance.to(pred_alpha.dtype) - (pred_alpha - neighbour_alpha)).abs().sum()


def ddc_loss_unfold(
    image: torch.Tensor, pred_alpha: torch.Tensor, *, window: int = 11, neighbours: int = 11
) -> torch.Tensor:
    """Reference ``L_DDC`` via ``F.unfold`` (tests and benchmarks; memory grows with window**2).

    Args:
        image: ``(B, C, H, W)`` floating, RGB in [0, 1] (not normalised).
        pred_alpha: ``(B, 1, H, W)`` floating in [0, 1]; gradients flow into it.
        window: odd side of the square search window.
        neighbours: candidates kept per pixel, the pixel itself included.

    Returns:
        Scalar tensor in ``pred_alpha``'s dtype: the mean over ``B x neighbours x H x W`` terms.
    """
    _check_ddc_inputs(image, pred_alpha, window, neighbours)
    batch, channels, height, width = image.shape
    radius = window // 2
    with torch.no_grad():
        colours = F.unfold(image, window, padding=radius).view(batch, channels, -1, height, width)
        squared = _squared_distance(image.unsqueeze(2), colours)
        kept_squared, kept = _select(squared, neighbours, _tie_ranks(window, image.device))
    alphas = F.unfold(pred_alpha, window, padding=radius).view(batch, -1, height, width)
    neighbour_alpha = torch.gather(alphas, 1, kept)
    distance = kept_squared.sqrt()
    return _consistency_sum(pred_alpha, distance, neighbour_alpha) / distance.numel()


def _nearest_candidates(
    image: torch.Tensor, window: int, neighbours: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Kept candidates of every pixel, ``(squared distance, window position)``, ``(B, k, H, W)``.

    The window position is the raster index ``(dy + r) * window + (dx + r)`` of the offset.

    Pixels are independent, so the selection runs over row tiles of an eighth of the pixels
    (8192 to 32768): its working set stays under ~200 MB whatever the batch and image size.
    """
    batch, _, height, width = image.shape
    radius = window // 2
    padded = F.pad(image, (radius, radius, radius, radius))
    tie_ranks = _tie_ranks(window, image.device)
    kept_squared = image.new_empty(batch, neighbours, height, width)
    kept_position = image.new_empty(batch, neighbours, height, width, dtype=torch.int16)
    pixels = batch * height * width
    tile_pixels = min(_MAX_TILE_PIXELS, max(_MIN_TILE_PIXELS, pixels // _TILES_PER_CHUNK))
    rows = max(1, tile_pixels // (batch * width))
    for top in range(0, height, rows):
        tile = padded[:, :, top : top + rows + 2 * radius]
        tile_height = tile.shape[2] - 2 * radius
        # (B, C, window, window, h, W) strided view: [.., i, j, y, x] = tile[.., i + y, j + x].
        windows = tile.unfold(2, tile_height, 1).unfold(3, width, 1)
        centre = tile[:, :, radius : radius + tile_height, radius : radius + width]
        squared = _squared_distance(centre[:, :, None, None], windows).flatten(1, 2)
        squared, position = _select(squared, neighbours, tie_ranks)
        kept_squared[:, :, top : top + rows] = squared
        kept_position[:, :, top : top + rows] = position
    return kept_squared, kept_position


def _gather_neighbour_alpha(
    pred_alpha: torch.Tensor, kept_position: torch.Tensor, window: int
) -> torch.Tensor:
    """Alpha of each kept neighbour, gathered by flat index from zero-padded alpha (with grad).

    Args:
        pred_alpha: ``(B, 1, H, W)``.
        kept_position: ``(B, k, H, W)`` int16, raster positions in the window.
    """
    height, width = pred_alpha.shape[2:]
    radius = window // 2
    padded_width = width + 2 * radius
    padded = F.pad(pred_alpha, (radius, radius, radius, radius)).flatten(1)
    device = pred_alpha.device
    offsets = torch.arange(-radius, radius + 1, device=device)
    shift = (offsets.view(-1, 1) * padded_width + offsets.view(1, -1)).flatten()
    rows = torch.arange(height, device=device).view(-1, 1) + radius
    columns = torch.arange(width, device=device).view(1, -1) + radius
    index = shift[kept_position.long()] + (rows * padded_width + columns)
    return torch.gather(padded, 1, index.flatten(1)).view(kept_position.shape)


def ddc_loss(
    image: torch.Tensor,
    pred_alpha: torch.Tensor,
    *,
    window: int = 11,
    neighbours: int = 11,
    batch_chunk: int | None = None,
) -> torch.Tensor:
    """``L_DDC`` without materialising the ``window**2`` candidates (same value as the unfold form).

    Memory: instead of ``(B, C, window**2, H, W)`` candidate colours (several copies of it in
    the unfold form), the selection holds the kept ``(B, neighbours, H, W)`` distances and int16
    window positions plus the buffers of one row tile (at most ~200 MB). ``batch_chunk`` images
    are processed at a time, which bounds the forward's transient tensors; what autograd keeps
    for backward (the gather index and the difference, ``(B, neighbours, H, W)``) grows with the
    whole batch.
    The x10 weight of the total belongs to ``ddc_total``, not here.

    Args:
        image: ``(B, C, H, W)`` floating, RGB in [0, 1] (not normalised); no gradient taken.
        pred_alpha: ``(B, 1, H, W)`` floating in [0, 1]; gradients flow into it.
        window: odd side of the square search window (11 in the reference).
        neighbours: candidates kept per pixel, the pixel itself included (11 in the reference).
        batch_chunk: images per chunk (>= 1), or None for the whole batch at once.

    Returns:
        Scalar tensor in ``pred_alpha``'s dtype, >= 0: the mean over ``B x neighbours x H x W``.
    """
    _check_ddc_inputs(image, pred_alpha, window, neighbours)
    if batch_chunk is not None and batch_chunk < 1:
        raise ValueError(f"batch_chunk must be None or >= 1, got {batch_chunk}")
    step = batch_chunk or image.shape[0]
    total = pred_alpha.sum() * 0.0  # keeps an empty batch on the graph
    for start in range(0, image.shape[0], step):
        image_chunk = image[start : start + step].detach()
        alpha_chunk = pred_alpha[start : start + step]
        with torch.no_grad():
            kept_squared, kept_position = _nearest_candidates(image_chunk, window, neighbours)
        neighbour_alpha = _gather_neighbour_alpha(alpha_chunk, kept_position, window)
        total = total + _consistency_sum(alpha_chunk, kept_squared.sqrt(), neighbour_alpha)
    count = image.shape[0] * neighbours * math.prod(image.shape[2:])
    return total / max(count, 1)


def ddc_total(
    image: torch.Tensor,
    pred_alpha: torch.Tensor,
    trimap: torch.Tensor,
    *,
    ddc_weight: float = 10.0,
    window: int = 11,
    neighbours: int = 11,
    batch_chunk: int | None = None,
    known_norm: Literal["l1", "mse"] = "l1",
) -> dict[str, torch.Tensor]:
    """``L = L_known + ddc_weight * L_DDC`` (method.md section 2) as named terms.

    Args:
        image: ``(B, 3, H, W)`` floating, RGB in [0, 1].
        pred_alpha: ``(B, 1, H, W)`` floating in [0, 1].
        trimap: ``(B, 1, H, W)``; 0 background, 0.5 unknown, 1 foreground.
        ddc_weight: weight of the DDC term (10 in the reference; ``LossConfig.ddc_weight``).
        window, neighbours, batch_chunk: passed to ``ddc_loss``.
        known_norm: ``known_loss``'s norm ("l1" in the reference; ``LossConfig.ddc_known``).

    Returns:
        ``{"known", "ddc", "total"}``, scalar tensors; ``ddc`` is unweighted.
    """
    known = known_loss(pred_alpha, trimap, norm=known_norm)
    ddc = ddc_loss(image, pred_alpha, window=window, neighbours=neighbours, batch_chunk=batch_chunk)
    return {"known": known, "ddc": ddc, "total": known + ddc_weight * ddc}
