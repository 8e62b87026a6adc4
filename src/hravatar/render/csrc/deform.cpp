// Fused inference deformation of a blendshape-rigged Gaussian avatar (no autograd).
//
// One pass per Gaussian (OpenMP over points) of what hravatar.gaussians.deform.deform_points,
// GaussianHead.deform and DeformedGaussians.normals do in PyTorch (the reference):
//
//   X_e  = X + S beta + E psi + P pose_feature            (blendshapes; all-zero bases skipped)
//   w    = relu(W) / (sum relu(W) + 1e-5)                 (6 columns: 5 joints + static)
//   T    = sum_j<5 w_j A_j + (1 - sum_j<5 w_j) [I|0],  T[:,3] += translation
//   mean = T[:, :3] X_e + T[:, 3]
//   q    = normalize(quat(T[:, :3]) * normalize(q_canonical))   (robust matrix -> quaternion)
//   s    = exp(log_scale),  opacity = sigmoid(raw)
//   n    = column argmin(s) of R(q), flipped so that n . (camera - mean) >= 0
//
// Plain C++17, no torch headers; compiled on first use by hravatar.render.cpu.build.

#include <cmath>
#include <cstdint>
#include <cstring>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

inline float dot_basis(const float* b, const float* c, int K) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int k = 0; k < K; ++k) s += b[k] * c[k];
    return s;
}

bool all_zero(const float* c, int K) {
    for (int k = 0; k < K; ++k)
        if (c[k] != 0.0f) return false;
    return true;
}

// Rotation matrix (row-major m[3][3]) -> unit quaternion (w,x,y,z), w >= 0: of the four formulas
// the one dividing by the largest component (as rotmat_to_quat in gaussians/deform.py).
inline void mat_to_quat(const float m[3][3], float q[4]) {
    float sq[4] = {1 + m[0][0] + m[1][1] + m[2][2], 1 + m[0][0] - m[1][1] - m[2][2],
                   1 - m[0][0] + m[1][1] - m[2][2], 1 - m[0][0] - m[1][1] + m[2][2]};
    int best = 0;
    for (int i = 0; i < 4; ++i) {
        if (sq[i] < 0.0f) sq[i] = 0.0f;
        if (sq[i] > sq[best]) best = i;
    }
    float c[4];
    switch (best) {
        case 0: c[0] = sq[0]; c[1] = m[2][1] - m[1][2]; c[2] = m[0][2] - m[2][0]; c[3] = m[1][0] - m[0][1]; break;
        case 1: c[0] = m[2][1] - m[1][2]; c[1] = sq[1]; c[2] = m[1][0] + m[0][1]; c[3] = m[0][2] + m[2][0]; break;
        case 2: c[0] = m[0][2] - m[2][0]; c[1] = m[1][0] + m[0][1]; c[2] = sq[2]; c[3] = m[1][2] + m[2][1]; break;
        default: c[0] = m[1][0] - m[0][1]; c[1] = m[0][2] + m[2][0]; c[2] = m[1][2] + m[2][1]; c[3] = sq[3]; break;
    }
    float d = 2.0f * std::sqrt(sq[best] > 0.01f ? sq[best] : 0.01f);
    float n2 = 0.0f;
    for (int i = 0; i < 4; ++i) {
        c[i] /= d;
        n2 += c[i] * c[i];
    }
    float inv = 1.0f / std::fmax(std::sqrt(n2), 1e-12f);
    float sgn = c[0] * inv < 0.0f ? -inv : inv;
    for (int i = 0; i < 4; ++i) q[i] = c[i] * sgn;
}

}  // namespace

