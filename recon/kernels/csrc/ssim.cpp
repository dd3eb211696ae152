// Mean SSIM of two stacks of single-channel images and its gradient w.r.t. the first, for the D-SSIM loss.
//
// Same rule as recon.metrics.ssim_map(padding="reflect"): an 11-tap (any odd length) separable Gaussian window
// over the half-sample symmetric padded images ("d c b a | a b c d"), population statistics, C1 = 0.01^2,
// C2 = 0.03^2, the SSIM map averaged over every pixel of every image. The PyTorch version builds about 40
// tensors and runs two depthwise convolutions forward and two backward through autograd; here one pass filters
// the five statistics (x, y, x^2, y^2, xy) and keeps the three per-pixel derivative maps the backward needs:
//   S = A1 A2 / (B1 B2),  A1 = 2 mx my + C1,  A2 = 2 (mxy - mx my) + C2,  B1 = mx^2 + my^2 + C1,
//   B2 = mxx - mx^2 + myy - my^2 + C2
//   dS/dmx = 2 (my (A2 - A1) / (B1 B2) - mx S (1/B1 - 1/B2)),  dS/dmxx = -S / B2,  dS/dmxy = 2 A1 / (B1 B2)
//   dL/dx = F'(g dS/dmx) + 2 x F'(g dS/dmxx) + y F'(g dS/dmxy), F' the adjoint of pad + filter.
// Work is split by image row (OpenMP); the mean is summed per row in double and the rows in order, so the
// result does not depend on the thread count.
#include <torch/extension.h>

#include <cstdint>
#include <vector>

namespace {

inline int reflect(int q, int n) { return q < 0 ? -q - 1 : (q >= n ? 2 * n - 1 - q : q); }

// out[j] = sum_t w[t] src[j + t], j in [0, n): a 1-D correlation over a row already padded by k - 1
inline void correlate_row(const float* src, const float* w, int k, int n, float* out) {
    for (int j = 0; j < n; ++j) out[j] = 0.0f;
    for (int t = 0; t < k; ++t) {
        const float wt = w[t];
        const float* s = src + t;
#pragma omp simd
        for (int j = 0; j < n; ++j) out[j] += wt * s[j];
    }
}

void check(const torch::Tensor& t, const char* name) {
    TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && t.is_contiguous(), name,
                " must be a contiguous float32 CPU tensor");
}

