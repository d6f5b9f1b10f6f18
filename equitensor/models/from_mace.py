"""Convert a mace-torch model into an equitensor :class:`~equitensor.models.MACE` (same energies, forces, stress).

``from_mace(model)`` reads the hyper-parameters from the live mace-torch module, builds our model
with the requested backends and copies the weights. Three things are not a plain copy:

1. **wigner_3j phases.** The installed e3nn (0.4.4 under mace-torch) may have the other sign on a
   ``wigner_3j(l1, l2, l3)`` block than ours (e3nn >= 0.5); a convolution path ``l1 x l2 -> l3``
   on such a block gives the negated output, so the radial-MLP output columns that weight that
   path are negated. Same for the element skip connection's paths ``l x 0 -> l``.
2. **Symmetric-contraction basis.** mace-torch keeps its own coupling basis ``U_nu [2L+1, d..., K_mace]``
   (full or reduced CG); ours is a reduced orthogonal basis ``[2L+1, d..., K]`` of the same space.
   With ``Sym(U_mace) = U_ours @ A`` (exact, least squares, residual checked) the weights map as
   ``w_ours[e, :, c] = A @ w_mace[e, :, c]``.
3. **Convolution weight order.** mace-torch sorts its convolution instructions by output block,
   ours keep the path order (input block outer); the radial-MLP output columns are permuted.

Multi-head models: one head is kept (``head=`` by name, default the first); its E0s, scale and
shift, and its readout columns are taken.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .. import so3
from .._dtype import default_dtype
from ..so3.coupling import symmetric_coupling_basis
from .attention_interaction import AttentionInteractionBlock
from .mace_variants import NoReadout, layer_edge_irreps
from .nonlinear_interaction import NonLinearInteractionBlock

SUPPORTED_MODELS = ("MACE", "ScaleShiftMACE")
SUPPORTED_INTERACTIONS = (
    "RealAgnosticInteractionBlock", "RealAgnosticResidualInteractionBlock",
    "RealAgnosticDensityInteractionBlock", "RealAgnosticDensityResidualInteractionBlock",
    "RealAgnosticResidualNonLinearInteractionBlock", "RealAgnosticAttResidualInteractionBlock",
)  # fmt: skip
SUPPORTED_READOUTS = ("LinearReadoutBlock", "NonLinearReadoutBlock")
SUPPORTED_RADIAL = ("BesselBasis",)


def load_mace_model(path, trust_pickle: bool = False, map_location="cpu") -> torch.nn.Module:
    """Load a mace-torch ``.model`` file (a pickled ``torch.nn.Module``).

    Unpickling runs code from the file, so it happens only with ``trust_pickle=True``.
    """
    path = Path(path)
    if not trust_pickle:
        raise ValueError(
            f"{path} is a mace-torch model file, i.e. a pickled module whose loading can run code; "
            "pass trust_pickle=True if you trust its source"
        )
    if not path.is_file():
        raise FileNotFoundError(f"mace-torch model file {path} does not exist")
    try:
        import mace  # noqa: F401  (the pickled classes live in mace.modules)
    except ImportError as error:
        raise ImportError(
            f"loading {path} needs mace-torch, which is not importable here ({error}); "
            "`pip install mace-torch` into this environment (equitensor installs beside it)"
        ) from error
    model = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a mace-torch model")
    return model


def from_mace(
    model,
    conv_backend: str = "cg",
    product_backend: str = "cg",
    head: str | None = None,
    trust_pickle: bool = False,
    conv_options=None,
    product_options=None,
):
    """An equitensor ``MACE`` computing what the mace-torch ``model`` computes.

    Args:
        model: a mace-torch ``MACE`` / ``ScaleShiftMACE`` module, or the path of a ``.model``
            file (loaded only with ``trust_pickle=True``: it is a pickled module).
        conv_backend, product_backend: our backends (``cg`` is exact; others realise other maps
            and the copied weights then mean something else: convert with ``cg`` for equality).
        head: the head of a multi-head model to keep (by name; default the first).

    Returns:
        ``equitensor.models.MACE`` in the dtype of ``model``'s weights, on the CPU.

    Raises ``ValueError`` naming any block or option that cannot be converted and listing what can.
    """
    from .mace import MACE

    if isinstance(model, (str, Path)):
        model = load_mace_model(model, trust_pickle=trust_pickle)
    config, head_index = mace_config(model, head)
    dtype = next(p.dtype for p in model.parameters())
    with default_dtype(dtype):
        ours = MACE(
            **config, conv_backend=conv_backend, product_backend=product_backend,
            conv_options=conv_options, product_options=product_options,
        )  # fmt: skip
    from ..ops.backends.e3nn_adapter import installed_wigner_3j_sign

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    port_state_dict(ours, state, installed_wigner_3j_sign, head_index, len(model.heads))
    return ours


def _class_name(module) -> str:
    return type(module).__name__


def _unsupported(what: str, name: str, supported) -> ValueError:
    return ValueError(
        f"cannot convert {what} {name}: from_mace supports {', '.join(supported)}; "
        "open an issue with the model's architecture to add it"
    )


def _check_supported(model) -> None:
    """``ValueError`` for every mace-torch feature that the conversion cannot reproduce."""
    name = _class_name(model)
    if name not in SUPPORTED_MODELS:
        raise _unsupported("model class", name, SUPPORTED_MODELS)
    for interaction in model.interactions:
        if _class_name(interaction) not in SUPPORTED_INTERACTIONS:
            raise _unsupported("interaction block", _class_name(interaction), SUPPORTED_INTERACTIONS)
        accelerated = [getattr(getattr(interaction, k, None), "enabled", False) for k in ("cueq_config", "oeq_config")]
        if any(accelerated) or hasattr(interaction, "conv_fusion"):
            raise ValueError(
                "cannot convert a mace-torch model running on cuEquivariance / openEquivariance kernels; "
                "convert it back first with mace-torch's `mace.cli.convert_cueq_e3nn` / `convert_oeq_e3nn`"
            )
    for readout in model.readouts:
        if _class_name(readout) not in SUPPORTED_READOUTS:
            raise _unsupported("readout block", _class_name(readout), SUPPORTED_READOUTS)
    layout = [_class_name(r) for r in model.readouts]
    linear = 0 if getattr(model, "use_last_readout_only", False) else len(model.interactions) - 1
    expected = ["LinearReadoutBlock"] * linear + ["NonLinearReadoutBlock"]
    if len(model.interactions) < 2 or layout != expected:
        raise ValueError(
            f"cannot convert a mace-torch model with {len(model.interactions)} interaction(s) and the readouts "
            f"{layout}: supported are two or more interactions, linear readouts (unless "
            "use_last_readout_only) then one non-linear readout"
        )
    act = getattr(getattr(model.readouts[-1], "non_linearity", None), "acts", [None])[0]
    if getattr(act, "f", torch.nn.functional.silu) is not torch.nn.functional.silu:
        raise ValueError(f"cannot convert a non-linear readout with the gate {act.f!r}: supported is silu")
    last_out, scalars = str(model.products[-1].linear.irreps_out), str(model.interactions[0].hidden_irreps[0])
    if last_out != scalars:
        raise ValueError(
            f"cannot convert keep_last_layer_irreps=True (last layer {last_out}): supported is a last "
            f"layer that keeps only the scalars ({scalars})"
        )
    radial = model.radial_embedding
    if _class_name(radial.bessel_fn) not in SUPPORTED_RADIAL:
        raise _unsupported("radial basis", _class_name(radial.bessel_fn), SUPPORTED_RADIAL)
    unsupported_options = {
        "a distance transform other than Agnesi / Soft": hasattr(radial, "distance_transform")
        and _class_name(radial.distance_transform) not in ("AgnesiTransform", "SoftTransform"),
        "a ZBL order other than num_polynomial_cutoff": hasattr(model, "pair_repulsion")
        and int(model.pair_repulsion_fn.p) != int(radial.cutoff_fn.p),
        "use_so3": getattr(model, "use_so3", False),
        "odd scalars (0o) in hidden_irreps": any(
            ir.l == 0 and ir.p == -1 for _, ir in model.interactions[0].hidden_irreps
        ),
        "embedding_specs (joint embeddings)": hasattr(model, "joint_embedding"),
    }
    found = [option for option, present in unsupported_options.items() if present]
    if found:
        raise ValueError(
            f"cannot convert this {_class_name(model)}: it uses {', '.join(found)}, which equitensor's "
            f"MACE does not implement; supported: {', '.join(SUPPORTED_MODELS)} with "
            f"{', '.join(SUPPORTED_INTERACTIONS)}, {', '.join(SUPPORTED_READOUTS)} and a Bessel radial basis"
        )


def _head_index(model, head: str | None) -> int:
    heads = list(getattr(model, "heads", None) or ["Default"])
    if head is None:
        return 0
    if head not in heads:
        raise ValueError(f"head {head!r} does not exist in this model; its heads are {heads}")
    return heads.index(head)


def mace_config(model, head: str | None = None) -> tuple[dict, int]:
    """Our ``MACE`` constructor arguments for the mace-torch ``model`` (one head), and that head's index."""
    _check_supported(model)
    head_index = _head_index(model, head)
    num_heads = len(getattr(model, "heads", None) or ["Default"])
    first = model.interactions[0]
    radial = model.radial_embedding
    energies = torch.atleast_2d(model.atomic_energies_fn.atomic_energies.detach().double().cpu())
    if hasattr(model, "scale_shift"):
        scale = float(torch.atleast_1d(model.scale_shift.scale)[head_index])
        shift = float(torch.atleast_1d(model.scale_shift.shift)[head_index])
    else:
        scale, shift = 1.0, 0.0
    last_readout = model.readouts[-1]
    mlp_width = (
        last_readout.linear_1.irreps_out.dim // num_heads if _class_name(last_readout) == "NonLinearReadoutBlock" else 16
    )
    names = [_class_name(i) for i in model.interactions]
    residual = ["Residual" in name for name in names]
    density = {"Density" in name for name in names}
    kinds = [
        "nonlinear" if "NonLinear" in name else "attention" if "AttResidual" in name else "default" for name in names
    ]
    if not all(residual[1:]) or len(density) > 1:
        raise ValueError(
            f"cannot convert a mace-torch model with the interactions {names}: supported are a residual "
            "block after the first interaction and density normalisation in all blocks or in none"
        )
    config = dict(
        atomic_numbers=[int(z) for z in model.atomic_numbers],
        atomic_energies=energies[head_index].tolist(),
        r_max=float(radial.bessel_fn.r_max),
        num_bessel=int(radial.out_dim),
        num_polynomial_cutoff=int(radial.cutoff_fn.p),
        max_ell=int(model.spherical_harmonics.irreps_out.lmax),
        hidden_irreps=str(first.hidden_irreps),  # the last interaction keeps only its scalars
        correlation=[int(p.symmetric_contractions.contractions[0].correlation) for p in model.products],
        num_interactions=len(model.interactions),
        MLP_irreps=f"{mlp_width}x0e",
        radial_MLP=[int(h) for h in first.radial_MLP],
        avg_num_neighbors=float(first.avg_num_neighbors),
        atomic_inter_scale=scale,
        atomic_inter_shift=shift,
        residual_first=residual[0],
        pair_repulsion=hasattr(model, "pair_repulsion"),
        density_normalization=density.pop(),
        interaction_blocks=kinds[0] if len(set(kinds)) == 1 else kinds,
        distance_transform=(
            _class_name(radial.distance_transform).removesuffix("Transform")
            if hasattr(radial, "distance_transform") else None
        ),
        agnostic_product=bool(getattr(model, "use_agnostic_product", False)),
        apply_cutoff=bool(getattr(radial, "apply_cutoff", True)),
        last_readout_only=bool(getattr(model, "use_last_readout_only", False)),
        **_edge_irreps_config(model),
    )  # fmt: skip
    return config, head_index


