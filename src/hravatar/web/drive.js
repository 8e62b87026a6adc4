// The driver -> avatar mapping of the webcam mode: a frame-by-frame port of hravatar.avatar.drive
// (drive_live: map_scores with the live neutral, head_motion for the rotation). The table comes from
// Python (the bundle's `driver`, drive.live_mapping); nothing here decides a rule of its own.
//   expression[k] = clamp(avatar.neutral[k] + sum over terms [src, gain] of gain * (score[src] - neutral[src]), 0, 1)
//                   (the correspondence's sparse rows, ARKit-named expressions, not jaw/gaze)
//   jaw           = axis * max(avatar.neutral_jaw + rad_per_unit * (jawOpen - neutral), 0)
//   eye (per eye) = Ry(yaw) Rx(pitch), yaw/pitch = weighted gaze scores minus their neutral
//   global        = V^T G(Rc Rc0^T) V R_ref   (Rc: the face's rotation in the OpenCV camera, Rc0: at the
//                   calibration's first frame; V: the avatar's camera; R_ref: its frontal reference pose;
//                   G scales the axis-angle's x, y, z by head.gain, drive.scale_rotation)
//   translation   = avatar.translation + V^T (p - p0): p the driver's turning point in its camera
//                   (face point t minus (Rc Rc0^T - I) lever), the lever fitted causally by least
//                   squares on the frames since the calibration's first (drive.live_lever)
// Live neutral: the percentile (gaze: the median) of each score over the first
// `live.calibration_frames` frames since the start or since resetNeutral(), updated as they come in.
import { rodrigues, mat3mul } from './renderer.js';

export function transpose3(R) { return [R[0], R[3], R[6], R[1], R[4], R[7], R[2], R[5], R[8]]; }

function inverse3(A) {
  const [a, b, c, d, e, f, g, h, i] = A;
  const C = [e * i - f * h, c * h - b * i, b * f - c * e, f * g - d * i, a * i - c * g, c * d - a * f,
    d * h - e * g, b * g - a * h, a * e - b * d];
  const det = a * C[0] + b * C[3] + c * C[6];
  return C.map((x) => x / det);
}

/** The nearest rotation of a row-major 3x3 (drive.nearest_rotation: Newton's polar iteration). */
export function nearestRotation(M, iterations = 30) {
  let X = M.slice();
  for (let k = 0; k < iterations; k++) {
    const Yt = transpose3(inverse3(X));
    const Y = X.map((x, j) => 0.5 * (x + Yt[j]));
    const done = Math.max(...Y.map((y, j) => Math.abs(y - X[j]))) < 1e-15;
    X = Y;
    if (done) break;
  }
  return X;
}

/** Row-major 3x3 rotation -> axis-angle (via the quaternion, largest component first). */
export function matToAxisAngle(R) {
  const [m00, m01, m02, m10, m11, m12, m20, m21, m22] = R;
  const tr = m00 + m11 + m22;
  let w, x, y, z, S;
  if (tr > 0) { S = Math.sqrt(tr + 1) * 2; w = 0.25 * S; x = (m21 - m12) / S; y = (m02 - m20) / S; z = (m10 - m01) / S; }
  else if (m00 > m11 && m00 > m22) { S = Math.sqrt(1 + m00 - m11 - m22) * 2; w = (m21 - m12) / S; x = 0.25 * S; y = (m01 + m10) / S; z = (m02 + m20) / S; }
  else if (m11 > m22) { S = Math.sqrt(1 + m11 - m00 - m22) * 2; w = (m02 - m20) / S; x = (m01 + m10) / S; y = 0.25 * S; z = (m12 + m21) / S; }
  else { S = Math.sqrt(1 + m22 - m00 - m11) * 2; w = (m10 - m01) / S; x = (m02 + m20) / S; y = (m12 + m21) / S; z = 0.25 * S; }
  if (w < 0) { w = -w; x = -x; y = -y; z = -z; }
  const s = Math.hypot(x, y, z);
  if (s < 1e-12) return [2 * x, 2 * y, 2 * z];
  const ang = 2 * Math.atan2(s, w);
  return [x / s * ang, y / s * ang, z / s * ang];
}

/** numpy.percentile (linear interpolation) of an array of numbers. */
export function percentile(values, q) {
  const v = values.slice().sort((a, b) => a - b);
  const pos = (q / 100) * (v.length - 1);
  const lo = Math.floor(pos), hi = Math.min(lo + 1, v.length - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - lo);
}

const GL_TO_CV = (m) => [m[0][0], m[0][1], m[0][2], m[1][0], m[1][1], m[1][2], m[2][0], m[2][1], m[2][2]];

export class LiveDriver {
  /** `table`: the bundle's `driver` (hravatar.avatar.drive.live_mapping). */
  constructor(table) {
    this.m = table; this.a = table.avatar;
    this.col = {}; table.names.forEach((n, i) => { this.col[n] = i; });
    const V = this.a.viewmat;
    this.V = [V[0][0], V[0][1], V[0][2], V[1][0], V[1][1], V[1][2], V[2][0], V[2][1], V[2][2]];
    this.F = GL_TO_CV(table.head.gl_to_cv);
    this.Rref = rodrigues(this.a.pose[0]);
    this.resetNeutral();
  }

  /** Start a new calibration ("set neutral"): the next frames are the neutral, the next face pose the reference. */
  resetNeutral() {
    this.calib = []; this.calibGaze = []; this.neutral = null; this.R0 = null; this.t0 = null; this.p0 = null;
    this.leverA = [0, 0, 0, 0, 0, 0, 0, 0, 0]; this.leverB = [0, 0, 0];  // running normal equations
  }

