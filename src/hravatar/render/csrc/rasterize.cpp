// CPU Gaussian rasterizer: forward and backward of front-to-back alpha compositing of
// screen-space 2D Gaussians, gsplat's numerics ("classic" mode).
//
// Plain C++17 with GCC/Clang vector extensions (no torch headers, compiles in seconds), OpenMP
// over (camera, 16x16 tile) work items, SIMD over 8-pixel row segments (32 per tile; one 256-bit
// vector each, native on AVX2 and AVX-512 alike: 16-float rows were split and partly scalarised
// by the compiler on AVX2-only machines, about 3.5x slower).
//
// Layout of the work:
//  * bin:      per camera, Gaussians (already sorted by depth) are appended to the lists of the
//              tiles their rectangle covers, so every tile list is depth ordered.
//  * forward:  per tile, pass 1 culls each listed Gaussian against every 8-pixel segment (exact
//              conservative test: the segment must meet the ellipse opacity*G >= 1/255), pass 2
//              walks each segment's list with its 8 pixels in one vector and stops a segment when
//              all its pixels terminated (transmittance <= 1e-4).
//  * backward: per tile, Gaussians are walked back to front from the last contributing index of
//              the tile's pixels; gradients of a Gaussian summed over the tile are written into the
//              slot of that (tile, Gaussian) intersection; a final pass sums slots per Gaussian in a
//              fixed order (no atomics, so results are deterministic whatever the thread schedule).
//
// Floating point: compiled without -ffast-math and with -ffp-contract=off on purpose: the
// forward and the backward evaluate alpha through the same inline function and must take
// bit-identical decisions (alpha >= 1/255, termination) so that the backward reconstructs the
// forward exactly; exp() is our own vectorised polynomial (Cody-Waite + Cephes-style minimax
// coefficients, ~1 ulp on the range used).

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#include <algorithm>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#define HR_INLINE inline __attribute__((always_inline))

namespace {

constexpr int TS = 16;  // tile size (pixels); a tile row = two segments of 8 pixels

constexpr float ALPHA_THRESHOLD = 1.0f / 255.0f;
constexpr float ALPHA_MAX = 0.999f;
constexpr float T_MIN = 1e-4f;

// Per (camera, Gaussian) parameters used by every tile.
struct GP {
    float mx, my;        // 2D mean (pixels)
    float ca, cb, cc;    // conic: sigma = 0.5 ca dx^2 + cb dx dy + 0.5 cc dy^2, dx = mean - pixel
    float op;            // opacity
    float thr;           // sigma bound of the alpha >= 1/255 region (with a safety margin)
    float ey;            // half height of that region (pixels, with margin); < 0: no culling
    float k_x;           // px* = mx + k_x * dy  (centre of the region on a row)
    float schur;         // sigma_min(dy) = 0.5 * schur * dy^2
    float inv_ca2;       // 2 / ca
    float pad;
};

void prepare(const float* means2d, const float* conics, const float* opac, int64_t n, GP* out, int nthreads) {
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t i = 0; i < n; ++i) {
        GP g;
        g.mx = means2d[2 * i];
        g.my = means2d[2 * i + 1];
        g.ca = conics[3 * i];
        g.cb = conics[3 * i + 1];
        g.cc = conics[3 * i + 2];
        g.op = opac[i];
        double op = g.op;
        double thr = op > 0 ? std::log(op * 255.0) : -1.0;
        // Margins make the culling conservative: a culled pixel has alpha < 1/255 by a factor
        // exp(-1e-3) or more, far beyond float rounding of sigma.
        thr = thr * (1.0 + 1e-3) + 1e-3;
        g.thr = (float)thr;
        double ca = g.ca, cb = g.cb, cc = g.cc;
        double det = ca * cc - cb * cb;
        bool ok = std::isfinite(ca) && std::isfinite(cb) && std::isfinite(cc) && ca > 0 && det > 0 && thr > 0;
        if (ok) {
            double ey = std::sqrt(2.0 * thr * ca / det);
            g.ey = (float)(ey * (1.0 + 1e-4) + 0.01);
            g.k_x = (float)(cb / ca);
            g.schur = (float)(det / ca);
            g.inv_ca2 = (float)(2.0 / ca);
        } else {
            g.ey = -1.0f;  // no culling
            g.k_x = 0.0f;
            g.schur = 0.0f;
            g.inv_ca2 = 0.0f;
        }
        g.pad = 0.0f;
        out[i] = g;
    }
}

struct Scene {
    int C, N, D, W, H, TW, TH;
    const GP* gp;
    const float* colors;   // [C*N, D]
    const float* bg;       // [C, D] or null
    const int64_t* offsets;  // [C*TH*TW + 1]
    const int32_t* list;     // flat ids c*N + g, per tile in depth order
};

typedef void (*fwd_fn)(const Scene&, float*, float*, float*, int32_t*, int);
typedef void (*bwd_fn)(const Scene&, const float*, const int32_t*, const float*, const float*, float*, int);

// Channel counts with a compiled kernel; other counts are padded with zero channels up to the
// next one (Python side), counts above DMAX are rendered in chunks.
constexpr int DMAX = 32;

Scene make_scene(int C, int N, int D, int W, int H, const GP* gp, const float* colors, const float* bg,
                 const int64_t* offsets, const int32_t* list) {
    Scene s;
    s.C = C; s.N = N; s.D = D; s.W = W; s.H = H;
    s.TW = (W + TS - 1) / TS;
    s.TH = (H + TS - 1) / TS;
    s.gp = gp; s.colors = colors; s.bg = bg; s.offsets = offsets; s.list = list;
    return s;
}



// ---- forward and backward over 8-pixel row segments --------------------------------------------
typedef float vf8 __attribute__((vector_size(32)));
typedef int32_t vi8 __attribute__((vector_size(32)));

HR_INLINE vf8 splat8(float x) { return vf8{} + x; }
HR_INLINE vi8 splati8(int32_t x) { return vi8{} + x; }
HR_INLINE bool any8(vi8 m) {
#if defined(__AVX2__) || defined(__AVX512F__)
    __m256i a;
    std::memcpy(&a, &m, 32);
    return !_mm256_testz_si256(a, a);
#else
    int32_t r = 0;
    for (int i = 0; i < 8; ++i) r |= m[i];
    return r != 0;
#endif
}
HR_INLINE vf8 vmin8(vf8 a, vf8 b) { return a < b ? a : b; }
HR_INLINE vf8 vmax8(vf8 a, vf8 b) { return a > b ? a : b; }

