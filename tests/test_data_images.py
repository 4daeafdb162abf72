"""load_image: modes, EXIF orientation, corrupt and oversized files."""

import numpy as np
import pytest
from PIL import Image

from geocells.data.images import ImageLoadError, load_image


def _save(image: Image.Image, path, **kwargs):
    image.save(path, **kwargs)
    return path


def test_rgb_png_round_trips(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    path = _save(Image.fromarray(pixels), tmp_path / "a.png")
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (20, 12)
    np.testing.assert_array_equal(np.asarray(image), pixels)


def test_grey_and_palette_become_rgb(tmp_path):
    grey = _save(Image.new("L", (4, 3), 77), tmp_path / "l.png")
    assert np.asarray(load_image(grey))[0, 0].tolist() == [77, 77, 77]
    palette = Image.new("RGB", (4, 3), (10, 200, 30)).quantize(colors=4)
    assert palette.mode == "P"
    path = _save(palette, tmp_path / "p.png")
    assert np.asarray(load_image(path))[1, 1].tolist() == [10, 200, 30]


def test_rgba_is_composited_on_white(tmp_path):
    pixels = np.zeros((2, 2, 4), dtype=np.uint8)
    pixels[0, 0] = (255, 0, 0, 255)  # opaque red
    pixels[0, 1] = (0, 0, 0, 0)  # fully transparent -> white
    pixels[1, 0] = (0, 0, 0, 128)  # half-transparent black -> mid grey
    path = _save(Image.fromarray(pixels, "RGBA"), tmp_path / "rgba.png")
    rgb = np.asarray(load_image(path)).astype(int)
    assert rgb[0, 0].tolist() == [255, 0, 0]
    assert rgb[0, 1].tolist() == [255, 255, 255]
    assert np.all(np.abs(rgb[1, 0] - 127) <= 2)


def test_cmyk_jpeg(tmp_path):
    path = _save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), tmp_path / "c.jpg", quality=95)
    rgb = np.asarray(load_image(path)).astype(int)
    assert rgb[4, 4, 0] > 200 and rgb[4, 4, 1] < 60 and rgb[4, 4, 2] < 60  # red


def test_sixteen_bit_grey_is_scaled(tmp_path):
    values = np.array([[0, 65535], [32896, 1000]], dtype=np.uint16)
    image16 = Image.fromarray(values)
    assert image16.mode == "I;16"
    path = _save(image16, tmp_path / "g16.png")
    rgb = np.asarray(load_image(path))
    assert rgb.dtype == np.uint8
    assert rgb[:, :, 0].tolist() == [[0, 255], [128, 4]]


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((10, 30, 3), dtype=np.uint8)
    pixels[:, :5] = 255  # white band on the left of the stored image
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = _save(Image.fromarray(pixels), tmp_path / "rot.jpg", exif=exif, quality=95)
    image = load_image(path)
    assert image.size == (10, 30)  # width and height swapped
    rgb = np.asarray(image)
    assert rgb[:5, :, 0].mean() > 200 and rgb[-5:, :, 0].mean() < 50  # left band -> top


def test_truncated_and_corrupt_files_name_the_file(tmp_path):
    good = _save(Image.new("RGB", (64, 64), (1, 2, 3)), tmp_path / "good.jpg")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ImageLoadError, match=r"truncated\.jpg"):
        load_image(truncated)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not an image")
    with pytest.raises(ImageLoadError, match=r"garbage\.png"):
        load_image(garbage)
    with pytest.raises(ImageLoadError, match=r"missing\.jpg"):
        load_image(tmp_path / "missing.jpg")
    assert issubclass(ImageLoadError, ValueError)


def test_pixel_limit_refuses_bombs(tmp_path):
    path = _save(Image.new("L", (2000, 1000)), tmp_path / "big.png")
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_image(path, max_pixels=1_000_000)
    assert load_image(path, max_pixels=2_000_000).size == (2000, 1000)
