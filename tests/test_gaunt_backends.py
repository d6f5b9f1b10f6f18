"""gaunt_grid and gaunt_fft: agreement with each other and with cg, equivariance, gradients, errors."""

import numpy as np
import pytest
import torch

from equitensor import so3
from equitensor.ops import ChannelwiseTensorProduct, TensorProduct

from .backend_helpers import cg_weights_from_factors, natural_irreps
from .conftest import TOL
from .gaunt_reference import REFERENCE_NAME, gaunt_fft2_reference  # noqa: F401 (fixture)
from .helpers import rotate

pytestmark = pytest.mark.usefixtures("default_float64", "gaunt_fft2_reference")
GAUNT = [
    ("gaunt_grid", {}),
    ("gaunt_fft", {"method": "dft"}),
    ("gaunt_fft", {"method": "fft"}),
    (REFERENCE_NAME, {}),
    ("gaunt_fft", {"method": "direct"}),
]


def _mimo(lmax, mode="uuu", mul=1):
    return (
        natural_irreps(lmax, mul),
        natural_irreps(lmax, 1 if mode == "uvu" else mul),
        natural_irreps(2 * lmax, mul),
    )


def _inputs(tp, batch=6):
    x1 = torch.randn(batch, tp.irreps_in1.dim)
    x2 = torch.randn(batch, tp.irreps_in2.dim)
    w = torch.randn(batch, tp.weight_numel)
    return x1, x2, w


@pytest.mark.parametrize("lmax", [0, 1, 2, 3, 5, 8])
def test_fft_equals_grid(lmax):
    a, b, c = _mimo(lmax, "uuu", mul=2)
    kw = dict(mode="uuu", shared_weights=False, internal_weights=False)
    grid = TensorProduct(a, b, c, backend="gaunt_grid", **kw)
    x1, x2, w = _inputs(grid)
    reference = grid(x1, x2, w)
    scale = max(1.0, reference.abs().max().item())
    routes = [("gaunt_fft", {"method": method}) for method in ("dft", "fft", "direct")[: 3 if lmax <= 3 else 2]]
    for backend, options in routes + [(REFERENCE_NAME, {})]:
        fft = TensorProduct(a, b, c, backend=backend, **options, **kw)
        assert fft.weight_numel == grid.weight_numel
        assert (fft(x1, x2, w) - reference).abs().max().item() < TOL[torch.float64] * scale, (backend, options)


@pytest.mark.parametrize("backend,options", GAUNT)
@pytest.mark.parametrize("mode", ["uvu", "uuu", "uvv"])
def test_gaunt_equals_scaled_cg_on_even_paths(backend, options, mode):
    a, b, c = _mimo(3, mode, mul=2)
    if mode == "uvv":
        a, b = natural_irreps(3, 1), natural_irreps(3, 2)
    kw = dict(mode=mode, shared_weights=False, internal_weights=False)
    gaunt = TensorProduct(a, b, c, backend=backend, **kw, **options)
    cg = TensorProduct(a, b, c, backend="cg", **kw)
    x1, x2, w = _inputs(gaunt)
    expected = cg(x1, x2, cg_weights_from_factors(cg, gaunt, w, gaunt=True))
    assert (gaunt(x1, x2, w) - expected).abs().max().item() < TOL[torch.float64]


@pytest.mark.parametrize("backend,options", GAUNT)
def test_gaunt_single_path_is_gaunt_scale_times_cg(backend, options):
    """All weights 1, one path per output: gaunt == gaunt_scale(l1, l2, l3) * cg path."""
    for l1, l2, l3 in [(0, 0, 0), (1, 1, 2), (1, 1, 0), (2, 1, 3), (2, 2, 2), (3, 2, 1)]:
        irs = [natural_irreps(l, lmin=l) for l in (l1, l2, l3)]
        kw = dict(instructions=[(0, 0, 0, "uvu", False)], shared_weights=True, internal_weights=False)
        gaunt = TensorProduct(*irs, backend=backend, **kw, **options)
        cg = TensorProduct(*irs, backend="cg", **kw)
        x1, x2 = torch.randn(5, 2 * l1 + 1), torch.randn(5, 2 * l2 + 1)
        diff = gaunt(x1, x2) - so3.gaunt_scale(l1, l2, l3) * cg(x1, x2)
        assert diff.abs().max().item() < TOL[torch.float64], (l1, l2, l3)


