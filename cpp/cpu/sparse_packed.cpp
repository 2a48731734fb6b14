// Builds the packed CSR layout of cpu/sparse_packed.h: portable code run once per model
// (the inference plan) or per ops.sparse_pack, never per call.

#include "cpu/sparse_packed.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace customml::cpu {
namespace {

// The sizes csr_packed_bytes and csr_pack agree on, stored in the first 64 bytes.
struct Header {
  int64_t in, out, nnz, groups, chunks, block_steps;
};
constexpr size_t kHeaderBytes = 64;
static_assert(sizeof(Header) <= kHeaderBytes);

size_t align64(size_t n) { return (n + 63) / 64 * 64; }

struct Sections {
  size_t group_first, counts, values, index, mask, total;
};

Sections sections(const Header& h) {
  Sections s;
  s.group_first = kHeaderBytes;
  s.counts = align64(s.group_first + sizeof(int64_t) * static_cast<size_t>(h.groups + 1));
  s.values = align64(s.counts + static_cast<size_t>(h.groups * h.chunks));
  s.index = align64(s.values + sizeof(float) * kPackLanes * static_cast<size_t>(h.block_steps));
  s.mask = align64(s.index + kPackLanes * static_cast<size_t>(h.block_steps));
  s.total = align64(s.mask + sizeof(uint16_t) * static_cast<size_t>(h.block_steps));
  return s;
}

int64_t blocks_in_group(const Header& h, int64_t g) {
  const int64_t blocks = (h.out + kPackLanes - 1) / kPackLanes;
  return std::min<int64_t>(kPackGroup, blocks - g * kPackGroup);
}

// counts (groups, chunks): per group and chunk, the most nonzeros one of the group's
// outputs has there; fills h.groups, h.chunks and h.block_steps.
std::vector<uint8_t> step_counts(const CsrMatrix& w, Header& h) {
  h.in = w.in;
  h.out = w.out;
  h.nnz = w.nnz;
  h.chunks = (w.in + kPackChunk - 1) / kPackChunk;
  h.groups = (w.out + kPackLanes * kPackGroup - 1) / (kPackLanes * kPackGroup);
  std::vector<uint8_t> counts(static_cast<size_t>(h.groups * h.chunks), 0);
  std::vector<uint8_t> own(static_cast<size_t>(h.chunks));
  for (int64_t j = 0; j < w.out; ++j) {
    std::fill(own.begin(), own.end(), uint8_t{0});
    for (int64_t k = w.offsets[j]; k < w.offsets[j + 1]; ++k) ++own[static_cast<size_t>(w.index[k] / kPackChunk)];
    uint8_t* row = counts.data() + j / (kPackLanes * kPackGroup) * h.chunks;
    for (int64_t c = 0; c < h.chunks; ++c) row[c] = std::max(row[c], own[static_cast<size_t>(c)]);
  }
  h.block_steps = 0;
  for (int64_t g = 0; g < h.groups; ++g) {
    int64_t steps = 0;
    for (int64_t c = 0; c < h.chunks; ++c) steps += counts[static_cast<size_t>(g * h.chunks + c)];
    h.block_steps += steps * blocks_in_group(h, g);
  }
  return counts;
}

}  // namespace

size_t csr_packed_bytes(const CsrMatrix& w) {
  Header h;
  step_counts(w, h);
  return sections(h).total;
}

void csr_pack(void* packed, const CsrMatrix& w) {
  Header h;
  const std::vector<uint8_t> counts = step_counts(w, h);
  const Sections s = sections(h);
  auto* bytes = static_cast<unsigned char*>(packed);
  std::memset(bytes, 0, s.total);  // padding lanes: value 0, position 0, mask bit clear
  std::memcpy(bytes, &h, sizeof h);
  auto* group_first = reinterpret_cast<int64_t*>(bytes + s.group_first);
  auto* values = reinterpret_cast<float*>(bytes + s.values);
  auto* index = bytes + s.index;
  auto* mask = reinterpret_cast<uint16_t*>(bytes + s.mask);
  std::memcpy(bytes + s.counts, counts.data(), counts.size());

  std::vector<int64_t> chunk_first(static_cast<size_t>(h.chunks));
  std::vector<int64_t> seen(static_cast<size_t>(h.chunks));
  int64_t first = 0;
  for (int64_t g = 0; g < h.groups; ++g) {
    group_first[g] = first;
    const int64_t nb = blocks_in_group(h, g);
    const uint8_t* row = counts.data() + g * h.chunks;
    for (int64_t c = 0; c < h.chunks; ++c) {
      chunk_first[static_cast<size_t>(c)] = first;
      first += row[c] * nb;
    }
    const int64_t j_end = std::min<int64_t>(w.out, (g + 1) * kPackLanes * kPackGroup);
    for (int64_t j = g * kPackLanes * kPackGroup; j < j_end; ++j) {
      const int64_t block = j / kPackLanes - g * kPackGroup, lane = j % kPackLanes;
      std::fill(seen.begin(), seen.end(), int64_t{0});
      for (int64_t k = w.offsets[j]; k < w.offsets[j + 1]; ++k) {
        const int64_t c = w.index[k] / kPackChunk;
        const int64_t step = chunk_first[static_cast<size_t>(c)] + seen[static_cast<size_t>(c)]++ * nb + block;
        values[step * kPackLanes + lane] = w.values[k];
        index[step * kPackLanes + lane] = static_cast<uint8_t>(w.index[k] - c * kPackChunk);
        mask[step] = static_cast<uint16_t>(mask[step] | (1u << lane));
      }
    }
  }
  group_first[h.groups] = first;
}

CsrPacked csr_packed_view(const void* packed) {
  const auto* bytes = static_cast<const unsigned char*>(packed);
  Header h;
  std::memcpy(&h, bytes, sizeof h);
  const Sections s = sections(h);
  CsrPacked p;
  p.in = h.in;
  p.out = h.out;
  p.nnz = h.nnz;
  p.lanes = h.block_steps * kPackLanes;
  p.groups = h.groups;
  p.chunks = h.chunks;
  p.group_first = reinterpret_cast<const int64_t*>(bytes + s.group_first);
  p.counts = bytes + s.counts;
  p.values = reinterpret_cast<const float*>(bytes + s.values);
  p.index = bytes + s.index;
  p.mask = reinterpret_cast<const uint16_t*>(bytes + s.mask);
  return p;
}

}  // namespace customml::cpu
