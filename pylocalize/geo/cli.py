"""``pylocalize geo``: cells, train, predict, eval.

- ``geo cells``: an adaptive S2 cell hierarchy from a CSV of training GPS;
- ``geo train``: a GeoDecoder head or a flat cell classifier on image tokens (``.npy``,
  ``(n, tokens, dim)``), or a retrieval gallery of embeddings (``.npy``, ``(n, dim)``);
- ``geo predict``: GPS of query tokens or embeddings, written as a CSV;
- ``geo eval``: great-circle accuracy at 1 / 25 / 200 / 750 / 2500 km, and a world map.

GPS files are CSV with a header naming the latitude and longitude columns (``lat``/``lon``,
``LAT``/``LON``, ``latitude``/``longitude``), or the first two columns without a header.
Arrays are ``.npy`` files, read without pickle.
"""

from __future__ import annotations

import numpy as np

from pylocalize._cli import at_least, run_alone
from pylocalize._core import FormatError
from pylocalize.datasets.geotagged import LAT_NAMES as _LAT_NAMES
from pylocalize.datasets.geotagged import LON_NAMES as _LON_NAMES


def read_latlon_csv(path) -> np.ndarray:
    """``float64 (n, 2)`` latitude, longitude degrees from a CSV file (see the module docstring)."""
    from pylocalize.geo.cells import check_latlon

    with open(path, encoding="utf-8") as f:
        first = f.readline().strip()
    fields = [c.strip().strip('"').lower() for c in first.split(",")]
    try:
        [float(c) for c in fields[:2]]
        header, columns = False, (0, 1)
    except ValueError:
        header = True
        lat = [i for i, c in enumerate(fields) if c in _LAT_NAMES]
        lon = [i for i, c in enumerate(fields) if c in _LON_NAMES]
        if not lat or not lon:
            raise ValueError(f"{path}: the header {first!r} names no latitude and longitude columns; call them lat "
                             "and lon") from None
        columns = (lat[0], lon[0])
    data = np.loadtxt(path, delimiter=",", skiprows=int(header), usecols=columns, ndmin=2, dtype=np.float64)
    return check_latlon(data, str(path))


def write_latlon_csv(path, latlon: np.ndarray) -> None:
    import io

    from pylocalize.containers import write_bytes_atomic

    buffer = io.BytesIO()
    np.savetxt(buffer, np.asarray(latlon), delimiter=",", header="lat,lon", comments="", fmt="%.7f")
    write_bytes_atomic(path, buffer.getvalue())


def _load_array(path, name: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise SystemExit(f"--{name} {path}: not a readable .npy array without pickled objects ({error})") from None


def _cells(args) -> int:
    import time

    from pylocalize.geo import CellHierarchy

    latlon = read_latlon_csv(args.gps)
    t0 = time.perf_counter()
    hierarchy = CellHierarchy.from_latlon(latlon, max_images=args.max_images, min_images=args.min_images)
    seconds = time.perf_counter() - t0
    hierarchy.save(args.out)
    labels = hierarchy.cell_of(latlon)
    print(f"{len(latlon):,} photos -> {hierarchy.num_cells} cells in {seconds:.2f} s -> {args.out}")
    for h in range(hierarchy.num_hierarchies):
        print(f"  granularity {h}: max {hierarchy.max_images[h]}, min {hierarchy.min_images[h]}: "
              f"{hierarchy.num_cells[h]} cells, S2 levels {hierarchy.levels[h].min()}..{hierarchy.levels[h].max()}, "
              f"{100 * np.mean(labels[:, h] >= 0):.2f} % of photos in a kept cell")
    return 0


def _train(args) -> int:
    latlon = read_latlon_csv(args.gps)
    if args.model == "gallery":
        from pylocalize.geo import GeoGallery

        if not args.embeddings:
            raise SystemExit("--model gallery needs --embeddings FILE.npy, (n, dim) image embeddings")
        gallery = GeoGallery(_load_array(args.embeddings, "embeddings"), latlon, binary=args.binary)
        gallery.save(args.out)
        print(f"{gallery} -> {args.out}")
        return 0
    from pylocalize.geo import CellHierarchy
    from pylocalize.geo.model import FlatCellClassifier, GeoDecoder

    if not args.cells or not args.tokens:
        raise SystemExit(f"--model {args.model} needs --cells (from 'geo cells') and --tokens FILE.npy")
    hierarchy = CellHierarchy.load(args.cells)
    tokens = _load_array(args.tokens, "tokens")
    if tokens.ndim != 3:
        raise SystemExit(f"--tokens must hold (n, tokens, dim), got shape {tokens.shape}")
    options = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, validation=args.validation,
                   patience=args.patience, seed=args.seed, progress=args.progress, num_threads=args.torch_threads)
    if args.model == "decoder":
        scenes = _load_array(args.scenes, "scenes") if args.scenes else None
        num_scenes = args.num_scenes or (int(scenes.max()) + 1 if scenes is not None else 1)
        model = GeoDecoder(hierarchy, tokens.shape[2], num_scenes=num_scenes, d_model=args.d_model,
                           num_heads=args.heads, independent_layers=args.layers, dependent_layers=args.dependent_layers,
                           seed=args.seed)
        model.fit(tokens, latlon, scenes, **options)
    else:
        model = FlatCellClassifier(hierarchy, tokens.shape[2], d_model=args.d_model, num_heads=args.heads,
                                   num_layers=args.layers + args.dependent_layers, seed=args.seed)
        model.fit(tokens, latlon, **options)
    model.save(args.out)
    print(f"{model} trained for {len(model.history)} epochs (best held-out loss {min(model.history):.3f}) "
          f"-> {args.out}")
    return 0


