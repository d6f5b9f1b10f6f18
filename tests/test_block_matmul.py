"""``block_matmul`` (vsh's lift and projection) against a dense matrix built block by block:
values, gradients and gradients of gradients, for its in-place eager Function and its plain form."""

import pytest
import torch

from equitensor.ops.backends.block_matmul import RowBlock, block_matmul, block_matmul_plain

# blocks of different sizes, out of row order, with unwritten output rows (0-1, 14-15, 38-40)
BLOCKS = (
    RowBlock(in_start=5, out_start=16, count=2, rows_in=3, rows_out=11, table=1),
    RowBlock(in_start=0, out_start=2, count=4, rows_in=1, rows_out=3, table=0),
    RowBlock(in_start=4, out_start=0, count=0, rows_in=1, rows_out=3, table=0),
)
ROWS_IN, ROWS_OUT = 11, 41


def _dense(tables) -> torch.Tensor:
    """The map as one ``[ROWS_OUT, ROWS_IN]`` matrix (a block-diagonal placement of the tables)."""
    dense = torch.zeros(ROWS_OUT, ROWS_IN, dtype=tables[0].dtype)
    for b in BLOCKS:
        for i in range(b.count):
            rows = slice(b.out_start + i * b.rows_out, b.out_start + (i + 1) * b.rows_out)
            cols = slice(b.in_start + i * b.rows_in, b.in_start + (i + 1) * b.rows_in)
            dense[rows, cols] = tables[b.table]
    return dense


def _tables(generator):
    return (
        torch.randn(3, 1, generator=generator, dtype=torch.float64),
        torch.randn(11, 3, generator=generator, dtype=torch.float64),
    )


@pytest.mark.parametrize("form", [block_matmul, block_matmul_plain], ids=["eager", "plain"])
@pytest.mark.parametrize("transposed_input", [False, True])
def test_equals_the_dense_map_through_second_derivatives(form, transposed_input):
    generator = torch.Generator().manual_seed(0)
    tables = _tables(generator)
    z = 7
    source = torch.randn(z, ROWS_IN, generator=generator, dtype=torch.float64, requires_grad=True)
    cotangent = torch.randn(ROWS_OUT, z, generator=generator, dtype=torch.float64)

    def run(apply):
        x = source.t() if transposed_input else source.t().contiguous()  # a strided view, as vsh passes
        y = apply(x)
        (grad,) = torch.autograd.grad((y * cotangent).sum() + (y**3).sum(), source, create_graph=True)
        (second,) = torch.autograd.grad((grad**2).sum(), source)
        return y, grad, second

    dense = _dense(tables)
    for got, expected in zip(run(lambda x: form(x, BLOCKS, ROWS_OUT, tables)), run(lambda x: dense @ x)):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_gradcheck_and_gradgradcheck():
    generator = torch.Generator().manual_seed(1)
    tables = _tables(generator)
    x = torch.randn(ROWS_IN, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    function = lambda x: block_matmul(x, BLOCKS, ROWS_OUT, tables)  # noqa: E731
    assert torch.autograd.gradcheck(function, (x,))
    assert torch.autograd.gradgradcheck(function, (x,))
