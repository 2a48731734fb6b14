"""ONNX export of a model's inference graph (the optional extra ``customml[onnx]``).

Each Dense layer becomes ``Gemm(x, kernel, bias)`` (kernel (in, out) as stored, no
transpose) followed by its activation: Relu, Sigmoid, Tanh, or GELU in its tanh form,
which is ``Gelu(approximate="tanh")`` from opset 20 and the same formula written out in
elementary ops (Mul, Add, Tanh) for opsets 17 to 19. Dropout layers are the identity at
inference and are left out. The preprocessing layers (Normalization, Rescaling) become
``Mul(x, scale)`` then ``Add(., shift)`` with the float32 per-feature constants the
executor uses, the same two roundings. The input "input" is float32 (batch, input_dim) and the
output "output" float32 (batch, output_dim), predict's output (logits for
classification losses); the batch dimension is symbolic ("batch").
"""

from __future__ import annotations

import numpy as np

from . import _core
from .io import _atomic_write
from .layers import Dense

__all__ = ["export_onnx", "MIN_OPSET"]

MIN_OPSET = 17
_GELU_C = float(np.float32(0.7978845608028654))  # sqrt(2 / pi), as the C++ kernel holds it
_GELU_A = float(np.float32(0.044715))


def _import_onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError as exc:
        raise ImportError("[export_onnx] needs the optional 'onnx' extra: pip install 'customml[onnx]' "
                          f"(import failed: {exc})") from exc
    return onnx, helper, numpy_helper


def export_onnx(model, path, opset: int = MIN_OPSET) -> None:
    """Writes ``model``'s inference graph to ``path`` as ONNX (opset >= 17, dynamic
    batch); the write is atomic. ``onnxruntime`` reproduces ``model.predict`` to within
    float32 rounding differences of the matrix products."""
    onnx, helper, numpy_helper = _import_onnx()
    if model._net is None:
        raise ValueError("[export_onnx] the model is not built: give Sequential input_dim or call fit/predict first")
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise ValueError(f"[export_onnx] opset must be an integer in [{MIN_OPSET}, {newest}] (the installed onnx "
                         f"supports up to {newest}), got {opset!r}")

    nodes, inits = [], []
    dense = [i for i, layer in enumerate(model.layers) if isinstance(layer, Dense)]
    cur = "input"

    def const(name: str, value: float) -> str:
        inits.append(numpy_helper.from_array(np.array(value, dtype=np.float32), name))
        return name

    for i, layer in enumerate(model.layers):
        if not layer._preprocessing:
            continue
        scale, shift = layer._affine(model.input_dim)
        p = f"layers.{i}"
        inits += [numpy_helper.from_array(scale, f"{p}.scale"), numpy_helper.from_array(shift, f"{p}.shift")]
        nodes.append(helper.make_node("Mul", [cur, f"{p}.scale"], [f"{p}.scaled"], name=f"{p}.mul"))
        nodes.append(helper.make_node("Add", [f"{p}.scaled", f"{p}.shift"], [f"{p}.output"], name=f"{p}.add"))
        cur = f"{p}.output"

    for i in dense:
        layer = model.layers[i]
        kernel, bias = layer.get_weights()
        p = f"layers.{i}"
        inits += [numpy_helper.from_array(kernel, f"{p}.kernel"), numpy_helper.from_array(bias, f"{p}.bias")]
        out = "output" if i == dense[-1] else f"{p}.output"
        act = layer.activation
        z = out if act == "identity" else f"{p}.preact"
        nodes.append(helper.make_node("Gemm", [cur, f"{p}.kernel", f"{p}.bias"], [z], name=f"{p}.gemm"))
        if act in ("relu", "sigmoid", "tanh"):
            nodes.append(helper.make_node(act.capitalize(), [z], [out], name=f"{p}.{act}"))
        elif act == "gelu" and opset >= 20:
            nodes.append(helper.make_node("Gelu", [z], [out], name=f"{p}.gelu", approximate="tanh"))
        elif act == "gelu":
            # 0.5 z (1 + tanh(c (z + a z^3))), the order of operations of cpp/activation.h
            c, a, half, one = (const(f"{p}.gelu.{k}", v) for k, v in
                               (("c", _GELU_C), ("a", _GELU_A), ("half", 0.5), ("one", 1.0)))
            steps = [("Mul", [a, z], "az"), ("Mul", [f"{p}.gelu.az", z], "az2"), ("Mul", [f"{p}.gelu.az2", z], "az3"),
                     ("Add", [z, f"{p}.gelu.az3"], "inner"), ("Mul", [c, f"{p}.gelu.inner"], "u"),
                     ("Tanh", [f"{p}.gelu.u"], "t"), ("Add", [one, f"{p}.gelu.t"], "onept"),
                     ("Mul", [half, z], "halfz")]
            for op, inputs, name in steps:
                nodes.append(helper.make_node(op, inputs, [f"{p}.gelu.{name}"], name=f"{p}.gelu.{name}"))
            nodes.append(helper.make_node("Mul", [f"{p}.gelu.halfz", f"{p}.gelu.onept"], [out], name=f"{p}.gelu"))
        elif act != "identity":
            raise ValueError(f"[export_onnx] layer {layer.name!r}: activation {act!r} has no ONNX mapping")
        cur = out

    graph = helper.make_graph(
        nodes, model.name or "customml",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", model.input_dim])],
        [helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, ["batch", model.output_dim])],
        initializer=inits)
    opsets = [helper.make_opsetid("", opset)]
    # The oldest IR version that carries this opset, so older runtimes can read the file.
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="customml",
                              producer_version=_core.build_info()["version"],
                              ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(proto, full_check=True)
    _atomic_write(path, [proto.SerializeToString()])