def _predict(args) -> int:
    if args.gallery:
        from pylocalize.geo import GeoGallery

        if not args.embeddings:
            raise SystemExit("--gallery needs --embeddings FILE.npy, (n, dim) query embeddings")
        gallery = GeoGallery.load(args.gallery)
        pred = gallery.predict(_load_array(args.embeddings, "embeddings"), k=args.k, bandwidth_km=args.bandwidth_km)
    elif args.model:
        from pylocalize.checkpoints import read_checkpoint
        from pylocalize.geo.model import FlatCellClassifier, GeoDecoder

        if not args.tokens:
            raise SystemExit("--model needs --tokens FILE.npy, (n, tokens, dim) query tokens")
        try:
            kind = read_checkpoint(args.model, "geo checkpoint").get("format", "")
        except (FormatError, OSError) as error:  # any unreadable file: say so rather than trust it
            raise SystemExit(f"--model {args.model}: not a pylocalize geo checkpoint ({error})") from None
        cls = {"pylocalize.GeoDecoder": GeoDecoder, "pylocalize.FlatCellClassifier": FlatCellClassifier}.get(kind)
        if cls is None:
            raise SystemExit(f"--model {args.model}: a {kind or 'foreign'} file, not a GeoDecoder or flat classifier")
        pred = cls.load(args.model).predict(_load_array(args.tokens, "tokens"))
    else:
        raise SystemExit("give --model FILE.pt --tokens FILE.npy, or --gallery FILE --embeddings FILE.npy")
    write_latlon_csv(args.out, pred)
    print(f"{len(pred):,} predictions -> {args.out}")
    return 0


def _eval(args) -> int:
    from pylocalize.geo import accuracy, plot_predictions

    pred, truth = read_latlon_csv(args.pred), read_latlon_csv(args.gt)
    if len(pred) != len(truth):
        raise SystemExit(f"{len(pred)} predictions but {len(truth)} ground-truth rows: give one per image, same order")
    result = accuracy(pred, truth)
    print(f"{result['n']:,} photos, median error {result['median_km']:.1f} km")
    for key, value in result.items():
        if key.startswith("acc@"):
            print(f"{key}: {100 * value:.1f} %")
    if args.figure:
        background = read_latlon_csv(args.background) if args.background else None
        plot_predictions(pred, truth, args.figure, background=background)
        print(f"figure -> {args.figure}")
    return 0


