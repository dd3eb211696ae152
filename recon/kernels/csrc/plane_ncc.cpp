// NCC of reference windows against source images, each window warped through its own plane: the scoring step
// of PatchMatch stereo (priors.stereo_refine).
//
// Pixel i (integer column/row p_i) has a plane given as g_i = K_r^-T n / d (n . X = d in the reference camera
// frame): a window sample at pixel-centre coordinates q = p_i + 0.5 + o lies at depth scale 1 / (g_i . q) along
// its ray, and lands in source s at the homogeneous point A_s q + b_s (g_i . q), with A_s = K_s R K_r^-1 and
// b_s = K_s t (the reference-to-source motion R, t; pixel centres at +0.5 in both). The reference is read at
// the window's pixels (edges replicated, as the sweep's box filter); the source bilinearly. A window whose plane
// faces away (g . q <= 0), or any of whose samples lands behind the source or outside its pixel centres, scores
// -1 for that source, as the sweep does. Per pixel the best NCC over the sources is returned:
//   ncc = cov(r, s) / sqrt(var(r) var(s) + 1e-8) over the window's samples (population statistics).
// Work is split over pixels (OpenMP); every pixel's result depends on its inputs only.
#include <torch/extension.h>

#include <cmath>
#include <cstdint>
#include <vector>

namespace {

void check(const torch::Tensor& t, const char* name, torch::ScalarType type) {
    TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == type && t.is_contiguous(), name,
                " must be a contiguous CPU tensor of the expected dtype");
}

}  // namespace

