"""Learned recurrent binarization (BEBR, Gan et al., KDD 2023), torch extra.

:class:`RecurrentBinarizer` maps float embeddings to multi-bit codes in the layout
:class:`pylocalize.MultiBitIndex` searches by symmetric distance calculation:

- plane 0: ``b_0 = sign(E_0(x))``;
- plane ``i >= 1``: reconstruct the input from the planes so far with an MLP,
  ``r_i = D_i(sum_{j<i} 2^-j b_j)``, and binarize what is left, ``b_i = sign(E_i(x - r_i))``;
- the code embedding is ``z = sum_i 2^-i b_i`` (the index's reconstruction).

Signs pass gradients straight through. Training is task-agnostic, embedding to
embedding, from an ITQ-rotated start. The default objective distils the float
neighbourhoods into the codes: in batches of anchors and their nearest embeddings, each
row's softmax over code cosines is fitted to its (sharper) softmax over float cosines. The
paper's reconstruction objective, an InfoNCE loss that makes each code embedding closest
to its own original embedding among the batch, is kept as ``objective="reconstruction"``;
from a good start it lowers recall, because reconstructing every embedding well is not
ranking its neighbours well. When ``out_dim`` is smaller than ``in_dim`` the originals are
compared through their top ``out_dim`` principal components.

Most of what a learned code gains is in its linear start: how a code length is spent
(:func:`fit_binarizer` picks ``out_dim x bits_per_dim``: fewer principal components at
more bits each win on embeddings whose variance decays), the ITQ rotation, and how far
the embeddings are centred before the signs.
"""


from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Tuple

import numpy as np
from tqdm import tqdm

from pylocalize.checkpoints import import_torch, load_model, save_checkpoint
from pylocalize.codes import pack_bits
from pylocalize.index.binary import MultiBitIndex
from pylocalize.index.knn import assign
from pylocalize.index.metrics import recall_at
from pylocalize.training import optimizer_steps, train_with_early_stopping

INITS = ("itq", "random")
OBJECTIVES = ("neighbours", "reconstruction")
# rows sampled for the principal components, the ITQ rotation and the pool of anchors
_SAMPLE_ROWS = 50_000
# the held-out score's search: held-out queries among training rows, recall@10
_SCORE_QUERIES, _SCORE_DATABASE, _SCORE_K = 2_000, 20_000, 10


def _torch():
    return import_torch("learned codes")


def _networks():
    """:mod:`pylocalize.codes.networks`, imported only once torch is known to be there (it
    defines its modules at import), so that importing the codes needs no torch."""
    _torch()
    from pylocalize.codes import networks

    return networks


