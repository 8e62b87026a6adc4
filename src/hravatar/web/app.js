// hravatar viewer page: loads the bundle next to this page (avatar.json ...), renders it with
// renderer.js, and offers orbit, expression sliders, pose, jaw, lights, materials, playback of the
// tracked sequence, an FPS counter and live webcam driving (webcam.js, MediaPipe served locally).
import { AvatarRenderer, loadBundle, rodrigues, mat3mul } from './renderer.js';
import { matToAxisAngle } from './drive.js';

const $ = (id) => document.getElementById(id);
const api = { errors: [], ready: null };
window.hravatar = api;

// ---- rotations ------------------------------------------------------------------------------------
export function eulerMatrix(yaw, pitch, roll) { return mat3mul(mat3mul(rodrigues([0, yaw, 0]), rodrigues([pitch, 0, 0])), rodrigues([0, 0, roll])); }

// ---- state ---------------------------------------------------------------------------------------
const st = {
  size: 512, azimuth: 0, elevation: 0, light: 0, lightRotation: 0, exposure: 0, f0Scale: 1, roughScale: 1,
  background: [1, 1, 1], envBackground: false, frame: -1, playing: false, jaw: 0, yaw: 0, pitch: 0, roll: 0,
  expr: {}, webcam: null, dirty: true,
};
let R = null, H = null, seq = null;

function baseParams() {
  const E = H.num_expr;
  let expression = H.reference.expression.slice(), pose = H.reference.pose.map((r) => r.slice()), translation = H.reference.translation.slice();
  if (seq && st.frame >= 0) {
    const row = seq.subarray(st.frame * (E + 18), (st.frame + 1) * (E + 18));
    expression = Array.from(row.subarray(0, E));
    pose = [0, 1, 2, 3, 4].map((j) => Array.from(row.subarray(E + 3 * j, E + 3 * j + 3)));
    translation = Array.from(row.subarray(E + 15, E + 18));
  }
  return { expression, pose, translation };
}

export function currentParams() {
  // the webcam's frame (drive.js: expression, pose and translation of the whole avatar) replaces
  // the reference/sequence frame; the sliders add to whichever is shown
  const p = st.webcam && st.webcam.latest ? copyParams(st.webcam.latest) : baseParams();
  for (const [i, v] of Object.entries(st.expr)) p.expression[+i] += v;
  p.pose[2][0] += st.jaw;
  if (st.yaw || st.pitch || st.roll) p.pose[0] = matToAxisAngle(mat3mul(eulerMatrix(st.yaw, st.pitch, st.roll), rodrigues(p.pose[0])));
  return p;
}
function copyParams(d) { return { expression: d.expression.slice(), pose: d.pose.map((r) => r.slice()), translation: d.translation.slice() }; }

export function currentCamera() {
  const c = H.camera; const s = st.size / Math.max(c.width, c.height);
  const W = Math.max(1, Math.round(c.width * s)), Hh = Math.max(1, Math.round(c.height * s));
  const K = c.K.flat().slice(); K[0] *= W / c.width; K[1] *= W / c.width; K[2] *= W / c.width;
  K[3] *= Hh / c.height; K[4] *= Hh / c.height; K[5] *= Hh / c.height; K[8] = 1;
  const V = c.viewmat.flat();
  // orbit: the world rotated about the head centre (as hravatar.apps.render.orbit_viewmats)
  const Rr = mat3mul(rodrigues([st.elevation * Math.PI / 180, 0, 0]), rodrigues([0, st.azimuth * Math.PI / 180, 0]));
  const ctr = H.head_center;
  const t = [0, 1, 2].map((i) => ctr[i] - (Rr[3 * i] * ctr[0] + Rr[3 * i + 1] * ctr[1] + Rr[3 * i + 2] * ctr[2]));
  const M = [Rr[0], Rr[1], Rr[2], t[0], Rr[3], Rr[4], Rr[5], t[1], Rr[6], Rr[7], Rr[8], t[2], 0, 0, 0, 1];
  const VM = new Array(16).fill(0);
  for (let i = 0; i < 4; i++) for (let j = 0; j < 4; j++) for (let k = 0; k < 4; k++) VM[4 * i + j] += V[4 * i + k] * M[4 * k + j];
  return { viewmat: VM, K, width: W, height: Hh };
}

function renderOpts() {
  return { light: st.light, lightRotation: st.lightRotation, exposure: st.exposure, f0Scale: st.f0Scale,
    roughScale: st.roughScale, background: st.background, envBackground: st.envBackground };
}

