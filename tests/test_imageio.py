"""Any file -> canonical arrays: formats, orientation, resizing, and bad files naming themselves."""

import numpy as np
import pytest
from PIL import Image

from mlb.data import BadSample
from mlb.data.imageio import (
    image_size,
    read_alpha,
    read_image,
    read_mask,
    resize_nearest,
    to_uint8,
    write_jpeg,
    write_png,
)


def gradient_rgb(height=12, width=20):
    """A deterministic, asymmetric test image: no flip or rotation maps it onto itself."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // (width - 1), y * 255 // (height - 1),
                     (x * 7 + y * 13) % 256], axis=2).astype(np.uint8)


def test_rgb_png_round_trip(tmp_path):
    image = gradient_rgb()
    path = write_png(tmp_path / "a.png", image)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (12, 20, 3)
    np.testing.assert_array_equal(out, image)
    assert image_size(path) == (12, 20)


def test_grayscale_becomes_rgb(tmp_path):
    gray = gradient_rgb()[:, :, 0]
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (12, 20, 3)
    for channel in range(3):
        np.testing.assert_array_equal(out[:, :, channel], gray)


def test_rgba_drops_alpha_and_keeps_stored_colour(tmp_path):
    rgba = np.dstack([gradient_rgb(), np.full((12, 20), 0, np.uint8)])
    rgba[:, :10, 3] = 255
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "cutout.png")
    np.testing.assert_array_equal(read_image(tmp_path / "cutout.png"), gradient_rgb())


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    import cv2

    values = np.linspace(0, 65535, 12 * 20).reshape(12, 20).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), values)
    out = read_image(tmp_path / "deep.png")
    expected = np.rint(values / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(out[:, :, 0], expected)
    assert out.max() == 255 and out.min() == 0
    mask = read_mask(tmp_path / "deep.png")
    np.testing.assert_allclose(mask, values / 65535.0, atol=1e-6)


def test_16_bit_rgb_is_scaled(tmp_path):
    import cv2

    rgb = gradient_rgb().astype(np.uint16) * 257  # 8-bit values exactly representable
    cv2.imwrite(str(tmp_path / "deep_rgb.png"), rgb[:, :, ::-1])  # cv2 writes BGR
    np.testing.assert_array_equal(read_image(tmp_path / "deep_rgb.png"), gradient_rgb())


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied(tmp_path, orientation):
    stored = np.zeros((10, 30, 3), np.uint8)
    stored[:, :5] = 255  # a white bar on the stored image's left edge
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"rotated_{orientation}.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    out = read_image(path)
    # Orientation 3: 180 deg; 6: the viewer rotates 90 deg clockwise; 8: counter-clockwise.
    expected = {3: np.rot90(stored, 2), 6: np.rot90(stored, -1), 8: np.rot90(stored, 1)}
    assert out.shape == expected[orientation].shape
    assert image_size(path) == out.shape[:2]
    bright = out.mean(axis=2) > 128
    np.testing.assert_array_equal(bright, expected[orientation].mean(axis=2) > 128)


def test_mask_values_01_0255_and_soft(tmp_path):
    binary = (gradient_rgb()[:, :, 0] > 128).astype(np.uint8)
    Image.fromarray(binary).save(tmp_path / "ones.png")
    Image.fromarray(binary * 255).save(tmp_path / "full.png")
    soft = gradient_rgb()[:, :, 0]
    Image.fromarray(soft).save(tmp_path / "soft.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "ones.png"), binary.astype(np.float32))
    np.testing.assert_array_equal(read_mask(tmp_path / "full.png"), binary.astype(np.float32))
    out = read_mask(tmp_path / "soft.png")
    assert out.dtype == np.float32 and 0 < out.mean() < 1
    np.testing.assert_allclose(out, soft / 255.0, atol=1e-6)


def test_mask_from_cutout_alpha_and_colour_labels(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:, :, :3] = 200
    rgba[2:6, 2:6, 3] = 255
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "cutout.png")
    assert read_mask(tmp_path / "cutout.png").sum() == 16
    colour = np.zeros((8, 8, 3), np.uint8)
    colour[:4] = (192, 0, 0)  # a red "person" label
    Image.fromarray(colour).save(tmp_path / "colour.png")
    np.testing.assert_allclose(read_mask(tmp_path / "colour.png")[:4], 192 / 255)
    assert read_mask(tmp_path / "colour.png")[4:].max() == 0


def test_mask_at_another_resolution_is_resized_nearest(tmp_path):
    small = np.zeros((6, 10), np.uint8)
    small[:, 5:] = 255
    Image.fromarray(small).save(tmp_path / "small.png")
    out = read_mask(tmp_path / "small.png", size=(12, 20))
    assert out.shape == (12, 20)
    assert set(np.unique(out)) == {0.0, 1.0}  # nearest: no new values
    np.testing.assert_array_equal(out[:, :10], 0)
    np.testing.assert_array_equal(out[:, 10:], 1)


def test_mask_with_another_aspect_ratio_is_rejected(tmp_path):
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "square.png")
    with pytest.raises(BadSample, match=r"square.png.*aspect"):
        read_mask(tmp_path / "square.png", size=(10, 30))


def test_alpha_must_match_the_image_size(tmp_path):
    Image.fromarray(np.full((6, 10), 128, np.uint8)).save(tmp_path / "alpha.png")
    np.testing.assert_allclose(read_alpha(tmp_path / "alpha.png", size=(6, 10)), 128 / 255)
    with pytest.raises(BadSample, match=r"alpha.png.*must match"):
        read_alpha(tmp_path / "alpha.png", size=(12, 20))


def test_alpha_is_never_read_as_01(tmp_path):
    faint = np.zeros((4, 4), np.uint8)
    faint[0, 0] = 1  # a 1/255 alpha, not a {0, 1} label
    Image.fromarray(faint).save(tmp_path / "faint.png")
    assert read_alpha(tmp_path / "faint.png").max() == pytest.approx(1 / 255)


def test_truncated_jpeg_names_the_file(tmp_path):
    path = write_jpeg(tmp_path / "photo.jpg", gradient_rgb(64, 64), quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadSample, match=r"photo.jpg.*truncated") as info:
        read_image(path)
    assert info.value.path == path


def test_corrupt_header_names_the_file(tmp_path):
    path = write_png(tmp_path / "broken.png", gradient_rgb())
    data = bytearray(path.read_bytes())
    data[16:24] = b"\xff" * 8  # the IHDR width/height field
    path.write_bytes(bytes(data))
    with pytest.raises(BadSample, match=r"broken.png"):
        read_image(path)


def test_empty_file_names_the_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    for reader in (read_image, read_mask, read_alpha, image_size):
        with pytest.raises(BadSample, match=r"empty.jpg.*empty"):
            reader(tmp_path / "empty.jpg")


def test_text_file_named_png_names_the_file(tmp_path):
    (tmp_path / "notes.png").write_text("this is not an image\n")
    for reader in (read_image, read_mask, image_size):
        with pytest.raises(BadSample, match=r"notes.png.*not an image"):
            reader(tmp_path / "notes.png")


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        read_image(tmp_path / "nowhere.png")
    assert info.value.filename == str(tmp_path / "nowhere.png")


def test_bad_sample_is_a_value_error_that_pickles():
    import pickle

    error = BadSample("/x/y.png", "broken")
    assert isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.reason, str(copy)) == (error.path, error.reason, str(error))


def test_resize_nearest_samples_pixel_centres():
    values = np.arange(4)[None, :].repeat(2, axis=0)
    # 2x downsize: output centres 0.5 and 1.5 map to input 1.0 and 3.0 -> columns 1 and 3.
    np.testing.assert_array_equal(resize_nearest(values, (2, 2))[0], [1, 3])
    np.testing.assert_array_equal(resize_nearest(values, (2, 8))[0], [0, 0, 1, 1, 2, 2, 3, 3])


def test_to_uint8_and_jpeg_quality_check(tmp_path):
    np.testing.assert_array_equal(to_uint8(np.array([0.0, 0.5, 1.0, 2.0])), [0, 128, 255, 255])
    with pytest.raises(ValueError, match=r"quality"):
        write_jpeg(tmp_path / "x.jpg", gradient_rgb(), quality=0)
