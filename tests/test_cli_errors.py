"""The command line as a newcomer meets it: one-line errors that say the fix, exit statuses,
logging and progress, defaults in every help, queries keyed by their relative path.

Every test runs the real commands (``pylocalize.cli.main``, or a child process where stderr
must be seen whole) on small generated data.
"""

from __future__ import annotations

import argparse

import pytest
from conftest import python_child

from pylocalize.cli import build_parser, main


def _parsers(parser: argparse.ArgumentParser, path=("pylocalize",)):
    """Every parser of the command line with its command words."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, path + (name,))


def test_every_option_with_a_default_shows_it_in_help():
    checked = 0
    for path, parser in _parsers(build_parser()):
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            default = action.default
            if not action.option_strings or default in (None, False, argparse.SUPPRESS) or action.nargs == 0:
                continue
            shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
            assert f"default: {shown})" in text, f"{' '.join(path)} {action.option_strings[0]}: default {shown!r}"
            checked += 1
    assert checked > 40  # every part's commands were walked


def test_top_level_help_lists_every_command_with_its_help(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    (_, top), = [(p, s) for p, s in _parsers(build_parser()) if p == ("pylocalize",)]
    commands = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    assert len(commands._choices_actions) >= 10
    for choice in commands._choices_actions:
        assert choice.help, choice.dest
        line = next(line for line in text.splitlines() if line.split()[:1] == [choice.dest])
        assert line.split()[1] == choice.help.split()[0]


# ------------------------------------------------------------------ errors in one line


def _one_error_line(err: str, command: str) -> str:
    """The error line of stderr, checked to be the only thing there besides log lines."""
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and errors[0].startswith(f"pylocalize {command}: error: "), err
    return errors[0]


def test_bad_camera_is_one_line_saying_the_format(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    status = main(["map", "build", "--images", str(tmp_path / "images"), "--camera", "PINHOLE 640 480",
                   "--out", str(tmp_path / "map")])
    line = _one_error_line(capsys.readouterr().err, "map build")
    assert status == 1
    assert "--camera" in line and "PINHOLE takes 4 parameters" in line
    status = main(["map", "build", "--images", str(tmp_path / "images"), "--camera", "640x480 f=500",
                   "--out", str(tmp_path / "map")])
    line = _one_error_line(capsys.readouterr().err, "map build")
    assert status == 1 and "expected 'MODEL W H PARAMS...', e.g. 'SIMPLE_RADIAL" in line
    assert not (tmp_path / "map").exists()


def test_debug_shows_the_traceback(tmp_path, capsys):
    assert main(["--debug", "map", "build", "--images", str(tmp_path), "--camera", "FOO 1 1",
                 "--out", str(tmp_path / "map")]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ValueError" in err
    assert err.strip().splitlines()[-1].startswith("pylocalize map build: error: --camera")
    # the common options are taken after the command as well
    assert main(["map", "build", "--images", str(tmp_path), "--camera", "FOO 1 1", "--out", str(tmp_path / "m"),
                 "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_missing_inputs_and_usage_errors_are_one_line(tmp_path, capsys):
    from pylocalize.localization.cli import main as localization_main

    assert main(["localize", "--map", str(tmp_path / "nowhere"), "--images", str(tmp_path),
                 "--out", str(tmp_path / "p.txt")]) == 1
    line = _one_error_line(capsys.readouterr().err, "localize")
    assert "--map" in line and "nowhere: no such folder" in line and "pylocalize map build" in line
    # the same through the part's own entry point (python -m pylocalize.localization.cli)
    assert localization_main(["localize", "--map", str(tmp_path / "nowhere"), "--images", str(tmp_path),
                              "--out", str(tmp_path / "p.txt")]) == 1
    _one_error_line(capsys.readouterr().err, "localize")
    assert main(["map", "build", "--images", str(tmp_path / "photos"), "--out", str(tmp_path / "m")]) == 1
    assert "--images" in _one_error_line(capsys.readouterr().err, "map build")
    # options that do not go together: exit 2, as argparse's own usage errors
    assert main(["map", "build", "--colmap", str(tmp_path), "--out", str(tmp_path / "m")]) == 2
    assert "--colmap needs --images" in _one_error_line(capsys.readouterr().err, "map build")
    with pytest.raises(SystemExit) as stop:
        main(["localize", "--map", str(tmp_path)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the following arguments are required" in err and "--help" in err
    with pytest.raises(SystemExit) as stop:  # a count of 0 is refused by the parser, naming the option
        main(["demo", "--queries", "0"])
    assert stop.value.code == 2 and "argument --queries: must be at least 1, got 0" in capsys.readouterr().err


def test_a_file_the_system_cannot_open_is_named_by_its_option(tmp_path, capsys):
    """open() of a missing file says "[Errno 2] No such file or directory: 'x'"; the command
    line says which option named it and what to do."""
    (tmp_path / "gt.csv").write_text("lat,lon\n1,2\n")
    assert main(["geo", "eval", "--pred", str(tmp_path / "pred.csv"), "--gt", str(tmp_path / "gt.csv")]) == 1
    line = _one_error_line(capsys.readouterr().err, "geo eval")
    assert line.endswith(f"--pred {tmp_path / 'pred.csv'}: no such file or directory; check the path")
    assert main(["geo", "eval", "--pred", str(tmp_path), "--gt", str(tmp_path / "gt.csv")]) == 1
    assert "give a file, not a folder" in _one_error_line(capsys.readouterr().err, "geo eval")


# ------------------------------------------------------------ a small generated scene


@pytest.fixture(scope="module")
def scene_folder(tmp_path_factory):
    """16 views of the courtyard at 480x360 (images/, poses.txt, intrinsics.txt) and a map
    built from their known poses."""
    from pylocalize.datasets.synthetic import courtyard_scene

    tmp = tmp_path_factory.mktemp("scene")
    scene = courtyard_scene(num_views=16, seed=3, width=480, height=360)
    folder = scene.export(tmp / "scene")
    assert main(["--quiet", "map", "build", "--poses", str(folder / "poses.txt"), "--cameras",
                 str(folder / "intrinsics.txt"), "--images", str(folder / "images"), "--max-features", "1500",
                 "--out", str(tmp / "map")]) == 0
    return scene, folder, tmp / "map"


def test_localize_exits_non_zero_when_a_query_fails(tmp_path, scene_folder, capsys):
    from pylocalize.geometry import read_pose_file

    scene, folder, map_dir = scene_folder
    good = str(folder / "images" / scene.names[2])
    run = ["localize", "--map", str(map_dir), "--camera", scene.camera.to_string(), "--out", str(tmp_path / "p.txt")]
    assert main(run + ["--images", good, str(tmp_path / "missing.jpg")]) == 1
    captured = capsys.readouterr()
    assert "missing.jpg: failed:" in captured.out and "1 localized, 1 failed" in captured.out
    assert "1 of 2 queries failed" in captured.err and "--allow-failures" in captured.err
    assert list(read_pose_file(tmp_path / "p.txt")) == [scene.names[2]]  # the successes are written
    assert main(run + ["--images", good, str(tmp_path / "missing.jpg"), "--allow-failures"]) == 0
    capsys.readouterr()
    # nothing localized: non-zero whatever --allow-failures says
    assert main(run + ["--images", str(tmp_path / "missing.jpg"), "--allow-failures"]) == 1
    assert "no query was localized" in capsys.readouterr().err
    assert read_pose_file(tmp_path / "p.txt") == {}
    # a camera string that does not parse stops the command in one line
    assert main(["localize", "--map", str(map_dir), "--images", good, "--camera", "PINHOLE 480 360 384",
                 "--out", str(tmp_path / "p3.txt")]) == 1
    assert "PINHOLE takes 4 parameters" in _one_error_line(capsys.readouterr().err, "localize")
    assert not (tmp_path / "p3.txt").exists()


def test_queries_of_one_name_in_two_folders_are_keyed_by_folder(tmp_path, scene_folder, capsys):
    """qa/0003.jpg and qb/0003.jpg (different views) keep their own poses and figures; the
    same key twice is refused; --cameras and evaluate follow the keys."""
    import shutil

    from pylocalize.geometry import read_pose_file, write_pose_file
    from pylocalize.localization.evaluate import pose_error

    scene, folder, map_dir = scene_folder
    for sub, view in (("qa", 3), ("qb", 9)):
        (tmp_path / sub).mkdir()
        shutil.copy(folder / "images" / scene.names[view], tmp_path / sub / "0003.jpg")
    camera = scene.camera.to_string()
    # one key per line, and a bare name for the other query (older cameras files)
    (tmp_path / "cameras.txt").write_text(f"qa/0003.jpg {camera}\n0003.jpg {camera}\n")
    assert main(["localize", "--map", str(map_dir), "--images", str(tmp_path / "qa"), str(tmp_path / "qb"),
                 "--cameras", str(tmp_path / "cameras.txt"), "--out", str(tmp_path / "p.txt"),
                 "--viz", str(tmp_path / "viz")]) == 0
    out = capsys.readouterr().out
    assert "qa/0003.jpg:" in out and "qb/0003.jpg:" in out and "2 localized, 0 failed" in out
    poses = read_pose_file(tmp_path / "p.txt")
    assert sorted(poses) == ["qa/0003.jpg", "qb/0003.jpg"]
    for key, view in (("qa/0003.jpg", 3), ("qb/0003.jpg", 9)):
        t_err, r_err = pose_error(poses[key], scene.cam_from_world[view])
        assert t_err < 0.05 and r_err < 0.5, (key, t_err, r_err)
    assert (tmp_path / "viz" / "qa" / "0003.png").is_file() and (tmp_path / "viz" / "qb" / "0003.png").is_file()
    # evaluate against a ground truth keyed the same way
    write_pose_file(tmp_path / "gt.txt", [("qa/0003.jpg", scene.cam_from_world[3]),
                                          ("qb/0003.jpg", scene.cam_from_world[9])])
    assert main(["evaluate", "--gt", str(tmp_path / "gt.txt"), "--pred", str(tmp_path / "p.txt")]) == 0
    assert "2/2 images estimated" in capsys.readouterr().out
    # against a ground truth without folders, the two queries stand for one image: refused
    write_pose_file(tmp_path / "flat.txt", [("0003.jpg", scene.cam_from_world[3])])
    assert main(["evaluate", "--gt", str(tmp_path / "flat.txt"), "--pred", str(tmp_path / "p.txt")]) == 1
    assert "both stand for the ground truth's 0003.jpg" in _one_error_line(capsys.readouterr().err, "evaluate")
    # pairs files key the queries the same way
    from pylocalize.index.pairs import read_pairs

    assert main(["pairs", "--map", str(map_dir), "--images", str(tmp_path / "qa"), str(tmp_path / "qb"),
                 "--k", "2", "--out", str(tmp_path / "pairs.txt")]) == 0
    assert sorted(read_pairs(tmp_path / "pairs.txt")) == ["qa/0003.jpg", "qb/0003.jpg"]
    # two files of one name given directly: the same key twice
    assert main(["localize", "--map", str(map_dir), "--images", str(tmp_path / "qa" / "0003.jpg"),
                 str(tmp_path / "qb" / "0003.jpg"), "--camera", camera, "--out", str(tmp_path / "p2.txt")]) == 1
    line = _one_error_line(capsys.readouterr().err, "localize")
    assert "'0003.jpg'" in line and "give the folders instead" in line


def test_evaluate_matches_folder_keys_to_a_flat_ground_truth(tmp_path, scene_folder, capsys):
    """A query keyed images/db_0002.jpg (its folder given) is scored against the ground
    truth's db_0002.jpg."""
    scene, folder, map_dir = scene_folder
    import shutil

    (tmp_path / "images").mkdir()
    shutil.copy(folder / "images" / scene.names[2], tmp_path / "images" / scene.names[2])
    assert main(["localize", "--map", str(map_dir), "--images", str(tmp_path / "images"), "--camera",
                 scene.camera.to_string(), "--out", str(tmp_path / "p.txt")]) == 0
    assert f"images/{scene.names[2]}" in capsys.readouterr().out
    assert main(["evaluate", "--gt", str(folder / "poses.txt"), "--pred", str(tmp_path / "p.txt")]) == 0
    out = capsys.readouterr().out
    assert "1/1 images estimated" in out and "recall@(0.25m,2deg): 100.0 %" in out


