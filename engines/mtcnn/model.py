"""The three MTCNN networks in torch, laid out as the Keras ones whose weights we load.

Two details decide whether the weights compute what they were trained to: Keras pools with
`padding="same"`, which for these fixed sizes is torch's `ceil_mode=True` (the window runs off
the right/bottom edge, never the left), and R-Net and O-Net flatten their last feature map
after swapping height and width (Keras `Permute((2, 1, 3))`, a leftover of the original Caffe
models' transposed images), so the dense weights read (W, H, C) order.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn


def _pool(x, k):
    return F.max_pool2d(x, k, 2, ceil_mode=True)


class PNet(nn.Module):
    """Proposal network, fully convolutional: per 12x12 window (stride 2) a face probability
    and a box offset."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.conv4_2 = nn.Conv2d(32, 4, 1), nn.Conv2d(32, 2, 1)

    def forward(self, x):
        x = _pool(self.prelu1(self.conv1(x)), 2)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_1(x), F.softmax(self.conv4_2(x), dim=1)[:, 1]


class RNet(nn.Module):
    """Refinement on 24x24 crops: face probability and box offset per crop."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.fc4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.fc5_1, self.fc5_2 = nn.Linear(128, 4), nn.Linear(128, 2)

    def forward(self, x):
        x = _pool(self.prelu1(self.conv1(x)), 3)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2)
        x = self.prelu3(self.conv3(x)).permute(0, 3, 2, 1).flatten(1)
        x = self.prelu4(self.fc4(x))
        return self.fc5_1(x), F.softmax(self.fc5_2(x), dim=1)[:, 1]


class ONet(nn.Module):
    """Output network on 48x48 crops: face probability, box offset and five landmarks (x's
    then y's, as fractions of the box)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.fc5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.fc6_1, self.fc6_2, self.fc6_3 = nn.Linear(256, 4), nn.Linear(256, 10), nn.Linear(256, 2)

    def forward(self, x):
        x = _pool(self.prelu1(self.conv1(x)), 3)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2)
        x = _pool(self.prelu3(self.conv3(x)), 2)
        x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).flatten(1)
        x = self.prelu5(self.fc5(x))
        return self.fc6_1(x), self.fc6_2(x), F.softmax(self.fc6_3(x), dim=1)[:, 1]


NETS = {"pnet": PNet, "rnet": RNet, "onet": ONet}
