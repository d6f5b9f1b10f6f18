"""ProductBasis: every registered backend is equivariant and polynomial; ``cg`` equals the dense reference."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from equitensor import so3
from equitensor.ops import ProductBasis
from equitensor.ops.backends import available_product_bases
from equitensor.so3.coupling import monomial_coupling, symmetric_contraction_terms, symmetric_coupling_basis

from .conftest import TOL
from .helpers import force_training_results, rotate
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


@pytest.mark.parametrize("method", ["fused", "naive"])
def test_cg_equals_dense_reference(method):
    """The monomial execution equals sum_nu,k U_nu[M, i..] w x_i.. with the full symmetric U."""
    pb = ProductBasis(IRREPS_IN, IRREPS_OUT, correlation=3, num_elements=3, backend="cg", method=method)
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


def _fused_and_naive(irreps_in, irreps_out, correlation, num_elements):
    pbs = []
    for method in ("fused", "naive"):
        torch.manual_seed(0)
        pbs.append(
            ProductBasis(irreps_in, irreps_out, correlation, num_elements, backend="cg", method=method)
        )
    return pbs


@pytest.mark.parametrize(
    "irreps_in, irreps_out, correlation, n",
    [
        (IRREPS_IN, IRREPS_OUT, 3, 5),  # channels 3: tiles cross node boundaries
        ("3x0e+3x1o+3x2e+3x3o", "3x0e", 3, 50),  # several tiles, the last one partial
        ("2x0e+2x1o+2x2e", "2x0e+2x1o+2x2e+2x3o", 4, 9),  # correlation 4, an output L beyond the input's
        ("130x0e+130x1o", "130x0e+130x1o", 2, 3),  # channels > tile
        ("2x1o", "2x0e+2x1e", 2, 4),  # a pseudo-vector output, no order-1 path to 0e
    ],
)
def test_cg_fused_equals_naive(irreps_in, irreps_out, correlation, n):
    """The numba kernels against the tensor reference: value, forces and the double backward of force training."""
    fused, naive = _fused_and_naive(irreps_in, irreps_out, correlation, 3)
    x = torch.randn(n, fused.irreps_in.dim)
    onehot = torch.nn.functional.one_hot(torch.arange(n) % 3, 3).double()
    r, s = torch.randn(n, fused.irreps_out.dim), torch.randn(n, fused.irreps_in.dim)
    results = [force_training_results(pb, x, onehot, r, s) for pb in (fused, naive)]
    for got, expected in zip(*results, strict=True):
        assert (got - expected).abs().max() < TOL[torch.float64] * max(1.0, expected.abs().max().item())


def test_cg_fused_parallel_tiles_equal_naive():
    """With two threads the kernels run their tiles on numba's pool (one thread: a plain loop)."""
    fused, naive = _fused_and_naive("3x0e+3x1o+3x2e+3x3o", "3x0e+3x1o", 3, 3)
    x, onehot = _inputs(n=60)
    x.requires_grad_(True)
    r = torch.randn(60, fused.irreps_out.dim)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        results = []
        for pb in (fused, naive):
            (force,) = torch.autograd.grad((pb(x, onehot) * r).sum(), x, create_graph=True)
            (grad2,) = torch.autograd.grad(force.square().sum(), x)
            results.append((pb(x, onehot), force, grad2))
    finally:
        torch.set_num_threads(previous)
    for got, expected in zip(*results, strict=True):
        assert (got - expected).abs().max() < TOL[torch.float64] * max(1.0, expected.abs().max().item())


def test_cg_fused_gradgradcheck_in_weights():
    """Second derivatives w.r.t. inputs and weights together (the kernels' cross terms)."""
    pb = ProductBasis(
        "2x0e+2x1o+2x2e", "2x0e+2x1o", correlation=3, num_elements=2, backend="cg", method="fused"
    )
    x = torch.randn(3, 2 * 9, requires_grad=True)
    weight = torch.randn(3, 2 * pb.impl.fused.num_weights, requires_grad=True)  # per-node weights [N, K*c]
    assert torch.autograd.gradcheck(pb.impl.contract_fused, (x, weight))
    assert torch.autograd.gradgradcheck(pb.impl.contract_fused, (x, weight))


def test_cg_float32_matches_float64():
    fused, _ = _fused_and_naive(IRREPS_IN, IRREPS_OUT, 3, 3)
    x, onehot = _inputs(n=40)
    expected = fused(x, onehot)
    got = fused.float()(x.float(), onehot.float()).double()
    assert (got - expected).abs().max() < TOL[torch.float32] * max(1.0, expected.abs().max().item())


def test_cg_bad_method():
    with pytest.raises(ValueError, match="method='nope'"):
        ProductBasis(IRREPS_IN, IRREPS_OUT, 3, 3, backend="cg", method="nope")


def test_contraction_terms_equal_coupling_tables(rng):
    """The sparse entries, the dense matrix and the monomial chain reproduce every ``monomial_coupling`` table."""
    outputs = ((0, 1), (1, -1), (2, 1))
    terms = symmetric_contraction_terms(MACE_COUPLING, outputs, 3)
    x = rng.normal(size=16)
    monomial = np.zeros(len(terms.parent))
    for t, (p, l) in enumerate(zip(terms.parent, terms.last)):
        monomial[t] = x[l] if p < 0 else monomial[p] * x[l]
    sparse = np.zeros(terms.coupling.shape[1])
    np.add.at(sparse, terms.rows, terms.coefs * monomial[terms.monomials])
    assert np.abs(sparse - terms.coupling.T @ monomial).max() < 1e-12
    start = 0
    for ir, (m, ks) in zip(outputs, terms.blocks, strict=True):
        block = sparse[start : start + m * sum(ks)].reshape(m, sum(ks))
        k0 = 0
        for nu, k in enumerate(ks, start=1):
            monos, table = monomial_coupling(MACE_COUPLING, ir, nu)
            expected = np.einsum("nmk,n->mk", table, np.prod(x[monos], axis=1))
            assert np.abs(block[:, k0 : k0 + k] - expected).max() < 1e-12
            k0 += k
        start += m * sum(ks)


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


def test_serial_driver_never_starts_numba_threads():
    """With one torch thread the fused kernels run their serial compilation: numba's thread pool
    (and so its threading layer) is never started, even with the parallel build cached on disk."""
    script = (
        "import torch, numba\n"
        "torch.set_num_threads(1)\n"
        "from equitensor.ops import ProductBasis\n"
        "pb = ProductBasis('2x0e+2x1o', '2x0e', correlation=2, num_elements=1, backend='cg', method='fused')\n"
        "pb(torch.randn(70, 8), torch.ones(70, 1))\n"
        "try:\n    print(numba.threading_layer())\nexcept ValueError:\n    print('no pool')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "no pool"
