"""DataLoader for graphs whose worker processes hand each batch over as one shared buffer.

A batch collated by ``torch_geometric`` holds ~40 tensors (the fields plus the per-key slice and
increment tables that ``Batch.get_example`` needs). torch sends every tensor from a worker to
the main process as its own shared-memory segment and file descriptor, and the main process
spends more CPU receiving a batch than a worker spends building a graph. Here a worker packs all
tensors of a batch into one contiguous byte buffer, so a batch crosses the process boundary as
one segment; the main process gets back the same ``Batch`` (same keys, dtypes, shapes and
values), its tensors views into that buffer.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, get_worker_info
from torch_geometric.data import Batch
from torch_geometric.data.data import BaseData

__all__ = ["PackedBatch", "collate_graphs", "graph_loader"]

#: byte alignment of every tensor inside the shared buffer (covers every dtype's alignment)
_ALIGNMENT = 64


class _TensorCollector(pickle.Pickler):
    """Pickles an object with its plain tensors left out (as persistent ids) and collected."""

    def __init__(self, file: io.BytesIO):
        super().__init__(file, pickle.HIGHEST_PROTOCOL)
        self.tensors: list[torch.Tensor] = []

    def persistent_id(self, obj: Any) -> int | None:
        # Subclasses (PyG's Index/EdgeIndex, parameters) carry state of their own: pickled as usual.
        if type(obj) is torch.Tensor and obj.device.type == "cpu" and not obj.requires_grad:
            self.tensors.append(obj)
            return len(self.tensors) - 1
        return None


class _TensorRestorer(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, tensors: list[torch.Tensor]):
        super().__init__(file)
        self.tensors = tensors

    def persistent_load(self, pid: int) -> torch.Tensor:
        return self.tensors[pid]


def _unpack(skeleton: bytes, buffer: torch.Tensor, layout: list[tuple[int, torch.dtype, tuple]]) -> Any:
    """Inverse of :meth:`PackedBatch.__reduce__`: the object, its tensors views into ``buffer``."""
    tensors = []
    for offset, dtype, shape in layout:
        nbytes = torch.Size(shape).numel() * dtype.itemsize
        if nbytes == 0:
            tensors.append(torch.empty(shape, dtype=dtype))
        else:
            tensors.append(buffer[offset : offset + nbytes].view(dtype).view(shape))
    return _TensorRestorer(io.BytesIO(skeleton), tensors).load()


class PackedBatch:
    """Wraps a batch so that pickling it sends all its tensors as one uint8 buffer.

    Unpickling returns the wrapped object itself (not a ``PackedBatch``), with equal tensors
    (contiguous views into the buffer; strides may differ from the originals).
    """

    def __init__(self, batch: Any):
        self.batch = batch

    def __reduce__(self):
        skeleton = io.BytesIO()
        collector = _TensorCollector(skeleton)
        collector.dump(self.batch)
        layout, size = [], 0
        for tensor in collector.tensors:
            layout.append((size, tensor.dtype, tuple(tensor.shape)))
            size += -(-tensor.numel() * tensor.element_size() // _ALIGNMENT) * _ALIGNMENT
        # In a worker the buffer goes to shared memory right away (torch moves it there anyway
        # when the batch is put on the result queue; allocating it there saves that copy).
        buffer = torch.empty(0, dtype=torch.uint8)
        shared = get_worker_info() is not None and size > 0  # an empty segment cannot be mapped
        buffer.set_(torch.UntypedStorage._new_shared(size) if shared else torch.UntypedStorage(size))
        for tensor, (offset, dtype, shape) in zip(collector.tensors, layout, strict=True):
            if tensor.numel():
                buffer[offset : offset + tensor.numel() * dtype.itemsize].view(dtype).view(shape).copy_(tensor)
        return (_unpack, (skeleton.getvalue(), buffer, layout))


def collate_graphs(items: Sequence[BaseData]) -> Any:
    """``Batch.from_data_list(items)`` (as ``torch_geometric.loader.DataLoader`` collates),
    wrapped in :class:`PackedBatch` when called in a DataLoader worker process."""
    batch = Batch.from_data_list(list(items))
    return PackedBatch(batch) if get_worker_info() is not None else batch


def graph_loader(dataset: Sequence[BaseData], num_workers: int = 0, **kwargs: Any) -> DataLoader:
    """A ``torch.utils.data.DataLoader`` of graph batches, equal batch for batch to
    ``torch_geometric.loader.DataLoader(dataset, num_workers=num_workers, **kwargs)``.

    With ``num_workers > 0`` each batch crosses from its worker as one shared buffer (see module
    doc) and workers persist across epochs (``persistent_workers``), so an epoch does not pay the
    workers' start-up (fork, reopening files). Samplers are iterated in the main process, so
    ``set_epoch``/``set_start`` on them still take effect. ``kwargs`` go to the DataLoader
    (``batch_size``, ``shuffle``, ``sampler``, ``batch_sampler``, ``pin_memory``, ...).
    """
    if "collate_fn" in kwargs:
        raise TypeError("graph_loader collates graphs itself; use torch.utils.data.DataLoader for a custom collate_fn")
    kwargs.setdefault("persistent_workers", num_workers > 0)
    return DataLoader(dataset, num_workers=num_workers, collate_fn=collate_graphs, **kwargs)
