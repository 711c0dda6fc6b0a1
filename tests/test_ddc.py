"""DDC loss: the memory-lean form against the unfold reference, the known loss, the total."""

import ctypes
import ctypes.util
import re
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mlb.ddc import _window_offsets, ddc_loss, ddc_loss_unfold, ddc_total, known_loss


def _value_and_grad(fn, image, alpha, **options):
    alpha = alpha.detach().clone().requires_grad_(True)
    loss = fn(image, alpha, **options)
    (grad,) = torch.autograd.grad(loss, alpha)
    return loss.detach(), grad


def _assert_same(image, alpha, atol=1e-5, **options):
    lean, lean_grad = _value_and_grad(ddc_loss, image, alpha, **options)
    reference, reference_grad = _value_and_grad(ddc_loss_unfold, image, alpha, **options)
    assert lean.item() == pytest.approx(reference.item(), abs=atol)
    assert torch.allclose(lean_grad, reference_grad, atol=atol, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(1, 13, 17), (3, 21, 9), (2, 5, 4)])
def test_lean_matches_unfold_on_random_images(dtype, shape):
    batch, height, width = shape
    generator = torch.Generator().manual_seed(sum(shape))
    image = torch.rand(batch, 3, height, width, dtype=dtype, generator=generator)
    alpha = torch.rand(batch, 1, height, width, dtype=dtype, generator=generator)
    _assert_same(image, alpha)


def test_lean_matches_unfold_with_other_window_and_neighbours():
    generator = torch.Generator().manual_seed(3)
    image = torch.rand(2, 3, 15, 12, dtype=torch.float64, generator=generator)
    alpha = torch.rand(2, 1, 15, 12, dtype=torch.float64, generator=generator)
    _assert_same(image, alpha, window=5, neighbours=7)
    _assert_same(image, alpha, window=1, neighbours=1)  # only the pixel itself: loss 0
    _assert_same(image, alpha, window=3, neighbours=9)  # every candidate kept


