"""Typed training configuration: dataclasses loaded from YAML, with ``--set a.b=c`` overrides.

A configuration has five sections, each a dataclass: ``data``, ``model``, ``optim``, ``loss`` and
``train``. YAML files under ``equitensor/configs/`` give complete examples; any key left out keeps
its dataclass default. Every key is checked: an unknown key raises :class:`ConfigError` naming the
file (or the ``--set`` argument) and suggesting the closest valid key, and every value is coerced to
the field's type or rejected with the expected type in the message.

>>> cfg = load_config(None, overrides=["train.epochs=3", "optim.lr=0.005"])
>>> cfg.train.epochs, cfg.optim.lr
(3, 0.005)
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .run_log import LoggerUnavailable, check_logger_packages

__all__ = [
    "BUILTIN_CONFIGS",
    "Config",
    "ConfigError",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "builtin_config_path",
    "config_to_dict",
    "load_config",
]

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
BUILTIN_CONFIGS = ("demo", "oc20_s2ef", "ethanol", "3bpa")

#: why ``allow_pickle`` is refused in ``data.options`` (configs, checkpoints, ``--option``)
PICKLE_FROM_FILE = (
    "data.options.allow_pickle is not accepted from a config, a checkpoint or an option list: a file "
    "must not be able to grant itself permission to run code. Pass --allow-pickle on the command line "
    "(equitensor train / evaluate / data), or allow_pickle=True in the Python call, for legacy LMDB "
    "files you trust"
)


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the source and the key."""


@dataclass
class DataConfig:
    """Where the frames come from and how they become graphs.

    ``train`` is a path understood by ``equitensor.datasets.open_dataset`` (OC20 S2EF directory of
    ``*.extxyz``/``*.txt`` files, LMDB, ASE-LMDB, extxyz, ASE trajectory), or ``"demo"`` for the
    embedded demo dataset, generated on first use. A folder of files (``.aselmdb`` shards,
    ``.traj``, ``.extxyz``), a glob or a list of paths is read as one dataset. Relative paths are resolved against the
    directory of the YAML file that names them (for packaged configs and ``--set``, against the
    working directory).
    """

    train: str | list = "demo"
    #: validation data; ``None`` splits ``val_fraction`` of the training frames off (seeded).
    val: str | list | None = None
    #: optional test data, evaluated once with the best model at the end of training.
    test: str | list | None = None
    val_fraction: float = 0.1
    #: use at most this many training / validation frames (the first ones); ``None`` = all.
    max_train_frames: int | None = None
    max_val_frames: int | None = None
    #: extra keyword arguments passed to ``open_dataset`` (e.g. ``energy_key``, ``reference``).
    options: dict = field(default_factory=dict)
    #: atomic numbers the model may see; ``None`` = the elements of the training data. A frame with
    #: any other element is an error (never silently skipped).
    elements: list | None = None
    #: skip frames that fail validation (missing or non-finite labels, non-finite positions or
    #: cell, no atoms, ...: a ``DatasetError``) instead of stopping. Each split actually used is
    #: scanned once before training (one extra pass, or the graph cache's first fill), and the
    #: skipped frames are counted and the first reasons printed. Off: the first bad frame raises.
    skip_invalid: bool = False
    #: per-element reference energies: ``"fit"`` (least-squares linear fit on the training set;
    #: warns when under-determined), ``"zero"``, ``"isolated"`` (the training data's
    #: ``config_type=IsolatedAtom`` frames, as MACE), or a mapping ``{atomic_number_or_symbol: energy_eV}``.
    e0s: Any = "fit"
    #: frames of the demo dataset when ``train == "demo"`` and it has to be generated.
    demo_frames: int = 240
    #: seed of the demo dataset generator (independent of ``train.seed`` so the cached data is shared).
    demo_seed: int = 0
    #: keep graphs in memory after their first use (neighbour lists built once); turn off for
    #: datasets larger than RAM (OC20 S2EF) and use ``num_workers`` instead.
    cache_graphs: bool = True
    num_workers: int = 0


