// CPU tile rasteriser for 2D Gaussians: forward (front to back) and hand-written backward (back to front).
//
// Same rule as gsplat 1.5.3's rasterize_to_pixels (and recon/kernels/reference.py):
//   sigma = 0.5 (a dx^2 + c dy^2) + b dx dy,   dx = mean_x - (x + 0.5),  dy = mean_y - (y + 0.5)
//   alpha = min(alpha_max, opacity * exp(-sigma)), alpha_max = 0.999; skip if sigma < 0 or alpha < 1/255
//   (backward: no gradient to sigma or opacity where opacity * exp(-sigma) > alpha_max, as gsplat)
//   next_T = T (1 - alpha); stop the pixel (this Gaussian not included) when next_T <= 1e-4
//   optional far-depth limit: a Gaussian whose depth >= far[pixel] is skipped, and since each tile list
//   is sorted front to back every later one is too, so the pixel stops there.
// Outputs: colour = sum w_i c_i + T_final bg, alpha = sum w_i (= 1 - T_final, without the float
// cancellation of 1 - T when alpha is small), and for the backward T_final and the last contributing
// intersection of each pixel.
// Threads (OpenMP) take whole tiles dynamically. Inside a tile the loop is Gaussian-outer over the tile's
// pixel state (structure of arrays): only the rows where the Gaussian can reach alpha >= 1/255 are visited
// (a conservative ellipse bound), each row is one branch-free SIMD loop over the tile width, and every
// pixel still gets the exact tests above. Rows whose pixels are all finished are skipped.
// The forward also returns the per-Gaussian records and, per intersection, a 32-bit mask of the 8-pixel blocks of
// its 16x16 tile where it may composite; the backward visits only those blocks, skipping the intersections with
// none outright (no span arithmetic, no alpha evaluation, no unpredictable per-block branch).
// Backward: each intersection (tile, Gaussian) gets its own gradient record, written by the one thread that
// owns the tile; the records are then summed per Gaussian in intersection order. No atomics, and the result is
// bitwise the same whatever the thread count or the scheduling.
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "raster_common.h"
#include "splat_ops.h"

