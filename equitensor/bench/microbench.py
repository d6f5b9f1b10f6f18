"""Tensor-product microbenchmark: runtime vs degree L for any registered backends.

Settings (after Xie et al., "The Price of Freedom", ICML 2025, plus two MACE workloads), all
with natural-parity irreps ``0e, 1o, 2e, 3o, ...``:

* ``siso``  one irrep L in each input, L out (its parity is the product's, so for odd L the
  output is the pseudotensor ``Le``, the only parity-allowed choice); multiplicity 1.
* ``simo``  one irrep L in each input, every natural-parity irrep up to 2L out; multiplicity 1.
* ``mimo``  every degree up to L in both inputs, up to 2L out; multiplicity 1.
* ``mace``  MACE's convolution ``Cx0e+Cx1o ⊗ 0e+1o+2e+3o -> Cx(0e+1o+2e+3o)``, ``uvu``, one
  output block per path, per-edge weights (C = ``--channels``, 128 by default).
* ``selfprod``  channel-wise self-product ``Cx(0e+1o+2e+3o) ⊗ itself -> itself``, ``uuu``,
  shared weights, ``batch // 2`` nodes.

Single-irrep settings use mode ``uvu`` with shared weights (with multiplicity 1 every mode is
the same map). Batch is ``--batch`` samples (edges for ``mace``).

Method: every backend is built for every setting (a backend that raises ``ValueError`` is
skipped and the reason recorded); before timing, each backend is run on the same inputs as the
reference ``cg`` and, when it realises the same function (same paths and weight count), the
max abs difference is reported. Then two warm-up calls and ``--repeats`` timed calls; the CSV
keeps median and min. ``fwd`` runs under ``torch.no_grad``; ``fwdbwd`` is forward plus the
gradients w.r.t. x1, x2 and the weights for a fixed random output gradient.

Useful flops (the same count for every backend, so GFLOP/s compare work, not implementations):
``fwd = 2 * batch * sum_paths nnz(CG[l1, l2, l3]) * channel_combinations(path)`` where
channel combinations are ``u*v*w`` (uvw), ``u*v`` (uvu, uvv), ``u*w`` (uuw), ``u`` (uuu): one
multiply-add per nonzero CG entry per channel combination. ``fwdbwd = 4 * fwd`` (the three
input gradients are contractions of the same size as the forward). The run also times a
float32 ``N x N`` matmul (``2 N^3`` flops) and reports each GFLOP/s as a fraction of it.

Memory: a setting is skipped (with the reason printed) when its estimate exceeds
``--max-memory-gb``: ``batch * itemsize * (4 * (dim1 + dim2 + dim_out + weights per sample)
+ sum_paths channel_combinations * (2 l_out + 1))``, i.e. inputs, output and their gradients
plus the per-path outer products an einsum implementation materialises.

Threads: ``torch.set_num_threads(--threads)`` (default: torch's current value); numba kernels
follow it.

Device: ``--device cuda`` (or ``cuda:N``) runs every product on that GPU: inputs and tables
live there, each timed call sits between two ``torch.cuda.synchronize``, warm-up calls are not
timed, and ``peak_mb`` is ``torch.cuda.max_memory_allocated`` over the timed calls of a pass.
The default batch (``--batch``) and memory cap (``--max-memory-gb``) grow to fill the device.
``--backends all`` times every backend in the registry
(:func:`~equitensor.ops.backends.available_backends`), so a backend registered later (``cueq``,
a third-party entry point) is picked up; a name that is not registered is recorded as skipped.

Contract (``equitensor bench tp ...`` and ``benchmarks/microbench.py`` call it): ``main(argv)
-> int`` with argv as on the command line; writes ``microbench_<setting>.csv`` and ``.png``
(``microbench_<setting>_cuda.*`` on a GPU; both name the device inside) to ``--out`` (default:
the current directory) and returns 0.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..irreps import natural_irrep, natural_irreps
from ..models.io import DTYPES
from .device import (
    cpu_model,
    device_name,
    peak_memory_mb,
    reset_peak_memory,
    resolve_device,
    synchronize,
    time_call,
)
from .output import save_figure, write_csv

SETTINGS = ("siso", "simo", "mimo", "mace", "selfprod")
#: samples per call (edges for ``mace``) when ``--batch`` is not given: 10^4 keeps a CPU run
#: short; 2 * 10^5 edges is an OC20 batch of ~32 slabs and keeps a GPU busy
DEFAULT_BATCH = {"cpu": 10_000, "cuda": 200_000}
#: ``--max-memory-gb`` default on the CPU; on a GPU it is this fraction of the device's memory
CPU_MEMORY_CAP_GB, GPU_MEMORY_FRACTION = 8.0, 0.8
PASSES = ("fwd", "fwdbwd")

CSV_FIELDS = [
    "setting", "L", "backend", "dtype", "pass", "batch", "threads", "irreps_in1", "irreps_in2", "irreps_out",
    "mode", "paths", "weight_numel", "median_ms", "min_ms", "repeats", "useful_gflop", "gflops",
    "fraction_of_matmul", "max_abs_diff_vs_cg", "peak_mb", "device", "status", "reason",
]  # fmt: skip


@dataclass
class Case:
    """One tensor product to time: the arguments of ``TensorProduct`` plus batch size."""

    setting: str
    L: int
    irreps_in1: str
    irreps_in2: str
    irreps_out: str
    batch: int
    mode: str = "uvu"
    instructions: list | None = None
    shared_weights: bool = True
    extra: dict = field(default_factory=dict)

    def build(self, backend: str, dtype: torch.dtype):
        """``backend`` is a registered name or a spec with options, e.g. ``gaunt_fft[method=fft]``."""
        from equitensor.ops import TensorProduct

        name, options = parse_backend_spec(backend)
        kwargs = dict(shared_weights=self.shared_weights, internal_weights=False, backend=name, **options)
        if self.instructions is None:
            tp = TensorProduct(self.irreps_in1, self.irreps_in2, self.irreps_out, mode=self.mode, **kwargs)
        else:
            tp = TensorProduct(self.irreps_in1, self.irreps_in2, self.irreps_out, self.instructions, **kwargs)
        return tp.to(dtype)


def natural(l: int) -> str:
    """Natural-parity irrep of degree ``l``: ``0e, 1o, 2e, 3o, ...``."""
    return str(natural_irrep(l))


def up_to(lmax: int, mul: int = 1) -> str:
    """``mul x`` every natural-parity irrep of degree ``0..lmax``."""
    return str(natural_irreps(lmax, mul))


def make_case(setting: str, L: int, batch: int, channels: int) -> Case:
    """The tensor product of ``setting`` at degree ``L`` (``mace``/``selfprod`` ignore L)."""
    if setting == "siso":
        out = f"{L}e"  # the product of two degree-L natural irreps is even
        return Case(setting, L, natural(L), natural(L), out, batch)
    if setting == "simo":
        return Case(setting, L, natural(L), natural(L), up_to(2 * L), batch)
    if setting == "mimo":
        return Case(setting, L, up_to(L), up_to(L), up_to(2 * L), batch)
    if setting == "mace":
        from equitensor.ops import channelwise_instructions

        in1 = f"{channels}x0e+{channels}x1o"
        out, instructions = channelwise_instructions(in1, up_to(3), up_to(3, channels))
        return Case(
            setting, 3, in1, up_to(3), str(out), batch, instructions=instructions, shared_weights=False
        )
    if setting == "selfprod":
        irreps = up_to(3, channels)
        return Case(setting, 3, irreps, irreps, irreps, max(1, batch // 2), mode="uuu")
    raise ValueError(f"unknown setting {setting!r}; expected one of {SETTINGS}")


# --------------------------------------------------------------------------------------------
# cost models


def _combos(mode: str, m1: int, m2: int, mo: int) -> int:
    return {"uvw": m1 * m2 * mo, "uvu": m1 * m2, "uvv": m1 * m2, "uuw": m1 * mo, "uuu": m1}[mode]


def useful_flops(descriptor, batch: int) -> float:
    """Forward useful flops: 2 * batch * sum_paths nnz(CG) * channel combinations."""
    from equitensor import so3

    total = 0
    for ins in descriptor.instructions:
        (m1, ir1), (m2, ir2), (mo, iro) = (
            descriptor.irreps_in1[ins.i_in1], descriptor.irreps_in2[ins.i_in2], descriptor.irreps_out[ins.i_out],
        )  # fmt: skip
        nnz = int((np.abs(so3.wigner_3j(ir1.l, ir2.l, iro.l)) > 1e-12).sum())
        total += nnz * _combos(ins.mode, m1, m2, mo)
    return 2.0 * batch * total


def memory_estimate_bytes(descriptor, batch: int, itemsize: int, weight_per_sample: int) -> float:
    """Inputs, output and gradients, plus the per-path outer products of an einsum implementation."""
    d = descriptor
    dims = d.irreps_in1.dim + d.irreps_in2.dim + d.irreps_out.dim + weight_per_sample
    intermediates = sum(
        _combos(
            ins.mode, d.irreps_in1[ins.i_in1].mul, d.irreps_in2[ins.i_in2].mul, d.irreps_out[ins.i_out].mul
        )
        * d.irreps_out[ins.i_out].ir.dim
        for ins in d.instructions
    )
    return batch * itemsize * (4 * dims + intermediates)


def matmul_gflops(n: int = 2048, repeats: int = 5, device: torch.device | None = None) -> float:
    """Achieved GFLOP/s of a float32 ``n x n`` matmul on ``device`` (median of ``repeats``)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    times = time_call(lambda: torch.mm(a, b), repeats, warmup=1, device=device)
    return 2 * n**3 / statistics.median(times) / 1e9


