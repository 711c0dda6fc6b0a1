"""ResNet encoder without the stem max-pool, at full or reduced width.

Built from torchvision's ``BasicBlock`` / ``Bottleneck`` with torchvision's parameter names
(``conv1``, ``bn1``, ``layer1`` ... ``layer4``), so a torchvision ResNet ``state_dict`` (minus
``fc.``) loads into the full-width encoders unchanged. The max-pool is dropped (method.md
section 1, "stem without max-pool"): the encoder's output stride is 16, not 32.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from mlb.safe_load import load_tensors

# Strides of the four stages relative to the input: stem (2), layer1 (2, no max-pool),
# layer2 (4), layer3 (8), layer4 (16).
ENCODER_STRIDE = 16


@dataclass(frozen=True)
class EncoderSpec:
    """Depth and width of a ResNet encoder.

    ``width`` multiplies every channel count (stem and the four stages); 0.5 is the
    "ResNet-18 at half width" real-time student of method.md section 1.
    """

    block: type[BasicBlock] | type[Bottleneck]
    layers: tuple[int, int, int, int]
    width: float = 1.0

    def stage_planes(self) -> tuple[int, int, int, int]:
        """Planes (pre-expansion channels) of layer1..layer4: (64, 128, 256, 512) x width."""
        return tuple(max(1, round(base * self.width)) for base in (64, 128, 256, 512))

    def out_channels(self) -> tuple[int, int, int, int]:
        """Output channels of layer1..layer4 (planes x block expansion)."""
        return tuple(planes * self.block.expansion for planes in self.stage_planes())


def _make_stage(
    block: type[BasicBlock] | type[Bottleneck],
    in_channels: int,
    planes: int,
    blocks: int,
    *,
    stride: int,
) -> nn.Sequential:
    """One ResNet stage, as torchvision's ``ResNet._make_layer`` builds it (same names)."""
    out_channels = planes * block.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
            nn.BatchNorm2d(out_channels),
        )
    # Bottleneck's inner width is planes * base_width / 64; base_width=64 keeps it = planes at
    # any encoder width (BasicBlock accepts only 64).
    stage = [block(in_channels, planes, stride, downsample)]
    stage += [block(out_channels, planes) for _ in range(1, blocks)]
    return nn.Sequential(*stage)


class ResNetEncoder(nn.Module):
    """ResNet trunk returning the four stage outputs.

    Input ``(B, 3, H, W)`` normalised image with H, W multiples of 16; output a list of
    layer1..layer4 features at strides 2, 4, 8, 16 with ``spec.out_channels()`` channels.
    """

    stride = ENCODER_STRIDE

    def __init__(self, spec: EncoderSpec) -> None:
        super().__init__()
        self.spec = spec
        planes = spec.stage_planes()
        self.conv1 = nn.Conv2d(3, planes[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(planes[0])
        self.relu = nn.ReLU(inplace=True)
        in_channels = planes[0]
        for index, (stage_planes, blocks) in enumerate(zip(planes, spec.layers, strict=True)):
            stage = _make_stage(
                spec.block, in_channels, stage_planes, blocks, stride=1 if index == 0 else 2
            )
            self.add_module(f"layer{index + 1}", stage)
            in_channels = stage_planes * spec.block.expansion
        self.out_channels = spec.out_channels()
        self._init_like_torchvision()

    def _init_like_torchvision(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))  # no max-pool: stays at stride 2
        features = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            features.append(x)
        return features


def _mismatches(expected: Mapping[str, Tensor], found: Mapping[str, Tensor]) -> list[str]:
    """Human-readable differences between two state dicts (keys and shapes), in key order."""
    problems = [f"missing {key}" for key in expected if key not in found]
    problems += [f"unexpected {key}" for key in found if key not in expected]
    problems += [
        f"{key}: shape {tuple(found[key].shape)}, expected {tuple(expected[key].shape)}"
        for key in expected
        if key in found and found[key].shape != expected[key].shape
    ]
    return problems


def load_encoder_weights(encoder: ResNetEncoder, path: str | Path) -> None:
    """Load a torchvision ResNet ``state_dict`` file (``torch.save``) into ``encoder``.

    The classifier (``fc.*``) is ignored. Raises ``FileNotFoundError`` for a missing file and
    ``ValueError`` naming the file and the first mismatched keys when the weights do not fit
    (another depth, or the half-width encoder).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained encoder weights not found: {path}")
    state = load_tensors(path, what="ResNet state_dict file")
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a ResNet state_dict, found {type(state).__name__}")
    state = {key: value for key, value in state.items() if not key.startswith("fc.")}
    problems = _mismatches(encoder.state_dict(), state)
    if problems:
        raise ValueError(
            f"{path}: weights do not fit the {encoder.spec.block.__name__} encoder "
            f"(layers {encoder.spec.layers}, width {encoder.spec.width}); "
            f"{len(problems)} mismatches, first: {'; '.join(problems[:5])}"
        )
    encoder.load_state_dict(state)
