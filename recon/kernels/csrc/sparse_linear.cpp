// Sparse linear layer y = x W^T + b for CPU, W stored as CSR (N:M weights are CSR with fixed row length).
//
// Layout: the batch is cut into tiles of TB rows (32 or 64); each OpenMP thread transposes its tile of x into
// a cache-line aligned buffer Xt [in][TB] (L1 resident), so that every non-zero w_ok becomes one contiguous
// AXPY over the TB batch columns (Y^T = W X^T):
//     Yt[o, :] += w_ok * Xt[k, :]
// Output rows are produced 16 at a time and transposed (16x16 AVX-512 blocks) straight into y.
// The backward pass reuses the tiles: grad_x^T = W^T grad_y^T with the transposed (CSC) structure, and the
// weight gradient is a sampled dense-dense product g_ok = <Gt[o, :], Xt[k, :]>, whose horizontal sums are
// done 16 at a time (reduce16), accumulated per thread and summed at the end (deterministic for a fixed
// thread count). float32 uses AVX-512 intrinsics when the build targets them; every other case (float64,
// portable builds, CPUs without AVX-512) goes through the generic loops, which the compiler vectorises.
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#define RECON_SPARSE_AVX512 1
#else
#define RECON_SPARSE_AVX512 0
#endif

namespace {

// Batch rows per tile: 32 or 64 (2 or 4 AVX-512 float vectors per tile row), see choose_tile.
constexpr int kSmallTile = 32, kLargeTile = 64;
constexpr int64_t kLargeTileMaxFeatures = 128;
constexpr int kUnroll = 4;  // independent accumulator sets in the SpMM inner loop (hides FMA latency)

// dst[c * ldd + r] = src[r * lds + c] for r < rows, c < cols.
template <typename T>
void transpose_generic(const T* src, int64_t lds, T* dst, int64_t ldd, int64_t rows, int64_t cols) {
  constexpr int64_t BS = 16;
  for (int64_t r0 = 0; r0 < rows; r0 += BS) {
    const int64_t r1 = std::min(rows, r0 + BS);
    for (int64_t c0 = 0; c0 < cols; c0 += BS) {
      const int64_t c1 = std::min(cols, c0 + BS);
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) dst[c * ldd + r] = src[r * lds + c];
    }
  }
}

#if RECON_SPARSE_AVX512
// One full 16x16 float block: dst rows are src columns.
inline void transpose16x16(const float* src, int64_t lds, float* dst, int64_t ldd) {
  __m512 r[16], t[16];
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * lds);
  // interleave row pairs: per 128-bit lane t[2i] = a0 b0 a1 b1, t[2i+1] = a2 b2 a3 b3
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // groups of four rows: per lane, r[4g + j] holds column (4 * lane + j) of rows 4g..4g+3
#pragma GCC unroll 4
  for (int g = 0; g < 4; ++g) {
    r[4 * g + 0] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * g + 1] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  // gather lane L of r[j], r[4+j], r[8+j], r[12+j] into output row 4L + j
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    const __m512 u0 = _mm512_shuffle_f32x4(r[j], r[4 + j], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512 u1 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512 v0 = _mm512_shuffle_f32x4(r[j], r[4 + j], _MM_SHUFFLE(3, 2, 3, 2));
    const __m512 v1 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], _MM_SHUFFLE(3, 2, 3, 2));
    _mm512_storeu_ps(dst + (0 + j) * ldd, _mm512_shuffle_f32x4(u0, u1, _MM_SHUFFLE(2, 0, 2, 0)));
    _mm512_storeu_ps(dst + (4 + j) * ldd, _mm512_shuffle_f32x4(u0, u1, _MM_SHUFFLE(3, 1, 3, 1)));
    _mm512_storeu_ps(dst + (8 + j) * ldd, _mm512_shuffle_f32x4(v0, v1, _MM_SHUFFLE(2, 0, 2, 0)));
    _mm512_storeu_ps(dst + (12 + j) * ldd, _mm512_shuffle_f32x4(v0, v1, _MM_SHUFFLE(3, 1, 3, 1)));
  }
}
#endif

