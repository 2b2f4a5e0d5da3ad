/* y = x W^T + b for an unstructured-sparse W on CPU: a weight-stationary, column-panelled CSR kernel.

Appendix. Written for tsprune from scratch; see tsprune/sparse/kernel.py for the Python side and the packing.

D.0 Problem. x is [T, K] (tokens x in, row-major, float32), W is [N, K] (out x in) with nnz = d N K nonzeros at
    unstructured positions, b is [N]; y[t, o] = sum_i x[t, i] W[o, i] + b[o] is [T, N], row-major. Dense GEMM
    does 2 T N K flops at close to the FMA peak thanks to register blocking (each loaded vector of x feeds several
    outputs). With unstructured zeros there is no such reuse, so the kernel is organised around the only reuse
    that is left: one nonzero W[o, i] multiplies the same column x[:, i] for every token.

D.1 Data layout.
    Weight (built once by kernel.pack): columns are cut into P panels of width Kp; panel p is the columns
    [p Kp, (p + 1) Kp). The nonzeros are stored panel-major, then by row, then by column:
      ptr    int64 [P N + 1]   row o of panel p is ptr[p N + o] .. ptr[p N + o + 1]
      cols   int32 [nnz]       column relative to the panel start (0 .. Kp - 1)
      vals   float32 [nnz]
      row_nnz int64 [N + 1]    nonzeros of rows 0 .. o - 1 over all panels (only used to balance threads)
    8 bytes per nonzero plus 8 (P + 1) N bytes: 21% of the dense bytes at d = 0.107 and one panel.
    Scratch per thread, 64-byte aligned: xT [Kp][TT], a panel of the token tile transposed (token index
    fastest), and acc [rows][TT], the partial sums of output rows (also token-fastest).

D.2 Token tiles. The micro-kernel keeps a row's partial sums for TT tokens in NV vector registers: AVX2 has 16
    ymm registers, 12 accumulate and one holds the broadcast weight: TT = 12 x 8 = 96 tokens. 12 independent FMA
    chains are more than the 8 (= 4 cycles latency x 2 FMA/cycle on Zen 3 / Skylake) needed to saturate the FMA
    pipes, and the per-nonzero overhead (index load, broadcast, loop) is paid once per 12 FMAs. AVX-512: 8 zmm
    accumulators, TT = 128; portable path: 4 x 8 = 32 (8 xmm registers). T is cut into ceil(T / TTmax) tiles of
    equal width rounded up to the vector length (T = 100 -> 2 x 56, not 96 + 4); the padded tokens of xT are
    zeros, multiplied but never stored, so no tail handling is needed in the micro-kernel.

D.3 Loop order and blocking (one work item = a token tile [t0, t0 + TT) x an output-row block [o0, o1)):
      for p in panels:
        xT[k][t] = x[t0 + t][p Kp + k]                 pack: 8x8 AVX2 register transposes, masked column tail
        for each group of 16 rows g in [o0, o1):
          for o in g:  (acc_o in NV registers)
            acc_o = (p == 0 ? 0 : acc[o])
            for j in ptr[pN + o] .. ptr[pN + o + 1]:  acc_o += vals[j] * xT[cols[j]][0 : TT]   (NV FMAs)
            acc[o] = acc_o
          if p is the last panel: y[t0 + t][o] = act(acc[o][t] + b[o]) for o in g   (8x8 transposes back)
    Per nonzero: one broadcast load, NV vector loads as FMA memory operands, NV FMAs; 96 multiply-adds for 8
    bytes of weight (12 MAC/byte; the weight streams sequentially from L2/L3 once per tile). The loads are the
    bound: unlike dense GEMM, each FMA needs its own vector of x, so the kernel runs at FMA speed (16 MAC/cycle
    per core, the dense peak) only while xT is in L1: Zen 3 serves two 32-byte loads per cycle from L1 but a
    384-byte xT row from L2 (32 B/cycle) takes 12 cycles instead of 6. Hence the panels:
      xT footprint = Kp x TT x 4 bytes = 24 KiB at Kp = 64 (L1d: 32 KiB), 192 KiB at Kp = 512 (L2: 512 KiB).
    A narrow panel keeps xT in L1 but costs, per (row, panel), a load and a store of the row's 384-byte partial
    sums and one mispredicted loop exit (~15 cycles), against ~6 cycles per nonzero of useful work. The rule
    (kernel.panel_width): aim at 16 nonzeros of a row per panel, Kp = 32 round(16 / (32 d)), clamped to
    [64, 512] columns (the L1 and L2 footprints above), then the fewest equal panels (multiples of 8) covering K:
    d = 0.25 -> 64, 0.107 -> 128..160, 0.05 -> 256..296, d <= 0.03 -> 512; K <= Kp is a single panel. Measured
    at 3072 tokens, 1 thread (speed-up over dense; Kp = 64 / 128 / 256 / 512): 512x512 d = 0.25: 2.3 / 2.0 / 1.6 /
    1.5; d = 0.05: 5.3 / 6.2 / 5.8 / 5.1; 512x2048 d = 0.25: 1.9 / 1.9 / 1.5 / 1.4.
    The partial sums of a multi-panel item are read and written row after row, a sequential stream that the
    hardware prefetchers serve from L2/L3, so they need no cache budget: blocks are capped at 1 MiB of scratch
    (2730 rows at 96 tokens). Capping them at 192 KiB to stay in L2 measured 5-15% slower (more row blocks means
    packing the same x panel again). With one panel there are no partial sums at all: a 16-row group (6 KiB, L1)
    sits between the FMAs and the transpose back, and 16 rows are one full 64-byte line of y per token.

D.4 Threads. OpenMP with at::get_num_threads() threads (1 inside an ATen parallel region); the extension's
    libgomp.so.1 resolves to the one torch loaded, so MKL and this kernel share one thread pool. Work items are
    (token tile, row block) pairs, scheduled dynamically: a thread that loses its core to another process delays
    only its own items. Row blocks: those of D.3, then more until the number of items is a multiple of the thread
    count or at least 4 per thread: 3072 tokens = 32 tiles need none, batch 1 = 96 tokens = 1 tile gets one block
    per thread. Block bounds are cut at equal cumulative cost (nonzeros + 1 per row, from row_nnz) on 16-row
    boundaries, so skewed real masks balance too. Each block of a tile packs the tile's x again (cost below).

D.5 What it costs and what bounds it. Per item: FMAs d Kb TT per row; pack K TT floats once per block (relative
    cost ~ 1 / (d N_block) of the FMA count) and unpack TT floats per row (~ 1 / (d K)). Beyond that the floor is
    memory traffic: reading x (4 T K bytes) and writing y (4 T N bytes, plus the read-for-ownership), the same as
    for dense GEMM but now next to d times less arithmetic: with an all-zero 512x512 weight a 3072-token call
    takes ~45% of the time of the d = 0.05 call. So the speed-up grows with 1 / d until that floor: at 1 thread,
    3072 tokens, 2.4-2.6x at d = 0.25, 3.7-4.5x at 0.107, 5.8-6.9x at 0.05 over MKL dense for the 2048x512,
    512x2048 and 512x512 layers (benchmarks/sparse_kernels.py, on a shared 2-core Zen 3).

D.6 Numerics. Each output is one chain of FMAs in column order within a panel, panels in order, then + b[o]:
    |y - y_exact| <= gamma_{n_o + 1} (sum_i |x_ti| |W_oi| + |b_o|), gamma_k = k u / (1 - k u), u = 2^-24,
    n_o = nonzeros of row o (tests/test_sparse_kernel.py checks it element-wise, and exactness on integers).

D.8 Epilogue. act is none, ReLU or exact GELU (the activation between a feed-forward block's two layers, which
    the engine folds into the first layer's kernel: tsprune/sparse/engine.py). It runs on the transposed registers
    just before the store, so the [T, N] hidden activation is written once and never read back for a separate
    activation pass (at batch 32 a d_ff = 2048 layer's output is 25-38 MB per call). GELU is vec_math.h's:
    Abramowitz & Stegun's erf, within 2.5e-7 |v| plus rounding (the class of torch's own float32 GELU); libm's erfc
    on the portable path.

D.7 Instruction sets. The file is compiled without -march; each kernel carries __attribute__((target(...))) and
    the driver picks, once, AVX-512F (rows kernel; AVX2 transposes) > AVX2+FMA > portable C++ (auto-vectorised
    for the baseline ISA) with __builtin_cpu_supports. The AVX2 and AVX-512 micro-kernels are one loop
    (rows_simd in sparse_linear_isa.h) over a register trait, so the two paths cannot drift apart. The AVX-512
    path is compiled into every x86 build (zmm FMAs in the object) and selected only where the CPU (and OS)
    report avx512f; tests/test_sparse_kernel.py runs every path the CPU has, so on an AVX-512 machine it checks
    both SIMD paths and the portable one. Non-x86 builds (or -DTSP_PORTABLE_ONLY) keep only the portable path.
    Limits: float32 only; K < 2^31 (int32 columns); any T, N, K >= 0, empty rows and panels, d from 0 to 1.
*/

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <memory>
#include <utility>
#include <vector>

