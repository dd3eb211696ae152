// Per-Gaussian EWA projection (gsplat's fully_fused_projection rule) and spherical-harmonics colour,
// forward and hand-written vector-Jacobian products. Pure C++ on raw float pointers; the PyTorch versions
// in recon/kernels/projection.py and sh.py define the same functions and serve as the reference.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "lanes.h"

namespace recon_proj {

constexpr float kAlphaThreshold = 1.0f / 255.0f;
constexpr float kMaxExtend = 3.33f;

struct Camera {
    float R[9];  // world-to-camera rotation, row-major
    float t[3];
    float fx, fy, cx, cy;
    float lim_x_pos, lim_x_neg, lim_y_pos, lim_y_neg;
};

inline Camera make_camera(const float* viewmat, const float* K, int width, int height) {
    Camera c;
    for (int i = 0; i < 3; ++i) {
        for (int j = 0; j < 3; ++j) c.R[3 * i + j] = viewmat[4 * i + j];
        c.t[i] = viewmat[4 * i + 3];
    }
    c.fx = K[0];
    c.cx = K[2];
    c.fy = K[4];
    c.cy = K[5];
    const float tan_fovx = 0.5f * width / c.fx, tan_fovy = 0.5f * height / c.fy;
    c.lim_x_pos = (width - c.cx) / c.fx + 0.3f * tan_fovx;
    c.lim_x_neg = c.cx / c.fx + 0.3f * tan_fovx;
    c.lim_y_pos = (height - c.cy) / c.fy + 0.3f * tan_fovy;
    c.lim_y_neg = c.cy / c.fy + 0.3f * tan_fovy;
    return c;
}

// The per-Gaussian functions below are templates on the number type T (lanes.h): float, one Gaussian, or F8,
// eight Gaussians in one AVX register, so projection and SH run eight Gaussians per instruction from one source.
using namespace recon_lanes;

// q (any norm, wxyz) -> unit quaternion and its norm (F.normalize: divide by max(norm, 1e-12))
template <class T>
inline T normalize_quat(const T* q, T* qn) {
    const T n = vsqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
    const T d = vmax(n, bc<T>(1e-12f));
    for (int i = 0; i < 4; ++i) qn[i] = q[i] / d;
    return d;
}

template <class T>
inline void quat_to_rot(const T* q, T* R) {
    const T w = q[0], x = q[1], y = q[2], z = q[3];
    R[0] = 1.f - 2.f * (y * y + z * z);
    R[1] = 2.f * (x * y - w * z);
    R[2] = 2.f * (x * z + w * y);
    R[3] = 2.f * (x * y + w * z);
    R[4] = 1.f - 2.f * (x * x + z * z);
    R[5] = 2.f * (y * z - w * x);
    R[6] = 2.f * (x * z - w * y);
    R[7] = 2.f * (y * z + w * x);
    R[8] = 1.f - 2.f * (x * x + y * y);
}

// dL/dq (unit quaternion) from dL/dR
template <class T>
inline void quat_to_rot_vjp(const T* q, const T* v, T* vq) {
    const T w = q[0], x = q[1], y = q[2], z = q[3];
    vq[0] = 2.f * (-z * v[1] + y * v[2] + z * v[3] - x * v[5] - y * v[6] + x * v[7]);
    vq[1] = 2.f * (y * v[1] + z * v[2] + y * v[3] - 2.f * x * v[4] - w * v[5] + z * v[6] + w * v[7] - 2.f * x * v[8]);
    vq[2] = 2.f * (-2.f * y * v[0] + x * v[1] + w * v[2] + x * v[3] + z * v[5] - w * v[6] + z * v[7] - 2.f * y * v[8]);
    vq[3] = 2.f * (-2.f * z * v[0] - w * v[1] + x * v[2] + w * v[3] - 2.f * z * v[4] + y * v[5] + x * v[6] + y * v[7]);
}

// C = A B for 3x3 row-major; At, Bt: transpose A, B. A or B may be the camera's float rotation.
template <bool At = false, bool Bt = false, class TA, class TB, class T>
inline void mm3(const TA* A, const TB* B, T* C) {
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) {
            T s = T{};
            for (int k = 0; k < 3; ++k) s += (At ? A[3 * k + i] : A[3 * i + k]) * (Bt ? B[3 * j + k] : B[3 * k + j]);
            C[3 * i + j] = s;
        }
}

