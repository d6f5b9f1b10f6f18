"""From a configuration to datasets, statistics and a model: the glue between data, models and training.

This is the only module of ``equitensor.train`` that talks to ``equitensor.datasets`` and
``equitensor.models``; the trainer itself only sees graphs and a module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase.data import atomic_numbers as SYMBOL_TO_Z
from ase.data import chemical_symbols
from torch.utils.data import Subset

from ..datasets.statistics import fit_linear_reference, force_rms, isolated_atom_e0s, reference_residuals
from .config import COMMON_MODEL_KEYS, PICKLE_FROM_FILE, ConfigError, DataConfig, ModelConfig, model_keys
from .distributed import DistContext

__all__ = [
    "DataSplits",
    "DatasetStatistics",
    "build_model",
    "check_elements",
    "check_model_settings",
    "model_class",
    "skip_invalid_frames",
    "compute_statistics",
    "open_graphs",
    "prepare_data",
]


@dataclass
class DataSplits:
    """Training, validation and (optional) test graphs with the files they came from."""

    train: Sequence
    val: Sequence
    test: Sequence | None
    #: file of each split ("val" is the training file when validation frames were held out)
    sources: dict[str, str]
    #: number of validation frames held out of the training file (0 when ``data.val`` is given)
    held_out: int = 0

    def describe(self) -> str:
        val = (
            f"{self.held_out} frames held out of the training data" if self.held_out else self.sources["val"]
        )
        test = f" | test {self.sources['test']}" if "test" in self.sources else ""
        return f"train {self.sources['train']} ({len(self.train)} frames) | val {val} ({len(self.val)} frames){test}"


@dataclass
class DatasetStatistics:
    """What the model and the baseline need to know about the training set."""

    elements: list[int]
    atomic_energies: dict[int, float]
    avg_num_neighbors: float
    mean_energy_per_atom: float
    #: mean of (E - sum of E0s) / N_atoms: the shift of the interaction energy per atom (MACE's ScaleShift)
    mean_interaction_energy_per_atom: float
    #: root mean square of the force components: the scale of the interaction energy (MACE's rms scaling)
    rms_forces: float
    num_frames: int

    def describe(self) -> str:
        e0 = ", ".join(f"{chemical_symbols[z]} {e:.4f}" for z, e in self.atomic_energies.items())
        return (
            f"{self.num_frames} training frames, elements {[chemical_symbols[z] for z in self.elements]}, "
            f"E0s (eV) {e0}, avg_num_neighbors {self.avg_num_neighbors:.2f}, "
            f"mean energy/atom {self.mean_energy_per_atom:.4f} eV, mean interaction energy/atom "
            f"{self.mean_interaction_energy_per_atom:.4f} eV, rms force {self.rms_forces:.4f} eV/Å"
        )


class CachedGraphs(torch.utils.data.Dataset):
    """Keeps every graph of ``dataset`` in memory after its first use (neighbour lists built once)."""

    def __init__(self, dataset: Sequence):
        self.dataset = dataset
        self.graphs: list = [None] * len(dataset)

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, index: int):
        graph = self.graphs[index]
        if graph is None:
            graph = self.graphs[index] = self.dataset[index]
        return graph


def _exists(path: str | list) -> bool:
    """Whether ``path`` (a path, a glob or a list; see ``expand_sources``) names something that exists."""
    from equitensor.datasets.sources import has_matches

    return has_matches(path)


def open_graphs(
    path: str | list, r_max: float, options: dict, cache: bool = False, allow_pickle: bool = False
) -> Sequence:
    """Graphs (``torch_geometric.data.Data``) of the frames at ``path``, with edges within ``r_max``.

    ``cache`` keeps the graphs in memory after first use (for datasets that fit in RAM).
    ``allow_pickle`` is the user's permission to unpickle legacy LMDB values (it executes code
    from the file); it comes from the command line or the caller, never from ``options``.
    """
    from equitensor.datasets import GraphDataset, open_dataset
    from equitensor.datasets.dispatch import pickle_permission

    if not _exists(path):
        raise FileNotFoundError(f"dataset not found: {path}")
    if "allow_pickle" in options:
        raise ConfigError(PICKLE_FROM_FILE)
    permission = pickle_permission(path, allow_pickle)
    try:
        reader = open_dataset(path, **options, **permission)
    except TypeError as error:  # an option the reader of this format does not take
        raise ConfigError(f"data.options {options} for {path}: {error}") from error
    graphs = GraphDataset(reader, r_max=r_max)
    return CachedGraphs(graphs) if cache else graphs


def _demo_paths(n_frames: int, seed: int, ctx: DistContext) -> tuple[str, str]:
    """Train/val S2EF folders of the demo dataset; rank 0 generates it on first use."""
    from equitensor.datasets.demo import demo_dataset_path, make_demo_dataset

    root = Path(demo_dataset_path(n_frames=n_frames, seed=seed, create=False))
    if ctx.is_main and not (root / "manifest.json").exists():
        print(f"generating the demo dataset ({n_frames} frames, ASE EMT) in {root} ...", flush=True)
        make_demo_dataset(root, n_frames=n_frames, seed=seed)
    ctx.barrier()
    return str(root / "train"), str(root / "val")


def _limit(dataset: Sequence, limit: int | None) -> Sequence:
    return dataset if limit is None or limit >= len(dataset) else Subset(dataset, range(limit))


def prepare_data(
    cfg: DataConfig, r_max: float, seed: int, ctx: DistContext | None = None, allow_pickle: bool = False
) -> DataSplits:
    """Open the datasets named by the config, split off validation frames if needed.

    ``allow_pickle``: the user's explicit permission to read legacy (pickled) LMDB files.
    """
    ctx = ctx or DistContext()
    train_path, val_path, options = cfg.train, cfg.val, dict(cfg.options)
    if train_path == "demo":
        train_path, demo_val = _demo_paths(cfg.demo_frames, cfg.demo_seed, ctx)
        val_path = val_path or demo_val
        # the demo's target is the OC20 one: energy minus the per-system reference (adsorption energy)
        options = {"referenced": True, **options}
    for key, path in (("data.train", train_path), ("data.val", val_path), ("data.test", cfg.test)):
        if path is not None and not _exists(path):
            raise ConfigError(f"{key}: dataset not found: {path} (set it with --set {key}=PATH)")
    train = open_graphs(train_path, r_max, options, cfg.cache_graphs, allow_pickle)
    if len(train) == 0:
        raise ConfigError(f"data.train: {train_path} holds no frames; give a dataset with training frames")
    if val_path is None:
        n_val = max(1, int(round(cfg.val_fraction * len(train))))
        if n_val >= len(train):
            raise ConfigError(
                f"data.val_fraction={cfg.val_fraction} leaves no training frames of {len(train)}"
            )
        order = np.random.default_rng(seed).permutation(len(train))
        val = Subset(train, sorted(order[:n_val].tolist()))
        train = Subset(train, sorted(order[n_val:].tolist()))
        sources = {"train": train_path, "val": train_path}
    else:
        val = open_graphs(val_path, r_max, options, cfg.cache_graphs, allow_pickle)
        if len(val) == 0:
            raise ConfigError(f"data.val: {val_path} holds no frames; give a dataset with validation frames")
        sources = {"train": train_path, "val": val_path}
        n_val = 0
    test = open_graphs(cfg.test, r_max, options, allow_pickle=allow_pickle) if cfg.test else None  # no cache
    if test is not None:
        sources["test"] = cfg.test
    train, val = _limit(train, cfg.max_train_frames), _limit(val, cfg.max_val_frames)
    if cfg.skip_invalid:
        train = skip_invalid_frames(train, "data.train", sources["train"], ctx.is_main)
        val = skip_invalid_frames(val, "data.val", sources["val"], ctx.is_main)
        test = skip_invalid_frames(test, "data.test", cfg.test, ctx.is_main) if test is not None else None
    if cfg.elements:
        check_elements(train, [_element_z(z) for z in cfg.elements], train_path)
    return DataSplits(train, val, test, sources, n_val)


def skip_invalid_frames(dataset: Sequence, key: str, source: str, report: bool = True) -> Sequence:
    """The items of ``dataset`` that load, as a ``Subset``; frames raising ``DatasetError`` are left out.

    Reads every item once. ``report`` prints how many were skipped and the first reasons.

    Raises:
        ConfigError: no frame of ``dataset`` is valid.
    """
    from equitensor.datasets.errors import DatasetError

    valid, skipped = [], []
    for index in range(len(dataset)):
        try:
            dataset[index]
        except DatasetError as error:
            skipped.append(error)
        else:
            valid.append(index)
    if not skipped:
        return dataset
    if not valid:
        raise ConfigError(f"{key}: all {len(dataset)} frames of {source} fail validation; the first: {skipped[0]}")
    if report:
        reasons = "\n".join(f"  {error}" for error in skipped[:3])
        more = f"\n  ... and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        print(
            f"{key}: skipped {len(skipped)} of {len(dataset)} frames of {source} that fail validation "
            f"(data.skip_invalid):\n{reasons}{more}",
            flush=True,
        )
    return Subset(dataset, valid)


def _element_z(value) -> int:
    if isinstance(value, str):
        if value not in SYMBOL_TO_Z:
            raise ConfigError(f"unknown element symbol {value!r}")
        return SYMBOL_TO_Z[value]
    return int(value)


def _file_index(dataset: Sequence, index: int) -> int:
    """Index of item ``index`` of ``dataset`` in the underlying file (through ``Subset`` layers)."""
    while isinstance(dataset, Subset):
        index = int(dataset.indices[index])
        dataset = dataset.dataset
    return index


def _frame_location(dataset: Sequence, index: int, where: str) -> str:
    """``FILE, frame K`` of item ``index``: the source file and frame within it when the reader knows."""
    from equitensor.datasets.sources import locate_frame

    location = locate_frame(dataset, index)
    return f"{location[0]}, frame {location[1]}" if location else f"{where}, frame {_file_index(dataset, index)}"


def check_elements(dataset: Sequence, allowed: Sequence[int], where: str, key: str = "data.elements") -> None:
    """Raise :class:`ConfigError` naming the first frame that holds an element outside ``allowed``.

    The frame index is the one in the file, also when ``dataset`` is a subset of it.
    """
    allowed_set = set(allowed)
    for index in range(len(dataset)):
        numbers = set(dataset[index].atomic_numbers.tolist())
        extra = numbers - allowed_set
        if extra:
            names = ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in sorted(extra))
            known = ", ".join(chemical_symbols[z] for z in sorted(allowed_set))
            raise ConfigError(
                f"{_frame_location(dataset, index, where)}: element {names} is not allowed ({key} = {known}); "
                "add it to the list or remove the frame from the data"
            )


def compute_statistics(train: Sequence, data_cfg: DataConfig) -> DatasetStatistics:
    """Elements, E0s, mean neighbour count and mean energy per atom of the training graphs."""
    numbers, energies, forces, edges, atoms = [], [], [], 0, 0
    for index in range(len(train)):
        graph = train[index]
        numbers.append(graph.atomic_numbers.numpy())
        forces.append(graph.forces.numpy())
        energies.append(float(graph.energy.reshape(-1)[0]))
        edges += int(graph.edge_index.shape[1])
        atoms += int(graph.atomic_numbers.numel())
    seen = sorted(set(np.concatenate(numbers).tolist()))
    elements = [_element_z(z) for z in data_cfg.elements] if data_cfg.elements else seen
    energies_np = np.asarray(energies)
    if data_cfg.e0s == "fit":
        e0 = fit_linear_reference(numbers, energies, elements)
    elif data_cfg.e0s == "zero":
        e0 = {z: 0.0 for z in elements}
    elif data_cfg.e0s == "isolated":
        try:
            e0 = isolated_atom_e0s(train, elements)
        except ValueError as error:
            raise ConfigError(f"data.e0s=isolated: {error}") from error
    else:
        e0 = {_element_z(k): float(v) for k, v in data_cfg.e0s.items()}
        missing = [chemical_symbols[z] for z in elements if z not in e0]
        if missing:
            raise ConfigError(
                f"data.e0s has no energy for {', '.join(missing)} (elements of the training data)"
            )
        e0 = {z: e0[z] for z in elements}
    if edges == 0:
        raise ConfigError(
            f"model.r_max is too small: no pair of atoms in the {len(train)} training frames is closer than "
            "the cutoff, so the model would see no neighbours; raise model.r_max"
        )
    natoms = np.array([len(n) for n in numbers], dtype=np.float64)
    return DatasetStatistics(
        elements=elements,
        atomic_energies=e0,
        avg_num_neighbors=edges / max(atoms, 1),
        mean_energy_per_atom=float(np.mean(energies_np / natoms)),
        mean_interaction_energy_per_atom=reference_residuals(numbers, energies, e0)[0],
        rms_forces=force_rms(forces) if atoms else 0.0,
        num_frames=len(train),
    )


def model_class(cfg: ModelConfig) -> type:
    """The registered class of ``model.name`` (:mod:`equitensor.models.registry`), checked for training.

    Raises:
        ConfigError: the name is not registered (listing those that are), the class cannot be
            built from a configuration, or a ``model.*`` key the class does not read is set.
    """
    from equitensor.models.registry import get_model_class

    try:
        cls = get_model_class(cfg.name)
    except ValueError as error:
        raise ConfigError(f"model.name: {error}") from None
    if not callable(getattr(cls, "for_training", None)):
        raise ConfigError(
            f"model.name: model {cfg.name!r} ({cls.__name__}) has no for_training(settings, statistics) "
            "classmethod, so it cannot be built from a training configuration"
        )
    defaults = ModelConfig()
    read = set(COMMON_MODEL_KEYS) | set(getattr(cls, "config_keys", ()))
    unread = [key for key in model_keys() if key not in read and getattr(cfg, key) != getattr(defaults, key)]
    if unread:
        raise ConfigError(
            f"model {cfg.name!r} does not read {', '.join(f'model.{key}' for key in unread)}; remove "
            f"{'it' if len(unread) == 1 else 'them'} or give the model's own arguments in model.extra"
        )
    return cls


def check_model_settings(cfg: ModelConfig) -> None:
    """Build the configured model once with placeholder statistics (one element, no data), so that a
    bad model name, backend, irreps string, ``extra`` key, ... is reported before any data is read.

    Raises:
        ConfigError: naming the model setting and the constructor's reason.
    """
    placeholder = DatasetStatistics(
        elements=[1], atomic_energies={1: 0.0}, avg_num_neighbors=1.0, mean_energy_per_atom=0.0,
        mean_interaction_energy_per_atom=0.0, rms_forces=1.0, num_frames=1,
    )  # fmt: skip
    cls = model_class(cfg)
    try:
        build_model(cfg, placeholder)
    except TypeError as error:  # an ``extra`` key the constructor does not take
        raise ConfigError(f"model.extra {cfg.extra}: {error}") from error
    except (ValueError, KeyError, RuntimeError, AssertionError) as error:
        settings = ", ".join(f"{k}={getattr(cfg, k)!r}" for k in getattr(cls, "config_keys", ()))
        raise ConfigError(f"model settings cannot build a model ({settings}): {error}") from error


def build_model(cfg: ModelConfig, stats: DatasetStatistics, allow_pickle: bool = False) -> torch.nn.Module:
    """The model ``model.name`` (default ``mace``) from the model config and the training-set
    statistics, through the registered class's ``for_training`` (e.g.
    :meth:`equitensor.models.MACE.for_training`).

    ``allow_pickle`` is the user's permission (``--allow-pickle``) to unpickle a mace-torch
    ``model.init_from`` file.
    """
    if cfg.init_from:  # fine-tuning: the foundation model's architecture and weights
        from .finetune import foundation_model

        return foundation_model(cfg, stats, allow_pickle)
    return model_class(cfg).for_training(cfg, stats)