template <typename T>
void transpose(const T* src, int64_t lds, T* dst, int64_t ldd, int64_t rows, int64_t cols) {
  transpose_generic(src, lds, dst, ldd, rows, cols);
}

#if RECON_SPARSE_AVX512
template <>
void transpose<float>(const float* src, int64_t lds, float* dst, int64_t ldd, int64_t rows, int64_t cols) {
  const int64_t rf = rows - rows % 16, cf = cols - cols % 16;
  for (int64_t r0 = 0; r0 < rf; r0 += 16)
    for (int64_t c0 = 0; c0 < cf; c0 += 16) transpose16x16(src + r0 * lds + c0, lds, dst + c0 * ldd + r0, ldd);
  if (cf < cols) transpose_generic(src + cf, lds, dst + cf * ldd, ldd, rows, cols - cf);
  if (rf < rows) transpose_generic(src + rf * lds, lds, dst + rf, ldd, rows - rf, cf);
}
#endif

// Yt[r, :] = bias[r] + sum_j val[j] * Xt[idx[j], :]  for r < R (CSR rows), TB-wide rows.
template <typename T, int TB>
void spmm_tile_generic(const int64_t* ptr, const int32_t* idx, const T* val, const T* bias, int64_t R, const T* Xt,
                       T* Yt) {
  for (int64_t r = 0; r < R; ++r) {
    T acc[TB];
    const T b0 = bias ? bias[r] : T(0);
    for (int t = 0; t < TB; ++t) acc[t] = b0;
    for (int64_t j = ptr[r]; j < ptr[r + 1]; ++j) {
      const T w = val[j];
      const T* xr = Xt + static_cast<int64_t>(idx[j]) * TB;
#pragma omp simd
      for (int t = 0; t < TB; ++t) acc[t] += w * xr[t];
    }
    std::memcpy(Yt + r * TB, acc, sizeof(acc));
  }
}

// gv[j] += <Gt[r, :], Xt[idx[j], :]> for every non-zero j of row r.
template <typename T, int TB>
void sddmm_tile_generic(const int64_t* ptr, const int32_t* idx, int64_t R, const T* Gt, const T* Xt, T* gv) {
  for (int64_t r = 0; r < R; ++r) {
    const T* g = Gt + r * TB;
    for (int64_t j = ptr[r]; j < ptr[r + 1]; ++j) {
      const T* xr = Xt + static_cast<int64_t>(idx[j]) * TB;
      T s = 0;
#pragma omp simd reduction(+ : s)
      for (int t = 0; t < TB; ++t) s += g[t] * xr[t];
      gv[j] += s;
    }
  }
}

#if RECON_SPARSE_AVX512

