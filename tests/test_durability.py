"""Durability of what pylocalize writes: crashes during saves, damaged files, hostile names,
concurrent writers and readers (issue 16; reproducers in shared/repros/reliability/)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import python_child

import pylocalize
from pylocalize import FormatError, _core
from pylocalize.geometry.camera import Camera
from pylocalize.index.two_stage import TwoStageIndex
from pylocalize.localization.map import Map, check_image_name, image_path

CAMERA = "PINHOLE 640 480 500 500 320 240"


def small_map(num_images: int, features: int = 40, seed: int = 0) -> Map:
    """A map of random features (no triangulation): enough for the files' round trip."""
    rng = np.random.default_rng(seed)
    n = num_images
    poses = np.tile(np.hstack([np.eye(3), np.zeros((3, 1))]), (n, 1, 1))
    poses[:, :, 3] = rng.standard_normal((n, 3))
    keypoints = [rng.uniform(0, 400, (features, 2)).astype(np.float32) for _ in range(n)]
    descriptors = [rng.integers(0, 256, (features, 128), dtype=np.uint8) for _ in range(n)]
    point_ids = [np.where(rng.random(features) < 0.5, rng.integers(0, 10, features), -1) for _ in range(n)]
    m = Map([f"seq/img{i:03d}.png" for i in range(n)], [Camera.from_string(CAMERA)] * n, poses, keypoints,
            descriptors, point_ids, rng.standard_normal((10, 3)))
    m.image_dir = "/data/images"
    return m


def rewrite_map_file(folder: Path, names=None, info_update=None, meta_update=None) -> None:
    """Rewrites map.pyloc with changed names, info or meta (what a crafted file holds)."""
    _, _, meta, sections = _core.read_container(str(folder / "map.pyloc"))
    sections = {k: np.ascontiguousarray(v) for k, v in sections.items()}
    if names is not None:
        sections["names"] = np.frombuffer("\n".join(names).encode("utf-8"), np.uint8).copy()
        meta["num_images"] = len(names)
    if info_update is not None:
        info = json.loads(bytes(sections["info"]).decode("utf-8"))
        info.update(info_update)
        info = {k: v for k, v in info.items() if v is not None}
        sections["info"] = np.frombuffer(json.dumps(info).encode("utf-8"), np.uint8).copy()
    meta.update(meta_update or {})
    meta = {k: v for k, v in meta.items() if v is not None}
    _core.write_container(str(folder / "map.pyloc"), "LocalizationMap", meta, sections)


# ------------------------------------------------------------------------ maps


def test_map_crash_between_index_and_map_file_leaves_the_old_map(tmp_path, monkeypatch):
    """repro_map_save_not_atomic: dying after the index file is written, before map.pyloc."""
    old, new = small_map(12), small_map(6, seed=1)
    old.save(tmp_path / "m")

    def crash(*args, **kwargs):
        raise SystemExit("crash here")

    monkeypatch.setattr(_core, "write_container", crash)
    with pytest.raises(SystemExit):
        new.save(tmp_path / "m")
    monkeypatch.undo()
    assert Map.load(tmp_path / "m").names == old.names  # the old map, whole
    new.save(tmp_path / "m")
    loaded = Map.load(tmp_path / "m")
    assert loaded.names == new.names and len(loaded.index) == sum(len(d) for d in new.descriptors)
    # the uncommitted index of the crashed save is gone after the next one
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert len([f for f in files if f.startswith("cann-")]) == 1 and "map.pyloc" in files


def test_map_of_layout_2_still_loads_and_is_upgraded_by_a_save(tmp_path):
    """Layout 2 (before unique index names): cann.pyloc, nothing recorded about it."""
    m = small_map(5)
    folder = tmp_path / "old"
    m.save(folder)
    index_file, = folder.glob("cann-*.pyloc")
    os.rename(index_file, folder / "cann.pyloc")
    rewrite_map_file(folder, info_update={"index_file": None},
                     meta_update={"map_version": 2, "index_bytes": None, "index_features": None})
    loaded = Map.load(folder)
    assert loaded.names == m.names and len(loaded.index) == len(m.index)
    query = m.descriptors[0][:3]
    np.testing.assert_array_equal(loaded.index.search(query, 2)[1], m.index.search(query, 2)[1])
    loaded.save(folder)  # the index is memory-mapped from cann.pyloc, which the save then removes
    assert not (folder / "cann.pyloc").exists()
    assert Map.load(folder).names == m.names


