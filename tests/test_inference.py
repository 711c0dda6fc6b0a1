"""predict_images and its stages: sizes, padding, numerics, determinism, devices."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from mlb.device import resolve_device
from mlb.inference import (
    InferenceConfig,
    pad_batch,
    predict_images,
    prepare_batch,
    resize_short_side,
    resized_size,
    run_model,
    to_original_size,
)
from mlb.models import build_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("unet_r18_w05").eval()


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@given(st.integers(1, 400), st.integers(1, 400), st.integers(8, 96))
def test_resized_size_keeps_short_side_and_aspect(height, width, short_side):
    new_height, new_width = resized_size(height, width, short_side=short_side)
    assert min(new_height, new_width) == short_side
    # Rounding the long side moves the aspect ratio by at most half a pixel.
    long_side, new_long = max(height, width), max(new_height, new_width)
    assert abs(new_long - long_side * short_side / min(height, width)) <= 0.5 + 1e-9


def test_resize_short_side_shrinks_and_enlarges():
    assert resize_short_side(_image(128, 200), short_side=64).shape == (64, 100, 3)
    assert resize_short_side(_image(20, 10), short_side=64).shape == (128, 64, 3)
    image = _image(64, 80)
    assert resize_short_side(image, short_side=64) is image


def test_prepare_batch_pads_by_replicating_edges():
    images = [_image(64, 64, 1), _image(128, 64, 2)]  # -> 64x64 and 128x64: no resizing
    batch = prepare_batch(images, short_side=64)
    assert batch.pixels.shape == (2, 3, 128, 64) and batch.pixels.dtype == torch.uint8
    assert batch.sizes == ((64, 64), (128, 64)) and batch.original_sizes == ((64, 64), (128, 64))
    first = batch.pixels[0].permute(1, 2, 0).numpy()
    assert np.array_equal(first[:64], images[0])
    assert np.array_equal(first[64:], np.repeat(images[0][-1:], 64, axis=0))


def test_prepare_batch_rejects_bad_images():
    with pytest.raises(ValueError, match="image 1 of the batch"):
        prepare_batch([_image(8, 8), np.zeros((8, 8), np.uint8)], short_side=8)
    with pytest.raises(ValueError, match="at least one"):
        prepare_batch([], short_side=8)
    with pytest.raises(ValueError, match="one original size per image"):
        pad_batch([_image(8, 8)], original_sizes=[])


def test_predict_images_returns_original_sizes_in_order(model):
    sizes = [(40, 56), (90, 50), (64, 64), (33, 131)]
    images = [_image(h, w, seed) for seed, (h, w) in enumerate(sizes)]
    predictions = predict_images(model, images, short_side=64, batch_size=3)
    assert [p.alpha.shape for p in predictions] == sizes
    for prediction in predictions:
        for values in (prediction.alpha, prediction.boundary):
            assert values.dtype == np.float32
            assert values.min() >= 0.0 and values.max() <= 1.0


def test_predict_images_matches_the_network_without_resizing(model):
    # An image already at the short side, alone in its batch: no resize, no padding, so the
    # prediction is exactly the network's (boundary through the sigmoid).
    image = _image(64, 80, 3)
    prediction = predict_images(model, [image], short_side=64)[0]
    with torch.no_grad():
        output = model(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)
    assert np.allclose(prediction.alpha, output.alpha[0, 0].numpy(), atol=1e-6)
    assert np.allclose(prediction.boundary, torch.sigmoid(output.boundary_logit)[0, 0].numpy(),
                       atol=1e-6)


def test_predictions_are_deterministic(model):
    images = [_image(48, 70, 4), _image(70, 48, 5)]
    first = predict_images(model, images, short_side=64)
    second = predict_images(model, images, short_side=64)
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(a.alpha, b.alpha) and np.array_equal(a.boundary, b.boundary)


def test_stages_compose_to_predict_images(model):
    images = [_image(50, 60, 6), _image(100, 70, 7)]
    batch = prepare_batch(images, short_side=64)
    alpha, boundary = run_model(model, batch)
    assert alpha.shape == boundary.shape == (2, 1, *batch.pixels.shape[-2:])
    pairs = to_original_size(batch, alpha, boundary)
    predictions = predict_images(model, images, short_side=64)
    for (pair_alpha, pair_boundary), prediction in zip(pairs, predictions, strict=True):
        assert np.array_equal(pair_alpha[0, 0].numpy(), prediction.alpha)
        assert np.array_equal(pair_boundary[0, 0].numpy(), prediction.boundary)


def test_config_and_devices():
    assert InferenceConfig().short_side == 512 and InferenceConfig().device == "auto"
    with pytest.raises(ValueError, match="device"):
        InferenceConfig(device="graphics-card")
    with pytest.raises(ValueError):
        InferenceConfig(short_side=0)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected and resolve_device(None).type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():  # one contract for inference and training alike
        with pytest.raises(ValueError, match="'cuda:1' was asked for but CUDA is not available"):
            resolve_device("cuda:1")


@pytest.mark.gpu
def test_gpu_autocast_is_close_to_cpu_float32(model):
    images = [_image(64, 96, 8), _image(80, 64, 9)]
    cpu = predict_images(model, images, short_side=64)
    gpu = predict_images(copy.deepcopy(model), images, short_side=64, device="cuda")
    for a, b in zip(cpu, gpu, strict=True):
        assert a.alpha.shape == b.alpha.shape and b.alpha.dtype == np.float32
        assert np.abs(a.alpha - b.alpha).max() < 0.05  # bfloat16 autocast vs float32
        assert np.abs(a.boundary - b.boundary).max() < 0.05


def test_every_request_that_runs_a_network_composes_one_inference_config():
    """Relabel, evaluate, the EMA round and the pipeline share InferenceConfig; requests
    written for earlier releases with the settings flat are moved under ``inference``."""
    from pydantic import ValidationError

    from flows.pipeline import PipelineRequest
    from mlb.evaluate import EvaluateRequest
    from mlb.inference import InferenceConfig
    from mlb.labels.request import RelabelConfig
    from mlb.train import TrainConfig
    from mlb.train.ema_round import EmaRoundRequest

    paths = {"images": "i", "masks": "m", "store": "s", "validation_images": "vi",
             "validation_alphas": "va", "work": "w", "student": "s.pt"}
    requests = {
        "relabel": lambda **kw: RelabelConfig(**kw),
        "evaluate": lambda **kw: EvaluateRequest(model="m.pt", images="i", alphas="a", **kw),
        "ema": lambda **kw: EmaRoundRequest(train=TrainConfig(steps=1), **paths, **kw),
        "pipeline": lambda **kw: PipelineRequest(work="w", **kw),
    }
    for name, make in requests.items():
        assert isinstance(make().inference, InferenceConfig), name
        nested = make(inference={"short_side": 320, "device": "cpu"})
        assert make(short_side=320, device="cpu") == nested, name
        assert nested.inference.short_side == 320
        with pytest.raises(ValidationError, match="short_side is given twice"):
            make(short_side=256, inference={"short_side": 320})
    # Relabelling batches 8 by default (part of existing version ids); the rest batch 4.
    assert RelabelConfig().inference.batch_size == 8
    assert RelabelConfig(inference={"short_side": 256}).inference.batch_size == 8
    assert EvaluateRequest(model="m", images="i", alphas="a").inference.batch_size == 4


def test_a_boolean_is_refused_where_a_number_is_meant():
    # every FrozenConfig: lax mode would read true as 1 (a batch of one, a short side of 1)
    with pytest.raises(ValidationError, match=r"short_side\n.*expected int, not a boolean"):
        InferenceConfig(short_side=True)
    with pytest.raises(ValidationError, match=r"batch_size\n.*not a boolean"):
        InferenceConfig.model_validate({"batch_size": False})
    config = InferenceConfig.model_validate({"amp": False, "channels_last": True})
    assert config.amp is False and config.batch_size == 4


def test_numpy_and_container_booleans_are_refused_too():
    with pytest.raises(ValidationError, match=r"short_side\n.*not a boolean \(True\)"):
        InferenceConfig(short_side=np.True_)
    from mlb.experiments.reproduce import PRESETS, ReproduceConfig

    tiny = PRESETS["tiny"].model_dump()
    for field, value in (("seeds", {True}), ("crop_sizes", [32, np.True_])):
        with pytest.raises(ValidationError, match=rf"{field}\n.*not a boolean"):
            ReproduceConfig.model_validate({**tiny, field: value})
