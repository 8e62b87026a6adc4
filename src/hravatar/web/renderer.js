// hravatar WebGL2 renderer: deformation on the GPU, depth sort, G-buffer splatting and deferred
// split-sum shading, with the conventions of the Python renderer (hravatar.render / hravatar.shading):
// gsplat's EWA projection (eps2d 0.3, Jacobian clamped to 1.3x the field of view), the opacity-aware
// extent min(3.33, sqrt(2 ln(255 o))), alpha = min(0.999, o G), fragments below 1/255 skipped,
// front-to-back compositing (drawn back to front with premultiplied "over"), unpremultiplied
// G-buffer, HRAvatar's Fresnel and the BRDF table, seam-padded cube maps read bilinearly.

const DEFORM_VS = `#version 300 es
in vec2 a_pos; void main(){ gl_Position = vec4(a_pos, 0.0, 1.0); }`;

const DEFORM_FS = `#version 300 es
precision highp float; precision highp int; precision highp sampler2D;
uniform sampler2D u_means, u_quats, u_w0, u_w1, u_basis, u_bscale;
uniform int u_n, u_texw, u_K4, u_bw;
uniform vec4 u_coef[40];
uniform vec4 u_A[15];      // 5 joints x 3 rows of [R|t]
uniform vec3 u_trans;
layout(location=0) out vec4 o_mean;
layout(location=1) out vec4 o_quat;
vec4 bfetch(int i){ return texelFetch(u_basis, ivec2(i % u_bw, i / u_bw), 0); }
vec4 rotmatToQuat(float m00,float m01,float m02,float m10,float m11,float m12,float m20,float m21,float m22){
  vec4 sq = max(vec4(1.0+m00+m11+m22, 1.0+m00-m11-m22, 1.0-m00+m11-m22, 1.0-m00-m11+m22), 0.0);
  int best = 0; float bv = sq.x;
  if (sq.y > bv) { best = 1; bv = sq.y; }
  if (sq.z > bv) { best = 2; bv = sq.z; }
  if (sq.w > bv) { best = 3; bv = sq.w; }
  vec4 c;
  if (best == 0) c = vec4(sq.x, m21-m12, m02-m20, m10-m01);
  else if (best == 1) c = vec4(m21-m12, sq.y, m10+m01, m02+m20);
  else if (best == 2) c = vec4(m02-m20, m10+m01, sq.z, m12+m21);
  else c = vec4(m10-m01, m02+m20, m12+m21, sq.w);
  c /= 2.0 * sqrt(max(bv, 0.01));
  c /= max(length(c), 1e-12);
  return c.x < 0.0 ? -c : c;
}
vec4 qmul(vec4 a, vec4 b){
  return vec4(a.x*b.x - a.y*b.y - a.z*b.z - a.w*b.w,
              a.x*b.y + a.y*b.x + a.z*b.w - a.w*b.z,
              a.x*b.z - a.y*b.w + a.z*b.x + a.w*b.y,
              a.x*b.w + a.y*b.z - a.z*b.y + a.w*b.x);
}
void main(){
  ivec2 pc = ivec2(gl_FragCoord.xy);
  int p = pc.y * u_texw + pc.x;
  if (p >= u_n) { o_mean = vec4(0.0); o_quat = vec4(1.0, 0.0, 0.0, 0.0); return; }
  vec4 mo = texelFetch(u_means, pc, 0);
  vec3 off = vec3(0.0);
  int base = p * 3 * u_K4;
  for (int t = 0; t < u_K4; t++) {
    off.x += dot(bfetch(base + t), u_coef[t]);
    off.y += dot(bfetch(base + u_K4 + t), u_coef[t]);
    off.z += dot(bfetch(base + 2 * u_K4 + t), u_coef[t]);
  }
  vec3 xe = mo.xyz + off * texelFetch(u_bscale, pc, 0).xyz;
  vec4 w0 = texelFetch(u_w0, pc, 0); float w4 = texelFetch(u_w1, pc, 0).y;
  float ws[5] = float[5](w0.x, w0.y, w0.z, w0.w, w4);
  float deficit = 1.0 - (w0.x + w0.y + w0.z + w0.w + w4);
  vec4 r0 = vec4(deficit, 0.0, 0.0, 0.0), r1 = vec4(0.0, deficit, 0.0, 0.0), r2 = vec4(0.0, 0.0, deficit, 0.0);
  for (int j = 0; j < 5; j++) { r0 += ws[j] * u_A[3*j]; r1 += ws[j] * u_A[3*j+1]; r2 += ws[j] * u_A[3*j+2]; }
  r0.w += u_trans.x; r1.w += u_trans.y; r2.w += u_trans.z;
  vec3 posed = vec3(dot(r0.xyz, xe) + r0.w, dot(r1.xyz, xe) + r1.w, dot(r2.xyz, xe) + r2.w);
  vec4 ql = rotmatToQuat(r0.x, r0.y, r0.z, r1.x, r1.y, r1.z, r2.x, r2.y, r2.z);
  vec4 q0 = texelFetch(u_quats, pc, 0); q0 /= max(length(q0), 1e-12);
  vec4 q = qmul(ql, q0); q /= max(length(q), 1e-12);
  o_mean = vec4(posed, mo.w); o_quat = q;
}`;

