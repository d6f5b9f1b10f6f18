"""CPU execution choices of the factorised backends, measured: FFT lengths and chunked products.

Two tasks, float32, interleaved medians (``gaunt_speed.interleaved_medians``):

* ``fft``: ns per element of a batched ``torch.fft.rfft`` / ``irfft`` along the last axis, for
  the lengths the ``gaunt_fft`` ``"fft"`` route could pick (about 6e6 samples per call). This is
  the measurement behind ``so3.fourier.batched_fft_size`` (``2^k`` or ``3 * 2^k``).
  Writes ``<output>/fft_lengths.csv``.
* ``chunked``: forward + backward of a factorised product with ``ChunkedPointwiseProduct``
  (``tp.impl.chunked_pointwise = True``, the default) against the whole-batch product, on a
  MACE-sized convolution product, the cp product of ``gaunt_speed.py`` and MIMO at L = 8 (with
  the ``CHUNK_MAX_INPUT_DIM`` gate lifted, since MIMO's 81 input components keep it whole by
  default: this row is the measurement behind the gate). Writes ``<output>/chunked_product.csv``.

    PYTHONPATH=. python benchmarks/cpu_execution.py [--tasks fft,chunked] [--threads 1 2] [--repeats 10]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gaunt_speed import forward_backward, interleaved_medians  # noqa: E402

from equitensor import TensorProduct  # noqa: E402
from equitensor.atomic import write_csv  # noqa: E402
from equitensor.irreps import natural_irreps  # noqa: E402
from equitensor.ops.backends import factorized  # noqa: E402

FFT_LENGTHS = (24, 30, 32, 34, 36, 40, 48, 50, 54, 60, 64, 72, 96)
SAMPLES = 6_000_000


def fft_rows(repeats: int) -> list[dict]:
    rows = []
    for n in FFT_LENGTHS:
        signal = torch.randn(SAMPLES // n, n)
        spectrum = torch.fft.rfft(signal)
        seconds = interleaved_medians(
            {"rfft": lambda: torch.fft.rfft(signal), "irfft": lambda: torch.fft.irfft(spectrum, n=n)}, repeats
        )
        rows.append({"n": n, **{f"{k}_ns_per_element": round(1e9 * v / signal.numel(), 3) for k, v in seconds.items()}})
    return rows


def chunked_cases():
    mace = str(natural_irreps(3, mul=128))
    cp_channels = str(natural_irreps(4, mul=32))
    mimo = natural_irreps(8)
    return [  # label, backend, irreps, batch
        ("MACE conv 128x(0e..3o) x (0e..3o)", "gaunt_grid", (mace, "0e+1o+2e+3o", mace), 5000),
        ("MACE conv 128x(0e..3o) x (0e..3o)", "cp", (mace, "0e+1o+2e+3o", mace), 5000),
        ("32x(0e..4e) x (0e..4e)", "cp", (cp_channels, str(natural_irreps(4)), cp_channels), 1000),
        ("MIMO L=8, gate lifted", "gaunt_grid", (str(mimo), str(mimo), str(natural_irreps(16))), 10000),
    ]


def chunked_rows(repeats: int) -> list[dict]:
    rows = []
    for label, backend, irreps, batch in chunked_cases():
        tp = TensorProduct(*irreps, mode="uvu", backend=backend, shared_weights=True, internal_weights=False)
        x1 = torch.randn(batch, tp.irreps_in1.dim, requires_grad=True)
        x2 = torch.randn(batch, tp.irreps_in2.dim, requires_grad=True)
        w = torch.randn(tp.weight_numel, requires_grad=True)
        run = forward_backward(tp, x1, x2, w, torch.randn(batch, tp.irreps_out.dim))

        def with_chunks(flag):
            def call():
                tp.impl.chunked_pointwise = flag
                run()

            return call

        gate = factorized.CHUNK_MAX_INPUT_DIM
        factorized.CHUNK_MAX_INPUT_DIM = 10**9 if "gate lifted" in label else gate
        try:
            seconds = interleaved_medians({"whole": with_chunks(False), "chunked": with_chunks(True)}, repeats)
        finally:
            factorized.CHUNK_MAX_INPUT_DIM = gate
        rows.append({
            "case": label, "backend": backend, "batch": batch, "whole_ms": round(1e3 * seconds["whole"], 2),
            "chunked_ms": round(1e3 * seconds["chunked"], 2), "speedup": round(seconds["whole"] / seconds["chunked"], 2),
        })  # fmt: skip
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="fft,chunked")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    tasks = {task.strip() for task in args.tasks.split(",") if task.strip()}
    unknown = tasks - {"fft", "chunked"}
    if unknown:
        raise SystemExit(f"unknown tasks {sorted(unknown)}; expected fft, chunked")
    torch.manual_seed(0)
    args.output.mkdir(parents=True, exist_ok=True)
    for task, measure, name in (("fft", fft_rows, "fft_lengths.csv"), ("chunked", chunked_rows, "chunked_product.csv")):
        if task not in tasks:
            continue
        rows = []
        for threads in args.threads:
            torch.set_num_threads(threads)
            for row in measure(args.repeats):
                rows.append({"threads": threads, **row})
                print(", ".join(f"{k} {v}" for k, v in rows[-1].items()), flush=True)
        write_csv(args.output / name, rows)
        print(f"wrote {args.output / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
