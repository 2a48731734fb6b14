// The model-file reader's container half: reading the file, the safetensors header and its
// tensor entries, JSON with Python's strictness (duplicate keys, NaN, lone surrogates),
// the checksum, and the Python-style quoting of values in messages. The customml schema
// on top is model_file_schema.cpp.

#include "model_file.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <set>

#include "model_file_detail.h"

extern "C" {
#include "third_party/sha256/sha256.h"
}

namespace customml {

using namespace model_file_detail;

int64_t max_params_limit() {
  const char* env = std::getenv("CUSTOMML_MAX_PARAMS");
  if (env == nullptr || *env == '\0') return kDefaultMaxParams;
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(env, &end, 10);
  if (errno != 0 || *end != '\0' || v < 1)
    throw ModelFileError(std::string("CUSTOMML_MAX_PARAMS must be a positive integer, got '") + env + "'");
  return v;
}

std::string sha256_hex(const uint8_t* data, size_t n) {
  SHA256_CTX ctx;
  sha256_init(&ctx);
  sha256_update(&ctx, data, n);
  BYTE digest[SHA256_BLOCK_SIZE];
  sha256_final(&ctx, digest);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (BYTE b : digest) {
    out += hex[b >> 4];
    out += hex[b & 15];
  }
  return out;
}

std::vector<float> ModelFile::f32(const std::string& name) const {
  const FileTensor& t = tensors_.at(name);
  std::vector<float> v(static_cast<size_t>((t.end - t.begin) / 4));
  if (!v.empty()) std::memcpy(v.data(), raw_.data() + data_begin_ + t.begin, v.size() * 4);
  return v;
}

namespace model_file_detail {

int64_t checked_mul(int64_t a, int64_t b) {
  int64_t r;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r)) return -1;
  return r;
}

int64_t dtype_size(const std::string& d) {
  static const std::map<std::string, int64_t> sizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"I16", 2}, {"U16", 2}, {"F16", 2},
      {"BF16", 2}, {"I32", 4}, {"U32", 4}, {"F32", 4},     {"F64", 8},     {"I64", 8}, {"U64", 8}};
  auto it = sizes.find(d);
  return it == sizes.end() ? 0 : it->second;
}

bool int_in(const Json& v, int64_t lo, int64_t hi, int64_t* out) {
  int64_t x;
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(INT64_MAX)) return false;
    x = static_cast<int64_t>(u);
  } else if (v.is_number_integer()) {
    x = v.get<int64_t>();
  } else {
    return false;
  }
  if (x < lo || x > hi) return false;
  if (out != nullptr) *out = x;
  return true;
}

