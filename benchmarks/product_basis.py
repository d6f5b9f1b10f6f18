"""The many-body product basis alone, as it runs in a MACE training step (medians, side by side).

Task (MACE defaults): ``C x (0e+1o+2e+3o)`` node features (``C`` = 128) -> layer-1 output
``C x (0e+1o)`` (``--max-L 1``) or ``C x (0e+1o+2e)`` (``--max-L 2``) and the layer-2 output
``C x 0e``; correlation 3; ``--nodes`` nodes (111 = the OC20 benchmark system) with random
elements out of ``--elements``; float32, 1 thread unless ``--threads``.

* **fwd**: ``pb(x, onehot)`` without a graph;
* **train**: ``E = <pb(x), r>``, ``F = dE/dx`` with ``create_graph``, ``loss = E + <F, s>``,
  ``loss.backward()`` (gradients for ``x`` and every weight) — the forward, force backward and
  double backward the product basis sees in a force-trained step;
Implementations are timed round-robin (one call of each in turn, ``--repeats`` rounds).

* **saved_mb**: bytes of the distinct tensors autograd keeps from the forward and the
  ``create_graph`` backward (``saved_tensors_hooks``), the product basis' share of the
  training step's peak memory.

Every implementation is checked against the first one (``train`` outputs and gradients, float64)
before it is timed. Methods: ``backend:method`` for backends with a ``method`` option (``cg:fused``,
``cg:naive``), else a backend name.

    PYTHONPATH=. python benchmarks/product_basis.py --max-L 2 --impls cg:naive,cg:fused,gaunt_grid
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from equitensor.irreps import natural_irreps
from equitensor.ops import ProductBasis


def build(impl: str, irreps_in: str, irreps_out: str, elements: int, dtype) -> ProductBasis:
    backend, _, method = impl.partition(":")
    options = {"method": method} if method else {}
    torch.manual_seed(0)
    return ProductBasis(irreps_in, irreps_out, 3, elements, backend=backend, **options).to(dtype)


def train_step(pb, x, onehot, r, s):
    x = x.detach().requires_grad_(True)
    energy = (pb(x, onehot) * r).sum()
    (force,) = torch.autograd.grad(energy, x, create_graph=True)
    (energy + (force * s).sum()).backward()
    return energy.detach(), force.detach(), x.grad


def saved_megabytes(pb, x, onehot, r, s) -> float:
    storages: dict[int, int] = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    x = x.detach().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        energy = (pb(x, onehot) * r).sum()
        (force,) = torch.autograd.grad(energy, x, create_graph=True)
        loss = energy + (force * s).sum()
    loss.backward()
    return sum(storages.values()) / 2**20


def interleaved_medians(fns, repeats: int) -> list[float]:
    """Median ms of each function, run round-robin (a load change on a shared machine hits all alike)."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            start = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - start)
    return [1e3 * statistics.median(ts) for ts in times]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-L", type=int, default=1, choices=(1, 2))
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--nodes", type=int, default=111)
    parser.add_argument("--elements", type=int, default=5)
    parser.add_argument("--impls", default="cg:naive,cg:fused")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    c = args.channels
    irreps_in = str(natural_irreps(3, mul=c))
    outs = {"layer1": str(natural_irreps(args.max_L, mul=c)), "layer2": str(natural_irreps(0, mul=c))}
    impls = args.impls.split(",")
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} thread(s), float32, nodes {args.nodes}, "
          f"elements {args.elements}, median of {args.repeats}")  # fmt: skip
    print(f"{'layer':<8}{'impl':<14}{'fwd ms':>9}{'train ms':>10}{'saved MB':>10}")
    for layer, irreps_out in outs.items():
        g = torch.Generator().manual_seed(1)
        x64 = torch.randn(args.nodes, 16 * c, generator=g, dtype=torch.float64)
        onehot64 = torch.nn.functional.one_hot(
            torch.randint(0, args.elements, (args.nodes,), generator=g), args.elements
        ).double()
        dim_out = build(impls[0], irreps_in, irreps_out, args.elements, torch.float64).irreps_out.dim
        r64 = torch.randn(args.nodes, dim_out, generator=g, dtype=torch.float64)
        s64 = torch.randn(args.nodes, 16 * c, generator=g, dtype=torch.float64)
        reference = None
        for impl in impls:  # agreement in float64 before timing
            pb = build(impl, irreps_in, irreps_out, args.elements, torch.float64)
            got = train_step(pb, x64, onehot64, r64, s64) + tuple(p.grad for p in pb.parameters())
            if reference is None:
                reference = got
            elif impl.partition(":")[0] == impls[0].partition(":")[0]:
                for a, b in zip(reference, got):
                    if not torch.allclose(a, b, rtol=1e-9, atol=1e-9 * b.abs().max().item()):
                        print(f"{impl} disagrees with {impls[0]}", file=sys.stderr)
                        return 1
        x, onehot, r, s = (t.float() for t in (x64, onehot64, r64, s64))
        pbs = [build(impl, irreps_in, irreps_out, args.elements, torch.float32) for impl in impls]

        def forward(pb, x=x, onehot=onehot):
            with torch.no_grad():
                pb(x, onehot)

        def step(pb, inputs=(x, onehot, r, s)):
            train_step(pb, *inputs)

        fwd = interleaved_medians([lambda pb=pb: forward(pb) for pb in pbs], args.repeats)
        train = interleaved_medians([lambda pb=pb: step(pb) for pb in pbs], args.repeats)
        for impl, pb, f, t in zip(impls, pbs, fwd, train, strict=True):
            saved = saved_megabytes(pb, x, onehot, r, s)
            print(f"{layer:<8}{impl:<14}{f:>9.1f}{t:>10.1f}{saved:>10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
