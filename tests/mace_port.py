"""Test-only: copy a mace-torch (0.3.x, e3nn 0.4.4) ``ScaleShiftMACE`` state_dict into our MACE.

Three things are not a plain copy:

1. **wigner_3j phases.** e3nn 0.4.4 and 0.5+ differ by a sign on some ``wigner_3j(l1, l2, l3)``
   blocks. A convolution path ``l1 x l2 -> l3`` whose block flipped produces the negated output, so
   the radial-MLP output columns that weight that path are negated (the sign comes from comparing
   the 0.4.4 tables written by the mace side with ours). Same for the ``skip_tp`` paths ``l x 0 -> l``.
2. **Symmetric-contraction basis.** mace-torch (without cuequivariance) keeps every coupling path
   ``U_nu [2L+1, d..., K_mace]``, linearly dependent once contracted with the symmetric ``x^nu``;
   ours is a reduced orthogonal basis ``[2L+1, d..., K]`` of the same space. With
   ``Sym(U_mace) = U_ours @ A`` (exact, solved by least squares), the weights map as
   ``w_ours[e, :, c] = A @ w_mace[e, :, c]``.
3. Conv weight order: mace-torch sorts its convolution instructions by output block, ours keep
   the path order (input block outer); the radial-MLP output columns are permuted accordingly.
4. Names: ``conv_tp_weights.layer{i}.weight -> conv_tp_weights.weights.{i}``, ``skip_tp -> skip``,
   ``symmetric_contractions.contractions.{o}.weights_max / weights.{j}`` ->
   ``product.impl.weights["out{o}_nu{nu}"]``; E0s, scale and shift go to the constructor.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from equitensor import so3
from equitensor.so3.coupling import symmetric_coupling_basis


def w3j_sign(w3j_mace: dict, l1: int, l2: int, l3: int) -> float:
    """+1 or -1: the phase of mace's (e3nn 0.4.4) ``wigner_3j`` block relative to ours."""
    theirs = np.asarray(w3j_mace[f"{l1},{l2},{l3}"], dtype=np.float64)
    overlap = float((theirs * so3.wigner_3j(l1, l2, l3)).sum())
    if abs(abs(overlap) - 1) > 1e-9:
        raise AssertionError(f"wigner_3j({l1},{l2},{l3}) differs by more than a sign (overlap {overlap})")
    return math.copysign(1.0, overlap)


def symmetric_contraction_map(u_mace: torch.Tensor, coupling, ir_out, nu: int) -> np.ndarray:
    """``A [K, K_mace]`` with ``Sym(U_mace) = U_ours @ A``; raises if mace's span is not ours."""
    u = u_mace.double().numpy()
    if ir_out[0] == 0:
        u = u[None]
    m, k_mace = u.shape[0], u.shape[-1]
    sym = np.zeros_like(u)
    perms = list(itertools.permutations(range(1, nu + 1)))
    for perm in perms:
        sym += np.transpose(u, (0, *perm, nu + 1))
    sym = (sym / len(perms)).reshape(-1, k_mace)
    ours = symmetric_coupling_basis(coupling, ir_out, nu).reshape(-1, symmetric_coupling_basis(coupling, ir_out, nu).shape[-1])
    a, *_ = np.linalg.lstsq(ours, sym, rcond=None)
    residual = np.abs(ours @ a - sym).max(initial=0.0)
    if residual > 1e-10 * max(1.0, np.abs(sym).max(initial=0.0)):
        raise AssertionError(f"mace's U_{nu} for {ir_out} is not in our coupling space (residual {residual})")
    return a


def port_mace_state_dict(model, state: dict, w3j_mace: dict) -> dict:
    """Load mace-torch weights ``state`` into our ``model`` (built with the same hyper-parameters).

    Returns a small report: the number of sign-flipped conv paths and the symmetric-contraction
    sizes ``(K_mace, K_ours)``.
    """
    ours = {}
    flipped, sizes = 0, []
    ours["node_embedding.weight"] = state["node_embedding.linear.weight"]
    for t, interaction in enumerate(model.interactions):
        p = f"interactions.{t}."
        ours[p + "linear_up.weight"] = state[p + "linear_up.weight"]
        ours[p + "linear.weight"] = state[p + "linear.weight"]
        layers = sorted(k for k in state if k.startswith(p + "conv_tp_weights.layer"))
        for i, key in enumerate(layers):
            w = state[key].clone()
            if i == len(layers) - 1:
                d = interaction.conv_tp.descriptor
                # mace-torch orders its instructions (hence weight blocks) by output block
                mace_order = sorted(range(len(d.instructions)), key=lambda k: d.instructions[k].i_out)
                sizes_ = [ins.weight_numel for ins in d.instructions]
                mace_start = {k: sum(sizes_[j] for j in mace_order[: mace_order.index(k)]) for k in mace_order}
                columns = []
                for k, ins in enumerate(d.instructions):
                    l1, l2, l3 = (ir.l for ir in d.path_irreps(ins))
                    sign = w3j_sign(w3j_mace, l1, l2, l3)
                    flipped += sign < 0
                    columns.append(sign * w[:, mace_start[k] : mace_start[k] + sizes_[k]])
                w = torch.cat(columns, dim=1)
            ours[p + f"conv_tp_weights.weights.{i}"] = w
        skip = state[p + "skip_tp.weight"].clone()
        start = 0
        for i_in, (mul_in, ir_in) in enumerate(interaction.skip.irreps_in):
            for mul_out, ir_out in interaction.skip.irreps_out:
                if ir_in == ir_out:
                    n = mul_in * interaction.skip.num_elements * mul_out
                    skip[start : start + n] *= w3j_sign(w3j_mace, ir_in.l, 0, ir_out.l)
                    start += n
        ours[p + "skip.weight"] = skip
    for t, block in enumerate(model.products):
        p = f"products.{t}."
        ours[p + "linear.weight"] = state[p + "linear.weight"]
        impl = block.product.impl
        coupling = tuple((ir.l, ir.p) for _, ir in impl.irreps_in)
        for o, (_, ir) in enumerate(impl.irreps_out):
            c = f"{p}symmetric_contractions.contractions.{o}."
            for nu in range(1, impl.correlation + 1):
                name = f"out{o}_nu{nu}"
                if name not in impl.weights:
                    continue
                w_mace = state[c + "weights_max"] if nu == impl.correlation else state[c + f"weights.{impl.correlation - 1 - nu}"]
                a = torch.tensor(symmetric_contraction_map(state[c + f"U_matrix_{nu}"], coupling, (ir.l, ir.p), nu))
                ours[f"{p}product.impl.weights.{name}"] = torch.einsum("kj,ejc->ekc", a.to(w_mace.dtype), w_mace)
                sizes.append((str(ir), nu, a.shape[1], a.shape[0]))
    for t in range(len(model.readouts)):
        for key in state:
            if key.startswith(f"readouts.{t}.") and key.endswith(".weight"):
                ours[key] = state[key]
    missing = {name for name, _ in model.named_parameters()} - set(ours)
    if missing:
        raise AssertionError(f"not ported: {sorted(missing)}")
    model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in ours.items()}, strict=False)
    return {"flipped_conv_paths": flipped, "product_basis_sizes": sizes}
