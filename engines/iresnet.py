"""IResNet, the ArcFace backbone of insightface's arcface_torch, in our own code.

The module names follow arcface_torch's `backbones/iresnet.py`, so its `backbone.pth`
(a plain state_dict, e.g. the MS1MV3 ArcFace R50 that PerFace fine-tunes) loads strictly:

    conv1, bn1, prelu                         stem, 3×3 stride 1
    layerK.i.{bn1, conv1, bn2, prelu, conv2, bn3}, layerK.0.downsample.{0, 1}
                                              K = 1..4, each stage halves the size (112 → 7)
    bn2, dropout, fc, features                BN2d → flatten → dropout → Linear(C·7·7, 512) → BN1d

Input: (N, 3, 112, 112) float RGB of a face aligned to insightface's 112 template
(`pipeline.core.alignment.ARCFACE_TEMPLATE_112`), scaled as (x / 255 − 0.5) / 0.5 (`preprocess`).
Output: (N, 512) embeddings, *not* normalized (the embedder normalizes).

    model = iresnet50()
    load_backbone(model, "backbone.pth")        # strict; errors name the keys that differ
    export_onnx(model, "r50.onnx")              # input "input", output "embedding", dynamic batch
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

INPUT_SIZE = 112
EMBEDDING_SIZE = 512
ONNX_INPUT = "input"
ONNX_OUTPUT = "embedding"
# Feature map side after the four stride-2 stages: 112 / 16.
_FINAL_SIDE = INPUT_SIZE // 16


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """Pre-activation block: BN → conv → BN → PReLU → conv(stride) → BN, plus the shortcut."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.conv1 = _conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class IResNet(nn.Module):
    """`layers` blocks per stage; stage widths are `width` × (1, 2, 4, 8) (64 in the real nets).

    A small `width` and `layers=(1, 1, 1, 1)` build a net of the same layout that trains in
    seconds on a CPU (tests); the official checkpoints need width 64.
    """

    def __init__(self, layers: tuple[int, ...] | list[int], *, width: int = 64, num_features: int = EMBEDDING_SIZE, dropout: float = 0.0):
        super().__init__()
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"IResNet needs 4 stages of at least one block each, got layers={list(layers)}")
        if width < 1:
            raise ValueError(f"IResNet width must be positive, got {width}")
        self.layers = tuple(int(n) for n in layers)
        self.width = width
        self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width, eps=1e-5)
        self.prelu = nn.PReLU(width)
        inplanes = width
        for i, blocks in enumerate(self.layers):
            planes = width * 2**i
            setattr(self, f"layer{i + 1}", self._stage(inplanes, planes, blocks))
            inplanes = planes
        self.bn2 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.dropout = nn.Dropout(p=dropout, inplace=True)
        self.fc = nn.Linear(inplanes * _FINAL_SIDE * _FINAL_SIDE, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)
        # arcface_torch keeps the last BN's scale at 1 and never trains it.
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1.0)
                nn.init.constant_(m.bias, 0.0)

    @staticmethod
    def _stage(inplanes: int, planes: int, blocks: int) -> nn.Sequential:
        # Every stage starts with stride 2, so its first block always has a projection shortcut.
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes, kernel_size=1, stride=2, bias=False),
            nn.BatchNorm2d(planes, eps=1e-5),
        )
        first = IBasicBlock(inplanes, planes, stride=2, downsample=downsample)
        return nn.Sequential(first, *(IBasicBlock(planes, planes) for _ in range(blocks - 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


def iresnet18(**kwargs) -> IResNet:
    return IResNet((2, 2, 2, 2), **kwargs)


def iresnet50(**kwargs) -> IResNet:
    return IResNet((3, 4, 14, 3), **kwargs)


def iresnet_tiny(**kwargs) -> IResNet:
    """One block per stage, width 8: the layout of the real nets at a size tests can train."""
    kwargs.setdefault("width", 8)
    return IResNet((1, 1, 1, 1), **kwargs)


ARCHS = {"r50": iresnet50, "r18": iresnet18, "tiny": iresnet_tiny}


def build(arch: str) -> IResNet:
    """An untrained IResNet by name: r50 (PerFace / ArcFace R50), r18, tiny (tests)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown IResNet arch {arch!r}; valid: {', '.join(ARCHS)}")
    return ARCHS[arch]()


def preprocess(crops: np.ndarray) -> torch.Tensor:
    """(N, 112, 112, 3) uint8 RGB aligned crops → (N, 3, 112, 112) float in [-1, 1]."""
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
        raise ValueError(f"IResNet expects (N, {INPUT_SIZE}, {INPUT_SIZE}, 3) RGB crops, got {crops.shape}")
    # Contiguous NCHW: a channels-last input made torch 2.13's CPU backward of this net segfault.
    x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float().contiguous()
    return (x / 255.0 - 0.5) / 0.5


def _differences(model: nn.Module, state: dict) -> list[str]:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} expected {tuple(expected[k].shape)}, found {tuple(state[k].shape)}"
             for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    parts = []
    for label, keys, n in (("missing keys", missing, 5), ("unexpected keys", unexpected, 5), ("wrong shapes", wrong, 3)):
        if keys:
            parts.append(f"{label} ({len(keys)}): {', '.join(keys[:n])}{' …' if len(keys) > n else ''}")
    return parts


def load_backbone(model: IResNet, path: str | os.PathLike) -> IResNet:
    """Loads an arcface_torch-layout state_dict into `model`, strictly; returns it in eval mode.

    Accepts a plain state_dict or {"state_dict": ...}, with or without DataParallel's
    "module." prefixes. Never runs pickled code (`weights_only=True`).
    """
    path = os.fspath(path)
    name = path
    from engines.simswap.checkpoint import read_state_dict

    state = read_state_dict(path, "give arcface_torch's backbone.pth (or a state_dict saved with torch.save(model.state_dict(), ...))")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        # ValueError, not TypeError: the file's content is wrong, and callers catch bad input as ValueError.
        raise ValueError(f"{name} holds a {type(state).__name__}, not a state_dict; give arcface_torch's backbone.pth")  # noqa: TRY004
    state = {(k.removeprefix("module.")): v for k, v in state.items()}
    parts = _differences(model, state)
    if parts:
        arch = f"IResNet layers={list(model.layers)} width={model.width}"
        raise ValueError(
            f"{name} does not fit {arch} ({'; '.join(parts)}); "
            "check --arch (r50 for arcface_torch's R50 backbone.pth) and that the file is an arcface_torch IResNet"
        )
    model.load_state_dict(state, strict=True)
    return model.eval()


def export_onnx(model: nn.Module, path: str | os.PathLike, *, opset: int = 17) -> str:
    """ONNX of the backbone (input "input" (N,3,112,112), output "embedding" (N,512)), written atomically."""
    from .onnx_export import export_onnx_atomic

    return export_onnx_atomic(model, (torch.zeros(2, 3, INPUT_SIZE, INPUT_SIZE),), path,
                              input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT], opset=opset)
