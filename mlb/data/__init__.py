"""Data: files -> arrays -> samples -> tensors, and the built-in synthetic benchmark.

- ``imageio``: read_image / read_mask / read_alpha / image_size / write_png / write_jpeg, and
  ``BadSample`` (a ValueError naming the file) for anything that cannot be decoded;
- ``corpus``: folder layouts -> sample lists (segmentation, matte, validation), quarantine;
- ``datasets``: torch datasets over those lists (the only place arrays become tensors);
- ``augment``: paired torchvision.transforms.v2 presets (weak, strong, eval);
- ``trimap``: trimaps from coarse masks (random elliptical erosion);
- ``synth``: the two-domain procedural portrait benchmark behind ``mlb synth``;
- ``preview``: image grids (PNG).

Import the submodules directly (``from mlb.data.corpus import ...``); only ``BadSample`` is
re-exported here, so importing ``mlb.data`` stays cheap (no torch).
"""

from mlb.data.imageio import BadSample

__all__ = ["BadSample"]