@settings(max_examples=10, deadline=None)
@given(levels=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_lean_matches_unfold_on_quantised_images_with_ties(levels, seed):
    # Few colour levels make equal distances everywhere: only a shared tie rule agrees.
    generator = torch.Generator().manual_seed(seed)
    image = torch.randint(0, levels, (2, 3, 19, 23), generator=generator) * (1 / 255)
    alpha = torch.rand(2, 1, 19, 23, generator=generator)
    _assert_same(image.float(), alpha)


def test_batch_chunks_give_the_same_loss_and_gradient():
    generator = torch.Generator().manual_seed(4)
    image = torch.rand(5, 3, 16, 11, generator=generator)
    alpha = torch.rand(5, 1, 16, 11, generator=generator)
    whole, whole_grad = _value_and_grad(ddc_loss, image, alpha)
    for chunk in (1, 2, 5, 8):
        chunked, chunked_grad = _value_and_grad(ddc_loss, image, alpha, batch_chunk=chunk)
        assert chunked.item() == pytest.approx(whole.item(), abs=1e-6)
        assert torch.allclose(chunked_grad, whole_grad, atol=1e-7)


def _brute_force_ddc(image, alpha, window, neighbours):
    """Pixel by pixel in plain Python: rank candidates by (squared distance, |offset|^2, raster)."""
    batch, channels, height, width = image.shape
    radius = window // 2
    total = 0.0
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                candidates = []
                for raster, (dy, dx) in enumerate(
                    (dy, dx)
                    for dy in range(-radius, radius + 1)
                    for dx in range(-radius, radius + 1)
                ):
                    inside = 0 <= y + dy < height and 0 <= x + dx < width
                    squared = 0.0
                    for c in range(channels):
                        other = image[b, c, y + dy, x + dx].item() if inside else 0.0
                        squared += (image[b, c, y, x].item() - other) ** 2
                    other_alpha = alpha[b, 0, y + dy, x + dx].item() if inside else 0.0
                    candidates.append((squared, dy * dy + dx * dx, raster, other_alpha))
                for squared, _, _, other_alpha in sorted(candidates)[:neighbours]:
                    total += abs(squared**0.5 - (alpha[b, 0, y, x].item() - other_alpha))
    return total / (batch * neighbours * height * width)


def test_tie_rule_order_puts_the_pixel_first_then_nearest_offsets():
    offsets = _window_offsets(11)
    assert offsets[0] == (0, 0)
    assert offsets[1:5] == [(-1, 0), (0, -1), (0, 1), (1, 0)]
    assert offsets[5:9] == [(-1, -1), (-1, 1), (1, -1), (1, 1)]  # raster order among equals
    assert sorted(offsets) == sorted((dy, dx) for dy in range(-5, 6) for dx in range(-5, 6))


@pytest.mark.parametrize("window, neighbours", [(11, 11), (5, 6)])
def test_both_forms_follow_the_tie_rule_of_a_brute_force_count(window, neighbours):
    # Quantised colours (many equal distances) and a flat patch, with the zero padding in play.
    generator = torch.Generator().manual_seed(window)
    image = torch.randint(0, 3, (1, 3, 7, 6), generator=generator, dtype=torch.float64) / 2
    image[..., 2:5, 1:4] = 0.5
    alpha = torch.rand(1, 1, 7, 6, generator=generator, dtype=torch.float64)
    expected = _brute_force_ddc(image, alpha, window, neighbours)
    options = {"window": window, "neighbours": neighbours}
    assert ddc_loss(image, alpha, **options).item() == pytest.approx(expected, abs=1e-12)
    assert ddc_loss_unfold(image, alpha, **options).item() == pytest.approx(expected, abs=1e-12)


def test_hand_computed_row_with_padding_ties():
    # A 1x3 grey row (0.5), alpha (0, 0.1, 0.3), 3x3 window, 3 neighbours. The padding is
    # d = sqrt(3 * 0.25) away. Pixel 0 keeps itself, its right neighbour and, of the equally far
    # padding offsets, (-1, 0) (first in tie order): 0 + 0.1 + d. Pixel 1 keeps its row: 0.1 +
    # 0.2. Pixel 2: 0 + 0.2 + |d - 0.3|. Mean over 9 terms.
    image = torch.full((1, 3, 1, 3), 0.5, dtype=torch.float64)
    alpha = torch.tensor([0.0, 0.1, 0.3], dtype=torch.float64).view(1, 1, 1, 3)
    d = 0.75**0.5
    expected = (0.1 + d + 0.1 + 0.2 + 0.2 + (d - 0.3)) / 9
    for fn in (ddc_loss, ddc_loss_unfold):
        assert fn(image, alpha, window=3, neighbours=3).item() == pytest.approx(expected)


def test_flat_image_and_flat_alpha_cost_nothing():
    # Constant colour and alpha: every kept pair has d = 0 and equal alpha; the zero padding
    # (colour 0) is farther than the many in-frame pixels of equal colour, so never kept.
    image = torch.full((2, 3, 12, 14), 0.7)
    alpha = torch.full((2, 1, 12, 14), 0.3)
    assert ddc_loss(image, alpha).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("step", [0.0, 0.1, 0.2 * 3**0.5, 0.5, -0.5])
def test_signed_difference_makes_a_hinge_across_a_colour_edge(step):
    # Two grey pixels 0.2 apart per channel: d = 0.2 * sqrt 3; the padding (0) is farther, so
    # with 2 neighbours each pixel keeps itself and the other. The two signed terms add up to
    # |d - s| + |d + s| = 2 * max(|s|, d) for s = alpha_0 - alpha_1, over 4 terms.
    image = torch.tensor([0.5, 0.7], dtype=torch.float64).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    alpha = torch.tensor([0.5, 0.5 - step], dtype=torch.float64).view(1, 1, 1, 2)
    loss = ddc_loss(image, alpha, window=3, neighbours=2)
    assert loss.item() == pytest.approx(max(abs(step), 0.2 * 3**0.5) / 2)


def test_known_loss_by_hand():
    pred = torch.tensor([[[[0.2, 0.9], [0.5, 0.4]]]])
    trimap = torch.tensor([[[[0.0, 1.0], [0.5, 1.0]]]])
    # known: 0.2 (target 0), 0.9 (target 1), 0.4 (target 1) -> (0.2 + 0.1 + 0.6) / 3
    assert known_loss(pred, trimap).item() == pytest.approx(0.3)


def test_known_loss_in_mse_by_hand_and_its_gradient_fades_near_the_target():
    pred = torch.tensor([[[[0.2, 0.9], [0.5, 0.4]]]], requires_grad=True)
    trimap = torch.tensor([[[[0.0, 1.0], [0.5, 1.0]]]])
    loss = known_loss(pred, trimap, norm="mse")
    # known: 0.2 (target 0), 0.9 (target 1), 0.4 (target 1) -> (0.04 + 0.01 + 0.36) / 3
    assert loss.item() == pytest.approx(0.41 / 3)
    loss.backward()
    # d/dp of (p - t)^2 / 3 is 2 (p - t) / 3: small near the target, unlike L1's constant 1/3
    expected = torch.tensor([[[[0.4, -0.2], [0.0, -1.2]]]]) / 3
    assert torch.allclose(pred.grad, expected)
    with pytest.raises(ValueError, match="norm"):
        known_loss(pred, trimap, norm="l2")  # type: ignore[arg-type]


def test_ddc_total_takes_the_known_norm():
    generator = torch.Generator().manual_seed(6)
    image = torch.rand(1, 3, 9, 9, generator=generator)
    alpha = torch.rand(1, 1, 9, 9, generator=generator)
    trimap = torch.randint(0, 3, (1, 1, 9, 9), generator=generator) / 2
    terms = ddc_total(image, alpha, trimap, known_norm="mse")
    assert terms["known"].item() == pytest.approx(known_loss(alpha, trimap, norm="mse").item())
    assert terms["known"].item() < known_loss(alpha, trimap).item()


def test_known_loss_without_known_pixels_is_zero_with_a_gradient():
    pred = torch.rand(2, 1, 4, 4, requires_grad=True)
    loss = known_loss(pred, torch.full((2, 1, 4, 4), 0.5))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(pred.grad, torch.zeros_like(pred))


def test_ddc_total_weights_the_ddc_term():
    generator = torch.Generator().manual_seed(5)
    image = torch.rand(2, 3, 9, 9, generator=generator)
    alpha = torch.rand(2, 1, 9, 9, generator=generator)
    trimap = torch.randint(0, 3, (2, 1, 9, 9), generator=generator) / 2
    terms = ddc_total(image, alpha, trimap, ddc_weight=3.0)
    assert set(terms) == {"known", "ddc", "total"}
    assert terms["known"].item() == pytest.approx(known_loss(alpha, trimap).item())
    assert terms["ddc"].item() == pytest.approx(ddc_loss(image, alpha).item())
    assert terms["total"].item() == pytest.approx(terms["known"].item() + 3 * terms["ddc"].item())


def test_bad_arguments_are_rejected():
    image, alpha = torch.rand(1, 3, 8, 8), torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="window"):
        ddc_loss(image, alpha, window=4)
    with pytest.raises(ValueError, match="neighbours"):
        ddc_loss(image, alpha, window=3, neighbours=10)
    with pytest.raises(ValueError, match="batch_chunk"):
        ddc_loss(image, alpha, batch_chunk=0)
    with pytest.raises(ValueError, match="differ"):
        ddc_loss(image, torch.rand(1, 1, 8, 7))
    with pytest.raises(ValueError, match="trimap"):
        known_loss(alpha, torch.rand(1, 1, 8, 7))


