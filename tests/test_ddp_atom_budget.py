"""Two gloo processes with ``train.max_atoms_per_batch`` or ``train.max_edges_per_batch``: balanced
atom (edge) counts, disjoint data covering the epoch."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.multiprocessing as mp

from equitensor.datasets import AtomsToGraph
from equitensor.train.config import load_config
from equitensor.train.distributed import init_distributed
from equitensor.train.trainer import Trainer, seed_everything

from .test_datasets_sources import emt_frames
from .test_ddp import _free_port
from .train_helpers import R_MAX, PairPotential

#: as OC20 with a bound of 16 mean systems: the bound is ~6x the largest system
MAX_ATOMS = 200
#: about the edges of MAX_ATOMS atoms (the EMT cells have 18-19 neighbours per atom within R_MAX)
MAX_EDGES = 3600
N_TRAIN = 120
BOUNDS = {"atoms": MAX_ATOMS, "edges": MAX_EDGES}


class RecordingPotential(PairPotential):
    """PairPotential that records the systems (``sid``) and atoms of every training batch."""

    def __init__(self):
        super().__init__()
        self.seen: list[dict] = []

    def forward(self, batch, *args, **kwargs):
        if self.training:
            sizes = {"atoms": int(batch.natoms.sum()), "edges": int(batch.edge_index.shape[1])}
            self.seen.append({"sids": batch.sid.tolist(), **sizes})
        return super().forward(batch, *args, **kwargs)


def _worker(rank: int, world_size: int, port: int, out_dir: str, result_dir: str, quantity: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank)
    )  # fmt: skip
    torch.set_num_threads(1)
    overrides = [
        "train.epochs=1", "train.dtype=float64", "train.progress=never", "train.plot=false", "train.device=cpu",
        "optim.scheduler=constant", f"train.max_{quantity}_per_batch={BOUNDS[quantity]}",
        f"train.out_dir={out_dir}",
    ]  # fmt: skip
    config = load_config(None, overrides)
    ctx = init_distributed("cpu")
    try:
        convert = AtomsToGraph(R_MAX)
        graphs = [convert(atoms) for atoms in emt_frames(N_TRAIN + 4, seed=5)]  # 4 to 32 atoms
        seed_everything(config.train.seed)
        model = RecordingPotential()
        Trainer(config, model, graphs[:N_TRAIN], graphs[N_TRAIN:], dist=ctx).fit()
        with open(os.path.join(result_dir, f"rank{rank}.json"), "w") as fh:
            json.dump(model.seen, fh)
    finally:
        ctx.close()


@pytest.mark.slow
@pytest.mark.parametrize("quantity", ["atoms", "edges"])
def test_ranks_get_balanced_loads_and_disjoint_data(tmp_path, quantity):
    args = (2, _free_port(), str(tmp_path / "run"), str(tmp_path), quantity)
    mp.spawn(_worker, args=args, nprocs=2, join=True)
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert len(seen[0]) == len(seen[1]) > 2  # the same number of steps on both ranks
    for step, (a, b) in enumerate(zip(*seen, strict=True)):
        assert max(a[quantity], b[quantity]) <= BOUNDS[quantity]
        assert max(a[quantity], b[quantity]) <= 1.10 * min(a[quantity], b[quantity]), (step, a, b)
    sids = [[s for batch in rank for s in batch["sids"]] for rank in seen]
    assert not set(sids[0]) & set(sids[1])  # disjoint
    assert sorted(sids[0] + sids[1]) == list(range(N_TRAIN))  # each training system exactly once
