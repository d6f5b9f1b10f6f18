"""Two gloo processes on localhost train to the same parameters as one process with the same global batch."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from equitensor.train.config import load_config
from equitensor.train.distributed import init_distributed
from equitensor.train.trainer import Trainer, seed_everything

from .conftest import TOL
from .train_helpers import PairPotential, emt_graphs

OVERRIDES = [
    "train.batch_size=4",
    "train.epochs=2",
    "train.dtype=float64",
    "train.progress=never",
    "train.plot=false",
    "train.device=cpu",
    "optim.scheduler=constant",
    "optim.clip_grad_norm=1.0",
]


def _train(out_dir: str) -> dict:
    config = load_config(None, [*OVERRIDES, f"train.out_dir={out_dir}"])
    ctx = init_distributed("cpu")
    try:
        graphs = emt_graphs(14, seed=3)  # 12 train (3 global batches), 2 validation
        seed_everything(config.train.seed)
        model = PairPotential()
        result = Trainer(config, model, graphs[:12], graphs[12:], dist=ctx).fit()
        return {"params": [p.detach().clone() for p in model.parameters()], "losses": result.step_losses,
                "val": result.final_metrics}
    finally:
        ctx.close()


def _worker(rank: int, world_size: int, port: int, out_dir: str, result_path: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    result = _train(out_dir)
    if rank == 0:
        torch.save(result, result_path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    path = tmp_path / "ddp.pt"
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "ddp"), str(path)), nprocs=2, join=True)
    ddp = torch.load(path)
    for key in ("RANK", "WORLD_SIZE"):
        assert key not in os.environ
    single = _train(str(tmp_path / "single"))
    assert len(ddp["losses"]) == len(single["losses"]) == 6
    torch.testing.assert_close(torch.tensor(ddp["losses"]), torch.tensor(single["losses"]),
                               rtol=0, atol=TOL[torch.float64] * 1e2)
    for a, b in zip(ddp["params"], single["params"]):
        torch.testing.assert_close(a, b, rtol=0, atol=TOL[torch.float64] * 1e2)
    # validation metrics are reduced over both ranks' shards
    assert ddp["val"]["forces_mae"] == pytest.approx(single["val"]["forces_mae"], rel=1e-9)
