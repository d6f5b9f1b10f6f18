"""Backend ``vsh``: the Clebsch-Gordan product through vector spherical harmonics equals ``cg``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sympy.physics.wigner import wigner_3j as sympy_wigner_3j

from equitensor import TensorProduct, so3
from equitensor.ops.backends import vsh as vsh_module
from equitensor.so3 import vsh as so3_vsh

from .test_models import ethanol, run, slab, small_model

MODES = ("uvw", "uvu", "uvv", "uuw", "uuu")


def both(irreps_in1, irreps_in2, irreps_out, shared=True, **kwargs):
    make = lambda backend: TensorProduct(  # noqa: E731
        irreps_in1, irreps_in2, irreps_out, backend=backend, shared_weights=shared, internal_weights=False, **kwargs
    )
    return make("cg").double(), make("vsh").double()


def random_inputs(tp, batch, shared, seed=0):
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randn(batch, tp.irreps_in1.dim, generator=g, dtype=torch.float64)
    x2 = torch.randn(batch, tp.irreps_in2.dim, generator=g, dtype=torch.float64)
    shape = (tp.weight_numel,) if shared else (batch, tp.weight_numel)
    return x1, x2, torch.randn(*shape, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("l1,l2,l3", [(l1, l2, l3) for l1 in range(7) for l2 in range(7) for l3 in range(abs(l1 - l2), l1 + l2 + 1)])
def test_generalised_gaunt_factors_have_their_closed_forms(l1, l2, l3):
    factor = so3_vsh.generalised_gaunt_factor(l1, l2, l3)
    size = math.sqrt((2 * l1 + 1) * (2 * l2 + 1) * (2 * l3 + 1) / (4 * math.pi))
    if (l1 + l2 + l3) % 2 == 0:
        assert abs(factor) == pytest.approx(so3.gaunt_scale(l1, l2, l3), rel=1e-12)
    else:  # |<Y_l3, Phi_l1 . Psi_l2>| = size sqrt(l1(l1+1) l2(l2+1)) |(l1 l2 l3; 1 -1 0)|
        closed = size * math.sqrt(l1 * (l1 + 1) * l2 * (l2 + 1)) * float(sympy_wigner_3j(l1, l2, l3, 1, -1, 0))
        assert abs(factor) == pytest.approx(abs(closed), rel=1e-12)


def test_vector_harmonics_are_tangent_gradients():
    """Psi is the surface gradient: finite differences of Y along the frame, and Phi is Psi turned by 90 degrees."""
    lmax, res = 4, (6, 11)
    beta, alpha, _ = so3.s2grid.gauss_legendre_grid(*res)
    psi, phi = so3_vsh.vector_harmonics_on_grid(lmax, *res)
    b, a = np.meshgrid(beta, alpha, indexing="ij")
    h = 1e-6
    ls = list(range(lmax + 1))
    d_beta = (so3.spherical_harmonics_alpha_beta(ls, a, b + h) - so3.spherical_harmonics_alpha_beta(ls, a, b - h)) / (2 * h)
    d_alpha = (so3.spherical_harmonics_alpha_beta(ls, a + h, b) - so3.spherical_harmonics_alpha_beta(ls, a - h, b)) / (2 * h)
    d_alpha = d_alpha / np.sin(b)[..., None]
    np.testing.assert_allclose(psi[0], d_beta.reshape(psi[0].shape), atol=1e-7)
    np.testing.assert_allclose(psi[1], d_alpha.reshape(psi[1].shape), atol=1e-7)
    np.testing.assert_allclose(np.einsum("kgm,kgm->gm", phi, psi), 0, atol=1e-12)
    np.testing.assert_allclose(np.einsum("kgm,kgm->gm", phi, phi), np.einsum("kgm,kgm->gm", psi, psi), atol=1e-12)


PATH_RICH = [
    # natural x pseudo up to L = 8: every path odd where the parities say so
    ("0e+1o+2e+3o+4e+5o+6e+7o+8e", "1e+2o+3e", "0e+0o+1e+1o+2e+2o+3e+3o+4e+4o+5e+5o+6e+6o+7e+7o+8e+8o"),
    # both parities on both sides at low L: even and odd paths into the same outputs
    ("0e+0o+1o+1e+2e+2o", "0e+1o+1e+2e+2o", "0e+0o+1e+1o+2e+2o+3e+3o+4e+4o"),
    # MIMO-like at L = 8 (every path even), outputs up to 8
    ("0e+1o+2e+3o+4e+5o+6e+7o+8e", "0e+1o+2e+3o+4e+5o+6e+7o+8e", "0e+1o+2e+3o+4e+5o+6e+7o+8e"),
]


@pytest.mark.parametrize("irreps", PATH_RICH)
def test_equals_cg_on_every_path_up_to_L8(irreps):
    cg, vsh = both(*irreps, mode="uvw")
    assert vsh.weight_numel == cg.weight_numel and len(vsh.paths) == len(cg.paths)
    odd = sum((p.ir_in1.l + p.ir_in2.l + p.ir_out.l) % 2 for p in vsh.paths)
    assert odd > 0 or irreps is PATH_RICH[2]
    x1, x2, w = random_inputs(cg, 3, True)
    torch.testing.assert_close(vsh(x1, x2, w), cg(x1, x2, w), atol=1e-10, rtol=0)


def test_each_path_alone_equals_cg():
    """One weight set to 1, all others 0: every single path (odd ones included) is cg's."""
    cg, vsh = both("0e+1o+1e+2e+2o+3o", "1o+1e+2e", "0e+0o+1e+1o+2e+2o+3e+3o", mode="uvw")
    x1, x2, _ = random_inputs(cg, 2, True)
    for k in range(cg.weight_numel):
        w = torch.zeros(cg.weight_numel, dtype=torch.float64)
        w[k] = 1.0
        torch.testing.assert_close(vsh(x1, x2, w), cg(x1, x2, w), atol=1e-12, rtol=0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shared", [True, False])
def test_modes_and_weight_sharing_equal_cg(mode, shared):
    irreps = ("3x0e+3x1o+3x1e+3x2o", "3x0e+3x1o+3x2e", "3x0e+3x1e+3x1o+3x2e+3x2o+3x3o")
    cg, vsh = both(*irreps, shared=shared, mode=mode)
    x1, x2, w = random_inputs(cg, 4, shared)
    torch.testing.assert_close(vsh(x1, x2, w), cg(x1, x2, w), atol=1e-12, rtol=0)


def test_unweighted_and_path_weighted_instructions_equal_cg():
    instructions = [(0, 0, 0, "uvu", False), (1, 1, 0, "uvu", True, 0.5), (1, 1, 1, "uvu", False), (0, 1, 2, "uvu", True)]
    cg, vsh = both("2x0e+2x1o", "0e+1o", "2x0e+2x1e+2x1o", instructions=instructions)
    x1, x2, w = random_inputs(cg, 3, True)
    torch.testing.assert_close(vsh(x1, x2, w), cg(x1, x2, w), atol=1e-12, rtol=0)


def test_equivariant_under_rotations_and_inversion():
    _, vsh = both("0e+1o+1e+2e+2o", "0e+1o+1e+2o", "0e+0o+1e+1o+2e+2o+3e+3o", mode="uvw")
    x1, x2, w = random_inputs(vsh, 3, True)
    rotation = torch.as_tensor(so3.random_rotation(np.random.default_rng(5), improper=True))

    def wigner(irreps):
        return torch.block_diag(
            *[
                torch.kron(torch.eye(mul, dtype=torch.float64), torch.as_tensor(so3.wigner_D_from_matrix(ir.l, rotation.numpy(), ir.p)))
                for mul, ir in irreps
            ]
        )

    d1, d2, d_out = wigner(vsh.irreps_in1), wigner(vsh.irreps_in2), wigner(vsh.irreps_out)
    torch.testing.assert_close(vsh(x1 @ d1.T, x2 @ d2.T, w), vsh(x1, x2, w) @ d_out.T, atol=1e-10, rtol=0)


@pytest.mark.parametrize("shared", [True, False])
def test_gradients_twice(shared):
    _, vsh = both("0e+1o+1e", "1o+1e", "0e+0o+1e+1o+2e", shared=shared, mode="uvu")
    x1, x2, w = random_inputs(vsh, 2, shared)
    inputs = tuple(t.requires_grad_() for t in (x1, x2, w))
    assert torch.autograd.gradcheck(vsh, inputs)
    assert torch.autograd.gradgradcheck(vsh, inputs)


@pytest.mark.parametrize("shared", [True, False])
def test_chunked_batches_equal_cg_through_second_derivatives(shared, monkeypatch):
    """The unfused execution (off the CPU, under functorch) splits a batch into chunks of samples
    (here 3, the last one short): cg's outputs, gradients and gradients of gradients (per-sample
    weights are chunked with their samples)."""
    cg, vsh = both("0e+1o+2e", "0e+1o+1e", "0e+1o+1e+2e+2o", shared=shared, mode="uvu")
    monkeypatch.setattr(type(vsh.impl), "uses_fused_kernel", lambda self, weight, like: False)
    monkeypatch.setattr(vsh_module, "CHUNK_BYTES", 3 * 8 * vsh.impl.signal_rows)
    assert vsh.impl.chunk_samples(8) == 3
    x1, x2, w = random_inputs(cg, 8, shared)

    def derivatives(tp):
        inputs = tuple(t.clone().requires_grad_() for t in (x1, x2, w))
        out = tp(*inputs)
        grads = torch.autograd.grad((out**2).sum(), inputs, create_graph=True)
        return (out, *grads, *torch.autograd.grad(sum((g**2).sum() for g in grads), inputs))

    for got, expected in zip(derivatives(vsh), derivatives(cg)):
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)