@dataclass
class ModelConfig:
    """The model: ``name`` picks the architecture (``equitensor.models.registered_models()``), the
    other keys are its settings.

    ``r_max``, ``extra``, ``init_from`` and ``init_e0s`` apply to any model; the rest are the
    settings of ``equitensor.models.MACE`` (MACE defaults from Batatia et al. 2022), read by
    models that list them in their ``config_keys``. Another architecture takes its own arguments
    from ``extra``.
    """

    #: registered model name (``mace``); fairchem's ``model: name:``.
    name: str = "mace"
    r_max: float = 5.0
    num_bessel: int = 8
    num_polynomial_cutoff: int = 5
    max_ell: int = 3
    hidden_irreps: str = "128x0e+128x1o"
    correlation: int = 3
    num_interactions: int = 2
    MLP_irreps: str = "16x0e"
    radial_MLP: list = field(default_factory=lambda: [64, 64, 64])
    #: ``"auto"`` = mean number of neighbours per atom in the training set, or a number.
    avg_num_neighbors: Any = "auto"
    conv_backend: str = "cg"
    product_backend: str = "cg"
    #: scale the interaction energy by the training rms force and shift it by the mean interaction
    #: energy per atom (mace-torch's ScaleShiftMACE with rms_forces_scaling).
    scale_shift: bool = True
    #: further keyword arguments passed unchanged to the model constructor.
    extra: dict = field(default_factory=dict)
    #: start from this model file (fine-tuning; its architecture wins): see ``train/finetune.py``.
    init_from: str | None = None
    #: E0s of an ``init_from`` model: ``keep`` its own, or ``data`` (from ``data.e0s``).
    init_e0s: str = "keep"


#: ``model.*`` keys every model reads (:func:`equitensor.train.setup.model_class`)
COMMON_MODEL_KEYS = ("name", "r_max", "extra", "init_from", "init_e0s")


def model_keys() -> list[str]:
    """Every key of the ``model`` section, in declaration order."""
    return [f.name for f in dataclasses.fields(ModelConfig)]


@dataclass
class OptimConfig:
    """Optimizer, learning-rate schedule and gradient clipping."""

    optimizer: str = "adam"  # adam | adamw
    lr: float = 0.01
    weight_decay: float = 5e-7
    amsgrad: bool = True
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    #: ``plateau`` (ReduceLROnPlateau on the validation loss, stepped per evaluation),
    #: ``cosine`` (linear warm-up then cosine decay to ``min_lr``, stepped per optimizer step),
    #: ``constant``.
    scheduler: str = "plateau"
    plateau_factor: float = 0.8
    plateau_patience: int = 50
    warmup_steps: int = 0
    min_lr: float = 0.0
    #: clip the global gradient norm to this value; ``None`` disables clipping.
    clip_grad_norm: float | None = 10.0


@dataclass
class LossConfig:
    """Weighted sum of energy-per-atom, force and stress errors (MACE's "weighted" loss)."""

    energy_weight: float = 1.0
    forces_weight: float = 100.0
    stress_weight: float = 0.0
    kind: str = "mse"  # mse | huber
    huber_delta: float = 0.01
    #: OC20 practice: the force term averages over free atoms (``fixed == False``) only.
    forces_on_free_atoms_only: bool = True


@dataclass
class TrainConfig:
    """Loop, precision, checkpoints and output."""

    epochs: int = 100
    #: stop after this many optimizer steps in total (``None`` = run all epochs).
    max_steps: int | None = None
    #: stop when this wall-clock budget is used up (checked after every step); ``None`` = no limit.
    time_limit_minutes: float | None = None
    #: global batch size (split evenly over DDP ranks).
    batch_size: int = 10
    #: size-aware batching: each rank's training batch holds at most this many atoms (systems
    #: packed in shuffled order, ranks balanced by atom count); ``batch_size`` is then unused.
    max_atoms_per_batch: int | None = None
    #: size-aware batching by edges: each rank's training batch holds at most this many directed
    #: edges within model.r_max (memory follows edges); alone or with max_atoms_per_batch (every
    #: bound holds); ranks are then balanced by edges.
    max_edges_per_batch: int | None = None
    val_batch_size: int = 20
    #: evaluate on the validation set every this many epochs (and after the last one).
    eval_every_epochs: int = 1
    #: write ``checkpoint.pt`` every this many optimizer steps (and always at the end).
    checkpoint_every_steps: int = 200
    ema: bool = True
    ema_decay: float = 0.99
    dtype: str = "float32"  # float32 | float64
    seed: int = 123
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    #: torch intra-op CPU threads (``torch.set_num_threads``); ``None`` keeps torch's default.
    threads: int | None = None
    out_dir: str = "runs/demo"
    #: ``auto`` shows tqdm bars only on a TTY; ``always`` / ``never`` force it.
    progress: str = "auto"
    #: write the learning-curve PNG at the end.
    plot: bool = True
    #: early stopping: stop once the validation loss has not improved for this many
    #: consecutive validations (``None`` = never stop early).
    patience: int | None = None
    #: also write the validation metrics as TensorBoard events under ``<out_dir>/tensorboard``
    #: (needs the ``tensorboard`` package).
    tensorboard: bool = False
    #: also log the validation metrics to Weights & Biases: keyword arguments of ``wandb.init``,
    #: e.g. ``{project: oc20, name: run1, mode: offline}``; ``None`` = off (needs ``wandb``).
    wandb: dict | None = None
    #: parameter-name prefixes or globs kept fixed during training (``train/finetune.py``).
    freeze: list = field(default_factory=list)