template <class T>
struct ProjStateT {
    // forward intermediates needed by the backward
    T qn[4], qnorm, Rq[9], M[9], cov[9], covc[9], mc[3];
    T J[6];  // 2x3 row-major
    T tx, ty, rz;
    Mask<T> clamp_x, clamp_y;
    T cx_val, cy_val;  // clamp values used when clamped
    T c00, c01, c11;   // 2D covariance before blur
    T det, det_orig, comp;
};
using ProjState = ProjStateT<float>;

// The forward's intermediates for one (camera, Gaussian) (or eight), all the backward needs; the mask is false
// where the Gaussian is outside the depth range or its blurred 2D covariance is degenerate (then project_one
// culls it too). No early exit: lanes are computed alike, the mask says which count.
template <class T>
inline Mask<T> project_state(const Camera& cam, const T* mean, const T* quat, const T* scale, float eps2d,
                             float near_plane, float far_plane, bool calc_comp, ProjStateT<T>& s) {
    for (int i = 0; i < 3; ++i)
        s.mc[i] = cam.R[3 * i] * mean[0] + cam.R[3 * i + 1] * mean[1] + cam.R[3 * i + 2] * mean[2] + cam.t[i];
    const T x = s.mc[0], y = s.mc[1], z = s.mc[2];
    const Mask<T> in_range = mand(z >= near_plane, z <= far_plane);
    s.qnorm = normalize_quat(quat, s.qn);
    quat_to_rot(s.qn, s.Rq);
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) s.M[3 * i + j] = s.Rq[3 * i + j] * scale[j];
    mm3<false, true>(s.M, s.M, s.cov);  // M M^T
    T tmp[9];
    mm3(cam.R, s.cov, tmp);               // R cov
    mm3<false, true>(tmp, cam.R, s.covc); // R cov R^T

    s.rz = 1.f / z;
    const T rz2 = s.rz * s.rz;
    const T ux = x * s.rz, uy = y * s.rz;
    const T cxv = vmin(bc<T>(cam.lim_x_pos), vmax(bc<T>(-cam.lim_x_neg), ux));
    const T cyv = vmin(bc<T>(cam.lim_y_pos), vmax(bc<T>(-cam.lim_y_neg), uy));
    s.clamp_x = mnot(mand(ux < cam.lim_x_pos, ux > -cam.lim_x_neg));
    s.clamp_y = mnot(mand(uy < cam.lim_y_pos, uy > -cam.lim_y_neg));
    s.cx_val = cxv;
    s.cy_val = cyv;
    s.tx = z * cxv;
    s.ty = z * cyv;
    s.J[0] = cam.fx * s.rz;
    s.J[1] = T{};
    s.J[2] = -cam.fx * s.tx * rz2;
    s.J[3] = T{};
    s.J[4] = cam.fy * s.rz;
    s.J[5] = -cam.fy * s.ty * rz2;
    // cov2d = J covc J^T
    T JC[6];
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 3; ++j)
            JC[3 * i + j] = s.J[3 * i] * s.covc[j] + s.J[3 * i + 1] * s.covc[3 + j] + s.J[3 * i + 2] * s.covc[6 + j];
    s.c00 = JC[0] * s.J[0] + JC[1] * s.J[1] + JC[2] * s.J[2];
    s.c01 = JC[0] * s.J[3] + JC[1] * s.J[4] + JC[2] * s.J[5];
    s.c11 = JC[3] * s.J[3] + JC[4] * s.J[4] + JC[5] * s.J[5];
    s.det_orig = s.c00 * s.c11 - s.c01 * s.c01;
    const T a = s.c00 + eps2d, c = s.c11 + eps2d, b = s.c01;
    s.det = a * c - b * b;
    s.comp = bc<T>(1.f);
    if (calc_comp) {
        const T ratio = s.det_orig / s.det;
        s.comp = sel(ratio > 0.f, vsqrt(vmax(ratio, T{})), T{});
    }
    return mand(in_range, s.det > 0.f);
}

