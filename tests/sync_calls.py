"""Find, on the CPU, the calls that would make the host wait for the GPU.

On CUDA a host sync is any call that needs a device value on the host (``item``, ``tolist``, ``bool``
of a tensor, ``nonzero`` and boolean-mask indexing, whose output shape is data-dependent, linalg
routines that read their error status back) or a blocking copy from host memory to the device. On
the CPU none of these waits, so they are found by wrapping the Python entry points and recording
every call with where it was made (tests/test_pruning_buffer.py's ``_SYNC_METHODS`` counter,
generalised).

``devices`` says which tensors count. On the CPU every tensor is a host tensor, including the
ones that would live on the GPU, so ``devices=None`` records everything. Run the code under test
on the ``meta`` device with ``devices={"meta"}`` to see only the calls on would-be device tensors:
a host-side draw (a CPU ``randperm`` read with ``tolist``) is then not counted, host-to-device
copies are, and a data-dependent op that these wrappers miss fails on meta with an error instead
of passing silently.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

# The same names as tests/test_pruning_buffer.py's _SYNC_METHODS.
SYNC_METHODS = ("item", "cpu", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy", "nonzero")
# Functions that return a data-dependent shape, a host value, or read an error status back.
SYNC_FUNCTIONS: dict[object, tuple[str, ...]] = {
    torch: ("nonzero", "argwhere", "masked_select", "unique", "unique_consecutive", "inverse", "bincount", "equal",
            "allclose"),
    torch.linalg: ("inv", "solve", "cholesky", "lstsq", "eig", "eigh", "svd", "det"),
}
_HERE = str(Path(__file__).resolve())


@dataclass(frozen=True)
class SyncCall:
    name: str  # e.g. "tolist", "__bool__", "__getitem__[bool]", "h2d:torch.tensor"
    device: str  # the device of the tensor the call reads (the target device for a copy)
    stack: tuple[traceback.FrameSummary, ...]

    @property
    def where(self) -> str:
        """The innermost frame outside torch: the line that made the call."""
        frames = [f for f in self.stack if "/torch/" not in f.filename] or list(self.stack)
        f = frames[-1]
        return f"{f.filename.split('site-packages/')[-1]}:{f.lineno} {f.name}: {(f.line or '').strip()}"

    @property
    def function(self) -> str:
        frames = [f for f in self.stack if "/torch/" not in f.filename] or list(self.stack)
        return frames[-1].name


def _device_of(value: object) -> torch.device | None:
    if isinstance(value, torch.Tensor):
        return value.device
    if isinstance(value, (tuple, list)):
        for v in value:
            d = _device_of(v)
            if d is not None:
                return d
    return None


def _has_bool_tensor(index: object) -> bool:
    if isinstance(index, torch.Tensor):
        return index.dtype == torch.bool
    return isinstance(index, (tuple, list)) and any(_has_bool_tensor(i) for i in index)


def _host_tensors(index: object) -> bool:
    if isinstance(index, torch.Tensor):
        return index.device.type == "cpu" and index.dim() > 0
    return isinstance(index, (tuple, list)) and any(_host_tensors(i) for i in index)


def _target(args: tuple, kwargs: dict) -> torch.device | None:
    """The device a ``Tensor.to`` call moves to, if it names one."""
    for value in (kwargs.get("device"), *args):
        if isinstance(value, torch.Tensor):
            return value.device
        if isinstance(value, (str, torch.device)):
            return torch.device(value)
    return None


@contextlib.contextmanager
def sync_calls(devices: set[str] | None = None) -> Iterator[list[SyncCall]]:
    """Record every would-be synchronising call made inside the block (on tensors of ``devices``)."""
    calls: list[SyncCall] = []

    def counts(device: torch.device | None) -> bool:
        return device is not None and (devices is None or device.type in devices)

    def record(name: str, device: torch.device | None) -> None:
        if counts(device):
            stack = tuple(f for f in traceback.extract_stack()[:-2] if f.filename != _HERE)
            calls.append(SyncCall(name, str(device), stack))

    saved: list[tuple[object, str, object]] = []

    def patch(owner: object, name: str, wrapper: object) -> None:
        saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, wrapper)

    for name in SYNC_METHODS:
        original = getattr(torch.Tensor, name)

        def method(self, *args, _name=name, _original=original, **kwargs):
            record(_name, self.device)  # before the call: on meta the call itself raises
            return _original(self, *args, **kwargs)

        patch(torch.Tensor, name, method)

    for owner, names in SYNC_FUNCTIONS.items():
        for name in names:
            original = getattr(owner, name)

            def function(*args, _name=f"{owner.__name__}.{name}", _original=original, **kwargs):
                record(_name, _device_of(args))
                return _original(*args, **kwargs)

            patch(owner, name, function)

    getitem, setitem = torch.Tensor.__getitem__, torch.Tensor.__setitem__

    def get(self, index):
        if _has_bool_tensor(index):
            record("__getitem__[bool]", self.device)  # the output's shape is the mask's count: nonzero
        elif self.device.type != "cpu" and _host_tensors(index):
            record("h2d:__getitem__[host index]", self.device)
        return getitem(self, index)

    def set_(self, index, value):
        if _has_bool_tensor(index):
            record("__setitem__[bool]", self.device)
        elif self.device.type != "cpu" and _host_tensors(index):
            record("h2d:__setitem__[host index]", self.device)
        return setitem(self, index, value)

    patch(torch.Tensor, "__getitem__", get)
    patch(torch.Tensor, "__setitem__", set_)

    # Host-to-device copies: ``torch.tensor(python_data, device=cuda)`` and a blocking ``.to(cuda)``
    # of a host tensor wait for the queue; only seen when the target is not the CPU (run on meta).
    for name in ("tensor", "as_tensor"):
        original = getattr(torch, name)

        def build(data, *args, _name=name, _original=original, **kwargs):
            device = kwargs.get("device")
            source = data.device if isinstance(data, torch.Tensor) else torch.device("cpu")
            if device is not None and torch.device(device).type != source.type:
                record(f"h2d:torch.{_name}", torch.device(device))
            return _original(data, *args, **kwargs)

        patch(torch, name, build)

    to = torch.Tensor.to

    def move(self, *args, **kwargs):
        target = _target(args, kwargs)
        if target is not None and self.device.type == "cpu" and target.type != "cpu" and self.dim() > 0:
            record("h2d:Tensor.to" + ("(non_blocking)" if kwargs.get("non_blocking") else ""), target)
        return to(self, *args, **kwargs)

    patch(torch.Tensor, "to", move)
    copy = torch.Tensor.copy_

    def copy_(self, src, *args, **kwargs):
        if isinstance(src, torch.Tensor) and src.device.type == "cpu" and self.device.type != "cpu":
            record("h2d:Tensor.copy_", self.device)
        return copy(self, src, *args, **kwargs)

    patch(torch.Tensor, "copy_", copy_)
    try:
        yield calls
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


def summary(calls: list[SyncCall]) -> list[str]:
    """One line per distinct (call, site), most frequent first: for messages and reports."""
    counts: dict[tuple[str, str, str], int] = {}
    for c in calls:
        key = (c.name, c.device, c.where)
        counts[key] = counts.get(key, 0) + 1
    return [f"{n} x {name} on {device} at {where}" for (name, device, where), n in
            sorted(counts.items(), key=lambda kv: -kv[1])]
