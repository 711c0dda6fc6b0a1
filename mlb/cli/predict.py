"""``mlb predict``: alpha mattes (and cut-outs) for a folder of images.

    mlb predict --model runs/student.pt --images photos/ --out mattes/ --cutout

Writes ``OUT/<stem>.png`` (8-bit alpha at each image's own size) and, with ``--cutout``,
``OUT/cutout/<stem>.png`` (RGBA: the photo with the predicted alpha). Each image's short side
is resized to --short-side for the network and the matte resized back (mlb.inference).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

from mlb.cli.fields import FieldHelpFormatter, inference_from_args, inference_options

# Library imports happen in the functions: building the ``mlb`` parser imports every
# subcommand module, and torch + torchvision take seconds to import.


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict", help="alpha mattes for a folder of images",
        description=__doc__.split("\n\n")[0].split(": ", 1)[1],
        formatter_class=FieldHelpFormatter)
    parser.add_argument("--model", required=True, help="checkpoint (.pt)")
    parser.add_argument("--images", required=True, help="folder of photos")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--cutout", action="store_true",
                        help="also write RGBA cut-outs to OUT/cutout/")
    parser.add_argument("--weights", choices=("model", "ema"), default="model")
    inference_options(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def write_cutout(path: Path, image: np.ndarray, alpha: np.ndarray) -> Path:
    """``(H, W, 3) uint8`` photo + ``(H, W)`` alpha in [0, 1] -> RGBA PNG at ``path``."""
    import numpy as np
    from PIL import Image

    from mlb.data.imageio import to_uint8

    path.parent.mkdir(parents=True, exist_ok=True)
    rgba = np.concatenate([image, to_uint8(alpha)[:, :, None]], axis=2)
    Image.fromarray(rgba).save(path, format="PNG")
    return path


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mlb.checkpoint import load_model
    from mlb.data.corpus import list_images
    from mlb.data.imageio import read_image, write_png
    from mlb.device import resolve_device
    from mlb.inference import InferenceConfig, prepare_model

    config = InferenceConfig(**inference_from_args(args))
    paths = list_images(args.images)
    if not paths:
        raise ValueError(f"no images in {args.images}")
    model, _ = load_model(args.model, weights=args.weights, device=resolve_device(config.device))
    model = prepare_model(model, device=config.device, channels_last=config.channels_last)
    out = Path(args.out)
    for start in tqdm(range(0, len(paths), config.batch_size), desc="predict", unit="batch",
                      disable=True if args.quiet else None):
        batch = paths[start:start + config.batch_size]
        images = [read_image(path) for path in batch]
        predictions = config.predict(model, images)
        for path, image, prediction in zip(batch, images, predictions, strict=True):
            write_png(out / f"{path.stem}.png", prediction.alpha)
            if args.cutout:
                write_cutout(out / "cutout" / f"{path.stem}.png", image, prediction.alpha)
    print(f"{len(paths)} mattes -> {out}", file=sys.stderr)
    return 0