# --------------------------------------------------------------------------------------------
# timing


def _inputs(tp, batch: int, dtype: torch.dtype, seed: int = 0, device: torch.device | None = None):
    """Random ``x1, x2, weight, grad_out`` (drawn on the CPU, so every device sees the same numbers)."""
    generator = torch.Generator().manual_seed(seed)
    x1 = torch.randn(batch, tp.irreps_in1.dim, generator=generator, dtype=dtype)
    x2 = torch.randn(batch, tp.irreps_in2.dim, generator=generator, dtype=dtype)
    shape = (tp.weight_numel,) if tp.shared_weights else (batch, tp.weight_numel)
    w = torch.randn(shape, generator=generator, dtype=dtype) if tp.weight_numel else None
    grad_out = torch.randn(batch, tp.irreps_out.dim, generator=generator, dtype=dtype)
    return tuple(None if t is None else t.to(device) for t in (x1, x2, w, grad_out))


def _runner(tp, x1, x2, w, grad_out, pass_name: str):
    if pass_name == "fwd":

        def forward():
            with torch.no_grad():
                tp(x1, x2, w)

        return forward
    leaves = [t.detach().requires_grad_() for t in (x1, x2)] + (
        [w.detach().requires_grad_()] if w is not None else []
    )

    def forward_backward():
        out = tp(leaves[0], leaves[1], leaves[2] if w is not None else None)
        torch.autograd.grad(out, leaves, grad_out)

    return forward_backward