def test_quiet_prints_no_progress_and_the_default_does(tmp_path, scene_folder, capsys):
    scene, folder, map_dir = scene_folder
    run = ["localize", "--map", str(map_dir), "--images", str(folder / "images" / scene.names[5]), "--camera",
           scene.camera.to_string(), "--out", str(tmp_path / "p.txt")]
    assert main(run) == 0
    assert "localize" in capsys.readouterr().err  # the progress bar
    assert main(["--quiet"] + run) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "1 localized, 0 failed" in captured.out
    assert main(["--quiet", "map", "build", "--poses", str(folder / "poses.txt"), "--camera",
                 scene.camera.to_string(), "--images", str(folder / "images"), "--max-features", "500",
                 "--out", str(tmp_path / "map")]) == 0
    assert capsys.readouterr().err == ""
    assert main(["map", "build", "--poses", str(folder / "poses.txt"), "--camera", scene.camera.to_string(),
                 "--images", str(folder / "images"), "--max-features", "500", "--out", str(tmp_path / "map")]) == 0
    err = capsys.readouterr().err
    assert "map: features of 16 images (" in err and "map: matching" in err  # phases with their durations


def test_sfm_skips_an_unreadable_photo_silences_colmap_and_repeats_exactly(tmp_path, scene_folder):
    """map build --images with one broken file: a warning that counts it, a map of the other
    16, no line of COLMAP's log on stderr; --deterministic twice gives the same map."""
    import re
    import shutil

    import numpy as np

    from pylocalize.localization import Map

    scene, folder, _ = scene_folder
    shutil.copytree(folder / "images", tmp_path / "images")
    (tmp_path / "images" / "broken.jpg").write_bytes(b"not a jpeg")
    maps = []
    for run in range(2):
        maps.append(tmp_path / f"map{run}")
        child = python_child("import sys; from pylocalize.cli import main; sys.exit(main(sys.argv[1:]))",
                             "map", "build", "--images", str(tmp_path / "images"), "--camera",
                             scene.camera.to_string(), "--max-features", "1500", "--deterministic",
                             "--out", str(maps[-1]), capture_output=True, text=True, timeout=600)
        assert child.returncode == 0, child.stderr
        glog = [line for line in child.stderr.splitlines() if re.match(r"[IWEF]\d{8} ", line)]
        assert glog == [], glog
        assert "skipped 1 of 17 images that cannot be read: broken.jpg: not a readable image" in child.stderr
        assert "SfM" in child.stderr
    a, b = Map.load(maps[0]), Map.load(maps[1])
    assert len(a.names) >= 12 and "broken.jpg" not in a.names and len(a.points3D) > 100
    assert a.names == b.names
    np.testing.assert_array_equal(a.points3D, b.points3D)
    np.testing.assert_array_equal(a.cam_from_world, b.cam_from_world)


def test_a_posed_image_that_cannot_be_read_stops_the_build_naming_it(tmp_path, scene_folder, capsys):
    """A posed image is data the poses refer to: unlike a photo folder for SfM, it is not
    skipped but named, with the fix."""
    import shutil

    scene, folder, _ = scene_folder
    shutil.copytree(folder / "images", tmp_path / "images")
    (tmp_path / "images" / scene.names[4]).write_bytes(b"\xff\xd8 cut short")
    assert main(["map", "build", "--poses", str(folder / "poses.txt"), "--cameras", str(folder / "intrinsics.txt"),
                 "--images", str(tmp_path / "images"), "--max-features", "300", "--out", str(tmp_path / "map")]) == 1
    line = _one_error_line(capsys.readouterr().err, "map build")
    assert f"{scene.names[4]}: not a readable image" in line and "every posed image must be readable" in line
    assert not (tmp_path / "map").exists()
