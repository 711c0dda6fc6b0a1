"""Any image file -> canonical numpy arrays, and back.

The IO edge of the library (architecture.md): images come out as ``(H, W, 3) uint8`` RGB,
masks and alphas as ``(H, W) float32`` in [0, 1]. Every decoding failure (empty file, not an
image, truncated or corrupt data) raises :class:`BadSample` naming the file, so a corpus scan
or a dataset can quarantine the sample instead of training on garbage.

Conventions chosen here:
- EXIF orientation is applied to every file (images, masks, alphas), so arrays match what an
  image viewer shows. A mask whose aspect ratio then disagrees with its image is an error.
- RGBA / LA / transparent-palette *images*: the alpha channel is dropped and the stored colour
  kept (not composited on black). Matting foregrounds are stored unpremultiplied and photos are
  opaque, so the stored colour is the right one in both cases.
- 16-bit data is scaled to 8-bit (``value / 257``) for images and to [0, 1] (``/ 65535``) for
  masks and alphas.
- Masks: integer masks whose maximum is at most 1 are read as {0, 1}; otherwise values are
  divided by the type's maximum (255 or 65535), so {0, 255} and soft masks both work. A mask
  with a varying alpha channel (a cut-out PNG) is read from that channel; a colour mask from
  the brightest channel (any non-black label is foreground).
- Alphas are continuous: always divided by the type's maximum, never read as {0, 1}.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "BadSample",
    "image_size",
    "read_alpha",
    "read_image",
    "read_mask",
    "resize_nearest",
    "to_uint8",
    "write_jpeg",
    "write_png",
]

# EXIF orientations 5-8 are transposes: width and height swap (EXIF 2.3, tag 0x0112).
_EXIF_ORIENTATION_TAG = 0x0112
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}
# A mask stored at another resolution must keep its image's aspect ratio: beyond this
# relative difference it is more likely the wrong file (or an unrotated one) than a resize.
MAX_ASPECT_ERROR = 0.02
# Decoding limits: a file whose header claims more pixels (a decompression bomb, or a scan far
# beyond any photo) or a more extreme shape (a 2 x 4000 strip would be scaled to 96 x 192000)
# is a bad sample, refused from its header before any pixel is decoded. Override per process
# with the environment variables MLB_MAX_PIXELS and MLB_MAX_ASPECT (inherited by DataLoader
# and Dask workers); docs/datasets.md lists them.
DEFAULT_MAX_PIXELS = 100_000_000
DEFAULT_MAX_ASPECT = 50.0


def decode_limits() -> tuple[int, float]:
    """(max pixels, max long/short side ratio) in force; ValueError naming a bad setting."""
    limits = []
    for name, default, kind in (("MLB_MAX_PIXELS", DEFAULT_MAX_PIXELS, int),
                                ("MLB_MAX_ASPECT", DEFAULT_MAX_ASPECT, float)):
        text = os.environ.get(name, "").strip()
        try:
            value = kind(text) if text else default
        except ValueError:
            value = 0
        if value <= 0 or (kind is float and value < 1):
            raise ValueError(f"{name}={text!r} is not usable: expected a positive "
                             f"{'integer' if kind is int else 'number >= 1'}")
        limits.append(value)
    return limits[0], limits[1]


def _check_limits(path: Path, width: int, height: int) -> None:
    max_pixels, max_aspect = decode_limits()
    if width * height > max_pixels:
        raise BadSample(path, f"{width}x{height} = {width * height / 1e6:.0f} megapixels, "
                              f"above the decoding limit of {max_pixels / 1e6:g} megapixels (a "
                              "decompression bomb or a scan far beyond a photo; raise "
                              "MLB_MAX_PIXELS if it is real)")
    if width and height and max(width, height) / min(width, height) > max_aspect:
        raise BadSample(path, f"{width}x{height} has an aspect ratio of "
                              f"{max(width, height) / min(width, height):.0f}:1, above the "
                              f"limit of {max_aspect:g}:1 (raise MLB_MAX_ASPECT if it is real)")


class BadSample(ValueError):
    """A file that cannot be used as a sample: ``path`` names it, ``reason`` says why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[Path, str]]:
        # Keep the two-argument constructor picklable (DataLoader workers send errors back).
        return (type(self), (self.path, self.reason))