#include "sparse_linear_isa.h"

namespace tsprune {
namespace {

enum : int64_t { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };
constexpr int64_t kAccBytes = 1024 * 1024;  // partial-sum block [rows, TT] of a multi-panel item (see D.3)

template <template <int> class F, int... I>
constexpr auto table(std::integer_sequence<int, I...>) { return std::array<RowsFn, sizeof...(I)>{F<I + 1>::fn...}; }
template <int NV> struct Scalar { static constexpr RowsFn fn = &rows_scalar<NV>; };
constexpr auto kScalarRows = table<Scalar>(std::make_integer_sequence<int, 4>{});
#if TSP_X86
template <int NV> struct Avx2 { static constexpr RowsFn fn = &rows_avx2<NV>; };
template <int NV> struct Avx512 { static constexpr RowsFn fn = &rows_avx512<NV>; };
constexpr auto kAvx2Rows = table<Avx2>(std::make_integer_sequence<int, 12>{});
constexpr auto kAvx512Rows = table<Avx512>(std::make_integer_sequence<int, 8>{});
#endif

struct Path {  // one instruction set's kernels and tile unit
  int64_t lanes, nv_max;
  RowsFn rows(int64_t nv) const;
  int64_t isa;
};
RowsFn Path::rows(int64_t nv) const {
#if TSP_X86
  if (isa == kAvx512) return kAvx512Rows[nv - 1];
  if (isa == kAvx2) return kAvx2Rows[nv - 1];
#endif
  return kScalarRows[nv - 1];
}

int64_t best_isa() {
#if TSP_X86
  __builtin_cpu_init();  // the checks read XCR0 too: an OS that does not save zmm state reports no avx512f
  if (__builtin_cpu_supports("avx512f")) return kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return kAvx2;
#endif
  return kScalar;
}

int64_t resolve_isa(int64_t request) {
  static const int64_t best = best_isa();
  if (request < 0) return best;
  TORCH_CHECK(request <= best, "tsprune sparse kernel: ISA ", request, " requested, this CPU supports up to ", best);
  return request;
}

Path path_for(int64_t isa) {
  if (isa == kAvx512) return {16, 8, kAvx512};  // 8 zmm accumulators = 128 tokens (of 32 registers)
  if (isa == kAvx2) return {8, 12, kAvx2};      // 12 ymm accumulators = 96 tokens (of 16 registers)
  return {8, 4, kScalar};                       // 8 xmm accumulators = 32 tokens
}

int64_t tile_tokens(int64_t isa) {
  const Path p = path_for(resolve_isa(isa));
  return p.lanes * p.nv_max;
}

struct Aligned {  // a 64-byte aligned scratch buffer per thread
  float* data;
  explicit Aligned(int64_t floats)
      : data(static_cast<float*>(std::aligned_alloc(64, ((std::max<int64_t>(floats, 1) * 4 + 63) / 64) * 64))) {}
  ~Aligned() { std::free(data); }
};

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

at::Tensor sparse_linear(const at::Tensor& x_in, const at::Tensor& ptr, const at::Tensor& cols,
                         const at::Tensor& vals, const at::Tensor& row_nnz, int64_t out_features, int64_t panel,
                         const std::optional<at::Tensor>& bias_in, int64_t isa, int64_t tile, int64_t activation) {
  TORCH_CHECK(x_in.device().is_cpu() && x_in.scalar_type() == at::kFloat && x_in.dim() == 2,
              "tsprune sparse kernel: x must be a 2-D float32 CPU tensor [tokens, in]");
  // Row-major x and bias, copied only if they are not: a traced graph run op by op (an exported program's
  // module()) can hand a view whose strides differ from those it was traced with, after the trace dropped the
  // caller's .contiguous() as a no-op. Compiled graphs get contiguous inputs (the op's needs_contiguous_strides tag).
  const at::Tensor x = x_in.contiguous();
  const std::optional<at::Tensor> bias =
      bias_in.has_value() && bias_in->defined() ? std::optional<at::Tensor>(bias_in->contiguous()) : std::nullopt;
  const int64_t T = x.size(0), K = x.size(1), N = out_features;
  TORCH_CHECK(N >= 0 && panel >= 1, "tsprune sparse kernel: out_features >= 0 and panel >= 1 needed");
  const int64_t P = std::max<int64_t>(1, ceil_div(K, panel));
  TORCH_CHECK(ptr.scalar_type() == at::kLong && ptr.is_contiguous() && ptr.numel() == P * N + 1,
              "tsprune sparse kernel: ptr must be contiguous int64 [panels * out + 1]");
  TORCH_CHECK(cols.scalar_type() == at::kInt && vals.scalar_type() == at::kFloat && cols.is_contiguous() &&
                  vals.is_contiguous() && cols.numel() == vals.numel(),
              "tsprune sparse kernel: cols (int32) and vals (float32) must be contiguous and of one length");
  TORCH_CHECK(row_nnz.scalar_type() == at::kLong && row_nnz.is_contiguous() && row_nnz.numel() == N + 1,
              "tsprune sparse kernel: row_nnz must be contiguous int64 [out + 1]");
  const float* b = nullptr;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->numel() == N,
                "tsprune sparse kernel: bias must be float32 [out]");
    b = bias->data_ptr<float>();
  }
  TORCH_CHECK(activation >= kActNone && activation <= kActGelu,
              "tsprune sparse kernel: activation must be 0 (none), 1 (relu) or 2 (gelu), got ", activation);
  at::Tensor y = at::empty({T, N}, x.options());
  if (T == 0 || N == 0) return y;