HR_INLINE vf8 vexp_neg8(vf8 x) {
    x = vmax8(vmin8(x, splat8(0.0f)), splat8(-87.0f));
    vf8 t = x * 1.44269504088896341f - 0.5f;
    vi8 n = __builtin_convertvector(t, vi8);
    vf8 nf = __builtin_convertvector(n, vf8);
    vf8 r = x - nf * 0.693359375f;
    r = r - nf * -2.12194440e-4f;
    vf8 p = splat8(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    vf8 e = (p * (r * r) + r) + 1.0f;
    vi8 bits = (n + 127) << 23;
    vf8 scale;
    std::memcpy(&scale, &bits, 32);
    return e * scale;
}

struct Alpha8 {
    vf8 dx, vis, alpha, sigma;
};

// The one place alpha is computed (forward and backward must agree bit for bit).
HR_INLINE Alpha8 eval_alpha8(const GP& g, vf8 px, float py) {
    Alpha8 a;
    a.dx = g.mx - px;
    float dy = g.my - py;
    float half_ca = 0.5f * g.ca;
    float cbdy = g.cb * dy;
    float c0 = 0.5f * g.cc * dy * dy;
    a.sigma = a.dx * (half_ca * a.dx + cbdy) + c0;
    a.vis = vexp_neg8(-a.sigma);
    a.alpha = vmin8(g.op * a.vis, splat8(ALPHA_MAX));
    return a;
}

// Bit mask over the 32 segments (row r, half h -> bit 2r+h) the Gaussian may touch.
HR_INLINE uint32_t seg_mask(const GP& g, int x0, int y0, int nrows, int ncols) {
    const int nh = ncols > 8 ? 2 : 1;
    if (!(g.ey >= 0.0f)) {
        uint32_t m = 0;
        for (int r = 0; r < nrows; ++r) m |= (nh == 2 ? 3u : 1u) << (2 * r);
        return m;
    }
    float ylo = g.my - g.ey - (float)y0 - 0.5f;
    float yhi = g.my + g.ey - (float)y0 - 0.5f;
    int r0 = std::max(0, (int)std::ceil(ylo));
    int r1 = std::min(nrows - 1, (int)std::floor(yhi));
    if (r0 > r1) return 0u;
    const float xlo0 = (float)x0 + 0.5f, xhi0 = (float)x0 + (float)std::min(ncols, 8) - 0.5f;
    const float xlo1 = (float)x0 + 8.5f, xhi1 = (float)x0 + (float)ncols - 0.5f;
    uint32_t m = 0;
    for (int r = r0; r <= r1; ++r) {
        float dy = g.my - ((float)(y0 + r) + 0.5f);
        float rem = g.thr - 0.5f * g.schur * dy * dy;
        float wx = std::sqrt(std::max(0.0f, rem * g.inv_ca2)) * (1.0f + 1e-4f) + 0.01f;
        float xc = g.mx + g.k_x * dy;
        if (xc - wx <= xhi0 && xc + wx >= xlo0) m |= 1u << (2 * r);
        if (nh == 2 && xc - wx <= xhi1 && xc + wx >= xlo1) m |= 2u << (2 * r);
    }
    return m;
}

template <int D>
void forward8_tile(const Scene& s, int64_t tile, std::vector<int32_t>& rl, float* out_color, float* out_alpha,
                   float* out_T, int32_t* out_last) {
    const int TT = s.TW * s.TH;
    const int c = (int)(tile / TT);
    const int t = (int)(tile % TT);
    const int tx = t % s.TW, ty = t / s.TW;
    const int x0 = tx * TS, y0 = ty * TS;
    const int nrows = std::min(TS, s.H - y0), ncols = std::min(TS, s.W - x0);
    const int64_t beg = s.offsets[tile], end = s.offsets[tile + 1];
    const int64_t len = end - beg;
    if ((int64_t)rl.size() < len * 32) rl.resize(len * 32);
    int32_t cnt[32] = {0};
    for (int64_t k = 0; k < len; ++k) {
        const GP& g = s.gp[s.list[beg + k]];
        uint32_t m = seg_mask(g, x0, y0, nrows, ncols);
        while (m) {
            int sg = __builtin_ctz(m);
            m &= m - 1;
            rl[(int64_t)sg * len + cnt[sg]++] = (int32_t)k;
        }
    }
    const float* bgc = s.bg ? s.bg + (int64_t)c * D : nullptr;
    for (int sg = 0; sg < 2 * nrows; ++sg) {
        const int r = sg >> 1, h = sg & 1;
        const int xs = x0 + 8 * h;
        const int nc = std::min(8, ncols - 8 * h);
        if (nc <= 0) continue;
        vf8 px;
        vi8 lane_ok;
        for (int i = 0; i < 8; ++i) {
            px[i] = (float)(xs + i) + 0.5f;
            lane_ok[i] = i < nc ? -1 : 0;
        }
        const float py = (float)(y0 + r) + 0.5f;
        vf8 T = splat8(1.0f);
        vf8 acc[D];
        for (int d = 0; d < D; ++d) acc[d] = splat8(0.0f);
        vi8 active = lane_ok;
        vi8 last = splati8(-1);
        const int32_t* segl = rl.data() + (int64_t)sg * len;
        for (int j = 0; j < cnt[sg]; ++j) {
            const GP& g = s.gp[s.list[beg + segl[j]]];
            const int32_t gid = s.list[beg + segl[j]];
            const Alpha8 e = eval_alpha8(g, px, py);
            const vf8 alpha = e.alpha;
            vi8 valid = active & (e.sigma >= 0.0f) & (alpha >= ALPHA_THRESHOLD);
            if (!any8(valid)) continue;
            vf8 nT = T * (1.0f - alpha);
            vi8 stop = valid & (nT <= T_MIN);
            vi8 contrib = valid & ~stop;
            vf8 w = contrib ? alpha * T : splat8(0.0f);
            const float* col = s.colors + (int64_t)gid * D;
            for (int d = 0; d < D; ++d) acc[d] += w * col[d];
            T = contrib ? nT : T;
            last = contrib ? splati8(segl[j]) : last;
            if (any8(stop)) {
                active &= ~stop;
                if (!any8(active)) break;
            }
        }
        const int64_t pix0 = ((int64_t)c * s.H + (y0 + r)) * s.W + xs;
        for (int i = 0; i < nc; ++i) {
            float* o = out_color + (pix0 + i) * D;
            for (int d = 0; d < D; ++d) o[d] = acc[d][i] + (bgc ? T[i] * bgc[d] : 0.0f);
            out_alpha[pix0 + i] = 1.0f - T[i];
            if (out_T) out_T[pix0 + i] = T[i];
            if (out_last) out_last[pix0 + i] = last[i];
        }
    }
}

HR_INLINE float hsum8(vf8 v) {
    typedef float v4 __attribute__((vector_size(16)));
    v4 c = __builtin_shufflevector(v, v, 0, 1, 2, 3);
    v4 d = __builtin_shufflevector(v, v, 4, 5, 6, 7);
    v4 s4 = c + d;
    return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}
HR_INLINE vf8 vabs8(vf8 a) { return a < 0.0f ? -a : a; }

// Backward over the same 8-pixel segments (slots: see the file header and hr_backward).
template <int D>
void backward8_tile(const Scene& s, int64_t tile, const float* T_final, const int32_t* lastp, const float* v_color,
                    const float* v_alpha_out, float* slots) {
    constexpr int K = 8 + D;  // mx, my, ca, cb, cc, op, colors[D], |mx|, |my|
    constexpr int NS = 2 * TS;
    const int TT = s.TW * s.TH;
    const int c = (int)(tile / TT);
    const int t = (int)(tile % TT);
    const int tx = t % s.TW, ty = t / s.TW;
    const int x0 = tx * TS, y0 = ty * TS;
    const int nrows = std::min(TS, s.H - y0), ncols = std::min(TS, s.W - x0);
    const int64_t beg = s.offsets[tile];
    const float* bgc = s.bg ? s.bg + (int64_t)c * D : nullptr;
    std::memset(slots + beg * K, 0, sizeof(float) * (size_t)(s.offsets[tile + 1] - beg) * K);

    vf8 T[NS], vbgA[NS], vr[NS][D], buf[NS][D];
    vi8 last[NS];
    int segmax[NS];
    int kmax = -1;
    vf8 px[2];
    for (int h = 0; h < 2; ++h)
        for (int i = 0; i < 8; ++i) px[h][i] = (float)(x0 + 8 * h + i) + 0.5f;
    for (int sg = 0; sg < NS; ++sg) {
        const int r = sg >> 1, h = sg & 1;
        segmax[sg] = -1;
        for (int i = 0; i < 8; ++i) {
            const int col = 8 * h + i;
            if (r < nrows && col < ncols) {
                const int64_t p = ((int64_t)c * s.H + (y0 + r)) * s.W + x0 + col;
                T[sg][i] = T_final[p];
                last[sg][i] = lastp[p];
                float bgsum = 0.0f;
                for (int d = 0; d < D; ++d) {
                    float v = v_color[p * D + d];
                    vr[sg][d][i] = v;
                    if (bgc) bgsum += bgc[d] * v;
                }
                vbgA[sg][i] = T_final[p] * (v_alpha_out[p] - bgsum);
                segmax[sg] = std::max(segmax[sg], lastp[p]);
            } else {
                T[sg][i] = 1.0f;
                last[sg][i] = -1;
                vbgA[sg][i] = 0.0f;
                for (int d = 0; d < D; ++d) vr[sg][d][i] = 0.0f;
            }
        }
        for (int d = 0; d < D; ++d) buf[sg][d] = splat8(0.0f);
        kmax = std::max(kmax, segmax[sg]);
    }
    for (int k = kmax; k >= 0; --k) {
        const int32_t gid = s.list[beg + k];
        const GP& g = s.gp[gid];
        uint32_t live = 0;
        for (int sg = 0; sg < NS; ++sg) live |= (uint32_t)(segmax[sg] >= k) << sg;
        if (!live) continue;
        uint32_t m = seg_mask(g, x0, y0, nrows, ncols) & live;
        if (!m) continue;
        const float* col = s.colors + (int64_t)gid * D;
        vf8 gmx = splat8(0.f), gmy = splat8(0.f), gca = splat8(0.f), gcb = splat8(0.f), gcc = splat8(0.f);
        vf8 gop = splat8(0.f), gax = splat8(0.f), gay = splat8(0.f);
        vf8 gcol[D];
        for (int d = 0; d < D; ++d) gcol[d] = splat8(0.0f);
        bool touched = false;
        while (m) {
            const int sg = __builtin_ctz(m);
            m &= m - 1;
            const int r = sg >> 1, h = sg & 1;
            const float py = (float)(y0 + r) + 0.5f;
            const Alpha8 e = eval_alpha8(g, px[h], py);
            const vf8 dx = e.dx, vis = e.vis, alpha = e.alpha;
            const float dy = g.my - py;
            vi8 valid = (splati8(k) <= last[sg]) & (e.sigma >= 0.0f) & (alpha >= ALPHA_THRESHOLD);
            if (!any8(valid)) continue;
            touched = true;
            vf8 ra = 1.0f / (1.0f - alpha);
            vf8 Tr = valid ? T[sg] * ra : T[sg];
            T[sg] = Tr;
            vf8 fac = valid ? alpha * Tr : splat8(0.0f);
            vf8 va = splat8(0.0f);
            for (int d = 0; d < D; ++d) {
                gcol[d] += fac * vr[sg][d];
                va += (col[d] * Tr - buf[sg][d] * ra) * vr[sg][d];
                buf[sg][d] += col[d] * fac;
            }
            va += ra * vbgA[sg];
            vf8 ov = g.op * vis;
            vi8 use = valid & (ov <= ALPHA_MAX);
            va = use ? va : splat8(0.0f);
            vf8 vsig = -ov * va;
            gop += vis * va;
            gca += 0.5f * vsig * dx * dx;
            gcb += vsig * dx * dy;
            gcc += 0.5f * vsig * (dy * dy);
            vf8 vmx = vsig * (g.ca * dx + g.cb * dy);
            vf8 vmy = vsig * (g.cb * dx + g.cc * dy);
            gmx += vmx;
            gmy += vmy;
            gax += vabs8(vmx);
            gay += vabs8(vmy);
        }
        if (!touched) continue;
        float* o = slots + (beg + k) * K;
        o[0] = hsum8(gmx);
        o[1] = hsum8(gmy);
        o[2] = hsum8(gca);
        o[3] = hsum8(gcb);
        o[4] = hsum8(gcc);
        o[5] = hsum8(gop);
        for (int d = 0; d < D; ++d) o[6 + d] = hsum8(gcol[d]);
        o[6 + D] = hsum8(gax);
        o[7 + D] = hsum8(gay);
    }
}

template <int D>
void backward8_all(const Scene& s, const float* T_final, const int32_t* last, const float* v_color,
                   const float* v_alpha, float* slots, int nthreads) {
    const int64_t ntiles = (int64_t)s.C * s.TW * s.TH;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads)
    for (int64_t tile = 0; tile < ntiles; ++tile) backward8_tile<D>(s, tile, T_final, last, v_color, v_alpha, slots);
}