def _edge_irreps_config(model) -> dict:
    """Our ``edge_irreps`` / ``edge_irreps_first`` for the convolution irreps of mace-torch's layers."""
    layers = [
        str(i.edge_irreps) if str(i.edge_irreps) != str(i.node_feats_irreps) else None
        for i in model.interactions
    ]
    config = dict(edge_irreps=layers[1], edge_irreps_first=layers[0] is not None)
    if config["edge_irreps"] is None and config["edge_irreps_first"]:
        config["edge_irreps"] = layers[0]  # only the first layer narrows: impossible in mace-torch's MACE
    ours = layer_edge_irreps(len(layers), **config)
    if [None if e is None else str(e) for e in ours] != layers:
        raise ValueError(
            f"cannot convert the convolution irreps {layers} (per interaction; None: the node features): "
            "supported are mace-torch's edge_irreps after the first layer, with use_edge_irreps_first or not"
        )
    return {k: v for k, v in config.items() if v}


def symmetric_contraction_map(u_mace: torch.Tensor, coupling, ir_out, nu: int) -> np.ndarray:
    """``A [K, K_mace]`` with ``Sym(U_mace) = U_ours @ A``; ``ValueError`` if mace's span is not ours."""
    # a float32 model holds its U rounded to float32: accept that rounding, nothing more
    tolerance = max(1e-10, 16 * torch.finfo(u_mace.dtype).eps)
    u = u_mace.double().numpy()
    if ir_out[0] == 0:
        u = u[None]
    k_mace = u.shape[-1]
    sym = np.zeros_like(u)
    perms = list(itertools.permutations(range(1, nu + 1)))
    for perm in perms:
        sym += np.transpose(u, (0, *perm, nu + 1))
    sym = (sym / len(perms)).reshape(-1, k_mace)
    basis = symmetric_coupling_basis(coupling, ir_out, nu)
    ours = basis.reshape(-1, basis.shape[-1])
    a, *_ = np.linalg.lstsq(ours, sym, rcond=None)
    residual = np.abs(ours @ a - sym).max(initial=0.0)
    if residual > tolerance * max(1.0, np.abs(sym).max(initial=0.0)):
        raise ValueError(f"mace-torch's U_{nu} for {ir_out} is not in our coupling space (residual {residual:.3g})")
    return a