  // D.2 tiles: as few token tiles as the register budget allows, of near-equal width, rounded up to the lanes.
  const Path path = path_for(resolve_isa(isa));
  const int64_t tmax = tile > 0 ? std::clamp(tile / path.lanes, int64_t{1}, path.nv_max) * path.lanes
                                : path.lanes * path.nv_max;
  const int64_t TT = ceil_div(ceil_div(T, ceil_div(T, tmax)), path.lanes) * path.lanes;
  const int64_t nt = ceil_div(T, TT);
  const RowsFn rows = path.rows(TT / path.lanes);

  // D.4 row blocks: those that cap a multi-panel item's partial sums (D.3), then enough items for the threads;
  // bounds cut where the running cost (nonzeros + 1 per row) is balanced, on 16-row boundaries (lines of y).
  const int threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  const int64_t groups = ceil_div(N, 16);
  int64_t nb = std::min(groups, P > 1 ? ceil_div(N * TT * 4, kAccBytes) : int64_t{1});
  while (nb < groups && (nt * nb) % threads != 0 && nt * nb < 4 * threads) ++nb;
  const int64_t* cum = row_nnz.data_ptr<int64_t>();
  std::vector<int64_t> bounds(nb + 1, N);
  bounds[0] = 0;
  const int64_t total = cum[N] + N;
  for (int64_t k = 1; k < nb; ++k) {
    int64_t lo = 0, hi = N;  // first row o with cum[o] + o >= total * k / nb
    const int64_t target = total * k / nb;
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (cum[mid] + mid < target) lo = mid + 1; else hi = mid;
    }
    bounds[k] = std::clamp((lo + 8) / 16 * 16, bounds[k - 1], N);
  }
  int64_t block_rows = 0;
  for (int64_t k = 0; k < nb; ++k) block_rows = std::max(block_rows, bounds[k + 1] - bounds[k]);

  const float* xp = x.data_ptr<float>();
  const int64_t* pp = ptr.data_ptr<int64_t>();
  const int32_t* cp = cols.numel() ? cols.data_ptr<int32_t>() : nullptr;
  const float* vp = vals.numel() ? vals.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  const int64_t items = nt * nb, width = std::min(panel, K);
  auto pack = pack_tile_scalar;  // the transposes: AVX2 for both SIMD paths (AVX-512 CPUs have AVX2)
  auto unpack = unpack_rows_scalar;
