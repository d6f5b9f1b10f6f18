"""``CGBackend``: the registered ``cg`` backend, a thin module over :func:`~.planner.plan`."""

from __future__ import annotations

import torch

from ..base import TensorProductBackend, instruction_paths
from ...descriptor import TensorProductDescriptor
from .executor import Executor
from .planner import check_method, plan, refusal

#: devices the backend plans for at construction: the CPU, and "meta" standing for every other
#: device (the planner only asks whether inputs are on the CPU).
_PLANNED_DEVICES = ("cpu", "meta")


class CGBackend(TensorProductBackend):
    """Exact CG product (see :mod:`equitensor.ops.backends.cg` for the execution methods).

    Args:
        descriptor: the validated product.
        method: one of :data:`~.planner.METHODS`.

    The executors for the CPU and for other devices, with per-sample and with shared weights,
    are planned here, so that :meth:`forward` (and a ``torch.compile`` trace of it) only looks
    one up; a device the method cannot run on raises the planner's reason when called.
    """

    # the per-path einsum reference: the numba kernels implement reverse-mode autograd only
    analysis_options = {"method": "naive"}

    def __init__(self, descriptor: TensorProductDescriptor, method: str = "auto"):
        super().__init__(descriptor)
        check_method(descriptor, method)
        self.requested_method = method
        self.weight_numel = descriptor.weight_numel
        self.paths = instruction_paths(descriptor)
        # moves with the module (.to(device)), so that `method` can name what runs there
        self.register_buffer("_device_marker", torch.empty(0), persistent=False)
        self._executors: dict[tuple[bool, bool], Executor] = {}
        for device in _PLANNED_DEVICES:
            if refusal(method, device) is None:
                for shared in (False, True):
                    self._executors[_key(device, shared)] = plan(descriptor, method, device, shared)

    @property
    def method(self) -> str:
        """The method that runs on this module's device with per-sample weights (see :meth:`method_for`)."""
        return self.method_for(self._device_marker.device, shared=False)

    def method_for(self, device: torch.device | str, shared: bool) -> str:
        """The method that runs for inputs on ``device`` with shared (or no) / per-sample weights.

        ``auto`` resolves to a concrete name (:func:`~.planner.choose_method`); a CPU-only method
        asked for explicitly is never replaced: off the CPU it raises ``ValueError``.
        """
        return self.executor_for(device, shared).method

    @property
    def executor(self) -> Executor:
        """The executor that runs on this module's device with per-sample weights."""
        return self.executor_for(self._device_marker.device, shared=False)

    def executor_for(self, device: torch.device | str, shared: bool) -> Executor:
        """The executor for inputs on ``device`` with shared (or no) / per-sample weights."""
        executor = self._executors.get(_key(device, shared))
        if executor is None:  # every device the method runs on is planned: this raises why not
            executor = plan(self.descriptor, self.requested_method, device, shared)
        return executor

    def forward(self, x1, x2, weight):
        return self.executor_for(x1.device, _shared(weight))(x1, x2, weight)

    def message_passing(self, x1, x2, weight, sender, receiver):
        """Gather-product-scatter; fused in one kernel when the method that runs is ``channelwise``."""
        return self.executor_for(x1.device, _shared(weight)).message_passing(x1, x2, weight, sender, receiver)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, method={self.requested_method!r}"


def _key(device: torch.device | str, shared: bool) -> tuple[bool, bool]:
    return torch.device(device).type == "cpu", shared


def _shared(weight: torch.Tensor | None) -> bool:
    return weight is None or weight.ndim == 1
