#!/usr/bin/env python3
"""A Strecha scene laid out as a public dataset, to run the public scripts on real photos here.

The public datasets are not on the machines pylocalize is developed on; the Strecha scenes are
(``../shared/data/strecha``: real photos, lidar poses). This writes one of them in the layout of
Cambridge Landmarks (split files with camera centres and world-to-camera quaternions,
``reconstruction.nvm``), 7-Scenes (``seq-XX/frame-XXXXXX.color.png``, camera-to-world pose files,
split files) or hloc's (``images_upright/db`` and ``query/``, a COLMAP model, a query list with
intrinsics, and the queries' poses as a ground-truth file), with links to the photos rather than
copies. The queries are every ``--every``-th image; the rest make the map. Two approximations of
the target formats: Cambridge's and 7-Scenes' cameras put the principal point at the image centre
(Strecha's is 8 px off it), and 7-Scenes' focal length is the one ``--focal`` then gives.

    python benchmarks/public/strecha_as.py cambridge ../shared/data/strecha/fountain-P11 /tmp/cambridge/Fountain
    python benchmarks/public/cambridge.py /tmp/cambridge/Fountain --out /tmp/cambridge/out
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(source.resolve(), target)


def cambridge(scene, queries, out: Path) -> None:
    from pylocalize.geometry import quaternion_from_matrix

    lines = {"train": [], "test": []}
    nvm = []
    for i, (name, K, pose) in enumerate(zip(scene.names, scene.K, scene.cam_from_world), 1):
        frame = f"seq1/frame{i:05d}.png"  # PIL reads a JPEG under a .png name by its content
        _link(scene.image_dir / name, out / frame)
        q, centre = quaternion_from_matrix(pose[:, :3]), -pose[:, :3].T @ pose[:, 3]
        lines["test" if name in queries else "train"].append(f"{frame} " + " ".join(f"{v:.17g}" for v in (*centre, *q)))
        nvm.append(frame.replace(".png", ".jpg") + " " + " ".join(f"{v:.17g}" for v in (K[0, 0], *q, *centre)) + " 0 0")
    header = "Visual Landmark Dataset V1\nImageFile, Camera Position [X Y Z W P Q R]\n\n"
    for split, rows in lines.items():
        (out / f"dataset_{split}.txt").write_text(header + "\n".join(rows) + "\n")
    (out / "reconstruction.nvm").write_text(f"NVM_V3\n\n{len(nvm)}\n" + "\n".join(nvm) + "\n\n0\n")


def seven_scenes(scene, queries, out: Path) -> None:
    counts = {"seq-01": 0, "seq-02": 0}
    for name, pose in zip(scene.names, scene.cam_from_world):
        sequence = "seq-02" if name in queries else "seq-01"
        stem = out / sequence / f"frame-{counts[sequence]:06d}"
        counts[sequence] += 1
        _link(scene.image_dir / name, Path(f"{stem}.color.png"))
        world_from_cam = np.eye(4)
        world_from_cam[:3, :3], world_from_cam[:3, 3] = pose[:, :3].T, -pose[:, :3].T @ pose[:, 3]
        np.savetxt(f"{stem}.pose.txt", world_from_cam, fmt="%.17g")
    (out / "TrainSplit.txt").write_text("sequence1\n")
    (out / "TestSplit.txt").write_text("sequence2\n")


def hloc(scene, queries, out: Path) -> None:
    import pycolmap

    from pylocalize.geometry import Camera, matrix_from_quaternion, quaternion_from_matrix, write_pose_file
    from pylocalize.io import image_size

    rec = pycolmap.Reconstruction()
    lines, truth = [], {}
    for i, (name, K, pose) in enumerate(zip(scene.names, scene.K, scene.cam_from_world), 1):
        camera = Camera.from_K(K, *image_size(scene.image_dir / name))
        if name in queries:
            query = f"query/day/strecha/{name}"
            _link(scene.image_dir / name, out / "images_upright" / query)
            lines.append(f"{query} {camera.to_string()}")
            # Strecha's rotations are orthonormal to about 1e-6 only (castle-P19): through a unit
            # quaternion they become rotations, as a pose file must hold them
            rotation = matrix_from_quaternion(quaternion_from_matrix(pose[:, :3]))
            truth[query] = np.hstack([rotation, pose[:, 3:]])
            continue
        _link(scene.image_dir / name, out / "images_upright" / "db" / name)
        colmap_camera = camera.to_pycolmap()
        colmap_camera.camera_id = i
        rec.add_camera_with_trivial_rig(colmap_camera)
        rigid = pycolmap.Rigid3d(pycolmap.Rotation3d(pose[:, :3]), pose[:, 3].copy())
        rec.add_image_with_trivial_frame(pycolmap.Image(name=f"db/{name}", camera_id=i, image_id=i), rigid)
    model = out / "3D-models" / "strecha"
    model.mkdir(parents=True)
    rec.write(str(model))
    (out / "queries").mkdir()
    (out / "queries" / "day_time_queries_with_intrinsics.txt").write_text("\n".join(lines) + "\n")
    write_pose_file(out / "ground_truth.txt", truth.items())


LAYOUTS = {"cambridge": cambridge, "seven-scenes": seven_scenes, "hloc": hloc}


def main(args) -> int:
    from pylocalize.datasets.strecha import read_strecha_scene

    scene = read_strecha_scene(args.scene)
    queries = set(scene.names[args.every // 2::args.every])
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out}: not empty; give a new folder")
    out.mkdir(parents=True, exist_ok=True)
    LAYOUTS[args.layout](scene, queries, out)
    print(f"{args.scene} as {args.layout}: {len(scene.names) - len(queries)} map images, {len(queries)} queries "
          f"({', '.join(sorted(queries))}) -> {out}")
    return 0


def parser():
    p = _common.make_parser(__doc__.splitlines()[0], main, limit=None)
    p.add_argument("layout", choices=sorted(LAYOUTS), help="the public layout to write")
    p.add_argument("scene", help="a Strecha scene folder (images/, gt_dense_cameras/)")
    p.add_argument("out", help="a new folder for the laid-out dataset")
    p.add_argument("--every", type=_common.at_least(2), default=3, help="every N-th image is a query")
    return p


if __name__ == "__main__":
    sys.exit(_common.main_of(parser()))
