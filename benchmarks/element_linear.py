"""The element-dependent linear map without host counts: one GEMM through every element's map
against a per-atom weight gather, as the number of elements grows.

    flock /tmp/equitensor-bench.lock python benchmarks/element_linear.py --threads 1

``ElementLinear`` (MACE's skip connection) in the form compiled and off-CPU code runs
(``ElementGroups.without_counts``): forward, forces-style gradient with ``create_graph`` and its
backward, as in a force-training step. The two forms are selected by
``equitensor.models.blocks.DENSE_ELEMENTS_MAX`` and checked equal before timing. Prints a table
and writes ``<out>/element_linear.csv``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from equitensor.atomic import write_csv
from equitensor.models import blocks
from equitensor.models.blocks import ElementGroups, ElementLinear

FIELDS = ["atoms", "elements", "irreps", "gather_ms", "all_elements_gemm_ms", "gather_over_gemm"]


def step_seconds(layer, x, onehot, groups, dense_elements_max: int, repeats: int):
    """Median seconds of forward + create_graph gradient + backward, and the output."""
    blocks.DENSE_ELEMENTS_MAX = dense_elements_max
    times, out = [], None
    for _ in range(repeats + 2):
        start = time.perf_counter()
        out = layer(x, onehot, groups)
        (grad_x,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
        grad_x.square().sum().backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:]), out.detach()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atoms", type=int, default=372)
    parser.add_argument("--elements", default="4,8,16,32,56")
    parser.add_argument("--irreps", default="128x0e+128x1o")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for element_linear.csv")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    default = blocks.DENSE_ELEMENTS_MAX
    rows = []
    try:
        for count in (int(e) for e in args.elements.split(",")):
            torch.manual_seed(0)
            layer = ElementLinear(args.irreps, count, args.irreps)
            index = torch.randint(0, count, (args.atoms,))
            onehot = torch.nn.functional.one_hot(index, count).to(torch.get_default_dtype())
            groups = ElementGroups.without_counts(index)
            x = torch.randn(args.atoms, layer.irreps_in.dim, requires_grad=True)
            gather, out_gather = step_seconds(layer, x, onehot, groups, 0, args.repeats)
            gemm, out_gemm = step_seconds(layer, x, onehot, groups, count, args.repeats)
            torch.testing.assert_close(out_gemm, out_gather, rtol=1e-4, atol=1e-4)
            rows.append({
                "atoms": args.atoms, "elements": count, "irreps": args.irreps, "gather_ms": f"{gather * 1e3:.2f}",
                "all_elements_gemm_ms": f"{gemm * 1e3:.2f}", "gather_over_gemm": f"{gather / gemm:.2f}",
            })  # fmt: skip
            print(f"{count:3d} elements: gather {gather * 1e3:8.2f} ms  all-elements GEMM {gemm * 1e3:8.2f} ms  "
                  f"ratio {gather / gemm:.2f}", flush=True)  # fmt: skip
    finally:
        blocks.DENSE_ELEMENTS_MAX = default
    write_csv(args.out / "element_linear.csv", rows, FIELDS)
    print(f"wrote {args.out / 'element_linear.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
