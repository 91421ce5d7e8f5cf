"""Retrieval results as the image-pair files localization tools read.

- hloc: one ``query_name db_name`` pair per line (``pairs-*.txt``), best first per query.
- kapture: ``pairsfile.txt``, comma-separated ``query_image, map_image, score`` with a
  ``#`` header line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple

from pylocalize.containers import write_bytes_atomic


def _check_name(name: str) -> str:
    if not name or any(c.isspace() for c in name) or "," in name:
        raise ValueError(f"image name {name!r} is empty or contains whitespace or a comma")
    return name


def write_pairs_hloc(path, pairs: Mapping[str, Sequence[str]]) -> None:
    """Writes ``{query: [db, ...]}`` (best first) as hloc pairs."""
    lines = [f"{_check_name(q)} {_check_name(d)}" for q, dbs in pairs.items() for d in dbs]
    write_bytes_atomic(path, ("\n".join(lines) + ("\n" if lines else "")).encode("utf-8"))


def write_pairs_kapture(path, pairs: Mapping[str, Sequence[Tuple[str, float]]]) -> None:
    """Writes ``{query: [(db, score), ...]}`` as a kapture pairsfile."""
    lines = ["# query_image, map_image, score"]
    lines += [f"{_check_name(q)}, {_check_name(d)}, {float(s):.6g}" for q, dbs in pairs.items() for d, s in dbs]
    write_bytes_atomic(path, ("\n".join(lines) + "\n").encode("utf-8"))


def read_pairs(path) -> Dict[str, List[Tuple[str, float]]]:
    """Reads either format into ``{query: [(db, score), ...]}`` (score NaN for hloc files)."""
    out: Dict[str, List[Tuple[str, float]]] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split(",")] if "," in line else line.split()
        if len(parts) not in (2, 3):
            raise ValueError(f"{path}:{number}: expected 'query db' or 'query, db, score', got {line!r}")
        score = float(parts[2]) if len(parts) == 3 else float("nan")
        out.setdefault(parts[0], []).append((parts[1], score))
    return out