@dataclass(frozen=True)
class BinarizerOptions:
    """How :meth:`RecurrentBinarizer.fit` trains, checked when made (before any work).

    Attributes
    ----------
    epochs : int
        At most this many epochs; 0 keeps the linear start (PCA, ITQ, centring and split
        point picked on held-out recall).
    batch_size : int
        Rows per batch.
    lr : float, optional
        AdamW learning rate; default 1e-4 for ``"neighbours"`` (small: the start is already
        a good code), 2e-3 for ``"reconstruction"``.
    temperature : float, optional
        Of the softmax over code cosines; default 0.02 for ``"neighbours"``, 0.05 for
        ``"reconstruction"``.
    validation : float
        Fraction of the rows held out (at least ``batch_size // 4`` rows) for the held-out
        score that picks the start and stops training.
    patience : int
        Stop after this many epochs without a better held-out score.
    seed : int
        Held-out split, samples, ITQ start and batch order.
    progress : bool
        A tqdm bar over the epochs.
    compatibility_weight : float
        Weight of the compatibility term against the usual one when training with
        ``compatible_with``; it must dominate, because the usual term pulls the codes toward
        the new embeddings' own basis.
    init : {"itq", "random"}
        ``"itq"`` starts the first plane's projection at the ITQ rotation (Gong and
        Lazebnik, CVPR 2011: the rotation of the centred, PCA-reduced data that minimises
        the quantisation error of its signs) with every correction at zero, so training
        starts from the training-free residual code of rotated data; rotation spreads the
        variance evenly over the bits. ``"random"`` keeps PyTorch's initialisation.
    objective : {"neighbours", "reconstruction"}
        Both embedding to embedding, contrastive over the batch. ``"neighbours"``: listwise
        distillation of the float neighbourhoods. Each batch holds ``batch_size //
        (per_anchor + 1)`` anchors and ``per_anchor`` of each anchor's ``neighbours``
        nearest embeddings (cosine, mined in a sample of at most 50,000 training rows), the
        hard negatives that decide recall; every row's softmax of code cosines to the rest
        of the batch (``temperature``) is fitted to its softmax of float cosines
        (``teacher_temperature``, sharp, so the target is mostly the few nearest). This
        ranks the codes as the floats are ranked, which is what SDC search needs.
        ``"reconstruction"``: InfoNCE between each code embedding and its own original
        embedding among the batch, the reconstruction loss of the BEBR paper; from a good
        start it lowers recall.
    teacher_temperature : float
        Of the softmax over float cosines (``"neighbours"``).
    neighbours, per_anchor : int
        Nearest embeddings mined per anchor, and drawn from them per batch (``"neighbours"``).
    """

    epochs: int = 30
    batch_size: int = 512
    lr: Optional[float] = None
    temperature: Optional[float] = None
    validation: float = 0.1
    patience: int = 5
    seed: int = 0
    progress: bool = False
    compatibility_weight: float = 20.0
    init: str = "itq"
    objective: str = "neighbours"
    teacher_temperature: float = 0.01
    neighbours: int = 20
    per_anchor: int = 7

    def __post_init__(self):
        if self.init not in INITS:
            raise ValueError(f"init must be 'itq' or 'random', got {self.init!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be 'neighbours' or 'reconstruction', got {self.objective!r}")
        if self.objective == "neighbours" and not 1 <= self.per_anchor <= self.neighbours:
            raise ValueError(f"per_anchor must be in 1..neighbours ({self.neighbours}), got {self.per_anchor}")
        if not self.teacher_temperature > 0 or (self.temperature is not None and not self.temperature > 0):
            raise ValueError("temperatures must be > 0")
        if not self.compatibility_weight > 0:
            raise ValueError(f"compatibility_weight must be > 0, got {self.compatibility_weight}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.epochs < 0 or self.batch_size < 1:
            raise ValueError(f"epochs must be >= 0 and batch_size >= 1, got {self.epochs}, {self.batch_size}")
        if not 0 <= self.validation < 1:
            raise ValueError(f"validation must be a fraction in [0, 1), got {self.validation}")

    @property
    def learning_rate(self) -> float:
        """``lr``, or the objective's default."""
        if self.lr is not None:
            return self.lr
        return 1e-4 if self.objective == "neighbours" else 2e-3

    @property
    def code_temperature(self) -> float:
        """``temperature``, or the objective's default."""
        if self.temperature is not None:
            return self.temperature
        return 0.02 if self.objective == "neighbours" else 0.05

    def held_out_rows(self, n: int) -> int:
        """How many of ``n`` rows are held out."""
        return max(self.batch_size // 4, int(self.validation * n))


def _options(options: Optional[BinarizerOptions], **overrides) -> BinarizerOptions:
    """``options`` (default: the defaults) with ``overrides``, checked."""
    if options is not None and not isinstance(options, BinarizerOptions):
        raise ValueError(f"options must be a BinarizerOptions, got {type(options).__name__}")
    return dataclasses.replace(options if options is not None else BinarizerOptions(), **overrides)


class RecurrentBinarizer:
    """Learned multi-bit binarizer: ``encode(x)`` gives codes for ``MultiBitIndex(out_dim, bits_per_dim)``.

    Parameters
    ----------
    in_dim, out_dim : int
        Input embedding and code dimensions (``out_dim <= in_dim``).
    bits_per_dim : int
        1 to 4 bit planes.
    hidden : int
        Width of the residual MLP blocks.
    seed : int
        Initialisation seed.
    """

    def __init__(self, in_dim: int, out_dim: int, bits_per_dim: int, hidden: int = 256, seed: int = 0):
        torch = _torch()
        if not 1 <= bits_per_dim <= 4:
            raise ValueError(f"bits_per_dim must be 1..4 (the index's range), got {bits_per_dim}")
        if not 1 <= out_dim <= in_dim:
            raise ValueError(f"out_dim must be in 1..in_dim ({in_dim}), got {out_dim}")
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)
        self.bits_per_dim, self.hidden = int(bits_per_dim), int(hidden)
        torch.manual_seed(seed)
        self.net = _networks().RecurrentBinarizerNet(self.in_dim, self.out_dim, self.bits_per_dim, self.hidden)
        # maps originals into the code space for the loss (top principal components; identity if equal dims)
        self.key_projection = np.eye(self.in_dim, self.out_dim, dtype=np.float32)
        self.mean = np.zeros(self.in_dim, np.float32)
        self.centring = 1.0  # codes are of x - centring * mean; picked in fit (through the first bias)
        self.history = []

    def __repr__(self) -> str:
        return f"RecurrentBinarizer({self.in_dim} -> {self.out_dim} x {self.bits_per_dim} bits)"

    def _check(self, x) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"embeddings must be (n, {self.in_dim}), got shape {x.shape}")
        if x.dtype.kind != "f":
            raise ValueError(f"embeddings must be floating point, got {x.dtype}")
        if not np.isfinite(x).all():
            raise ValueError("embeddings contain NaN or Inf")
        return np.ascontiguousarray(x, dtype=np.float32)

    def fit(self, x: np.ndarray, options: Optional[BinarizerOptions] = None, *,
            compatible_with: "RecurrentBinarizer | None" = None, old_x: "np.ndarray | None" = None,
            **overrides) -> "RecurrentBinarizer":
        """Trains on float embeddings ``x (n, in_dim)``; stops early when the held-out score
        has not improved for ``patience`` epochs, keeping the best weights.

        ``options`` (:class:`BinarizerOptions`, default: the defaults) says how; keywords
        override its fields (``fit(x, epochs=10, objective="reconstruction")``). Options and
        inputs are checked before any work. The stages:

        1. The linear start (:meth:`_fit_start`): the mean, the top ``out_dim`` principal
           components (through which the originals are compared when ``out_dim < in_dim``)
           and the ``init`` projection.
        2. The held-out score (:meth:`_held_out_score`): recall@10 of SDC search of held-out
           vectors among training rows against their exact cosine neighbours (the task
           itself: a contrastive loss can fall while recall does), so training keeps the
           start unless it beats it; with ``compatible_with``, minus the training loss.
        3. The centring and split point (:meth:`_pick_centring_and_split`) on that score.
        4. Training (:func:`pylocalize.training.train_with_early_stopping`) on the
           ``objective``'s loss.

        Backward-compatible training: with ``compatible_with`` (an old, frozen binarizer of
        the same layout) a compatibility term (:func:`_compatibility_loss`) makes the new
        codes those of the old model for the same items, so queries encoded by this model
        search an index of the old one's codes with no re-encoding of the database. When the
        embedding model changed too, pass ``old_x``: the old model's embeddings of the same
        items, row for row with ``x`` (default ``x``, and the new model then starts as a copy
        of the old one). ``benchmarks/README.md`` has the measured effect of each stage.
        """
        options = _options(options, **overrides)
        x = self._check(x)
        old_x, warm = self._check_compatible(compatible_with, old_x, x)
        _check_sizes(len(x), options)
        torch = _torch()
        # the held-out split has its own stream, so fits of other layouts hold out the same rows
        split_rng, rng = (np.random.default_rng(s) for s in np.random.SeedSequence(options.seed).spawn(2))
        torch.manual_seed(options.seed)
        self._fit_start(x, compatible_with if warm else None, rng, options)
        order = split_rng.permutation(len(x))
        # rows are positions into x (and old_x): the compatibility term needs the pairs
        n_val = options.held_out_rows(len(x))
        val, train = order[:n_val], order[n_val:]
        loss_of = self._loss_function(x, compatible_with, old_x, options)
        batches = _batch_source(x, train, options, rng)
        optimizer = torch.optim.AdamW(self.net.parameters(), lr=options.learning_rate, weight_decay=1e-4)
        score = self._held_out_score(x, val, train, loss_of if compatible_with is not None else None,
                                     options.batch_size)
        if compatible_with is not None:  # the old codes were made with the old split point
            self.net.threshold.fill_(float(compatible_with.net.threshold))
        else:
            self._pick_centring_and_split(score)
        start = score()
        self.history.append(start)
        self.history += train_with_early_stopping(
            self.net, options.epochs, lambda: optimizer_steps(optimizer, loss_of, batches()), lambda _: score(),
            patience=options.patience, higher_is_better=True, min_delta=1e-4, start_score=start,
            progress=options.progress, desc="binarizer", postfix=lambda s: {"held_out": f"{s:.3f}"})
        return self

    def _check_compatible(self, old: "RecurrentBinarizer | None", old_x,
                          x: np.ndarray) -> Tuple[Optional[np.ndarray], bool]:
        """The old model's embeddings of the training rows (``x`` without ``old_x``), and
        whether the new model starts as a copy of ``old`` (same embeddings, same widths)."""
        if old is None:
            return None, False
        if not isinstance(old, RecurrentBinarizer):
            raise ValueError("compatible_with must be a RecurrentBinarizer (the model whose codes the index holds)")
        if (old.in_dim, old.out_dim, old.bits_per_dim) != (self.in_dim, self.out_dim, self.bits_per_dim):
            raise ValueError(f"compatible_with maps {old.in_dim} -> {old.out_dim} x {old.bits_per_dim} bits, this "
                             f"model {self.in_dim} -> {self.out_dim} x {self.bits_per_dim}: codes must share a layout")
        old.net.eval()
        warm = old_x is None and old.hidden == self.hidden
        old_x = x if old_x is None else old._check(old_x)
        if len(old_x) != len(x):
            raise ValueError(f"old_x must pair row for row with x: {len(old_x)} rows for {len(x)}")
        return old_x, warm

    def _fit_start(self, x: np.ndarray, warm_from: "RecurrentBinarizer | None", rng: np.random.Generator,
                   options: BinarizerOptions) -> None:
        """The mean, the principal components the originals are compared through, and the
        first projection: the ITQ rotation, PyTorch's initialisation, or ``warm_from``'s
        weights (the new model then makes exactly the old codes)."""
        self.mean = x.mean(0)
        if self.out_dim < self.in_dim:
            sample = rng.choice(len(x), min(len(x), _SAMPLE_ROWS), replace=False)
            _, _, vt = np.linalg.svd(x[sample] - self.mean, full_matrices=False)
            self.key_projection = np.ascontiguousarray(vt[: self.out_dim].T, dtype=np.float32)
        if warm_from is not None:
            self.net.load_state_dict(warm_from.net.state_dict())
            self.mean, self.key_projection = warm_from.mean.copy(), warm_from.key_projection.copy()
            self.centring = warm_from.centring
        elif options.init == "itq":
            self._init_itq(x[rng.choice(len(x), min(len(x), _SAMPLE_ROWS), replace=False)] - self.mean, options.seed)

    def _loss_function(self, x: np.ndarray, old: "RecurrentBinarizer | None", old_x: "np.ndarray | None",
                       options: BinarizerOptions) -> Callable:
        """``loss_of(rows)``: the objective's loss on the rows ``x[rows]``, plus the
        compatibility term with ``old``."""
        torch = _torch()
        proj, mean = torch.from_numpy(self.key_projection), torch.from_numpy(self.mean)
        temperature = options.code_temperature

        def loss_of(rows):
            batch = x[rows]
            xb = torch.from_numpy(batch) - mean
            logits = []
            _, z = self.net.planes(xb, logits if old is not None else None)
            z = torch.nn.functional.normalize(z, dim=1)
            if options.objective == "neighbours":
                loss = _distillation_loss(z, batch, temperature, options.teacher_temperature)
            else:
                loss = _reconstruction_loss(z, xb @ proj, temperature)
            if old is not None:
                loss = loss + options.compatibility_weight * _compatibility_loss(
                    z, logits, old, old_x[rows], temperature)
            return loss

        return loss_of

    def _held_out_score(self, x: np.ndarray, val: np.ndarray, train: np.ndarray, loss_of: Optional[Callable],
                        batch_size: int) -> Callable[[], float]:
        """``score()``, higher is better: SDC recall@10 of held-out queries among training
        rows (their exact cosine neighbours computed once here), or, given ``loss_of``,
        minus its mean over the held-out rows."""
        torch = _torch()
        if loss_of is not None:
            def score():
                self.net.eval()
                with torch.no_grad():
                    return -float(np.mean([loss_of(val[s:s + batch_size]).item()
                                           for s in range(0, max(1, len(val) - batch_size // 4), batch_size)]))
            return score
        # held-out vectors as queries against training rows as the database (the search the
        # codes are for)
        queries, database = x[val[:_SCORE_QUERIES]], x[train[:_SCORE_DATABASE]]
        truth = _cosine_neighbours(database, _SCORE_K, queries)

        def score():
            self.net.eval()
            return _sdc_recall(self, queries, database, truth, _SCORE_K)

        return score

    def _pick_centring_and_split(self, score) -> None:
        """Picks, by the held-out score, how far the codes are centred and where further
        planes split. The code of ``x - alpha * mean`` for ``alpha`` in 0..1 (set through the
        first projection's bias): centring balances the bits, but cosine truth is measured on
        the uncentred embeddings, and subtracting the mean changes their ranking (by each
        item's projection on it). Sentence embeddings lose recall to the full centring,
        RootSIFT needs it (``benchmarks/README.md``). The split point of further planes,
        ``threshold`` times each vector's mean absolute projection (1 is the training-free
        rule), is picked from 1.0-1.4: for Gaussian-like coordinates a 4-level quantiser
        wants its outer split near 1.2 mean absolute values."""
        torch = _torch()
        first = self.net.encoders[0].linear
        centre = first.weight.detach().double() @ torch.from_numpy(self.mean).double()
        bias = first.bias.detach().clone()
        splits = (1.0, 1.1, 1.2, 1.3, 1.4) if self.bits_per_dim > 1 else (1.0,)
        scores = {}
        with torch.no_grad():
            for alpha in (0.0, 0.25, 0.5, 0.75, 1.0):
                first.bias.copy_(bias + ((1.0 - alpha) * centre).float())
                for split in splits:
                    self.net.threshold.fill_(split)
                    scores[alpha, split] = score()
            alpha, split = max(scores, key=scores.get)
            first.bias.copy_(bias + ((1.0 - alpha) * centre).float())
            self.net.threshold.fill_(split)
        self.centring = alpha

    def _init_itq(self, centred: np.ndarray, seed: int, iterations: int = 50) -> None:
        """First-plane projection = PCA to out_dim, then the ITQ rotation; corrections at zero."""
        torch = _torch()
        rng = np.random.default_rng(seed)
        v = centred.astype(np.float64)
        if self.out_dim < self.in_dim:
            v = v @ self.key_projection  # the top principal components, computed in fit
            basis = self.key_projection.astype(np.float64)
        else:
            basis = np.eye(self.in_dim)
        rotation, _ = np.linalg.qr(rng.standard_normal((self.out_dim, self.out_dim)))
        for _ in range(iterations):  # alternate: codes B = sign(V R), then R = the Procrustes fit of V to B
            b = np.where(v @ rotation >= 0, 1.0, -1.0)
            u, _, vt = np.linalg.svd(v.T @ b)
            rotation = u @ vt
        weight = (basis @ rotation).T  # u = W (x - mean): (out_dim, in_dim)
        first = self.net.encoders[0]
        with torch.no_grad():
            first.linear.weight.copy_(torch.from_numpy(weight.astype(np.float32)))
            first.linear.bias.zero_()
            first.mlp[2].weight.zero_()
            first.mlp[2].bias.zero_()

    def encode(self, x: np.ndarray, batch_size: int = 65536) -> np.ndarray:
        """uint8 codes ``(n, bits_per_dim * ceil(out_dim / 8))``, plane-major, the layout of
        :func:`pylocalize.binarize` and :class:`pylocalize.MultiBitIndex`."""
        torch = _torch()
        x = self._check(x)
        pad = (-self.out_dim) % 8
        out = []
        self.net.eval()
        with torch.no_grad():
            for s in range(0, len(x), batch_size):
                planes, _ = self.net.planes(torch.from_numpy(x[s:s + batch_size]) - torch.from_numpy(self.mean))
                bits = [np.pad(p.numpy() > 0, ((0, 0), (0, pad))) for p in planes]
                out.append(np.concatenate([pack_bits(b) for b in bits], 1))
        plane_bytes = (self.out_dim + 7) // 8
        return np.concatenate(out) if out else np.zeros((0, self.bits_per_dim * plane_bytes), np.uint8)

    def save(self, path) -> None:
        """Weights and settings in one checkpoint (:func:`pylocalize.checkpoints.save_checkpoint`:
        atomic, CRC-checked, loadable without running code)."""
        torch = _torch()
        save_checkpoint({"format": "pylocalize.RecurrentBinarizer", "version": 2,
                         "dims": [self.in_dim, self.out_dim, self.bits_per_dim, self.hidden],
                         "mean": torch.from_numpy(self.mean), "key_projection": torch.from_numpy(self.key_projection),
                         "state": self.net.state_dict()}, path)

    @classmethod
    def load(cls, path) -> "RecurrentBinarizer":
        """A binarizer saved by :meth:`save`; a bad file raises :class:`pylocalize.FormatError`."""
        def build(data):
            in_dim, out_dim, bits, hidden = (int(v) for v in data["dims"])
            model = cls(in_dim, out_dim, bits, hidden)
            model.net.load_state_dict(data["state"])
            mean = data["mean"].numpy().astype(np.float32)
            key_projection = data["key_projection"].numpy().astype(np.float32)
            if mean.shape != model.mean.shape or key_projection.shape != model.key_projection.shape:
                raise ValueError(f"mean {mean.shape} or key projection {key_projection.shape} do not fit the dims")
            model.mean, model.key_projection = mean, key_projection
            return model

        return load_model(path, "RecurrentBinarizer", build, version=2)


def fit_binarizer(x: np.ndarray, code_bits: int, hidden: int = 256, seed: int = 0, progress: bool = False,
                  **fit_options) -> RecurrentBinarizer:
    """A :class:`RecurrentBinarizer` of ``code_bits`` bits per vector, its layout chosen on the data.

    A code length can be spent as ``out_dim`` dimensions of ``bits_per_dim`` planes in
    several ways (768 bits: 768 x 1, 384 x 2, 256 x 3 or 192 x 4). Every layout with
    ``out_dim <= in_dim`` and whole bytes per plane is fitted to its linear start (top
    principal components, ITQ rotation, centring and split point: ``fit(epochs=0)``), the
    one with the best held-out recall@10 (the same held-out rows for all) is then trained
    with ``fit_options`` (:meth:`RecurrentBinarizer.fit`'s ``options`` and keywords; a lone
    layout is fitted once, and ``epochs=0`` keeps the start). Embeddings whose variance
    decays over their principal components want fewer dimensions at more bits each
    (``benchmarks/README.md``). ``model.layout_scores`` keeps every layout's held-out score.
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (n, dim), got shape {x.shape}")
    if "compatible_with" in fit_options:
        raise ValueError("compatible training keeps the old model's layout: use RecurrentBinarizer(...).fit")
    # every layout is fitted with the same options: checked once, before any of them
    options = _options(fit_options.pop("options", None), seed=seed, progress=progress, **fit_options)
    in_dim = x.shape[1]
    layouts = [(code_bits // bits, bits) for bits in range(1, 5)
               if code_bits % bits == 0 and code_bits // bits <= in_dim and (code_bits // bits) % 8 == 0]
    if not layouts:
        raise ValueError(f"code_bits={code_bits} fits no layout of whole bytes per plane for {in_dim}-d embeddings: "
                         f"use a multiple of 8 of at most {4 * in_dim}")
    start = dataclasses.replace(options, epochs=0, progress=False)
    scores, starts = {}, {}
    for out_dim, bits in tqdm(layouts if len(layouts) > 1 else [], desc="layouts", disable=not progress, leave=False):
        starts[out_dim, bits] = RecurrentBinarizer(in_dim, out_dim, bits, hidden=hidden, seed=seed).fit(x, start)
        scores[out_dim, bits] = starts[out_dim, bits].history[0]
    out_dim, bits = max(scores, key=scores.get) if scores else layouts[0]
    if options.epochs == 0 and (out_dim, bits) in starts:
        model = starts[out_dim, bits]  # the start is the fit: no need to make it again
    else:
        model = RecurrentBinarizer(in_dim, out_dim, bits, hidden=hidden, seed=seed).fit(x, options)
        scores.setdefault((out_dim, bits), model.history[0])
    model.layout_scores = scores
    return model


def _check_sizes(n: int, options: BinarizerOptions) -> None:
    """Refuses ``n`` training rows too few for the batches or the neighbour pool."""
    if n < 2 * options.batch_size // 4:
        raise ValueError(f"{n} embeddings are too few to train on with batch_size={options.batch_size}")
    pool = min(n - options.held_out_rows(n), _SAMPLE_ROWS)
    if options.objective == "neighbours" and pool <= options.neighbours:
        raise ValueError(f"{pool} training embeddings are too few for neighbours={options.neighbours}")


def _batch_source(x: np.ndarray, train: np.ndarray, options: BinarizerOptions,
                  rng: np.random.Generator) -> Callable[[], Iterator[np.ndarray]]:
    """``batches()``: one epoch's batches of row positions into ``x``, drawn with ``rng``.

    ``"reconstruction"``: the training rows shuffled into whole batches. ``"neighbours"``:
    anchors from a pool (a sample of the training rows), each with ``per_anchor`` of its
    ``neighbours`` nearest in the pool, mined once here."""
    if options.objective == "reconstruction":
        size = options.batch_size

        def batches():
            perm = rng.permutation(len(train))
            for s in range(0, len(train) - size + 1, size):
                yield train[perm[s:s + size]]

        return batches
    pool = train[:_SAMPLE_ROWS]
    near = _cosine_neighbours(x[pool], options.neighbours)
    anchors = max(1, options.batch_size // (options.per_anchor + 1))

    def batches():
        perm = rng.permutation(len(pool))
        for s in range(0, len(pool) - anchors + 1, anchors):
            a = perm[s:s + anchors]
            picked = np.stack([rng.choice(options.neighbours, options.per_anchor, replace=False) for _ in a])
            yield pool[np.unique(np.concatenate([a, np.take_along_axis(near[a], picked, 1).ravel()]))]

    return batches


def _distillation_loss(z, batch: np.ndarray, temperature: float, teacher_temperature: float):
    """Listwise distillation: each row's softmax over the rest of the batch, code cosines
    (unit code embeddings ``z``) fitted to float cosines (the embeddings ``batch``)."""
    torch = _torch()
    functional = torch.nn.functional
    self_pair = torch.eye(len(batch), dtype=torch.bool)
    floats = torch.from_numpy(_unit(batch))
    teacher = functional.softmax((floats @ floats.T / teacher_temperature).masked_fill(self_pair, -1e9), 1)
    student = functional.log_softmax((z @ z.T / temperature).masked_fill(self_pair, -1e9), 1)
    return -(teacher * student).sum(1).mean()


def _reconstruction_loss(z, keys, temperature: float):
    """InfoNCE: each unit code embedding closest to its own original (``keys``, the centred
    embeddings in the code space) among the batch."""
    torch = _torch()
    functional = torch.nn.functional
    keys = functional.normalize(keys, dim=1)
    return functional.cross_entropy(z @ keys.T / temperature, torch.arange(len(z)))


def _compatibility_loss(z, logits, old: RecurrentBinarizer, old_batch: np.ndarray, temperature: float):
    """How far the new codes are from ``old``'s codes of the same items (``old_batch``, the
    old embeddings): InfoNCE of the code embeddings against the old ones, plus a logistic
    loss of every plane's pre-sign activations (``logits``) against the old bits, a smooth
    signal where matching discrete codes through straight-through signs learns slowly."""
    torch = _torch()
    functional = torch.nn.functional
    with torch.no_grad():
        old_bits, _ = old.net.planes(torch.from_numpy(old_batch) - torch.from_numpy(old.mean))
    agree = sum(functional.soft_margin_loss(a, o) for a, o in zip(logits, old_bits))
    z_old = functional.normalize(sum(2.0 ** -i * o for i, o in enumerate(old_bits)), dim=1)
    cross = functional.cross_entropy(z @ z_old.T / temperature, torch.arange(len(z)))
    return cross + agree / old.bits_per_dim


def _unit(v: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12), np.float32)


def _drop_self(rows: np.ndarray, k: int) -> np.ndarray:
    """Each row's first ``k`` ids other than its own position (a set searched against itself)."""
    return np.array([[j for j in row if j != i][:k] for i, row in enumerate(rows)])


def _cosine_neighbours(v: np.ndarray, k: int, queries: "np.ndarray | None" = None) -> np.ndarray:
    """Exact cosine ``k`` nearest neighbours among the rows of ``v``: of each row of
    ``queries``, or, without them, of each row of ``v`` among the others."""
    unit = _unit(v)  # on unit vectors, L2 order is cosine order
    if queries is not None:
        return assign(_unit(queries), unit, k)[0]
    return _drop_self(assign(unit, unit, k + 1)[0], k)


def _sdc_recall(model: RecurrentBinarizer, queries: np.ndarray, database: np.ndarray, truth: np.ndarray,
                k: int = 10) -> float:
    """Recall@k of SDC search of ``queries`` among ``database`` against ``truth``, their
    exact cosine neighbours (:func:`_cosine_neighbours`)."""
    index = MultiBitIndex(model.out_dim, model.bits_per_dim)
    index.add(model.encode(database))
    return recall_at(k, index.search(model.encode(queries), k)[1], truth)


# recall_at is re-exported: it was defined here before pylocalize.index.metrics
__all__ = ["BinarizerOptions", "RecurrentBinarizer", "fit_binarizer", "recall_at"]