def test_map_index_file_must_be_the_one_recorded(tmp_path):
    m = small_map(4)
    m.save(tmp_path / "m")
    for info, meta, match in [({"index_file": "../../etc/passwd"}, None, "not one a map save writes"),
                              (None, {"index_bytes": 12}, "bytes"),
                              ({"index_file": "cann-0123456789abcdef.pyloc"}, None, "missing")]:
        folder = tmp_path / f"case{match[:4]}"
        import shutil

        shutil.copytree(tmp_path / "m", folder)
        rewrite_map_file(folder, info_update=info, meta_update=meta)
        with pytest.raises(FormatError, match=match):
            Map.load(folder)


@pytest.mark.parametrize("name", ["../x.png", "/etc/passwd", "a/../../b.png", "a\0b", "a\nb", ""])
def test_map_names_outside_the_image_folder_are_refused(tmp_path, name):
    m = small_map(3)
    m.save(tmp_path / "m")
    names = [m.names[0], name, m.names[2]]
    if "\n" not in name:  # a line break splits the names section: another count, also refused
        with pytest.raises(ValueError, match="image name"):  # building
            Map(names, m.cameras, m.cam_from_world, m.keypoints, m.descriptors, m.point_ids, m.points3D)
    m.names = names
    with pytest.raises(ValueError):  # saving
        m.save(tmp_path / "other")
    rewrite_map_file(tmp_path / "m", names=names)  # loading a crafted file
    with pytest.raises(FormatError):
        Map.load(tmp_path / "m")


def test_crafted_image_dir_is_refused(tmp_path):
    small_map(2).save(tmp_path / "m")
    rewrite_map_file(tmp_path / "m", info_update={"image_dir": "relative/dir"})
    with pytest.raises(FormatError, match="image_dir"):
        Map.load(tmp_path / "m")


def test_image_path_stays_inside_the_folder(tmp_path):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    (tmp_path / "secret.png").write_bytes(b"x")
    assert image_path(images, "sub/a.png") == images / "sub" / "a.png"
    for bad in ["../secret.png", str(tmp_path / "secret.png"), "sub/../../secret.png"]:
        with pytest.raises(ValueError, match="image name"):
            image_path(images, bad)
    # a link the user put in the folder is followed: the check is on names a map file holds
    os.symlink(tmp_path / "secret.png", images / "link.png")
    assert image_path(images, "link.png").read_bytes() == (tmp_path / "secret.png").read_bytes()
    assert check_image_name("a b/c.png") == "a b/c.png"
    assert check_image_name("v1..2/c..d.png") == "v1..2/c..d.png"  # ".." inside a name is no parent step


# ------------------------------------------------------------------ checkpoints


def _tiny_checkpoint(torch, fill: float = 1.0, **extra) -> dict:
    return {"format": "pylocalize.Test", "version": 1, "w": torch.full((64,), fill), **extra}


