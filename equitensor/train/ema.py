"""Exponential moving average of model parameters (evaluation and the saved best model use it)."""

from __future__ import annotations

import contextlib

import torch

__all__ = ["ExponentialMovingAverage"]


class ExponentialMovingAverage:
    """Shadow copy ``s <- d s + (1 - d) p`` of the trainable parameters.

    As ``torch_ema`` (which MACE uses), the effective decay warms up:
    ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so early averages are not dominated
    by the random initialisation.
    """

    def __init__(self, parameters, decay: float):
        self.parameters = [p for p in parameters if p.requires_grad]
        self.decay = float(decay)
        self.num_updates = 0
        self.shadow = [p.detach().clone() for p in self.parameters]

    @torch.no_grad()
    def update(self) -> None:
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for s, p in zip(self.shadow, self.parameters):
            s.mul_(d).add_(p.detach(), alpha=1 - d)

    @contextlib.contextmanager
    def average_parameters(self):
        """Temporarily load the averaged weights into the model; restore the live ones after."""
        backup = [p.detach().clone() for p in self.parameters]
        with torch.no_grad():
            for s, p in zip(self.shadow, self.parameters):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for b, p in zip(backup, self.parameters):
                    p.copy_(b)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": [s.clone() for s in self.shadow]}

    def load_state_dict(self, state: dict) -> None:
        if len(state["shadow"]) != len(self.shadow):
            raise ValueError(
                f"EMA state has {len(state['shadow'])} tensors, the model has {len(self.shadow)} parameters"
            )
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        for s, t in zip(self.shadow, state["shadow"]):
            s.copy_(t)