#if TSP_X86
  if (path.isa != kScalar) pack = pack_tile_avx2, unpack = unpack_rows_avx2;
#endif

#pragma omp parallel num_threads(static_cast<int>(std::min<int64_t>(threads, items)))
  {
    Aligned xT(width * TT), acc((P > 1 ? block_rows : kGroup) * TT);
    // dynamic: items are equal in cost, but a thread that loses its core to another process must not hold back
    // the whole call (a static split makes every call as slow as its slowest thread).
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t t0 = item / nb * TT, tn = std::min(TT, T - t0), o0 = bounds[item % nb], o1 = bounds[item % nb + 1];
      if (o0 == o1) continue;
      for (int64_t p = 0; p < P; ++p) {
        const int64_t k0 = p * panel, kn = std::min(panel, K - k0);
        pack(xp + t0 * K + k0, K, tn, kn, TT, xT.data);
        for (int64_t g = o0; g < o1; g += kGroup) {
          const int64_t ge = std::min(g + kGroup, o1);
          float* a = P > 1 ? acc.data + (g - o0) * TT : acc.data;  // one panel: a group's rows in L1 are enough
          rows(pp + p * N, cp, vp, g, ge, xT.data, a, p == 0);
          if (p < P - 1) continue;
          float* dst = yp + t0 * N + g;
          unpack(a, TT, ge - g, tn, b ? b + g : nullptr, dst, N, activation);
        }
      }
    }
  }
  return y;
}

}  // namespace
}  // namespace tsprune

