"""Autograd for products written as one 4-linear form, to every order of derivative.

A bilinear product with weights, ``out = T(x1, x2, w)``, is the 4-linear form
``Phi(out, x1, x2, w) = <out, T(x1, x2, w)>``. Its forward pass and every derivative of every
order is one operation: *contract three slots into the fourth*. An executor (the ``cg``
backend's term-list kernel, its channel-wise kernel, ...) only has to provide

* ``contract(target, sources) -> Tensor``: slot ``target`` from the other three slots, given in
  slot order (``OUT, X1, X2, W``);
* ``input_gradients(grad_out, x1, x2, w) -> (g1, g2, gw)``: the three input gradients of the
  forward contraction, ideally from one fused pass over the data;

and :func:`apply_forward` turns it into a differentiable product: the backward pass of each
contraction is again contractions, so force training (double backward) and higher
derivatives work without any further code.
"""

from __future__ import annotations

import torch

# Slots of the 4-linear form: the output and the three inputs.
OUT, X1, X2, W = 0, 1, 2, 3
SLOTS = (OUT, X1, X2, W)


def apply_forward(executor, x1: torch.Tensor, x2: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``executor.contract(OUT, (x1, x2, w))``, differentiable to any order."""
    return _Forward.apply(executor, x1, x2, w)


class _Forward(torch.autograd.Function):
    """The forward contraction (slot ``out``), with all input gradients from one fused pass.

    Its backward is :class:`_InputGradients`, whose own derivatives are
    :class:`_SlotContraction` calls: every order of derivative stays available.
    """

    @staticmethod
    def forward(ctx, executor, x1, x2, w):
        ctx.executor = executor
        ctx.save_for_backward(x1, x2, w)
        return executor.contract(OUT, (x1, x2, w))

    @staticmethod
    def backward(ctx, grad):
        x1, x2, w = ctx.saved_tensors
        g1, g2, gw = _InputGradients.apply(ctx.executor, grad, x1, x2, w)
        needed = ctx.needs_input_grad[1:]
        return (None, *(g if need else None for g, need in zip((g1, g2, gw), needed)))


class _InputGradients(torch.autograd.Function):
    """``(d/dx1, d/dx2, d/dw)`` of ``<grad_out, forward(x1, x2, w)>`` (fused)."""

    @staticmethod
    def forward(ctx, executor, grad_out, x1, x2, w):
        ctx.executor = executor
        ctx.save_for_backward(grad_out, x1, x2, w)
        return executor.input_gradients(grad_out, x1, x2, w)

    @staticmethod
    def backward(ctx, h1, h2, hw):
        # Output r (slot r's gradient) depends on every slot s != r; its derivative w.r.t. slot
        # s, contracted with h_r, is the contraction into s with h_r placed in slot r.
        executor = ctx.executor
        saved = dict(zip(SLOTS, ctx.saved_tensors))
        grads: dict[int, torch.Tensor] = {}
        for slot_r, h in ((X1, h1), (X2, h2), (W, hw)):
            if h is None:
                continue
            operands = {**saved, slot_r: h}
            for slot_s, needed in zip(SLOTS, ctx.needs_input_grad[1:]):
                if slot_s == slot_r or not needed:
                    continue
                term = _SlotContraction.apply(executor, slot_s, *(operands[q] for q in SLOTS if q != slot_s))
                grads[slot_s] = term if slot_s not in grads else grads[slot_s] + term
        return (None, *(grads.get(s) for s in SLOTS))


class _SlotContraction(torch.autograd.Function):
    """Slot ``target`` of the 4-linear form from the three other slots (given in slot order).

    The derivative of this contraction w.r.t. another slot, contracted with the incoming
    gradient, is the contraction into that slot with the gradient in place of ``target``: the
    same Function, so derivatives of every order work.
    """

    @staticmethod
    def forward(ctx, executor, target: int, *sources: torch.Tensor) -> torch.Tensor:
        ctx.executor, ctx.target = executor, target
        ctx.save_for_backward(*sources)
        return executor.contract(target, sources)

    @staticmethod
    def backward(ctx, grad):
        executor, target = ctx.executor, ctx.target
        source_slots = [s for s in SLOTS if s != target]
        operands = dict(zip(source_slots, ctx.saved_tensors))
        operands[target] = grad
        grads = []
        for slot, needed in zip(source_slots, ctx.needs_input_grad[2:]):
            if not needed:
                grads.append(None)
                continue
            others = [operands[s] for s in SLOTS if s != slot]
            grads.append(_SlotContraction.apply(executor, slot, *others))
        return (None, None, *grads)