def test_message_passing_equals_cg():
    cg, vsh = both("2x0e+2x1o+2x1e", "0e+1o+2e", "2x0e+2x1o+2x1e+2x2e", shared=False, mode="uvu")
    x1, x2, w = random_inputs(cg, 7, False)
    nodes = torch.randn(4, cg.irreps_in1.dim, dtype=torch.float64)
    sender, receiver = torch.tensor([0, 1, 2, 3, 0, 1, 3]), torch.tensor([1, 0, 0, 2, 3, 3, 1])
    expected = cg.impl.message_passing(nodes, x2, w, sender, receiver)
    torch.testing.assert_close(vsh.impl.message_passing(nodes, x2, w, sender, receiver), expected, atol=1e-12, rtol=0)


def test_float32_follows_float64():
    cg, vsh = both("0e+1o+1e+2e", "0e+1o+1e", "0e+0o+1e+1o+2e+2o", mode="uvw")
    x1, x2, w = random_inputs(cg, 5, True)
    expected = cg(x1, x2, w)
    got = vsh.float()(x1.float(), x2.float(), w.float())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)


def test_mace_with_vsh_convolutions_gives_cg_energies():
    reference, model = small_model("cg").double(), small_model("vsh").double()
    model.load_state_dict(reference.state_dict())
    expected, got = run(reference, [ethanol(), slab()]), run(model, [ethanol(), slab()])
    torch.testing.assert_close(got["energy"], expected["energy"], atol=1e-8, rtol=0)
    torch.testing.assert_close(got["forces"], expected["forces"], atol=1e-8, rtol=0)


