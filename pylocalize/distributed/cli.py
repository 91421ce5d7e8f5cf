"""``pylocalize index shard``: an index file, or a map's retrieval index, split into the shard
files and layout file of a sharded index on Ray (:mod:`pylocalize.distributed.sharded`).

Without ``--ray`` the shards are written in this process and Ray is not needed; with
``--ray auto|local|ADDRESS`` they are written by Ray tasks on that cluster, in parallel, and
then opened there once (one actor per shard) to check that every node can read its file.
``pylocalize/cli.py`` wires the command in with ``add_parser(subparsers)``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pylocalize._cli import at_least, run_alone

LAYOUT_NAME = "shards.json"


def _source(path: str):
    """The index to shard: an index file's path, or a map folder's retrieval index."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"INDEX {path}: no such file or folder; give an index file (.pyloc) or a map folder")
    from pylocalize.index import CANNIndex
    from pylocalize.localization import Map

    index = Map.load(path).index
    if not isinstance(index, CANNIndex):
        raise ValueError(f"{path}: the map's index is a {type(index).__name__} (a compressed map); shard the map's "
                         "CANN index before `Map.compress`, or rebuild the map")
    return index


def _shard(args) -> int:
    from pylocalize.distributed.sharded import open_sharded, shard_index

    source = _source(args.index)
    out = Path(args.out)
    if out.is_file():
        raise SystemExit(f"--out {out} is a file; give the folder to write the shards into")
    if args.ray:
        from pylocalize.distributed._runtime import connect

        connect(args.ray)
    layout_path = out / LAYOUT_NAME
    layout = shard_index(source, args.shards, layout_path, parallel=bool(args.ray))
    print(f"{layout_path}: a {layout.kind} in {len(layout.shards)} shards")
    for number, entry in enumerate(layout.shards):
        print(f"  shard {number}: {entry.file}  {entry.count} entries, {len(entry.keys)} "
              f"{'images' if layout.kind == 'CANNIndex' else 'ids'}, {entry.bytes} bytes")
    if args.ray:
        with open_sharded(layout_path, timeout=args.timeout) as index:
            for info in index.describe():
                print(f"  shard {info['shard']} opened on node {info['node'][:12]}: {info['ntotal']} entries")
    return 0


def add_parser(subparsers) -> None:
    """Adds the ``index`` command (``shard``) to an argparse sub-parser set, as
    ``pylocalize.cli.build_parser`` builds its commands."""
    p = subparsers.add_parser("index", help="sharded indexes on Ray: split an index into shard files")
    sub = p.add_subparsers(dest="index_command", required=True)
    s = sub.add_parser("shard", help="split an index file (Binary, MultiBit, CANN) or a map's index into shards")
    s.add_argument("index", metavar="INDEX", help="index file (.pyloc) or map folder")
    s.add_argument("--shards", type=at_least(1), required=True, metavar="N", help="number of shards")
    s.add_argument("--out", required=True, metavar="DIR",
                   help=f"folder for the shard files and the layout file {LAYOUT_NAME} (storage every node "
                        "reads, for a cluster)")
    s.add_argument("--ray", metavar="auto|local|ADDRESS",
                   help="write the shards as Ray tasks on this cluster and open them there: 'auto' (the Ray "
                        "running on this machine, else a new one in this process), 'local' (always a new one in "
                        "this process) or a cluster's HOST:PORT; default: no Ray")
    s.add_argument("--timeout", type=float, default=600.0, help="--ray: seconds to wait for the shards to open")
    s.set_defaults(func=_shard)


def main(argv=None) -> int:
    """Runs ``index`` alone: ``python -m pylocalize.distributed.cli shard ...``."""
    return run_alone(add_parser, argv, command="index")


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["add_parser", "main"]