template <int D>
void forward8_train_all(const Scene& s, float* out_color, float* out_alpha, float* out_T, int32_t* out_last,
                        int nthreads) {
    const int64_t ntiles = (int64_t)s.C * s.TW * s.TH;
#pragma omp parallel num_threads(nthreads)
    {
        std::vector<int32_t> rl;
#pragma omp for schedule(dynamic, 1)
        for (int64_t tile = 0; tile < ntiles; ++tile) forward8_tile<D>(s, tile, rl, out_color, out_alpha, out_T, out_last);
    }
}

template <int D>
void forward8_all(const Scene& s, float* out_color, float* out_alpha, int nthreads) {
    const int64_t ntiles = (int64_t)s.C * s.TW * s.TH;
#pragma omp parallel num_threads(nthreads)
    {
        std::vector<int32_t> rl;
#pragma omp for schedule(dynamic, 1)
        for (int64_t tile = 0; tile < ntiles; ++tile)
            forward8_tile<D>(s, tile, rl, out_color, out_alpha, nullptr, nullptr);
    }
}

typedef void (*fwd8_fn)(const Scene&, float*, float*, int);
template <int... Ds>
struct Table8 {
    static void fill(fwd8_fn* f, fwd_fn* ft, bwd_fn* bt) {
        ((f[Ds] = &forward8_all<Ds>, ft[Ds] = &forward8_train_all<Ds>, bt[Ds] = &backward8_all<Ds>), ...);
    }
};
struct Dispatch8 {
    fwd8_fn f[33];
    fwd_fn ft[33];
    bwd_fn bt[33];
    Dispatch8() {
        std::memset(f, 0, sizeof(f));
        std::memset(ft, 0, sizeof(ft));
        std::memset(bt, 0, sizeof(bt));
        Table8<1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 16, 17, 24, 32>::fill(f, ft, bt);
    }
};
const Dispatch8& dispatch8() {
    static Dispatch8 d;
    return d;
}


