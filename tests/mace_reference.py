"""Test-only helper run *inside the mace-torch venv* (not collected by pytest).

Builds a small mace-torch ``ScaleShiftMACE`` (RealAgnosticInteractionBlock first, then
RealAgnosticResidualInteractionBlock) with a fixed seed, evaluates it on a few structures and
writes everything our side needs to ``argv[2]`` as plain tensors/lists (``torch.load(weights_only=True)``):
config, state_dict, structures, outputs and e3nn 0.4.4's ``wigner_3j`` tables (for the phase map).

Usage: ``<mace python> tests/mace_reference.py <config.json> <out.pt>``
"""

import json
import sys

import mace  # noqa: F401  (first: it lets e3nn 0.4.4 load its constants under torch >= 2.6)
import numpy as np
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from e3nn import o3


def _mace_uses_cueq_basis(model) -> bool:
    """mace-torch (>= 0.3.13) takes cuequivariance's reduced basis when it is importable, unless
    the model was built with ``use_reduced_cg=False``."""
    try:
        from mace.modules.wrapper_ops import CUET_AVAILABLE
    except ImportError:
        return False
    return bool(CUET_AVAILABLE) and bool(getattr(model, "use_reduced_cg", False))


def structures():
    mol = molecule("CH3CH2OH")
    mol.rattle(0.05, seed=1)
    slab = fcc111("Cu", size=(2, 2, 2), vacuum=4.0)
    slab += Atoms("CO", positions=slab.positions[-1] + np.array([[0, 0, 1.9], [0, 0, 3.05]]))
    slab.rattle(0.03, seed=2)
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    cu.rattle(0.05, seed=3)
    return [mol, slab, cu]


def main(config_path, out_path):
    from mace import data as mace_data
    from mace import modules
    from mace.tools import torch_geometric, utils

    torch.set_default_dtype(torch.float64)
    cfg = json.load(open(config_path))
    torch.manual_seed(cfg["seed"])
    model = modules.ScaleShiftMACE(
        r_max=cfg["r_max"],
        num_bessel=cfg["num_bessel"],
        num_polynomial_cutoff=cfg["num_polynomial_cutoff"],
        max_ell=cfg["max_ell"],
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticInteractionBlock"],
        num_interactions=cfg["num_interactions"],
        num_elements=len(cfg["atomic_numbers"]),
        hidden_irreps=o3.Irreps(cfg["hidden_irreps"]),
        MLP_irreps=o3.Irreps(cfg["MLP_irreps"]),
        atomic_energies=np.array(cfg["atomic_energies"]),
        avg_num_neighbors=cfg["avg_num_neighbors"],
        atomic_numbers=cfg["atomic_numbers"],
        correlation=cfg["correlation"],
        gate=torch.nn.functional.silu,
        radial_MLP=cfg["radial_MLP"],
        atomic_inter_scale=cfg["atomic_inter_scale"],
        atomic_inter_shift=cfg["atomic_inter_shift"],
    )
    with torch.no_grad():  # move every weight away from its initial statistics a little
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    z_table = utils.AtomicNumberTable(cfg["atomic_numbers"])
    atoms_list = structures()
    graphs = [
        mace_data.AtomicData.from_config(mace_data.config_from_atoms(a), z_table=z_table, cutoff=cfg["r_max"])
        for a in atoms_list
    ]
    batch = next(iter(torch_geometric.dataloader.DataLoader(graphs, batch_size=len(graphs), shuffle=False)))
    intermediates = {}

    def keep(name):
        def hook(module, inputs, output):
            first = output[0] if isinstance(output, tuple) else output
            intermediates[name] = first.detach().clone()
            if isinstance(output, tuple) and output[1] is not None:
                intermediates[name + ".sc"] = output[1].detach().clone()

        return hook

    for name, module in model.named_modules():
        if name.count(".") <= 1 and name and not name.endswith("_fn"):
            module.register_forward_hook(keep(name))
    out = model(batch.to_dict(), compute_force=True, compute_virials=True, compute_stress=True)
    lmax = 2 * cfg["max_ell"] + 2
    w3j = {
        f"{l1},{l2},{l3}": o3.wigner_3j(l1, l2, l3)
        for l1 in range(lmax + 1)
        for l2 in range(lmax + 1)
        for l3 in range(abs(l1 - l2), min(l1 + l2, lmax) + 1)
    }
    import e3nn

    torch.save(
        {
            "versions": {
                "mace": str(mace.__version__),
                "e3nn": str(e3nn.__version__),
                "torch": str(torch.__version__),
            },
            # mace-torch builds its symmetric-contraction basis with cuequivariance when that is
            # importable (already reduced), else from e3nn's raw products
            "mace_cg_basis": "cuequivariance" if _mace_uses_cueq_basis(model) else "e3nn",
            "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "structures": [
                {
                    "numbers": torch.tensor(a.numbers),
                    "positions": torch.tensor(a.positions),
                    "cell": torch.tensor(np.asarray(a.cell[:])),
                    "pbc": torch.tensor(a.pbc),
                }
                for a in atoms_list
            ],
            "energy": out["energy"].detach(),
            "node_energy": out["node_energy"].detach(),
            "forces": out["forces"].detach(),
            "stress": out["stress"].detach(),
            "virials": out["virials"].detach(),
            "w3j": w3j,
            "intermediates": intermediates,
        },
        out_path,
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