// What the forward's outputs need from one lane of the state.
struct ProjCore {
    float x, y, z, rz, c00, c01, c11, det, comp;
};

template <class T>
inline ProjCore core_of(const ProjStateT<T>& s, int lane) {
    auto at = [lane](const T& v) -> float {
        if constexpr (std::is_same<T, float>::value) return v; else return v[lane];
    };
    return {at(s.mc[0]), at(s.mc[1]), at(s.mc[2]), at(s.rz), at(s.c00), at(s.c01), at(s.c11), at(s.det), at(s.comp)};
}

// The forward's culling and outputs for a Gaussian whose state passed project_state. Returns false when culled
// (outputs untouched).
inline bool project_finish(const Camera& cam, const ProjCore& s, float opacity, int width, int height, float eps2d,
                           float radius_clip, bool calc_comp, float* mean2d, float* conic, float* depth,
                           int32_t* radii, float* comp_out) {
    const float x = s.x, y = s.y, z = s.z;
    const float u = cam.fx * x * s.rz + cam.cx;
    const float v = cam.fy * y * s.rz + cam.cy;
    const float a = s.c00 + eps2d, c = s.c11 + eps2d, b = s.c01;
    float op = opacity;
    if (calc_comp) op *= s.comp;
    if (!(op >= kAlphaThreshold)) return false;
    const float extend = std::min(kMaxExtend, std::sqrt(2.f * std::log(op / kAlphaThreshold)));
    const float rx = std::ceil(extend * std::sqrt(a));
    const float ry = std::ceil(extend * std::sqrt(c));
    if (rx <= radius_clip && ry <= radius_clip) return false;
    if (!(u + rx > 0.f && u - rx < width && v + ry > 0.f && v - ry < height)) return false;
    if (!(std::isfinite(rx) && std::isfinite(ry) && std::isfinite(u) && std::isfinite(v))) return false;
    mean2d[0] = u;
    mean2d[1] = v;
    conic[0] = c / s.det;
    conic[1] = -b / s.det;
    conic[2] = a / s.det;
    *depth = z;
    radii[0] = static_cast<int32_t>(std::min(rx, 1073741824.f));
    radii[1] = static_cast<int32_t>(std::min(ry, 1073741824.f));
    if (comp_out) *comp_out = s.comp;
    return true;
}

// Forward for one (camera, Gaussian). Returns false when culled (outputs untouched).
inline bool project_one(const Camera& cam, const float* mean, const float* quat, const float* scale, float opacity,
                        int width, int height, float eps2d, float near_plane, float far_plane, float radius_clip,
                        bool calc_comp, float* mean2d, float* conic, float* depth, int32_t* radii, float* comp_out,
                        ProjState& s) {
    if (!project_state<float>(cam, mean, quat, scale, eps2d, near_plane, far_plane, calc_comp, s)) return false;
    return project_finish(cam, core_of(s, 0), opacity, width, height, eps2d, radius_clip, calc_comp, mean2d, conic,
                          depth, radii, comp_out);
}

