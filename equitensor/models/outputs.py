"""Forces, stress and virials of any energy model, by autograd (model-agnostic).

A model supplies ``energy [B]`` as a differentiable function of the atom positions and of a
per-graph strain; this module prepares those inputs and differentiates:

* forces ``F = -dE/dr`` ``[N, 3]`` (eV/Å);
* virials ``W = -dE/d(eps)`` ``[B, 3, 3]`` (eV) for the symmetric strain
  ``r -> r (1 + eps)``, ``cell -> cell (1 + eps)`` applied at ``eps = 0``;
* stress ``sigma = (1/V) dE/d(eps) = -W / V`` ``[B, 3, 3]`` (eV/Å^3), zero for graphs that are
  not periodic (or have a zero volume).

Nothing here reads tensor values on the host, so :func:`derivatives` runs inside
``torch.compile(fullgraph=True)``. The gradient leaves (positions that require grad, the strain
displacement) must exist *before* a compiled region: :func:`gradient_leaves` makes them, in
eager code (``torch.compile`` cannot trace ``requires_grad_``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class GraphTensors(NamedTuple):
    """The tensors of a batch of graphs that an energy model reads (the datasets' contract).

    ``pos [N, 3]``, ``atomic_numbers [N]`` int64, ``cell [B, 3, 3]`` (rows are lattice vectors),
    ``pbc [B, 3]`` bool, ``edge_index [2, n_edges]`` (row 0 sender, row 1 receiver),
    ``cell_offsets [n_edges, 3]``, ``node_graph [N]`` (graph of each atom, int64).
    The number of graphs is ``cell.shape[0]``.
    """

    pos: torch.Tensor
    atomic_numbers: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    edge_index: torch.Tensor
    cell_offsets: torch.Tensor
    node_graph: torch.Tensor


def graph_tensors(batch) -> GraphTensors:
    """:class:`GraphTensors` of a torch-geometric ``Data``/``Batch`` (a single ``Data`` is one
    graph); ``cell``/``cell_offsets`` are cast to the dtype of ``pos``. No host reads."""
    pos = batch.pos
    node_graph = getattr(batch, "batch", None)
    if node_graph is None:
        node_graph = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
    return GraphTensors(
        pos=pos,
        atomic_numbers=batch.atomic_numbers,
        cell=batch.cell.reshape(-1, 3, 3).to(pos.dtype),
        pbc=batch.pbc.reshape(-1, 3),
        edge_index=batch.edge_index,
        cell_offsets=batch.cell_offsets.to(pos.dtype),
        node_graph=node_graph,
    )


def sum_per_graph(values: torch.Tensor, node_graph: torch.Tensor, num_graphs: int) -> torch.Tensor:
    """Per-atom ``values [N, ...]`` summed into per-graph ``[num_graphs, ...]`` by ``node_graph [N]``.

    ``scatter_add``, not ``index_add``: inductor's CPU code generation (torch 2.13) fails on an
    ``index_add`` into a one-row output from a dynamic number of atoms, which is every single-system
    call of a compiled model.
    """
    index = node_graph.reshape(-1, *([1] * (values.dim() - 1))).expand_as(values)
    return values.new_zeros((num_graphs, *values.shape[1:])).scatter_add(0, index, values)


def gradient_leaves(
    graph: GraphTensors, compute_forces: bool, compute_stress: bool
) -> tuple[GraphTensors, torch.Tensor | None]:
    """``graph`` with positions that require grad (a detached copy unless they already do) and
    the strain displacement ``[B, 3, 3]`` (zeros, requires grad; ``None`` without stress).

    Eager code only: call it before entering a compiled function.
    """
    pos = graph.pos
    if (compute_forces or compute_stress) and not pos.requires_grad:
        pos = pos.detach().requires_grad_(True)
    displacement = None
    if compute_stress:
        num_graphs = graph.cell.shape[0]
        displacement = torch.zeros(num_graphs, 3, 3, dtype=pos.dtype, device=pos.device, requires_grad=True)
    return graph._replace(pos=pos), displacement


def strained(graph: GraphTensors, displacement: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions ``[N, 3]`` and cells ``[B, 3, 3]`` under the symmetric strain
    ``eps = (d + d^T) / 2`` of ``displacement`` (the inputs themselves when it is ``None``)."""
    if displacement is None:
        return graph.pos, graph.cell
    strain = 0.5 * (displacement + displacement.transpose(1, 2))
    positions = graph.pos + torch.einsum("ni,nij->nj", graph.pos, strain[graph.node_graph])
    return positions, graph.cell + graph.cell @ strain


def edge_vectors(graph: GraphTensors, positions: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    """``[n_edges, 3]``: ``positions[receiver] - positions[sender] + cell_offsets @ cell[graph of sender]``."""
    sender, receiver = graph.edge_index[0], graph.edge_index[1]
    shifts = torch.einsum("ei,eij->ej", graph.cell_offsets, cell[graph.node_graph[sender]])
    return positions[receiver] - positions[sender] + shifts


def derivatives(
    energy: torch.Tensor,
    graph: GraphTensors,
    displacement: torch.Tensor | None,
    compute_forces: bool,
    compute_stress: bool,
    training: bool,
) -> dict[str, torch.Tensor | None]:
    """``forces``, ``virials`` and ``stress`` of ``energy [B]`` (module docstring for the
    conventions); entries not asked for are ``None``.

    ``graph.pos`` and ``displacement`` must be the leaves of :func:`gradient_leaves` that
    ``energy`` was computed from. ``training=True`` keeps the graph (``create_graph``) so that a
    loss on the forces or stress backpropagates to the parameters.
    """
    forces = virials = stress = None
    if not (compute_forces or compute_stress):
        return {"forces": forces, "virials": virials, "stress": stress}
    inputs = [graph.pos] + ([displacement] if compute_stress else [])
    grads = torch.autograd.grad(
        [energy.sum()], inputs, create_graph=training, retain_graph=training, allow_unused=True
    )
    if compute_forces:
        forces = -grads[0] if grads[0] is not None else torch.zeros_like(graph.pos)
    if compute_stress:
        d_energy = grads[1] if grads[1] is not None else torch.zeros_like(displacement)
        virials = -d_energy
        volume = torch.linalg.det(graph.cell).abs()  # [B]
        periodic = graph.pbc.any(dim=1) & (volume > 0)
        safe_volume = torch.where(periodic, volume, torch.ones_like(volume))
        stress = torch.where(
            periodic[:, None, None], d_energy / safe_volume[:, None, None], torch.zeros_like(d_energy)
        )
    return {"forces": forces, "virials": virials, "stress": stress}