// ---- projection for training: forward and hand-written backward ------------------------------
// The same projection as project_one (hravatar.render.projection.project_gaussians) for C
// cameras; the backward gives the gradients with respect to means, quats (raw) and scales from
// those of means2d, conics and depths (cameras get no gradient).

struct ProjCache {
    float R[3][3], M[3][3], Mc[3][3], JM[2][3];
    float mc[3], tz, u, v, tx, ty, a, b, c, det, qn;
    bool clx, cly;  // the Jacobian's field-of-view clamp was active (x, y)
};

inline void project_full(const float* mean, const float* quat, const float* scale, const float* vm, const float* Kp,
                         int W, int H, float eps2d, ProjCache& pc) {
    float qw = quat[0], qx = quat[1], qy = quat[2], qz = quat[3];
    pc.qn = std::sqrt(qw * qw + qx * qx + qy * qy + qz * qz);
    float qi = 1.0f / std::fmax(pc.qn, 1e-12f);
    qw *= qi; qx *= qi; qy *= qi; qz *= qi;
    float R[3][3] = {{1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - qw * qz), 2 * (qx * qz + qw * qy)},
                     {2 * (qx * qy + qw * qz), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - qw * qx)},
                     {2 * (qx * qz - qw * qy), 2 * (qy * qz + qw * qx), 1 - 2 * (qx * qx + qy * qy)}};
    for (int i = 0; i < 3; ++i)
        for (int k = 0; k < 3; ++k) {
            pc.R[i][k] = R[i][k];
            pc.M[i][k] = R[i][k] * scale[k];
        }
    for (int i = 0; i < 3; ++i)
        for (int k = 0; k < 3; ++k)
            pc.Mc[i][k] = vm[i * 4 + 0] * pc.M[0][k] + vm[i * 4 + 1] * pc.M[1][k] + vm[i * 4 + 2] * pc.M[2][k];
    for (int i = 0; i < 3; ++i)
        pc.mc[i] = vm[i * 4 + 0] * mean[0] + vm[i * 4 + 1] * mean[1] + vm[i * 4 + 2] * mean[2] + vm[i * 4 + 3];
    const float fx = Kp[0], fy = Kp[4], cx = Kp[2], cy = Kp[5];
    pc.tz = pc.mc[2];
    const float tan_fovx = 0.5f * W / fx, tan_fovy = 0.5f * H / fy;
    const float lxp = (W - cx) / fx + 0.3f * tan_fovx, lxn = cx / fx + 0.3f * tan_fovx;
    const float lyp = (H - cy) / fy + 0.3f * tan_fovy, lyn = cy / fy + 0.3f * tan_fovy;
    const float tz = pc.tz;
    pc.u = pc.mc[0] / tz;
    pc.v = pc.mc[1] / tz;
    const float uc = std::fmin(std::fmax(pc.u, -lxn), lxp), vc = std::fmin(std::fmax(pc.v, -lyn), lyp);
    pc.clx = uc != pc.u;
    pc.cly = vc != pc.v;
    pc.tx = tz * uc;
    pc.ty = tz * vc;
    const float j00 = fx / tz, j02 = -fx * pc.tx / (tz * tz), j11 = fy / tz, j12 = -fy * pc.ty / (tz * tz);
    for (int k = 0; k < 3; ++k) {
        pc.JM[0][k] = j00 * pc.Mc[0][k] + j02 * pc.Mc[2][k];
        pc.JM[1][k] = j11 * pc.Mc[1][k] + j12 * pc.Mc[2][k];
    }
    pc.a = pc.JM[0][0] * pc.JM[0][0] + pc.JM[0][1] * pc.JM[0][1] + pc.JM[0][2] * pc.JM[0][2] + eps2d;
    pc.b = pc.JM[0][0] * pc.JM[1][0] + pc.JM[0][1] * pc.JM[1][1] + pc.JM[0][2] * pc.JM[1][2];
    pc.c = pc.JM[1][0] * pc.JM[1][0] + pc.JM[1][1] * pc.JM[1][1] + pc.JM[1][2] * pc.JM[1][2] + eps2d;
    pc.det = pc.a * pc.c - pc.b * pc.b;
}

// ---- fused projection + depth sort + binning (inference entry point hr_render) ---------------

// The per-Gaussian projection of hravatar.render.projection.project_gaussians (one camera).
struct Proj {
    float mx, my, ca, cb, cc, depth;
    int32_t rx, ry;
    bool keep;
};

