"""Radial embedding of edge lengths: Bessel basis x polynomial cutoff, and MACE's radial MLP."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from e3nn.math import normalize2mom


class BesselBasis(torch.nn.Module):
    """``sqrt(2 / r_max) * sin(n pi r / r_max) / r`` for ``n = 1..num_basis`` (MACE eq. 7).

    Shapes: ``r [n_edges, 1] (Å) -> [n_edges, num_basis]``.
    """

    def __init__(self, r_max: float, num_basis: int = 8):
        super().__init__()
        if r_max <= 0 or num_basis < 1:
            raise ValueError(f"need r_max > 0 and num_basis >= 1, got r_max={r_max}, num_basis={num_basis}")
        self.r_max, self.num_basis = float(r_max), int(num_basis)
        frequencies = math.pi / r_max * torch.linspace(1.0, num_basis, num_basis, dtype=torch.float64)
        self.register_buffer("frequencies", frequencies.to(torch.get_default_dtype()))
        self.prefactor = math.sqrt(2.0 / r_max)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return self.prefactor * torch.sin(self.frequencies * r) / r  # [n_edges, num_basis]

    def extra_repr(self) -> str:
        return f"r_max={self.r_max}, num_basis={self.num_basis}"


class PolynomialCutoff(torch.nn.Module):
    """Smooth envelope from 1 at r = 0 to 0 at r_max, ``p`` continuous derivatives (MACE eq. 8).

    ``f(x) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2)`` with ``x = r / r_max``,
    zero beyond r_max. Shapes: ``r [n_edges, 1] -> [n_edges, 1]``.
    """

    def __init__(self, r_max: float, p: int = 5):
        super().__init__()
        if p < 1:
            raise ValueError(f"polynomial cutoff order p must be >= 1, got {p}")
        self.r_max, self.p = float(r_max), int(p)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        p, x = self.p, r / self.r_max
        envelope = (
            1.0
            - ((p + 1.0) * (p + 2.0) / 2.0) * torch.pow(x, p)
            + p * (p + 2.0) * torch.pow(x, p + 1)
            - (p * (p + 1.0) / 2.0) * torch.pow(x, p + 2)
        )
        return envelope * (r < self.r_max)

    def extra_repr(self) -> str:
        return f"r_max={self.r_max}, p={self.p}"


class RadialEmbedding(torch.nn.Module):
    """Edge-length features: Bessel basis times the polynomial cutoff.

    Shapes: ``lengths [n_edges, 1] (Å) -> [n_edges, num_bessel]``.
    """

    def __init__(self, r_max: float, num_bessel: int = 8, num_polynomial_cutoff: int = 5):
        super().__init__()
        self.bessel = BesselBasis(r_max, num_bessel)
        self.cutoff = PolynomialCutoff(r_max, num_polynomial_cutoff)
        self.out_dim = num_bessel

    def forward(self, lengths: torch.Tensor) -> torch.Tensor:
        return self.bessel(lengths) * self.cutoff(lengths)  # [n_edges, num_bessel]


class RadialMLP(torch.nn.Module):
    """MLP without biases and with e3nn's normalisation (as ``e3nn.nn.FullyConnectedNet``, used by MACE).

    Each layer computes ``x @ W / sqrt(fan_in)``; hidden layers apply ``act`` rescaled to unit
    second moment (``normalize2mom``); the last layer is linear. ``weights[i]`` has shape
    ``[h_i, h_{i+1}]`` (standard normal at initialisation), so e3nn / mace-torch weights copy over.

    Shapes: ``[n_edges, hs[0]] -> [n_edges, hs[-1]]``.
    """

    def __init__(self, hs: Sequence[int], act=torch.nn.functional.silu):
        super().__init__()
        self.hs = [int(h) for h in hs]
        if len(self.hs) < 2:
            raise ValueError(f"radial MLP needs at least input and output sizes, got {self.hs}")
        self.weights = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.randn(h_in, h_out)) for h_in, h_out in zip(self.hs, self.hs[1:])]
        )
        self.act = normalize2mom(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.weights) - 1
        for i, w in enumerate(self.weights):
            x = x @ (w / math.sqrt(w.shape[0]))
            if i < last:
                x = self.act(x)
        return x

    def extra_repr(self) -> str:
        return f"hs={self.hs}"
