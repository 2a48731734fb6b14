"""customml.distill and losses.Distillation end to end on digits: the student learns the
teacher's soft outputs (float32, pruned and int8 teachers), with fit's callbacks,
validation and History, on cpu and cuda-emulated."""

from __future__ import annotations

import numpy as np
import pytest

import customml as cm


@pytest.fixture(scope="module")
def digits():
    return cm.datasets.load("digits")


@pytest.fixture(scope="module")
def teacher(digits):
    (x, y), _ = digits
    model = cm.Sequential([cm.layers.Dense(128, activation="relu"), cm.layers.Dense(10)], input_dim=64, seed=1)
    model.compile(optimizer=cm.optimizers.Adam(3e-3), metrics=["accuracy"])
    model.fit(x, y, epochs=30, batch_size=64, verbose=0)
    return model


def student(seed=2, device="cpu"):
    return cm.Sequential(
        [cm.layers.Dense(12, activation="relu"), cm.layers.Dense(10)], input_dim=64, seed=seed, device=device
    )


def soft_kl(teacher_logits, student_logits, temperature):
    """Mean KL(softmax(t / T) || softmax(s / T)) in float64: how closely a student follows
    the teacher's soft outputs."""

    def log_softmax(z):
        z = z.astype(np.float64) / temperature
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    lp, lq = log_softmax(teacher_logits), log_softmax(student_logits)
    return float((np.exp(lp) * (lp - lq)).sum(axis=1).mean())


def test_distilled_student_follows_the_teacher_better_than_one_trained_on_labels(digits, teacher):
    (x, y), (x_test, y_test) = digits
    t_logits = teacher.predict(x_test)
    distilled = student()
    distilled.compile(optimizer=cm.optimizers.Adam(3e-3), metrics=["accuracy"])
    history = cm.distill(teacher, distilled, x, y, epochs=25, temperature=4.0, alpha=0.9, batch_size=64, verbose=0)
    labels_only = student()
    labels_only.compile(optimizer=cm.optimizers.Adam(3e-3), metrics=["accuracy"])
    labels_only.fit(x, y, epochs=25, batch_size=64, verbose=0)
    kl_distilled = soft_kl(t_logits, distilled.predict(x_test), 4.0)
    kl_labels = soft_kl(t_logits, labels_only.predict(x_test), 4.0)
    # The distilled student matches the teacher's soft outputs far more closely (measured:
    # about a third of the label-trained student's divergence), and still classifies well.
    assert kl_distilled < 0.6 * kl_labels, (kl_distilled, kl_labels)
    assert distilled.evaluate(x_test, y_test)["accuracy"] > 0.9
    assert len(history.history["loss"]) == 25 and isinstance(history, cm.History)
    assert isinstance(distilled._loss, cm.losses.Distillation) and distilled._teacher_logits is None


