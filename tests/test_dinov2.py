"""DINOv2 patch descriptors: a tiny random model saved and loaded through the same path
as real weights (no download is possible here)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from pylocalize.features.dinov2 import DINOv2Extractor, default_layer  # noqa: E402


@pytest.fixture(scope="module", params=["registers", "plain"])
def tiny_model(request, tmp_path_factory):
    torch.manual_seed(0)
    common = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, patch_size=14,
                  image_size=56)
    if request.param == "registers":
        model = transformers.Dinov2WithRegistersModel(transformers.Dinov2WithRegistersConfig(num_register_tokens=4,
                                                                                             **common))
    else:
        model = transformers.Dinov2Model(transformers.Dinov2Config(**common))
    path = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(path)
    return path, model.eval()


def test_last_block_matches_the_model_output(tiny_model):
    path, model = tiny_model
    extractor = DINOv2Extractor(path, layer=4, device="cpu")
    image = np.random.default_rng(0).integers(0, 256, (70, 98, 3), dtype=np.uint8)
    f = extractor(image)
    assert f.shape == (5, 7, 32) and np.allclose(np.linalg.norm(f, axis=-1), 1, atol=1e-5)
    # independent reference: transformers' own last_hidden_state (final layer norm applied)
    x = (image.astype(np.float32) / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    with torch.no_grad():
        ref = model(pixel_values=torch.tensor(x.transpose(2, 0, 1)[None], dtype=torch.float32)).last_hidden_state
    skip = 1 + extractor.num_registers
    ref = torch.nn.functional.normalize(ref[0, skip:], dim=-1).numpy().reshape(5, 7, 32)
    np.testing.assert_allclose(f, ref, atol=1e-4)
    # an earlier block gives different features of the same layout
    assert DINOv2Extractor(path, layer=2)(image).shape == (5, 7, 32)
    assert not np.allclose(DINOv2Extractor(path, layer=2)(image), f)


def test_errors_and_defaults(tmp_path, tiny_model):
    path, _ = tiny_model
    with pytest.raises(ValueError, match="no DINOv2 weights"):
        DINOv2Extractor(tmp_path / "nothing")
    with pytest.raises(ValueError, match="layer must be"):
        DINOv2Extractor(path, layer=9)
    with pytest.raises(ValueError, match="smaller than one"):
        DINOv2Extractor(path)(np.zeros((10, 10, 3), np.uint8))
    assert default_layer(12) == 9 and default_layer(24) == 18 and DINOv2Extractor(path).layer == 3


def test_objects_pipeline_runs_on_dinov2_features(tiny_model):
    """Onboarding and estimation take any extractor; the representation remembers which."""
    from pylocalize.datasets.synthetic import textured_box_object
    from pylocalize.objects import onboard

    path, _ = tiny_model
    extractor = DINOv2Extractor(path)
    mesh = textured_box_object(2)
    rep = onboard(mesh, extractor, num_views=6, num_inplane=2, size=112, num_words=16)
    assert rep.extractor_name == "dinov2" and rep.patch_desc.shape[1] == 32
    with pytest.raises(ValueError, match="pass that extractor"):
        rep.default_extractor()
    from pylocalize.render import Renderer

    K = rep.template_K[0]
    out = Renderer(112, 112, K).render(mesh, rep.template_poses[0], outputs=("rgb", "mask"))
    result = rep.estimate(out.rgb[0], K, mask=out.mask[0], extractor=extractor)
    assert result.templates and result.templates[0] == 0  # a template retrieves itself first


def test_cli_onboards_with_dinov2_weights(tmp_path, tiny_model, capsys):
    import trimesh

    from pylocalize.cli import main
    from pylocalize.datasets.synthetic import textured_box_object
    from pylocalize.objects import ObjectRepresentation

    path, _ = tiny_model
    mesh = textured_box_object(3)
    trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).export(tmp_path / "box.ply")
    args = ["objects", "onboard", "--mesh", str(tmp_path / "box.ply"), "--views", "4", "--inplane", "1",
            "--size", "112", "--words", "8", "--out", str(tmp_path / "rep.pyloc"), "--extractor", "dinov2"]
    assert main(args) == 2
    assert "pylocalize objects onboard: error: --extractor dinov2 needs --weights" in capsys.readouterr().err
    assert main(args + ["--weights", str(path)]) == 0
    rep = ObjectRepresentation.load(tmp_path / "rep.pyloc")
    assert rep.extractor_name == "dinov2" and len(rep.template_poses) == 4


def test_extractor_pickles_with_its_weights(tiny_model, tmp_path):
    """What Ray tasks receive (onboarding with --ray): the same features, and no need for the
    weights folder where it is unpickled."""
    import pickle
    import shutil

    path, _ = tiny_model
    shutil.copytree(path, tmp_path / "weights")
    extractor = DINOv2Extractor(tmp_path / "weights", layer=2)
    data = pickle.dumps(extractor)
    shutil.rmtree(tmp_path / "weights")
    copy = pickle.loads(data)
    image = np.random.default_rng(1).integers(0, 256, (56, 84, 3), dtype=np.uint8)
    assert (copy.layer, copy.num_registers, copy.dim) == (extractor.layer, extractor.num_registers, extractor.dim)
    np.testing.assert_array_equal(copy(image), extractor(image))
