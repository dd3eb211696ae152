// Shared pieces of the CPU rasteriser: constants, the per-pixel alpha rule (with a vectorisable exp) and
// the per-Gaussian record with its conservative extent (which pixels of a tile can reach alpha >= 1/255).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "lanes.h"

namespace recon_raster {

using namespace recon_lanes;

constexpr float kAlphaThreshold = 1.0f / 255.0f;
constexpr float kTransmittanceMin = 1e-4f;

// a * b + c: one fused instruction where the build targets FMA (explicit, so the forward and the backward,
// which share this code, still round identically; the build disables implicit contraction), else two.
inline float madd(float a, float b, float c) {
#ifdef __FMA__
    return std::fma(a, b, c);
#else
    return a * b + c;
#endif
}
inline F8 madd(F8 a, F8 b, F8 c) {
#ifdef __FMA__
    return (F8)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
    return a * b + c;
#endif
}
inline F8 madd(F8 a, F8 b, float c) { return madd(a, b, bc<F8>(c)); }

inline int32_t to_int(float x) { return static_cast<int32_t>(x); }
inline I8 to_int(F8 x) { return __builtin_convertvector(x, I8); }
inline float from_bits(int32_t b) {
    float f;
    std::memcpy(&f, &b, sizeof(float));
    return f;
}
inline F8 from_bits(I8 b) { return (F8)b; }

// exp(x) for float (or eight), vectorisable (no libm call): Cody-Waite reduction x = n ln2 + r and a degree-6
// polynomial (Cephes expf coefficients), about 1 ulp. Inputs are clamped to the normal range.
template <class T>
inline T exp_approx(T x) {
    x = vmin(vmax(x, bc<T>(-87.3f)), bc<T>(88.3f));
    const T t = x * 1.44269504088896341f + 0.5f;
    const T fn = vfloor(t);  // one rounding instruction
    const auto n = to_int(fn);
    T r = x - fn * 0.693359375f;
    r = r - fn * (-2.12194440e-4f);
    const T r2 = r * r;
    T y = bc<T>(1.9875691500e-4f);
    y = madd(y, r, 1.3981999507e-3f);
    y = madd(y, r, 8.3334519073e-3f);
    y = madd(y, r, 4.1665795894e-2f);
    y = madd(y, r, 1.6666665459e-1f);
    y = madd(y, r, 5.0000001201e-1f);
    y = madd(y, r2, r) + 1.0f;
    return y * from_bits((n + 127) << 23);
}

// alpha = min(alpha_max, op * exp(-sigma)), sigma = 0.5 (a dx^2 + c dy^2) + b dx dy; same operation order as the
// PyTorch reference, with the row's c dy^2 (= (c dy) dy) computed once per row by the caller. The forward and
// the backward call this one function (built without fast-math / FMA contraction), so they agree bit for bit
// on which Gaussians count at each pixel; T = float (one lane) or F8 (eight, the same bits).
template <class T>
inline T eval_alpha_row(float a, float b, float cdy2, float op, T dx, float dy, float alpha_max, T& sigma, T& vis) {
    sigma = 0.5f * (a * dx * dx + cdy2) + b * dx * dy;
    vis = exp_approx<T>(-sigma);
    return vmin(bc<T>(alpha_max), op * vis);
}

// Is any of v[0..n) > 0? For one 8-lane block: a compare and a mask move, instead of the OR-reduction the
// vectoriser builds (the tile loops skip blocks where no lane composites).
inline bool any_positive(const float* v, int n) {
#ifdef __AVX__
    if (n == 8) return _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(v), _mm256_setzero_ps(), _CMP_GT_OQ)) != 0;
#endif
    bool any = false;
    for (int i = 0; i < n; ++i) any |= v[i] > 0.0f;
    return any;
}

