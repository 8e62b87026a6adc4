// Deferred split-sum shading of the covered pixels of a G-buffer (inference, no autograd).
//
// Per pixel with alpha > 0, exactly the formulas of hravatar.shading.shade.shade (the reference,
// see its docstring and DESIGN.md section 5), evaluated in float32:
//
//   albedo, roughness o, F0  = accumulated / max(alpha, 1e-6);   N = normal / max(|normal|, 1e-8)
//   V = -normalize(R^T K^-1 [x+0.5, y+0.5, 1]);   c = clamp(N.V, 1e-4, 1);   R = 2 (N.V) N - V
//   (A, B) = LUT(o, c) (bilinear, clamped);  k_s = F0 + (max(1-o, F0) - F0) 2^((-5.55473 c - 6.98316) c)
//   I_irr = act(cube(irr, M N)) * scale;     I_env = act(mips(spec, M R, level(o))) * scale
//   image = (albedo I_irr + I_env (k_s A + B)) alpha + background (1 - alpha)
//
// Cube maps arrive padded with their one-texel seam border (hravatar.shading.cubemap.pad_cube),
// faces +x,-x,+y,-y,+z,-z; the mip chain is one flat buffer with per-level offsets; the level of a
// roughness is piecewise linear in a roughness table (level i at table[i]). act: identity or
// sigmoid (learnable lighting applies it after the lookup); M: optional 3x3 direction transform
// (d' = d M, the environment's rotation); scale: exposure. Pixels with alpha <= 0 get the
// background. Plain C++17; compiled on first use by hravatar.render.cpu.build.

#include <cmath>
#include <cstdint>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

struct Cube {
    const float* data;  // padded texels, 3 floats each
    int res;            // unpadded resolution
    int64_t off;        // texel offset of this level in the flat buffer
};

inline void face_uv(const float d[3], int& face, float& u, float& v) {
    const float x = d[0], y = d[1], z = d[2];
    const float ax = std::fabs(x), ay = std::fabs(y), az = std::fabs(z);
    const bool is_x = ax >= ay && ax >= az;
    const bool is_y = !is_x && ay >= az;
    const float sx = x >= 0.0f ? 1.0f : -1.0f, sy = y >= 0.0f ? 1.0f : -1.0f, sz = z >= 0.0f ? 1.0f : -1.0f;
    float ma, sc, tc;
    if (is_x) {
        face = x >= 0.0f ? 0 : 1;
        ma = ax;
        sc = -sx * z;
        tc = -y;
    } else if (is_y) {
        face = y >= 0.0f ? 2 : 3;
        ma = ay;
        sc = x;
        tc = sy * z;
    } else {
        face = z >= 0.0f ? 4 : 5;
        ma = az;
        sc = sz * x;
        tc = -y;
    }
    ma = ma > 1e-12f ? ma : 1e-12f;
    u = sc / ma;
    v = tc / ma;
}

inline void bilinear(const Cube& c, int face, float u, float v, float out[3]) {
    const int res = c.res, rp = res + 2;
    const float rf = (float)res;
    float x = (u + 1.0f) / 2.0f * rf + 0.5f, y = (v + 1.0f) / 2.0f * rf + 0.5f;
    x = std::fmin(std::fmax(x, 0.0f), rf + 1.0f);
    y = std::fmin(std::fmax(y, 0.0f), rf + 1.0f);
    const float x0 = std::fmin(std::floor(x), rf), y0 = std::fmin(std::floor(y), rf);
    const float wx = x - x0, wy = y - y0;
    const int64_t b = c.off + (int64_t)face * rp * rp + (int64_t)y0 * rp + (int64_t)x0;
    const float* t00 = c.data + 3 * b;
    const float* t01 = t00 + 3;
    const float* t10 = t00 + 3 * rp;
    const float* t11 = t10 + 3;
    for (int k = 0; k < 3; ++k)
        out[k] = (t00[k] * (1 - wx) + t01[k] * wx) * (1 - wy) + (t10[k] * (1 - wx) + t11[k] * wx) * wy;
}

inline float act(float x, int sigmoid) { return sigmoid ? 1.0f / (1.0f + std::exp(-x)) : x; }

}  // namespace

