"""mlb: train human matting models from coarse masks.

Matte Label Blending (a teacher's boundary detail blended with coarse masks, cached as
versioned zarr label sets) and the DDC loss (matting from trimaps alone).
See ``../shared/docs/method.md`` for the science and README.md for the pipeline.
"""

__version__ = "0.1.0"
