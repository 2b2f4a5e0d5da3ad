/* out = softmax(q k^T * scale) v over a few keys, every (batch, head) at once, in the models' own layout.

Appendix. Written for tsprune from scratch; the Python side is tsprune/sparse/attention.py.

A.0 Problem. q is [B, L, H, E], k [B, S, H, E], v [B, S, H, Ev] (float32, any strides but a unit stride on the last
    dimension: the views that a [B, L, H*E] projection output gives without a copy); for every batch b, head h and
    query l: p = softmax_s(scale * q[b, l, h] . k[b, s, h]) (s > l masked out when causal: the top-left aligned
    convention of torch's scaled_dot_product_attention), out[b, l, h] = sum_s p[s] v[b, s, h]. out is a new
    contiguous [B, L, H, Ev]: its [B, L, H*Ev] view feeds the output projection without a copy.

A.1 Why a kernel. Crossformer attends over 7-10 segments, routers or channels in thousands of (batch, head)
    problems per layer (B*D*H = 896 at batch 32). In PyTorch that is two batched GEMMs of 8 x 64 x 8 matrices, a
    softmax, and a copy of each of q, k, v and the output into [B*H, L, E] order (the heads are not a batch
    dimension that merges with B as a view): four tensor-sized copies for a few MFLOP of arithmetic. At batch 32 on
    2 threads they took ~60 ms of Crossformer's ~150 ms sparse pass (copies 31, bmm 25, softmax 7). Here each
    (b, h) is one work item that reads q, k and v where they lie and writes the output once.

A.2 Loop. Per query, the scores of SP keys (SP = S rounded up to 8; longer key lists are not this kernel's job,
    see SHORT_KEYS in models/layers/attention.py) are computed one of two ways:
      E % 8 == 0, AVX2: dot products of q's row with 8 key rows at a time, where they lie: 8 accumulators over
        E / 8 FMAs each, then three rounds of horizontal adds put the 8 sums in one vector (keys past S dot with
        key 0 and are masked below). Nothing is copied.
      otherwise (and on the portable path): k's S x E block is transposed once per item into kT [E][SP] (zero
        columns past S; E * SP * 4 bytes, 4 KiB at E = 64, S = 16: in L1 for all queries of the item), and the
        scores are SP-wide vectors: sc[0:SP] += q[l, e] * kT[e][0:SP], in four chains over e mod 4.
    Then the softmax on the vector of scores (max over keys [0, last), exp, masked and padded keys set to 0, sum),
    and out[l, 0:Ev] = sum_s (p[s] / sum) v[s, 0:Ev], 64 features in 8 registers at a time. The loops have
    compile-time widths (SP / 8 = 1..4 vectors) and are compiled for AVX2+FMA and for the baseline ISA, picked at
    run time like the sparse kernel's paths. Measured against torch's two-GEMM path on Crossformer's shapes (2
    threads, Zen 3): 2.1-4.8x at [224 items, 8 queries, 8 keys], 2.3-3.3x for the router stages, 3-6x at batch 1;
    16-20 ms of attention per batch-32 pass instead of ~60.

A.3 Numerics. Each score is a sum of FMA chains over e (one per key on the dot path, four interleaved on the
    transposed path) in a fixed order, then times scale; the softmax subtracts the row maximum before exp (no
    overflow; a fully masked row cannot occur: key 0 is never masked), and exp is vec_math.h's (about one ulp;
    weights below 2^-126 of the row maximum's become 0); out sums s in order. Against the two-GEMM path the results
    differ by float32 rounding only (tests/test_short_attention.py).
*/

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <memory>

#include "sparse_linear_isa.h"
#include "vec_math.h"

