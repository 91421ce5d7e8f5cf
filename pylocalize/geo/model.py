"""Geo-localization heads on backbone tokens (torch extra).

:class:`GeoDecoder` follows Clark et al., "Where We Are and What We're Looking At: Query
Based Worldwide Image Geo-localization Using Hierarchies and Scenes" (CVPR 2023):

- one learned query per (hierarchy, scene) pair;
- hierarchy-independent decoder layers: cross-attention from the queries to the image
  tokens, self-attention among all queries, a shared FFN (pre-norm residual blocks);
- hierarchy-dependent layers: self-attention only among the queries of one hierarchy, then an
  FFN of that hierarchy's own;
- a classifier per hierarchy over its cells (:class:`pylocalize.geo.CellHierarchy`), applied
  to that hierarchy's query of every scene;
- coarse probabilities multiplied into finer ones through the parent maps; the predicted GPS
  is the mean GPS of the most probable finest cell;
- how the scenes are combined (``scene_mode``):

  - ``"mixture"`` (default): each scene's hierarchical probabilities weighted by the scene
    classifier's probability of that scene, ``q_h(c) = sum_s p(s | x) q_h(c | x, s)``;
  - ``"classifier"``: only the scene the scene classifier finds most probable;
  - ``"confidence"``: the paper's rule, only the scene whose queries are most confident (mean
    over hierarchies of the largest class probability).

  The confidence rule is kept for comparison, not as the default: a scene's queries are only
  trained on photos of that scene, so on photos of other scenes their confidence is
  uncalibrated, and on the synthetic benchmark the rule picked the true scene far less often
  than the trained scene classifier does. The mixture chose best on the benchmark's
  validation rows, and never commits to one wrong scene when the classifier is unsure
  (figures in ``benchmarks/README.md``).

Training minimises the cross-entropy of every hierarchy's classifier on the true scene's
queries plus a scene cross-entropy (scene logits: a linear score of each scene's queries,
averaged over hierarchies: the scene classifier); photos outside every kept cell of a
hierarchy (label -1) add no loss there. Scene labels are optional (all scene 0 without them,
which the scene classifier then learns, so only scene 0's queries are used). The paper's
scene labels come from a Places365 classifier; here they are whatever the caller gives.

:class:`FlatCellClassifier` is the baseline on the same tokens and blocks: one query, the
same cross-attention decoder layers, a single classifier over the finest cells.

:class:`GPSEncoder` embeds GPS as GeoCLIP does (Vivanco Cepeda et al., NeurIPS 2023): the
Equal Earth projection, random Fourier features at several scales ``sigma``, an MLP per scale,
summed; :class:`ImageGPSMatcher` trains it against image embeddings with a symmetric InfoNCE
loss and localizes a photo by its most similar location in a GPS gallery.

Checkpoints are plain dicts of tensors and numbers (:mod:`pylocalize.checkpoints`: atomic,
CRC-checked, loaded with ``weights_only=True``); the cell hierarchy travels inside as its
container bytes.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from pylocalize.checkpoints import import_torch, load_model, save_checkpoint
from pylocalize.geo.cells import CellHierarchy, check_latlon
from pylocalize.geo.metrics import equal_earth
from pylocalize.geo.retrieval import GeoGallery
from pylocalize.training import optimizer_steps, torch_threads, train_with_early_stopping


def _torch():
    return import_torch("pylocalize.geo.model")


def _networks():
    """:mod:`pylocalize.geo.networks`, imported only once torch is known to be there (it
    defines its modules at import), so that importing this module needs no torch."""
    _torch()
    from pylocalize.geo import networks

    return networks


def _check_tokens(tokens, token_dim: int) -> np.ndarray:
    x = np.asarray(tokens)
    if x.ndim == 2:
        raise ValueError(f"tokens must be (n, num_tokens, {token_dim}); for one global embedding per image use "
                         f"tokens[:, None, :], got shape {x.shape}")
    if x.ndim != 3 or x.shape[2] != token_dim or x.shape[1] < 1:
        raise ValueError(f"tokens must be (n, num_tokens, {token_dim}), got shape {x.shape}")
    if x.dtype.kind != "f":
        raise ValueError(f"tokens must be floating point, got {x.dtype}; convert with .astype(np.float32)")
    x = np.ascontiguousarray(x, np.float32)
    if not np.isfinite(x).all():
        raise ValueError("tokens contain NaN or Inf; recompute or drop those images")
    return x


def _train(net, loss_of, n: int, epochs: int, batch_size: int, lr: float, weight_decay: float, validation: float,
           patience: int, seed: int, progress: bool, desc: str,
           num_threads: Optional[int] = None) -> Tuple[List[float], np.ndarray]:
    """AdamW on shuffled mini-batches with early stopping on the held-out loss (the mean
    training loss without held-out rows); keeps the best weights. ``loss_of(indices)``
    returns the mean loss of those rows. Returns the per-epoch held-out losses and the
    held-out row indices."""
    torch = _torch()
    if n < 4:
        raise ValueError(f"{n} training images are too few: give at least 4")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    val, train = _held_out_split(n, validation, rng)
    batch_size = max(1, min(batch_size, len(train)))
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)

    def train_epoch() -> List[float]:
        perm = train[rng.permutation(len(train))]
        starts = range(0, len(perm) - batch_size + 1, batch_size)
        return optimizer_steps(optimizer, loss_of, (perm[s:s + batch_size] for s in starts))

    def held_out_loss(train_losses: List[float]) -> float:
        if not len(val):
            return float(np.mean(train_losses))
        with torch.no_grad():
            parts = [(loss_of(val[s:s + 1024]).item(), len(val[s:s + 1024])) for s in range(0, len(val), 1024)]
        return sum(a * b for a, b in parts) / len(val)

    with torch_threads(num_threads):
        history = train_with_early_stopping(net, epochs, train_epoch, held_out_loss, patience=patience,
                                            higher_is_better=False, min_delta=1e-4, progress=progress, desc=desc,
                                            postfix=lambda loss: {"loss": f"{loss:.3f}"})
    return history, np.sort(val)


def _held_out_split(n: int, validation: float, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """(held-out rows, training rows) of ``n``: a ``validation`` fraction held out, at least
    one when the fraction is positive, and at least two rows left to train on."""
    order = rng.permutation(n)
    n_val = int(round(validation * n)) if validation > 0 else 0
    n_val = min(max(n_val, 1 if validation > 0 else 0), n - 2)
    return order[:n_val], order[n_val:]


def _save(path, kind: str, config: dict, hierarchy: Optional[CellHierarchy], net) -> None:
    torch = _torch()
    data = {"format": f"pylocalize.{kind}", "version": 1, "config": config, "state": net.state_dict()}
    if hierarchy is not None:
        data["hierarchy"] = torch.from_numpy(hierarchy.serialize())
    save_checkpoint(data, path)


def _load(path, kind: str, build):
    """``build(data, hierarchy)`` from the checkpoint at ``path``; a bad file, or one whose
    contents do not make the model, raises :class:`pylocalize.FormatError`."""
    def make(data):
        hierarchy = CellHierarchy.load(data["hierarchy"].numpy()) if "hierarchy" in data else None
        return build(data, hierarchy)

    return load_model(path, kind, make)


SCENE_MODES = ("mixture", "classifier", "confidence")


def _check_scene_mode(mode: str) -> str:
    if mode not in SCENE_MODES:
        raise ValueError(f"scene_mode must be one of {SCENE_MODES}, got {mode!r}")
    return mode


class _CellModel:
    """What the GeoDecoder and the flat baseline share: inputs, labels, batching, GPS out."""

    kind = ""

    def _labels(self, latlon) -> np.ndarray:
        return self.hierarchy.cell_of(check_latlon(latlon))

    def _forward_batches(self, tokens, batch_size: int):
        torch = _torch()
        x = _check_tokens(tokens, self.token_dim)
        self.net.eval()
        with torch.no_grad():
            for s in range(0, len(x), batch_size):
                yield self.net(torch.from_numpy(x[s:s + batch_size]))

    def predict(self, tokens, batch_size: int = 1024) -> np.ndarray:
        """GPS ``float64 (n, 2)``: the mean GPS of each image's most probable finest cell."""
        cells = np.argmax(self.predict_proba(tokens, batch_size)[-1], 1)
        return self.hierarchy.centers[-1][cells]

    def save(self, path) -> None:
        """Weights, settings and the cell hierarchy in one checkpoint
        (:func:`pylocalize.checkpoints.save_checkpoint`)."""
        _save(path, self.kind, self.config, self.hierarchy, self.net)

    @classmethod
    def load(cls, path):
        def build(data, hierarchy):
            model = cls(hierarchy, **data["config"])
            model.net.load_state_dict(data["state"])
            model.net.eval()
            return model

        return _load(path, cls.kind, build)


