"""``equitensor train`` and ``equitensor evaluate``: argument parsing and error reporting only.

The work happens in :mod:`equitensor.train.setup` (data, statistics, model),
:class:`equitensor.train.trainer.Trainer` (the loop) and :mod:`equitensor.train.evaluate`.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

__all__ = ["add_train_commands", "run_evaluate", "run_train"]

TRAIN_EPILOG = """examples:
  equitensor train                                   # small MACE on the demo data (generated on first run)
  equitensor train --config ethanol --set train.epochs=50 --set optim.lr=0.005
  equitensor train --config my.yaml --resume         # continue from <out_dir>/checkpoint.pt
  torchrun --nproc_per_node 4 -m equitensor train --config oc20_s2ef --set data.train=/data/s2ef/200k/train
"""


def add_train_commands(subparsers) -> None:
    """Register ``train`` and ``evaluate`` on the top-level sub-parser."""
    train = subparsers.add_parser(
        "train",
        help="train a model from a YAML config (default: the demo config)",
        description="Train a model (model.name: mace by default, or any registered model). Configuration: "
        "YAML (packaged: demo, oc20_s2ef, ethanol, 3bpa) plus --set overrides; see docs/training.md for every key.",
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument(
        "--config", "-c", default=None, help="YAML file or packaged config name (default: demo)"
    )
    train.add_argument(
        "--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
        help="override a config key, e.g. --set optim.lr=0.005 train.epochs=20 (values are YAML)",
    )  # fmt: skip
    train.add_argument(
        "--resume", nargs="?", const="auto", default=None, metavar="CHECKPOINT",
        help="continue exactly from a checkpoint (default: <train.out_dir>/checkpoint.pt); without --config "
        "the checkpoint's own configuration is used (plus --set overrides)",
    )  # fmt: skip
    train.add_argument(
        "--overwrite", action="store_true",
        help="start a new run in a train.out_dir that holds an earlier run, replacing its files",
    )  # fmt: skip
    _add_allow_pickle(train)
    train.set_defaults(func=run_train)

    evaluate = subparsers.add_parser(
        "evaluate",
        help="evaluate a saved model on a dataset: metrics + per-frame predictions CSV",
    )
    evaluate.add_argument("--model", required=True, help="model file written by training (best_model.pt)")
    evaluate.add_argument(
        "--data",
        required=True,
        nargs="+",
        help="dataset path (any format open_dataset reads), a folder of files, a glob, or several paths (one dataset)",
    )
    evaluate.add_argument(
        "--out", default=None, help="predictions CSV (default: <model dir>/predictions_<data name>.csv)"
    )
    evaluate.add_argument("--batch-size", type=int, default=32)
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    evaluate.add_argument(
        "--option", dest="options", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
        help="keyword argument for open_dataset (e.g. energy_key=REF_energy)",
    )  # fmt: skip
    evaluate.add_argument(
        "--all-atoms", action="store_true", help="force metrics over all atoms, fixed ones included"
    )
    _add_allow_pickle(evaluate)
    evaluate.add_argument("--max-frames", type=int, default=None, help="evaluate only the first N frames")
    evaluate.set_defaults(func=run_evaluate)


def _add_allow_pickle(parser) -> None:
    parser.add_argument(
        "--allow-pickle", action="store_true",
        help="allow reading legacy (pickled) OC20 LMDB files: unpickling runs code from the file, "
        "so only for files you trust; never taken from a config or checkpoint",
    )  # fmt: skip


def _load_run_config(args):
    """The run's configuration and the checkpoint to resume (or None); refuses a resume whose
    settings cannot change before anything is read or written."""
    from .checkpoint import load_checkpoint
    from .config import ConfigError, config_from_dict, load_config, resume_changes

    if args.resume is not None and args.overwrite:
        raise ConfigError("--resume and --overwrite exclude each other: continue the run or replace it")
    if args.resume not in (None, "auto") and args.config is None:
        state = load_checkpoint(args.resume)
        cfg = config_from_dict(state["config"], where=str(args.resume), overrides=args.overrides)
        resume_changes(state["config"], cfg, str(args.resume))
        return cfg, args.resume
    cfg = load_config(args.config or "demo", args.overrides)
    resume = None
    if args.resume == "auto":
        resume = Path(cfg.train.out_dir) / "checkpoint.pt"
    elif args.resume is not None:
        resume = args.resume
    if resume is not None:
        resume_changes(load_checkpoint(resume)["config"], cfg, str(resume))
    return cfg, resume


def run_train(args) -> int:
    """Handler of ``equitensor train``."""
    from equitensor.cli import fail

    from .config import ConfigError

    try:
        return _train(args)
    except (ConfigError, OSError, ValueError) as error:
        return fail("train", error)


def _train(args) -> int:
    from equitensor.models import load_model, save_model

    from .config import config_to_dict
    from .distributed import init_distributed
    from .evaluate import evaluate_model, write_predictions
    from .metrics import format_metrics
    from .finetune import freeze_parameters
    from .rundir import prepare_out_dir, remove_run_files
    from .setup import build_model, check_elements, check_model_settings, compute_statistics, prepare_data
    from .trainer import DTYPES, Trainer, seed_everything

    cfg, resume = _load_run_config(args)
    ctx = init_distributed(cfg.train.device)
    try:
        dtype = DTYPES[cfg.train.dtype]
        torch.set_default_dtype(dtype)
        if cfg.train.threads is not None:
            torch.set_num_threads(cfg.train.threads)
        check_model_settings(cfg.model)
        replaced = []
        if ctx.is_main:
            replaced = prepare_out_dir(cfg.train.out_dir, resume is not None, args.overwrite)
        seed_everything(cfg.train.seed)
        splits = prepare_data(cfg.data, cfg.model.r_max, cfg.train.seed, ctx, allow_pickle=args.allow_pickle)
        stats = compute_statistics(splits.train, cfg.data)
        key = "data.elements" if cfg.data.elements else "elements of the training data"
        check_elements(splits.val, stats.elements, splits.sources["val"], key)
        if splits.test is not None:
            check_elements(splits.test, stats.elements, splits.sources["test"], key)
        if ctx.is_main:
            print(f"data: {splits.describe()}", flush=True)
            print(f"statistics: {stats.describe()}", flush=True)
            import yaml

            from equitensor.atomic import atomic_write

            remove_run_files(replaced)
            with atomic_write(Path(cfg.train.out_dir) / "config.yaml") as handle:
                handle.write(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        seed_everything(cfg.train.seed)
        model = build_model(cfg.model, stats, allow_pickle=args.allow_pickle)
        freeze_parameters(model, cfg.train.freeze)
        trainer = Trainer(
            cfg, model, splits.train, splits.val, dist=ctx, save_best=save_model,
            baseline_energy_per_atom=stats.mean_energy_per_atom,
        )  # fmt: skip
        result = trainer.fit(resume=resume)
        best = Path(cfg.train.out_dir) / "best_model.pt"
        if ctx.is_main:
            print(f"done in {result.elapsed_s:.0f} s ({result.stop_reason}); best model: {best}; "
                  f"metrics: {Path(cfg.train.out_dir) / 'metrics.csv'}", flush=True)  # fmt: skip
            if splits.test is not None and best.is_file():
                metrics, rows = evaluate_model(
                    load_model(best), splits.test, cfg.train.val_batch_size, trainer.device, dtype,
                    cfg.loss.forces_on_free_atoms_only, trainer.show_progress,
                )  # fmt: skip
                path = write_predictions(rows, Path(cfg.train.out_dir) / "test_predictions.csv")
                print(
                    f"test ({splits.sources['test']}): {format_metrics(metrics)}; predictions: {path}",
                    flush=True,
                )
        ctx.barrier()
        return 0
    finally:
        ctx.close()


def run_evaluate(args) -> int:
    """Handler of ``equitensor evaluate``."""
    from equitensor.cli import fail

    from .config import ConfigError

    try:
        return _evaluate(args)
    except (ConfigError, OSError, ValueError) as error:
        return fail("evaluate", error)


def _evaluate(args) -> int:
    import yaml

    from equitensor.models import load_model

    from .distributed import resolve_device
    from .evaluate import evaluate_model, write_predictions
    from .metrics import format_metrics
    from .predictions import PredictionWriter, plot_parity
    from .setup import check_elements, open_graphs

    model_path = Path(args.model)
    options = {}
    for text in args.options:
        if "=" not in text:
            raise ValueError(f"--option {text}: expected KEY=VALUE")
        key, raw = text.split("=", 1)
        options[key] = yaml.safe_load(raw)
    model = load_model(model_path)
    data = args.data[0] if len(args.data) == 1 else args.data
    dataset = open_graphs(data, model.r_max, options, allow_pickle=args.allow_pickle)
    if args.max_frames is not None and args.max_frames < len(dataset):
        dataset = torch.utils.data.Subset(dataset, range(max(args.max_frames, 0)))
    if len(dataset) == 0:
        raise ValueError(f"{' '.join(args.data)} holds no frames: nothing to evaluate")
    check_elements(dataset, model.atomic_numbers, str(data), key="elements of the model")
    name = re.sub(r"[^\w.-]+", "_", Path(args.data[0]).stem).strip("_") or "data"  # a glob has no plain stem
    out = Path(args.out) if args.out else model_path.parent / f"predictions_{name}.csv"
    per_atom = PredictionWriter(out.with_suffix(".extxyz"), free_atoms_only=not args.all_atoms)
    metrics, rows = evaluate_model(
        model, dataset, args.batch_size, resolve_device(args.device), getattr(torch, args.dtype),
        free_atoms_only=not args.all_atoms, progress=sys.stderr.isatty(), on_batch=per_atom,
    )  # fmt: skip
    write_predictions(rows, out)
    per_atom.close()
    parity = plot_parity(per_atom, out.with_name(out.stem + "_parity.png"))
    print(f"{' '.join(args.data)}: {len(rows)} frames")
    print(format_metrics(metrics))
    for key, value in metrics.items():
        print(f"  {key:<22} {value:.6g}")
    print(f"per-frame predictions: {out}; per-atom (extxyz): {per_atom.path}; parity plot: {parity}")
    return 0