namespace tsprune {
namespace {

constexpr int64_t kMaxKeys = 32;  // SP / 8 <= 4 vectors of scores

struct View4 {  // a [d0, d1, d2, d3] float tensor with a unit last stride
  const float* p;
  int64_t s0, s1, s2;
  const float* at(int64_t i, int64_t j, int64_t k) const { return p + i * s0 + j * s1 + k * s2; }
};

constexpr vi8 kLane = {0, 1, 2, 3, 4, 5, 6, 7};

// The rest of one query once its scaled scores sc[0:SP] are in: softmax over keys [0, last), then
// o[0:Ev] = sum_s p[s] v[b, s, h], 64 features (8 vectors) at a time in registers.
template <int SP>
__attribute__((always_inline)) inline void softmax_values(float* sc, int64_t last, const View4& v, int64_t b,
                                                          int64_t h, int64_t Ev, float* o) {
  constexpr int NS = SP / 8;
  float m = sc[0];
  for (int64_t s = 1; s < last; ++s) m = std::max(m, sc[s]);
  // p = exp(sc - m) on whole vectors (keys from `last` on, padding included, give 0), then p / sum(p).
  vf8 sum8 = {};
  for (int j = 0; j < NS; ++j) {
    vf8 x = *reinterpret_cast<vf8*>(sc + 8 * j) - m;
    const vi8 keep = (kLane + 8 * j) < static_cast<int>(last);
    x = exp_nonpositive(x);
    x = reinterpret_cast<vf8>(reinterpret_cast<vi8>(x) & keep);
    *reinterpret_cast<vf8*>(sc + 8 * j) = x;
    sum8 += x;
  }
  float sum = 0.0f;
  for (int i = 0; i < 8; ++i) sum += sum8[i];
  const float inv = 1.0f / sum;
  for (int64_t s = 0; s < last; ++s) sc[s] *= inv;
  const int64_t Ev64 = Ev / 64 * 64;
  for (int64_t e0 = 0; e0 < Ev64; e0 += 64) {
    vf8 r[8] = {};
    for (int64_t s = 0; s < last; ++s) {
      const float* vr = v.at(b, s, h) + e0;
      for (int j = 0; j < 8; ++j) r[j] += sc[s] * *reinterpret_cast<const vf8u*>(vr + 8 * j);
    }
    for (int j = 0; j < 8; ++j) *reinterpret_cast<vf8u*>(o + e0 + 8 * j) = r[j];
  }
  for (int64_t e = Ev64; e < Ev; ++e) {
    float r = 0.0f;
    for (int64_t s = 0; s < last; ++s) r += sc[s] * v.at(b, s, h)[e];
    o[e] = r;
  }
}

// One (b, h) item, scores from transposed keys (any E): q rows l < L, k and v rows s < S, out rows of stride ldo.
// kT: 32-byte aligned scratch [E][SP].
template <int SP>
__attribute__((always_inline)) inline void attend(const View4& q, const View4& k, const View4& v, int64_t b,
                                                  int64_t h, int64_t L, int64_t S, int64_t E, int64_t Ev,
                                                  float scale, bool causal, float* out, int64_t ldo, float* kT) {
  constexpr int NS = SP / 8;
  for (int64_t s = 0; s < S; ++s) {  // each key row read once, contiguously
    const float* kr = k.at(b, s, h);
    for (int64_t e = 0; e < E; ++e) kT[e * SP + s] = kr[e];
  }
  for (int64_t e = 0; e < E; ++e)
    for (int64_t s = S; s < SP; ++s) kT[e * SP + s] = 0.0f;
  const int64_t E4 = E / 4 * 4;
  for (int64_t l = 0; l < L; ++l) {
    const float* ql = q.at(b, l, h);
    // Scores: four partial sums over e (independent FMA chains), added in a fixed order.
    vf8 acc[4][NS] = {};
    for (int64_t e = 0; e < E4; e += 4)
      for (int u = 0; u < 4; ++u)
        for (int j = 0; j < NS; ++j) acc[u][j] += ql[e + u] * *reinterpret_cast<const vf8*>(kT + (e + u) * SP + 8 * j);
    for (int64_t e = E4; e < E; ++e)
      for (int j = 0; j < NS; ++j) acc[0][j] += ql[e] * *reinterpret_cast<const vf8*>(kT + e * SP + 8 * j);
    float sc[SP] __attribute__((aligned(32)));
    for (int j = 0; j < NS; ++j)
      *reinterpret_cast<vf8*>(sc + 8 * j) = ((acc[0][j] + acc[1][j]) + (acc[2][j] + acc[3][j])) * scale;
    softmax_values<SP>(sc, causal ? std::min(S, l + 1) : S, v, b, h, Ev, out + l * ldo);
  }
}

using AttendFn = void (*)(const View4&, const View4&, const View4&, int64_t, int64_t, int64_t, int64_t, int64_t,
                          int64_t, float, bool, float*, int64_t, float*);

template <int SP>
void attend_portable(const View4& q, const View4& k, const View4& v, int64_t b, int64_t h, int64_t L, int64_t S,
                     int64_t E, int64_t Ev, float scale, bool causal, float* out, int64_t ldo, float* kT) {
  attend<SP>(q, k, v, b, h, L, S, E, Ev, scale, causal, out, ldo, kT);
}
#if TSP_X86
template <int SP>
TSP_AVX2 void attend_avx2(const View4& q, const View4& k, const View4& v, int64_t b, int64_t h, int64_t L,
                          int64_t S, int64_t E, int64_t Ev, float scale, bool causal, float* out, int64_t ldo,
                          float* kT) {
  attend<SP>(q, k, v, b, h, L, S, E, Ev, scale, causal, out, ldo, kT);
}

// a[i] -> lane i of the result holds the sum of a[i]'s 8 lanes (three rounds of horizontal adds, then the halves).
TSP_AVX2 static inline __m256 lane_sums(const __m256* a) {
  const __m256 h01 = _mm256_hadd_ps(a[0], a[1]), h23 = _mm256_hadd_ps(a[2], a[3]);
  const __m256 h45 = _mm256_hadd_ps(a[4], a[5]), h67 = _mm256_hadd_ps(a[6], a[7]);
  const __m256 lo = _mm256_hadd_ps(h01, h23), hi = _mm256_hadd_ps(h45, h67);  // [sums of 0-3 | of 4-7] per half
  return _mm256_add_ps(_mm256_permute2f128_ps(lo, hi, 0x20), _mm256_permute2f128_ps(lo, hi, 0x31));
}

// The same item with E % 8 == 0 (A.2): scores as dot products of q's and k's rows where they lie, 8 keys at a time
// (8 accumulators over E / 8 FMAs each, then lane_sums), so k is never transposed. Keys past S in the last group
// dot with key 0 and are masked in softmax_values.
template <int SP>
TSP_AVX2 TSP_FLATTEN void attend_dots_avx2(const View4& q, const View4& k, const View4& v, int64_t b, int64_t h,
                                           int64_t L, int64_t S, int64_t E, int64_t Ev, float scale, bool causal,
                                           float* out, int64_t ldo, float*) {
  constexpr int NS = SP / 8;
  const __m256 sv = _mm256_set1_ps(scale);
  for (int64_t l = 0; l < L; ++l) {
    const float* ql = q.at(b, l, h);
    float sc[SP] __attribute__((aligned(32)));
    for (int j = 0; j < NS; ++j) {
      const float* kr[8];
      for (int i = 0; i < 8; ++i) kr[i] = k.at(b, 8 * j + i < S ? 8 * j + i : 0, h);
      __m256 a[8];
      for (int i = 0; i < 8; ++i) a[i] = _mm256_setzero_ps();
      for (int64_t e = 0; e < E; e += 8) {
        const __m256 qe = _mm256_loadu_ps(ql + e);
        for (int i = 0; i < 8; ++i) a[i] = _mm256_fmadd_ps(qe, _mm256_loadu_ps(kr[i] + e), a[i]);
      }
      _mm256_store_ps(sc + 8 * j, _mm256_mul_ps(lane_sums(a), sv));
    }
    softmax_values<SP>(sc, causal ? std::min(S, l + 1) : S, v, b, h, Ev, out + l * ldo);
  }
}
#endif

AttendFn pick(int64_t sp, bool simd, bool dots) {
#if TSP_X86
  if (simd && dots) {
    switch (sp) {
      case 8: return &attend_dots_avx2<8>;
      case 16: return &attend_dots_avx2<16>;
      case 24: return &attend_dots_avx2<24>;
      default: return &attend_dots_avx2<32>;
    }
  }
  if (simd) {
    switch (sp) {
      case 8: return &attend_avx2<8>;
      case 16: return &attend_avx2<16>;
      case 24: return &attend_avx2<24>;
      default: return &attend_avx2<32>;
    }
  }
#endif
  (void)simd, (void)dots;
  switch (sp) {
    case 8: return &attend_portable<8>;
    case 16: return &attend_portable<16>;
    case 24: return &attend_portable<24>;
    default: return &attend_portable<32>;
  }
}

bool has_avx2() {
#if TSP_X86
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

at::Tensor unit_last(const at::Tensor& t) { return t.stride(3) == 1 || t.size(3) <= 1 ? t : t.contiguous(); }

at::Tensor short_attention(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in, double scale,
                           bool causal, bool simd) {
  for (const at::Tensor* t : {&q_in, &k_in, &v_in})
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kFloat && t->dim() == 4,
                "tsprune short attention: q, k, v must be 4-D float32 CPU tensors [batch, length, heads, features]");
  const at::Tensor q = unit_last(q_in), k = unit_last(k_in), v = unit_last(v_in);
  const int64_t B = q.size(0), L = q.size(1), H = q.size(2), E = q.size(3), S = k.size(1), Ev = v.size(3);
  TORCH_CHECK(k.size(0) == B && v.size(0) == B && k.size(2) == H && v.size(2) == H && k.size(3) == E &&
                  v.size(1) == S,
              "tsprune short attention: q [B, L, H, E], k [B, S, H, E] and v [B, S, H, Ev] do not match");
  TORCH_CHECK(S >= 1 && S <= kMaxKeys, "tsprune short attention: 1 to ", kMaxKeys, " keys, got ", S);
  at::Tensor out = at::empty({B, L, H, Ev}, q.options());
  if (B == 0 || L == 0 || H == 0 || Ev == 0) return out;
  const int64_t sp = (S + 7) / 8 * 8;
  const AttendFn fn = pick(sp, simd && has_avx2(), E % 8 == 0);
  const View4 qv{q.data_ptr<float>(), q.stride(0), q.stride(1), q.stride(2)};
  const View4 kv{k.data_ptr<float>(), k.stride(0), k.stride(1), k.stride(2)};
  const View4 vv{v.data_ptr<float>(), v.stride(0), v.stride(1), v.stride(2)};
  float* op = out.data_ptr<float>();
  const float sc = static_cast<float>(scale);
  // Items are (b, h) pairs of equal cost; a grain of a few items keeps batch 1 (tens of items) on every thread.
  at::parallel_for(0, B * H, 4, [&](int64_t begin, int64_t end) {
    std::unique_ptr<float, decltype(&std::free)> kT(
        static_cast<float*>(std::aligned_alloc(32, static_cast<size_t>(std::max<int64_t>(E, 1) * sp) * 4)), &std::free);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / H, h = item % H;
      fn(qv, kv, vv, b, h, L, S, E, Ev, sc, causal, op + (b * L * H + h) * Ev, H * Ev, kT.get());
    }
  });
  return out;
}

}  // namespace
}  // namespace tsprune

// A CPU kernel (it reads the data) with a fake registered from tsprune.sparse.attention, as for sparse_linear.
TORCH_LIBRARY_FRAGMENT(tsprune, m) {
  m.set_python_module("tsprune.sparse.attention");
  m.def("short_attention(Tensor q, Tensor k, Tensor v, float scale, bool causal=False, bool simd=True) -> Tensor",
        {at::Tag::pt2_compliant_tag});
}

TORCH_LIBRARY_IMPL(tsprune, CPU, m) { m.impl("short_attention", &tsprune::short_attention); }