extern "C" {

int hrd_version() { return 1; }

// means [N,3] canonical (or canonical + shape offsets when the caller cached them), quats [N,4] raw,
// log_scales [N,3], raw_opac [N]; bases b_i [N,3,K_i] with coefficients c_i [K_i] (i = 0..2; K_i may
// be 0 and a null basis is skipped); weights [N,6] raw; A [5,3,4] joint transforms; trans [3];
// cam [3] camera centre (world) or null (no flip). Outputs: out_means [N,3], out_quats [N,4],
// out_scales [N,3], out_opac [N], out_normals [N,3] (any may be null except means/quats).
int hrd_deform(int64_t N, int nthreads, const float* means, const float* quats, const float* log_scales,
               const float* raw_opac, const float* b0, const float* c0, int K0, const float* b1,
               const float* c1, int K1, const float* b2, const float* c2, int K2, const float* weights,
               const float* A, const float* trans, const float* cam, float* out_means, float* out_quats,
               float* out_scales, float* out_opac, float* out_normals) {
    const float* bases[3] = {b0, b1, b2};
    const float* coef[3] = {c0, c1, c2};
    int Ks[3] = {K0, K1, K2};
    bool use[3];
    for (int i = 0; i < 3; ++i) use[i] = bases[i] && Ks[i] > 0 && !all_zero(coef[i], Ks[i]);
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t n = 0; n < N; ++n) {
        float x[3];
        for (int c = 0; c < 3; ++c) {
            float off = 0.0f;
            for (int i = 0; i < 3; ++i)
                if (use[i]) off += dot_basis(bases[i] + (n * 3 + c) * Ks[i], coef[i], Ks[i]);
            x[c] = means[n * 3 + c] + off;
        }
        // skinning weights
        const float* wr = weights + n * 6;
        float w[6], ws = 0.0f;
        for (int j = 0; j < 6; ++j) {
            w[j] = wr[j] > 0.0f ? wr[j] : 0.0f;
            ws += w[j];
        }
        float inv = 1.0f / (ws + 1e-5f);
        float wj = 0.0f;
        for (int j = 0; j < 6; ++j) w[j] *= inv;
        for (int j = 0; j < 5; ++j) wj += w[j];
        float T[3][4];
        for (int r = 0; r < 3; ++r)
            for (int k = 0; k < 4; ++k) {
                float s = 0.0f;
                for (int j = 0; j < 5; ++j) s += w[j] * A[(j * 3 + r) * 4 + k];
                T[r][k] = s + ((r == k) ? (1.0f - wj) : 0.0f);
            }
        if (trans)
            for (int r = 0; r < 3; ++r) T[r][3] += trans[r];
        float p[3];
        for (int r = 0; r < 3; ++r) p[r] = T[r][0] * x[0] + T[r][1] * x[1] + T[r][2] * x[2] + T[r][3];
        for (int r = 0; r < 3; ++r) out_means[n * 3 + r] = p[r];
        // rotation: q = normalize(quat(T) * normalize(q0))
        float R[3][3] = {{T[0][0], T[0][1], T[0][2]}, {T[1][0], T[1][1], T[1][2]}, {T[2][0], T[2][1], T[2][2]}};
        float a[4];
        mat_to_quat(R, a);
        const float* q0 = quats + n * 4;
        float qn = std::sqrt(q0[0] * q0[0] + q0[1] * q0[1] + q0[2] * q0[2] + q0[3] * q0[3]);
        float qi = 1.0f / std::fmax(qn, 1e-12f);
        float b[4] = {q0[0] * qi, q0[1] * qi, q0[2] * qi, q0[3] * qi};
        float q[4] = {a[0] * b[0] - a[1] * b[1] - a[2] * b[2] - a[3] * b[3],
                      a[0] * b[1] + a[1] * b[0] + a[2] * b[3] - a[3] * b[2],
                      a[0] * b[2] - a[1] * b[3] + a[2] * b[0] + a[3] * b[1],
                      a[0] * b[3] + a[1] * b[2] - a[2] * b[1] + a[3] * b[0]};
        float q2 = std::sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
        float qi2 = 1.0f / std::fmax(q2, 1e-12f);
        for (int i = 0; i < 4; ++i) {
            q[i] *= qi2;
            out_quats[n * 4 + i] = q[i];
        }
        float s[3];
        for (int c = 0; c < 3; ++c) s[c] = std::exp(log_scales[n * 3 + c]);
        if (out_scales)
            for (int c = 0; c < 3; ++c) out_scales[n * 3 + c] = s[c];
        if (out_opac) out_opac[n] = 1.0f / (1.0f + std::exp(-raw_opac[n]));
        if (out_normals) {
            int k = 0;  // first index of the smallest scale (torch.argmin)
            if (s[1] < s[k]) k = 1;
            if (s[2] < s[k]) k = 2;
            const float w_ = q[0], x_ = q[1], y_ = q[2], z_ = q[3];
            float col[3];
            if (k == 0) {
                col[0] = 1 - 2 * (y_ * y_ + z_ * z_); col[1] = 2 * (x_ * y_ + w_ * z_); col[2] = 2 * (x_ * z_ - w_ * y_);
            } else if (k == 1) {
                col[0] = 2 * (x_ * y_ - w_ * z_); col[1] = 1 - 2 * (x_ * x_ + z_ * z_); col[2] = 2 * (y_ * z_ + w_ * x_);
            } else {
                col[0] = 2 * (x_ * z_ + w_ * y_); col[1] = 2 * (y_ * z_ - w_ * x_); col[2] = 1 - 2 * (x_ * x_ + y_ * y_);
            }
            if (cam) {
                float d = (cam[0] - p[0]) * col[0] + (cam[1] - p[1]) * col[1] + (cam[2] - p[2]) * col[2];
                if (d < 0.0f)
                    for (int c = 0; c < 3; ++c) col[c] = -col[c];
            }
            for (int c = 0; c < 3; ++c) out_normals[n * 3 + c] = col[c];
        }
    }
    return 0;
}

}  // extern "C"
