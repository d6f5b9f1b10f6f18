"""Name -> model class: the ``model.name`` of a training configuration and the ``model`` field of a
model file (:mod:`equitensor.models.io`).

A model class is a ``torch.nn.Module`` that provides

* ``config``: a dict of plain data (numbers, strings, lists, dicts) such that ``cls(**model.config)``
  builds the same architecture again (what :func:`~equitensor.models.save_model` stores);
* ``r_max`` (cutoff in Å, the graphs' neighbour radius) and ``atomic_numbers`` (the elements it
  knows), which the evaluator and the calculator read;
* ``forward(batch, compute_forces=True, compute_stress=False, training=False, check_inputs=True)``
  returning a dict with ``energy [B]``, ``node_energy [N]``, ``forces [N, 3]`` and
  ``stress``/``virials [B, 3, 3]`` (or None): :mod:`equitensor.models.outputs` computes the
  derivatives for any energy, :func:`equitensor.models.graph.check_graph` the input check that
  ``check_inputs`` asks for (the calculator, which checks the structure itself, passes False);
* for training, a classmethod ``for_training(settings, statistics)`` building the model from the
  ``model`` section of the configuration (:class:`~equitensor.train.config.ModelConfig`) and the
  training set's :class:`~equitensor.train.setup.DatasetStatistics`, and a tuple ``config_keys`` of
  the ``model.*`` keys it reads besides the common ones (``name``, ``r_max``, ``extra``,
  ``init_from``, ``init_e0s``).

A new architecture is one module that defines such a class and calls :func:`register_model`;
a third-party package may instead declare it under the entry-point group ``equitensor.models``::

    [project.entry-points."equitensor.models"]
    my_model = "my_package.module:MyModel"
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib import metadata

import torch
from .._dtype import default_dtype

#: models of equitensor itself, imported on first use: name -> "module:attribute"
BUILTIN_MODELS = {"mace": "equitensor.models.mace:MACE"}

#: the model of a configuration or file that names none
DEFAULT_MODEL = "mace"

ENTRY_POINT_GROUP = "equitensor.models"

_registered: dict[str, type] = {}


def register_model(name: str, cls: type | None = None):
    """Make ``cls`` the model called ``name`` (usable as a decorator: ``@register_model("name")``).

    Raises:
        ValueError: ``name`` is not a non-empty string, or another class already has it.
    """

    def add(model_cls: type) -> type:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a model name must be a non-empty string, got {name!r}")
        if name in _registered and _registered[name] is not model_cls:
            taken = _registered[name].__name__
            raise ValueError(f"a different model is already registered as {name!r}: {taken}")
        _registered[name] = model_cls
        return model_cls

    return add if cls is None else add(cls)


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def registered_models() -> list[str]:
    """Names :func:`get_model_class` accepts (built-in, registered and entry points), sorted."""
    return sorted(set(BUILTIN_MODELS) | set(_registered) | set(_entry_points()))


def get_model_class(name: str) -> type:
    """The model class registered as ``name``.

    Raises:
        ValueError: no model has that name (the message lists the registered ones).
    """
    if name in _registered:
        return _registered[name]
    if name in BUILTIN_MODELS:
        module, attribute = BUILTIN_MODELS[name].split(":")
        return register_model(name, getattr(importlib.import_module(module), attribute))
    entry_points = _entry_points()
    if name in entry_points:
        return register_model(name, entry_points[name].load())
    raise ValueError(
        f"unknown model {name!r}; registered models: {', '.join(registered_models())} "
        "(a new architecture is registered with equitensor.models.register_model or the "
        f"{ENTRY_POINT_GROUP!r} entry point)"
    )


def model_name(model: torch.nn.Module) -> str:
    """The name ``model``'s class is registered under.

    Raises:
        ValueError: the class is not registered (it could not be loaded back from a file).
    """
    cls = type(model)
    for name, registered in list(_registered.items()):
        if registered is cls:
            return name
    for name in registered_models():  # built-in and entry-point models not loaded yet
        if name not in _registered and get_model_class(name) is cls:
            return name
    raise ValueError(
        f"{cls.__name__} is not a registered model (registered: {', '.join(registered_models())}); "
        "register it with equitensor.models.register_model(name, cls) so that files of it can be loaded"
    )


def build_in_dtype(cls: type, config: Mapping, dtype: torch.dtype) -> torch.nn.Module:
    """``cls(**config)`` with parameters and buffers created in ``dtype`` (the default dtype is
    restored afterwards, also when the constructor raises)."""
    with default_dtype(dtype):
        return cls(**config)
