"""Fine-tuning from a foundation model: ``model.init_from``, ``model.init_e0s``, ``train.freeze``.

``model.init_from`` names an equitensor model file (``save_model``) or, only with the user's
permission on the command line (``equitensor train --allow-pickle``) or in a call
(``allow_pickle=True``), a mace-torch ``.model`` file (a pickled module, converted by
``equitensor.models.from_mace`` with ``model.conv_backend`` / ``model.product_backend``). The
foundation model's architecture replaces the other ``model.*`` settings; its E0s are kept
(``model.init_e0s: keep``) or replaced by the ones ``data.e0s`` gives for the training elements
(``data``). ``train.freeze`` lists parameter-name prefixes or glob patterns whose parameters stay
fixed (e.g. ``[node_embedding, "interactions.0.*"]``). The run's ``config.yaml`` records
``model.init_from``, so where the weights came from stays with the run.
"""

from __future__ import annotations

import fnmatch
import pickle
from pathlib import Path

import torch

from .config import ConfigError

INIT_E0S = ("keep", "data")


def load_foundation(path, conv_backend: str = "cg", product_backend: str = "cg", allow_pickle: bool = False):
    """The model in ``path``: an equitensor model file, or a mace-torch one (only with ``allow_pickle``).

    The permission to unpickle is an argument, never a configuration key: a config file or a
    checkpoint cannot grant it."""
    from equitensor.models import from_mace, load_model

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model.init_from: {path} does not exist")
    try:
        return load_model(path)
    except (pickle.UnpicklingError, ValueError) as error:
        if not allow_pickle:
            raise ConfigError(
                f"model.init_from: {path} is not an equitensor model file ({str(error).splitlines()[0]}); "
                "if it is a mace-torch .model file (a pickled module, whose loading can run code), "
                "pass --allow-pickle to `equitensor train` (allow_pickle=True in Python) if you trust its source"
            ) from error
    return from_mace(path, conv_backend=conv_backend, product_backend=product_backend, trust_pickle=True)


def foundation_model(cfg, stats, allow_pickle: bool = False) -> torch.nn.Module:
    """The model of ``cfg.init_from`` checked against the training ``stats`` (elements, E0s);
    ``allow_pickle``: the user's permission to unpickle a mace-torch ``.model`` file."""
    from equitensor.models.graph import element_name

    if cfg.init_e0s not in INIT_E0S:
        raise ConfigError(f"model.init_e0s must be one of {INIT_E0S}, got {cfg.init_e0s!r}")
    model = load_foundation(cfg.init_from, cfg.conv_backend, cfg.product_backend, allow_pickle)
    known = getattr(model, "atomic_numbers", None)
    if known is None:
        raise ConfigError(
            f"model.init_from: {cfg.init_from} holds a {type(model).__name__}, which does not list the "
            "elements it was trained on (atomic_numbers); fine-tuning needs that list to check the data"
        )
    unknown = [z for z in stats.elements if z not in known]
    if unknown:
        names = ", ".join(f"{element_name(z)} ({z})" for z in unknown)
        raise ConfigError(
            f"model.init_from: {cfg.init_from} does not know {names}, which the training data contains; "
            "remove those frames (or set data.elements) or start from a model that covers them"
        )
    if cfg.init_e0s == "data":
        if not hasattr(model, "atomic_energies"):
            raise ConfigError(
                f"model.init_e0s: data needs a model with per-element reference energies "
                f"(atomic_energies), and {cfg.init_from} holds a {type(model).__name__}; use model.init_e0s: keep"
            )
        with torch.no_grad():
            e0 = model.atomic_energies.atomic_energies
            for k, z in enumerate(model.atomic_numbers):
                if z in stats.atomic_energies:
                    e0[k] = stats.atomic_energies[z]
        model.config["atomic_energies"] = model.atomic_energies.atomic_energies.tolist()
    return model


def freeze_parameters(model: torch.nn.Module, patterns) -> list[str]:
    """Set ``requires_grad=False`` on the parameters matching ``patterns``; returns their names.

    A pattern matches a parameter name that equals it, starts with ``pattern + "."``, or matches
    it as a glob. ``ConfigError`` for a pattern that matches nothing (with the modules there are).
    """
    names = [name for name, _ in model.named_parameters()]
    frozen = set()
    for pattern in patterns or []:
        hits = [n for n in names if n == pattern or n.startswith(pattern + ".") or fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            modules = sorted({".".join(n.split(".")[:2]) for n in names})
            raise ConfigError(f"train.freeze: {pattern!r} matches no parameter; modules: {', '.join(modules)}")
        frozen.update(hits)
    for name, parameter in model.named_parameters():
        if name in frozen:
            parameter.requires_grad_(False)
    return sorted(frozen)