const SPLAT_VS = `#version 300 es
precision highp float; precision highp int; precision highp sampler2D;
uniform sampler2D u_posed0, u_posed1, u_scales, u_mat0, u_mat1;
uniform int u_texw;
uniform mat4 u_view;       // OpenCV world-to-camera (row-major semantics handled by upload)
uniform vec4 u_K;          // fx fy cx cy
uniform float u_eps2d;     // 2D low-pass (px^2): 0.3, widened to the training's footprint
uniform vec2 u_size;       // width height
uniform vec3 u_camc;
uniform vec2 u_rough_range, u_f0_range;
uniform float u_f0_scale, u_rough_scale;
in uint a_idx;
flat out vec3 v_conic; flat out vec2 v_center; flat out float v_opac;
flat out vec3 v_albedo; flat out vec3 v_normal; flat out vec2 v_rf;
void cull(){ gl_Position = vec4(0.0, 0.0, 2.0, 1.0); }
void main(){
  int i = int(a_idx);
  ivec2 pc = ivec2(i % u_texw, i / u_texw);
  vec4 mo = texelFetch(u_posed0, pc, 0);
  vec4 q = texelFetch(u_posed1, pc, 0);
  vec3 s = texelFetch(u_scales, pc, 0).xyz;
  float op = mo.w;
  vec3 m = mo.xyz;
  // rotation (columns = local axes)
  float w = q.x, x = q.y, y = q.z, z = q.w;
  mat3 R = mat3(1.0-2.0*(y*y+z*z), 2.0*(x*y+w*z), 2.0*(x*z-w*y),
                2.0*(x*y-w*z), 1.0-2.0*(x*x+z*z), 2.0*(y*z+w*x),
                2.0*(x*z+w*y), 2.0*(y*z-w*x), 1.0-2.0*(x*x+y*y));
  mat3 M = mat3(R[0]*s.x, R[1]*s.y, R[2]*s.z);
  mat3 cov = M * transpose(M);
  mat3 Rv = mat3(u_view);
  vec3 tv = u_view[3].xyz;
  vec3 mc = Rv * m + tv;
  mat3 covc = Rv * cov * transpose(Rv);
  float tz = mc.z;
  if (tz < 0.01 || op < 1.0/255.0) { cull(); return; }
  float fx = u_K.x, fy = u_K.y, cx = u_K.z, cy = u_K.w, W = u_size.x, H = u_size.y;
  float tfx = 0.5 * W / fx, tfy = 0.5 * H / fy;
  float u = mc.x / tz, v = mc.y / tz;
  float tx = tz * min(max(u, -(cx / fx + 0.3 * tfx)), (W - cx) / fx + 0.3 * tfx);
  float ty = tz * min(max(v, -(cy / fy + 0.3 * tfy)), (H - cy) / fy + 0.3 * tfy);
  // J (2x3) as the columns of a mat3x2
  mat3x2 J = mat3x2(fx / tz, 0.0, 0.0, fy / tz, -fx * tx / (tz * tz), -fy * ty / (tz * tz));
  mat2 c2 = J * covc * transpose(J);
  float a = c2[0][0] + u_eps2d, b = 0.5 * (c2[0][1] + c2[1][0]), c = c2[1][1] + u_eps2d;
  float det = a * c - b * b;
  if (!(det > 0.0)) { cull(); return; }
  vec2 mean2d = vec2(fx * u + cx, fy * v + cy);
  float ext = min(3.33, sqrt(2.0 * log(max(op, 1.0/255.0) * 255.0)));
  float rx = ceil(ext * sqrt(max(a, 0.0))), ry = ceil(ext * sqrt(max(c, 0.0)));
  if (rx <= 0.0 && ry <= 0.0) { cull(); return; }
  if (mean2d.x + rx <= 0.0 || mean2d.x - rx >= W || mean2d.y + ry <= 0.0 || mean2d.y - ry >= H) { cull(); return; }
  v_conic = vec3(c / det, -b / det, a / det);
  v_center = mean2d; v_opac = op;
  // normal: shortest axis, toward the camera
  int k = 0; if (s.y < s[k]) k = 1; if (s.z < s[k]) k = 2;
  vec3 n = R[k];
  if (dot(u_camc - m, n) < 0.0) n = -n;
  v_normal = n;
  vec4 m0 = texelFetch(u_mat0, pc, 0); float f0 = texelFetch(u_mat1, pc, 0).x;
  v_albedo = m0.xyz;
  v_rf = vec2(clamp(m0.w * u_rough_scale, 0.02, 1.0), clamp(f0 * u_f0_scale, 0.0, 1.0));
  int vid = gl_VertexID;
  vec2 corner = vec2((vid & 1) == 1 ? 1.0 : -1.0, (vid & 2) == 2 ? 1.0 : -1.0);
  vec2 pix = mean2d + corner * (vec2(rx, ry) + 1.0);
  gl_Position = vec4(pix.x / W * 2.0 - 1.0, 1.0 - pix.y / H * 2.0, 0.0, 1.0);
}`;

const SPLAT_FS = `#version 300 es
precision highp float;
uniform vec2 u_size;
flat in vec3 v_conic; flat in vec2 v_center; flat in float v_opac;
flat in vec3 v_albedo; flat in vec3 v_normal; flat in vec2 v_rf;
layout(location=0) out vec4 o0;
layout(location=1) out vec4 o1;
layout(location=2) out vec4 o2;
void main(){
  vec2 pix = vec2(gl_FragCoord.x, u_size.y - gl_FragCoord.y);
  vec2 d = v_center - pix;
  float sigma = 0.5 * (v_conic.x * d.x * d.x + v_conic.z * d.y * d.y) + v_conic.y * d.x * d.y;
  if (sigma < 0.0) discard;
  float alpha = min(0.999, v_opac * exp(-sigma));
  if (alpha < 1.0 / 255.0) discard;
  o0 = vec4(v_albedo * alpha, alpha);
  o1 = vec4(v_normal * alpha, alpha);
  o2 = vec4(v_rf * alpha, 0.0, alpha);
}`;