def test_bad_configurations_name_the_problem():
    with pytest.raises(ValueError, match="one connection mode"):
        TensorProduct("0e+1o", "0e", "0e+1o", instructions=[(0, 0, 0, "uvu", True), (1, 0, 1, "uvw", True)], backend="vsh")
    with pytest.raises(ValueError, match=r"1o x 0e -> 1o"):
        TensorProduct("2x0e+3x1o", "0e", "2x0e+3x1o", mode="uvu", backend="vsh")
    with pytest.raises(ValueError, match="too coarse"):
        TensorProduct("2e", "2e", "4e", mode="uvw", backend="vsh", resolution=(3, 5))


@pytest.mark.parametrize("l1,l2,l3", [(2, 3, 5), (3, 3, 4), (1, 1, 1), (4, 2, 3), (8, 8, 16), (8, 7, 14)])
def test_hemisphere_quadrature_equals_the_full_grid(l1, l2, l3):
    """One point per antipodal pair, twice the weight: the projected product of either parity is the full grid's."""
    res = so3_vsh.antipodal_resolution(l1 + l2 + l3)
    tables = so3_vsh.hemisphere_tables(max(l1, l2, l3), *res)
    assert tables["scalar"].shape[0] * 2 == res[0] * res[1]
    cols = [slice(l * l, (l + 1) ** 2) for l in (l1, l2, l3)]
    if (l1 + l2 + l3) % 2 == 0:
        half = np.einsum("ga,gb,gc->abc", tables["scalar"][:, cols[0]], tables["scalar"][:, cols[1]], tables["project"][:, cols[2]])
    else:
        half = np.einsum("kga,kgb,gc->abc", tables["phi"][:, :, cols[0]], tables["psi"][:, :, cols[1]], tables["project"][:, cols[2]])
    np.testing.assert_allclose(half, so3_vsh.grid_product_tensor(l1, l2, l3), atol=1e-12)


