"""MACE training / inference step per backend combination, against mace-torch 0.3.16.

Task (MACE defaults unless overridden): ``128x0e+128x1o`` hidden irreps, max_ell 3, correlation 3,
2 interactions, r_max 5 Å, 8 Bessel functions, radial MLP [64, 64, 64], MLP_irreps 16x0e, E0 = 0.

* **train**: zero_grad, energy + forces (``create_graph``), loss ``mean((E - E_ref)^2) +
  100 mean((F - F_ref)^2)``, backward, Adam step;
* **infer**: energy + forces, no graph kept.

Each (system, dtype, implementation) runs in its own subprocess; timings are the median of
``--repeats`` steps after one untimed warm-up. On the CPU ``peak_mb`` is the growth of the
process's maximum resident set (``ru_maxrss``) from after building the model and batch to after
the steps (the extra memory the step needs); on CUDA (``--device cuda``) it is
``torch.cuda.max_memory_allocated`` over the steps, and every step is timed between two
``torch.cuda.synchronize``.

mace-torch runs in its own venv (it pins e3nn 0.4.4), found through ``--mace-python`` or
``$EQUITENSOR_MACE_PYTHON``; it is skipped with the reason recorded when neither is given, and a
venv is created only when asked (``--create-mace-venv DIR``: ``python -m venv`` + ``pip install
torch==2.13.0 mace-torch==0.3.16``). ``--mace-variants e3nn,cueq`` runs it as shipped and with its
cuEquivariance acceleration (``CuEquivarianceConfig(enabled=True, layout="ir_mul",
group="O3_e3nn", optimize_all=True)``, as mace's ``--enable_cueq``; needs
``cuequivariance-torch`` in that venv, else the row records why it did not run).

Systems, read in place from ``--data`` or ``$EQUITENSOR_SHARED_DATA`` (the reference data folder
described in its README): ``oc20`` = first frames of three OC20 relaxations (periodic slabs,
111 atoms together, raw DFT forces via ``get_forces(apply_constraint=False)``; ``--batch``
structures cycle over the three); ``ethanol`` = the first ``--batch`` rMD17 ethanol frames.
Default batch: 3 slabs / 16 molecules on the CPU; on CUDA 128 slabs (~4,700 atoms) / 512
molecules (~4,600 atoms), sized for an 80 GB GPU.

Writes ``model_step.csv`` and ``.png`` (``model_step_cuda.*`` on a GPU; a ``device`` column
names the device) to ``--out`` (a folder, default the current one, or a ``.csv`` path); prints a
table with ratios to mace-torch.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from ..irreps import natural_irreps
from .device import device_name, peak_memory_mb, reset_peak_memory, resolve_device, time_call
from .output import save_figure, write_csv

#: the folder holding the ``equitensor`` package: the worker subprocesses import this copy
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
#: structures per step when ``--batch`` is not given
DEFAULT_BATCH = {("cpu", "oc20"): 3, ("cpu", "ethanol"): 16, ("cuda", "oc20"): 128, ("cuda", "ethanol"): 512}
#: mace-torch variants: as shipped (e3nn) and with its cuEquivariance acceleration
MACE_VARIANTS = {"e3nn": ("e3nn-0.4.4", "symmetric_contraction"), "cueq": ("cueq", "cueq")}
OC20_FILES = ("random1000100.traj", "random1000120.traj", "random1000141.traj")
MACE_DEFAULTS = dict(
    r_max=5.0, num_bessel=8, num_polynomial_cutoff=5, max_ell=3, hidden_irreps="128x0e+128x1o",
    correlation=3, num_interactions=2, MLP_irreps="16x0e", radial_MLP=[64, 64, 64],
)  # fmt: skip


def shared_data_dir(explicit: str | None = None) -> Path:
    """The reference data folder: ``explicit`` (``--data``), else ``$EQUITENSOR_SHARED_DATA``.

    Raises:
        SystemExit: neither is given, or the folder does not exist.
    """
    chosen = explicit or os.environ.get("EQUITENSOR_SHARED_DATA")
    if not chosen:
        raise SystemExit(
            "equitensor bench model needs the reference data folder (oc20_traj/, molecules/): "
            "pass --data DIR or set EQUITENSOR_SHARED_DATA"
        )
    if not Path(chosen).is_dir():
        raise SystemExit(f"reference data folder {chosen} does not exist (--data / EQUITENSOR_SHARED_DATA)")
    return Path(chosen)


def system_files(name: str, data_dir: Path, structures: int) -> list[tuple[str, int]]:
    """``(path, frame index)`` pairs of the ``structures`` structures of a benchmark system."""
    if name == "oc20":
        return [(str(data_dir / "oc20_traj" / OC20_FILES[i % len(OC20_FILES)]), 0) for i in range(structures)]
    if name == "ethanol":
        return [(str(data_dir / "molecules" / "ethanol" / "train.xyz"), i) for i in range(structures)]
    raise ValueError(f"unknown system {name!r}; expected oc20 or ethanol")


def load_frames(files):
    """ASE atoms with ``energy`` and raw ``forces`` in ``atoms.info['ref_energy']/arrays['ref_forces']``."""
    from ase.io import read

    contents, prepared, frames = {}, {}, []
    for path, index in files:
        if path not in contents:  # each file is parsed once, however many frames are taken from it
            contents[path] = read(path, index=":")
        if index >= len(contents[path]):
            raise ValueError(
                f"{path} has {len(contents[path])} frames; the batch asks for frame {index} (lower --batch)"
            )
        if (path, index) not in prepared:  # a batch may repeat a structure
            atoms = contents[path][index]
            atoms.info["ref_energy"] = float(atoms.get_potential_energy())
            atoms.arrays["ref_forces"] = atoms.get_forces(apply_constraint=False).copy()
            prepared[path, index] = atoms
        frames.append(prepared[path, index].copy())
    return frames


# ----------------------------------------------------------------------------- worker (equitensor)
def _maxrss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def equitensor_worker(spec: dict) -> dict:
    import torch
    from torch_geometric.data import Batch

    from equitensor.models import MACE, atoms_to_graph

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec.get("device", "cpu"))
    dtype = getattr(torch, spec["dtype"])
    torch.set_default_dtype(dtype)
    torch.manual_seed(0)
    frames = load_frames(spec["files"])
    config = spec["config"]
    graphs = [atoms_to_graph(a, config["r_max"], dtype) for a in frames]
    batch = Batch.from_data_list(graphs).to(device)
    e_ref = torch.tensor([a.info["ref_energy"] for a in frames], dtype=dtype, device=device)
    f_ref = torch.cat([torch.tensor(a.arrays["ref_forces"], dtype=dtype) for a in frames]).to(device)
    zs = sorted({int(z) for a in frames for z in a.numbers})
    start = time.perf_counter()
    model = MACE(
        atomic_numbers=zs, avg_num_neighbors=spec["avg_num_neighbors"], conv_backend=spec["conv"],
        product_backend=spec["product"], **config,
    )  # fmt: skip
    build_s = time.perf_counter() - start
    model = model.to(device=device, dtype=dtype)  # float64 tables (e3nn adapter) follow the model's dtype
    train = training_step(model, batch, e_ref, f_ref)

    def infer():
        out = model(batch)
        out["energy"].detach()

    return _measure(spec, train, infer, build_s, batch.num_nodes, batch.edge_index.shape[1])


def training_step(model, batch, e_ref, f_ref):
    """The timed training step: energy + forces (``create_graph``), ``mean(dE^2) + 100 mean(dF^2)``,
    backward, Adam (amsgrad) step — the same task mace-torch's worker runs."""
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)

    def train():
        optimizer.zero_grad(set_to_none=True)
        out = model(batch, training=True)
        loss = (out["energy"] - e_ref).pow(2).mean() + 100 * (out["forces"] - f_ref).pow(2).mean()
        loss.backward()
        optimizer.step()

    return train


