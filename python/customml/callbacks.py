"""Training records. History holds per-epoch loss and metrics under Keras' key names."""

from __future__ import annotations

from typing import Dict, List

__all__ = ["History"]


class History:
    """``history`` maps "loss", each metric and their "val_" twins to one value per
    epoch; ``epoch`` lists the epoch numbers (0-based); ``params`` the fit settings."""

    def __init__(self, params: Dict):
        self.params = dict(params)
        self.epoch: List[int] = []
        self.history: Dict[str, List[float]] = {}

    def _record(self, epoch: int, logs: Dict[str, float]) -> None:
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, keys={list(self.history)})"
