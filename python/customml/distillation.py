"""Knowledge distillation: train a small student on a large teacher's logits."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import losses as losses_mod
from ._checks import as_features, check_finite
from .callbacks import History

__all__ = ["distill"]


def distill(
    teacher,
    student,
    x,
    y,
    epochs: int = 1,
    temperature: float = 4.0,
    alpha: float = 0.9,
    **fit_kwargs: Any,
) -> History:
    """Trains ``student`` (a Sequential with the teacher's input and output widths) to
    match ``teacher``'s softened outputs as well as the labels ``y``, with the loss
    ``customml.losses.Distillation(temperature, alpha)``: per sample
    ``alpha * T**2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) *
    CE(student, y)`` (Hinton, Vinyals and Dean 2015).

    The teacher may be any trained model that predicts logits: float32, pruned or int8
    (``quantize.int8``); it is not changed. Its logits are computed once, by its own
    inference plan, before training (the teacher is fixed and runs no dropout at
    inference, so every epoch would compute the same numbers; they take
    ``n * outputs`` floats, less than ``x`` itself).

    The student keeps the optimizer, metrics and precision it was compiled with (Adam and
    accuracy when not compiled) and is recompiled with the distillation loss, which
    resets its optimizer state. ``fit_kwargs`` go to ``student.fit``: batch_size,
    callbacks, validation_data or validation_split, sample_weight, shuffle, seed,
    verbose... Validation reports the labels' cross-entropy as ``val_loss`` and the
    metrics; the training ``loss`` is the distillation loss. Returns fit's History.
    """
    op = "distill"
    for name, model in (("teacher", teacher), ("student", student)):
        if not hasattr(model, "fit") or not hasattr(model, "predict"):
            raise TypeError(f"[{op}] {name} must be a customml Sequential, got {type(model).__name__}")
    if teacher is student:
        raise ValueError(f"[{op}] teacher and student must be different models")
    if teacher._net is None:
        raise ValueError(f"[{op}] the teacher is not built: train it (or load it) first")
    if "validation_split" in fit_kwargs and "validation_data" in fit_kwargs:
        raise ValueError(f"[{op}] give validation_split or validation_data, not both")
    x = as_features(x, "x", op)
    check_finite(x, "x", op)
    if x.shape[1] != teacher._input_dim:
        raise ValueError(f"[{op}] x has {x.shape[1]} features but the teacher expects {teacher._input_dim}")
    outputs = teacher._net.output_dim
    if outputs < 2:
        raise ValueError(f"[{op}] the teacher has {outputs} output; distillation needs class logits (>= 2 outputs)")
    loss = losses_mod.Distillation(temperature=temperature, alpha=alpha)
    if student._loss is None:
        student.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    else:
        student.compile(
            optimizer=student._optimizer,
            loss=loss,
            metrics=student._metrics,
            precision=student._precision,
            cuda_graph=student._cuda_graph,
        )
    student._ensure_ready(x, op)
    assert student._net is not None
    if student._net.output_dim != outputs:
        raise ValueError(
            f"[{op}] the student has {student._net.output_dim} outputs but the teacher has {outputs}: "
            "they must predict the same classes"
        )
    # validation_split as fit takes it (the last fraction, before shuffling), made here
    # so the teacher's logits follow the training rows.
    split = fit_kwargs.pop("validation_split", 0.0)
    if split:
        if isinstance(split, bool) or not (0.0 < split < 1.0):
            raise ValueError(f"[{op}] validation_split must be in [0, 1), got {split!r}")
        n_val = int(x.shape[0] * split)
        if n_val == 0 or n_val == x.shape[0]:
            raise ValueError(f"[{op}] validation_split={split} of {x.shape[0]} samples leaves an empty set")
        y = np.asarray(y)
        fit_kwargs["validation_data"] = (x[-n_val:], y[-n_val:])
        x, y = x[:-n_val], y[:-n_val]
        if fit_kwargs.get("sample_weight") is not None:
            fit_kwargs["sample_weight"] = np.asarray(fit_kwargs["sample_weight"])[:-n_val]
    logits = np.ascontiguousarray(teacher.predict(x), dtype=np.float32)
    check_finite(logits, "the teacher's logits", op)
    student._teacher_logits = logits
    try:
        return student.fit(x, y, epochs=epochs, **fit_kwargs)
    finally:
        student._teacher_logits = None