template <int NV, int U>
void spmm_tile_avx(const int64_t* ptr, const int32_t* idx, const float* val, const float* bias, int64_t R,
                   const float* Xt, float* Yt) {
  constexpr int TB = NV * 16;
  for (int64_t r = 0; r < R; ++r) {
    __m512 acc[U][NV];
#pragma GCC unroll 8
    for (int u = 0; u < U; ++u)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[u][v] = _mm512_setzero_ps();
    if (bias)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[0][v] = _mm512_set1_ps(bias[r]);
    int64_t j = ptr[r];
    const int64_t e = ptr[r + 1];
    for (; j + U <= e; j += U) {
#pragma GCC unroll 8
      for (int u = 0; u < U; ++u) {
        const float* xr = Xt + static_cast<int64_t>(idx[j + u]) * TB;
        const __m512 w = _mm512_set1_ps(val[j + u]);
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[u][v] = _mm512_fmadd_ps(w, _mm512_loadu_ps(xr + 16 * v), acc[u][v]);
      }
    }
    for (; j < e; ++j) {
      const float* xr = Xt + static_cast<int64_t>(idx[j]) * TB;
      const __m512 w = _mm512_set1_ps(val[j]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[0][v] = _mm512_fmadd_ps(w, _mm512_loadu_ps(xr + 16 * v), acc[0][v]);
    }
#pragma GCC unroll 8
    for (int u = 1; u < U; ++u)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[0][v] = _mm512_add_ps(acc[0][v], acc[u][v]);
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(Yt + r * TB + 16 * v, acc[0][v]);
  }
}

// Horizontal sums of 16 vectors at once: out[u] = sum of the 16 lanes of v[u]. Four folding levels, each
// pairing vectors with two lane permutes and one add (45 instructions for 16 sums instead of ~7 per sum).
inline __m512 reduce16(const __m512 (&v)[16]) {
  const __m512i l1lo = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
  const __m512i l1hi = _mm512_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
  const __m512i l2lo = _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);
  const __m512i l2hi = _mm512_setr_epi32(4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
  const __m512i l3lo = _mm512_setr_epi32(0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29);
  const __m512i l3hi = _mm512_setr_epi32(2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
  const __m512i l4lo = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i l4hi = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  __m512 w[8], x[4], y[2];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i)  // [a 8 partial sums | b 8 partial sums]
    w[i] = _mm512_add_ps(_mm512_permutex2var_ps(v[2 * i], l1lo, v[2 * i + 1]),
                         _mm512_permutex2var_ps(v[2 * i], l1hi, v[2 * i + 1]));
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i)  // 4 vectors x 4 partial sums
    x[i] = _mm512_add_ps(_mm512_permutex2var_ps(w[2 * i], l2lo, w[2 * i + 1]),
                         _mm512_permutex2var_ps(w[2 * i], l2hi, w[2 * i + 1]));
#pragma GCC unroll 2
  for (int i = 0; i < 2; ++i)  // 8 vectors x 2 partial sums
    y[i] = _mm512_add_ps(_mm512_permutex2var_ps(x[2 * i], l3lo, x[2 * i + 1]),
                         _mm512_permutex2var_ps(x[2 * i], l3hi, x[2 * i + 1]));
  return _mm512_add_ps(_mm512_permutex2var_ps(y[0], l4lo, y[1]), _mm512_permutex2var_ps(y[0], l4hi, y[1]));
}

template <int NV>
void sddmm_tile_avx(const int64_t* ptr, const int32_t* idx, int64_t R, const float* Gt, const float* Xt, float* gv) {
  constexpr int TB = NV * 16;
  for (int64_t r = 0; r < R; ++r) {
    __m512 g[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) g[v] = _mm512_loadu_ps(Gt + r * TB + 16 * v);
    const int64_t e = ptr[r + 1];
    for (int64_t j = ptr[r]; j < e; j += 16) {
      // 16 dot products <g, Xt[idx[j + u]]> (zero past the row's end), one batched horizontal reduction
      const int64_t cnt = std::min<int64_t>(16, e - j);
      __m512 s[16];
      if (cnt == 16) {
#pragma GCC unroll 16
        for (int u = 0; u < 16; ++u) {
          const float* xr = Xt + static_cast<int64_t>(idx[j + u]) * TB;
          s[u] = _mm512_mul_ps(g[0], _mm512_load_ps(xr));
#pragma GCC unroll 8
          for (int v = 1; v < NV; ++v) s[u] = _mm512_fmadd_ps(g[v], _mm512_load_ps(xr + 16 * v), s[u]);
        }
      } else {
#pragma GCC unroll 16
        for (int u = 0; u < 16; ++u) {
          if (u < cnt) {
            const float* xr = Xt + static_cast<int64_t>(idx[j + u]) * TB;
            s[u] = _mm512_mul_ps(g[0], _mm512_load_ps(xr));
#pragma GCC unroll 8
            for (int v = 1; v < NV; ++v) s[u] = _mm512_fmadd_ps(g[v], _mm512_load_ps(xr + 16 * v), s[u]);
          } else {
            s[u] = _mm512_setzero_ps();
          }
        }
      }
      const __mmask16 m = static_cast<__mmask16>((1u << cnt) - 1u);
      const __m512 acc = _mm512_maskz_loadu_ps(m, gv + j);
      _mm512_mask_storeu_ps(gv + j, m, _mm512_add_ps(acc, reduce16(s)));
    }
  }
}
#endif