class GeoDecoder(_CellModel):
    """Hierarchy-and-scene query decoder over image tokens (see the module docstring).

    Parameters
    ----------
    hierarchy : CellHierarchy
        The classes: one classifier per granularity.
    token_dim : int
        Dimension of the backbone's tokens.
    num_scenes : int
        Scene queries per hierarchy (the paper uses 3, 16 or 365 scene kinds).
    d_model, num_heads : int
        Width of the queries and attention heads (``d_model % num_heads == 0``).
    independent_layers, dependent_layers : int
        Hierarchy-independent and hierarchy-dependent decoder layers.
    ffn_mult : int
        FFN hidden width over ``d_model``.
    dropout : float
    seed : int
        Initialisation seed.
    scene_mode : {"mixture", "classifier", "confidence"}
        How the scenes' predictions are combined (module docstring); ``predict`` and
        ``predict_proba`` take it per call too.
    """

    kind = "GeoDecoder"

    def __init__(self, hierarchy: CellHierarchy, token_dim: int, num_scenes: int = 3, d_model: int = 256,
                 num_heads: int = 8, independent_layers: int = 2, dependent_layers: int = 1, ffn_mult: int = 4,
                 dropout: float = 0.1, seed: int = 0, scene_mode: str = "mixture"):
        torch = _torch()
        if not isinstance(hierarchy, CellHierarchy):
            raise ValueError("hierarchy must be a CellHierarchy (CellHierarchy.from_latlon(training_latlon))")
        _check_scene_mode(scene_mode)
        if min(hierarchy.num_cells) < 1:
            raise ValueError(f"every granularity needs a cell, got {hierarchy.num_cells}: lower min_images")
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be a multiple of num_heads ({num_heads})")
        if num_scenes < 1 or independent_layers < 1 or dependent_layers < 0:
            raise ValueError("num_scenes and independent_layers must be >= 1, dependent_layers >= 0")
        self.hierarchy = hierarchy
        self.token_dim = int(token_dim)
        self.config = dict(token_dim=int(token_dim), num_scenes=int(num_scenes), d_model=int(d_model),
                           num_heads=int(num_heads), independent_layers=int(independent_layers),
                           dependent_layers=int(dependent_layers), ffn_mult=int(ffn_mult), dropout=float(dropout),
                           seed=int(seed), scene_mode=str(scene_mode))
        torch.manual_seed(seed)
        self.net = _networks().GeoDecoderNet(self.token_dim, hierarchy.num_cells, int(num_scenes), int(d_model),
                                             int(num_heads), int(independent_layers), int(dependent_layers),
                                             int(ffn_mult), float(dropout))
        self.history: List[float] = []
        # rows of the last fit's training set held out for early stopping (to choose settings on)
        self.validation_indices = np.zeros(0, np.int64)

    @property
    def num_scenes(self) -> int:
        return self.config["num_scenes"]

    def __repr__(self) -> str:
        c = self.config
        return (f"GeoDecoder(cells={self.hierarchy.num_cells}, scenes={c['num_scenes']}, d_model={c['d_model']}, "
                f"layers={c['independent_layers']}+{c['dependent_layers']}, scene_mode={c['scene_mode']!r})")

    def fit(self, tokens, latlon, scenes=None, epochs: int = 20, batch_size: int = 256, lr: float = 5e-4,
            weight_decay: float = 1e-4, scene_weight: float = 1.0, validation: float = 0.1, patience: int = 3,
            seed: int = 0, progress: bool = False, num_threads: Optional[int] = None) -> "GeoDecoder":
        """Trains on tokens ``(n, num_tokens, token_dim)`` of photos at ``latlon (n, 2)``.

        ``scenes`` are int labels in ``0..num_scenes-1`` (default: all 0).
        Stops when the held-out loss (a ``validation`` fraction) has not improved for
        ``patience`` epochs and keeps the best weights; ``history`` holds the losses.
        """
        torch = _torch()
        f = torch.nn.functional
        x = _check_tokens(tokens, self.token_dim)
        labels = self._labels(latlon)
        if len(labels) != len(x):
            raise ValueError(f"{len(x)} token sets but {len(labels)} GPS rows: give one per image")
        if scenes is None:
            # all scene 0, and the scene classifier learns that, so the untrained queries of
            # the other scenes never weigh in
            scenes = np.zeros(len(x), np.int64)
        scenes = np.asarray(scenes)
        if scenes.shape != (len(x),) or scenes.dtype.kind not in "iu":
            raise ValueError(f"scenes must be ({len(x)},) ints, got shape {scenes.shape} {scenes.dtype}")
        if scenes.min() < 0 or scenes.max() >= self.num_scenes:
            raise ValueError(f"scene labels must be in 0..{self.num_scenes - 1}; build the model with more num_scenes")
        xt, yt, st = torch.from_numpy(x), torch.from_numpy(labels), torch.from_numpy(scenes.astype(np.int64))

        def loss_of(idx):
            idx = torch.from_numpy(idx)
            logits, scene_logits = self.net(xt[idx])
            rows = torch.arange(len(idx))
            s = st[idx]
            loss = scene_weight * f.cross_entropy(scene_logits, s)
            for h, lg in enumerate(logits):
                y = yt[idx, h]
                if (y >= 0).any():
                    loss = loss + f.cross_entropy(lg[rows, s], y, ignore_index=-1)
            return loss

        self.history, self.validation_indices = _train(
            self.net, loss_of, len(x), epochs, batch_size, lr, weight_decay, validation, patience, seed, progress,
            "GeoDecoder", num_threads)
        return self

    def predict_scene_proba(self, tokens, batch_size: int = 1024) -> Tuple[List[np.ndarray], np.ndarray]:
        """Per-hierarchy softmax probabilities of every scene's queries, ``(n, num_scenes,
        num_cells[h])``, and the scene classifier's probabilities ``(n, num_scenes)``."""
        torch = _torch()
        probs = [[] for _ in self.hierarchy.num_cells]
        scene = []
        for logits, scene_logits in self._forward_batches(tokens, batch_size):
            for h, lg in enumerate(logits):
                probs[h].append(torch.softmax(lg, -1).numpy())
            scene.append(torch.softmax(scene_logits, -1).numpy())
        probs = [np.concatenate(p) if p else np.zeros((0, self.num_scenes, c)) for p, c in
                 zip(probs, self.hierarchy.num_cells)]
        return probs, (np.concatenate(scene) if scene else np.zeros((0, self.num_scenes)))

    @staticmethod
    def confidence_scene(probs: Sequence[np.ndarray]) -> np.ndarray:
        """The paper's scene choice, ``int64 (n,)``: the scene whose queries have the highest
        mean (over hierarchies) largest class probability."""
        return np.argmax(np.mean([p.max(-1) for p in probs], 0), 1).astype(np.int64)

    def combine_scenes(self, probs: Sequence[np.ndarray], scene_proba, scene_mode: Optional[str] = None
                       ) -> List[np.ndarray]:
        """Hierarchical probabilities ``(n, num_cells[h])`` from the outputs of
        :meth:`predict_scene_proba`: each scene's coarse probabilities multiplied into its finer
        ones, then the scenes combined as ``scene_mode`` says (default: the model's)."""
        mode = _check_scene_mode(self.config["scene_mode"] if scene_mode is None else scene_mode)
        scene_proba = np.asarray(scene_proba, np.float64)
        rows = np.arange(len(scene_proba))
        if mode == "mixture":
            out = [0.0] * len(probs)
            for s in range(scene_proba.shape[1]):
                per_scene = self.hierarchy.hierarchical_probabilities([p[:, s] for p in probs])
                out = [o + scene_proba[:, s:s + 1] * q for o, q in zip(out, per_scene)]
            return out
        scene = np.argmax(scene_proba, 1) if mode == "classifier" else self.confidence_scene(probs)
        return self.hierarchy.hierarchical_probabilities([p[rows, scene] for p in probs])

    def predict_proba(self, tokens, batch_size: int = 1024, scene_mode: Optional[str] = None) -> List[np.ndarray]:
        """Hierarchical probabilities ``(n, num_cells[h])`` per granularity (see
        :meth:`combine_scenes`)."""
        return self.combine_scenes(*self.predict_scene_proba(tokens, batch_size), scene_mode=scene_mode)

    def predict(self, tokens, batch_size: int = 1024, scene_mode: Optional[str] = None) -> np.ndarray:
        """GPS ``float64 (n, 2)``: the mean GPS of each image's most probable finest cell."""
        cells = np.argmax(self.predict_proba(tokens, batch_size, scene_mode)[-1], 1)
        return self.hierarchy.centers[-1][cells]