const SHADE_FS = `#version 300 es
precision highp float; precision highp int; precision highp sampler2D;
uniform sampler2D u_gb0, u_gb1, u_gb2, u_light, u_lut, u_eq;
uniform vec2 u_size;
uniform mat3 u_Kinv;
uniform mat3 u_Rt;           // camera-to-world rotation (R^T)
uniform int u_lw;            // light texture width
uniform ivec2 u_irr;         // offset, res
uniform ivec2 u_spec[8];     // offset, res per level
uniform float u_lrough[8];
uniform int u_nlev;
uniform int u_sigmoid;
uniform float u_exposure, u_rot;  // stops, degrees about +y
uniform vec3 u_bg;
uniform int u_bg_env;        // 1: the environment behind the avatar (its equirect image, else the mirror level)
uniform ivec2 u_eqsize;      // the equirect backdrop's width, height (0: none)
uniform int u_mode;          // 0 pbr, 1 colour (albedo only)
uniform ivec2 u_lutsize;
out vec4 o_color;
vec3 lfetch(int i){ return texelFetch(u_light, ivec2(i % u_lw, i / u_lw), 0).rgb; }
void faceUV(vec3 d, out int face, out float u, out float v){
  float ax = abs(d.x), ay = abs(d.y), az = abs(d.z);
  bool isx = ax >= ay && ax >= az; bool isy = !isx && ay >= az;
  float sx = d.x >= 0.0 ? 1.0 : -1.0, sy = d.y >= 0.0 ? 1.0 : -1.0, sz = d.z >= 0.0 ? 1.0 : -1.0;
  face = isx ? (d.x >= 0.0 ? 0 : 1) : (isy ? (d.y >= 0.0 ? 2 : 3) : (d.z >= 0.0 ? 4 : 5));
  float ma = max(isx ? ax : (isy ? ay : az), 1e-12);
  float sc = isx ? -sx * d.z : (isy ? d.x : sz * d.x);
  float tc = isx ? -d.y : (isy ? sy * d.z : -d.y);
  u = sc / ma; v = tc / ma;
}
vec3 tap(ivec2 lev, int face, float u, float v){
  int res = lev.y; float rf = float(res); int rp = res + 2;
  float x = min(max((u + 1.0) / 2.0 * rf + 0.5, 0.0), rf + 1.0);
  float y = min(max((v + 1.0) / 2.0 * rf + 0.5, 0.0), rf + 1.0);
  float x0 = min(floor(x), rf), y0 = min(floor(y), rf);
  float wx = x - x0, wy = y - y0;
  int b = lev.x + face * rp * rp + int(y0) * rp + int(x0);
  return (lfetch(b) * (1.0 - wx) + lfetch(b + 1) * wx) * (1.0 - wy)
       + (lfetch(b + rp) * (1.0 - wx) + lfetch(b + rp + 1) * wx) * wy;
}
// bilinear lookup of the equirect backdrop, wrapping in longitude (hravatar.shading.cubemap.sample_equirect)
vec3 equirect(vec3 d){
  float W = float(u_eqsize.x), H = float(u_eqsize.y);
  float u = 0.5 + atan(d.x, -d.z) / (2.0 * 3.14159265358979), v = acos(clamp(d.y, -1.0 + 1e-7, 1.0 - 1e-7)) / 3.14159265358979;
  float x = mod(u * W - 0.5, W), y = clamp(v * H - 0.5, 0.0, H - 1.0);
  float x0 = min(floor(x), W - 1.0), y0 = min(floor(y), max(H - 2.0, 0.0));
  float wx = x - x0, wy = y - y0;
  int ix0 = int(x0), ix1 = (int(x0) + 1) % u_eqsize.x, iy0 = int(y0), iy1 = min(iy0 + 1, u_eqsize.y - 1);
  vec3 t00 = texelFetch(u_eq, ivec2(ix0, iy0), 0).rgb, t01 = texelFetch(u_eq, ivec2(ix1, iy0), 0).rgb;
  vec3 t10 = texelFetch(u_eq, ivec2(ix0, iy1), 0).rgb, t11 = texelFetch(u_eq, ivec2(ix1, iy1), 0).rgb;
  return (t00 * (1.0 - wx) + t01 * wx) * (1.0 - wy) + (t10 * (1.0 - wx) + t11 * wx) * wy;
}
vec3 rotd(vec3 d){
  if (u_rot == 0.0) return d;
  float a = radians(u_rot); float c = cos(a), s = sin(a);
  return vec3(c * d.x - s * d.z, d.y, s * d.x + c * d.z);
}
vec3 act(vec3 x){ return u_sigmoid == 1 ? 1.0 / (1.0 + exp(-x)) : x * exp2(u_exposure); }
vec3 irradiance(vec3 n){ int f; float u, v; faceUV(rotd(n), f, u, v); return act(tap(u_irr, f, u, v)); }
vec3 specular(vec3 r, float rough){
  int L = u_nlev; float level;
  if (L == 1) { int f; float u, v; faceUV(rotd(r), f, u, v); return act(tap(u_spec[0], f, u, v)); }
  float xr = clamp(rough, u_lrough[0], u_lrough[L-1]);
  int i = 0;
  for (int k = 1; k < 8; k++) { if (k < L - 1 && u_lrough[k] <= xr) i = k; }
  level = float(i) + (xr - u_lrough[i]) / (u_lrough[i+1] - u_lrough[i]);
  float lv = clamp(level, 0.0, float(L - 1));
  int l0 = min(int(floor(lv)), L - 2); float t = lv - float(l0);
  int f; float u, v; faceUV(rotd(r), f, u, v);
  return act(tap(u_spec[l0], f, u, v) * (1.0 - t) + tap(u_spec[l0 + 1], f, u, v) * t);
}
vec2 lut(float rough, float nv){
  float nr = float(u_lutsize.x), nvv = float(u_lutsize.y);
  float y = clamp(rough * nr - 0.5, 0.0, nr - 1.0), x = clamp(nv * nvv - 0.5, 0.0, nvv - 1.0);
  float y0 = min(floor(y), nr - 2.0), x0 = min(floor(x), nvv - 2.0);
  float wy = y - y0, wx = x - x0; ivec2 p = ivec2(x0, y0);
  vec2 t00 = texelFetch(u_lut, p, 0).rg, t01 = texelFetch(u_lut, p + ivec2(1, 0), 0).rg;
  vec2 t10 = texelFetch(u_lut, p + ivec2(0, 1), 0).rg, t11 = texelFetch(u_lut, p + ivec2(1, 1), 0).rg;
  return (t00 * (1.0 - wx) + t01 * wx) * (1.0 - wy) + (t10 * (1.0 - wx) + t11 * wx) * wy;
}
void main(){
  ivec2 pc = ivec2(gl_FragCoord.xy);
  vec2 pix = vec2(gl_FragCoord.x, u_size.y - gl_FragCoord.y);
  vec3 dw = normalize(u_Rt * (u_Kinv * vec3(pix, 1.0)));   // camera ray (world)
  vec3 bg = u_bg;
  if (u_bg_env == 1 && u_eqsize.x > 0) bg = act(equirect(rotd(dw)));
  else if (u_bg_env == 1) { int f; float u, v; faceUV(rotd(dw), f, u, v); bg = act(tap(u_spec[0], f, u, v)); }
  vec4 g0 = texelFetch(u_gb0, pc, 0);
  float alpha = g0.a;
  if (!(alpha > 0.0)) { o_color = vec4(clamp(bg, 0.0, 1.0), 1.0); return; }
  vec4 g1 = texelFetch(u_gb1, pc, 0), g2 = texelFetch(u_gb2, pc, 0);
  float A = max(alpha, 1e-6);
  vec3 albedo = g0.rgb / A;
  vec3 color;
  if (u_mode == 1) { color = albedo; }
  else {
    float rough = g2.r / A, f0 = g2.g / A;
    float ln = length(g1.rgb); vec3 n = g1.rgb / max(ln, 1e-8);
    vec3 V = -dw;
    float ndv = dot(n, V);
    float c = clamp(ndv, 1e-4, 1.0);
    vec3 R = 2.0 * ndv * n - V;
    vec2 fg = lut(rough, c);
    float ks = f0 + (max(1.0 - rough, f0) - f0) * exp2((-5.55473 * c - 6.98316) * c);
    color = albedo * irradiance(n) + specular(R, rough) * (ks * fg.x + fg.y);
  }
  o_color = vec4(clamp(color * alpha + bg * (1.0 - alpha), 0.0, 1.0), 1.0);
}`;