template <typename T, int TB>
void spmm_tile(const int64_t* ptr, const int32_t* idx, const T* val, const T* bias, int64_t R, const T* Xt, T* Yt) {
#if RECON_SPARSE_AVX512
  if constexpr (std::is_same_v<T, float>) return spmm_tile_avx<TB / 16, kUnroll>(ptr, idx, val, bias, R, Xt, Yt);
#endif
  spmm_tile_generic<T, TB>(ptr, idx, val, bias, R, Xt, Yt);
}

template <typename T, int TB>
void sddmm_tile(const int64_t* ptr, const int32_t* idx, int64_t R, const T* Gt, const T* Xt, T* gv) {
#if RECON_SPARSE_AVX512
  if constexpr (std::is_same_v<T, float>) return sddmm_tile_avx<TB / 16>(ptr, idx, R, Gt, Xt, gv);
#endif
  sddmm_tile_generic<T, TB>(ptr, idx, R, Gt, Xt, gv);
}

// Zero-initialised scratch buffer aligned to a cache line, so that the tile rows (multiples of 64 bytes)
// never straddle two lines.
template <typename T>
class Scratch {
 public:
  explicit Scratch(size_t n) : n_(n), data_(n ? static_cast<T*>(std::aligned_alloc(64, round_up(n))) : nullptr) {
    TORCH_CHECK(n == 0 || data_ != nullptr, "sparse_linear: out of memory");
    fill_zero();
  }
  ~Scratch() { std::free(data_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  T* data() { return data_; }
  void fill_zero() {
    if (n_) std::memset(data_, 0, n_ * sizeof(T));
  }

 private:
  static size_t round_up(size_t n) { return (n * sizeof(T) + 63) / 64 * 64; }
  size_t n_;
  T* data_;
};

int threads_for(int64_t B, int tile) {
  const int64_t ntiles = (B + tile - 1) / tile;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), ntiles)));
}

void check_structure(const torch::Tensor& ptr, const torch::Tensor& idx, int64_t rows) {
  TORCH_CHECK(ptr.dtype() == torch::kInt64 && ptr.is_contiguous() && ptr.dim() == 1 && ptr.size(0) == rows + 1,
              "sparse_linear: row pointer must be contiguous int64 of length rows+1");
  TORCH_CHECK(idx.dtype() == torch::kInt32 && idx.is_contiguous() && idx.dim() == 1,
              "sparse_linear: column indices must be contiguous int32");
}

// Output rows are produced kRowBlock at a time into a small buffer and transposed straight into the
// row-major result, so that only the input tile (not a full output tile) has to stay in L1.
constexpr int64_t kRowBlock = 16;

// dst[b, r] (leading dim ldd) = sum_j val[j] * Xt[idx[j], b] (+ bias[r]) for the R CSR rows, b < rows.
template <typename T, int TB>
void spmm_rows_to_output(const int64_t* ptr, const int32_t* idx, const T* val, const T* bias, int64_t R,
                         const T* Xt, T* blk, T* dst, int64_t ldd, int64_t rows) {
  for (int64_t r0 = 0; r0 < R; r0 += kRowBlock) {
    const int64_t nr = std::min(kRowBlock, R - r0);
    spmm_tile<T, TB>(ptr + r0, idx, val, bias ? bias + r0 : nullptr, nr, Xt, blk);
    transpose(blk, TB, dst + r0, ldd, nr, rows);
  }
}