def test_checkpoint_bit_flips_are_refused(tmp_path):
    """repro_torch_checkpoint_bitflip: every flipped bit is a FormatError, never other weights."""
    torch = pytest.importorskip("torch")
    from pylocalize.checkpoints import load_checkpoint, save_checkpoint
    from pylocalize.codes.learned import RecurrentBinarizer

    RecurrentBinarizer(16, 16, 2, hidden=16, seed=0).save(tmp_path / "rb.pt")
    good = RecurrentBinarizer.load(tmp_path / "rb.pt")
    data = (tmp_path / "rb.pt").read_bytes()
    rng = np.random.default_rng(16)
    for position in rng.integers(0, len(data), 60):
        bad = bytearray(data)
        bad[position] ^= 1 << int(rng.integers(8))
        (tmp_path / "flip.pt").write_bytes(bytes(bad))
        try:
            loaded = RecurrentBinarizer.load(tmp_path / "flip.pt")
        except FormatError:
            continue
        # only bytes that carry no data (header padding) may flip unnoticed
        for key, value in good.net.state_dict().items():
            assert torch.equal(value, loaded.net.state_dict()[key])
    save_checkpoint(_tiny_checkpoint(torch), tmp_path / "t.pt")
    assert load_checkpoint(tmp_path / "t.pt", "Test")["w"][0] == 1.0
    with pytest.raises(FormatError, match="not a saved Other"):
        load_checkpoint(tmp_path / "t.pt", "Other")
    with pytest.raises(FormatError, match="version 1"):
        load_checkpoint(tmp_path / "t.pt", "Test", version=2)
    (tmp_path / "cut.pt").write_bytes((tmp_path / "t.pt").read_bytes()[:-100])
    with pytest.raises(FormatError):
        load_checkpoint(tmp_path / "cut.pt", "Test")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt", "Test")


def _binarizer_dict(torch, rb) -> dict:
    """The checkpoint dict of a RecurrentBinarizer (16 -> 16 dims, 2 bits, hidden 16)."""
    return {"format": "pylocalize.RecurrentBinarizer", "version": 2, "dims": [16, 16, 2, 16],
            "mean": torch.from_numpy(rb.mean), "key_projection": torch.from_numpy(rb.key_projection),
            "state": rb.net.state_dict()}


def test_checkpoints_saved_before_containers_still_load_and_are_verified(tmp_path):
    torch = pytest.importorskip("torch")
    from pylocalize.codes.learned import RecurrentBinarizer

    rb = RecurrentBinarizer(16, 16, 2, hidden=16, seed=0)
    old = _binarizer_dict(torch, rb)
    torch.save(old, tmp_path / "old.pt")  # the plain torch zip file pylocalize wrote before
    loaded = RecurrentBinarizer.load(tmp_path / "old.pt")
    x = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    np.testing.assert_array_equal(loaded.encode(x), rb.encode(x))
    data = bytearray((tmp_path / "old.pt").read_bytes())
    weight = rb.net.state_dict()[next(iter(rb.net.state_dict()))].numpy().tobytes()
    at = bytes(data).find(weight[:16])  # the first tensor's bytes inside the zip
    assert at > 0
    data[at + 3] ^= 0x40
    (tmp_path / "flip.pt").write_bytes(bytes(data))
    with pytest.raises(FormatError, match="CRC"):  # torch alone would load other weights
        RecurrentBinarizer.load(tmp_path / "flip.pt")


def test_checkpoints_whose_contents_make_no_model_are_format_errors(tmp_path):
    torch = pytest.importorskip("torch")
    from pylocalize.checkpoints import save_checkpoint
    from pylocalize.codes.learned import RecurrentBinarizer

    rb = RecurrentBinarizer(16, 16, 2, hidden=16, seed=0)
    base = _binarizer_dict(torch, rb)
    state = dict(rb.net.state_dict())
    missing = dict(state)
    missing.pop(next(iter(missing)))
    for change in [{"dims": [16, 16, 2, 32]}, {"state": missing}, {"dims": None}, {"mean": torch.zeros(3)},
                   {"state": {**state, "extra.weight": torch.zeros(2)}}]:
        data = {k: v for k, v in {**base, **change}.items() if v is not None}
        save_checkpoint(data, tmp_path / "bad.pt")
        with pytest.raises(FormatError, match="RecurrentBinarizer"):
            RecurrentBinarizer.load(tmp_path / "bad.pt")
    # repro: a flipped byte in a key name of an old (zip) checkpoint escaped as RuntimeError
    renamed = {**base, "state": {k.replace("weight", "weighu"): v for k, v in state.items()}}
    torch.save(renamed, tmp_path / "old.pt")
    with pytest.raises(FormatError):
        RecurrentBinarizer.load(tmp_path / "old.pt")


