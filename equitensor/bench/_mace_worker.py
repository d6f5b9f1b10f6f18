"""mace-torch side of ``equitensor bench model``: runs *inside the mace-torch venv* (imports no equitensor).

Usage: ``<mace python> _mace_worker.py '<json spec>'``; prints ``RESULT {json}``. Same task,
data, loss, optimiser and measurement as ``model_step.equitensor_worker`` (on CUDA: steps timed
between synchronisations, peak from ``torch.cuda.max_memory_allocated``). ``spec["conv"] ==
"cueq"`` builds the model with mace's cuEquivariance acceleration (as its ``--enable_cueq``) and
fails with a clear error when ``cuequivariance_torch`` is not installed in this venv (mace would
otherwise silently fall back to e3nn). The timing helpers repeat ``equitensor.bench.device``:
this venv cannot import equitensor (mace-torch pins e3nn 0.4.4).
"""

import json
import resource
import statistics
import sys
import time

import mace  # noqa: F401  (first: lets e3nn 0.4.4 load its constants under torch >= 2.6)
import numpy as np
import torch
from ase.io import read
from e3nn import o3


def maxrss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_steps(step, repeats, device):
    step()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def cueq_config(enabled: bool, device):
    """mace's cuEquivariance configuration (its ``--enable_cueq`` settings) or ``None``."""
    if not enabled:
        return None
    from mace.modules.wrapper_ops import CUET_AVAILABLE, CuEquivarianceConfig

    if not CUET_AVAILABLE:
        raise RuntimeError(
            "mace-torch's cuEquivariance acceleration needs cuequivariance-torch in the mace-torch venv "
            "(pip install cuequivariance-torch, plus cuequivariance-ops-torch-cu12 on a GPU)"
        )
    return CuEquivarianceConfig(
        enabled=True, layout="ir_mul", group="O3_e3nn", optimize_all=True, conv_fusion=device.type == "cuda"
    )


def build_model(spec, zs, device):
    """mace-torch's ScaleShiftMACE with the benchmark's hyper-parameters (E0 = 0, scale 1, shift 0)."""
    from mace import modules

    cfg = spec["config"]
    return modules.ScaleShiftMACE(
        r_max=cfg["r_max"],
        num_bessel=cfg["num_bessel"],
        num_polynomial_cutoff=cfg["num_polynomial_cutoff"],
        max_ell=cfg["max_ell"],
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticInteractionBlock"],
        num_interactions=cfg["num_interactions"],
        num_elements=len(zs),
        hidden_irreps=o3.Irreps(cfg["hidden_irreps"]),
        MLP_irreps=o3.Irreps(cfg["MLP_irreps"]),
        atomic_energies=np.zeros(len(zs)),
        avg_num_neighbors=spec["avg_num_neighbors"],
        atomic_numbers=zs,
        correlation=cfg["correlation"],
        gate=torch.nn.functional.silu,
        radial_MLP=cfg["radial_MLP"],
        atomic_inter_scale=1.0,
        atomic_inter_shift=0.0,
        cueq_config=cueq_config(spec["conv"] == "cueq", device),
    ).to(device)


def main(spec):
    from mace import data as mace_data
    from mace.tools import torch_geometric, utils

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec.get("device", "cpu"))
    dtype = getattr(torch, spec["dtype"])
    torch.set_default_dtype(dtype)
    torch.manual_seed(0)
    contents, frames = {}, []
    for path, index in spec["files"]:
        if path not in contents:  # each file is parsed once (a batch takes many frames of one file)
            contents[path] = read(path, index=":")
        atoms = contents[path][index].copy()
        atoms.info["ref_energy"] = float(contents[path][index].get_potential_energy())
        atoms.arrays["ref_forces"] = contents[path][index].get_forces(apply_constraint=False).copy()
        frames.append(atoms)
    cfg = spec["config"]
    zs = sorted({int(z) for a in frames for z in a.numbers})
    z_table = utils.AtomicNumberTable(zs)
    graphs = [
        mace_data.AtomicData.from_config(mace_data.config_from_atoms(a), z_table=z_table, cutoff=cfg["r_max"])
        for a in frames
    ]
    batch = (
        next(iter(torch_geometric.dataloader.DataLoader(graphs, batch_size=len(graphs), shuffle=False)))
        .to(device)
        .to_dict()
    )
    e_ref = torch.tensor([a.info["ref_energy"] for a in frames], dtype=dtype, device=device)
    f_ref = torch.cat([torch.tensor(a.arrays["ref_forces"], dtype=dtype) for a in frames]).to(device)
    start = time.perf_counter()
    model = build_model(spec, zs, device)
    build_s = time.perf_counter() - start
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)

    def train():
        optimizer.zero_grad(set_to_none=True)
        out = model(dict(batch), training=True, compute_force=True)
        loss = (out["energy"] - e_ref).pow(2).mean() + 100 * (out["forces"] - f_ref).pow(2).mean()
        loss.backward()
        optimizer.step()

    def infer():
        out = model(dict(batch), training=False, compute_force=True)
        out["energy"].detach()

    def peak_mb(base):
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device) / 2**20
            torch.cuda.reset_peak_memory_stats(device)
            return peak
        return maxrss_mb() - base

    base = maxrss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    infer_times = run_steps(infer, spec["repeats"], device)
    infer_peak = peak_mb(base)
    train_times = run_steps(train, spec["repeats"], device)
    train_peak = peak_mb(base)
    return {
        "build_s": build_s,
        "atoms": int(batch["positions"].shape[0]),
        "edges": int(batch["edge_index"].shape[1]),
        "train_ms": 1e3 * statistics.median(train_times),
        "infer_ms": 1e3 * statistics.median(infer_times),
        "train_peak_mb": train_peak,
        "infer_peak_mb": infer_peak,
    }


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(json.loads(sys.argv[1]))), flush=True)
