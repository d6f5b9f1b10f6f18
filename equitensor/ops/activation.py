"""Equivariant non-linearities: gate and norm activation."""

from __future__ import annotations

import torch
from e3nn.math import normalize2mom

from ..irreps import Irreps, as_irreps, check_last_dim


class Gate(torch.nn.Module):
    """Gated non-linearity (as ``e3nn.nn.Gate``).

    Input ``[..., scalars | gates | gated]``: scalars go through ``act_scalars``; each gated
    irrep block (multiplicity ``k``) is multiplied channel-wise by ``act_gates`` of its ``k``
    gate scalars. Output ``[..., scalars | gated]``.

    Args:
        irreps_scalars: scalar irreps (``0e``/``0o``) passed through ``act_scalars``.
        irreps_gated: non-scalar irreps to gate; ``irreps_gates`` is ``num_channels x 0e``
            with ``num_channels = irreps_gated.num_irreps``.
        act_scalars, act_gates: element-wise functions (e.g. ``torch.nn.functional.silu``, ``torch.sigmoid``).
        normalize_activations: rescale each activation to unit second moment under N(0, 1)
            inputs, with e3nn's own ``normalize2mom`` (as ``e3nn.nn.Gate`` and MACE do), so
            ported weights give identical outputs.
    """

    def __init__(
        self,
        irreps_scalars,
        irreps_gated,
        act_scalars=torch.nn.functional.silu,
        act_gates=torch.sigmoid,
        normalize_activations: bool = True,
    ):
        super().__init__()
        self.irreps_scalars = as_irreps(irreps_scalars)
        self.irreps_gated = as_irreps(irreps_gated)
        if any(ir.l != 0 for _, ir in self.irreps_scalars):
            raise ValueError(f"irreps_scalars must contain only l=0 irreps, got {self.irreps_scalars}")
        self.irreps_gates = (
            Irreps(f"{self.irreps_gated.num_irreps}x0e") if self.irreps_gated.num_irreps else Irreps("")
        )
        self.irreps_in = self.irreps_scalars + self.irreps_gates + self.irreps_gated
        self.irreps_out = self.irreps_scalars + self.irreps_gated
        if normalize_activations:
            act_scalars, act_gates = normalize2mom(act_scalars), normalize2mom(act_gates)
        self.act_scalars, self.act_gates = act_scalars, act_gates
        # each gate scalar repeated over the 2l+1 components of its gated irrep
        repeats = [ir.dim for mul, ir in self.irreps_gated for _ in range(mul)]
        self.register_buffer("_repeats", torch.tensor(repeats, dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_last_dim(x, self.irreps_in, "x")
        n_s, n_g = self.irreps_scalars.dim, self.irreps_gates.dim
        scalars, gates, gated = x[..., :n_s], x[..., n_s : n_s + n_g], x[..., n_s + n_g :]
        scalars = self.act_scalars(scalars)
        if n_g == 0:
            return scalars
        gates = torch.repeat_interleave(self.act_gates(gates), self._repeats, dim=-1)
        return torch.cat([scalars, gated * gates], dim=-1)


class NormActivation(torch.nn.Module):
    """Scale each irrep by ``act(|x|) / |x|`` (scalars too, through their absolute value).

    Shapes: ``[..., irreps.dim] -> [..., irreps.dim]``. ``epsilon`` keeps the gradient finite at 0.
    """

    def __init__(self, irreps, act=torch.sigmoid, epsilon: float = 1e-8):
        super().__init__()
        self.irreps = as_irreps(irreps)
        self.act, self.epsilon = act, epsilon

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_last_dim(x, self.irreps, "x")
        outs = []
        for s, (mul, ir) in zip(self.irreps.slices(), self.irreps):
            block = x[..., s].reshape(*x.shape[:-1], mul, ir.dim)
            norm = torch.sqrt(block.pow(2).sum(-1, keepdim=True) + self.epsilon)
            outs.append((block * self.act(norm) / norm).reshape(*x.shape[:-1], mul * ir.dim))
        return torch.cat(outs, dim=-1) if outs else x