// Backward for one visible (camera, Gaussian) (or eight): accumulates into v_mean[3], v_quat[4], v_scale[3].
template <class T>
inline void project_one_vjp(const Camera& cam, const T* scale, float eps2d, bool calc_comp, const ProjStateT<T>& s,
                            const T* v_mean2d, const T* v_conic, T v_depth, T v_comp, T* v_mean, T* v_quat,
                            T* v_scale) {
    const T a = s.c00 + eps2d, c = s.c11 + eps2d, b = s.c01;
    const T A = c / s.det, B = -b / s.det, Cc = a / s.det;
    // conic = inverse(cov2d): G = -Sinv V Sinv with V = [[vA, vB/2], [vB/2, vC]] (symmetric gradient)
    const T V00 = v_conic[0], V01 = 0.5f * v_conic[1], V11 = v_conic[2];
    const T T00 = V00 * A + V01 * B, T01 = V00 * B + V01 * Cc;
    const T T10 = V01 * A + V11 * B, T11 = V01 * B + V11 * Cc;
    T G00 = -(A * T00 + B * T10);
    T G01 = -(A * T01 + B * T11);
    T G11 = -(B * T01 + Cc * T11);
    if (calc_comp) {
        const Mask<T> use = mand(v_comp != 0.f, s.comp > 0.f);
        const T v_ratio = v_comp * 0.5f / s.comp;
        const T v_det_orig = v_ratio / s.det;
        const T v_det = -v_ratio * s.det_orig / (s.det * s.det);
        G00 = sel(use, G00 + (v_det_orig * s.c11 + v_det * c), G00);
        G11 = sel(use, G11 + (v_det_orig * s.c00 + v_det * a), G11);
        G01 = sel(use, G01 + (-s.c01 * (v_det_orig + v_det)), G01);
    }
    // cov2d = J covc J^T: v_J = 2 G J covc, v_covc = J^T G J
    const T G[4] = {G00, G01, G01, G11};
    T JC[6];
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 3; ++j)
            JC[3 * i + j] = s.J[3 * i] * s.covc[j] + s.J[3 * i + 1] * s.covc[3 + j] + s.J[3 * i + 2] * s.covc[6 + j];
    T vJ[6];
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 3; ++j) vJ[3 * i + j] = 2.f * (G[2 * i] * JC[j] + G[2 * i + 1] * JC[3 + j]);
    T GJ[6];  // G J (2x3)
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 3; ++j) GJ[3 * i + j] = G[2 * i] * s.J[j] + G[2 * i + 1] * s.J[3 + j];
    T v_covc[9];
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) v_covc[3 * i + j] = s.J[i] * GJ[j] + s.J[3 + i] * GJ[3 + j];
    // covc = R cov R^T: v_cov = R^T v_covc R
    T tmp[9], v_cov[9];
    mm3<true, false>(cam.R, v_covc, tmp);
    mm3(tmp, cam.R, v_cov);
    // cov = M M^T: v_M = (v_cov + v_cov^T) M
    T vsym[9];
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) vsym[3 * i + j] = v_cov[3 * i + j] + v_cov[3 * j + i];
    T vM[9];
    mm3(vsym, s.M, vM);
    // M = Rq diag(scale)
    T vRq[9];
    for (int j = 0; j < 3; ++j) {
        T acc = T{};
        for (int i = 0; i < 3; ++i) {
            acc += vM[3 * i + j] * s.Rq[3 * i + j];
            vRq[3 * i + j] = vM[3 * i + j] * scale[j];
        }
        v_scale[j] += acc;
    }
    T vqn[4];
    quat_to_rot_vjp(s.qn, vRq, vqn);
    const T dot = vqn[0] * s.qn[0] + vqn[1] * s.qn[1] + vqn[2] * s.qn[2] + vqn[3] * s.qn[3];
    const Mask<T> clamped_norm = s.qnorm <= 1e-12f;
    for (int i = 0; i < 4; ++i) v_quat[i] += sel(clamped_norm, vqn[i] / s.qnorm, (vqn[i] - s.qn[i] * dot) / s.qnorm);

    // Jacobian and mean2d w.r.t. the camera-space mean
    const T x = s.mc[0], y = s.mc[1];
    const T rz = s.rz, rz2 = rz * rz, rz3 = rz2 * rz;
    T vx = T{}, vy = T{}, vz = T{};
    vz += -cam.fx * rz2 * vJ[0] - cam.fy * rz2 * vJ[4];
    const T v_tx = -cam.fx * rz2 * vJ[2];
    const T v_ty = -cam.fy * rz2 * vJ[5];
    vz += 2.f * cam.fx * s.tx * rz3 * vJ[2] + 2.f * cam.fy * s.ty * rz3 * vJ[5];
    vz = sel(s.clamp_x, vz + s.cx_val * v_tx, vz);
    vx = sel(s.clamp_x, vx, vx + v_tx);
    vz = sel(s.clamp_y, vz + s.cy_val * v_ty, vz);
    vy = sel(s.clamp_y, vy, vy + v_ty);
    vx += cam.fx * rz * v_mean2d[0];
    vy += cam.fy * rz * v_mean2d[1];
    vz += -(cam.fx * x * v_mean2d[0] + cam.fy * y * v_mean2d[1]) * rz2;
    vz += v_depth;
    // mean_c = R mean + t
    for (int j = 0; j < 3; ++j) v_mean[j] += cam.R[j] * vx + cam.R[3 + j] * vy + cam.R[6 + j] * vz;
}