class FlatCellClassifier(_CellModel):
    """Baseline: one query, the same decoder layers, a classifier over the finest cells only.

    Parameters are those of :class:`GeoDecoder` (``num_layers`` decoder layers); only the
    hierarchy's finest granularity is used as classes.
    """

    kind = "FlatCellClassifier"

    def __init__(self, hierarchy: CellHierarchy, token_dim: int, d_model: int = 256, num_heads: int = 8,
                 num_layers: int = 3, ffn_mult: int = 4, dropout: float = 0.1, seed: int = 0):
        torch = _torch()
        if not isinstance(hierarchy, CellHierarchy):
            raise ValueError("hierarchy must be a CellHierarchy (CellHierarchy.from_latlon(training_latlon))")
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be a multiple of num_heads ({num_heads})")
        self.hierarchy = hierarchy
        self.token_dim = int(token_dim)
        self.config = dict(token_dim=int(token_dim), d_model=int(d_model), num_heads=int(num_heads),
                           num_layers=int(num_layers), ffn_mult=int(ffn_mult), dropout=float(dropout), seed=int(seed))
        torch.manual_seed(seed)
        self.net = _networks().FlatNet(self.token_dim, hierarchy.num_cells[-1], int(d_model), int(num_heads),
                                       int(num_layers), int(ffn_mult), float(dropout))
        self.history: List[float] = []
        # rows of the last fit's training set held out for early stopping (to choose settings on)
        self.validation_indices = np.zeros(0, np.int64)

    def __repr__(self) -> str:
        return f"FlatCellClassifier(cells={self.hierarchy.num_cells[-1]}, d_model={self.config['d_model']})"

    def fit(self, tokens, latlon, epochs: int = 20, batch_size: int = 256, lr: float = 5e-4,
            weight_decay: float = 1e-4, validation: float = 0.1, patience: int = 3, seed: int = 0,
            progress: bool = False, num_threads: Optional[int] = None) -> "FlatCellClassifier":
        """Trains the finest-cell classifier; see :meth:`GeoDecoder.fit`."""
        torch = _torch()
        x = _check_tokens(tokens, self.token_dim)
        labels = self._labels(latlon)[:, -1]
        if len(labels) != len(x):
            raise ValueError(f"{len(x)} token sets but {len(labels)} GPS rows: give one per image")
        if not (labels >= 0).any():
            raise ValueError("no training photo lies in a kept finest cell: lower min_images")
        xt, yt = torch.from_numpy(x), torch.from_numpy(labels)

        def loss_of(idx):
            idx = torch.from_numpy(idx)
            y = yt[idx]
            logits = self.net(xt[idx])
            if not (y >= 0).any():
                return logits.sum() * 0.0
            return torch.nn.functional.cross_entropy(logits, y, ignore_index=-1)

        self.history, self.validation_indices = _train(
            self.net, loss_of, len(x), epochs, batch_size, lr, weight_decay, validation, patience, seed, progress,
            "flat classifier", num_threads)
        return self

    def predict_proba(self, tokens, batch_size: int = 1024) -> List[np.ndarray]:
        """Finest-cell softmax ``(n, num_cells[-1])``, as a one-element list."""
        torch = _torch()
        out = [torch.softmax(lg, -1).numpy() for lg in self._forward_batches(tokens, batch_size)]
        return [np.concatenate(out) if out else np.zeros((0, self.hierarchy.num_cells[-1]))]


