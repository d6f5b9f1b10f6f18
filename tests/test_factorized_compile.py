"""The factorised backends (gaunt_grid, gaunt_fft, cp) and vsh under torch.compile, on meta tensors, and
the plain (device / compile) form of the FFT route against its CPU autograd Function."""

import pytest
import torch

from equitensor import TensorProduct
from equitensor.ops import channelwise_instructions
from equitensor.ops.backends import factorized
from equitensor.ops.backends.gaunt_fft import FFTTables, FFTUnitProduct, fft_unit_product_plain

IRREPS = ("4x0e+4x1o+4x2e", "0e+1o+2e", "4x0e+4x1o+4x2e")

# the routes a user can pick (gaunt_fft "dft" is its default; "fft" runs torch.fft)
COMPILED_ROUTES = [
    ("gaunt_grid", {}),
    ("gaunt_fft", {}),
    ("gaunt_fft", {"method": "fft"}),
    ("cp", {}),
    ("vsh", {}),
]


def _product(backend, options, dtype=torch.float32):
    tp = TensorProduct(
        *IRREPS, mode="uvu", internal_weights=False, shared_weights=False, backend=backend, **options
    )
    return tp.to(dtype)


def _mace_convolution(backend, dtype=torch.float32):
    """MACE's convolution layout (one output block per path): one product unit per input block pair."""
    irreps_in1, irreps_in2 = "4x0e+4x1o", "0e+1o+2e+3o"
    irreps_out, instructions = channelwise_instructions(irreps_in1, irreps_in2, "4x0e+4x1o+4x2e+4x3o")
    tp = TensorProduct(
        irreps_in1, irreps_in2, irreps_out, instructions,
        internal_weights=False, shared_weights=False, backend=backend,
    )  # fmt: skip
    return tp.to(dtype)


def _inputs(tp, z, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    shapes = (tp.irreps_in1.dim, tp.irreps_in2.dim, tp.weight_numel)
    return [torch.randn(z, n, generator=generator, dtype=dtype, requires_grad=True) for n in shapes]


def _forces_like(impl):
    """Output and its create_graph gradients with respect to both inputs (as force training needs)."""

    def run(x1, x2, weight):
        out = impl(x1, x2, weight)
        grad1, grad2 = torch.autograd.grad((out**2).sum(), (x1, x2), create_graph=True)
        return out, grad1, grad2

    return run


def _assert_float32_equal(actual, expected):
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize(
    ("backend", "options"), COMPILED_ROUTES + [("gaunt_grid", "mace")], ids=lambda v: str(v)
)
def test_compiled_backend_equals_eager_through_second_backward(backend, options):
    """fullgraph compile (inductor) of the backend: forward, create_graph backward and the second
    backward equal eager, which runs the CPU autograd Functions (chunked / FFT) and, for MACE's
    convolution, one product per unit instead of the merged block-diagonal one."""
    tp = _mace_convolution(backend) if options == "mace" else _product(backend, options)
    inputs = _inputs(tp, z=7)
    eager = _forces_like(tp.impl)
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        compiled = torch.compile(eager, fullgraph=True)
        got = compiled(*inputs)
    expected = eager(*inputs)
    for actual, reference in zip(got, expected):
        _assert_float32_equal(actual, reference)
    # the second backward (gradient of a force loss with respect to inputs and weights)
    second = torch.autograd.grad(sum((g**2).sum() for g in got[1:]), inputs)
    second_expected = torch.autograd.grad(sum((g**2).sum() for g in expected[1:]), inputs)
    for actual, reference in zip(second, second_expected):
        _assert_float32_equal(actual, reference)


ALL_ROUTES = COMPILED_ROUTES + [("gaunt_fft", {"method": "direct"})]


@pytest.mark.parametrize(("backend", "options"), ALL_ROUTES, ids=lambda v: str(v))
def test_forward_runs_on_meta_tensors(backend, options):
    """No data-dependent host read in the forward: it runs on tensors without data."""
    tp = _product(backend, options).to("meta")
    x1, x2, weight = (t.detach().to("meta") for t in _inputs(_product(backend, options), z=5))
    out = tp(x1, x2, weight)
    assert out.device.type == "meta" and out.shape == (5, tp.irreps_out.dim)


def test_plain_fft_product_equals_fft_function_through_second_derivatives():
    """The plain "fft" form (device and compile route; autograd's irfft/rfft adjoints) against
    FFTUnitProduct (hand-written adjoint tables): values, gradients and gradients of gradients."""
    tp = _product("gaunt_fft", {"method": "fft"}, dtype=torch.float64)
    impl = tp.impl
    plan = impl.unit_plans[0]
    x1, x2, _ = _inputs(tp, z=3, dtype=torch.float64)
    left = x1.detach().reshape(3, 4, -1).requires_grad_()  # one unit, blocks in order: [z, U, sum d]
    right = x2.detach().reshape(3, 1, -1).requires_grad_()
    tables = FFTTables(*(impl.unit_constants[0].table(name, left) for name in FFTTables._fields))
    grad_out = torch.randn(3, 4, tables.back.shape[1], dtype=torch.float64)

    def derivatives(product):
        out = product(left, right, plan, tables)
        grads = torch.autograd.grad(out, (left, right), grad_out, create_graph=True)
        second = torch.autograd.grad(sum((g**2).sum() for g in grads), (left, right))
        return (out, *grads, *second)

    for plain, function in zip(derivatives(fft_unit_product_plain), derivatives(FFTUnitProduct.apply)):
        torch.testing.assert_close(plain, function, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("backend", "options"), ALL_ROUTES, ids=lambda v: str(v))
def test_empty_batch_keeps_inputs_in_the_graph(backend, options):
    """An empty batch (a graph with no edges) goes through the force-training double backward."""
    tp = _product(backend, options, dtype=torch.float64)
    inputs = _inputs(tp, z=0, dtype=torch.float64)
    out, grad1, grad2 = _forces_like(tp.impl)(*inputs)
    second = torch.autograd.grad((grad1**2).sum() + (grad2**2).sum(), inputs)
    assert out.shape == (0, tp.irreps_out.dim)
    assert [g.shape for g in second] == [t.shape for t in inputs]


@pytest.mark.parametrize("backend", ["gaunt_grid", "gaunt_fft", "cp"])
def test_merged_units_equal_one_product_per_unit(backend, monkeypatch):
    """The block-diagonal product of all units (the GPU / compile form) against the per-unit
    products of eager CPU runs: values, create_graph gradients and second derivatives."""
    tp = _mace_convolution(backend, dtype=torch.float64)
    assert tp.impl._merged and len(tp.impl.units) > 1
    inputs = _inputs(tp, z=6, dtype=torch.float64)

    def derivatives():
        out, grad1, grad2 = _forces_like(tp.impl)(*inputs)
        return (out, grad1, grad2, *torch.autograd.grad((grad1**2).sum() + (grad2**2).sum(), inputs))

    per_unit = derivatives()
    monkeypatch.setattr(factorized, "eager_cpu_kernel_allowed", lambda like: False)
    for merged, reference in zip(derivatives(), per_unit):  # float64, other summation order
        torch.testing.assert_close(merged, reference, rtol=1e-10, atol=1e-10)
