#!/usr/bin/env python3
"""Patch-level surface-point matching: the learned per-object descriptor against dense SIFT.

For each object, pairs of views of its mesh at most 15 degrees apart, framed as templates
(420-px crops): the first composited over a random crop of a photo with the training
augmentation (:func:`pylocalize.objects.learned.augment_query`), the second clean. Each
visible patch of the first (14-px grid) is matched to its nearest patch of the second by
descriptor; a match is right when the two patches see model points within 4 % of the
object's diameter. Reported: the share of right matches among the patches whose point the
second view sees, for dense SIFT and each learned descriptor given.

    python benchmarks/bench_learned_descriptor.py --descriptors DIR [DIR ...] [--pairs 12]
        [--backgrounds DATA/strecha/castle-P19/images] [--objects 1 5]

``DIR`` holds ``obj_000001.pyloc.descriptor`` (HOPE bottle) and ``obj_000005.pyloc.descriptor``
(LINEMOD can), as ``bench_objects.py --extractor learned --out DIR`` writes them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from pylocalize.features.patches import DenseSIFTExtractor
from pylocalize.objects.learned import (
    LearnedPatchExtractor,
    augment_query,
    background_images,
    descriptor_path,
    render_view_pair,
)
from pylocalize.render import load_mesh

SIZE, PATCH = 420, 14


def view_pair(mesh, rng):
    return render_view_pair(mesh, SIZE, rng)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = Path(__file__).resolve().parents[2] / "shared" / "data"
    parser.add_argument("--data", default=str(data))
    parser.add_argument("--descriptors", nargs="+", required=True, help="bench_objects.py --out folders")
    parser.add_argument("--backgrounds", default=None, help="photos behind the query views "
                                                            "(default: DATA/strecha/castle-P19/images)")
    parser.add_argument("--pairs", type=int, default=12)
    parser.add_argument("--objects", type=int, nargs="+", choices=[1, 5], default=[1, 5],
                        help="objects to run: 1 the HOPE bottle, 5 the LINEMOD can")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    objects = {1: Path(args.data) / "objects" / "hope" / "hope_000002.ply",
               5: Path(args.data) / "objects" / "linemod_can" / "obj_000005.ply"}
    for obj_id in args.objects:
        mesh_path = objects[obj_id]
        mesh = load_mesh(mesh_path)
        rng = np.random.default_rng(args.seed)
        bgs = background_images(args.backgrounds or Path(args.data) / "strecha" / "castle-P19" / "images", SIZE, rng)
        extractors = {"dense-sift": DenseSIFTExtractor(PATCH)}
        for folder in args.descriptors:
            extractors[folder] = LearnedPatchExtractor.load(descriptor_path(Path(folder) / f"obj_{obj_id:06d}.pyloc"))
        hits, total, tolerance = dict.fromkeys(extractors, 0), 0, 0.04 * mesh.extent
        centres = np.arange(SIZE // PATCH) * PATCH + PATCH // 2 - 1  # the pixel at each patch centre
        for _ in range(args.pairs):
            (rgb_a, xyz_a, mask_a), (rgb_b, xyz_b, mask_b) = view_pair(mesh, rng)
            image, visible = augment_query(rgb_a, mask_a, bgs, rng)
            image = image.astype(np.uint8)
            in_a, in_b = visible[np.ix_(centres, centres)].ravel(), mask_b[np.ix_(centres, centres)].ravel()
            points_a = xyz_a[np.ix_(centres, centres)].reshape(-1, 3)[in_a]
            points_b = xyz_b[np.ix_(centres, centres)].reshape(-1, 3)[in_b]
            seen = np.linalg.norm(points_a[:, None] - points_b[None], axis=2).min(1) < tolerance
            total += int(seen.sum())
            for name, extractor in extractors.items():
                fa = extractor(image).reshape(-1, extractor.dim)[in_a][seen]
                fb = extractor(rgb_b).reshape(-1, extractor.dim)[in_b]
                nearest = (fa @ fb.T).argmax(1)
                hits[name] += int((np.linalg.norm(points_b[nearest] - points_a[seen], axis=1) < tolerance).sum())
        print(f"{mesh_path.name}: {total} patches seen in both views; right nearest neighbours: "
              + ", ".join(f"{name} {hits[name] / max(total, 1):.3f}" for name in extractors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