def _conv_weights(interaction, w: torch.Tensor, sign: Callable) -> tuple[torch.Tensor, int]:
    """The radial MLP's last layer ``w [hidden, weight_numel]`` in our path order and phases."""
    d = interaction.conv_tp.descriptor
    sizes = [ins.weight_numel for ins in d.instructions]
    # mace-torch orders its instructions (hence weight blocks) by output block
    mace_order = sorted(range(len(d.instructions)), key=lambda k: d.instructions[k].i_out)
    mace_start, start = {}, 0
    for k in mace_order:
        mace_start[k] = start
        start += sizes[k]
    columns, flipped = [], 0
    for k, ins in enumerate(d.instructions):
        l1, l2, l3 = (ir.l for ir in d.path_irreps(ins))
        s = sign(l1, l2, l3)
        flipped += s < 0
        columns.append(s * w[:, mace_start[k] : mace_start[k] + sizes[k]])
    return torch.cat(columns, dim=1), flipped


def _skip_weights(skip, w: torch.Tensor, sign: Callable) -> torch.Tensor:
    """The element skip connection's weights with the ``l x 0 -> l`` phases of our convention."""
    w, start = w.clone(), 0
    for mul_in, ir_in in skip.irreps_in:
        for mul_out, ir_out in skip.irreps_out:
            if ir_in == ir_out:
                n = mul_in * skip.num_elements * mul_out
                w[start : start + n] *= sign(ir_in.l, 0, ir_out.l)
                start += n
    return w


