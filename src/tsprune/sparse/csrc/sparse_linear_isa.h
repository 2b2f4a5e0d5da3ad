// The ISA-specific pieces of sparse_linear.cpp (see the appendix at the top of that file for the maths):
//
//   rows_<isa><NV>  the micro-kernel: for output rows [g, ge) of one column panel,
//                   acc[o, 0:TT] (+)= sum_j vals[j] * xT[cols[j], 0:TT] with TT = NV * lanes tokens, the NV
//                   accumulator vectors held in registers for the whole row (the SIMD paths share one loop,
//                   rows_simd, over a register trait; the portable one is plain C++);
//   pack_tile_*     x[t0:t0+tn, k0:k0+kn] (row-major, stride K) -> xT[kn][TT], tokens tn..TT zero-filled;
//   unpack_rows_*   acc[r][0:tn] of up to kGroup rows -> y[t0+t, g+r] (+ bias[g+r]), the transpose back.
//
// Each function carries its own __attribute__((target)), so the file is compiled for plain x86-64 (no -march) and
// the driver picks the widest path the running CPU supports (__builtin_cpu_supports). Intrinsics are legal inside
// a function whose target enables them; callees that are inlined must have the same or a narrower target.
#pragma once

#include <cmath>
#include <cstdint>

#include "vec_math.h"

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

// The epilogue applied to y = x W^T + b as it is stored (appendix D.3): none, ReLU or exact GELU (vec_math.h).
enum : int64_t { kActNone = 0, kActRelu = 1, kActGelu = 2 };

static inline float activate_scalar(float v, int64_t act) {
  if (act == kActRelu) return v < 0.0f ? 0.0f : v;
  if (act == kActGelu) return 0.5f * v * std::erfc(-v * 0.707106781f);  // libm's erfc: the reference
  return v;
}

static void unpack_rows_scalar(const float* acc, int64_t TT, int64_t rows, int64_t tn, const float* bias, float* y,
                               int64_t ldy, int64_t act) {
  for (int64_t t = 0; t < tn; ++t)
    for (int64_t r = 0; r < rows; ++r)
      y[t * ldy + r] = activate_scalar(acc[r * TT + t] + (bias ? bias[r] : 0.0f), act);
}

#if TSP_X86
#define TSP_AVX2 __attribute__((target("avx2,fma")))
#define TSP_AVX512 __attribute__((target("avx512f,avx2,fma")))

// ------------------------------------------------------------------------------------------ SIMD micro-kernel
// One loop for every vector path, over a register trait V (what a register is and the five things the loop does
// with it):
//
//   V::reg, V::lanes       a vector of `lanes` floats (8: ymm, 16: zmm);
//   zero(a), load(a, p)    a <- 0, a <- p[0:lanes] (p aligned to the vector: acc and xT rows are, see D.1);
//   broadcast(w, p)        w <- (p[0], ..., p[0]);
//   fma(a, w, p)           a <- w * p[0:lanes] + a with one rounding (the FMA chain of appendix D.6);
//   store(p, a)            p[0:lanes] <- a.
//
// Lanes<L> gives zero, load and store for any width with the compiler's vector extension (a vector load or store
// is one vmovaps). Broadcast and FMA are spelt per ISA: the extension's scalar-to-vector broadcast costs an add
// (0 + x is not x for x = -0), and its `a + w * x` is fused only under -ffp-contract=fast, while D.6's bound (and
// the exactness test on integers) needs the single rounding.
//
// rows_simd<V, NV> is the loop of appendix D.3 for output rows [g, ge) of one panel: row o keeps its TT =
// NV * lanes partial sums in the NV registers a[0..NV) from its first nonzero to its last, and each nonzero j
// costs one broadcast of vals[j] and NV FMAs whose second operand is a load of xT row cols[j] (folded into the FMA
// as a memory operand). Why this is fast: the registers never spill (NV + 1 <= 16 ymm, <= 32 zmm), the NV FMA
// chains are independent (more than the FMA latency x throughput needs, D.2), and xT rows are read in the order
// the weights list them, from L1 (D.3). The loops over v are fully unrolled so a[v] are registers, not memory.
//
// Why a trait and not one templated kernel with the ISA in its attribute: __attribute__((target)) cannot depend
// on a template parameter, and a function compiled for plain x86-64 may not inline intrinsics of a wider ISA. So
// rows_simd carries no target and is always inlined; each path's entry point (rows_avx2, rows_avx512) carries its
// target and `flatten`, which inlines rows_simd and then the trait's operations into the entry point, where the
// target allows them. The trait takes registers by reference: a vector passed by value through a function that is
// compiled without AVX would change the calling convention (GCC's -Wpsabi), and nothing is passed by value here.
// Folding the two hand-written loops into this one left their object code as it was (GCC 12, objdump of every
// rows_avx2 / rows_avx512 instantiation: the same broadcasts, FMAs and index loads, but for one register name, no
// calls; only branch layout and padding moved).

