"""Alpha compositing: how the synthetic (matte) domain makes its images (method.md s.1)."""

import numpy as np

__all__ = ["composite"]


def composite(foreground: np.ndarray, alpha: np.ndarray, background: np.ndarray) -> np.ndarray:
    """``image = alpha * fg + (1 - alpha) * bg`` (method.md section 1, synthetic domain).

    ``foreground``, ``background``: ``(H, W, 3) uint8``; ``alpha``: ``(H, W) float32`` in
    [0, 1]. Returns ``(H, W, 3) uint8``.
    """
    weight = alpha[:, :, None].astype(np.float32)
    mixed = weight * foreground.astype(np.float32) + (1.0 - weight) * background.astype(np.float32)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
