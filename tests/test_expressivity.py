"""Expressivity (rank of the Jacobian of the wrapped bilinear map) equals the analytic counts."""

import pytest

from equitensor import expressivity as ex
from equitensor.ops.backends.registry import get_backend


@pytest.mark.parametrize("lmax,expected", [(1, 5), (2, 14), (3, 30), (4, 55)])
def test_cg_counts_match_xie_et_al(lmax, expected):
    result = ex.expressivity("cg", lmax)
    assert result.analytic == expected
    assert result.dimension == expected


@pytest.mark.parametrize("backend", ["gaunt_grid", "gaunt_fft", "cp"])
@pytest.mark.parametrize("lmax", [1, 2, 3])
def test_factorised_backends_have_4l_plus_1(backend, lmax):
    result = ex.expressivity(backend, lmax)
    assert result.dimension == result.analytic == 4 * lmax + 1


def test_rank_gap_is_clear():
    """The numerical rank is unambiguous: a wide gap around the tolerance."""
    result = ex.expressivity("gaunt_grid", 3)
    s = result.singular_values / result.singular_values[0]
    assert s[result.dimension - 1] > 1e-6 and (result.dimension == len(s) or s[result.dimension] < 1e-12)


@pytest.mark.parametrize("backend", ["cg", "gaunt_grid", "gaunt_fft", "cp"])
def test_path_table_listed_equals_numerical(backend):
    rows = ex.path_table(backend, 1)
    assert all(r.listed == r.nonzero for r in rows)
    odd = [r for r in rows if (int(r.ir_in1[0]) + int(r.ir_in2[0]) + int(r.ir_out[0])) % 2]
    assert odd  # e.g. 1o x 1o -> 1e
    realised = {r.nonzero for r in odd}
    assert realised == ({False} if backend.startswith("gaunt") else {True})
    assert get_backend(backend).realises_odd_paths == (True in realised)


def test_analytic_counts_follow_the_declared_parameterization():
    assert ex.analytic_expressivity("cg", 3) == ex.analytic_expressivity("e3nn", 3) == 30
    assert ex.analytic_expressivity("gaunt_grid", 3) == ex.analytic_expressivity("cp", 3) == 13


def test_bench_main_writes_csv(tmp_path, capsys):
    from equitensor.bench.expressivity import main

    backends = ["cg", "gaunt_grid"]
    assert main(["--lmax", "2", "--path-lmax", "1", "--backends", *backends, "--output", str(tmp_path)]) == 0
    text = (tmp_path / "expressivity.csv").read_text()
    assert "cg,2,MIMO,14,14" in text and "gaunt_grid,2,MIMO,9,9" in text
    assert "Expressivity" in capsys.readouterr().out