#define TSP_FLATTEN __attribute__((flatten))

template <int L>
struct Lanes {  // the width-generic operations of the trait (see above)
  typedef float reg __attribute__((vector_size(4 * L), __may_alias__));  // may alias the floats it is loaded from
  static constexpr int lanes = L;
  static void zero(reg& a) { a = reg{}; }
  static void load(reg& a, const float* p) { a = *reinterpret_cast<const reg*>(p); }
  static void store(float* p, const reg& a) { *reinterpret_cast<reg*>(p) = a; }
};

template <class V, int NV>
__attribute__((always_inline)) inline void rows_simd(const int64_t* ptr, const int32_t* cols, const float* vals,
                                                     int64_t g, int64_t ge, const float* xT, float* acc, bool first) {
  constexpr int L = V::lanes, TT = NV * L;
  for (int64_t o = g; o < ge; ++o) {
    const int64_t j0 = ptr[o], j1 = ptr[o + 1];
    float* yr = acc + (o - g) * TT;
    if (!first && j0 == j1) continue;  // nothing of this row in this panel: its partial sums stand
    typename V::reg a[NV], w;
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) first ? V::zero(a[v]) : V::load(a[v], yr + L * v);
    for (int64_t j = j0; j < j1; ++j) {
      V::broadcast(w, vals + j);
      const float* xr = xT + static_cast<int64_t>(cols[j]) * TT;
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) V::fma(a[v], w, xr + L * v);
    }
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) V::store(yr + L * v, a[v]);
  }
}

// ------------------------------------------------------------------------------------------ AVX2 + FMA (8 lanes)

struct Avx2Reg : Lanes<8> {
  TSP_AVX2 static void broadcast(reg& w, const float* p) { w = _mm256_broadcast_ss(p); }
  TSP_AVX2 static void fma(reg& a, const reg& w, const float* p) { a = _mm256_fmadd_ps(w, _mm256_load_ps(p), a); }
};

template <int NV>
TSP_AVX2 TSP_FLATTEN static void rows_avx2(const int64_t* ptr, const int32_t* cols, const float* vals, int64_t g,
                                           int64_t ge, const float* xT, float* acc, bool first) {
  rows_simd<Avx2Reg, NV>(ptr, cols, vals, g, ge, xT, acc, first);
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
                                      float* y, int64_t ldy, int64_t act) {
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
        __m256 v = _mm256_add_ps(r[c], b);
        if (act == kActRelu) v = _mm256_max_ps(v, _mm256_setzero_ps());
        else if (act == kActGelu) v = (__m256)gelu((vf8)v);  // on the registers: y is written once
        if (rc == 8) _mm256_storeu_ps(dst, v); else _mm256_maskstore_ps(dst, mask, v);
      }
    }
  }
}

// ------------------------------------------------------------------------------------------ AVX-512F (16 lanes)
// Only the micro-kernel is wider; the transposes reuse the AVX2 ones (every AVX-512 CPU has AVX2), with TT a
// multiple of 16. Compiled on every build; cannot run on a CPU without AVX-512 (the driver never selects it there).

struct Avx512Reg : Lanes<16> {
  TSP_AVX512 static void broadcast(reg& w, const float* p) { w = _mm512_set1_ps(*p); }
  TSP_AVX512 static void fma(reg& a, const reg& w, const float* p) { a = _mm512_fmadd_ps(w, _mm512_load_ps(p), a); }
};

template <int NV>
TSP_AVX512 TSP_FLATTEN static void rows_avx512(const int64_t* ptr, const int32_t* cols, const float* vals, int64_t g,
                                               int64_t ge, const float* xT, float* acc, bool first) {
  rows_simd<Avx512Reg, NV>(ptr, cols, vals, g, ge, xT, acc, first);
}

#endif  // TSP_X86

}  // namespace tsprune