@pytest.mark.parametrize("backend,options", GAUNT)
def test_odd_paths_raise_or_are_dropped(backend, options):
    # 1o x 1o -> 1e (cross product) has l1 + l2 + l3 odd: a Gaunt product is exactly zero there
    with pytest.raises(ValueError, match="cannot realise the couplings 1o x 1o -> 1e"):
        TensorProduct("1o", "1o", "0e+1e+2e", mode="uvu", backend=backend, **options)
    with pytest.warns(UserWarning, match="drops the unrealisable couplings"):
        tp = TensorProduct(
            "1o",
            "1o",
            "0e+1e+2e",
            mode="uvu",
            backend=backend,
            allow_subset=True,
            internal_weights=False,
            **options,
        )
    assert [(p.ir_in1.l, p.ir_in2.l, p.ir_out.l) for p in tp.paths] == [(1, 1, 0), (1, 1, 2)]
    x1, x2 = torch.randn(4, 3), torch.randn(4, 3)
    out = tp(x1, x2, torch.ones(tp.weight_numel))
    assert out[:, 1:4].abs().max().item() == 0.0  # the 1e block stays exactly zero


def test_pseudotensor_inputs_use_the_allowed_parity_combinations():
    # mixed natural/pseudo inputs: every even-sum parity-allowed coupling is realised
    a, b, c = "0e+1o+1e+2e", "0e+1o+1e", "0e+0o+1o+1e+2e+2o+3o"
    # path_normalization="none": the cg reference below has fewer paths, hence other "element" fans
    kw = dict(
        mode="uvu", shared_weights=False, internal_weights=False, allow_subset=True, path_normalization="none"
    )
    with pytest.warns(UserWarning):
        grid = TensorProduct(a, b, c, backend="gaunt_grid", **kw)
    with pytest.warns(UserWarning):
        fft = TensorProduct(a, b, c, backend="gaunt_fft", **kw)
    assert all((p.ir_in1.l + p.ir_in2.l + p.ir_out.l) % 2 == 0 for p in grid.paths)
    assert all(p.ir_in1.p * p.ir_in2.p == p.ir_out.p for p in grid.paths)
    instructions = [(p.i_in1, p.i_in2, p.i_out, "uvu", True) for p in grid.paths]
    cg = TensorProduct(
        a,
        b,
        c,
        instructions,
        backend="cg",
        shared_weights=False,
        internal_weights=False,
        path_normalization="none",
    )
    x1, x2, w = _inputs(grid)
    expected = cg(x1, x2, cg_weights_from_factors(cg, grid, w, gaunt=True))
    assert (grid(x1, x2, w) - expected).abs().max().item() < TOL[torch.float64]
    assert (fft(x1, x2, w) - expected).abs().max().item() < TOL[torch.float64]


@pytest.mark.parametrize("backend,options", GAUNT)
def test_paths_are_verified_numerically(backend, options):
    """Every listed path carries signal and every other coupling is exactly zero."""
    a, b, c = natural_irreps(2), natural_irreps(2), natural_irreps(4)
    tp = TensorProduct(
        a, b, c, mode="uvu", backend=backend, shared_weights=True, internal_weights=False, **options
    )
    listed = {(p.i_in1, p.i_in2, p.i_out) for p in tp.paths}
    w = torch.ones(tp.weight_numel)
    s1, s2, so = list(tp.irreps_in1.slices()), list(tp.irreps_in2.slices()), list(tp.irreps_out.slices())
    for i1 in range(len(s1)):
        for i2 in range(len(s2)):
            x1, x2 = torch.zeros(3, tp.irreps_in1.dim), torch.zeros(3, tp.irreps_in2.dim)
            x1[:, s1[i1]] = torch.randn(3, s1[i1].stop - s1[i1].start)
            x2[:, s2[i2]] = torch.randn(3, s2[i2].stop - s2[i2].start)
            out = tp(x1, x2, w)
            for io in range(len(so)):
                nonzero = out[:, so[io]].abs().max().item() > 1e-12
                assert nonzero == ((i1, i2, io) in listed), (i1, i2, io)


