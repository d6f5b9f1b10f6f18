"""Plain-data description of a tensor product: irreps, paths and their normalisation.

A :class:`TensorProductDescriptor` is built once from the user's arguments and handed to a
backend, which decides how to execute it. It holds no tensors. Normalisation follows
``e3nn.o3.TensorProduct`` exactly, so that the same flat weights give the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..irreps import Irreps, as_irreps

#: connection modes and the shape of each path's weight block, given (mul1, mul2, mul_out).
WEIGHT_SHAPES = {
    "uvw": lambda m1, m2, mo: (m1, m2, mo),
    "uvu": lambda m1, m2, mo: (m1, m2),
    "uvv": lambda m1, m2, mo: (m1, m2),
    "uuw": lambda m1, m2, mo: (m1, mo),
    "uuu": lambda m1, m2, mo: (m1,),
}

#: number of (u, v) products summed into one output channel, for "element" path normalisation.
_FAN_IN = {
    "uvw": lambda m1, m2: m1 * m2,
    "uvu": lambda m1, m2: m2,
    "uvv": lambda m1, m2: m1,
    "uuw": lambda m1, m2: m1,
    "uuu": lambda m1, m2: 1,
}

IRREP_NORMALIZATIONS = ("component", "norm", "none")
PATH_NORMALIZATIONS = ("element", "path", "none")


@dataclass(frozen=True)
class Instruction:
    """One path ``irreps_in1[i_in1] ⊗ irreps_in2[i_in2] -> irreps_out[i_out]``.

    ``coefficient`` is the final scalar multiplying ``wigner_3j`` (e3nn's normalised
    ``path_weight``); ``weight_shape`` is ``()`` when the path has no weight.
    """

    i_in1: int
    i_in2: int
    i_out: int
    mode: str
    has_weight: bool
    path_weight: float
    coefficient: float
    weight_shape: tuple[int, ...]

    @property
    def weight_numel(self) -> int:
        return math.prod(self.weight_shape) if self.has_weight else 0


@dataclass(frozen=True)
class TensorProductDescriptor:
    """Everything a backend needs to realise a tensor product (no tensors, hashable)."""

    irreps_in1: Irreps
    irreps_in2: Irreps
    irreps_out: Irreps
    instructions: tuple[Instruction, ...]
    irrep_normalization: str
    path_normalization: str

    @property
    def weight_numel(self) -> int:
        """Number of weights in e3nn's flat layout (instruction order, each block row-major)."""
        return sum(ins.weight_numel for ins in self.instructions)

    def weight_slices(self) -> list[slice | None]:
        """Slice of each instruction's weights in the flat weight vector (``None`` if unweighted)."""
        slices, start = [], 0
        for ins in self.instructions:
            if ins.has_weight:
                slices.append(slice(start, start + ins.weight_numel))
                start += ins.weight_numel
            else:
                slices.append(None)
        return slices

    def path_irreps(self, ins: Instruction):
        """``(ir_in1, ir_in2, ir_out)`` of an instruction."""
        return self.irreps_in1[ins.i_in1].ir, self.irreps_in2[ins.i_in2].ir, self.irreps_out[ins.i_out].ir


def full_instructions(irreps_in1, irreps_in2, irreps_out, mode: str) -> list[tuple]:
    """Every parity- and triangle-allowed path for ``mode``, each with a weight.

    For ``uvu``/``uuu`` the output multiplicity must equal ``mul1`` (``uvv``: ``mul2``;
    ``uuu``/``uuw``: ``mul1 == mul2``); blocks that do not fit the mode are left out.
    """
    if mode not in WEIGHT_SHAPES:
        raise ValueError(f"unknown connection mode {mode!r}; expected one of {sorted(WEIGHT_SHAPES)}")
    irreps_in1, irreps_in2, irreps_out = map(as_irreps, (irreps_in1, irreps_in2, irreps_out))
    instructions = []
    for i1, (m1, ir1) in enumerate(irreps_in1):
        for i2, (m2, ir2) in enumerate(irreps_in2):
            for io, (mo, iro) in enumerate(irreps_out):
                if iro not in ir1 * ir2 or not _multiplicities_fit(mode, m1, m2, mo):
                    continue
                instructions.append((i1, i2, io, mode, True))
    return instructions


def _multiplicities_fit(mode: str, m1: int, m2: int, mo: int) -> bool:
    return {
        "uvw": True,
        "uvu": mo == m1,
        "uvv": mo == m2,
        "uuw": m1 == m2,
        "uuu": m1 == m2 == mo,
    }[mode]