def _readable(path: str | Path) -> Path:
    """``path`` as a Path if it is a non-empty file; FileNotFoundError / BadSample if not."""
    path = Path(path)
    if not path.is_file():
        raise _missing(path)
    if path.stat().st_size == 0:
        raise BadSample(path, "empty file (0 bytes)")
    return path


def _missing(path: Path) -> FileNotFoundError:
    """``FileNotFoundError`` carrying ``filename`` (what datasets record in quarantine)."""
    return FileNotFoundError(errno.ENOENT, "no such file", str(path))


def _open(path: str | Path) -> Image.Image:
    """Open ``path`` with PIL, decode it fully and apply its EXIF orientation.

    Decoding fully (``load``) is what catches truncated files: ``Image.open`` only reads the
    header. Raises FileNotFoundError for a missing file and BadSample for everything else.
    """
    path = _readable(path)
    try:
        with Image.open(path) as opened:
            _check_limits(path, *opened.size)  # from the header, before decoding
            opened.load()
            # In place: a copy is made only when the EXIF orientation needs a transpose
            # (decoding memory is part of the bound docs/datasets.md states).
            ImageOps.exif_transpose(opened, in_place=True)
            image = opened
    except BadSample:
        raise
    except Image.DecompressionBombError as error:  # PIL's own limit, met at open
        raise BadSample(path, f"decompression bomb refused ({error})") from error
    except UnidentifiedImageError as error:
        raise BadSample(path, "not an image file PIL can decode") from error
    except (OSError, SyntaxError, ValueError) as error:
        # PIL reports truncated / corrupt data as OSError, broken headers as SyntaxError.
        raise BadSample(path, f"corrupt or truncated image ({error})") from error
    if image.width == 0 or image.height == 0:
        raise BadSample(path, f"zero-size image ({image.width}x{image.height})")
    return image


def image_size(path: str | Path) -> tuple[int, int]:
    """``(H, W)`` of an image file from its header only, EXIF rotation respected.

    Cheap (no pixel decoding), so corpus scans can check pairing without reading pixels.
    """
    path = _readable(path)
    try:
        with Image.open(path) as opened:
            width, height = opened.size
            _check_limits(path, width, height)
            orientation = opened.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except BadSample:
        raise
    except Image.DecompressionBombError as error:
        raise BadSample(path, f"decompression bomb refused ({error})") from error
    except UnidentifiedImageError as error:
        raise BadSample(path, "not an image file PIL can decode") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise BadSample(path, f"corrupt image header ({error})") from error
    if width == 0 or height == 0:
        raise BadSample(path, f"zero-size image ({width}x{height})")
    if orientation in _TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    return height, width


def _is_16_bit(image: Image.Image) -> bool:
    return image.mode.startswith("I;16") or image.mode == "I"


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to ``(H, W, 3) uint8`` RGB.

    Grayscale, palette, CMYK and RGBA become RGB (alpha dropped, see module doc); 16-bit
    grayscale is scaled to 8 bits. Raises BadSample naming the file if it cannot be decoded.
    """
    image = _open(path)
    if _is_16_bit(image):
        gray = np.asarray(image).astype(np.float32)
        gray = np.clip(np.rint(gray / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "F":
        raise BadSample(path, "floating-point image: expected 8- or 16-bit integer pixels")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return np.array(rgb, dtype=np.uint8)  # a writable copy


def _gray_values(path: Path, image: Image.Image) -> tuple[np.ndarray, float]:
    """One channel of label values and the maximum its storage type can hold."""
    if image.mode == "1":
        return np.asarray(image, dtype=np.uint8), 1.0
    if _is_16_bit(image):
        return np.asarray(image).astype(np.float32), 65535.0
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float32)
        return values, (1.0 if values.max(initial=0.0) <= 1.0 else 255.0)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        channels = np.asarray(image)
        alpha = channels[:, :, -1]
        if alpha.min() != alpha.max():  # a cut-out PNG: the label is the alpha channel
            return alpha, 255.0
        image = image.convert("RGB" if image.mode == "RGBA" else "L")
    if image.mode == "L":
        return np.asarray(image), 255.0
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image).max(axis=2), 255.0


def resize_nearest(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a ``(h, w, ...)`` array to ``size = (H, W)``.

    Samples pixel centres (``(i + 0.5) * h / H``), so a 2x downsize takes no half-pixel shift
    (unlike ``cv2.INTER_NEAREST``).
    """
    height, width = size
    rows = np.minimum(((np.arange(height) + 0.5) * values.shape[0] / height).astype(int),
                      values.shape[0] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * values.shape[1] / width).astype(int),
                      values.shape[1] - 1)
    return values[rows[:, None], cols[None, :]]