extern "C" {

int hrs_version() { return 1; }

// gbuf [H,W,D] (albedo 3, roughness 1, f0 1, normal 3 at channels 0..7, alpha-accumulated),
// alpha [H,W]; viewmat [4,4] (world-to-camera, row-major); kinv [3,3] inverse intrinsics.
// irr: padded irradiance cube [6,Ri+2,Ri+2,3]; spec: flat padded mip chain, level l of resolution
// spec_res[l] starting at texel spec_off[l]; rough_tab [L] roughness of each level; dir_m [9] or
// null; lut [NR,NV,2]. bg_mode 0: black, 1: bg [3], 2: bg [H,W,3]. out [H,W,3].
int hrs_shade(int H, int W, int D, int nthreads, const float* gbuf, const float* alpha, const float* viewmat,
              const float* kinv, const float* irr, int Ri, const float* spec, int L, const int32_t* spec_res,
              const int64_t* spec_off, const float* rough_tab, const float* dir_m, int sigmoid, float scale,
              const float* lut, int NR, int NV, int bg_mode, const float* bg, float* out) {
    if (D < 8 || L < 1 || NR < 2 || NV < 2) return 1;
    const Cube irr_c{irr, Ri, 0};
#pragma omp parallel for schedule(dynamic, 4) num_threads(nthreads)
    for (int y = 0; y < H; ++y) {
        for (int x = 0; x < W; ++x) {
            const int64_t p = (int64_t)y * W + x;
            const float a = alpha[p];
            float bgp[3];
            for (int k = 0; k < 3; ++k) bgp[k] = bg_mode == 0 ? 0.0f : (bg_mode == 1 ? bg[k] : bg[3 * p + k]);
            float* o = out + 3 * p;
            if (!(a > 0.0f)) {
                for (int k = 0; k < 3; ++k) o[k] = bgp[k];
                continue;
            }
            const float* g = gbuf + p * D;
            const float ia = 1.0f / (a > 1e-6f ? a : 1e-6f);
            const float alb[3] = {g[0] * ia, g[1] * ia, g[2] * ia};
            const float rough = g[3] * ia, f0 = g[4] * ia;
            float n[3] = {g[5], g[6], g[7]};
            float nn = std::sqrt(n[0] * n[0] + n[1] * n[1] + n[2] * n[2]);
            nn = 1.0f / (nn > 1e-8f ? nn : 1e-8f);
            for (int k = 0; k < 3; ++k) n[k] *= nn;
            // view direction: -normalize(R^T K^-1 pix)
            const float px = (float)x + 0.5f, py = (float)y + 0.5f;
            float dc[3];
            for (int i = 0; i < 3; ++i) dc[i] = kinv[3 * i] * px + kinv[3 * i + 1] * py + kinv[3 * i + 2];
            float v[3];
            for (int j = 0; j < 3; ++j) v[j] = viewmat[0 * 4 + j] * dc[0] + viewmat[1 * 4 + j] * dc[1] + viewmat[2 * 4 + j] * dc[2];
            float vn = std::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
            vn = -1.0f / (vn > 1e-12f ? vn : 1e-12f);
            for (int k = 0; k < 3; ++k) v[k] *= vn;
            const float ndv = n[0] * v[0] + n[1] * v[1] + n[2] * v[2];
            const float c = std::fmin(std::fmax(ndv, 1e-4f), 1.0f);
            float r[3];
            for (int k = 0; k < 3; ++k) r[k] = 2.0f * ndv * n[k] - v[k];
            // split-sum LUT (bilinear, clamped)
            const float ly = std::fmin(std::fmax(rough * NR - 0.5f, 0.0f), (float)(NR - 1));
            const float lx = std::fmin(std::fmax(c * NV - 0.5f, 0.0f), (float)(NV - 1));
            const float ly0 = std::fmin(std::floor(ly), (float)(NR - 2)), lx0 = std::fmin(std::floor(lx), (float)(NV - 2));
            const float wy = ly - ly0, wx = lx - lx0;
            const float* l00 = lut + 2 * ((int64_t)ly0 * NV + (int64_t)lx0);
            const float* l01 = l00 + 2;
            const float* l10 = l00 + 2 * NV;
            const float* l11 = l10 + 2;
            float fg[2];
            for (int k = 0; k < 2; ++k)
                fg[k] = (l00[k] * (1 - wx) + l01[k] * wx) * (1 - wy) + (l10[k] * (1 - wx) + l11[k] * wx) * wy;
            const float fm = std::fmax(1.0f - rough, f0);
            const float ks = f0 + (fm - f0) * std::exp2((-5.55473f * c - 6.98316f) * c);
            // lookups (directions transformed by dir_m when given)
            float nd[3] = {n[0], n[1], n[2]}, rd[3] = {r[0], r[1], r[2]};
            if (dir_m) {
                for (int j = 0; j < 3; ++j) {
                    nd[j] = n[0] * dir_m[j] + n[1] * dir_m[3 + j] + n[2] * dir_m[6 + j];
                    rd[j] = r[0] * dir_m[j] + r[1] * dir_m[3 + j] + r[2] * dir_m[6 + j];
                }
            }
            int face;
            float u, vv;
            face_uv(nd, face, u, vv);
            float ir[3];
            bilinear(irr_c, face, u, vv, ir);
            face_uv(rd, face, u, vv);
            float env[3];
            if (L == 1) {
                const Cube c0{spec, spec_res[0], spec_off[0]};
                bilinear(c0, face, u, vv, env);
            } else {
                // roughness -> fractional level (piecewise linear in rough_tab)
                const float xr = std::fmin(std::fmax(rough, rough_tab[0]), rough_tab[L - 1]);
                int i = 0;
                while (i < L - 1 && rough_tab[i + 1] <= xr) ++i;  // searchsorted(right) - 1
                if (i > L - 2) i = L - 2;
                const float lv = (float)i + (xr - rough_tab[i]) / (rough_tab[i + 1] - rough_tab[i]);
                const float lvc = std::fmin(std::fmax(lv, 0.0f), (float)(L - 1));
                int l0 = (int)std::floor(lvc);
                if (l0 > L - 2) l0 = L - 2;
                const float t = lvc - (float)l0;
                const Cube ca{spec, spec_res[l0], spec_off[l0]}, cb{spec, spec_res[l0 + 1], spec_off[l0 + 1]};
                float e0[3], e1[3];
                bilinear(ca, face, u, vv, e0);
                bilinear(cb, face, u, vv, e1);
                for (int k = 0; k < 3; ++k) env[k] = e0[k] * (1 - t) + e1[k] * t;
            }
            for (int k = 0; k < 3; ++k) {
                const float I_irr = act(ir[k], sigmoid) * scale;
                const float I_env = act(env[k], sigmoid) * scale;
                const float col = alb[k] * I_irr + I_env * (ks * fg[0] + fg[1]);
                o[k] = col * a + bgp[k] * (1.0f - a);
            }
        }
    }
    return 0;
}

}  // extern "C"