@dataclass
class Config:
    """A complete training configuration."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    #: the file this configuration was read from (not a key; informational).
    source: str = field(default="<defaults>", metadata={"internal": True})


_CHOICES = {
    ("optim", "optimizer"): ("adam", "adamw"),
    ("optim", "scheduler"): ("plateau", "cosine", "constant"),
    ("loss", "kind"): ("mse", "huber"),
    ("train", "dtype"): ("float32", "float64"),
    ("train", "progress"): ("auto", "always", "never"),
}


def builtin_config_path(name: str) -> Path:
    """Path of a packaged configuration (``demo``, ``oc20_s2ef``, ``ethanol``, ``3bpa``)."""
    return CONFIG_DIR / f"{name}.yaml"


def _sections() -> dict[str, type]:
    return {f.name: f.default_factory().__class__ for f in dataclasses.fields(Config) if not f.metadata}


def valid_keys() -> list[str]:
    """Every dotted key a configuration accepts, e.g. ``optim.lr``."""
    return [f"{s}.{f.name}" for s, cls in _sections().items() for f in dataclasses.fields(cls)]


#: names other codes (MACE, fairchem, PyTorch) use for our keys, for "did you mean" hints
KEY_ALIASES = {
    "learning_rate": "optim.lr",
    "lr_min": "optim.min_lr",
    "max_epochs": "train.epochs",
    "num_epochs": "train.epochs",
    "cutoff": "model.r_max",
    "r_cut": "model.r_max",
    "energy_key": "data.options",
    "forces_key": "data.options",
    "valid_fraction": "data.val_fraction",
    "valid_file": "data.val",
    "train_file": "data.train",
    "test_file": "data.test",
    "ema_decay": "train.ema_decay",
    "default_dtype": "train.dtype",
    "grad_clip": "optim.clip_grad_norm",
    "clip_grad": "optim.clip_grad_norm",
}


def _unknown_key_error(key: str, where: str) -> ConfigError:
    leaf = key.split(".")[-1]
    alias = difflib.get_close_matches(leaf, list(KEY_ALIASES), n=1, cutoff=0.8)
    close = [KEY_ALIASES[alias[0]]] if alias else []
    if not close:
        close = difflib.get_close_matches(key, valid_keys() + list(_sections()), n=1, cutoff=0.5)
    if not close:  # also try matching the last component only: "lr" -> "optim.lr"
        leaf = key.split(".")[-1]
        close = [k for k in valid_keys() if k.split(".")[-1] == leaf] or difflib.get_close_matches(
            leaf, [k.split(".")[-1] for k in valid_keys()], n=1, cutoff=0.6
        )
        close = [k for k in valid_keys() if k.split(".")[-1] in close][:1] if close else []
    hint = f"; did you mean '{close[0]}'?" if close else f"; valid sections: {', '.join(_sections())}"
    return ConfigError(f"{where}: unknown config key '{key}'{hint}")


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value, annotation, key: str, where: str):
    """Convert ``value`` (parsed YAML) to ``annotation`` or raise a :class:`ConfigError`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key, where)
            except ConfigError as exc:
                errors.append(str(exc))
        expected = " or ".join(_type_name(o) for o in options)
        raise ConfigError(f"{where}: {key} must be {expected}, got {value!r}")
    if annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: {key} must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: {key} must be an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: {key} must be a number, got {value!r}")
    if annotation is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: {key} must be a string, got {value!r}")
    if annotation is list or origin is list:
        if isinstance(value, (list, tuple)):
            return list(value)
        raise ConfigError(f"{where}: {key} must be a list, got {value!r}")
    if annotation is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"{where}: {key} must be a mapping, got {value!r}")
    return value


