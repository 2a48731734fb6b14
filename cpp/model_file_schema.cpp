// The model-file reader's customml half: the metadata (format, version, checksum), the
// architecture, training configuration, optimizer and callback state and pruning, then the
// tensors the architecture implies, checked and decoded. The layout is documented in
// python/customml/io.py; the messages are the ones customml.io has always given.

#include <algorithm>
#include <cmath>
#include <cstring>

#include "model_file.h"
#include "model_file_detail.h"

#ifndef CUSTOMML_VERSION
#define CUSTOMML_VERSION "unknown"
#endif

namespace customml {
namespace model_file_detail {
namespace {

// The deepest int8 layer gemm_s8 takes (kGemmS8MaxK in cpp/backend.h: 255 * 127 * k < 2^31).
constexpr int64_t kGemmS8MaxK = 66000;
constexpr int64_t kMaxBatchLimit = int64_t{1} << 62;

bool has_keys(const Json& v, std::initializer_list<const char*> required, std::initializer_list<const char*> optional) {
  if (!v.is_object()) return false;
  for (const char* k : required)
    if (!v.contains(k)) return false;
  for (auto& kv : v.items()) {
    bool known = false;
    for (const char* k : required) known = known || kv.key() == k;
    for (const char* k : optional) known = known || kv.key() == k;
    if (!known) return false;
  }
  return true;
}

// A training configuration value's JSON type: "number", "bool", "rate" (a number or a
// schedule {class, config}), "numbers" (a list of numbers); a trailing "?" allows null.
bool json_type(const Json& v, std::string kind) {
  if (kind.back() == '?') {
    if (v.is_null()) return true;
    kind.pop_back();
  }
  if (kind == "number") return is_number(v);
  if (kind == "rate") {
    if (is_number(v)) return true;
    if (!has_keys(v, {"class", "config"}, {}) || !v["config"].is_object() || !v["class"].is_string()) return false;
    const std::string c = v["class"].get<std::string>();
    return c == "StepDecay" || c == "ExponentialDecay" || c == "CosineDecay";
  }
  if (kind == "numbers") {
    if (!v.is_array()) return false;
    return std::all_of(v.begin(), v.end(), [](const Json& x) { return is_number(x); });
  }
  return v.is_boolean();
}

using Types = std::vector<std::pair<const char*, const char*>>;
const Types kAdam = {{"learning_rate", "rate"},  {"beta_1", "number"}, {"beta_2", "number"},   {"epsilon", "number"},
                     {"weight_decay", "number"}, {"amsgrad", "bool"},  {"clipnorm", "number?"}};
const std::map<std::string, Types> kConfigTypes = {
    {"SGD",
     {{"learning_rate", "rate"},
      {"momentum", "number"},
      {"nesterov", "bool"},
      {"weight_decay", "number"},
      {"clipnorm", "number?"}}},
    {"Adam", kAdam},
    {"AdamW", kAdam},
    {"SoftmaxCrossEntropy", {{"label_smoothing", "number"}, {"class_weights", "numbers?"}}},
    {"BinaryCrossEntropy", {}},
    {"MeanSquaredError", {}},
    {"Distillation", {{"temperature", "number"}, {"alpha", "number"}}}};

std::vector<std::string> slot_names(const Json& training) {
  if (training.is_null()) return {};
  const Json& opt = training["optimizer"];
  if (opt["class"] == "SGD") {
    return opt["config"]["momentum"].get<double>() != 0.0 ? std::vector<std::string>{"velocity"}
                                                          : std::vector<std::string>{};
  }
  if (opt["config"]["amsgrad"].get<bool>()) return {"m", "v", "vmax"};
  return {"m", "v"};
}

std::string list_repr(const std::vector<std::string>& v) {
  Json j = Json::array();
  for (const std::string& s : v) j.push_back(s);
  return repr(j);
}

struct Expected {
  std::string name;
  std::vector<std::string> dtypes;
  std::vector<int64_t> shape;
};

class Schema {
 public:
  Schema(const Container& c, const std::vector<uint8_t>& raw, ModelFile& out) : c_(c), raw_(raw), out_(out) {}
  void run();