# Equal Earth x extent for R = 1: coordinates are divided by it so both axes share a scale
_EQUAL_EARTH_X_MAX = 2 * np.sqrt(3.0) * np.pi / (3 * 1.340264)


class GPSEncoder:
    """GPS embedding: random Fourier features of Equal Earth coordinates + an MLP per scale.

    Parameters
    ----------
    dim : int
        Output dimension.
    sigmas : sequence of float
        Frequency scales of the Fourier features (GeoCLIP: 2**0, 2**4, 2**8); coordinates
        are Equal Earth divided by its x extent, so x spans [-1, 1].
    num_features : int
        Fourier features per scale (cosines and sines; even).
    hidden : int
        MLP width.
    seed : int
    """

    def __init__(self, dim: int = 128, sigmas: Sequence[float] = (1.0, 16.0, 256.0), num_features: int = 256,
                 hidden: int = 512, seed: int = 0):
        torch = _torch()
        if num_features % 2 or num_features < 2:
            raise ValueError(f"num_features must be even (cosine and sine pairs), got {num_features}")
        if not sigmas or min(sigmas) <= 0:
            raise ValueError(f"sigmas must be positive scales, got {sigmas}")
        self.config = dict(dim=int(dim), sigmas=[float(s) for s in sigmas], num_features=int(num_features),
                           hidden=int(hidden), seed=int(seed))
        torch.manual_seed(seed)
        self.net = _networks().GPSNet(int(dim), self.config["sigmas"], int(num_features), int(hidden), int(seed))

    def __repr__(self) -> str:
        return f"GPSEncoder(dim={self.config['dim']}, sigmas={self.config['sigmas']})"

    @staticmethod
    def coordinates(latlon) -> np.ndarray:
        """Normalised Equal Earth coordinates ``float32 (n, 2)`` the network sees."""
        return (equal_earth(latlon) / _EQUAL_EARTH_X_MAX).astype(np.float32)

    def tensor(self, latlon):
        """Embeddings as a torch tensor with gradients (for training)."""
        torch = _torch()
        return self.net(torch.from_numpy(self.coordinates(latlon)))

    def encode(self, latlon, batch_size: int = 8192) -> np.ndarray:
        """L2-normalised embeddings ``float32 (n, dim)`` of latitude, longitude degrees."""
        torch = _torch()
        xy = self.coordinates(latlon)
        self.net.eval()
        out = []
        with torch.no_grad():
            for s in range(0, len(xy), batch_size):
                out.append(torch.nn.functional.normalize(self.net(torch.from_numpy(xy[s:s + batch_size])), dim=-1)
                           .numpy())
        return np.concatenate(out) if out else np.zeros((0, self.config["dim"]), np.float32)


