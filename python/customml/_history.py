"""History: what fit records, per epoch, under Keras' key names (``model.history``,
``fit``'s return value). Re-exported as ``customml.History`` and
``customml.callbacks.History``."""

from __future__ import annotations

import os
from typing import Dict, List

import numpy as np


class History:
    """``history`` maps "loss", each metric and their ``"val_"`` twins to one value per
    epoch; ``epoch`` lists the epoch numbers (0-based); ``params`` the fit settings."""

    def __init__(self, params: Dict):
        self.params = dict(params)
        self.epoch: List[int] = []
        self.history: Dict[str, List[float]] = {}

    def _record(self, epoch: int, logs: Dict[str, float]) -> None:
        self.epoch.append(epoch)
        for key, value in logs.items():
            # The confusion matrix is kept as an array per epoch; everything else is a number.
            value = np.array(value) if isinstance(value, np.ndarray) else float(value)
            self.history.setdefault(key, []).append(value)

    def plot(self, path, dpi: int = 100) -> None:
        """Writes a PNG of the loss and each metric per epoch, one panel each, with the
        validation curve (``"val_"`` keys) beside the training one. Needs matplotlib:
        ``pip install ".[plot]"`` in the customml checkout."""
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError as exc:
            raise ImportError('History.plot needs matplotlib: pip install ".[plot]" in the customml checkout') from exc
        if not self.epoch:
            raise ValueError("History.plot: the history is empty (no epoch has been trained)")
        scalar = [k for k in self.history if not isinstance(self.history[k][0], np.ndarray)]
        bases = [k for k in scalar if not k.startswith("val_")]
        bases += [k[4:] for k in scalar if k.startswith("val_") and k[4:] not in bases]
        # A Figure without pyplot: no global state, no GUI backend, safe in threads.
        fig = Figure(figsize=(5.0 * len(bases), 3.6), dpi=dpi)
        FigureCanvasAgg(fig)
        epochs = [e + 1 for e in self.epoch]
        for i, key in enumerate(bases):
            ax = fig.add_subplot(1, len(bases), i + 1)
            for name, style in ((key, "-"), (f"val_{key}", "--")):
                if name in self.history:
                    ax.plot(epochs, self.history[name], style, marker="o", markersize=3, label=name)
            ax.set_xlabel("epoch")
            ax.set_title(key)
            ax.grid(True, alpha=0.3)
            ax.legend()
        fig.tight_layout()
        fig.savefig(os.fspath(path), format="png")

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, keys={list(self.history)})"
