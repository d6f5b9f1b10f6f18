"""``torch.compile`` of an energy model with its forces and stress (``compile_model``).

The compiled unit is the model's ``predict(graph, displacement, compute_forces,
compute_stress, training)``: tensors in, no host reads, forces and stress by
``torch.autograd.grad`` inside the graph (dynamo's ``trace_autograd_ops``). What cannot be
traced stays outside, in eager code run on every call: taking the tensors off the batch and
making the gradient leaves (``requires_grad_`` on positions, the strain displacement).
"""

from __future__ import annotations

import torch

from .outputs import GraphTensors, gradient_leaves, graph_tensors

#: (GraphTensors field, dimension) that vary from call to call: atoms and edges.
_ATOM_AND_EDGE_DIMS = (("pos", 0), ("atomic_numbers", 0), ("node_graph", 0), ("edge_index", 1), ("cell_offsets", 0))


class CompiledModel(torch.nn.Module):
    """A model whose ``forward(batch, compute_forces=True, compute_stress=False, training=False)``
    runs ``torch.compile(model.predict)``; same outputs as ``model(batch, check_inputs=False)``.

    ``dynamic=True`` marks the atom and edge counts (and the graph count when above one) dynamic,
    so one compiled graph serves every size: it recompiles only when the flags change
    (``compute_forces``/``compute_stress``/``training``, each combination once), when the
    number of graphs goes from one to several, for sizes 0 and 1 (which torch specialises), on
    a new dtype or device, and after ``model.train()``/``eval()`` switches.
    ``dynamic=False`` compiles once per distinct shape (faster code, many recompiles).
    Inputs are not validated (see ``MACE.check_inputs``).
    """

    def __init__(self, model: torch.nn.Module, dynamic: bool = True, **compile_options):
        super().__init__()
        self.model = model
        self.dynamic = bool(dynamic)
        compile_options.setdefault("fullgraph", True)
        self._predict = torch.compile(model.predict, dynamic=False if not dynamic else None, **compile_options)
        self._warm: set[tuple] = set()

    def forward(self, batch, compute_forces: bool = True, compute_stress: bool = False, training: bool = False):
        graph = graph_tensors(batch)
        key = (graph.pos.dtype, graph.pos.device)
        if key not in self._warm:
            # Backends build their constant tables per dtype/device on first use; one eager pass
            # builds them before tracing, so that no guard depends on a cache being empty.
            with torch.no_grad():
                self.model.predict(graph, None, False, False, False)
            self._warm.add(key)
        graph, displacement = gradient_leaves(graph, compute_forces, compute_stress)
        if self.dynamic:
            _mark_sizes_dynamic(graph, displacement)
        with torch._dynamo.config.patch(trace_autograd_ops=True):
            return self._predict(graph, displacement, compute_forces, compute_stress, training)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["model"], name)  # r_max, atomic_numbers, config, ...


def compile_model(model: torch.nn.Module, dynamic: bool = True, **compile_options) -> CompiledModel:
    """``CompiledModel(model, dynamic, **compile_options)``: ``model`` must provide
    ``predict(graph, displacement, compute_forces, compute_stress, training)`` (as
    :class:`~equitensor.models.MACE` does); ``compile_options`` go to ``torch.compile``
    (``fullgraph=True`` unless given)."""
    return CompiledModel(model, dynamic, **compile_options)


def _mark_sizes_dynamic(graph: GraphTensors, displacement: torch.Tensor | None) -> None:
    for field, dim in _ATOM_AND_EDGE_DIMS:
        torch._dynamo.maybe_mark_dynamic(getattr(graph, field), dim)
    if graph.cell.shape[0] > 1:
        for tensor in (graph.cell, graph.pbc) + ((displacement,) if displacement is not None else ()):
            torch._dynamo.maybe_mark_dynamic(tensor, 0)
