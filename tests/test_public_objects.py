"""The BOP core-dataset reader (targets, default detections, run-length masks, the toolkit's results
check) and benchmarks/public/bop.py, on a miniature lmo the test writes: renders of a textured box
in BOP's folders and files."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pylocalize.datasets.synthetic import textured_box_object
from pylocalize.geometry import look_at
from pylocalize.objects import bop
from pylocalize.render import Renderer

pytest.importorskip("cv2")

PUBLIC = Path(__file__).resolve().parents[1] / "benchmarks" / "public"
K = np.array([[500.0, 0, 319.5], [0, 520.0, 239.5], [0, 0, 1.0]])
OBJ_ID, SCENE_ID = 5, 2


def _coco_string(counts) -> str:
    """COCO's compressed RLE string of run lengths, written from the format's definition
    (differences to the value two places before from the third on, 5-bit groups low first,
    0x20 for more, the sign in 0x10 of the last group, offset by '0')."""
    out = []
    for i, value in enumerate(counts):
        x = value - counts[i - 2] if i > 2 else value
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr((c | 0x20 if more else c) + 48))
    return "".join(out)


def _runs(mask: np.ndarray) -> list:
    """Run lengths of a mask in column-major order, starting with a background run."""
    flat = mask.T.ravel().astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return ([0] + runs) if flat[0] else runs


def test_run_length_masks_both_encodings():
    rng = np.random.default_rng(3)
    for shape in ((7, 5), (40, 31)):
        mask = rng.random(shape) < 0.4
        mask[0, 0] = True  # a foreground first pixel: the counts start with an empty background run
        runs = _runs(mask)
        rle = {"size": list(shape), "counts": runs}
        np.testing.assert_array_equal(bop.rle_to_mask(rle), mask)
        np.testing.assert_array_equal(bop.rle_to_mask({"size": list(shape), "counts": _coco_string(runs)}), mask)
    with pytest.raises(ValueError, match="run lengths sum to 3, the mask has 2 x 2 pixels"):
        bop.rle_to_mask({"size": [2, 2], "counts": [1, 2]})


def test_results_check_follows_the_toolkit(tmp_path):
    row = {"scene_id": 1, "im_id": 3, "obj_id": 5, "score": 0.5, "R": np.eye(3), "t": [1, 2, 300], "time": 0.25}
    path = tmp_path / "m_lmo-test.csv"
    bop.write_results_csv(path, [row, dict(row, obj_id=6), dict(row, im_id=4, time=0.5)])
    assert bop.check_results_csv(path) == 3
    bop.write_results_csv(path, [row, dict(row, obj_id=6, time=0.3)])
    with pytest.raises(ValueError, match="m_lmo-test.csv:3: scene 1 image 3 has estimates with different times"):
        bop.check_results_csv(path)
    bop.write_results_csv(path, [])
    with pytest.raises(ValueError, match="no estimates"):
        bop.check_results_csv(path)
    path.write_text(bop.RESULTS_HEADER + "\n1,3,5,0.5,1 0 0 0 1 0 0 0 1,1 2 3\n")
    with pytest.raises(ValueError, match="m_lmo-test.csv:2: malformed result line"):
        bop.check_results_csv(path)
    with pytest.raises(ValueError, match="'lm' is not a BOP core dataset"):
        bop.core_dataset(tmp_path, "lm")
    with pytest.raises(FileNotFoundError, match="lmo_models.zip"):
        bop.core_dataset(tmp_path, "lmo")


@pytest.fixture(scope="module")
def lmo(tmp_path_factory):
    """A miniature lmo: models/obj_000005.ply + models_info.json, test/000002/ with two rendered
    images (rgb/, scene_camera/gt/gt_info json), test_targets_bop19.json, default detections
    (a mask as list counts, one as COCO string, a distractor of another object) and the
    representation of the object in reps/."""
    import trimesh

    from pylocalize.objects import onboard

    root = tmp_path_factory.mktemp("bop")
    mesh = textured_box_object(0)
    dataset = root / "lmo"
    (dataset / "models").mkdir(parents=True)
    trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).export(dataset / "models" / f"obj_{OBJ_ID:06d}.ply")
    (dataset / "models" / "models_info.json").write_text(json.dumps({str(OBJ_ID): {"diameter": float(mesh.extent)}}))
    scene = dataset / "test" / f"{SCENE_ID:06d}"
    (scene / "rgb").mkdir(parents=True)
    (scene / "depth").mkdir()
    rng = np.random.default_rng(5)
    images, detections, truth = {}, [], {}
    for im_id in (3, 8):
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        pose = look_at(mesh.center + d * 3.0 * mesh.extent, mesh.center, up=rng.normal(size=3))
        out = Renderer(640, 480, K, supersample=1).render(mesh, pose, outputs=("rgb", "mask", "depth"))
        mask = out.mask[0]
        image = np.where(mask[..., None], out.rgb[0], rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
        Image.fromarray(image).save(scene / "rgb" / f"{im_id:06d}.png")
        depth = np.where(mask, out.depth[0], pose[2, 3] + 200.0)  # a wall behind the object
        Image.fromarray(np.rint(depth * 10).astype(np.uint16)).save(scene / "depth" / f"{im_id:06d}.png")
        ys, xs = np.nonzero(mask)
        box = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
        images[im_id] = {"K": K, "depth_scale": 0.1, "gt": [{"obj_id": OBJ_ID, "R": pose[:, :3], "t": pose[:, 3]}],
                         "gt_info": [{"bbox_visib": box, "bbox_obj": box, "visib_fract": 1.0}]}
        runs = _runs(mask)
        counts = runs if im_id == 3 else _coco_string(runs)
        detections.append({"scene_id": SCENE_ID, "image_id": im_id, "category_id": OBJ_ID, "score": 0.9, "bbox": box,
                           "segmentation": {"size": [480, 640], "counts": counts}, "time": 0.125})
        detections.append({"scene_id": SCENE_ID, "image_id": im_id, "category_id": OBJ_ID + 1, "score": 0.95,
                           "bbox": [0, 0, 10, 10], "time": 0.125})
        truth[im_id] = (pose, mask, box)
    bop.write_scene(scene, images)
    (dataset / bop.TEST_TARGETS).write_text(json.dumps(
        [{"scene_id": SCENE_ID, "im_id": i, "obj_id": OBJ_ID, "inst_count": 1} for i in (8, 3)]))
    (root / "detections.json").write_text(json.dumps(detections))
    (root / "reps").mkdir()
    onboard(mesh, num_views=12, num_inplane=6, size=168, num_words=128, mesh_units="mm").save(
        root / "reps" / f"obj_{OBJ_ID:06d}.pyloc")
    return root, truth


def test_core_dataset_targets_and_detections(lmo):
    root, truth = lmo
    dataset = bop.core_dataset(root, "lmo")
    assert dataset.split_folder == root / "lmo" / "test" and dataset.modality == "rgb"
    assert bop.core_dataset(root / "lmo", "lmo").folder == root / "lmo"
    assert dataset.image_path(SCENE_ID, 3) == root / "lmo" / "test" / "000002" / "rgb" / "000003.png"
    assert bop.read_test_targets(root / "lmo" / bop.TEST_TARGETS) == [bop.Target(SCENE_ID, 3, OBJ_ID, 1),
                                                                     bop.Target(SCENE_ID, 8, OBJ_ID, 1)]
    detections = bop.read_detections(root / "detections.json")
    for im_id, (_, mask, box) in truth.items():
        best, distractor = detections[(SCENE_ID, im_id)][1], detections[(SCENE_ID, im_id)][0]  # best score first
        assert distractor.obj_id == OBJ_ID + 1 and distractor.mask is None
        assert best.obj_id == OBJ_ID and best.bbox == tuple(box) and best.time == 0.125
        np.testing.assert_array_equal(best.mask, mask)
    # the inputs of a target: its visible ground-truth boxes (BOP19: at least 10 % visible), or its
    # inst_count best detections of the object, the mask when there is one
    from pylocalize.objects.evaluate import _target_inputs

    entry = {"gt": [{"obj_id": OBJ_ID}, {"obj_id": OBJ_ID}, {"obj_id": OBJ_ID + 1}],
             "gt_info": [{"bbox_visib": [1, 2, 3, 4], "visib_fract": 0.05},
                         {"bbox_visib": [5, 6, 7, 8], "visib_fract": 0.6}, {"bbox_visib": [0, 0, 9, 9]}]}
    target = bop.Target(SCENE_ID, 3, OBJ_ID, 1)
    assert _target_inputs(target, entry, None) == [(1, {"bbox": [5.0, 6.0, 7.0, 8.0]})]
    (gt_index, region), = _target_inputs(target, entry, detections)
    assert gt_index is None and np.array_equal(region["mask"], truth[3][1])
    assert _target_inputs(target._replace(obj_id=OBJ_ID + 1), entry, detections) == [(None, {"bbox": (0, 0, 10, 10)})]
    with pytest.raises(ValueError, match="detection 0 is not scene_id, image_id, category_id"):
        (root / "bad.json").write_text(json.dumps([{"scene_id": 1, "image_id": 2, "score": 1.0, "bbox": [0, 0, 1, 1]}]))
        bop.read_detections(root / "bad.json")


def _script():
    spec = importlib.util.spec_from_file_location("public_bop", PUBLIC / "bop.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _toolkit_check(path) -> list:
    """The BOP toolkit's rules for a BOP19 CSV, read from its documentation: the header, seven
    comma-separated fields, R 3x3 and t 3 as space-separated numbers, one time per image."""
    lines = Path(path).read_text().splitlines()
    assert lines[0] == "scene_id,im_id,obj_id,score,R,t,time" and len(lines) > 1
    rows, times = [], {}
    for line in lines[1:]:
        fields = line.split(",")
        assert len(fields) == 7
        R = np.array(fields[4].split(), float).reshape(3, 3)
        t = np.array(fields[5].split(), float).reshape(3)
        key = (int(fields[0]), int(fields[1]))
        assert abs(times.setdefault(key, float(fields[6])) - float(fields[6])) <= 0.001
        rows.append((key, int(fields[2]), float(fields[3]), R, t, float(fields[6])))
    return rows


def test_bop_script_with_boxes_and_with_detections(lmo, tmp_path, capsys):
    root, truth = lmo
    script = _script()
    out = tmp_path / "pylocalize_lmo-test.csv"
    common = ["--reps", str(root / "reps"), "-q"]
    assert script._common.main_of(script.parser(), [str(root), "lmo", "--out", str(out), *common]) == 0
    printed = capsys.readouterr().out
    rows = _toolkit_check(out)
    assert sorted(r[0] for r in rows) == [(SCENE_ID, 3), (SCENE_ID, 8)] and {r[1] for r in rows} == {OBJ_ID}
    assert all(np.allclose(r[3] @ r[3].T, np.eye(3), atol=1e-6) and r[5] > 0 for r in rows)
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["input"] == "ground-truth boxes" and summary["instances"] == 2 and summary["estimated"] == 2
    # AR_MSSD again from the file: each image's one estimate against its ground truth (t in mm both)
    points = np.asarray(textured_box_object(0).vertices, np.float64)
    diameter = float(textured_box_object(0).extent)
    errors = [bop.mssd(R, t, truth[im][0][:, :3], truth[im][0][:, 3], points, [np.eye(4)]) / diameter
              for (_, im), _, _, R, t, _ in rows]
    assert summary["AR_MSSD"] == pytest.approx(np.mean([np.mean(np.array(errors) < th) for th in bop.MSSD_THRESHOLDS]))
    assert 0 <= summary["AR_MSPD"] <= 1 and "| lmo" in printed and "AR_MSSD" in printed
    # from the default detections, one image: the object's mask, the time includes the detector's
    out = tmp_path / "det_lmo-test.csv"
    assert script._common.main_of(script.parser(), [str(root), "lmo", "--out", str(out), "--detections",
                                                    str(root / "detections.json"), "--limit", "1", *common]) == 0
    rows = _toolkit_check(out)
    assert [r[0] for r in rows] == [(SCENE_ID, 3)] and rows[0][1] == OBJ_ID and rows[0][5] > 0.125
    assert "AR_MSSD" not in capsys.readouterr().out


def test_bop_script_rgbd_track(lmo, tmp_path, capsys):
    """``--depth``: each image's depth picks and fits the pose: its surface (ADD-S) never
    farther from the truth than the RGB pose's, and within 2 mm where a hypothesis starts
    near enough (a box's faces lie in the same planes when it slides along an edge, which a
    fit cannot see); a dataset without the depth images is an error that names the folder
    and the fix."""
    import shutil

    root, truth = lmo
    script = _script()
    common = ["--reps", str(root / "reps"), "-q"]
    points = np.asarray(textured_box_object(0).vertices, np.float64)
    surface_error = {}
    for name, extra in (("rgb", []), ("rgbd", ["--depth"])):
        out = tmp_path / f"{name}_lmo-test.csv"
        assert script._common.main_of(script.parser(), [str(root), "lmo", "--out", str(out), *extra, *common]) == 0
        rows = _toolkit_check(out)
        assert sorted(r[0] for r in rows) == [(SCENE_ID, 3), (SCENE_ID, 8)]
        surface_error[name] = {im: bop.adds(R, t, truth[im][0][:, :3], truth[im][0][:, 3], points)
                               for (_, im), _, _, R, t, _ in rows}
    assert all(surface_error["rgbd"][im] <= surface_error["rgb"][im] for im in (3, 8)), surface_error
    assert min(surface_error["rgbd"].values()) < 2.0, surface_error
    assert json.loads((tmp_path / "rgbd_lmo-test.json").read_text())["modality"] == "RGB-D"
    assert "RGB-D" in capsys.readouterr().out
    copy = tmp_path / "copy"
    shutil.copytree(root / "lmo", copy / "lmo", ignore=shutil.ignore_patterns("depth"))
    assert script._common.main_of(script.parser(), [str(copy), "lmo", "--out", str(tmp_path / "x.csv"), "--depth",
                                                    *common]) != 0
    assert "no depth image 000003" in capsys.readouterr().err
