"""The network of :class:`pylocalize.codes.learned.RecurrentBinarizer` (torch extra).

Imported only once torch is there: :mod:`pylocalize.codes.learned` imports this module when
a binarizer is made, so that importing the codes needs no torch. Parameter and buffer names
are those of saved checkpoints; renaming one breaks every saved binarizer.
"""

from __future__ import annotations

from pylocalize.checkpoints import import_torch

torch = import_torch("learned codes")
nn = torch.nn


class ResidualMLP(nn.Module):
    """Linear map plus a residual MLP correction."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))

    def forward(self, x):
        return self.linear(x) + self.mlp(x)


class SignSTE(torch.autograd.Function):
    """``sign(x)`` (``+1`` at zero) whose gradient passes straight through."""

    @staticmethod
    def forward(ctx, x):
        return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))

    @staticmethod
    def backward(ctx, grad):
        return grad  # straight-through


class RecurrentBinarizerNet(nn.Module):
    """Encoders per bit plane and decoders of the planes so far (see :mod:`pylocalize.codes.learned`)."""

    def __init__(self, in_dim: int, out_dim: int, bits_per_dim: int, hidden: int):
        super().__init__()
        self.bits_per_dim = bits_per_dim
        self.encoders = nn.ModuleList([ResidualMLP(in_dim, out_dim, hidden) for _ in range(bits_per_dim)])
        self.decoders = nn.ModuleList([ResidualMLP(out_dim, in_dim, hidden) for _ in range(bits_per_dim - 1)])
        # where plane i >= 1 splits, in units of the vector's mean |projection|; chosen on
        # held-out recall in fit (the training-free code uses 1)
        self.register_buffer("threshold", torch.ones(()))
        for encoder in self.encoders[1:]:  # corrections start at zero
            for layer in (encoder.linear, encoder.mlp[2]):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def planes(self, x, logits=None):
        """The signs of every plane (``+-1``) and the code embedding ``sum_i 2^-i b_i``.

        tanh before the sign keeps the straight-through gradient bounded; ``logits``, a
        list, receives each plane's pre-sign activations."""
        u = self.encoders[0](x)
        b = [SignSTE.apply(torch.tanh(u))]
        partial = b[0]
        scaled = u / (u.abs().mean(1, keepdim=True) + 1e-12)
        if logits is not None:
            logits.append(scaled)
        for i in range(1, self.bits_per_dim):
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


__all__ = ["RecurrentBinarizerNet", "ResidualMLP", "SignSTE"]
