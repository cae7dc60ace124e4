"""Restricted loading of SimSwap's `arcface_checkpoint.tar`, a pickle of a whole model.

`torch.load(weights_only=False)` on that file would run whatever the pickle names. Here the
pickle is read by our own Unpickler whose `find_class` answers from a fixed table only: the
official `models.arcface_models.{ResNet, IRBlock, SEBlock}` map to our classes in
`arcface.py`, a handful of torch.nn layers map to themselves, tensors are rebuilt by our own
functions, and training leftovers (optimizer, margin head) become inert placeholders. Any
other global (os.system, builtins.eval, subprocess, …) stops the load before it is called.
Both torch serialization formats are read: the zip one (torch >= 1.6) and the legacy stream.

Both layouts SimSwap has published: today's file, the pickled `ResNet` itself, and the
pre-2023 training checkpoint `{'epoch', 'epochs_since_improvement', 'acc', 'model':
DataParallel(ResNet), 'metric_fc': DataParallel(ArcMarginModel), 'optimizer': SGD}`, which
SimSwap read as `checkpoint['model'].module` (tests/test_simswap_arcface.py saves both, in
both formats, under the official class paths).

The model found is then copied, by state_dict and `strict=True`, into a fresh `ArcFaceResNet`,
so nothing unpickled but tensors survives the load.
"""

from __future__ import annotations

import collections
import io
import pickle
import re
import struct
import zipfile

import torch
from torch import nn

from ..placement import HOST, Placement
from .arcface import ArcFaceResNet, IRBlock, SEBlock

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class UnsafeCheckpointError(pickle.UnpicklingError, ValueError):
    """The checkpoint names something we do not load; nothing it names was executed."""


class _Inert:
    """Stands in for training leftovers (optimizer, ArcFace margin head): keeps nothing, runs nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


class _InertModule(nn.Module):
    """Stands in for the ArcFace margin head (`metric_fc`, models.arcface_models.ArcMarginModel) of
    pre-2023 checkpoints: a module, because the legacy format names every module class it holds
    (the persistent 'module' record); it keeps none of its state (a 93431 × 512 training-only
    weight) and runs nothing."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def __setstate__(self, state):
        super().__init__()


class _Wrapper(nn.Module):
    """Stands in for torch.nn.DataParallel: only its `.module` is used."""


_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


class _StorageType:
    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, torch.Tensor):
        raise UnsafeCheckpointError("tensor data is not a storage read from this file")
    t = torch.as_strided(storage, tuple(size), tuple(stride), storage_offset)
    t.requires_grad_(bool(requires_grad) and t.is_floating_point())
    return t


def _rebuild_parameter(data, requires_grad, backward_hooks, *rest):
    return nn.Parameter(data, requires_grad=bool(requires_grad))


_NN = {
    "torch.nn.modules.conv": ("Conv2d",),
    "torch.nn.modules.batchnorm": ("BatchNorm2d", "BatchNorm1d"),
    "torch.nn.modules.activation": ("PReLU", "Sigmoid", "ReLU"),
    "torch.nn.modules.pooling": ("MaxPool2d", "AdaptiveAvgPool2d"),
    "torch.nn.modules.container": ("Sequential",),
    "torch.nn.modules.linear": ("Linear",),
    "torch.nn.modules.dropout": ("Dropout",),
}

_ALLOWED: dict[tuple[str, str], object] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,  # optimizer state; its factory is looked up here too
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,
    ("builtins", "dict"): dict,
    ("__builtin__", "dict"): dict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("models.arcface_models", "ResNet"): ArcFaceResNet,
    ("models.arcface_models", "IRBlock"): IRBlock,
    ("models.arcface_models", "SEBlock"): SEBlock,
    ("models.arcface_models", "ArcMarginModel"): _InertModule,
    ("engines.simswap.arcface", "ArcFaceResNet"): ArcFaceResNet,  # our own saves
    ("engines.simswap.arcface", "IRBlock"): IRBlock,
    ("engines.simswap.arcface", "SEBlock"): SEBlock,
    ("torch.nn.parallel.data_parallel", "DataParallel"): _Wrapper,
    ("torch", "device"): torch.device,
    **{("torch", name): _StorageType(dtype) for name, dtype in _DTYPES.items()},
    **{(mod, name): getattr(nn, name) for mod, names in _NN.items() for name in names},
}
_INERT_MODULES = re.compile(r"^torch\.optim(\.|$)")


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, persistent_load=None):
        super().__init__(file)
        self._persistent = persistent_load

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            pass
        if _INERT_MODULES.match(module):
            return _Inert
        raise UnsafeCheckpointError(f"checkpoint refers to {module}.{name}, which is not allowed in an ArcFace checkpoint; nothing was executed")

    def persistent_load(self, pid):
        # Legacy whole-model saves refer to each nn.Module class as ('module', cls, file, source);
        # `cls` already came through find_class, so it is one of ours. The source is not used.
        if isinstance(pid, tuple) and len(pid) == 4 and pid[0] == "module":
            if not (isinstance(pid[1], type) and issubclass(pid[1], nn.Module)):
                raise UnsafeCheckpointError(f"module reference to {pid[1]!r}")
            return pid[1]
        if self._persistent is None:
            raise UnsafeCheckpointError("unexpected persistent reference in checkpoint metadata")
        return self._persistent(pid)


