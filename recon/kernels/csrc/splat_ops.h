// Tensor-level drivers (OpenMP over Gaussians) for projection, SH colour and tile binning.
// Included once, by rasterize.cpp (single translation unit keeps the build to one compile).
#pragma once

#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "projection.h"

namespace recon_ops {

inline void check_f32(const torch::Tensor& t, const char* name) {
    TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && t.is_contiguous(), name,
                " must be a contiguous float32 CPU tensor");
}

// ------------------------------------------------------------------------------------------------
// projection
// ------------------------------------------------------------------------------------------------
inline std::vector<torch::Tensor> project_fwd(const torch::Tensor& means, const torch::Tensor& quats,
                                              const torch::Tensor& scales, const torch::Tensor& opacities,
                                              const torch::Tensor& viewmats, const torch::Tensor& Ks, int64_t width,
                                              int64_t height, double eps2d, double near_plane, double far_plane,
                                              double radius_clip, bool calc_comp) {
    check_f32(means, "means");
    check_f32(quats, "quats");
    check_f32(scales, "scales");
    check_f32(opacities, "opacities");
    check_f32(viewmats, "viewmats");
    check_f32(Ks, "Ks");
    const int64_t N = means.size(0), C = viewmats.size(0);
    TORCH_CHECK(opacities.numel() == C * N, "opacities must be [C, N]");
    auto f = torch::TensorOptions().dtype(torch::kFloat32);
    auto i32 = torch::TensorOptions().dtype(torch::kInt32);
    // outputs are written in full by the loop (culled entries get zeros): no separate fill pass
    torch::Tensor means2d = torch::empty({C, N, 2}, f);
    torch::Tensor conics = torch::empty({C, N, 3}, f);
    torch::Tensor depths = torch::empty({C, N}, f);
    torch::Tensor radii = torch::empty({C, N, 2}, i32);
    torch::Tensor radii_max = torch::empty({C, N}, i32);
    torch::Tensor comps = calc_comp ? torch::empty({C, N}, f) : torch::empty({0}, f);
    {
        pybind11::gil_scoped_release nogil;
        const float* m = means.data_ptr<float>();
        const float* q = quats.data_ptr<float>();
        const float* s = scales.data_ptr<float>();
        const float* o = opacities.data_ptr<float>();
        float* m2 = means2d.data_ptr<float>();
        float* co = conics.data_ptr<float>();
        float* de = depths.data_ptr<float>();
        int32_t* ra = radii.data_ptr<int32_t>();
        int32_t* rm = radii_max.data_ptr<int32_t>();
        float* cp = calc_comp ? comps.data_ptr<float>() : nullptr;
        std::vector<recon_proj::Camera> cams(C);
        for (int64_t c = 0; c < C; ++c)
            cams[c] = recon_proj::make_camera(viewmats.data_ptr<float>() + 16 * c, Ks.data_ptr<float>() + 9 * c,
                                              width, height);
        // the state of eight Gaussians per step (F8 lanes, bitwise the arithmetic of one at a time), then each
        // lane's culling and outputs; the rest one by one
        const int64_t n8 = N / 8;
        auto cull = [&](int64_t i) {
            m2[2 * i] = m2[2 * i + 1] = 0.f;
            co[3 * i] = co[3 * i + 1] = co[3 * i + 2] = 0.f;
            de[i] = 0.f;
            ra[2 * i] = ra[2 * i + 1] = 0;
            if (cp) cp[i] = 0.f;
        };
#pragma omp parallel for schedule(dynamic, 64)
        for (int64_t job = 0; job < C * n8; ++job) {
            const int64_t c = job / n8, n0 = (job % n8) * 8;
            recon_proj::F8 mean[3], quat[4], scale[3];
            recon_lanes::load_lanes(m + 3 * n0, 3, 3, mean);
            recon_lanes::load_lanes(q + 4 * n0, 4, 4, quat);
            recon_lanes::load_lanes(s + 3 * n0, 3, 3, scale);
            recon_proj::ProjStateT<recon_proj::F8> st;
            const recon_proj::I8 ok = recon_proj::project_state<recon_proj::F8>(cams[c], mean, quat, scale, eps2d,
                                                                                  near_plane, far_plane, calc_comp, st);
            for (int l = 0; l < 8; ++l) {
                const int64_t i = c * N + n0 + l;
                if (!(ok[l] != 0 &&
                      recon_proj::project_finish(cams[c], recon_proj::core_of(st, l), o[i], width, height, eps2d,
                                                 radius_clip, calc_comp, m2 + 2 * i, co + 3 * i, de + i, ra + 2 * i,
                                                 cp ? cp + i : nullptr)))
                    cull(i);
                rm[i] = std::max(ra[2 * i], ra[2 * i + 1]);
            }
        }
        for (int64_t c = 0; c < C; ++c)
            for (int64_t n = n8 * 8; n < N; ++n) {
                const int64_t i = c * N + n;
                recon_proj::ProjState st;
                if (!recon_proj::project_one(cams[c], m + 3 * n, q + 4 * n, s + 3 * n, o[i], width, height, eps2d,
                                             near_plane, far_plane, radius_clip, calc_comp, m2 + 2 * i, co + 3 * i,
                                             de + i, ra + 2 * i, cp ? cp + i : nullptr, st))
                    cull(i);
                rm[i] = std::max(ra[2 * i], ra[2 * i + 1]);
            }
    }
    return {means2d, conics, depths, radii, comps, radii_max};
}

