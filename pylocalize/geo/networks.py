"""The networks of the geo-localization heads, :mod:`pylocalize.geo.model` (torch extra).

Imported only once torch is there: :mod:`pylocalize.geo.model` imports this module when a
model is made, so that importing it needs no torch. Parameter and buffer names are those of
saved checkpoints; renaming one breaks every saved model.
"""

from __future__ import annotations

import numpy as np

from pylocalize.checkpoints import import_torch

torch = import_torch("pylocalize.geo.model")
nn = torch.nn


def ffn(d, mult, dropout):
    """Pre-norm feed-forward block: LayerNorm, a ``mult`` times wider GELU layer, dropout."""
    return nn.Sequential(nn.LayerNorm(d), nn.Linear(d, mult * d), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(mult * d, d), nn.Dropout(dropout))


class DecoderLayer(nn.Module):
    """Queries read the image tokens (cross-attention), talk to each other, then an FFN."""

    def __init__(self, d, heads, mult, dropout):
        super().__init__()
        self.norm_cross, self.norm_mem = nn.LayerNorm(d), nn.LayerNorm(d)
        # dropout only in the FFNs: attention over a handful of queries gains little from it
        self.cross = nn.MultiheadAttention(d, heads, batch_first=True)
        self.norm_self = nn.LayerNorm(d)
        self.self_attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ffn = ffn(d, mult, dropout)

    def forward(self, q, mem):
        mem = self.norm_mem(mem)
        h = self.norm_cross(q)
        q = q + self.cross(h, mem, mem, need_weights=False)[0]
        h = self.norm_self(q)
        q = q + self.self_attn(h, h, h, need_weights=False)[0]
        return q + self.ffn(q)


class HierarchyLayer(nn.Module):
    """Self-attention within each hierarchy's queries, then that hierarchy's own FFN."""

    def __init__(self, d, heads, mult, dropout, num_hierarchies):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.self_attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ffns = nn.ModuleList([ffn(d, mult, dropout) for _ in range(num_hierarchies)])

    def forward(self, q):  # (B, H, S, d)
        b, nh, ns, d = q.shape
        flat = q.reshape(b * nh, ns, d)
        h = self.norm(flat)
        q = (flat + self.self_attn(h, h, h, need_weights=False)[0]).reshape(b, nh, ns, d)
        return torch.stack([q[:, i] + f(q[:, i]) for i, f in enumerate(self.ffns)], 1)


class GeoDecoderNet(nn.Module):
    """Queries per (hierarchy, scene), decoder layers, a classifier per hierarchy and the scene head."""

    def __init__(self, token_dim, num_cells, num_scenes, d, heads, independent, dependent, mult, dropout):
        super().__init__()
        self.num_cells, self.num_scenes = list(num_cells), num_scenes
        nh = len(num_cells)
        self.embed = nn.Sequential(nn.Linear(token_dim, d), nn.LayerNorm(d))
        self.queries = nn.Parameter(0.02 * torch.randn(nh * num_scenes, d))
        self.independent = nn.ModuleList([DecoderLayer(d, heads, mult, dropout) for _ in range(independent)])
        self.dependent = nn.ModuleList([HierarchyLayer(d, heads, mult, dropout, nh) for _ in range(dependent)])
        self.norm = nn.LayerNorm(d)
        self.classifiers = nn.ModuleList([nn.Linear(d, c) for c in num_cells])
        self.scene_head = nn.Linear(d, 1)

    def forward(self, tokens):
        """Per hierarchy logits (B, S, C_h) and scene logits (B, S)."""
        mem = self.embed(tokens)
        b = len(tokens)
        q = self.queries.unsqueeze(0).expand(b, -1, -1)
        for layer in self.independent:
            q = layer(q, mem)
        q = q.reshape(b, len(self.num_cells), self.num_scenes, -1)
        for layer in self.dependent:
            q = layer(q)
        q = self.norm(q)
        logits = [cls(q[:, i]) for i, cls in enumerate(self.classifiers)]
        scene_logits = self.scene_head(q).squeeze(-1).mean(1)
        return logits, scene_logits


class FlatNet(nn.Module):
    """One query, the same decoder layers, one classifier over the finest cells."""

    def __init__(self, token_dim, num_classes, d, heads, layers, mult, dropout):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(token_dim, d), nn.LayerNorm(d))
        self.query = nn.Parameter(0.02 * torch.randn(1, d))
        self.layers = nn.ModuleList([DecoderLayer(d, heads, mult, dropout) for _ in range(layers)])
        self.norm = nn.LayerNorm(d)
        self.classifier = nn.Linear(d, num_classes)

    def forward(self, tokens):
        mem = self.embed(tokens)
        q = self.query.unsqueeze(0).expand(len(tokens), -1, -1)
        for layer in self.layers:
            q = layer(q, mem)
        return self.classifier(self.norm(q[:, 0]))


class GPSNet(nn.Module):
    """Random Fourier features of Equal Earth coordinates at several scales, an MLP per scale, summed."""

    def __init__(self, dim, sigmas, num_features, hidden, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        # fixed random frequencies: a buffer, saved with the weights, never trained
        self.register_buffer("frequencies", torch.stack([s * torch.randn(2, num_features // 2, generator=g)
                                                         for s in sigmas]))
        self.branches = nn.ModuleList([
            nn.Sequential(nn.Linear(num_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                          nn.Linear(hidden, dim)) for _ in sigmas])

    def forward(self, xy):  # (B, 2) normalised Equal Earth coordinates
        out = 0
        for f, branch in zip(self.frequencies, self.branches):
            v = 2 * np.pi * xy @ f
            out = out + branch(torch.cat([torch.cos(v), torch.sin(v)], -1))
        return out


__all__ = ["DecoderLayer", "FlatNet", "GPSNet", "GeoDecoderNet", "HierarchyLayer", "ffn"]
