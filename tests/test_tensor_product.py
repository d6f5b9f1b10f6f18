"""TensorProduct: the cg backend against e3nn (the reference), equivariance, gradients, bad input."""

import pytest
import torch
from e3nn import o3
from hypothesis import given, settings
from hypothesis import strategies as st

from equitensor import so3
from equitensor.ops import ChannelwiseTensorProduct, FullyConnectedTensorProduct, TensorProduct
from equitensor.ops.backends import available_backends
from equitensor.ops.backends.e3nn_adapter import installed_e3nn_weight_signs

from .conftest import TOL
from .helpers import rotate

pytestmark = pytest.mark.usefixtures("default_float64")

MODES = ["uvw", "uvu", "uvv", "uuw", "uuu"]


def _irreps_strategy(max_l=3, max_mul=3):
    block = st.tuples(st.integers(1, max_mul), st.integers(0, max_l), st.sampled_from(["e", "o"]))
    return st.lists(block, min_size=1, max_size=4).map(lambda bs: "+".join(f"{m}x{l}{p}" for m, l, p in bs))


def _paired(mode, a, b, c):
    """Force multiplicities that the mode needs (uuu/uuw: equal inputs; uvu/uvv: output follows)."""
    a, b, c = map(o3.Irreps, (a, b, c))
    if mode in ("uuu", "uuw"):
        b = o3.Irreps([(a[0].mul, ir) for _, ir in b])
        a = o3.Irreps([(a[0].mul, ir) for _, ir in a])
    if mode in ("uvu", "uuu"):
        c = o3.Irreps([(a[0].mul, ir) for _, ir in c])
        a = o3.Irreps([(a[0].mul, ir) for _, ir in a])
    if mode == "uvv":
        c = o3.Irreps([(b[0].mul, ir) for _, ir in c])
        b = o3.Irreps([(b[0].mul, ir) for _, ir in b])
    return a, b, c


@settings(max_examples=20, deadline=None)
@given(
    mode=st.sampled_from(MODES),
    a=_irreps_strategy(),
    b=_irreps_strategy(),
    c=_irreps_strategy(max_l=4),
    shared=st.booleans(),
    batch=st.integers(0, 5),
)
def test_cg_equals_e3nn_random_irreps(mode, a, b, c, shared, batch):
    torch.manual_seed(1)
    a, b, c = _paired(mode, a, b, c)
    ours = TensorProduct(a, b, c, mode=mode, shared_weights=shared, internal_weights=False, backend="cg")
    if not ours.instructions:
        return
    ref = TensorProduct(a, b, c, mode=mode, shared_weights=shared, internal_weights=False, backend="e3nn")
    x1 = torch.randn(batch, a.dim, dtype=torch.float64)
    x2 = torch.randn(batch, b.dim, dtype=torch.float64)
    w = torch.randn((ours.weight_numel,) if shared else (batch, ours.weight_numel), dtype=torch.float64)
    got = ours.double()(x1, x2, w)
    assert got.shape == (batch, ours.irreps_out.dim)
    if batch:
        assert (got - ref.double()(x1, x2, w)).abs().max().item() < TOL[torch.float64]


@pytest.mark.parametrize("mode", MODES)
def test_cg_equals_raw_e3nn_tensor_product(mode):
    a, b, c = _paired(mode, "2x0e+2x1o+2x2e", "2x0e+2x1o+2x2e", "2x0e+2x1o+2x1e+2x2e+2x3o")
    ours = TensorProduct(a, b, c, mode=mode, shared_weights=False, internal_weights=False).double()
    instructions = [(i.i_in1, i.i_in2, i.i_out, i.mode, i.has_weight) for i in ours.instructions]
    ref = o3.TensorProduct(a, b, c, instructions, shared_weights=False, internal_weights=False).double()
    x1, x2 = torch.randn(6, a.dim, dtype=torch.float64), torch.randn(6, b.dim, dtype=torch.float64)
    w = torch.randn(6, ref.weight_numel, dtype=torch.float64)
    assert ours.weight_numel == ref.weight_numel
    # +1 everywhere under e3nn >= 0.5; under 0.4.4 the conversion of its 16 other wigner_3j signs
    sign = torch.as_tensor(installed_e3nn_weight_signs(ours.descriptor))
    assert (ours(x1, x2, w) - ref(x1, x2, w * sign)).abs().max() < TOL[torch.float64]


