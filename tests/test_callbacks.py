"""fit(callbacks=...): the hooks and their order, EarlyStopping, ModelCheckpoint,
LearningRateScheduler, CSVLogger, and History.plot.

The monitored quantities are injected by a callback that runs first (``Scores``), so
every stopping and saving decision is known in advance; weights are compared bit for
bit (a restored or saved model holds exact float32 copies), so no tolerance applies.
"""

from __future__ import annotations

import csv
import sys

import numpy as np
import pytest

import customml as cm
from customml.callbacks import Callback, CSVLogger, EarlyStopping, LearningRateScheduler, ModelCheckpoint


def _data(n=40):
    rng = np.random.default_rng(2)
    return rng.standard_normal((n, 4)).astype(np.float32), (np.arange(n) % 2).astype(np.int32)


def _model(lr=0.05):
    model = cm.Sequential([cm.layers.Dense(5, activation="relu"), cm.layers.Dense(2)], input_dim=4, seed=3)
    model.compile(cm.optimizers.SGD(lr), "softmax_cross_entropy", metrics=["accuracy"])
    return model


class Scores(Callback):
    """Puts scores[epoch] into the logs as "score" and keeps each epoch's weights."""

    def __init__(self, scores):
        super().__init__()
        self.scores, self.weights = scores, {}

    def on_epoch_end(self, epoch, logs=None):
        logs["score"] = self.scores[epoch]
        self.weights[epoch] = [w.tobytes() for w in self.model.get_weights()]


class Recorder(Callback):
    def __init__(self):
        super().__init__()
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(f"epoch_begin {epoch}")

    def on_batch_end(self, batch, logs=None):
        self.calls.append(f"batch {batch} {sorted(logs)}")

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(f"epoch_end {epoch} {sorted(logs)}")

    def on_train_end(self, logs=None):
        self.calls.append("train_end")


def _bits(model):
    return [w.tobytes() for w in model.get_weights()]


def test_hooks_run_in_keras_order_with_the_models_epoch_index():
    x, y = _data()
    model, rec = _model(), Recorder()
    model.fit(x, y, epochs=1, batch_size=20, validation_split=0.5, verbose=0, callbacks=[rec])
    model.fit(x, y, epochs=1, batch_size=20, verbose=0, callbacks=[rec])
    assert rec.calls == [
        "train_begin",
        "epoch_begin 0",
        "batch 0 ['accuracy', 'loss']",
        "epoch_end 0 ['accuracy', 'loss', 'val_accuracy', 'val_loss']",
        "train_end",
        # the second fit continues the model's epochs (History.epoch restarts at 0)
        "train_begin",
        "epoch_begin 1",
        "batch 0 ['accuracy', 'loss']",
        "batch 1 ['accuracy', 'loss']",
        "epoch_end 1 ['accuracy', 'loss']",
        "train_end",
    ]
    assert model.history.epoch == [0]