def _peak_resident_bytes(fn):
    """Peak resident memory added while ``fn`` runs (Linux: VmHWM reset through clear_refs).

    ``malloc_trim`` first hands freed heap back to the OS, so the baseline is what is live.
    """
    status, clear_refs = Path("/proc/self/status"), Path("/proc/self/clear_refs")
    libc_name = ctypes.util.find_library("c")
    if not status.exists() or libc_name is None:
        pytest.skip("peak memory is measured through Linux /proc and glibc")

    def read(key):
        return int(re.search(rf"{key}:\s+(\d+) kB", status.read_text()).group(1)) * 1024

    ctypes.CDLL(libc_name).malloc_trim(0)
    try:
        clear_refs.write_text("5")
    except OSError as error:
        pytest.skip(f"cannot reset the peak resident size: {error}")
    before = read("VmRSS")
    fn()
    return read("VmHWM") - before


def test_lean_form_needs_less_memory_than_unfold():
    generator = torch.Generator().manual_seed(6)
    image = torch.rand(2, 3, 160, 160, generator=generator)
    alpha = torch.rand(2, 1, 160, 160, generator=generator, requires_grad=True)

    def run(fn):
        return lambda: fn(image, alpha).backward()

    unfold_peak = _peak_resident_bytes(run(ddc_loss_unfold))
    lean_peak = _peak_resident_bytes(run(ddc_loss))
    # The reference holds (B, 3, 121, H, W) colours, ~74 MB here, several times over.
    assert unfold_peak > 150e6
    assert lean_peak < unfold_peak / 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_lean_matches_unfold_on_gpu():
    generator = torch.Generator().manual_seed(7)
    image = torch.rand(3, 3, 70, 45, generator=generator).cuda()
    alpha = torch.rand(3, 1, 70, 45, generator=generator).cuda()
    _assert_same(image, alpha)
    cpu, _ = _value_and_grad(ddc_loss, image.cpu(), alpha.cpu())
    gpu, _ = _value_and_grad(ddc_loss, image, alpha)
    assert gpu.device.type == "cuda"
    assert gpu.item() == pytest.approx(cpu.item(), abs=1e-5)
