// The ISA-specific pieces of sparse_linear.cpp (see the appendix at the top of that file for the maths):
//
//   rows_<isa><NV>  the micro-kernel: for output rows [g, ge) of one column panel,
//                   acc[o, 0:TT] (+)= sum_j vals[j] * xT[cols[j], 0:TT] with TT = NV * lanes tokens, the NV
//                   accumulator vectors held in registers for the whole row;
//   pack_tile_*     x[t0:t0+tn, k0:k0+kn] (row-major, stride K) -> xT[kn][TT], tokens tn..TT zero-filled;
//   unpack_rows_*   acc[r][0:tn] of up to kGroup rows -> y[t0+t, g+r] (+ bias[g+r]), the transpose back.
//
// Each function carries its own __attribute__((target)), so the file is compiled for plain x86-64 (no -march) and
// the driver picks the widest path the running CPU supports (__builtin_cpu_supports). Intrinsics are legal inside
// a function whose target enables them; callees that are inlined must have the same or a narrower target.
#pragma once

#include <cstdint>

// x86 builds get the AVX2 and AVX-512 paths; others (or -DTSP_PORTABLE_ONLY, to test that build) only the portable
#if (defined(__x86_64__) || defined(__i386__)) && !defined(TSP_PORTABLE_ONLY)
#define TSP_X86 1
#include <immintrin.h>
#else
#define TSP_X86 0
#endif

namespace tsprune {

constexpr int64_t kGroup = 16;  // output rows computed, then transposed out, together (6 KiB at 96 tokens)

using RowsFn = void (*)(const int64_t* ptr, const int32_t* cols, const float* vals, int64_t g, int64_t ge,
                        const float* xT, float* acc, bool first);

// ------------------------------------------------------------------------------------------ portable fallback
// Plain loops over a compile-time tile: -O3 vectorises them with whatever the baseline ISA offers (SSE2 on
// x86-64). NV <= 4 (32 tokens = 8 xmm accumulators) so the tile stays in the 16 xmm registers.

template <int NV>
static void rows_scalar(const int64_t* ptr, const int32_t* cols, const float* vals, int64_t g, int64_t ge,
                        const float* xT, float* acc, bool first) {
  constexpr int TT = NV * 8;
  for (int64_t o = g; o < ge; ++o) {
    const int64_t j0 = ptr[o], j1 = ptr[o + 1];
    float* yr = acc + (o - g) * TT;
    if (!first && j0 == j1) continue;  // nothing of this row in this panel: its partial sums stand
    float a[TT];
    for (int t = 0; t < TT; ++t) a[t] = first ? 0.0f : yr[t];
    for (int64_t j = j0; j < j1; ++j) {
      const float w = vals[j];
      const float* xr = xT + static_cast<int64_t>(cols[j]) * TT;
      for (int t = 0; t < TT; ++t) a[t] += w * xr[t];
    }
    for (int t = 0; t < TT; ++t) yr[t] = a[t];
  }
}

static void pack_tile_scalar(const float* x, int64_t ldx, int64_t tn, int64_t kn, int64_t TT, float* xT) {
  for (int64_t k = 0; k < kn; ++k) {
    float* dst = xT + k * TT;
    for (int64_t t = 0; t < tn; ++t) dst[t] = x[t * ldx + k];
    for (int64_t t = tn; t < TT; ++t) dst[t] = 0.0f;  // padded tokens: multiplied, never stored
  }
}

static void unpack_rows_scalar(const float* acc, int64_t TT, int64_t rows, int64_t tn, const float* bias, float* y,
                               int64_t ldy) {
  for (int64_t t = 0; t < tn; ++t)
    for (int64_t r = 0; r < rows; ++r) y[t * ldy + r] = acc[r * TT + t] + (bias ? bias[r] : 0.0f);
}

#if TSP_X86
#define TSP_AVX2 __attribute__((target("avx2,fma")))
#define TSP_AVX512 __attribute__((target("avx512f,avx2,fma")))

// ------------------------------------------------------------------------------------------ AVX2 + FMA (8 lanes)

template <int NV>
TSP_AVX2 static void rows_avx2(const int64_t* ptr, const int32_t* cols, const float* vals, int64_t g, int64_t ge,
                               const float* xT, float* acc, bool first) {
  constexpr int TT = NV * 8;
  for (int64_t o = g; o < ge; ++o) {
    const int64_t j0 = ptr[o], j1 = ptr[o + 1];
    float* yr = acc + (o - g) * TT;
    if (!first && j0 == j1) continue;
    __m256 a[NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) a[v] = first ? _mm256_setzero_ps() : _mm256_load_ps(yr + 8 * v);
    for (int64_t j = j0; j < j1; ++j) {
      const __m256 w = _mm256_broadcast_ss(vals + j);
      const float* xr = xT + static_cast<int64_t>(cols[j]) * TT;
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) a[v] = _mm256_fmadd_ps(w, _mm256_load_ps(xr + 8 * v), a[v]);
    }
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) _mm256_store_ps(yr + 8 * v, a[v]);
  }
}

