"""The optimizer update reading its gradient's scaling from device memory (UpdateScalars,
issue 22): a training step clips inside the update instead of in a pass of its own, and must
give the bits of clip_by_global_norm followed by the plain update (the ops, themselves
checked against tests/reference.py), on every device and thread order."""

from __future__ import annotations

import numpy as np
import pytest

import customml as cm
from customml import ops


@pytest.mark.parametrize("max_norm", [1e-3, 1e3])  # clipping and not
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_clipping_inside_the_update_gives_the_bits_of_a_clipping_pass(device, optimizer, max_norm):
    model = cm.Sequential([cm.layers.Dense(9, "relu"), cm.layers.Dense(3)], input_dim=7, device=device, seed=4)
    opt = cm.optimizers.SGD(0.1) if optimizer == "sgd" else cm.optimizers.Adam(0.01)
    model.compile(optimizer=opt, loss="softmax_cross_entropy", clipnorm=max_norm)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((21, 7)).astype(np.float32)
    y = rng.integers(0, 3, 21).astype(np.int32)
    net = model._net
    params = np.concatenate([w.ravel() for w in model.get_weights()])
    net.compute_gradients(x, y, np.arange(21, dtype=np.int64))
    grad = np.empty(net.num_params, np.float32)
    net.read_gradients(grad)
    net.apply_gradients(21)

    ops.clip_by_global_norm(grad, max_norm, device=device)
    if optimizer == "sgd":
        ops.sgd_update(params, grad, lr=0.1, device=device)
    else:
        m, v = np.zeros_like(params), np.zeros_like(params)
        ops.adam_update(params, grad, m, v, lr=0.01, step=1, device=device)
    got = np.concatenate([w.ravel() for w in model.get_weights()])
    assert got.tobytes() == params.tobytes()