// ---- FPS ----------------------------------------------------------------------------------------
const frameTimes = [];
function drawFrame(asyncSort = false) {
  const t = R.render(currentParams(), currentCamera(), { ...renderOpts(), asyncSort });
  const now = performance.now(); frameTimes.push([now, t.total]);
  while (frameTimes.length > 1 && now - frameTimes[0][0] > 2000) frameTimes.shift();
  const ms = frameTimes.reduce((a, b) => a + b[1], 0) / frameTimes.length;
  api.frameMs = ms;
  const fps = 1000 / ms;
  $('fps').textContent = `${ms.toFixed(1)} ms/frame (${fps >= 10 ? fps.toFixed(0) : fps.toFixed(2)} fps)`;
}

let lastPlay = 0;
function loop(now) {
  if (st.playing && seq) {
    const fps = H.fps || 25;
    if (now - lastPlay >= 1000 / fps) { st.frame = (st.frame + 1) % H.sequence.frames; lastPlay = now; st.dirty = true; const f = $('sl_frame'); if (f) f.value = st.frame; }
  }
  if (st.webcam && st.webcam.fresh) { st.webcam.fresh = false; st.dirty = true; }
  if (st.dirty) { st.dirty = false; try { drawFrame(true); } catch (e) { fail(e); return; } }
  requestAnimationFrame(loop);
}

function fail(e) { api.errors.push(String(e && e.message || e)); $('msg').textContent = 'error: ' + (e && e.message || e); console.error(e); }

// ---- UI ------------------------------------------------------------------------------------------
function slider(parent, label, min, max, step, val, on, id) {
  const l = document.createElement('label'); l.textContent = label;
  const i = document.createElement('input'); i.type = 'range'; i.min = min; i.max = max; i.step = step; i.value = val;
  if (id) i.id = id;
  const out = document.createElement('span'); out.textContent = (+val).toFixed(2); out.style.width = '3em';
  i.oninput = () => { on(+i.value); out.textContent = (+i.value).toFixed(2); st.dirty = true; };
  l.appendChild(i); l.appendChild(out); parent.appendChild(l); return i;
}
function heading(parent, t) { const h = document.createElement('h4'); h.textContent = t; parent.appendChild(h); }

