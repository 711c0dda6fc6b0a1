"""Image grids: mixed tiles (RGB, float maps, uint8 maps) at one height, labelled rows."""

import numpy as np
import pytest

from mlb.data.imageio import read_image
from mlb.data.preview import make_grid, save_grid, tile_rgb


def test_tiles_of_any_kind_share_one_height(tmp_path):
    rgb = np.zeros((40, 80, 3), np.uint8)
    rgb[:, :40] = (255, 0, 0)
    alpha = np.linspace(0, 1, 30 * 30, dtype=np.float32).reshape(30, 30)
    mask = np.full((10, 20, 1), 255, np.uint8)
    path = save_grid([[rgb, alpha], [mask]], tmp_path / "grid.png", labels=["a", "bb"],
                     height=20)
    grid = read_image(path)
    assert grid.shape[0] == 2 * 20 + 3 * 4
    row_width = 40 + 4 + 20  # 80x40 -> 40x20, 30x30 -> 20x20
    assert grid.shape[1] > row_width + 2 * 4  # plus the label column
    np.testing.assert_array_equal(grid, make_grid([[rgb, alpha], [mask]], labels=["a", "bb"],
                                                  height=20))
    # The red half of the first tile is red in the grid, the float map is gray.
    red = grid[10, grid.shape[1] - row_width - 4 + 5]
    assert red[0] > 200 and red[1] < 50


def test_float_maps_become_gray():
    tile = tile_rgb(np.full((4, 4), 0.5, np.float32), height=4)
    assert tile.shape == (4, 4, 3) and np.all(tile == 128)


def test_bad_grids_raise():
    with pytest.raises(ValueError, match=r"empty rows"):
        make_grid([[]])
    with pytest.raises(ValueError, match=r"2 labels for 1 rows"):
        make_grid([[np.zeros((4, 4))]], labels=["a", "b"])
    with pytest.raises(ValueError, match=r"tile must be"):
        make_grid([[np.zeros((4, 4, 2))]])
