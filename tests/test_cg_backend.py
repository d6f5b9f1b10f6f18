"""The fast methods of the cg backend (sparse numba kernel, grouped torch) against the naive
per-path reference and e3nn: every mode, random irreps, shared/per-sample weights, batch 0,
gradients of first and second order, equivariance in float32."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from equitensor import so3
from equitensor.ops import ChannelwiseTensorProduct, TensorProduct

from .conftest import TOL
from .helpers import rotate
from .test_tensor_product import MODES, _irreps_strategy, _paired

pytestmark = pytest.mark.usefixtures("default_float64")

FAST_METHODS = ["auto", "sparse", "grouped"]


def _inputs(tp, batch, shared, requires_grad=False):
    x1 = torch.randn(batch, tp.irreps_in1.dim, dtype=torch.float64, requires_grad=requires_grad)
    x2 = torch.randn(batch, tp.irreps_in2.dim, dtype=torch.float64, requires_grad=requires_grad)
    shape = (tp.weight_numel,) if shared else (batch, tp.weight_numel)
    w = torch.randn(shape, dtype=torch.float64, requires_grad=requires_grad)
    return x1, x2, w


def _build(a, b, c, mode, shared, backend="cg", **options):
    kwargs = dict(mode=mode, shared_weights=shared, internal_weights=False, backend=backend)
    return TensorProduct(a, b, c, **kwargs, **options).double()


@settings(max_examples=25, deadline=None)
@given(
    mode=st.sampled_from(MODES),
    a=_irreps_strategy(),
    b=_irreps_strategy(),
    c=_irreps_strategy(max_l=4),
    shared=st.booleans(),
    batch=st.integers(0, 4),
    method=st.sampled_from(FAST_METHODS),
)
def test_fast_equals_naive_and_e3nn_random_irreps(mode, a, b, c, shared, batch, method):
    torch.manual_seed(2)
    a, b, c = _paired(mode, a, b, c)
    fast = _build(a, b, c, mode, shared, method=method)
    if not fast.instructions:
        return
    naive = _build(a, b, c, mode, shared, method="naive")
    ref = _build(a, b, c, mode, shared, backend="e3nn")
    x1, x2, w = _inputs(fast, batch, shared)
    got = fast(x1, x2, w)
    assert got.shape == (batch, fast.irreps_out.dim)
    if batch:
        assert (got - naive(x1, x2, w)).abs().max().item() < TOL[torch.float64]
        assert (got - ref(x1, x2, w)).abs().max().item() < TOL[torch.float64]


@pytest.mark.parametrize("method", FAST_METHODS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shared", [True, False])
def test_fast_equals_naive_mixed_multiplicities(method, mode, shared):
    a, b, c = _paired(mode, "3x0e+2x1o+1x2e+2x1e", "2x0e+1x1o+2x2e", "2x0e+3x1o+1x1e+2x2e+1x3o")
    fast, naive = _build(a, b, c, mode, shared, method=method), _build(a, b, c, mode, shared, method="naive")
    x1, x2, w = _inputs(fast, 5, shared)
    assert (fast(x1, x2, w) - naive(x1, x2, w)).abs().max() < TOL[torch.float64]


@pytest.mark.parametrize("method", FAST_METHODS)
def test_unweighted_paths_and_path_weights(method):
    a, b, c = "3x0e+3x1o", "0e+1o+2e", "3x0e+3x1o+3x2e"
    instructions = [
        (0, 0, 0, "uvu", False),
        (1, 1, 0, "uvu", True, 2.0),
        (1, 2, 1, "uvu", False, 0.5),
        (0, 2, 2, "uvw", True),
    ]
    kwargs = dict(internal_weights=False, shared_weights=False)
    fast = TensorProduct(a, b, c, instructions, backend="cg", method=method, **kwargs).double()
    ref = TensorProduct(a, b, c, instructions, backend="e3nn", **kwargs).double()
    x1, x2, w = _inputs(fast, 4, shared=False)
    assert (fast(x1, x2, w) - ref(x1, x2, w)).abs().max() < TOL[torch.float64]


def test_all_paths_unweighted_no_weight_argument():
    tp = TensorProduct(
        "2x0e+2x1o", "0e+1o", "2x0e+2x1o", [(0, 0, 0, "uvu", False), (1, 1, 0, "uvu", False)]
    ).double()
    naive = TensorProduct("2x0e+2x1o", "0e+1o", "2x0e+2x1o", [(0, 0, 0, "uvu", False), (1, 1, 0, "uvu", False)],
                          method="naive").double()  # fmt: skip
    assert tp.weight_numel == 0
    x1, x2 = torch.randn(3, 8, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    assert (tp(x1, x2) - naive(x1, x2)).abs().max() < TOL[torch.float64]


@pytest.mark.parametrize("method", ["sparse", "grouped"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shared", [True, False])
def test_gradcheck_and_gradgradcheck_fast(method, mode, shared):
    a, b, c = _paired(mode, "2x0e+1x1o", "1x0e+2x1o", "2x0e+2x1o+1x1e")
    tp = _build(a, b, c, mode, shared, method=method)
    x1, x2, w = _inputs(tp, 3, shared, requires_grad=True)
    assert torch.autograd.gradcheck(tp, (x1, x2, w))
    assert torch.autograd.gradgradcheck(tp, (x1, x2, w))


def test_double_backward_through_forces_like_graph():
    # Forces: differentiate the energy w.r.t. an input, then train through that gradient.
    tp = ChannelwiseTensorProduct("4x0e+4x1o", "0e+1o+2e", "4x0e+4x1o+4x2e", method="sparse").double()
    ref = ChannelwiseTensorProduct("4x0e+4x1o", "0e+1o+2e", "4x0e+4x1o+4x2e", method="naive").double()
    x2 = torch.randn(6, 9, dtype=torch.float64, requires_grad=True)
    x1 = torch.randn(6, 16, dtype=torch.float64)
    w = torch.randn(6, tp.weight_numel, dtype=torch.float64, requires_grad=True)
    results = []
    for module in (tp, ref):
        energy = module(x1, x2, w).pow(2).sum()
        (forces,) = torch.autograd.grad(energy, x2, create_graph=True)
        (dw,) = torch.autograd.grad(forces.pow(2).sum(), w)
        results.append((forces.detach(), dw))
    assert (results[0][0] - results[1][0]).abs().max() < TOL[torch.float64]
    assert (results[0][1] - results[1][1]).abs().max() < TOL[torch.float64]


@pytest.mark.parametrize("method", FAST_METHODS)
@pytest.mark.parametrize("improper", [False, True])
def test_float32_equivariance(method, improper, rng):
    tp = ChannelwiseTensorProduct(
        "8x0e+8x1o+8x2e", "0e+1o+2e+3o", "8x0e+8x1o+8x2e+8x3o", method=method
    ).float()
    x1 = torch.randn(10, tp.irreps_in1.dim)
    x2 = torch.randn(10, tp.irreps_in2.dim)
    w = torch.randn(10, tp.weight_numel)
    r = so3.random_rotation(rng, improper=improper)
    lhs = tp(rotate(x1, tp.irreps_in1, r), rotate(x2, tp.irreps_in2, r), w)
    rhs = rotate(tp(x1, x2, w), tp.irreps_out, r)
    assert (lhs - rhs).abs().max().item() < TOL[torch.float32]


def test_double_cast_is_exact():
    # Tables are float64 masters: a float32 round trip must not round them.
    tp = ChannelwiseTensorProduct("3x0e+3x1o", "0e+1o+2e", "3x0e+3x1o+3x2e", method="sparse")
    naive = ChannelwiseTensorProduct("3x0e+3x1o", "0e+1o+2e", "3x0e+3x1o+3x2e", method="naive")
    x1, x2 = torch.randn(2, 12), torch.randn(2, 9)
    w = torch.randn(2, tp.weight_numel)
    tp.float()(x1, x2, w)
    tp.double()
    args = (x1.double(), x2.double(), w.double())
    assert (tp(*args) - naive.double()(*args)).abs().max() < 1e-13


def test_mace_convolution_fast_equals_e3nn():
    a, b, c = "16x0e+16x1o", "0e+1o+2e+3o", "16x0e+16x1o+16x2e+16x3o"
    fast = ChannelwiseTensorProduct(a, b, c).double()
    ref = ChannelwiseTensorProduct(a, b, c, backend="e3nn").double()
    x1, x2, w = _inputs(fast, 7, shared=False)
    assert (fast(x1, x2, w) - ref(x1, x2, w)).abs().max() < TOL[torch.float64]


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown method 'fastest'"):
        TensorProduct("0e", "0e", "0e", mode="uvw", method="fastest")


@pytest.mark.parametrize("mode", MODES)
def test_dense_method_equals_naive_with_gradients(mode):
    a, b, c = _paired(mode, "2x0e+2x1o+1x2e", "2x0e+1x1o+1x2e", "2x0e+2x1o+2x1e+2x2e")
    dense = _build(a, b, c, mode, True, method="dense")
    naive = _build(a, b, c, mode, True, method="naive")
    x1, x2, w = _inputs(dense, 4, True, requires_grad=True)
    assert (dense(x1, x2, w) - naive(x1, x2, w)).abs().max() < TOL[torch.float64]
    assert torch.autograd.gradcheck(dense, (x1, x2, w))
    assert torch.autograd.gradgradcheck(dense, (x1, x2, w))


def test_dense_method_needs_shared_weights():
    tp = _build("2x0e", "0e", "2x0e", "uvu", False, method="dense")
    with pytest.raises(ValueError, match="needs shared weights"):
        tp(
            torch.randn(3, 2, dtype=torch.float64),
            torch.randn(3, 1, dtype=torch.float64),
            torch.randn(3, 2, dtype=torch.float64),
        )


@pytest.mark.parametrize("threads", [1, 2])
def test_sparse_serial_and_parallel_drivers(threads):
    """One torch thread runs the sparse kernel's serial drivers, more the parallel ones."""
    fast = _build("2x0e+2x1o+1x2e", "2x0e+1x1o", "2x0e+2x1o+1x2e", "uvu", False, method="sparse")
    naive = _build("2x0e+2x1o+1x2e", "2x0e+1x1o", "2x0e+2x1o+1x2e", "uvu", False, method="naive")
    x1, x2, w = _inputs(fast, 5, False, requires_grad=True)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        results = []
        for tp in (fast, naive):
            out = tp(x1, x2, w)
            grads = torch.autograd.grad(out.pow(2).sum(), (x1, x2, w), create_graph=True)
            second = torch.autograd.grad(sum(g.pow(2).sum() for g in grads), (x1, x2, w))
            results.append((out, *grads, *second))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*results):
        assert (a - b).abs().max().item() < 1e-9