namespace {

struct Inputs {
    const float* means2d;   // [C*N, 2]
    const float* conics;    // [C*N, 3]
    const float* colors;    // [C*N, D]
    const float* opacities; // [C*N]
    const float* depths;    // [C*N] or null
    const float* far;       // [C, H, W] or null
    const int32_t* offsets; // [C*th*tw]
    const int32_t* ids;     // [M]
    int64_t n_isects;
    int C, N, D, W, H, ts, tw, th;
    float alpha_max;
};

inline int n_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

inline int thread_id() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

struct TileBox {
    int cam, x0, y0, x1, y1; // pixel rectangle [x0,x1) x [y0,y1) clipped to the image
    int64_t start, end;      // intersection range
};

inline TileBox tile_box(const Inputs& in, int64_t t) {
    TileBox b;
    const int per_cam = in.tw * in.th;
    b.cam = static_cast<int>(t / per_cam);
    const int local = static_cast<int>(t % per_cam);
    const int ty = local / in.tw, tx = local % in.tw;
    b.x0 = tx * in.ts;
    b.y0 = ty * in.ts;
    b.x1 = std::min(b.x0 + in.ts, in.W);
    b.y1 = std::min(b.y0 + in.ts, in.H);
    b.start = in.offsets[t];
    b.end = (t + 1 < static_cast<int64_t>(in.C) * per_cam) ? in.offsets[t + 1] : in.n_isects;
    return b;
}

// ---------------------------------------------------------------------------------------------
// Per-thread tile state, structure of arrays (channel-major) so a tile row is one SIMD loop.
// ---------------------------------------------------------------------------------------------
struct TileState {
    std::vector<float> T, wsum, far, acc;   // forward: transmittance, sum of weights, far limit, colour [D][P]
    std::vector<float> Tf, gA, S, gC;       // backward: final T, alpha grad, colour behind [D][P], colour grad [D][P]
    std::vector<int32_t> last, done;
    std::vector<int32_t> rowv;              // per tile row: any live pixel (forward) / max last index (backward)
    std::vector<float> lanes;               // backward per-lane gradient accumulators [(8 + D)][ts]
    std::vector<float> lane_alpha, lane_vis;  // one SIMD block's alpha (0 where not composited) and exp(-sigma)
    void init(int P, int D, int ts) {
        lane_alpha.resize(ts); lane_vis.resize(ts);
        T.resize(P); wsum.resize(P); far.resize(P); acc.resize(size_t(P) * D);
        Tf.resize(P); gA.resize(P); S.resize(size_t(P) * D); gC.resize(size_t(P) * D);
        last.resize(P); done.resize(P); rowv.resize(ts);
        lanes.resize(size_t(8 + D) * ts);
    }
};

// ---------------------------------------------------------------------------------------------
// forward
// ---------------------------------------------------------------------------------------------
// Lanes per SIMD block of a tile row: 8 (one AVX2 vector) for 16-pixel tiles, so a Gaussian that covers one
// half of the tile's columns costs one block per row, not two; the whole row otherwise.
template <int TS>
inline int block_width(int ts) {
    return TS == 16 ? 8 : ts;
}

// Gaussians are visited in depth order, scattered in memory: fetch the record and colour of the one
// kPrefetch intersections ahead while this one is composited.
constexpr int64_t kPrefetch = 6;
inline void prefetch_gaussian(const Inputs& in, const recon_raster::Splat* splats, int64_t g) {
    __builtin_prefetch(splats + g);
    __builtin_prefetch(in.colors + g * in.D);
}

// One lane's (or eight lanes') share of the gradient of the conic (La, Lb, Lc), the 2D mean (Lmx, Lmy) and, with
// ABS, of the |mean gradient| sums, from dL/dsigma at offset (dx, dy): one source for every backward loop, so they
// all round alike.
template <bool ABS, class T>
inline void add_lane_grads(T v_sigma, T dx, float dy, float ca, float cb, float cc, T& La, T& Lb, T& Lc, T& Lmx,
                           T& Lmy, T& Lax, T& Lay) {
    La += 0.5f * v_sigma * dx * dx;
    Lb += v_sigma * dx * dy;
    Lc += 0.5f * v_sigma * dy * dy;
    const T gx = v_sigma * (ca * dx + cb * dy);
    const T gy = v_sigma * (cb * dx + cc * dy);
    Lmx += gx;
    Lmy += gy;
    if constexpr (ABS) {
        Lax += recon_lanes::vabs(gx);
        Lay += recon_lanes::vabs(gy);
    }
}

// FAR = false: the call has no far-depth limit (in.far is null); the per-lane far test is then compiled out.
template <int DT, int TS, bool FAR>
void forward_tile(const Inputs& in, const recon_raster::Splat* splats, int64_t t, float* out_color, float* out_alpha,
                  float* out_T, int32_t* out_last, uint32_t* blocks, TileState& st) {
    const int D = DT > 0 ? DT : in.D;
    const int ts = TS > 0 ? TS : in.ts;
    const int P = ts * ts;
    const int BW = block_width<TS>(ts);
    const TileBox b = tile_box(in, t);
    float* __restrict T = st.T.data();
    float* __restrict wsum = st.wsum.data();
    float* __restrict acc = st.acc.data();
    float* __restrict farv = st.far.data();
    int32_t* __restrict last = st.last.data();
    int32_t* __restrict done = st.done.data();
    int32_t* __restrict rowlive = st.rowv.data();
    const bool use_far = FAR && in.far != nullptr && in.depths != nullptr;
    const float* far_img = use_far ? in.far + static_cast<int64_t>(b.cam) * in.H * in.W : nullptr;
    for (int ly = 0; ly < ts; ++ly)
        for (int lx = 0; lx < ts; ++lx) {
            const int p = ly * ts + lx;
            const int x = b.x0 + lx, y = b.y0 + ly;
            const bool inside = x < b.x1 && y < b.y1;
            T[p] = 1.0f;
            wsum[p] = 0.0f;
            last[p] = -1;
            done[p] = inside ? 0 : 1;
            farv[p] = (use_far && inside) ? far_img[int64_t(y) * in.W + x] : INFINITY;
        }
    std::fill(acc, acc + size_t(P) * D, 0.0f);
    // blocks[k]: bit 2 * row + h set where some lane of that 8-lane block may composite intersection k (a
    // superset: the backward still tests every lane); intersections never reached keep 0
    if (blocks != nullptr) std::fill(blocks + b.start, blocks + b.end, 0u);

    const float amax = in.alpha_max;
    const float thr = recon_raster::kAlphaThreshold;
    const float tmin = recon_raster::kTransmittanceMin;
    for (int64_t k = b.start; k < b.end; ++k) {
        if (((k - b.start) & 15) == 0) {  // every 16 Gaussians: which rows still have live pixels?
            int alive = 0;
            for (int ly = 0; ly < ts; ++ly) {
                int live = 0;
                for (int lx = 0; lx < ts; ++lx) live |= (done[ly * ts + lx] == 0);
                rowlive[ly] = live;
                alive |= live;
            }
            if (!alive) break;  // every pixel of the tile is done
        }
        if (k + kPrefetch < b.end) prefetch_gaussian(in, splats, in.ids[k + kPrefetch]);
        const int64_t g = in.ids[k];
        const recon_raster::Splat sp = splats[g];
        if (!(sp.ey >= 0.0f)) continue;  // opacity below 1/255: alpha <= opacity when sigma >= 0
        int ylo, yhi, xlo, xhi;
        if (!recon_raster::pixel_span(sp.my, sp.ey, b.y0, b.y1, ylo, yhi) ||
            !recon_raster::pixel_span(sp.mx, sp.ex, b.x0, b.x1, xlo, xhi))
            continue;
        const int h0 = (xlo - b.x0) / BW, h1 = (xhi - b.x0) / BW + 1;  // column blocks touched
        const float mx = sp.mx, my = sp.my, ca = sp.a, cb = sp.b, cc = sp.c, op = sp.op;
        const float depth = use_far ? in.depths[g] : 0.0f;
        float col[DT > 0 ? DT : 1];
        const float* colp = in.colors + g * D;
        if (DT > 0)
            for (int c = 0; c < D; ++c) col[c] = colp[c];
        const int32_t kk = static_cast<int32_t>(k);
        const float px0 = static_cast<float>(b.x0) + 0.5f;
        uint32_t kbits = 0;
        for (int y = ylo; y <= yhi; ++y) {
            if (!rowlive[y - b.y0]) continue;
            const float dy = my - (static_cast<float>(y) + 0.5f);
            const float cdy2 = cc * dy * dy;  // row constant of sigma
            for (int h = h0; h < h1; ++h) {
            const int row = (y - b.y0) * ts + h * BW;
            const float pxb = px0 + static_cast<float>(h * BW);
            float* __restrict Tr = T + row;
            float* __restrict wr = wsum + row;
            int32_t* __restrict lr = last + row;
            int32_t* __restrict dr = done + row;
            const float* __restrict fr = farv + row;
            if (DT > 0) {
                // pass 1: alpha per lane (0 where this Gaussian is not composited); most blocks at the rim of
                // the ellipse have none, and then nothing is loaded or stored for them
                float* __restrict al = st.lane_alpha.data();
                bool any = false;
                if constexpr (FAR) {
                    int any_lane = 0;
#pragma omp simd reduction(| : any_lane)
                    for (int lx = 0; lx < BW; ++lx) {
                        const float dx = mx - (pxb + static_cast<float>(lx));
                        float sigma, vis;
                        const float alpha = recon_raster::eval_alpha_row(ca, cb, cdy2, op, dx, dy, amax, sigma, vis);
                        const bool live = dr[lx] == 0;
                        const bool beyond = depth >= fr[lx];
                        const bool ok = live && !beyond && sigma >= 0.0f && alpha >= thr;
                        al[lx] = ok ? alpha : 0.0f;
                        any_lane |= (ok || (live && beyond)) ? 1 : 0;
                    }
                    any = any_lane != 0;
                } else {
#pragma omp simd
                    for (int lx = 0; lx < BW; ++lx) {
                        const float dx = mx - (pxb + static_cast<float>(lx));
                        float sigma, vis;
                        const float alpha = recon_raster::eval_alpha_row(ca, cb, cdy2, op, dx, dy, amax, sigma, vis);
                        const bool ok = dr[lx] == 0 && sigma >= 0.0f && alpha >= thr;
                        al[lx] = ok ? alpha : 0.0f;
                    }
                    any = recon_raster::any_positive(al, BW);
                }
                if (!any) continue;
                if (TS == 16) kbits |= 1u << (2 * (y - b.y0) + h);
#pragma omp simd
                for (int lx = 0; lx < BW; ++lx) {
                    const float alpha = al[lx];
                    const bool live = dr[lx] == 0;
                    const bool beyond = FAR && depth >= fr[lx];
                    const bool ok = alpha > 0.0f;
                    const float nT = Tr[lx] * (1.0f - alpha);
                    const bool stop = ok && nT <= tmin;
                    const bool use = ok && !stop;
                    const float w = use ? alpha * Tr[lx] : 0.0f;
                    for (int c = 0; c < DT; ++c) acc[size_t(c) * P + row + lx] += w * col[c];
                    wr[lx] += w;
                    Tr[lx] = use ? nT : Tr[lx];
                    lr[lx] = use ? kk : lr[lx];
                    dr[lx] = (stop || (live && beyond)) ? 1 : dr[lx];
                }
            } else {
                for (int lx = 0; lx < BW; ++lx) {
                    const float dx = mx - (pxb + static_cast<float>(lx));
                    float sigma, vis;
                    const float alpha = recon_raster::eval_alpha_row(ca, cb, cdy2, op, dx, dy, amax, sigma, vis);
                    const bool live = dr[lx] == 0;
                    const bool beyond = FAR && depth >= fr[lx];
                    const bool ok = live && !beyond && sigma >= 0.0f && alpha >= thr;
                    const float nT = Tr[lx] * (1.0f - alpha);
                    const bool stop = ok && nT <= tmin;
                    if (live && (stop || beyond)) dr[lx] = 1;
                    if (!ok || stop) continue;
                    const float w = alpha * Tr[lx];
                    for (int c = 0; c < D; ++c) acc[size_t(c) * P + row + lx] += w * colp[c];
                    wr[lx] += w;
                    Tr[lx] = nT;
                    lr[lx] = kk;
                }
            }
            }
        }
        if (blocks != nullptr) blocks[k] = kbits;
    }

    const int64_t img_off = static_cast<int64_t>(b.cam) * in.H * in.W;
    for (int y = b.y0; y < b.y1; ++y)
        for (int x = b.x0; x < b.x1; ++x) {
            const int p = (y - b.y0) * ts + (x - b.x0);
            const int64_t pix = img_off + static_cast<int64_t>(y) * in.W + x;
            float* o = out_color + pix * D;
            for (int c = 0; c < D; ++c) o[c] = acc[size_t(c) * P + p];
            out_T[pix] = T[p];
            out_alpha[pix] = wsum[p];  // = 1 - T in real arithmetic, without float cancellation
            out_last[pix] = last[p];
        }
}

// One Splat record per Gaussian (the per-Gaussian setup done once, not once per tile).
void make_splats(const Inputs& in, recon_raster::Splat* sp) {
    const int64_t CN = static_cast<int64_t>(in.C) * in.N;
#pragma omp parallel for schedule(static)
    for (int64_t g = 0; g < CN; ++g)
        sp[g] = recon_raster::make_splat(in.means2d[2 * g], in.means2d[2 * g + 1], in.conics[3 * g],
                                         in.conics[3 * g + 1], in.conics[3 * g + 2], in.opacities[g]);
}

// blocks: per-intersection block masks (forward_tile), given by the caller for 16-pixel tiles with DT > 0 only
template <int DT, int TS, bool FAR = true>
void forward_all(const Inputs& in, const recon_raster::Splat* splats, float* out_color, float* out_alpha,
                 float* out_T, int32_t* out_last, uint32_t* blocks) {
    const int64_t n_tiles = static_cast<int64_t>(in.C) * in.tw * in.th;
    const int P = in.ts * in.ts;
#pragma omp parallel
    {
        TileState st;
        st.init(P, in.D, in.ts);
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < n_tiles; ++t)
            forward_tile<DT, TS, FAR>(in, splats, t, out_color, out_alpha, out_T, out_last, blocks, st);
    }
}