class Payload:
    """Stands for code a checkpoint must never run."""

    def __reduce__(self):
        return (print, ("ran code from a checkpoint",))


class Plain:
    pass


@pytest.mark.parametrize("obj", [Payload(), Plain()], ids=["reduce", "instance"])
def test_checkpoint_with_objects_is_refused_without_the_unsafe_advice(tmp_path, obj, capsys):
    torch = pytest.importorskip("torch")
    from pylocalize.checkpoints import load_checkpoint, save_checkpoint

    save_checkpoint(_tiny_checkpoint(torch, extra=obj), tmp_path / "new.pt")
    torch.save(_tiny_checkpoint(torch, extra=obj), tmp_path / "old.pt")
    for path in (tmp_path / "new.pt", tmp_path / "old.pt"):
        with pytest.raises(FormatError) as info:
            load_checkpoint(path, "Test")
        message = str(info.value)
        assert "refused" in message and "never runs code" in message
        assert "weights_only" not in message and info.value.__suppress_context__
    assert "ran code" not in capsys.readouterr().out


def test_clause_bank_writes_through_the_atomic_writer(tmp_path):
    from pylocalize.posetext.model import ClauseBank

    bank = ClauseBank()
    bank.clauses, bank.index = ["a", "b"], {"a": 0, "b": 1}
    bank.vectors = np.arange(6, dtype=np.float32).reshape(2, 3)
    bank.save(tmp_path / "bank")
    loaded = ClauseBank.load(tmp_path / "bank")
    assert loaded.clauses == ["a", "b"]
    np.testing.assert_array_equal(loaded.vectors, bank.vectors)
    assert sorted(p.name for p in (tmp_path / "bank").iterdir()) == ["clause_vectors.npy", "clauses.json"]


# ------------------------------------------------------------------ two-stage


def _vectors(n, dim=16, seed=0):
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def _vectors_file(folder) -> Path:
    return Path(folder) / json.loads((Path(folder) / "two_stage.json").read_text())["vectors_file"]


def test_two_stage_flipped_vector_bit_is_refused(tmp_path):
    """repro_two_stage_vectors_silent"""
    x = _vectors(60)
    with TwoStageIndex(tmp_path / "ts", 16, candidates=10) as ts:
        ts.add(x)
        ts.save()
    path = _vectors_file(tmp_path / "ts")
    data = bytearray(path.read_bytes())
    data[3] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="CRC-32"):
        TwoStageIndex.load(tmp_path / "ts")


def test_two_stage_edited_manifest_is_refused(tmp_path):
    """Fault campaign finding: a flipped digit in two_stage.json (e.g. "candidates": 20 ->
    28) loaded as another index. The manifest now carries its own CRC-32."""
    with TwoStageIndex(tmp_path / "ts", 16, candidates=20) as ts:
        ts.add(_vectors(50))
        ts.save()
    manifest = tmp_path / "ts" / "two_stage.json"
    text = manifest.read_text()
    assert '"candidates": 20' in text
    manifest.write_text(text.replace('"candidates": 20', '"candidates": 28'))
    with pytest.raises(FormatError, match="manifest's CRC-32"):
        TwoStageIndex.load(tmp_path / "ts")


def test_two_stage_torn_tail_is_ignored(tmp_path):
    """repro_two_stage_add_then_crash: vectors appended, then the process dies before save."""
    x = _vectors(100)
    p = tmp_path / "ts"
    with TwoStageIndex(p, 16) as ts:
        ts.add(x)
        ts.save()
    before = TwoStageIndex.load(p).search(x[:5], 3)
    crash = python_child(f"""
import os, numpy as np
from pylocalize.index.two_stage import TwoStageIndex
ts = TwoStageIndex.load({str(p)!r}); ts.add(np.ones((5, 16), np.float32))
with open(ts._vectors_path, "ab") as f:
    f.write(b"torn")  # half a vector more
os._exit(3)  # a crash before save
""", capture_output=True, text=True)
    assert crash.returncode == 3, crash.stderr  # it got as far as the crash
    loaded = TwoStageIndex.load(p)
    assert len(loaded) == 100
    for a, b in zip(before, loaded.search(x[:5], 3)):
        np.testing.assert_array_equal(a, b)
    loaded.add(x[:7] * 2)  # new vectors overwrite the torn tail
    loaded.save()
    again = TwoStageIndex.load(p)
    assert len(again) == 107
    np.testing.assert_array_equal(again.vectors()[100:], x[:7] * 2)


