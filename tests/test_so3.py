"""so3 tables against the installed e3nn (the convention reference) and analytic identities."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from e3nn import o3

from equitensor import so3
from equitensor._dtype import default_dtype


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


#: the blocks (l <= 5) where e3nn 0.4.4's wigner_3j has the opposite sign of e3nn >= 0.5's
E3NN_04_FLIPPED_BLOCKS = {
    (1, 2, 2), (1, 3, 3), (1, 4, 4), (1, 5, 5), (2, 1, 2), (2, 2, 1), (3, 1, 3), (3, 3, 1),
    (4, 1, 4), (4, 4, 1), (4, 4, 5), (4, 5, 4), (5, 1, 5), (5, 4, 4), (5, 5, 1), (5, 5, 5),
}  # fmt: skip


def old_e3nn() -> bool:
    from equitensor._e3nn_compat import installed_e3nn_version

    return installed_e3nn_version() < (0, 5)


def test_wigner_3j_follows_e3nn_05_whatever_e3nn_is_installed():
    """Equal to the installed e3nn's tables under e3nn >= 0.5; under 0.4 equal up to the sign of
    exactly the 16 blocks e3nn 0.5 changed (run in both venvs, this shows our tables are the same)."""
    flipped = set()
    for l1 in range(6):
        for l2 in range(6):
            for l3 in range(abs(l1 - l2), min(l1 + l2, 5) + 1):
                ref = o3.wigner_3j(l1, l2, l3, dtype=torch.float64).numpy()
                ours = so3.wigner_3j(l1, l2, l3)
                if np.abs(ours - ref).max() > 1e-12:
                    assert np.abs(ours + ref).max() < 1e-12, (l1, l2, l3)
                    flipped.add((l1, l2, l3))
    assert flipped == (E3NN_04_FLIPPED_BLOCKS if old_e3nn() else set())


def test_e3nn_adapter_sign_matches_installed_e3nn():
    from equitensor.ops.backends.e3nn_adapter import installed_wigner_3j_sign

    for l1, l2, l3 in [(1, 2, 2), (2, 2, 1), (1, 1, 2), (5, 5, 5), (3, 3, 2)]:
        expected = -1.0 if old_e3nn() and (l1, l2, l3) in E3NN_04_FLIPPED_BLOCKS else 1.0
        assert installed_wigner_3j_sign(l1, l2, l3) == expected


def test_phase_convention_does_not_depend_on_installed_e3nn(monkeypatch):
    from importlib import metadata

    before = so3.wigner_3j(1, 2, 2).copy()
    monkeypatch.setattr(metadata, "version", lambda name: "0.4.4")
    assert so3.e3nn_phase_convention() == "0.5"
    so3.wigner.change_basis_real_to_complex.cache_clear()
    so3.wigner.wigner_3j.cache_clear()
    try:
        assert np.array_equal(so3.wigner_3j(1, 2, 2), before)
    finally:
        so3.wigner.change_basis_real_to_complex.cache_clear()
        so3.wigner.wigner_3j.cache_clear()


def test_wigner_3j_is_invariant(rng):
    for l1, l2, l3 in [(1, 1, 2), (2, 3, 4), (5, 5, 5), (3, 4, 1)]:
        r = so3.random_rotation(rng)
        d1, d2, d3 = (so3.wigner_D_from_matrix(l, r) for l in (l1, l2, l3))
        c = so3.wigner_3j(l1, l2, l3)
        assert np.abs(np.einsum("ia,jb,kc,abc->ijk", d1, d2, d3, c) - c).max() < 1e-12


def test_wigner_D_matches_e3nn_including_inversion(rng):
    # e3nn builds its generators in the default dtype; float64 makes it a 1e-12 reference.
    with default_dtype(torch.float64):
        _check_wigner_D(rng)


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