// ---------------------------------------------------------------------------------------------
// spherical harmonics (3DGS basis), colour = max(sh + 0.5, 0)
// ---------------------------------------------------------------------------------------------
constexpr float C0 = 0.28209479177387814f;
constexpr float C1 = 0.4886025119029199f;
constexpr float C2[5] = {1.0925484305920792f, -1.0925484305920792f, 0.31539156525252005f, -1.0925484305920792f,
                         0.5462742152960396f};
constexpr float C3[7] = {-0.5900435899266435f, 2.890611442640554f, -0.4570457994644658f, 0.3731763325901154f,
                         -0.4570457994644658f, 1.445305721320277f, -0.5900435899266435f};

// basis values (and, if d != null, their derivatives w.r.t. the unit direction: d[3*k + axis]); T = float or F8
template <class T>
inline void sh_basis(int degree, T x, T y, T z, T* b, T* d) {
    b[0] = bc<T>(C0);
    if (d) d[0] = d[1] = d[2] = T{};
    if (degree < 1) return;
    b[1] = -C1 * y;
    b[2] = C1 * z;
    b[3] = -C1 * x;
    if (d) {
        const T v[9] = {T{}, bc<T>(-C1), T{}, T{}, T{}, bc<T>(C1), bc<T>(-C1), T{}, T{}};
        for (int i = 0; i < 9; ++i) d[3 + i] = v[i];
    }
    if (degree < 2) return;
    const T xx = x * x, yy = y * y, zz = z * z, xy = x * y, yz = y * z, xz = x * z;
    b[4] = C2[0] * xy;
    b[5] = C2[1] * yz;
    b[6] = C2[2] * (2.f * zz - xx - yy);
    b[7] = C2[3] * xz;
    b[8] = C2[4] * (xx - yy);
    if (d) {
        const T v[15] = {C2[0] * y, C2[0] * x, T{},
                         T{}, C2[1] * z, C2[1] * y,
                         -2.f * C2[2] * x, -2.f * C2[2] * y, 4.f * C2[2] * z,
                         C2[3] * z, T{}, C2[3] * x,
                         2.f * C2[4] * x, -2.f * C2[4] * y, T{}};
        for (int i = 0; i < 15; ++i) d[12 + i] = v[i];
    }
    if (degree < 3) return;
    b[9] = C3[0] * y * (3.f * xx - yy);
    b[10] = C3[1] * xy * z;
    b[11] = C3[2] * y * (4.f * zz - xx - yy);
    b[12] = C3[3] * z * (2.f * zz - 3.f * xx - 3.f * yy);
    b[13] = C3[4] * x * (4.f * zz - xx - yy);
    b[14] = C3[5] * z * (xx - yy);
    b[15] = C3[6] * x * (xx - 3.f * yy);
    if (d) {
        const T v[21] = {6.f * C3[0] * xy, C3[0] * (3.f * xx - 3.f * yy), T{},
                         C3[1] * yz, C3[1] * xz, C3[1] * xy,
                         -2.f * C3[2] * xy, C3[2] * (4.f * zz - xx - 3.f * yy), 8.f * C3[2] * yz,
                         -6.f * C3[3] * xz, -6.f * C3[3] * yz, C3[3] * (6.f * zz - 3.f * xx - 3.f * yy),
                         C3[4] * (4.f * zz - 3.f * xx - yy), -2.f * C3[4] * xy, 8.f * C3[4] * xz,
                         2.f * C3[5] * xz, -2.f * C3[5] * yz, C3[5] * (xx - yy),
                         C3[6] * (3.f * xx - 3.f * yy), -6.f * C3[6] * xy, T{}};
        for (int i = 0; i < 21; ++i) d[27 + i] = v[i];
    }
}

}  // namespace recon_proj