// x, y [M, H, W], taps [k] -> (mean SSIM (0-d), derivative maps [3, M, H, W]: dS/dmx, dS/dmxx, dS/dmxy)
std::vector<torch::Tensor> ssim_fwd(torch::Tensor x, torch::Tensor y, torch::Tensor taps, double c1, double c2) {
    check(x, "x");
    check(y, "y");
    check(taps, "taps");
    TORCH_CHECK(x.dim() == 3 && x.sizes() == y.sizes(), "x and y must be [M, H, W] of one shape");
    const int M = static_cast<int>(x.size(0)), H = static_cast<int>(x.size(1)), W = static_cast<int>(x.size(2));
    const int k = static_cast<int>(taps.numel()), r = k / 2;
    TORCH_CHECK(k % 2 == 1 && r <= H && r <= W, "the window must be odd and its radius at most the image size");
    const float* X = x.data_ptr<float>();
    const float* Y = y.data_ptr<float>();
    const float* w = taps.data_ptr<float>();
    const int64_t plane = int64_t(H) * W;
    // horizontally filtered statistics [5][M][H][W]
    std::vector<float> hs(size_t(5) * M * plane);
    const int64_t rows = int64_t(M) * H;
#pragma omp parallel
    {
        std::vector<float> pad(size_t(5) * (W + 2 * r));
#pragma omp for schedule(static)
        for (int64_t mi = 0; mi < rows; ++mi) {
            const float* xr = X + mi * W;
            const float* yr = Y + mi * W;
            float* px = pad.data();
            float* py = px + (W + 2 * r);
            float* pxx = py + (W + 2 * r);
            float* pyy = pxx + (W + 2 * r);
            float* pxy = pyy + (W + 2 * r);
            for (int j = 0; j < W + 2 * r; ++j) {
                const int s = reflect(j - r, W);
                const float a = xr[s], b = yr[s];
                px[j] = a;
                py[j] = b;
                pxx[j] = a * a;
                pyy[j] = b * b;
                pxy[j] = a * b;
            }
            for (int q = 0; q < 5; ++q)
                correlate_row(pad.data() + size_t(q) * (W + 2 * r), w, k, W, hs.data() + (q * rows + mi) * W);
        }
    }
    auto coef = torch::empty({3, M, H, W}, x.options());
    float* G = coef.data_ptr<float>();
    std::vector<double> row_sum(static_cast<size_t>(rows));
    const float C1 = static_cast<float>(c1), C2 = static_cast<float>(c2);
#pragma omp parallel
    {
        std::vector<float> acc(size_t(5) * W);
#pragma omp for schedule(static)
        for (int64_t mi = 0; mi < rows; ++mi) {
            const int64_t m = mi / H;
            const int i = static_cast<int>(mi % H);
            std::fill(acc.begin(), acc.end(), 0.0f);
            for (int t = 0; t < k; ++t) {
                const int64_t src = m * H + reflect(i + t - r, H);
                const float wt = w[t];
                for (int q = 0; q < 5; ++q) {
                    const float* s = hs.data() + (q * rows + src) * W;
                    float* a = acc.data() + size_t(q) * W;
#pragma omp simd
                    for (int j = 0; j < W; ++j) a[j] += wt * s[j];
                }
            }
            const float* mx = acc.data();
            const float* my = mx + W;
            const float* mxx = my + W;
            const float* myy = mxx + W;
            const float* mxy = myy + W;
            float* g0 = G + mi * W;
            float* g1 = g0 + rows * W;
            float* g2 = g1 + rows * W;
            double sum = 0.0;
#pragma omp simd reduction(+ : sum)
            for (int j = 0; j < W; ++j) {
                const float mxmy = mx[j] * my[j];
                const float mx2 = mx[j] * mx[j], my2 = my[j] * my[j];
                const float A1 = 2.0f * mxmy + C1;
                const float A2 = 2.0f * (mxy[j] - mxmy) + C2;
                const float B1 = mx2 + my2 + C1;
                const float B2 = (mxx[j] - mx2) + (myy[j] - my2) + C2;
                const float D = 1.0f / (B1 * B2);
                const float S = A1 * A2 * D;
                g0[j] = 2.0f * (my[j] * (A2 - A1) * D - mx[j] * S * (1.0f / B1 - 1.0f / B2));
                g1[j] = -S / B2;
                g2[j] = 2.0f * A1 * D;
                sum += static_cast<double>(S);
            }
            row_sum[mi] = sum;
        }
    }
    double total = 0.0;
    for (int64_t mi = 0; mi < rows; ++mi) total += row_sum[mi];
    auto mean = torch::full({}, static_cast<float>(total / static_cast<double>(rows * W)), x.options());
    return {mean, coef};
}