template <typename T, int TB>
void forward_impl(const T* x, const int64_t* ptr, const int32_t* idx, const T* val, const T* bias, T* y, int64_t B,
                  int64_t in, int64_t out) {
  const int64_t ntiles = (B + TB - 1) / TB;
#pragma omp parallel num_threads(threads_for(B, TB))
  {
    Scratch<T> Xt(static_cast<size_t>(in) * TB), Yblk(static_cast<size_t>(kRowBlock) * TB);
#pragma omp for schedule(static)
    for (int64_t tile = 0; tile < ntiles; ++tile) {
      const int64_t b0 = tile * TB, rows = std::min<int64_t>(TB, B - b0);
      if (rows < TB) Xt.fill_zero();
      transpose(x + b0 * in, in, Xt.data(), TB, rows, in);
      spmm_rows_to_output<T, TB>(ptr, idx, val, bias, out, Xt.data(), Yblk.data(), y + b0 * out, out, rows);
    }
  }
}

template <typename T, int TB>
void backward_impl(const T* x, const T* gy, const int64_t* ptr, const int32_t* idx, const int64_t* tptr,
                   const int32_t* tidx, const T* tval, T* gx, T* gv_partial, int64_t nnz, int64_t B, int64_t in,
                   int64_t out, int nthreads) {
  const int64_t ntiles = (B + TB - 1) / TB;
#pragma omp parallel num_threads(nthreads)
  {
    const int tid = omp_get_thread_num();
    Scratch<T> Gt(static_cast<size_t>(out) * TB);
    Scratch<T> Xt(gv_partial ? static_cast<size_t>(in) * TB : 0);
    Scratch<T> Gxt(gx ? static_cast<size_t>(kRowBlock) * TB : 0);
    T* gv = gv_partial ? gv_partial + static_cast<int64_t>(tid) * nnz : nullptr;
#pragma omp for schedule(static)
    for (int64_t tile = 0; tile < ntiles; ++tile) {
      const int64_t b0 = tile * TB, rows = std::min<int64_t>(TB, B - b0);
      if (rows < TB) {  // padding columns must be zero: the weight gradient sums over all TB columns
        Gt.fill_zero();
        Xt.fill_zero();
      }
      transpose(gy + b0 * out, out, Gt.data(), TB, rows, out);
      if (gx) spmm_rows_to_output<T, TB>(tptr, tidx, tval, nullptr, in, Gt.data(), Gxt.data(), gx + b0 * in, in, rows);
      if (gv) {
        transpose(x + b0 * in, in, Xt.data(), TB, rows, in);
        sddmm_tile<T, TB>(ptr, idx, out, Gt.data(), Xt.data(), gv);
      }
    }
  }
}

// Forward: 64-wide tiles while the input tile fits L1, else 32. Backward: always 64, because the weight
// gradient's horizontal reductions are amortised over the tile width (measured faster at 64-256 features).
int choose_tile(int64_t tile, int64_t in, int64_t out, bool backward) {
  if (tile == 0) {
    if (backward) return kLargeTile;
    return std::max(in, out) <= kLargeTileMaxFeatures ? kLargeTile : kSmallTile;
  }
  TORCH_CHECK(tile == kSmallTile || tile == kLargeTile, "sparse_linear: tile must be 0 (auto), 32 or 64");
  return static_cast<int>(tile);
}

}  // namespace

// y [B, out] = x [B, in] W^T + bias, W given by CSR (ptr [out+1], idx [nnz], val [nnz]).
torch::Tensor sparse_linear_forward(const torch::Tensor& x, const torch::Tensor& ptr, const torch::Tensor& idx,
                                    const torch::Tensor& val, const c10::optional<torch::Tensor>& bias, int64_t out,
                                    int64_t tile) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.device().is_cpu(), "sparse_linear: x must be contiguous 2-D CPU");
  TORCH_CHECK(val.dtype() == x.dtype() && val.is_contiguous(), "sparse_linear: values dtype must match x");
  check_structure(ptr, idx, out);
  const int64_t B = x.size(0), in = x.size(1);
  auto y = torch::empty({B, out}, x.options());
  if (B == 0 || out == 0) return y;
  const bool has_bias = bias.has_value() && bias->defined();
  torch::Tensor b;
  if (has_bias) {
    b = bias->contiguous();
    TORCH_CHECK(b.dtype() == x.dtype() && b.numel() == out, "sparse_linear: bad bias");
  }
  const int tb = choose_tile(tile, in, out, false);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparse_linear_forward", [&] {
    auto run = tb == kLargeTile ? forward_impl<scalar_t, kLargeTile> : forward_impl<scalar_t, kSmallTile>;
    run(x.data_ptr<scalar_t>(), ptr.data_ptr<int64_t>(), idx.data_ptr<int32_t>(), val.data_ptr<scalar_t>(),
        has_bias ? b.data_ptr<scalar_t>() : nullptr, y.data_ptr<scalar_t>(), B, in, out);
  });
  return y;
}

