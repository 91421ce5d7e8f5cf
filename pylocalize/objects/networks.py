"""The network of the per-object learned descriptor, :mod:`pylocalize.objects.learned` (torch extra).

Imported only once torch is there: :mod:`pylocalize.objects.learned` imports this module
when a descriptor is built, so that importing the object pipeline needs no torch. Parameter
names are those of saved descriptors; renaming one breaks every saved descriptor.
"""

from __future__ import annotations

from pylocalize.checkpoints import import_torch

torch = import_torch("the learned object descriptor")
nn = torch.nn


class DescriptorNet(nn.Module):
    """Pixels to ``dim`` L2-normalised descriptor channels on a 4-px grid.

    Three stride-2 convolutions reach 1/8 resolution; three more (dilation 1, 2, 4) give a
    receptive field of about 200 px, so that a patch sees where on the object it lies; the
    context, upsampled to 1/4, is fused with the 1/4 features by two 1x1 layers (a 3x3
    fusion at 1/4 resolution would cost more than the rest of the network).
    """

    def __init__(self, dim: int = 48, width: int = 32):
        super().__init__()
        w = width
        self.down = nn.Sequential(nn.Conv2d(3, w, 3, 2, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(w, w, 3, 2, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(w, 3 * w // 2, 3, 1, 1), nn.ReLU(inplace=True))
        self.context = nn.Sequential(nn.Conv2d(3 * w // 2, 2 * w, 3, 2, 1), nn.ReLU(inplace=True),
                                     nn.Conv2d(2 * w, 2 * w, 3, 1, 1), nn.ReLU(inplace=True),
                                     nn.Conv2d(2 * w, 2 * w, 3, 1, 2, dilation=2), nn.ReLU(inplace=True),
                                     nn.Conv2d(2 * w, 2 * w, 3, 1, 4, dilation=4), nn.ReLU(inplace=True))
        self.fuse = nn.Sequential(nn.Conv2d(3 * w // 2 + 2 * w, 2 * w, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(2 * w, dim, 1))

    def forward(self, x):
        fine = self.down(x)
        coarse = nn.functional.interpolate(self.context(fine), size=fine.shape[-2:], mode="bilinear",
                                           align_corners=False)
        return nn.functional.normalize(self.fuse(torch.cat([fine, coarse], 1)), dim=1)
