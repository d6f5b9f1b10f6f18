"""equitensor._dtype.default_dtype: the default dtype inside the block, restored on exit."""

import pytest
import torch

from equitensor._dtype import default_dtype


def test_default_dtype_sets_and_restores_also_on_error():
    before = torch.get_default_dtype()
    other = torch.float64 if before == torch.float32 else torch.float32
    with default_dtype(other) as previous:
        assert previous == before
        assert torch.randn(2).dtype == other
    assert torch.get_default_dtype() == before
    with pytest.raises(RuntimeError, match="inside"), default_dtype(other):
        raise RuntimeError("inside")
    assert torch.get_default_dtype() == before