inline Proj project_one(const float* mean, const float* quat, const float* scale, float op, const float* vm,
                        const float* Kp, int W, int H, float near_plane, float far_plane, float eps2d,
                        float radius_clip) {
    Proj r;
    // rotation of the Gaussian, M = R diag(s), cov = M M^T
    float qw = quat[0], qx = quat[1], qy = quat[2], qz = quat[3];
    float qn = std::sqrt(qw * qw + qx * qx + qy * qy + qz * qz);
    float qi = 1.0f / std::fmax(qn, 1e-12f);
    qw *= qi; qx *= qi; qy *= qi; qz *= qi;
    float R[3][3] = {{1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - qw * qz), 2 * (qx * qz + qw * qy)},
                     {2 * (qx * qy + qw * qz), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - qw * qx)},
                     {2 * (qx * qz - qw * qy), 2 * (qy * qz + qw * qx), 1 - 2 * (qx * qx + qy * qy)}};
    // camera-frame M_c = Rv R diag(s); cov_c = M_c M_c^T
    float Mc[3][3];
    for (int i = 0; i < 3; ++i)
        for (int k = 0; k < 3; ++k)
            Mc[i][k] = (vm[i * 4 + 0] * R[0][k] + vm[i * 4 + 1] * R[1][k] + vm[i * 4 + 2] * R[2][k]) * scale[k];
    float mc[3];
    for (int i = 0; i < 3; ++i)
        mc[i] = vm[i * 4 + 0] * mean[0] + vm[i * 4 + 1] * mean[1] + vm[i * 4 + 2] * mean[2] + vm[i * 4 + 3];
    const float fx = Kp[0], fy = Kp[4], cx = Kp[2], cy = Kp[5];
    float tz = mc[2];
    const bool in_depth = tz >= near_plane && tz <= far_plane;
    if (!in_depth) tz = 1.0f;
    const float tan_fovx = 0.5f * W / fx, tan_fovy = 0.5f * H / fy;
    const float lim_x_pos = (W - cx) / fx + 0.3f * tan_fovx, lim_x_neg = cx / fx + 0.3f * tan_fovx;
    const float lim_y_pos = (H - cy) / fy + 0.3f * tan_fovy, lim_y_neg = cy / fy + 0.3f * tan_fovy;
    const float u = mc[0] / tz, v = mc[1] / tz;
    const float tx = tz * std::fmin(std::fmax(u, -lim_x_neg), lim_x_pos);
    const float ty = tz * std::fmin(std::fmax(v, -lim_y_neg), lim_y_pos);
    const float j00 = fx / tz, j02 = -fx * tx / (tz * tz), j11 = fy / tz, j12 = -fy * ty / (tz * tz);
    // JM = J M_c (2x3); cov2d = JM JM^T
    float JM[2][3];
    for (int k = 0; k < 3; ++k) {
        JM[0][k] = j00 * Mc[0][k] + j02 * Mc[2][k];
        JM[1][k] = j11 * Mc[1][k] + j12 * Mc[2][k];
    }
    const float a = JM[0][0] * JM[0][0] + JM[0][1] * JM[0][1] + JM[0][2] * JM[0][2] + eps2d;
    const float b = JM[0][0] * JM[1][0] + JM[0][1] * JM[1][1] + JM[0][2] * JM[1][2];
    const float c = JM[1][0] * JM[1][0] + JM[1][1] * JM[1][1] + JM[1][2] * JM[1][2] + eps2d;
    const float det = a * c - b * b;
    const bool good_det = det > 0.0f;
    const float ds = good_det ? det : 1.0f;
    r.ca = c / ds;
    r.cb = -b / ds;
    r.cc = a / ds;
    r.mx = fx * u + cx;
    r.my = fy * v + cy;
    float opc = op > ALPHA_THRESHOLD ? op : ALPHA_THRESHOLD;
    float extend = std::sqrt(2.0f * std::log(opc / ALPHA_THRESHOLD));
    extend = std::fmin(extend, 3.33f);
    const float rx = std::ceil(extend * std::sqrt(std::fmax(a, 0.0f)));
    const float ry = std::ceil(extend * std::sqrt(std::fmax(c, 0.0f)));
    bool keep = in_depth && good_det && op >= ALPHA_THRESHOLD && (rx > radius_clip || ry > radius_clip);
    keep = keep && (r.mx + rx > 0) && (r.mx - rx < W) && (r.my + ry > 0) && (r.my - ry < H);
    keep = keep && std::isfinite(r.mx) && std::isfinite(r.my) && std::isfinite(r.ca) && std::isfinite(r.cb) &&
           std::isfinite(r.cc);
    r.keep = keep;
    r.rx = keep ? (int32_t)rx : 0;
    r.ry = keep ? (int32_t)ry : 0;
    r.depth = keep ? mc[2] : 0.0f;
    if (!keep) r.mx = r.my = r.ca = r.cb = r.cc = 0.0f;
    return r;
}

// Stable LSD radix sort of non-negative float keys (their bit patterns order like the values).
void radix_sort(std::vector<uint32_t>& keys, std::vector<int32_t>& vals) {
    const size_t n = keys.size();
    std::vector<uint32_t> k2(n);
    std::vector<int32_t> v2(n);
    for (int pass = 0; pass < 4; ++pass) {
        const int sh = pass * 8;
        size_t cnt[257] = {0};
        for (size_t i = 0; i < n; ++i) cnt[((keys[i] >> sh) & 255u) + 1]++;
        if (cnt[1] == n || cnt[((keys[0] >> sh) & 255u) + 1] == n) continue;  // all equal digits
        for (int i = 0; i < 256; ++i) cnt[i + 1] += cnt[i];
        for (size_t i = 0; i < n; ++i) {
            const size_t d = (keys[i] >> sh) & 255u;
            const size_t o = cnt[d]++;
            k2[o] = keys[i];
            v2[o] = vals[i];
        }
        keys.swap(k2);
        vals.swap(v2);
    }
}
}  // namespace

