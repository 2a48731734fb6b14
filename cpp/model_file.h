#pragma once
// Defines: ModelFile, the one reader of customml model files (python/customml/io.py
// documents the layout: a safetensors file, format versions 1 to 3), and read_model_file /
// parse_model_file. Every length, offset, name, dtype and shape is checked against the
// architecture, every declared size against the parameter ceiling and the bytes present,
// and the SHA-256 checksum is verified, before anything sized by the file is allocated.
// Any problem is a ModelFileError ("WHERE: what is wrong, naming the field"). No Python:
// customml.io and the C runtime (customml/customml.h) both read files through it.

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "private_api.h"
#include "third_party/nlohmann/json.hpp"

namespace customml {

// JSON with the keys in file order, so that messages quote objects as they were written.
using Json = nlohmann::ordered_json;

// A malformed, truncated, oversized or modified file (Python: ValueError).
class CUSTOMML_PRIVATE_API ModelFileError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// The file could not be read at all (Python: OSError with this errno, e.g. FileNotFoundError).
class CUSTOMML_PRIVATE_API ModelFileIoError : public std::runtime_error {
 public:
  ModelFileIoError(int code, const std::string& message) : std::runtime_error(message), error_code(code) {}
  int error_code;
};

// The largest header a reader accepts (as the safetensors reference implementation).
constexpr int64_t kMaxHeaderBytes = 100000000;
// The newest format version this reader knows (4: bf16 Dense layers).
constexpr int kFormatVersion = 4;
// The default ceiling on a model's parameters (1 GiB of float32). A pruned kernel is
// stored compressed, so its declared dense shape is not tied to the bytes present: the
// ceiling bounds what any file can make the reader allocate. The environment variable
// CUSTOMML_MAX_PARAMS (a positive integer) overrides it.
constexpr int64_t kDefaultMaxParams = int64_t{1} << 28;
int64_t max_params_limit();

// One tensor entry of the container: [begin, end) of the data section.
struct FileTensor {
  std::string dtype;  // safetensors name: F32, I32, I8, ...
  std::vector<int64_t> shape;
  int64_t begin = 0, end = 0;
};

// A Dense layer as the file holds it, decoded (a compressed kernel expanded).
struct FileDense {
  int64_t in = 0, out = 0;
  std::vector<float> bias;     // (out)
  std::vector<float> kernel;   // (in, out); empty for an int8 layer
  bool bf16 = false;           // the kernel was stored as BF16 (its values are bf16)
  std::vector<uint8_t> keep;   // (in, out), 1 where a weight stays; empty unless masked
  bool int8 = false;           // int8: the codes below replace the kernel
  std::vector<int8_t> w_q;     // (in, out) in [-127, 127]
  std::vector<float> w_scale;  // (out) per channel or (1)
  bool per_channel = false;
  float in_scale = 0.0f;  // > 0: static uint8 inputs; 0: dynamic
  int32_t in_zero = 0;
  std::string format = "dense";  // the inference format: dense, csr or nm
  int64_t min_batch = 1, max_batch = 0;
  bool has_nm = false;
  int nm_n = 2, nm_m = 4;
};

// NOLINTNEXTLINE(bugprone-exception-escape): nlohmann::json members; no constructor here throws
struct ModelFile {
  std::string where;  // the path, or "<bytes>", as messages name it
  int format_version = 0;
  std::string customml_version;
  Json architecture;                   // validated: name, input_dim, seed, layers
  Json training;                       // null, or {optimizer, loss, metrics[, precision]}
  Json optimizer_state;                // null, or {step, epochs_trained, slots[, loss_scale...]}
  Json callbacks_state;                // null, or {key: {name: number|null}}
  std::map<int64_t, FileDense> dense;  // by Dense layer index
  int64_t input_dim = 0;

  // The float32 tensor `name` (an optimizer slot's), copied out of the data section.
  CUSTOMML_PRIVATE_API std::vector<float> f32(const std::string& name) const;
  const std::map<std::string, FileTensor>& tensors() const { return tensors_; }

  std::vector<uint8_t> raw_;  // the file's bytes
  int64_t data_begin_ = 0;    // where the data section starts in raw_
  std::map<std::string, FileTensor> tensors_;
};

// Reads and validates the file at path (regular files only; a FIFO or device is refused).
CUSTOMML_PRIVATE_API ModelFile read_model_file(const std::string& path);
// Validates bytes already in memory; where names them in messages.
CUSTOMML_PRIVATE_API ModelFile parse_model_file(std::vector<uint8_t> bytes, const std::string& where);

// "sha256:" + the hex digest the writer stores (see customml.io).
CUSTOMML_PRIVATE_API std::string sha256_hex(const uint8_t* data, size_t n);

}  // namespace customml