std::string repr_str(const std::string& s) {
  const bool dq = s.find('\'') != std::string::npos && s.find('"') == std::string::npos;
  const char q = dq ? '"' : '\'';
  std::string out(1, q);
  for (unsigned char c : s) {
    if (c == '\\' || c == static_cast<unsigned char>(q)) {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + q;
}

std::string repr(const Json& v) {
  switch (v.type()) {
    case Json::value_t::null: return "None";
    case Json::value_t::boolean: return v.get<bool>() ? "True" : "False";
    case Json::value_t::string: return repr_str(v.get<std::string>());
    case Json::value_t::array: {
      std::string out = "[";
      for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + repr(v[i]);
      return out + "]";
    }
    case Json::value_t::object: {
      std::string out = "{";
      bool first = true;
      for (auto it = v.begin(); it != v.end(); ++it, first = false)
        out += (first ? "" : ", ") + repr_str(it.key()) + ": " + repr(it.value());
      return out + "}";
    }
    default: return v.dump();  // numbers: shortest round-trip digits, as Python's repr
  }
}

std::string short_repr(const Json& v) {
  std::string text = repr(v);
  if (text.size() <= 80) return text;
  size_t cut = 80;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;  // a UTF-8 boundary
  return text.substr(0, cut) + "...";
}

std::string tuple_str(const std::vector<int64_t>& shape) {
  std::string out = "(";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + (shape.size() == 1 ? ",)" : ")");
}

void Container::fail(const std::string& message) const { throw ModelFileError(where + ": " + message); }

namespace {

// The first invalid UTF-8 sequence in text (Python's reasons), or an empty string.
std::string utf8_error(const unsigned char* s, size_t n, size_t* at) {
  for (size_t i = 0; i < n;) {
    const unsigned char c = s[i];
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;  // no encoded surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      *at = i;
      return "invalid start byte";
    }
    for (size_t k = 1; k < len; ++k) {
      if (i + k >= n) {
        *at = i;
        return "unexpected end of data";
      }
      const unsigned char d = s[i + k];
      if (d < (k == 1 ? lo : 0x80) || d > (k == 1 ? hi : 0xBF)) {
        *at = i;
        return "invalid continuation byte";
      }
    }
    i += len;
  }
  return "";
}

const char* python_type(const Json& v) {
  switch (v.type()) {
    case Json::value_t::array: return "list";
    case Json::value_t::string: return "str";
    case Json::value_t::boolean: return "bool";
    case Json::value_t::null: return "NoneType";
    case Json::value_t::number_float: return "float";
    default: return "int";
  }
}

}  // namespace

Json parse_json(const Container& c, const char* text, size_t n, const std::string& what) {
  size_t at = 0;
  const std::string bad = utf8_error(reinterpret_cast<const unsigned char*>(text), n, &at);
  if (!bad.empty())
    c.fail(what + " is not UTF-8 text (" + bad + " at byte " + std::to_string(at) +
           "): corrupt, or not a safetensors file");
  // JSON has no place for a raw NUL (strings escape it), and nlohmann would take one for
  // the end of the text.
  if (const void* nul = std::memchr(text, 0, n))
    c.fail(what + " is not valid JSON (a NUL byte at byte " + std::to_string(static_cast<const char*>(nul) - text) +
           "): corrupt, or not a safetensors file");
  // The keys of the objects being parsed, to refuse a repeated one (nlohmann keeps the last).
  std::vector<std::set<std::string>> open;
  std::vector<std::string> path;  // the key of each open object's current value
  std::string last_key;
  auto callback = [&](int depth, Json::parse_event_t event, Json& parsed) {
    if (depth > 1000) c.fail(what + " is nested too deeply");
    switch (event) {
      case Json::parse_event_t::object_start: open.emplace_back(); break;
      case Json::parse_event_t::object_end: open.pop_back(); break;
      case Json::parse_event_t::key: {
        const std::string key = parsed.get<std::string>();
        if (!open.back().insert(key).second) c.fail(what + " has the key " + repr_str(key) + " twice");
        last_key = key;
        if (path.size() < open.size()) path.resize(open.size());
        path[open.size() - 1] = key;
        break;
      }
      default: break;
    }
    return true;
  };
  try {
    return Json::parse(text, text + n, callback);
  } catch (const Json::parse_error& e) {
    const std::string msg = e.what();
    const size_t p = e.byte > 0 ? e.byte - 1 : 0;
    const std::string rest(text + std::min(p, n), text + std::min(p + 8, n));
    if (rest.rfind("NaN", 0) == 0) c.fail(what + " contains NaN, which is not JSON");
    if (rest.rfind("Infinity", 0) == 0 || (p > 0 && text[p - 1] == '-' && !rest.empty() && rest[0] == 'I'))
      c.fail(what + " contains " + (p > 0 && text[p - 1] == '-' ? "-Infinity" : "Infinity") + ", which is not JSON");
    if (msg.find("surrogate") != std::string::npos) {
      if (open.size() == 2 && !path.empty() && path[0] == "__metadata__")
        c.fail("__metadata__ entry " + repr_str(last_key) + " holds an invalid Unicode escape (a lone surrogate)");
      c.fail(what + " holds an invalid Unicode escape (a lone surrogate)" +
             (last_key.empty() ? "" : " at the key " + repr_str(last_key)));
    }
    // e.g. "syntax error while parsing value - invalid literal; last read: 'no'"
    std::string reason = msg.substr(msg.find(": ") == std::string::npos ? 0 : msg.find(": ", msg.find("column")) + 2);
    c.fail(what + " is not valid JSON (" + reason + " at byte " + std::to_string(e.byte) +
           "): corrupt, or not a safetensors file");
  } catch (const Json::out_of_range&) {
    // A number beyond a float64 (nlohmann reads integers beyond 64 bits as floats).
    c.fail(what + " holds a number too large for any field" +
           (last_key.empty() ? std::string() : " (the value of " + repr_str(last_key) + ")"));
  }
}

namespace {

// An entry's offsets lie in the data section and span the bytes its shape and dtype need.
void check_entry_size(const Container& c, const std::string& q, const FileTensor& t) {
  const std::string range = "[" + std::to_string(t.begin) + ", " + std::to_string(t.end) + "]";
  if (t.end > c.data_size)
    c.fail(q + "data_offsets " + range + " run past the end of the data section (" + std::to_string(c.data_size) +
           " bytes): the file is truncated or the offsets are out of range");
  int64_t need = dtype_size(t.dtype);
  for (int64_t d : t.shape) need = checked_mul(need, d);
  if (need != t.end - t.begin)
    c.fail(q + "shape " + tuple_str(t.shape) + " of " + t.dtype + " needs " +
           (need < 0 ? std::string("more than 2**63") : std::to_string(need)) + " bytes but data_offsets " + range +
           " hold " + std::to_string(t.end - t.begin));
}

}  // namespace

Container parse_container(const std::vector<uint8_t>& raw, const std::string& where) {
  Container c;
  c.where = where;
  if (raw.size() < 8)
    c.fail("the file is " + std::to_string(raw.size()) + " bytes long, too short for a safetensors header" +
           (raw.empty() ? " (it is empty)" : ""));
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | raw[i];
  if (n > static_cast<uint64_t>(kMaxHeaderBytes))
    c.fail("the header length field says " + std::to_string(n) + " bytes, more than the " +
           std::to_string(kMaxHeaderBytes) + " allowed (not a safetensors file, or corrupt)");
  if (n > raw.size() - 8)
    c.fail("the header length field says " + std::to_string(n) + " bytes but only " + std::to_string(raw.size() - 8) +
           " follow it (the file is truncated, or not a safetensors file)");
  c.data_begin = static_cast<int64_t>(8 + n);
  c.data_size = static_cast<int64_t>(raw.size()) - c.data_begin;
  Json header = parse_json(c, reinterpret_cast<const char*>(raw.data() + 8), n, "the header");
  if (!header.is_object())
    c.fail(std::string("the header is JSON but not an object (got ") + python_type(header) + ")");
  if (header.contains("__metadata__")) {
    c.metadata = header["__metadata__"];
    header.erase("__metadata__");
  }
  if (!c.metadata.is_null()) {
    bool strings = c.metadata.is_object();
    for (auto& kv : c.metadata.items()) strings = strings && kv.value().is_string();
    if (!strings) c.fail("__metadata__ must be an object of strings");
  }
  for (auto& kv : header.items()) {
    const std::string& name = kv.key();
    const Json& e = kv.value();
    const std::string q = "tensor " + repr_str(name) + ": ";
    if (!e.is_object() || e.size() != 3 || !e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets"))
      c.fail(q + "expected an object with exactly dtype, shape and data_offsets, got " + short_repr(e));
    const Json &dtype = e["dtype"], &shape = e["shape"], &offsets = e["data_offsets"];
    if (!dtype.is_string() || dtype_size(dtype.get<std::string>()) == 0)
      c.fail(q + "unknown dtype " + short_repr(dtype));
    FileTensor t;
    t.dtype = dtype.get<std::string>();
    bool ok = shape.is_array();
    for (const Json& d : ok ? shape : Json::array()) {
      int64_t v = 0;
      ok = ok && int_in(d, 0, INT64_MAX, &v);
      t.shape.push_back(v);
    }
    if (!ok) c.fail(q + "shape must be a list of non-negative integers, got " + short_repr(shape));
    if (!(offsets.is_array() && offsets.size() == 2 && int_in(offsets[0], 0, INT64_MAX, &t.begin) &&
          int_in(offsets[1], t.begin, INT64_MAX, &t.end)))
      c.fail(q + "data_offsets must be [begin, end] with 0 <= begin <= end, got " + short_repr(offsets));
    check_entry_size(c, q, t);
    c.order.push_back(name);
    c.tensors[name] = std::move(t);
  }
  // The tensors tile the data section exactly: no overlap, no gap, nothing after.
  std::vector<std::string> by_offset = c.order;
  std::stable_sort(by_offset.begin(), by_offset.end(), [&](const std::string& a, const std::string& b) {
    const FileTensor &x = c.tensors[a], &y = c.tensors[b];
    return x.begin != y.begin ? x.begin < y.begin : x.end < y.end;
  });
  int64_t position = 0;
  std::string previous;
  for (const std::string& name : by_offset) {
    const FileTensor& t = c.tensors[name];
    if (t.begin < position)
      c.fail("tensors " + repr_str(previous) + " and " + repr_str(name) + " overlap in the data section");
    if (t.begin > position)
      c.fail("the data section has " + std::to_string(t.begin - position) + " unused bytes before tensor " +
             repr_str(name));
    position = t.end;
    previous = name;
  }
  if (position != c.data_size)
    c.fail("the file has " + std::to_string(c.data_size - position) +
           " bytes after the last tensor's data (extra bytes appended, or offsets that do not match)");
  return c;
}

}  // namespace model_file_detail

ModelFile parse_model_file(std::vector<uint8_t> bytes, const std::string& where) {
  const Container c = parse_container(bytes, where);
  ModelFile f;
  f.where = where;
  read_schema(c, bytes, f);
  f.raw_ = std::move(bytes);
  f.data_begin_ = c.data_begin;
  f.tensors_ = c.tensors;
  return f;
}

ModelFile read_model_file(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
    throw ModelFileError(path + ": is a directory, not a model file");
  // O_NONBLOCK: opening a FIFO would otherwise wait for a writer; fstat then refuses
  // anything but a regular file (a device would never end).
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) throw ModelFileIoError(errno, path + ": " + std::strerror(errno));
  std::vector<uint8_t> raw;
  try {
    if (::fstat(fd, &st) != 0) throw ModelFileIoError(errno, path + ": " + std::strerror(errno));
    if (!S_ISREG(st.st_mode)) throw ModelFileError(path + ": not a regular file");
    raw.resize(static_cast<size_t>(st.st_size) + 1);  // one byte more: a file that grew is noticed
    size_t got = 0;
    while (got < raw.size()) {
      const ssize_t r = ::read(fd, raw.data() + got, raw.size() - got);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) throw ModelFileIoError(errno, path + ": " + std::strerror(errno));
      if (r == 0) break;
      got += static_cast<size_t>(r);
    }
    if (got != static_cast<size_t>(st.st_size))
      throw ModelFileError(path + ": the file changed size while it was read");
    raw.resize(got);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  return parse_model_file(std::move(raw), path);
}

}  // namespace customml
