"""Where a training run reports: the console, ``train.log`` in the output folder, and optionally
TensorBoard and Weights & Biases.

``train.log`` receives every line the trainer prints, prefixed with the wall-clock time; it is
opened in append mode, so a resumed run continues the same file, and flushed after every line,
so a killed run loses at most the line being written. TensorBoard (``train.tensorboard: true``,
events under ``<out_dir>/tensorboard``) and Weights & Biases (``train.wandb: {project: ...}``)
receive the validation metrics of every evaluated epoch; both are optional packages, checked
when the run is configured (:func:`check_logger_packages`) so that a missing one fails before
any data is read.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

#: the package each optional logger imports, and how to install it.
LOGGER_PACKAGES = {
    "tensorboard": ("tensorboard", "pip install tensorboard"),
    "wandb": ("wandb", "pip install wandb"),
}


class LoggerUnavailable(RuntimeError):
    """An optional logger was asked for but its package is not installed."""


def requested_loggers(train_config) -> list[str]:
    """Names of the optional loggers a :class:`~equitensor.train.config.TrainConfig` asks for."""
    names = []
    if train_config.tensorboard:
        names.append("tensorboard")
    if train_config.wandb is not None:
        names.append("wandb")
    return names


def check_logger_packages(train_config) -> None:
    """Raise :class:`LoggerUnavailable` naming the package and the fix for each missing logger."""
    for name in requested_loggers(train_config):
        module, install = LOGGER_PACKAGES[name]
        if importlib.util.find_spec(module) is None:
            key = "train.tensorboard: true" if name == "tensorboard" else "train.wandb"
            raise LoggerUnavailable(
                f"{key} needs the {module!r} package, which is not installed: run `{install}` "
                f"or remove {key.split(':')[0]} from the configuration"
            )


class RunLog:
    """The run's reporting channels; only the main process (``enabled``) writes anything.

    Args:
        out_dir: the run's output folder (``train.log`` and ``tensorboard/`` go there).
        enabled: ``False`` on non-zero DDP ranks: they print and write nothing.
        train_config: the ``train`` section (``tensorboard``, ``wandb``).
        run_config: the whole configuration as a plain dict, recorded by W&B.
    """

    def __init__(self, out_dir: Path, enabled: bool, train_config=None, run_config: dict | None = None):
        self.out_dir = Path(out_dir)
        self.enabled = enabled
        self.train_config = train_config
        self.run_config = run_config or {}
        self._file = None
        self._tensorboard = None
        self._wandb = None

    def open(self) -> None:
        """Open ``train.log`` (append) and the optional loggers; call once the folder exists."""
        if not self.enabled:
            return
        self._file = open(self.out_dir / "train.log", "a", encoding="utf-8")
        tc = self.train_config
        if tc is None:
            return
        check_logger_packages(tc)
        if tc.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard = SummaryWriter(log_dir=str(self.out_dir / "tensorboard"))
        if tc.wandb is not None:
            import wandb

            self._wandb = wandb.init(config=self.run_config, dir=str(self.out_dir), **dict(tc.wandb))

    def line(self, text: str) -> None:
        """Print ``text`` (through tqdm, so progress bars are not torn) and append it to train.log."""
        if not self.enabled:
            return
        tqdm.write(text, file=sys.stdout)
        sys.stdout.flush()
        if self._file is not None:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            self._file.write("".join(f"{stamp} {part}\n" for part in text.splitlines() or [""]))
            self._file.flush()

    def scalars(self, row: dict, step: int) -> None:
        """Send the numeric entries of a metrics row to TensorBoard and W&B."""
        if not self.enabled:
            return
        numbers = {k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self._tensorboard is not None:
            for key, value in numbers.items():
                self._tensorboard.add_scalar(key, value, global_step=step)
            self._tensorboard.flush()
        if self._wandb is not None:
            self._wandb.log(numbers, step=step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