def _measure(spec, train, infer, build_s, n_atoms, n_edges) -> dict:
    """Median step times and peak memory (CUDA: allocator peak per phase; CPU: ``ru_maxrss`` growth)."""
    import torch

    device = torch.device(spec.get("device", "cpu"))
    base = _maxrss_mb()
    reset_peak_memory(device)
    infer_times = time_call(infer, spec["repeats"], warmup=1, device=device)
    infer_peak = peak_memory_mb(device) if device.type == "cuda" else _maxrss_mb() - base
    reset_peak_memory(device)
    train_times = time_call(train, spec["repeats"], warmup=1, device=device)
    train_peak = peak_memory_mb(device) if device.type == "cuda" else _maxrss_mb() - base
    return {
        "build_s": build_s, "atoms": n_atoms, "edges": n_edges,
        "train_ms": 1e3 * statistics.median(train_times), "infer_ms": 1e3 * statistics.median(infer_times),
        "train_peak_mb": train_peak, "infer_peak_mb": infer_peak,
    }  # fmt: skip


# ----------------------------------------------------------------------------- driver
def find_mace_python(explicit: str | None, create_at: str | None = None) -> Path | None:
    """mace-torch's python: ``explicit``, ``$EQUITENSOR_MACE_PYTHON``, or a venv made at ``create_at``.

    Returns ``None`` when none is given (no venv is created unless ``create_at`` is).

    Raises:
        SystemExit: a python that was named does not exist.
    """
    for source, c in (
        ("--mace-python", explicit),
        ("EQUITENSOR_MACE_PYTHON", os.environ.get("EQUITENSOR_MACE_PYTHON")),
    ):
        if c:
            if not Path(c).exists():
                raise SystemExit(f"{source} names {c}, which does not exist")
            return Path(c)
    if create_at is None:
        return None
    venv = Path(create_at)
    if (venv / "bin" / "python").exists():
        return venv / "bin" / "python"
    print(f"creating mace-torch venv at {venv} (torch==2.13.0, mace-torch==0.3.16)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "torch==2.13.0", "mace-torch==0.3.16"], check=True
    )
    return python