extern "C" {

int hr_version() { return 2; }
int hr_max_channels() { return DMAX; }

// Smallest compiled channel count >= D (0 if D > DMAX).
int hr_channels_for(int D) {
    for (int d = std::max(D, 1); d <= DMAX; ++d)
        if (dispatch8().ft[d]) return d;
    return 0;
}
int hr_tile_size() { return TS; }

int hr_max_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

// Tile binning. rects [C*N,4] = (x0,y0,x1,y1) half-open in tiles (empty if culled); order [C,N]
// per-camera Gaussian indices sorted by depth. Pass list == nullptr to get the per-tile counts
// in offsets[1..] (prefix-summed, offsets[0] = 0) and the total as return value; call again
// with list allocated to fill it (flat ids c*N + g, depth order inside each tile).
int64_t hr_bin(int C, int N, int W, int H, const int32_t* rects, const int64_t* order, int64_t* offsets,
               int32_t* list) {
    const int TW = (W + TS - 1) / TS, TH = (H + TS - 1) / TS;
    const int64_t TT = (int64_t)TW * TH;
    if (!list) {
        std::memset(offsets, 0, sizeof(int64_t) * (C * TT + 1));
        for (int c = 0; c < C; ++c)
            for (int n = 0; n < N; ++n) {
                const int32_t* rc = rects + ((int64_t)c * N + n) * 4;
                for (int y = rc[1]; y < rc[3]; ++y)
                    for (int x = rc[0]; x < rc[2]; ++x) offsets[1 + c * TT + (int64_t)y * TW + x]++;
            }
        for (int64_t i = 0; i < C * TT; ++i) offsets[i + 1] += offsets[i];
        return offsets[C * TT];
    }
    std::vector<int64_t> cur(offsets, offsets + C * TT);
    for (int c = 0; c < C; ++c)
        for (int j = 0; j < N; ++j) {
            const int64_t n = order[(int64_t)c * N + j];
            const int32_t* rc = rects + ((int64_t)c * N + n) * 4;
            for (int y = rc[1]; y < rc[3]; ++y)
                for (int x = rc[0]; x < rc[2]; ++x) list[cur[c * TT + (int64_t)y * TW + x]++] = (int32_t)(c * N + n);
        }
    return offsets[C * TT];
}

// Forward. means2d [C*N,2], conics [C*N,3], colors [C*N,D], opac [C*N], bg [C,D] or null.
// Outputs: color [C,H,W,D], alpha [C,H,W], T [C,H,W] (final transmittance), last [C,H,W] (tile
// list position of the last contributing Gaussian, -1 if none). Returns 0 on success.
int hr_forward(int C, int N, int D, int W, int H, int nthreads, const float* means2d, const float* conics,
               const float* colors, const float* opac, const float* bg, const int64_t* offsets,
               const int32_t* list, float* out_color, float* out_alpha, float* out_T, int32_t* out_last) {
    if (D < 1 || D > DMAX || !dispatch8().ft[D]) return 1;
    std::vector<GP> gp((size_t)C * N);
    prepare(means2d, conics, opac, (int64_t)C * N, gp.data(), nthreads);
    Scene s = make_scene(C, N, D, W, H, gp.data(), colors, bg, offsets, list);
    dispatch8().ft[D](s, out_color, out_alpha, out_T, out_last, nthreads);
    return 0;
}

// Backward. v_color [C,H,W,D], v_alpha [C,H,W]; slots [n_isect, 8+D] scratch (any content);
// out [C*N, 8+D] zero-initialised: per Gaussian (mx, my, ca, cb, cc, opacity, colors[D],
// |mx|, |my|) gradients (the last two: sums over pixels of absolute per-pixel gradients).
int hr_backward(int C, int N, int D, int W, int H, int nthreads, const float* means2d, const float* conics,
                const float* colors, const float* opac, const float* bg, const int64_t* offsets,
                const int32_t* list, const float* T_final, const int32_t* last, const float* v_color,
                const float* v_alpha, float* slots, float* out) {
    if (D < 1 || D > DMAX || !dispatch8().ft[D]) return 1;
    std::vector<GP> gp((size_t)C * N);
    prepare(means2d, conics, opac, (int64_t)C * N, gp.data(), nthreads);
    Scene s = make_scene(C, N, D, W, H, gp.data(), colors, bg, offsets, list);
    dispatch8().bt[D](s, T_final, last, v_color, v_alpha, slots, nthreads);
    // deterministic reduction of slots into Gaussians: threads split the columns into contiguous
    // ranges, every column is summed in intersection order (one row-wise pass per thread)
    const int K = 8 + D;
    const int64_t n_isect = offsets[(int64_t)C * s.TW * s.TH];
#pragma omp parallel num_threads(nthreads)
    {
#ifdef _OPENMP
        const int nt = omp_get_num_threads(), t = omp_get_thread_num();
#else
        const int nt = 1, t = 0;
#endif
        const int j0 = K * t / nt, j1 = K * (t + 1) / nt;
        for (int64_t i = 0; i < n_isect; ++i) {
            float* o = out + (int64_t)list[i] * K;
            const float* sl = slots + i * K;
            for (int j = j0; j < j1; ++j) o[j] += sl[j];
        }
    }
    return 0;
}


// Inference render of N world-frame Gaussians into one pinhole camera: projection (as
// project_gaussians), depth sort, tile binning and the forward pass in one call (no autograd).
// means [N,3], quats [N,4] (w,x,y,z), scales [N,3] linear, opac [N], colors [N,D], viewmat [4,4]
// world-to-camera (row-major), K [3,3]; bg [D] or null (colour channels only).
// depth_mode: 0 = no depth channel, 1 = accumulated depth appended, 2 = expected depth (/alpha).
// Outputs: out_color [H,W,D(+1)], out_alpha [H,W]; optional (null = skip): out_means2d [N,2],
// out_radii [N,2] int32, out_depths [N]. Returns the number of tile intersections (>= 0) or -1
// when the channel count has no compiled kernel.
int64_t hr_render(int N, int D, int W, int H, int nthreads, const float* means, const float* quats,
                  const float* scales, const float* opac, const float* colors, const float* viewmat,
                  const float* Kp, float near_plane, float far_plane, float eps2d, float radius_clip,
                  int depth_mode, const float* bg, float* out_color, float* out_alpha, float* out_means2d,
                  int32_t* out_radii, float* out_depths) {
    const bool prof = std::getenv("HR_PROFILE") != nullptr;
    auto now = [] {  // process CPU time (stable on a loaded machine; with one thread = the work)
        timespec ts;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
    };
    double t0 = now();
    const int Dout = D + (depth_mode ? 1 : 0);
    const int Dc = hr_channels_for(Dout);
    if (Dc == 0 || D < 0) return -1;
    const int TW = (W + TS - 1) / TS, TH = (H + TS - 1) / TS;
    const int64_t TT = (int64_t)TW * TH;
    std::vector<float> m2((size_t)N * 2), con((size_t)N * 3), dep(N), feats((size_t)N * Dc);
    std::vector<int32_t> rect((size_t)N * 4);
    std::vector<uint8_t> keep(N);
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int n = 0; n < N; ++n) {
        Proj p = project_one(means + 3 * (int64_t)n, quats + 4 * (int64_t)n, scales + 3 * (int64_t)n, opac[n],
                             viewmat, Kp, W, H, near_plane, far_plane, eps2d, radius_clip);
        m2[2 * n] = p.mx; m2[2 * n + 1] = p.my;
        con[3 * n] = p.ca; con[3 * n + 1] = p.cb; con[3 * n + 2] = p.cc;
        dep[n] = p.depth;
        keep[n] = p.keep;
        if (out_means2d) { out_means2d[2 * n] = p.mx; out_means2d[2 * n + 1] = p.my; }
        if (out_radii) { out_radii[2 * n] = p.rx; out_radii[2 * n + 1] = p.ry; }
        if (out_depths) out_depths[n] = p.depth;
        // tile rectangle (gsplat's isect_tiles rule, as projection.tile_bounds)
        const float mx = p.mx / TS, my = p.my / TS, rxf = (float)p.rx / TS, ryf = (float)p.ry / TS;
        int x0 = std::min(std::max((int)std::floor(mx - rxf), 0), TW);
        int y0 = std::min(std::max((int)std::floor(my - ryf), 0), TH);
        int x1 = std::min(std::max((int)std::ceil(mx + rxf), 0), TW);
        int y1 = std::min(std::max((int)std::ceil(my + ryf), 0), TH);
        if (!p.keep) { x1 = x0; y1 = y0; }
        rect[4 * n] = x0; rect[4 * n + 1] = y0; rect[4 * n + 2] = x1; rect[4 * n + 3] = y1;
        float* f = feats.data() + (int64_t)n * Dc;
        for (int d = 0; d < D; ++d) f[d] = colors[(int64_t)n * D + d];
        for (int d = D; d < Dc; ++d) f[d] = 0.0f;
        if (depth_mode) f[D] = p.depth;
    }
    double t1 = now();
    // depth order of the kept Gaussians (stable: ties keep index order)
    std::vector<uint32_t> keys;
    std::vector<int32_t> order;
    keys.reserve(N);
    order.reserve(N);
    for (int n = 0; n < N; ++n)
        if (keep[n]) {
            float d = dep[n] > 0.0f ? dep[n] : 0.0f;
            uint32_t k;
            std::memcpy(&k, &d, 4);
            keys.push_back(k);
            order.push_back(n);
        }
    if (!order.empty()) radix_sort(keys, order);
    double t2 = now();
    // binning in parallel over contiguous chunks of the depth order: per-chunk tile counts, prefix
    // sums (chunk after chunk inside every tile), then every chunk fills its own slots; the lists
    // are exactly the serial ones (depth order inside every tile)
    const int nchunks = std::max(1, nthreads);
    const int64_t nord = (int64_t)order.size();
    std::vector<int64_t> ccount((size_t)nchunks * TT, 0);
    std::vector<int64_t> offsets(TT + 1, 0);
#pragma omp parallel for schedule(static, 1) num_threads(nthreads)
    for (int k = 0; k < nchunks; ++k) {
        int64_t* cc = ccount.data() + (int64_t)k * TT;
        for (int64_t j = nord * k / nchunks; j < nord * (k + 1) / nchunks; ++j) {
            const int32_t* rc = rect.data() + 4 * (int64_t)order[j];
            for (int y = rc[1]; y < rc[3]; ++y)
                for (int x = rc[0]; x < rc[2]; ++x) cc[(int64_t)y * TW + x]++;
        }
    }
    for (int64_t i = 0; i < TT; ++i) {
        int64_t run = offsets[i];
        for (int k = 0; k < nchunks; ++k) {
            const int64_t c = ccount[(int64_t)k * TT + i];
            ccount[(int64_t)k * TT + i] = run;  // becomes the chunk's first slot in tile i
            run += c;
        }
        offsets[i + 1] = run;
    }
    const int64_t total = offsets[TT];
    std::vector<int32_t> list(std::max<int64_t>(total, 1));
#pragma omp parallel for schedule(static, 1) num_threads(nthreads)
    for (int k = 0; k < nchunks; ++k) {
        int64_t* cur = ccount.data() + (int64_t)k * TT;
        for (int64_t j = nord * k / nchunks; j < nord * (k + 1) / nchunks; ++j) {
            const int32_t n = order[j];
            const int32_t* rc = rect.data() + 4 * (int64_t)n;
            for (int y = rc[1]; y < rc[3]; ++y)
                for (int x = rc[0]; x < rc[2]; ++x) list[cur[(int64_t)y * TW + x]++] = n;
        }
    }
    double t3 = now();
    std::vector<float> bgc;
    if (bg) {
        bgc.assign(Dc, 0.0f);
        for (int d = 0; d < D; ++d) bgc[d] = bg[d];
    }
    std::vector<GP> gp(N);
    std::vector<float> opac_kept(N);
    for (int n = 0; n < N; ++n) opac_kept[n] = opac[n];
    prepare(m2.data(), con.data(), opac_kept.data(), N, gp.data(), nthreads);
    Scene s = make_scene(1, N, Dc, W, H, gp.data(), feats.data(), bg ? bgc.data() : nullptr, offsets.data(),
                         list.data());
    const int64_t P = (int64_t)W * H;
    std::vector<float> tmp;
    float* col = out_color;
    if (Dc != Dout) {
        tmp.resize((size_t)P * Dc);
        col = tmp.data();
    }
    double t4 = now();
    dispatch8().f[Dc](s, col, out_alpha, nthreads);
    double t5 = now();
    if (Dc != Dout || depth_mode == 2) {
#pragma omp parallel for schedule(static) num_threads(nthreads)
        for (int64_t p = 0; p < P; ++p) {
            const float* src = col + p * Dc;
            float* dst = out_color + p * Dout;
            if (Dc != Dout)
                for (int d = 0; d < Dout; ++d) dst[d] = src[d];
            if (depth_mode == 2) {
                const float a = out_alpha[p];
                dst[D] = dst[D] / (a > 1e-10f ? a : 1e-10f);
            }
        }
    }
    if (prof)
        std::fprintf(stderr, "hr_render: project %.1f sort %.1f bin %.1f prepare %.1f forward %.1f finish %.1f ms (isect %lld)\n",
                     t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, now() - t5, (long long)total);
    return total;
}


