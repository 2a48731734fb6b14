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
  int64_t in, out, nnz, groups, steps, block_steps;
};
constexpr size_t kHeaderBytes = 64;
static_assert(sizeof(Header) <= kHeaderBytes);

size_t align64(size_t n) { return (n + 63) / 64 * 64; }

struct Sections {
  size_t group_first, base, values, index, mask, total;
};

Sections sections(const Header& h) {
  Sections s;
  s.group_first = kHeaderBytes;
  s.base = align64(s.group_first + sizeof(int64_t) * static_cast<size_t>(h.groups + 1));
  s.values = align64(s.base + sizeof(int32_t) * static_cast<size_t>(h.steps));
  s.index = align64(s.values + sizeof(float) * kPackLanes * static_cast<size_t>(h.block_steps));
  s.mask = align64(s.index + kPackLanes * static_cast<size_t>(h.block_steps));
  s.total = align64(s.mask + sizeof(uint16_t) * static_cast<size_t>(h.block_steps));
  return s;
}

// Group g's steps (sparse_packed.h): while an output of the group has nonzeros left, a step
// at the smallest input still to add takes every output's next nonzero that lies in its
// window. step(base) opens a step, take(j, k, position) gives it output j's nonzero k.
// Returns the group's step count.
template <class Step, class Take>
int64_t sweep_group(const CsrMatrix& w, int64_t g, std::vector<int64_t>& next, Step step, Take take) {
  const int64_t j0 = g * kPackLanes * kPackGroup, j1 = std::min<int64_t>(w.out, j0 + kPackLanes * kPackGroup);
  next.assign(w.offsets + j0, w.offsets + j1);  // each output's next nonzero (its CSR slot)
  int64_t steps = 0;
  for (;;) {
    int64_t base = w.in;
    for (int64_t j = j0; j < j1; ++j)
      if (next[static_cast<size_t>(j - j0)] < w.offsets[j + 1])
        base = std::min<int64_t>(base, w.index[next[static_cast<size_t>(j - j0)]]);
    if (base == w.in) return steps;
    step(base);
    for (int64_t j = j0; j < j1; ++j) {
      int64_t& k = next[static_cast<size_t>(j - j0)];
      if (k < w.offsets[j + 1] && w.index[k] < base + kPackWindow) {
        take(j, k, w.index[k] - base);
        ++k;
      }
    }
    ++steps;
  }
}

int64_t blocks_in_group(const Header& h, int64_t g) {
  const int64_t blocks = (h.out + kPackLanes - 1) / kPackLanes;
  return std::min<int64_t>(kPackGroup, blocks - g * kPackGroup);
}

Header header(const CsrMatrix& w) {
  Header h{w.in, w.out, w.nnz, (w.out + kPackLanes * kPackGroup - 1) / (kPackLanes * kPackGroup), 0, 0};
  std::vector<int64_t> next;
  for (int64_t g = 0; g < h.groups; ++g) {
    const int64_t steps = sweep_group(
        w, g, next, [](int64_t) {}, [](int64_t, int64_t, int64_t) {});
    h.steps += steps;
    h.block_steps += steps * blocks_in_group(h, g);
  }
  return h;
}

}  // namespace

size_t csr_packed_bytes(const CsrMatrix& w) { return sections(header(w)).total; }

void csr_pack(void* packed, const CsrMatrix& w) {
  const Header h = header(w);
  const Sections s = sections(h);
  auto* bytes = static_cast<unsigned char*>(packed);
  std::memset(bytes, 0, s.total);  // padding lanes: value 0, position 0, mask bit clear
  std::memcpy(bytes, &h, sizeof h);
  auto* group_first = reinterpret_cast<int64_t*>(bytes + s.group_first);
  auto* base = reinterpret_cast<int32_t*>(bytes + s.base);
  auto* values = reinterpret_cast<float*>(bytes + s.values);
  auto* index = bytes + s.index;
  auto* mask = reinterpret_cast<uint16_t*>(bytes + s.mask);
  std::vector<int64_t> next;
  int64_t first = 0;  // the group's first step
  for (int64_t g = 0; g < h.groups; ++g) {
    group_first[g] = first;
    const int64_t nb = blocks_in_group(h, g);
    int64_t step = first - 1;
    const int64_t steps = sweep_group(
        w, g, next, [&](int64_t b) { base[++step] = static_cast<int32_t>(b); },
        [&](int64_t j, int64_t k, int64_t position) {
          const int64_t lane = j % kPackLanes;
          const int64_t slot = first * kPackGroup + (step - first) * nb + (j / kPackLanes - g * kPackGroup);
          values[slot * kPackLanes + lane] = w.values[k];
          index[slot * kPackLanes + lane] = static_cast<uint8_t>(position);
          mask[slot] = static_cast<uint16_t>(mask[slot] | (1u << lane));
        });
    first += steps;
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
  p.group_first = reinterpret_cast<const int64_t*>(bytes + s.group_first);
  p.base = reinterpret_cast<const int32_t*>(bytes + s.base);
  p.values = reinterpret_cast<const float*>(bytes + s.values);
  p.index = bytes + s.index;
  p.mask = reinterpret_cast<const uint16_t*>(bytes + s.mask);
  return p;
}

}  // namespace customml::cpu