// ---- small maths ------------------------------------------------------------------------------
export function rodrigues(aa) {
  const [x, y, z] = aa; const t2 = x * x + y * y + z * z;
  let a, b;
  if (t2 < 1e-8) { a = 1 - t2 / 6; b = 0.5 - t2 / 24; } else { const t = Math.sqrt(t2); a = Math.sin(t) / t; b = (1 - Math.cos(t)) / t2; }
  const K = [0, -z, y, z, 0, -x, -y, x, 0];
  const KK = mat3mul(K, K);
  const R = new Array(9);
  for (let i = 0; i < 9; i++) R[i] = (i % 4 === 0 ? 1 : 0) + a * K[i] + b * KK[i];
  return R; // row-major 3x3
}
export function mat3mul(A, B) {
  const C = new Array(9).fill(0);
  for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) for (let k = 0; k < 3; k++) C[3 * i + j] += A[3 * i + k] * B[3 * k + j];
  return C;
}
/** The 2D low-pass (px^2) for a render of focal length `focal` (px) of an avatar trained at
 * `trainFocal` (px; null: unknown): 0.3 widened by (focal / trainFocal)^2 when rendering larger,
 * as hravatar.avatar.render.footprint_eps2d does (the image is then the training's, sampled finer). */
export function footprintEps2d(focal, trainFocal) {
  if (!trainFocal || trainFocal <= 0) return 0.3;
  const k = Math.max(1.0, focal / trainFocal);
  return 0.3 * k * k;
}

function mat4mul(A, B) { // row-major 4x4
  const C = new Array(16).fill(0);
  for (let i = 0; i < 4; i++) for (let j = 0; j < 4; j++) for (let k = 0; k < 4; k++) C[4 * i + j] += A[4 * i + k] * B[4 * k + j];
  return C;
}
// joint transforms A_j (row-major 3x4) of hravatar.head.lbs.kinematic_chain
export function jointTransforms(pose, joints, parents) {
  const J = joints.length; const rots = pose.map(rodrigues);
  const world = [];
  for (let j = 0; j < J; j++) {
    const rel = parents[j] < 0 ? joints[j] : joints[j].map((v, c) => v - joints[parents[j]][c]);
    const R = rots[j];
    const local = [R[0], R[1], R[2], rel[0], R[3], R[4], R[5], rel[1], R[6], R[7], R[8], rel[2], 0, 0, 0, 1];
    world.push(parents[j] < 0 ? local : mat4mul(world[parents[j]], local));
  }
  return world.map((G, j) => {
    const Jj = joints[j]; const out = [];
    for (let r = 0; r < 3; r++) {
      const t = G[4 * r + 3] - (G[4 * r] * Jj[0] + G[4 * r + 1] * Jj[1] + G[4 * r + 2] * Jj[2]);
      out.push(G[4 * r], G[4 * r + 1], G[4 * r + 2], t);
    }
    return out;
  });
}
export function poseFeature(pose) { // (R - I) of joints 1..4, row-major
  const f = [];
  for (let j = 1; j < pose.length; j++) { const R = rodrigues(pose[j]); for (let i = 0; i < 9; i++) f.push(R[i] - (i % 4 === 0 ? 1 : 0)); }
  return f;
}
function inv3(m) { // row-major
  const [a, b, c, d, e, f, g, h, i] = m;
  const A = e * i - f * h, B = -(d * i - f * g), C = d * h - e * g;
  const det = a * A + b * B + c * C;
  return [A / det, -(b * i - c * h) / det, (b * f - c * e) / det, B / det, (a * i - c * g) / det, -(a * f - c * d) / det,
    C / det, -(a * h - b * g) / det, (a * e - b * d) / det];
}