# -- the fused CPU kernels of shared-weight products (ops/backends/vsh_fused.py) ----------------


def whole_batch_reference(impl, x1, x2, weight):
    """The backend's output through :func:`whole_batch_products` (dense forms, plain torch ops):
    an independent path to the fused kernels' output."""
    from equitensor.ops.backends.vsh import whole_batch_products

    z = x1.shape[0]
    forms = impl.bilinear_forms(weight, x1)
    f1, f2 = impl.signals_by_channel(impl.lift(x1, 0), 0), impl.signals_by_channel(impl.lift(x2, 1), 1)
    sums = 0
    for parity in impl.parities:
        c0, c1 = impl.components[parity]
        sums = sums + whole_batch_products(
            f1[:, :, c0:c1], f2[:, :, c0:c1], impl.groups[parity], impl.slot_counts[2], forms[parity], z
        )
    if not impl.batched[2]:
        sums = sums.sum(0, keepdim=True)
    return impl.project(sums.transpose(0, 1).reshape(-1, sums.shape[-1]), z)


SPARSE_CASES = [
    ("uvw", "0e+2x1o+2e+3x1e", "2x0e+1o+2o", "0e+1o+2x1e+2e+3o"),
    ("uvu", "2x0e+2x1o+2x2e+2x1e", "0e+1o+2o+1e", "2x0e+2x1o+2x1e+2x2e+2x3o"),
    ("uvv", "0e+1o+2o+1e", "2x0e+2x1o+2x2e", "2x0e+2x1e+2x2o+2x3e"),
    ("uuw", "2x0e+2x1o+2x2e", "2x0e+2x1e+2x2o", "0e+3x1o+1e+2x2e"),
]


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per_sample"])
@pytest.mark.parametrize("mode,a,b,c", SPARSE_CASES)
def test_fused_kernels_equal_whole_batch_products(mode, a, b, c, shared):
    _, vsh = both(a, b, c, mode=mode, shared=shared)
    x1, x2, w = random_inputs(vsh, 150, shared, seed=3)  # several tiles of samples, the last one short
    assert vsh.impl.fused_integer_tables[-1][-1] < 150 and 150 % vsh.impl.fused_integer_tables[-1][-1]
    assert vsh.impl.uses_fused_kernel(w, x1) and "odd" in vsh.impl.parities and "even" in vsh.impl.parities
    inputs = [t.clone().requires_grad_() for t in (x1, x2, w)]
    refs = [t.clone().requires_grad_() for t in (x1, x2, w)]
    got, want = vsh.impl(*inputs), whole_batch_reference(vsh.impl, *refs)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
    g = torch.randn_like(got)
    grads = torch.autograd.grad(got, inputs, g, create_graph=True)
    expected = torch.autograd.grad(want, refs, g, create_graph=True)
    for grad, grad_ref in zip(grads, expected):
        torch.testing.assert_close(grad, grad_ref, atol=1e-10, rtol=0)
    # double backward (force training): the derivative of <v, gradients> by every input
    vs = [torch.randn_like(t) for t in grads]
    second = torch.autograd.grad(sum((v * t).sum() for v, t in zip(vs, grads)), inputs)
    second_ref = torch.autograd.grad(sum((v * t).sum() for v, t in zip(vs, expected)), refs)
    for grad, grad_ref in zip(second, second_ref):
        torch.testing.assert_close(grad, grad_ref, atol=1e-10, rtol=0)


