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


def test_image_keys_keep_the_folder_and_refuse_a_key_twice(tmp_path, monkeypatch):
    """Files are keyed by name, a folder's images by folder/name (hloc's relative names), so
    two folders may hold one name; the same key twice is refused, naming both paths."""
    from pylocalize.io import image_keys

    for sub in ("qa", "qb"):
        (tmp_path / sub).mkdir()
        for name in ("0003.jpg", "0004.png"):
            (tmp_path / sub / name).write_bytes(b"")
    keys = image_keys([tmp_path / "qa", str(tmp_path / "qb") + "/", tmp_path / "qa" / "0004.png"])
    assert [k for k, _ in keys] == ["qa/0003.jpg", "qa/0004.png", "qb/0003.jpg", "qb/0004.png", "0004.png"]
    assert [p for _, p in keys][2] == tmp_path / "qb" / "0003.jpg"
    monkeypatch.chdir(tmp_path / "qa")  # "." is keyed by the folder's own name
    assert [k for k, _ in image_keys(["."])] == ["qa/0003.jpg", "qa/0004.png"]
    with pytest.raises(ValueError, match=r"both keyed '0003.jpg' \(.*qa/0003.jpg and .*qb/0003.jpg\).*folders"):
        image_keys([tmp_path / "qa" / "0003.jpg", tmp_path / "qb" / "0003.jpg"])
    with pytest.raises(ValueError, match="both keyed 'qa/0003.jpg'"):
        image_keys([tmp_path / "qa", tmp_path / "qa"])
