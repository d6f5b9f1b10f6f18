"""What every execution method of the ``cg`` backend provides: an :class:`Executor`."""

from __future__ import annotations

import numpy as np
import torch

from ..base import ConstantTables


class Executor(ConstantTables):
    """Runs one execution method on a product planned by :func:`~.planner.plan`.

    Call ``executor(x1 [Z, dim1], x2 [Z, dim2], weight) -> [Z, dim_out]`` (mul_ir layout) with
    ``weight`` ``[Z, weight_numel]`` (per sample), ``[weight_numel]`` (shared) or ``None``
    (no weighted path). Executors hold only constants built at plan time: float64 tables
    (:meth:`add_table`, handed out per dtype and device) and integer index tables
    (:meth:`add_index`, per device), so products with equal descriptors can share one.
    """

    #: the execution method this executor runs (a concrete name, never ``"auto"``).
    method: str

    def __init__(self):
        self._init_tables()
        self._indices: dict[str, torch.Tensor] = {}
        self._index_cache: dict[tuple, torch.Tensor] = {}

    def add_index(self, name: str, array) -> None:
        """Keep an integer index table (int64, on the CPU until asked for elsewhere)."""
        self._indices[name] = torch.as_tensor(np.asarray(array, dtype=np.int64))

    def index(self, name: str, device: torch.device) -> torch.Tensor:
        """The index table ``name`` on ``device`` (cached)."""
        key = (name, device)
        cached = self._index_cache.get(key)
        if cached is None:
            cached = self._indices[name].to(device)
            self._index_cache[key] = cached
        return cached

    def __call__(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def message_passing(self, x1, x2, weight, sender, receiver) -> torch.Tensor:
        """``out[n] = sum over edges e with receiver[e] == n of self(x1[sender[e]], x2[e], w[e])``:
        gather, product, ``index_add``. An executor that fuses the three steps overrides it."""
        messages = self(x1[sender], x2, weight)
        return messages.new_zeros(x1.shape[0], messages.shape[1]).index_add(0, receiver, messages)


class PathSplit(Executor):
    """Paths split between executors, each running some of the instructions; outputs summed."""

    def __init__(self, parts: list[Executor]):
        super().__init__()
        self.parts = parts
        self.method = "+".join(part.method for part in parts)

    def __call__(self, x1, x2, weight):
        out = self.parts[0](x1, x2, weight)
        for part in self.parts[1:]:
            out = out + part(x1, x2, weight)
        return out


def weight_slot(weight: torch.Tensor | None, has_unweighted: bool, like: torch.Tensor) -> torch.Tensor:
    """The weights as the weight slot of the 4-linear form: ``[R, weight_numel (+ 1)]``.

    ``R`` is the number of weight rows (1 for shared weights or none). When a path has no
    weight, a column of ones is appended and that path reads it, so the product stays linear in
    the weight slot (its derivatives rely on that). ``like`` gives dtype and device when
    ``weight`` is ``None``.
    """
    if weight is None:
        w = like.new_zeros(1, 0)
    else:
        w = weight if weight.ndim == 2 else weight.unsqueeze(0)
    if has_unweighted:
        w = torch.cat([w, w.new_ones(w.shape[0], 1)], dim=1)
    return w
