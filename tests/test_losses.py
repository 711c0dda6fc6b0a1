"""Supervised matting losses: boundary target, Laplacian pyramid, named terms."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from mlb.losses import (
    LossConfig,
    boundary_target,
    laplacian_loss,
    matting_loss,
)

sizes = st.integers(min_value=1, max_value=40)


def test_boundary_target_thresholds_are_strict():
    alpha = torch.tensor([0.0, 0.05, 0.0501, 0.5, 0.9499, 0.95, 1.0], dtype=torch.float64)
    target = boundary_target(alpha)
    assert target.dtype == torch.float64
    assert target.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0]


def test_laplacian_is_zero_for_equal_inputs_and_positive_otherwise():
    torch.manual_seed(0)
    alpha = torch.rand(2, 1, 32, 32)
    assert laplacian_loss(alpha, alpha).item() == 0.0
    assert laplacian_loss(alpha, alpha.flip(-1)).item() > 0.0


@settings(max_examples=25, deadline=None)
@given(height=st.integers(3, 40), width=st.integers(3, 40), offset=st.floats(-1.0, 1.0))
def test_laplacian_ignores_a_constant_offset_at_any_size(height, width, offset):
    # Reflect padding and edge-padding odd sides keep a constant image constant through
    # down- and up-sampling, so every band-pass level of a constant is exactly zero.
    alpha = torch.rand(1, 1, height, width, dtype=torch.float64)
    loss = laplacian_loss(alpha + offset, alpha)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(height=sizes, width=sizes)
def test_laplacian_works_for_any_size_and_is_symmetric(height, width):
    pred = torch.rand(2, 1, height, width, requires_grad=True)
    true = torch.rand(2, 1, height, width)
    loss = laplacian_loss(pred, true)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() >= 0.0
    assert torch.isfinite(pred.grad).all()
    assert loss.item() == pytest.approx(laplacian_loss(true, pred.detach()).item(), rel=1e-6)
    if min(height, width) < 3:  # no level fits: documented as 0
        assert loss.item() == 0.0


def test_laplacian_finest_level_only_equals_hand_computation():
    # One level on a 4x4 impulse: level 0 is x - up(down(x)); with pred = 0 the loss is the
    # mean absolute value of that band, divided by levels (1).
    true = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    true[0, 0, 1, 1] = 1.0
    taps = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=torch.float64)
    kernel = (torch.outer(taps, taps) / 256.0)[None, None]

    def blur(x):
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel)

    down = blur(true)[..., ::2, ::2]
    up = torch.zeros_like(true)
    up[..., ::2, ::2] = 4 * down
    band = true - blur(up)
    expected = band.abs().mean()
    assert laplacian_loss(torch.zeros_like(true), true, levels=1).item() == pytest.approx(
        expected.item()
    )


def test_levels_stop_early_on_small_images():
    # 5x5 -> levels at 5x5 and 3x3, then 2x2 is too small: levels=2 and levels=9 differ only
    # in the division by the requested count.
    torch.manual_seed(1)
    pred, true = torch.rand(1, 1, 5, 5), torch.rand(1, 1, 5, 5)
    two = laplacian_loss(pred, true, levels=2)
    nine = laplacian_loss(pred, true, levels=9)
    assert nine.item() == pytest.approx(two.item() * 2 / 9, rel=1e-6)


def test_matting_loss_terms_and_total():
    torch.manual_seed(2)
    pred = torch.rand(2, 1, 16, 16)
    logit = torch.randn(2, 1, 16, 16)
    true = torch.rand(2, 1, 16, 16)
    terms = matting_loss(pred, logit, true, boundary_weight=0.5)
    assert set(terms) == {"l1", "laplacian", "boundary_bce", "total"}
    assert terms["l1"].item() == pytest.approx((pred - true).abs().mean().item())
    expected_bce = F.binary_cross_entropy_with_logits(logit, boundary_target(true))
    assert terms["boundary_bce"].item() == pytest.approx(expected_bce.item())
    total = terms["l1"] + terms["laplacian"] + 0.5 * terms["boundary_bce"]
    assert terms["total"].item() == pytest.approx(total.item())


def test_matting_loss_alpha_term_in_mse_is_named_so():
    torch.manual_seed(3)
    pred, logit, true = torch.rand(1, 1, 8, 8), torch.randn(1, 1, 8, 8), torch.rand(1, 1, 8, 8)
    terms = matting_loss(pred, logit, true, alpha_norm="mse")
    assert set(terms) == {"mse", "laplacian", "boundary_bce", "total"}
    assert terms["mse"].item() == pytest.approx(((pred - true) ** 2).mean().item())
    l1 = matting_loss(pred, logit, true)
    assert terms["total"].item() == pytest.approx(
        (l1["total"] - l1["l1"] + terms["mse"]).item())
    with pytest.raises(ValueError, match="alpha_norm"):
        matting_loss(pred, logit, true, alpha_norm="l2")  # type: ignore[arg-type]


def test_matting_loss_accepts_a_soft_boundary_target():
    logit = torch.zeros(1, 1, 8, 8)  # sigmoid 0.5 everywhere
    alpha = torch.full((1, 1, 8, 8), 0.5)
    soft = matting_loss(alpha, logit, alpha, true_boundary=torch.full_like(alpha, 0.5))
    hard = matting_loss(alpha, logit, alpha)  # boundary_target(0.5) == 1
    # BCE(p=0.5, y) = log 2 for every y: the soft target must not be rejected or rounded.
    assert soft["boundary_bce"].item() == pytest.approx(torch.log(torch.tensor(2.0)).item())
    assert hard["boundary_bce"].item() == pytest.approx(soft["boundary_bce"].item())
    assert soft["total"].item() == pytest.approx(0.01 * soft["boundary_bce"].item())


def test_matting_loss_gradients_reach_both_heads_and_keep_dtype():
    pred = torch.rand(1, 1, 12, 10, dtype=torch.float64, requires_grad=True)
    logit = torch.randn(1, 1, 12, 10, dtype=torch.float64, requires_grad=True)
    terms = matting_loss(pred, logit, torch.rand(1, 1, 12, 10, dtype=torch.float64))
    terms["total"].backward()
    assert all(t.dtype == torch.float64 for t in terms.values())
    assert pred.grad.abs().sum() > 0 and logit.grad.abs().sum() > 0


def test_mismatched_shapes_are_rejected_with_names():
    with pytest.raises(ValueError, match="true_boundary"):
        matting_loss(
            torch.rand(1, 1, 4, 4),
            torch.rand(1, 1, 4, 4),
            torch.rand(1, 1, 4, 4),
            true_boundary=torch.rand(1, 1, 4, 5),
        )
    with pytest.raises(ValueError, match="4-D"):
        laplacian_loss(torch.rand(4, 4), torch.rand(4, 4))


def test_loss_config_defaults_and_validation():
    config = LossConfig()
    assert (config.boundary_weight, config.laplacian_levels, config.ddc_weight) == (0.01, 5, 10.0)
    with pytest.raises(ValidationError):
        LossConfig(laplacian_levels=0)
    with pytest.raises(ValidationError):
        LossConfig(boundary_wieght=0.1)
