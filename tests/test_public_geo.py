"""Geotagged image lists (Im2GPS3k / YFCC4k CSVs) and benchmarks/public/geo.py on a miniature the test
writes: a few "places", each a generated texture photographed as overlapping crops, geotagged in
different cities."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pylocalize.datasets.geotagged import image_file, read_geotagged_csv
from pylocalize.datasets.synthetic import procedural_texture
from pylocalize.geo.metrics import great_circle_km

PUBLIC = Path(__file__).resolve().parents[1] / "benchmarks" / "public"
# Paris, Tokyo, Sydney, New York, Nairobi: thousands of km apart
PLACES = np.array([[48.8566, 2.3522], [35.6762, 139.6503], [-33.8688, 151.2093], [40.7128, -74.0060],
                   [-1.2921, 36.8219]])


def _write_places(root: Path):
    """Gallery: two crops of each place, tagged with the place; queries: a third crop, tagged a
    few hundred metres away, listed with Im2GPS3k's columns (IMG_ID, AUTHOR, LAT, LON, ...)."""
    rng = np.random.default_rng(4)
    (root / "gallery").mkdir()
    (root / "im2gps3ktest").mkdir()
    gallery, queries = ["name,latitude,longitude"], ["IMG_ID,AUTHOR,LAT,LON,S3_Label"]
    truth = []
    for p, (lat, lon) in enumerate(PLACES):
        texture = procedural_texture(rng, 200, 340)
        for j, x0 in enumerate((0, 80)):
            Image.fromarray(texture[:, x0:x0 + 260]).save(root / "gallery" / f"place{p}_{j}.jpg", quality=95)
            gallery.append(f"place{p}_{j}.jpg,{lat},{lon}")
        Image.fromarray(texture[10:190, 40:280]).save(root / "im2gps3ktest" / f"{p}_query.jpg", quality=95)
        truth.append((lat + 0.002, lon))
        queries.append(f"{p}_query,someone,{lat + 0.002},{lon},1")  # the id without .jpg, as some lists have
    (root / "gallery.csv").write_text("\n".join(gallery) + "\n")
    (root / "im2gps3k_places365.csv").write_text("\n".join(queries) + "\n")
    return np.array(truth)


def test_geotagged_lists(tmp_path):
    truth = _write_places(tmp_path)
    queries = read_geotagged_csv(tmp_path / "im2gps3k_places365.csv")
    assert queries.ids == [f"{p}_query" for p in range(len(PLACES))]
    np.testing.assert_allclose(queries.latlon, truth)
    gallery = read_geotagged_csv(tmp_path / "gallery.csv")
    assert len(gallery.ids) == 2 * len(PLACES) and gallery.subset([1, 0]).ids == ["place0_1.jpg", "place0_0.jpg"]
    assert image_file(tmp_path / "im2gps3ktest", "0_query") == tmp_path / "im2gps3ktest" / "0_query.jpg"
    with pytest.raises(FileNotFoundError, match="nor with .jpg"):
        image_file(tmp_path / "im2gps3ktest", "7_query")
    bad = tmp_path / "bad.csv"
    bad.write_text("IMG_ID,LAT,LON\na.jpg,91,0\n")
    with pytest.raises(ValueError, match="bad.csv:2: latitude 91.0 / longitude 0.0 out of range"):
        read_geotagged_csv(bad)
    bad.write_text("IMG_ID,LAT,LON\na.jpg,1,2\na.jpg,3,4\n")
    with pytest.raises(ValueError, match="bad.csv:3: image a.jpg is listed twice"):
        read_geotagged_csv(bad)
    bad.write_text("photo,x,y\na.jpg,1,2\n")
    with pytest.raises(ValueError, match="names no image id column"):
        read_geotagged_csv(bad)


def test_geo_script_end_to_end(tmp_path, capsys):
    truth = _write_places(tmp_path)
    spec = importlib.util.spec_from_file_location("public_geo", PUBLIC / "geo.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "out" / "predictions.csv"
    args = ["--queries", str(tmp_path / "im2gps3k_places365.csv"), "--query-images", str(tmp_path / "im2gps3ktest"),
            "--gallery", str(tmp_path / "gallery.csv"), "--gallery-images", str(tmp_path / "gallery"), "--k", "2",
            "--out", str(out), "-q"]
    assert script._common.main_of(script.parser(), args) == 0
    printed = capsys.readouterr().out
    lines = out.read_text().splitlines()
    assert lines[0] == "IMG_ID,LAT,LON" and [line.split(",")[0] for line in lines[1:]] == [
        f"{p}_query" for p in range(len(PLACES))]
    predicted = np.array([[float(v) for v in line.split(",")[1:]] for line in lines[1:]])
    errors = great_circle_km(predicted, truth)
    summary = json.loads(out.with_suffix(".json").read_text())
    for t in (1, 25, 200, 750, 2500):
        assert summary[f"{t}km"] == pytest.approx(100 * np.mean(errors <= t))
    assert summary["n"] == len(PLACES) and summary["median_km"] == pytest.approx(np.median(errors))
    # each query's crop overlaps its place's gallery crops: retrieval puts most within a kilometre
    assert summary["1km"] >= 80 and "| im2gps3k_places365.csv | VLAD (SIFT)" in printed


def test_geo_script_with_a_backbone(tmp_path):
    """--weights: each image's embedding is the backbone's CLS token (a tiny random DINOv2 here),
    and the predictions are the gallery vote over those embeddings."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from pylocalize.geo import GeoGallery
    from pylocalize.geo.backbones import TokenExtractor
    from pylocalize.io import read_image

    truth = _write_places(tmp_path)
    torch.manual_seed(0)
    config = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=64, patch_size=16, image_size=224)
    transformers.Dinov2Model(config).eval().save_pretrained(tmp_path / "dinov2")
    spec = importlib.util.spec_from_file_location("public_geo", PUBLIC / "geo.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "predictions.csv"
    assert script._common.main_of(script.parser(), [
        "--queries", str(tmp_path / "im2gps3k_places365.csv"), "--query-images", str(tmp_path / "im2gps3ktest"),
        "--gallery", str(tmp_path / "gallery.csv"), "--gallery-images", str(tmp_path / "gallery"), "--k", "3",
        "--weights", str(tmp_path / "dinov2"), "--out", str(out), "-q"]) == 0
    predicted = np.array([[float(v) for v in line.split(",")[1:]] for line in out.read_text().splitlines()[1:]])
    extractor = TokenExtractor(tmp_path / "dinov2", device="cpu")
    gallery = read_geotagged_csv(tmp_path / "gallery.csv")
    cls = [extractor([read_image(tmp_path / folder / name)])[:, 0]
           for folder, name in [("gallery", n) for n in gallery.ids]
           + [("im2gps3ktest", f"{p}_query.jpg") for p in range(len(PLACES))]]
    embeddings = np.concatenate(cls)
    expected = GeoGallery(embeddings[:len(gallery.ids)], gallery.latlon).predict(embeddings[len(gallery.ids):], k=3)
    np.testing.assert_allclose(predicted, expected, atol=1e-6)
    assert json.loads(out.with_suffix(".json").read_text())["n"] == len(truth)
