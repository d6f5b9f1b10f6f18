"""Linear and gate against e3nn."""

import pytest
import torch
from e3nn import nn as e3nn_nn
from e3nn import o3

from equitensor import so3
from equitensor.ops.activation import Gate, NormActivation
from equitensor.ops.linear import Linear

from .conftest import TOL
from .helpers import rotate

pytestmark = pytest.mark.usefixtures("default_float64")


@pytest.mark.parametrize(
    "irreps_in, irreps_out",
    [("8x0e+4x1o", "3x0e+5x1o"), ("4x0e+2x1o+4x0e+3x2e", "2x0e+3x1o+1x3o"), ("2x1e", "3x0e")],
)
def test_linear_matches_e3nn(irreps_in, irreps_out):
    ref = o3.Linear(irreps_in, irreps_out).double()
    ours = Linear(irreps_in, irreps_out).double()
    assert ours.weight_numel == ref.weight_numel
    ours.weight.data.copy_(ref.weight.data)
    x = torch.randn(7, ours.irreps_in.dim, dtype=torch.float64)
    assert (ours(x) - ref(x)).abs().max() < TOL[torch.float64]


def test_linear_gradgradcheck():
    m = Linear("2x0e+2x1o", "3x0e+1x1o").double()
    x = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(m, (x,))


def test_linear_wrong_shape():
    with pytest.raises(ValueError, match="last dimension 8"):
        Linear("2x0e+2x1o", "0e")(torch.randn(3, 7))


def test_gate_matches_e3nn_and_is_equivariant(rng):
    ref = e3nn_nn.Gate("4x0e", [torch.nn.functional.silu], "3x0e", [torch.sigmoid], "2x1o+1x2e")
    ours = Gate("4x0e", "2x1o+1x2e")
    x = torch.randn(5, ours.irreps_in.dim, dtype=torch.float64)
    assert ours.irreps_in.dim == ref.irreps_in.dim and ours.irreps_out.dim == ref.irreps_out.dim
    assert (ours(x) - ref(x)).abs().max() < TOL[torch.float64]
    r = so3.random_rotation(rng, improper=True)
    assert (ours(rotate(x, ours.irreps_in, r)) - rotate(ours(x), ours.irreps_out, r)).abs().max() < TOL[
        torch.float64
    ]


def test_norm_activation_equivariant(rng):
    m = NormActivation("2x0e+2x1o+1x2e")
    x = torch.randn(5, m.irreps.dim, dtype=torch.float64)
    r = so3.random_rotation(rng)
    assert (m(rotate(x, m.irreps, r)) - rotate(m(x), m.irreps, r)).abs().max() < TOL[torch.float64]


@pytest.mark.parametrize("irreps", ["16x0e+16x1o", "8x0e+8x1o+8x2e+8x3o", "4x0e+3x0e+2x1o"])
def test_linear_both_methods_match_e3nn(irreps):
    ref = o3.Linear(irreps, irreps).double()
    for method in ("dense", "gather", "blocks", "auto"):
        ours = Linear(irreps, irreps, method=method).double()
        ours.weight.data.copy_(ref.weight.data)
        x = torch.randn(5, ours.irreps_in.dim, dtype=torch.float64, requires_grad=True)
        assert (ours(x) - ref(x)).abs().max() < TOL[torch.float64]
        assert torch.autograd.gradgradcheck(ours, (x,))


@pytest.mark.parametrize(
    "irreps_in, irreps_out",
    [
        ("3x0e+2x1o+4x1o+2x2e+1x0e", "2x1o+5x0e+3x2e+1x1e"),  # repeated irreps, an output with no input
        ("4x1o+2x0e", "3x0e+2x1o+1x1o"),
        ("2x2e", "3x0e"),  # no path at all
    ],
)
@pytest.mark.parametrize("method", ["dense", "gather", "blocks"])
def test_linear_methods_match_e3nn_mixed_irreps(irreps_in, irreps_out, method):
    ref = o3.Linear(irreps_in, irreps_out).double()
    ours = Linear(irreps_in, irreps_out, method=method).double()
    ours.weight.data.copy_(ref.weight.data)
    x = torch.randn(4, 3, ours.irreps_in.dim, dtype=torch.float64, requires_grad=True)
    assert (ours(x) - ref(x)).abs().max() < TOL[torch.float64]
    if ours.weight_numel:
        assert torch.autograd.gradgradcheck(
            lambda a, w: _with_weight(ours, w)(a), (x[0], ours.weight.detach().clone().requires_grad_())
        )


def _with_weight(module, weight):
    return lambda a: torch.func.functional_call(module, {"weight": weight}, (a,))


def test_linear_auto_method_choice_and_unknown_method():
    """"auto" (the default) names the route it takes: ``gather`` when an irrep repeats across
    blocks, else ``blocks``; an unknown name is refused with the accepted ones."""
    assert Linear("2x0e+3x1o", "2x0e+3x1o").method == "blocks"
    assert Linear("2x0e+3x1o", "2x0e+3x1o", method="auto").method == "blocks"
    assert Linear("2x0e+3x1o+2x0e", "4x0e+3x1o").method == "gather"
    with pytest.raises(ValueError, match=r"unknown method 'fast'.*'auto', 'dense', 'gather', 'blocks'"):
        Linear("2x0e", "2x0e", method="fast")
    with pytest.raises(ValueError, match="unknown method None"):
        Linear("2x0e", "2x0e", method=None)
