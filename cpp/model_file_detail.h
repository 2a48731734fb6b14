#pragma once
// Defines: the helpers model_file.cpp (the safetensors container, JSON, checksum) and
// model_file_schema.cpp (customml's metadata and tensors) share. Messages quote JSON
// values as Python's repr does, so that they read the same from C and from Python.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "model_file.h"

namespace customml {
namespace model_file_detail {

// Python's repr of the value json.loads gives for v; short_repr cuts it at 80
// characters (on a UTF-8 boundary) with "...".
std::string repr(const Json& v);
std::string repr_str(const std::string& s);
std::string short_repr(const Json& v);
// "(2, 3)", "(2,)", "()": a shape as a Python tuple.
std::string tuple_str(const std::vector<int64_t>& shape);

// True when v is a JSON integer (never a bool) in [lo, hi]; its value in *out.
bool int_in(const Json& v, int64_t lo, int64_t hi, int64_t* out = nullptr);
// An int or a float, never a bool (Python's numbers in a JSON document).
inline bool is_number(const Json& v) { return v.is_number(); }
// a * b, or -1 when it overflows int64.
int64_t checked_mul(int64_t a, int64_t b);
int64_t dtype_size(const std::string& dtype);  // 0 for a name safetensors does not know

// The safetensors container, parsed and checked: every entry's dtype, shape and offsets,
// and the tensors tiling the data section exactly.
// NOLINTNEXTLINE(bugprone-exception-escape): nlohmann::json members; no constructor here throws
struct Container {
  std::string where;
  Json metadata;  // null when absent
  std::vector<std::string> order;
  std::map<std::string, FileTensor> tensors;
  int64_t data_begin = 0, data_size = 0;
  [[noreturn]] void fail(const std::string& message) const;
};
Container parse_container(const std::vector<uint8_t>& raw, const std::string& where);
// Parses JSON text, refusing duplicate keys, NaN, lone surrogates, numbers beyond a
// float64 and nesting deeper than 1000 levels, with `what` naming it in the message.
Json parse_json(const Container& c, const char* text, size_t n, const std::string& what);

// Checks the customml metadata and tensors of a parsed container and decodes the layers.
void read_schema(const Container& c, const std::vector<uint8_t>& raw, ModelFile& out);

}  // namespace model_file_detail
}  // namespace customml
