"""A per-object patch descriptor learned at onboarding (needs the ``torch`` extra).

Dense SIFT describes local gradients, which texture-poor objects barely have, so its
patches match across the object. Following the dense-correspondence methods (SurfEmb,
Haugaard & Buch, CVPR 2022), :func:`train_object_descriptor` trains a small fully
convolutional network, on CPU in minutes, on renders of the object's own mesh: pairs of
nearby views, one composited over random crops of real photos with lighting, colour, blur,
noise and occluder augmentation (the query), the other clean on black (a template). The
renderer's model-coordinate image gives every pixel's surface point, and an InfoNCE loss
with soft targets (Gaussian in 3D distance) pulls a query pixel's descriptor towards the
template pixels of the same surface point and away from the rest of the object and from
the background.

:class:`LearnedPatchExtractor` wraps the trained network with the patch-extractor interface
(:mod:`pylocalize.features.patches`): ``patch_size``, ``dim``, ``name``, ``__call__`` and
``feature_map``, so :func:`~pylocalize.objects.onboarding.onboard` and
:meth:`~pylocalize.objects.representation.ObjectRepresentation.estimate` use it unchanged.
It pickles (the weights travel as arrays) and saves to a versioned container, by
convention next to the representation (:func:`descriptor_path`).

Each query crop is contrasted with the template crops of every pair in the batch, views
from anywhere on the sphere, so that descriptors also differ across the whole object:
template retrieval compares a query with all templates.

Limits: the descriptor is specific to one object and is only as good as the mesh's
texture and the renderer's Lambert shading are like the photos; it is not rotation
invariant (templates cover in-plane rotations). Measured (``benchmarks/README.md``): after
800 CPU steps it is ahead of dense SIFT on the HOPE bottle and on the real LINEMOD can
frame, behind it on the generated can. Beside dense SIFT (:class:`SiftAndLearnedExtractor`)
it did better than either alone on most held-out sets; dense SIFT stays the default, and
:mod:`pylocalize.objects.choice` (``--extractor auto``) decides per object between it and
the pair.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Dict, Optional

import numpy as np

logger = logging.getLogger(__name__)

FORMAT_TAG = "LearnedPatchExtractor"
DESCRIPTOR_VERSION = 1
STRIDE = 4  # the network's output grid, in pixels
# Training runs a fixed number of steps, so that a descriptor (and every figure measured
# with it) does not depend on how busy the machine was: 800 steps take 180-230 s on one
# quiet core. The time cap only guards the onboarding budget (5 min) on a loaded machine,
# and says so when it cuts training short.
TRAIN_STEPS = 800
TRAIN_SECONDS_CAP = 300.0


def _torch():
    from pylocalize.checkpoints import import_torch

    return import_torch("the learned object descriptor")


def descriptor_path(representation_path) -> Path:
    """Where the learned descriptor of a representation file is kept: beside it,
    ``<representation>.descriptor``."""
    return Path(os.fspath(representation_path) + ".descriptor")


def build_network(dim: int = 48, width: int = 32):
    """A fresh :class:`pylocalize.objects.networks.DescriptorNet` (imports torch)."""
    from pylocalize.objects.networks import DescriptorNet

    return DescriptorNet(dim, width)


def _to_tensor(images: np.ndarray):
    """uint8 or float (n, H, W, 3) in [0, 255] to the network's normalised (n, 3, H, W) input."""
    torch = _torch()
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    return ((x / 255.0 - 0.5) / 0.25).permute(0, 3, 1, 2).contiguous()


