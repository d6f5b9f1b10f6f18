"""Element-pair terms of mace-torch's foundation models: ZBL repulsion and distance transforms.

Both look up covalent radii (``ase.data.covalent_radii``, Å) of the two elements of each edge
and follow mace-torch 0.3.16's ``ZBLBasis``, ``AgnesiTransform`` and ``SoftTransform``, so that
converted models (``from_mace``) compute the same numbers. Their constants are buffers, copied
from the mace-torch module on conversion.
"""

from __future__ import annotations

import ase.data
import torch

#: Coulomb constant e^2 / (4 pi eps0) in eV Å, and the Bohr radius in Å (ZBL's values).
COULOMB_EV_ANGSTROM = 14.3996
BOHR_ANGSTROM = 0.529


def _covalent_radii() -> torch.Tensor:
    return torch.tensor(ase.data.covalent_radii, dtype=torch.get_default_dtype())


def polynomial_envelope(x: torch.Tensor, r_max: torch.Tensor, p: int) -> torch.Tensor:
    """MACE's polynomial cutoff with a per-edge ``r_max`` (zero beyond it)."""
    u = x / r_max
    envelope = (
        1.0
        - ((p + 1.0) * (p + 2.0) / 2.0) * torch.pow(u, p)
        + p * (p + 2.0) * torch.pow(u, p + 1)
        - (p * (p + 1.0) / 2.0) * torch.pow(u, p + 2)
    )
    return envelope * (x < r_max)


class ZBLRepulsion(torch.nn.Module):
    """Ziegler-Biersack-Littmark screened nuclear repulsion per atom (eV), smoothly cut off at the
    sum of the two covalent radii with the polynomial envelope of order ``p``.

    Shapes: ``lengths [n_edges, 1], z_sender, z_receiver [n_edges], receiver [n_edges] -> [N]``
    (half of each edge's energy goes to its receiver; each pair appears as two edges).
    """

    def __init__(self, p: int = 5):
        super().__init__()
        self.p = int(p)
        self.register_buffer("c", torch.tensor([0.1818, 0.5099, 0.2802, 0.02817]))
        self.register_buffer("exponents", torch.tensor([3.2, 0.9423, 0.4028, 0.2016]), persistent=False)
        self.register_buffer("a_exp", torch.tensor(0.300))
        self.register_buffer("a_prefactor", torch.tensor(0.4543))
        self.register_buffer("covalent_radii", _covalent_radii(), persistent=False)

    def forward(self, lengths, z_sender, z_receiver, receiver, num_nodes: int) -> torch.Tensor:
        z_u = z_sender.unsqueeze(-1).to(lengths.dtype)
        z_v = z_receiver.unsqueeze(-1).to(lengths.dtype)
        a = self.a_prefactor * BOHR_ANGSTROM / (torch.pow(z_u, self.a_exp) + torch.pow(z_v, self.a_exp))
        phi = (self.c * torch.exp(-self.exponents * (lengths / a))).sum(dim=-1, keepdim=True)
        energy = COULOMB_EV_ANGSTROM * z_u * z_v / lengths * phi  # [n_edges, 1]
        r_max = self.covalent_radii[z_sender] + self.covalent_radii[z_receiver]
        energy = 0.5 * energy * polynomial_envelope(lengths, r_max.unsqueeze(-1).to(lengths.dtype), self.p)
        return energy.new_zeros(num_nodes).index_add(0, receiver, energy[:, 0])


class AgnesiTransform(torch.nn.Module):
    """``r -> 1 / (1 + a (r/r0)^q / (1 + (r/r0)^(q-p)))`` with ``r0`` the mean covalent radius of
    the pair (ACEpotentials' Agnesi transform). Shapes: ``lengths [n_edges, 1] -> [n_edges, 1]``."""

    def __init__(self, q: float = 0.9183, p: float = 4.5791, a: float = 1.0805):
        super().__init__()
        self.register_buffer("q", torch.tensor(q))
        self.register_buffer("p", torch.tensor(p))
        self.register_buffer("a", torch.tensor(a))
        self.register_buffer("covalent_radii", _covalent_radii(), persistent=False)

    def forward(self, lengths, z_sender, z_receiver) -> torch.Tensor:
        r_0 = 0.5 * (self.covalent_radii[z_sender] + self.covalent_radii[z_receiver]).unsqueeze(-1)
        x = lengths / r_0.to(lengths.dtype)
        return 1.0 / (1.0 + self.a * torch.pow(x, self.q) / (1.0 + torch.pow(x, self.q - self.p)))


class SoftTransform(torch.nn.Module):
    """``r -> p0 + (r - p0) (1 + tanh(alpha' (r - m))) / 2`` with ``p0 = 3/4 r0``, ``p1 = 4/3 r0``,
    ``m = (p0 + p1) / 2``, ``alpha' = alpha / (p1 - p0)`` and ``r0`` the sum of the covalent radii."""

    def __init__(self, alpha: float = 4.0):
        super().__init__()
        self.register_buffer("alpha", torch.tensor(alpha))
        self.register_buffer("covalent_radii", _covalent_radii(), persistent=False)

    def forward(self, lengths, z_sender, z_receiver) -> torch.Tensor:
        r_0 = (self.covalent_radii[z_sender] + self.covalent_radii[z_receiver]).unsqueeze(-1).to(lengths.dtype)
        p_0, p_1 = 0.75 * r_0, (4.0 / 3.0) * r_0
        s = 0.5 * (1.0 + torch.tanh(self.alpha / (p_1 - p_0) * (lengths - 0.5 * (p_0 + p_1))))
        return p_0 + (lengths - p_0) * s


DISTANCE_TRANSFORMS = {"Agnesi": AgnesiTransform, "Soft": SoftTransform}


def distance_transform(name: str | None) -> torch.nn.Module | None:
    """The module for mace-torch's ``distance_transform`` name (``None`` / ``"None"``: no transform)."""
    if name in (None, "None"):
        return None
    if name not in DISTANCE_TRANSFORMS:
        raise ValueError(f"unknown distance_transform {name!r}; expected None or one of {sorted(DISTANCE_TRANSFORMS)}")
    return DISTANCE_TRANSFORMS[name]()