function buildUI() {
  const c = $('controls');
  heading(c, 'view');
  slider(c, 'azimuth', -180, 180, 1, 0, (v) => { st.azimuth = v; }, 'sl_azimuth');
  slider(c, 'elevation', -60, 60, 1, 0, (v) => { st.elevation = v; }, 'sl_elevation');
  const sz = document.createElement('label'); sz.textContent = 'size';
  const ss = document.createElement('select'); [256, 384, 512, 768, 1024].forEach((s) => { const o = document.createElement('option'); o.value = s; o.textContent = s + ' px'; if (s === st.size) o.selected = true; ss.appendChild(o); });
  ss.onchange = () => { st.size = +ss.value; st.dirty = true; }; sz.appendChild(ss); c.appendChild(sz);
  heading(c, 'light');
  const ls = document.createElement('select'); ls.id = 'sel_light';
  H.lights.forEach((L, k) => { const o = document.createElement('option'); o.value = k; o.textContent = L.name; ls.appendChild(o); });
  ls.onchange = () => { st.light = +ls.value; st.dirty = true; }; c.appendChild(ls);
  slider(c, 'light rotation', -180, 180, 1, 0, (v) => { st.lightRotation = v; }, 'sl_lightrot');
  slider(c, 'exposure (stops)', -3, 3, 0.1, 0, (v) => { st.exposure = v; }, 'sl_exposure');
  const bgl = document.createElement('label'); bgl.textContent = 'background';
  const bgs = document.createElement('select'); bgs.id = 'sel_bg';
  [['white', [1, 1, 1]], ['black', [0, 0, 0]], ['grey', [0.5, 0.5, 0.5]], ['environment', null]].forEach(([n]) => { const o = document.createElement('option'); o.textContent = n; bgs.appendChild(o); });
  bgs.onchange = () => { const v = bgs.value; st.envBackground = v === 'environment'; st.background = { white: [1, 1, 1], black: [0, 0, 0], grey: [0.5, 0.5, 0.5] }[v] || [0, 0, 0]; st.dirty = true; };
  bgl.appendChild(bgs); c.appendChild(bgl);
  if (H.mode === 'pbr') {
    heading(c, 'material');
    slider(c, 'F0 x', 0.25, 6, 0.05, 1, (v) => { st.f0Scale = v; }, 'sl_f0');
    slider(c, 'roughness x', 0.3, 1.5, 0.05, 1, (v) => { st.roughScale = v; }, 'sl_rough');
  }
  heading(c, 'pose');
  slider(c, 'jaw (rad)', -0.1, 0.5, 0.01, 0, (v) => { st.jaw = v; }, 'sl_jaw');
  slider(c, 'yaw (rad)', -0.8, 0.8, 0.01, 0, (v) => { st.yaw = v; }, 'sl_yaw');
  slider(c, 'pitch (rad)', -0.5, 0.5, 0.01, 0, (v) => { st.pitch = v; }, 'sl_pitch');
  slider(c, 'roll (rad)', -0.5, 0.5, 0.01, 0, (v) => { st.roll = v; }, 'sl_roll');
  if (H.sequence.frames > 0) {
    heading(c, 'sequence');
    const row = document.createElement('div'); row.className = 'row';
    const b = document.createElement('button'); b.textContent = 'play'; b.id = 'btn_play';
    b.onclick = () => { st.playing = !st.playing; b.textContent = st.playing ? 'pause' : 'play'; if (st.playing && st.frame < 0) st.frame = 0; };
    row.appendChild(b); c.appendChild(row);
    slider(c, 'frame (-1: reference)', -1, H.sequence.frames - 1, 1, -1, (v) => { st.frame = v; }, 'sl_frame');
  }
  heading(c, 'live driving');
  const wr = document.createElement('div'); wr.className = 'row';
  const wb = document.createElement('button'); wb.textContent = 'webcam on'; wb.id = 'btn_webcam';
  wb.onclick = async () => {
    if (st.webcam) { st.webcam.stop(); st.webcam = null; wb.textContent = 'webcam on'; st.dirty = true; return; }
    wb.disabled = true;
    try { const m = await import('./webcam.js'); st.webcam = await m.startWebcam(H, $('cam'), (msg) => { $('msg').textContent = msg; }); wb.textContent = 'webcam off'; }
    catch (e) { fail(e); } finally { wb.disabled = false; }
  };
  const nb = document.createElement('button'); nb.textContent = 'set neutral'; nb.id = 'btn_neutral';
  nb.title = 'hold a neutral face: the next frames become the neutral and the head reference';
  nb.onclick = () => { if (st.webcam) st.webcam.setNeutral(); };
  wr.appendChild(wb); wr.appendChild(nb); c.appendChild(wr);
  heading(c, 'expressions (added to the current frame)');
  H.expr_names.forEach((n, i) => slider(c, n, -1, 1.5, 0.01, 0, (v) => { if (v) st.expr[i] = v; else delete st.expr[i]; }, 'sl_expr_' + n));
  // orbit by dragging
  const cv = $('view'); let drag = null;
  cv.onpointerdown = (e) => { drag = [e.clientX, e.clientY]; cv.setPointerCapture(e.pointerId); };
  cv.onpointerup = () => { drag = null; };
  cv.onpointermove = (e) => {
    if (!drag) return;
    st.azimuth = ((st.azimuth + (e.clientX - drag[0]) * 0.5 + 540) % 360) - 180;
    st.elevation = Math.max(-60, Math.min(60, st.elevation + (e.clientY - drag[1]) * 0.3));
    drag = [e.clientX, e.clientY]; api.set({ azimuth: st.azimuth, elevation: st.elevation });
  };
}

// ---- test / scripting API ------------------------------------------------------------------------
api.state = st;
api.currentParams = () => currentParams();
api.render = (params, cam, opts) => R.render(params, cam, opts || {});
api.pixelsBase64 = () => { const px = R.pixels(); let s = ''; for (let i = 0; i < px.length; i += 32768) s += String.fromCharCode.apply(null, px.subarray(i, i + 32768)); return btoa(s); };
api.set = (patch) => {
  Object.assign(st, patch); st.dirty = true;
  for (const k of ['azimuth', 'elevation', 'jaw', 'yaw', 'pitch', 'roll']) {
    const el = $('sl_' + k); if (!(k in patch) || !el) continue;
    el.value = patch[k]; el.nextSibling.textContent = (+patch[k]).toFixed(2);
  }
  if ('size' in patch) { const o = [...document.querySelectorAll('select option')].find((x) => x.value === String(patch.size) && x.textContent.endsWith('px')); if (o) o.selected = true; }
};
api.drawNow = (asyncSort = false) => drawFrame(asyncSort);  // async: as the interactive loop draws

api.ready = (async () => {
  try {
    const b = await loadBundle('./');
    H = b.header;
    if (H.arrays.sequence) { const a = H.arrays.sequence; seq = new Float32Array(b.files[a.file], a.offset, a.shape[0] * a.shape[1]); }
    R = new AvatarRenderer($('view'), b);
    R.onSorted = () => { st.dirty = true; };  // the interactive loop sorts in a worker
    api.header = H; api.renderer = R;
    buildUI();
    $('msg').textContent = `${H.num_points} Gaussians, ${H.num_expr} expressions${R.floatBlend ? '' : ' (16-bit G-buffer)'}`;
    requestAnimationFrame(loop);
    return true;
  } catch (e) { fail(e); return false; }
})();
