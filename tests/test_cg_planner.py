"""The cg backend's planner: ``auto`` resolves to a concrete method that ``tp.impl.method``
names, off the CPU explicitly ``grouped``; explicit CPU-only methods raise there; and the pure-torch
``grouped`` method traces with ``torch.compile(fullgraph=True)`` equal to eager (a product with
double backward, and the MACE forward with forces, stress and their training gradients)."""

import pytest
import torch

from equitensor.ops import ChannelwiseTensorProduct, TensorProduct
from equitensor.ops.backends.cg import METHODS, choose_method, plan

from . import test_compile
from .conftest import TOL
from .test_compile import tiny_model
from .test_models import single_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("default_float64")

CONV = ("4x0e+4x1o", "0e+1o+2e", "4x0e+4x1o+4x2e")  # MACE's convolution: channelwise on the CPU
WIDE = ("24x0e+24x1o", "24x0e", "24x0e+24x1o")  # uvw with 24^3 channel combinations: grouped


def _tp(irreps, mode, shared=False, **options):
    return TensorProduct(*irreps, mode=mode, shared_weights=shared, internal_weights=False, **options)


@pytest.mark.parametrize(
    ("irreps", "mode", "shared", "expected"),
    [
        (CONV, "uvu", False, "channelwise"),
        (CONV, "uvu", True, "dense"),
        (("2x0e+2x1o", "2x0e+1x1o", "2x0e+2x1o"), "uvu", False, "sparse"),
        (WIDE, "uvw", False, "grouped"),
        (("24x0e+2x1o", "24x0e+2x1o", "24x0e+2x1o"), "uvw", False, "sparse+grouped"),
    ],
)
def test_auto_names_the_method_that_runs(irreps, mode, shared, expected):
    tp = _tp(irreps, mode, shared)
    assert tp.impl.requested_method == "auto"
    assert tp.impl.method_for("cpu", shared) == expected
    assert tp.impl.executor_for("cpu", shared).method == expected
    assert choose_method(tp.descriptor, "auto", "cpu", shared) == expected
    if not shared:
        assert tp.impl.method == expected and tp.impl.executor.method == expected


@pytest.mark.parametrize("irreps", [CONV, WIDE])
def test_auto_off_cpu_is_grouped_and_named(irreps):
    tp = _tp(irreps, "uvu" if irreps == CONV else "uvw")
    for device in ("cuda", "meta", torch.device("cuda", 1)):
        assert tp.impl.method_for(device, shared=False) == "grouped"
        assert plan(tp.descriptor, "auto", device).method == "grouped"
    assert tp.to("meta").impl.method == "grouped"


def test_explicit_methods_are_never_replaced():
    tp = ChannelwiseTensorProduct(*CONV, method="grouped")
    assert tp.impl.method == "grouped" and tp.impl.method_for("cpu", shared=True) == "grouped"
    for method in ("sparse", "channelwise"):
        tp = ChannelwiseTensorProduct(*CONV, method=method)
        assert tp.impl.method == method
        with pytest.raises(ValueError, match="CPU only"):
            tp.impl.method_for("cuda", shared=False)
        with pytest.raises(ValueError, match="CPU only"):
            plan(tp.descriptor, method, "meta")
    with pytest.raises(ValueError, match="method='channelwise' needs every instruction"):
        _tp(WIDE, "uvw", method="channelwise")
    assert {choose_method(tp.descriptor, m, "cpu", True) for m in METHODS} == set(METHODS) - {"auto"}


def test_equal_products_share_their_executors():
    a, b = ChannelwiseTensorProduct(*CONV), ChannelwiseTensorProduct(*CONV)
    assert a.impl.executor is b.impl.executor
    assert ChannelwiseTensorProduct(*CONV, method="sparse").impl.executor is not a.impl.executor


@pytest.mark.parametrize("shared", [False, True])
def test_grouped_compiles_fullgraph_with_double_backward(shared):
    """A forces-like step traced whole (product, then its gradient w.r.t. x2 with
    create_graph), then trained through: values and gradients equal eager."""
    torch._dynamo.reset()
    tp = _tp(("3x0e+2x1o+1x2e", "2x0e+1x1o+1x2e", "2x0e+2x1o+1x2e"), "uvw", shared, method="grouped")

    def forces_like(x1, x2, w):
        out = tp(x1, x2, w)
        (g2,) = torch.autograd.grad(out.pow(2).sum(), x2, create_graph=True)
        return out, g2

    compiled = torch.compile(forces_like, fullgraph=True, backend="aot_eager")
    x1 = torch.randn(5, tp.irreps_in1.dim, requires_grad=True)
    x2 = torch.randn(5, tp.irreps_in2.dim, requires_grad=True)
    w = torch.randn(*(() if shared else (5,)), tp.weight_numel, requires_grad=True)
    results = []
    for run in (forces_like, compiled):
        with torch._dynamo.config.patch(trace_autograd_ops=True):  # autograd.grad in the graph
            out, g2 = run(x1, x2, w)
        results.append((out, g2, *torch.autograd.grad(g2.pow(2).sum(), (x1, w))))
    for eager, got in zip(*results, strict=True):
        assert (got - eager).abs().max() < TOL[torch.float64]


def test_mace_with_grouped_convolution_traces_fullgraph_equal_to_eager():
    """MACE with every convolution on ``grouped`` (the off-CPU route, run here on the CPU):
    the aot_eager fullgraph == eager check of tests/test_compile.py (energies, forces, stress,
    parameter gradients of a force + stress loss)."""
    combo = ("cg", {"method": "grouped"}, "cg", {"method": "naive"})
    convolutions = [m for m in tiny_model(combo).modules() if isinstance(m, TensorProduct) and m.backend_name == "cg"]
    assert convolutions and {m.impl.method for m in convolutions} == {"grouped"}
    test_compile.test_fullgraph_trace_equals_eager(combo)
