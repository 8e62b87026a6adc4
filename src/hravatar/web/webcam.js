// Live driving: MediaPipe's face landmarker (wasm + JS and face_landmarker.task, all served by
// `hravatar view` from local files) on the webcam, mapped to the avatar by drive.js with the bundle's
// driver table: the same mapping as `hravatar reenact` (hravatar.avatar.drive), with a live neutral
// (the first `live.calibration_frames` frames after the start or after "set neutral").
import { LiveDriver } from './drive.js';

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
  const driver = new LiveDriver(H.driver);
  const state = { latest: null, fresh: false, running: true, frames: 0, driver };
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
        const scores = driver.scoreVector(res.faceBlendshapes[0].categories);
        let matrix = null;
        if (res.facialTransformationMatrixes && res.facialTransformationMatrixes.length) {
          const d = res.facialTransformationMatrixes[0].data; // column-major 4x4 -> row-major
          matrix = [0, 1, 2, 3].flatMap((i) => [0, 1, 2, 3].map((j) => d[4 * j + i]));
        }
        state.latest = driver.step(scores, matrix);
        state.fresh = true; state.frames++;
        const jawOpen = scores[driver.col.jawOpen];
        const entry = { t: t0, jawOpen, scores, matrix, jaw: state.latest.pose[2][0], rotation: state.latest.rotation,
          translation: state.latest.translation,
          calibrated: driver.calib.length, detectMs: ms };
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
  state.setNeutral = () => { driver.resetNeutral(); api.webcamLog = []; };
  state.stop = () => { state.running = false; stream.getTracks().forEach((t) => t.stop()); video.hidden = true; landmarker.close(); };
  return state;
}
