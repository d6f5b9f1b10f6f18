"""The ``cueq`` backends (cuEquivariance) against ``cg``: same weights, same function, same derivatives.

On a machine without CUDA kernels cuEquivariance runs its ``naive`` torch method, so these tests
check our translation of the descriptor (coefficients, weight layout, layouts, indices) exactly;
the general contract (equivariance, modes, float32, shapes) is ``tests/test_backend_contract.py``.
"""

from __future__ import annotations

import importlib
import sys

import pytest
import torch

pytest.importorskip("cuequivariance_torch")

from equitensor.ops import ChannelwiseTensorProduct, ProductBasis  # noqa: E402
from equitensor.ops.backends import available_backends, available_product_bases, get_backend  # noqa: E402
from equitensor.ops.backends.registry import PRODUCT_BASES, TENSOR_PRODUCTS  # noqa: E402

from .conftest import TOL  # noqa: E402
from .helpers import force_training_results  # noqa: E402

pytestmark = pytest.mark.usefixtures("default_float64")

#: MACE's first convolution at small size: node features x edge harmonics (l <= 3)
NODE_IRREPS, EDGE_IRREPS, TARGET_IRREPS = "3x0e+3x1o+3x2e", "0e+1o+2e+3o", "3x0e+3x1o+3x2e+3x3o"


def conv_pair():
    cg = ChannelwiseTensorProduct(NODE_IRREPS, EDGE_IRREPS, TARGET_IRREPS, backend="cg")
    cueq = ChannelwiseTensorProduct(NODE_IRREPS, EDGE_IRREPS, TARGET_IRREPS, backend="cueq")
    return cg, cueq


def conv_inputs(tp, n_nodes=5, n_edges=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    nodes = torch.randn(n_nodes, tp.irreps_in1.dim, generator=g)
    edges = torch.randn(n_edges, tp.irreps_in2.dim, generator=g)
    weight = torch.randn(n_edges, tp.weight_numel, generator=g)
    sender = torch.randint(0, n_nodes, (n_edges,), generator=g)
    receiver = torch.randint(0, n_nodes, (n_edges,), generator=g)
    return nodes, edges, weight, torch.stack([sender, receiver])


def force_training_terms(call, inputs, probe):
    """Output, first derivatives with a graph, and the gradients of a loss built on those derivatives
    (what a force loss backpropagates: the double backward)."""
    inputs = [t.clone().requires_grad_(True) for t in inputs]
    out = call(*inputs)
    energy = (out * probe).sum()
    first = torch.autograd.grad(energy, inputs, create_graph=True)
    loss = energy + sum((g * g).sum() for g in first)
    second = torch.autograd.grad(loss, inputs)
    return [out, *first, *second]


def test_cueq_registered_with_the_package_installed():
    assert "cueq" in available_backends() and "cueq" in available_product_bases()
    cls = get_backend("cueq")
    assert cls.parameterization == "per_path" and cls.exact and cls.realises_odd_paths


def test_mace_convolution_equals_cg_with_the_same_weights():
    cg, cueq = conv_pair()
    assert cueq.weight_numel == cg.weight_numel and cueq.irreps_out == cg.irreps_out
    nodes, edges, weight, edge_index = conv_inputs(cg)
    probe = torch.randn(edges.shape[0], cg.irreps_out.dim)
    x1 = nodes[edge_index[0]]
    expected = force_training_terms(cg, [x1, edges, weight], probe)
    got = force_training_terms(cueq, [x1, edges, weight], probe)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=TOL[torch.float64], rtol=0)


def test_message_passing_equals_cg_through_the_double_backward():
    cg, cueq = conv_pair()
    nodes, edges, weight, edge_index = conv_inputs(cg)
    probe = torch.randn(nodes.shape[0], cg.irreps_out.dim)

    def through(tp):
        return lambda x, y, w: tp.message_passing(x, y, w, edge_index)

    expected = force_training_terms(through(cg), [nodes, edges, weight], probe)
    got = force_training_terms(through(cueq), [nodes, edges, weight], probe)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=TOL[torch.float64], rtol=0)


def test_fully_connected_uvw_and_mixed_modes_equal_cg():
    """Every mode, also several modes and unweighted paths in one product (constant weight 1)."""
    from equitensor import TensorProduct

    instructions = [
        (0, 0, 0, "uvu", True), (1, 1, 0, "uvu", False, 0.5), (0, 1, 1, "uvw", True), (1, 0, 1, "uvu", True),
    ]  # fmt: skip
    normalizations = [("component", "element"), ("norm", "path")]
    for shared, (irrep_normalization, path_normalization) in zip((False, True), normalizations):
        pair = [
            TensorProduct("3x0e+3x1o", "0e+1o", "3x0e+3x1o", instructions, backend=name,
                          shared_weights=shared, internal_weights=False,
                          irrep_normalization=irrep_normalization, path_normalization=path_normalization)
            for name in ("cg", "cueq")
        ]  # fmt: skip
        x1, x2 = torch.randn(4, pair[0].irreps_in1.dim), torch.randn(4, pair[0].irreps_in2.dim)
        weight = torch.randn(*(() if shared else (4,)), pair[0].weight_numel)
        expected = pair[0](x1, x2, weight)
        torch.testing.assert_close(pair[1](x1, x2, weight), expected, atol=TOL[torch.float64], rtol=0)


