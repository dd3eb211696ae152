// Shared pieces of the CPU rasteriser: constants, the per-pixel alpha rule (with a vectorisable exp) and
// the per-Gaussian record with its conservative extent (which pixels of a tile can reach alpha >= 1/255).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace recon_raster {

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

// exp(x) for float, vectorisable (no libm call): Cody-Waite reduction x = n ln2 + r and a degree-6
// polynomial (Cephes expf coefficients), about 1 ulp. Inputs are clamped to the normal range.
inline float exp_approx(float x) {
    x = std::min(std::max(x, -87.3f), 88.3f);
    const float t = x * 1.44269504088896341f + 0.5f;
    int32_t n = static_cast<int32_t>(t);
    n -= (static_cast<float>(n) > t) ? 1 : 0;  // floor
    const float fn = static_cast<float>(n);
    float r = x - fn * 0.693359375f;
    r = r - fn * (-2.12194440e-4f);
    const float r2 = r * r;
    float y = 1.9875691500e-4f;
    y = madd(y, r, 1.3981999507e-3f);
    y = madd(y, r, 8.3334519073e-3f);
    y = madd(y, r, 4.1665795894e-2f);
    y = madd(y, r, 1.6666665459e-1f);
    y = madd(y, r, 5.0000001201e-1f);
    y = madd(y, r2, r) + 1.0f;
    const int32_t bits = (n + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof(float));
    return y * scale;
}

// alpha = min(alpha_max, op * exp(-sigma)); same operation order as the PyTorch reference. The forward and
// the backward call this one function (built without fast-math / FMA contraction), so they agree bit for bit
// on which Gaussians count at each pixel.
inline float eval_alpha_fast(float a, float b, float c, float op, float dx, float dy, float alpha_max, float& sigma,
                             float& vis) {
    sigma = 0.5f * (a * dx * dx + c * dy * dy) + b * dx * dy;
    vis = exp_approx(-sigma);
    return std::min(alpha_max, op * vis);
}

// Per-Gaussian record the tile loops read (computed once per call, not once per tile): the 2D mean, conic and
// opacity packed in 32 bytes, and the half extents ex, ey (pixels) of the region
// 0.5 [dx dy] [[a b][b c]] [dx dy]^T <= log(255 op) (+ slack) outside which alpha < 1/255. Pixels outside
// it are skipped; the slack on the threshold and one extra pixel on each side of the span keep the margin far
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

// Pixels [lo, hi] (inclusive) of [p0, p1) whose centre p + 0.5 may lie within e of m; false if none.
inline bool pixel_span(float m, float e, int p0, int p1, int& lo, int& hi) {
    if (!(e < INFINITY)) {
        lo = p0;
        hi = p1 - 1;
        return true;
    }
    const float flo = std::ceil(m - e - 0.5f) - 1.0f;
    const float fhi = std::floor(m + e - 0.5f) + 1.0f;
    if (flo > static_cast<float>(p1 - 1) || fhi < static_cast<float>(p0)) return false;
    lo = flo < static_cast<float>(p0) ? p0 : static_cast<int>(flo);
    hi = fhi > static_cast<float>(p1 - 1) ? p1 - 1 : static_cast<int>(fhi);
    return true;
}

}  // namespace recon_raster