def test_two_stage_second_writer_is_refused(tmp_path):
    """One writer per folder while it has changes to commit; a writer whose folder moved
    on since it loaded or saved is refused; a save lets the next writer in."""
    p = tmp_path / "ts"
    first = TwoStageIndex(p, 16)
    first.add(_vectors(10))
    with pytest.raises(RuntimeError, match=f"{p}.*close the other index"):
        TwoStageIndex(p, 16)  # first has uncommitted vectors
    first.save()
    reader = TwoStageIndex.load(p)  # readers take no lock
    assert len(reader) == 10
    first.add(_vectors(5, seed=1))
    with pytest.raises(RuntimeError, match="close the other index"):
        reader.add(_vectors(2))
    first.save()
    with pytest.raises(RuntimeError, match="load it again"):  # the folder moved on since it was loaded
        reader.add(_vectors(2))
    assert len(reader) == 10
    writer = TwoStageIndex.load(p)
    writer.add(_vectors(2))
    writer.save()
    with pytest.raises(RuntimeError, match="load it again"):  # first saved before writer did
        first.add(_vectors(1))
    assert len(TwoStageIndex.load(p)) == 17
    second = TwoStageIndex(p, 16)  # after a save, a new index may start on the folder
    second.add(_vectors(3, seed=2))
    second.save()
    assert len(TwoStageIndex.load(p)) == 3


def test_two_stage_reader_survives_a_new_index_on_its_folder(tmp_path):
    """repro_two_stage_sigbus: a new index on the folder used to truncate the mapped file."""
    p = tmp_path / "ts"
    x = _vectors(5000, 64)
    with TwoStageIndex(p, 64) as a:
        a.add(x)
        a.save()
    reader = TwoStageIndex.load(p)
    before = reader.search(x[:4], 3)
    with TwoStageIndex(p, 64) as b:  # a new, empty index over the same folder
        assert len(TwoStageIndex.load(p)) == 5000  # the old one stays committed until b saves
        b.add(x[:100] * -1)
        b.save()
    for first, second in zip(before, reader.search(x[:4], 3)):
        np.testing.assert_array_equal(first, second)  # the old mapping is intact
    assert len(TwoStageIndex.load(p)) == 100
    assert len(list(p.glob("vectors*"))) == 1 and len(list(p.glob("codes*"))) == 1


def test_two_stage_folder_of_the_first_layout_still_loads(tmp_path):
    """Layout 1: vectors.f32, codes.pyloc and a manifest without names or checksum."""
    p = tmp_path / "ts"
    p.mkdir()
    x = _vectors(50)
    codes = pylocalize.MultiBitIndex(16, 2)
    codes.add(pylocalize.binarize(x, 2))
    codes.save(p / "codes.pyloc")
    (p / "vectors.f32").write_bytes(x.tobytes() + b"tail")  # an uncommitted tail, too
    (p / "two_stage.json").write_text(json.dumps({"dim": 16, "bits_per_dim": 2, "candidates": 100, "learned": False,
                                                  "count": 50, "center": None}))
    loaded = TwoStageIndex.load(p)
    assert loaded.search(x[:3], 1)[1].ravel().tolist() == [0, 1, 2]
    loaded.add(_vectors(5, seed=1))
    loaded.save()
    assert not (p / "codes.pyloc").exists()
    again = TwoStageIndex.load(p)
    assert len(again) == 55 and json.loads((p / "two_stage.json").read_text())["layout"] == 2


