// Live driving: MediaPipe's face landmarker (wasm + JS and face_landmarker.task, all served by
// `hravatar view` from local files) on the webcam, mapped to the avatar with the bundle's driver
// table (the correspondence our tracker uses, exported from Python):
//   expression[index[name]] = score[name]         (ARKit-named expressions; the jaw ones stay 0)
//   pose.jaw.x             = jaw_gain * score[jawOpen]   (radians)
//   head rotation          = the face's rotation relative to the first webcam frame, turned into
//                            the avatar's world frame and applied before the reference pose.

function colMajorRot(d) { // MediaPipe's 4x4 (column-major) -> row-major 3x3 rotation
  return [d[0], d[4], d[8], d[1], d[5], d[9], d[2], d[6], d[10]];
}
function mul(A, B) {
  const C = new Array(9).fill(0);
  for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) for (let k = 0; k < 3; k++) C[3 * i + j] += A[3 * i + k] * B[3 * k + j];
  return C;
}
function tr(A) { return [A[0], A[3], A[6], A[1], A[4], A[7], A[2], A[5], A[8]]; }
function orthonormal(R) { // remove the scale of MediaPipe's transform (columns to unit length)
  const out = R.slice();
  for (let c = 0; c < 3; c++) { const n = Math.hypot(R[c], R[3 + c], R[6 + c]) || 1; out[c] /= n; out[3 + c] /= n; out[6 + c] /= n; }
  return out;
}

export async function startWebcam(H, video, say) {
  const api = window.hravatar;
  say('loading MediaPipe (local files) ...');
  let vision;
  try { vision = await import('./mediapipe/vision_bundle.mjs'); } catch (e) {
    throw new Error('MediaPipe web files are not installed on the server (run scripts/setup_env.sh): ' + e.message);
  }
  const fileset = await vision.FilesetResolver.forVisionTasks('./mediapipe/wasm');
  const landmarker = await vision.FaceLandmarker.createFromOptions(fileset, {
    baseOptions: { modelAssetPath: './models/face_landmarker.task', delegate: 'CPU' },
    runningMode: 'VIDEO', numFaces: 1, outputFaceBlendshapes: true, outputFacialTransformationMatrixes: true,
  });
  say('opening the webcam ...');
  const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  video.srcObject = stream; video.hidden = false; video.width = 160;
  await video.play();
  const d = H.driver;
  const V = H.camera.viewmat; const Rv = [V[0][0], V[0][1], V[0][2], V[1][0], V[1][1], V[1][2], V[2][0], V[2][1], V[2][2]];
  const F = [1, 0, 0, 0, -1, 0, 0, 0, -1]; // OpenGL camera (MediaPipe) <-> OpenCV camera
  const state = { latest: null, fresh: false, running: true, R0: null, frames: 0 };
  api.webcamLog = [];
  let lastTime = -1;
  const grab = document.createElement('canvas');
  const grabCtx = grab.getContext('2d', { willReadFrequently: true });
  const step = () => {
    if (!state.running) return;
    if (video.readyState >= 2 && video.currentTime !== lastTime) {
      lastTime = video.currentTime;
      // one still copy of the frame: what MediaPipe sees is what the probe (tests) reads
      grab.width = video.videoWidth; grab.height = video.videoHeight;
      grabCtx.drawImage(video, 0, 0);
      const t0 = performance.now();
      const res = landmarker.detectForVideo(grab, t0);
      const ms = performance.now() - t0;
      if (res.faceBlendshapes && res.faceBlendshapes.length) {
        const score = {};
        for (const c of res.faceBlendshapes[0].categories) score[c.categoryName] = c.score;
        const expression = {};
        for (const [n, i] of Object.entries(d.expression_index)) if (n in score) expression[i] = score[n];
        const jawOpen = score[d.jaw_from] || 0;
        let rotation = null;
        if (res.facialTransformationMatrixes && res.facialTransformationMatrixes.length) {
          const R = orthonormal(colMajorRot(res.facialTransformationMatrixes[0].data));
          if (!state.R0) state.R0 = R;
          const rel = mul(F, mul(mul(R, tr(state.R0)), F)); // relative rotation, OpenCV camera frame
          rotation = mul(tr(Rv), mul(rel, Rv)); // in the avatar's world frame
        }
        state.latest = { expression, jaw: d.jaw_gain * jawOpen, rotation, jawOpen };
        state.fresh = true; state.frames++;
        const entry = { t: t0, jawOpen, jaw: state.latest.jaw, rotation, detectMs: ms };
        if (typeof api.webcamProbe === 'function') entry.probe = api.webcamProbe(grab);
        api.webcamLog.push(entry); if (api.webcamLog.length > 5000) api.webcamLog.shift();
        say(`webcam: face found, MediaPipe ${ms.toFixed(0)} ms`);
      } else {
        say('webcam: no face');
      }
    }
    if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(step); else requestAnimationFrame(step);
  };
  step();
  state.stop = () => { state.running = false; stream.getTracks().forEach((t) => t.stop()); video.hidden = true; landmarker.close(); };
  return state;
}
