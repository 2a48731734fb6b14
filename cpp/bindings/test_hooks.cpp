// The private functions tests and probes call, prefixed with an underscore: the ISA
// ceiling, the vectorized math of one ISA level, the SIMT emulator's thread order and
// self-tests, and counters of allocations and DLPack exports.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "array.h"
#include "backend.h"
#include "bindings/bindings.h"
#include "cpu/elementwise.h"
#include "cpu/isa.h"
// The host model of the AMX tile instructions, for its own unit tests.
#define CUSTOMML_AMX_EMULATED 1
#include "cpu/amx_tiles.h"
#ifdef CUSTOMML_SIMT_EMULATION
#include "simt/runtime.h"
#endif

namespace py = pybind11;

namespace customml {

namespace {
// A (rows, cols) 16-bit copy on be in the GEMMs' layout (rows half_ld(cols) apart): src's
// rows (null: none written), the pads NaN bits in both formats, so that a GEMM reading one
// would make NaN.
uint16_t* upload_padded16(Backend& be, Buffer<uint16_t>& dst, const uint16_t* src, int64_t rows, int64_t cols) {
  const int64_t ld = half_ld(cols);
  std::vector<uint16_t> host(static_cast<size_t>(rows * ld), 0xFFFF);
  if (src)
    for (int64_t r = 0; r < rows; ++r) std::memcpy(&host[r * ld], src + r * cols, sizeof(uint16_t) * cols);
  be.copy_to_device(dst.reserve(std::max<size_t>(host.size(), 1)), host.data(), sizeof(uint16_t) * host.size());
  return dst.data();
}
// dst (rows, cols) = the rows of such a copy on be.
void download_padded16(Backend& be, uint16_t* dst, const uint16_t* src, int64_t rows, int64_t cols) {
  std::vector<uint16_t> host(static_cast<size_t>(rows * half_ld(cols)));
  be.copy_to_host(host.data(), src, sizeof(uint16_t) * host.size());
  for (int64_t r = 0; r < rows; ++r) std::memcpy(dst + r * cols, &host[r * half_ld(cols)], sizeof(uint16_t) * cols);
}
}  // namespace

void bind_test_hooks(py::module_& m) {
#ifdef CUSTOMML_SIMT_EMULATION
  m.def(
      "_simt_set_thread_order",
      [](const std::string& order, uint64_t seed) { simt::set_thread_order(simt::parse_thread_order(order), seed); },
      py::arg("order"), py::arg("seed") = 0,
      "The order the SIMT emulator resumes a block's threads in (forward, reverse, shuffled); for tests.");
  m.def(
      "_simt_selftest",
      [](const std::string& name, const std::vector<double>& input, std::array<unsigned, 3> grid,
         std::array<unsigned, 3> block) {
        py::gil_scoped_release release;
        return simt::run_selftest(name, input, simt::dim3(grid[0], grid[1], grid[2]),
                                  simt::dim3(block[0], block[1], block[2]));
      },
      py::arg("name"), py::arg("input"), py::arg("grid"), py::arg("block"),
      "Runs one of the emulator's primitive test kernels (cuda/simt/selftest.cpp); for tests.");
  m.def("_emulated_allocations", &emulated_cuda_allocations,
        "How many device allocations cuda-emulated has made in this process; for tests.");
  m.def("_emulated_host_waits", &emulated_cuda_host_waits,
        "How many times cuda-emulated has made the host wait (copies to the host, synchronize); for tests.");
  m.def("_emulated_bytes_to_device", &emulated_cuda_bytes_to_device,
        "How many bytes cuda-emulated has copied host -> device in this process (replayed copies included); for "
        "tests.");
  m.def("_emulated_graph_replays", &emulated_cuda_graph_replays,
        "How many graphs cuda-emulated has replayed in this process (cudaGraphLaunch on cuda); for tests.");
  m.def("_emulated_graph_recordings", &simt::recordings,
        "How many graph recordings cuda-emulated has begun in this process (failed captures included); for tests.");
  m.def("_emulated_launches", &simt::launches,
        "How many kernels the SIMT emulator has launched in this process (cuda-emulated's launches); for tests.");
  m.def("_emulated_wgmmas", &simt::wgmma_issued,
        "How many wgmma.mma_async the SIMT emulator's warpgroups have issued in this process; for tests.");
  m.def("_emulated_set_sm90", &emulated_cuda_set_sm90, py::arg("on"), py::arg("wgmma_min_tiles") = 132,
        "Makes cuda-emulated's GEMMs choose as a Hopper's (the TMA + wgmma kernel from wgmma_min_tiles tiles of 128 x "
        "128) or not; returns (on, wgmma_min_tiles) as they were; for tests.");
#endif
  m.def(
      "_dense_forward_half",
      [](py::array_t<float, py::array::c_style> x, py::array_t<float, py::array::c_style> w,
         py::array_t<float, py::array::c_style> b, const std::string& activation, const std::string& precision,
         bool half_x, const std::string& device) {
        // Backend::dense_forward as a training step calls it at bf16 / fp16: with the 16-bit
        // twin of w and, where half_x, x in 16 bits as the layer below wrote it (both
        // rounded by Backend::round_to_half, rows half_ld apart, the pads NaN bits), writing
        // y's 16-bit copy for the layer above.
        const Precision prec = parse_precision(precision);
        if (!half_operands(prec)) throw std::invalid_argument("[_dense_forward_half] precision bf16 or fp16");
        if (x.ndim() != 2 || w.ndim() != 2 || b.ndim() != 1 || w.shape(0) != x.shape(1) || b.shape(0) != w.shape(1))
          throw std::invalid_argument("[_dense_forward_half] x (batch, in), w (in, out), b (out)");
        const int64_t batch = x.shape(0), in = x.shape(1), out = w.shape(1);
        const size_t nx = static_cast<size_t>(batch * in), nw = static_cast<size_t>(in * out),
                     ny = static_cast<size_t>(batch * out);
        Backend& be = backend_for(Device::parse(device));
        if (!be.supports(prec)) throw std::invalid_argument("[_dense_forward_half] the device has no " + precision);
        Buffer<float> xd(&be), wd(&be), bd(&be), yd(&be), zd(&be);
        Buffer<uint16_t> x16(&be), w16(&be), y16(&be);
        be.copy_to_device(xd.reserve(nx), x.data(), sizeof(float) * nx);
        be.copy_to_device(wd.reserve(nw), w.data(), sizeof(float) * nw);
        be.copy_to_device(bd.reserve(static_cast<size_t>(out)), b.data(), sizeof(float) * static_cast<size_t>(out));
        const std::vector<float> nan(ny, std::numeric_limits<float>::quiet_NaN());
        be.copy_to_device(yd.reserve(ny), nan.data(), sizeof(float) * ny);
        be.copy_to_device(zd.reserve(ny), nan.data(), sizeof(float) * ny);
        upload_padded16(be, y16, nullptr, batch, out);
        upload_padded16(be, w16, nullptr, in, out);  // rounded below, its pads NaN
        if (half_x) upload_padded16(be, x16, nullptr, batch, in);
        {
          py::gil_scoped_release release;
          be.round_to_half(w16.data(), wd.data(), static_cast<int64_t>(nw), out, half_ld(out), prec);
          if (half_x) be.round_to_half(x16.data(), xd.data(), static_cast<int64_t>(nx), in, half_ld(in), prec);
          be.dense_forward(yd.data(), zd.data(), xd.data(), wd.data(), bd.data(),
                           {batch, in, out, prec, {w16.data(), x16.data(), y16.data()}}, parse_activation(activation));
        }
        py::array_t<float> y({batch, out}), z({batch, out});
        py::array_t<uint16_t> h({batch, out});
        be.copy_to_host(y.mutable_data(), yd.data(), sizeof(float) * ny);
        be.copy_to_host(z.mutable_data(), zd.data(), sizeof(float) * ny);
        download_padded16(be, h.mutable_data(), y16.data(), batch, out);
        return py::make_tuple(y, z, h);
      },
      py::arg("x"), py::arg("w"), py::arg("b"), py::arg("activation"), py::arg("precision"), py::arg("half_x"),
      py::arg("device"),
      "Backend::dense_forward at bf16 / fp16 with 16-bit copies of w and (half_x) x, as a training step runs it: "
      "(y, the pre-activation, y's 16-bit bits); for tests.");
  m.def(
      "_dense_backward_below",
      [](py::array_t<float, py::array::c_style> dy, py::array_t<float, py::array::c_style> x,
         py::array_t<float, py::array::c_style> w, const std::string& below_activation,
         py::array_t<float, py::array::c_style> below_y, std::optional<py::array_t<float, py::array::c_style>> below_z,
         const std::string& precision, std::optional<py::array_t<uint16_t, py::array::c_style>> dy16,
         std::optional<py::array_t<uint16_t, py::array::c_style>> x16, const std::string& device) {
        // Backend::dense_backward as a training step calls it for a layer whose dy is dz (act
        // identity), its dx store writing the Dense layer below's dz (DenseShape::below) and,
        // at bf16 / fp16, dz's 16-bit copy; the backward reads the 16-bit copies given (dy16,
        // x16: whatever bits the caller chose) and the 16-bit twin of w, all with rows half_ld
        // apart and NaN bits in the pads.
        const Precision prec = parse_precision(precision);
        const Activation below = parse_activation(below_activation);
        if (x.ndim() != 2 || w.ndim() != 2 || dy.ndim() != 2 || w.shape(0) != x.shape(1) || dy.shape(0) != x.shape(0) ||
            dy.shape(1) != w.shape(1) || below_y.ndim() != 2 || below_y.shape(0) != x.shape(0) ||
            below_y.shape(1) != x.shape(1) || (below_z && below_z->size() != below_y.size()) ||
            (dy16 && dy16->size() != dy.size()) || (x16 && x16->size() != x.size()))
          throw std::invalid_argument(
              "[_dense_backward_below] dy (batch, out), x and below_y / below_z (batch, in), w (in, out), the 16-bit "
              "copies as their arrays");
        if (activation_needs_preact(below) && !below_z)
          throw std::invalid_argument("[_dense_backward_below] below_z: the activation needs it");
        const int64_t batch = x.shape(0), in = x.shape(1), out = w.shape(1);
        const size_t nx = static_cast<size_t>(batch * in), nw = static_cast<size_t>(in * out),
                     ny = static_cast<size_t>(batch * out);
        Backend& be = backend_for(Device::parse(device));
        if (!be.supports(prec) || !be.fuses_derivative())
          throw std::invalid_argument("[_dense_backward_below] the device fuses no derivative at " + precision);
        Buffer<float> dyd(&be), xd(&be), wd(&be), yd(&be), zd(&be), dxd(&be), dwd(&be), dbd(&be);
        Buffer<uint16_t> dy16d(&be), x16d(&be), w16d(&be), dx16d(&be);
        be.copy_to_device(dyd.reserve(ny), dy.data(), sizeof(float) * ny);
        be.copy_to_device(xd.reserve(nx), x.data(), sizeof(float) * nx);
        be.copy_to_device(wd.reserve(nw), w.data(), sizeof(float) * nw);
        be.copy_to_device(yd.reserve(nx), below_y.data(), sizeof(float) * nx);
        if (below_z) be.copy_to_device(zd.reserve(nx), below_z->data(), sizeof(float) * nx);
        if (dy16) upload_padded16(be, dy16d, dy16->data(), batch, out);
        if (x16) upload_padded16(be, x16d, x16->data(), batch, in);
        const std::vector<float> nan(std::max(nx, nw), std::numeric_limits<float>::quiet_NaN());
        be.copy_to_device(dxd.reserve(nx), nan.data(), sizeof(float) * nx);
        be.copy_to_device(dwd.reserve(nw), nan.data(), sizeof(float) * nw);
        be.copy_to_device(dbd.reserve(static_cast<size_t>(out)), nan.data(), sizeof(float) * static_cast<size_t>(out));
        upload_padded16(be, dx16d, nullptr, batch, in);
        if (half_operands(prec)) upload_padded16(be, w16d, nullptr, in, out);
        Buffer<double> slotsd(&be);
        std::vector<double> slots;
        {
          py::gil_scoped_release release;
          DenseShape s{batch, in, out, prec};
          if (half_operands(prec)) {
            be.round_to_half(w16d.data(), wd.data(), static_cast<int64_t>(nw), out, half_ld(out), prec);
            s.half = {w16d.data(), x16 ? x16d.data() : nullptr, nullptr, dy16 ? dy16d.data() : nullptr};
          }
          s.below = {below, yd.data(), below_z ? zd.data() : nullptr, dx16d.data()};
          slots.resize(static_cast<size_t>(be.dense_norm_slots(s, true)), std::numeric_limits<double>::quiet_NaN());
          if (!slots.empty()) {
            be.copy_to_device(slotsd.reserve(slots.size()), slots.data(), sizeof(double) * slots.size());
            s.norm_slots = slotsd.data();
          }
          be.dense_backward(dxd.data(), dwd.data(), dbd.data(), dyd.data(), dyd.data(), xd.data(), wd.data(), nullptr,
                            nullptr, s, Activation::identity);
        }
        py::array_t<float> dx({batch, in}), dw({in, out}), db(out);
        py::array_t<uint16_t> dx16({batch, in});
        be.copy_to_host(dx.mutable_data(), dxd.data(), sizeof(float) * nx);
        be.copy_to_host(dw.mutable_data(), dwd.data(), sizeof(float) * nw);
        be.copy_to_host(db.mutable_data(), dbd.data(), sizeof(float) * static_cast<size_t>(out));
        download_padded16(be, dx16.mutable_data(), dx16d.data(), batch, in);
        if (!slots.empty()) be.copy_to_host(slots.data(), slotsd.data(), sizeof(double) * slots.size());
        return py::make_tuple(dx, dw, db, dx16,
                              py::array_t<double>(static_cast<py::ssize_t>(slots.size()), slots.data()));
      },
      py::arg("dy"), py::arg("x"), py::arg("w"), py::arg("below_activation"), py::arg("below_y"), py::arg("below_z"),
      py::arg("precision"), py::arg("dy16"), py::arg("x16"), py::arg("device"),
      "Backend::dense_backward of a layer whose dy is dz, its dx store writing the layer below's dz (and its "
      "16-bit bits at bf16 / fp16, else NaN bits), reading the 16-bit copies given: (dz below, dw, db, dz below's "
      "16-bit bits, dW's norm slots: DenseShape::norm_slots, NaN-filled before); for tests.");
  m.def(
      "_dense_half_reads",
      [](int64_t in, int64_t out, const std::string& precision, const std::string& device) {
        // Backend::dense_half_reads for a Dense layer in -> out given every 16-bit copy (16-byte
        // aligned, as every allocation is), as a training step asks it (Trainer::half_reads):
        // whether its forward reads x's copy (the launch copying A and B) and its backward, dW
        // and dx, x's and dz's.
        alignas(256) static const uint16_t stand_in[8] = {};
        const DenseShape s{1, in, out, parse_precision(precision), {stand_in, stand_in, nullptr, stand_in}};
        const Backend& be = backend_for(Device::parse(device));
        const HalfReads f = be.dense_half_reads(s, false, true, true), b = be.dense_half_reads(s, true, true, true);
        return py::make_tuple(f.x, b.x, b.dy);
      },
      py::arg("in_"), py::arg("out"), py::arg("precision"), py::arg("device"),
      "Backend::dense_half_reads for a Dense layer in -> out with every 16-bit copy given: (forward reads x's copy, "
      "backward reads x's, backward reads dz's); for tests.");
  m.def(
      "_round_to_half",
      [](py::array_t<float, py::array::c_style> x, const std::string& format, const std::string& device) {
        // Backend::round_to_half on a device, or (device "host") the host's rounding of a
        // staged batch (cpp/half_round.h at the active ISA level), which must give the same bits.
        if (format != "bf16" && format != "fp16") throw std::invalid_argument("[_round_to_half] format bf16 or fp16");
        const size_t n = static_cast<size_t>(x.size());
        py::array_t<uint16_t> bits(static_cast<py::ssize_t>(n));
        if (device == "host") {
          cpu::elementwise().round_to_half(bits.mutable_data(), x.data(), static_cast<int64_t>(n), format == "bf16");
          return bits;
        }
        Backend& be = backend_for(Device::parse(device));
        Buffer<float> src(&be);
        Buffer<uint16_t> dst(&be);
        be.copy_to_device(src.reserve(n + 1), x.data(), sizeof(float) * n);
        dst.reserve(n + 1);
        be.round_to_half(dst.data(), src.data(), static_cast<int64_t>(n), 1, 1, parse_precision(format));
        be.copy_to_host(bits.mutable_data(), dst.data(), sizeof(uint16_t) * n);
        return bits;
      },
      py::arg("x"), py::arg("format"), py::arg("device"),
      "x rounded to bf16 or fp16 as bits by a device's Backend::round_to_half, or by the host (device 'host') as a "
      "staged batch is; for tests.");
  m.def(
      "_fake_quantize",
      [](py::array_t<float, py::array::c_style> x, py::array_t<float, py::array::c_style> scale,
         std::optional<py::array_t<int32_t, py::array::c_style>> zero, const std::string& dtype,
         const std::string& axis, const std::string& device) {
        // QAT's fake quantization (Backend::fake_quantize) on host copies: no checks beyond
        // the shapes, Trainer::fake_weights / fake_input make them.
        if (x.ndim() != 2) throw std::invalid_argument("[_fake_quantize] x (rows, cols)");
        if (dtype != "int8" && dtype != "uint8") throw std::invalid_argument("[_fake_quantize] dtype int8 or uint8");
        if (axis != "tensor" && axis != "row" && axis != "column")
          throw std::invalid_argument("[_fake_quantize] axis tensor, row or column");
        const int64_t rows = x.shape(0), cols = x.shape(1);
        const QuantAxis ax = axis == "tensor" ? QuantAxis::tensor : axis == "row" ? QuantAxis::row : QuantAxis::column;
        const size_t n = static_cast<size_t>(rows * cols), params = static_cast<size_t>(ax == QuantAxis::tensor ? 1
                                                                                        : ax == QuantAxis::row  ? rows
                                                                                                                : cols);
        if (static_cast<size_t>(scale.size()) != params || (zero && static_cast<size_t>(zero->size()) != params))
          throw std::invalid_argument("[_fake_quantize] scale and zero: one per axis entry");
        Backend& be = backend_for(Device::parse(device));
        Buffer<float> xd(&be), yd(&be), sd(&be);
        Buffer<int32_t> zd(&be);
        Buffer<uint8_t> codes(&be);
        be.copy_to_device(xd.reserve(n), x.data(), sizeof(float) * n);
        be.copy_to_device(sd.reserve(params), scale.data(), sizeof(float) * params);
        if (zero) be.copy_to_device(zd.reserve(params), zero->data(), sizeof(int32_t) * params);
        const std::vector<float> nan(n, std::numeric_limits<float>::quiet_NaN());
        be.copy_to_device(yd.reserve(n), nan.data(), sizeof(float) * n);
        codes.reserve(n);
        {
          py::gil_scoped_release release;
          be.fake_quantize(yd.data(), codes.data(), dtype == "int8" ? DType::i8 : DType::u8, xd.data(), sd.data(),
                           zero ? zd.data() : nullptr, rows, cols, ax);
        }
        py::array_t<float> y({rows, cols});
        be.copy_to_host(y.mutable_data(), yd.data(), sizeof(float) * n);
        return y;
      },
      py::arg("x"), py::arg("scale"), py::arg("zero"), py::arg("dtype"), py::arg("axis"), py::arg("device"),
      "Backend::fake_quantize (QAT's dequantize(quantize(x)), one launch on the CUDA devices) on a device; for "
      "tests.");
  m.def(
      "_loss_metrics",
      [](const std::string& loss_name, py::array_t<float, py::array::c_style> logits,
         std::optional<py::array_t<int32_t, py::array::c_style>> labels,
         std::optional<py::array_t<float, py::array::c_style>> targets,
         std::optional<py::array_t<float, py::array::c_style>> class_weights,
         std::optional<py::array_t<float, py::array::c_style>> row_weights, float label_smoothing, double loss_sum,
         double loss_rows, int64_t correct, const std::string& device) {
        // The training step's loss (Trainer::loss_and_count) on host copies of its inputs:
        // no checks beyond the shapes, the executor's own callers make them.
        const bool softmax = loss_name == "softmax_cross_entropy", bce = loss_name == "binary_cross_entropy";
        if (!softmax && !bce && loss_name != "mse")
          throw std::invalid_argument("[_loss_metrics] loss is softmax_cross_entropy, binary_cross_entropy or mse");
        if (logits.ndim() != 2 || logits.shape(0) < 1 || logits.shape(1) < 1)
          throw std::invalid_argument("[_loss_metrics] logits (rows, cols)");
        const int64_t rows = logits.shape(0), cols = logits.shape(1);
        const size_t n = static_cast<size_t>(rows * cols);
        if ((softmax || bce) && (!labels || labels->ndim() != 1 || labels->shape(0) != rows))
          throw std::invalid_argument("[_loss_metrics] labels (rows) int32");
        if (!softmax && (!targets || static_cast<size_t>(targets->size()) != n))
          throw std::invalid_argument("[_loss_metrics] targets (rows, cols) float32");
        Backend& be = backend_for(Device::parse(device));
        auto upload = [&](auto& buf, const auto* src, size_t count) {
          buf.reserve(count);
          be.copy_to_device(buf.data(), src, sizeof(*src) * count);
          return buf.data();
        };
        Buffer<float> z(&be), g(&be), t(&be), cw(&be), rw(&be);
        Buffer<int32_t> y(&be);
        Buffer<double> sums(&be);
        Buffer<int64_t> count(&be);
        const std::vector<float> nan(n, std::numeric_limits<float>::quiet_NaN());
        const double host_sums[2] = {std::numeric_limits<double>::quiet_NaN(), loss_sum};
        LossMetrics m{upload(sums, host_sums, 2) + 1, loss_rows, upload(count, &correct, 1)};
        // The statistics the step also folds: a confusion matrix from zero (classification),
        // the regression sums from zero around the first target row (mse).
        const int64_t k = cols == 1 ? 2 : cols;
        Buffer<int64_t> confusion(&be);
        Buffer<double> stats(&be), shift(&be);
        const size_t stat_count = static_cast<size_t>(softmax || bce ? k * k : 4 * cols);
        if (softmax || bce) {
          const std::vector<int64_t> zero(stat_count, 0);
          m.confusion = upload(confusion, zero.data(), stat_count);
        } else {
          const std::vector<double> zero(stat_count, 0.0), first(targets->data(), targets->data() + cols);
          m.regression = upload(stats, zero.data(), stat_count);
          m.regression_shift = upload(shift, first.data(), first.size());
        }
        const float* cwp = class_weights ? upload(cw, class_weights->data(), static_cast<size_t>(cols)) : nullptr;
        const float* rwp = row_weights ? upload(rw, row_weights->data(), static_cast<size_t>(rows)) : nullptr;
        const int32_t* yp = labels ? upload(y, labels->data(), static_cast<size_t>(rows)) : nullptr;
        const float* tp = targets ? upload(t, targets->data(), n) : nullptr;
        const float* zp = upload(z, logits.data(), n);
        float* gp = upload(g, nan.data(), n);
        {
          py::gil_scoped_release release;
          if (softmax)
            be.softmax_cross_entropy_metrics(gp, sums.data(), zp, yp, cwp, rwp, rows, cols, label_smoothing, m);
          else if (bce)
            be.binary_cross_entropy_with_logits_metrics(gp, sums.data(), zp, tp, yp, rwp, rows, cols, m);
          else
            be.mse_metrics(gp, sums.data(), zp, tp, rwp, rows, cols, m);
        }
        py::array_t<float> grad({rows, cols});
        double out_sums[2];
        be.copy_to_host(grad.mutable_data(), gp, sizeof(float) * n);
        be.copy_to_host(out_sums, sums.data(), sizeof(out_sums));
        be.copy_to_host(&correct, count.data(), sizeof(correct));
        py::object statistic;
        if (softmax || bce) {
          py::array_t<int64_t> counts({k, k});
          be.copy_to_host(counts.mutable_data(), confusion.data(), sizeof(int64_t) * stat_count);
          statistic = counts;
        } else {
          py::array_t<double> sums4({int64_t{4}, cols});
          be.copy_to_host(sums4.mutable_data(), stats.data(), sizeof(double) * stat_count);
          statistic = sums4;
        }
        return py::make_tuple(out_sums[0], grad, out_sums[1], correct, statistic);
      },
      py::arg("loss"), py::arg("logits"), py::arg("labels"), py::arg("targets"), py::arg("class_weights"),
      py::arg("row_weights"), py::arg("label_smoothing"), py::arg("loss_sum"), py::arg("loss_rows"), py::arg("correct"),
      py::arg("device"),
      "Backend::<loss>_metrics (the training step's loss, gradient and metric sums) on a device: (loss, grad, "
      "loss_sum + loss x loss_rows, correct + the rows right, the confusion matrix (classification) or the "
      "regression sums around the first target row (mse)); for tests.");
  m.def(
      "_record_graph_around",
      [](const std::string& op, const std::string& device) {
        // One operation recorded into a graph on a device, then the graph replayed: what
        // the step graph's capture allows (a copy from pinned memory, a fill, a copy on
        // the device) and what it refuses (host waits, allocations, pageable sources).
        Backend& be = backend_for(Device::parse(device));
        Buffer<float> dev(&be);
        dev.reserve(4);
        be.fill_zero(dev.data(), 4 * sizeof(float));
        float* pinned = static_cast<float*>(be.allocate_host(4 * sizeof(float)));
        std::vector<float> pageable(4, 3.0f);
        struct Release {
          Backend& be;
          float* p;
          ~Release() { be.deallocate_host(p); }
        } release{be, pinned};
        for (int i = 0; i < 4; ++i) pinned[i] = 1.0f;
        std::vector<float> got(4);
        void* graph = be.record_graph([&] {
          if (op == "pinned_copy")
            be.copy_to_device(dev.data(), pinned, 4 * sizeof(float));
          else if (op == "pageable_copy")
            be.copy_to_device(dev.data(), pageable.data(), 4 * sizeof(float));
          else if (op == "copy_to_host")
            be.copy_to_host(got.data(), dev.data(), 4 * sizeof(float));
          else if (op == "synchronize")
            be.synchronize();
          else if (op == "allocate")
            Buffer<float>(&be).reserve(1);
          else if (op == "wait_event")
            be.wait_event(nullptr);
          else if (op == "nested")
            be.record_graph([] {});
          else
            throw std::invalid_argument("[_record_graph_around] unknown op '" + op + "'");
        });
        // Recorded, nothing ran: the device buffer still holds zeros. A replay copies what
        // the pinned memory holds then, not at the recording.
        be.copy_to_host(got.data(), dev.data(), 4 * sizeof(float));
        const float before = got[0];
        for (int i = 0; i < 4; ++i) pinned[i] = 2.0f;
        be.replay_graph(graph);
        be.copy_to_host(got.data(), dev.data(), 4 * sizeof(float));
        be.destroy_graph(graph);
        return std::make_pair(before, got[0]);
      },
      py::arg("op"), py::arg("device"),
      "Records one operation into a device graph (Backend::record_graph) and replays it: (the value before the "
      "replay, after it); the operations a graph cannot hold raise; for tests.");
  m.def(
      "_set_isa",
      [](const std::string& level) { return std::string(cpu::isa_name(cpu::set_isa_ceiling(cpu::parse_isa(level)))); },
      py::arg("level"),
      "Caps the ISA level kernels are chosen for (as CUSTOMML_ISA) and returns the level now active; for tests.");

  m.def(
      "_set_amx_emulation",
      [](bool on) {
        cpu::set_amx_emulation(on);
        return cpu::amx_emulation();
      },
      py::arg("on"),
      "Runs the AMX kernels on the host model of the tile instructions (as CUSTOMML_AMX_EMULATION=1); for tests.");
  m.def(
      "_amx_run",
      [](py::bytes config, const std::string& op, py::array_t<uint8_t, py::array::c_style> c,
         py::array_t<uint8_t, py::array::c_style> a, py::array_t<uint8_t, py::array::c_style> b) {
        const std::string cfg = config;
        if (cfg.size() != sizeof(cpu::amx::TileConfig)) throw std::invalid_argument("[_amx_run] config is 64 bytes");
        for (const auto* t : {&c, &a, &b})
          if (t->ndim() != 2 || t->shape(0) != 16 || t->shape(1) != 64)
            throw std::invalid_argument("[_amx_run] c, a and b are (16, 64) uint8");
        cpu::amx::TileConfig tc;
        std::memcpy(&tc, cfg.data(), sizeof tc);
        // Tile 0 stored over a copy of b: bytes outside its rows x colsb keep b's values.
        py::array_t<uint8_t> out({16, 64});
        std::memcpy(out.mutable_data(), b.data(), 16 * 64);
        namespace amx = cpu::amx;
        amx::ldtilecfg(tc);
        if (op == "release") {
          amx::tilerelease();
          amx::tileloadd<0>(c.data(), 64);  // faults: nothing is configured
        }
        amx::tileloadd<0>(c.data(), 64);
        if (op == "tdpbusd" || op == "tdpbf16ps") {
          amx::tileloadd<1>(a.data(), 64);
          amx::tileloadd<2>(b.data(), 64);
          if (op == "tdpbusd")
            amx::tdpbusd<0, 1, 2>();
          else
            amx::tdpbf16ps<0, 1, 2>();
        } else if (op == "tilezero") {
          amx::tilezero<0>();
        } else if (op != "load") {
          throw std::invalid_argument("[_amx_run] op must be load, tilezero, tdpbusd, tdpbf16ps or release");
        }
        amx::tilestored<0>(out.mutable_data(), 64);
        amx::tilerelease();
        return out;
      },
      py::arg("config"), py::arg("op"), py::arg("c"), py::arg("a"), py::arg("b"),
      "The AMX tile model (cpu/amx_tiles.h): ldtilecfg(config), c into tile 0 (a, b into 1, 2), one instruction, "
      "tile 0 stored over a copy of b; for the emulator's own tests.");
  m.def(
      "_vmath",
      [](const std::string& name, py::array_t<float, py::array::c_style | py::array::forcecast> x,
         const std::string& level) {
        const cpu::IsaLevel want = cpu::parse_isa(level);
        if (static_cast<int>(want) > static_cast<int>(cpu::detected_isa()))
          throw std::invalid_argument("[_vmath] this CPU lacks " + level);
        const cpu::ElementwiseKernels& k = cpu::elementwise_for(want);
        const std::pair<const char*, cpu::UnaryFn> fns[] = {{"exp", k.exp},
                                                            {"exp_nonpositive", k.exp_nonpositive},
                                                            {"log", k.log},
                                                            {"log1p", k.log1p},
                                                            {"log1p_unit", k.log1p_unit},
                                                            {"tanh", k.tanh},
                                                            {"sigmoid", k.sigmoid},
                                                            {"gelu", k.gelu}};
        for (const auto& [fname, fn] : fns)
          if (name == fname) {
            py::array_t<float> y(x.request().shape);
            const float* src = x.data();
            float* dst = y.mutable_data();
            const int64_t n = x.size();
            {
              py::gil_scoped_release release;
              fn(dst, src, n);
            }
            return y;
          }
        throw std::invalid_argument("[_vmath] unknown function '" + name + "'");
      },
      py::arg("name"), py::arg("x"), py::arg("level"),
      "Private, for tests: the vectorized float32 math (exp, exp_nonpositive, log, log1p, log1p_unit, tanh, sigmoid, "
      "gelu) of one ISA level.");

  m.def("_dlpack_exports_alive", &Array::dlpack_exports_alive,
        "Managed tensors customml exported whose deleter has not run yet (for tests).");
}

}  // namespace customml
