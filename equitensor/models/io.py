"""Model files: ``{format, model, version, config, state_dict}`` (no pickled modules; loads with
``weights_only=True``).

``model`` is the name the model's class is registered under (:mod:`equitensor.models.registry`),
``config`` its constructor arguments. Files of the format ``equitensor.mace/1`` (no ``model``
field) hold a MACE and load as one.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .registry import DEFAULT_MODEL, build_in_dtype, get_model_class, model_name

#: the floating-point dtypes models, the trainer and the benchmarks accept, by name.
DTYPES = {"float32": torch.float32, "float64": torch.float64}

FORMAT = "equitensor.model/1"

#: the MACE-only format: no ``model`` field, always a MACE
MACE_FORMAT = "equitensor.mace/1"

#: what a model file is, for error messages
MODEL_FILE = (
    "an equitensor model file is the torch archive written by save_model or by training "
    "(<train.out_dir>/best_model.pt), holding the model's config and weights"
)


class ModelFileError(ValueError):
    """A model or checkpoint file is missing, empty, truncated, or not a torch file."""


def read_torch_file(path, map_location="cpu", what: str = "a model file", about: str = MODEL_FILE):
    """``torch.load(path, weights_only=True)`` with a :class:`ModelFileError` naming the file and the
    problem instead of torch's internal errors (``EOFError``, ``KeyError: 101``, ``IsADirectoryError``).

    Args:
        what: the kind of file expected, for messages (``"a model file"``, ``"a checkpoint"``).
        about: one sentence saying what such a file is.
    """
    path = Path(path)
    if path.is_dir():
        raise ModelFileError(f"{path} is a directory, not {what}; {about}")
    if not path.exists():
        raise FileNotFoundError(f"{what.split(' ', 1)[-1]} not found: {path}")
    if path.stat().st_size == 0:
        raise ModelFileError(
            f"{path} is empty (0 bytes), not {what}: it was cut off before anything was written; {about}"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch's unpickler raises anything on foreign bytes
        raise ModelFileError(
            f"{path} cannot be read as {what}: it is truncated, corrupt or not a torch file "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); {about}"
        ) from error


def save_model(model, path) -> None:
    """Write ``model`` (an instance of a registered model class, e.g. :class:`~equitensor.models.MACE`)
    to ``path``: its registered name, constructor config, ``state_dict`` (in the model's dtype) and
    the equitensor version. Written atomically: a killed save leaves the previous file intact.

    Raises:
        ValueError: the model's class is not registered (:func:`~equitensor.models.register_model`).
    """
    from .. import __version__

    from ..atomic import save_torch

    payload = {
        "format": FORMAT, "model": model_name(model), "version": __version__, "config": model.config,
        "state_dict": model.state_dict(),
    }  # fmt: skip
    save_torch(payload, Path(path))


def _model_class(payload, path) -> type:
    """The registered class of the model in ``payload`` (a loaded model file)."""
    if not isinstance(payload, dict) or payload.get("format") not in (FORMAT, MACE_FORMAT):
        raise ModelFileError(
            f"{path} is not an equitensor model file (expected format {FORMAT!r} or {MACE_FORMAT!r}); "
            f"{MODEL_FILE}"
        )
    name = payload.get("model") if payload["format"] == FORMAT else DEFAULT_MODEL
    if not isinstance(name, str):
        raise ModelFileError(f"{path} names no model architecture (its 'model' field is {name!r}); {MODEL_FILE}")
    try:
        return get_model_class(name)
    except ValueError as error:
        raise ModelFileError(
            f"{path} holds a model of architecture {name!r}, which is not registered here: {error}; "
            "import the package that defines it before loading"
        ) from None


def load_model(path, map_location="cpu", conv_backend: str | None = None, product_backend: str | None = None):
    """Rebuild the model saved by :func:`save_model` (same dtype as saved, on ``map_location``).

    ``conv_backend`` / ``product_backend`` (default: as saved) move it to other backends with the
    same function, as :func:`~equitensor.models.convert_backends` (``ValueError`` when the
    weights do not carry over), e.g. a model trained on CPU with ``cg`` run with ``cueq`` on GPU.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ModelFileError: ``path`` is a directory, empty, truncated or not an equitensor model file,
            or its model's architecture is not registered.
    """
    payload = read_torch_file(path, map_location)
    cls = _model_class(payload, path)
    state = payload["state_dict"]
    dtype = next((t.dtype for t in state.values() if t.is_floating_point()), torch.get_default_dtype())
    model = build_in_dtype(cls, payload["config"], dtype)
    model.load_state_dict(state)
    if conv_backend is not None or product_backend is not None:
        from .convert import convert_backends

        model = convert_backends(model, conv_backend=conv_backend, product_backend=product_backend)
    return model.to(map_location)
