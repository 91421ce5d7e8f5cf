"""Learned recurrent binarization (BEBR, Gan et al., KDD 2023), torch extra.

:class:`RecurrentBinarizer` maps float embeddings to multi-bit codes in the layout
:class:`pylocalize.MultiBitIndex` searches by symmetric distance calculation:

- plane 0: ``b_0 = sign(E_0(x))``;
- plane ``i >= 1``: reconstruct the input from the planes so far with an MLP,
  ``r_i = D_i(sum_{j<i} 2^-j b_j)``, and binarize what is left, ``b_i = sign(E_i(x - r_i))``;
- the code embedding is ``z = sum_i 2^-i b_i`` (the index's reconstruction).

Signs pass gradients straight through. Training is task-agnostic, embedding to
embedding: an InfoNCE loss makes each code embedding closest (cosine) to its own original
embedding among the batch (the rest of the batch are the negatives, the hardest of them
weighted most by the softmax). When ``out_dim`` is smaller than ``in_dim`` the originals
are compared through their top ``out_dim`` principal components.
"""

from __future__ import annotations

import numpy as np

from pylocalize.codes import pack_bits


def _torch():
    try:
        import torch
    except ImportError as error:
        raise ImportError("learned codes need torch: pip install 'pylocalize[torch]' (install torch==2.13.0 first "
                          "on CPU-only machines)") from error
    return torch


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
            for encoder in self.encoders[1:]:  # corrections start at zero
                for layer in (encoder.linear, encoder.mlp[2]):
                    nn.init.zeros_(layer.weight)
                    nn.init.zeros_(layer.bias)

        def planes(self, x):
            # tanh before the sign keeps the straight-through gradient bounded
            u = self.encoders[0](x)
            b = [SignSTE.apply(torch.tanh(u))]
            partial = b[0]
            scaled = u / (u.abs().mean(1, keepdim=True) + 1e-12)
            for i in range(1, bits_per_dim):
                # the residual of the projection left by the planes so far (the training-free
                # recurrence, on a learned projection), corrected by an MLP of the input's
                # residual after reconstructing it from those planes; the correction starts at 0
                correction = self.encoders[i](x - self.decoders[i - 1](partial))
                b.append(SignSTE.apply(torch.tanh(scaled - partial + correction)))
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

    def fit(self, x: np.ndarray, epochs: int = 30, batch_size: int = 512, lr: float = 2e-3, temperature: float = 0.05,
            validation: float = 0.1, patience: int = 5, seed: int = 0, progress: bool = False) -> "RecurrentBinarizer":
        """Trains on float embeddings ``x (n, in_dim)``; stops early when the held-out loss
        has not improved for ``patience`` epochs, keeping the best weights."""
        import copy

        from tqdm import tqdm

        torch = _torch()
        x = self._check(x)
        if len(x) < 2 * batch_size // 4:
            raise ValueError(f"{len(x)} embeddings are too few to train on with batch_size={batch_size}")
        rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        self.mean = x.mean(0)
        if self.out_dim < self.in_dim:
            _, _, vt = np.linalg.svd(x[rng.choice(len(x), min(len(x), 50_000), replace=False)] - self.mean,
                                     full_matrices=False)
            self.key_projection = np.ascontiguousarray(vt[: self.out_dim].T, dtype=np.float32)
        order = rng.permutation(len(x))
        n_val = max(batch_size // 4, int(validation * len(x)))
        val, train = x[order[:n_val]], x[order[n_val:]]
        optimizer = torch.optim.AdamW(self.net.parameters(), lr=lr, weight_decay=1e-4)
        proj = torch.from_numpy(self.key_projection)
        mean = torch.from_numpy(self.mean)

        def loss_of(batch):
            xb = torch.from_numpy(batch) - mean
            _, z = self.net.planes(xb)
            z = torch.nn.functional.normalize(z, dim=1)
            keys = torch.nn.functional.normalize(xb @ proj, dim=1)
            logits = z @ keys.T / temperature
            return torch.nn.functional.cross_entropy(logits, torch.arange(len(batch)))

        best, best_state, stale = np.inf, copy.deepcopy(self.net.state_dict()), 0
        bar = tqdm(range(epochs), desc="binarizer", disable=not progress, leave=False)
        for _ in bar:
            self.net.train()
            perm = rng.permutation(len(train))
            for s in range(0, len(train) - batch_size + 1, batch_size):
                optimizer.zero_grad()
                loss = loss_of(train[perm[s:s + batch_size]])
                loss.backward()
                optimizer.step()
            self.net.eval()
            with torch.no_grad():
                val_loss = float(np.mean([loss_of(val[s:s + batch_size]).item()
                                          for s in range(0, max(1, len(val) - batch_size // 4), batch_size)]))
            self.history.append(val_loss)
            bar.set_postfix(val_loss=f"{val_loss:.3f}")
            if val_loss < best - 1e-4:
                best, best_state, stale = val_loss, copy.deepcopy(self.net.state_dict()), 0
            else:
                stale += 1
                if stale >= patience:
                    break
        self.net.load_state_dict(best_state)
        return self

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
        """Weights and settings in one file, loadable with ``torch.load(weights_only=True)``."""
        torch = _torch()
        torch.save({"format": "pylocalize.RecurrentBinarizer", "version": 1,
                    "dims": [self.in_dim, self.out_dim, self.bits_per_dim, self.hidden],
                    "mean": torch.from_numpy(self.mean), "key_projection": torch.from_numpy(self.key_projection),
                    "state": self.net.state_dict()}, str(path))

    @classmethod
    def load(cls, path) -> "RecurrentBinarizer":
        torch = _torch()
        try:
            data = torch.load(str(path), weights_only=True)
        except Exception as error:  # a corrupt or foreign file must be refused, never trusted
            raise ValueError(f"{path}: not a saved RecurrentBinarizer ({error})") from None
        if not isinstance(data, dict) or data.get("format") != "pylocalize.RecurrentBinarizer":
            raise ValueError(f"{path}: not a saved RecurrentBinarizer")
        if data.get("version") != 1:
            raise ValueError(f"{path}: binarizer format version {data.get('version')}; this pylocalize reads 1")
        in_dim, out_dim, bits, hidden = (int(v) for v in data["dims"])
        model = cls(in_dim, out_dim, bits, hidden)
        model.net.load_state_dict(data["state"])
        model.mean = data["mean"].numpy().astype(np.float32)
        model.key_projection = data["key_projection"].numpy().astype(np.float32)
        return model


def recall_at(k: int, found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true ``k`` nearest neighbours found among ``found[:, :k]``."""
    hits = [len(set(f[:k].tolist()) & set(t[:k].tolist())) for f, t in zip(found, truth)]
    return float(np.mean(hits)) / k


__all__ = ["RecurrentBinarizer", "recall_at"]