def add_parser(subparsers) -> None:
    """Adds the ``geo`` command (``cells``, ``train``, ``predict``, ``eval``) to an argparse
    sub-parser set, as ``pylocalize.cli.build_parser`` builds its commands."""
    p = subparsers.add_parser("geo", help="geo-localization: S2 cells, GeoDecoder head, gallery retrieval")
    sub = p.add_subparsers(dest="geo_command", required=True)

    c = sub.add_parser("cells", help="adaptive S2 cell hierarchy from training GPS")
    c.add_argument("--gps", required=True, help="CSV of training GPS (lat, lon columns)")
    c.add_argument("--out", required=True, help="cell hierarchy file to write")
    c.add_argument("--max-images", type=int, nargs="+", default=[5000, 2000, 1000],
                   help="one granularity per value, coarse to fine: split cells with more photos")
    c.add_argument("--min-images", type=int, nargs="+", default=[50],
                   help="drop cells with fewer photos: one value, or one per granularity")
    c.set_defaults(func=_cells)

    t = sub.add_parser("train", help="train a GeoDecoder or flat classifier on tokens, or build a retrieval gallery")
    t.add_argument("--model", choices=["decoder", "flat", "gallery"], default="decoder",
                   help="GeoDecoder head, flat cell classifier, or a retrieval gallery")
    t.add_argument("--gps", required=True, help="CSV of the training photos' GPS, in the order of the arrays")
    t.add_argument("--out", required=True, help="checkpoint (.pt) or gallery file to write")
    t.add_argument("--cells", help="cell hierarchy from 'geo cells' (decoder, flat)")
    t.add_argument("--tokens", help=".npy (n, tokens, dim) image tokens (decoder, flat)")
    t.add_argument("--scenes", help=".npy (n,) int scene labels (decoder; default: one scene)")
    t.add_argument("--num-scenes", type=int, default=None, help="scene queries per hierarchy (default: from --scenes)")
    t.add_argument("--embeddings", help=".npy (n, dim) image embeddings (gallery)")
    t.add_argument("--binary", action="store_true", help="gallery: search sign codes (Hamming) instead of floats")
    t.add_argument("--d-model", type=int, default=256, help="head width")
    t.add_argument("--heads", type=int, default=8, help="attention heads")
    t.add_argument("--layers", type=int, default=2, help="hierarchy-independent decoder layers")
    t.add_argument("--dependent-layers", type=int, default=1, help="hierarchy-dependent layers")
    t.add_argument("--epochs", type=int, default=20, help="most training epochs")
    t.add_argument("--batch-size", type=int, default=256, help="images per step")
    t.add_argument("--lr", type=float, default=5e-4, help="learning rate")
    t.add_argument("--validation", type=float, default=0.1, help="held-out fraction for early stopping")
    t.add_argument("--patience", type=int, default=3,
                   help="epochs without a better held-out loss before stopping")
    t.add_argument("--seed", type=int, default=0, help="initialization and shuffling seed")
    t.add_argument("--torch-threads", type=int, default=None,
                   help="torch threads while training (default: torch's; 1 is often fastest for small heads)")
    t.set_defaults(func=_train)

    r = sub.add_parser("predict", help="GPS of query tokens (model) or embeddings (gallery)")
    r.add_argument("--model", help="checkpoint from 'geo train --model decoder|flat'")
    r.add_argument("--tokens", help=".npy (n, tokens, dim) query tokens")
    r.add_argument("--gallery", help="gallery from 'geo train --model gallery'")
    r.add_argument("--embeddings", help=".npy (n, dim) query embeddings")
    r.add_argument("--k", type=at_least(1), default=10, help="gallery neighbours")
    r.add_argument("--bandwidth-km", type=float, default=25.0, help="gallery kernel bandwidth")
    r.add_argument("--out", required=True, help="CSV of predicted GPS (lat, lon)")
    r.set_defaults(func=_predict)

    e = sub.add_parser("eval", help="accuracy at 1 / 25 / 200 / 750 / 2500 km and median error")
    e.add_argument("--pred", required=True, help="CSV of predicted GPS")
    e.add_argument("--gt", required=True, help="CSV of true GPS, same order")
    e.add_argument("--figure", help="world map of predictions vs truth (PNG, PDF...)")
    e.add_argument("--background", help="CSV of GPS drawn faintly underneath (e.g. the training photos)")
    e.set_defaults(func=_eval)


__all__ = ["add_parser", "main", "read_latlon_csv", "write_latlon_csv"]


def main(argv=None) -> int:
    """Runs ``geo`` alone: ``python -m pylocalize.geo.cli cells ...``."""
    return run_alone(add_parser, argv)


if __name__ == "__main__":
    import sys

    sys.exit(main(["geo"] + sys.argv[1:] if sys.argv[1:2] != ["geo"] else sys.argv[1:]))