class LearnedPatchExtractor:
    """Patch descriptors from a per-object network trained by :func:`train_object_descriptor`.

    Parameters
    ----------
    weights : dict of str to numpy arrays
        The network's state (``state_dict``).
    dim, width : int
        Descriptor dimension and base channel count of :func:`build_network`.
    patch_size : int
        Patch grid step in pixels (14: the object pipeline's).

    The network runs on one torch thread (:class:`pylocalize.training.torch_threads`): onboarding's pool
    describes templates in parallel, and on a loaded 2-core machine two OpenMP threads per
    call ran 5-9x slower than one (0.37 s against 0.04 s a 420-px crop, measured).
    """

    def __init__(self, weights: Dict[str, np.ndarray], dim: int, width: int, patch_size: int = 14):
        if patch_size < 4:
            raise ValueError(f"patch_size must be >= 4, got {patch_size}")
        self.dim, self.width, self.patch_size = int(dim), int(width), int(patch_size)
        self.name = "learned"
        self.weights = {k: np.asarray(v, np.float32) for k, v in weights.items()}
        self._build()

    def _build(self):
        torch = _torch()
        self.net = build_network(self.dim, self.width)
        try:
            self.net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in self.weights.items()})
        except RuntimeError as error:
            raise ValueError(f"the weights do not fit a descriptor network of dim {self.dim}, width {self.width}: "
                             f"{error}") from None
        self.net.eval()
        self._cache = threading.local()  # the last image's dense map, per thread (onboarding uses a pool)

    @classmethod
    def from_network(cls, net, dim: int, width: int, patch_size: int = 14) -> "LearnedPatchExtractor":
        return cls({k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}, dim, width, patch_size)

    def __repr__(self) -> str:
        return f"LearnedPatchExtractor(dim={self.dim}, width={self.width}, patch_size={self.patch_size})"

    def __getstate__(self) -> dict:
        # torch modules and thread-locals stay behind: the arrays rebuild the network
        return {"weights": self.weights, "dim": self.dim, "width": self.width, "patch_size": self.patch_size,
                "name": self.name}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._build()

    def save(self, path) -> None:
        """Writes the network as one versioned pylocalize container, atomically."""
        from pylocalize import _core

        meta = {"descriptor_version": DESCRIPTOR_VERSION, "dim": self.dim, "width": self.width,
                "patch_size": self.patch_size}
        _core.write_container(os.fspath(path), FORMAT_TAG, meta,
                              {k: np.ascontiguousarray(v) for k, v in self.weights.items()})

    @classmethod
    def load(cls, path) -> "LearnedPatchExtractor":
        """Reads :meth:`save` output; another kind of file or version raises
        :class:`pylocalize.FormatError`."""
        from pylocalize._core import FormatError
        from pylocalize.containers import read_layout

        if not Path(path).is_file():
            raise FileNotFoundError(f"no learned descriptor at {path}: onboard with '--extractor learned' (or "
                                    "dense-sift+learned, or auto), which writes it beside the representation")
        meta, sections = read_layout(path, FORMAT_TAG, "descriptor_version", DESCRIPTOR_VERSION,
                                     "a learned descriptor", "onboard the object again with '--extractor learned'")
        try:
            return cls({k: np.asarray(v) for k, v in sections.items()}, meta["dim"], meta["width"],
                       meta["patch_size"])
        except (KeyError, ValueError) as error:
            raise FormatError(f"{path}: not a valid {FORMAT_TAG} ({error})") from error

    def dense(self, image: np.ndarray):
        """The network's output (dim, ceil(H/4), ceil(W/4)) for an RGB image, as a torch
        tensor; the last image's is kept, since the pose stages ask for the patch grid and
        then a denser map of the same crop."""
        torch = _torch()
        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] < 3:
            raise ValueError(f"image must be (H, W, 3), got shape {img.shape}")
        key = (img.shape, hash(np.ascontiguousarray(img[..., :3]).tobytes()))
        cache = self._cache
        if getattr(cache, "key", None) == key:
            return cache.value
        from pylocalize.training import torch_threads

        h, w = img.shape[:2]
        ph, pw = -h % STRIDE, -w % STRIDE  # the network's grid needs a multiple of its stride
        padded = np.pad(img[..., :3], ((0, ph), (0, pw), (0, 0))) if ph or pw else img[..., :3]
        with torch.no_grad(), torch_threads(1):
            value = self.net(_to_tensor(padded[None]))[0]
        cache.key, cache.value, cache.padded = key, value, padded.shape[:2]
        return value

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.feature_map(image, self.patch_size)

    def feature_map(self, image: np.ndarray, stride: int) -> np.ndarray:
        """Descriptors (H // stride, W // stride, dim) on a grid of step ``stride``, cell
        ``(i, j)`` centred at pixel ``(j * stride + (stride - 1) / 2, i * stride + (stride - 1) / 2)``
        (as :meth:`pylocalize.features.patches.DenseSIFTExtractor.feature_map`), sampled
        bilinearly from the network's output and L2-normalised."""
        torch = _torch()
        from pylocalize.features.patches import patch_centres

        img = np.asarray(image)
        stride = int(stride)
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        gh, gw = (img.shape[0] // stride, img.shape[1] // stride) if img.ndim == 3 else (0, 0)
        if img.ndim == 3 and (gh == 0 or gw == 0):
            raise ValueError(f"image of {img.shape[1]}x{img.shape[0]} is smaller than one {stride}-px cell")
        dense = self.dense(img)
        hp, wp = self._cache.padded
        centres = patch_centres(gh, gw, stride)
        # pixel x of the padded image is at (x + 0.5) / wp * 2 - 1 in grid_sample's
        # coordinates (align_corners=False), whatever the output's resolution
        grid = np.stack([(centres[:, 0] + 0.5) / wp * 2 - 1, (centres[:, 1] + 0.5) / hp * 2 - 1], 1)
        grid = torch.from_numpy(grid.astype(np.float32)).view(1, gh, gw, 2)
        with torch.no_grad():
            sampled = torch.nn.functional.grid_sample(dense[None], grid, mode="bilinear", align_corners=False)[0]
            sampled = torch.nn.functional.normalize(sampled, dim=0)
        return np.ascontiguousarray(sampled.permute(1, 2, 0).numpy(), dtype=np.float32)


class SiftAndLearnedExtractor:
    """Dense SIFT and a learned descriptor side by side: each patch's two descriptors, each
    of unit length, weighted ``sqrt(1 - learned_weight)`` and ``sqrt(learned_weight)`` and
    concatenated, so a dot product is the weighted sum of the two similarities.

    Each covers the other's weakness (``benchmarks/README.md``): dense SIFT is precise on
    sharp, clean texture and falls apart under pixel noise; the learned descriptor, trained
    with noise, holds there but varies from one training to the next. Saved as the learned
    descriptor's file (``save``, :func:`load_extractor`), named ``"dense-sift+learned"``."""

    NAME = "dense-sift+learned"

    def __init__(self, learned: LearnedPatchExtractor, learned_weight: float = 0.5):
        from pylocalize.features.patches import DenseSIFTExtractor

        if not 0.0 < learned_weight < 1.0:
            raise ValueError(f"learned_weight must be in (0, 1), got {learned_weight}")
        self.learned, self.learned_weight = learned, float(learned_weight)
        self.sift = DenseSIFTExtractor(learned.patch_size)
        self.patch_size, self.dim, self.name = learned.patch_size, self.sift.dim + learned.dim, self.NAME

    def __repr__(self) -> str:
        return f"SiftAndLearnedExtractor({self.learned!r}, learned_weight={self.learned_weight})"

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.feature_map(image, self.patch_size)

    def feature_map(self, image: np.ndarray, stride: int) -> np.ndarray:
        sift = self.sift.feature_map(image, stride)  # unit length already (RootSIFT)
        learned = self.learned.feature_map(image, stride)
        learned = learned / np.maximum(np.linalg.norm(learned, axis=-1, keepdims=True), 1e-12)
        return np.concatenate([sift * np.sqrt(1.0 - self.learned_weight),
                               learned * np.sqrt(self.learned_weight)], -1).astype(np.float32)

    def save(self, path) -> None:
        self.learned.save(path)


# names of the extractors whose network is saved beside the representation (descriptor_path)
WITH_DESCRIPTOR_FILE = ("learned", SiftAndLearnedExtractor.NAME)


def with_learned(name: str, learned: LearnedPatchExtractor):
    """The extractor called ``name`` (one of :data:`WITH_DESCRIPTOR_FILE`) around ``learned``."""
    if name not in WITH_DESCRIPTOR_FILE:
        raise ValueError(f"{name!r} does not use a learned descriptor; choose from {WITH_DESCRIPTOR_FILE}")
    return learned if name == "learned" else SiftAndLearnedExtractor(learned)


def load_extractor(name: str, path):
    """The extractor a representation onboarded with ``name`` needs, its network read from
    ``path`` (by convention :func:`descriptor_path` of the representation)."""
    return with_learned(name, LearnedPatchExtractor.load(path))


# ------------------------------------------------------------------------- training data


def photos_in(folder) -> list:
    """The image files under ``folder``, subfolders too (any photos will do), sorted."""
    from pylocalize.io import IMAGE_SUFFIXES, is_image_file

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"backgrounds: {folder} is not a folder of photos")
    found = sorted(p for p in folder.rglob("*") if is_image_file(p))
    if not found:
        raise ValueError(f"backgrounds: no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    return found


def background_images(backgrounds, size: int, rng: np.random.Generator, count: int = 24) -> list:
    """RGB uint8 images to composite the object over: the photos given (paths, a folder of
    them, or arrays), each resized so its short side is at least ``size``; or, with none,
    ``count`` procedural textures (:func:`pylocalize.datasets.synthetic.procedural_texture`:
    colour noise, shapes and glyphs), with a log line saying so."""
    import cv2

    if backgrounds is None:
        from pylocalize.datasets.synthetic import procedural_texture

        logger.warning("no background photos given: training on procedural textures (pass a folder of any photos, "
                       "--backgrounds DIR, for a descriptor that holds up better on real clutter)")
        return [procedural_texture(rng, size, size) for _ in range(count)]
    if isinstance(backgrounds, (str, os.PathLike)):
        backgrounds = photos_in(backgrounds)
    images = []
    for item in backgrounds:
        if isinstance(item, np.ndarray):
            img = item
        else:
            from pylocalize.io import read_image

            img = read_image(item)
        img = np.asarray(img)
        if img.ndim != 3 or img.shape[2] < 3 or img.dtype != np.uint8:
            raise ValueError(f"backgrounds must be RGB uint8 images (H, W, 3), got {img.dtype} {img.shape}")
        scale = size / min(img.shape[:2])
        if scale > 1 or scale < 0.5:  # big photos shrink, so crops show scenes, not blur
            img = cv2.resize(img, (max(size, round(img.shape[1] * scale)), max(size, round(img.shape[0] * scale))),
                             interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        images.append(np.ascontiguousarray(img[..., :3]))
    if not images:
        raise ValueError("backgrounds: the list is empty (give None for procedural textures)")
    return images


def _nearby_pose(pose: np.ndarray, center: np.ndarray, max_degrees: float, rng: np.random.Generator) -> np.ndarray:
    """``pose`` of the object turned about its centre by a random rotation of at most
    ``max_degrees``: a nearby template's view."""
    import cv2

    axis = rng.normal(size=3)
    axis *= np.deg2rad(rng.uniform(0, max_degrees)) / np.linalg.norm(axis)
    R_delta = cv2.Rodrigues(axis)[0]
    R = pose[:, :3] @ R_delta
    return np.c_[R, pose[:, :3] @ (center - R_delta @ center) + pose[:, 3]]


def render_view_pair(mesh, size: int, rng: np.random.Generator, max_degrees: float = 15.0,
                     padding: float = 0.2) -> list:
    """Two template-framed renders of nearby views of ``mesh``, ``[(rgb, xyz, mask), ...]``:
    the surface points a descriptor should match between them (its tests and benchmark)."""
    from pylocalize.geometry import look_at
    from pylocalize.objects.templates import template_intrinsics
    from pylocalize.render import Renderer

    d = rng.normal(size=3)
    pose = look_at(mesh.center + d / np.linalg.norm(d) * 2.5 * mesh.extent, mesh.center, up=rng.normal(size=3))
    views = []
    for p in (pose, _nearby_pose(pose, mesh.center, max_degrees, rng)):
        out = Renderer(size, size, template_intrinsics(mesh.vertices, p, size, padding), supersample=3).render(
            mesh, p, outputs=("rgb", "mask", "xyz"))
        views.append((out.rgb[0], out.xyz[0], out.mask[0].astype(bool)))
    return views


def render_pairs(mesh, num_pairs: int, size: int, padding: float, max_degrees: float, rng: np.random.Generator,
                 progress: bool = False) -> list:
    """``num_pairs`` pairs of renders of nearby views, each framed like a template: a query
    view (framing jittered, no anti-aliasing: it gets blurred) and a template view (as
    onboarding renders it). Each render keeps its RGB, full mask, and the model point and
    mask of every ``STRIDE``-px output cell."""
    from tqdm import tqdm

    from pylocalize.geometry import look_at
    from pylocalize.objects.templates import template_intrinsics
    from pylocalize.render import Renderer

    diameter = float(mesh.extent)
    cells = np.arange(size // STRIDE) * STRIDE + STRIDE // 2  # the pixel nearest each output cell's centre
    pairs = []
    for _ in tqdm(range(num_pairs), desc="learned descriptor: rendering", disable=not progress, leave=False):
        d = rng.normal(size=3)
        eye = mesh.center + d / np.linalg.norm(d) * 2.5 * diameter
        query_pose = look_at(eye, mesh.center, up=rng.normal(size=3))
        template_pose = _nearby_pose(query_pose, mesh.center, max_degrees, rng)
        pair = []
        for pose, supersample, pad in ((query_pose, 1, padding * rng.uniform(0.5, 2.0)), (template_pose, 3, padding)):
            K = template_intrinsics(mesh.vertices, pose, size, pad)
            if supersample == 1:  # the query's box is not centred exactly
                K[:2, 2] += rng.uniform(-0.05, 0.05, 2) * size
            out = Renderer(size, size, K, supersample=supersample).render(mesh, pose, outputs=("rgb", "mask", "xyz"))
            mask = out.mask[0].astype(bool)
            pair.append({"rgb": out.rgb[0], "mask": mask, "cell_mask": mask[np.ix_(cells, cells)],
                         "cell_xyz": out.xyz[0][np.ix_(cells, cells)].astype(np.float32)})
        pairs.append(pair)
    return pairs


def augment_query(rgb: np.ndarray, mask: np.ndarray, backgrounds: list, rng: np.random.Generator):
    """A query-like image of a (crop of a) render: the object with lighting and colour
    jitter over a random crop of a background photo, maybe an occluding patch of another,
    blur and noise. Returns the image (float32) and the object's visible mask."""
    import cv2

    height, width = rgb.shape[:2]
    bg = backgrounds[rng.integers(len(backgrounds))]
    side = int(rng.uniform(0.15, 0.6) * min(bg.shape[:2]))  # the crop's height; its width keeps the image's aspect
    side_x = min(bg.shape[1], max(1, round(side * width / height)))
    y, x = rng.integers(0, bg.shape[0] - side + 1), rng.integers(0, bg.shape[1] - side_x + 1)
    bg = cv2.resize(bg[y:y + side, x:x + side_x], (width, height), interpolation=cv2.INTER_LINEAR)
    bg = bg.astype(np.float32)
    obj = rgb.astype(np.float32) * rng.uniform(0.6, 1.5) * rng.uniform(0.85, 1.15, 3) + rng.uniform(-25, 25)
    if rng.random() < 0.3:  # a light gradient across the object
        gain, along_x = rng.uniform(-0.3, 0.3), rng.random() < 0.5
        ramp = np.linspace(-1, 1, width if along_x else height, dtype=np.float32)
        obj *= 1 + gain * (ramp[None, :, None] if along_x else ramp[:, None, None])
    image = np.where(mask[..., None], obj, bg)
    visible = mask.copy()
    if rng.random() < 0.5:  # an occluder over part of the object
        ys, xs = np.nonzero(mask)
        if len(xs):
            w = int((xs.max() - xs.min()) * rng.uniform(0.2, 0.5)) + 1
            h = int((ys.max() - ys.min()) * rng.uniform(0.2, 0.5)) + 1
            ox, oy = rng.integers(xs.min(), xs.max() + 1), rng.integers(ys.min(), ys.max() + 1)
            image[oy:oy + h, ox:ox + w] = np.roll(bg, width // 3, axis=1)[oy:oy + h, ox:ox + w]
            visible[oy:oy + h, ox:ox + w] = False
    if rng.random() < 0.6:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 1.8))
    image += rng.normal(0, rng.uniform(0, 6), image.shape).astype(np.float32)
    return np.clip(image, 0, 255), visible


# ------------------------------------------------------------------------------- training


def _crop_origin(centre: float, crop: int, size: int, rng: np.random.Generator) -> int:
    """A crop start on the output grid that keeps ``centre`` inside the crop."""
    lo, hi = max(0.0, centre - crop * 0.8), min(float(size - crop), centre - crop * 0.2)
    start = rng.uniform(lo, hi) if hi > lo else min(max(0.0, centre - crop / 2), size - crop)
    return int(start // STRIDE) * STRIDE


def _pair_batch(pair: list, backgrounds: list, crop: int, size: int, rng: np.random.Generator):
    """One training pair cut to ``crop`` px around a shared surface point: the augmented
    query crop, the template crop, the query's visible cell mask and model points, and the
    template's cell mask and model points (augmenting the crop only is 5x cheaper)."""
    query, template = pair
    ys, xs = np.nonzero(query["cell_mask"])
    t_ys, t_xs = np.nonzero(template["cell_mask"])
    if len(xs) == 0 or len(t_xs) == 0:
        return None
    pick = rng.integers(len(xs))
    point = query["cell_xyz"][ys[pick], xs[pick]]
    # the template's cell that sees the nearest point: where the same surface lies there
    nearest = np.argmin(((template["cell_xyz"][t_ys, t_xs] - point) ** 2).sum(1))
    qy, qx = (_crop_origin(c * STRIDE + STRIDE // 2, crop, size, rng) for c in (ys[pick], xs[pick]))
    ty, tx = (_crop_origin(c * STRIDE + STRIDE // 2, crop, size, rng) for c in (t_ys[nearest], t_xs[nearest]))
    image, visible = augment_query(query["rgb"][qy:qy + crop, qx:qx + crop], query["mask"][qy:qy + crop, qx:qx + crop],
                                   backgrounds, rng)
    n, centre = crop // STRIDE, STRIDE // 2
    qc, tc = (qy // STRIDE, qx // STRIDE), (ty // STRIDE, tx // STRIDE)
    query_cells = query["cell_mask"][qc[0]:qc[0] + n, qc[1]:qc[1] + n] & visible[centre::STRIDE, centre::STRIDE]
    return (image, template["rgb"][ty:ty + crop, tx:tx + crop].astype(np.float32),
            query_cells, query["cell_xyz"][qc[0]:qc[0] + n, qc[1]:qc[1] + n],
            template["cell_mask"][tc[0]:tc[0] + n, tc[1]:tc[1] + n],
            template["cell_xyz"][tc[0]:tc[0] + n, tc[1]:tc[1] + n])


def correspondence_loss(query_desc, template_desc, query_xyz: np.ndarray, query_valid: np.ndarray,
                        template_xyz: np.ndarray, template_valid: np.ndarray, sigma: float, temperature: float,
                        samples: int, rng: np.random.Generator):
    """InfoNCE of one query crop: up to ``samples`` visible query cells against every
    template cell (object and background; ``template_desc`` (dim, m), ``template_xyz``
    (m, 3), ``template_valid`` (m,)); the target of each is a Gaussian of 3D distance over
    the templates' object cells (``sigma`` in model units), for query points a template sees
    (one within 2 sigma). ``None`` when no query point is seen in the templates."""
    torch = _torch()
    q_idx = np.flatnonzero(query_valid.ravel())
    if len(q_idx) > samples:
        q_idx = rng.choice(q_idx, samples, replace=False)
    t_obj = np.flatnonzero(np.ravel(template_valid))
    if len(q_idx) == 0 or len(t_obj) == 0:
        return None
    qx, tx = query_xyz.reshape(-1, 3)[q_idx], np.reshape(template_xyz, (-1, 3))[t_obj]
    d2 = (qx * qx).sum(1)[:, None] + (tx * tx).sum(1)[None, :] - 2 * qx @ tx.T
    seen = d2.min(1) < (2 * sigma) ** 2
    if not seen.any():
        return None
    target = np.zeros((int(seen.sum()), np.size(template_valid)), np.float32)
    weights = np.exp(-np.maximum(d2[seen], 0) / (2 * sigma ** 2))
    target[:, t_obj] = weights / weights.sum(1, keepdims=True)
    dim = query_desc.shape[0]
    q = query_desc.reshape(dim, -1)[:, torch.from_numpy(q_idx[seen])]
    logits = q.T @ template_desc.reshape(dim, -1) / temperature
    return -(torch.from_numpy(target) * torch.log_softmax(logits, 1)).sum(1).mean()


def _checked_training_options(mesh, size: int, crop: Optional[int], steps: int, seconds: Optional[float],
                              batch_pairs: int, num_pairs: int) -> int:
    """The training crop (default the smaller of 192 and ``size``), once every option of
    :func:`train_object_descriptor` is checked."""
    if len(mesh.faces) == 0:
        raise ValueError("the mesh has no faces: nothing to render")
    crop = min(192, size) if crop is None else int(crop)
    if crop % STRIDE or not STRIDE * 4 <= crop <= size:
        raise ValueError(f"crop must be a multiple of {STRIDE} between {4 * STRIDE} and size={size}, got {crop}")
    if size % STRIDE:
        raise ValueError(f"size must be a multiple of {STRIDE}, got {size}")
    if steps < 1 or batch_pairs < 1 or num_pairs < 1:
        raise ValueError(f"steps, batch_pairs and num_pairs must be >= 1, got {steps}, {batch_pairs}, {num_pairs}")
    if seconds is not None and seconds <= 0:
        raise ValueError(f"seconds must be > 0 or None, got {seconds}")
    return crop


WARMUP_STEPS = 20


def _learning_rate(base: float, step: int, steps: int, elapsed: float, seconds: Optional[float]) -> float:
    """Warm-up over ``WARMUP_STEPS`` steps, then cosine decay over ``steps``; or over
    ``seconds`` once the steps so far say that the time cap will come first (a loaded
    machine). Where the steps will fit, the schedule depends on the step alone, so that the
    same seed trains the same network: a clock in it made every run differ."""
    done = step / steps
    if seconds is not None and step >= WARMUP_STEPS and elapsed / step * steps > seconds:
        done = max(done, elapsed / seconds)
    return base * min(1.0, (step + 1) / WARMUP_STEPS) * 0.5 * (1 + np.cos(np.pi * min(done, 1.0)))


def _log_training_end(steps: int, seconds: float, losses) -> None:
    first, last = (np.mean(losses[:20]), np.mean(losses[-20:])) if losses else (np.nan, np.nan)
    logger.info("learned descriptor: %d steps in %.1f s, loss %.3f -> %.3f", steps, seconds, first, last)


def _training_step(net, optimizer, batch, sigma: float, temperature: float, samples: int, rng) -> Optional[float]:
    """One optimizer step on a batch of augmented view pairs (:func:`_pair_batch`); its loss,
    or None when no pair had a cell to learn from."""
    torch = _torch()
    images = np.stack([b[0] for b in batch] + [b[1] for b in batch])
    desc = net(_to_tensor(images))
    # every query cell against the template cells of every pair of the batch: the other
    # pairs' views (anywhere on the view sphere) teach descriptors to differ across the whole
    # object, which template retrieval needs, not only between nearby views
    templates = desc[len(batch):].permute(1, 0, 2, 3).reshape(desc.shape[1], -1)
    template_xyz = np.concatenate([b[5].reshape(-1, 3) for b in batch])
    template_valid = np.concatenate([b[4].ravel() for b in batch])
    terms = [correspondence_loss(desc[i], templates, b[3], b[2], template_xyz, template_valid, sigma,
                                 temperature, samples, rng) for i, b in enumerate(batch)]
    terms = [t for t in terms if t is not None]
    if not terms:
        return None
    loss = torch.stack(terms).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _optimize(net, next_batch, train_step, steps: int, seconds: Optional[float], learning_rate: float,
              progress: bool):
    """Adam over ``steps`` batches (``next_batch()``, skipped when empty; ``train_step(batch,
    optimizer)`` returns the loss or None) under the :func:`_learning_rate` schedule, unless
    ``seconds`` run out first; the steps taken and the losses."""
    from tqdm import tqdm

    torch = _torch()
    optimizer = torch.optim.Adam(net.parameters(), lr=learning_rate)
    losses, step, start = [], 0, time.perf_counter()
    bar = tqdm(total=steps, desc="learned descriptor: training", disable=not progress, leave=False)
    while step < steps and (seconds is None or time.perf_counter() - start < seconds):
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(learning_rate, step, steps, time.perf_counter() - start, seconds)
        batch = next_batch()
        if not batch:
            continue
        loss = train_step(batch, optimizer)
        if loss is not None:
            losses.append(loss)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        step += 1
        bar.update(1)
    bar.close()
    return step, losses


def train_object_descriptor(mesh, backgrounds=None, steps: int = TRAIN_STEPS,
                            seconds: Optional[float] = TRAIN_SECONDS_CAP,
                            seed: int = 0, progress: bool = False, dim: int = 48, width: int = 32,
                            size: int = 420, padding: float = 0.2, crop: Optional[int] = None, batch_pairs: int = 4,
                            num_pairs: int = 96, max_degrees: float = 20.0, sigma_px: float = 4.0,
                            temperature: float = 0.1, samples: int = 256, learning_rate: float = 2e-3,
                            patch_size: int = 14, num_threads: int = 1) -> LearnedPatchExtractor:
    """Trains the object's descriptor network on its renders and returns it as a patch extractor.

    Parameters
    ----------
    mesh : pylocalize.render.Mesh or path
    backgrounds : folder, list of image paths or RGB uint8 arrays, optional
        Photos whose random crops go behind the object (any photos at hand); None:
        procedural textures.
    steps, seconds : int, float
        Training runs ``steps`` steps, unless ``seconds`` (None: no limit) run out first,
        which is logged as a warning: the descriptor then depends on the machine's load.
        Rendering the pairs comes before and is not counted.
    seed : int
        Seeds the renders, augmentation and the network's initialisation.
    dim, width : int
        Descriptor dimension and the network's base channel count.
    size, padding : int, float
        The templates' framing (:func:`~pylocalize.objects.onboarding.onboard`'s).
    crop, batch_pairs : int
        Training crops (px, a multiple of 4; default the smaller of 192 and ``size``) and
        pairs per step.
    num_pairs, max_degrees : int, float
        Rendered view pairs, reused with fresh augmentation; the most two views of a pair
        differ (degrees).
    sigma_px, temperature, samples : float, float, int
        The soft target's width (template pixels, turned into model units by the
        object's size in the crop), the InfoNCE temperature, and query cells per pair.
    num_threads : int
        torch's threads while training: one by default, as 2 threads ran the steps 1.5-3x
        slower than one on a loaded 2-core machine (OpenMP threads spin while they wait).
    """
    torch = _torch()
    from pylocalize.render import load_mesh
    from pylocalize.training import flush_denormals, torch_threads

    if not hasattr(mesh, "faces"):
        mesh = load_mesh(mesh)
    crop = _checked_training_options(mesh, size, crop, steps, seconds, batch_pairs, num_pairs)

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    with torch_threads(num_threads), flush_denormals():
        start = time.perf_counter()
        bgs = background_images(backgrounds, size, rng)
        pairs = render_pairs(mesh, num_pairs, size, padding, max_degrees, rng, progress)
        sigma = sigma_px * float(mesh.extent) * (1 + padding) / size  # a template pixel, in model units
        rendered = time.perf_counter()
        logger.info("learned descriptor: %d view pairs in %.1f s, %d backgrounds; up to %d steps / %s s, %d threads",
                    num_pairs, rendered - start, len(bgs), steps, seconds or "no limit", torch.get_num_threads())
        net = build_network(dim, width)

        def next_batch():  # random pairs, freshly augmented
            chosen = (_pair_batch(pairs[i], bgs, crop, size, rng) for i in rng.integers(len(pairs), size=batch_pairs))
            return [b for b in chosen if b is not None]

        def train_step(batch, optimizer):
            return _training_step(net, optimizer, batch, sigma, temperature, samples, rng)

        step, losses = _optimize(net, next_batch, train_step, steps, seconds, learning_rate, progress)
        net.eval()
        if step < steps:
            logger.warning("learned descriptor: the %.0f s cap stopped training after %d of %d steps (a busy "
                           "machine?): this descriptor is not the one a quiet machine trains", seconds, step, steps)
        _log_training_end(step, time.perf_counter() - rendered, losses)
    extractor = LearnedPatchExtractor.from_network(net, dim, width, patch_size)
    extractor.training_seconds = {"rendering": rendered - start, "training": time.perf_counter() - rendered,
                                  "steps": step}
    return extractor
