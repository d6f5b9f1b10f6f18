"""benchmarks/gpu_suite.sh stops at once, saying why, on a machine where torch sees no GPU."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_suite.sh"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_suite_refuses_to_run_without_cuda(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "out")], capture_output=True, text=True, env=env
    )
    assert proc.returncode != 0
    assert "torch sees no CUDA device" in proc.stderr
    assert not (tmp_path / "out" / "tp.log").exists()  # no benchmark started
