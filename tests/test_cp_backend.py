"""cp backend: exact at full rank, equivariance within its documented bound, disk cache, errors."""

import numpy as np
import pytest
import torch

from equitensor import so3
from equitensor.ops import ChannelwiseTensorProduct, TensorProduct

from .backend_helpers import cg_weights_from_factors, natural_irreps
from .conftest import TOL
from .helpers import rotate

pytestmark = pytest.mark.usefixtures("default_float64")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EQUITENSOR_CACHE", str(tmp_path))
    so3.cp.cp_factors.cache_clear()
    yield
    so3.cp.cp_factors.cache_clear()


@pytest.mark.parametrize("mode", ["uvu", "uuu"])
def test_full_rank_equals_cg_shared_path_product(mode):
    # includes pseudo-tensor outputs (odd l1 + l2 + l3): cp realises them, unlike Gaunt
    a, b, c = (
        "2x0e+2x1o+2x2e",
        ("0e+1o+2e" if mode == "uvu" else "2x0e+2x1o+2x2e"),
        "2x0e+2x1o+2x1e+2x2e+2x3o",
    )
    kw = dict(mode=mode, shared_weights=False, internal_weights=False)
    cp = TensorProduct(a, b, c, backend="cp", rank="full", **kw)
    cg = TensorProduct(a, b, c, backend="cg", **kw)
    assert len(cp.paths) == len(cg.instructions)
    x1, x2 = torch.randn(5, cp.irreps_in1.dim), torch.randn(5, cp.irreps_in2.dim)
    w = torch.randn(5, cp.weight_numel)
    expected = cg(x1, x2, cg_weights_from_factors(cg, cp, w, gaunt=False))
    assert (cp(x1, x2, w) - expected).abs().max().item() < 1e-8
    assert cp.impl.relative_error == 0.0


def test_default_rank_is_7_l_squared_and_error_is_reported():
    tp = TensorProduct(
        natural_irreps(2, 2), natural_irreps(2, 2), natural_irreps(2, 2), mode="uuu", backend="cp"
    )
    assert tp.impl.rank == 7 * 2 * 2
    assert 0 < tp.impl.relative_error < 1e-2
    assert tp.impl.residual_norm == pytest.approx(
        tp.impl.relative_error * np.linalg.norm(so3.cp.shared_path_cg_tensor(2, "even"))
    )


@pytest.mark.parametrize("rank", [4, "default"])
@pytest.mark.parametrize("improper", [False, True])
def test_equivariance_within_documented_bound(rank, improper, rng):
    kw = dict(
        mode="uuu",
        shared_weights=True,
        internal_weights=False,
        irrep_normalization="none",
        path_normalization="none",
    )
    tp = TensorProduct("0e+1o+2e", "0e+1o+2e", "0e+1o+2e", backend="cp", rank=rank, **kw)
    x1, x2 = torch.randn(20, 9), torch.randn(20, 9)
    w = torch.ones(tp.weight_numel)
    r = so3.random_rotation(rng, improper=improper)
    error = (
        tp(rotate(x1, tp.irreps_in1, r), rotate(x2, tp.irreps_in2, r), w)
        - rotate(tp(x1, x2, w), tp.irreps_out, r)
    ).norm(dim=1)
    bound = torch.tensor(
        [tp.impl.equivariance_error_bound(a.norm().item(), b.norm().item()) for a, b in zip(x1, x2)]
    )
    assert (error <= bound + 1e-12).all()
    if rank == 4:
        assert error.max() > 1e-6  # a low rank is visibly not equivariant: the bound is not vacuous


def test_full_rank_is_equivariant(rng):
    tp = ChannelwiseTensorProduct(
        "3x0e+3x1o+3x2e", "0e+1o+2e", "3x0e+3x1o+3x1e+3x2e", backend="cp", rank="full"
    )
    x1, x2 = torch.randn(6, tp.irreps_in1.dim), torch.randn(6, tp.irreps_in2.dim)
    w = torch.randn(6, tp.weight_numel)
    r = so3.random_rotation(rng, improper=True)
    lhs = tp(rotate(x1, tp.irreps_in1, r), rotate(x2, tp.irreps_in2, r), w)
    assert (lhs - rotate(tp(x1, x2, w), tp.irreps_out, r)).abs().max().item() < TOL[torch.float64]


def test_factors_are_deterministic_and_cached_on_disk(tmp_path):
    first = so3.cp.cp_factors(2, 10)
    files = list((tmp_path / "cp").glob("*.npz"))
    assert len(files) == 1 and "L2_R10_even" in files[0].name
    so3.cp.cp_factors.cache_clear()
    second = so3.cp.cp_factors(2, 10)  # read back from disk
    assert np.array_equal(first.a, second.a) and first.relative_error == second.relative_error
    files[0].unlink()
    so3.cp.cp_factors.cache_clear()
    third = so3.cp.cp_factors(2, 10)  # refitted from the same seed
    assert np.allclose(first.reconstruct(), third.reconstruct(), atol=1e-12)


def test_rank_below_one_raises():
    for rank in (0, -3):
        with pytest.raises(ValueError, match="rank must be >= 1"):
            TensorProduct("0e+1o", "0e+1o", "0e+1o", mode="uuu", backend="cp", rank=rank)
    with pytest.raises(ValueError, match="rank must be an integer"):
        TensorProduct("0e+1o", "0e+1o", "0e+1o", mode="uuu", backend="cp", rank=2.5)
    with pytest.raises(ValueError, match="rank must be an integer >= 1"):
        so3.cp.cp_factors(2, 0)


def test_gradcheck_and_gradgradcheck():
    tp = TensorProduct("2x0e+2x1o", "0e+1o", "2x0e+2x1o+2x1e", mode="uvu", backend="cp", rank=5,
                       shared_weights=False, internal_weights=False)  # fmt: skip
    x1 = torch.randn(3, tp.irreps_in1.dim, requires_grad=True)
    x2 = torch.randn(3, tp.irreps_in2.dim, requires_grad=True)
    w = torch.randn(3, tp.weight_numel, requires_grad=True)
    assert torch.autograd.gradcheck(tp, (x1, x2, w))
    assert torch.autograd.gradgradcheck(tp, (x1, x2, w))