// gradient of mean SSIM w.r.t. x, times grad (the upstream gradient): [M, H, W]
torch::Tensor ssim_bwd(torch::Tensor x, torch::Tensor y, torch::Tensor taps, torch::Tensor coef, double grad) {
    check(x, "x");
    check(y, "y");
    check(taps, "taps");
    check(coef, "coef");
    const int M = static_cast<int>(x.size(0)), H = static_cast<int>(x.size(1)), W = static_cast<int>(x.size(2));
    const int k = static_cast<int>(taps.numel()), r = k / 2;
    TORCH_CHECK(coef.numel() == int64_t(3) * M * H * W, "coef must be [3, M, H, W]");
    const int64_t rows = int64_t(M) * H;
    const float* X = x.data_ptr<float>();
    const float* Y = y.data_ptr<float>();
    const float* w = taps.data_ptr<float>();
    const float* G = coef.data_ptr<float>();
    // flipped taps: the adjoint of a correlation is a correlation with the reversed window
    std::vector<float> wf(k);
    for (int t = 0; t < k; ++t) wf[t] = w[k - 1 - t];
    // vertical adjoint (filter, then fold the reflected rows back): V [3][M][H][W]
    std::vector<float> V(size_t(3) * rows * W);
#pragma omp parallel for schedule(static)
    for (int64_t mi = 0; mi < rows; ++mi) {
        const int64_t m = mi / H;
        const int i = static_cast<int>(mi % H);
        for (int c = 0; c < 3; ++c) {
            float* out = V.data() + (c * rows + mi) * W;
            std::fill(out, out + W, 0.0f);
            // output row i' of the forward reads padded row i' + t, which is row reflect(i' + t - r); gather the
            // (i', t) pairs that land on row i: i' = i - t + r, -i - 1 - t + r (top), 2H - 1 - i - t + r (bottom)
            for (int t = 0; t < k; ++t) {
                const int cand[3] = {i - t + r, -i - 1 - t + r, 2 * H - 1 - i - t + r};
                for (int u = 0; u < 3; ++u) {
                    const int ip = cand[u];
                    if (ip < 0 || ip >= H) continue;
                    if (u == 1 && i >= r) continue;      // top reflection only reaches the first r rows
                    if (u == 2 && i < H - r) continue;   // bottom reflection only the last r rows
                    const float* s = G + (c * rows + m * H + ip) * W;
                    const float wt = w[t];
#pragma omp simd
                    for (int j = 0; j < W; ++j) out[j] += wt * s[j];
                }
            }
        }
    }
    auto dx = torch::empty_like(x);
    float* DX = dx.data_ptr<float>();
    const float gs = static_cast<float>(grad / static_cast<double>(rows * W));
#pragma omp parallel
    {
        std::vector<float> gz(size_t(W + 4 * r));
        std::vector<float> full(size_t(3) * (W + 2 * r));
#pragma omp for schedule(static)
        for (int64_t mi = 0; mi < rows; ++mi) {
            for (int c = 0; c < 3; ++c) {
                // horizontal adjoint: full correlation with the flipped window (zero padding 2r), then fold
                const float* v = V.data() + (c * rows + mi) * W;
                std::fill(gz.begin(), gz.end(), 0.0f);
                std::copy(v, v + W, gz.begin() + 2 * r);
                correlate_row(gz.data(), wf.data(), k, W + 2 * r, full.data() + size_t(c) * (W + 2 * r));
            }
            const float* xr = X + mi * W;
            const float* yr = Y + mi * W;
            float* o = DX + mi * W;
            const float* a0 = full.data() + r;
            const float* a1 = a0 + (W + 2 * r);
            const float* a2 = a1 + (W + 2 * r);
#pragma omp simd
            for (int j = 0; j < W; ++j) o[j] = a0[j] + 2.0f * xr[j] * a1[j] + yr[j] * a2[j];
            // padded columns p < r hold column r - 1 - p, p >= r + W hold column 2W + r - 1 - p
            for (int p = 0; p < r; ++p) {
                const int j = r - 1 - p;
                const float* f = full.data() + p;
                o[j] += f[0] + 2.0f * xr[j] * f[W + 2 * r] + yr[j] * f[2 * (W + 2 * r)];
            }
            for (int p = r + W; p < W + 2 * r; ++p) {
                const int j = 2 * W + r - 1 - p;
                const float* f = full.data() + p;
                o[j] += f[0] + 2.0f * xr[j] * f[W + 2 * r] + yr[j] * f[2 * (W + 2 * r)];
            }
#pragma omp simd
            for (int j = 0; j < W; ++j) o[j] *= gs;
        }
    }
    return dx;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("ssim_fwd", &ssim_fwd, "mean SSIM (reflect padding) and the derivative maps for the backward");
    m.def("ssim_bwd", &ssim_bwd, "gradient of the mean SSIM w.r.t. the first image");
}
