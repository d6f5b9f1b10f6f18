"""``equitensor.ops.Linear`` vs ``e3nn.o3.Linear`` on the same weights, forward and forward+backward.

    PYTHONPATH=. python benchmarks/linear.py --threads 2 --repeats 10

Writes ``benchmarks/results/linear.csv`` (one row per irreps, method and pass: median ms and the
speed-up over e3nn measured in the same run; every implementation is timed in turn, repeat by
repeat, so that load from other jobs hits all of them alike) and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from e3nn import o3  # noqa: E402

from equitensor.ops import Linear  # noqa: E402

IRREPS = {
    "mace_hidden": "128x0e+128x1o",
    "l3_128": "128x0e+128x1o+128x2e+128x3o",
    "mace_conv_out": ("128x0e+128x0e+128x1o+128x1o+128x1o+128x2e+128x2e+128x2e+128x3o+128x3o",
                      "128x0e+128x1o+128x2e+128x3o"),
}  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "linear.csv"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for name, spec in IRREPS.items():
        irreps_in, irreps_out = spec if isinstance(spec, tuple) else (spec, spec)
        ref = o3.Linear(irreps_in, irreps_out)
        default_method = Linear(irreps_in, irreps_out).method
        impls = {"e3nn": ref}
        for method in ("dense", "gather", "blocks"):
            ours = Linear(irreps_in, irreps_out, method=method)
            ours.weight.data.copy_(ref.weight.data)
            impls[method] = ours
        x = torch.randn(args.batch, ref.irreps_in.dim, requires_grad=True)
        for fn_pass in ("fwd", "fwdbwd"):
            times = {k: [] for k in impls}
            for rep in range(args.repeats + 2):
                for key, module in impls.items():
                    start = time.perf_counter()
                    out = module(x)
                    if fn_pass == "fwdbwd":
                        torch.autograd.grad(out, (x, module.weight), torch.ones_like(out))
                    if rep >= 2:  # two warm-ups
                        times[key].append(time.perf_counter() - start)
            e3nn_ms = 1e3 * statistics.median(times["e3nn"])
            for key, ts in times.items():
                ms = 1e3 * statistics.median(ts)
                rows.append({"irreps": name, "irreps_in": irreps_in, "irreps_out": irreps_out, "impl": key,
                             "default": key == default_method,
                             "pass": fn_pass, "batch": args.batch, "threads": args.threads,
                             "median_ms": round(ms, 2), "speedup_vs_e3nn": round(e3nn_ms / ms, 2)})  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"{'irreps':14s} {'pass':7s} {'impl':7s} {'median ms':>10s} {'vs e3nn':>8s}")
    for r in rows:
        mark = " (default)" if r["default"] else ""
        print(
            f"{r['irreps']:14s} {r['pass']:7s} {r['impl']:7s} {r['median_ms']:10.2f} {r['speedup_vs_e3nn']:7.2f}x{mark}"
        )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
