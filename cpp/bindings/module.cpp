// The one pybind11 module, customml._core: exception translation, the import-time
// checks, build information and the device and thread queries; each job's bindings are
// in their own file (bindings.h).

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <thread>

#include "activation.h"
#include "backend.h"
#include "bindings/bindings.h"
#include "cpu/elementwise.h"
#include "cpu/gemm.h"
#include "cpu/gemm_bf16.h"
#include "cpu/gemm_s8.h"
#include "cpu/isa.h"
#include "cpu/quantize.h"
#include "cpu/sparse.h"
#include "cpu/thread_pool.h"

namespace py = pybind11;
using namespace customml;

#ifndef CUSTOMML_VERSION
#define CUSTOMML_VERSION "0.0.0"
#endif

namespace {

std::string compiler_string() {
#if defined(__clang__)
  return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  return std::string("gcc ") + __VERSION__;
#elif defined(_MSC_VER)
  return "msvc " + std::to_string(_MSC_VER);
#else
  return "unknown";
#endif
}

py::dict build_info() {
  py::dict d;
  d["version"] = CUSTOMML_VERSION;
  d["compiler"] = compiler_string();
  d["cuda_compiled"] = cuda_compiled();
  d["simt_emulation"] = simt_emulation_compiled();
  d["cpu_features"] = cpu::cpu_features();
  d["isa_detected"] = cpu::isa_name(cpu::detected_isa());
  d["isa"] = cpu::isa_name(cpu::active_isa());
  // One entry per CPU kernel, keyed by what it computes: the op's name, or for the
  // products that ops share or choose between, the product's (gemm: dense_forward and
  // dense_backward; sparse_dense and sparse_dense_packed: sparse_dense_forward; nm_dense:
  // nm_dense_forward). Each variant says what, then how (XNNPACK):
  // <dtype>_<what>__<isa>[_<tile>], e.g. f32_adam_update__avx512, f32_gemm__avx512_12x32;
  // gemm_s8, whose name carries its dtype, is s8_gemm__<isa>_<tile>.
  py::dict kernels;
  kernels["gemm"] = cpu::gemm_f32_variant();
  kernels["gemm_s8"] = cpu::gemm_s8_variant();
  kernels["gemm_bf16"] = cpu::gemm_bf16_variant();
  kernels["quantize"] = cpu::quantize_variant();
  const std::string isa = cpu::elementwise().isa;
  for (const char* op : {"softmax_cross_entropy", "softmax_cross_entropy_soft", "distillation_loss", "count_correct",
                         "binary_cross_entropy_with_logits", "mse", "dropout", "sgd_update", "adam_update",
                         "clip_by_global_norm", "scale", "apply_mask", "first_nonfinite"})
    kernels[op] = "f32_" + std::string(op) + "__" + isa;
  kernels["l1_l2_penalty"] = "f32_l1_l2_penalty__portable";
  const cpu::SparseKernels& sparse = cpu::sparse_kernels();
  kernels["sparse_dense"] = sparse.csr;
  if (sparse.csr_packed) kernels["sparse_dense_packed"] = sparse.csr_packed;  // AVX-512 only
  kernels["nm_dense"] = sparse.nm;
  d["kernels"] = kernels;
  d["num_threads"] = cpu::ThreadPool::instance().num_threads();
  d["hardware_threads"] = std::thread::hardware_concurrency();
  return d;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "customml native core: kernels, the network executor and build information";
  py::register_exception<TypeError>(m, "DTypeError", PyExc_TypeError);
  // An invalid CUSTOMML_ISA or CUSTOMML_NUM_THREADS fails the import with its message.
  cpu::active_isa();
  cpu::ThreadPool::instance();

  {
    py::list names;
    for (Activation a :
         {Activation::identity, Activation::relu, Activation::sigmoid, Activation::tanh, Activation::gelu})
      names.append(activation_name(a));
    m.attr("activations") = py::tuple(names);
  }
  bind_arrays(m);
  m.def("build_info", &build_info, "Version, compiler, CUDA, CPU features and the kernel variant chosen per family.");
  m.def("cuda_available", &cuda_available);
  m.def(
      "set_num_threads", [](int n) { cpu::ThreadPool::instance().set_num_threads(n); }, py::arg("n"),
      "Threads the CPU kernels may use, the caller included (default: CUSTOMML_NUM_THREADS, else all).");
  m.def(
      "get_num_threads", [] { return cpu::ThreadPool::instance().num_threads(); },
      "Threads the CPU kernels may use, the caller included.");
  m.def(
      "check_device",
      [](const std::string& device) {
        const Device d = Device::parse(device);
        backend_for(d);
        return d.name();
      },
      py::arg("device"), "The canonical name of a usable device; ValueError saying why for any other.");
  m.def("cuda_unavailable_reason", &cuda_unavailable_reason);
  bind_test_hooks(m);
  bind_ops(m);
  bind_configs(m);
  bind_network(m);
  bind_model_file(m);
}
