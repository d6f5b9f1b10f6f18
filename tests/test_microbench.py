"""Smoke test of the tensor-product microbenchmark harness (correctness of its output, no timing)."""

import csv

import pytest
import torch

from equitensor.bench.microbench import main, parse_int_list

from .conftest import TOL


def test_quick_run_writes_csv_rows(tmp_path):
    assert main(["--quick", "--settings", "mace,mimo", "--no-plot", "--out", str(tmp_path)]) == 0
    for setting in ("mace", "mimo"):
        with (tmp_path / f"microbench_{setting}.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        ok = [r for r in rows if r["status"] == "ok"]
        assert ok, f"no timed rows for {setting}"
        assert {r["backend"] for r in ok} == {"cg", "e3nn"}
        for row in ok:
            assert float(row["median_ms"]) > 0
        for row in (r for r in ok if r["backend"] == "e3nn"):
            # e3nn computes the same function as cg: the harness must have checked it.
            assert float(row["max_abs_diff_vs_cg"]) < TOL[torch.float32]


def test_unknown_backend_is_recorded_not_fatal(tmp_path):
    assert (
        main(["--quick", "--settings", "siso", "--backends", "cg,nope", "--no-plot", "--out", str(tmp_path)])
        == 0
    )
    with (tmp_path / "microbench_siso.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert any(r["backend"] == "nope" and r["status"] == "skipped" and "nope" in r["reason"] for r in rows)


def test_parse_int_list():
    assert parse_int_list("1-3,5") == [1, 2, 3, 5]
    assert parse_int_list("1..4") == [1, 2, 3, 4]


def test_cli_hands_harness_options_through(tmp_path):
    from equitensor.cli import main as cli_main

    argv = ["bench", "tp", "--quick", "--settings", "siso", "--backends", "cg,gaunt_grid", "--no-plot"]
    assert cli_main([*argv, "--out", str(tmp_path)]) == 0
    with (tmp_path / "microbench_siso.csv").open() as handle:
        backends = {r["backend"] for r in csv.DictReader(handle) if r["status"] == "ok"}
    assert backends == {"cg", "gaunt_grid"}


def test_backend_specs_with_options(tmp_path):
    from equitensor.bench.microbench import parse_backend_spec, split_backends

    assert split_backends("cg, gaunt_fft[method=fft,x=2],e3nn") == ["cg", "gaunt_fft[method=fft,x=2]", "e3nn"]
    assert parse_backend_spec("gaunt_fft[method=fft, x=-2]") == ("gaunt_fft", {"method": "fft", "x": -2})
    assert parse_backend_spec("cg") == ("cg", {})
    args = ["--quick", "--settings", "mimo", "--no-plot", "--out", str(tmp_path), "--pass", "fwd",
            "--backends", "cg,gaunt_fft[method=fft],gaunt_fft[method=dft],gaunt_grid[nope=1]"]  # fmt: skip
    assert main(args) == 0
    with (tmp_path / "microbench_mimo.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    status = {(r["backend"], r["L"]): r["status"] for r in rows}
    assert status[("gaunt_fft[method=fft]", "2")] == "ok" and status[("gaunt_fft[method=dft]", "2")] == "ok"
    assert status[("gaunt_grid[nope=1]", "2")] == "skipped"


def test_device_option_all_backends_and_default_output_folder(tmp_path, monkeypatch):
    """``--device cpu`` and ``--backends all``: every registered backend gets a row, the device is
    named in the CSV, and without ``--out`` the files land in the current directory."""
    from equitensor.ops.backends import available_backends

    monkeypatch.chdir(tmp_path)
    assert main(["--quick", "--settings", "siso", "--L", "1", "--backends", "all,gaunt_fft[method=fft],cg",
                 "--device", "cpu", "--pass", "fwd", "--dtype", "float64"]) == 0  # fmt: skip
    assert (tmp_path / "microbench_siso.png").exists()
    with (tmp_path / "microbench_siso.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    # --quick times L = 1 and 2; "cg" named twice runs once
    assert [r["backend"] for r in rows if r["L"] == "1"] == [*available_backends(), "gaunt_fft[method=fft]"]
    assert all(r["device"] and r["peak_mb"] == "" for r in rows)  # no allocator peak on the CPU
    assert not list(tmp_path.glob(".microbench_*"))  # no temp file left behind


def test_cuda_without_cuda_is_a_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit, match="no CUDA device.*--device cpu"):
        main(["--quick", "--device", "cuda", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="not a device name"):
        main(["--quick", "--device", "gpu0", "--out", str(tmp_path)])


def test_out_of_memory_in_one_backend_is_recorded_and_the_run_goes_on(tmp_path, monkeypatch):
    from equitensor.bench import microbench

    build = microbench.Case.build

    def build_or_run_out(self, backend, dtype):
        if backend == "gaunt_grid":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
        return build(self, backend, dtype)

    monkeypatch.setattr(microbench.Case, "build", build_or_run_out)
    argv = [
        "--quick",
        "--settings",
        "mimo",
        "--L",
        "1",
        "--backends",
        "cg,gaunt_grid,gaunt_fft",
        "--pass",
        "fwd",
    ]
    assert main([*argv, "--no-plot", "--out", str(tmp_path)]) == 0
    with (tmp_path / "microbench_mimo.csv").open() as handle:
        rows = {r["backend"]: r for r in csv.DictReader(handle)}
    assert (
        rows["gaunt_grid"]["status"] == "skipped" and "out of device memory" in rows["gaunt_grid"]["reason"]
    )
    assert rows["cg"]["status"] == rows["gaunt_fft"]["status"] == "ok"


def test_help_text_renders():
    from equitensor.bench.microbench import build_parser

    text = build_parser().format_help()
    assert "--max-memory-gb" in text and "% of the device memory" in text
