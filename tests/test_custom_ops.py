"""The numba kernels as ``torch.library`` custom ops: ``opcheck`` (schema, fake, autograd
registration, AOT dispatch), eager results against the pure-torch references with gradgradcheck,
``torch.compile(fullgraph=True)`` == eager for a force-training step through every op, and
forward passes on ``meta`` tensors (fake implementations, pure-torch routes off the CPU)."""

import pytest
import torch
from torch.library import opcheck

from equitensor.ops import ChannelwiseTensorProduct, ProductBasis, TensorProduct
from equitensor.ops.backends.multilinear import SLOTS

from .conftest import TOL

pytestmark = pytest.mark.usefixtures("default_float64")

CONV = ("2x0e+2x1o", "0e+1o+2e", "2x0e+2x1o+2x2e")
EDGE_INDEX = torch.tensor([[0, 1, 2, 2, 1, 0], [1, 2, 0, 1, 1, 1]])  # 3 nodes, node 1 receives 4 edges
OPCHECK_TESTS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
ops = torch.ops.equitensor


def _rand(*shape, requires_grad=True):
    return torch.randn(*shape, dtype=torch.float64, requires_grad=requires_grad)


def _sparse_tp(method="sparse"):
    return TensorProduct("2x0e+2x1o", "2x0e+1x1o", "2x0e+2x1o+1x1e", mode="uvu", shared_weights=False,
                         internal_weights=False, method=method)  # fmt: skip


def _product_basis(backend="cg", **options):
    torch.manual_seed(0)
    return ProductBasis("2x0e+2x1o+2x2e", "2x0e+2x1o", correlation=3, num_elements=2, backend=backend, **options)


def _slot_operands(rows, widths):
    """Random operands of the four slots (out, x1, x2, w) with the given rows and widths."""
    return [_rand(r, w) for r, w in zip(rows, widths)]


@pytest.mark.parametrize("target", SLOTS)
def test_opcheck_cg_sparse(target):
    terms = _sparse_tp().impl.executor
    operands = _slot_operands([3] * 4, terms.widths)
    sources = [t for s, t in zip(SLOTS, operands) if s != target]
    width = terms.widths[target]
    opcheck(ops.cg_sparse_contract, (target, *sources, 3, width, terms.tables), test_utils=OPCHECK_TESTS)
    if target == 0:
        opcheck(ops.cg_sparse_input_gradients, (*operands, terms.tables), test_utils=OPCHECK_TESTS)


@pytest.mark.parametrize("target", SLOTS)
def test_opcheck_cg_channelwise_message_passing(target):
    plan = ChannelwiseTensorProduct(*CONV, method="channelwise").impl.executor
    n_nodes, n_edges = 3, EDGE_INDEX.shape[1]
    operands = _slot_operands([n_nodes, n_nodes, n_edges, n_edges], [plan.widths[s] for s in SLOTS])
    tables = plan.graph_tables(EDGE_INDEX[0], EDGE_INDEX[1], n_nodes)
    sources = [t for s, t in zip(SLOTS, operands) if s != target]
    rows, width = operands[target].shape
    opcheck(ops.cg_channelwise_contract, (target, *sources, rows, width, tables), test_utils=OPCHECK_TESTS)
    if target == 0:
        opcheck(ops.cg_channelwise_input_gradients, (*operands, tables), test_utils=OPCHECK_TESTS)


def test_opcheck_symmetric_contraction():
    fused = _product_basis(method="fused").impl.fused
    x, w = _rand(4, 2 * 9), _rand(4, 2 * fused.num_weights)
    gout = _rand(4, fused.dim_out)
    opcheck(ops.symmetric_contraction, (x, w, fused.dim_out, fused.tables), test_utils=OPCHECK_TESTS)
    opcheck(ops.symmetric_contraction_vjp, (x, w, gout, fused.tables), test_utils=OPCHECK_TESTS)
    # its backward (a third derivative) raises by design: checked without gradients
    plain = [t.detach() for t in (x, w, gout, _rand(*x.shape), _rand(*w.shape))]
    opcheck(ops.symmetric_contraction_vjp_backward, (*plain, fused.tables), test_utils=OPCHECK_TESTS)


