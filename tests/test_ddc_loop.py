"""DDC against an independent, direct implementation: a loop over pixels on tiny tensors.

The loop is written from method.md section 2, not from mlb.ddc: for every pixel, every offset
of the window (zero padding outside the frame for colour and alpha), the colour distance, a
sort by (distance, squared offset length, raster order), the kept candidates, and the signed
term |d_ij - (alpha_i - alpha_j)|, summed as torch scalars so that autograd gives the gradient
too. Both library forms must agree with it in value and gradient.
"""

import cv2
import numpy as np
import pytest
import torch

from mlb.data.synth import render_natural_sample
from mlb.data.trimap import DEFAULT_KERNEL_RANGE, trimap_from_mask
from mlb.ddc import ddc_loss, ddc_loss_unfold, ddc_total


def _loop_ddc(image: torch.Tensor, alpha: torch.Tensor, window: int, neighbours: int
              ) -> torch.Tensor:
    batch, channels, height, width = image.shape
    radius = window // 2
    zero = alpha.new_zeros(())
    terms = []
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                ranked = []
                raster = 0
                for dy in range(-radius, radius + 1):
                    for dx in range(-radius, radius + 1):
                        yy, xx = y + dy, x + dx
                        inside = 0 <= yy < height and 0 <= xx < width
                        other = image[b, :, yy, xx] if inside else image.new_zeros(channels)
                        distance = float(((image[b, :, y, x] - other) ** 2).sum())
                        other_alpha = alpha[b, 0, yy, xx] if inside else zero
                        ranked.append((distance, dy * dy + dx * dx, raster, other_alpha))
                        raster += 1
                ranked.sort(key=lambda entry: entry[:3])
                for distance, _, _, other_alpha in ranked[:neighbours]:
                    terms.append((distance**0.5 - (alpha[b, 0, y, x] - other_alpha)).abs())
    return torch.stack(terms).sum() / (batch * neighbours * height * width)


def _value_and_gradient(fn, image, alpha, **options):
    alpha = alpha.detach().clone().requires_grad_(True)
    value = fn(image, alpha, **options)
    (gradient,) = torch.autograd.grad(value, alpha)
    return value.item(), gradient


@pytest.mark.parametrize("shape, window, neighbours, seed", [
    ((1, 6, 5), 11, 11, 0),   # the reference setting: the window is larger than the image
    ((2, 5, 7), 5, 6, 1),
    ((1, 7, 7), 3, 3, 2),     # the resolution-scaled setting of the reproduction presets
])
def test_both_forms_equal_a_direct_loop_in_value_and_gradient(shape, window, neighbours, seed):
    batch, height, width = shape
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, height, width, dtype=torch.float64, generator=generator)
    alpha = torch.rand(batch, 1, height, width, dtype=torch.float64, generator=generator)
    expected, expected_gradient = _value_and_gradient(_loop_ddc, image, alpha, window=window,
                                                      neighbours=neighbours)
    for fn in (ddc_loss, ddc_loss_unfold):
        value, gradient = _value_and_gradient(fn, image, alpha, window=window,
                                              neighbours=neighbours)
        assert value == pytest.approx(expected, abs=1e-12)
        assert torch.allclose(gradient, expected_gradient, atol=1e-12)


def test_a_perfect_prediction_costs_least_where_colour_follows_alpha():
    # A composite of a white person over black: colour changes exactly as fast as alpha
    # (sqrt(3) per unit of alpha), so DDC's hinge holds everywhere for the true alpha.
    alpha = torch.zeros(1, 1, 12, 12, dtype=torch.float64)
    alpha[..., 3:9, 4:10] = 1.0
    alpha[..., 3:9, 3] = 0.5
    image = alpha.expand(1, 3, 12, 12).clone()
    truth = ddc_loss(image, alpha).item()
    blurred = torch.nn.functional.avg_pool2d(alpha, 3, stride=1, padding=1,
                                             count_include_pad=False)
    shifted = torch.roll(alpha, 1, dims=3)
    for other in (blurred, shifted, torch.full_like(alpha, 0.5), 1 - alpha):
        assert ddc_loss(image, other).item() > truth


def test_ddc_from_a_blurred_mask_improves_on_a_fixed_case():
    # Two built-in natural images at 64 px; per-pixel alpha (no network) starts from the
    # blurred coarse mask and minimises known + 10 x DDC on trimaps from the mask with the
    # reference recipe (window 11, kernels 1-29): both regions must end closer to the truth.
    samples = [render_natural_sample(0, index, 64) for index in range(2)]
    image = torch.from_numpy(np.stack([s["image"] for s in samples])).permute(0, 3, 1, 2) / 255
    truth = torch.from_numpy(np.stack([s["alpha"] for s in samples]))[:, None]
    masks = [s["coarse_mask"] for s in samples]
    start = torch.from_numpy(np.stack([cv2.GaussianBlur(m, (0, 0), 1.0) for m in masks]))
    logit = torch.logit(start[:, None].clamp(0.02, 0.98)).requires_grad_(True)
    boundary = (truth > 0.05) & (truth < 0.95)

    def errors(alpha):
        squared = (alpha.detach() - truth) ** 2
        return squared.mean().item(), squared[boundary].mean().item()

    before = errors(torch.sigmoid(logit))
    optimiser = torch.optim.Adam([logit], lr=0.05)
    rng = np.random.default_rng(0)
    for _ in range(30):
        trimap = torch.from_numpy(np.stack([
            trimap_from_mask(m, rng=rng, kernel_range=DEFAULT_KERNEL_RANGE) for m in masks]))
        loss = ddc_total(image.float(), torch.sigmoid(logit), trimap[:, None])["total"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = errors(torch.sigmoid(logit))
    assert after[0] < before[0] and after[1] < before[1]
