// libFuzzer target for the model-file reader (cpp/model_file*.cpp, parse_model_file), built
// with AddressSanitizer and UndefinedBehaviorSanitizer by .ci/fuzz_model_file, which also
// makes the seed corpus (a valid file of every kind) and says how to run it longer.
//
// The contract under test: any input is either a model file or refused with ModelFileError
// (Python's ValueError); any other exception, a crash, a sanitizer report, a leak, a hang
// or an allocation past -rss_limit_mb is a finding. Each input is parsed twice: as it is,
// and with its metadata's checksum recomputed as the writer computes it (when it still has
// a safetensors header with string metadata), since almost every mutation breaks the
// SHA-256 checksum, which the reader checks before the architecture and the tensors.

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "model_file.h"

namespace {

void parse(std::vector<uint8_t> bytes) {
  try {
    customml::parse_model_file(std::move(bytes), "<fuzz>");
  } catch (const customml::ModelFileError&) {
    // Refused with a message: the contract.
  }
}

// data with its checksum recomputed (python/customml/_model_file.py, _checksum: SHA-256 of
// each metadata entry but the checksum, sorted by key, as key NUL value NUL, then the data
// section), or false when data has no header object with a string-valued "__metadata__".
bool resealed(const uint8_t* data, size_t size, std::vector<uint8_t>* out) {
  if (size < 8) return false;
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];
  if (n > size - 8) return false;
  customml::Json header = customml::Json::parse(data + 8, data + 8 + n, nullptr, false);
  if (header.is_discarded() || !header.is_object()) return false;
  auto meta = header.find("__metadata__");
  if (meta == header.end() || !meta->is_object()) return false;
  std::map<std::string, std::string> sorted;  // byte order: Python's sorted() of str keys
  for (auto it = meta->begin(); it != meta->end(); ++it) {
    if (!it.value().is_string()) return false;
    sorted[it.key()] = it.value().get<std::string>();
  }
  const uint8_t* body = data + 8 + n;
  const size_t body_size = size - 8 - static_cast<size_t>(n);
  std::vector<uint8_t> hashed;
  for (const auto& [key, value] : sorted) {
    if (key == "checksum") continue;
    hashed.insert(hashed.end(), key.begin(), key.end());
    hashed.push_back(0);
    hashed.insert(hashed.end(), value.begin(), value.end());
    hashed.push_back(0);
  }
  hashed.insert(hashed.end(), body, body + body_size);
  (*meta)["checksum"] = customml::sha256_hex(hashed.data(), hashed.size());
  std::string text = header.dump(-1, ' ', false, customml::Json::error_handler_t::replace);
  text.append((8 - text.size() % 8) % 8, ' ');
  out->clear();
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i)));
  out->insert(out->end(), text.begin(), text.end());
  out->insert(out->end(), body, body + body_size);
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  parse(std::vector<uint8_t>(data, data + size));
  std::vector<uint8_t> sealed;
  if (resealed(data, size, &sealed)) parse(std::move(sealed));
  return 0;
}
