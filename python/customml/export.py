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

An int8 Dense layer (customml.quantize) is written in QDQ form, which runtimes fuse into
integer kernels: its codes, offset by 128, are a UINT8 initializer ``layers.{i}.kernel_q``
dequantized by ``DequantizeLinear`` with zero point 128 and its per-output-channel scales (axis 1)
or one scale (the same values as the int8 codes), feeding a ``MatMul`` then ``Add`` of the bias.
uint8 weights because onnxruntime's fused kernels for uint8 inputs times int8 weights saturate
on x86 CPUs without VNNI (AVX2's ``vpmaddubsw`` adds two products in int16): a model fused that
way is wrong by tenths of its output on such a CPU, while uint8 times uint8 is exact everywhere.
A static input goes through ``QuantizeLinear`` / ``DequantizeLinear`` with its uint8 scale and
zero point (between two int8 layers that is exactly the executor's fused requantization); a
dynamic one is quantized per row as the executor does it, written out in elementary ops (ONNX's
DynamicQuantizeLinear quantizes per tensor): lo = min(0, min x), hi = max(0, max x), scale = (hi - lo) / 255 (1 when 0),
zero = round(-lo / scale), codes clip(round(x / scale) + zero, 0, 255).

A bf16 Dense layer (customml.quantize.bf16) keeps its kernel as a BFLOAT16 initializer
``layers.{i}.kernel`` cast to float32, and its input is rounded to bfloat16 and back by two
``Cast`` nodes, as the executor rounds it; the ``Gemm`` then multiplies the same values
(runtimes keep denormal inputs that the executor reads as zero: a difference below 2**-126 a
product).
"""

from __future__ import annotations

import numpy as np

from . import _core
from ._safetensors import atomic_write
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
        raise ImportError(
            '[export_onnx] needs the optional onnx extra: pip install ".[onnx]" in the customml checkout '
            f"(import failed: {exc})"
        ) from exc
    return onnx, helper, numpy_helper


def _dynamic_rows(node, inits, numpy_helper, opset: int, x: str, p: str) -> str:
    """x (batch, in) -> the float values of its per-row uint8 codes, as the executor's
    dynamic quantization computes them (module docstring)."""

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), f"{p}.{name}"))
        return f"{p}.{name}"

    zero_f, one, steps = const("zero_f", np.float32(0)), const("one", np.float32(1)), const("steps", np.float32(255))

    # opset 18 moved the reduction axes from an attribute to an input
    axes = const("axes", np.array([1], np.int64)) if opset >= 18 else None

    def row_reduce(op: str, name: str) -> str:
        if axes is not None:
            return node(op, [x, axes], f"{p}.{name}", keepdims=1)
        return node(op, [x], f"{p}.{name}", axes=[1], keepdims=1)

    lo = node("Min", [row_reduce("ReduceMin", "min"), zero_f], f"{p}.lo")
    hi = node("Max", [row_reduce("ReduceMax", "max"), zero_f], f"{p}.hi")
    raw = node("Div", [node("Sub", [hi, lo], f"{p}.span"), steps], f"{p}.raw_scale")
    scale = node("Where", [node("Equal", [raw, zero_f], f"{p}.empty"), one, raw], f"{p}.scale")
    zero = node(
        "Clip",
        [
            node("Round", [node("Div", [node("Neg", [lo], f"{p}.neg_lo"), scale], f"{p}.zero_raw")], f"{p}.zero_round"),
            zero_f,
            steps,
        ],
        f"{p}.zero",
    )
    codes = node(
        "Clip",
        [
            node(
                "Add", [node("Round", [node("Div", [x, scale], f"{p}.scaled")], f"{p}.rounded"), zero], f"{p}.shifted"
            ),
            zero_f,
            steps,
        ],
        f"{p}.codes",
    )
    return node("Mul", [node("Sub", [codes, zero], f"{p}.centred"), scale], f"{p}.dq")


def export_onnx(model, path, opset: int = MIN_OPSET) -> None:
    """Writes ``model``'s inference graph to ``path`` as ONNX (opset >= 17, dynamic
    batch); the write is atomic. ``onnxruntime`` reproduces ``model.predict`` to within
    float32 rounding differences of the matrix products."""
    onnx, helper, numpy_helper = _import_onnx()
    if model._net is None:
        raise ValueError("[export_onnx] the model is not built: give Sequential input_dim or call fit/predict first")
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise ValueError(
            f"[export_onnx] opset must be an integer in [{MIN_OPSET}, {newest}] (the installed onnx "
            f"supports up to {newest}), got {opset!r}"
        )

    nodes, inits = [], []
    dense = [i for i, layer in enumerate(model.layers) if isinstance(layer, Dense)]
    cur = "input"

    def const(name: str, value: float) -> str:
        inits.append(numpy_helper.from_array(np.array(value, dtype=np.float32), name))
        return name

    def node(op: str, inputs, output: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

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
        out = "output" if i == dense[-1] else f"{p}.output"
        act = layer.activation
        z = out if act == "identity" else f"{p}.preact"
        q = model._net.quantization(i)
        if model._net.bf16(i):
            bf16 = onnx.TensorProto.BFLOAT16
            bits: np.ndarray = _core.to_bf16(np.ascontiguousarray(kernel, np.float32)).astype("<u2")
            inits += [
                helper.make_tensor(f"{p}.kernel", bf16, kernel.shape, bits.tobytes(), raw=True),
                numpy_helper.from_array(bias, f"{p}.bias"),
            ]
            w = node("Cast", [f"{p}.kernel"], f"{p}.kernel_f32", to=onnx.TensorProto.FLOAT)
            x = node(
                "Cast", [node("Cast", [cur], f"{p}.input_bf16", to=bf16)], f"{p}.input_f32", to=onnx.TensorProto.FLOAT
            )
            nodes.append(helper.make_node("Gemm", [x, w, f"{p}.bias"], [z], name=f"{p}.gemm"))
        elif q is None:
            inits += [numpy_helper.from_array(kernel, f"{p}.kernel"), numpy_helper.from_array(bias, f"{p}.bias")]
            nodes.append(helper.make_node("Gemm", [cur, f"{p}.kernel", f"{p}.bias"], [z], name=f"{p}.gemm"))
        else:
            per_channel = q["w_scale"].shape[0] > 1
            w_scale = q["w_scale"] if per_channel else q["w_scale"].reshape(())
            inits += [
                numpy_helper.from_array((q["w_q"].astype(np.int16) + 128).astype(np.uint8), f"{p}.kernel_q"),
                numpy_helper.from_array(w_scale, f"{p}.kernel_scale"),
                numpy_helper.from_array(np.full(w_scale.shape, 128, np.uint8), f"{p}.kernel_zero"),
                numpy_helper.from_array(bias, f"{p}.bias"),
            ]
            w = node(
                "DequantizeLinear",
                [f"{p}.kernel_q", f"{p}.kernel_scale", f"{p}.kernel_zero"],
                f"{p}.kernel_dq",
                **({"axis": 1} if per_channel else {}),
            )
            if q["in_scale"] > 0:
                inits += [
                    numpy_helper.from_array(np.array(q["in_scale"], np.float32), f"{p}.input_scale"),
                    numpy_helper.from_array(np.array(q["in_zero"], np.uint8), f"{p}.input_zero"),
                ]
                codes = node("QuantizeLinear", [cur, f"{p}.input_scale", f"{p}.input_zero"], f"{p}.input_q")
                x = node("DequantizeLinear", [codes, f"{p}.input_scale", f"{p}.input_zero"], f"{p}.input_dq")
            else:
                x = _dynamic_rows(node, inits, numpy_helper, opset, cur, f"{p}.input")
            node("Add", [node("MatMul", [x, w], f"{p}.matmul"), f"{p}.bias"], z)
        if act in ("relu", "sigmoid", "tanh"):
            nodes.append(helper.make_node(act.capitalize(), [z], [out], name=f"{p}.{act}"))
        elif act == "gelu" and opset >= 20:
            nodes.append(helper.make_node("Gelu", [z], [out], name=f"{p}.gelu", approximate="tanh"))
        elif act == "gelu":
            # 0.5 z (1 + tanh(c (z + a z^3))), the order of operations of cpp/activation.h
            c, a, half, one = (
                const(f"{p}.gelu.{k}", v) for k, v in (("c", _GELU_C), ("a", _GELU_A), ("half", 0.5), ("one", 1.0))
            )
            steps = [
                ("Mul", [a, z], "az"),
                ("Mul", [f"{p}.gelu.az", z], "az2"),
                ("Mul", [f"{p}.gelu.az2", z], "az3"),
                ("Add", [z, f"{p}.gelu.az3"], "inner"),
                ("Mul", [c, f"{p}.gelu.inner"], "u"),
                ("Tanh", [f"{p}.gelu.u"], "t"),
                ("Add", [one, f"{p}.gelu.t"], "onept"),
                ("Mul", [half, z], "halfz"),
            ]
            for op, inputs, name in steps:
                nodes.append(helper.make_node(op, inputs, [f"{p}.gelu.{name}"], name=f"{p}.gelu.{name}"))
            nodes.append(helper.make_node("Mul", [f"{p}.gelu.halfz", f"{p}.gelu.onept"], [out], name=f"{p}.gelu"))
        elif act != "identity":
            raise ValueError(f"[export_onnx] layer {layer.name!r}: activation {act!r} has no ONNX mapping")
        cur = out

    graph = helper.make_graph(
        nodes,
        model.name or "customml",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", model.input_dim])],
        [helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, ["batch", model.output_dim])],
        initializer=inits,
    )
    opsets = [helper.make_opsetid("", opset)]
    # The oldest IR version that carries this opset, so older runtimes can read the file.
    proto = helper.make_model(
        graph,
        opset_imports=opsets,
        producer_name="customml",
        producer_version=_core.build_info()["version"],
        ir_version=helper.find_min_ir_version_for(opsets),
    )
    onnx.checker.check_model(proto, full_check=True)
    atomic_write(path, [proto.SerializeToString()])