  /** The turning point's position (drive.pivot_translation with drive.live_lever): add this frame to the
   * lever's least squares (t - t0 ~ (Rr - I) c, ridge on c), solve, and return t - (Rr - I) c. */
  pivot(Rr, t) {
    const D = Rr.map((x, i) => x - (i % 4 === 0 ? 1 : 0)), dt = [0, 1, 2].map((i) => t[i] - this.t0[i]);
    for (let i = 0; i < 3; i++) {
      for (let j = 0; j < 3; j++) this.leverA[3 * i + j] += D[i] * D[j] + D[3 + i] * D[3 + j] + D[6 + i] * D[6 + j];
      this.leverB[i] += D[i] * dt[0] + D[3 + i] * dt[1] + D[6 + i] * dt[2];
    }
    const r2 = (this.m.head.lever_ridge ?? 0.1) ** 2;
    const Ai = inverse3(this.leverA.map((x, i) => x + (i % 4 === 0 ? r2 : 0)));
    const c = [0, 1, 2].map((i) => Ai[3 * i] * this.leverB[0] + Ai[3 * i + 1] * this.leverB[1] + Ai[3 * i + 2] * this.leverB[2]);
    return [0, 1, 2].map((i) => t[i] - (D[3 * i] * c[0] + D[3 * i + 1] * c[1] + D[3 * i + 2] * c[2]));
  }

  /** MediaPipe categories [{categoryName, score}] -> the score vector in the table's name order. */
  scoreVector(categories) {
    const s = new Array(this.m.names.length).fill(0);
    for (const c of categories) if (c.categoryName in this.col) s[this.col[c.categoryName]] = c.score;
    return s;
  }

  gaze(s) { // [[yaw, pitch] left, [yaw, pitch] right] (drive.gaze_angles)
    return ['left', 'right'].map((side) => ['yaw', 'pitch'].map((ax) =>
      this.m.eyes[side][ax].reduce((acc, [n, k]) => acc + k * s[this.col[n]], 0)));
  }

  calibrate(s) { // drive.live_neutral
    if (this.calib.length >= this.m.live.calibration_frames) return;
    this.calib.push(s.slice()); this.calibGaze.push(this.gaze(s));
    const q = this.m.neutral.percentile;
    this.neutral = {
      scores: s.map((_, k) => percentile(this.calib.map((r) => r[k]), q)),
      gaze: [0, 1].map((e) => [0, 1].map((a) => percentile(this.calibGaze.map((g) => g[e][a]), 50))),
    };
  }

  /** One frame: `s` scores (table name order), `M` the facial transformation matrix as a row-major
   * 4x4 (16 numbers; null: keep the reference head). Returns {expression [E], pose [5][3], translation
   * [3], rotation (row-major 3x3, the head's change in the avatar's world frame, or null)}. */
  step(s, M) {
    this.calibrate(s);
    const m = this.m, a = this.a, c = this.col, n = this.neutral;
    const expression = a.expr_names.map((name, j) => {
      const e = m.expressions[name];
      const v = e ? e.terms.reduce((acc, [src, g]) => acc + g * (s[c[src]] - n.scores[c[src]]), a.neutral[j])
        : a.neutral[j];
      return Math.min(1, Math.max(0, v));
    });
    const jm = m.jaw;
    const angle = Math.max(0, a.neutral_jaw + jm.rad_per_unit * (s[c[jm.source]] - n.scores[c[jm.source]]));
    const pose = a.pose.map((r) => r.slice());
    pose[2] = jm.axis.map((x) => x * angle);
    const g = this.gaze(s);
    for (let e = 0; e < 2; e++) {
      const yaw = g[e][0] - n.gaze[e][0], pitch = g[e][1] - n.gaze[e][1];
      pose[3 + e] = matToAxisAngle(mat3mul(rodrigues([0, yaw, 0]), rodrigues([pitch, 0, 0])));
    }
    let rotation = null, translation = a.translation.slice();
    if (M) {
      const Rc = mat3mul(this.F, mat3mul(nearestRotation([M[0], M[1], M[2], M[4], M[5], M[6], M[8], M[9], M[10]]), this.F));
      const sc = m.head.translation_scale_m, F = this.F;  // the face point in the OpenCV camera (metres)
      const tc = [0, 1, 2].map((i) => sc * (F[3 * i] * M[3] + F[3 * i + 1] * M[7] + F[3 * i + 2] * M[11]));
      if (!this.R0) { this.R0 = Rc; this.t0 = tc; }
      const Rr = mat3mul(Rc, transpose3(this.R0));
      const g = m.head.gain ?? [1, 1, 1];
      const Rg = g.every((x) => x === 1) ? Rr : rodrigues(matToAxisAngle(Rr).map((x, i) => x * g[i]));
      rotation = mat3mul(transpose3(this.V), mat3mul(Rg, this.V));
      pose[0] = matToAxisAngle(mat3mul(rotation, this.Rref));
      const p = this.pivot(Rr, tc);
      if (!this.p0) this.p0 = p;
      const d = [0, 1, 2].map((i) => p[i] - this.p0[i]), V = this.V;
      translation = [0, 1, 2].map((i) => a.translation[i] + V[i] * d[0] + V[3 + i] * d[1] + V[6 + i] * d[2]);
    }
    return { expression, pose, translation, rotation };
  }
}
