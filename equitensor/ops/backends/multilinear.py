"""Autograd for products written as one 4-linear form, to every order of derivative, as
``torch.library`` custom ops.

A bilinear product with weights, ``out = T(x1, x2, w)``, is the 4-linear form
``Phi(out, x1, x2, w) = <out, T(x1, x2, w)>``. Its forward pass and every derivative of every
order is one operation: *contract three slots into the fourth*. A kernel (the ``cg`` backend's
term-list kernel, its channel-wise kernel, ...) only has to provide two CPU functions:

* ``contract(target, sources, rows, width, tables) -> Tensor``: slot ``target``
  ``[rows, width]`` from the other three slots, given in slot order (``OUT, X1, X2, W``);
* ``input_gradients(grad_out, x1, x2, w, tables) -> (g1, g2, gw)``: the three input
  gradients of the forward contraction (shaped like ``x1``, ``x2``, ``w``), ideally from one
  fused pass over the data;

and :func:`define_multilinear_ops` registers them as the custom ops
``equitensor::<name>_contract`` and ``equitensor::<name>_input_gradients`` with fake (meta)
implementations and autograd formulas written in those same two ops. The backward pass of each
contraction is again contractions, so force training (double backward) and higher derivatives
work eagerly and under ``torch.compile(fullgraph=True)`` without any further code.

``tables`` are the kernel's constants (index arrays, coefficients, small integer options) as
CPU tensors: the op signatures hold tensors and ints only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

# Slots of the 4-linear form: the output and the three inputs.
OUT, X1, X2, W = 0, 1, 2, 3
SLOTS = (OUT, X1, X2, W)


class MultilinearOps(NamedTuple):
    """The two registered custom ops of one kernel (see the module docstring)."""

    contract: Callable
    input_gradients: Callable

    def forward(self, x1, x2, w, rows: int, width: int, tables) -> torch.Tensor:
        """The product ``[rows, width]`` (slot ``OUT`` from ``x1, x2, w``), differentiable to any order."""
        return self.contract(OUT, x1, x2, w, rows, width, list(tables))


def define_multilinear_ops(name: str, contract_kernel: Callable, input_gradients_kernel: Callable) -> MultilinearOps:
    """Register ``equitensor::{name}_contract`` and ``equitensor::{name}_input_gradients``.

    ``contract_kernel(target, (a, b, c), rows, width, tables)`` and
    ``input_gradients_kernel(grad_out, x1, x2, w, tables)`` are the CPU implementations;
    they must return fresh tensors (never views of their inputs).
    """

    @torch.library.custom_op(f"equitensor::{name}_contract", mutates_args=(), device_types="cpu")
    def contract(
        target: int,
        a: torch.Tensor,
        b: torch.Tensor,
        c: torch.Tensor,
        rows: int,
        width: int,
        tables: list[torch.Tensor],
    ) -> torch.Tensor:
        return contract_kernel(target, (a, b, c), rows, width, tables)

    @contract.register_fake
    def _(target, a, b, c, rows, width, tables):
        return a.new_empty(rows, width)

    @torch.library.custom_op(f"equitensor::{name}_input_gradients", mutates_args=(), device_types="cpu")
    def input_gradients(
        grad_out: torch.Tensor,
        x1: torch.Tensor,
        x2: torch.Tensor,
        w: torch.Tensor,
        tables: list[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return input_gradients_kernel(grad_out, x1, x2, w, tables)

    @input_gradients.register_fake
    def _(grad_out, x1, x2, w, tables):
        return tuple(t.new_empty(t.shape) for t in (x1, x2, w))

    _register_autograd(contract, input_gradients)
    return MultilinearOps(contract, input_gradients)


def _register_autograd(contract, input_gradients) -> None:
    """The backward formulas of both ops, written in the two ops themselves (so to any order)."""

    def setup_contract(ctx, inputs, output):
        target, a, b, c, _rows, _width, tables = inputs
        ctx.target = target
        ctx.save_for_backward(a, b, c, *tables)

    def backward_contract(ctx, grad):
        a, b, c, *tables = ctx.saved_tensors
        source_slots = [s for s in SLOTS if s != ctx.target]
        needed = ctx.needs_input_grad[1:4]
        no_grads = [None] * len(tables)
        if ctx.target == OUT:  # the forward product: all input gradients from one fused pass
            grads = input_gradients(grad.contiguous(), a, b, c, tables)
            return (None, *(g if need else None for g, need in zip(grads, needed)), None, None, no_grads)
        operands = {**dict(zip(source_slots, (a, b, c))), ctx.target: grad}
        grads = [
            _contract_into(contract, slot, operands, tables) if need else None
            for slot, need in zip(source_slots, needed)
        ]
        return (None, *grads, None, None, no_grads)

    def setup_input_gradients(ctx, inputs, output):
        grad_out, x1, x2, w, tables = inputs
        ctx.save_for_backward(grad_out, x1, x2, w, *tables)

    def backward_input_gradients(ctx, h1, h2, hw):
        # Output r (slot r's gradient) depends on every slot s != r; its derivative w.r.t. slot
        # s, contracted with h_r, is the contraction into s with h_r placed in slot r.
        grad_out, x1, x2, w, *tables = ctx.saved_tensors
        saved = dict(zip(SLOTS, (grad_out, x1, x2, w)))
        grads: dict[int, torch.Tensor] = {}
        for slot_r, h in ((X1, h1), (X2, h2), (W, hw)):
            if h is None:
                continue
            operands = {**saved, slot_r: h}
            for slot_s, need in zip(SLOTS, ctx.needs_input_grad[:4]):
                if slot_s == slot_r or not need:
                    continue
                term = _contract_into(contract, slot_s, operands, tables)
                grads[slot_s] = term if slot_s not in grads else grads[slot_s] + term
        return (*(grads.get(s) for s in SLOTS), [None] * len(tables))

    contract.register_autograd(backward_contract, setup_context=setup_contract)
    input_gradients.register_autograd(backward_input_gradients, setup_context=setup_input_gradients)


def _contract_into(contract, slot: int, operands: dict, tables) -> torch.Tensor:
    """Slot ``slot`` (shaped like its operand) from the three other operands."""
    shape = operands[slot].shape
    sources = [operands[s] for s in SLOTS if s != slot]
    return contract(slot, *sources, shape[0], shape[1], tables)
