"""Move a model to other backends without changing the function it computes.

``convert_backends(model, conv_backend="cueq", product_backend="cueq")`` rebuilds a
:class:`~equitensor.models.MACE` from its config with the new backends and carries every weight
over. That is only possible between backends whose weights mean the same thing, which each
backend class declares (no lists of names here):

* tensor products: ``parameterization == "per_path"`` and ``exact`` (``cg``, ``cueq``, ``e3nn``:
  one weight block per instruction in e3nn's flat layout, the same bilinear map; the contract
  suite checks each against ``cg``), or the same ``function_family`` declared by both classes
  (an optional attribute for other families, e.g. factorised products that compute one function);
* product bases: the same ``parameterization`` (``cg`` and ``cueq``: MACE's symmetric
  contraction weights ``[num_elements, K, channels]`` per output block and order) and ``exact``;
* the same backend with the same options, always.

Anything else (``cg`` -> ``gaunt_grid``: one weight per path versus weights factorised per
degree, a different and smaller family of maps) raises ``ValueError`` saying why.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..ops.backends.base import ProductBasisBackend, TensorProductBackend
from ..ops.backends.registry import get_backend, get_product_basis
from .registry import build_in_dtype


def conv_function_family(name: str) -> str | None:
    """What the tensor-product backend ``name`` computes from its weights (``None``: only itself)."""
    cls = get_backend(name)
    declared = getattr(cls, "function_family", None)
    if declared is not None:
        return declared
    return "cg" if cls.parameterization == "per_path" and cls.exact else None


def product_function_family(name: str) -> str | None:
    """What the product-basis backend ``name`` computes from its parameters (``None``: only itself)."""
    cls = get_product_basis(name)
    return getattr(cls, "parameterization", None) if cls.exact else None


def check_convertible(kind: str, source: str, target: str, options_equal: bool, family) -> None:
    """``ValueError`` unless backend ``source``'s weights give the same function on ``target``."""
    if source == target and options_equal:
        return
    source_family, target_family = family(source), family(target)
    if source_family is not None and source_family == target_family:
        return
    describe = _describe_conv if kind == "conv_backend" else _describe_product
    raise ValueError(
        f"cannot convert {kind} {source!r} -> {target!r}: {describe(source)}, while {describe(target)}; "
        "no weights of the target reproduce the source's function, so the model would have to be "
        f"retrained with {kind}={target!r}. Conversions keep the function: pick a target with the "
        "same parameterisation (e.g. cg <-> cueq <-> e3nn)."
    )


def _describe_conv(name: str) -> str:
    cls = get_backend(name)
    if cls.parameterization == "per_path" and cls.exact:
        return f"{name!r} has one free weight block per path (parameterization 'per_path', e3nn's layout)"
    if cls.parameterization == "per_path":
        return f"{name!r} has per-path weights but approximates the product (exact=False)"
    return (
        f"{name!r} factorises its weights per input and output degree (parameterization "
        f"{cls.parameterization!r}{'' if cls.exact else ', approximate'})"
    )


def _describe_product(name: str) -> str:
    cls = get_product_basis(name)
    parameterization = getattr(cls, "parameterization", None)
    if parameterization is None:
        return f"{name!r} has its own product-basis parameters"
    return f"{name!r} has parameterization {parameterization!r}{'' if cls.exact else ' (approximate)'}"


def convert_backends(
    model,
    conv_backend: str | None = None,
    product_backend: str | None = None,
    conv_options: Mapping | None = None,
    product_options: Mapping | None = None,
):
    """A new model computing ``model``'s function on other backends, weights carried over.

    Args:
        model: a :class:`~equitensor.models.MACE` (left unchanged).
        conv_backend, product_backend: target backends (``None``: keep the model's).
        conv_options, product_options: target backend options; by default the model's when the
            backend is kept, none when it changes (options are backend-specific).

    Returns:
        The converted model, in ``model``'s dtype, on its device and in its train/eval mode.

    Raises:
        ValueError: when a target's weights do not parameterise the source's function (module
            docstring), or the model has no constructor config.
    """
    from .mace import MACE

    if not isinstance(model, MACE):
        raise ValueError(f"convert_backends takes an equitensor MACE model, got {type(model).__name__}")
    config = dict(model.config)
    new = dict(config)
    for kind, options_key, target, options, family in (
        ("conv_backend", "conv_options", conv_backend, conv_options, conv_function_family),
        ("product_backend", "product_options", product_backend, product_options, product_function_family),
    ):
        target = config[kind] if target is None else target
        if options is None:
            options = config[options_key] if target == config[kind] else {}
        check_convertible(kind, config[kind], target, dict(options) == config[options_key], family)
        new[kind], new[options_key] = target, dict(options)

    reference = next((p for p in model.parameters() if p.is_floating_point()), None)
    dtype = reference.dtype if reference is not None else torch.get_default_dtype()
    device = reference.device if reference is not None else torch.device("cpu")
    converted = build_in_dtype(MACE, new, dtype)
    converted.load_state_dict(mapped_state_dict(model, converted))
    return converted.to(device).train(model.training)


def mapped_state_dict(source: torch.nn.Module, target: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``target``'s state dict filled from ``source``: every parameter and every buffer outside the
    backends is copied by name; the backends' own buffers (tables, masks) stay the target's.

    ``ValueError`` names any parameter the two models do not share with the same shape.
    """
    source_state, target_state = source.state_dict(), target.state_dict()
    backend_prefixes = tuple(
        f"{name}."
        for model in (source, target)
        for name, module in model.named_modules()
        if isinstance(module, (TensorProductBackend, ProductBasisBackend))
    )
    source_parameters = {name for name, _ in source.named_parameters()}
    target_parameters = {name for name, _ in target.named_parameters()}

    def carried(names, parameters):
        return {k for k in names if k in parameters or not k.startswith(backend_prefixes)}

    wanted, available = carried(target_state, target_parameters), carried(source_state, source_parameters)
    reshaped = {k for k in wanted & available if source_state[k].shape != target_state[k].shape}
    mismatched = sorted((wanted ^ available) | reshaped)
    if mismatched:
        raise ValueError(
            f"the converted model's parameters do not match the source's: {mismatched[:8]}"
            f"{' ...' if len(mismatched) > 8 else ''} (name or shape); "
            "the backends do not share a weight layout"
        )
    return {k: source_state[k] if k in wanted else v for k, v in target_state.items()}
