"""A network of one's own for ``mlb``, outside the package: ``--model tiny_matting_plugin:build``.

``build()`` returns any ``torch.nn.Module`` whose ``forward`` takes the image (padded to its
``stride``) in [0, 1]. This one returns only alpha, so ``mlb`` attaches its boundary head;
``build_with_boundary`` returns ``(alpha, boundary_logit)`` itself. Both carry
``mlb_model_factory = True``, the mark a ``module:factory`` spec needs.
"""

import torch
from torch import Tensor, nn


class TinyMattingNet(nn.Module):
    stride = 4  # the input arrives padded to a multiple of this

    def __init__(self, *, boundary: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False),
            nn.Conv2d(16, 2 if boundary else 1, 3, padding=1),
        )
        self.boundary = boundary

    def forward(self, image: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        out = self.body(image)
        if self.boundary:
            return torch.sigmoid(out[:, :1]), out[:, 1:]
        return torch.sigmoid(out)


def build(pretrained_encoder: str | None = None) -> nn.Module:
    net = TinyMattingNet()
    if pretrained_encoder is not None:
        net.load_state_dict(torch.load(pretrained_encoder, weights_only=True))
    return net


def build_with_boundary() -> nn.Module:
    return TinyMattingNet(boundary=True)


# Marks the functions a 'module:factory' spec may name (a checkpoint stores the spec).
build.mlb_model_factory = True
build_with_boundary.mlb_model_factory = True