// sparse_linear is a CPU kernel (not a composite one: it reads the data), so FakeTensor, torch.compile and
// torch.export need its fake: kernel.py registers it (register_fake) from the module named here, which torch
// imports by itself when it meets the op without one. It wants contiguous inputs (the tag: inductor provides them;
// x and bias are copied otherwise, the weight arrays are checked), reads them and writes only its new output (no
// mutation, no aliasing): torch.library.opcheck checks this schema against the kernel (tests/test_compile.py).
// kernel_isa and tile_tokens take no tensors: composite.
TORCH_LIBRARY(tsprune, m) {
  m.set_python_module("tsprune.sparse.kernel");
  m.def("sparse_linear(Tensor x, Tensor ptr, Tensor cols, Tensor vals, Tensor row_nnz, int out_features, "
        "int panel, Tensor? bias, int isa=-1, int tile=0, int activation=0) -> Tensor",
        {at::Tag::needs_contiguous_strides, at::Tag::pt2_compliant_tag});
  m.def("kernel_isa(int request=-1) -> int", &tsprune::resolve_isa);
  m.def("tile_tokens(int isa=-1) -> int", &tsprune::tile_tokens);
}

TORCH_LIBRARY_IMPL(tsprune, CPU, m) { m.impl("sparse_linear", &tsprune::sparse_linear); }