def _product_weights(block, state: dict, prefix: str, sizes: list) -> dict:
    impl = block.product.impl
    coupling = tuple((ir.l, ir.p) for _, ir in impl.irreps_in)
    out = {}
    for o, (_, ir) in enumerate(impl.irreps_out):
        c = f"{prefix}symmetric_contractions.contractions.{o}."
        for nu in range(1, impl.correlation + 1):
            name = f"out{o}_nu{nu}"
            if name not in impl.weights:
                continue
            key = c + "weights_max" if nu == impl.correlation else c + f"weights.{impl.correlation - 1 - nu}"
            w_mace = state[key]
            a = torch.tensor(symmetric_contraction_map(state[c + f"U_matrix_{nu}"], coupling, (ir.l, ir.p), nu))
            out[f"{prefix}product.impl.weights.{name}"] = torch.einsum("kj,ejc->ekc", a.to(w_mace.dtype), w_mace)
            sizes.append((str(ir), nu, a.shape[1], a.shape[0]))
    return out


def _readout_weights(model, state: dict, head_index: int, num_heads: int) -> dict:
    """One head's readout weights (mace-torch's readouts output one scalar per head)."""
    out = {}
    # with use_last_readout_only mace-torch holds only the last readout: its readouts.0 is our last
    present = [t for t, readout in enumerate(model.readouts) if not isinstance(readout, NoReadout)]
    for mace_index, t in enumerate(present):
        readout, p, q = model.readouts[t], f"readouts.{mace_index}.", f"readouts.{t}."
        if hasattr(readout, "linear_1"):
            width = readout.linear_2.irreps_in.dim  # our per-head MLP width
            w1 = state[p + "linear_1.weight"].reshape(readout.linear_1.irreps_in.dim, num_heads * width)
            w2 = state[p + "linear_2.weight"].reshape(num_heads * width, num_heads)
            rows = slice(head_index * width, (head_index + 1) * width)
            out[q + "linear_1.weight"] = w1[:, rows].reshape(-1)
            # e3nn's Linear divides by sqrt(fan_in): mace's fan-in is num_heads * width, ours width
            out[q + "linear_2.weight"] = w2[rows, head_index] / math.sqrt(num_heads)
        else:
            w = state[p + "linear.weight"].reshape(-1, num_heads)
            out[q + "linear.weight"] = w[:, head_index]
    return out


