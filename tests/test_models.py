"""Contract tests for the matting networks, one class per interface, over every registered name."""

import copy
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from torchvision.models import resnet18, resnet50

from mlb.models import (
    MattingNet,
    MattingOutput,
    ModelConfig,
    ModelOptions,
    available_models,
    build_model,
    build_model_from_config,
)
from mlb.models.unet import pad_to_stride


def _images(batch: int, height: int, width: int, *, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def _randomise_batchnorm(model: torch.nn.Module) -> None:
    """Non-trivial running statistics, so that eval-mode comparisons exercise them."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            size = module.running_mean.shape
            module.running_mean.copy_(torch.rand(size, generator=generator) * 0.2 - 0.1)
            module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: the machines are shared, and two threads under contention made
    the ResNet-101 sweep several times slower, not faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=available_models())
def network(request) -> MattingNet:
    torch.manual_seed(0)
    return build_model(request.param)


class TestNetworkContract:
    """Every registered network: any input size, shapes, ranges, gradients, determinism."""

    @pytest.mark.parametrize(("batch", "height", "width"), [(1, 97, 131), (2, 17, 23)])
    def test_forward_backward(self, network, batch, height, width):
        network.train()
        network.zero_grad(set_to_none=True)
        output = network(_images(batch, height, width))

        assert isinstance(output, MattingOutput)
        assert output.alpha.shape == output.boundary_logit.shape == (batch, 1, height, width)
        assert output.alpha.min() >= 0 and output.alpha.max() <= 1
        assert torch.isfinite(output.alpha).all() and torch.isfinite(output.boundary_logit).all()

        target = torch.zeros_like(output.alpha)
        target[..., height // 3 :, :] = 1
        loss = F.l1_loss(output.alpha, target) + F.binary_cross_entropy_with_logits(
            output.boundary_logit, target
        )
        loss.backward()
        no_grad = [name for name, p in network.named_parameters() if p.grad is None]
        not_finite = [n for n, p in network.named_parameters() if not p.grad.isfinite().all()]
        assert not no_grad, f"parameters without gradient: {no_grad[:5]}"
        assert not not_finite, f"non-finite gradients: {not_finite[:5]}"
        assert any(p.grad.abs().sum() > 0 for p in network.encoder.parameters())

    def test_eval_is_deterministic_and_per_sample(self, network):
        network.eval()
        images = _images(2, 21, 30, seed=3)
        with torch.no_grad():
            first, second = network(images), network(images)
            single = network(images[1:])
        assert torch.equal(first.alpha, second.alpha)
        assert torch.equal(first.boundary_logit, second.boundary_logit)
        # no information flows between samples of a batch in eval mode
        torch.testing.assert_close(first.alpha[1:], single.alpha, atol=1e-5, rtol=1e-4)

    def test_inputs_smaller_than_the_stride(self, network):
        assert network.stride in (16, 32)
        network.eval()
        with torch.no_grad():
            output = network(_images(1, 5, 3))
        assert output.alpha.shape == (1, 1, 5, 3)
        assert torch.isfinite(output.boundary_logit).all()

    def test_channels_last_gives_the_same_output(self, network):
        network.eval()
        images = _images(1, 20, 35, seed=4)
        converted = copy.deepcopy(network).to(memory_format=torch.channels_last)
        with torch.no_grad():
            expected = network(images)
            output = converted(images.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(output.alpha, expected.alpha, atol=1e-5, rtol=1e-4)


class TestPadding:
    @settings(max_examples=30, deadline=None)
    @given(height=st.integers(1, 70), width=st.integers(1, 70))
    def test_pad_to_stride_keeps_the_image_top_left(self, height, width):
        image = _images(1, height, width)
        padded = pad_to_stride(image, 16)
        assert padded.shape[-2] % 16 == 0 and padded.shape[-1] % 16 == 0
        assert padded.shape[-2] - height < 16 and padded.shape[-1] - width < 16
        assert torch.equal(padded[..., :height, :width], image)


class TestRegistry:
    def test_required_names_are_registered(self):
        assert {"unet_r101", "unet_r50", "unet_r18", "unet_r18_w05"} <= set(available_models())

    def test_unknown_name_lists_the_available_ones(self):
        with pytest.raises(ValueError, match="available options are") as raised:
            build_model("unet_r34")
        assert "unet_r34" in str(raised.value)
        assert all(name in str(raised.value) for name in available_models())

    def test_unknown_option_is_a_value_error_naming_it(self):
        with pytest.raises(ValueError, match="pretrained_encoder_path"):
            build_model("unet_r18_w05", pretrained_encoder_path="x.pth")

    def test_half_width_halves_the_encoder(self):
        full, half = build_model("unet_r18"), build_model("unet_r18_w05")
        assert half.encoder.out_channels == tuple(c // 2 for c in full.encoder.out_channels)
        assert half.encoder.conv1.out_channels == full.encoder.conv1.out_channels // 2
        assert half.decode1.refine[0].out_channels == full.decode1.refine[0].out_channels // 2


def _save_torchvision_state(model: torch.nn.Module, path: Path) -> dict[str, torch.Tensor]:
    _randomise_batchnorm(model)
    state = model.state_dict()
    torch.save(state, path)
    return state


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.manual_seed(5)
    _save_torchvision_state(resnet18(weights=None), path)
    return path


class TestPretrainedEncoder:
    @pytest.mark.parametrize(
        ("name", "constructor"), [("unet_r18", resnet18), ("unet_r50", resnet50)]
    )
    def test_torchvision_weights_round_trip(self, tmp_path, name, constructor):
        torch.manual_seed(6)
        source = _save_torchvision_state(constructor(weights=None), tmp_path / "resnet.pth")
        model = build_model(name, pretrained_encoder=tmp_path / "resnet.pth")
        loaded = model.encoder.state_dict()
        expected = {key: value for key, value in source.items() if not key.startswith("fc.")}
        assert loaded.keys() == expected.keys()
        unequal = [key for key in expected if not torch.equal(loaded[key], expected[key])]
        assert not unequal, f"not loaded: {unequal[:5]}"

    def test_missing_file_is_named(self, tmp_path):
        missing = tmp_path / "no-such-weights.pth"
        with pytest.raises(FileNotFoundError, match=r"no-such-weights\.pth"):
            build_model("unet_r18", pretrained_encoder=missing)

    @pytest.mark.parametrize(
        ("name", "first_problem"),
        [("unet_r50", "missing layer1.0.conv3.weight"), ("unet_r18_w05", "conv1.weight: shape")],
    )
    def test_mismatched_file_names_file_and_keys(self, resnet18_file, name, first_problem):
        with pytest.raises(ValueError, match=r"resnet18\.pth") as raised:
            build_model(name, pretrained_encoder=resnet18_file)
        assert first_problem in str(raised.value)

    def test_file_that_is_not_a_state_dict(self, tmp_path):
        torch.save(torch.zeros(3), tmp_path / "tensor.pth")
        with pytest.raises(ValueError, match=r"tensor\.pth.*expected a ResNet state_dict"):
            build_model("unet_r18", pretrained_encoder=tmp_path / "tensor.pth")


class TestModelConfig:
    def test_round_trip_through_a_weights_only_checkpoint(self, tmp_path, resnet18_file):
        config = ModelConfig(
            name="unet_r18", options={"pretrained_encoder": resnet18_file, "aspp_rates": [1, 3]}
        )
        assert config.options.pretrained_encoder == str(resnet18_file)
        assert config.options.aspp_rates == (1, 3)
        torch.save({"model_config": config.model_dump()}, tmp_path / "checkpoint.pt")
        stored = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["model_config"]
        assert ModelConfig(**stored) == config
        assert ModelConfig.model_validate_json(config.model_dump_json()) == config

    def test_build_from_config(self, tmp_path):
        config = ModelConfig(name="unet_r18_w05", options=ModelOptions(aspp_rates=(1, 2)))
        model = build_model_from_config(config)
        assert len(model.aspp.branches) == 2
        assert model.encoder.out_channels == build_model("unet_r18_w05").encoder.out_channels
        gone = ModelConfig(name="unet_r18", options={"pretrained_encoder": tmp_path / "gone.pth"})
        with pytest.raises(FileNotFoundError, match=r"gone\.pth"):
            build_model_from_config(gone)
        assert isinstance(build_model_from_config(gone, load_pretrained=False), MattingNet)

    def test_unknown_name_and_option_are_rejected_at_construction(self):
        with pytest.raises(ValidationError, match="available options are"):
            ModelConfig(name="unet_r34")
        with pytest.raises(ValidationError, match="rates"):
            ModelConfig(name="unet_r18", options={"rates": [1]})


class TestOnnxExport:
    def test_dynamic_size_export_matches_pytorch(self, tmp_path):
        onnx = pytest.importorskip("onnx")
        onnxruntime = pytest.importorskip("onnxruntime")
        torch.manual_seed(7)
        model = build_model("unet_r18_w05").eval()
        _randomise_batchnorm(model)
        axes = {0: "batch", 2: "height", 3: "width"}
        path = tmp_path / "unet_r18_w05.onnx"
        with warnings.catch_warnings():
            # the legacy TorchScript exporter announces its own deprecation
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model,
                (_images(1, 64, 96),),
                path,
                dynamo=False,
                opset_version=17,
                input_names=["image"],
                output_names=list(MattingOutput._fields),
                dynamic_axes={name: axes for name in ["image", *MattingOutput._fields]},
            )
        onnx.checker.check_model(str(path))
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for batch, height, width in [(2, 97, 131), (1, 17, 23)]:
            images = _images(batch, height, width, seed=8)
            with torch.no_grad():
                expected = model(images)
            alpha, boundary_logit = session.run(None, {"image": images.numpy()})
            torch.testing.assert_close(torch.from_numpy(alpha), expected.alpha, atol=1e-4, rtol=0)
            torch.testing.assert_close(
                torch.from_numpy(boundary_logit), expected.boundary_logit, atol=1e-4, rtol=0
            )