@pytest.mark.parametrize("backend,options", GAUNT)
@pytest.mark.parametrize("improper", [False, True])
def test_equivariance(backend, options, improper, rng):
    tp = ChannelwiseTensorProduct(
        "3x0e+3x1o+3x2e", "0e+1o+2e+3o", "3x0e+3x1o+3x2e+3x3o", backend=backend, **options
    )
    x1, x2, w = _inputs(tp, 8)
    r = so3.random_rotation(rng, improper=improper)
    lhs = tp(rotate(x1, tp.irreps_in1, r), rotate(x2, tp.irreps_in2, r), w)
    rhs = rotate(tp(x1, x2, w), tp.irreps_out, r)
    assert (lhs - rhs).abs().max().item() < TOL[torch.float64]


@pytest.mark.parametrize("backend", ["gaunt_grid", "gaunt_fft"])
def test_mace_channelwise_layout_matches_scaled_cg(backend):
    tp = ChannelwiseTensorProduct("4x0e+4x1o+4x2e", "0e+1o+2e+3o", "4x0e+4x1o+4x2e+4x3o", backend=backend)
    cg = ChannelwiseTensorProduct("4x0e+4x1o+4x2e", "0e+1o+2e+3o", "4x0e+4x1o+4x2e+4x3o", backend="cg")
    assert len(tp.paths) == len(cg.instructions)
    x1, x2, w = _inputs(tp, 5)
    assert (tp(x1, x2, w) - cg(x1, x2, cg_weights_from_factors(cg, tp, w, gaunt=True))).abs().max() < TOL[
        torch.float64
    ]


def test_shared_weights_and_float32():
    a, b, c = _mimo(2, "uvu", mul=3)
    tp64 = TensorProduct(
        a, b, c, mode="uvu", backend="gaunt_grid", shared_weights=True, internal_weights=False
    )
    x1, x2, _ = _inputs(tp64)
    w = torch.randn(tp64.weight_numel)
    ref = tp64(x1, x2, w)
    tp32 = TensorProduct(
        a, b, c, mode="uvu", backend="gaunt_fft", shared_weights=True, internal_weights=False
    ).float()
    assert (tp32(x1.float(), x2.float(), w.float()).double() - ref).abs().max().item() < TOL[
        torch.float32
    ] * 10


@pytest.mark.parametrize(
    "backend,options", [("gaunt_fft", {"method": m}) for m in ("auto", "dft", "fft", "direct")] + [(REFERENCE_NAME, {})]
)
def test_empty_batch(backend, options):
    tp = ChannelwiseTensorProduct("2x0e+2x1o", "0e+1o", "2x0e+2x1o", backend=backend, **options)
    out = tp(torch.zeros(0, tp.irreps_in1.dim), torch.zeros(0, 4), torch.zeros(0, tp.weight_numel))
    assert out.shape == (0, tp.irreps_out.dim)


def test_too_coarse_grid_raises():
    a, b, c = _mimo(2)
    with pytest.raises(ValueError, match=r"too coarse.*res_beta >= 5 and res_alpha >= 9"):
        TensorProduct(a, b, c, mode="uuu", backend="gaunt_grid", resolution=(4, 20))
    with pytest.raises(ValueError, match="too coarse"):
        TensorProduct(a, b, c, mode="uuu", backend="gaunt_grid", resolution=(5, 8))
    finer = TensorProduct(
        a,
        b,
        c,
        mode="uuu",
        backend="gaunt_grid",
        resolution=(7, 13),
        shared_weights=False,
        internal_weights=False,
    )
    exact = TensorProduct(
        a, b, c, mode="uuu", backend="gaunt_grid", shared_weights=False, internal_weights=False
    )
    x1, x2, w = _inputs(exact)
    assert (finer(x1, x2, w) - exact(x1, x2, w)).abs().max().item() < TOL[torch.float64]


