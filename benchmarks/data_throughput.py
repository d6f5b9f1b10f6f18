"""Graphs per second into the training loop (read + neighbour list + collate), against fairchem-core.

    python benchmarks/data_shards.py                      # once: /tmp/equitensor_oc20_shards
    python benchmarks/data_throughput.py [--data DIR] [--graphs 3000] [--fairchem-python PATH]

Both pipelines read the same ``.aselmdb`` shards in the same shuffled order, build periodic
radius graphs with the same cutoff (``--r-max``, Å; fairchem's ``max_neigh`` set high enough
that no edge is dropped) and collate batches of ``--batch-size`` graphs with a DataLoader of 0
and 2 worker processes. equitensor: ``GraphDataset(open_dataset(DIR))`` + the numba cell list +
``graph_loader`` (the trainer's loader: PyG batches, one shared buffer per batch from a worker); fairchem: ``AseDBDataset`` with its graph generation and
its collater, run by ``--fairchem-python`` (a separate venv; skipped when absent). The first
batch (worker start, JIT caches) is not timed; ``--rounds`` alternating rounds, the median
rate of each library kept. Then peak RSS against dataset size with graphs
not cached (``cache_graphs: false``): one fresh process per size (the first 1, 2, 4, ... shards)
reading ``--rss-graphs`` random graphs. Writes ``benchmarks/results/data_throughput.csv``,
``data_rss.csv``, ``data_batching.csv`` (atoms per batch over one shard's epoch, fixed batch
size vs ``max_atoms_per_batch``) and ``data_throughput.png``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results"
FAIRCHEM_WORKER = Path(__file__).resolve().parent / "data_fairchem_worker.py"


def shuffled_order(n: int, count: int, seed: int) -> list[int]:
    """The indices both pipelines read: ``count`` of ``range(n)`` in a seeded random order."""
    return np.random.default_rng(seed).permutation(n)[:count].tolist()


def equitensor_rate(
    sources: list[str], count: int, workers: int, batch_size: int, r_max: float, seed: int, threads: int
) -> dict:
    """Graphs per second of the equitensor pipeline over ``count`` shuffled frames."""
    import torch

    torch.set_num_threads(threads)
    from torch.utils.data import Subset

    from equitensor.datasets import GraphDataset, open_dataset
    from equitensor.datasets.loader import graph_loader

    dataset = GraphDataset(
        open_dataset(sources if len(sources) > 1 else sources[0]), r_max=r_max, dtype=torch.float32
    )
    order = shuffled_order(len(dataset), count, seed)
    loader = graph_loader(Subset(dataset, order), batch_size=batch_size, num_workers=workers)
    return time_loader(
        loader, lambda batch: int(batch.num_graphs), lambda batch: int(batch.edge_index.shape[1])
    )


def time_loader(loader, graphs_of, edges_of) -> dict:
    """Iterate ``loader``; graphs/s and edges/graph after the first batch."""
    batches = iter(loader)
    next(batches)
    graphs = edges = 0
    start = time.perf_counter()
    for batch in batches:
        graphs += graphs_of(batch)
        edges += edges_of(batch)
    elapsed = time.perf_counter() - start
    return {
        "graphs": graphs,
        "seconds": elapsed,
        "graphs_per_s": graphs / elapsed,
        "edges_per_graph": edges / max(graphs, 1),
    }


def fairchem_rate(
    python: str,
    sources: list[str],
    count: int,
    workers: int,
    batch_size: int,
    r_max: float,
    seed: int,
    threads: int,
) -> dict:
    order = shuffled_order(sum(_lengths(sources)), count, seed)
    args = {
        "sources": sources,
        "order": order,
        "workers": workers,
        "batch_size": batch_size,
        "r_max": r_max,
        "threads": threads,
    }
    out = subprocess.run(
        [python, str(FAIRCHEM_WORKER), json.dumps(args)], capture_output=True, text=True, check=False
    )
    if out.returncode:
        raise RuntimeError(f"fairchem worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _lengths(sources: list[str]) -> list[int]:
    from equitensor.datasets import open_dataset

    return [len(open_dataset(s)) for s in sources]


def rss_after_reading(sources: list[str], count: int, r_max: float, seed: int) -> dict:
    """Peak RSS (MiB) of this process after reading ``count`` random graphs, graphs not cached."""
    import torch

    from equitensor.datasets import GraphDataset, open_dataset

    dataset = GraphDataset(
        open_dataset(sources if len(sources) > 1 else sources[0]), r_max=r_max, dtype=torch.float32
    )
    for index in shuffled_order(len(dataset), min(count, len(dataset)), seed):
        dataset[index]
    return {"frames": len(dataset), "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_rss_subprocess(sources: list[str], count: int, r_max: float, seed: int) -> dict:
    here = str(Path(__file__).resolve().parent)
    code = (
        f"import json, sys; sys.path.insert(0, {here!r}); from data_throughput import rss_after_reading; "
        f"print(json.dumps(rss_after_reading({sources!r}, {count}, {r_max!r}, {seed})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def batch_atom_spread(source: str, batch_size: int, world: int = 2) -> list[dict]:
    """Atoms per batch over one epoch: fixed ``batch_size`` systems vs ``max_atoms_per_batch``.

    The bound is ``batch_size`` times the mean system size, so both take about as many steps;
    with ``world`` ranks the per-step imbalance between ranks is reported too.
    """
    from equitensor.datasets import open_dataset
    from equitensor.datasets.batching import BudgetBatchSampler, atom_counts

    counts = atom_counts(open_dataset(source))
    order = np.random.default_rng(0).permutation(len(counts))
    fixed = [
        counts[order[k : k + batch_size]].sum() for k in range(0, len(counts) - batch_size + 1, batch_size)
    ]
    bound = int(batch_size * counts.mean())
    plans = [
        list(BudgetBatchSampler(range(len(counts)), bound, world, r, counts=counts)) for r in range(world)
    ]
    loads = np.array([[counts[b].sum() for b in plan] for plan in plans])[:, :-1]  # last step padded
    budget = loads[0]
    return [
        {"batching": f"batch_size={batch_size}", "frames": len(counts), "steps": len(fixed), "atoms_min": int(min(fixed)),
         "atoms_max": int(max(fixed)), "max_over_min": max(fixed) / min(fixed), "rank_spread_max": float("nan")},
        {"batching": f"max_atoms_per_batch={bound}", "frames": len(counts), "steps": len(budget), "atoms_min": int(budget.min()),
         "atoms_max": int(budget.max()), "max_over_min": budget.max() / budget.min(),
         "rank_spread_max": float((loads.max(axis=0) / loads.min(axis=0)).max())},
    ]  # fmt: skip


def plot(rates: list[dict], rss: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    labels = [f"{r['library']}\n{r['workers']} workers" for r in rates]
    left.bar(
        labels,
        [r["graphs_per_s"] for r in rates],
        color=["C0" if r["library"] == "equitensor" else "C1" for r in rates],
    )
    left.set_ylabel("graphs / s (read + neighbour list + collate)")
    right.plot([r["frames"] for r in rss], [r["peak_rss_mib"] for r in rss], "o-")
    right.set_xlabel("frames in the dataset")
    right.set_ylabel("peak RSS (MiB), graphs not cached")
    right.set_ylim(bottom=0)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=Path("/tmp/equitensor_oc20_shards"), help="folder of .aselmdb shards"
    )
    parser.add_argument("--graphs", type=int, default=3000, help="graphs read per measurement")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--r-max", type=float, default=6.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--rss-graphs", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3, help="alternating repeats; the median rate is kept")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads of the reading process, both libraries"
    )
    parser.add_argument("--fairchem-python", default="/work/fairchem-venv/bin/python")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    sources = sorted(str(p) for p in args.data.glob("*.aselmdb"))
    if not sources:
        raise SystemExit(f"no .aselmdb shards in {args.data}; build them with benchmarks/data_shards.py")
    has_fairchem = Path(args.fairchem_python).exists()
    rates = []
    libraries = ("equitensor", "fairchem") if has_fairchem else ("equitensor",)
    for workers in args.workers:
        runs: dict[str, list[dict]] = {library: [] for library in libraries}
        for _ in range(args.rounds):  # alternating, side by side: the machine's load hits both
            for library in libraries:
                if library == "equitensor":
                    result = equitensor_rate(
                        sources, args.graphs, workers, args.batch_size, args.r_max, args.seed, args.threads
                    )
                else:
                    result = fairchem_rate(
                        args.fairchem_python,
                        sources,
                        args.graphs,
                        workers,
                        args.batch_size,
                        args.r_max,
                        args.seed,
                        args.threads,
                    )
                runs[library].append(result)
                print(
                    f"{library:<10} workers={workers}: {result['graphs_per_s']:8.1f} graphs/s ({result['edges_per_graph']:.0f} edges/graph)",
                    flush=True,
                )
        for library, results in runs.items():
            median = sorted(results, key=lambda r: r["graphs_per_s"])[(len(results) - 1) // 2]
            rates.append(
                {
                    "library": library,
                    "workers": workers,
                    "batch_size": args.batch_size,
                    "r_max": args.r_max,
                    "threads": args.threads,
                    "rounds": len(results),
                    **median,
                }
            )
    rss = []
    for k in sorted({1, 2, 4, len(sources)} & set(range(1, len(sources) + 1))):
        rss.append({"shards": k, **run_rss_subprocess(sources[:k], args.rss_graphs, args.r_max, args.seed)})
        print(f"{rss[-1]['frames']:>7} frames: peak RSS {rss[-1]['peak_rss_mib']:.0f} MiB", flush=True)
    spread = batch_atom_spread(sources[0], args.batch_size)
    for row in spread:
        print(f"{row['batching']:<28} atoms per batch {row['atoms_min']}-{row['atoms_max']} ({row['max_over_min']:.2f}x), "
              f"rank spread {row['rank_spread_max']:.3f}", flush=True)  # fmt: skip
    from equitensor.atomic import write_csv

    write_csv(args.out / "data_batching.csv", spread)
    write_csv(args.out / "data_throughput.csv", rates)
    write_csv(args.out / "data_rss.csv", rss)
    plot(rates, rss, args.out / "data_throughput.png")
    for workers in args.workers:
        pair = {r["library"]: r["graphs_per_s"] for r in rates if r["workers"] == workers}
        if "fairchem" in pair:
            print(f"workers={workers}: equitensor / fairchem = {pair['equitensor'] / pair['fairchem']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
