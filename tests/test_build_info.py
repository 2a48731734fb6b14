"""build_info(): its keys and types, and the kernel variant it names following the ISA level."""

from __future__ import annotations

import pytest

import customml
from customml import _core
from support import ISA_ORDER

GEMM_VARIANT = {
    "portable": "f32_gemm__portable_4x16",
    "avx2": "f32_gemm__avx2_6x16",
    "avx512": "f32_gemm__avx512_12x32",
}


def test_build_info_keys_and_types():
    info = customml.build_info()
    assert isinstance(info, dict)
    for key in (
        "version",
        "compiler",
        "cuda_compiled",
        "simt_emulation",
        "cpu_features",
        "isa",
        "isa_detected",
        "kernels",
        "num_threads",
    ):
        assert key in info, key
    assert info["version"] == customml.__version__ and isinstance(info["version"], str) and info["version"]
    assert isinstance(info["compiler"], str) and info["compiler"]
    assert isinstance(info["cuda_compiled"], bool) and isinstance(info["simt_emulation"], bool)
    if not info["cuda_compiled"]:
        assert "built without CUDA" in customml.cuda.unavailable_reason()
    assert isinstance(info["cpu_features"], list) and all(isinstance(f, str) for f in info["cpu_features"])
    assert info["isa"] in ISA_ORDER and info["isa_detected"] in ISA_ORDER
    assert ISA_ORDER.index(info["isa"]) <= ISA_ORDER.index(info["isa_detected"])
    assert isinstance(info["kernels"], dict) and isinstance(info["kernels"]["gemm"], str)
    assert isinstance(info["num_threads"], int) and info["num_threads"] >= 1


def test_detected_isa_agrees_with_cpu_features():
    info = customml.build_info()
    features = set(info["cpu_features"])
    level = ISA_ORDER.index(info["isa_detected"])
    required = {
        "avx2": {"avx2", "fma"},
        "avx512": {"avx512f", "avx512bw", "avx512dq", "avx512vl"},
        "avx512_vnni": {"avx512_vnni"},
        "amx": {"amx_tile", "amx_int8"},
    }
    for name, needs in required.items():
        has = needs <= features
        if ISA_ORDER.index(name) <= level:
            assert has, f"isa_detected is {info['isa_detected']} but cpu_features lack {needs - features}"
        else:
            # the first missing level must really miss a feature (levels are cumulative)
            assert not has or ISA_ORDER.index(name) > level + 1, f"{name} features present but not detected"


def test_gemm_variant_follows_isa(isa):
    info = customml.build_info()
    assert info["isa"] == isa
    assert info["kernels"]["gemm"] == GEMM_VARIANT[isa]


ELEMENTWISE_OPS = (
    "softmax_cross_entropy",
    "count_correct",
    "binary_cross_entropy_with_logits",
    "mse",
    "dropout",
    "sgd_update",
    "adam_update",
    "clip_by_global_norm",
    "scale",
    "apply_mask",
    "first_nonfinite",
)


def test_elementwise_variants_follow_isa(isa):
    kernels = customml.build_info()["kernels"]
    assert set(ELEMENTWISE_OPS) <= set(kernels)
    for op in ELEMENTWISE_OPS:
        assert kernels[op] == f"f32_{op}__{isa}"


# The ISA part of a variant name (XNNPACK spells avx512_vnni without its underscore).
# AVX512-BF16 (avx512bf16) runs at the avx512_vnni level (cpp/cpu/gemm_bf16.cpp).
VARIANT_ISAS = {
    "portable": "portable",
    "avx2": "avx2",
    "avx512": "avx512",
    "avx512vnni": "avx512_vnni",
    "avx512bf16": "avx512_vnni",
    "amx": "amx",
    "amxemu": "portable",  # the AMX kernel on the host model of the tiles: any CPU
}


def test_every_variant_says_what_then_how(isa):
    # One rule for every entry: the key is what the kernel computes (an op, or the product
    # ops share: gemm, sparse_dense, ...) and the variant <dtype>_<what>__<isa>[_<tile>],
    # the dtype first; gemm_s8, whose name carries its dtype, is s8_gemm.
    kernels = customml.build_info()["kernels"]
    assert {"gemm", "gemm_s8", "gemm_bf16", "quantize", "sparse_dense", "nm_dense", "l1_l2_penalty"} <= set(kernels)
    for key, variant in kernels.items():
        what, sep, how = variant.partition("__")
        dtype, _, name = what.partition("_")
        assert sep and dtype in ("f32", "s8", "bf16"), (key, variant)
        assert key in (name, f"{name}_{dtype}"), (key, variant)
        level = VARIANT_ISAS[how.split("_")[0]]
        assert ISA_ORDER.index(level) <= ISA_ORDER.index(isa), (key, variant)


def test_set_isa_above_the_cpu_caps_at_detected():
    original = customml.build_info()["isa"]
    try:
        assert _core._set_isa("amx") == customml.build_info()["isa_detected"]
        assert customml.build_info()["isa"] == customml.build_info()["isa_detected"]
    finally:
        _core._set_isa(original)


def test_set_isa_rejects_unknown_level():
    before = customml.build_info()
    with pytest.raises(ValueError, match="bogus"):
        _core._set_isa("bogus")
    after = customml.build_info()
    assert after["isa"] == before["isa"] and after["kernels"] == before["kernels"]
