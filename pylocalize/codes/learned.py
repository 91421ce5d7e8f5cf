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

import numpy as np

from pylocalize.checkpoints import import_torch, load_model, save_checkpoint
from pylocalize.codes import pack_bits


def _torch():
    return import_torch("learned codes")


def _build(in_dim: int, out_dim: int, bits_per_dim: int, hidden: int):
    torch = _torch()
    nn = torch.nn

    class ResidualMLP(nn.Module):
        """Linear map plus a residual MLP correction."""

        def __init__(self, a, b):
            super().__init__()
            self.linear = nn.Linear(a, b)
            self.mlp = nn.Sequential(nn.Linear(a, hidden), nn.GELU(), nn.Linear(hidden, b))

        def forward(self, x):
            return self.linear(x) + self.mlp(x)

    class SignSTE(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))

        @staticmethod
        def backward(ctx, grad):
            return grad  # straight-through

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoders = nn.ModuleList([ResidualMLP(in_dim, out_dim) for _ in range(bits_per_dim)])
            self.decoders = nn.ModuleList([ResidualMLP(out_dim, in_dim) for _ in range(bits_per_dim - 1)])
            # where plane i >= 1 splits, in units of the vector's mean |projection|; chosen on
            # held-out recall in fit (the training-free code uses 1)
            self.register_buffer("threshold", torch.ones(()))
            for encoder in self.encoders[1:]:  # corrections start at zero
                for layer in (encoder.linear, encoder.mlp[2]):
                    nn.init.zeros_(layer.weight)
                    nn.init.zeros_(layer.bias)

        def planes(self, x, logits=None):
            # tanh before the sign keeps the straight-through gradient bounded;
            # `logits`, a list, receives each plane's pre-sign activations
            u = self.encoders[0](x)
            b = [SignSTE.apply(torch.tanh(u))]
            partial = b[0]
            scaled = u / (u.abs().mean(1, keepdim=True) + 1e-12)
            if logits is not None:
                logits.append(scaled)
            for i in range(1, bits_per_dim):
                # the residual of the projection left by the planes so far (the training-free
                # recurrence, on a learned projection), corrected by an MLP of the input's
                # residual after reconstructing it from those planes; the correction starts at 0
                correction = self.encoders[i](x - self.decoders[i - 1](partial))
                a = scaled / self.threshold - partial + correction
                if logits is not None:
                    logits.append(a)
                b.append(SignSTE.apply(torch.tanh(a)))
                partial = partial + 2.0 ** -i * b[i]
            return b, partial

    return Net()


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
        self.in_dim, self.out_dim, self.bits_per_dim, self.hidden = int(in_dim), int(out_dim), int(bits_per_dim), int(hidden)
        torch.manual_seed(seed)
        self.net = _build(self.in_dim, self.out_dim, self.bits_per_dim, self.hidden)
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

    def fit(self, x: np.ndarray, epochs: int = 30, batch_size: int = 512, lr: float | None = None,
            temperature: float | None = None, validation: float = 0.1, patience: int = 5, seed: int = 0,
            progress: bool = False, compatible_with: "RecurrentBinarizer | None" = None,
            old_x: "np.ndarray | None" = None, compatibility_weight: float = 20.0, init: str = "itq",
            objective: str = "neighbours", teacher_temperature: float = 0.01,
            neighbours: int = 20, per_anchor: int = 7) -> "RecurrentBinarizer":
        """Trains on float embeddings ``x (n, in_dim)``; stops early when the held-out score
        has not improved for ``patience`` epochs, keeping the best weights.

        Objectives (both embedding to embedding, contrastive over the batch):

        - ``"neighbours"`` (default): listwise distillation of the float neighbourhoods. Each
          batch holds ``batch_size // (per_anchor + 1)`` anchors and ``per_anchor`` of each
          anchor's ``neighbours`` nearest embeddings (cosine, mined in a sample of at most
          50,000 training rows), the hard negatives that decide recall. For every row, the
          softmax of the code embeddings' cosines to the rest of the batch (``temperature``,
          default 0.02) is fitted to the softmax of the float cosines (``teacher_temperature``,
          sharp, so the target is mostly the few nearest). This ranks the codes as the floats
          are ranked, which is what SDC search needs; default ``lr`` 1e-4, small, because the
          start is already a good code. On MiniLM embeddings at 128 x 3 bits it adds 1.8
          points of held-out recall@10 to the linear start; on other layouts (192 x 4 on
          MiniLM, 32 x 4 on RootSIFT) it adds nothing and early stopping keeps the start.
          The reconstruction objective lost recall from every start tried.
        - ``"reconstruction"``: InfoNCE between each code embedding and its own original
          embedding among the batch (``temperature`` default 0.05, ``lr`` 2e-3), the
          reconstruction loss of the BEBR paper.

        Before training, the centring (the code is of ``x - centring * mean``, ``centring``
        in 0..1, see ``_pick_centring_and_split``) and, with more than one plane, the split
        point of the further planes (``threshold``, in units of each vector's mean absolute
        projection; 1 is the training-free rule) are picked, the split from 1.0-1.4, by
        held-out recall: for Gaussian-like coordinates a 4-level quantiser wants its outer
        split near 1.2 mean absolute values.

        ``init="itq"`` (default) starts the first plane's projection at the ITQ rotation
        (Gong and Lazebnik, CVPR 2011: the rotation of the centred, PCA-reduced data that
        minimises the quantisation error of its signs), with every correction at zero, so
        training starts from the training-free residual code of rotated data. Rotation
        spreads variance evenly over the bits; on RootSIFT it alone lifts 2-bit recall@10
        by about 5 points over codes of the raw coordinates. ``"random"`` keeps PyTorch's
        initialisation. The held-out score is recall@10 of SDC search of (up to 2,000)
        held-out vectors among (up to 20,000) training rows against their exact cosine
        neighbours (the task itself; the InfoNCE loss
        can fall while recall does), so training keeps the initial state unless it beats
        it. With ``compatible_with`` the held-out score is the training loss.

        Backward-compatible training: with ``compatible_with`` (an old, frozen binarizer of
        the same shape), a compatibility term makes the new codes those of the old model
        for the same items: an InfoNCE term between new code embeddings and old ones (each
        closest to its own item's old code among the batch) plus a logistic loss on every
        bit's pre-sign activation against the old bit (a smooth signal where the
        straight-through signs learn slowly). Queries encoded by this model then search an
        index built with the old one's codes, with no re-encoding of the database.
        ``compatibility_weight`` weighs it against the usual term; it must dominate (the
        default 20 kept 88-97 % of the old model's own recall on a rotated embedding in the tests, 1 kept 70 %)
        because the usual term pulls the codes toward the new embeddings' own basis. When the
        embedding model changed too, pass ``old_x``: the old model's embeddings of the same
        items, row for row with ``x`` (the old binarizer reads those; default ``x``).
        """
        import copy

        from tqdm import tqdm

        torch = _torch()
        x = self._check(x)
        old = compatible_with
        if old is not None:
            if not isinstance(old, RecurrentBinarizer):
                raise ValueError("compatible_with must be a RecurrentBinarizer (the model whose codes the index holds)")
            if (old.in_dim, old.out_dim, old.bits_per_dim) != (self.in_dim, self.out_dim, self.bits_per_dim):
                raise ValueError(f"compatible_with maps {old.in_dim} -> {old.out_dim} x {old.bits_per_dim} bits, this "
                                 f"model {self.in_dim} -> {self.out_dim} x {self.bits_per_dim}: codes must share a layout")
            if not compatibility_weight > 0:
                raise ValueError(f"compatibility_weight must be > 0, got {compatibility_weight}")
            old.net.eval()
            # the same embeddings: the new model starts as the old one (its codes, exactly)
            warm = old_x is None and old.hidden == self.hidden
            old_x = x if old_x is None else old._check(old_x)
            if len(old_x) != len(x):
                raise ValueError(f"old_x must pair row for row with x: {len(old_x)} rows for {len(x)}")
        if len(x) < 2 * batch_size // 4:
            raise ValueError(f"{len(x)} embeddings are too few to train on with batch_size={batch_size}")
        # the held-out split has its own stream, so fits of other layouts hold out the same rows
        split_rng, rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
        torch.manual_seed(seed)
        self.mean = x.mean(0)
        if self.out_dim < self.in_dim:
            _, _, vt = np.linalg.svd(x[rng.choice(len(x), min(len(x), 50_000), replace=False)] - self.mean,
                                     full_matrices=False)
            self.key_projection = np.ascontiguousarray(vt[: self.out_dim].T, dtype=np.float32)
        if init not in ("itq", "random"):
            raise ValueError(f"init must be 'itq' or 'random', got {init!r}")
        if objective not in ("neighbours", "reconstruction"):
            raise ValueError(f"objective must be 'neighbours' or 'reconstruction', got {objective!r}")
        if objective == "neighbours" and not 1 <= per_anchor <= neighbours:
            raise ValueError(f"per_anchor must be in 1..neighbours ({neighbours}), got {per_anchor}")
        if not teacher_temperature > 0 or (temperature is not None and not temperature > 0):
            raise ValueError("temperatures must be > 0")
        if lr is None:
            lr = 1e-4 if objective == "neighbours" else 2e-3
        if temperature is None:
            temperature = 0.02 if objective == "neighbours" else 0.05
        if old is not None and warm:
            self.net.load_state_dict(old.net.state_dict())
            self.mean, self.key_projection = old.mean.copy(), old.key_projection.copy()
            self.centring = old.centring
        elif init == "itq":
            self._init_itq(x[rng.choice(len(x), min(len(x), 50_000), replace=False)] - self.mean, seed)
        order = split_rng.permutation(len(x))
        n_val = max(batch_size // 4, int(validation * len(x)))
        # rows are positions into x (and old_x): the compatibility term needs the pairs
        val, train = order[:n_val], order[n_val:]
        if objective == "neighbours":
            # anchors and their float neighbours come from one sample of the training rows
            pool = train[:50_000]
            if len(pool) <= neighbours:
                raise ValueError(f"{len(pool)} training embeddings are too few for neighbours={neighbours}")
            near = _cosine_neighbours(x[pool], neighbours)
            anchors_per_batch = max(1, batch_size // (per_anchor + 1))
        optimizer = torch.optim.AdamW(self.net.parameters(), lr=lr, weight_decay=1e-4)
        proj = torch.from_numpy(self.key_projection)
        mean = torch.from_numpy(self.mean)

        functional = torch.nn.functional

        def loss_of(rows):
            batch = x[rows]
            xb = torch.from_numpy(batch) - mean
            logits = []
            _, z = self.net.planes(xb, logits if old is not None else None)
            z = functional.normalize(z, dim=1)
            target = torch.arange(len(batch))
            if objective == "neighbours":
                # each row's distribution over the rest of the batch, codes against floats
                self_pair = torch.eye(len(batch), dtype=torch.bool)
                floats = torch.from_numpy(_unit(batch))
                teacher = functional.softmax((floats @ floats.T / teacher_temperature).masked_fill(self_pair, -1e9), 1)
                student = functional.log_softmax((z @ z.T / temperature).masked_fill(self_pair, -1e9), 1)
                loss = -(teacher * student).sum(1).mean()
            else:
                keys = functional.normalize(xb @ proj, dim=1)
                loss = functional.cross_entropy(z @ keys.T / temperature, target)
            if old is not None:
                # every bit of every plane should agree with the old model's bit: a logistic
                # loss on the pre-sign activations, a smooth signal where matching the
                # discrete codes through the straight-through signs learns slowly
                with torch.no_grad():
                    old_bits, _ = old.net.planes(torch.from_numpy(old_x[rows]) - torch.from_numpy(old.mean))
                agree = sum(torch.nn.functional.soft_margin_loss(a, o) for a, o in zip(logits, old_bits))
                z_old = torch.nn.functional.normalize(sum(2.0 ** -i * o for i, o in enumerate(old_bits)), dim=1)
                cross = torch.nn.functional.cross_entropy(z @ z_old.T / temperature, target)
                loss = loss + compatibility_weight * (cross + agree / self.bits_per_dim)
            return loss

        def batches():
            if objective == "reconstruction":
                perm = rng.permutation(len(train))
                for s in range(0, len(train) - batch_size + 1, batch_size):
                    yield train[perm[s:s + batch_size]]
                return
            perm = rng.permutation(len(pool))
            for s in range(0, len(pool) - anchors_per_batch + 1, anchors_per_batch):
                a = perm[s:s + anchors_per_batch]
                picked = np.stack([rng.choice(neighbours, per_anchor, replace=False) for _ in a])
                yield pool[np.unique(np.concatenate([a, np.take_along_axis(near[a], picked, 1).ravel()]))]

        # held-out vectors as queries against training rows as the database (the search the
        # codes are for), their exact cosine neighbours computed once for every evaluation
        queries, database = x[val[:2000]], x[train[:20_000]]
        truth = _cosine_neighbours(database, 10, queries) if old is None else None

        def held_out_score():
            """Higher is better: SDC recall@10 of held-out queries, or minus the loss."""
            self.net.eval()
            if old is not None:
                with torch.no_grad():
                    return -float(np.mean([loss_of(val[s:s + batch_size]).item()
                                           for s in range(0, max(1, len(val) - batch_size // 4), batch_size)]))
            return _recall(self, queries, database, truth)

        if old is not None:  # the old codes were made with the old split point
            self.net.threshold.fill_(float(old.net.threshold))
        else:
            self._pick_centring_and_split(held_out_score)
        best, best_state, stale = held_out_score(), copy.deepcopy(self.net.state_dict()), 0
        self.history.append(best)
        bar = tqdm(range(epochs), desc="binarizer", disable=not progress, leave=False)
        for _ in bar:
            self.net.train()
            for rows in batches():
                optimizer.zero_grad()
                loss = loss_of(rows)
                loss.backward()
                optimizer.step()
            score = held_out_score()
            self.history.append(score)
            bar.set_postfix(held_out=f"{score:.3f}")
            if score > best + 1e-4:
                best, best_state, stale = score, copy.deepcopy(self.net.state_dict()), 0
            else:
                stale += 1
                if stale >= patience:
                    break
        self.net.load_state_dict(best_state)
        return self

    def _pick_centring_and_split(self, score) -> None:
        """Picks, by the held-out score, how far the codes are centred and where further
        planes split. The code of ``x - alpha * mean`` for ``alpha`` in 0..1 (set through the
        first projection's bias): centring balances the bits, but cosine truth is measured on
        the uncentred embeddings, and subtracting the mean changes their ranking (by each
        item's projection on it). On MiniLM sentence embeddings (mean norm 0.3) the full
        centring costs 2-bit recall@10 about 2 points; on RootSIFT it is needed."""
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
    with ``fit_options`` (a lone layout is fitted once, and ``epochs=0`` keeps the start).
    Embeddings whose variance decays over their principal components want fewer
    dimensions at more bits each: at 768 bits, MiniLM sentence embeddings
    (384-d) reach recall@10 0.90 at 192 x 4 against 0.84 at 384 x 2. ``model.layout_scores``
    keeps every layout's held-out score.
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (n, dim), got shape {x.shape}")
    if "compatible_with" in fit_options:
        raise ValueError("compatible training keeps the old model's layout: use RecurrentBinarizer(...).fit")
    in_dim = x.shape[1]
    layouts = [(code_bits // bits, bits) for bits in range(1, 5)
               if code_bits % bits == 0 and code_bits // bits <= in_dim and (code_bits // bits) % 8 == 0]
    if not layouts:
        raise ValueError(f"code_bits={code_bits} fits no layout of whole bytes per plane for {in_dim}-d embeddings: "
                         f"use a multiple of 8 of at most {4 * in_dim}")
    start = {k: v for k, v in fit_options.items() if k not in ("epochs", "progress")}
    scores = {}
    from tqdm import tqdm

    starts = {}
    for out_dim, bits in tqdm(layouts if len(layouts) > 1 else [], desc="layouts", disable=not progress, leave=False):
        starts[out_dim, bits] = RecurrentBinarizer(in_dim, out_dim, bits, hidden=hidden, seed=seed).fit(
            x, epochs=0, seed=seed, **start)
        scores[out_dim, bits] = starts[out_dim, bits].history[0]
    out_dim, bits = max(scores, key=scores.get) if scores else layouts[0]
    if fit_options.get("epochs") == 0 and (out_dim, bits) in starts:
        model = starts[out_dim, bits]  # the start is the fit: no need to make it again
    else:
        model = RecurrentBinarizer(in_dim, out_dim, bits, hidden=hidden, seed=seed)
        model.fit(x, seed=seed, progress=progress, **fit_options)
        scores.setdefault((out_dim, bits), model.history[0])
    model.layout_scores = scores
    return model


def _unit(v: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12), np.float32)


def _drop_self(rows: np.ndarray, k: int) -> np.ndarray:
    """Each row's first ``k`` ids other than its own position (a set searched against itself)."""
    return np.array([[j for j in row if j != i][:k] for i, row in enumerate(rows)])


def _cosine_neighbours(v: np.ndarray, k: int, queries: "np.ndarray | None" = None) -> np.ndarray:
    """Exact cosine ``k`` nearest neighbours among the rows of ``v``: of each row of
    ``queries``, or, without them, of each row of ``v`` among the others."""
    from pylocalize.index.knn import assign

    unit = _unit(v)  # on unit vectors, L2 order is cosine order
    if queries is not None:
        return assign(_unit(queries), unit, k)[0]
    return _drop_self(assign(unit, unit, k + 1)[0], k)


def _recall(model: "RecurrentBinarizer", queries: np.ndarray, database: np.ndarray, truth: np.ndarray,
            k: int = 10) -> float:
    """Recall@k of SDC search of ``queries`` among ``database`` against ``truth``, their
    exact cosine neighbours (:func:`_cosine_neighbours`)."""
    from pylocalize.index.binary import MultiBitIndex

    index = MultiBitIndex(model.out_dim, model.bits_per_dim)
    index.add(model.encode(database))
    return recall_at(k, index.search(model.encode(queries), k)[1], truth)


def recall_at(k: int, found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true ``k`` nearest neighbours found among ``found[:, :k]``."""
    hits = [len(set(f[:k].tolist()) & set(t[:k].tolist())) for f, t in zip(found, truth)]
    return float(np.mean(hits)) / k


__all__ = ["RecurrentBinarizer", "fit_binarizer", "recall_at"]