class ImageGPSMatcher:
    """GeoCLIP-style matching of image embeddings against GPS embeddings.

    An image MLP and a :class:`GPSEncoder` map into one space; training pulls each image
    towards its own GPS among the batch (symmetric InfoNCE, learned temperature). A photo is
    localized at the most similar entry of a GPS gallery (e.g. the training GPS).

    Parameters
    ----------
    image_dim : int
    dim : int
        Shared embedding dimension.
    hidden : int
    seed : int
    gps : dict, optional
        Extra :class:`GPSEncoder` arguments (``sigmas``, ``num_features``...).
    """

    kind = "ImageGPSMatcher"

    def __init__(self, image_dim: int, dim: int = 128, hidden: int = 512, seed: int = 0, gps: Optional[dict] = None):
        torch = _torch()
        nn = torch.nn
        self.config = dict(image_dim=int(image_dim), dim=int(dim), hidden=int(hidden), seed=int(seed),
                           gps=dict(gps or {}))
        self.gps = GPSEncoder(dim=dim, hidden=hidden, seed=seed, **(gps or {}))
        torch.manual_seed(seed)
        self.image_net = nn.Sequential(nn.Linear(image_dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        self.log_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))
        self.net = nn.ModuleDict({"image": self.image_net, "gps": self.gps.net})
        self.net.register_parameter("log_scale", self.log_scale)
        self.history: List[float] = []
        # rows of the last fit's training set held out for early stopping (to choose settings on)
        self.validation_indices = np.zeros(0, np.int64)

    def __repr__(self) -> str:
        return f"ImageGPSMatcher(image_dim={self.config['image_dim']}, dim={self.config['dim']})"

    def _images(self, x) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.config["image_dim"] or x.dtype.kind != "f":
            raise ValueError(f"image embeddings must be float (n, {self.config['image_dim']}), got {x.shape} {x.dtype}")
        if not np.isfinite(x).all():
            raise ValueError("image embeddings contain NaN or Inf")
        return np.ascontiguousarray(x, np.float32)

    def fit(self, image_embeddings, latlon, epochs: int = 30, batch_size: int = 256, lr: float = 1e-3,
            weight_decay: float = 1e-4, validation: float = 0.1, patience: int = 5, seed: int = 0,
            progress: bool = False, num_threads: Optional[int] = None) -> "ImageGPSMatcher":
        """Contrastive training on pairs (image embedding, its GPS)."""
        torch = _torch()
        f = torch.nn.functional
        x = self._images(image_embeddings)
        xy = GPSEncoder.coordinates(latlon)
        if len(xy) != len(x):
            raise ValueError(f"{len(x)} images but {len(xy)} GPS rows: give one per image")
        xt, gt = torch.from_numpy(x), torch.from_numpy(xy)

        def loss_of(idx):
            idx = torch.from_numpy(idx)
            a = f.normalize(self.image_net(xt[idx]), dim=-1)
            b = f.normalize(self.gps.net(gt[idx]), dim=-1)
            logits = self.log_scale.clamp(max=np.log(100.0)).exp() * a @ b.T
            target = torch.arange(len(idx))
            return 0.5 * (f.cross_entropy(logits, target) + f.cross_entropy(logits.T, target))

        self.history, self.validation_indices = _train(
            self.net, loss_of, len(x), epochs, batch_size, lr, weight_decay, validation, patience, seed, progress,
            "image-GPS", num_threads)
        return self

    def encode_images(self, image_embeddings, batch_size: int = 8192) -> np.ndarray:
        """L2-normalised image embeddings in the shared space, ``float32 (n, dim)``."""
        torch = _torch()
        x = self._images(image_embeddings)
        self.net.eval()
        with torch.no_grad():
            out = [torch.nn.functional.normalize(self.image_net(torch.from_numpy(x[s:s + batch_size])), dim=-1).numpy()
                   for s in range(0, len(x), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.config["dim"]), np.float32)

    def predict(self, image_embeddings, gallery_latlon, k: int = 1) -> np.ndarray:
        """GPS ``float64 (n, 2)``: the gallery location whose embedding is most similar (``k =
        1``), or the kernel-weighted mode of the ``k`` most similar (see
        :func:`pylocalize.geo.retrieval.kernel_mode`)."""
        gallery = GeoGallery(self.gps.encode(gallery_latlon), gallery_latlon)
        return gallery.predict(self.encode_images(image_embeddings), k=k)

    def save(self, path) -> None:
        """Weights and settings in one checkpoint (:func:`pylocalize.checkpoints.save_checkpoint`)."""
        _save(path, self.kind, self.config, None, self.net)

    @classmethod
    def load(cls, path) -> "ImageGPSMatcher":
        def build(data, _):
            model = cls(**data["config"])
            model.net.load_state_dict(data["state"])
            model.net.eval()
            return model

        return _load(path, cls.kind, build)


__all__ = ["FlatCellClassifier", "GPSEncoder", "GeoDecoder", "ImageGPSMatcher", "torch_threads"]
