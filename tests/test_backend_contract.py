"""The contract every registered tensor-product backend keeps, run over ``available_backends()``.

A backend enters this suite by being registered (built in, ``register_backend`` or the
``equitensor.backends`` entry point: ``tests/plugins`` holds a third-party backend installed that
way). What a backend can do is read from the capabilities it declares (``supported_modes``,
``realises_odd_paths``, ``parameterization``, ``exact``, ``analysis_options``), never from its name.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from equitensor._dtype import default_dtype
from equitensor import TensorProduct, so3
from equitensor.ops.backends import available_backends, get_backend

from .conftest import TOL
from .helpers import rotate

BACKENDS = available_backends()

#: small natural-parity irreps (every path has l1 + l2 + l3 even) that fit each connection mode.
MODE_IRREPS = {
    "uvu": ("2x0e+2x1o", "0e+1o+2e", "2x0e+2x1o+2x2e"),
    "uvv": ("0e+1o+2e", "2x0e+2x1o", "2x0e+2x1o+2x2e"),
    "uuu": ("2x0e+2x1o", "2x0e+2x1o", "2x0e+2x1o+2x2e"),
    "uvw": ("2x0e+1x1o", "0e+1o", "2x0e+2x1o+1x2e"),
    "uuw": ("2x0e+2x1o", "2x0e+2x1o", "3x0e+1x1o"),
}
#: the cross product and a pseudoscalar: couplings with l1 + l2 + l3 odd.
ODD_IRREPS = ("2x1o+2x1e", "1o", "2x0o+2x1e")


def cases(parameterization: str | None = None) -> list:
    """``(backend, mode)`` for every mode a backend declares (optionally of one parameterization)."""
    return [
        pytest.param(name, mode, id=f"{name}-{mode}")
        for name in BACKENDS
        for mode in MODE_IRREPS
        if mode in get_backend(name).supported_modes
        and parameterization in (None, get_backend(name).parameterization)
    ]


def first_mode(name: str) -> str:
    return next(m for m in MODE_IRREPS if m in get_backend(name).supported_modes)


def build(name: str, mode: str, irreps=None, dtype=torch.float64, shared: bool = False) -> TensorProduct:
    """The backend on ``irreps`` (default: ``MODE_IRREPS[mode]``) with external weights; a
    backend that declares itself inexact at its default options is built with its
    ``analysis_options`` (e.g. ``cp`` at full rank), so exactness claims can be checked."""
    a, b, c = irreps or MODE_IRREPS[mode]
    with default_dtype(dtype):
        tp = TensorProduct(a, b, c, mode=mode, backend=name, shared_weights=shared, internal_weights=False)
        if not tp.impl.exact:
            options = get_backend(name).analysis_options
            tp = TensorProduct(
                a, b, c, mode=mode, backend=name, shared_weights=shared, internal_weights=False, **options
            )
    return tp.to(dtype)


def random_inputs(tp: TensorProduct, batch: int, dtype=torch.float64, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x1 = torch.randn(batch, tp.irreps_in1.dim, generator=generator, dtype=dtype)
    x2 = torch.randn(batch, tp.irreps_in2.dim, generator=generator, dtype=dtype)
    shape = (tp.weight_numel,) if tp.shared_weights else (batch, tp.weight_numel)
    weight = torch.randn(*shape, generator=generator, dtype=dtype) if tp.weight_numel else None
    return x1, x2, weight


def test_the_suite_sees_builtin_and_entry_point_backends():
    assert {"cg", "e3nn", "gaunt_grid", "gaunt_fft", "cp"} <= set(BACKENDS)
    assert "toy_dense" in BACKENDS, "the entry-point plugin in tests/plugins was not discovered"


@pytest.mark.parametrize("name", BACKENDS)
def test_declared_capabilities_are_well_formed(name):
    cls = get_backend(name)
    assert cls.parameterization in ("per_path", "per_degree")
    assert cls.supported_modes and set(cls.supported_modes) <= set(MODE_IRREPS)
    assert isinstance(cls.realises_odd_paths, bool)
    assert isinstance(cls.analysis_options, dict)


@pytest.mark.parametrize("name,mode", cases())
def test_equivariant_under_rotations_and_inversion(name, mode):
    tp = build(name, mode)
    x1, x2, weight = random_inputs(tp, batch=5)
    for improper in (False, True):
        rotation = so3.random_rotation(np.random.default_rng(3), improper=improper)
        rotated_first = tp(rotate(x1, tp.irreps_in1, rotation), rotate(x2, tp.irreps_in2, rotation), weight)
        rotated_after = rotate(tp(x1, x2, weight), tp.irreps_out, rotation)
        torch.testing.assert_close(rotated_first, rotated_after, atol=TOL[torch.float64], rtol=0)


@pytest.mark.parametrize("name,mode", cases("per_path"))
def test_per_path_backends_compute_cg_with_the_same_weights(name, mode):
    """``parameterization = "per_path"`` promises a drop-in for ``cg``: same weights, same map."""
    tp, reference = build(name, mode), build("cg", mode)
    assert tp.weight_numel == reference.weight_numel
    x1, x2, weight = random_inputs(tp, batch=4)
    torch.testing.assert_close(tp(x1, x2, weight), reference(x1, x2, weight), atol=TOL[torch.float64], rtol=0)


@pytest.mark.parametrize("name", BACKENDS)
def test_odd_couplings_realised_or_refused(name):
    """``realises_odd_paths`` backends compute the cross product; the others refuse it by name."""
    if "uvu" not in get_backend(name).supported_modes:
        pytest.skip(f"{name} has no uvu mode for the odd-path irreps")
    if get_backend(name).realises_odd_paths:
        tp = build(name, "uvu", ODD_IRREPS)
        x1, x2, weight = random_inputs(tp, batch=3)
        reference = build("cg", "uvu", ODD_IRREPS)
        if get_backend(name).parameterization == "per_path":
            expected = reference(x1, x2, weight)
            torch.testing.assert_close(tp(x1, x2, weight), expected, atol=TOL[torch.float64], rtol=0)
        assert len(tp.paths) == len(reference.instructions)
    else:
        with pytest.raises(ValueError, match="allow_subset|odd|l1"):
            build(name, "uvu", ODD_IRREPS)


@pytest.mark.parametrize("name", BACKENDS)
def test_gradients_twice(name):
    """Force training differentiates through the product twice: gradcheck and gradgradcheck."""
    mode = first_mode(name)
    a, b, c = {"uvu": ("0e+1o", "0e+1o", "0e+1o+2e")}.get(mode, MODE_IRREPS[mode])
    tp = build(name, mode, (a, b, c))
    x1, x2, weight = random_inputs(tp, batch=2)
    inputs = tuple(t.requires_grad_(True) for t in (x1, x2, weight) if t is not None)

    def call(*args):
        return tp(args[0], args[1], args[2] if len(args) > 2 else None)

    assert torch.autograd.gradcheck(call, inputs)
    assert torch.autograd.gradgradcheck(call, inputs)


@pytest.mark.parametrize("name", BACKENDS)
def test_message_passing_equals_gather_product_scatter(name):
    mode = first_mode(name)
    tp = build(name, mode)
    n_nodes, n_edges = 5, 9
    generator = torch.Generator().manual_seed(1)
    # node 4 receives nothing; edge (0 -> 1) appears twice
    sender = torch.tensor([0, 0, 1, 2, 3, 3, 2, 1, 0])
    receiver = torch.tensor([1, 1, 0, 3, 2, 0, 1, 2, 3])
    nodes = torch.randn(n_nodes, tp.irreps_in1.dim, generator=generator, dtype=torch.float64)
    edges = torch.randn(n_edges, tp.irreps_in2.dim, generator=generator, dtype=torch.float64)
    weight = torch.randn(n_edges, tp.weight_numel, generator=generator, dtype=torch.float64)
    got = tp.message_passing(nodes, edges, weight, torch.stack([sender, receiver]))
    messages = tp(nodes[sender], edges, weight)
    expected = torch.zeros(n_nodes, tp.irreps_out.dim, dtype=torch.float64).index_add(0, receiver, messages)
    torch.testing.assert_close(got, expected, atol=TOL[torch.float64], rtol=0)
    assert torch.all(got[4] == 0)

    no_edges = torch.zeros(2, 0, dtype=torch.long)
    empty = tp.message_passing(nodes, edges[:0], weight[:0], no_edges)
    assert empty.shape == (n_nodes, tp.irreps_out.dim) and torch.all(empty == 0)


@pytest.mark.parametrize("name", BACKENDS)
def test_empty_batch(name):
    tp = build(name, first_mode(name))
    x1, x2, weight = random_inputs(tp, batch=0)
    x1.requires_grad_(True)
    out = tp(x1, x2, weight)
    assert out.shape == (0, tp.irreps_out.dim)
    out.sum().backward()
    assert x1.grad.shape == x1.shape


@pytest.mark.parametrize("name", BACKENDS)
def test_float32_follows_float64(name):
    mode = first_mode(name)
    tp64 = build(name, mode, shared=True)
    tp32 = build(name, mode, dtype=torch.float32, shared=True)
    x1, x2, weight = random_inputs(tp64, batch=6)
    expected = tp64(x1, x2, weight)
    got = tp32(x1.float(), x2.float(), None if weight is None else weight.float())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, atol=TOL[torch.float32], rtol=TOL[torch.float32])


@pytest.mark.parametrize("name", BACKENDS)
def test_bad_shapes_raise_clear_errors(name):
    tp = build(name, first_mode(name))
    x1, x2, weight = random_inputs(tp, batch=3)
    with pytest.raises(ValueError, match="x1"):
        tp(x1[:, :-1], x2, weight)
    with pytest.raises(ValueError, match="x2"):
        tp(x1, torch.cat([x2, x2], dim=1), weight)
    if tp.weight_numel:
        with pytest.raises(ValueError, match="weight"):
            tp(x1, x2, weight[:, :-1])
        with pytest.raises(ValueError, match="weight is required"):
            tp(x1, x2, None)


@pytest.mark.parametrize("name", BACKENDS)
def test_unsupported_modes_are_refused(name):
    unsupported = [m for m in MODE_IRREPS if m not in get_backend(name).supported_modes]
    if not unsupported:
        pytest.skip(f"{name} supports every mode")
    for mode in unsupported:
        with pytest.raises(ValueError, match=mode):
            TensorProduct(*MODE_IRREPS[mode], mode=mode, backend=name, shared_weights=False, internal_weights=False)


def test_entry_point_backend_runs_in_the_benchmark_harness(tmp_path):
    from equitensor.bench.microbench import main

    code = main(
        ["--backends", "cg,toy_dense", "--settings", "mimo", "--L", "1", "--pass", "fwdbwd",
         "--repeats", "1", "--batch", "8", "--no-plot", "--out", str(tmp_path)]
    )  # fmt: skip
    assert code == 0
    rows = list(csv.DictReader(open(tmp_path / "microbench_mimo.csv")))
    timed = {row["backend"] for row in rows if row.get("median_ms") not in (None, "", "nan")}
    assert {"cg", "toy_dense"} <= timed, rows