def test_fused_kernels_run_on_the_cpu_outside_functorch(monkeypatch):
    from equitensor.ops.backends import vsh_fused

    calls = []
    kernel = vsh_fused._forward
    monkeypatch.setattr(vsh_fused, "_forward", lambda *args: (calls.append(1), kernel(*args))[1])
    _, vsh = both("0e+1o+1e", "1o+1e", "0e+0o+1e+1o+2e", mode="uvu")
    x1, x2, w = random_inputs(vsh, 3, True)
    vsh(x1, x2, w)
    assert len(calls) == 1
    _, per_sample = both("0e+1o+1e", "1o+1e", "0e+0o+1e+1o+2e", shared=False, mode="uvu")
    x1, x2, w = random_inputs(per_sample, 3, False)
    per_sample(x1, x2, w)
    assert len(calls) == 2
    seen = []
    torch.func.vmap(lambda x: (seen.append(vsh.impl.uses_fused_kernel(None, x)), x)[1])(x1)
    assert seen == [False]


@pytest.mark.parametrize("target", range(4))
def test_opcheck_vsh_fused(target):
    from torch.library import opcheck

    _, vsh = both("0e+1o+1e+2e", "1o+1e", "0e+0o+1e+1o+2e", mode="uvu")
    impl = vsh.impl
    x1, x2, w = random_inputs(vsh, 3, True)
    operands = [torch.randn(3, vsh.irreps_out.dim, dtype=torch.float64), x1, x2]
    operands.append(impl.sparse_values(w, x1))
    shape = operands[target].shape
    sources = [operands[s] for s in range(4) if s != target]
    tables = impl.fused_tables(x1)
    opcheck(torch.ops.equitensor.vsh_fused_contract, (target, *sources, *shape, tables))
    if target == 0:
        opcheck(torch.ops.equitensor.vsh_fused_input_gradients, (*operands, tables))


def test_fused_kernels_compile_fullgraph_through_second_derivatives():
    """Shared weights (the fused custom ops) under ``torch.compile(fullgraph=True)``: outputs, force-like
    create_graph gradients and their gradients equal eager."""
    _, vsh = both("0e+1o+1e+2e", "0e+1o+1e", "0e+0o+1e+1o+2e+2o", mode="uvw")
    x1, x2, w = random_inputs(vsh, 9, True)

    def run(function):
        inputs = tuple(t.clone().requires_grad_() for t in (x1, x2, w))
        out, grad1, grad2 = function(*inputs)
        return (out, grad1, grad2, *torch.autograd.grad((grad1**2).sum() + (grad2**2).sum(), inputs))

    def forces_like(a, b, weight):
        out = vsh(a, b, weight)
        grad1, grad2 = torch.autograd.grad((out**2).sum(), (a, b), create_graph=True)
        return out, grad1, grad2

    with torch._dynamo.config.patch(trace_autograd_ops=True):
        compiled = run(torch.compile(forces_like, fullgraph=True, backend="aot_eager"))
    for got, expected in zip(compiled, run(forces_like)):
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)