def run_worker(command: list[str], spec: dict, timeout: float, pythonpath: str | None = None) -> dict:
    """Run a worker subprocess (``command`` + the JSON spec); its ``RESULT`` line or ``{"error": ...}``."""
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"])}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (pythonpath, os.environ.get("PYTHONPATH"))))
    try:
        proc = subprocess.run(
            [*command, json.dumps(spec)], capture_output=True, text=True, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired:
        return {"error": f"no result within --timeout {timeout:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"error": ((proc.stderr or proc.stdout).strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1][len("RESULT ") :])


def average_neighbors(files, r_max: float) -> float:
    import numpy as np

    from equitensor.datasets.neighbors import neighbor_list

    frames = load_frames(files)
    edges = sum(len(neighbor_list(a.positions, np.asarray(a.cell[:]), a.pbc, r_max)[0]) for a in frames)
    return edges / sum(len(a) for a in frames)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="equitensor bench model", description=__doc__.split("\n\n")[0])
    p.add_argument("--systems", default="oc20,ethanol")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument(
        "--combos", default="cg/cg,e3nn/cg,cg/gaunt_grid,gaunt_grid/gaunt_grid",
        help="conv/product backend pairs, comma separated ('all' = every registered pair)",
    )  # fmt: skip
    p.add_argument(
        "--max-L", type=int, nargs="*", default=[1, 2], help="hidden max_L values (MACE default 1)"
    )
    p.add_argument("--num-channels", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="intra-op threads on both sides (default 1: stable on a loaded machine)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument(
        "--batch", type=int, default=None,
        help="structures per step (default: 3 oc20 slabs / 16 ethanols on cpu, 128 / 512 on cuda)",
    )  # fmt: skip
    p.add_argument("--data", default=None, help="reference data folder (default: $EQUITENSOR_SHARED_DATA)")
    p.add_argument(
        "--mace-python",
        default=None,
        help="python of a venv with mace-torch 0.3.16 ($EQUITENSOR_MACE_PYTHON)",
    )
    p.add_argument(
        "--mace-variants", default="e3nn,cueq",
        help=f"mace-torch variants, comma separated, from {','.join(MACE_VARIANTS)} (cueq = its cuEquivariance acceleration)",
    )  # fmt: skip
    p.add_argument("--no-mace", action="store_true", help="skip mace-torch")
    p.add_argument(
        "--create-mace-venv", default=None, metavar="DIR",
        help="create a mace-torch venv at DIR when no mace python is given (downloads torch and mace-torch)",
    )  # fmt: skip
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per subprocess")
    p.add_argument("--out", default=".", help="folder for model_step.csv/.png, or a .csv path")
    p.add_argument(
        "--append", action="store_true", help="add rows to an existing CSV instead of replacing it"
    )
    p.add_argument("--quick", action="store_true", help="tiny model and batch (smoke test of the harness)")
    p.add_argument("--markdown", default=None, help="print the CSV at this path as a markdown table and exit")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.worker:
        print("RESULT " + json.dumps(equitensor_worker(json.loads(args.worker))), flush=True)
        return 0
    if args.markdown:
        with open(args.markdown) as f:
            print(
                markdown_table([{k: _number(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)])
            )
        return 0
    device = resolve_device(args.device)
    data_dir = shared_data_dir(args.data)
    combos = _registered_combos(args.combos)
    impls = [("equitensor", *combo) for combo in combos] + _mace_impls(args)
    channels = 8 if args.quick else args.num_channels
    repeats = 1 if args.quick else args.repeats
    worker_mace = Path(__file__).resolve().with_name("_mace_worker.py")
    print(f"# {device_name(device)} ({platform.node()}), threads={args.threads}, "
          f"python {platform.python_version()}", flush=True)  # fmt: skip
    out = _output_csv(args.out, device)
    previous = []
    if args.append and out.exists():
        with open(out) as f:
            previous = [{k: _number(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
    rows = []
    for system in args.systems.split(","):
        structures = args.batch or (1 if args.quick else DEFAULT_BATCH[device.type, system])
        files = system_files(system, data_dir, structures)
        for max_l in args.max_L:
            config = dict(
                MACE_DEFAULTS,
                hidden_irreps=str(natural_irreps(max_l, channels)),
            )
            if args.quick:
                config.update(radial_MLP=[8], correlation=2, max_ell=2)
            avg = average_neighbors(files[: len(OC20_FILES)] if system == "oc20" else files, config["r_max"])
            for dtype in args.dtypes.split(","):
                for impl, conv, product, reason in impls:
                    spec = dict(files=files, config=config, dtype=dtype, conv=conv, product=product, threads=args.threads,
                                repeats=repeats, avg_num_neighbors=avg, device=str(device))  # fmt: skip
                    if reason is not None:
                        result = {"error": reason}
                    elif impl == "equitensor":
                        command = [
                            sys.executable,
                            "-W",
                            "ignore",
                            "-m",
                            "equitensor.bench.model_step",
                            "--worker",
                        ]
                        result = run_worker(command, spec, args.timeout, pythonpath=str(PACKAGE_ROOT))
                    else:
                        result = run_worker(
                            [str(args.mace_python), "-W", "ignore", str(worker_mace)], spec, args.timeout
                        )
                    row = dict(system=system, max_L=max_l, channels=channels, dtype=dtype, impl=impl, conv=conv,
                               product=product, threads=args.threads,
                               device=device_name(device), **result)  # fmt: skip
                    rows.append(row)
                    print(_format_row(row), flush=True)
                    write_results(previous + rows, out, plot=False)  # a cut-off run keeps its rows
    write_results(previous + rows, out)
    print_summary(previous + rows)
    return 0


def _registered_combos(text: str) -> list[tuple]:
    """``--combos`` as ``(conv, product, reason)``: ``reason`` is ``None``, or why the pair cannot run
    here (not registered), which its row then records."""
    from equitensor.ops.backends import available_backends, available_product_bases

    if text == "all":
        return [(c, p, None) for c in available_backends() for p in available_product_bases()]
    combos = []
    for item in text.split(","):
        conv, _, product = item.strip().partition("/")
        if not product:
            raise SystemExit(f"--combos item {item!r} is not CONV/PRODUCT (e.g. cg/cg)")
        if conv in available_backends() and product in available_product_bases():
            combos.append((conv, product, None))
        else:
            reason = (f"{conv}/{product} not registered here (conv: {', '.join(available_backends())}; "
                      f"product: {', '.join(available_product_bases())})")  # fmt: skip
            print(f"skipping {reason}")
            combos.append((conv, product, reason))
    return combos


def _mace_impls(args) -> list[tuple]:
    """mace-torch rows: ``("mace-torch", conv, product, reason)``, ``reason`` as in :func:`_registered_combos`."""
    if args.no_mace:
        return []
    variants = [v.strip() for v in args.mace_variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in MACE_VARIANTS]
    if unknown:
        raise SystemExit(f"unknown --mace-variants {unknown}; expected from {list(MACE_VARIANTS)}")
    args.mace_python = find_mace_python(args.mace_python, args.create_mace_venv)
    impls = []
    for variant in variants:
        conv, product = MACE_VARIANTS[variant]
        reason = None
        if args.mace_python is None:
            reason = "no mace-torch python: pass --mace-python, set EQUITENSOR_MACE_PYTHON or --create-mace-venv DIR"
        impls.append(("mace-torch", conv, product, reason))
    return impls


def _output_csv(out: str, device) -> Path:
    """``--out``: a ``.csv`` path as given, else ``model_step[_cuda].csv`` in that folder."""
    path = Path(out)
    if path.suffix == ".csv":
        return path
    return path / ("model_step.csv" if device.type == "cpu" else f"model_step_{device.type}.csv")


def _number(value: str):
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def _format_row(row: dict) -> str:
    head = f"{row['system']:8s} L={row['max_L']} {row['dtype']:8s} {row['impl']:10s} {row['conv']:>11s}/{row['product']:<22s}"
    if "error" in row:
        return head + f" ERROR {row['error']}"
    return head + (
        f" atoms {row['atoms']:4d} edges {row['edges']:6d}  train {row['train_ms']:9.1f} ms  infer "
        f"{row['infer_ms']:8.1f} ms  peak train {row['train_peak_mb']:7.1f} MB  infer {row['infer_peak_mb']:7.1f} MB"
    )


FIELDS = ["system", "max_L", "channels", "dtype", "impl", "conv", "product", "threads", "device", "atoms", "edges",
          "build_s", "train_ms", "infer_ms", "train_peak_mb", "infer_peak_mb", "error"]  # fmt: skip


def write_results(rows, out: Path, plot: bool = True) -> None:
    """The CSV at ``out`` and, with ``plot``, its bar chart beside it (``.png``)."""
    write_csv(out, rows, FIELDS, extrasaction="ignore")
    if not plot:
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    ok = [r for r in rows if "error" not in r]
    groups = sorted({(r["system"], r["max_L"], r["dtype"]) for r in ok})
    if not groups:
        return
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.6 * len(ok) + 2))
    labels = [
        f"{r['system']} L{r['max_L']} {r['dtype'][5:]} {r['impl'][:4]} {r['conv']}/{r['product'][:10]}"
        for r in ok
    ]
    for ax, key, title in (
        (axes[0], "train_ms", "training step (ms)"),
        (axes[1], "train_peak_mb", "training peak (MB)"),
    ):
        ax.barh(
            range(len(ok)),
            [r[key] for r in ok],
            color=["tab:red" if r["impl"] == "mace-torch" else "tab:blue" for r in ok],
        )
        ax.set_yticks(range(len(ok)))
        ax.set_yticklabels(labels if ax is axes[0] else [], fontsize=7)
        ax.set_xscale("log")
        ax.set_title(title)
    fig.tight_layout()
    fig.suptitle(str(rows[0].get("device", "")), fontsize=9)
    fig.tight_layout()
    save_figure(fig, out.with_suffix(".png"), dpi=120)
    plt.close(fig)


def _reference(rows, r, conv: str = "e3nn-0.4.4"):
    """The mace-torch row (variant ``conv``) of ``r``'s system, max_L and dtype, or ``None``."""
    return next(
        (
            m
            for m in rows
            if m["impl"] == "mace-torch"
            and m["conv"] == conv
            and "error" not in m
            and (m["system"], m["max_L"], m["dtype"]) == (r["system"], r["max_L"], r["dtype"])
        ),
        None,
    )


def markdown_table(rows) -> str:
    """One line per run; speed-up = mace-torch time / ours, memory = ours / mace-torch (same system, L, dtype)."""
    lines = [
        "| system | max_L | dtype | implementation | conv / product | atoms | edges | train (ms) | infer (ms) "
        "| train peak (MB) | train speed-up vs mace | infer speed-up | train memory vs mace |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        name = (
            f"{r['conv']} / {r['product']}"
            if r["impl"] == "equitensor"
            else ("cuEquivariance" if r["conv"] == "cueq" else "e3nn 0.4.4 / symmetric contraction")
        )
        if "error" in r:
            lines.append(
                f"| {r['system']} | {r['max_L']} | {r['dtype']} | {r['impl']} | {name} | | | error: {r['error']} | | | | | |"
            )
            continue
        ref = _reference(rows, r)
        ratios = (
            f"{ref['train_ms'] / r['train_ms']:.2f}x | {ref['infer_ms'] / r['infer_ms']:.2f}x | "
            f"{r['train_peak_mb'] / max(ref['train_peak_mb'], 1e-9):.2f}x"
            if ref is not None and r["impl"] == "equitensor"
            else " | | "
        )
        lines.append(
            f"| {r['system']} | {r['max_L']} | {r['dtype']} | {r['impl']} | {name} | {r['atoms']} | {r['edges']} | "
            f"{r['train_ms']:.0f} | {r['infer_ms']:.0f} | {r['train_peak_mb']:.0f} | {ratios} |"
        )
    return "\n".join(lines)


def print_summary(rows) -> None:
    print(
        "\nratios vs mace-torch (same system, max_L, dtype): speed-up = mace time / ours; memory = ours / mace"
    )
    for variant, (mace_conv, _) in MACE_VARIANTS.items():
        for r in rows:
            ref = _reference(rows, r, mace_conv)
            if r["impl"] != "equitensor" or "error" in r or ref is None:
                continue
            print(
                f"{r['system']:8s} L={r['max_L']} {r['dtype']:8s} {r['conv']:>10s}/{r['product']:<11s} vs mace-torch "
                f"{variant:5s} train x{ref['train_ms'] / r['train_ms']:5.2f} infer x{ref['infer_ms'] / r['infer_ms']:5.2f}  "
                f"train memory {r['train_peak_mb'] / max(ref['train_peak_mb'], 1e-9):5.2f}"
            )


if __name__ == "__main__":
    sys.exit(main())