@pytest.mark.parametrize(
    "irreps_in,irreps_out,correlation",
    [("3x0e+3x1o+3x2e+3x3o", "3x0e+3x1o", 3), ("2x0e+2x1o+2x2e", "2x0e+2x1o+2x2e", 2)],
)
def test_product_basis_equals_cg_with_the_same_parameters(irreps_in, irreps_out, correlation):
    cg = ProductBasis(irreps_in, irreps_out, correlation, num_elements=3, backend="cg")
    cueq = ProductBasis(irreps_in, irreps_out, correlation, num_elements=3, backend="cueq")
    assert cueq.state_dict().keys() == cg.state_dict().keys()
    cueq.load_state_dict(cg.state_dict())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, cg.irreps_in.dim, generator=g)
    elements = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 2, 1, 0, 1]), 3).to(x.dtype)
    r, s = torch.randn(7, cg.irreps_out.dim, generator=g), torch.randn(7, cg.irreps_in.dim, generator=g)
    expected = force_training_results(cg, x, elements, r, s)
    for a, b in zip(force_training_results(cueq, x, elements, r, s), expected):
        torch.testing.assert_close(a, b, atol=TOL[torch.float64], rtol=0)


def test_a_float32_round_trip_keeps_the_float64_coefficients():
    """``.float().double()`` must not round cuEquivariance's tables (as our own tables)."""
    cg, cueq = conv_pair()
    basis_cg = ProductBasis("2x0e+2x1o+2x2e", "2x0e+2x1o", 3, num_elements=2, backend="cg")
    basis = ProductBasis("2x0e+2x1o+2x2e", "2x0e+2x1o", 3, num_elements=2, backend="cueq")
    basis.load_state_dict(basis_cg.state_dict())
    cueq.float().double()
    basis.float().double()
    basis.load_state_dict(basis_cg.state_dict())  # the parameters themselves were rounded
    nodes, edges, weight, edge_index = conv_inputs(cg)
    torch.testing.assert_close(
        cueq.message_passing(nodes, edges, weight, edge_index),
        cg.message_passing(nodes, edges, weight, edge_index), atol=TOL[torch.float64], rtol=0,
    )  # fmt: skip
    x = torch.randn(3, basis.irreps_in.dim)
    elements = torch.eye(2)[[0, 1, 1]]
    torch.testing.assert_close(basis(x, elements), basis_cg(x, elements), atol=TOL[torch.float64], rtol=0)


def test_cuequivariance_tables_stay_out_of_the_state_dict():
    """Checkpoints of cueq models hold the same tensors as cg's (tables are rebuilt at load)."""
    cg, cueq = conv_pair()
    assert set(cueq.state_dict()) == set(cg.state_dict())


def test_missing_package_names_the_extra(monkeypatch):
    """Without cuequivariance-torch: not listed, and asking for it says what to install."""
    monkeypatch.setitem(sys.modules, "cuequivariance_torch", None)
    for registry in (TENSOR_PRODUCTS, PRODUCT_BASES):
        monkeypatch.delitem(registry.registered, "cueq", raising=False)
    assert "cueq" not in available_backends() and "cueq" not in available_product_bases()
    with pytest.raises(ImportError, match=r'pip install "equitensor\[cueq\]"'):
        ChannelwiseTensorProduct(NODE_IRREPS, EDGE_IRREPS, TARGET_IRREPS, backend="cueq")
    with pytest.raises(ImportError, match="cuequivariance-ops-torch"):
        ProductBasis("2x0e+2x1o", "2x0e", 2, num_elements=1, backend="cueq")
    # importing the module directly says the same
    monkeypatch.delitem(sys.modules, "equitensor.ops.backends.cueq", raising=False)
    with pytest.raises(ImportError, match=r"equitensor\[cueq\]"):
        importlib.import_module("equitensor.ops.backends.cueq")


def test_product_basis_refuses_correlations_cuequivariance_cannot_run():
    with pytest.raises(ValueError, match="correlation=5"):
        ProductBasis("2x0e+2x1o", "2x0e", 5, num_elements=1, backend="cueq")


def test_cuequivariance_clebsch_gordan_is_ours_times_sqrt_2l3_plus_1():
    """Documents the convention relation (docs/backends.md): cuEquivariance's ``O3`` Clebsch-Gordan
    tables have e3nn >= 0.5's phases and basis order, normalised as ``so3.clebsch_gordan``. The
    backend does not rely on it (it writes equitensor's own tables), so a change here is a
    documentation change, not a numerical one."""
    import cuequivariance as cue
    import numpy as np

    from equitensor import so3

    for l1 in range(4):
        for l2 in range(4):
            for l3 in range(abs(l1 - l2), min(l1 + l2, 3) + 1):
                irreps = [cue.O3(l, (-1) ** l) for l in (l1, l2)] + [cue.O3(l3, (-1) ** (l1 + l2))]
                [theirs] = cue.clebsch_gordan(*irreps)
                np.testing.assert_allclose(theirs, so3.clebsch_gordan(l1, l2, l3), atol=1e-12, rtol=0)