def _apply(cfg: Config, section: str, name: str, value, where: str) -> None:
    key = f"{section}.{name}"
    if section not in _sections():
        raise _unknown_key_error(section if not name else key, where)
    sub = getattr(cfg, section)
    hints = typing.get_type_hints(type(sub))
    if name not in hints:
        raise _unknown_key_error(key, where)
    setattr(sub, name, _coerce(value, hints[name], key, where))


def _apply_mapping(cfg: Config, mapping: dict, where: str) -> None:
    for section, body in mapping.items():
        if section not in _sections():
            raise _unknown_key_error(str(section), where)
        if body is None:
            continue
        if not isinstance(body, dict):
            raise ConfigError(f"{where}: section '{section}' must be a mapping of keys, got {body!r}")
        for name, value in body.items():
            _apply(cfg, section, str(name), value, where)


def _parse_override(text: str) -> tuple[str, str, Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected KEY=VALUE, e.g. --set optim.lr=0.005")
    key, raw = text.split("=", 1)
    key = key.strip()
    if key.count(".") != 1:
        raise _unknown_key_error(key, f"--set {text}")
    section, name = key.split(".")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text}: cannot parse value {raw!r}: {exc}") from exc
    return section, name, value


def _resolve_path(value: str, base: Path) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def _resolve_paths(cfg: Config, base: Path) -> None:
    for name in ("train", "val", "test"):
        value = getattr(cfg.data, name)
        if value is None or value == "demo":
            continue
        if isinstance(value, list):
            setattr(cfg.data, name, [_resolve_path(str(v), base) for v in value])
        else:
            setattr(cfg.data, name, _resolve_path(value, base))


def validate(cfg: Config) -> None:
    """Check value ranges and choices; raise :class:`ConfigError` naming the key."""
    where = cfg.source
    for (section, name), choices in _CHOICES.items():
        value = getattr(getattr(cfg, section), name)
        if value not in choices:
            raise ConfigError(f"{where}: {section}.{name} must be one of {', '.join(choices)}; got {value!r}")
    positive = {
        "train.batch_size": cfg.train.batch_size,
        "train.val_batch_size": cfg.train.val_batch_size,
        "train.eval_every_epochs": cfg.train.eval_every_epochs,
        "train.checkpoint_every_steps": cfg.train.checkpoint_every_steps,
        "optim.lr": cfg.optim.lr,
        "model.r_max": cfg.model.r_max,
        "data.demo_frames": cfg.data.demo_frames,
    }
    for key in ("max_atoms_per_batch", "max_edges_per_batch"):
        if getattr(cfg.train, key) is not None:
            positive[f"train.{key}"] = getattr(cfg.train, key)
    for key, value in positive.items():
        if not value > 0:
            raise ConfigError(f"{where}: {key} must be > 0, got {value!r}")
    _validate_model_and_optim(cfg, where)
    if "allow_pickle" in cfg.data.options:
        raise ConfigError(f"{where}: {PICKLE_FROM_FILE}")
    if cfg.train.epochs < 1:
        raise ConfigError(f"{where}: train.epochs must be >= 1, got {cfg.train.epochs}")
    if cfg.train.threads is not None and cfg.train.threads < 1:
        raise ConfigError(f"{where}: train.threads must be >= 1 or null, got {cfg.train.threads}")
    try:
        check_logger_packages(cfg.train)
    except LoggerUnavailable as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if cfg.train.patience is not None and cfg.train.patience < 1:
        raise ConfigError(f"{where}: train.patience must be >= 1 or null, got {cfg.train.patience}")
    if cfg.train.max_steps is not None and cfg.train.max_steps < 1:
        raise ConfigError(f"{where}: train.max_steps must be >= 1 or null, got {cfg.train.max_steps}")
    if not 0.0 <= cfg.data.val_fraction < 1.0:
        raise ConfigError(f"{where}: data.val_fraction must be in [0, 1), got {cfg.data.val_fraction}")
    if cfg.data.val is None and cfg.data.val_fraction == 0.0:
        raise ConfigError(f"{where}: no validation data: set data.val or a data.val_fraction > 0")
    if not 0.0 <= cfg.train.ema_decay < 1.0:
        raise ConfigError(f"{where}: train.ema_decay must be in [0, 1), got {cfg.train.ema_decay}")
    if len(cfg.optim.betas) != 2:
        raise ConfigError(f"{where}: optim.betas must have two entries, got {cfg.optim.betas}")
    for name in ("energy_weight", "forces_weight", "stress_weight"):
        if getattr(cfg.loss, name) < 0:
            raise ConfigError(f"{where}: loss.{name} must be >= 0, got {getattr(cfg.loss, name)}")
    if cfg.loss.energy_weight == cfg.loss.forces_weight == cfg.loss.stress_weight == 0:
        raise ConfigError(f"{where}: all loss weights are zero; nothing would be trained")
    e0s = cfg.data.e0s
    if not (e0s in ("fit", "zero", "isolated") or isinstance(e0s, dict)):
        raise ConfigError(
            f"{where}: data.e0s must be 'fit', 'zero' or a mapping element -> eV, or 'isolated', got {e0s!r}"
        )
    aan = cfg.model.avg_num_neighbors
    if not (aan == "auto" or (isinstance(aan, (int, float)) and not isinstance(aan, bool) and aan > 0)):
        raise ConfigError(
            f"{where}: model.avg_num_neighbors must be 'auto' or a positive number, got {aan!r}"
        )