// Returns {grad_x or undefined, grad_values or undefined}. (tptr, tidx, tperm) is the transposed (CSC) structure:
// W^T row k holds W's non-zeros of column k, tperm maps them to positions in val.
std::vector<torch::Tensor> sparse_linear_backward(const torch::Tensor& x, const torch::Tensor& gy,
                                                  const torch::Tensor& ptr, const torch::Tensor& idx,
                                                  const torch::Tensor& val, const torch::Tensor& tptr,
                                                  const torch::Tensor& tidx, const torch::Tensor& tperm,
                                                  bool need_gx, bool need_gv, int64_t tile) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.device().is_cpu(), "sparse_linear: x must be contiguous 2-D CPU");
  TORCH_CHECK(gy.dim() == 2 && gy.is_contiguous() && gy.dtype() == x.dtype() && gy.size(0) == x.size(0),
              "sparse_linear: bad grad_output");
  const int64_t B = x.size(0), in = x.size(1), out = gy.size(1), nnz = val.numel();
  check_structure(ptr, idx, out);
  check_structure(tptr, tidx, in);
  torch::Tensor gx, gv;
  if (need_gx) gx = torch::empty({B, in}, x.options());
  if (!(need_gx || need_gv) || B == 0) {
    if (need_gv) gv = torch::zeros({nnz}, val.options());
    return {gx, gv};
  }
  const int tb = choose_tile(tile, in, out, true);
  const int nthreads = threads_for(B, tb);
  torch::Tensor gvp;
  if (need_gv) gvp = torch::zeros({nthreads, nnz}, val.options());
  const torch::Tensor tval = val.index_select(0, tperm).contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparse_linear_backward", [&] {
    auto run = tb == kLargeTile ? backward_impl<scalar_t, kLargeTile> : backward_impl<scalar_t, kSmallTile>;
    run(x.data_ptr<scalar_t>(), gy.data_ptr<scalar_t>(), ptr.data_ptr<int64_t>(), idx.data_ptr<int32_t>(),
        tptr.data_ptr<int64_t>(), tidx.data_ptr<int32_t>(), tval.data_ptr<scalar_t>(),
        need_gx ? gx.data_ptr<scalar_t>() : nullptr, need_gv ? gvp.data_ptr<scalar_t>() : nullptr, nnz, B, in, out,
        nthreads);
  });
  if (need_gv) gv = nthreads == 1 ? gvp[0] : gvp.sum(0);
  return {gx, gv};
}

bool built_with_avx512() { return RECON_SPARSE_AVX512 != 0; }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &sparse_linear_forward, "sparse linear forward (CSR weights)", py::arg("x"), py::arg("ptr"),
        py::arg("idx"), py::arg("val"), py::arg("bias"), py::arg("out"), py::arg("tile") = 0);
  m.def("backward", &sparse_linear_backward, "sparse linear backward: grad x and grad of the non-zero values",
        py::arg("x"), py::arg("gy"), py::arg("ptr"), py::arg("idx"), py::arg("val"), py::arg("tptr"),
        py::arg("tidx"), py::arg("tperm"), py::arg("need_gx"), py::arg("need_gv"), py::arg("tile") = 0);
  m.def("built_with_avx512", &built_with_avx512, "whether the float32 path uses AVX-512 intrinsics");
}
