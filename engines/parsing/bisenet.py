"""BiSeNet face parser (19 CelebAMask-HQ classes), our implementation of the network SimSwap's
`--use_mask` runs (its parsing_model/model.py and resnet.py, from zllrunning/face-parsing.PyTorch).

Module names and registration order are the official ones, so `79999_iter.pth` (a plain
state_dict) loads strictly; tests/test_face_parsing.py holds the layout and the forward to the
official golden outputs. The official network returns three maps; SimSwap reads only the first
(the fused head, bilinearly upsampled with align_corners=True), so `forward` computes that one
and the two auxiliary heads are kept only as weights.

Why TF32 is turned off when the parser is built on CUDA: under the contract's fill B a TF32-like
rounding moves logits by 8 (of ~2600) and flips 0.24 % of the labels; the official code ran in
IEEE float32. The switch is process-wide (torch has no per-module setting).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..placement import HOST, Placement

N_CLASSES = 19


class ConvBNReLU(nn.Module):
    """conv (no bias) → BatchNorm → ReLU; named `conv`, `bn` as in the official checkpoint."""

    def __init__(self, cin: int, cout: int, ks: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, ks, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if cin != cout or stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(shortcut + residual)


def _layer(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1))


class Resnet18(nn.Module):
    """The backbone; returns the 1/8, 1/16 and 1/32 feature maps."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = _layer(64, 64, 1)
        self.layer2 = _layer(64, 128, 2)
        self.layer3 = _layer(128, 256, 2)
        self.layer4 = _layer(256, 512, 2)

    def forward(self, x: torch.Tensor):
        x = self.layer1(self.maxpool(F.relu(self.bn1(self.conv1(x)))))
        feat8 = self.layer2(x)
        feat16 = self.layer3(feat8)
        return feat8, feat16, self.layer4(feat16)


class AttentionRefinementModule(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = ConvBNReLU(cin, cout)
        self.conv_atten = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)
        self.sigmoid_atten = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        atten = self.sigmoid_atten(self.bn_atten(self.conv_atten(F.avg_pool2d(feat, feat.shape[2:]))))
        return torch.mul(feat, atten)


class ContextPath(nn.Module):
    def __init__(self):
        super().__init__()
        self.resnet = Resnet18()
        self.arm16 = AttentionRefinementModule(256, 128)
        self.arm32 = AttentionRefinementModule(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128)
        self.conv_head16 = ConvBNReLU(128, 128)
        self.conv_avg = ConvBNReLU(512, 128, ks=1, padding=0)

    def forward(self, x: torch.Tensor):
        feat8, feat16, feat32 = self.resnet(x)
        avg = self.conv_avg(F.avg_pool2d(feat32, feat32.shape[2:]))
        feat32_sum = self.arm32(feat32) + F.interpolate(avg, feat32.shape[2:], mode="nearest")
        feat32_up = self.conv_head32(F.interpolate(feat32_sum, feat16.shape[2:], mode="nearest"))
        feat16_sum = self.arm16(feat16) + feat32_up
        feat16_up = self.conv_head16(F.interpolate(feat16_sum, feat8.shape[2:], mode="nearest"))
        return feat8, feat16_up, feat32_up


class FeatureFusionModule(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.convblk = ConvBNReLU(cin, cout, ks=1, padding=0)
        self.conv1 = nn.Conv2d(cout, cout // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(cout // 4, cout, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.sigmoid = nn.Sigmoid()

    def forward(self, fsp: torch.Tensor, fcp: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([fsp, fcp], dim=1))
        atten = self.sigmoid(self.conv2(self.relu(self.conv1(F.avg_pool2d(feat, feat.shape[2:])))))
        return torch.mul(feat, atten) + feat


class BiSeNetOutput(nn.Module):
    def __init__(self, cin: int, mid: int, n_classes: int):
        super().__init__()
        self.conv = ConvBNReLU(cin, mid)
        self.conv_out = nn.Conv2d(mid, n_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """`forward(x)` → (N, 19, H, W) logits: the official `forward(x)[0]`."""

    def __init__(self, n_classes: int = N_CLASSES):
        super().__init__()
        self.cp = ContextPath()
        self.ffm = FeatureFusionModule(256, 256)
        self.conv_out = BiSeNetOutput(256, 256, n_classes)
        self.conv_out16 = BiSeNetOutput(128, 64, n_classes)  # training-time auxiliary heads: weights only
        self.conv_out32 = BiSeNetOutput(128, 64, n_classes)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 19, H/8, W/8): the fused head before the final upsampling."""
        feat_res8, feat_cp8, _ = self.cp(x)
        return self.conv_out(self.ffm(feat_res8, feat_cp8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.head(x), x.shape[2:], mode="bilinear", align_corners=True)


def load_parser(path: str) -> BiSeNet:
    """`79999_iter.pth` (a plain BiSeNet state_dict, read without running pickled code), strictly."""
    from engines.simswap.checkpoint import read_state_dict, state_dict_problems

    state = read_state_dict(path)
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state_dict")

    model = BiSeNet()
    problems = state_dict_problems(model, state, limit=4)
    if problems:
        raise ValueError(f"{path} is not the BiSeNet face parser (79999_iter.pth): {'; '.join(problems)}")
    model.load_state_dict(state, strict=True)
    return model.eval()


def build(entry, files: dict, *, placement: Placement = HOST):
    """The model table's builder (face-parsing, torch): an Engine `{"image"} → {"logits"}` on
    the placement's device, always eager IEEE float32 as SimSwap runs it (its golden contract):
    the placement's dtype, layout and compile are not applied."""
    from ..torch_engine import TorchEngine, set_tf32

    if placement.is_cuda:
        set_tf32(False)  # IEEE float32, process-wide: TF32 alone breaks the golden contract
    s = entry.settings
    return TorchEngine(load_parser(files["weights"]), (s["input"],), (s["output"],), device=placement.torch_device)


def verify(entry, path: str) -> None:
    """The model table's check: the file loads strictly as BiSeNet(19)."""
    load_parser(path)
