"""The cg backend's channel-wise kernel (uvu, single-channel x2) and fused message passing,
against the naive per-path reference, e3nn, and gather -> product -> index_add; gradients of
first, second and third order; the errors of ``message_passing``."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from equitensor.ops import ChannelwiseTensorProduct, TensorProduct

from .conftest import TOL
from .test_tensor_product import _irreps_strategy

pytestmark = pytest.mark.usefixtures("default_float64")

MACE_LIKE = ("3x0e+3x1o+2x2e+2x1e", "0e+1o+2e+3o", "0e+1o+2e+3o+1e")
NATURAL = ("3x0e+3x1o+2x2e", "0e+1o+2e+3o", "0e+1o+2e+3o")  # what Gaunt products realise


def _conv(method="auto", backend="cg", irreps=MACE_LIKE):
    return ChannelwiseTensorProduct(
        *irreps, backend=backend, **({"method": method} if backend == "cg" else {})
    )


def _reference_message_passing(tp, x, y, w, edge_index):
    messages = tp(x[edge_index[0]], y, w)
    return messages.new_zeros(x.shape[0], messages.shape[1]).index_add(0, edge_index[1], messages)


def _graph(n_nodes, n_edges, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, n_nodes, (2, n_edges), generator=g)


def test_auto_picks_channelwise_for_mace_convolution():
    tp = _conv()
    assert tp.impl.method == "channelwise"
    assert _conv(method="sparse").impl.method == "sparse"


@settings(max_examples=25, deadline=None)
@given(a=_irreps_strategy(), c=_irreps_strategy(max_l=4), batch=st.integers(0, 5), shared=st.booleans())
def test_channelwise_equals_naive_and_e3nn_random_irreps(a, c, batch, shared):
    torch.manual_seed(1)
    kwargs = dict(mode="uvu", shared_weights=shared, internal_weights=False)
    b = "0e+1o+2e+1e+3o"  # multiplicity 1: what the channel-wise kernel is for
    fast = (
        TensorProduct(a, b, c, backend="cg", method="channelwise", **kwargs) if _has_paths(a, b, c) else None
    )
    if fast is None:
        return
    naive = TensorProduct(a, b, c, backend="cg", method="naive", **kwargs)
    ref = TensorProduct(a, b, c, backend="e3nn", **kwargs).double()
    x1, x2 = torch.randn(batch, fast.irreps_in1.dim), torch.randn(batch, fast.irreps_in2.dim)
    w = torch.randn(fast.weight_numel) if shared else torch.randn(batch, fast.weight_numel)
    got = fast(x1, x2, w)
    assert got.shape == (batch, fast.irreps_out.dim)
    if batch:
        assert (got - naive(x1, x2, w)).abs().max().item() < TOL[torch.float64]
        assert (got - ref(x1, x2, w)).abs().max().item() < TOL[torch.float64]


def _has_paths(a, b, c):
    return bool(TensorProduct(a, b, c, mode="uvu", shared_weights=False, method="naive").instructions)


def test_unweighted_paths_and_path_weights():
    instructions = [(0, 0, 0, "uvu", True, 0.5), (1, 1, 0, "uvu", False, 2.0), (1, 2, 1, "uvu", True)]
    make = lambda method: TensorProduct(  # noqa: E731
        "4x0e+4x1o", "0e+1o+2e", "4x0e+4x1o", instructions, shared_weights=False, method=method
    )
    fast, naive = make("channelwise"), make("naive")
    x1, x2 = torch.randn(6, 16, requires_grad=True), torch.randn(6, 9, requires_grad=True)
    w = torch.randn(6, fast.weight_numel, requires_grad=True)
    assert (fast(x1, x2, w) - naive(x1, x2, w)).abs().max() < TOL[torch.float64]
    assert torch.autograd.gradgradcheck(lambda *t: fast(*t), (x1, x2, w))


@pytest.mark.parametrize("shared", [False, True])
def test_per_sample_gradients_to_third_order(shared):
    tp = _conv(irreps=("2x0e+1x1o", "0e+1o+2e", "0e+1o+2e"))
    x1 = torch.randn(3, tp.irreps_in1.dim, requires_grad=True)
    x2 = torch.randn(3, tp.irreps_in2.dim, requires_grad=True)
    w = torch.randn(*(() if shared else (3,)), tp.weight_numel, requires_grad=True)
    call = tp.impl.executor_for("cpu", shared=False) if shared else tp
    assert torch.autograd.gradcheck(call, (x1, x2, w))
    assert torch.autograd.gradgradcheck(call, (x1, x2, w))

    def second(a, b, c):  # a scalar's gradient, differentiated twice more by gradgradcheck
        out = call(a, b, c)
        return torch.autograd.grad(out.pow(2).sum(), (a, b, c), create_graph=True)

    assert torch.autograd.gradgradcheck(second, (x1, x2, w))


@pytest.mark.parametrize("backend", ["cg", "e3nn", "gaunt_grid"])
def test_message_passing_equals_gather_product_scatter(backend):
    tp = _conv(backend=backend, irreps=MACE_LIKE if backend != "gaunt_grid" else NATURAL).double()
    n_nodes, n_edges = 9, 40
    edge_index = _graph(n_nodes, n_edges)
    edge_index[:, :3] = torch.tensor([[0, 0, 0], [1, 1, 1]])  # repeated edges
    edge_index[1] = edge_index[1].clamp(max=n_nodes - 2)  # the last node receives nothing
    x = torch.randn(n_nodes, tp.irreps_in1.dim)
    y = torch.randn(n_edges, tp.irreps_in2.dim)
    w = torch.randn(n_edges, tp.weight_numel)
    got = tp.message_passing(x, y, w, edge_index)
    ref = _reference_message_passing(tp, x, y, w, edge_index)
    assert got.shape == (n_nodes, tp.irreps_out.dim)
    assert (got - ref).abs().max().item() < TOL[torch.float64]
    assert got[-1].abs().max() == 0


def test_fused_message_passing_equals_e3nn_and_gradients():
    small = ("2x0e+1x1o", "0e+1o+2e", "0e+1o+2e")
    tp, ref_tp = _conv(irreps=small), _conv(backend="e3nn", irreps=small).double()
    edge_index = _graph(4, 7, seed=3)
    x = torch.randn(4, tp.irreps_in1.dim, requires_grad=True)
    y = torch.randn(7, tp.irreps_in2.dim, requires_grad=True)
    w = torch.randn(7, tp.weight_numel, requires_grad=True)
    got = tp.message_passing(x, y, w, edge_index)
    assert (got - _reference_message_passing(ref_tp, x, y, w, edge_index)).abs().max() < TOL[torch.float64]
    fn = lambda a, b, c: tp.message_passing(a, b, c, edge_index)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, y, w))
    assert torch.autograd.gradgradcheck(fn, (x, y, w))


def test_fused_message_passing_force_like_double_backward():
    """Energy from messages, forces w.r.t. edge inputs, a loss on them, gradients w.r.t. the
    node features: the same numbers as e3nn through gather/index_add."""
    edge_index = _graph(6, 20, seed=4)
    results = []
    for tp in (_conv(), _conv(backend="e3nn").double()):
        torch.manual_seed(5)
        x = torch.randn(6, tp.irreps_in1.dim, requires_grad=True)
        y = torch.randn(20, tp.irreps_in2.dim, requires_grad=True)
        w = torch.randn(20, tp.weight_numel, requires_grad=True)
        out = tp.message_passing(x, y, w, edge_index) if tp.backend_name == "cg" else (
            _reference_message_passing(tp, x, y, w, edge_index)
        )  # fmt: skip
        energy = out.pow(2).sum()
        fy, fw = torch.autograd.grad(energy, (y, w), create_graph=True)
        loss = fy.pow(2).sum() + fw.sin().sum()
        results.append(torch.autograd.grad(loss, (x, y, w)))
    for a, b in zip(*results):
        assert (a - b).abs().max().item() < 1e-9


def test_message_passing_without_edges_and_float32():
    tp = _conv()
    x = torch.randn(4, tp.irreps_in1.dim)
    empty = tp.message_passing(
        x, torch.randn(0, 16), torch.randn(0, tp.weight_numel), torch.zeros(2, 0, dtype=torch.long)
    )
    assert empty.shape == (4, tp.irreps_out.dim) and empty.abs().max() == 0
    edge_index = _graph(4, 10)
    y, w = torch.randn(10, 16), torch.randn(10, tp.weight_numel)
    ref = tp.message_passing(x, y, w, edge_index)
    got = tp.float().message_passing(x.float(), y.float(), w.float(), edge_index.int())
    assert got.dtype == torch.float32
    assert (got.double() - ref).abs().max().item() < TOL[torch.float32]


def test_channelwise_method_refuses_other_products():
    with pytest.raises(ValueError, match="channelwise"):
        TensorProduct("2x0e+2x1o", "2x0e+2x1o", "2x0e+2x1o", mode="uvu", method="channelwise")
    with pytest.raises(ValueError, match="channelwise"):
        TensorProduct("2x0e+2x1o", "0e+1o", "2x0e+2x1o", mode="uuu", method="channelwise")


@pytest.mark.parametrize(
    "edge_index, match",
    [
        (torch.zeros(3, 5, dtype=torch.long), r"edge_index must have shape \[2, n_edges\]"),
        (torch.zeros(2, 4, dtype=torch.long), r"edge_index must have shape \[2, n_edges\]"),
        (torch.full((2, 5), 4), r"outside \[0, 4\)"),
        (torch.full((2, 5), -1), r"outside \[0, 4\)"),
        (torch.zeros(2, 5), "must hold integers"),
    ],
)
def test_message_passing_bad_edge_index(edge_index, match):
    tp = _conv()
    x, y, w = torch.randn(4, tp.irreps_in1.dim), torch.randn(5, 16), torch.randn(5, tp.weight_numel)
    with pytest.raises(ValueError, match=match):
        tp.message_passing(x, y, w, edge_index)


def test_message_passing_bad_shapes():
    tp = _conv()
    x, y, w = torch.randn(4, tp.irreps_in1.dim), torch.randn(5, 16), torch.randn(5, tp.weight_numel)
    edge_index = torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match="edge_attrs"):
        tp.message_passing(x, torch.randn(5, 15), w, edge_index)
    with pytest.raises(ValueError, match="does not broadcast"):
        tp.message_passing(x, y, torch.randn(6, tp.weight_numel), edge_index)
    with pytest.raises(ValueError, match="per-edge weight"):
        tp.message_passing(x, y, torch.randn(1, 5, tp.weight_numel), edge_index)
    with pytest.raises(ValueError, match="node_feats"):
        tp.message_passing(x[None], y, w, edge_index)


@pytest.mark.parametrize("threads", [1, 2])
def test_serial_and_parallel_drivers_agree(threads):
    """One torch thread runs the serial drivers, more the parallel ones: same numbers, all slots."""
    tp = _conv()
    edge_index = _graph(6, 30, seed=7)
    x = torch.randn(6, tp.irreps_in1.dim, requires_grad=True)
    y = torch.randn(30, tp.irreps_in2.dim, requires_grad=True)
    w = torch.randn(30, tp.weight_numel, requires_grad=True)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = tp.message_passing(x, y, w, edge_index)
        grads = torch.autograd.grad(out.pow(2).sum(), (x, y, w), create_graph=True)
        second = torch.autograd.grad(sum(g.pow(2).sum() for g in grads), (x, y, w))
    finally:
        torch.set_num_threads(before)
    ref_tp = _conv(method="naive")
    ref = _reference_message_passing(ref_tp, x, y, w, edge_index)
    ref_grads = torch.autograd.grad(ref.pow(2).sum(), (x, y, w), create_graph=True)
    ref_second = torch.autograd.grad(sum(g.pow(2).sum() for g in ref_grads), (x, y, w))
    assert (out - ref).abs().max().item() < TOL[torch.float64]
    for a, b in zip((*grads, *second), (*ref_grads, *ref_second)):
        assert (a - b).abs().max().item() < 1e-9
