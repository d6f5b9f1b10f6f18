"""Side-by-side CPU timing of the factorised backends against ``cg`` (interleaved medians, one run).

Tasks (float32, forward + backward w.r.t. both inputs and the weights):

* MIMO (Xie et al.): ``0e+1o+...+L`` x ``0e+1o+...+L`` -> ``0e+1o+...+2L``, multiplicity 1, mode
  ``uvu``; backends ``cg`` (its ``auto`` method), ``gaunt_grid``, ``gaunt_fft`` (its ``auto``
  route) and ``gaunt_fft[fft]`` (``method="fft"``: the phi axis through ``torch.fft``).
* ``cp`` vs ``cg`` at L = 4 with equal channels: ``C x (0e..4)`` x ``0e..4`` -> ``C x (0e..4)``,
  ``uvu``, batch ``--cp-batch``.

Timing is interleaved: each repeat runs every backend of a task once, in turn, so that load
from other jobs on a shared machine hits all of them alike; the figures are medians over the
repeats (after one warm-up call each). Before timing, the Gaunt routes are checked to agree
with each other; agreement with ``cg`` is covered by the tests. Writes
``<output>/gaunt_speed.csv`` (rows of other configurations already there are kept).

    PYTHONPATH=. python benchmarks/gaunt_speed.py [--lmax 2 4 6 8] [--batch 10000] [--weights shared]
        [--repeats 10] [--threads 2] [--no-cp] [--no-mimo] [--output benchmarks/results]
"""

from __future__ import annotations

import argparse
import csv
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from equitensor import TensorProduct
from equitensor.irreps import natural_irreps

BACKENDS = {  # label -> (backend, options)
    "cg": ("cg", {}),
    "gaunt_grid": ("gaunt_grid", {}),
    "gaunt_fft": ("gaunt_fft", {}),
    "gaunt_fft[fft]": ("gaunt_fft", {"method": "fft"}),
}


def interleaved_medians(functions: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each function, timing them in turn within every repeat."""
    for fn in functions.values():
        fn()  # warm-up (tables, allocator)
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def forward_backward(tp, x1, x2, w, grad_out):
    leaves = [x1, x2, w]

    def run():
        torch.autograd.grad(tp(x1, x2, w), leaves, grad_out)

    return run


def build(label, irreps, shared):
    backend, options = BACKENDS[label]
    a, b, c = irreps
    return TensorProduct(
        a, b, c, mode="uvu", backend=backend, shared_weights=shared, internal_weights=False, **options
    )


def inputs(tps, batch, shared):
    first = next(iter(tps.values()))
    x1 = torch.randn(batch, first.irreps_in1.dim, requires_grad=True)
    x2 = torch.randn(batch, first.irreps_in2.dim, requires_grad=True)
    grad_out = torch.randn(batch, first.irreps_out.dim)
    weights = {
        label: torch.randn(*(() if shared else (batch,)), tp.weight_numel, requires_grad=True)
        for label, tp in tps.items()
    }
    return x1, x2, weights, grad_out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lmax", type=int, nargs="+", default=[2, 4, 6, 8])
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--weights", choices=("shared", "per-sample"), default="shared")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--backends", default=",".join(BACKENDS), help=f"MIMO backends, from {list(BACKENDS)}"
    )
    parser.add_argument("--cp-channels", type=int, default=32)
    parser.add_argument("--cp-batch", type=int, default=1000)
    parser.add_argument("--no-cp", action="store_true", help="skip the cp vs cg task")
    parser.add_argument("--no-mimo", action="store_true", help="skip the MIMO task")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shared = args.weights == "shared"
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"float32, forward+backward, interleaved median of {args.repeats}")  # fmt: skip
    rows = []
    print(f"{'task':<14}{'L':>3}{'backend':>16}{'ms':>10}{'cg / this':>11}{'this / grid':>13}")
    labels = [label for label in args.backends.split(",") if label]
    for lmax in [] if args.no_mimo else args.lmax:
        irreps = (natural_irreps(lmax), natural_irreps(lmax), natural_irreps(2 * lmax))
        tps = {label: build(label, irreps, shared) for label in labels}
        x1, x2, weights, grad_out = inputs(tps, args.batch, shared)
        gaunt = [label for label in tps if label.startswith("gaunt")]
        with torch.no_grad():  # the Gaunt routes compute the same function: check before timing
            w = weights[gaunt[0]] if gaunt else None
            reference = tps[gaunt[0]](x1, x2, w) if gaunt else None
            for label in gaunt[1:]:
                diff = (tps[label](x1, x2, w) - reference).abs().max().item()
                assert diff < 1e-3 * max(1.0, reference.abs().max().item()), f"{label} != {gaunt[0]}"
        seconds = interleaved_medians(
            {label: forward_backward(tp, x1, x2, weights[label], grad_out) for label, tp in tps.items()},
            args.repeats,
        )
        _report(rows, "MIMO", lmax, 1, args.batch, args.weights, seconds)
    if not args.no_cp:
        lmax, c = 4, args.cp_channels
        channels = str(natural_irreps(lmax, mul=c))
        irreps = (channels, str(natural_irreps(lmax)), channels)
        for weights_kind in ("shared", "per-sample"):
            tps = {
                name: TensorProduct(*irreps, mode="uvu", backend=name, shared_weights=weights_kind == "shared",
                                    internal_weights=False)
                for name in ("cg", "cp")
            }  # fmt: skip
            x1, x2, weights, grad_out = inputs(tps, args.cp_batch, weights_kind == "shared")
            seconds = interleaved_medians(
                {n: forward_backward(tp, x1, x2, weights[n], grad_out) for n, tp in tps.items()}, args.repeats
            )
            _report(rows, f"uvu C={c}", lmax, c, args.cp_batch, weights_kind, seconds)
        cp = tps["cp"].impl
        print(f"cp rank {cp.rank}, relative error {cp.relative_error:.2e}")
    return _write(rows, args.output) if rows else 0


def _report(rows, task, lmax, channels, batch, weights, seconds):
    for label, value in seconds.items():
        vs_cg = seconds["cg"] / value if "cg" in seconds else float("nan")
        vs_grid = value / seconds["gaunt_grid"] if "gaunt_grid" in seconds else float("nan")
        print(
            f"{task:<14}{lmax:>3}{label:>16}{value * 1e3:>10.2f}{vs_cg:>10.2f}x{vs_grid:>13.2f}", flush=True
        )
        rows.append({"task": task, "L": lmax, "channels": channels, "backend": label, "batch": batch,
                     "weights": weights, "threads": torch.get_num_threads(), "ms": round(value * 1e3, 3),
                     "speedup_vs_cg": round(vs_cg, 2), "ratio_vs_grid": round(vs_grid, 3)})  # fmt: skip


def _write(rows, output: Path, name: str = "gaunt_speed.csv") -> int:
    output.mkdir(parents=True, exist_ok=True)
    path = output / name
    fields = list(rows[0])
    keys = {tuple(str(r[k]) for k in ("task", "L", "backend", "batch", "weights", "threads")) for r in rows}
    existing = []
    if path.exists():  # keep rows of other configurations from earlier runs (same columns only)
        with open(path) as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames == fields:
                existing = [
                    r for r in reader
                    if tuple(r[k] for k in ("task", "L", "backend", "batch", "weights", "threads")) not in keys
                ]  # fmt: skip
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(existing + rows)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
