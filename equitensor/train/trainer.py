"""The training loop: optimisation, evaluation, checkpoints, logging, DDP.

:class:`Trainer` receives a built model and two graph datasets; what the model is and where the
graphs come from is decided by the caller (``equitensor.train.setup`` for the CLI). The loop is
deliberately plain: one method per step, evaluation, checkpoint and logging concern.
"""

from __future__ import annotations

import contextlib
import csv
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Subset
from torch_geometric.loader import DataLoader
from tqdm.auto import tqdm

from ..atomic import atomic_write
from ..datasets.loader import graph_loader
from ..models.io import DTYPES
from .checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from .config import Config, config_to_dict, resume_changes
from .run_log import RunLog, check_logger_packages
from .distributed import DistContext, ResumableDistributedSampler, all_reduce_sum, resolve_device
from .ema import ExponentialMovingAverage
from .losses import LossTerms, WeightedLoss
from .metrics import MetricAccumulator, format_metrics

__all__ = ["TrainResult", "Trainer", "batch_to", "mean_baseline_metrics", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def batch_to(batch, device: torch.device, dtype: torch.dtype):
    """Move a PyG batch to ``device`` and cast its floating tensors to ``dtype``."""
    batch = batch.to(device)
    for key, value in batch:
        if torch.is_tensor(value) and torch.is_floating_point(value) and value.dtype != dtype:
            batch[key] = value.to(dtype)
    return batch


def mean_baseline_metrics(loader, energy_per_atom: float, free_atoms_only: bool, ctx: DistContext) -> dict:
    """Metrics of the mean predictor: ``E = energy_per_atom * N_atoms`` and zero forces."""
    acc = MetricAccumulator(free_atoms_only)
    for batch in loader:
        natoms = torch.bincount(batch.batch, minlength=batch.num_graphs).to(torch.float64)
        pred = {
            "energy": energy_per_atom * natoms,
            "forces": torch.zeros_like(batch.forces, dtype=torch.float64),
        }
        acc.update(pred, batch)
    acc.merge_sums(all_reduce_sum(acc.sums, ctx))
    return acc.compute()


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns."""

    history: list[dict]
    final_metrics: dict
    baseline_metrics: dict | None
    best_val_loss: float
    global_step: int
    elapsed_s: float
    stop_reason: str
    out_dir: Path
    step_losses: list[float] = field(default_factory=list)


class Trainer:
    """Train ``model`` on ``train_set``, validate on ``val_set``.

    Args:
        config: the complete configuration (``optim``, ``loss``, ``train`` sections are used here).
        model: an ``nn.Module`` with ``forward(batch, compute_forces, compute_stress, training)``
            returning ``energy`` [B], ``forces`` [N,3] and ``stress`` [B,3,3] or None.
        train_set, val_set: sequences of ``torch_geometric.data.Data`` graphs.
        dist: the process's place in a DDP job (default: one process on ``config.train.device``).
        save_best: ``save_best(model, path)`` writes the best-by-validation model (EMA weights when
            EMA is on); ``None`` disables it.
        baseline_energy_per_atom: training-set mean energy per atom; when given, the mean
            predictor's validation metrics are printed next to the model's.
    """

    def __init__(
        self,
        config: Config,
        model: torch.nn.Module,
        train_set: Sequence,
        val_set: Sequence,
        *,
        dist: DistContext | None = None,
        save_best: Callable[[torch.nn.Module, Path], None] | None = None,
        baseline_energy_per_atom: float | None = None,
    ):
        self.config = config
        tc = config.train
        self.dist = dist or DistContext(device=resolve_device(tc.device))
        if tc.batch_size % self.dist.world_size:
            raise ValueError(
                f"train.batch_size={tc.batch_size} is the global batch; it must be divisible by the "
                f"number of processes ({self.dist.world_size})"
            )
        if len(train_set) == 0 or len(val_set) == 0:
            raise ValueError(f"empty dataset: {len(train_set)} training and {len(val_set)} validation frames")
        self.device = self.dist.device
        self.dtype = DTYPES[tc.dtype]
        self.model = model.to(device=self.device, dtype=self.dtype)
        self.train_model = (
            DistributedDataParallel(
                self.model, device_ids=[self.device] if self.device.type == "cuda" else None
            )
            if self.dist.enabled
            else self.model
        )
        self.loss_fn = WeightedLoss(config.loss)
        self.optimizer = self._build_optimizer()
        self.local_batch_size = tc.batch_size // self.dist.world_size
        self.sampler = ResumableDistributedSampler(
            train_set, self.dist.world_size, self.dist.rank, shuffle=True, seed=tc.seed
        )
        self.train_loader = graph_loader(
            train_set,
            batch_size=self.local_batch_size,
            sampler=self.sampler,
            num_workers=config.data.num_workers,
        )
        self.steps_per_epoch = math.ceil(self.sampler.num_samples / self.local_batch_size)
        self.show_progress = self.dist.is_main and (
            tc.progress == "always" or (tc.progress == "auto" and sys.stderr.isatty())
        )
        if tc.max_atoms_per_batch or tc.max_edges_per_batch:
            self._use_batch_budget(train_set, config.data.num_workers)
        val_shard = Subset(val_set, list(range(self.dist.rank, len(val_set), self.dist.world_size)))
        self.val_loader = DataLoader(val_shard, batch_size=tc.val_batch_size, shuffle=False)
        self.total_steps = tc.max_steps or tc.epochs * self.steps_per_epoch
        self.scheduler = self._build_scheduler()
        self.ema = ExponentialMovingAverage(self.model.parameters(), tc.ema_decay) if tc.ema else None
        self.save_best = save_best
        self.baseline_energy_per_atom = baseline_energy_per_atom
        self.out_dir = Path(tc.out_dir)
        check_logger_packages(tc)
        self.run_log = RunLog(self.out_dir, self.dist.is_main, tc, config_to_dict(config))
        # progress state (all of it goes into checkpoints)
        self.epoch = 0
        self.batch_in_epoch = 0
        self.global_step = 0
        self.epoch_loss_sum = 0.0
        self.epoch_steps = 0
        self.best_val_loss = math.inf
        self.validations_since_best = 0
        self.history: list[dict] = []
        self.step_losses: list[float] = []
        self.elapsed_before = 0.0

    # ----------------------------------------------------------------- construction helpers
    def _use_batch_budget(self, train_set: Sequence, num_workers: int) -> None:
        """Batches bounded per rank by atoms and/or edges (``train.max_atoms_per_batch``,
        ``train.max_edges_per_batch``) instead of a fixed size; every rank plans the same epoch."""
        from equitensor.datasets.batching import BudgetBatchSampler

        tc = self.config.train
        edges = self._edge_counts(train_set) if tc.max_edges_per_batch else None
        self.sampler = BudgetBatchSampler(
            train_set, tc.max_atoms_per_batch, self.dist.world_size, self.dist.rank, seed=tc.seed,
            max_edges=tc.max_edges_per_batch, edges=edges,
        )  # fmt: skip
        self.train_loader = graph_loader(train_set, batch_sampler=self.sampler, num_workers=num_workers)
        self.local_batch_size = 1  # the sampler yields whole batches: set_start counts batches
        self.steps_per_epoch = self.sampler.num_batches

    def _edge_counts(self, train_set: Sequence) -> np.ndarray:
        """[len(train_set)] edges of every training graph, on the graphs' own cut-off. Each rank
        counts every ``world_size``-th item (neighbour lists are the cost) and the sum over ranks
        hands all counts to every rank."""
        from equitensor.datasets.batching import edge_counts

        mine = list(range(self.dist.rank, len(train_set), self.dist.world_size))
        counts = torch.zeros(len(train_set), dtype=torch.int64)
        counts[mine] = torch.from_numpy(edge_counts(Subset(train_set, mine), progress=self.show_progress))
        return all_reduce_sum(counts, self.dist).numpy()

    def _build_optimizer(self) -> torch.optim.Optimizer:
        oc = self.config.optim
        cls = torch.optim.Adam if oc.optimizer == "adam" else torch.optim.AdamW
        return cls(
            self.model.parameters(),
            lr=oc.lr,
            betas=tuple(oc.betas),
            weight_decay=oc.weight_decay,
            amsgrad=oc.amsgrad,
        )

    def _build_scheduler(self):
        oc = self.config.optim
        if oc.scheduler == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode="min", factor=oc.plateau_factor, patience=oc.plateau_patience
            )
        if oc.scheduler == "constant":
            return torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: 1.0)
        warmup, total, floor = oc.warmup_steps, max(self.total_steps, 1), oc.min_lr / oc.lr

        def cosine(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

        return torch.optim.lr_scheduler.LambdaLR(self.optimizer, cosine)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def log(self, text: str) -> None:
        """Print on rank 0 only (through tqdm so bars are not torn) and append to ``train.log``."""
        self.run_log.line(text)

    # ----------------------------------------------------------------- steps
    def _forward(self, model, batch, training: bool) -> dict:
        return model(
            batch,
            compute_forces=True,
            compute_stress=self.config.loss.stress_weight > 0,
            training=training,
        )

    def train_step(self, batch) -> float:
        """One optimizer step on one (local) batch; returns the global-batch loss."""
        batch = batch_to(batch, self.device, self.dtype)
        self.model.train()
        pred = self._forward(self.train_model, batch, training=True)
        terms = self.loss_fn.terms(pred, batch)
        global_counts = all_reduce_sum(terms.counts, self.dist)
        loss = self.loss_fn.combine(terms, global_counts, self.dist.world_size)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite loss {loss.item()} at step {self.global_step + 1} (epoch {self.epoch + 1}); "
                "lower optim.lr or check the data"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.optim.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.clip_grad_norm)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update()
        if self.config.optim.scheduler != "plateau":
            self.scheduler.step()
        # the global loss is the mean over ranks of the rank losses (see losses.py)
        return float(all_reduce_sum(loss.detach().reshape(1), self.dist).item()) / self.dist.world_size

    def _averaged(self):
        return self.ema.average_parameters() if self.ema is not None else contextlib.nullcontext()

    def evaluate(self, loader, desc: str = "validate") -> tuple[dict, float]:
        """Metrics and weighted loss of the (EMA-averaged) model over ``loader``, reduced over ranks."""
        acc = MetricAccumulator(self.config.loss.forces_on_free_atoms_only)
        total = None
        self.model.eval()
        with self._averaged():
            for batch in tqdm(loader, desc=desc, leave=False, disable=not self.show_progress):
                batch = batch_to(batch, self.device, self.dtype)
                pred = self._forward(self.model, batch, training=False)
                pred = {k: (v.detach() if torch.is_tensor(v) else v) for k, v in pred.items()}
                acc.update(pred, batch)
                terms = self.loss_fn.terms(pred, batch)
                total = terms if total is None else total + terms
        if total is None:  # this rank's validation shard is empty (fewer frames than ranks)
            total = LossTerms(torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
        sums = torch.cat([acc.sums, total.sums.double().cpu(), total.counts.double().cpu()])
        sums = all_reduce_sum(sums, self.dist)
        n = acc.sums.numel()
        acc.merge_sums(sums[:n])
        reduced = LossTerms(sums[n : n + 3], sums[n + 3 :])
        loss = float(self.loss_fn.combine(reduced).item())
        return acc.compute(), loss

    # ----------------------------------------------------------------- checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    def state_dict(self) -> dict:
        return {
            "config": config_to_dict(self.config),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": capture_rng_state(),
            "progress": {
                "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch,
                "global_step": self.global_step,
                "epoch_loss_sum": self.epoch_loss_sum,
                "epoch_steps": self.epoch_steps,
                "best_val_loss": self.best_val_loss,
                "validations_since_best": self.validations_since_best,
                "history": self.history,
                "step_losses": self.step_losses,
                "elapsed_s": self.elapsed_before + self._elapsed(),
                "world_size": self.dist.world_size,
            },
        }

    def save_checkpoint(self) -> None:
        if self.dist.is_main:
            save_checkpoint(self.state_dict(), self.checkpoint_path)
        self.dist.barrier()

    def load_state(self, path: str | Path) -> None:
        """Restore everything from a checkpoint so training continues exactly."""
        state = load_checkpoint(path, map_location=self.device)
        changes = resume_changes(state["config"], self.config, str(path))
        progress = state["progress"]
        if progress["world_size"] != self.dist.world_size:
            self.log(
                f"note: checkpoint was written by {progress['world_size']} process(es), resuming with "
                f"{self.dist.world_size}; the sample order of the interrupted epoch differs"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            if state["ema"] is None:
                raise ValueError(f"{path}: checkpoint has no EMA state but train.ema is true")
            self.ema.load_state_dict(state["ema"])
        self._apply_resumed_settings("optim.lr" in changes)
        if changes:
            self.log(
                "resumed with changed settings: "
                + ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changes.items())
            )
        restore_rng_state(state["rng"])
        self.epoch = progress["epoch"]
        self.batch_in_epoch = progress["batch_in_epoch"]
        self.global_step = progress["global_step"]
        self.epoch_loss_sum = progress["epoch_loss_sum"]
        self.epoch_steps = progress["epoch_steps"]
        self.best_val_loss = progress["best_val_loss"]
        self.validations_since_best = progress.get("validations_since_best", 0)
        self.history = list(progress["history"])
        self.step_losses = list(progress["step_losses"])
        self.elapsed_before = progress["elapsed_s"]

    def _apply_resumed_settings(self, lr_changed: bool) -> None:
        """Make the restored optimizer and scheduler follow the current ``optim`` settings.

        The optimizer's state dict carries the checkpoint's hyperparameters; the ones a resumed
        run may change are set from the configuration here. With unchanged settings every value
        is recomputed to the same float, so an exact resume stays exact.
        """
        oc = self.config.optim
        for group in self.optimizer.param_groups:
            group["weight_decay"] = oc.weight_decay
        if isinstance(self.scheduler, torch.optim.lr_scheduler.LambdaLR):
            self.scheduler.base_lrs = [oc.lr for _ in self.optimizer.param_groups]
            for group, base, factor in zip(
                self.optimizer.param_groups, self.scheduler.base_lrs, self.scheduler.lr_lambdas
            ):
                group["initial_lr"] = base
                group["lr"] = base * factor(self.scheduler.last_epoch)
        else:  # ReduceLROnPlateau: its reductions so far stand unless the lr itself was set anew
            self.scheduler.factor = oc.plateau_factor
            self.scheduler.patience = oc.plateau_patience
            if lr_changed:
                for group in self.optimizer.param_groups:
                    group["lr"] = oc.lr
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    # ----------------------------------------------------------------- output
    def _elapsed(self) -> float:
        return time.perf_counter() - self._start if hasattr(self, "_start") else 0.0

    def _write_csv(self) -> None:
        if not self.dist.is_main or not self.history:
            return
        keys = list(dict.fromkeys(k for row in self.history for k in row))
        with atomic_write(self.out_dir / "metrics.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.history)

    def _plot(self) -> None:
        if not (self.dist.is_main and self.config.train.plot and self.history):
            return
        from .plots import plot_learning_curve

        plot_learning_curve(self.history, self.out_dir / "learning_curve.png")

    def _save_best(self) -> None:
        if self.save_best is None or not self.dist.is_main:
            return
        with self._averaged():
            self.save_best(self.model, self.out_dir / "best_model.pt")

    # ----------------------------------------------------------------- the loop
    def _end_of_epoch(self) -> None:
        tc = self.config.train
        train_loss = self.epoch_loss_sum / max(self.epoch_steps, 1)
        epoch_number = self.epoch + 1
        if epoch_number % tc.eval_every_epochs == 0 or epoch_number == tc.epochs:
            metrics, val_loss = self.evaluate(self.val_loader)
            if self.config.optim.scheduler == "plateau":
                self.scheduler.step(val_loss)
            improved = val_loss < self.best_val_loss
            self.validations_since_best = 0 if improved else self.validations_since_best + 1
            if improved:
                self.best_val_loss = val_loss
                self._save_best()
            row = {
                "epoch": epoch_number,
                "step": self.global_step,
                "lr": self.lr,
                "train_loss": train_loss,
                "val_loss": val_loss,
                **{f"val_{k}": v for k, v in metrics.items()},
                "elapsed_s": self.elapsed_before + self._elapsed(),
            }
            self.history.append(row)
            self._write_csv()
            self.run_log.scalars(row, self.global_step)
            self.log(
                f"epoch {epoch_number}/{tc.epochs} step {self.global_step} lr {self.lr:.2e} "
                f"train {train_loss:.4g} val {val_loss:.4g}{' *' if improved else ''} | "
                f"{format_metrics(metrics)} | {row['elapsed_s']:.0f} s"
            )
        else:
            self.log(
                f"epoch {epoch_number}/{tc.epochs} step {self.global_step} lr {self.lr:.2e} train {train_loss:.4g}"
            )
        self.epoch += 1
        self.batch_in_epoch = 0
        self.epoch_loss_sum = 0.0
        self.epoch_steps = 0

    def _stop_reason(self) -> str | None:
        tc = self.config.train
        if tc.max_steps is not None and self.global_step >= tc.max_steps:
            return "max_steps"
        if tc.patience is not None and self.validations_since_best >= tc.patience:
            return "patience"
        if (
            tc.time_limit_minutes is not None
            and self.elapsed_before + self._elapsed() >= 60 * tc.time_limit_minutes
        ):
            return "time_limit"
        return None

    def fit(self, resume: str | Path | None = None) -> TrainResult:
        """Train until ``train.epochs``, ``train.max_steps`` or the time limit; return the result."""
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.run_log.open()
        try:
            return self._fit(resume)
        finally:
            self.run_log.close()

    def _fit(self, resume: str | Path | None) -> TrainResult:
        baseline = self._begin(resume)
        stop = self._stop_reason()
        while stop is None and self.epoch < self.config.train.epochs:
            stop = self._train_epoch()
            if stop is None or self.batch_in_epoch >= self.steps_per_epoch:
                self._end_of_epoch()
                stop = stop or self._stop_reason()
        stop = stop or "epochs"
        self.save_checkpoint()
        final = self._final_metrics(stop)
        return self._finish(stop, final, baseline)

    def _begin(self, resume: str | Path | None) -> dict | None:
        """Restore ``resume`` (if given), start the clock, log the run; the mean predictor's metrics."""
        tc = self.config.train
        if resume is not None:
            self.load_state(resume)
            self.log(f"resumed from {resume}: epoch {self.epoch + 1}, step {self.global_step}")
        self._start = time.perf_counter()
        baseline = None
        if self.baseline_energy_per_atom is not None:
            baseline = mean_baseline_metrics(
                self.val_loader,
                self.baseline_energy_per_atom,
                self.config.loss.forces_on_free_atoms_only,
                self.dist,
            )
            self.log(f"mean-predictor baseline (val): {format_metrics(baseline)}")
        n_params = sum(p.numel() for p in self.model.parameters())
        bounds = [
            f"{bound} {quantity}"
            for quantity, bound in (("atoms", tc.max_atoms_per_batch), ("edges", tc.max_edges_per_batch))
            if bound
        ]
        batch = f"batches of at most {' and '.join(bounds)} per process" if bounds else f"global batch {tc.batch_size}"
        self.log(
            f"training {n_params:,} parameters on {len(self.sampler.dataset)} frames, validating on "
            f"{len(self.val_loader.dataset.dataset)}: {self.steps_per_epoch} steps/epoch, {batch} "
            f"over {self.dist.world_size} process(es), {self.device}, {tc.dtype}"
        )
        return baseline

    def _train_epoch(self) -> str | None:
        """The optimizer steps of the current epoch from ``batch_in_epoch`` on; the reason to stop
        early (``max_steps``, ``patience``, ``time_limit``) or ``None`` when the epoch ran out."""
        tc = self.config.train
        self.sampler.set_epoch(self.epoch)
        self.steps_per_epoch = getattr(self.sampler, "num_batches", self.steps_per_epoch)  # may vary
        self.sampler.set_start(self.batch_in_epoch * self.local_batch_size)
        bar = tqdm(
            self.train_loader,
            desc=f"epoch {self.epoch + 1}/{tc.epochs}",
            total=self.steps_per_epoch,
            initial=self.batch_in_epoch,
            leave=False,
            disable=not self.show_progress,
        )
        stop = None
        for batch in bar:
            loss = self.train_step(batch)
            self.global_step += 1
            self.batch_in_epoch += 1
            self.epoch_loss_sum += loss
            self.epoch_steps += 1
            self.step_losses.append(loss)
            bar.set_postfix(loss=f"{loss:.4g}", lr=f"{self.lr:.1e}")
            if self.global_step % tc.checkpoint_every_steps == 0:
                self.save_checkpoint()
            stop = self._stop_reason()
            if stop is not None:
                break
        bar.close()
        return stop

    def _final_metrics(self, stop: str) -> dict:
        """Validation metrics of the last model: a final validation when training stopped after the
        last one (saving the model when it is the best), else the last validation's."""
        if stop != "epochs" and (not self.history or self.history[-1]["step"] != self.global_step):
            final, final_loss = self.evaluate(self.val_loader, desc="final validation")
            if final_loss < self.best_val_loss:
                self.best_val_loss = final_loss
                self._save_best()
            self.log(
                f"stopped ({stop}) at step {self.global_step}: val {final_loss:.4g} | {format_metrics(final)}"
            )
            return final
        return _validation_metrics(self.history[-1])

    def _finish(self, stop: str, final: dict, baseline: dict | None) -> TrainResult:
        """Log the best and last models' metrics, plot, and return the run's result."""
        if self.history:
            best = min(self.history, key=lambda row: row["val_loss"])
            if best["val_loss"] <= self.best_val_loss:  # else the final validation was the best
                self.log(f"best model (val, epoch {best['epoch']}): {format_metrics(_validation_metrics(best))}")
        if baseline is not None:
            self.log(f"last model (val): {format_metrics(final)}")
            self.log(f"mean baseline (val): {format_metrics(baseline)}")
        self._plot()
        return TrainResult(
            history=self.history,
            final_metrics=final,
            baseline_metrics=baseline,
            best_val_loss=self.best_val_loss,
            global_step=self.global_step,
            elapsed_s=self.elapsed_before + self._elapsed(),
            stop_reason=stop,
            out_dir=self.out_dir,
            step_losses=list(self.step_losses),
        )


def _validation_metrics(row: dict) -> dict:
    """The validation metrics of a history row (its ``val_*`` entries but the loss, unprefixed)."""
    return {k[4:]: v for k, v in row.items() if k.startswith("val_") and k != "val_loss"}
