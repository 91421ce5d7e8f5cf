"""BOP benchmark format and pose-error metrics (Hodan et al., BOP challenge 2019-2023).

Reading and writing: ``camera.json``, per-scene ``scene_camera.json`` / ``scene_gt.json`` /
``scene_gt_info.json``, ``models_info.json`` with symmetries, and BOP19 result CSVs
(``scene_id,im_id,obj_id,score,R,t,time``). Poses are ``cam_from_model`` in millimetres, as
BOP requires; :func:`write_results_csv` converts translations from the mesh's units
(:data:`MESH_UNITS`; a representation records its mesh's, see
:func:`~pylocalize.objects.onboard`).

Metrics, as the BOP toolkit defines them:

- MSSD, maximum symmetry-aware surface distance, recall over thresholds 0.05..0.5 x the
  object diameter;
- MSPD, maximum symmetry-aware projection distance, thresholds 5..50 px x (image width / 640);
- VSD, visible surface discrepancy with misalignment tolerances 0.05..0.5 x diameter,
  visibility tolerance 15 mm, correctness thresholds 0.05..0.5;
- AR = mean of the three average recalls; plus ADD / ADD-S recall at 0.1 x diameter.

Symmetries: discrete ones from ``symmetries_discrete``; continuous ones are discretised so
that no model point moves by more than 1 % of the diameter between steps.

The core datasets of the BOP challenge (:data:`CORE_DATASETS`: lmo, tless, tudl, icbin, itodd,
hb, ycbv) are read by name from a folder of datasets as the toolkit lays them out:
``<name>/models/``, ``<name>/<test split>/<scene_id>/`` and ``<name>/test_targets_bop19.json``
(the instances to estimate: ``scene_id, im_id, obj_id, inst_count``). Detections to start from
are the challenge's default ones, a COCO-style JSON list (``scene_id, image_id, category_id,
score, bbox [x, y, w, h]``, ``segmentation`` as COCO run-length encoding, ``time``), read by
:func:`read_detections`. :func:`check_results_csv` checks a results file as the toolkit's
``check_results_bop19.py`` does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

MSSD_THRESHOLDS = np.arange(0.05, 0.51, 0.05)
MSPD_THRESHOLDS = np.arange(5, 51, 5)
VSD_TAUS = np.arange(0.05, 0.51, 0.05)
VSD_THRESHOLDS = np.arange(0.05, 0.51, 0.05)
VSD_DELTA_MM = 15.0
# millimetres per mesh unit: BOP models and results are in mm, a user's mesh may be in m or cm
MESH_UNITS = {"mm": 1.0, "cm": 10.0, "m": 1000.0}
# the test split folder and image folder of each core dataset of the BOP challenge (the
# toolkit's dataset_params: T-LESS and HB test on their Primesense images, ITODD is grey)
CORE_DATASETS = {"lmo": ("test", "rgb"), "tless": ("test_primesense", "rgb"), "tudl": ("test", "rgb"),
                 "icbin": ("test", "rgb"), "itodd": ("test", "gray"), "hb": ("test_primesense", "rgb"),
                 "ycbv": ("test", "rgb")}
TEST_TARGETS = "test_targets_bop19.json"
RESULTS_HEADER = "scene_id,im_id,obj_id,score,R,t,time"
# the toolkit's checker accepts estimates of one image whose times differ by up to this (s)
TIME_TOLERANCE_S = 0.001
# a mesh whose diameter is under this many units is taken to be in metres: objects for 6D
# pose are centimetres to a metre across, so 10 m or 10 mm bounds them either way
METRES_BELOW_DIAMETER = 10.0


def mesh_units_from_size(diameter: float) -> str:
    """The likely units of a mesh of this diameter: ``"m"`` under 10 units across, else
    ``"mm"`` (centimetre meshes cannot be told from millimetre ones: name them)."""
    return "m" if float(diameter) < METRES_BELOW_DIAMETER else "mm"


def millimetres_per_unit(units: str) -> float:
    """Millimetres in one mesh unit (``"mm"``, ``"cm"`` or ``"m"``)."""
    if units not in MESH_UNITS:
        raise ValueError(f"mesh units must be one of {', '.join(MESH_UNITS)}, got {units!r}")
    return MESH_UNITS[units]


# ------------------------------------------------------------------ symmetries


def symmetry_transformations(model_info: dict, max_step: float = 0.01) -> List[np.ndarray]:
    """4x4 model-frame transformations that leave the object looking the same, the identity
    first (BOP's ``symmetries_discrete`` and discretised ``symmetries_continuous``)."""
    discrete = [np.eye(4)] + [np.asarray(s, np.float64).reshape(4, 4)
                              for s in model_info.get("symmetries_discrete", [])]
    continuous = []
    for sym in model_info.get("symmetries_continuous", []):
        axis = np.asarray(sym["axis"], np.float64)
        axis /= np.linalg.norm(axis)
        offset = np.asarray(sym.get("offset", [0, 0, 0]), np.float64)
        # the point farthest from the axis moves by r * angle: keep that under max_step x diameter
        radius = 0.5 * float(model_info["diameter"])
        steps = max(1, int(np.ceil(2 * np.pi / (max_step * float(model_info["diameter"]) / radius))))
        for k in range(steps):
            angle = 2 * np.pi * k / steps
            kx = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
            R = np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx
            T = np.eye(4)
            T[:3, :3] = R
            T[:3, 3] = offset - R @ offset
            continuous.append(T)
    if not continuous:
        return discrete
    return [d @ c for d in discrete for c in continuous]


# --------------------------------------------------------------------- metrics


def _transform(points, R, t):
    return points @ np.asarray(R, np.float64).T + np.asarray(t, np.float64).reshape(3)


def mssd(R_est, t_est, R_gt, t_gt, points, symmetries) -> float:
    """Maximum symmetry-aware surface distance (model units)."""
    est = _transform(points, R_est, t_est)
    return min(float(np.linalg.norm(est - _transform(_transform(points, S[:3, :3], S[:3, 3]), R_gt, t_gt),
                                     axis=1).max()) for S in symmetries)


def mspd(R_est, t_est, R_gt, t_gt, K, points, symmetries) -> float:
    """Maximum symmetry-aware projection distance (pixels)."""
    def project(p):
        return (p @ np.asarray(K).T)[:, :2] / p[:, 2:]

    est = project(_transform(points, R_est, t_est))
    return min(float(np.linalg.norm(est - project(_transform(_transform(points, S[:3, :3], S[:3, 3]), R_gt, t_gt)),
                                     axis=1).max()) for S in symmetries)


def add(R_est, t_est, R_gt, t_gt, points) -> float:
    """Average distance of model points (ADD)."""
    return float(np.linalg.norm(_transform(points, R_est, t_est) - _transform(points, R_gt, t_gt), axis=1).mean())


def adds(R_est, t_est, R_gt, t_gt, points) -> float:
    """Average closest-point distance (ADD-S), for symmetric objects."""
    from pylocalize.index.knn import assign

    est = np.ascontiguousarray(_transform(points, R_est, t_est), np.float32)
    gt = np.ascontiguousarray(_transform(points, R_gt, t_gt), np.float32)
    _, d2 = assign(gt, est, 1)
    return float(np.sqrt(np.maximum(d2, 0)).mean())


def vsd(depth_est: np.ndarray, depth_gt: np.ndarray, depth_test: np.ndarray, diameter: float,
        taus: Sequence[float] = VSD_TAUS, delta: float = VSD_DELTA_MM) -> np.ndarray:
    """VSD errors, one per misalignment tolerance ``tau`` (x diameter), from the rendered
    depth of the model at the estimated and true poses and the test image's depth (0 where
    unknown); all in model units."""
    def visible(rendered):
        known = depth_test > 0
        return (rendered > 0) & (~known | (rendered <= depth_test + delta))

    v_est, v_gt = visible(depth_est), visible(depth_gt)
    union = v_est | v_gt
    if not union.any():
        return np.ones(len(taus))
    both = v_est & v_gt
    diff = np.abs(depth_est - depth_gt)
    return np.array([1.0 - float((both & (diff < tau * diameter)).sum()) / float(union.sum()) for tau in taus])


def average_recalls(errors: Dict[str, np.ndarray], diameters: np.ndarray, widths: np.ndarray) -> dict:
    """AR per metric and overall from per-instance errors (``inf`` for a missing estimate).

    ``errors`` holds ``mssd`` (n,), ``mspd`` (n,), optionally ``vsd`` (n, len(VSD_TAUS)),
    ``add`` and ``adds`` (n,).
    """
    out = {}
    mssd_e = np.asarray(errors["mssd"]) / diameters
    out["AR_MSSD"] = float(np.mean([(mssd_e < th).mean() for th in MSSD_THRESHOLDS]))
    mspd_e = np.asarray(errors["mspd"]) / (widths / 640.0)
    out["AR_MSPD"] = float(np.mean([(mspd_e < th).mean() for th in MSPD_THRESHOLDS]))
    if "vsd" in errors:
        v = np.asarray(errors["vsd"])
        out["AR_VSD"] = float(np.mean([(v[:, i] < th).mean() for i in range(len(VSD_TAUS)) for th in VSD_THRESHOLDS]))
        out["AR"] = float(np.mean([out["AR_VSD"], out["AR_MSSD"], out["AR_MSPD"]]))
    for key in ("add", "adds"):
        if key in errors:
            name = f"{key.upper().replace('ADDS', 'ADD-S')}@0.1d"
            out[name] = float((np.asarray(errors[key]) < 0.1 * diameters).mean())
    return out


# ---------------------------------------------------------------------- format


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: missing; not a BOP dataset folder?") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


def read_models_info(path) -> Dict[int, dict]:
    return {int(k): v for k, v in _read_json(Path(path)).items()}


def read_scene(scene_dir) -> dict:
    """``{im_id: {"K", "depth_scale", "gt": [{"obj_id", "R", "t"}], "gt_info": [...]}}``."""
    scene_dir = Path(scene_dir)
    cameras = _read_json(scene_dir / "scene_camera.json")
    gts = _read_json(scene_dir / "scene_gt.json")
    info_path = scene_dir / "scene_gt_info.json"
    infos = _read_json(info_path) if info_path.is_file() else {}
    out = {}
    for key, cam in cameras.items():
        im_id = int(key)
        gt = [{"obj_id": int(g["obj_id"]), "R": np.asarray(g["cam_R_m2c"], np.float64).reshape(3, 3),
               "t": np.asarray(g["cam_t_m2c"], np.float64).reshape(3)} for g in gts.get(key, [])]
        out[im_id] = {"K": np.asarray(cam["cam_K"], np.float64).reshape(3, 3),
                      "depth_scale": float(cam.get("depth_scale", 1.0)), "gt": gt, "gt_info": infos.get(key, [])}
    return out


def write_scene(scene_dir, images: Dict[int, dict]) -> None:
    """Writes ``scene_camera.json``, ``scene_gt.json`` and ``scene_gt_info.json`` for
    ``{im_id: {"K", "depth_scale", "gt": [{"obj_id", "R", "t"}], "gt_info": [dict]}}``."""
    scene_dir = Path(scene_dir)
    scene_dir.mkdir(parents=True, exist_ok=True)
    cameras = {str(i): {"cam_K": np.asarray(v["K"]).ravel().tolist(), "depth_scale": v.get("depth_scale", 1.0)}
               for i, v in images.items()}
    gts = {str(i): [{"obj_id": int(g["obj_id"]), "cam_R_m2c": np.asarray(g["R"]).ravel().tolist(),
                     "cam_t_m2c": np.asarray(g["t"]).ravel().tolist()} for g in v["gt"]] for i, v in images.items()}
    infos = {str(i): v.get("gt_info", []) for i, v in images.items()}
    from pylocalize.containers import write_bytes_atomic

    for name, data in (("scene_camera.json", cameras), ("scene_gt.json", gts), ("scene_gt_info.json", infos)):
        write_bytes_atomic(scene_dir / name, json.dumps(data).encode("utf-8"))


def write_results_csv(path, rows: Sequence[dict], units: str = "mm") -> None:
    """BOP19 results: one line per estimate, ``R`` (row-major) and ``t`` space-separated,
    ``time`` in seconds (-1 when unknown).

    Parameters
    ----------
    rows : sequence of dict
        ``scene_id, im_id, obj_id, score, R, t`` and optionally ``time``; ``t`` in ``units``.
    units : {"mm", "cm", "m"}
        The units of the rows' ``t`` (the mesh's, e.g. ``ObjectRepresentation.mesh_units``):
        the file holds ``t`` in millimetres, as BOP requires.
    """
    scale = millimetres_per_unit(units)
    lines = [RESULTS_HEADER]
    for r in rows:
        R = " ".join(f"{v:.9g}" for v in np.asarray(r["R"]).ravel())
        t = " ".join(f"{v:.9g}" for v in np.asarray(r["t"], np.float64).ravel() * scale)
        lines.append(f"{int(r['scene_id'])},{int(r['im_id'])},{int(r['obj_id'])},{float(r['score']):.6g},{R},{t},"
                     f"{float(r.get('time', -1)):.6g}")
    from pylocalize.containers import write_bytes_atomic

    write_bytes_atomic(path, ("\n".join(lines) + "\n").encode("utf-8"))


def read_results_csv(path) -> List[dict]:
    """The rows of a BOP19 results CSV (``t`` in millimetres, as written)."""
    rows = []
    lines = Path(path).read_text().splitlines()
    if not lines or lines[0].strip() != RESULTS_HEADER:
        raise ValueError(f"{path}: not a BOP19 results CSV (header scene_id,im_id,obj_id,score,R,t,time)")
    for number, line in enumerate(lines[1:], 2):
        parts = line.split(",")
        try:
            R = np.array([float(v) for v in parts[4].split()]).reshape(3, 3)
            t = np.array([float(v) for v in parts[5].split()]).reshape(3)
            rows.append({"scene_id": int(parts[0]), "im_id": int(parts[1]), "obj_id": int(parts[2]),
                         "score": float(parts[3]), "R": R, "t": t, "time": float(parts[6])})
        except (IndexError, ValueError):
            raise ValueError(f"{path}:{number}: malformed result line") from None
    return rows


def camera_size(camera_json) -> Optional[tuple]:
    """(width, height) from a dataset's ``camera.json``."""
    info = _read_json(Path(camera_json))
    return int(info["width"]), int(info["height"])


def check_results_csv(path) -> int:
    """Checks a BOP19 results file as the BOP toolkit's checker does: the header, seven
    comma-separated fields per line, a 3x3 ``R`` and a 3-vector ``t``, at least one estimate,
    and one time per image (every estimate of an image carries the image's time, or -1).
    Returns the number of estimates; raises ``ValueError`` naming the first line that fails."""
    rows = read_results_csv(path)
    if not rows:
        raise ValueError(f"{path}: no estimates; the BOP toolkit refuses an empty results file")
    times: Dict[Tuple[int, int], float] = {}
    for number, row in enumerate(rows, 2):
        if row["time"] < 0:
            continue
        key = (row["scene_id"], row["im_id"])
        if abs(times.setdefault(key, row["time"]) - row["time"]) > TIME_TOLERANCE_S:
            raise ValueError(f"{path}:{number}: scene {key[0]} image {key[1]} has estimates with different times "
                             f"({times[key]:g} and {row['time']:g} s); every estimate of an image carries the "
                             "image's time")
    return len(rows)


# ------------------------------------------------------------------- core datasets


@dataclass
class BopDataset:
    """A core BOP dataset found by name: its folder, test split folder, image folder name."""

    name: str
    folder: Path
    split_folder: Path
    modality: str

    @property
    def models_folder(self) -> Path:
        return self.folder / "models"

    def mesh_path(self, obj_id: int) -> Path:
        return self.models_folder / f"obj_{obj_id:06d}.ply"

    def scene_folder(self, scene_id: int) -> Path:
        return self.split_folder / f"{scene_id:06d}"

    def image_path(self, scene_id: int, im_id: int) -> Path:
        """The test image (PNG; the toolkit's names, JPG and TIF tried after)."""
        folder = self.scene_folder(scene_id) / self.modality
        for suffix in (".png", ".jpg", ".tif"):
            if (folder / f"{im_id:06d}{suffix}").is_file():
                return folder / f"{im_id:06d}{suffix}"
        raise FileNotFoundError(f"{folder}: no image {im_id:06d} (.png, .jpg or .tif)")

    def depth_path(self, scene_id: int, im_id: int) -> Path:
        """The test image's depth (PNG; TIF, as ITODD's, tried after)."""
        folder = self.scene_folder(scene_id) / "depth"
        for suffix in (".png", ".tif"):
            if (folder / f"{im_id:06d}{suffix}").is_file():
                return folder / f"{im_id:06d}{suffix}"
        raise FileNotFoundError(f"{folder}: no depth image {im_id:06d} (.png or .tif); the RGB-D track needs the "
                                "test images' depth (in the dataset's test zip), or run on RGB alone")


def core_dataset(datasets_folder, name: str) -> BopDataset:
    """The core dataset ``name`` (:data:`CORE_DATASETS`) inside a folder of BOP datasets (or
    the dataset's own folder). Raises ``ValueError`` for an unknown name, ``FileNotFoundError``
    naming the missing part."""
    if name not in CORE_DATASETS:
        raise ValueError(f"{name!r} is not a BOP core dataset; use one of {', '.join(CORE_DATASETS)}")
    folder = Path(datasets_folder)
    if folder.name != name:
        folder = folder / name
    split, modality = CORE_DATASETS[name]
    for part in ("models", split):
        if not (folder / part).is_dir():
            raise FileNotFoundError(f"{folder / part}: missing; unzip the dataset's {name}_base.zip, "
                                    f"{name}_models.zip and {name}_test_bop19.zip into {folder.parent}")
    return BopDataset(name, folder, folder / split, modality)


class Target(NamedTuple):
    """An image and object whose instances are to be estimated (``test_targets_bop19.json``)."""

    scene_id: int
    im_id: int
    obj_id: int
    inst_count: int


def read_test_targets(path) -> List[Target]:
    """The targets of ``test_targets_bop19.json``, sorted by scene, image and object."""
    entries = _read_json(Path(path))
    try:
        targets = [Target(int(e["scene_id"]), int(e["im_id"]), int(e["obj_id"]), int(e["inst_count"]))
                   for e in entries]
    except (TypeError, KeyError, ValueError):
        raise ValueError(f"{path}: not a BOP targets file (a list of scene_id, im_id, obj_id, inst_count)") from None
    return sorted(targets)


class Detection(NamedTuple):
    """One detection: box ``(x, y, w, h)`` in pixels, its mask (None for a box-only
    detection), score, and the detector's time for the whole image (seconds, -1 unknown)."""

    obj_id: int
    score: float
    bbox: Tuple[float, float, float, float]
    mask: Optional[np.ndarray]
    time: float


def read_detections(path) -> Dict[Tuple[int, int], List[Detection]]:
    """``{(scene_id, im_id): detections, best score first}`` from a COCO-style JSON list of
    detections (the BOP challenge's default detections)."""
    entries = _read_json(Path(path))
    out: Dict[Tuple[int, int], List[Detection]] = {}
    for number, e in enumerate(entries if isinstance(entries, list) else [None]):
        try:
            segmentation = e.get("segmentation")
            mask = rle_to_mask(segmentation) if segmentation else None
            detection = Detection(int(e["category_id"]), float(e["score"]), tuple(float(v) for v in e["bbox"]), mask,
                                  float(e.get("time", -1)))
            key = (int(e["scene_id"]), int(e["image_id"]))
        except (AttributeError, TypeError, KeyError, ValueError) as error:
            raise ValueError(f"{path}: detection {number} is not scene_id, image_id, category_id, score, bbox "
                             f"[, segmentation, time] ({error})") from None
        if len(detection.bbox) != 4:
            raise ValueError(f"{path}: detection {number}: bbox must be [x, y, w, h]")
        out.setdefault(key, []).append(detection)
    for detections in out.values():
        detections.sort(key=lambda d: -d.score)
    return out


def _rle_string_counts(text: str) -> List[int]:
    """Run lengths of COCO's compressed RLE string: each value in 5-bit groups (low first) as
    characters from '0', bit 0x20 saying another group follows, 0x10 of the last the sign;
    from the third value on, the value is the difference to the one two places before."""
    counts: List[int] = []
    p = 0
    while p < len(text):
        value, shift, more = 0, 0, True
        while more:
            c = ord(text[p]) - 48
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            p += 1
            shift += 5
            if not more and c & 0x10:
                value -= 1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def rle_to_mask(rle: dict) -> np.ndarray:
    """A boolean mask from COCO run-length encoding ``{"size": [h, w], "counts": ...}``:
    run lengths over the pixels in column-major order, starting with a background run;
    ``counts`` a list of ints or COCO's compressed string."""
    try:
        height, width = (int(v) for v in rle["size"])
        counts = rle["counts"]
        counts = _rle_string_counts(counts) if isinstance(counts, str) else [int(c) for c in counts]
    except (TypeError, KeyError, ValueError):
        raise ValueError("segmentation must be COCO RLE {'size': [h, w], 'counts': [...] or '...'}") from None
    if any(c < 0 for c in counts) or sum(counts) != height * width:
        raise ValueError(f"segmentation: run lengths sum to {sum(counts)}, the mask has {height} x {width} pixels")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape(width, height).T.copy()
