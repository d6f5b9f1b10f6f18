"""Learning-curve figure written at the end of training."""

from __future__ import annotations

from pathlib import Path

from ..atomic import atomic_write


def plot_learning_curve(history: list[dict], path: str | Path) -> Path:
    """Loss (train, validation) and validation energy/force MAE against epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_mae) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [row["train_loss"] for row in history], "o-", label="train")
    ax_loss.plot(epochs, [row["val_loss"] for row in history], "s-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="weighted loss", yscale="log", title="loss")
    ax_loss.legend()
    ax_mae.plot(
        epochs, [1e3 * row["val_energy_per_atom_mae"] for row in history], "o-", label="E MAE (meV/atom)"
    )
    ax_mae.plot(epochs, [1e3 * row["val_forces_mae"] for row in history], "s-", label="F MAE (meV/Å)")
    ax_mae.set(xlabel="epoch", ylabel="validation MAE", yscale="log", title="validation errors")
    ax_mae.legend()
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_write(path, "wb") as handle:
            fig.savefig(handle, format="png", dpi=110)
    finally:
        plt.close(fig)
    return path
