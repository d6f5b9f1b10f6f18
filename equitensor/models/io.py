"""Model files: ``{config, state_dict, version}`` (no pickled modules; loads with ``weights_only=True``)."""

from __future__ import annotations

from pathlib import Path

import torch

#: the floating-point dtypes models, the trainer and the benchmarks accept, by name.
DTYPES = {"float32": torch.float32, "float64": torch.float64}

FORMAT = "equitensor.mace/1"


def save_model(model, path) -> None:
    """Write ``model`` (a :class:`~equitensor.models.MACE`) to ``path``: its constructor config,
    its ``state_dict`` (in the model's dtype) and the equitensor version."""
    from .. import __version__

    torch.save(
        {"format": FORMAT, "version": __version__, "config": model.config, "state_dict": model.state_dict()},
        Path(path),
    )


def load_model(path, map_location="cpu", conv_backend: str | None = None, product_backend: str | None = None):
    """Rebuild the model saved by :func:`save_model` (same dtype as saved, on ``map_location``).

    ``conv_backend`` / ``product_backend`` (default: as saved) move it to other backends with the
    same function, as :func:`~equitensor.models.convert_backends` (``ValueError`` when the
    weights do not carry over), e.g. a model trained on CPU with ``cg`` run with ``cueq`` on GPU.
    """
    from .mace import MACE

    payload = torch.load(Path(path), map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not an equitensor model file (expected format {FORMAT!r})")
    state = payload["state_dict"]
    dtype = next((t.dtype for t in state.values() if t.is_floating_point()), torch.get_default_dtype())
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model = MACE(**payload["config"])
    finally:
        torch.set_default_dtype(previous)
    model.load_state_dict(state)
    if conv_backend is not None or product_backend is not None:
        from .convert import convert_backends

        model = convert_backends(model, conv_backend=conv_backend, product_backend=product_backend)
    return model.to(map_location)