// ref [H, W] f32; sources: list of [Hs, Ws] f32; A [S, 3, 3] f64; b [S, 3] f64; pixels [N, 2] int64 (x, y);
// g [N, 3] f64; window (odd), stride >= 1 -> [N] f32
torch::Tensor plane_ncc(torch::Tensor ref, std::vector<torch::Tensor> sources, torch::Tensor A, torch::Tensor b,
                        torch::Tensor pixels, torch::Tensor g, int64_t window, int64_t stride) {
    check(ref, "ref", torch::kFloat32);
    check(A, "A", torch::kFloat64);
    check(b, "b", torch::kFloat64);
    check(pixels, "pixels", torch::kInt64);
    check(g, "g", torch::kFloat64);
    const int64_t S = static_cast<int64_t>(sources.size());
    TORCH_CHECK(ref.dim() == 2, "ref must be [H, W]");
    TORCH_CHECK(A.dim() == 3 && A.size(0) == S && A.size(1) == 3 && A.size(2) == 3, "A must be [S, 3, 3]");
    TORCH_CHECK(b.dim() == 2 && b.size(0) == S && b.size(1) == 3, "b must be [S, 3]");
    TORCH_CHECK(pixels.dim() == 2 && pixels.size(1) == 2, "pixels must be [N, 2]");
    TORCH_CHECK(g.dim() == 2 && g.size(0) == pixels.size(0) && g.size(1) == 3, "g must be [N, 3]");
    TORCH_CHECK(window % 2 == 1 && window >= 1 && stride >= 1, "window must be odd and stride >= 1");
    for (const auto& s : sources) {
        check(s, "each source", torch::kFloat32);
        TORCH_CHECK(s.dim() == 2, "each source must be [Hs, Ws]");
    }
    const int H = static_cast<int>(ref.size(0)), W = static_cast<int>(ref.size(1));
    const int64_t N = pixels.size(0);
    const int r = static_cast<int>(window / 2), st = static_cast<int>(stride);
    std::vector<int> offs;
    for (int o = -r; o <= r; o += st) offs.push_back(o);
    const int K = static_cast<int>(offs.size());
    const double M = double(K) * K;
    const float* R = ref.data_ptr<float>();
    const double* Ap = A.data_ptr<double>();
    const double* bp = b.data_ptr<double>();
    const int64_t* P = pixels.data_ptr<int64_t>();
    const double* G = g.data_ptr<double>();
    std::vector<const float*> src(S);
    std::vector<int> sh(S), sw(S);
    for (int64_t s = 0; s < S; ++s) {
        src[s] = sources[s].data_ptr<float>();
        sh[s] = static_cast<int>(sources[s].size(0));
        sw[s] = static_cast<int>(sources[s].size(1));
    }
    auto out = torch::full({N}, -1.0f, torch::kFloat32);
    float* O = out.data_ptr<float>();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N; ++i) {
        const int px = static_cast<int>(P[2 * i]), py = static_cast<int>(P[2 * i + 1]);
        const double g0 = G[3 * i], g1 = G[3 * i + 1], g2 = G[3 * i + 2];
        // the reference window's statistics (the same for every source)
        double sr = 0, srr = 0;
        bool facing = true;
        for (int a = 0; a < K && facing; ++a) {
            const int y = std::min(std::max(py + offs[a], 0), H - 1);
            const double qy = py + offs[a] + 0.5;
            for (int c = 0; c < K; ++c) {
                const int x = std::min(std::max(px + offs[c], 0), W - 1);
                const double v = R[int64_t(y) * W + x];
                sr += v;
                srr += v * v;
                const double qx = px + offs[c] + 0.5;
                if (g0 * qx + g1 * qy + g2 <= 1e-12) facing = false;
            }
        }
        if (!facing) continue;
        const double mr = sr / M, var_r = std::max(srr / M - mr * mr, 0.0);
        float best = -1.0f;
        for (int64_t s = 0; s < S; ++s) {
            const double* As = Ap + 9 * s;
            const double* bs = bp + 3 * s;
            const float* I = src[s];
            const int h = sh[s], w = sw[s];
            double ss = 0, sss = 0, srs = 0;
            bool ok = true;
            for (int a = 0; a < K && ok; ++a) {
                const double qy = py + offs[a] + 0.5;
                const int y = std::min(std::max(py + offs[a], 0), H - 1);
                for (int c = 0; c < K; ++c) {
                    const double qx = px + offs[c] + 0.5;
                    const double inv = g0 * qx + g1 * qy + g2;
                    const double hx = As[0] * qx + As[1] * qy + As[2] + bs[0] * inv;
                    const double hy = As[3] * qx + As[4] * qy + As[5] + bs[1] * inv;
                    const double hz = As[6] * qx + As[7] * qy + As[8] + bs[2] * inv;
                    if (hz <= 1e-12) {
                        ok = false;
                        break;
                    }
                    const double u = hx / hz - 0.5, v = hy / hz - 0.5;  // pixel index space
                    if (!(u >= 0.0 && v >= 0.0 && u <= w - 1 && v <= h - 1)) {
                        ok = false;
                        break;
                    }
                    const int x0 = static_cast<int>(u), y0 = static_cast<int>(v);
                    const int x1 = std::min(x0 + 1, w - 1), y1 = std::min(y0 + 1, h - 1);
                    const double fx = u - x0, fy = v - y0;
                    const double top = I[int64_t(y0) * w + x0] * (1 - fx) + I[int64_t(y0) * w + x1] * fx;
                    const double bot = I[int64_t(y1) * w + x0] * (1 - fx) + I[int64_t(y1) * w + x1] * fx;
                    const double sv = top * (1 - fy) + bot * fy;
                    const int x = std::min(std::max(px + offs[c], 0), W - 1);
                    const double rv = R[int64_t(y) * W + x];
                    ss += sv;
                    sss += sv * sv;
                    srs += rv * sv;
                }
            }
            if (!ok) continue;
            const double ms = ss / M, var_s = std::max(sss / M - ms * ms, 0.0);
            const double cov = srs / M - mr * ms;
            const float ncc = static_cast<float>(cov / std::sqrt(var_r * var_s + 1e-8));
            if (ncc > best) best = ncc;
        }
        O[i] = best;
    }
    return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("plane_ncc", &plane_ncc, "best NCC over the sources of windows warped through per-pixel planes");
}
