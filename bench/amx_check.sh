#!/usr/bin/env bash
# Every AMX check of issue #19 in one go, on a machine whose CPU has AMX (Intel Sapphire Rapids
# or later: `lscpu | grep amx_int8`): build, then the gemm_s8 tests on the AMX hardware variant
# (s8_gemm__amx_16x64: the same kernel tests CI runs on the tile emulation, bit for bit against
# the other levels) and the bf16 dense on AMX-BF16 (bf16_gemm__amx_16x64), the tile emulation's tests, gemm_s8 at 1024^3 and 1024 x 784 -> 256 against
# torch._int_mm (target >= 0.8x), and the int8 README model at batch 1024 against ONNX Runtime
# int8. Outputs go to OUTDIR (logs and the benchmark JSON).
#
#     bench/amx_check.sh OUTDIR          # PYTHON=... picks the interpreter (default python3)
set -euo pipefail
out=${1:?usage: bench/amx_check.sh OUTDIR}
py=${PYTHON:-python3}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
cd "$root"
if ! grep -q amx_int8 /proc/cpuinfo; then
  echo "this CPU has no AMX-INT8 (lscpu | grep amx): nothing to measure" >&2
  exit 2
fi
cmake -S . -B build/amxcheck -G Ninja -DCMAKE_BUILD_TYPE=Release -DCUSTOMML_CUDA=OFF -DSKBUILD_PROJECT_VERSION=0.1.0 \
  -Dpybind11_DIR="$($py -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$(command -v "$py")" >"$out/build.log" 2>&1
cmake --build build/amxcheck -j"$(nproc)" >>"$out/build.log" 2>&1
cp build/amxcheck/_core*.so python/customml/
export PYTHONPATH="$root/python"
$py -c 'import customml as cm; i = cm.build_info(); print(i["isa_detected"], i["kernels"]["gemm_s8"], i["cpu_features"])' \
  | tee "$out/build_info.txt"
grep -q "s8_gemm__amx_16x64" "$out/build_info.txt" || { echo "the AMX variant is not chosen (arch_prctl refused?)" >&2; exit 1; }
HYPOTHESIS_PROFILE=ci $py -m pytest tests/test_gemm_s8.py tests/test_dense_bf16.py tests/test_amx_emulation.py -q -p no:cacheprovider \
  -k amx 2>&1 | tee "$out/tests.log"
$py -m pytest bench/bench_int8.py -q --benchmark-json="$out/int8.json" 2>&1 | tee "$out/bench_int8.log"
$py -m customml train --dataset fashion_mnist --output "$out/f.cml" --prune-sparsity 0 --no-quantize >"$out/train.log" 2>&1
$py bench/quantized_peers.py "$out/f.cml" 5 2>&1 | tee "$out/quantized_peers.log"
