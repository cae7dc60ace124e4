"""Exporting one of our torch model definitions to ONNX: dynamic batch, written atomically.

A half-written .onnx under the final name would load as a corrupt model later; the export
goes to a temp file in the same folder and is renamed only when complete.
"""

from __future__ import annotations

import os
import tempfile


def export_onnx_atomic(model, example_inputs: tuple, path: str | os.PathLike, *, input_names: list[str],
                       output_names: list[str], opset: int = 17) -> str:
    import torch

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".export.", suffix=".partial.onnx", dir=folder)
    os.close(fd)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            torch.onnx.export(
                model, example_inputs, tmp, input_names=input_names, output_names=output_names,
                dynamic_axes={n: {0: "batch"} for n in (*input_names, *output_names)},
                opset_version=opset, dynamo=False,
            )
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    finally:
        model.train(was_training)
    return path