 private:
  [[noreturn]] void fail(const std::string& m) const { c_.fail(m); }
  Json meta_json(const std::string& key) const {
    const std::string text = c_.metadata[key].get<std::string>();
    return parse_json(c_, text.data(), text.size(), key);
  }
  void metadata();
  void architecture(const Json& arch);
  void training(const Json& t);
  [[noreturn]] void fail_config_type(const char* part, const std::string& cls, const char* key, const std::string& kind,
                                     const Json& value) const;
  void state(const Json& s);
  void pruning(const Json& p);
  std::vector<Expected> expected_tensors() const;
  void check_tensors();
  void check_csr(int64_t layer, const FileDense& d);
  void decode();
  const uint8_t* bytes(const std::string& name) const {
    return raw_.data() + c_.data_begin + c_.tensors.at(name).begin;
  }
  // An I16 / I32 / I64 tensor's elements as int64.
  struct Integers {
    const uint8_t* p;
    int64_t size;
    int64_t operator[](int64_t i) const {
      if (size == 2) {
        int16_t x;
        std::memcpy(&x, p + 2 * i, 2);
        return x;
      }
      if (size == 4) {
        int32_t x;
        std::memcpy(&x, p + 4 * i, 4);
        return x;
      }
      int64_t x;
      std::memcpy(&x, p + 8 * i, 8);
      return x;
    }
  };
  Integers integers(const std::string& name) const { return {bytes(name), dtype_size(c_.tensors.at(name).dtype)}; }