def _pair_term_constants(model, state: dict) -> dict:
    """ZBL and distance-transform constants (buffers, or parameters when trained) of mace-torch."""
    names = {
        "pair_repulsion.": ("pair_repulsion_fn.", ("a_exp", "a_prefactor", "c")),
        "distance_transform.": ("radial_embedding.distance_transform.", ("q", "p", "a", "alpha")),
    }
    out = {}
    for ours_prefix, (mace_prefix, keys) in names.items():
        for key in keys:
            if ours_prefix + key in model.state_dict():
                out[ours_prefix + key] = state[mace_prefix + key]
    return out


def _interaction_weights(interaction, state: dict, p: str, sign: Callable) -> tuple[dict, int]:
    """A (density) ``RealAgnostic(Residual)InteractionBlock``'s weights, prefix ``p``; its flipped paths."""
    ours, flipped = _radial_mlp_weights(interaction, state, p, sign)
    ours.update({p + name: state[p + name] for name in ("linear_up.weight", "linear.weight")})
    ours[p + "skip.weight"] = _skip_weights(interaction.skip, state[p + "skip_tp.weight"], sign)
    if hasattr(interaction, "density_fn"):
        ours[p + "density_fn.weights.0"] = state[p + "density_fn.layer0.weight"]
    return ours, flipped


def _attention_interaction_weights(interaction, state: dict, p: str, sign: Callable) -> tuple[dict, int]:
    """A ``RealAgnosticAttResidualInteractionBlock``'s weights, prefix ``p``; its flipped paths."""
    ours, flipped = _radial_mlp_weights(interaction, state, p, sign)
    names = ("linear_up.weight", "linear_down.weight", "linear.weight")
    ours.update({p + name: state[p + name] for name in names})
    ours[p + "skip.weight"] = state[p + "skip_linear.weight"]
    return ours, flipped


def _radial_mlp_weights(interaction, state: dict, p: str, sign: Callable) -> tuple[dict, int]:
    """e3nn ``FullyConnectedNet`` ``conv_tp_weights`` as our ``RadialMLP``; its last layer in our
    path order and phases. Returns the weights and the number of sign-flipped paths."""
    layers = sorted(
        (k for k in state if k.startswith(p + "conv_tp_weights.layer")),
        key=lambda k: int(k[len(p + "conv_tp_weights.layer") :].split(".")[0]),
    )
    ours, flipped = {}, 0
    for i, key in enumerate(layers):
        w = state[key]
        if i == len(layers) - 1:
            w, flipped = _conv_weights(interaction, w, sign)
        ours[p + f"conv_tp_weights.weights.{i}"] = w
    return ours, flipped


