#!/usr/bin/env python3
"""Im2GPS3k / YFCC4k: geo-localization accuracy at 1 / 25 / 200 / 750 / 2500 km by retrieval in a geotagged gallery.

The queries are a benchmark's CSV (``im2gps3k_places365.csv``, ``yfcc4k_places365.csv``: image
id, latitude, longitude; see ``pylocalize.datasets.geotagged``) with its images folder; the
gallery is a geotagged set the user gives in the same form (e.g. a slice of MP-16). Every image
is embedded, either by the CLS token of a local DINOv2 or CLIP model (``--weights DIR``, the
torch extra) or, without weights, by VLAD over RootSIFT (a vocabulary learnt on the gallery, no
training and no download); each query takes the GPS its ``--k`` nearest gallery images agree on
(``pylocalize.geo.GeoGallery``). The predictions are written as a CSV (``IMG_ID,LAT,LON``) and the
accuracy table printed, the photos whose prediction lies within each distance of the truth.

    python benchmarks/public/geo.py --queries data/im2gps3k/im2gps3k_places365.csv \
        --query-images data/im2gps3k/im2gps3ktest --gallery data/mp16/gallery.csv \
        --gallery-images data/mp16/images [--weights models/dinov2-base] [--limit 500]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

VLAD_WORDS = 64
VLAD_FEATURES = 1000
# descriptors per gallery image the VLAD vocabulary learns from
VOCABULARY_SAMPLE = 200


class VladEmbedding:
    """VLAD over RootSIFT with a vocabulary learnt on (the first 500 of) the gallery's images."""

    def __init__(self, gallery_files, progress: bool, seed: int = 0):
        from pylocalize.index.vlad import VLAD

        rng = np.random.default_rng(seed)
        # the gallery's descriptors are extracted once, for the vocabulary and the encoding
        self.cache = {p: self.descriptors(p) for p in _bar(gallery_files, progress, "SIFT")}
        sample = [d[rng.permutation(len(d))[:VOCABULARY_SAMPLE]] for d in list(self.cache.values())[:500]]
        self.vlad = VLAD(VLAD_WORDS, seed=seed).fit(sample)

    @staticmethod
    def descriptors(path) -> np.ndarray:
        from pylocalize.features import extract_sift

        return extract_sift(str(path), max_features=VLAD_FEATURES)[1]

    def __call__(self, files, progress: bool) -> np.ndarray:
        return np.stack([self.vlad.encode(self.cache.pop(p) if p in self.cache else self.descriptors(p))
                         for p in _bar(files, progress, "VLAD")])


def _bar(items, progress: bool, desc: str):
    from tqdm import tqdm

    return tqdm(items, disable=not progress, leave=False, desc=desc)


class BackboneEmbedding:
    """The CLS token of a local DINOv2 or CLIP vision model (the torch extra)."""

    def __init__(self, weights):
        from pylocalize.geo.backbones import TokenExtractor

        self.extractor = TokenExtractor(weights)

    def __call__(self, files, progress: bool, batch: int = 32) -> np.ndarray:
        from pylocalize.io import read_image

        out = []
        for s in _bar(range(0, len(files), batch), progress, "embed"):
            out.append(self.extractor([read_image(p) for p in files[s:s + batch]])[:, 0])
        return np.concatenate(out)


def _files(folder, images, what: str):
    from pylocalize.datasets.geotagged import image_files

    files = image_files(folder, images, missing_ok=True)
    keep = [i for i, f in enumerate(files) if f is not None]
    if not keep:
        raise FileNotFoundError(f"{folder}: none of the {what} images of the list is there")
    if len(keep) < len(files):
        _common.logger.warning("%s: %d of %d %s images are missing and left out", folder, len(files) - len(keep),
                               len(files), what)
    return images.subset(keep), [files[i] for i in keep]


def main(args) -> int:
    from pylocalize.datasets.geotagged import read_geotagged_csv
    from pylocalize.geo import GeoGallery, accuracy
    from pylocalize.geo.metrics import THRESHOLDS_KM

    queries = read_geotagged_csv(args.queries)
    queries = queries.subset(_common.evenly(range(len(queries.ids)), args.limit))
    queries, query_files = _files(args.query_images, queries, "query")
    gallery, gallery_files = _files(args.gallery_images, read_geotagged_csv(args.gallery), "gallery")
    with _common.phase(_common.logger, f"embed {len(gallery_files)} gallery and {len(query_files)} query images"):
        embed = BackboneEmbedding(args.weights) if args.weights else VladEmbedding(gallery_files, args.progress)
        gallery_embeddings = embed(gallery_files, args.progress)
        query_embeddings = embed(query_files, args.progress)
    predicted = GeoGallery(gallery_embeddings, gallery.latlon).predict(query_embeddings, k=args.k,
                                                                         bandwidth_km=args.bandwidth_km)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from pylocalize.containers import write_bytes_atomic

    lines = ["IMG_ID,LAT,LON"] + [f"{i},{lat:.7f},{lon:.7f}" for i, (lat, lon) in zip(queries.ids, predicted)]
    write_bytes_atomic(out, ("\n".join(lines) + "\n").encode("utf-8"))
    scores = accuracy(predicted, queries.latlon)
    row = {"queries": Path(args.queries).name, "embedding": "backbone CLS" if args.weights else "VLAD (SIFT)",
           "n": scores["n"], "median_km": scores["median_km"],
           **{f"{t:g}km": 100 * scores[f"acc@{t:g}km"] for t in THRESHOLDS_KM}}
    _common.print_table([row], [("queries", "queries", "s"), ("embedding", "embedding", "s"), ("n", "photos", "d")]
                        + [(f"{t:g}km", f"{t:g} km %", ".1f") for t in THRESHOLDS_KM]
                        + [("median_km", "median km", ".1f")])
    _common.write_json(out.with_suffix(".json"), row)
    return 0


def parser():
    p = _common.make_parser(__doc__.splitlines()[0], main, limit="queries")
    p.add_argument("--queries", required=True, help="the benchmark's CSV (image id, latitude, longitude)")
    p.add_argument("--query-images", required=True, help="the folder of the query images")
    p.add_argument("--gallery", required=True, help="the gallery's CSV (image id, latitude, longitude)")
    p.add_argument("--gallery-images", required=True, help="the folder of the gallery images")
    p.add_argument("--weights", help="a local DINOv2 or CLIP model folder (default: VLAD over SIFT, no model)")
    p.add_argument("--k", type=_common.at_least(1), default=10, help="gallery neighbours voting per query")
    p.add_argument("--bandwidth-km", type=float, default=25.0, help="the vote's kernel width")
    p.add_argument("--out", default="outputs/geo/predictions.csv", help="predictions CSV (IMG_ID,LAT,LON)")
    return p


if __name__ == "__main__":
    sys.exit(_common.main_of(parser()))
