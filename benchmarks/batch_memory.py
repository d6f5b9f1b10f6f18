"""Memory of a training step per batch over an OC20 epoch: fixed batch size vs ``max_atoms_per_batch``
vs ``max_edges_per_batch``.

    python benchmarks/batch_memory.py [--data DIR] [--batch-size 16]

Device-agnostic proxies for a step's memory, measured on CPU for every batch of one epoch (the
24 OC20 relaxation trajectories in ``shared/data/oc20_traj`` unless ``--data``):

* ``saved_mib``: bytes of the tensors autograd saves for backward during the forward pass
  (energy and forces with ``create_graph``, as in training), each storage counted once and the
  parameters left out (``torch.autograd.graph.saved_tensors_hooks``);
* ``peak_mib``: the peak of the bytes held by tensors created during the whole step (forward,
  loss, backward), tracked op by op with a ``TorchDispatchMode``: an op's fresh outputs add
  their storage's bytes, which are released when the last tensor on that storage is freed.

On a GPU the caching allocator's peak follows these (it adds the batch's inputs and the model's
parameters, gradients and optimizer state, which are the same for every batch). Three batchings
over the same epoch: fixed ``--batch-size`` systems, and ``BudgetBatchSampler`` bounded by
``--batch-size`` times the mean atoms per system or, third, times the mean edges per system (so
all three take about as many steps). The epoch's final batch (a remainder) is reported but left
out of the max/min ratio. Writes one row per batch to ``benchmarks/results/batch_memory.csv``.
"""

from __future__ import annotations

import argparse
import sys
import weakref
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from equitensor.atomic import write_csv  # noqa: E402
from benchmarks.data_shards import default_source  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
#: a small MACE with the OC20 preset's cutoff and structure (channels reduced to run on a CPU)
MODEL = {
    "r_max": 6.0, "num_bessel": 8, "num_polynomial_cutoff": 5, "max_ell": 1, "hidden_irreps": "8x0e+8x1o",
    "correlation": 2, "num_interactions": 2, "MLP_irreps": "8x0e", "radial_MLP": [16, 16],
}  # fmt: skip


class LiveTensorBytes(TorchDispatchMode):
    """Bytes held by the storages that ops create while the mode is active, and their peak.

    A fresh output (an op return without alias annotation: not a view, not in-place) adds its
    storage's bytes once; a weak reference on every tensor sharing that storage releases them
    when the last one is freed (PyTorch keeps a tensor's Python object alive as long as the
    tensor lives, also when only autograd holds it).
    """

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._holders: dict[int, int] = {}  # storage address -> live tensors on it
        self._sizes: dict[int, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        returns = func._schema.returns
        outputs = out if isinstance(out, tuple | list) else (out,)
        for spec, tensor in zip(returns, outputs, strict=False):
            if isinstance(tensor, torch.Tensor) and spec.alias_info is None:
                self._track(tensor)
        return out

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key, size = storage.data_ptr(), storage.nbytes()
        if size == 0:
            return
        if key not in self._holders:
            self._holders[key], self._sizes[key] = 0, size
            self.live += size
            self.peak = max(self.peak, self.live)
        self._holders[key] += 1
        weakref.finalize(tensor, self._release, key)

    def _release(self, key: int) -> None:
        self._holders[key] -= 1
        if self._holders[key] == 0:
            del self._holders[key]
            self.live -= self._sizes.pop(key)


def step_memory(model: torch.nn.Module, batch, parameters: set[int]) -> dict:
    """Saved-for-backward bytes and peak live bytes of one energy+forces training step."""
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    model.zero_grad(set_to_none=True)
    tracker = LiveTensorBytes()
    with tracker:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            out = model(batch, training=True)
        loss = out["energy"].pow(2).mean() + 100 * out["forces"].pow(2).mean()
        loss.backward()
        del out, loss
    return {"saved_mib": sum(saved.values()) / 2**20, "peak_mib": tracker.peak / 2**20}


def batchings(
    counts: np.ndarray, edges: np.ndarray, batch_size: int, seed: int
) -> dict[str, list[list[int]]]:
    """The epoch's batches: fixed size, atom-bounded and edge-bounded (the bounds ``batch_size``
    mean systems)."""
    from equitensor.datasets.batching import BudgetBatchSampler

    order = np.random.default_rng(seed).permutation(len(counts)).tolist()
    fixed = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
    max_atoms, max_edges = int(batch_size * counts.mean()), int(batch_size * edges.mean())
    by_atoms = list(BudgetBatchSampler(range(len(counts)), max_atoms, seed=seed, counts=counts))
    by_edges = list(BudgetBatchSampler(range(len(counts)), max_edges=max_edges, seed=seed, edges=edges))
    return {
        f"batch_size={batch_size}": fixed,
        f"max_atoms_per_batch={max_atoms}": by_atoms,
        f"max_edges_per_batch={max_edges}": by_edges,
    }


def measure(data: Path, batch_size: int, seed: int, threads: int, limit: int | None) -> list[dict]:
    from torch_geometric.data import Batch

    from equitensor.datasets import GraphDataset, open_dataset
    from equitensor.datasets.batching import atom_counts, edge_counts
    from equitensor.models import MACE

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    reader = open_dataset(data)
    graphs = GraphDataset(reader, r_max=MODEL["r_max"], dtype=torch.float32)
    counts, edges = atom_counts(reader), edge_counts(graphs, progress=True)
    elements = sorted({int(z) for k in range(len(reader)) for z in reader[k].numbers})
    model = MACE(atomic_numbers=elements, avg_num_neighbors=40.0, **MODEL).float()
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    rows = []
    for name, batches in batchings(counts, edges, batch_size, seed).items():
        for step, members in enumerate(batches[:limit]):
            batch = Batch.from_data_list([graphs[i] for i in members])
            row = {"batching": name, "step": step, "graphs": len(members), "atoms": int(counts[members].sum()),
                   "edges": int(batch.edge_index.shape[1]), "last": step == len(batches) - 1}  # fmt: skip
            if row["edges"] != edges[members].sum():  # the bound's counts are the graphs' edges
                raise SystemExit(
                    f"{name} step {step}: edge_counts gives {edges[members].sum()}, the batch has {row['edges']}"
                )
            rows.append({**row, **step_memory(model, batch, parameters)})
        print(summary_line(name, [r for r in rows if r["batching"] == name]), flush=True)
    return rows


def summary_line(name: str, rows: list[dict]) -> str:
    full = [r for r in rows if not r["last"]]
    saved = np.array([r["saved_mib"] for r in full])
    peak = np.array([r["peak_mib"] for r in full])
    return (
        f"{name:<28} {len(full)} batches: saved {saved.min():.1f}-{saved.max():.1f} MiB "
        f"({saved.max() / saved.min():.2f}x), peak {peak.min():.1f}-{peak.max():.1f} MiB ({peak.max() / peak.min():.2f}x)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=default_source(), help="any dataset open_dataset reads")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None, help="batches per batching (default: the epoch)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not args.data.exists():
        raise SystemExit(f"data {args.data} not found (pass --data or set EQUITENSOR_SHARED_DATA)")
    rows = measure(args.data, args.batch_size, args.seed, args.threads, args.limit)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "batch_memory.csv", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
