"""DDC against an independent, direct implementation: a loop over pixels on tiny tensors.

The loop is written from method.md section 2, not from mlb.ddc: for every pixel, every offset
of the window (zero padding outside the frame for colour and alpha), the colour distance, a
sort by (distance, squared offset length, raster order), the kept candidates, and the signed
term |d_ij - (alpha_i - alpha_j)|, summed as torch scalars so that autograd gives the gradient
too. Both library forms must agree with it in value and gradient.
"""

import pytest
import torch

from mlb.ddc import ddc_loss, ddc_loss_unfold


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
