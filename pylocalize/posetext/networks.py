"""The networks of :class:`pylocalize.posetext.model.PoseTextModel` (torch extra).

Imported only once torch is there: :mod:`pylocalize.posetext.model` imports this module when
a model is made, so that the numpy parts of :mod:`pylocalize.posetext` import without torch.
Parameter and buffer names are those of saved checkpoints; renaming one breaks every saved
model.
"""

from __future__ import annotations

import numpy as np

from pylocalize.checkpoints import import_torch
from pylocalize.posetext.skeleton import NUM_JOINTS

torch = import_torch("the pose/text model")
nn = torch.nn


class PoseEncoder(nn.Module):
    """An MLP on the standardised body-frame joints, into the unit sphere of the joint space."""

    def __init__(self, embed_dim: int, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(NUM_JOINTS * 3, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.GELU(),
            nn.Linear(hidden, embed_dim))

        # inputs are standardised with statistics of the training poses (set by fit): every
        # pose shares the body's layout, and only the departures from it tell poses apart
        self.register_buffer("mean", torch.zeros(NUM_JOINTS * 3))
        self.register_buffer("std", torch.ones(NUM_JOINTS * 3))

    def forward(self, joints):
        return nn.functional.normalize(self.net((joints.flatten(1) - self.mean) / self.std), dim=-1)


class TextHead(nn.Module):
    """Deep-sets pooling of frozen clause embeddings: a per-clause MLP, the mean over the
    caption's clauses, an MLP."""

    def __init__(self, embed_dim: int, hidden: int, text_dim: int, dropout: float):
        super().__init__()
        self.clause = nn.Sequential(nn.Linear(text_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        # batch normalisation of the pooled clauses: captions share most of their clauses, so
        # their means differ little; normalising across the batch brings the differences out
        self.out = nn.Sequential(nn.BatchNorm1d(hidden), nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, embed_dim))
        # frozen MiniLM embeddings share a large common part; standardised (by fit) they differ in O(1)
        self.register_buffer("mean", torch.zeros(text_dim))
        self.register_buffer("std", torch.ones(text_dim))

    def forward(self, table, ids):
        # the clause MLP runs once per distinct clause of the batch; the mean over each
        # caption's clauses is then one matrix product (gathering rows is far slower to
        # back-propagate through on a CPU)
        valid = ids >= 0
        used, inverse = torch.unique(ids[valid], return_inverse=True)
        h = self.clause((table[used] - self.mean) / self.std)
        weights = torch.zeros(len(ids), len(used), dtype=h.dtype)
        rows = torch.nonzero(valid)[:, 0]
        weights.index_put_((rows, inverse), torch.ones(len(rows), dtype=h.dtype), accumulate=True)
        weights = weights / weights.sum(1, keepdim=True).clamp(min=1.0)
        return nn.functional.normalize(self.out(weights @ h), dim=-1)


class PoseTextNet(nn.Module):
    """The pose encoder, the text head and the BBC temperature."""

    def __init__(self, embed_dim: int, hidden: int, text_dim: int, dropout: float):
        super().__init__()
        self.pose = PoseEncoder(embed_dim, hidden, dropout)
        self.text = TextHead(embed_dim, hidden, text_dim, dropout)
        # BBC temperature, learned as a log scale, starting at a scale of 10
        self.log_scale = nn.Parameter(torch.tensor(float(np.log(10.0))))


__all__ = ["PoseEncoder", "PoseTextNet", "TextHead"]
