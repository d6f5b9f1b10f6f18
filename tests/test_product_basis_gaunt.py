"""Gaunt / CP many-body product bases: equivariance, correlation 1, grid == fft, cp full == exact chain."""

import pytest
import torch

from equitensor import so3
from equitensor.ops.backends import get_product_basis

from .backend_helpers import natural_irreps
from .conftest import TOL
from .helpers import force_training_results, rotate

pytestmark = pytest.mark.usefixtures("default_float64")
BACKENDS = [
    ("gaunt_grid", {"method": "grid"}),
    ("gaunt_grid", {"method": "sparse"}),
    ("gaunt_fft", {}),
    ("cp", {"rank": "full"}),
]


def _build(name, options, irreps_in, irreps_out, correlation, num_elements=3):
    torch.manual_seed(0)
    basis = get_product_basis(name)(irreps_in, irreps_out, correlation, num_elements, **options).double()
    with torch.no_grad():
        basis.weights_in.normal_()  # the default init is 1: test with generic weights
    return basis


def _inputs(basis, n=7):
    x = torch.randn(n, basis.irreps_in.dim)
    elements = torch.nn.functional.one_hot(torch.arange(n) % basis.num_elements, basis.num_elements).double()
    return x, elements


@pytest.mark.parametrize("name,options", BACKENDS)
@pytest.mark.parametrize("improper", [False, True])
def test_equivariance(name, options, improper, rng):
    basis = _build(name, options, natural_irreps(3, 4), natural_irreps(2, 4), correlation=3)
    x, elements = _inputs(basis)
    r = so3.random_rotation(rng, improper=improper)
    lhs = basis(rotate(x, basis.irreps_in, r), elements)
    rhs = rotate(basis(x, elements), basis.irreps_out, r)
    assert (lhs - rhs).abs().max().item() < TOL[torch.float64] * max(1.0, rhs.abs().max().item())


@pytest.mark.parametrize("name,options", BACKENDS)
def test_correlation_one_is_a_per_element_weighted_linear_map(name, options):
    basis = _build(name, options, natural_irreps(3, 2), natural_irreps(2, 2), correlation=1)
    x, elements = _inputs(basis)
    out = basis(x, elements)
    species = elements.argmax(1)
    for k, ((_, ir), s_out) in enumerate(zip(basis.irreps_out, basis.irreps_out.slices())):
        s_in = list(basis.irreps_in.slices())[ir.l]
        scale = basis.weights_out[species, 0, :, k] * basis.weights_in[species, :, ir.l]  # [N, C]
        expected = (x[:, s_in].reshape(len(x), 2, ir.dim) * scale[:, :, None]).reshape(len(x), -1)
        assert (out[:, s_out] - expected).abs().max().item() < TOL[torch.float64]


@pytest.mark.parametrize("correlation", [1, 2, 3])
def test_grid_equals_fft(correlation):
    grid = _build("gaunt_grid", {"method": "grid"}, natural_irreps(3, 3), natural_irreps(3, 3), correlation)
    fft = _build("gaunt_fft", {}, natural_irreps(3, 3), natural_irreps(3, 3), correlation)
    fft.load_state_dict(grid.state_dict())
    x, elements = _inputs(grid)
    ref = grid(x, elements)
    assert (fft(x, elements) - ref).abs().max().item() < TOL[torch.float64] * max(1.0, ref.abs().max().item())


@pytest.mark.parametrize(
    "irreps_in, irreps_out, correlation",
    [
        (natural_irreps(3, 3), natural_irreps(2, 3), 3),
        ("2x0e+2x2e", "2x0e+2x1o+2x2e", 2),  # a missing input degree
        ("2x1o+2x0e", "2x2e+2x0e", 3),  # unsorted blocks; no order-1 path to 2e
        (natural_irreps(1, 130), natural_irreps(1, 130), 2),  # channels > the kernels' tile
    ],
)
def test_sparse_equals_grid(irreps_in, irreps_out, correlation):
    """The monomial (numba) execution against the grid: value, forces, and the double backward of force training."""
    grid = _build("gaunt_grid", {"method": "grid"}, irreps_in, irreps_out, correlation)
    sparse = _build("gaunt_grid", {"method": "sparse"}, irreps_in, irreps_out, correlation)
    sparse.load_state_dict(grid.state_dict())
    x, elements = _inputs(grid, 40)
    r, s = torch.randn(40, grid.irreps_out.dim), torch.randn(40, grid.irreps_in.dim)
    results = [force_training_results(basis, x, elements, r, s) for basis in (grid, sparse)]
    for got, expected in zip(results[1], results[0], strict=True):
        assert (got - expected).abs().max().item() < TOL[torch.float64] * max(
            1.0, expected.abs().max().item()
        )


def test_grid_power_equals_repeated_gaunt_tensor_products():
    """f^2 projected == the gaunt_grid tensor product of f with itself (uuu), weights 1."""
    from equitensor.ops import TensorProduct

    irreps = natural_irreps(2, 2)
    basis = _build("gaunt_grid", {}, irreps, natural_irreps(4, 2), correlation=2, num_elements=1)
    with torch.no_grad():
        basis.weights_in.fill_(1.0)
        basis.weights_out.zero_()
        basis.weights_out[:, 1] = 1.0  # keep only nu = 2
    tp = TensorProduct(irreps, irreps, natural_irreps(4, 2), mode="uuu", backend="gaunt_grid",
                       instructions=None, path_normalization="none", irrep_normalization="none",
                       shared_weights=True, internal_weights=False)  # fmt: skip
    x, elements = _inputs(basis)
    assert (basis(x, elements) - tp(x, x, torch.ones(tp.weight_numel))).abs().max().item() < TOL[
        torch.float64
    ]


def test_cp_low_rank_runs_and_reports_error():
    basis = _build("cp", {"rank": 8}, natural_irreps(2, 2), natural_irreps(2, 2), correlation=2)
    x, elements = _inputs(basis)
    assert basis(x, elements).shape == (len(x), basis.irreps_out.dim)
    assert 0 < basis.relative_error < 1


def test_bad_irreps_and_resolution():
    with pytest.raises(ValueError, match="pseudo-tensor blocks"):
        get_product_basis("gaunt_grid")("2x0e+2x1e", "2x0e", 2, 1)
    with pytest.raises(ValueError, match="too coarse"):
        get_product_basis("gaunt_grid")(natural_irreps(2, 2), natural_irreps(2, 2), 3, 1, resolution=(4, 20))
    with pytest.raises(ValueError, match="method='nope'"):
        get_product_basis("gaunt_grid")(natural_irreps(2, 2), natural_irreps(2, 2), 3, 1, method="nope")
    with pytest.raises(ValueError, match="rank must be >= 1"):
        get_product_basis("cp")(natural_irreps(2, 2), natural_irreps(2, 2), 3, 1, rank=0)


@pytest.mark.parametrize("name,options", BACKENDS)
def test_gradcheck_and_gradgradcheck(name, options):
    basis = _build(name, options, natural_irreps(1, 2), natural_irreps(1, 2), correlation=2, num_elements=2)
    x, elements = _inputs(basis, 3)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: basis(x, elements), (x,))
    assert torch.autograd.gradgradcheck(lambda x: basis(x, elements), (x,))