// Training projection, forward: means [N,3], quats [N,4], scales [N,3], opac [N]; viewmats [C,4,4],
// Ks [C,3,3]. Outputs [C,N,...]: means2d (2), conics (3), depths, radii (2, int32); culled
// Gaussians get zeros (as project_gaussians).
int hr_project_fwd(int C, int N, int W, int H, int nthreads, const float* means, const float* quats,
                   const float* scales, const float* opac, const float* viewmats, const float* Ks, float near_plane,
                   float far_plane, float eps2d, float radius_clip, float* out_means2d, float* out_conics,
                   float* out_depths, int32_t* out_radii) {
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t i = 0; i < (int64_t)C * N; ++i) {
        const int64_t c = i / N, n = i % N;
        Proj p = project_one(means + 3 * n, quats + 4 * n, scales + 3 * n, opac[n], viewmats + 16 * c, Ks + 9 * c, W,
                             H, near_plane, far_plane, eps2d, radius_clip);
        out_means2d[2 * i] = p.mx; out_means2d[2 * i + 1] = p.my;
        out_conics[3 * i] = p.ca; out_conics[3 * i + 1] = p.cb; out_conics[3 * i + 2] = p.cc;
        out_depths[i] = p.depth;
        out_radii[2 * i] = p.rx; out_radii[2 * i + 1] = p.ry;
    }
    return 0;
}