inline std::vector<torch::Tensor> project_bwd(const torch::Tensor& means, const torch::Tensor& quats,
                                              const torch::Tensor& scales, const torch::Tensor& opacities,
                                              const torch::Tensor& viewmats, const torch::Tensor& Ks, int64_t width,
                                              int64_t height, double eps2d, double near_plane, double far_plane,
                                              double radius_clip, bool calc_comp, const torch::Tensor& radii,
                                              const torch::Tensor& v_means2d, const torch::Tensor& v_conics,
                                              const torch::Tensor& v_depths, const torch::Tensor& v_comps) {
    check_f32(v_means2d, "v_means2d");
    check_f32(v_conics, "v_conics");
    check_f32(v_depths, "v_depths");
    const int64_t N = means.size(0), C = viewmats.size(0);
    auto f = torch::TensorOptions().dtype(torch::kFloat32);
    torch::Tensor v_means = torch::empty({N, 3}, f);
    torch::Tensor v_quats = torch::empty({N, 4}, f);
    torch::Tensor v_scales = torch::empty({N, 3}, f);
    const bool has_vcomp = calc_comp && v_comps.numel() == C * N;
    {
        pybind11::gil_scoped_release nogil;
        std::vector<recon_proj::Camera> cams(C);
        for (int64_t c = 0; c < C; ++c)
            cams[c] = recon_proj::make_camera(viewmats.data_ptr<float>() + 16 * c, Ks.data_ptr<float>() + 9 * c,
                                              width, height);
        const float* m = means.data_ptr<float>();
        const float* q = quats.data_ptr<float>();
        const float* s = scales.data_ptr<float>();
        const int32_t* ra = radii.data_ptr<int32_t>();
        const float* vm2 = v_means2d.data_ptr<float>();
        const float* vco = v_conics.data_ptr<float>();
        const float* vde = v_depths.data_ptr<float>();
        const float* vcp = has_vcomp ? v_comps.data_ptr<float>() : nullptr;
        float* gm = v_means.data_ptr<float>();
        float* gq = v_quats.data_ptr<float>();
        float* gs = v_scales.data_ptr<float>();
        // eight Gaussians per step (F8 lanes: the same arithmetic, bitwise, as one at a time), the rest one by one;
        // each Gaussian's gradient sums its cameras in order
        using recon_proj::F8;
        using recon_proj::I8;
        const int64_t n8 = N / 8;
#pragma omp parallel for schedule(dynamic, 64)
        for (int64_t blk = 0; blk < n8; ++blk) {
            const int64_t n0 = blk * 8;
            F8 mean[3], quat[4], scale[3];
            recon_lanes::load_lanes(m + 3 * n0, 3, 3, mean);
            recon_lanes::load_lanes(q + 4 * n0, 4, 4, quat);
            recon_lanes::load_lanes(s + 3 * n0, 3, 3, scale);
            F8 am[3] = {}, aq[4] = {}, as[3] = {};
            for (int64_t c = 0; c < C; ++c) {
                const int64_t i0 = c * N + n0;
                I8 visible;
                bool any = false;
                for (int l = 0; l < 8; ++l) {
                    visible[l] = (ra[2 * (i0 + l)] > 0 && ra[2 * (i0 + l) + 1] > 0) ? -1 : 0;
                    any |= visible[l] != 0;
                }
                if (!any) continue;
                F8 vmean2d[2], vconic[3], vdepth, vcomp = {};
                recon_lanes::load_lanes(vm2 + 2 * i0, 2, 2, vmean2d);
                recon_lanes::load_lanes(vco + 3 * i0, 3, 3, vconic);
                recon_lanes::load_lanes(vde + i0, 1, 1, &vdepth);
                if (vcp) recon_lanes::load_lanes(vcp + i0, 1, 1, &vcomp);
                // visible in the forward (radii > 0): only the intermediates are needed again, not the culling
                recon_proj::ProjStateT<F8> st;
                const I8 use = visible & recon_proj::project_state<F8>(cams[c], mean, quat, scale, eps2d, near_plane,
                                                                       far_plane, calc_comp, st);
                F8 gmc[3] = {}, gqc[4] = {}, gsc[3] = {};
                recon_proj::project_one_vjp<F8>(cams[c], scale, eps2d, calc_comp, st, vmean2d, vconic, vdepth, vcomp,
                                                gmc, gqc, gsc);
                for (int j = 0; j < 3; ++j) am[j] = use ? am[j] + gmc[j] : am[j];
                for (int j = 0; j < 4; ++j) aq[j] = use ? aq[j] + gqc[j] : aq[j];
                for (int j = 0; j < 3; ++j) as[j] = use ? as[j] + gsc[j] : as[j];
            }
            recon_lanes::store_lanes(am, 3, gm + 3 * n0, 3);
            recon_lanes::store_lanes(aq, 4, gq + 4 * n0, 4);
            recon_lanes::store_lanes(as, 3, gs + 3 * n0, 3);
        }
        for (int64_t n = n8 * 8; n < N; ++n) {
            for (int j = 0; j < 3; ++j) gm[3 * n + j] = gs[3 * n + j] = 0.f;
            for (int j = 0; j < 4; ++j) gq[4 * n + j] = 0.f;
            for (int64_t c = 0; c < C; ++c) {
                const int64_t i = c * N + n;
                if (ra[2 * i] <= 0 || ra[2 * i + 1] <= 0) continue;
                recon_proj::ProjState st;
                if (!recon_proj::project_state<float>(cams[c], m + 3 * n, q + 4 * n, s + 3 * n, eps2d, near_plane,
                                                      far_plane, calc_comp, st))
                    continue;
                recon_proj::project_one_vjp<float>(cams[c], s + 3 * n, eps2d, calc_comp, st, vm2 + 2 * i, vco + 3 * i,
                                                   vde[i], vcp ? vcp[i] : 0.f, gm + 3 * n, gq + 4 * n, gs + 3 * n);
            }
        }
    }
    return {v_means, v_quats, v_scales};
}

