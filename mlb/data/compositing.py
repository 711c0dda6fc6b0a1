"""Alpha compositing: how the synthetic (matte) domain makes its images (method.md s.1).

``composite`` is the plain rule. ``photographic_composite`` adds what a camera does to a real
scene and a pasted foreground lacks (our choice; issue 15's "composite realism"): a defocused
background, light from the scene wrapping around the person's edges, one colour cast and
exposure over the whole frame, lens softness, sensor noise and JPEG compression. A teacher
trained on plain composites learns boundaries of sharp, clean, noise-free pastes; on photos
its boundary head fires on noise and misses soft edges (docs/science-notes.md).
"""

import cv2
import numpy as np

__all__ = ["composite", "photographic_composite"]


def composite(foreground: np.ndarray, alpha: np.ndarray, background: np.ndarray) -> np.ndarray:
    """``image = alpha * fg + (1 - alpha) * bg`` (method.md section 1, synthetic domain).

    ``foreground``, ``background``: ``(H, W, 3) uint8``; ``alpha``: ``(H, W) float32`` in
    [0, 1]. Returns ``(H, W, 3) uint8``.
    """
    weight = alpha[:, :, None].astype(np.float32)
    mixed = weight * foreground.astype(np.float32) + (1.0 - weight) * background.astype(np.float32)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def photographic_composite(foreground: np.ndarray, alpha: np.ndarray, background: np.ndarray,
                           *, rng: np.random.Generator) -> np.ndarray:
    """A composite that looks photographed; the alpha is unchanged (it stays the label).

    Blur radii are relative to the image's short side (``s = short / 256``): background defocus
    sigma 0-3 s, light wrap over ~2 s px of the edge with strength 0-0.4, lens blur 0.3-0.7 s,
    noise sigma 1-4 (of 255), JPEG quality 60-95. Same arrays and dtypes as ``composite``.
    """
    if foreground.shape != background.shape or foreground.shape[:2] != alpha.shape:
        raise ValueError(f"foreground {foreground.shape}, alpha {alpha.shape} and background "
                         f"{background.shape} must share one (H, W)")
    scale = min(alpha.shape) / 256
    fg = foreground.astype(np.float32)
    bg = background.astype(np.float32)
    if rng.random() < 0.8:
        bg = cv2.GaussianBlur(bg, (0, 0), max(rng.uniform(0.0, 3.0) * scale, 1e-3))
    # Light wrap: the scene's colour tints the foreground where it is thin or near its edge.
    near_edge = np.clip(1 - cv2.GaussianBlur(alpha.astype(np.float32), (0, 0), 2 * scale),
                        0, 1)[:, :, None]
    ambient = cv2.GaussianBlur(bg, (0, 0), 8 * scale)
    spill = rng.uniform(0.0, 0.4) * near_edge
    fg = fg * (1 - spill) + ambient * spill
    weight = alpha[:, :, None].astype(np.float32)
    image = weight * fg + (1 - weight) * bg
    # One illuminant for the whole frame: the person and the scene share cast and exposure.
    warmth = rng.uniform(-1, 1)
    cast = np.float32([1 + 0.12 * warmth, 1.0, 1 - 0.15 * warmth]) * rng.uniform(0.97, 1.03, 3)
    image = 255.0 * np.clip(image * cast * rng.uniform(0.75, 1.2) / 255.0, 0, 1) ** rng.uniform(
        0.85, 1.15)
    image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), rng.uniform(0.3, 0.7) * scale)
    sigma = np.sqrt(rng.uniform(0.1, 0.5) * np.clip(image, 0, 255) + rng.uniform(1.0, 4.0) ** 2)
    luma = rng.standard_normal(image.shape[:2]).astype(np.float32)[:, :, None]
    chroma = rng.standard_normal(image.shape).astype(np.float32)
    image = np.clip(np.rint(image + sigma * (0.75 * luma + 0.45 * chroma)), 0, 255).astype(
        np.uint8)
    quality = int(rng.integers(60, 96))
    ok, encoded = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 RGB array
        raise RuntimeError(f"JPEG encoding of a {image.shape} composite failed")
    return np.ascontiguousarray(cv2.imdecode(encoded, cv2.IMREAD_COLOR)[:, :, ::-1])
