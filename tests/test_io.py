"""Image files (pylocalize.io): pixels, sizes, which files a folder of images stands for."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pylocalize.io import IMAGE_SUFFIXES, expand_image_paths, image_files, image_size, is_image_file, read_image


def test_read_image_and_size(tmp_path):
    grey = np.arange(12 * 20, dtype=np.uint8).reshape(12, 20)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    pixels = read_image(tmp_path / "grey.png")
    assert pixels.shape == (12, 20, 3) and pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels[..., 1], grey)  # grey converted to RGB, losslessly
    assert image_size(tmp_path / "grey.png") == (20, 12)  # (width, height), as cameras take them
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    for read in (read_image, image_size):
        with pytest.raises(ValueError, match="no such image file"):
            read(tmp_path / "missing.jpg")
        with pytest.raises(ValueError, match="broken.jpg: not a readable image"):
            read(tmp_path / "broken.jpg")
        with pytest.raises(ValueError, match="not a readable image"):
            read(tmp_path)  # a folder


def test_image_files_of_folders_and_explicit_files(tmp_path):
    assert all(s == s.lower() and s.startswith(".") for s in IMAGE_SUFFIXES)
    assert is_image_file("a.JPG") and is_image_file("b.tiff") and not is_image_file("notes.txt")
    folder = tmp_path / "queries"
    folder.mkdir()
    for name in ("b.png", "a.JPG", "notes.txt", "c.bmp"):
        (folder / name).write_bytes(b"")
    assert [p.name for p in image_files(folder)] == ["a.JPG", "b.png", "c.bmp"]
    explicit = tmp_path / "photo.raw"  # a file the caller names is kept whatever its suffix
    got = expand_image_paths([explicit, folder / "b.png", str(folder)])
    assert [p.name for p in got] == ["photo.raw", "b.png", "a.JPG", "b.png", "c.bmp"]