// ------------------------------------------------------------------------------------------------
// spherical harmonics colour: colors[c, n] = max(SH(coeffs[n], normalize(means[n] - campos[c])) + 0.5, 0)
// ------------------------------------------------------------------------------------------------
// One (camera, Gaussian), or eight as F8 lanes: colour out[3] from the coefficients k[3 j + ch] (j < nb).
template <class T>
inline void sh_color(int degree, int nb, const T* mean, const float* campos, const T* k, T* out) {
    const T d[3] = {mean[0] - campos[0], mean[1] - campos[1], mean[2] - campos[2]};
    const T len = recon_proj::vmax(recon_proj::vsqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]),
                                   recon_proj::bc<T>(1e-12f));
    T b[16];
    recon_proj::sh_basis<T>(degree, d[0] / len, d[1] / len, d[2] / len, b, nullptr);
    T acc[3] = {T{}, T{}, T{}};  // three independent chains, each summed over j in order
    for (int j = 0; j < nb; ++j)
        for (int ch = 0; ch < 3; ++ch) acc[ch] += b[j] * k[3 * j + ch];
    for (int ch = 0; ch < 3; ++ch) out[ch] = recon_proj::vmax(acc[ch] + 0.5f, T{});
}

// Its vector-Jacobian product where use is set: adds to vk[3 j + ch] (j < nb) and vmean[3].
template <class T>
inline void sh_color_vjp(int degree, int nb, const T* mean, const float* campos, const T* k, const T* vcol,
                         recon_proj::Mask<T> use, T* vk, T* vmean) {
    using recon_proj::sel;
    const T d[3] = {mean[0] - campos[0], mean[1] - campos[1], mean[2] - campos[2]};
    const T len = recon_proj::vmax(recon_proj::vsqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]),
                                   recon_proj::bc<T>(1e-12f));
    const T u[3] = {d[0] / len, d[1] / len, d[2] / len};
    T b[16], db[48];
    recon_proj::sh_basis<T>(degree, u[0], u[1], u[2], b, db);
    T g[3], acc[3] = {T{}, T{}, T{}};
    for (int j = 0; j < nb; ++j)
        for (int ch = 0; ch < 3; ++ch) acc[ch] += b[j] * k[3 * j + ch];
    // clamp_min(x + 0.5, 0) passes the gradient where x + 0.5 >= 0 (as torch)
    for (int ch = 0; ch < 3; ++ch) g[ch] = sel(acc[ch] + 0.5f >= 0.f, vcol[ch], T{});
    T vu[3] = {T{}, T{}, T{}};
    for (int j = 0; j < nb; ++j) {
        T vb = T{};
        for (int ch = 0; ch < 3; ++ch) {
            vk[3 * j + ch] = sel(use, vk[3 * j + ch] + b[j] * g[ch], vk[3 * j + ch]);
            vb += k[3 * j + ch] * g[ch];
        }
        for (int a = 0; a < 3; ++a) vu[a] += vb * db[3 * j + a];
    }
    // u = d / |d|: v_d = (v_u - u (u . v_u)) / |d|
    const T dot = vu[0] * u[0] + vu[1] * u[1] + vu[2] * u[2];
    for (int a = 0; a < 3; ++a) vmean[a] = sel(use, vmean[a] + (vu[a] - u[a] * dot) / len, vmean[a]);
}