@pytest.mark.parametrize("mode", ["uvu", "uuu"])
def test_fft_route_over_chunks_matches_dft(mode, monkeypatch):
    """The chunked transforms of the ``"fft"`` route (forward and first backward) equal the dft route,
    with uneven chunks and, for uvu, a second input broadcast over the channels."""
    from equitensor.ops.backends import gaunt_fft

    a, b, c = _mimo(4, mode, mul=3)
    kw = dict(mode=mode, shared_weights=False, internal_weights=False, backend="gaunt_fft")
    dft, fft = TensorProduct(a, b, c, method="dft", **kw), TensorProduct(a, b, c, method="fft", **kw)
    plan = fft.impl.unit_plans[0]
    assert (plan.rows, plan.n_phi) == (9, 24)  # n_theta = 2 * 8 + 1, n_phi >= 8 + 8 + 1
    per_sample = 3 * plan.rows * plan.n_phi
    monkeypatch.setattr(gaunt_fft, "FFT_CHUNK_FLOATS", 2 * per_sample)  # chunks of 2 samples, 11 = 5 * 2 + 1
    for batch in (11, 1):  # a batch of one: the backward recomputes the samples instead of reusing them
        x1, x2, w = (t.requires_grad_() for t in _inputs(dft, batch=batch))
        grad_out = torch.randn(batch, dft.irreps_out.dim)
        results = []
        for tp in (dft, fft):
            out = tp(x1, x2, w)
            results.append((out, *torch.autograd.grad(out, (x1, x2, w), grad_out)))
        for expected, got in zip(*results):
            assert (got - expected).abs().max().item() < TOL[torch.float64] * max(1.0, expected.abs().max().item())


@pytest.mark.parametrize("backend,options", [("gaunt_grid", {}), ("gaunt_fft", {"method": "dft"}), ("cp", {})])
@pytest.mark.parametrize("mode", ["uvu", "uuu", "uvv"])
def test_chunked_pointwise_product_matches_whole_batch(backend, options, mode, monkeypatch):
    """ChunkedPointwiseProduct (uneven chunks of one sample up) == the whole-batch product, value and gradients."""
    from equitensor.ops.backends import factorized

    a, b, c = _mimo(2, mode, mul=3)
    if mode == "uvv":
        a, b = natural_irreps(2, 1), natural_irreps(2, 3)
    kw = dict(mode=mode, shared_weights=False, internal_weights=False, backend=backend, **options)
    tp = TensorProduct(a, b, c, **kw)
    x1, x2, w = (t.requires_grad_() for t in _inputs(tp, batch=7))
    grad_out = torch.randn(7, tp.irreps_out.dim)
    results = []
    for chunked in (False, True):
        tp.impl.chunked_pointwise = chunked
        monkeypatch.setattr(factorized, "CHUNK_FLOATS", 1)
        monkeypatch.setattr(factorized, "CHUNK_MIN_ROWS", 2)  # chunks of 2 samples: 7 = 3 * 2 + 1
        out = tp(x1, x2, w)
        results.append((out, *torch.autograd.grad(out, (x1, x2, w), grad_out)))
    for expected, got in zip(*results):
        assert (got - expected).abs().max().item() < TOL[torch.float64] * max(1.0, expected.abs().max().item())


def test_batched_fft_size():
    assert [so3.fourier.batched_fft_size(m) for m in (1, 2, 3, 5, 17, 25, 33, 49)] == [1, 2, 3, 6, 24, 32, 48, 64]


def test_unsupported_mode_and_bad_method():
    with pytest.raises(ValueError, match="supports one connection mode"):
        TensorProduct("2x0e", "2x0e", "2x0e", mode="uvw", backend="gaunt_grid")
    with pytest.raises(ValueError, match="method='nope'"):
        TensorProduct("0e", "0e", "0e", mode="uvu", backend="gaunt_fft", method="nope")
    with pytest.raises(ValueError, match=r"method='fft2'; expected one of \('auto', 'dft', 'fft', 'direct'\)"):
        TensorProduct("0e", "0e", "0e", mode="uvu", backend="gaunt_fft", method="fft2")  # a test reference only


