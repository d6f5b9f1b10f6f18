"""The irreps interface's layout helpers: mul_ir <-> ir_mul, the column permutation, slices."""

import numpy as np
import pytest
import torch

from equitensor.irreps import (
    as_irreps,
    check_last_dim,
    ir_mul_permutation,
    ir_mul_to_mul_ir,
    irrep_slices,
    mul_ir_to_ir_mul,
)

IRREPS = "3x0e+2x1o+1x2e+4x1e"


def test_mul_ir_to_ir_mul_layout_by_hand():
    irreps = "2x0e+1x1o+2x1o"
    x = torch.arange(2 + 3 + 6).double()[None]
    got = mul_ir_to_ir_mul(x, irreps)[0].tolist()
    # 2x1o block at columns 5..10 holds (u0: 5 6 7, u1: 8 9 10); ir_mul: (m0: 5 8, m1: 6 9, m2: 7 10)
    assert got == [0, 1, 2, 3, 4, 5, 8, 6, 9, 7, 10]


def test_permutation_and_round_trip():
    irreps = as_irreps(IRREPS)
    x = torch.randn(4, 5, irreps.dim)
    order = ir_mul_permutation(irreps)
    assert sorted(order.tolist()) == list(range(irreps.dim))
    assert torch.equal(x[..., torch.as_tensor(order)], mul_ir_to_ir_mul(x, irreps))
    assert torch.equal(ir_mul_to_mul_ir(mul_ir_to_ir_mul(x, irreps), irreps), x)
    assert torch.equal(mul_ir_to_ir_mul(x, irreps)[..., torch.as_tensor(np.argsort(order))], x)
    assert [(s.start, s.stop) for s in irrep_slices(irreps)] == [(0, 3), (3, 9), (9, 14), (14, 26)]


def test_check_last_dim_names_the_tensor():
    with pytest.raises(ValueError, match="x1 has shape"):
        check_last_dim(torch.zeros(2, 5), "2x1o", "x1")