# --------------------------------------------------------------------------------------------
# command line


def parse_backend_spec(spec: str) -> tuple[str, dict]:
    """``"gaunt_fft[method=fft,resolution=...]"`` -> ``("gaunt_fft", {"method": "fft"})``.

    Values that parse as integers become ints; everything else stays a string.
    """
    spec = spec.strip()
    if "[" not in spec:
        return spec, {}
    if not spec.endswith("]"):
        raise ValueError(f"backend spec {spec!r}: expected NAME[key=value,...]")
    name, body = spec[:-1].split("[", 1)
    options = {}
    for item in filter(None, (part.strip() for part in body.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"backend spec {spec!r}: option {item!r} is not key=value")
        value = value.strip()
        options[key.strip()] = int(value) if value.lstrip("-").isdigit() else value
    return name.strip(), options


def split_backends(text: str) -> list[str]:
    """Split ``--backends`` on the commas outside brackets: ``"cg,gaunt_fft[method=fft]"``."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


def parse_int_list(text: str) -> list[int]:
    """``"1-6"``, ``"1..6"``, ``"1,2,5"`` or mixtures -> sorted unique ints."""
    values: set[int] = set()
    for part in text.split(","):
        part = part.strip().replace("..", "-")
        if "-" in part:
            lo, hi = (int(p) for p in part.split("-"))
            values.update(range(lo, hi + 1))
        elif part:
            values.add(int(part))
    return sorted(values)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="equitensor bench tp",
        description="Tensor-product runtime vs L per backend; writes microbench_<setting>.csv/.png.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--backends", default="cg,e3nn",
        help="comma-separated registered backend names, each optionally with options: gaunt_fft[method=fft]; "
        "'all' = every registered backend (may be combined: all,gaunt_fft[method=fft])",
    )  # fmt: skip
    parser.add_argument(
        "--settings", default="mace,selfprod,mimo", help=f"comma-separated, from {','.join(SETTINGS)}"
    )
    parser.add_argument("--L", default="1-6", help="degrees for siso/simo/mimo: '1-6', '1..10', '1,3,5'")
    parser.add_argument("--dtype", default="float32", help="comma-separated: float32,float64")
    parser.add_argument("--pass", dest="passes", default="fwd,fwdbwd", help="comma-separated: fwd,fwdbwd")
    parser.add_argument(
        "--repeats", type=int, default=10, help="timed calls per measurement (median reported)"
    )
    parser.add_argument(
        "--batch", type=int, default=None,
        help=f"samples per call (edges for mace); default {DEFAULT_BATCH['cpu']} on cpu, {DEFAULT_BATCH['cuda']} on cuda",
    )  # fmt: skip
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--channels", type=int, default=128, help="multiplicity of the mace/selfprod settings"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: unchanged)"
    )
    parser.add_argument(
        "--max-memory-gb", type=float, default=None,
        help=f"skip cases estimated above this; default {CPU_MEMORY_CAP_GB} on cpu, "
        f"{GPU_MEMORY_FRACTION * 100:.0f}%% of the device memory on cuda",
    )  # fmt: skip
    parser.add_argument(
        "--max-call-seconds", type=float, default=10.0,
        help="skip larger L of a backend/setting once one warm-up call takes longer than this",
    )  # fmt: skip
    parser.add_argument(
        "--quick", action="store_true", help="tiny CI smoke run (batch 64, L 1-2, 8 channels, 2 repeats)"
    )
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG files")
    parser.add_argument("--out", default=".", help="directory for CSV and PNG")
    return parser


def machine_info(device: torch.device | None = None) -> dict[str, str]:
    import e3nn

    device = device or torch.device("cpu")
    return {
        "device": device_name(device),
        "cpu": cpu_model(),
        "threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "e3nn": e3nn.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    device = resolve_device(args.device)
    _apply_device_defaults(args, device)
    if args.quick:
        args.batch, args.channels, args.repeats = (
            min(args.batch, 64),
            min(args.channels, 8),
            min(args.repeats, 2),
        )
        args.L = "1-2"
    if args.threads:
        torch.set_num_threads(args.threads)
    backends = backend_list(args.backends)
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    dtypes = [d.strip() for d in args.dtype.split(",") if d.strip()]
    passes = [p.strip() for p in args.passes.split(",") if p.strip()]
    for name, values, allowed in (
        ("setting", settings, SETTINGS),
        ("dtype", dtypes, DTYPES),
        ("pass", passes, PASSES),
    ):
        unknown = [v for v in values if v not in allowed]
        if unknown:
            raise SystemExit(f"unknown {name} {unknown}; expected from {list(allowed)}")
    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1 (10 or more for published numbers)")
    degrees = parse_int_list(args.L)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    info = machine_info(device)
    matmul = matmul_gflops(1024 if args.quick else 2048, device=device)
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    print(f"float32 matmul: {matmul:.1f} GFLOP/s (reference for the 'frac' column)")

    all_rows = []
    for setting in settings:
        cases = [
            make_case(setting, L, args.batch, args.channels)
            for L in (degrees if setting in ("siso", "simo", "mimo") else [3])
        ]
        rows = []
        too_slow: set[tuple] = set()
        stem = f"microbench_{setting}" + ("" if device.type == "cpu" else f"_{device.type}")
        for case in cases:
            for dtype_name in dtypes:
                new = _run_case(case, backends, dtype_name, passes, args, matmul, too_slow, device)
                rows.extend(dict(row, device=info["device"]) for row in new)
                # after every case: a cut-off run keeps its rows
                write_csv(out_dir / f"{stem}.csv", rows, CSV_FIELDS, restval="", extrasaction="ignore")
        if not args.no_plot:
            _plot(out_dir / f"{stem}.png", rows, setting, info)
        all_rows.extend(rows)
    _print_table(all_rows)
    return 0


def _apply_device_defaults(args, device: torch.device) -> None:
    """Fill ``--batch`` and ``--max-memory-gb`` for the device when they were not given."""
    if args.batch is None:
        args.batch = DEFAULT_BATCH[device.type]
    if args.max_memory_gb is None:
        if device.type == "cuda":
            args.max_memory_gb = (
                GPU_MEMORY_FRACTION * torch.cuda.get_device_properties(device).total_memory / 1e9
            )
        else:
            args.max_memory_gb = CPU_MEMORY_CAP_GB


def backend_list(text: str) -> list[str]:
    """``--backends``: names or specs (:func:`split_backends`); ``all`` stands for every registered
    backend (``all,gaunt_fft[method=fft]`` adds a variant to them). Duplicates are dropped."""
    from equitensor.ops.backends import available_backends

    names = []
    for item in split_backends(text):
        names.extend(available_backends() if item == "all" else [item])
    return list(dict.fromkeys(names))


def _run_case(case: Case, backends, dtype_name, passes, args, matmul, too_slow, device) -> list[dict]:
    """Rows of one case (setting, L, dtype) for every backend: timed, or skipped with the reason."""
    from equitensor.ops.backends import available_backends

    dtype = DTYPES[dtype_name]
    common = {
        "setting": case.setting, "L": case.L, "dtype": dtype_name, "batch": case.batch,
        "threads": torch.get_num_threads(), "irreps_in1": case.irreps_in1, "irreps_in2": case.irreps_in2,
        "irreps_out": case.irreps_out, "mode": case.mode, "repeats": args.repeats,
    }  # fmt: skip
    registered = available_backends()
    reference = case.build("cg", dtype).to(device)
    inputs = _inputs(reference, case.batch, dtype, device=device)
    try:
        with torch.no_grad():
            expected = reference(*inputs[:3]) if case.batch else None
    except torch.OutOfMemoryError:  # the other backends may still fit; they are timed without a diff
        expected = None
        _release_device_memory(device)
    run = dict(case=case, dtype=dtype, passes=passes, args=args, device=device, reference=reference,
               inputs=inputs, expected=expected, flops=useful_flops(reference.descriptor, case.batch),
               matmul=matmul)  # fmt: skip
    rows = []
    for backend in backends:
        base = dict(common, backend=backend)
        reason = None
        if parse_backend_spec(backend)[0] not in registered:
            reason = f"backend {backend!r} is not registered here (registered: {', '.join(registered)})"
        elif (case.setting, backend, dtype_name) in too_slow:
            reason = f"a smaller L already took over {args.max_call_seconds} s per call"
        else:
            try:
                timed, first_call = _time_backend(backend, base, run)
                rows += timed
                if first_call > args.max_call_seconds:
                    too_slow.add((case.setting, backend, dtype_name))
                continue
            except _Skip as skip:
                reason = str(skip)
            except torch.OutOfMemoryError as error:
                _release_device_memory(device)
                reason = f"out of device memory: {str(error).splitlines()[0]}"
        print(f"  skip {case.setting} L={case.L} {backend} {dtype_name}: {reason}")
        rows += [dict(base, **{"pass": p, "status": "skipped", "reason": reason}) for p in passes]
    return rows


class _Skip(Exception):
    """A backend cannot run a case; the message is the recorded reason."""


def _release_device_memory(device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _time_backend(backend: str, base: dict, run: dict) -> tuple[list[dict], float]:
    """Timed rows of one backend (one per pass) and the seconds of its first call.

    Raises:
        _Skip: the backend rejects the setting or its memory estimate is over the cap.
    """
    case, dtype, device, args, reference = (
        run["case"],
        run["dtype"],
        run["device"],
        run["args"],
        run["reference"],
    )
    x1, x2, w, grad_out = run["inputs"]
    try:
        tp = reference if backend == "cg" else case.build(backend, dtype).to(device)
    except (ValueError, TypeError) as error:  # TypeError: an option the backend does not take
        raise _Skip(f"backend rejects this setting: {error}") from None
    weight_per_sample = 0 if tp.shared_weights else tp.weight_numel
    estimate = memory_estimate_bytes(tp.descriptor, case.batch, x1.element_size(), weight_per_sample)
    if estimate > args.max_memory_gb * 1e9:
        raise _Skip(f"estimated memory {estimate / 1e9:.1f} GB > {args.max_memory_gb:.1f} GB")
    same_function = tp.weight_numel == reference.weight_numel and tuple(tp.paths) == tuple(reference.paths)
    bx1, bx2, bw, bgrad = run["inputs"] if same_function else _inputs(tp, case.batch, dtype, device=device)
    start = time.perf_counter()
    with torch.no_grad():
        got = tp(bx1, bx2, bw)
    synchronize(device)
    first_call = time.perf_counter() - start
    if not same_function:
        diff = "n/a (different parametrisation)"
    elif run["expected"] is None:
        diff = "n/a (empty batch)" if not case.batch else "n/a (cg reference out of memory)"
    else:
        diff = f"{(got - run['expected']).abs().max().item():.2e}"
    base = dict(base, paths=len(tp.paths), weight_numel=tp.weight_numel, max_abs_diff_vs_cg=diff)
    rows = []
    for pass_name in run["passes"]:
        reset_peak_memory(device)
        times = time_call(_runner(tp, bx1, bx2, bw, bgrad, pass_name), args.repeats, device=device)
        peak = peak_memory_mb(device)
        median = statistics.median(times)
        work = run["flops"] * (1 if pass_name == "fwd" else 4)
        gflops = work / median / 1e9 if median > 0 else math.nan
        rows.append(
            dict(
                base,
                **{"pass": pass_name},
                median_ms=f"{median * 1e3:.3f}",
                min_ms=f"{min(times) * 1e3:.3f}",
                useful_gflop=f"{work / 1e9:.4f}",
                gflops=f"{gflops:.2f}",
                fraction_of_matmul=f"{gflops / run['matmul']:.4f}",
                peak_mb="" if peak is None else f"{peak:.1f}",
                status="ok",
                reason="",
            )  # fmt: skip
        )
        print(f"  {case.setting:8s} L={case.L:<2d} {backend:10s} {base['dtype']} {pass_name:6s} "
              f"{median * 1e3:10.2f} ms  {gflops:7.2f} GFLOP/s  diff {diff}", flush=True)  # fmt: skip
    return rows, first_call


def _plot(path: Path, rows: list[dict], setting: str, info: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines: dict[tuple, list[tuple[int, float]]] = {}
    for row in rows:
        if row.get("status") == "ok":
            key = (row["backend"], row["pass"], row["dtype"])
            lines.setdefault(key, []).append((int(row["L"]), float(row["median_ms"])))
    fig, ax = plt.subplots(figsize=(6, 4))
    for (backend, pass_name, dtype_name), points in sorted(lines.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                linestyle="-" if pass_name == "fwd" else "--", label=f"{backend} {pass_name} {dtype_name}")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    degrees = sorted({L for points in lines.values() for L, _ in points})
    if degrees:  # integer degrees as tick labels, not 2x10^0
        ax.set_xticks(degrees, [str(L) for L in degrees])
        ax.minorticks_off()
    ax.set_xlabel("L")
    ax.set_ylabel("median time per call (ms)")
    where = (
        info["device"][:40]
        if info["device"] != info["cpu"]
        else f"{info['cpu'][:40]}, {info['threads']} threads"
    )
    ax.set_title(f"{setting}: {where}", fontsize=9)
    if lines:
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def _print_table(rows: list[dict]) -> None:
    header = f"{'setting':9s} {'L':>2s} {'backend':12s} {'dtype':8s} {'pass':7s} {'median ms':>11s} {'GFLOP/s':>8s} {'frac':>7s}  diff vs cg"
    print(header)
    print("-" * len(header))
    for r in rows:
        if r.get("status") != "ok":
            print(
                f"{r['setting']:9s} {r['L']:>2d} {r['backend']:12s} {r['dtype']:8s} {r['pass']:7s} skipped: {r['reason']}"
            )
            continue
        print(f"{r['setting']:9s} {r['L']:>2d} {r['backend']:12s} {r['dtype']:8s} {r['pass']:7s} "
              f"{float(r['median_ms']):11.2f} {float(r['gflops']):8.2f} {float(r['fraction_of_matmul']):7.4f}  "
              f"{r['max_abs_diff_vs_cg']}")  # fmt: skip