def _validate_model_and_optim(cfg: Config, where: str) -> None:
    """Ranges of the model and optimiser settings that need no data (checked before any is read)."""
    at_least = {
        "model.num_bessel": (cfg.model.num_bessel, 1),
        "model.num_polynomial_cutoff": (cfg.model.num_polynomial_cutoff, 1),
        "model.max_ell": (cfg.model.max_ell, 0),
        "model.num_interactions": (cfg.model.num_interactions, 1),
        "optim.plateau_patience": (cfg.optim.plateau_patience, 0),
        "optim.warmup_steps": (cfg.optim.warmup_steps, 0),
    }
    for key, (value, low) in at_least.items():
        if value < low:
            raise ConfigError(f"{where}: {key} must be >= {low}, got {value}")
    correlation = cfg.model.correlation
    if not (isinstance(correlation, int) and not isinstance(correlation, bool) and correlation >= 1):
        raise ConfigError(f"{where}: model.correlation must be an integer >= 1, got {correlation!r}")
    if not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in cfg.model.radial_MLP):
        raise ConfigError(
            f"{where}: model.radial_MLP must be a list of positive widths, got {cfg.model.radial_MLP}"
        )
    finite = {
        "optim.lr": cfg.optim.lr,
        "optim.min_lr": cfg.optim.min_lr,
        "optim.weight_decay": cfg.optim.weight_decay,
        "model.r_max": cfg.model.r_max,
        "loss.huber_delta": cfg.loss.huber_delta,
    }
    for key, value in finite.items():
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {key} must be a finite number, got {value}")
    if cfg.optim.min_lr < 0 or cfg.optim.min_lr > cfg.optim.lr:
        raise ConfigError(
            f"{where}: optim.min_lr={cfg.optim.min_lr} must be between 0 and optim.lr={cfg.optim.lr}"
        )
    if cfg.optim.weight_decay < 0:
        raise ConfigError(f"{where}: optim.weight_decay must be >= 0, got {cfg.optim.weight_decay}")
    if cfg.optim.clip_grad_norm is not None and not cfg.optim.clip_grad_norm > 0:
        raise ConfigError(
            f"{where}: optim.clip_grad_norm must be > 0 or null, got {cfg.optim.clip_grad_norm}"
        )
    if not 0 < cfg.optim.plateau_factor < 1:
        raise ConfigError(f"{where}: optim.plateau_factor must be in (0, 1), got {cfg.optim.plateau_factor}")
    if not all(0 <= b < 1 for b in cfg.optim.betas):
        raise ConfigError(f"{where}: optim.betas must lie in [0, 1), got {cfg.optim.betas}")
    if not cfg.loss.huber_delta > 0:
        raise ConfigError(f"{where}: loss.huber_delta must be > 0, got {cfg.loss.huber_delta}")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML configuration (or the defaults when ``path`` is None), apply overrides, validate.

    Args:
        path: a YAML file, or the name of a packaged config (``demo``, ``ethanol``, ...).
        overrides: ``"section.key=value"`` strings; values are parsed as YAML
            (``optim.lr=1e-3``, ``model.radial_MLP=[32,32]``, ``data.val=null``).

    Raises:
        ConfigError: unreadable file, unknown key (with the closest valid key), wrong type or range.
    """
    cfg = Config()
    if path is not None:
        p = Path(path)
        packaged = not p.exists() and str(path) in BUILTIN_CONFIGS
        if packaged:
            p = builtin_config_path(str(path))
        if not p.is_file():
            raise ConfigError(
                f"config file not found: {path} (packaged configs: {', '.join(BUILTIN_CONFIGS)})"
            )
        try:
            mapping = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
        if not isinstance(mapping, dict):
            raise ConfigError(f"{p}: expected a mapping of sections (data, model, optim, loss, train)")
        cfg.source = str(p)
        _apply_mapping(cfg, mapping, str(p))
        # user files: relative to the file; packaged configs: relative to the working directory
        _resolve_paths(cfg, Path.cwd() if packaged else p.resolve().parent)
    _apply_overrides(cfg, overrides)
    validate(cfg)
    return cfg


def _apply_overrides(cfg: Config, overrides: list[str] | None) -> None:
    """``--set section.name=value`` items, in order; data paths given here are relative to the cwd."""
    for text in overrides or []:
        section, name, value = _parse_override(text)
        _apply(cfg, section, name, value, f"--set {text}")
        if section == "data" and name in ("train", "val", "test"):
            _resolve_paths(cfg, Path.cwd())


def config_to_dict(cfg: Config) -> dict:
    """Plain nested dict of the five sections (what checkpoints and ``config.yaml`` store)."""
    return {name: dataclasses.asdict(getattr(cfg, name)) for name in _sections()}


def config_from_dict(
    mapping: dict, where: str = "<checkpoint>", overrides: list[str] | None = None
) -> Config:
    """Inverse of :func:`config_to_dict`, with optional ``--set`` overrides (validated)."""
    cfg = Config(source=where)
    _apply_mapping(cfg, mapping, where)
    _apply_overrides(cfg, overrides)
    validate(cfg)
    return cfg


#: settings a resumed run may change; every other key must equal the checkpoint's
RESUMABLE_KEYS = frozenset(
    {
        "train.epochs", "train.max_steps", "train.time_limit_minutes", "train.eval_every_epochs",
        "train.checkpoint_every_steps", "train.val_batch_size", "train.threads", "train.progress",
        "train.plot", "train.device", "optim.lr", "optim.min_lr", "optim.weight_decay",
        "optim.clip_grad_norm", "optim.plateau_factor", "optim.plateau_patience", "loss.energy_weight",
        "loss.forces_weight", "loss.stress_weight", "loss.huber_delta", "data.test", "data.num_workers",
    }
)  # fmt: skip


def resume_changes(saved: dict, cfg: Config, where: str) -> dict[str, tuple[Any, Any]]:
    """Settings of ``cfg`` that differ from the checkpoint's configuration ``saved``.

    Returns ``{key: (checkpoint value, new value)}`` for the keys in :data:`RESUMABLE_KEYS`.

    Raises:
        ConfigError: a setting outside :data:`RESUMABLE_KEYS` differs (architecture, data, batch,
            seed, ...): naming each with both values, before anything is written.
    """
    current = config_to_dict(cfg)
    changed, fixed = {}, []
    for section, body in current.items():
        for name, value in body.items():
            key = f"{section}.{name}"
            old = saved.get(section, {}).get(name, value)
            if old == value:
                continue
            if key in RESUMABLE_KEYS:
                changed[key] = (old, value)
            else:
                fixed.append(f"{key} (checkpoint {old!r}, now {value!r})")
    if fixed:
        raise ConfigError(
            f"--resume {where}: these settings differ from the checkpoint and cannot change in a resumed "
            f"run: {'; '.join(fixed)}. Resume with the checkpoint's values, or start a new run with "
            "--overwrite or another train.out_dir"
        )
    return changed
