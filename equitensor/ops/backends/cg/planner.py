"""The one place where the ``cg`` backend chooses how a product runs: :func:`plan`."""

from __future__ import annotations

import functools

import torch

from ...descriptor import Instruction, TensorProductDescriptor
from .channelwise import ChannelwisePaths, channelwise_eligible
from .dense import BilinearMatrix
from .executor import Executor, PathSplit
from .grouped import GroupedPaths
from .naive import NaivePaths
from .sparse import SparseTerms

METHODS = ("auto", "channelwise", "sparse", "grouped", "dense", "naive")

#: methods that run numba kernels, on the CPU only (asked for off the CPU, they raise).
CPU_ONLY_METHODS = ("channelwise", "sparse")

#: ``auto`` runs a shared-weight product as one GEMM (``dense``) when its bilinear matrix has at
#: most this many entries (``dim1 * dim2 * dim_out``; 2^22 floats = 16 MB in float32).
DENSE_MAX_ENTRIES = 2**22

#: ``auto`` sends a path to the sparse kernel when its channel combinations (u*v for uvu/uvv,
#: u for uuu, u*v*w for uvw, u*w for uuw) are at most this many; beyond it matrix products win.
SPARSE_MAX_CHANNEL_COMBOS = 512


def plan(
    descriptor: TensorProductDescriptor,
    method: str = "auto",
    device: torch.device | str = "cpu",
    shared_weights: bool = False,
) -> Executor:
    """The executor that runs ``descriptor`` by ``method`` for inputs on ``device``.

    ``shared_weights``: the weights are one set for the batch (or absent) rather than one row per
    sample. The executor's ``method`` names what runs (:func:`choose_method`). Executors hold
    only constants and are cached per (descriptor, method), so equal products share one.
    """
    return _build(descriptor, choose_method(descriptor, method, device, shared_weights))


def choose_method(
    descriptor: TensorProductDescriptor, method: str, device: torch.device | str, shared_weights: bool
) -> str:
    """The concrete method that runs ``method`` (see the package docstring), or ``ValueError``.

    ``auto``: ``dense`` for shared (or no) weights when ``M`` has at most
    :data:`DENSE_MAX_ENTRIES` entries; otherwise on the CPU ``channelwise`` when every
    instruction fits it, else ``sparse`` for the paths with at most
    :data:`SPARSE_MAX_CHANNEL_COMBOS` channel combinations and ``grouped`` for the rest
    (``sparse+grouped`` when both occur); off the CPU (CUDA, meta, ...) the pure-torch
    ``grouped``. A method asked for explicitly is never replaced: where it cannot run, it raises
    (``dense`` called with per-sample weights raises then).
    """
    check_method(descriptor, method)
    reason = refusal(method, device)
    if reason is not None:
        raise ValueError(reason)
    if method != "auto":
        return method
    d = descriptor
    entries = d.irreps_in1.dim * d.irreps_in2.dim * d.irreps_out.dim
    if shared_weights and d.instructions and entries <= DENSE_MAX_ENTRIES:
        return "dense"
    if torch.device(device).type != "cpu":
        return "grouped"
    if channelwise_eligible(d):
        return "channelwise"
    few = [_channel_combos(d, ins) <= SPARSE_MAX_CHANNEL_COMBOS for ins in d.instructions]
    if not any(few):
        return "grouped"
    return "sparse" if all(few) else "sparse+grouped"


def check_method(descriptor: TensorProductDescriptor, method: str) -> None:
    """Raise ``ValueError`` unless ``method`` is one of :data:`METHODS` and fits the product."""
    if method not in METHODS:
        raise ValueError(f"cg backend: unknown method {method!r}; expected one of {METHODS}")
    if method == "channelwise" and not channelwise_eligible(descriptor):
        raise ValueError(
            "cg backend: method='channelwise' needs every instruction in mode 'uvu' with a "
            "multiplicity-1 second input (MACE's convolution); use method='auto'"
        )


def refusal(method: str, device: torch.device | str) -> str | None:
    """Why ``method`` cannot run for inputs on ``device``; ``None`` if it can."""
    device_type = torch.device(device).type
    if method in CPU_ONLY_METHODS and device_type != "cpu":
        return (
            f"cg backend: method={method!r} runs numba kernels on the CPU only, and the inputs "
            f"are on {device_type!r}; use method='auto' (pure-torch 'grouped' there) or 'grouped'"
        )
    return None


@functools.lru_cache(maxsize=64)
def _build(descriptor: TensorProductDescriptor, method: str) -> Executor:
    """The executor of a concrete method, over every instruction."""
    everything = range(len(descriptor.instructions))
    if method == "sparse+grouped":
        few = [k for k in everything if _channel_combos(descriptor, descriptor.instructions[k]) <= SPARSE_MAX_CHANNEL_COMBOS]
        rest = [k for k in everything if k not in few]
        return PathSplit([SparseTerms(descriptor, few), GroupedPaths(descriptor, rest)])
    if method == "channelwise":
        return ChannelwisePaths(descriptor)
    if method == "naive":
        return NaivePaths(descriptor)
    executor = {"sparse": SparseTerms, "grouped": GroupedPaths, "dense": BilinearMatrix}[method]
    return executor(descriptor, list(everything))


def _channel_combos(d: TensorProductDescriptor, ins: Instruction) -> int:
    """Channel combinations of a path: the terms per nonzero CG entry."""
    m1, m2, mo = d.irreps_in1[ins.i_in1].mul, d.irreps_in2[ins.i_in2].mul, d.irreps_out[ins.i_out].mul
    return {"uvw": m1 * m2 * mo, "uvu": m1 * m2, "uvv": m1 * m2, "uuw": m1 * mo, "uuu": m1}[ins.mode]