def _storage_dtype(storage_type) -> torch.dtype:
    if not isinstance(storage_type, _StorageType):
        raise UnsafeCheckpointError(f"unknown storage type {storage_type!r}")
    return storage_type.dtype


def _load_zip(data: bytes):
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise UnsafeCheckpointError("zip checkpoint without exactly one data.pkl")
        prefix = pkl[0][: -len("data.pkl")]
        cache: dict[str, torch.Tensor] = {}

        def persistent_load(pid):
            if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
                raise UnsafeCheckpointError(f"unexpected persistent id {pid!r}")
            _, storage_type, key, _location, numel = pid
            dtype = _storage_dtype(storage_type)
            if key not in cache:
                raw = zf.read(f"{prefix}data/{key}")
                t = torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.empty(0, dtype=dtype)
                if t.numel() != numel:
                    raise UnsafeCheckpointError(f"storage {key}: {t.numel()} elements, header says {numel}")
                cache[key] = t
            return cache[key]

        return _RestrictedUnpickler(io.BytesIO(zf.read(pkl[0])), persistent_load).load()


def _load_legacy(f: io.BytesIO):
    if _RestrictedUnpickler(f).load() != LEGACY_MAGIC:
        raise UnsafeCheckpointError("not a torch checkpoint (bad magic number)")
    _RestrictedUnpickler(f).load()  # protocol version
    _RestrictedUnpickler(f).load()  # sys info
    storages: dict[str, torch.Tensor] = {}

    def persistent_load(pid):
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise UnsafeCheckpointError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel, view = pid
        if key not in storages:
            storages[key] = torch.empty(int(numel), dtype=_storage_dtype(storage_type))
        base = storages[key]
        if view is not None:
            _view_key, offset, view_size = view
            return base[offset : offset + view_size]
        return base

    obj = _RestrictedUnpickler(f, persistent_load).load()
    keys = _RestrictedUnpickler(f).load()
    for key in keys:
        t = storages.get(key)
        if t is None:
            raise UnsafeCheckpointError(f"storage {key} listed but never referenced")
        (count,) = struct.unpack("<q", f.read(8))
        raw = f.read(count * t.element_size())
        if count != t.numel() or len(raw) != count * t.element_size():
            raise UnsafeCheckpointError(f"storage {key}: truncated or inconsistent data")
        t.copy_(torch.frombuffer(bytearray(raw), dtype=t.dtype))
    return obj


def _find_model(obj) -> nn.Module:
    if isinstance(obj, dict) and "model" in obj:
        obj = obj["model"]
    if isinstance(obj, _Wrapper):
        obj = obj.module
    if not isinstance(obj, ArcFaceResNet):
        raise UnsafeCheckpointError(f"checkpoint holds {type(obj).__name__}, not SimSwap's ArcFace ResNet")
    return obj


def _layers_from(state: dict) -> tuple[int, ...]:
    counts = []
    for i in range(1, 5):
        idx = {int(m.group(1)) for k in state if (m := re.match(rf"layer{i}\.(\d+)\.", k))}
        counts.append(max(idx) + 1 if idx else 0)
    return tuple(counts)


def load_arcface_checkpoint(path: str) -> ArcFaceResNet:
    """Reads `arcface_checkpoint.tar` (zip or legacy torch format) without running pickled code."""
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        obj = _load_zip(data) if zipfile.is_zipfile(io.BytesIO(data)) else _load_legacy(io.BytesIO(data))
    except UnsafeCheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, struct.error, KeyError, TypeError, AttributeError) as e:
        raise UnsafeCheckpointError(f"{path} is not a readable torch checkpoint ({type(e).__name__}: {e})") from e
    found = _find_model(obj)
    state = {k: v.detach().clone() for k, v in found.state_dict().items()}
    model = ArcFaceResNet(layers=_layers_from(state))
    model.load_state_dict(state, strict=True)
    return model.eval()


def build(entry, files: dict, *, placement: Placement = HOST) -> ArcFaceResNet:
    """The model table's builder for simswap-arcface (torch): on the host's CPU whatever the
    placement, where latent_from_crops runs it (once per gallery source)."""
    return load_arcface_checkpoint(files["weights"])
