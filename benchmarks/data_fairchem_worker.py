"""fairchem-core side of ``data_throughput.py``; run by the fairchem venv's python, prints one JSON line.

Argument: a JSON object with ``sources`` (the ``.aselmdb`` shards), ``order`` (dataset indices
to read, in order), ``workers``, ``batch_size``, ``r_max`` and ``threads``. The pipeline is fairchem's own:
``AseDBDataset`` (``AtomicData.from_ase`` with ``r_edges``: its CPU graph generation) and its
``data_list_collater``. ``max_neigh`` is set far above any atom's neighbour count, so no edge
is dropped and both libraries build the same graphs.
"""

from __future__ import annotations

import json
import sys
import time

import torch
from fairchem.core.datasets import AseDBDataset
from fairchem.core.datasets.collaters.simple_collater import data_list_collater
from torch.utils.data import DataLoader, Subset

NO_NEIGHBOUR_LIMIT = 10_000


def main() -> int:
    args = json.loads(sys.argv[1])
    torch.set_num_threads(args["threads"])
    dataset = AseDBDataset(
        config={
            "src": args["sources"],
            "a2g_args": {"r_edges": True, "radius": args["r_max"], "max_neigh": NO_NEIGHBOUR_LIMIT},
        }
    )
    loader = DataLoader(
        Subset(dataset, args["order"]),
        batch_size=args["batch_size"],
        num_workers=args["workers"],
        collate_fn=data_list_collater,
    )
    batches = iter(loader)
    next(batches)  # worker start-up, as on the equitensor side
    graphs = edges = 0
    start = time.perf_counter()
    for batch in batches:
        graphs += int(batch.natoms.shape[0])
        edges += int(batch.edge_index.shape[1])
    elapsed = time.perf_counter() - start
    result = {
        "graphs": graphs,
        "seconds": elapsed,
        "graphs_per_s": graphs / elapsed,
        "edges_per_graph": edges / graphs,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