// radix sort of indices by float keys (ascending); exact for finite floats
function sortByKey(keys, n, idxOut, tmp) {
  const u = new Uint32Array(keys.buffer, 0, n);
  const k = new Uint32Array(n); const k2 = new Uint32Array(n);
  for (let i = 0; i < n; i++) { const x = u[i]; k[i] = (x & 0x80000000) ? ~x >>> 0 : (x | 0x80000000) >>> 0; idxOut[i] = i; }
  let src = idxOut, dst = tmp, ks = k, kd = k2;
  const cnt = new Uint32Array(65536);
  for (let shift = 0; shift < 32; shift += 16) {
    cnt.fill(0);
    for (let i = 0; i < n; i++) cnt[(ks[i] >>> shift) & 0xffff]++;
    let s = 0; for (let b = 0; b < 65536; b++) { const c = cnt[b]; cnt[b] = s; s += c; }
    for (let i = 0; i < n; i++) { const b = (ks[i] >>> shift) & 0xffff; const o = cnt[b]++; dst[o] = src[i]; kd[o] = ks[i]; }
    [src, dst] = [dst, src]; [ks, kd] = [kd, ks];
  }
  if (src !== idxOut) idxOut.set(src.subarray(0, n));
}

// ---- the renderer ------------------------------------------------------------------------------
export class AvatarRenderer {
  constructor(canvas, bundle) {
    this.canvas = canvas; this.b = bundle; this.h = bundle.header;
    const gl = canvas.getContext('webgl2', { antialias: false, premultipliedAlpha: false, preserveDrawingBuffer: true, alpha: false });
    if (!gl) throw new Error('WebGL2 is not available in this browser; use `hravatar view --server-render`');
    this.gl = gl;
    if (!gl.getExtension('EXT_color_buffer_float')) throw new Error('this browser cannot render to float textures (EXT_color_buffer_float)');
    this.floatBlend = !!gl.getExtension('EXT_float_blend');
    this._build();
  }

  _prog(vs, fs) {
    const gl = this.gl;
    const mk = (type, src) => { const s = gl.createShader(type); gl.shaderSource(s, src); gl.compileShader(s);
      if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error('shader: ' + gl.getShaderInfoLog(s)); return s; };
    const p = gl.createProgram(); gl.attachShader(p, mk(gl.VERTEX_SHADER, vs)); gl.attachShader(p, mk(gl.FRAGMENT_SHADER, fs));
    gl.linkProgram(p); if (!gl.getProgramParameter(p, gl.LINK_STATUS)) throw new Error('link: ' + gl.getProgramInfoLog(p));
    const u = {}; const n = gl.getProgramParameter(p, gl.ACTIVE_UNIFORMS);
    for (let i = 0; i < n; i++) { const info = gl.getActiveUniform(p, i); const name = info.name.replace(/\[0\]$/, ''); u[name] = gl.getUniformLocation(p, info.name); }
    return { p, u };
  }

