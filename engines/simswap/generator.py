"""SimSwap's generator (`Generator_Adain_Upsample`, n_blocks=9, deep=False), our implementation.

Why this layout: an official `latest_net_G.pth` (224, "people") or `550000_net_G.pth`
(512_beta) is a plain state_dict, so module names and the order of layers inside each
`nn.Sequential` must match it key for key to load with `strict=True`. The contract is
`../shared/golden/simswap_generator_manifest.json`; tests check keys, shapes and outputs.

Shape of the network (224 / 512):
  reflect-pad 3 → conv 7×7 → BN → ReLU                          (64 / 32 channels)
  stride-2 conv 3×3 → BN → ReLU, doubling channels up to 512      (3 / 4 times)
  9 residual blocks at 512: [reflect-pad 1 → conv 3×3 → instance norm → AdaIN-style
      modulation by the identity latent (linear 512 → 2×512: scale+1, shift)] → ReLU → again, + skip
  bilinear ×2 → conv 3×3 → BN → ReLU, halving channels            (3 / 4 times)
  reflect-pad 3 → conv 7×7 → tanh, mapped to [0, 1]
The input is an RGB crop in [0, 1] (NCHW) and an L2-normalized 512-d ArcFace latent; no
normalization happens inside (the official code normalizes outside, for the ArcFace branch only).
"""

from __future__ import annotations

import torch
from torch import nn

# variant -> (stem channels, number of stride-2 stages). Both end at 512 channels.
GENERATOR_VARIANTS = {"224": (64, 3), "512": (32, 4)}
LATENT_SIZE = 512
BOTTLENECK_BLOCKS = 9


class InstanceNorm(nn.Module):
    """Parameter-free instance norm with eps inside the rsqrt, as the official one (not nn.InstanceNorm2d's).

    The statistics are computed in float32 whatever the model's dtype: in float16, `x * x`
    overflows once |x| > 256 (the bottleneck's activations get there) and eps 1e-8 rounds to
    0, so a flat channel gives 0 · inf = NaN. In float32 this is the official arithmetic, op for op.
    """

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.float()
        y = y - y.mean(dim=(2, 3), keepdim=True)
        return (y * torch.rsqrt((y * y).mean(dim=(2, 3), keepdim=True) + self.eps)).to(x.dtype)


class StyleModulation(nn.Module):
    """Per-channel scale (1 + s) and shift (t) computed from the identity latent."""

    def __init__(self, latent_size: int, channels: int):
        super().__init__()
        self.linear = nn.Linear(latent_size, channels * 2)  # key: styleN.linear

    def forward(self, x: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        style = self.linear(latent).view(-1, 2, x.shape[1], 1, 1)
        return x * (style[:, 0] + 1.0) + style[:, 1]


class IdentityResBlock(nn.Module):
    def __init__(self, dim: int, latent_size: int):
        super().__init__()
        # Sequential indices are part of the checkpoint keys: conv1.1.weight, conv2.1.weight.
        self.conv1 = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), InstanceNorm())
        self.style1 = StyleModulation(latent_size, dim)
        self.act1 = nn.ReLU(True)
        self.conv2 = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), InstanceNorm())
        self.style2 = StyleModulation(latent_size, dim)

    def forward(self, x: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.style1(self.conv1(x), latent))
        return x + self.style2(self.conv2(y), latent)


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout), nn.ReLU(True))


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        nn.Conv2d(cin, cout, 3, stride=1, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(True),
    )


class SimSwapGenerator(nn.Module):
    """`forward(image, latent) -> image`: (N,3,S,S) in [0,1] and (N,512) → (N,3,S,S) in [0,1]."""

    def __init__(self, variant: str = "224"):
        super().__init__()
        if variant not in GENERATOR_VARIANTS:
            raise ValueError(f"unknown SimSwap generator variant {variant!r}; valid: {', '.join(GENERATOR_VARIANTS)}")
        self.variant = variant
        stem, stages = GENERATOR_VARIANTS[variant]
        self.first_layer = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(3, stem, 7), nn.BatchNorm2d(stem), nn.ReLU(True))
        # Official names: down1..down3 for 224; the 512 model adds down0 in front.
        first_index = 4 - stages
        self._down_names, self._up_names = [], []
        ch = stem
        for i in range(first_index, 4):
            name = f"down{i}"
            self.add_module(name, _down(ch, ch * 2))
            self._down_names.append(name)
            ch *= 2
        assert ch == 512, ch
        self.BottleNeck = nn.Sequential(*[IdentityResBlock(512, LATENT_SIZE) for _ in range(BOTTLENECK_BLOCKS)])
        for i in range(3, first_index - 1, -1):
            name = f"up{i}"
            self.add_module(name, _up(ch, ch // 2))
            self._up_names.append(name)
            ch //= 2
        self.last_layer = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(ch, 3, 7), nn.Tanh())

    def forward(self, image: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        x = self.first_layer(image)
        for name in self._down_names:
            x = getattr(self, name)(x)
        for block in self.BottleNeck:
            x = block(x, latent)
        for name in self._up_names:
            x = getattr(self, name)(x)
        return (self.last_layer(x) + 1.0) / 2.0
