#!/usr/bin/env python3
"""Time of LINE-2D shape scoring of every template on one query crop (issue 22).

The query crops are the generated instances of ``bench_objects.py`` (the HOPE bottle over
real photos, its visible mask given), cropped as ``estimate`` crops them; the templates
are a representation that ``bench_objects.py`` saved (default: the HOPE bottle's 798).
Stages timed, best of ``--repeats``: quantised orientations of the crop (in the box of
the dilated mask), spreading, response maps, and the scores of all templates over the
search window.

Peer: OpenCV's ``cv2.matchTemplate`` (cross-correlation, TM_CCORR) computing the same
scores, each template's per-orientation feature images correlated with the response maps
over the same window (dense: every pixel shift, of which ours reads every T-th), on
``--peer-templates`` templates and scaled to all; its scores at our offsets are checked
equal to ours.

    python benchmarks/bench_line2d.py [--representation bench_objects/obj_000001.pyloc] [--crops 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import best_of  # noqa: E402

from pylocalize.objects import ObjectRepresentation, orientation  # noqa: E402
from pylocalize.render import load_mesh  # noqa: E402


def query_crops(rep, data: Path, count: int, seed: int):
    """``count`` query crops of generated HOPE instances, and the pixels that vote (the
    object's mask, dilated)."""
    from bench_objects import K, backgrounds, make_instance

    mesh = load_mesh(data / "objects" / "hope" / "hope_000002.ply")
    paths, Image = backgrounds(data)
    rng = np.random.default_rng(seed)
    for _ in range(count):
        _, image, visible, _, _ = make_instance(mesh, rng, paths, Image)
        ys, xs = np.nonzero(visible)
        query = rep.crop_query(image, K, (xs.min(), ys.min(), xs.max(), ys.max()), visible, rep.default_extractor())
        yield query.crop, orientation.voting_region(query.mask)


def peer_scores(responses: np.ndarray, templates, ids, T: int, steps: int) -> np.ndarray:
    """Each template's best mean similarity over the same window by cv2.matchTemplate: per
    orientation, the image of the template's features of that orientation (ones) correlated
    with the zero-padded response map."""
    import cv2

    reach = T * steps
    bins, height, width = responses.shape
    padded = np.zeros((bins, height + 2 * reach, width + 2 * reach), np.float32)
    padded[:, reach:reach + height, reach:reach + width] = responses
    out = []
    for t in ids:
        xy, b = templates.xy[t].astype(np.int64), templates.bins[t]
        valid = b != orientation.NO_ORIENTATION
        xy, b = xy[valid], b[valid]
        lo, hi = xy.min(0), xy.max(0) + 1
        total = np.zeros((2 * reach + 1, 2 * reach + 1), np.float32)
        for o in np.unique(b):
            kernel = np.zeros((hi[1] - lo[1], hi[0] - lo[0]), np.float32)
            kernel[xy[b == o, 1] - lo[1], xy[b == o, 0] - lo[0]] = 1.0
            image = padded[o, lo[1]:hi[1] + 2 * reach, lo[0]:lo[0] + kernel.shape[1] + 2 * reach]
            total += cv2.matchTemplate(image, kernel, cv2.TM_CCORR)
        grid = total[::T, ::T]  # the offsets that ours scores
        out.append(grid.max() / (valid.sum() * orientation.SIMILARITY_SCALE))
    return np.array(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--representation", default="bench_objects/obj_000001.pyloc")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--crops", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--peer-templates", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rep = ObjectRepresentation.load(args.representation)
    if rep.orientation is None:
        raise SystemExit(f"{args.representation} has no orientation features: run bench_objects.py again")
    templates = rep.orientation
    T = max(2, int(round(orientation.SPREAD_SHARE * rep.size)))
    steps = orientation.SEARCH_STEPS
    offsets = orientation.search_offsets(T, steps)
    centre = (rep.size - 1) / 2.0
    rows = []
    for crop, mask in query_crops(rep, Path(args.data), args.crops, args.seed):
        t_query, responses = best_of(lambda: orientation.query_responses(crop, mask, T), args.repeats)
        _, (bins, _) = best_of(lambda: orientation.quantized_orientations(crop, mask=mask), 1)
        t_spread, bits = best_of(lambda: orientation.spread(bins, T), args.repeats)
        t_responses, _ = best_of(lambda: orientation.response_maps(bits), args.repeats)
        t_score, (scores, _, _) = best_of(lambda: orientation.score_templates(responses, templates, centre, offsets),
                                          args.repeats)
        ids = np.linspace(0, len(templates.bins) - 1, args.peer_templates).astype(int)
        t_peer, peer = best_of(lambda: peer_scores(responses, templates, ids, T, steps), 1)
        np.testing.assert_allclose(peer, scores[ids], atol=1e-5)  # the same scores
        t_peer_all = t_peer * len(templates.bins) / len(ids)
        rows.append((t_query - t_spread - t_responses, t_spread, t_responses, t_score, t_peer_all))
    q, s, r, c, p = np.median(np.array(rows), 0)
    n = len(templates.bins)
    print(f"{n} templates x {templates.bins.shape[1]} features, {rep.size}-px crop, T = {T} px, "
          f"{len(offsets)} offsets; median over {len(rows)} crops of the best of {args.repeats}")
    print(f"  quantised orientations (the mask's box) {q * 1e3:.1f} ms, spreading {s * 1e3:.1f} ms, "
          f"response maps {r * 1e3:.1f} ms, scores {c * 1e3:.1f} ms: {(q + s + r + c) * 1e3:.1f} ms in all")
    print(f"  cv2.matchTemplate, same scores: {p * 1e3:.0f} ms for the {n} templates "
          f"(timed on {args.peer_templates}); ours {p / c:.1f}x faster at scoring")
    return 0


if __name__ == "__main__":
    sys.exit(main())
