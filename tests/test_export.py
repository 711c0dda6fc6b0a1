"""``mlb export``: ONNX with dynamic batch, height and width that matches PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_data import write_untrained_checkpoint

from mlb.checkpoint import load_model
from mlb.cli import main
from mlb.export import export_onnx, onnx_session, run_onnx


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    checkpoint = write_untrained_checkpoint(root / "model.pt", ema=True)
    return checkpoint, export_onnx(checkpoint, root / "model.onnx", weights="ema")


def test_export_cli_reports_the_difference(tmp_path, capsys):
    checkpoint = write_untrained_checkpoint(tmp_path / "model.pt")
    out = tmp_path / "onnx" / "model.onnx"
    assert main(["export", "--model", str(checkpoint), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{out}: opset 17" in printed and "max |diff|" in printed and "on 50x83" in printed
    assert out.stat().st_size > 1_000_000


@pytest.mark.parametrize("shape", [(1, 3, 32, 32), (3, 3, 45, 70)])
def test_onnx_matches_pytorch_at_any_size(exported, shape):
    checkpoint, report = exported
    assert report.weights == "ema" and report.max_abs_diff < 1e-4
    model, _ = load_model(checkpoint, weights="ema")
    image = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(image)
    session = onnx_session(report.path, threads=1)
    alpha, boundary_logit = run_onnx(session, image.numpy())
    assert alpha.shape == boundary_logit.shape == (shape[0], 1, *shape[2:])
    np.testing.assert_allclose(alpha, expected.alpha.numpy(), atol=1e-4)
    np.testing.assert_allclose(boundary_logit, expected.boundary_logit.numpy(), atol=1e-4)


def test_run_onnx_checks_its_input(exported):
    _, report = exported
    with pytest.raises(ValueError, match=r"must be \(B, 3, H, W\)"):
        run_onnx(report.path, np.zeros((1, 32, 32, 3), dtype=np.float32))


def test_exporting_missing_ema_weights_is_a_clear_error(tmp_path, capsys):
    checkpoint = write_untrained_checkpoint(tmp_path / "model.pt")
    code = main(["export", "--model", str(checkpoint), "--out", str(tmp_path / "m.onnx"),
                 "--weights", "ema"])
    assert code == 2
    assert "holds no EMA weights" in capsys.readouterr().err
