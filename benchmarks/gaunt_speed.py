"""Side-by-side CPU timing of the factorised backends against ``cg`` (medians, same run).

Tasks (float32, multiplicity 1 unless stated, per-sample weights, forward + backward w.r.t.
both inputs and the weights):

* MIMO: ``0e+1o+...+L`` x ``0e+1o+...+L`` -> ``0e+1o+...+2L`` (Xie et al.), mode ``uvu``.
* ``cp`` vs ``cg`` at L = 4 with equal channels: ``C x (0e..4)`` x ``0e..4`` -> ``C x (0e..4)``, ``uvu``.

Every pair of implementations is checked to agree (``gaunt`` vs ``gaunt_scale``-weighted
``cg``, Gaunt grid vs FFT) before it is timed. Writes ``benchmarks/results/gaunt_speed.csv``.

    PYTHONPATH=. python benchmarks/gaunt_speed.py [--batch 1000] [--lmax 2 4 6 8] [--repeats 7] [--threads 1]
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
from equitensor.expressivity import natural_irreps


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up (tables, allocator)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward_backward(tp, x1, x2, w):
    def run():
        for t in (x1, x2, w):
            t.grad = None
        tp(x1, x2, w).square().sum().backward()

    return run


def build(backend, irreps, **options):
    a, b, c = irreps
    return TensorProduct(
        a, b, c, mode="uvu", backend=backend, shared_weights=False, internal_weights=False, **options
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--lmax", type=int, nargs="+", default=[2, 4, 6, 8])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--cp-channels", type=int, default=32)
    parser.add_argument("--no-cg", action="store_true", help="time only the Gaunt backends (large L / batch)")
    parser.add_argument("--no-cp", action="store_true", help="skip the cp vs cg task")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared, oversubscribed machine multi-threaded small GEMMs "
                             "spend milliseconds in thread synchronisation)")  # fmt: skip
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"float32, batch {args.batch}, forward+backward, median of {args.repeats}")  # fmt: skip
    rows = []
    print(f"{'task':<10}{'L':>3}{'backend':>12}{'ms':>10}{'vs cg':>9}")
    for lmax in args.lmax:
        irreps = (natural_irreps(lmax), natural_irreps(lmax), natural_irreps(2 * lmax))
        names = ["gaunt_grid", "gaunt_fft"] if args.no_cg else ["cg", "gaunt_grid", "gaunt_fft"]
        tps = {name: build(name, irreps) for name in names}
        x1 = torch.randn(args.batch, tps["gaunt_grid"].irreps_in1.dim, requires_grad=True)
        x2 = torch.randn(args.batch, tps["gaunt_grid"].irreps_in2.dim, requires_grad=True)
        wg = torch.randn(args.batch, tps["gaunt_grid"].weight_numel, requires_grad=True)
        wc = torch.ones(args.batch, tps["cg"].weight_numel, requires_grad=True) if "cg" in tps else None
        with torch.no_grad():  # agreement check before timing
            grid, fft = tps["gaunt_grid"](x1, x2, wg), tps["gaunt_fft"](x1, x2, wg)
            assert (grid - fft).abs().max() < 1e-3 * max(1.0, grid.abs().max().item()), "grid != fft"
        timings = {}
        for name, tp in tps.items():
            timings[name] = median_seconds(
                forward_backward(tp, x1, x2, wc if name == "cg" else wg), args.repeats
            )
        for name, seconds in timings.items():
            ratio = timings["cg"] / seconds if "cg" in timings else float("nan")
            print(f"{'MIMO':<10}{lmax:>3}{name:>12}{seconds * 1e3:>10.2f}{ratio:>8.1f}x", flush=True)
            rows.append({"task": "MIMO", "L": lmax, "channels": 1, "backend": name, "batch": args.batch,
                         "ms": round(seconds * 1e3, 3), "speedup_vs_cg": round(ratio, 2)})  # fmt: skip
    if args.no_cp:
        return _write(rows, args.output)
    lmax, c = 4, args.cp_channels
    channels = "+".join(f"{c}x{ir}" for _, ir in natural_irreps(lmax))  # C x (0e + 1o + ... + 4e)
    irreps = (channels, str(natural_irreps(lmax)), channels)
    tps = {"cg": build("cg", irreps), "cp": build("cp", irreps)}
    x1 = torch.randn(args.batch, tps["cg"].irreps_in1.dim, requires_grad=True)
    x2 = torch.randn(args.batch, tps["cg"].irreps_in2.dim, requires_grad=True)
    weights = {n: torch.randn(args.batch, tp.weight_numel, requires_grad=True) for n, tp in tps.items()}
    timings = {
        n: median_seconds(forward_backward(tp, x1, x2, weights[n]), args.repeats) for n, tp in tps.items()
    }
    for name, seconds in timings.items():
        ratio = timings["cg"] / seconds
        print(f"{'CP C=' + str(c):<10}{lmax:>3}{name:>12}{seconds * 1e3:>10.2f}{ratio:>8.1f}x", flush=True)
        rows.append({"task": f"uvu C={c}", "L": lmax, "channels": c, "backend": name, "batch": args.batch,
                     "ms": round(seconds * 1e3, 3), "speedup_vs_cg": round(ratio, 2)})  # fmt: skip
    print(f"cp rank {tps['cp'].impl.rank}, relative error {tps['cp'].impl.relative_error:.2e}")
    return _write(rows, args.output)


def _write(rows, output: Path, name: str = "gaunt_speed.csv") -> int:
    output.mkdir(parents=True, exist_ok=True)
    path = output / name
    existing = []
    if path.exists():  # keep rows of other (task, L, batch) configurations from earlier runs
        with open(path) as handle:
            keys = {(r["task"], str(r["L"]), r["backend"], str(r["batch"])) for r in rows}
            existing = [
                r for r in csv.DictReader(handle) if (r["task"], r["L"], r["backend"], r["batch"]) not in keys
            ]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(existing + rows)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