// out[j] = sum of row j of the row-major 8x8 block m, each added left to right from 0 as a scalar loop would
// (the same bits): with AVX, one transpose and eight vector adds instead of 64 dependent scalar adds.
inline void row_sums_8x8(const float* m, float* out) {
#ifdef __AVX__
    __m256 r[8];
    for (int j = 0; j < 8; ++j) r[j] = _mm256_loadu_ps(m + 8 * j);
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    // column c of m (lane j = m[8j + c])
    const __m256 c0 = _mm256_permute2f128_ps(u0, u4, 0x20), c1 = _mm256_permute2f128_ps(u1, u5, 0x20);
    const __m256 c2 = _mm256_permute2f128_ps(u2, u6, 0x20), c3 = _mm256_permute2f128_ps(u3, u7, 0x20);
    const __m256 c4 = _mm256_permute2f128_ps(u0, u4, 0x31), c5 = _mm256_permute2f128_ps(u1, u5, 0x31);
    const __m256 c6 = _mm256_permute2f128_ps(u2, u6, 0x31), c7 = _mm256_permute2f128_ps(u3, u7, 0x31);
    __m256 s = _mm256_setzero_ps();
    s = _mm256_add_ps(s, c0);
    s = _mm256_add_ps(s, c1);
    s = _mm256_add_ps(s, c2);
    s = _mm256_add_ps(s, c3);
    s = _mm256_add_ps(s, c4);
    s = _mm256_add_ps(s, c5);
    s = _mm256_add_ps(s, c6);
    s = _mm256_add_ps(s, c7);
    _mm256_storeu_ps(out, s);
#else
    for (int j = 0; j < 8; ++j) {
        float acc = 0.0f;
        for (int c = 0; c < 8; ++c) acc += m[8 * j + c];
        out[j] = acc;
    }
#endif
}

// Per-Gaussian record the tile loops read (computed once per call, not once per tile): the 2D mean, conic and
// opacity packed in 32 bytes, and the half extents ex, ey (pixels) of the region
// 0.5 [dx dy] [[a b][b c]] [dx dy]^T <= log(255 op) (+ slack) outside which alpha < 1/255. Pixels outside
// it are skipped; the slack on the threshold and a small margin on each side of the span (pixel_span) keep it far
// above float rounding, so skipping them never changes the result.
struct alignas(32) Splat {
    float mx, my, a, b, c, op;
    float ex, ey;  // < 0: opacity below 1/255 (never drawn); +inf: no usable bound (whole tile)
};

inline Splat make_splat(float mx, float my, float a, float b, float c, float op) {
    Splat s{mx, my, a, b, c, op, -1.0f, -1.0f};
    if (!(op >= kAlphaThreshold)) return s;  // alpha <= opacity where sigma >= 0
    double thr = std::log(255.0 * static_cast<double>(op));
    if (!(thr >= 0.0)) thr = 0.0;
    thr += 0.01 + 0.001 * thr;
    const double t2 = 2.0 * thr;
    const double da = a, db = b, dc = c;
    const double det = da * dc - db * db;
    const bool bounded = da > 0.0 && dc > 0.0 && det > 0.0 && std::isfinite(det) && std::isfinite(t2) &&
                         std::fabs(mx) < 1e6f && std::fabs(my) < 1e6f;
    s.ex = s.ey = INFINITY;
    if (bounded) {
        const double ex = std::sqrt(t2 * dc / det), ey = std::sqrt(t2 * da / det);
        if (ex < 1e6) s.ex = static_cast<float>(ex);
        if (ey < 1e6) s.ey = static_cast<float>(ey);
    }
    return s;
}

// Pixels [lo, hi] (inclusive) of [p0, p1) whose centre p + 0.5 may lie within e of m; false if none. In double,
// with a margin of 0.01 px (not a whole pixel each side: that cost ~2 extra rows per Gaussian and tile): e comes
// from the threshold with slack, and 0.01 px covers the rounding of the lanes' float dx at coordinates up to 1e5.
inline bool pixel_span(float m, float e, int p0, int p1, int& lo, int& hi) {
    if (!(e < INFINITY)) {
        lo = p0;
        hi = p1 - 1;
        return true;
    }
    const double dm = m, de = static_cast<double>(e) + 0.01;
    const double flo = std::ceil(dm - de - 0.5);
    const double fhi = std::floor(dm + de - 0.5);
    if (flo > static_cast<double>(p1 - 1) || fhi < static_cast<double>(p0)) return false;
    lo = flo < static_cast<double>(p0) ? p0 : static_cast<int>(flo);
    hi = fhi > static_cast<double>(p1 - 1) ? p1 - 1 : static_cast<int>(fhi);
    return true;
}

}  // namespace recon_raster
