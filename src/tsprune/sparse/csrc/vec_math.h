// Elementwise maths on 8 float lanes for tsprune's kernels: exp of non-positive arguments (the softmax of
// short_attention.cpp) and GELU (the epilogue of sparse_linear.cpp). Written with the compiler's vector extension and
// always inlined, so each function takes the ISA of the kernel that calls it: one ymm on an AVX2 path, two xmm on
// the portable one.
//
// exp_nonpositive(x), x <= 0: x = n ln2 + r with n = round(x / ln2), |r| <= ln2 / 2 (ln2 split in two parts so
// that n ln2 is exact to float precision), exp(r) by its degree-6 Taylor polynomial (truncation r^7 / 7! < 1.2e-7
// relative, about one ulp), times 2^n assembled in the exponent bits. Below -87.33 (exp < 2^-126, the smallest
// normal float) the result is 0.
//
// gelu(v) = v (1 + erf(v / sqrt 2)) / 2 (exact GELU, torch's approximate="none"): erf by Abramowitz & Stegun 7.1.26,
// erf(z) = 1 - t (a1 + t (a2 + t (a3 + t (a4 + t a5)))) exp(-z^2), t = 1 / (1 + p z), z >= 0, absolute error
// <= 1.5e-7 (the formula torch's own vectorised CPU erf uses). With q = t (...) exp(-z^2), 1 + erf(u) is q for
// u < 0 and 2 - q for u >= 0 (no cancellation in 1 + erf). The error is absolute in 1 + erf (A&S's 1.5e-7 and the
// rounding of values up to 2): |gelu - exact| <= 2.5e-7 |v| plus the output's rounding; measured against float64 on
// [-12, 12]: 4.2e-7 at most, torch's own float32 GELU 3.7e-7.
#pragma once

namespace tsprune {

typedef float vf8 __attribute__((vector_size(32)));               // 8 floats: one ymm on AVX2, two xmm on SSE
typedef float vf8u __attribute__((vector_size(32), aligned(4)));  // the same, loaded from any float address
typedef int vi8 __attribute__((vector_size(32)));                 // 8 int32 lanes (masks, exponents)

__attribute__((always_inline)) inline vf8 exp_nonpositive(vf8 x) {
  const vi8 normal = x >= -87.33f;
  x = x < -87.33f ? vf8{} - 87.33f : x;
  const vf8 magic = vf8{} + 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to an integer
  const vf8 n = (x * 1.44269504f + magic) - magic;
  const vf8 r = (x - n * 0.693145752f) - n * 1.42860677e-6f;  // ln 2 = 0.693145752 + 1.42860677e-6
  vf8 p = vf8{} + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const vi8 bits = (__builtin_convertvector(n, vi8) + 127) << 23;  // 2^n, n in [-126, 0]
  return reinterpret_cast<vf8>(reinterpret_cast<vi8>(p * reinterpret_cast<vf8>(bits)) & normal);
}

__attribute__((always_inline)) inline vf8 gelu(vf8 v) {
  const vf8 u = v * 0.707106781f;  // v / sqrt 2
  const vf8 z = u < 0.0f ? -u : u;
  const vf8 t = 1.0f / (z * 0.3275911f + 1.0f);
  vf8 poly = t * 1.061405429f - 1.453152027f;
  poly = poly * t + 1.421413741f;
  poly = poly * t - 0.284496736f;
  poly = poly * t + 0.254829592f;
  const vf8 q = poly * t * exp_nonpositive(-(z * z));
  return v * 0.5f * (u < 0.0f ? q : 2.0f - q);
}

}  // namespace tsprune