  const Container& c_;
  const std::vector<uint8_t>& raw_;
  ModelFile& out_;
  std::vector<int64_t> dense_layers_;    // Dense layer indices
  std::map<int64_t, Json> pruning_;      // by layer
  std::map<int64_t, int64_t> width_in_;  // a Dense layer's input width
};

void Schema::metadata() {
  const Json& meta = c_.metadata;
  if (!meta.is_object() || meta.empty() || !meta.contains("format"))
    fail("not a customml model file (a safetensors file without customml metadata)");
  if (meta["format"] != "customml")
    fail("not a customml model file (its format is " + short_repr(meta["format"]) + ")");
  const std::string version = meta.contains("format_version") ? meta["format_version"].get<std::string>() : "";
  const bool digits =
      !version.empty() && std::all_of(version.begin(), version.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
  const size_t nz = digits ? std::min(version.find_first_not_of('0'), version.size()) : 0;
  if (!digits || nz == version.size()) fail("invalid format_version " + repr_str(version));
  const std::string number = version.substr(nz);
  if (number.size() > 9 || std::stoi(number) > kFormatVersion) {
    const std::string by = meta.contains("customml_version") ? short_repr(meta["customml_version"]) : "'?'";
    fail("the file has format version " + number + ", written by a newer customml (" + by + "); this customml (" +
         CUSTOMML_VERSION + ") reads format versions up to " + std::to_string(kFormatVersion) +
         ": upgrade customml to load it");
  }
  out_.format_version = std::stoi(number);
  static const char* required[] = {"format",        "format_version", "customml_version", "architecture",
                                   "preprocessing", "training",       "checksum"};
  static const char* optional[] = {"optimizer_state", "callbacks_state", "pruning"};
  for (const char* k : required)
    if (!meta.contains(k)) fail(std::string("the metadata lacks ") + repr_str(k));
  for (auto& kv : meta.items()) {
    const auto known = [&](const char* k) { return kv.key() == k; };
    if (std::none_of(std::begin(required), std::end(required), known) &&
        std::none_of(std::begin(optional), std::end(optional), known))
      fail("unknown metadata key " + short_repr(kv.key()));
  }
  // The checksum: every other entry, sorted by key (UTF-8 bytes sort as code points), each
  // as key NUL value NUL, then the data section.
  std::map<std::string, std::string> sorted;
  for (auto& kv : meta.items()) sorted[kv.key()] = kv.value().get<std::string>();
  std::vector<uint8_t> hashed;
  for (auto& kv : sorted) {
    if (kv.first == "checksum") continue;
    hashed.insert(hashed.end(), kv.first.begin(), kv.first.end());
    hashed.push_back(0);
    hashed.insert(hashed.end(), kv.second.begin(), kv.second.end());
    hashed.push_back(0);
  }
  hashed.insert(hashed.end(), raw_.begin() + c_.data_begin, raw_.end());
  if (sorted["checksum"] != "sha256:" + sha256_hex(hashed.data(), hashed.size()))
    fail("checksum mismatch: the data or the metadata were modified or corrupted after saving");
  out_.customml_version = sorted["customml_version"];
}

void Schema::architecture(const Json& arch) {
  if (!has_keys(arch, {"name", "input_dim", "seed", "layers"}, {}))
    fail("architecture must be an object with name, input_dim, seed and layers, got " + short_repr(arch));
  if (!arch["name"].is_string()) fail("architecture name must be a string");
  if (!int_in(arch["input_dim"], 1, INT64_MAX, &out_.input_dim))
    fail("architecture input_dim must be an integer >= 1, got " + short_repr(arch["input_dim"]));
  const Json& seed = arch["seed"];
  if (!(seed.is_number_unsigned() || int_in(seed, 0, INT64_MAX)))
    fail("architecture seed must be an integer in [0, 2**64), got " + short_repr(seed));
  const Json& layers = arch["layers"];
  if (!layers.is_array() || layers.empty()) fail("architecture layers must be a non-empty list");
  const int64_t ceiling = max_params_limit();
  int64_t width = out_.input_dim, params = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    const Json& spec = layers[i];
    const std::string at = "architecture layer " + std::to_string(i) + ": ";
    const std::string kind = spec.is_object() && spec.contains("kind") && spec["kind"].is_string()
                                 ? spec["kind"].get<std::string>()
                                 : std::string();
    bool ok = false;
    if (kind == "dense")
      ok = has_keys(spec, {"kind", "name", "units", "activation", "kernel_initializer"},
                    {"kernel_regularizer", "trainable", "quantization", "kernel_dtype"});
    else if (kind == "dropout")
      ok = has_keys(spec, {"kind", "name", "rate"}, {});
    else if (kind == "normalization")
      ok = has_keys(spec, {"kind", "name", "mean", "variance"}, {});
    else if (kind == "rescaling")
      ok = has_keys(spec, {"kind", "name", "scale", "offset"}, {});
    if (!ok)
      fail(at + "expected a dense, dropout, normalization or rescaling layer description, got " + short_repr(spec));
    if (kind == "normalization") {
      for (const char* k : {"mean", "variance"}) {
        const Json& v = spec[k];
        if (!(v.is_null() || (v.is_array() && static_cast<int64_t>(v.size()) == out_.input_dim &&
                              std::all_of(v.begin(), v.end(), [](const Json& x) { return is_number(x); }))))
          fail(at + "normalization mean and variance must be null or lists of " + std::to_string(out_.input_dim) +
               " numbers");
      }
    }
    if (kind == "rescaling" && !(is_number(spec["scale"]) && is_number(spec["offset"])))
      fail(at + "rescaling scale and offset must be numbers");
    if (spec.contains("trainable") && !spec["trainable"].is_boolean())
      fail(at + "trainable must be true or false, got " + short_repr(spec["trainable"]));
    if (spec.contains("quantization")) {
      const Json& q = spec["quantization"];
      if (!(has_keys(q, {"per_channel", "input"}, {}) && q["per_channel"].is_boolean() &&
            (q["input"] == "static" || q["input"] == "dynamic")))
        fail(at + "quantization must be {per_channel: bool, input: static|dynamic}, got " + short_repr(q));
    }
    if (spec.contains("kernel_dtype") && (spec["kernel_dtype"] != "bf16" || spec.contains("quantization")))
      fail(at + "kernel_dtype must be \"bf16\" (and the layer not int8), got " + short_repr(spec["kernel_dtype"]));
    if (spec.contains("kernel_regularizer") && !spec["kernel_regularizer"].is_null()) {
      const Json& reg = spec["kernel_regularizer"];
      if (!(has_keys(reg, {"l1", "l2"}, {}) && is_number(reg["l1"]) && is_number(reg["l2"])))
        fail(at + "kernel_regularizer must be {l1, l2} numbers, got " + short_repr(reg));
    }
    if (!spec["name"].is_string()) fail(at + "name must be a string");
    if (kind != "dense") continue;
    int64_t units = 0;
    if (!int_in(spec["units"], 1, INT64_MAX, &units))
      fail(at + "units must be an integer >= 1, got " + short_repr(spec["units"]));
    // Every size product checked, against the ceiling, before anything is allocated.
    const int64_t layer_params = checked_mul(width + 1, units);
    if (layer_params < 0 || layer_params > ceiling - params)
      fail(at + "units " + std::to_string(units) + " with " + std::to_string(width) +
           " inputs bring the model to more than " + std::to_string(ceiling) +
           " parameters, the ceiling on what a file may declare (the environment variable CUSTOMML_MAX_PARAMS "
           "raises it)");
    params += layer_params;
    dense_layers_.push_back(static_cast<int64_t>(i));
    width_in_[static_cast<int64_t>(i)] = width;
    FileDense& d = out_.dense[static_cast<int64_t>(i)];
    d.in = width;
    d.out = units;
    if (spec.contains("quantization")) {
      d.int8 = true;
      d.per_channel = spec["quantization"]["per_channel"].get<bool>();
    }
    d.bf16 = spec.contains("kernel_dtype");
    width = units;
  }
  out_.architecture = arch;
}

[[noreturn]] void Schema::fail_config_type(const char* part, const std::string& cls, const char* key,
                                           const std::string& kind, const Json& value) const {
  const std::string base = kind.back() == '?' ? kind.substr(0, kind.size() - 1) : kind;
  const std::string what = base == "rate" ? "number or a learning-rate schedule {class, config}" : base;
  fail(std::string("training ") + part + " " + cls + " " + key + " must be " + what +
       (kind.back() == '?' ? " or null" : "") + ", got " + short_repr(value));
}

void Schema::training(const Json& t) {
  out_.training = t;
  if (t.is_null()) return;
  if (!has_keys(t, {"optimizer", "loss", "metrics"}, {"precision"}))
    fail("training must be null or an object with optimizer, loss, metrics (and precision), got " + short_repr(t));
  if (t.contains("precision") &&
      !(t["precision"] == "fp32" || t["precision"] == "tf32" || t["precision"] == "bf16" || t["precision"] == "fp16"))
    fail("training precision must be fp32, tf32, bf16 or fp16, got " + short_repr(t["precision"]));
  for (const char* part : {"optimizer", "loss"}) {
    const bool opt = std::strcmp(part, "optimizer") == 0;
    const Json& item = t[part];
    const std::string cls = has_keys(item, {"class", "config"}, {}) && item["class"].is_string()
                                ? item["class"].get<std::string>()
                                : std::string();
    const bool known = opt ? (cls == "SGD" || cls == "Adam" || cls == "AdamW")
                           : (cls == "SoftmaxCrossEntropy" || cls == "BinaryCrossEntropy" ||
                              cls == "MeanSquaredError" || cls == "Distillation");
    if (!known || !item["config"].is_object())
      fail(std::string("training ") + part + " must be {class, config} with class one of " +
           (opt ? "SGD, Adam, AdamW" : "SoftmaxCrossEntropy, BinaryCrossEntropy, MeanSquaredError, Distillation") +
           ", got " + short_repr(item));
    const Types& types = kConfigTypes.at(cls);
    const Json& config = item["config"];
    bool same = config.size() == types.size();
    for (auto& kt : types) same = same && config.contains(kt.first);
    if (!same) {
      std::string names;
      for (auto& kt : types) names += (names.empty() ? "" : ", ") + std::string(kt.first);
      std::vector<std::string> got;
      for (auto& kv : config.items()) got.push_back(kv.key());
      std::sort(got.begin(), got.end());
      fail(std::string("training ") + part + " " + cls + " config must have exactly the keys " +
           (names.empty() ? "(none)" : names) + ", got " + short_repr(Json(got)));
    }
    for (auto& kt : types)
      if (!json_type(config[kt.first], kt.second)) fail_config_type(part, cls, kt.first, kt.second, config[kt.first]);
  }
  const Json& metrics = t["metrics"];
  if (!metrics.is_array() || !std::all_of(metrics.begin(), metrics.end(), [](const Json& m) { return m.is_string(); }))
    fail("training metrics must be a list of strings");
}

void Schema::state(const Json& s) {
  const Json& t = out_.training;
  if (t.is_null()) fail("optimizer_state without a training configuration");
  const bool fp16 = t.contains("precision") && t["precision"] == "fp16";
  const bool ok = fp16 ? has_keys(s, {"step", "epochs_trained", "slots", "loss_scale", "loss_scale_good_steps"}, {})
                       : has_keys(s, {"step", "epochs_trained", "slots"}, {});
  if (!ok)
    fail(std::string("optimizer_state must be an object with step, epochs_trained and slots") +
         (fp16 ? " (and, for fp16, loss_scale and loss_scale_good_steps)" : "") + ", got " + short_repr(s));
  if (fp16 && !(s["loss_scale"].is_number_float() && std::isfinite(s["loss_scale"].get<double>()) &&
                s["loss_scale"].get<double>() > 0 && int_in(s["loss_scale_good_steps"], 0, 1999)))
    fail(
        "optimizer_state loss_scale must be a finite number > 0 and loss_scale_good_steps an integer in [0, 2000), "
        "got " +
        short_repr(s["loss_scale"]) + ", " + short_repr(s["loss_scale_good_steps"]));
  for (const char* key : {"step", "epochs_trained"})
    if (!int_in(s[key], 0, (int64_t{1} << 62) - 1))
      fail(std::string("optimizer_state ") + key + " must be an integer >= 0, got " + short_repr(s[key]));
  const std::vector<std::string> slots = slot_names(t);
  if (s["slots"] != Json(slots))
    fail("optimizer_state slots " + short_repr(s["slots"]) + " do not match the optimizer " +
         t["optimizer"]["class"].get<std::string>() + " (expected " + list_repr(slots) + ")");
  out_.optimizer_state = s;
}

void Schema::pruning(const Json& p) {
  if (!(has_keys(p, {"layers"}, {}) && p["layers"].is_object()))
    fail("pruning must be an object {layers: {index: ...}}, got " + short_repr(p));
  const Json& layers = out_.architecture["layers"];
  for (auto& kv : p["layers"].items()) {
    const std::string& key = kv.key();
    const Json& spec = kv.value();
    int64_t i = -1;
    if (!key.empty() && key.size() < 10 &&
        std::all_of(key.begin(), key.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
      i = std::stoll(key);
    if (!(i >= 0 && i < static_cast<int64_t>(layers.size()) && std::to_string(i) == key && out_.dense.count(i)))
      fail("pruning names layer " + repr_str(key) + ", which is not a Dense layer of the architecture");
    if (out_.dense[i].int8)
      fail("pruning names layer " + std::to_string(i) +
           ", which is int8 (int8 layers hold their zeros in their codes)");
    if (out_.dense[i].bf16)
      fail("pruning names layer " + std::to_string(i) +
           ", which is bf16 (bf16 layers hold their zeros in their kernel)");
    const bool ok = has_keys(spec, {"masked", "format", "min_batch", "max_batch"}, {"n_m"}) &&
                    spec["masked"].is_boolean() &&
                    (spec["format"] == "dense" || spec["format"] == "csr" || spec["format"] == "nm") &&
                    int_in(spec["min_batch"], 1, kMaxBatchLimit) && int_in(spec["max_batch"], 0, kMaxBatchLimit);
    if (!ok)
      fail("pruning layer " + std::to_string(i) +
           ": expected {masked: bool, format: dense|csr|nm, min_batch: integer in [1, 2**62], max_batch: integer in "
           "[0, 2**62]} (and n_m), got " +
           short_repr(spec));
    FileDense& d = out_.dense[i];
    d.format = spec["format"].get<std::string>();
    d.min_batch = spec["min_batch"].get<int64_t>();
    d.max_batch = spec["max_batch"].get<int64_t>();
    if (spec.contains("n_m") && !spec["n_m"].is_null()) {
      const Json& nm = spec["n_m"];
      int64_t n = 0, m = 0;
      if (!(nm.is_array() && nm.size() == 2 && int_in(nm[0], 1, 255, &n) && int_in(nm[1], 1, 255, &m) && n <= m))
        fail("pruning layer " + std::to_string(i) + ": n_m must be [n, m] with 1 <= n <= m <= 255, got " +
             short_repr(nm));
      d.has_nm = true;
      d.nm_n = static_cast<int>(n);
      d.nm_m = static_cast<int>(m);
    }
    pruning_[i] = spec;
  }
}

// (name, allowed dtypes, shape) of every tensor the file must hold, in file order: the
// 4-byte tensors (a masked kernel's values and offsets in place of the kernel), the
// optimizer slots, then the CSR indices and the int8 codes.
std::vector<Expected> Schema::expected_tensors() const {
  std::vector<Expected> wide, slots, last, halves, codes;
  for (int64_t i : dense_layers_) {
    const FileDense& d = out_.dense.at(i);
    const std::string p = "layers." + std::to_string(i);
    if (d.int8) {
      wide.push_back({p + ".kernel_scale", {"F32"}, {d.per_channel ? d.out : 1}});
      wide.push_back({p + ".bias", {"F32"}, {d.out}});
      if (out_.architecture["layers"][static_cast<size_t>(i)]["quantization"]["input"] == "static") {
        wide.push_back({p + ".input_scale", {"F32"}, {1}});
        wide.push_back({p + ".input_zero", {"I32"}, {1}});
      }
      codes.push_back({p + ".kernel_q", {"I8"}, {d.in, d.out}});
    } else if (d.bf16) {  // its kernel as BF16 after the index tensors, 2-byte aligned there
      wide.push_back({p + ".bias", {"F32"}, {d.out}});
      halves.push_back({p + ".kernel", {"BF16"}, {d.in, d.out}});
    } else if (pruning_.count(i) && pruning_.at(i)["masked"].get<bool>()) {
      auto it = c_.tensors.find(p + ".kernel.values");
      if (it == c_.tensors.end() || it->second.shape.size() != 1)
        fail("tensor " + repr_str(p + ".kernel.values") + " must be present and 1-D for the pruned layer " +
             std::to_string(i));
      const int64_t nnz = it->second.shape[0];
      if (nnz > d.in * d.out)  // in * out is within the parameter ceiling
        fail("tensor " + repr_str(p + ".kernel.values") + " holds " + std::to_string(nnz) +
             " weights, more than the kernel's " + std::to_string(d.in * d.out));
      wide.push_back({p + ".kernel.values", {"F32"}, {nnz}});
      wide.push_back({p + ".kernel.offsets", {"I32", "I64"}, {d.out + 1}});
      wide.push_back({p + ".bias", {"F32"}, {d.out}});
      last.push_back({p + ".kernel.index", {"I16", "I32"}, {nnz}});
    } else {
      wide.push_back({p + ".kernel", {"F32"}, {d.in, d.out}});
      wide.push_back({p + ".bias", {"F32"}, {d.out}});
    }
  }
  if (!out_.optimizer_state.is_null()) {
    for (const Json& slot : out_.optimizer_state["slots"]) {
      for (int64_t i : dense_layers_) {
        const FileDense& d = out_.dense.at(i);
        const std::string p = "optimizer." + slot.get<std::string>() + ".layers." + std::to_string(i);
        slots.push_back({p + ".kernel", {"F32"}, {d.in, d.out}});
        slots.push_back({p + ".bias", {"F32"}, {d.out}});
      }
    }
  }
  for (auto* part : {&slots, &last, &halves, &codes}) wide.insert(wide.end(), part->begin(), part->end());
  return wide;
}

void Schema::check_tensors() {
  const std::vector<Expected> expected = expected_tensors();
  std::vector<std::string> missing, extra;
  std::map<std::string, const Expected*> known;
  for (const Expected& e : expected) {
    known[e.name] = &e;
    if (!c_.tensors.count(e.name)) missing.push_back(e.name);
  }
  for (const std::string& name : c_.order)
    if (!known.count(name)) extra.push_back(name);
  if (!missing.empty() || !extra.empty()) {
    std::string problems;
    const auto more = [](size_t n) { return n > 1 ? " (and " + std::to_string(n - 1) + " more)" : std::string(); };
    if (!missing.empty()) problems = "tensor " + repr_str(missing[0]) + " is missing" + more(missing.size());
    if (!extra.empty())
      problems += (problems.empty() ? "" : "; ") + ("unexpected tensor " + short_repr(extra[0]) + more(extra.size()));
    fail(problems + " for the architecture in the file");
  }
  int64_t begin = 0;
  for (const Expected& e : expected) {
    const FileTensor& t = c_.tensors.at(e.name);
    if (std::find(e.dtypes.begin(), e.dtypes.end(), t.dtype) == e.dtypes.end()) {
      std::string allowed;
      for (const std::string& d : e.dtypes) allowed += (allowed.empty() ? "" : " or ") + d;
      fail("tensor " + repr_str(e.name) + " has dtype " + t.dtype + ", expected " + allowed);
    }
    if (t.shape != e.shape)
      fail("tensor " + repr_str(e.name) + " has shape " + tuple_str(t.shape) + ", expected " + tuple_str(e.shape) +
           " from the architecture");
    // The container checked that the entry's bytes match its shape.
    const int64_t end = begin + (t.end - t.begin);
    if (t.begin != begin || t.end != end)
      fail("tensor " + repr_str(e.name) + " has data_offsets [" + std::to_string(t.begin) + ", " +
           std::to_string(t.end) + "], expected [" + std::to_string(begin) + ", " + std::to_string(end) +
           "] (tensors are stored in layer order)");
    begin = end;
  }
}

// A compressed kernel is a valid CSR of its (out, in) transpose: offsets from 0 to nnz,
// never decreasing; indices in [0, in), strictly rising within a row. The checksum guards
// against accidents; this guards the executor against a file written wrong on purpose.
void Schema::check_csr(int64_t layer, const FileDense& d) {
  const std::string p = "layers." + std::to_string(layer) + ".kernel";
  const std::string offsets_name = p + ".offsets", index_name = p + ".index";
  const Integers offsets = integers(offsets_name), index = integers(index_name);
  const int64_t nnz = c_.tensors.at(p + ".values").shape[0];
  const int64_t first = offsets[0], last = offsets[d.out];
  if (first != 0 || last != nnz)
    fail("tensor " + repr_str(offsets_name) + " must run from 0 to " + std::to_string(nnz) +
         " (the number of stored weights), got " + std::to_string(first) + " to " + std::to_string(last));
  for (int64_t r = 0; r < d.out; ++r)
    if (offsets[r + 1] < offsets[r])
      fail("tensor " + repr_str(offsets_name) + " decreases at row " + std::to_string(r) +
           ": the offsets must not decrease");
  int64_t lo = 0, hi = 0;
  for (int64_t k = 0; k < nnz; ++k) {
    const int64_t v = index[k];
    lo = k == 0 ? v : std::min(lo, v);
    hi = k == 0 ? v : std::max(hi, v);
  }
  if (nnz > 0 && (lo < 0 || hi >= d.in))
    fail("tensor " + repr_str(index_name) + " holds input " + std::to_string(lo < 0 ? lo : hi) + ", outside [0, " +
         std::to_string(d.in) + ")");
  for (int64_t r = 0; r < d.out; ++r)
    for (int64_t k = offsets[r] + 1; k < offsets[r + 1]; ++k)
      if (index[k] <= index[k - 1])
        fail("tensor " + repr_str(index_name) + ": the inputs of output " + std::to_string(r) +
             " are not strictly increasing");
}

void Schema::decode() {
  for (int64_t i : dense_layers_) {
    FileDense& d = out_.dense.at(i);
    const std::string p = "layers." + std::to_string(i);
    d.bias.resize(static_cast<size_t>(d.out));
    std::memcpy(d.bias.data(), bytes(p + ".bias"), d.bias.size() * 4);
    const size_t n = static_cast<size_t>(d.in * d.out);
    if (d.int8) {
      d.w_q.resize(n);
      std::memcpy(d.w_q.data(), bytes(p + ".kernel_q"), n);
      if (std::find(d.w_q.begin(), d.w_q.end(), int8_t{-128}) != d.w_q.end())
        fail("tensor " + repr_str(p + ".kernel_q") + " holds the code -128; int8 weights are in [-127, 127]");
      d.w_scale.resize(static_cast<size_t>(c_.tensors.at(p + ".kernel_scale").shape[0]));
      std::memcpy(d.w_scale.data(), bytes(p + ".kernel_scale"), d.w_scale.size() * 4);
      // A subnormal scale is refused too: it loses precision, and 1 / scale overflows.
      if (!std::all_of(d.w_scale.begin(), d.w_scale.end(), [](float s) { return std::isnormal(s) && s > 0; }))
        fail("tensor '" + p + ".kernel_scale' holds a scale that is not finite and > 0 (or is subnormal)");
      if (d.in > kGemmS8MaxK)
        fail("int8 layer " + std::to_string(i) + " has " + std::to_string(d.in) + " inputs, more than gemm_s8's " +
             std::to_string(kGemmS8MaxK));
      if (c_.tensors.count(p + ".input_scale")) {
        std::memcpy(&d.in_scale, bytes(p + ".input_scale"), 4);
        std::memcpy(&d.in_zero, bytes(p + ".input_zero"), 4);
        if (!(std::isnormal(d.in_scale) && d.in_scale > 0)) {
          Json v = static_cast<double>(d.in_scale);
          fail("tensor '" + p + ".input_scale' is " + repr(v) + "; it must be finite, > 0 and not subnormal");
        }
        if (d.in_zero < 0 || d.in_zero > 255)
          fail("tensor '" + p + ".input_zero' is " + std::to_string(d.in_zero) + "; uint8 zero points are in [0, 255]");
      }
      continue;
    }
    if (d.bf16) {  // bf16 bits -> their float32 values, exactly
      d.kernel.resize(n);
      const uint8_t* halves = bytes(p + ".kernel");
      for (size_t k = 0; k < n; ++k) {
        uint16_t h;
        std::memcpy(&h, halves + 2 * k, 2);
        const uint32_t bits = static_cast<uint32_t>(h) << 16;
        std::memcpy(&d.kernel[k], &bits, 4);
      }
      continue;
    }
    const bool masked = pruning_.count(i) && pruning_.at(i)["masked"].get<bool>();
    if (!masked) {
      d.kernel.resize(n);
      std::memcpy(d.kernel.data(), bytes(p + ".kernel"), n * 4);
      continue;
    }
    d.kernel.assign(n, 0.0f);
    d.keep.assign(n, 0);
    const uint8_t* values = bytes(p + ".kernel.values");
    const Integers offsets = integers(p + ".kernel.offsets"), index = integers(p + ".kernel.index");
    for (int64_t r = 0; r < d.out; ++r) {
      for (int64_t k = offsets[r]; k < offsets[r + 1]; ++k) {
        const size_t at = static_cast<size_t>(index[k] * d.out + r);
        std::memcpy(&d.kernel[at], values + 4 * k, 4);
        d.keep[at] = 1;
      }
    }
  }
}

void Schema::run() {
  metadata();
  const Json& meta = c_.metadata;
  architecture(meta_json("architecture"));
  const Json preprocessing = meta_json("preprocessing");
  if (preprocessing != Json::array())
    fail("unsupported preprocessing " + short_repr(preprocessing) + " (this version has none)");
  training(meta_json("training"));
  if (meta.contains("optimizer_state")) state(meta_json("optimizer_state"));
  if (meta.contains("callbacks_state")) {
    if (out_.optimizer_state.is_null()) fail("callbacks_state without optimizer_state");
    const Json cb = meta_json("callbacks_state");
    bool ok = cb.is_object();
    for (auto& kv : cb.items()) {
      ok = ok && kv.value().is_object();
      for (auto& v : kv.value().items()) ok = ok && (v.value().is_null() || is_number(v.value()));
    }
    if (!ok) fail("callbacks_state must map callback keys to objects of numbers, got " + short_repr(cb));
    out_.callbacks_state = cb;
  }
  if (meta.contains("pruning")) pruning(meta_json("pruning"));
  check_tensors();
  // The CSR checks first, for every layer, as the tensors' own checks precede decoding.
  for (int64_t i : dense_layers_)
    if (pruning_.count(i) && pruning_.at(i)["masked"].get<bool>()) check_csr(i, out_.dense.at(i));
  decode();
}

}  // namespace

void read_schema(const Container& c, const std::vector<uint8_t>& raw, ModelFile& out) { Schema(c, raw, out).run(); }

}  // namespace model_file_detail
}  // namespace customml
