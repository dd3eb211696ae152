// Lane types shared by the CPU kernels: float (one value) or F8 (eight in one AVX register, a GCC vector type), so
// one templated source serves scalar and 8-lane code. Mask<T> is bool or eight int lanes (-1 true, 0 false); selects
// replace branches. Every helper performs the same IEEE operation per lane as the scalar one (the kernels are
// built without fast-math or implicit contraction), so 8-lane results are bitwise the scalar ones.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#ifdef __AVX__
#include <immintrin.h>
#endif

namespace recon_lanes {

typedef float F8 __attribute__((vector_size(32)));
typedef int32_t I8 __attribute__((vector_size(32)));
template <class T> struct MaskOf { using type = bool; };
template <> struct MaskOf<F8> { using type = I8; };
template <class T> using Mask = typename MaskOf<T>::type;

inline float sel(bool m, float a, float b) { return m ? a : b; }
inline F8 sel(I8 m, F8 a, F8 b) { return m ? a : b; }
inline bool mand(bool a, bool b) { return a && b; }
inline I8 mand(I8 a, I8 b) { return a & b; }
inline bool mnot(bool a) { return !a; }
inline I8 mnot(I8 a) { return ~a; }
// f on each lane (builds without AVX)
template <class F>
inline F8 each_lane(F8 x, F f) {
    F8 r;
    for (int i = 0; i < 8; ++i) r[i] = f(x[i]);
    return r;
}
// one AVX instruction on all lanes where the build has AVX, else the scalar function lane by lane
#ifdef __AVX__
#define RECON_LANEWISE(avx, scalar, x) ((F8)avx((__m256)(x)))
#else
#define RECON_LANEWISE(avx, scalar, x) each_lane((x), [](float v) { return scalar(v); })
#endif
inline float vsqrt(float x) { return std::sqrt(x); }
inline F8 vsqrt(F8 x) { return RECON_LANEWISE(_mm256_sqrt_ps, std::sqrt, x); }
inline float vfloor(float x) { return std::floor(x); }
inline F8 vfloor(F8 x) { return RECON_LANEWISE(_mm256_floor_ps, std::floor, x); }
inline float vabs(float x) { return std::fabs(x); }
inline F8 vabs(F8 x) { return (F8)((I8)x & 0x7fffffff); }  // clears the sign bit, as fabs
inline float vmin(float a, float b) { return std::min(a, b); }
inline F8 vmin(F8 a, F8 b) { return b < a ? b : a; }  // std::min(a, b): a unless b < a
inline float vmax(float a, float b) { return std::max(a, b); }
inline F8 vmax(F8 a, F8 b) { return a < b ? b : a; }  // std::max(a, b): a unless a < b

// Eight consecutive rows (row l at src + l * stride) of `width` floats into lanes: dst[j][l] = row l's j-th value
// (arrays of structures to eight-lane structures of arrays), and back.
inline void load_lanes(const float* src, int64_t stride, int width, F8* dst) {
    for (int l = 0; l < 8; ++l)
        for (int j = 0; j < width; ++j) dst[j][l] = src[l * stride + j];
}
inline void store_lanes(const F8* src, int width, float* dst, int64_t stride) {
    for (int l = 0; l < 8; ++l)
        for (int j = 0; j < width; ++j) dst[l * stride + j] = src[j][l];
}

// a float constant in every lane of T
template <class T>
inline T bc(float v) {
    return T{} + v;
}

}  // namespace recon_lanes