def test_path_weight_and_normalizations_match_e3nn():
    a, b, c = "3x0e+2x1o", "0e+1o+2e", "3x0e+3x1o+3x2e"
    instructions = [
        (0, 0, 0, "uvw", True, 0.5),
        (1, 1, 0, "uvw", True, 2.0),
        (1, 2, 1, "uvw", True),
        (0, 2, 2, "uvu", False),
    ]
    for irrep_norm in ("component", "norm", "none"):
        for path_norm in ("element", "path", "none"):
            kw = dict(
                irrep_normalization=irrep_norm,
                path_normalization=path_norm,
                internal_weights=False,
                shared_weights=True,
            )
            ours = TensorProduct(a, b, c, instructions, **kw).double()
            ref = o3.TensorProduct(a, b, c, instructions, **kw).double()
            x1, x2 = (
                torch.randn(4, ours.irreps_in1.dim, dtype=torch.float64),
                torch.randn(4, 9, dtype=torch.float64),
            )
            w = torch.randn(ref.weight_numel, dtype=torch.float64)
            assert (ours(x1, x2, w) - ref(x1, x2, w)).abs().max() < TOL[torch.float64], (
                irrep_norm,
                path_norm,
            )


def test_broadcasting_and_batch_shapes():
    tp = FullyConnectedTensorProduct("2x0e+1o", "1o", "0e+1o+1e", backend="cg").double()
    x1 = torch.randn(3, 1, 5, dtype=torch.float64)
    x2 = torch.randn(4, 3, dtype=torch.float64)
    out = tp(x1, x2)
    assert out.shape == (3, 4, tp.irreps_out.dim)
    assert torch.allclose(out[1, 2], tp(x1[1, 0], x2[2]), atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("improper", [False, True])
def test_equivariance(dtype, improper, rng):
    tp = ChannelwiseTensorProduct("4x0e+4x1o+4x2e", "0e+1o+2e+3o", "4x0e+4x1o+4x2e+4x3o+4x1e").to(dtype)
    x1 = torch.randn(10, tp.irreps_in1.dim, dtype=dtype)
    x2 = torch.randn(10, tp.irreps_in2.dim, dtype=dtype)
    w = torch.randn(10, tp.weight_numel, dtype=dtype)
    r = so3.random_rotation(rng, improper=improper)
    lhs = tp(rotate(x1, tp.irreps_in1, r), rotate(x2, tp.irreps_in2, r), w)
    rhs = rotate(tp(x1, x2, w), tp.irreps_out, r)
    assert (lhs - rhs).abs().max().item() < TOL[dtype]


def test_mace_convolution_layout():
    tp = ChannelwiseTensorProduct("128x0e+128x1o", "0e+1o+2e+3o", "128x0e+128x1o+128x2e+128x3o")
    assert len(tp.instructions) == 10
    assert tp.weight_numel == 1280
    assert tp.irreps_out.dim == 5120


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_and_gradgradcheck(mode):
    a, b, c = _paired(mode, "2x0e+1x1o", "1x0e+2x1o", "2x0e+2x1o+1x1e")
    tp = TensorProduct(a, b, c, mode=mode, shared_weights=False, internal_weights=False).double()
    x1 = torch.randn(3, a.dim, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(3, b.dim, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, tp.weight_numel, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(tp, (x1, x2, w))
    assert torch.autograd.gradgradcheck(tp, (x1, x2, w))


def test_unknown_backend_lists_available():
    with pytest.raises(ValueError, match="unknown tensor-product backend 'nope'.*cg"):
        TensorProduct("0e", "0e", "0e", mode="uvw", backend="nope")
    assert {"cg", "e3nn"} <= set(available_backends())


def test_bad_irreps_string():
    with pytest.raises(ValueError, match="cannot parse irreps '3x1q'"):
        TensorProduct("3x1q", "0e", "0e", mode="uvw")


def test_parity_violation():
    with pytest.raises(ValueError, match="violates parity"):
        TensorProduct("1o", "1o", "1o", [(0, 0, 0, "uvw", True)])


def test_triangle_violation():
    with pytest.raises(ValueError, match="triangle rule"):
        TensorProduct("1o", "1o", "3e", [(0, 0, 0, "uvw", True)])


def test_wrong_input_dimension():
    tp = FullyConnectedTensorProduct("0e+1o", "1o", "1o")
    with pytest.raises(ValueError, match=r"x1 has shape \(2, 3\).*last dimension 4"):
        tp(torch.randn(2, 3), torch.randn(2, 3))


def test_wrong_weight_size():
    tp = ChannelwiseTensorProduct("2x0e", "0e+1o", "2x0e+2x1o")
    with pytest.raises(ValueError, match=r"weight has shape \(5, 3\).*\[\.\.\., 4\]"):
        tp(torch.randn(5, 2), torch.randn(5, 4), torch.randn(5, 3))


def test_bad_mode_and_multiplicities():
    with pytest.raises(ValueError, match="unknown connection mode"):
        TensorProduct("0e", "0e", "0e", [(0, 0, 0, "xyz", True)])
    with pytest.raises(ValueError, match="uvu needs mul_out == mul1"):
        TensorProduct("2x0e", "0e", "3x0e", [(0, 0, 0, "uvu", True)])
    with pytest.raises(ValueError, match="needs a weight"):
        TensorProduct("0e", "0e", "0e", [(0, 0, 0, "uvw", False)])
    with pytest.raises(ValueError, match="out of range"):
        TensorProduct("0e", "0e", "0e", [(1, 0, 0, "uvw", True)])


def test_e3nn_backend_equals_cg_on_the_blocks_where_e3nn_04_has_other_signs():
    """(1,2,2), (2,2,1), (1,3,3), (3,3,1) are among e3nn 0.4.4's 16 sign flips: the adapter's
    weight conversion makes backend 'e3nn' equal 'cg' on every installed e3nn version."""
    a, b, c = "2x1o+2x2e+2x3o", "1o+2e+3o", "2x1e+2x2o+2x3e+2x0e"
    ours = TensorProduct(a, b, c, mode="uvw", shared_weights=False, internal_weights=False).double()
    ref = TensorProduct(a, b, c, mode="uvw", shared_weights=False, internal_weights=False, backend="e3nn").double()
    flipped = [p for p in ours.paths if (p.ir_in1.l, p.ir_in2.l, p.ir_out.l) in {(1, 2, 2), (2, 2, 1)}]
    assert flipped  # the product does use such blocks
    x1, x2 = torch.randn(5, ours.irreps_in1.dim), torch.randn(5, ours.irreps_in2.dim)
    w = torch.randn(5, ours.weight_numel)
    assert (ours(x1, x2, w) - ref(x1, x2, w)).abs().max() < TOL[torch.float64]


def test_e3nn_backend_on_an_unweighted_flipped_block():
    """Under e3nn 0.4.4 an unweighted path on a flipped block cannot be converted: refused with a
    message; under e3nn >= 0.5 it equals cg."""
    from equitensor._e3nn_compat import installed_e3nn_version

    args = ("1o", "2e", "2o", [(0, 0, 0, "uuu", False)])
    if installed_e3nn_version() < (0, 5):
        with pytest.raises(ValueError, match=r"opposite sign of wigner_3j\(1, 2, 2\).*use backend 'cg'"):
            TensorProduct(*args, backend="e3nn")
        return
    x1, x2 = torch.randn(4, 3), torch.randn(4, 5)
    ours, ref = TensorProduct(*args).double(), TensorProduct(*args, backend="e3nn").double()
    assert (ours(x1, x2) - ref(x1, x2)).abs().max() < TOL[torch.float64]