// Training projection, backward: v_means2d [C,N,2], v_conics [C,N,3], v_depths [C,N] (the
// gradients of the forward's outputs); radii [C,N,2] from the forward (0 = culled: no gradient).
// Outputs (overwritten) v_means [N,3], v_quats [N,4], v_scales [N,3], summed over cameras.
int hr_project_bwd(int C, int N, int W, int H, int nthreads, const float* means, const float* quats,
                   const float* scales, const float* viewmats, const float* Ks, float eps2d, const int32_t* radii,
                   const float* v_means2d, const float* v_conics, const float* v_depths, float* v_means,
                   float* v_quats, float* v_scales) {
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t n = 0; n < N; ++n) {
        double gm[3] = {0, 0, 0}, gq[4] = {0, 0, 0, 0}, gs[3] = {0, 0, 0};
        for (int c = 0; c < C; ++c) {
            const int64_t i = (int64_t)c * N + n;
            if (radii[2 * i] == 0 && radii[2 * i + 1] == 0) continue;  // culled: outputs are constants
            const float* vm = viewmats + 16 * c;
            const float* Kp = Ks + 9 * c;
            ProjCache pc;
            project_full(means + 3 * n, quats + 4 * n, scales + 3 * n, vm, Kp, W, H, eps2d, pc);
            const float fx = Kp[0], fy = Kp[4];
            const float tz = pc.tz;
            // conic = inverse of [[a,b],[b,c]]: dL/dSigma = -Sinv G Sinv with G = [[gA, gB/2], [gB/2, gC]]
            const float id = 1.0f / pc.det;
            const float A = pc.c * id, B = -pc.b * id, Cc = pc.a * id;
            const float gA = v_conics[3 * i], gB = v_conics[3 * i + 1], gC = v_conics[3 * i + 2];
            const float G00 = gA, G01 = 0.5f * gB, G11 = gC;
            // S G S with S = [[A,B],[B,Cc]]
            const float t00 = A * G00 + B * G01, t01 = A * G01 + B * G11;
            const float t10 = B * G00 + Cc * G01, t11 = B * G01 + Cc * G11;
            const float da = -(t00 * A + t01 * B);
            const float db_half = -(t00 * B + t01 * Cc);  // dL/dSigma01 (= dL/dSigma10)
            const float dc = -(t10 * B + t11 * Cc);
            // cov2d = JM JM^T, Sigma = cov2d + eps I: dL/dJM = 2 [[da, db_half], [db_half, dc]] JM
            float gJM[2][3];
            for (int k = 0; k < 3; ++k) {
                gJM[0][k] = 2.0f * (da * pc.JM[0][k] + db_half * pc.JM[1][k]);
                gJM[1][k] = 2.0f * (db_half * pc.JM[0][k] + dc * pc.JM[1][k]);
            }
            // JM = J Mc, J = [[j00, 0, j02], [0, j11, j12]]
            const float j00 = fx / tz, j02 = -fx * pc.tx / (tz * tz), j11 = fy / tz, j12 = -fy * pc.ty / (tz * tz);
            float gMc[3][3];
            for (int k = 0; k < 3; ++k) {
                gMc[0][k] = j00 * gJM[0][k];
                gMc[1][k] = j11 * gJM[1][k];
                gMc[2][k] = j02 * gJM[0][k] + j12 * gJM[1][k];
            }
            float gj00 = 0, gj02 = 0, gj11 = 0, gj12 = 0;
            for (int k = 0; k < 3; ++k) {
                gj00 += gJM[0][k] * pc.Mc[0][k];
                gj02 += gJM[0][k] * pc.Mc[2][k];
                gj11 += gJM[1][k] * pc.Mc[1][k];
                gj12 += gJM[1][k] * pc.Mc[2][k];
            }
            // camera-frame mean gradient
            float gmc[3] = {0.0f, 0.0f, v_depths[i]};
            const float tz2 = tz * tz, tz3 = tz2 * tz;
            gmc[2] += gj00 * (-fx / tz2) + gj11 * (-fy / tz2);
            if (pc.clx) {
                gmc[2] += gj02 * (fx * (pc.tx / tz) / tz2);  // j02 = -fx lim / tz
            } else {
                gmc[0] += gj02 * (-fx / tz2);
                gmc[2] += gj02 * (2.0f * fx * pc.mc[0] / tz3);
            }
            if (pc.cly) {
                gmc[2] += gj12 * (fy * (pc.ty / tz) / tz2);
            } else {
                gmc[1] += gj12 * (-fy / tz2);
                gmc[2] += gj12 * (2.0f * fy * pc.mc[1] / tz3);
            }
            const float gx = v_means2d[2 * i], gy = v_means2d[2 * i + 1];
            gmc[0] += gx * fx / tz;
            gmc[1] += gy * fy / tz;
            gmc[2] += -gx * fx * pc.mc[0] / tz2 - gy * fy * pc.mc[1] / tz2;
            for (int j = 0; j < 3; ++j) gm[j] += vm[0 * 4 + j] * gmc[0] + vm[1 * 4 + j] * gmc[1] + vm[2 * 4 + j] * gmc[2];
            // Mc = Rv M, M = R diag(s)
            float gR[3][3];
            for (int j = 0; j < 3; ++j)
                for (int k = 0; k < 3; ++k) {
                    const float gM = vm[0 * 4 + j] * gMc[0][k] + vm[1 * 4 + j] * gMc[1][k] + vm[2 * 4 + j] * gMc[2][k];
                    gR[j][k] = gM * scales[3 * n + k];
                    gs[k] += gM * pc.R[j][k];
                }
            // R(qn) -> qn
            const float* q = quats + 4 * n;
            const float qi = 1.0f / std::fmax(pc.qn, 1e-12f);
            const float w = q[0] * qi, x = q[1] * qi, y = q[2] * qi, z = q[3] * qi;
            float gw = 2.0f * (x * (gR[2][1] - gR[1][2]) + y * (gR[0][2] - gR[2][0]) + z * (gR[1][0] - gR[0][1]));
            float gxq = 2.0f * (-2.0f * x * (gR[1][1] + gR[2][2]) + y * (gR[1][0] + gR[0][1]) + z * (gR[2][0] + gR[0][2]) +
                                w * (gR[2][1] - gR[1][2]));
            float gyq = 2.0f * (x * (gR[1][0] + gR[0][1]) - 2.0f * y * (gR[0][0] + gR[2][2]) + z * (gR[2][1] + gR[1][2]) +
                                w * (gR[0][2] - gR[2][0]));
            float gzq = 2.0f * (x * (gR[2][0] + gR[0][2]) + y * (gR[2][1] + gR[1][2]) - 2.0f * z * (gR[0][0] + gR[1][1]) +
                                w * (gR[1][0] - gR[0][1]));
            // qn = q / |q|
            const float dot = w * gw + x * gxq + y * gyq + z * gzq;
            gq[0] += (gw - w * dot) * qi;
            gq[1] += (gxq - x * dot) * qi;
            gq[2] += (gyq - y * dot) * qi;
            gq[3] += (gzq - z * dot) * qi;
        }
        for (int j = 0; j < 3; ++j) v_means[3 * n + j] = (float)gm[j];
        for (int j = 0; j < 4; ++j) v_quats[4 * n + j] = (float)gq[j];
        for (int j = 0; j < 3; ++j) v_scales[3 * n + j] = (float)gs[j];
    }
    return 0;
}

}  // extern "C"