def test_two_stage_threads_search_while_one_adds(tmp_path):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4000, 32)).astype(np.float32)
    index = TwoStageIndex(tmp_path / "ts", 32, candidates=50)
    index.add(x[:1000])
    errors = []

    def search(seed):
        local = np.random.default_rng(seed)
        try:
            for _ in range(30):
                q = x[local.integers(0, 1000, 4)]
                scores, ids = index.search(q, 5)
                # every id found has its vector on file, and the score is its exact product
                assert (ids >= 0).all()
                np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", q, x[ids]), rtol=1e-5)
        except Exception as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=search, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for s in range(1000, 4000, 500):  # adds from this thread meanwhile
        index.add(x[s:s + 500])
    index.save()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert len(index) == 4000
    np.testing.assert_array_equal(TwoStageIndex.load(tmp_path / "ts").search(x[:10], 1)[1].ravel(), np.arange(10))


# ------------------------------------------------------------- kill -9 during saves

# Run in a fresh interpreter: builds two versions of an object (A, B), commits A, then per
# trial forks a child that saves B and A in turn until it is killed with SIGKILL at a seeded
# random moment; reports which version loads after each kill, and the folder after one more
# save. (Forking a process that only imported and built is safe; the test process is not.)
KILL_HELPER = r"""
import json, os, signal, sys, time
import numpy as np
kind, folder, seed, trials = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(seed)
import pylocalize
pylocalize.set_num_threads(1)
if kind == "index":
    target = os.path.join(folder, "index.pyloc")
    versions = {}
    for name, n in (("A", 600_000), ("B", 900_000)):
        versions[name] = pylocalize.BinaryIndex(256)
        versions[name].add(rng.integers(0, 256, (n, 32), dtype=np.uint8))
    sizes = {len(v): k for k, v in versions.items()}
    save = lambda v: versions[v].save(target)
    which = lambda: sizes[len(pylocalize.BinaryIndex.load(target))]
elif kind == "map":
    sys.path.insert(0, os.path.dirname(sys.argv[5]))
    from test_durability import small_map
    from pylocalize.localization.map import Map
    target = folder
    versions = {"A": small_map(40, 400, seed=1), "B": small_map(45, 400, seed=2)}
    save = lambda v: versions[v].save(target)
    which = lambda: {40: "A", 45: "B"}[len(Map.load(target).names)]
else:
    import torch
    torch.set_num_threads(1)
    from pylocalize.checkpoints import load_checkpoint, save_checkpoint
    target = os.path.join(folder, "model.pt")
    versions = {v: {"format": "pylocalize.Test", "version": 1, "w": torch.full((3_000_000,), float(i))}
                for i, v in enumerate("AB")}
    save = lambda v: save_checkpoint(versions[v], target)
    which = lambda: "AB"[int(load_checkpoint(target, "Test")["w"][-1])]
t0 = time.perf_counter(); save("B"); save("A"); window = (time.perf_counter() - t0) * 1.2
outcomes, temps = [], 0
for _ in range(trials):
    pid = os.fork()
    if pid == 0:
        try:
            while True:
                save("B"); save("A")
        finally:
            os._exit(0)
    time.sleep(rng.uniform(0, window))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    temps += any(".tmp-" in f for f in os.listdir(folder))
    try:
        outcomes.append(which())
    except Exception as error:
        outcomes.append(f"neither: {type(error).__name__}: {error}")
save("A")
print(json.dumps({"outcomes": outcomes, "files": sorted(os.listdir(folder)), "window": window, "temps": temps,
                  "final": which()}))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("kind", ["index", "map", "checkpoint"])
def test_kill_during_save_leaves_the_old_or_the_new(tmp_path, kind):
    if kind == "checkpoint":
        pytest.importorskip("torch")
    folder = tmp_path / kind
    folder.mkdir()
    run = python_child(KILL_HELPER, kind, str(folder), "16", "20", __file__, capture_output=True, text=True,
                       timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert all(o in ("A", "B") for o in report["outcomes"]), report["outcomes"]
    assert report["final"] == "A"
    files = report["files"]
    if kind == "map":
        assert files[0].startswith("cann-") and files[1:] == ["map.lock", "map.pyloc"], files
    else:
        assert files == [{"index": "index.pyloc", "checkpoint": "model.pt"}[kind]], files