// Eight Gaussians' means [3] and first nb * 3 coefficients as lanes.
inline void gather_sh_lanes(const float* m, const float* sh, int64_t K, int nb, int64_t n0, recon_proj::F8* mean,
                            recon_proj::F8* k) {
    recon_lanes::load_lanes(m + 3 * n0, 3, 3, mean);
    recon_lanes::load_lanes(sh + n0 * K * 3, K * 3, 3 * nb, k);
}

inline torch::Tensor sh_fwd(int64_t degree, const torch::Tensor& means, const torch::Tensor& coeffs,
                            const torch::Tensor& campos) {
    check_f32(means, "means");
    check_f32(coeffs, "coeffs");
    check_f32(campos, "campos");
    const int64_t N = means.size(0), C = campos.size(0), K = coeffs.size(1);
    const int nb = static_cast<int>((degree + 1) * (degree + 1));
    TORCH_CHECK(degree >= 0 && degree <= 3 && K >= nb && coeffs.size(2) == 3, "bad SH coefficients");
    torch::Tensor colors = torch::empty({C, N, 3}, torch::TensorOptions().dtype(torch::kFloat32));
    {
        pybind11::gil_scoped_release nogil;
        const float* m = means.data_ptr<float>();
        const float* sh = coeffs.data_ptr<float>();
        const float* cp = campos.data_ptr<float>();
        float* out = colors.data_ptr<float>();
        const int deg = static_cast<int>(degree);
        // eight Gaussians per step (F8 lanes, bitwise the arithmetic of one at a time), the rest one by one
        const int64_t n8 = N / 8;
#pragma omp parallel for schedule(dynamic, 64)
        for (int64_t blk = 0; blk < n8; ++blk) {
            const int64_t n0 = blk * 8;
            recon_proj::F8 mean[3], k[48];
            gather_sh_lanes(m, sh, K, nb, n0, mean, k);
            for (int64_t c = 0; c < C; ++c) {
                recon_proj::F8 col[3];
                sh_color<recon_proj::F8>(deg, nb, mean, cp + 3 * c, k, col);
                recon_lanes::store_lanes(col, 3, out + (c * N + n0) * 3, 3);
            }
        }
        for (int64_t n = n8 * 8; n < N; ++n)
            for (int64_t c = 0; c < C; ++c)
                sh_color<float>(deg, nb, m + 3 * n, cp + 3 * c, sh + n * K * 3, out + (c * N + n) * 3);
    }
    return colors;
}