def test_third_derivative_of_symmetric_contraction_raises():
    fused = _product_basis(method="fused").impl.fused
    x, w = _rand(3, 2 * 9), _rand(3, 2 * fused.num_weights)
    (gx,) = torch.autograd.grad(fused(x, w).square().sum(), x, create_graph=True)
    (gxx,) = torch.autograd.grad(gx.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiable twice"):
        torch.autograd.grad(gxx.sum(), x)


@pytest.mark.parametrize("kind", ["channelwise", "message_passing", "sparse"])
def test_eager_ops_equal_naive_with_gradgradcheck(kind):
    if kind == "sparse":
        fast, naive = _sparse_tp(), _sparse_tp("naive")
        call = {m: m for m in (fast, naive)}
        x1, x2, w = _rand(3, 8), _rand(3, 5), _rand(3, fast.weight_numel)
    else:
        fast, naive = (ChannelwiseTensorProduct(*CONV, method=m) for m in ("channelwise", "naive"))
        n_edges = EDGE_INDEX.shape[1]
        if kind == "channelwise":
            call = {m: m for m in (fast, naive)}
            x1, x2, w = _rand(n_edges, 8), _rand(n_edges, 9), _rand(n_edges, fast.weight_numel)
        else:
            call = {m: (lambda a, b, c, m=m: m.message_passing(a, b, c, EDGE_INDEX)) for m in (fast, naive)}
            x1, x2, w = _rand(3, 8), _rand(n_edges, 9), _rand(n_edges, fast.weight_numel)
    assert (call[fast](x1, x2, w) - call[naive](x1, x2, w)).abs().max() < TOL[torch.float64]
    assert torch.autograd.gradcheck(call[fast], (x1, x2, w))
    assert torch.autograd.gradgradcheck(call[fast], (x1, x2, w))


@pytest.mark.parametrize("backend, method, reference", [("cg", "fused", "naive"), ("gaunt_grid", "sparse", "grid")])
def test_eager_product_basis_ops_equal_reference_with_gradgradcheck(backend, method, reference):
    fast, ref = _product_basis(backend, method=method), _product_basis(backend, method=reference)
    onehot = torch.nn.functional.one_hot(torch.tensor([0, 1, 1]), 2).double()
    x = _rand(3, fast.irreps_in.dim)
    assert (fast(x, onehot) - ref(x, onehot)).abs().max() < TOL[torch.float64]
    assert torch.autograd.gradgradcheck(lambda y: fast(y, onehot), (x,))


class _EveryOp(torch.nn.Module):
    """A small energy through every custom op, called on the backends (the op routes, without
    the wrappers' input checks): fused message passing (channel-wise), a sparse self-product,
    the fused symmetric contraction of the cg and the Gaunt product bases. Not equivariant
    (columns are mixed freely): the test is compile == eager."""

    def __init__(self):
        super().__init__()
        self.conv = ChannelwiseTensorProduct(*CONV, method="channelwise").impl
        self.radial = torch.nn.Parameter(torch.randn(self.conv.weight_numel))
        self.mix = torch.nn.Parameter(torch.randn(42, 18) / 6)  # conv output -> 2x0e+2x1o+2x2e
        self.square = TensorProduct("2x0e+2x1o", "2x0e+2x1o", "2x0e+2x1o", mode="uuu", method="sparse").impl
        self.square_weights = torch.nn.Parameter(torch.randn(self.square.weight_numel))
        self.cg = _product_basis("cg", method="fused").impl.fused
        self.gaunt = ProductBasis("2x0e+2x1o+2x2e", "2x0e+2x1o", correlation=2, num_elements=2,
                                  backend="gaunt_grid", method="sparse").impl.fused  # fmt: skip
        self.node_weights = torch.nn.Parameter(torch.randn(2, 2 * (self.cg.num_weights + self.gaunt.num_weights)))

    def forward(self, positions, node_feats, onehot, edge_index):
        vectors = positions[edge_index[1]] - positions[edge_index[0]]
        lengths = vectors.norm(dim=1, keepdim=True)
        edge_attrs = torch.cat([torch.ones_like(lengths), vectors, _l2(vectors)], dim=1)
        weights = torch.sin(lengths) * self.radial  # [n_edges, weight_numel]
        messages = self.conv.message_passing(node_feats, edge_attrs, weights, *edge_index) @ self.mix
        w_cg, w_gaunt = (onehot @ self.node_weights).split([2 * self.cg.num_weights, 2 * self.gaunt.num_weights], 1)
        node = self.cg(messages, w_cg) + self.gaunt(messages, w_gaunt)  # [N, 2x0e+2x1o]
        node = node + self.square(node, node, self.square_weights)  # shared weights
        return node[:, :2].sum()


def _l2(v):
    """Five functions of degree 2 (an equivariance-free stand-in for Y_2: the test is compile == eager)."""
    x, y, z = v.unbind(1)
    return torch.stack([x * y, y * z, 2 * z * z - x * x - y * y, x * z, x * x - y * y], dim=1)


def _force_training_step(model, positions, node_feats, onehot, edge_index):
    """Energy and forces with the graph kept for training (``positions`` require grad)."""
    energy = model(positions, node_feats, onehot, edge_index)
    (forces,) = torch.autograd.grad(energy, positions, create_graph=True)
    return energy, -forces


def test_compile_fullgraph_force_training_equals_eager():
    torch.manual_seed(3)
    model = _EveryOp().float()
    n = 4
    inputs = (
        torch.randn(n, 3, dtype=torch.float32, requires_grad=True),
        torch.randn(n, model.conv.descriptor.irreps_in1.dim, dtype=torch.float32),
        torch.nn.functional.one_hot(torch.tensor([0, 1, 0, 1]), 2).float(),
        torch.tensor([[0, 1, 2, 3, 1, 0, 2], [1, 2, 3, 0, 0, 3, 1]]),
    )
    results = []
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        compiled = torch.compile(_force_training_step, fullgraph=True, backend="inductor")
        for step in (_force_training_step, compiled):
            model.zero_grad()
            energy, forces = step(model, *inputs)
            (energy + forces.square().sum()).backward()  # the second backward: through the forces
            grads = [p.grad.clone() for p in model.parameters()]
            results.append([energy.detach(), forces.detach(), *grads])
    for eager, got in zip(*results, strict=True):
        assert (got - eager).abs().max() < TOL[torch.float32] * max(1.0, eager.abs().max().item())


def test_ops_forward_on_meta_tensors():
    fused = _product_basis(method="fused").impl.fused
    x, w = torch.empty(5, 18, device="meta"), torch.empty(5, 2 * fused.num_weights, device="meta")
    assert ops.symmetric_contraction(x, w, fused.dim_out, fused.tables).shape == (5, fused.dim_out)
    plan = ChannelwiseTensorProduct(*CONV, method="channelwise").impl.executor
    tables = plan.graph_tables(EDGE_INDEX[0], EDGE_INDEX[1], 3)
    x1, x2, weights = (torch.empty(r, plan.widths[s], device="meta") for r, s in ((3, 1), (6, 2), (6, 3)))
    out = ops.cg_channelwise_contract(0, x1, x2, weights, 3, plan.widths[0], tables)
    assert out.device.type == "meta" and out.shape == (3, plan.widths[0])


def test_off_cpu_routes_are_pure_torch_and_named():
    tp = ChannelwiseTensorProduct(*CONV)
    assert tp.impl.method == "channelwise"
    assert tp.impl.method_for("meta", shared=False) == "grouped"
    assert tp.impl.method_for("cuda", shared=True) == "dense"
    assert tp.to("meta").impl.method == "grouped"
    x1, x2 = torch.empty(6, 8, device="meta"), torch.empty(6, 9, device="meta")
    w = torch.empty(6, tp.weight_numel, device="meta")
    assert tp(x1, x2, w).shape == (6, tp.irreps_out.dim)
    sender, receiver = EDGE_INDEX.to("meta")
    assert tp.impl.message_passing(x1[:3], x2, w, sender, receiver).shape == (3, tp.irreps_out.dim)
    for backend, method in (("cg", "fused"), ("gaunt_grid", "sparse")):
        pb = _product_basis(backend).to("meta")
        onehot = torch.empty(3, 2, device="meta")
        assert pb(torch.empty(3, pb.irreps_in.dim, device="meta"), onehot).shape == (3, pb.irreps_out.dim)
        with pytest.raises(ValueError, match="CPU only"):
            _product_basis(backend, method=method).to("meta")(torch.empty(3, 18, device="meta"), onehot)
    with pytest.raises(ValueError, match="CPU only"):
        ChannelwiseTensorProduct(*CONV, method="channelwise").impl.method_for("cuda", shared=False)