def test_a_callback_can_stop_training_and_bad_callbacks_are_refused():
    class StopAfterTwo(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.model.stop_training = True

    x, y = _data()
    model = _model()
    assert model.fit(x, y, epochs=5, verbose=0, callbacks=[StopAfterTwo()]).epoch == [0, 1]
    assert model.epochs_trained == 2
    with pytest.raises(ValueError, match="callbacks"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[lambda: None])


# -- EarlyStopping ------------------------------------------------------------------------


def test_early_stopping_waits_patience_epochs_and_restores_the_best():
    x, y = _data()
    model = _model()
    scores = Scores([3.0, 2.0, 2.5, 1.9999, 2.2, 2.1, 0.0, 0.0])
    stop = EarlyStopping(monitor="score", patience=2, min_delta=0.01, restore_best_weights=True)
    history = model.fit(x, y, epochs=8, verbose=0, callbacks=[scores, stop])
    # best 2.0 at epoch 1; 1.9999 is not better by min_delta; epochs 2, 3 wait, 4 stops
    assert history.epoch == [0, 1, 2, 3, 4]
    assert (stop.best, stop.best_epoch, stop.stopped_epoch) == (2.0, 1, 4)
    assert _bits(model) == scores.weights[1]


def test_early_stopping_restores_the_best_when_epochs_run_out_and_maximizes_accuracy():
    x, y = _data()
    model = _model()
    scores = Scores([0.5, 0.9, 0.7])
    stop = EarlyStopping(monitor="val_score_accuracy", patience=5, restore_best_weights=True)
    assert stop.mode == "max"  # "auto" and an accuracy-like name

    class Rename(Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["val_score_accuracy"] = logs["score"]

    model.fit(x, y, epochs=3, verbose=0, callbacks=[scores, Rename(), stop])
    assert stop.stopped_epoch is None and stop.best_epoch == 1
    assert _bits(model) == scores.weights[1]


def test_early_stopping_names_a_missing_monitor_and_bad_arguments():
    x, y = _data()
    with pytest.raises(ValueError, match="monitor 'val_loss'.*validation"):
        _model().fit(x, y, epochs=2, verbose=0, callbacks=[EarlyStopping()])
    for kwargs, name in (({"patience": -1}, "patience"), ({"mode": "up"}, "mode"), ({"min_delta": -0.1}, "min_delta")):
        with pytest.raises(ValueError, match=name):
            EarlyStopping(**kwargs)


# -- ModelCheckpoint -----------------------------------------------------------------------


def test_checkpoint_best_only_saves_the_best_epoch(tmp_path):
    x, y = _data()
    model = _model()
    scores = Scores([1.0, 0.5, 0.7, 0.4, 0.9])
    ckpt = ModelCheckpoint(tmp_path / "best.cml", monitor="score", save_best_only=True)
    model.fit(x, y, epochs=5, verbose=0, callbacks=[scores, ckpt])
    assert ckpt.best == 0.4
    assert _bits(cm.load(tmp_path / "best.cml")) == scores.weights[3]
    assert [p.name for p in tmp_path.iterdir()] == ["best.cml"]  # atomic: no temporary left


def test_checkpoint_every_epoch_with_formatted_names(tmp_path):
    x, y = _data()
    model = _model()
    ckpt = ModelCheckpoint(str(tmp_path / "ep{epoch:02d}-{loss:.2f}.cml"), include_optimizer=True)
    model.fit(x, y, epochs=2, verbose=0, callbacks=[ckpt])
    loss = model.history.history["loss"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"ep01-{loss[0]:.2f}.cml", f"ep02-{loss[1]:.2f}.cml"]
    assert cm.load(ckpt.last_saved).epochs_trained == 2
    with pytest.raises(ValueError, match="val_f1"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[ModelCheckpoint(str(tmp_path / "{val_f1}.cml"))])


# -- LearningRateScheduler -------------------------------------------------------------------


def test_learning_rate_scheduler_sets_each_epochs_rate():
    x, y = _data()
    model = _model()
    history = model.fit(x, y, epochs=3, verbose=0, callbacks=[LearningRateScheduler(lambda epoch: 0.1 / (epoch + 1))])
    # logged as the executor holds it: float32 of the scheduled value
    assert history.history["learning_rate"] == [float(np.float32(0.1 / (e + 1))) for e in range(3)]
    halve = LearningRateScheduler(lambda epoch, lr: lr * 0.5)  # Keras' two-argument form
    model.fit(x, y, epochs=2, verbose=0, callbacks=[halve])
    assert model.history.history["learning_rate"] == [
        float(np.float32(np.float32(0.1 / 3) * 0.5)),
        float(np.float32(np.float32(np.float32(0.1 / 3) * 0.5) * 0.5)),
    ]


def test_learning_rate_scheduler_with_zero_rate_freezes_the_weights():
    x, y = _data()
    model = _model()
    before = _bits(model)
    model.fit(x, y, epochs=2, verbose=0, callbacks=[LearningRateScheduler(lambda epoch: 0.0)])
    assert _bits(model) == before


def test_learning_rate_scheduler_refusals():
    x, y = _data()
    with pytest.raises(ValueError, match="epoch 0"):
        _model().fit(x, y, epochs=1, verbose=0, callbacks=[LearningRateScheduler(lambda epoch: float("nan"))])
    model = cm.Sequential([cm.layers.Dense(2)], input_dim=4, seed=0)
    model.compile(cm.optimizers.SGD(cm.schedules.StepDecay(0.1, 10)), "softmax_cross_entropy")
    with pytest.raises(ValueError, match="already a schedule"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[LearningRateScheduler(lambda epoch: 0.1)])
    with pytest.raises(ValueError, match="callable"):
        LearningRateScheduler(0.1)


# -- CSVLogger -------------------------------------------------------------------------------


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_csv_logger_writes_a_header_once_and_exact_values(tmp_path):
    x, y = _data()
    model = _model()
    path = tmp_path / "log.csv"
    model.fit(x, y, epochs=2, validation_split=0.25, verbose=0, callbacks=[CSVLogger(path)])
    rows = _rows(path)
    assert rows[0] == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]
    assert [r[0] for r in rows[1:]] == ["0", "1"]
    # str(float) round-trips exactly, so the file holds History's values bit for bit
    assert [float(r[2]) for r in rows[1:]] == model.history.history["loss"]

    model.fit(x, y, epochs=1, validation_split=0.25, verbose=0, callbacks=[CSVLogger(path, append=True)])
    rows = _rows(path)
    assert len(rows) == 4 and rows[3][0] == "2" and rows.count(rows[0]) == 1
    model.fit(x, y, epochs=1, verbose=0, callbacks=[CSVLogger(path)])  # append=False starts afresh
    assert _rows(path)[0] == ["epoch", "accuracy", "loss"] and len(_rows(path)) == 2


def test_csv_logger_refuses_appending_other_columns(tmp_path):
    x, y = _data()
    path = tmp_path / "log.csv"
    _model().fit(x, y, epochs=1, verbose=0, callbacks=[CSVLogger(path)])
    with pytest.raises(ValueError, match="columns"):
        _model().fit(x, y, epochs=1, validation_split=0.25, verbose=0, callbacks=[CSVLogger(path, append=True)])
    with pytest.raises(ValueError, match="separator"):
        CSVLogger(path, separator="::")


# -- History.plot -------------------------------------------------------------------------------


def test_history_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is the optional extra customml[plot]")
    x, y = _data()
    model = _model()
    history = model.fit(x, y, epochs=3, validation_split=0.25, verbose=0)
    history.plot(tmp_path / "h.png")
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_history_plot_without_matplotlib_names_the_extra(monkeypatch, tmp_path):
    history = cm.History({})
    history._record(0, {"loss": 1.0})
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r'pip install "\.\[plot\]" in the customml checkout'):
        history.plot(tmp_path / "h.png")
    assert not (tmp_path / "h.png").exists()


