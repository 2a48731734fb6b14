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
    for key in ("version", "compiler", "cuda_compiled", "simt_emulation", "cpu_features", "isa", "isa_detected", "kernels", "num_threads"):
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


ELEMENTWISE_FAMILIES = ("softmax_cross_entropy", "binary_cross_entropy", "mse", "dropout", "sgd", "adam", "clip")


def test_elementwise_variants_follow_isa(isa):
    kernels = customml.build_info()["kernels"]
    assert set(ELEMENTWISE_FAMILIES) <= set(kernels)
    for family in ELEMENTWISE_FAMILIES:
        assert kernels[family] == f"f32_{family}__{isa}"


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
