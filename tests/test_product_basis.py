"""ProductBasis: every registered backend is equivariant and polynomial; ``cg`` equals the dense reference."""

import numpy as np
import pytest
import torch

from equitensor import so3
from equitensor.ops import ProductBasis
from equitensor.ops.backends import available_product_bases
from equitensor.so3.coupling import monomial_coupling, symmetric_coupling_basis

from .conftest import TOL
from .helpers import rotate
from .test_models import single_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("default_float64")

IRREPS_IN = "3x0e+3x1o+3x2e+3x3o"
IRREPS_OUT = "3x0e+3x1o+3x2e"
MACE_COUPLING = ((0, 1), (1, -1), (2, 1), (3, -1))


def _inputs(n=5, num_elements=3):
    x = torch.randn(n, 3 * 16)
    onehot = torch.nn.functional.one_hot(torch.randint(0, num_elements, (n,)), num_elements).double()
    return x, onehot


@pytest.mark.parametrize("backend", available_product_bases())
@pytest.mark.parametrize("improper", [False, True])
def test_equivariant(backend, improper, rng):
    pb = ProductBasis(IRREPS_IN, IRREPS_OUT, correlation=3, num_elements=3, backend=backend)
    x, onehot = _inputs()
    r = so3.random_rotation(rng, improper=improper)
    out_of_rotated = pb(rotate(x, IRREPS_IN, r), onehot)
    rotated_out = rotate(pb(x, onehot), IRREPS_OUT, r)
    tol = TOL[torch.float64] if backend != "cp" else 1e-3
    assert (out_of_rotated - rotated_out).abs().max() < tol * max(1.0, rotated_out.abs().max().item())


@pytest.mark.parametrize("backend", available_product_bases())
def test_polynomial_of_degree_correlation(backend):
    """f(t x) is a polynomial of degree <= correlation in t: its (correlation+1)-th finite difference vanishes."""
    correlation = 2
    pb = ProductBasis(IRREPS_IN, IRREPS_OUT, correlation=correlation, num_elements=3, backend=backend)
    x, onehot = _inputs()
    values = torch.stack([pb(t * x, onehot) for t in range(correlation + 2)])
    third_difference = values[3] - 3 * values[2] + 3 * values[1] - values[0]
    assert third_difference.abs().max() < 1e-9 * values.abs().max()
    assert pb(0 * x, onehot).abs().max() < 1e-12  # no constant term


@pytest.mark.parametrize("backend", available_product_bases())
def test_empty_batch(backend):
    pb = ProductBasis("2x0e+2x1o+2x2e", "2x0e+2x1o", correlation=3, num_elements=2, backend=backend)
    assert pb(torch.zeros(0, 2 * 9), torch.zeros(0, 2)).shape == (0, 2 * 4)


@pytest.mark.parametrize("backend", available_product_bases())
def test_gradients(backend):
    pb = ProductBasis("2x0e+2x1o+2x2e", "2x0e+2x1o", correlation=3, num_elements=2, backend=backend)
    x = torch.randn(3, 2 * 9, requires_grad=True)
    onehot = torch.eye(2)[[0, 1, 1]]
    assert torch.autograd.gradcheck(lambda x: pb(x, onehot), (x,))
    assert torch.autograd.gradgradcheck(lambda x: pb(x, onehot), (x,))


def test_cg_equals_dense_reference():
    """The monomial execution equals sum_nu,k U_nu[M, i..] w x_i.. with the full symmetric U."""
    pb = ProductBasis(IRREPS_IN, IRREPS_OUT, correlation=3, num_elements=3, backend="cg")
    x, onehot = _inputs()
    xs = torch.cat(
        [x[:, s].reshape(5, 3, ir.dim) for s, (_, ir) in zip(pb.irreps_in.slices(), pb.irreps_in)], -1
    )
    element = onehot.argmax(1)
    expected = []
    for o, (_mul, ir) in enumerate(pb.irreps_out):
        block = torch.zeros(5, 3, ir.dim)
        for nu in (1, 2, 3):
            u = torch.tensor(symmetric_coupling_basis(MACE_COUPLING, (ir.l, ir.p), nu))
            w = pb.impl.weights[f"out{o}_nu{nu}"][element]  # [N, K, c]
            letters = "abc"[:nu]
            xs_terms = ",".join(f"nz{a}" for a in letters)
            block += torch.einsum(f"m{letters}k,nkz,{xs_terms}->nzm", u, w, *([xs] * nu))
        expected.append(block.reshape(5, -1))
    assert (pb(x, onehot) - torch.cat(expected, -1)).abs().max() < TOL[torch.float64]


@pytest.mark.parametrize("ir_out", [(0, 1), (1, -1), (2, 1), (3, -1)])
@pytest.mark.parametrize("nu", [1, 2, 3])
def test_coupling_basis_is_symmetric_equivariant_and_orthogonal(ir_out, nu, rng):
    u = symmetric_coupling_basis(MACE_COUPLING, ir_out, nu)
    m, k = u.shape[0], u.shape[-1]
    flat = u.reshape(m, -1, k)
    gram = np.einsum("mik,mij->kj", flat, flat)
    assert np.allclose(gram, m * np.eye(k), atol=1e-10)
    if nu > 1:
        assert np.allclose(u, np.swapaxes(u, 1, 2), atol=1e-12)
    r = so3.random_rotation(rng)
    d_in = np.zeros((16, 16))
    start = 0
    for l, p in MACE_COUPLING:
        d_in[start : start + 2 * l + 1, start : start + 2 * l + 1] = so3.wigner_D_from_matrix(l, r, p)
        start += 2 * l + 1
    d_out = so3.wigner_D_from_matrix(ir_out[0], r, ir_out[1])
    rotated = np.tensordot(d_out, u, axes=([1], [0]))
    for axis in range(1, nu + 1):
        rotated = np.moveaxis(np.tensordot(rotated, d_in, axes=([axis], [1])), -1, axis)
    assert np.abs(rotated - u).max() < 1e-10
    monos, table = monomial_coupling(MACE_COUPLING, ir_out, nu)
    x = rng.normal(size=16)
    dense = u.copy()
    for _ in range(nu):
        dense = np.tensordot(dense, x, axes=([1], [0]))
    via_monomials = np.einsum("nmk,n->mk", table, np.prod(x[monos], axis=1))
    assert np.abs(dense - via_monomials).max() < 1e-12


def test_coupling_dimensions():
    """Number of independent paths per (L, nu) for MACE's 0e+1o+2e+3o (symmetric products)."""
    ks = {
        (l, nu): symmetric_coupling_basis(MACE_COUPLING, (l, (-1) ** l), nu).shape[-1]
        for l in range(4)
        for nu in (1, 2, 3)
    }
    assert [ks[(0, nu)] for nu in (1, 2, 3)] == [1, 4, 8]
    assert [ks[(1, nu)] for nu in (1, 2, 3)] == [1, 3, 12]


def test_unknown_backend_and_bad_shapes():
    with pytest.raises(ValueError, match="unknown product-basis backend 'nope'"):
        ProductBasis(IRREPS_IN, IRREPS_OUT, 2, 3, backend="nope")
    with pytest.raises(ValueError, match="one multiplicity"):
        ProductBasis("2x0e+3x1o", "2x0e", 2, 3)
    pb = ProductBasis(IRREPS_IN, IRREPS_OUT, 2, 3)
    with pytest.raises(ValueError, match="element_onehot"):
        pb(torch.randn(4, 48), torch.zeros(4, 2))
