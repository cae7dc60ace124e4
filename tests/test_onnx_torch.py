"""engines/onnx_torch.py: an ONNX graph run with torch ops must give ONNX Runtime's outputs,
for the operators ArcFace-family graphs use and the shape arithmetic exporters emit."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from engines.onnx_torch import OnnxModule, load_onnx_module


class _Net(torch.nn.Module):
    """Unfused batch norms (no constant folding), grouped convolution, pools, a reshape chain
    from the batch size, PReLU with per-channel slopes and a linear head."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(8)
        self.prelu = torch.nn.PReLU(8)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.pool = torch.nn.MaxPool2d(2)
        self.fc = torch.nn.Linear(8 * 4 * 4, 16)
        self.bn1 = torch.nn.BatchNorm1d(16)

    def forward(self, x):
        y = self.prelu(self.bn(self.conv(x)))
        y = y + torch.relu(self.conv2(y))
        y = self.pool(y)
        y = y.reshape(y.shape[0], -1)
        return self.bn1(self.fc(y)), torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1) * 2.0 - 1.0


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    net = _Net()
    for m in net.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    net.eval()
    path = str(tmp_path_factory.mktemp("onnx") / "net.onnx")
    torch.onnx.export(net, torch.randn(2, 3, 16, 16), path, input_names=["input"], output_names=["emb", "mean"],
                      dynamic_axes={"input": {0: "n"}, "emb": {0: "n"}, "mean": {0: "n"}}, opset_version=17,
                      do_constant_folding=False, dynamo=False)
    return path


def test_graph_matches_onnxruntime(exported):
    ops = {n.op_type for n in onnx.load(exported).graph.node}
    assert {"Conv", "BatchNormalization", "PRelu", "MaxPool", "Gemm", "Reshape"} <= ops, ops
    x = np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32)
    want = ort.InferenceSession(exported, providers=["CPUExecutionProvider"]).run(None, {"input": x})
    module = load_onnx_module(exported).eval()
    with torch.inference_mode():
        got = module(torch.from_numpy(x))
    assert len(got) == 2
    for g, w in zip(got, want):
        assert g.shape == w.shape and np.abs(g.numpy() - w).max() <= 1e-4


def test_a_cast_module_casts_its_weights(exported):
    module = load_onnx_module(exported).eval().to(dtype=torch.float64)
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    with torch.inference_mode():
        emb, _ = module(x)
    assert emb.dtype == torch.float64


def test_an_operator_outside_the_set_is_refused_by_name():
    node = helper.make_node("Einsum", ["x", "x"], ["y"], equation="ij,jk->ik")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])])
    with pytest.raises(ValueError, match="cannot run ONNX operator.*Einsum.*ONNX Runtime"):
        OnnxModule(helper.make_model(graph))