  _tex(internal, format, type, w, h, data, filter) {
    const gl = this.gl; const t = gl.createTexture();
    gl.bindTexture(gl.TEXTURE_2D, t);
    gl.pixelStorei(gl.UNPACK_ALIGNMENT, 1);
    gl.texImage2D(gl.TEXTURE_2D, 0, internal, w, h, 0, format, type, data);
    const f = filter || gl.NEAREST;
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, f); gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, f);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE); gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
    return t;
  }

  _array(name) {
    const a = this.h.arrays[name]; const buf = this.b.files[a.file];
    const n = a.shape.reduce((x, y) => x * y, 1);
    if (a.dtype === 'f32') return new Float32Array(buf, a.offset, n);
    if (a.dtype === 'f16') return new Uint16Array(buf, a.offset, n);
    if (a.dtype === 'i8') return new Int8Array(buf, a.offset, n);
    return new Uint32Array(buf, a.offset, n);
  }

  _arrayTex(name) {
    const gl = this.gl; const a = this.h.arrays[name]; const [hh, ww] = a.shape;
    if (a.dtype === 'f32') return this._tex(gl.RGBA32F, gl.RGBA, gl.FLOAT, ww, hh, this._array(name));
    if (a.dtype === 'i8') return this._tex(gl.RGBA8_SNORM, gl.RGBA, gl.BYTE, ww, hh, this._array(name));
    return this._tex(gl.RGBA16F, gl.RGBA, gl.HALF_FLOAT, ww, hh, this._array(name));
  }

  _build() {
    const gl = this.gl, h = this.h;
    this.N = h.num_points;
    [this.tw, this.th] = h.point_tex;
    this.tex = {};
    for (const k of ['means_opacity', 'quats', 'scales', 'material', 'weights', 'extra', 'basis', 'basis_scale']) this.tex[k] = this._arrayTex(k);
    // deformation targets
    this.posed0 = this._tex(gl.RGBA32F, gl.RGBA, gl.FLOAT, this.tw, this.th, null);
    this.posed1 = this._tex(gl.RGBA32F, gl.RGBA, gl.FLOAT, this.tw, this.th, null);
    this.deformFbo = gl.createFramebuffer();
    gl.bindFramebuffer(gl.FRAMEBUFFER, this.deformFbo);
    gl.framebufferTexture2D(gl.FRAMEBUFFER, gl.COLOR_ATTACHMENT0, gl.TEXTURE_2D, this.posed0, 0);
    gl.framebufferTexture2D(gl.FRAMEBUFFER, gl.COLOR_ATTACHMENT1, gl.TEXTURE_2D, this.posed1, 0);
    this._checkFbo('deformation');
    this.deform = this._prog(DEFORM_VS, DEFORM_FS);
    this.splat = this._prog(SPLAT_VS, SPLAT_FS);
    this.shade = this._prog(DEFORM_VS, SHADE_FS);
    // full-screen triangle
    this.quadVao = gl.createVertexArray(); gl.bindVertexArray(this.quadVao);
    const qb = gl.createBuffer(); gl.bindBuffer(gl.ARRAY_BUFFER, qb);
    gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 3, -1, -1, 3]), gl.STATIC_DRAW);
    for (const pr of [this.deform, this.shade]) { const loc = gl.getAttribLocation(pr.p, 'a_pos'); if (loc >= 0) { gl.enableVertexAttribArray(loc); gl.vertexAttribPointer(loc, 2, gl.FLOAT, false, 0, 0); } }
    // splat instances
    this.splatVao = gl.createVertexArray(); gl.bindVertexArray(this.splatVao);
    this.idxBuf = gl.createBuffer(); gl.bindBuffer(gl.ARRAY_BUFFER, this.idxBuf);
    gl.bufferData(gl.ARRAY_BUFFER, this.N * 4, gl.DYNAMIC_DRAW);
    const il = gl.getAttribLocation(this.splat.p, 'a_idx');
    gl.enableVertexAttribArray(il); gl.vertexAttribIPointer(il, 1, gl.UNSIGNED_INT, 0, 0); gl.vertexAttribDivisor(il, 1);
    gl.bindVertexArray(null);
    // readback + sort buffers
    this.readback = new Float32Array(this.tw * this.th * 4);
    this.keys = new Float32Array(this.N); this.order = new Uint32Array(this.N); this.tmp = new Uint32Array(this.N);
    // LUT
    const lut = h.lut; this.lutSize = lut.size;
    this.lutTex = this._tex(gl.RG32F, gl.RG, gl.FLOAT, lut.size[1], lut.size[0], new Float32Array(this.b.files[lut.file]));
    this.lights = h.lights.map((L) => this._lightTex(L, this.b.files[L.file], L.background && this.b.files[L.background.file]));
    this.gbW = 0; this.gbH = 0;
  }

  _lightTex(L, buf, bgBuf) {
    const gl = this.gl;
    const out = { desc: L, tex: this._tex(gl.RGBA32F, gl.RGBA, gl.FLOAT, L.width, L.height, new Float32Array(buf)) };
    const B = L.background;  // the equirect backdrop (float16 RGB), HDR maps only
    if (B && bgBuf) out.bg = this._tex(gl.RGB16F, gl.RGB, gl.HALF_FLOAT, B.width, B.height, new Uint16Array(bgBuf));
    return out;
  }

  _checkFbo(what) {
    const gl = this.gl; const st = gl.checkFramebufferStatus(gl.FRAMEBUFFER);
    if (st !== gl.FRAMEBUFFER_COMPLETE) throw new Error(`${what} framebuffer incomplete (0x${st.toString(16)})`);
  }

  _gbuffer(W, H) {
    if (this.gbW === W && this.gbH === H) return;
    const gl = this.gl;
    const fmt = this.floatBlend ? gl.RGBA32F : gl.RGBA16F;
    if (this.gb) for (const t of this.gb) gl.deleteTexture(t);
    this.gb = [0, 1, 2].map(() => this._tex(fmt, gl.RGBA, gl.FLOAT, W, H, null));
    this.gbFbo = this.gbFbo || gl.createFramebuffer();
    gl.bindFramebuffer(gl.FRAMEBUFFER, this.gbFbo);
    this.gb.forEach((t, i) => gl.framebufferTexture2D(gl.FRAMEBUFFER, gl.COLOR_ATTACHMENT0 + i, gl.TEXTURE_2D, t, 0));
    this._checkFbo('G-buffer');
    this.gbW = W; this.gbH = H;
  }

  _bind(prog, name, tex, unit) {
    const gl = this.gl; gl.activeTexture(gl.TEXTURE0 + unit); gl.bindTexture(gl.TEXTURE_2D, tex); gl.uniform1i(prog.u[name], unit);
  }

  // params: {expression: [E], pose: [5][3], translation: [3]}
  deformPass(params) {
    const gl = this.gl, h = this.h, pr = this.deform;
    const E = h.num_expr, K4 = h.basis_texels;
    const coef = new Float32Array(40 * 4);
    for (let i = 0; i < E; i++) coef[i] = params.expression[i] || 0;
    const pf = poseFeature(params.pose);
    for (let i = 0; i < h.num_pose_features; i++) coef[E + i] = pf[i];
    const A = jointTransforms(params.pose, h.joints, h.parents);
    gl.bindFramebuffer(gl.FRAMEBUFFER, this.deformFbo);
    gl.drawBuffers([gl.COLOR_ATTACHMENT0, gl.COLOR_ATTACHMENT1]);
    gl.viewport(0, 0, this.tw, this.th);
    gl.disable(gl.BLEND);
    gl.useProgram(pr.p);
    this._bind(pr, 'u_means', this.tex.means_opacity, 0); this._bind(pr, 'u_quats', this.tex.quats, 1);
    this._bind(pr, 'u_w0', this.tex.weights, 2); this._bind(pr, 'u_w1', this.tex.extra, 3);
    this._bind(pr, 'u_basis', this.tex.basis, 4); this._bind(pr, 'u_bscale', this.tex.basis_scale, 5);
    gl.uniform1i(pr.u.u_n, this.N); gl.uniform1i(pr.u.u_texw, this.tw); gl.uniform1i(pr.u.u_K4, K4);
    gl.uniform1i(pr.u.u_bw, h.basis_tex[0]);
    gl.uniform4fv(pr.u.u_coef, coef);
    gl.uniform4fv(pr.u.u_A, new Float32Array(A.flat()));
    gl.uniform3fv(pr.u.u_trans, new Float32Array(params.translation));
    gl.bindVertexArray(this.quadVao); gl.drawArrays(gl.TRIANGLES, 0, 3);
  }

  // the posed centres of the current deformation, read back now (a stall: scripted renders)
  _readSync(key) {
    const gl = this.gl;
    gl.bindFramebuffer(gl.FRAMEBUFFER, this.deformFbo); gl.readBuffer(gl.COLOR_ATTACHMENT0);
    gl.readPixels(0, 0, this.tw, this.th, gl.RGBA, gl.FLOAT, this.readback);
    this.readbackKey = key;
  }

  // ... or without a stall (the interactive loop): copied into a pixel-pack buffer on the GPU, a fence,
  // and polled from a timer until the fence has passed; then read (no wait) and sorted in the worker
  _readAsync(key) {
    if (this.pendingRead) return;  // one read in flight; its completion asks for the newest again
    const gl = this.gl;
    if (!this.pbo) { this.pbo = gl.createBuffer(); gl.bindBuffer(gl.PIXEL_PACK_BUFFER, this.pbo); gl.bufferData(gl.PIXEL_PACK_BUFFER, this.readback.byteLength, gl.STREAM_READ); }
    gl.bindFramebuffer(gl.FRAMEBUFFER, this.deformFbo); gl.readBuffer(gl.COLOR_ATTACHMENT0);
    gl.bindBuffer(gl.PIXEL_PACK_BUFFER, this.pbo);
    gl.readPixels(0, 0, this.tw, this.th, gl.RGBA, gl.FLOAT, 0);
    gl.bindBuffer(gl.PIXEL_PACK_BUFFER, null);
    this.pendingRead = { sync: gl.fenceSync(gl.SYNC_GPU_COMMANDS_COMPLETE, 0), key };
    gl.flush();
    this.asyncReads = (this.asyncReads || 0) + 1;
    setTimeout(() => this._pollRead(), 1);
  }

  _pollRead() {
    const gl = this.gl, pr = this.pendingRead;
    if (!pr) return;
    const st = gl.clientWaitSync(pr.sync, 0, 0);
    if (st === gl.TIMEOUT_EXPIRED) { setTimeout(() => this._pollRead(), 2); return; }
    gl.deleteSync(pr.sync); this.pendingRead = null;
    if (st === gl.WAIT_FAILED) { if (this.onSorted) this.onSorted(); return; }  // (context lost) try again on redraw
    gl.bindBuffer(gl.PIXEL_PACK_BUFFER, this.pbo);
    gl.getBufferSubData(gl.PIXEL_PACK_BUFFER, 0, this.readback);
    gl.bindBuffer(gl.PIXEL_PACK_BUFFER, null);
    this.readbackKey = pr.key;
    this._sortAsync(this.lastView);
  }

  _keys(view) {
    const r = this.readback, n = this.N, k = this.keys;
    const v20 = view[8], v21 = view[9], v22 = view[10], v23 = view[11];
    for (let i = 0; i < n; i++) k[i] = -(v20 * r[4 * i] + v21 * r[4 * i + 1] + v22 * r[4 * i + 2] + v23);
    return k;
  }

  _sortAsync(view) {
    if (this.sortPending) return;  // the reply triggers a redraw, which asks again
    this.sortPending = true;
    const copy = this._keys(view).slice();
    this.worker.postMessage({ keys: copy, n: this.N, key: this.readbackKey + '|' + view.slice(8, 12).join(',') }, [copy.buffer]);
  }

  // back to front: descending camera z. async (the interactive loop): the posed centres come back
  // without a stall (_readAsync) and are sorted in a worker; the page keeps drawing with the last
  // order until the new one arrives (onSorted is called then: a redraw, which asks again if the
  // deformation or the view moved on meanwhile). The first sort and scripted renders are synchronous.
  sortPass(view, async = false) {
    const key = this._deformedKey + '|' + view.slice(8, 12).join(',');
    if (key === this.sortedKey) return;
    this.lastView = view;
    if (async && this.sortedKey !== undefined && this._sortWorker()) {
      if (this.readbackKey !== this._deformedKey) this._readAsync(this._deformedKey);
      else this._sortAsync(view);
      return;
    }
    if (this.readbackKey !== this._deformedKey) this._readSync(this._deformedKey);
    sortByKey(this._keys(view), this.N, this.order, this.tmp);
    this._uploadOrder(this.order, key);
  }

  _uploadOrder(order, key) {
    const gl = this.gl; gl.bindBuffer(gl.ARRAY_BUFFER, this.idxBuf); gl.bufferSubData(gl.ARRAY_BUFFER, 0, order);
    this.sortedKey = key;
  }

  _sortWorker() {
    if (this.worker !== undefined) return this.worker;
    try {
      const src = `${sortByKey.toString()}
onmessage = (e) => { const { keys, n, key } = e.data; const order = new Uint32Array(n);
  sortByKey(keys, n, order, new Uint32Array(n)); postMessage({ order, key }, [order.buffer]); };`;
      this.worker = new Worker(URL.createObjectURL(new Blob([src], { type: 'text/javascript' })));
      this.worker.onmessage = (e) => {
        this.sortPending = false;
        // an order of an older deformation still beats the one drawn, unless that one is of the current
        const cur = this._deformedKey + '|';
        if (e.data.key.startsWith(cur) || !(this.sortedKey || '').startsWith(cur)) this._uploadOrder(e.data.order, e.data.key);
        if (this.onSorted) this.onSorted();
      };
    } catch (err) { this.worker = null; }
    return this.worker;
  }

  // cam: {viewmat: row-major 16 (OpenCV world-to-camera), K: row-major 9, width, height}
  // opts: {light, f0Scale, roughScale, background: [r,g,b], envBackground, lightRotation}
  render(params, cam, opts = {}) {
    const gl = this.gl, h = this.h;
    const t0 = performance.now();
    const W = cam.width, H = cam.height;
    if (this.canvas.width !== W || this.canvas.height !== H) { this.canvas.width = W; this.canvas.height = H; }
    const key = JSON.stringify(params);
    if (key !== this._deformedKey) { this.deformPass(params); this._deformedKey = key; } // orbit/light only: no redeform
    const V = cam.viewmat;
    this.sortPass(V, !!opts.asyncSort);
    const t1 = performance.now();
    // G-buffer
    this._gbuffer(W, H);
    gl.bindFramebuffer(gl.FRAMEBUFFER, this.gbFbo);
    gl.drawBuffers([gl.COLOR_ATTACHMENT0, gl.COLOR_ATTACHMENT1, gl.COLOR_ATTACHMENT2]);
    gl.viewport(0, 0, W, H);
    gl.clearColor(0, 0, 0, 0); gl.clear(gl.COLOR_BUFFER_BIT);
    gl.enable(gl.BLEND); gl.blendFunc(gl.ONE, gl.ONE_MINUS_SRC_ALPHA);
    const pr = this.splat; gl.useProgram(pr.p);
    this._bind(pr, 'u_posed0', this.posed0, 0); this._bind(pr, 'u_posed1', this.posed1, 1);
    this._bind(pr, 'u_scales', this.tex.scales, 2); this._bind(pr, 'u_mat0', this.tex.material, 3);
    this._bind(pr, 'u_mat1', this.tex.extra, 4);
    gl.uniform1i(pr.u.u_texw, this.tw);
    // column-major upload of the row-major OpenCV matrix
    const colMajor = [V[0], V[4], V[8], V[12], V[1], V[5], V[9], V[13], V[2], V[6], V[10], V[14], V[3], V[7], V[11], V[15]];
    gl.uniformMatrix4fv(pr.u.u_view, false, new Float32Array(colMajor));
    const K = cam.K;
    gl.uniform4f(pr.u.u_K, K[0], K[4], K[2], K[5]);
    gl.uniform1f(pr.u.u_eps2d, footprintEps2d(K[0], this.h.train_focal_px));
    gl.uniform2f(pr.u.u_size, W, H);
    // camera centre = -R^T t
    const c = [0, 1, 2].map((j) => -(V[j] * V[3] + V[4 + j] * V[7] + V[8 + j] * V[11]));
    gl.uniform3f(pr.u.u_camc, c[0], c[1], c[2]);
    gl.uniform1f(pr.u.u_f0_scale, opts.f0Scale ?? 1); gl.uniform1f(pr.u.u_rough_scale, opts.roughScale ?? 1);
    gl.bindVertexArray(this.splatVao);
    gl.drawArraysInstanced(gl.TRIANGLE_STRIP, 0, 4, this.N);
    gl.disable(gl.BLEND);
    // shading
    gl.bindFramebuffer(gl.FRAMEBUFFER, null);
    gl.viewport(0, 0, W, H);
    const sp = this.shade; gl.useProgram(sp.p);
    this.gb.forEach((t, i) => this._bind(sp, `u_gb${i}`, t, i));
    const L = this.lights[opts.light ?? 0];
    this._bind(sp, 'u_light', L.tex, 3); this._bind(sp, 'u_lut', this.lutTex, 4);
    this._bind(sp, 'u_eq', L.bg || this.lutTex, 5);  // (any texture when there is no backdrop: unused)
    const eq = L.bg && !opts.cubeBackground;  // cubeBackground: the sharpest cube map instead (tests)
    gl.uniform2i(sp.u.u_eqsize, eq ? L.desc.background.width : 0, eq ? L.desc.background.height : 0);
    gl.uniform2f(sp.u.u_size, W, H);
    const Kinv = inv3(K);
    gl.uniformMatrix3fv(sp.u.u_Kinv, true, new Float32Array(Kinv));
    gl.uniformMatrix3fv(sp.u.u_Rt, false, new Float32Array([V[0], V[1], V[2], V[4], V[5], V[6], V[8], V[9], V[10]]));
    const d = L.desc;
    gl.uniform1i(sp.u.u_lw, d.width);
    gl.uniform2i(sp.u.u_irr, d.irradiance.offset, d.irradiance.res);
    const spec = new Int32Array(16); const lr = new Float32Array(8);
    d.specular.forEach((s, i) => { spec[2 * i] = s.offset; spec[2 * i + 1] = s.res; lr[i] = d.level_roughness[i]; });
    gl.uniform2iv(sp.u.u_spec, spec); gl.uniform1fv(sp.u.u_lrough, lr); gl.uniform1i(sp.u.u_nlev, d.specular.length);
    gl.uniform1i(sp.u.u_sigmoid, d.activation === 'sigmoid' ? 1 : 0);
    gl.uniform1f(sp.u.u_exposure, d.exposure + (opts.exposure ?? 0));
    gl.uniform1f(sp.u.u_rot, (d.rotation || 0) + (opts.lightRotation ?? 0));
    const bg = opts.background || [0, 0, 0];
    gl.uniform3f(sp.u.u_bg, bg[0], bg[1], bg[2]);
    gl.uniform1i(sp.u.u_bg_env, opts.envBackground ? 1 : 0);
    gl.uniform1i(sp.u.u_mode, h.mode === 'pbr' ? 0 : 1);
    gl.uniform2i(sp.u.u_lutsize, this.lutSize[0], this.lutSize[1]);
    gl.bindVertexArray(this.quadVao); gl.drawArrays(gl.TRIANGLES, 0, 3);
    gl.bindVertexArray(null);
    // wait for this frame (a 1-pixel readback; gl.finish does not wait in every browser), so that
    // the frame time reported is the real one, not the time to queue the commands
    gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, this._px1 || (this._px1 = new Uint8Array(4)));
    const t2 = performance.now();
    this.lastTimes = { deformSort: t1 - t0, total: t2 - t0 };
    return this.lastTimes;
  }

  // RGB bytes of the canvas, top row first
  pixels() {
    const gl = this.gl, W = this.canvas.width, H = this.canvas.height;
    const px = new Uint8Array(W * H * 4);
    gl.bindFramebuffer(gl.FRAMEBUFFER, null);
    gl.readPixels(0, 0, W, H, gl.RGBA, gl.UNSIGNED_BYTE, px);
    const out = new Uint8Array(W * H * 3);
    for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) {
      const s = 4 * ((H - 1 - y) * W + x), o = 3 * (y * W + x);
      out[o] = px[s]; out[o + 1] = px[s + 1]; out[o + 2] = px[s + 2];
    }
    return out;
  }
}

export async function loadBundle(base) {
  const r = await fetch(base + 'avatar.json');
  if (!r.ok) throw new Error(`cannot load ${base}avatar.json (${r.status})`);
  const header = await r.json();
  const names = new Set(Object.values(header.arrays).map((a) => a.file));
  header.lights.forEach((L) => { names.add(L.file); if (L.background) names.add(L.background.file); }); names.add(header.lut.file);
  const files = {};
  await Promise.all([...names].map(async (n) => {
    const q = await fetch(base + n); if (!q.ok) throw new Error(`cannot load ${base}${n} (${q.status})`);
    files[n] = await q.arrayBuffer();
  }));
  return { header, files };
}