TSP_AVX2 static inline __m256i lane_mask(int64_t n) {  // lanes 0..n-1 on (n <= 8)
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

TSP_AVX2 static inline void transpose8(__m256* r) {  // r[i][j] -> r[j][i], 24 shuffles for 64 floats
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// 8x8 blocks: 8 token rows of 8 columns in (masked at the column tail), transposed, 8 column rows of xT out. Column
// blocks outermost: each xT row is written whole (384 B at 96 tokens) before the next (tokens outermost, which
// reads x front to back, measured 5-20% slower: half-written xT lines went back and forth to L2).
TSP_AVX2 static void pack_tile_avx2(const float* x, int64_t ldx, int64_t tn, int64_t kn, int64_t TT, float* xT) {
  for (int64_t kb = 0; kb < kn; kb += 8) {
    const int64_t kc = kn - kb < 8 ? kn - kb : 8;
    const __m256i mask = lane_mask(kc);
    for (int64_t tb = 0; tb < TT; tb += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; ++i) {
        const float* src = x + (tb + i) * ldx + kb;
        r[i] = tb + i >= tn ? _mm256_setzero_ps() : kc == 8 ? _mm256_loadu_ps(src) : _mm256_maskload_ps(src, mask);
      }
      transpose8(r);
      for (int64_t c = 0; c < kc; ++c) _mm256_store_ps(xT + (kb + c) * TT + tb, r[c]);
    }
  }
}

// Up to kGroup rows: per 8 tokens, the 8x8 blocks of all rows, so each y row gets its kGroup floats back to back.
TSP_AVX2 static void unpack_rows_avx2(const float* acc, int64_t TT, int64_t rows, int64_t tn, const float* bias,
                                      float* y, int64_t ldy) {
  for (int64_t tb = 0; tb < tn; tb += 8) {
    const int64_t tc = tn - tb < 8 ? tn - tb : 8;
    for (int64_t r0 = 0; r0 < rows; r0 += 8) {
      const int64_t rc = rows - r0 < 8 ? rows - r0 : 8;
      const __m256i mask = lane_mask(rc);
      const __m256 b = bias ? _mm256_maskload_ps(bias + r0, mask) : _mm256_setzero_ps();
      __m256 r[8];
      for (int i = 0; i < 8; ++i) r[i] = i < rc ? _mm256_load_ps(acc + (r0 + i) * TT + tb) : _mm256_setzero_ps();
      transpose8(r);
      for (int64_t c = 0; c < tc; ++c) {
        float* dst = y + (tb + c) * ldy + r0;
        const __m256 v = _mm256_add_ps(r[c], b);
        if (rc == 8) _mm256_storeu_ps(dst, v); else _mm256_maskstore_ps(dst, mask, v);
      }
    }
  }
}

// ------------------------------------------------------------------------------------------ AVX-512F (16 lanes)
// Only the micro-kernel is wider; the transposes reuse the AVX2 ones (every AVX-512 CPU has AVX2), with TT a
// multiple of 16. Compiled on every build; cannot run on a CPU without AVX-512 (the driver never selects it there).

template <int NV>
TSP_AVX512 static void rows_avx512(const int64_t* ptr, const int32_t* cols, const float* vals, int64_t g,
                                   int64_t ge, const float* xT, float* acc, bool first) {
  constexpr int TT = NV * 16;
  for (int64_t o = g; o < ge; ++o) {
    const int64_t j0 = ptr[o], j1 = ptr[o + 1];
    float* yr = acc + (o - g) * TT;
    if (!first && j0 == j1) continue;
    __m512 a[NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) a[v] = first ? _mm512_setzero_ps() : _mm512_load_ps(yr + 16 * v);
    for (int64_t j = j0; j < j1; ++j) {
      const __m512 w = _mm512_set1_ps(vals[j]);
      const float* xr = xT + static_cast<int64_t>(cols[j]) * TT;
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) a[v] = _mm512_fmadd_ps(w, _mm512_load_ps(xr + 16 * v), a[v]);
    }
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) _mm512_store_ps(yr + 16 * v, a[v]);
  }
}

#endif  // TSP_X86

}  // namespace tsprune