def test_distill_has_fits_callbacks_validation_and_history(digits, teacher):
    (x, y), (x_test, y_test) = digits
    seen = []

    class Record(cm.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((epoch, dict(logs or {})))

    model = student()
    history = cm.distill(
        teacher,
        model,
        x,
        y,
        epochs=4,
        temperature=2.0,
        alpha=0.5,
        batch_size=128,
        validation_split=0.2,
        callbacks=[Record()],
        verbose=0,
    )
    assert [e for e, _ in seen] == [0, 1, 2, 3]
    assert set(history.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    # val_loss is the labels' cross-entropy (evaluate has no teacher): evaluate agrees.
    n_val = int(x.shape[0] * 0.2)
    assert history.history["val_loss"][-1] == pytest.approx(model.evaluate(x[-n_val:], y[-n_val:])["loss"], rel=1e-6)
    # Not compiled before: adam and accuracy, as documented.
    assert model._metrics == ("accuracy",) and model.epochs_trained == 4
    # EarlyStopping stops it as it stops fit.
    stopper = cm.callbacks.EarlyStopping(monitor="val_loss", patience=0, min_delta=10.0)
    history = cm.distill(
        teacher, student(), x, y, epochs=10, validation_data=(x_test, y_test), callbacks=[stopper], verbose=0
    )
    assert len(history.history["loss"]) < 10


def test_distill_is_deterministic_and_leaves_the_teacher_unchanged(digits, teacher):
    (x, y), (x_test, _) = digits
    before = teacher.predict(x_test)
    a, b = student(seed=5), student(seed=5)
    cm.distill(teacher, a, x, y, epochs=2, verbose=0, seed=3)
    cm.distill(teacher, b, x, y, epochs=2, verbose=0, seed=3)
    for la, lb in zip(a.layers, b.layers):
        for wa, wb in zip(la.get_weights(), lb.get_weights()):
            np.testing.assert_array_equal(wa, wb)
    np.testing.assert_array_equal(teacher.predict(x_test), before)


@pytest.mark.parametrize("kind", ["pruned", "int8"])
def test_distill_from_a_pruned_or_int8_teacher(digits, teacher, kind, tmp_path):
    (x, y), (x_test, y_test) = digits
    if kind == "int8":
        source = cm.quantize.int8(teacher, calibration=x[:512])
    else:
        source = cm.io.load(_saved(teacher, tmp_path))
        cm.prune.magnitude(source, sparsity=0.5)
    model = student()
    model.compile(optimizer=cm.optimizers.Adam(3e-3), metrics=["accuracy"])
    cm.distill(source, model, x, y, epochs=25, batch_size=64, verbose=0)
    assert model.evaluate(x_test, y_test)["accuracy"] > 0.85
    assert soft_kl(source.predict(x_test), model.predict(x_test), 4.0) < soft_kl(
        source.predict(x_test), student().predict(x_test), 4.0
    )
    # A distilled student saves and loads with its loss.
    path = str(tmp_path / "student.cml")
    model.save(path)
    loaded = cm.load(path)
    assert isinstance(loaded._loss, cm.losses.Distillation) and loaded._loss.temperature == 4.0
    np.testing.assert_array_equal(loaded.predict(x_test), model.predict(x_test))


def _saved(model, tmp_path):
    path = str(tmp_path / "teacher.cml")
    model.save(path)
    return path


def test_distill_on_cuda_emulated_matches_cpu(digits, teacher):
    (x, y), _ = digits
    x, y = x[:256], y[:256]
    losses = []
    for device in ("cpu", "cuda-emulated"):
        model = student(device=device)
        history = cm.distill(teacher, model, x, y, epochs=2, batch_size=64, verbose=0, shuffle=False)
        losses.append(history.history["loss"])
    # Same data and initialization; the devices' kernels differ in rounding only.
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)


def test_distill_rejects_bad_input(digits, teacher):
    (x, y), _ = digits
    wide = cm.Sequential([cm.layers.Dense(8), cm.layers.Dense(3)], input_dim=64)
    with pytest.raises(ValueError, match=r"\[distill\] the student has 3 outputs but the teacher has 10"):
        cm.distill(teacher, wide, x, y, verbose=0)
    with pytest.raises(ValueError, match=r"\[distill\] x has 5 features"):
        cm.distill(teacher, student(), x[:, :5], y, verbose=0)
    with pytest.raises(ValueError, match="temperature"):
        cm.distill(teacher, student(), x, y, temperature=0.0, verbose=0)
    with pytest.raises(ValueError, match="alpha"):
        cm.distill(teacher, student(), x, y, alpha=1.5, verbose=0)
    with pytest.raises(ValueError, match="different models"):
        cm.distill(teacher, teacher, x, y, verbose=0)
    with pytest.raises(ValueError, match=r"\[distill\] the teacher is not built"):
        cm.distill(cm.Sequential([cm.layers.Dense(10)]), student(), x, y, verbose=0)
    # fit alone has no teacher: a clear error, not garbage targets.
    model = student()
    model.compile(loss=cm.losses.Distillation(), metrics=["accuracy"])
    with pytest.raises(ValueError, match=r"\[fit\] the distillation loss trains on a teacher's logits"):
        model.fit(x, y, epochs=1, verbose=0)
