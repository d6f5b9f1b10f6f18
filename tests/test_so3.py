"""so3 tables against the installed e3nn (the convention reference) and analytic identities."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from e3nn import o3

from equitensor import so3


@pytest.mark.parametrize("normalization", ["component", "norm", "integral"])
@pytest.mark.parametrize("normalize", [True, False])
def test_spherical_harmonics_match_e3nn(rng, normalization, normalize):
    xyz = rng.normal(size=(64, 3))
    ls = list(range(11))
    ours = so3.spherical_harmonics(ls, xyz, normalize=normalize, normalization=normalization)
    ref = o3.spherical_harmonics(
        ls, torch.tensor(xyz), normalize=normalize, normalization=normalization
    ).numpy()
    scale = np.abs(ref).max(axis=0, keepdims=True).clip(min=1.0)
    assert np.abs((ours - ref) / scale).max() < 1e-12


def test_spherical_harmonics_orthonormal_on_random_quadrature():
    # Lebedev-free check: Gauss-Legendre x uniform grid integrates degree <= 2*lmax exactly.
    lmax = 6
    x, w = np.polynomial.legendre.leggauss(lmax + 1)
    alpha = np.arange(2 * lmax + 1) * 2 * np.pi / (2 * lmax + 1)
    beta = np.arccos(x)
    y = so3.spherical_harmonics_alpha_beta(list(range(lmax + 1)), alpha[None, :], beta[:, None])
    weights = (w[:, None] * np.full(alpha.shape, 2 * np.pi / alpha.size)[None, :])[..., None]
    gram = np.einsum("bai,baj->ij", y * weights, y)
    assert np.abs(gram - np.eye(gram.shape[0])).max() < 1e-12


def test_wigner_3j_matches_installed_e3nn():
    for l1 in range(6):
        for l2 in range(6):
            for l3 in range(abs(l1 - l2), min(l1 + l2, 5) + 1):
                ref = o3.wigner_3j(l1, l2, l3, dtype=torch.float64).numpy()
                assert np.abs(so3.wigner_3j(l1, l2, l3) - ref).max() < 1e-12, (l1, l2, l3)


def test_installed_e3nn_convention_is_accepted_and_04_is_refused(monkeypatch):
    assert so3.e3nn_phase_convention() == "0.5"  # the installed e3nn (>= 0.5, pyproject)
    from importlib import metadata

    monkeypatch.setattr(metadata, "version", lambda name: "0.4.4")
    detect = so3.e3nn_phase_convention.__wrapped__  # bypass the cache
    with pytest.raises(ValueError, match=r"e3nn 0\.4\.4 is installed.*16 of 111"):
        detect()


def test_wigner_3j_is_invariant(rng):
    for l1, l2, l3 in [(1, 1, 2), (2, 3, 4), (5, 5, 5), (3, 4, 1)]:
        r = so3.random_rotation(rng)
        d1, d2, d3 = (so3.wigner_D_from_matrix(l, r) for l in (l1, l2, l3))
        c = so3.wigner_3j(l1, l2, l3)
        assert np.abs(np.einsum("ia,jb,kc,abc->ijk", d1, d2, d3, c) - c).max() < 1e-12


def test_wigner_D_matches_e3nn_including_inversion(rng):
    # e3nn builds its generators in the default dtype; float64 makes it a 1e-12 reference.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        _check_wigner_D(rng)
    finally:
        torch.set_default_dtype(previous)


def _check_wigner_D(rng):
    for improper in (False, True):
        r = so3.random_rotation(rng, improper=improper)
        for l in range(6):
            for p in (1, -1):
                ours = so3.wigner_D_from_matrix(l, r, parity=p)
                ref = o3.Irrep(l, p).D_from_matrix(torch.tensor(r)).numpy()
                assert np.abs(ours - ref).max() < 1e-12


def test_triangle_violation_raises():
    with pytest.raises(ValueError, match="triangle"):
        so3.wigner_3j(1, 1, 3)


def test_gaunt_coefficients_are_sphere_integrals():
    # Independent reference: integrate Y Y Y on a Gauss-Legendre x uniform grid exact to degree 3*lmax.
    lmax = 4
    n_beta, n_alpha = (3 * lmax) // 2 + 2, 3 * lmax + 2
    x, w = np.polynomial.legendre.leggauss(n_beta)
    alpha = np.arange(n_alpha) * 2 * np.pi / n_alpha
    y = {
        l: so3.spherical_harmonics_alpha_beta(l, alpha[None, :], np.arccos(x)[:, None], "integral")
        for l in range(lmax + 1)
    }
    quad = w[:, None] * (2 * np.pi / n_alpha)
    for l1 in range(lmax + 1):
        for l2 in range(lmax + 1):
            for l3 in range(abs(l1 - l2), min(l1 + l2, lmax) + 1):
                integral = np.einsum("ba,bai,baj,bak->ijk", quad, y[l1], y[l2], y[l3])
                assert np.abs(so3.gaunt_coefficients(l1, l2, l3) - integral).max() < 1e-12, (l1, l2, l3)


def test_gaunt_scale_published_values():
    assert so3.gaunt_scale(0, 0, 0) == pytest.approx(0.28209479, abs=1e-8)  # 1/sqrt(4 pi)
    assert so3.gaunt_scale(1, 1, 2) == pytest.approx(0.691, abs=1e-3)
    assert so3.gaunt_scale(6, 6, 12) == pytest.approx(2.06, abs=1e-2)
    assert so3.gaunt_scale(1, 1, 1) == 0.0


def test_so3_does_not_import_torch():
    code = "import sys, equitensor.so3; assert 'torch' not in sys.modules, 'so3 imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)
