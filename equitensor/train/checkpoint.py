"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is a plain dict saved with ``torch.save`` (tensors and builtins only, loadable with
``weights_only=True``): ``version``, ``config`` (the five config sections as a dict),
``model`` (state_dict), ``optimizer``, ``scheduler``, ``ema`` (or None), ``rng`` (torch, numpy,
python and CUDA generator states) and ``progress`` (epoch, batches done in that epoch, global
step, the partial-epoch loss sums, best validation loss, metric history). It is written to a
temporary file and renamed, so an interrupted save never corrupts the previous checkpoint.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from ..atomic import save_torch

__all__ = [
    "CHECKPOINT_VERSION",
    "capture_rng_state",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
]

CHECKPOINT_VERSION = 1

#: what a checkpoint is, for error messages
CHECKPOINT_FILE = (
    "a training checkpoint is the <train.out_dir>/checkpoint.pt that equitensor train writes "
    "(model, optimizer and progress); best_model.pt is a model file, not a checkpoint"
)


def capture_rng_state() -> dict:
    """States of every random generator training may touch."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "key": np_state[0],
            "state": torch.from_numpy(np_state[1].copy()),
            "pos": np_state[2],
            "has_gauss": np_state[3],
            "gauss": np_state[4],
        },
        "python": _python_state_to_list(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["key"], n["state"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    random.setstate(_python_state_from_list(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _python_state_to_list(state):
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_state_from_list(state):
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def save_checkpoint(state: dict, path: str | Path) -> Path:
    """Atomically write ``state`` (with ``version`` added) to ``path`` (see :mod:`equitensor.atomic`)."""
    return save_torch({"version": CHECKPOINT_VERSION, **state}, path)


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`; clear errors for missing/foreign files."""
    from ..models.io import ModelFileError, read_torch_file

    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    state = read_torch_file(path, map_location, "a training checkpoint", CHECKPOINT_FILE)
    if not isinstance(state, dict) or "progress" not in state or "model" not in state:
        raise ModelFileError(
            f"{path}: not an equitensor training checkpoint (no 'progress'/'model' entries); "
            + CHECKPOINT_FILE
        )
    if state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"{path}: checkpoint version {state.get('version')} != supported {CHECKPOINT_VERSION}"
        )
    return state
