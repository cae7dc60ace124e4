"""An ONNX graph of a plain CNN run as a torch module: the embedders' torch backend.

Why: the ArcFace-family embedders (insightface's ArcFace R50, our PerFace export) come as
ONNX files, and the device path wants them on the GPU beside the frames. onnxruntime on the
lent GPU machine is CPU-only, and onnx2torch needs torchvision, which cannot sit beside the
CPU torch wheel CI installs. These graphs use a small set of operators (convolution, batch
norm, PReLU, residual adds, a linear head, shape arithmetic), so the graph is interpreted
node by node with torch functions. The initializers become buffers, so `.to(device, dtype)`
moves and casts the weights like any module; an operator outside the set is refused when the
file loads, naming it, and the host path (ONNX Runtime) still runs that file.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _pads(attrs: dict, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """ONNX pads (begins…, ends…) as torch's symmetric padding, or explicit F.pad when uneven."""
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise ValueError("auto_pad is not supported")
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    half = len(pads) // 2
    begin, end = pads[:half], pads[half:]
    if begin == end:
        return x, tuple(begin)
    return F.pad(x, [p for b, e in zip(reversed(begin), reversed(end)) for p in (b, e)]), (0,) * half


def _conv(a, x, w, b=None):
    x, padding = _pads(a, x)
    return F.conv2d(x, w, b, stride=tuple(a.get("strides", (1, 1))), padding=padding,
                    dilation=tuple(a.get("dilations", (1, 1))), groups=a.get("group", 1))


def _batch_norm(a, x, scale, bias, mean, var):
    return F.batch_norm(x, mean, var, scale, bias, False, 0.0, a.get("epsilon", 1e-5))


def _flatten(a, x):
    axis = a.get("axis", 1) % max(x.dim(), 1)
    return x.reshape(math.prod(x.shape[:axis]), -1)


def _gemm(a, x, w, c=None):
    x = x.t() if a.get("transA", 0) else x
    w = w.t() if a.get("transB", 0) else w
    y = a.get("alpha", 1.0) * (x @ w)
    return y if c is None else y + a.get("beta", 1.0) * c


def _reshape(a, x, shape):
    dims = [int(d) for d in shape.tolist()]
    return x.reshape([x.shape[i] if d == 0 else d for i, d in enumerate(dims)])


def _unsqueeze(a, x, axes=None):
    for ax in sorted(int(v) for v in (axes.tolist() if axes is not None else a["axes"])):
        x = x.unsqueeze(ax)
    return x


def _gather(a, x, i):
    axis = a.get("axis", 0) % x.dim()
    idx = i.reshape(-1).long().to(x.device)
    picked = torch.index_select(x, axis, torch.where(idx < 0, idx + x.shape[axis], idx))  # ONNX counts from the end too
    return picked.reshape(tuple(x.shape[:axis]) + tuple(i.shape) + tuple(x.shape[axis + 1:]))


def _pool(kind):
    def run(a, x):
        x, padding = _pads(a, x)
        kernel, stride = tuple(a["kernel_shape"]), tuple(a.get("strides", a["kernel_shape"]))
        if kind == "max":
            return F.max_pool2d(x, kernel, stride, padding, ceil_mode=bool(a.get("ceil_mode", 0)))
        return F.avg_pool2d(x, kernel, stride, padding, ceil_mode=bool(a.get("ceil_mode", 0)),
                            count_include_pad=bool(a.get("count_include_pad", 0)))
    return run


OPS = {
    "Conv": _conv,
    "BatchNormalization": _batch_norm,
    "PRelu": lambda a, x, slope: torch.where(x >= 0, x, x * slope),
    "Relu": lambda a, x: F.relu(x),
    "LeakyRelu": lambda a, x: F.leaky_relu(x, a.get("alpha", 0.01)),
    "Sigmoid": lambda a, x: torch.sigmoid(x),
    "Add": lambda a, x, y: x + y,
    "Sub": lambda a, x, y: x - y,
    "Mul": lambda a, x, y: x * y,
    "Div": lambda a, x, y: x / y,
    "Flatten": _flatten,
    "Gemm": _gemm,
    "MatMul": lambda a, x, y: x @ y,
    "Identity": lambda a, x: x,
    "Dropout": lambda a, x, *rest: x,  # inference: the mask output is never read
    "Reshape": _reshape,
    "Shape": lambda a, x: torch.tensor(x.shape, dtype=torch.int64, device=x.device),
    "Gather": _gather,
    "Unsqueeze": _unsqueeze,
    "Concat": lambda a, *xs: torch.cat(xs, dim=a["axis"]),
    "Transpose": lambda a, x: x.permute(*a["perm"]) if "perm" in a else x.permute(*reversed(range(x.dim()))),
    "GlobalAveragePool": lambda a, x: x.mean(dim=(2, 3), keepdim=True),
    "MaxPool": _pool("max"),
    "AveragePool": _pool("avg"),
}


class OnnxModule(nn.Module):
    """`forward(*inputs) -> tuple(outputs)` in the graph's input and output order."""

    def __init__(self, model):
        import onnx
        from onnx import numpy_helper

        super().__init__()
        graph = model.graph
        unsupported = sorted({n.op_type for n in graph.node if n.op_type not in OPS and n.op_type != "Constant"})
        if unsupported:
            raise ValueError(f"the torch backend cannot run ONNX operator(s) {', '.join(unsupported)}; "
                             "the host path (ONNX Runtime) runs this file")
        self._names: dict[str, str] = {}  # ONNX value name → buffer name

        def keep(name: str, array: np.ndarray) -> None:
            self._names[name] = f"v{len(self._names)}"
            self.register_buffer(self._names[name], torch.from_numpy(np.array(array)), persistent=False)

        for init in graph.initializer:
            keep(init.name, numpy_helper.to_array(init))
        self.nodes = []
        for node in graph.node:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type == "Constant":  # folded now, so a cast of the module casts it too
                keep(node.output[0], numpy_helper.to_array(attrs["value"]))
                continue
            self.nodes.append((node.op_type, list(node.input), list(node.output), attrs))
        self.input_names = [i.name for i in graph.input if i.name not in self._names]
        self.output_names = [o.name for o in graph.output]

    def forward(self, *inputs):
        env = {name: getattr(self, buf) for name, buf in self._names.items()}
        env.update(zip(self.input_names, inputs))
        for op, ins, outs, attrs in self.nodes:
            result = OPS[op](attrs, *(env[n] for n in ins if n))
            env[outs[0]] = result
        return tuple(env[name] for name in self.output_names)


def load_onnx_module(path: str) -> OnnxModule:
    import onnx

    return OnnxModule(onnx.load(path))