@pytest.mark.parametrize("backend,options", GAUNT)
@pytest.mark.parametrize("mode", ["uvu", "uuu"])
def test_gradcheck_and_gradgradcheck(backend, options, mode):
    a, b, c = (
        ("2x0e+2x1o", "0e+1o", "2x0e+2x1o+2x2e")
        if mode == "uvu"
        else ("2x0e+2x1o", "2x0e+2x1o", "2x0e+2x1o+2x2e")
    )
    tp = TensorProduct(
        a, b, c, mode=mode, backend=backend, shared_weights=False, internal_weights=False, **options
    )
    x1 = torch.randn(3, tp.irreps_in1.dim, requires_grad=True)
    x2 = torch.randn(3, tp.irreps_in2.dim, requires_grad=True)
    w = torch.randn(3, tp.weight_numel, requires_grad=True)
    assert torch.autograd.gradcheck(tp, (x1, x2, w))
    assert torch.autograd.gradgradcheck(tp, (x1, x2, w))


def test_tables_are_exact():
    # SH -> Fourier -> SH is the identity; projection on the grid inverts evaluation
    for lmax in (0, 3, 7):
        f, k = so3.fourier.sh_to_fourier(lmax), so3.fourier.fourier_to_sh(lmax, lmax)
        assert np.abs(np.einsum("auv,uvb->ab", f, k) - np.eye((lmax + 1) ** 2)).max() < 1e-12
        rb, ra = so3.s2grid.exact_resolution(2 * lmax)
        y, p = so3.s2grid.harmonics_on_grid(lmax, rb, ra), so3.s2grid.projection_on_grid(lmax, rb, ra)
        assert np.abs(y.T @ p - np.eye((lmax + 1) ** 2)).max() < 1e-12


@pytest.mark.parametrize("vmax,n", [(0, 2), (3, 8), (8, 34), (8, 36)])
def test_phi_dft_matrices_match_numpy_fft(vmax, n, rng):
    c = rng.normal(size=(5, vmax + 1)) + 1j * rng.normal(size=(5, vmax + 1))
    c[:, 0] = c[:, 0].real
    pairs = np.stack([c.real, c.imag], axis=-1).reshape(5, -1)
    samples = pairs @ so3.fourier.phi_synthesis(vmax, n)
    assert np.abs(samples - np.fft.irfft(c, n=n, norm="forward")).max() < 1e-12
    g = rng.normal(size=(5, n))
    spectrum = np.fft.rfft(g, norm="forward")[:, : vmax + 1]
    expected = np.stack([spectrum.real, spectrum.imag], axis=-1).reshape(5, -1)
    assert np.abs(g @ so3.fourier.phi_analysis(vmax, n) - expected).max() < 1e-12


def test_dft_tables_are_the_harmonics_on_the_half_torus():
    # independent of the Fourier tables: sample e3nn-convention harmonics at the torus points
    lmax = 4
    tp = TensorProduct(
        natural_irreps(lmax), natural_irreps(lmax), natural_irreps(2 * lmax), mode="uvu",
        backend="gaunt_fft", method="dft", shared_weights=False, internal_weights=False,
    )  # fmt: skip
    n = tp.impl.unit_plans[0].n
    theta = 2 * np.pi * np.arange(1, n // 2) / n
    phi = 2 * np.pi * np.arange(n) / n
    inner = so3.spherical_harmonics_alpha_beta(
        list(range(lmax + 1)), phi[None, :], theta[:, None], "integral"
    )
    poles = so3.spherical_harmonics_alpha_beta(
        list(range(lmax + 1)), np.zeros(2), np.array([0.0, np.pi]), "integral"
    )
    expected = np.concatenate([poles[:1], inner.reshape(-1, inner.shape[-1]), poles[1:]]).T
    assert np.abs(tp.impl.unit_constants[0].master("left") - expected).max() < 1e-12


def test_auto_method_per_degree():
    kw = dict(mode="uvu", shared_weights=False, internal_weights=False, backend="gaunt_fft")
    assert TensorProduct("0e", "0e", "0e", **kw).impl.unit_plans[0].method == "direct"
    assert TensorProduct("0e+1o", "0e+1o", "0e+1o+2e", **kw).impl.unit_plans[0].method == "dft"