def build_descriptor(
    irreps_in1,
    irreps_in2,
    irreps_out,
    instructions,
    irrep_normalization: str = "component",
    path_normalization: str = "element",
) -> TensorProductDescriptor:
    """Validate user instructions and compute e3nn's normalisation coefficients.

    Args:
        instructions: tuples ``(i_in1, i_in2, i_out, mode, has_weight[, path_weight])``.

    Raises:
        ValueError: for bad indices, unknown modes, multiplicities that do not fit the mode,
            or paths that break parity or the triangle rule.
    """
    irreps_in1, irreps_in2, irreps_out = map(as_irreps, (irreps_in1, irreps_in2, irreps_out))
    if irrep_normalization not in IRREP_NORMALIZATIONS:
        raise ValueError(
            f"irrep_normalization={irrep_normalization!r}; expected one of {IRREP_NORMALIZATIONS}"
        )
    if path_normalization not in PATH_NORMALIZATIONS:
        raise ValueError(f"path_normalization={path_normalization!r}; expected one of {PATH_NORMALIZATIONS}")

    raw = [
        _check_instruction(k, ins, irreps_in1, irreps_in2, irreps_out) for k, ins in enumerate(instructions)
    ]

    def fan_in(ins):
        return _FAN_IN[ins[3]](irreps_in1[ins[0]].mul, irreps_in2[ins[1]].mul)

    built = []
    for ins in raw:
        i1, i2, io, mode, has_weight, path_weight = ins
        ir_out = irreps_out[io].ir
        alpha = {"component": ir_out.dim, "norm": irreps_in1[i1].ir.dim * irreps_in2[i2].ir.dim, "none": 1}[
            irrep_normalization
        ]
        siblings = [other for other in raw if other[2] == io]
        if path_normalization == "element":
            fan = sum(fan_in(other) for other in siblings)
        elif path_normalization == "path":
            fan = fan_in(ins) * len(siblings)
        else:
            fan = 1
        if fan > 0:
            alpha /= fan
        alpha *= path_weight
        shape = (
            WEIGHT_SHAPES[mode](irreps_in1[i1].mul, irreps_in2[i2].mul, irreps_out[io].mul)
            if has_weight
            else ()
        )
        built.append(Instruction(i1, i2, io, mode, has_weight, path_weight, math.sqrt(alpha), shape))
    return TensorProductDescriptor(
        irreps_in1, irreps_in2, irreps_out, tuple(built), irrep_normalization, path_normalization
    )


def _check_instruction(k, ins, irreps_in1, irreps_in2, irreps_out):
    if not isinstance(ins, (tuple, list)) or len(ins) not in (5, 6):
        raise ValueError(
            f"instruction {k} = {ins!r}: expected (i_in1, i_in2, i_out, mode, has_weight[, path_weight])"
        )
    i1, i2, io, mode, has_weight = ins[:5]
    path_weight = float(ins[5]) if len(ins) == 6 else 1.0
    for name, index, irreps in (
        ("i_in1", i1, irreps_in1),
        ("i_in2", i2, irreps_in2),
        ("i_out", io, irreps_out),
    ):
        if not isinstance(index, int) or not 0 <= index < len(irreps):
            raise ValueError(
                f"instruction {k}: {name}={index!r} is out of range for irreps {irreps} ({len(irreps)} blocks)"
            )
    if mode not in WEIGHT_SHAPES:
        raise ValueError(
            f"instruction {k}: unknown connection mode {mode!r}; expected one of {sorted(WEIGHT_SHAPES)}"
        )
    (m1, ir1), (m2, ir2), (mo, iro) = irreps_in1[i1], irreps_in2[i2], irreps_out[io]
    if ir1.p * ir2.p != iro.p:
        raise ValueError(
            f"instruction {k}: {ir1} x {ir2} -> {iro} violates parity ({ir1.p} * {ir2.p} != {iro.p}); "
            f"allowed outputs are {list(ir1 * ir2)}"
        )
    if not abs(ir1.l - ir2.l) <= iro.l <= ir1.l + ir2.l:
        raise ValueError(
            f"instruction {k}: {ir1} x {ir2} -> {iro} violates the triangle rule |l1-l2| <= l3 <= l1+l2; "
            f"allowed outputs are {list(ir1 * ir2)}"
        )
    if not _multiplicities_fit(mode, m1, m2, mo):
        raise ValueError(
            f"instruction {k}: mode {mode!r} cannot connect multiplicities {m1} x {m2} -> {mo} "
            "(uvu needs mul_out == mul1, uvv mul_out == mul2, uuw mul1 == mul2, uuu all equal)"
        )
    if mode in ("uvw", "uuw") and not has_weight:
        raise ValueError(
            f"instruction {k}: mode {mode!r} needs a weight (it mixes channels); set has_weight=True"
        )
    return (i1, i2, io, mode, bool(has_weight), path_weight)