// ---------------------------------------------------------------------------------------------
// backward
// ---------------------------------------------------------------------------------------------
struct GradOut {
    float* v_means2d;  // [C*N,2]
    float* v_conics;   // [C*N,3]
    float* v_colors;   // [C*N,D]
    float* v_opac;     // [C*N]
    float* v_abs;      // [C*N,2] or null
};

// per-intersection gradient record: mx, my, a, b, c, opacity, colour[D], |mx|, |my| (the last two with absgrad)
// ABS = false: no absgrad; the per-lane |gradient| sums are compiled out.
// BLOCKS (16-pixel tiles, fixed channel count): visit only the blocks the forward marked for each intersection
// (blocks[k]), in one pass per block with the lane sums in registers; the same blocks composite, in the same
// order and with the same operations, so the records are bitwise those of the span loops.
template <int DT, int TS, bool ABS, bool BLOCKS>
void backward_tile(const Inputs& in, const recon_raster::Splat* splats, int64_t t, const float* T_final,
                   const int32_t* last_ids, const float* v_color, const float* v_alpha_eff, const uint32_t* blocks,
                   float* rec, const int32_t* slot, bool absgrad, TileState& st) {
    static_assert(!BLOCKS || (TS == 16 && DT > 0), "block masks exist for 16-pixel tiles and fixed channels");
    const int D = DT > 0 ? DT : in.D;
    const int ts = TS > 0 ? TS : in.ts;
    const int P = ts * ts;
    const int BW = block_width<TS>(ts);
    const TileBox b = tile_box(in, t);
    if (b.end <= b.start) return;
    const int G = 6 + D + (absgrad ? 2 : 0);
    for (int64_t k = b.start; k < b.end; ++k)  // intersections this tile skips contribute zero
        std::fill(rec + int64_t(slot[k]) * G, rec + int64_t(slot[k] + 1) * G, 0.0f);
    float* __restrict T = st.T.data();
    float* __restrict Tf = st.Tf.data();
    float* __restrict gA = st.gA.data();
    float* __restrict S = st.S.data();
    float* __restrict gC = st.gC.data();
    int32_t* __restrict last = st.last.data();
    const int64_t img_off = static_cast<int64_t>(b.cam) * in.H * in.W;
    int32_t kmax = -1;
    int32_t* __restrict rowmax = st.rowv.data();
    for (int ly = 0; ly < ts; ++ly) {
        rowmax[ly] = -1;
        for (int lx = 0; lx < ts; ++lx) {
            const int p = ly * ts + lx;
            const int x = b.x0 + lx, y = b.y0 + ly;
            if (x < b.x1 && y < b.y1) {
                const int64_t pix = img_off + static_cast<int64_t>(y) * in.W + x;
                last[p] = last_ids[pix];
                T[p] = Tf[p] = T_final[pix];
                gA[p] = v_alpha_eff[pix];
                for (int c = 0; c < D; ++c) gC[size_t(c) * P + p] = v_color[pix * D + c];
            } else {
                last[p] = -1;
                T[p] = Tf[p] = 1.0f;
                gA[p] = 0.0f;
                for (int c = 0; c < D; ++c) gC[size_t(c) * P + p] = 0.0f;
            }
            for (int c = 0; c < D; ++c) S[size_t(c) * P + p] = 0.0f;
            rowmax[ly] = std::max(rowmax[ly], last[p]);
        }
        kmax = std::max(kmax, rowmax[ly]);
    }
    if (kmax < b.start) return;

    const float amax = in.alpha_max;
    const float thr = recon_raster::kAlphaThreshold;
    float* __restrict L = st.lanes.data();  // [8 + D][BW]
    float* __restrict Lmx = L;
    float* __restrict Lmy = L + BW;
    float* __restrict La = L + 2 * BW;
    float* __restrict Lb = L + 3 * BW;
    float* __restrict Lc = L + 4 * BW;
    float* __restrict Lop = L + 5 * BW;
    float* __restrict Lax = L + 6 * BW;
    float* __restrict Lay = L + 7 * BW;
    float* __restrict Lcol = L + 8 * BW;
    for (int64_t k = kmax; k >= b.start; --k) {
        // with the forward's block masks: nothing to do where no block of this tile may composite k
        uint32_t kbits = 0;
        if (BLOCKS) {
            kbits = blocks[k];
            if (kbits == 0) continue;
        }
        if (k - kPrefetch >= b.start) prefetch_gaussian(in, splats, in.ids[k - kPrefetch]);
        const int64_t g = in.ids[k];
        const recon_raster::Splat sp = splats[g];
        const int32_t kk = static_cast<int32_t>(k);
        int ylo = 0, yhi = -1, xlo = 0, xhi = -1;
        if (!BLOCKS) {
            if (!(sp.ey >= 0.0f)) continue;
            if (!recon_raster::pixel_span(sp.my, sp.ey, b.y0, b.y1, ylo, yhi) ||
                !recon_raster::pixel_span(sp.mx, sp.ex, b.x0, b.x1, xlo, xhi))
                continue;
            // rows where some pixel still composites this Gaussian (its last index is >= k)
            while (ylo <= yhi && rowmax[ylo - b.y0] < kk) ++ylo;
            while (yhi >= ylo && rowmax[yhi - b.y0] < kk) --yhi;
            if (ylo > yhi) continue;
        }
        const float mx = sp.mx, my = sp.my, ca = sp.a, cb = sp.b, cc = sp.c, op = sp.op;
        const float* colp = in.colors + g * D;
        float col[DT > 0 ? DT : 1];
        if (DT > 0)
            for (int c = 0; c < D; ++c) col[c] = colp[c];
        const float px0 = static_cast<float>(b.x0) + 0.5f;
        if constexpr (BLOCKS) {
            // the masked blocks in increasing (row, column block) order, the lanes' gradient sums kept in registers
            // (eight-lane vectors: the same operations, in the same order, as the lane loop below)
            using recon_lanes::F8;
            using recon_lanes::I8;
            auto load = [](const void* p) {
                F8 v;
                std::memcpy(&v, p, sizeof(F8));
                return v;
            };
            auto store = [](void* p, F8 v) { std::memcpy(p, &v, sizeof(F8)); };
            const F8 lane = {0.f, 1.f, 2.f, 3.f, 4.f, 5.f, 6.f, 7.f};
            F8 aLmx{}, aLmy{}, aLa{}, aLb{}, aLc{}, aLop{}, aLax{}, aLay{}, aLcol[DT > 0 ? DT : 1] = {};
            while (kbits != 0) {
                const int bit = __builtin_ctz(kbits);
                kbits &= kbits - 1;
                const int ly = bit >> 1, h = bit & 1;
                if (rowmax[ly] < kk) continue;
                const float dy = my - (static_cast<float>(b.y0 + ly) + 0.5f);
                const float cdy2 = cc * dy * dy;  // row constant of sigma
                const int row = ly * 16 + h * 8;
                const float pxb = px0 + static_cast<float>(h * 8);
                const F8 dx = mx - (pxb + lane);
                F8 sigma, vis;
                const F8 a0 = recon_raster::eval_alpha_row<F8>(ca, cb, cdy2, op, dx, dy, amax, sigma, vis);
                I8 lrv;
                std::memcpy(&lrv, last + row, sizeof(I8));
                const I8 ok = (kk <= lrv) & (sigma >= 0.0f) & (a0 >= thr);
                const F8 alpha = ok ? a0 : F8{};
                const F8 Trv = load(T + row);
                const F8 ra = 1.0f / (1.0f - alpha);
                const F8 Tn = Trv * ra;  // transmittance in front of this Gaussian
                const F8 fac = alpha * Tn;
                F8 v_alpha = load(Tf + row) * ra * load(gA + row);
                for (int c = 0; c < DT; ++c) {
                    float* Sq = S + size_t(c) * P + row;
                    const F8 Sv = load(Sq), gCv = load(gC + size_t(c) * P + row);
                    v_alpha += (col[c] * Tn - Sv * ra) * gCv;
                    aLcol[c] += ok ? fac * gCv : F8{};
                    store(Sq, Sv + (ok ? col[c] * fac : F8{}));
                }
                store(T + row, ok ? Tn : Trv);
                const I8 grad = ok & (op * vis <= amax);
                const F8 v_sigma = grad ? -op * vis * v_alpha : F8{};
                add_lane_grads<ABS>(v_sigma, dx, dy, ca, cb, cc, aLa, aLb, aLc, aLmx, aLmy, aLax, aLay);
                aLop += grad ? vis * v_alpha : F8{};
            }
            store(Lmx, aLmx);
            store(Lmy, aLmy);
            store(La, aLa);
            store(Lb, aLb);
            store(Lc, aLc);
            store(Lop, aLop);
            store(Lax, aLax);
            store(Lay, aLay);
            for (int c = 0; c < DT; ++c) store(Lcol + c * 8, aLcol[c]);
        } else {
            // no masks (other tile sizes or channel counts): every block of the span, two passes per block
            const int h0 = (xlo - b.x0) / BW, h1 = (xhi - b.x0) / BW + 1;
            std::fill(L, L + size_t(8 + D) * BW, 0.0f);
            for (int y = ylo; y <= yhi; ++y) {
                if (rowmax[y - b.y0] < kk) continue;
                const float dy = my - (static_cast<float>(y) + 0.5f);
                const float cdy2 = cc * dy * dy;  // row constant of sigma
                for (int h = h0; h < h1; ++h) {
                    const int row = (y - b.y0) * ts + h * BW;
                    const float pxb = px0 + static_cast<float>(h * BW);
                    float* __restrict Tr = T + row;
                    const float* __restrict Tfr = Tf + row;
                    const float* __restrict gAr = gA + row;
                    const int32_t* __restrict lr = last + row;
                    if (DT > 0) {
                        float* __restrict al = st.lane_alpha.data();
                        float* __restrict vv = st.lane_vis.data();
                        // pass 1 as in the forward: skip blocks where no pixel composites this Gaussian
        #pragma omp simd
                        for (int lx = 0; lx < BW; ++lx) {
                            const float dx = mx - (pxb + static_cast<float>(lx));
                            float sigma, vis;
                            const float alpha = recon_raster::eval_alpha_row(ca, cb, cdy2, op, dx, dy, amax, sigma, vis);
                            const bool ok = kk <= lr[lx] && sigma >= 0.0f && alpha >= thr;
                            al[lx] = ok ? alpha : 0.0f;
                            vv[lx] = vis;
                        }
                        if (!recon_raster::any_positive(al, BW)) continue;
        #pragma omp simd
                        for (int lx = 0; lx < BW; ++lx) {
                            const float dx = mx - (pxb + static_cast<float>(lx));
                            const float alpha = al[lx];
                            const float vis = vv[lx];
                            const bool ok = alpha > 0.0f;
                            const float ra = 1.0f / (1.0f - alpha);
                            const float Tn = Tr[lx] * ra;  // transmittance in front of this Gaussian
                            const float fac = alpha * Tn;
                            float v_alpha = Tfr[lx] * ra * gAr[lx];
                            for (int c = 0; c < DT; ++c) {
                                const size_t q = size_t(c) * P + row + lx;
                                v_alpha += (col[c] * Tn - S[q] * ra) * gC[q];
                                Lcol[c * BW + lx] += ok ? fac * gC[q] : 0.0f;
                                S[q] += ok ? col[c] * fac : 0.0f;
                            }
                            Tr[lx] = ok ? Tn : Tr[lx];
                            const bool grad = ok && op * vis <= amax;
                            const float v_sigma = grad ? -op * vis * v_alpha : 0.0f;
                            add_lane_grads<ABS>(v_sigma, dx, dy, ca, cb, cc, La[lx], Lb[lx], Lc[lx], Lmx[lx], Lmy[lx],
                                                Lax[lx], Lay[lx]);
                            Lop[lx] += grad ? vis * v_alpha : 0.0f;
                        }
                    } else {
                        for (int lx = 0; lx < BW; ++lx) {
                            const float dx = mx - (pxb + static_cast<float>(lx));
                            float sigma, vis;
                            const float alpha = recon_raster::eval_alpha_row(ca, cb, cdy2, op, dx, dy, amax, sigma, vis);
                            if (!(kk <= lr[lx] && sigma >= 0.0f && alpha >= thr)) continue;
                            const float ra = 1.0f / (1.0f - alpha);
                            const float Tn = Tr[lx] * ra;
                            const float fac = alpha * Tn;
                            float v_alpha = Tfr[lx] * ra * gAr[lx];
                            for (int c = 0; c < D; ++c) {
                                const size_t q = size_t(c) * P + row + lx;
                                v_alpha += (colp[c] * Tn - S[q] * ra) * gC[q];
                                Lcol[c * BW + lx] += fac * gC[q];
                                S[q] += colp[c] * fac;
                            }
                            Tr[lx] = Tn;
                            if (!(op * vis <= amax)) continue;
                            const float v_sigma = -op * vis * v_alpha;
                            add_lane_grads<ABS>(v_sigma, dx, dy, ca, cb, cc, La[lx], Lb[lx], Lc[lx], Lmx[lx], Lmy[lx],
                                                Lax[lx], Lay[lx]);
                            Lop[lx] += vis * v_alpha;
                        }
                    }
                }
            }
        }
        float* r = rec + int64_t(slot[k]) * G;
        float sums[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        if (BW == 8)
            recon_raster::row_sums_8x8(L, sums);
        else
            for (int j = 0; j < 8; ++j)
                for (int lx = 0; lx < BW; ++lx) sums[j] += L[j * BW + lx];
        for (int j = 0; j < 6; ++j) r[j] = sums[j];
        for (int c = 0; c < D; ++c) {
            float s = 0.0f;
            for (int lx = 0; lx < BW; ++lx) s += Lcol[c * BW + lx];
            r[6 + c] = s;
        }
        if (absgrad) {
            r[6 + D] = sums[6];
            r[7 + D] = sums[7];
        }
    }
}

// splats: the forward's records (null: made here); blocks: the forward's block masks (null: none)
template <int DT, int TS, bool ABS = true>
void backward_all(const Inputs& in, const recon_raster::Splat* splats, const uint32_t* blocks, const float* T_final,
                  const int32_t* last_ids, const float* v_color, const float* v_alpha_eff, bool absgrad,
                  GradOut out) {
    const int64_t n_tiles = static_cast<int64_t>(in.C) * in.tw * in.th;
    const int P = in.ts * in.ts;
    const int D = in.D;
    const int G = 6 + D + (absgrad ? 2 : 0);
    const int64_t CN = static_cast<int64_t>(in.C) * in.N;
    const int64_t M = in.n_isects;
    // every record is written (zeros included) by the tile that owns it: no initialisation pass needed
    std::unique_ptr<float[]> rec(new float[static_cast<size_t>(std::max<int64_t>(M, 1)) * G]);
    float* R = rec.get();
    // records are stored grouped by Gaussian, each group in increasing intersection order (CSR by a counting
    // sort): slot[k] is where intersection k writes, and the sums below read each group front to back
    std::vector<int32_t> first(static_cast<size_t>(CN) + 1, 0);
    std::vector<int32_t> slot(static_cast<size_t>(M));
    for (int64_t k = 0; k < M; ++k) ++first[static_cast<size_t>(in.ids[k]) + 1];
    for (int64_t g = 0; g < CN; ++g) first[g + 1] += first[g];
    {
        std::vector<int32_t> cursor(first.begin(), first.end() - 1);
        for (int64_t k = 0; k < M; ++k) slot[k] = cursor[in.ids[k]]++;
    }
    std::vector<recon_raster::Splat> own;
    if (splats == nullptr) {
        own.resize(static_cast<size_t>(CN));
        make_splats(in, own.data());
        splats = own.data();
    }
    const bool use_blocks = TS == 16 && DT > 0 && blocks != nullptr;
#pragma omp parallel
    {
        TileState st;
        st.init(P, D, in.ts);
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < n_tiles; ++t) {
            if constexpr (TS == 16 && DT > 0) {
                if (use_blocks) {
                    backward_tile<DT, TS, ABS, true>(in, splats, t, T_final, last_ids, v_color, v_alpha_eff, blocks, R,
                                                     slot.data(), absgrad, st);
                    continue;
                }
            }
            backward_tile<DT, TS, ABS, false>(in, splats, t, T_final, last_ids, v_color, v_alpha_eff, nullptr, R,
                                              slot.data(), absgrad, st);
        }
#pragma omp for schedule(static)
        for (int64_t g = 0; g < CN; ++g) {
            float a[64 + 8] = {};
            const int Gc = std::min(G, 64 + 8);
            for (int32_t j = first[g]; j < first[g + 1]; ++j) {
                const float* r = R + int64_t(j) * G;
                for (int q = 0; q < Gc; ++q) a[q] += r[q];
            }
            out.v_means2d[2 * g] = a[0];
            out.v_means2d[2 * g + 1] = a[1];
            out.v_conics[3 * g] = a[2];
            out.v_conics[3 * g + 1] = a[3];
            out.v_conics[3 * g + 2] = a[4];
            out.v_opac[g] = a[5];
            for (int c = 0; c < D; ++c) {
                float v = 0.0f;
                if (6 + c < Gc) {
                    v = a[6 + c];
                } else {  // more channels than the stack array holds
                    for (int32_t j = first[g]; j < first[g + 1]; ++j) v += R[int64_t(j) * G + 6 + c];
                }
                out.v_colors[g * D + c] = v;
            }
            if (absgrad) {
                float ax = 0.0f, ay = 0.0f;
                for (int32_t j = first[g]; j < first[g + 1]; ++j) {
                    ax += R[int64_t(j) * G + 6 + D];
                    ay += R[int64_t(j) * G + 7 + D];
                }
                out.v_abs[2 * g] = ax;
                out.v_abs[2 * g + 1] = ay;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// bindings
// ---------------------------------------------------------------------------------------------
void check(const torch::Tensor& t, const char* name, torch::ScalarType dt) {
    TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
    TORCH_CHECK(t.scalar_type() == dt, name, " has the wrong dtype");
    TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

Inputs make_inputs(const torch::Tensor& means2d, const torch::Tensor& conics, const torch::Tensor& colors,
                   const torch::Tensor& opacities, const c10::optional<torch::Tensor>& depths,
                   const c10::optional<torch::Tensor>& far_depths, const torch::Tensor& offsets,
                   const torch::Tensor& flatten_ids, int64_t width, int64_t height, int64_t tile_size,
                   double alpha_max) {
    check(means2d, "means2d", torch::kFloat32);
    check(conics, "conics", torch::kFloat32);
    check(colors, "colors", torch::kFloat32);
    check(opacities, "opacities", torch::kFloat32);
    check(offsets, "isect_offsets", torch::kInt32);
    check(flatten_ids, "flatten_ids", torch::kInt32);
    TORCH_CHECK(colors.dim() == 3, "colors must be [C, N, D]");
    Inputs in;
    in.C = static_cast<int>(colors.size(0));
    in.N = static_cast<int>(colors.size(1));
    in.D = static_cast<int>(colors.size(2));
    TORCH_CHECK(means2d.numel() == int64_t(in.C) * in.N * 2, "means2d must be [C, N, 2]");
    TORCH_CHECK(conics.numel() == int64_t(in.C) * in.N * 3, "conics must be [C, N, 3]");
    TORCH_CHECK(opacities.numel() == int64_t(in.C) * in.N, "opacities must be [C, N]");
    in.W = static_cast<int>(width);
    in.H = static_cast<int>(height);
    in.ts = static_cast<int>(tile_size);
    in.tw = static_cast<int>((width + tile_size - 1) / tile_size);
    in.th = static_cast<int>((height + tile_size - 1) / tile_size);
    TORCH_CHECK(offsets.numel() == int64_t(in.C) * in.tw * in.th, "isect_offsets must be [C, tile_h, tile_w]");
    in.means2d = means2d.data_ptr<float>();
    in.conics = conics.data_ptr<float>();
    in.colors = colors.data_ptr<float>();
    in.opacities = opacities.data_ptr<float>();
    in.depths = nullptr;
    in.far = nullptr;
    if (far_depths.has_value() && far_depths->defined()) {
        TORCH_CHECK(depths.has_value() && depths->defined(), "far_depths needs depths");
        check(*far_depths, "far_depths", torch::kFloat32);
        check(*depths, "depths", torch::kFloat32);
        TORCH_CHECK(far_depths->numel() == int64_t(in.C) * in.H * in.W, "far_depths must be [C, H, W]");
        in.far = far_depths->data_ptr<float>();
        in.depths = depths->data_ptr<float>();
    }
    in.offsets = offsets.data_ptr<int32_t>();
    in.ids = flatten_ids.data_ptr<int32_t>();
    in.n_isects = flatten_ids.numel();
    in.alpha_max = static_cast<float>(alpha_max);
    return in;
}

std::vector<torch::Tensor> rasterize_fwd(const torch::Tensor& means2d, const torch::Tensor& conics,
                                         const torch::Tensor& colors, const torch::Tensor& opacities,
                                         const c10::optional<torch::Tensor>& depths,
                                         const c10::optional<torch::Tensor>& far_depths,
                                         const torch::Tensor& offsets, const torch::Tensor& flatten_ids,
                                         int64_t width, int64_t height, int64_t tile_size, double alpha_max) {
    Inputs in = make_inputs(means2d, conics, colors, opacities, depths, far_depths, offsets, flatten_ids, width,
                            height, tile_size, alpha_max);
    auto fopt = torch::TensorOptions().dtype(torch::kFloat32);
    torch::Tensor out_color = torch::empty({in.C, in.H, in.W, in.D}, fopt);
    torch::Tensor out_alpha = torch::empty({in.C, in.H, in.W, 1}, fopt);
    torch::Tensor out_T = torch::empty({in.C, in.H, in.W}, fopt);
    torch::Tensor out_last = torch::empty({in.C, in.H, in.W}, torch::TensorOptions().dtype(torch::kInt32));
    // the per-Gaussian records and per-intersection block masks, kept for the backward
    static_assert(sizeof(recon_raster::Splat) == 8 * sizeof(float), "Splat is 8 floats");
    torch::Tensor splats = torch::empty({int64_t(in.C) * in.N, 8}, fopt);
    // masks exist only for 16-pixel tiles with a fixed channel count (forward_all's DT > 0 cases); otherwise none
    // (the backward then finds the blocks itself)
    const bool masked = in.ts == 16 && in.D >= 1 && in.D <= 4;
    torch::Tensor blocks = torch::empty({masked ? in.n_isects : 0}, torch::TensorOptions().dtype(torch::kInt32));
    {
        pybind11::gil_scoped_release nogil;
        float* oc = out_color.data_ptr<float>();
        float* oa = out_alpha.data_ptr<float>();
        float* ot = out_T.data_ptr<float>();
        int32_t* ol = out_last.data_ptr<int32_t>();
        auto* sp = reinterpret_cast<recon_raster::Splat*>(splats.data_ptr<float>());
        auto* bl = masked ? reinterpret_cast<uint32_t*>(blocks.data_ptr<int32_t>()) : nullptr;
        make_splats(in, sp);
        const bool t16 = in.ts == 16;
        const bool has_far = in.far != nullptr && in.depths != nullptr;
        switch (in.D) {
            case 1: t16 ? forward_all<1, 16>(in, sp, oc, oa, ot, ol, bl) : forward_all<1, 0>(in, sp, oc, oa, ot, ol, bl); break;
            case 2: t16 ? forward_all<2, 16>(in, sp, oc, oa, ot, ol, bl) : forward_all<2, 0>(in, sp, oc, oa, ot, ol, bl); break;
            case 3:
                if (t16 && !has_far) forward_all<3, 16, false>(in, sp, oc, oa, ot, ol, bl);
                else t16 ? forward_all<3, 16>(in, sp, oc, oa, ot, ol, bl) : forward_all<3, 0>(in, sp, oc, oa, ot, ol, bl);
                break;
            case 4:
                if (t16 && !has_far) forward_all<4, 16, false>(in, sp, oc, oa, ot, ol, bl);
                else t16 ? forward_all<4, 16>(in, sp, oc, oa, ot, ol, bl) : forward_all<4, 0>(in, sp, oc, oa, ot, ol, bl);
                break;
            default: forward_all<0, 0>(in, sp, oc, oa, ot, ol, bl); break;
        }
    }
    return {out_color, out_alpha, out_T, out_last, splats, blocks};
}

std::vector<torch::Tensor> rasterize_bwd(const torch::Tensor& means2d, const torch::Tensor& conics,
                                         const torch::Tensor& colors, const torch::Tensor& opacities,
                                         const torch::Tensor& offsets, const torch::Tensor& flatten_ids,
                                         int64_t width, int64_t height, int64_t tile_size, double alpha_max,
                                         const torch::Tensor& T_final, const torch::Tensor& last_ids,
                                         const torch::Tensor& v_color, const torch::Tensor& v_alpha_eff,
                                         bool absgrad, const c10::optional<torch::Tensor>& splats_opt,
                                         const c10::optional<torch::Tensor>& blocks_opt) {
    Inputs in = make_inputs(means2d, conics, colors, opacities, c10::nullopt, c10::nullopt, offsets, flatten_ids,
                            width, height, tile_size, alpha_max);
    check(T_final, "T_final", torch::kFloat32);
    check(last_ids, "last_ids", torch::kInt32);
    check(v_color, "v_render_colors", torch::kFloat32);
    check(v_alpha_eff, "v_render_alphas", torch::kFloat32);
    const int64_t npix = int64_t(in.C) * in.H * in.W;
    TORCH_CHECK(T_final.numel() == npix && last_ids.numel() == npix && v_alpha_eff.numel() == npix,
                "per-pixel buffers must be [C, H, W]");
    TORCH_CHECK(v_color.numel() == npix * in.D, "v_render_colors must be [C, H, W, D]");
    auto fopt = torch::TensorOptions().dtype(torch::kFloat32);
    torch::Tensor v_means2d = torch::empty({in.C, in.N, 2}, fopt);
    torch::Tensor v_conics = torch::empty({in.C, in.N, 3}, fopt);
    torch::Tensor v_colors = torch::empty({in.C, in.N, in.D}, fopt);
    torch::Tensor v_opac = torch::empty({in.C, in.N}, fopt);
    torch::Tensor v_abs = absgrad ? torch::empty({in.C, in.N, 2}, fopt) : torch::empty({0}, fopt);
    const recon_raster::Splat* sp = nullptr;
    if (splats_opt.has_value() && splats_opt->defined() && splats_opt->numel() > 0) {
        check(*splats_opt, "splats", torch::kFloat32);
        TORCH_CHECK(splats_opt->numel() == int64_t(in.C) * in.N * 8, "splats must be [C*N, 8] from rasterize_fwd");
        sp = reinterpret_cast<const recon_raster::Splat*>(splats_opt->data_ptr<float>());
    }
    const uint32_t* bl = nullptr;
    if (blocks_opt.has_value() && blocks_opt->defined() && blocks_opt->numel() > 0) {
        check(*blocks_opt, "blocks", torch::kInt32);
        TORCH_CHECK(blocks_opt->numel() == in.n_isects, "blocks must be [n_isects] from rasterize_fwd");
        bl = reinterpret_cast<const uint32_t*>(blocks_opt->data_ptr<int32_t>());
    }
    {
        pybind11::gil_scoped_release nogil;
        GradOut out{v_means2d.data_ptr<float>(), v_conics.data_ptr<float>(), v_colors.data_ptr<float>(),
                    v_opac.data_ptr<float>(), absgrad ? v_abs.data_ptr<float>() : nullptr};
        const float* tf = T_final.data_ptr<float>();
        const int32_t* li = last_ids.data_ptr<int32_t>();
        const float* vc = v_color.data_ptr<float>();
        const float* va = v_alpha_eff.data_ptr<float>();
        const bool t16 = in.ts == 16;
        switch (in.D) {
            case 1: t16 ? backward_all<1, 16>(in, sp, bl, tf, li, vc, va, absgrad, out) : backward_all<1, 0>(in, sp, bl, tf, li, vc, va, absgrad, out); break;
            case 2: t16 ? backward_all<2, 16>(in, sp, bl, tf, li, vc, va, absgrad, out) : backward_all<2, 0>(in, sp, bl, tf, li, vc, va, absgrad, out); break;
            case 3:
                if (t16 && !absgrad) backward_all<3, 16, false>(in, sp, bl, tf, li, vc, va, absgrad, out);
                else t16 ? backward_all<3, 16>(in, sp, bl, tf, li, vc, va, absgrad, out) : backward_all<3, 0>(in, sp, bl, tf, li, vc, va, absgrad, out);
                break;
            case 4:
                if (t16 && !absgrad) backward_all<4, 16, false>(in, sp, bl, tf, li, vc, va, absgrad, out);
                else t16 ? backward_all<4, 16>(in, sp, bl, tf, li, vc, va, absgrad, out) : backward_all<4, 0>(in, sp, bl, tf, li, vc, va, absgrad, out);
                break;
            default: backward_all<0, 0>(in, sp, bl, tf, li, vc, va, absgrad, out); break;
        }
    }
    return {v_means2d, v_conics, v_colors, v_opac, v_abs};
}

int64_t max_threads() { return n_threads(); }

} // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "recon CPU Gaussian tile rasteriser (forward/backward)";
    m.def("rasterize_fwd", &rasterize_fwd, "tile rasteriser forward");
    m.def("rasterize_bwd", &rasterize_bwd, "tile rasteriser backward");
    m.def("max_threads", &max_threads, "OpenMP threads the kernel will use");
    m.def("project_fwd", &recon_ops::project_fwd, "EWA projection forward");
    m.def("project_bwd", &recon_ops::project_bwd, "EWA projection backward");
    m.def("sh_fwd", &recon_ops::sh_fwd, "SH colour forward");
    m.def("sh_bwd", &recon_ops::sh_bwd, "SH colour backward");
    m.def("isect_tiles", &recon_ops::isect_tiles, "tile binning (CSR of intersections)");
}