def _check_aspect(path: Path, stored: tuple[int, int], size: tuple[int, int]) -> None:
    stored_ratio = stored[1] / stored[0]
    ratio = size[1] / size[0]
    if abs(stored_ratio / ratio - 1.0) > MAX_ASPECT_ERROR:
        raise BadSample(
            path,
            f"mask is {stored[0]}x{stored[1]} (HxW), its image {size[0]}x{size[1]}: aspect "
            "ratios differ, so it cannot be a resized copy (wrong file or unrotated?)",
        )


def read_mask(path: str | Path, *, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode a segmentation mask to ``(H, W) float32`` in [0, 1].

    ``size = (H, W)``: the image's size; a mask stored at another resolution (same aspect
    ratio within 2 %) is resized to it with nearest neighbour, so labels stay as stored.
    {0, 1}, {0, 255} and soft masks are understood (see module doc).
    """
    path = Path(path)
    values, scale = _gray_values(path, _open(path))
    if np.issubdtype(values.dtype, np.integer) and values.max(initial=0) <= 1:
        scale = 1.0  # a {0, 1} label map stored as 8-bit
    mask = values.astype(np.float32) / np.float32(scale)
    if size is not None and mask.shape != tuple(size):
        _check_aspect(path, mask.shape, tuple(size))
        mask = resize_nearest(mask, tuple(size))
    return np.ascontiguousarray(np.clip(mask, 0.0, 1.0), dtype=np.float32)


def read_alpha(path: str | Path, *, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode a ground-truth alpha matte to ``(H, W) float32`` in [0, 1].

    ``size = (H, W)``: the image's size, if given the alpha must have exactly this size (a
    resized ground truth would change the scores), else BadSample names the file.
    """
    path = Path(path)
    values, scale = _gray_values(path, _open(path))
    if size is not None and values.shape != tuple(size):
        raise BadSample(
            path,
            f"alpha is {values.shape[0]}x{values.shape[1]} (HxW) but its image is "
            f"{size[0]}x{size[1]}: ground-truth alpha must match the image size",
        )
    alpha = values.astype(np.float32) / np.float32(scale)
    return np.ascontiguousarray(np.clip(alpha, 0.0, 1.0), dtype=np.float32)


def to_uint8(values: np.ndarray) -> np.ndarray:
    """``float`` in [0, 1] -> ``uint8`` in [0, 255] (rounded); uint8 input is returned as is."""
    if values.dtype == np.uint8:
        return values
    return np.clip(np.rint(np.asarray(values, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def _as_pil(array: np.ndarray, path: Path) -> Image.Image:
    array = to_uint8(np.asarray(array))
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise ValueError(f"{path}: expected (H, W) or (H, W, 3) array, got shape {array.shape}")
    return Image.fromarray(np.ascontiguousarray(array))


def write_png(path: str | Path, array: np.ndarray) -> Path:
    """Write ``(H, W, 3)`` RGB or ``(H, W)`` gray (uint8, or float in [0, 1]) as PNG.

    Parent folders are created. Returns the path. PNG output is byte-deterministic.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _as_pil(array, path).save(path, format="PNG")
    return path


def write_jpeg(path: str | Path, array: np.ndarray, *, quality: int = 90) -> Path:
    """Write ``(H, W, 3)`` RGB or ``(H, W)`` gray as baseline JPEG at ``quality`` (1-95)."""
    if not 1 <= quality <= 95:
        raise ValueError(f"JPEG quality must be in [1, 95], got {quality}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _as_pil(array, path).save(path, format="JPEG", quality=int(quality))
    return path
