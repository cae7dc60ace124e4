"""The identity network SimSwap conditions on (`arcface_checkpoint.tar`), our implementation.

Architecture (SimSwap's models/arcface_models.py, as loaded by its inference):
`ResNet(IRBlock, [3, 4, 23, 3], use_se=True)` — an "IR-SE" ResNet-101 with PReLU, a 512-d
embedding after BN → dropout → FC → BN1d. Module names match the pickled official model, so
its state_dict loads strictly (`safe_pickle.load_arcface_checkpoint`).

Pre-processing, exactly as SimSwap's inference computes the latent (`latent_from_crops`):
the source face aligned like the generator's input (alignment.py: the 224 pose templates for
the 224 model, the FFHQ 512 template for the 512 model), RGB in [0, 1], normalized with
ImageNet mean/std, downsampled to 112×112 with `F.interpolate`'s default (*nearest*, not
bilinear), through the network, then L2-normalized.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LAYERS = (3, 4, 23, 3)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class SEBlock(nn.Module):
    def __init__(self, channel: int, reduction: int = 16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(channel, channel // reduction), nn.PReLU(),
                                nn.Linear(channel // reduction, channel), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        return x * self.fc(self.avg_pool(x).view(b, c)).view(b, c, 1, 1)


class IRBlock(nn.Module):
    """Pre-BN residual block: BN → conv → BN → PReLU → conv(stride) → BN → SE, + shortcut, PReLU."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, use_se: bool = True):
        super().__init__()
        self.bn0 = nn.BatchNorm2d(inplanes)
        self.conv1 = _conv3x3(inplanes, inplanes)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.prelu = nn.PReLU()
        self.conv2 = _conv3x3(inplanes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride
        self.use_se = use_se
        if use_se:
            self.se = SEBlock(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.prelu(self.bn1(self.conv1(self.bn0(x))))
        out = self.bn2(self.conv2(out))
        if self.use_se:
            out = self.se(out)
        residual = self.downsample(x) if self.downsample is not None else x
        return self.prelu(out + residual)


class ArcFaceResNet(nn.Module):
    def __init__(self, layers: tuple[int, ...] = LAYERS, use_se: bool = True):
        super().__init__()
        self.inplanes = 64
        self.use_se = use_se
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.prelu = nn.PReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.bn2 = nn.BatchNorm2d(512)
        self.dropout = nn.Dropout()
        self.fc = nn.Linear(512 * 7 * 7, 512)
        self.bn3 = nn.BatchNorm1d(512)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=stride, bias=False),
                                       nn.BatchNorm2d(planes))
        layers = [IRBlock(self.inplanes, planes, stride, downsample, use_se=self.use_se)]
        self.inplanes = planes
        layers += [IRBlock(planes, planes, use_se=self.use_se) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.prelu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(self.bn2(x))
        return self.bn3(self.fc(x.flatten(1)))


def latent_from_crops(model: ArcFaceResNet, crops: np.ndarray) -> np.ndarray:
    """(N, S, S, 3) uint8 RGB aligned crops → (N, 512) float32 L2-normalized latents.

    S is the generator's crop: 224 (pose templates) for the 224 model, 512 (FFHQ) for the 512
    model; either way the crop is resized to 112 by nearest, as SimSwap's inference does."""
    # NCHW-contiguous as SimSwap's ToTensor gives it: a channels-last view would pick other conv
    # kernels, whose rounding the deep network grows to ~1e-5 of the latent.
    x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).contiguous().float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = F.interpolate((x - mean) / std, size=(112, 112))  # default mode: nearest, as SimSwap
    with torch.no_grad():
        z = model.eval()(x)
    return F.normalize(z, p=2, dim=1).numpy().astype(np.float32)
