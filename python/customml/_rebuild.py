"""Sequential.add and pop on a built model: a new executor for the changed layers, written
in full (kept weights, new layers' initial weights, pruning, int8, bf16, the compile
configuration) before it replaces the old one, so that a concurrent predict runs one model
or the other (issue 20). The caller holds the model's lock."""

from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np

from . import _core
from .layers import Dense


def rebuild(model: Any) -> None:  # a Sequential (models imports this module)
    """A new executor for the current layers: layers that were built keep their weights,
    new ones are initialized from (seed, position); recompiled when compiled."""
    kept = {id(layer): layer.get_weights() for layer in model.layers if layer.input_dim is not None}
    # A kept layer keeps its index (add appends, pop removes the last), and with it its
    # pruning mask, N:M shape, inference format and int8 quantization.
    old = model._net
    assert old is not None and model._input_dim is not None  # add and pop rebuild a built model
    carried = {
        i: (
            model._masks.get(i),
            model._nm.get(i),
            old.sparse_format(i),
            old.sparse_min_batch(i),
            old.quantization(i),
            old.bf16(i),
        )
        for i, layer in enumerate(model.layers)
        if id(layer) in kept and isinstance(layer, Dense)
    }
    width = model._input_dim
    for layer in model.layers:
        layer.input_dim = width
        width = layer.output_dim(width)
    try:
        net = _core.Network(
            model._input_dim, [_core.LayerSpec(**layer._spec()) for layer in model.layers], model.device
        )
    except BaseException:
        for layer in model.layers:
            if id(layer) not in kept:
                layer.input_dim = None
        raise
    # The new executor is written in full while predict still runs the old one, and
    # published last: a concurrent predict sees the old model or the new, never a half.
    for index, layer in enumerate(model.layers):
        if not isinstance(layer, Dense):
            continue  # the other kinds' state is their spec, which the executor has
        if id(layer) in kept:
            kernel, bias = kept[id(layer)]
        else:
            # A stream per position (counter word 2 = 2 keeps it apart from the
            # initialization and shuffle streams): the same new head gets the same weights.
            rng = np.random.Generator(np.random.Philox(key=model.seed, counter=[0, 0, 2, index]))
            kernel, bias = layer._initial_weights(rng)
        net.write_params(net.weight_offsets[index], np.ascontiguousarray(kernel, np.float32).ravel())
        net.write_params(net.bias_offsets[index], np.ascontiguousarray(bias, np.float32))
    masks: Dict[int, np.ndarray] = {}
    nms: Dict[int, Tuple[int, int]] = {}
    for i, (keep, nm, (fmt, max_batch), min_batch, q, half) in carried.items():
        if keep is not None:
            net.set_mask(i, np.ascontiguousarray(keep, dtype=np.uint8))
            masks[i] = keep
        if nm is not None:
            nms[i] = nm
        if fmt != "dense":
            n, m = nm or (2, 4)
            net.set_sparse_format(i, fmt, max_batch, n, m, min_batch=min_batch)
        if q is not None:
            net.set_quantization(i, q["w_q"], q["w_scale"], q["in_scale"], q["in_zero"])
        if half:
            net.set_bf16(i, True)
    if model._loss is not None:
        model._compile_net(net)
        model._epoch = 0
    net.prepare()  # the inference plan built before anyone can run it
    model._net, model._masks, model._nm = net, masks, nms
