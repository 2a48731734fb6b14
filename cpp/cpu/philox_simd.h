#pragma once
// Defines: ew_dropout, inverted dropout with Philox4x32-10 run on kLanes counter blocks at
// once (one block per lane, vpmuludq for the 32 x 32 -> 64-bit products), for the SIMD
// files only. Its stream is bit-identical to philox4x32_10 in random.h, which the
// portable path (cpu/dropout.cpp) runs; random.h is not included here because its
// functions have external linkage (see simd.h).

#include "cpu/simd.h"

namespace customml::cpu {
namespace {

// x: (n) -> y: (n) = keep_i ? x_i / (1 - rate) : 0, keep_i = uniform(seed, stream, first + i) >= rate,
// mask element g drawn from word g % 4 of block g / 4 (as CpuBackend::dropout).
void ew_dropout(float* y, const float* x, int64_t n, float rate, uint64_t seed, uint64_t stream, uint64_t first) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  constexpr int64_t kStep = 4 * kLanes;  // elements per round of kLanes blocks
  const Vf scale = set1(1.0f / (1.0f - rate)), vrate = set1(rate), zero = set1(0.0f);
  const Vu c2_init = set1_u(static_cast<uint32_t>(stream)), c3_init = set1_u(static_cast<uint32_t>(stream >> 32));
  // base: the round's first element relative to x, from the block holding mask element
  // `first` (so negative, by at most 3, when first is not a multiple of 4).
  const int64_t head = static_cast<int64_t>(first % 4);
  for (int64_t base = -head; base < n; base += kStep) {
    // The 64-bit block counters of the lanes (a carry into the high word can fall
    // between lanes, so they are formed in scalar code).
    uint32_t lo[kLanes], hi[kLanes];
    for (int l = 0; l < kLanes; ++l) {
      const uint64_t block = (first + static_cast<uint64_t>(base + head)) / 4 + static_cast<uint64_t>(l);
      lo[l] = static_cast<uint32_t>(block);
      hi[l] = static_cast<uint32_t>(block >> 32);
    }
    Vu c0 = load_u(lo), c1 = load_u(hi), c2 = c2_init, c3 = c3_init;
    uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
    for (int round = 0; round < 10; ++round) {
      Vu hi0, lo0, hi1, lo1;
      mulhilo(c0, kM0, hi0, lo0);
      mulhilo(c2, kM1, hi1, lo1);
      c0 = hi1 ^ c1 ^ set1_u(k0);
      c1 = lo1;
      c2 = hi0 ^ c3 ^ set1_u(k1);
      c3 = lo0;
      k0 += kW0;
      k1 += kW1;
    }
    Vf u[4] = {uniform(c0), uniform(c1), uniform(c2), uniform(c3)};
    interleave4(u[0], u[1], u[2], u[3]);
    if (base < 0) {
      // The unaligned head round: element by element, as the portable path.
      alignas(64) float draws[4 * kLanes];
      for (int k = 0; k < 4; ++k) store(draws + k * kLanes, u[k]);
      const float s = 1.0f / (1.0f - rate);
      for (int64_t i = 0; i < base + kStep && i < n; ++i) y[i] = draws[i - base] >= rate ? x[i] * s : 0.0f;
      continue;
    }
    for (int k = 0; k < 4; ++k) {
      const int64_t at = base + k * kLanes;
      if (at >= n) break;
      const int64_t count = n - at < kLanes ? n - at : kLanes;
      const Vf xv = count < kLanes ? load_partial(x + at, count, 0.0f) : load(x + at);
      // a dropped NaN or inf becomes +0, never NaN
      const Vf r = select(u[k] >= vrate, xv * scale, zero);
      count < kLanes ? store_partial(y + at, count, r) : store(y + at, r);
    }
  }
}

}  // namespace
}  // namespace customml::cpu