inline std::vector<torch::Tensor> sh_bwd(int64_t degree, const torch::Tensor& means, const torch::Tensor& coeffs,
                                         const torch::Tensor& campos, const torch::Tensor& v_colors) {
    check_f32(v_colors, "v_colors");
    const int64_t N = means.size(0), C = campos.size(0), K = coeffs.size(1);
    const int nb = static_cast<int>((degree + 1) * (degree + 1));
    auto f = torch::TensorOptions().dtype(torch::kFloat32);
    torch::Tensor v_means = torch::empty({N, 3}, f);
    torch::Tensor v_coeffs = torch::empty({N, K, 3}, f);
    {
        pybind11::gil_scoped_release nogil;
        const float* m = means.data_ptr<float>();
        const float* sh = coeffs.data_ptr<float>();
        const float* cp = campos.data_ptr<float>();
        const float* vc = v_colors.data_ptr<float>();
        float* gm = v_means.data_ptr<float>();
        float* gk = v_coeffs.data_ptr<float>();
        const int deg = static_cast<int>(degree);
        // a (camera, Gaussian) whose colour gradient is zero adds nothing (skipped, as one at a time)
        const int64_t n8 = N / 8;
#pragma omp parallel for schedule(dynamic, 64)
        for (int64_t blk = 0; blk < n8; ++blk) {
            const int64_t n0 = blk * 8;
            recon_proj::F8 mean[3], k[48], vk[48] = {}, vmean[3] = {};
            gather_sh_lanes(m, sh, K, nb, n0, mean, k);
            for (int64_t c = 0; c < C; ++c) {
                recon_proj::F8 vcol[3];
                recon_proj::I8 use;
                bool any = false;
                recon_lanes::load_lanes(vc + 3 * (c * N + n0), 3, 3, vcol);
                for (int l = 0; l < 8; ++l) {
                    const bool u = !(vcol[0][l] == 0.f && vcol[1][l] == 0.f && vcol[2][l] == 0.f);
                    use[l] = u ? -1 : 0;
                    any |= u;
                }
                if (any) sh_color_vjp<recon_proj::F8>(deg, nb, mean, cp + 3 * c, k, vcol, use, vk, vmean);
            }
            recon_lanes::store_lanes(vk, 3 * nb, gk + n0 * K * 3, K * 3);
            for (int l = 0; l < 8; ++l)  // coefficients above the degree get no gradient
                std::fill(gk + (n0 + l) * K * 3 + 3 * nb, gk + (n0 + l + 1) * K * 3, 0.f);
            recon_lanes::store_lanes(vmean, 3, gm + 3 * n0, 3);
        }
        for (int64_t n = n8 * 8; n < N; ++n) {
            for (int j = 0; j < 3; ++j) gm[3 * n + j] = 0.f;
            for (int64_t j = 0; j < K * 3; ++j) gk[n * K * 3 + j] = 0.f;
            for (int64_t c = 0; c < C; ++c) {
                const int64_t i = c * N + n;
                if (vc[3 * i] == 0.f && vc[3 * i + 1] == 0.f && vc[3 * i + 2] == 0.f) continue;
                sh_color_vjp<float>(deg, nb, m + 3 * n, cp + 3 * c, sh + n * K * 3, vc + 3 * i, true, gk + n * K * 3,
                                    gm + 3 * n);
            }
        }
    }
    return {v_means, v_coeffs};
}

