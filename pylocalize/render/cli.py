"""``pylocalize render``: template views of a mesh as one contact-sheet PNG, to see what
onboarding an object renders before running it.

``pylocalize/cli.py`` wires it in with ``add_parser(subparsers)``; the mesh loader and the
renderer are imported only when the command runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pylocalize._cli import at_least


def _contact_sheet(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``(rows * size, cols * size, 3)``: the views row by row on a near-square grid."""
    cols = int(np.ceil(np.sqrt(len(images))))
    rows = int(np.ceil(len(images) / cols))
    sheet = np.full((rows * size, cols * size, 3), 20, np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        sheet[r * size:(r + 1) * size, c * size:(c + 1) * size] = image
    return sheet


def _render(args) -> int:
    """Renders template views of a mesh and writes a contact sheet PNG."""
    from PIL import Image

    from pylocalize.geometry import viewpoint_poses
    from pylocalize.render import Renderer, load_mesh

    mesh = load_mesh(args.mesh)
    size = args.size
    inplane = max(1, args.inplane)
    poses = viewpoint_poses(max(1, -(-args.views // inplane)), inplane,
                            radius=args.distance * mesh.extent, center=mesh.center)[: args.views]
    # Fit the object's bounding sphere into the image with some margin.
    focal = 0.5 * size * args.distance / 0.6
    K = np.array([[focal, 0, (size - 1) / 2], [0, focal, (size - 1) / 2], [0, 0, 1]])
    renderer = Renderer(size, size, K, near=0.01 * mesh.extent, far=100 * mesh.extent,
                        supersample=3, background=(40, 40, 40))
    rgb = renderer.render(mesh, poses, outputs=("rgb",)).rgb
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / (Path(args.mesh).stem + "_templates.png")
    Image.fromarray(_contact_sheet(rgb, size)).save(path)
    print(f"{len(rgb)} views of {args.mesh} ({len(mesh.faces):,} triangles) -> {path}")
    return 0


def add_parser(subparsers) -> None:
    """Adds the ``render`` command to an argparse sub-parser set, as ``pylocalize.cli.build_parser``
    builds its commands."""
    p = subparsers.add_parser("render", help="render template views of a mesh into a contact sheet PNG")
    p.add_argument("--mesh", required=True, help="mesh file (PLY, OBJ, ...)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--views", type=at_least(1), default=48, help="number of views")
    p.add_argument("--inplane", type=at_least(1), default=1, help="in-plane rotations per viewpoint")
    p.add_argument("--size", type=at_least(16), default=200, help="view size in pixels")
    p.add_argument("--distance", type=float, default=1.5, help="camera distance in object diameters")
    p.set_defaults(func=_render)


__all__ = ["add_parser"]
