"""NVIDIA DALI as the training input of an image folder (``data.backend: dali``, the ``ssl-emp[dali]``
extra): the files' bytes go to DALI, which decodes only each view's crop (``decoders.image_random_crop``,
on the GPU with ``device="mixed"``) and resizes it, as solo-learn's DALI loader does.

It replaces the DataLoader of ``ssl_emp.data.views`` and yields the same batches, ``(index, uint8
[B, V, 3, S, S])``; flips and colours stay batched on the device (``ssl_emp.augment``). The pruner
still chooses: each epoch the kept set's batches are read from the epoch-tagged batch sampler when
the iteration starts and fed to DALI through an ``external_source``. A pipeline is built per epoch,
seeded by (seed, epoch): a resumed run draws the crops the uninterrupted run drew from that epoch on.

Where it differs from the worker path: DALI draws the crop box itself (area fraction in ``scale``,
aspect ratio in 3:4-4:3, ten tries; its own generator and fallback), so the crops are not the worker
path's for the same seed, and a run cannot switch backends on ``--resume``. The files are read in the
training process (DALI prefetches the next batches while the model trains).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ssl_emp.augment import CROP_RATIO
from ssl_emp.data.views import EpochTagged
from ssl_emp.errors import ConfigError

#: data.backend values: the DataLoader path of ssl_emp.data.views, or this module.
BACKENDS = ("torch", "dali")
CPU = torch.device("cpu")


def dali_module() -> Any:
    """``nvidia.dali``, or a one-line ConfigError saying how to install it."""
    try:
        import nvidia.dali
    except ImportError as exc:
        raise ConfigError('data.backend=dali needs NVIDIA DALI: pip install "ssl-emp[dali]" (the CUDA 13 build; '
                          "for another CUDA, the nvidia-dali-cudaXXX wheel that matches it)") from exc
    return nvidia.dali


class DaliViews:
    """``V`` views of each kept image per batch, decoded and cut by DALI: ``(index, uint8 [B, V, 3, S, S])``
    on ``device`` (the GPU with CUDA, else the CPU)."""

    def __init__(self, files: list[str], batches: EpochTagged, views: int, size: int, scale: tuple[float, float],
                 seed: int, device: torch.device, threads: int = 2):
        dali_module()
        self.files, self.batches, self.views, self.size = files, batches, views, size
        self.scale, self.seed, self.device, self.threads = scale, seed, device, threads

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        tagged = list(self.batches)  # this epoch's kept set, batched: read once, when the epoch starts
        if not tagged:
            return
        epoch = tagged[0][0][0]
        batches = [[index for _, index in batch] for batch in tagged]
        pipe = self._pipeline(batches, epoch)
        try:
            for batch in batches:
                try:
                    idx, *views = pipe.run()
                except RuntimeError as exc:  # DALI's many-line operator error: one line naming the files
                    named = ", ".join(self.files[i] for i in batch[:3]) + (", ..." if len(batch) > 3 else "")
                    raise ConfigError(f"DALI cannot decode an image of the batch ({named}): {_reason(exc)}") from exc
                yield _to_torch(idx, CPU).view(-1), torch.stack([_to_torch(v, self.device) for v in views], 1)
        finally:
            del pipe  # its threads and buffers, before the next epoch builds another

    def _pipeline(self, batches: list[list[int]], epoch: int) -> Any:
        dali = dali_module()
        fn, types = dali.fn, dali.types
        files, cuda = self.files, self.device.type == "cuda"

        def source(info: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
            if info.iteration >= len(batches):  # DALI reads ahead: the end of the epoch
                raise StopIteration
            batch = batches[info.iteration]
            return [np.fromfile(files[i], dtype=np.uint8) for i in batch], [np.array([i], np.int64) for i in batch]

        # (seed, epoch) -> one 31-bit seed: DALI takes a non-negative int.
        state = int(np.random.SeedSequence([self.seed, epoch]).generate_state(1, dtype=np.uint32)[0]) >> 1

        @dali.pipeline_def(batch_size=max(map(len, batches)), num_threads=self.threads,
                           device_id=(self.device.index or 0) if cuda else None, seed=state, exec_dynamic=True)
        def pipeline() -> tuple[Any, ...]:
            encoded, idx = fn.external_source(source=source, num_outputs=2, batch=True, batch_info=True,
                                              dtype=[types.UINT8, types.INT64])
            views = []
            for _ in range(self.views):
                view = fn.decoders.image_random_crop(encoded, device="mixed" if cuda else "cpu", output_type=types.RGB,
                                                     random_area=list(self.scale), random_aspect_ratio=list(CROP_RATIO),
                                                     num_attempts=10)
                view = fn.resize(view, resize_x=self.size, resize_y=self.size, antialias=True)
                views.append(fn.transpose(view, perm=[2, 0, 1]))  # HWC -> CHW
            return (idx, *views)  # the indices stay on the CPU, as a DataLoader's do

        pipe = pipeline()
        pipe.build()
        return pipe


def _reason(exc: Exception) -> str:
    """The operator and the cause from DALI's many-line error ("Error in CPU operator `X`, ...
    encountered: CAUSE")."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    operator = next((line.split("`")[1] for line in lines if line.count("`") >= 2), "DALI")
    cause = lines[lines.index("encountered:") + 1] if "encountered:" in lines[:-1] else (lines or ["unknown error"])[-1]
    return f"{operator}: {cause}"


def _to_torch(batch: Any, device: torch.device) -> Tensor:
    """A DALI batch of equal-shape samples as one torch tensor on ``device``, without a copy: DLPack,
    as DALI's own ``DALIGenericIterator`` does with the dynamic executor (the tensor keeps DALI's
    buffer alive, and DLPack orders the hand-over against the consumer's CUDA stream: no host sync)."""
    with device:
        return torch.from_dlpack(batch.as_tensor())