// ------------------------------------------------------------------------------------------------
// tile binning: counting sort into (camera, tile) buckets of Gaussians visited in depth order
// ------------------------------------------------------------------------------------------------
inline void radix_sort_by_key(std::vector<uint32_t>& keys, std::vector<uint32_t>& vals) {
    const size_t n = keys.size();
    std::vector<uint32_t> k2(n), v2(n);
    constexpr int kBits = 11, kBuckets = 1 << kBits;
    for (int shift = 0; shift < 32; shift += kBits) {
        size_t count[kBuckets + 1] = {0};
        for (size_t i = 0; i < n; ++i) ++count[((keys[i] >> shift) & (kBuckets - 1)) + 1];
        for (int b = 0; b < kBuckets; ++b) count[b + 1] += count[b];
        for (size_t i = 0; i < n; ++i) {
            const size_t p = count[(keys[i] >> shift) & (kBuckets - 1)]++;
            k2[p] = keys[i];
            v2[p] = vals[i];
        }
        keys.swap(k2);
        vals.swap(v2);
    }
}

inline std::vector<torch::Tensor> isect_tiles(const torch::Tensor& means2d, const torch::Tensor& radii,
                                              const torch::Tensor& depths, int64_t width, int64_t height,
                                              int64_t tile_size) {
    check_f32(means2d, "means2d");
    check_f32(depths, "depths");
    TORCH_CHECK(radii.scalar_type() == torch::kInt32 && radii.is_contiguous(), "radii must be contiguous int32");
    const int64_t C = means2d.size(0), N = means2d.size(1);
    const int tw = static_cast<int>((width + tile_size - 1) / tile_size);
    const int th = static_cast<int>((height + tile_size - 1) / tile_size);
    const int64_t n_tiles = static_cast<int64_t>(tw) * th;
    int tile_bits = 0;
    while ((int64_t(1) << tile_bits) <= n_tiles) ++tile_bits;
    tile_bits = std::max(tile_bits, 1);
    const float* m = means2d.data_ptr<float>();
    const int32_t* ra = radii.data_ptr<int32_t>();
    const float* de = depths.data_ptr<float>();
    torch::Tensor tiles_per_gauss = torch::empty({C, N}, torch::TensorOptions().dtype(torch::kInt32));
    int32_t* tpg = tiles_per_gauss.data_ptr<int32_t>();
    std::vector<int32_t> rect(static_cast<size_t>(C * N) * 4);
    const float fts = static_cast<float>(tile_size);
    {
        pybind11::gil_scoped_release nogil;
#pragma omp parallel for schedule(dynamic, 1024)
        for (int64_t i = 0; i < C * N; ++i) {
            int32_t* r = rect.data() + 4 * i;
            r[0] = r[1] = r[2] = r[3] = 0;
            tpg[i] = 0;
            if (ra[2 * i] <= 0 || ra[2 * i + 1] <= 0) continue;
            const float mx = m[2 * i] / fts, my = m[2 * i + 1] / fts;
            const float rx = static_cast<float>(ra[2 * i]) / fts, ry = static_cast<float>(ra[2 * i + 1]) / fts;
            auto cl = [](float v, int hi) { return static_cast<int32_t>(std::min(std::max(v, 0.f), float(hi))); };
            r[0] = cl(std::floor(mx - rx), tw);
            r[1] = cl(std::floor(my - ry), th);
            r[2] = cl(std::ceil(mx + rx), tw);
            r[3] = cl(std::ceil(my + ry), th);
            const int64_t cnt = int64_t(std::max(r[2] - r[0], 0)) * std::max(r[3] - r[1], 0);
            tpg[i] = static_cast<int32_t>(cnt);
        }
    }
    // per (camera, tile) counts -> offsets
    std::vector<int64_t> counts(static_cast<size_t>(C * n_tiles) + 1, 0);
    for (int64_t i = 0; i < C * N; ++i) {
        if (tpg[i] == 0) continue;
        const int32_t* r = rect.data() + 4 * i;
        int64_t* base = counts.data() + (i / N) * n_tiles;
        for (int y = r[1]; y < r[3]; ++y)
            for (int x = r[0]; x < r[2]; ++x) ++base[y * tw + x];
    }
    int64_t M = 0;
    torch::Tensor offsets = torch::empty({C, th, tw}, torch::TensorOptions().dtype(torch::kInt32));
    int32_t* off = offsets.data_ptr<int32_t>();
    std::vector<int64_t> cursor(static_cast<size_t>(C * n_tiles));
    for (int64_t t = 0; t < C * n_tiles; ++t) {
        off[t] = static_cast<int32_t>(M);
        cursor[t] = M;
        M += counts[t];
    }
    TORCH_CHECK(M < (int64_t(1) << 31), "too many tile intersections (", M, ")");
    torch::Tensor isect_ids = torch::empty({M}, torch::TensorOptions().dtype(torch::kInt64));
    torch::Tensor flatten_ids = torch::empty({M}, torch::TensorOptions().dtype(torch::kInt32));
    int64_t* keys_out = isect_ids.data_ptr<int64_t>();
    int32_t* ids_out = flatten_ids.data_ptr<int32_t>();
    {
        pybind11::gil_scoped_release nogil;
        for (int64_t c = 0; c < C; ++c) {
            // visible Gaussians of this camera, front to back (stable radix sort of the float bits; depth > 0)
            std::vector<uint32_t> keys, order;
            keys.reserve(N);
            order.reserve(N);
            for (int64_t n = 0; n < N; ++n) {
                if (tpg[c * N + n] == 0) continue;
                uint32_t bits;
                std::memcpy(&bits, de + c * N + n, 4);
                keys.push_back(bits);
                order.push_back(static_cast<uint32_t>(n));
            }
            radix_sort_by_key(keys, order);
            // the sorted positions j touching each tile row, in increasing j (a counting sort by row)
            std::vector<int32_t> row_start(static_cast<size_t>(th) + 1, 0);
            for (size_t j = 0; j < order.size(); ++j) {
                const int32_t* r = rect.data() + 4 * (c * N + order[j]);
                for (int ty = r[1]; ty < r[3]; ++ty) ++row_start[ty + 1];
            }
            for (int ty = 0; ty < th; ++ty) row_start[ty + 1] += row_start[ty];
            std::vector<int32_t> row_items(static_cast<size_t>(row_start[th]));
            {
                std::vector<int32_t> fill(row_start.begin(), row_start.end() - 1);
                for (size_t j = 0; j < order.size(); ++j) {
                    const int32_t* r = rect.data() + 4 * (c * N + order[j]);
                    for (int ty = r[1]; ty < r[3]; ++ty) row_items[fill[ty]++] = static_cast<int32_t>(j);
                }
            }
            // each tile row is filled by one thread: no two threads touch the same bucket
#pragma omp parallel for schedule(dynamic, 1)
            for (int ty = 0; ty < th; ++ty) {
                for (int32_t e = row_start[ty]; e < row_start[ty + 1]; ++e) {
                    const int32_t j = row_items[e];
                    const int64_t i = c * N + order[j];
                    const int32_t* r = rect.data() + 4 * i;
                    const int64_t key_hi = (c << (32 + tile_bits));
                    for (int tx = r[0]; tx < r[2]; ++tx) {
                        const int64_t tile = int64_t(ty) * tw + tx;
                        const int64_t p = cursor[c * n_tiles + tile]++;
                        ids_out[p] = static_cast<int32_t>(i);
                        keys_out[p] = key_hi | (tile << 32) | int64_t(keys[j]);
                    }
                }
            }
        }
    }
    return {tiles_per_gauss, isect_ids, flatten_ids, offsets};
}

}  // namespace recon_ops