def _nonlinear_interaction_weights(interaction, state: dict, p: str, sign: Callable) -> tuple[dict, int]:
    """A ``RealAgnosticResidualNonLinearInteractionBlock``'s weights, prefix ``p``, and its flipped paths.

    Same names as mace-torch's but the self-connection (``skip_tp`` there, a plain linear map);
    the radial MLP's output layer (``weight [weight_numel, hidden]``, ``bias [weight_numel]``)
    gets the convolution's path order and phases.
    """
    names = (
        "source_embedding.weight", "target_embedding.weight", "linear_up.weight", "linear_res.weight",
        "linear_1.weight", "linear_2.weight", "alpha", "beta",
    )  # fmt: skip
    ours = {p + name: state[p + name] for name in names}
    ours[p + "skip.weight"] = state[p + "skip_tp.weight"]
    for mlp in ("conv_tp_weights.net.", "density_fn.net."):
        ours.update({k: v for k, v in state.items() if k.startswith(p + mlp)})
    last = f"{p}conv_tp_weights.net.{len(interaction.conv_tp_weights.net) - 1}."
    w = torch.cat([state[last + "weight"].T, state[last + "bias"][None]])  # [hidden + 1, weight_numel]
    w, flipped = _conv_weights(interaction, w, sign)
    ours[last + "weight"], ours[last + "bias"] = w[:-1].T.contiguous(), w[-1].contiguous()
    return ours, flipped


#: how the weights of our non-default interaction blocks are read from mace-torch's
INTERACTION_PORTS = {
    NonLinearInteractionBlock: _nonlinear_interaction_weights,
    AttentionInteractionBlock: _attention_interaction_weights,
}


def port_state_dict(model, state: dict, sign: Callable, head_index: int = 0, num_heads: int = 1) -> dict:
    """Load mace-torch weights ``state`` into our ``model`` (built from :func:`mace_config`).

    ``sign(l1, l2, l3)`` is the phase of the ``wigner_3j`` blocks mace-torch used relative to ours.
    Returns a report: sign-flipped conv paths and the symmetric-contraction sizes ``(K_mace, K_ours)``.
    """
    ours = {"node_embedding.weight": state["node_embedding.linear.weight"]}
    flipped, sizes = 0, []
    for t, interaction in enumerate(model.interactions):
        port = INTERACTION_PORTS.get(type(interaction), _interaction_weights)
        weights, n = port(interaction, state, f"interactions.{t}.", sign)
        ours.update(weights)
        flipped += n
    for t, block in enumerate(model.products):
        p = f"products.{t}."
        ours[p + "linear.weight"] = state[p + "linear.weight"]
        ours.update(_product_weights(block, state, p, sizes))
    ours.update(_readout_weights(model, state, head_index, num_heads))
    ours.update(_pair_term_constants(model, state))
    constants = {k for k in model.state_dict() if k.startswith(("pair_repulsion.", "distance_transform."))}
    missing = ({name for name, _ in model.named_parameters()} | constants) - set(ours)
    if missing:
        raise ValueError(f"mace-torch state_dict has no weights for {sorted(missing)}")
    reference = model.state_dict()
    for key, value in ours.items():
        if value.shape != reference[key].shape:
            raise ValueError(f"{key}: mace-torch weight of shape {tuple(value.shape)}, ours {tuple(reference[key].shape)}")
    model.load_state_dict({k: v.to(reference[k].dtype) for k, v in ours.items()}, strict=False)
    return {"flipped_conv_paths": flipped, "product_basis_sizes": sizes}


def wigner_3j_sign_from_tables(w3j_mace: dict) -> Callable:
    """``sign(l1, l2, l3)`` from another environment's ``wigner_3j`` tables ``{"l1,l2,l3": block}``."""

    def sign(l1: int, l2: int, l3: int) -> float:
        theirs = np.asarray(w3j_mace[f"{l1},{l2},{l3}"], dtype=np.float64)
        overlap = float((theirs * so3.wigner_3j(l1, l2, l3)).sum())
        if abs(abs(overlap) - 1) > 1e-9:
            raise ValueError(f"wigner_3j({l1},{l2},{l3}) differs by more than a sign (overlap {overlap})")
        return math.copysign(1.0, overlap)

    return sign
