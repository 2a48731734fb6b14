"""Callback: the base class of fit's hooks, in a module of its own so that the
training loop and the callbacks that act on models (``prune.GradualPruning``) import it
without importing each other. Re-exported as ``customml.callbacks.Callback``."""

from __future__ import annotations

from typing import Any, Dict, Optional


class Callback:
    """Base class of fit's hooks, named as Keras': ``on_train_begin(logs)``,
    ``on_epoch_begin(epoch, logs)``, ``on_batch_end(batch, logs)`` (called only when a
    callback overrides it: it costs a read of the running metrics per batch),
    ``on_epoch_end(epoch, logs)`` (the epoch's loss, metrics and ``val_`` metrics) and
    ``on_train_end(logs)``. ``self.model`` is the model being trained; setting
    ``self.model.stop_training = True`` ends fit after the current epoch.

    A callback whose progress matters for resuming returns it from ``get_state()`` (a
    JSON-serializable dict): ``model.save(path, include_optimizer=True)`` stores the
    states of the last fit's callbacks, and the first fit after ``customml.load`` hands
    each callback with the same ``state_key()`` its state, after ``on_train_begin``."""

    def __init__(self):
        # The Sequential being trained (set by fit; None before). Any: this module cannot
        # name models.Sequential without an import cycle (tests/test_imports.py).
        self.model: Any = None

    def set_model(self, model) -> None:
        self.model = model

    def state_key(self) -> str:
        """What a saved state is matched by: the class name and, where it has one, the
        monitored quantity."""
        monitor = getattr(self, "monitor", None)
        return type(self).__name__ + (f":{monitor}" if monitor else "")

    def get_state(self) -> Optional[Dict]:
        return None

    def set_state(self, state: Dict) -> None:
        pass

    def on_train_begin(self, logs: Optional[Dict] = None) -> None:
        pass

    def on_train_end(self, logs: Optional[Dict] = None) -> None:
        pass

    def on_epoch_begin(self, epoch: int, logs: Optional[Dict] = None) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: Optional[Dict] = None) -> None:
        pass

    def on_batch_end(self, batch: int, logs: Optional[Dict] = None) -> None:
        pass
