"""A linear map applied block by block to the rows of a matrix, without padding or gathers.

``y = block_matmul(x, blocks, rows_out, tables)``: for every :class:`RowBlock` ``b`` the rows
``x[b.in_start : b.in_start + b.count * b.rows_in]`` hold ``b.count`` matrices ``[rows_in, Z]``,
each mapped by ``tables[b.table] [rows_out, rows_in]`` into the rows of ``y`` from ``b.out_start``;
rows of ``y`` that no block writes are zero. Each block is one batched GEMM that reads its rows of
``x`` in place (a row slice of a transposed ``[Z, R_in]`` tensor is a strided view, which BLAS
reads as a transposed operand) and writes its rows of ``y`` in place, so blocks of different
sizes need neither zero padding to a common size nor an index gather or scatter.

The map is linear with constant tables, so its backward is the same kind of map with the tables
transposed and the roles of ``x`` and ``y`` swapped: derivatives of any order go through it.
Backend ``vsh`` lifts its inputs to grid signals (``rows_in`` = an irrep's ``2l + 1`` components,
``rows_out`` = its signal components times grid points) and projects the grid sums back with it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class RowBlock(NamedTuple):
    """``count`` consecutive matrices ``[rows_in, Z]`` of ``x`` from row ``in_start``, mapped by
    table ``table`` to ``count`` matrices ``[rows_out, Z]`` of ``y`` from row ``out_start``."""

    in_start: int
    out_start: int
    count: int
    rows_in: int
    rows_out: int
    table: int

    def transposed(self) -> RowBlock:
        return RowBlock(self.out_start, self.in_start, self.count, self.rows_out, self.rows_in, self.table)


def covers(blocks: tuple[RowBlock, ...], rows_out: int) -> bool:
    """Whether the blocks write every one of ``rows_out`` rows (else the rest must be zeroed)."""
    return sum(b.count * b.rows_out for b in blocks) == rows_out


def block_matmul(x: torch.Tensor, blocks: tuple[RowBlock, ...], rows_out: int, tables: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """``y [rows_out, Z]`` from ``x [R_in, Z]`` (see the module docstring); differentiable to any order.

    The blocks must write disjoint rows of ``y``; ``tables`` are constants (no gradient). Eager
    runs write every block's GEMM into ``y`` in place (:class:`BlockMatmul`); ``torch.compile``
    and functorch transforms get the same map from plain ops (:func:`block_matmul_plain`).
    """
    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        return block_matmul_plain(x, blocks, rows_out, tables)
    return BlockMatmul.apply(x, blocks, rows_out, *tables)


def block_matmul_plain(x: torch.Tensor, blocks: tuple[RowBlock, ...], rows_out: int, tables: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """:func:`block_matmul` from differentiable out-of-place ops: one batched matmul per block,
    concatenated in row order with zero rows where no block writes."""
    z = x.shape[1]
    pieces, row = [], 0
    for b in sorted(blocks, key=lambda b: b.out_start):
        if b.out_start > row:
            pieces.append(x.new_zeros(b.out_start - row, z))
        source = x[b.in_start : b.in_start + b.count * b.rows_in].reshape(b.count, b.rows_in, z)
        pieces.append((tables[b.table] @ source).reshape(b.count * b.rows_out, z))
        row = b.out_start + b.count * b.rows_out
    if rows_out > row:
        pieces.append(x.new_zeros(rows_out - row, z))
    return torch.cat(pieces) if pieces else x.new_zeros(rows_out, z)


class BlockMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, blocks, rows_out, *tables):
        ctx.blocks, ctx.rows_in = blocks, x.shape[0]
        ctx.save_for_backward(*tables)
        return _apply(x, blocks, rows_out, tables)

    @staticmethod
    def backward(ctx, grad_y):
        tables = tuple(t.mT for t in ctx.saved_tensors)
        transposed = tuple(b.transposed() for b in ctx.blocks)
        grad_x = BlockMatmul.apply(grad_y, transposed, ctx.rows_in, *tables) if ctx.needs_input_grad[0] else None
        return grad_x, None, None, *(None for _ in tables)


def _apply(x: torch.Tensor, blocks, rows_out: int, tables) -> torch.Tensor:
    z = x.shape[1]
    make = torch.empty if covers(blocks, rows_out) else torch.zeros
    y = make(rows_out, z, dtype=x.dtype, device=x.device)
    for b in blocks:
        source = x[b.in_start : b.in_start + b.count * b.rows_in].view(b.count, b.rows_in, z)
        target = y[b.out_start : b.out_start + b.count * b.rows_out].view(b.count, b.rows_out, z)
        table = tables[b.table]
        torch.bmm(table.expand(b.count, -1, -1), source, out=target)
    return y
