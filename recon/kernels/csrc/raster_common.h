// Shared pieces of the CPU rasteriser: constants, the per-pixel alpha rule (with a vectorisable exp) and
// the conservative per-Gaussian row range (which rows of a tile can possibly reach alpha >= 1/255).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace recon_raster {

constexpr float kAlphaThreshold = 1.0f / 255.0f;
constexpr float kTransmittanceMin = 1e-4f;

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
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * r2 + r + 1.0f;
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

// The rows of the region 0.5 [dx dy] [[a b][b c]] [dx dy]^T <= thr, thr = log(255 op) (+ slack). Pixels in
// other rows have alpha < 1/255 with a margin far above float rounding (slack on thr and one extra row on
// each side), so skipping them never changes the result.
struct Ellipse {
    double mx, my, a, b, c, det, t2;
    bool full;  // not a positive-definite conic: fall back to the whole tile

    Ellipse(float mx_, float my_, float a_, float b_, float c_, float op) {
        mx = mx_;
        my = my_;
        a = a_;
        b = b_;
        c = c_;
        det = a * c - b * b;
        double thr = std::log(255.0 * static_cast<double>(op));
        if (!(thr >= 0.0)) thr = 0.0;
        thr += 0.01 + 0.001 * thr;
        t2 = 2.0 * thr;
        full = !(a > 0.0 && c > 0.0 && det > 0.0 && std::isfinite(det) && std::isfinite(mx) && std::isfinite(my) &&
                 std::isfinite(t2));
    }

    static int clampi(double v, int lo, int hi) {
        if (!(v >= lo)) return lo;  // also NaN
        if (v > hi) return hi;
        return static_cast<int>(v);
    }

    // rows [ylo, yhi] (inclusive) of the tile rows [y0, y1) that may be touched; empty if ylo > yhi.
    void rows(int y0, int y1, int& ylo, int& yhi) const {
        if (full) {
            ylo = y0;
            yhi = y1 - 1;
            return;
        }
        const double ey = std::sqrt(t2 * a / det);
        const double lo = std::ceil(my - ey - 0.5) - 1.0;
        const double hi = std::floor(my + ey - 0.5) + 1.0;
        if (lo > y1 - 1 || hi < y0) {
            ylo = y0;
            yhi = y0 - 1;
            return;
        }
        ylo = clampi(lo, y0, y1 - 1);
        yhi = clampi(hi, y0, y1 - 1);
    }
};

}  // namespace recon_raster