def test_history_plot_of_an_empty_history(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is the optional extra customml[plot]")
    with pytest.raises(ValueError, match="empty"):
        cm.History({}).plot(tmp_path / "h.png")


# ------------------------------------------------------------------ resuming callbacks


def _stopped_run(tmp_path, split):
    """Scores improve at epochs 0 and 2 only, so EarlyStopping(patience=1) stops after
    epoch 4. With split, fit runs `split` epochs saving a checkpoint (with the optimizer,
    listed last so it sees EarlyStopping's updated state), then load + fit continue."""
    scores = [5.0, 6.0, 1.0, 2.0, 3.0, 0.5, 0.1, 0.0]
    x, y = _data()
    path = tmp_path / f"ckpt-{split}.cml"

    def callbacks():
        return [
            Scores(scores),
            EarlyStopping(monitor="score", patience=1),
            ModelCheckpoint(path, monitor="score", include_optimizer=True),
        ]

    model = _model()
    if split is None:
        cbs = callbacks()
        model.fit(x, y, epochs=8, batch_size=8, verbose=0, callbacks=cbs)
        return model, cbs[1]
    model.fit(x, y, epochs=split, batch_size=8, verbose=0, callbacks=callbacks())
    model = cm.load(path)
    cbs = callbacks()
    model.fit(x, y, epochs=8 - split, batch_size=8, verbose=0, callbacks=cbs)
    return model, cbs[1]


@pytest.mark.parametrize("split", [1, 3, 4])
def test_early_stopping_resumes_where_it_stopped(tmp_path, split):
    straight, es = _stopped_run(tmp_path, None)
    resumed, es2 = _stopped_run(tmp_path, split)
    assert straight.epochs_trained == resumed.epochs_trained == 5
    assert (es2.best, es2.best_epoch, es2.stopped_epoch) == (es.best, es.best_epoch, es.stopped_epoch) == (1.0, 2, 4)
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        assert np.array_equal(a, b)


def test_model_checkpoint_best_survives_a_resume(tmp_path):
    x, y = _data()
    best_path = tmp_path / "best.cml"
    model = _model()
    ckpt = ModelCheckpoint(best_path, monitor="score", save_best_only=True, include_optimizer=True)
    model.fit(x, y, epochs=2, verbose=0, callbacks=[Scores([1.0, 2.0]), ckpt])
    assert ckpt.best == 1.0
    resumed = cm.load(best_path)
    ckpt2 = ModelCheckpoint(tmp_path / "never.cml", monitor="score", save_best_only=True)
    resumed.fit(x, y, epochs=1, verbose=0, callbacks=[Scores({1: 1.5}), ckpt2])
    assert ckpt2.best == 1.0 and ckpt2.last_saved is None  # 1.5 is no improvement on the saved 1.0
    # Only the first fit after load resumes: a later fit starts afresh, as Keras' callbacks do.
    resumed.fit(x, y, epochs=1, verbose=0, callbacks=[Scores({2: 1.5}), ckpt2])
    assert ckpt2.best == 1.5


def test_callback_state_only_with_the_optimizer(tmp_path):
    import json

    x, y = _data()
    model = _model()
    model.fit(x, y, epochs=1, verbose=0, callbacks=[Scores([1.0]), EarlyStopping(monitor="score")])

    def meta(path):
        raw = path.read_bytes()
        return json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])["__metadata__"]

    model.save(tmp_path / "a.cml")
    assert "callbacks_state" not in meta(tmp_path / "a.cml") and meta(tmp_path / "a.cml")["format_version"] == "1"
    model.save(tmp_path / "b.cml", include_optimizer=True)
    m = meta(tmp_path / "b.cml")
    assert m["format_version"] == "3"
    assert json.loads(m["callbacks_state"]) == {"EarlyStopping:score": {"best": 1.0, "wait": 0, "best_epoch": 0}}


def test_bad_saved_state_is_refused():
    es = EarlyStopping(monitor="score")
    with pytest.raises(ValueError, match="EarlyStopping saved state wait must be an integer"):
        es.set_state({"best": 1.0, "wait": 0.5, "best_epoch": None})
