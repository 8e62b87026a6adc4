#!/usr/bin/env bash
# The CUDA check, prepared on the CPU machine and run on a lent GPU machine with no registry.
#
#   bash benchmarks/cuda_check.sh prepare SUBJECT   # here: fills .gpu/ (ignored; ~55 MB): cp312 wheels
#                                                   # (gsplat + what the image lacks), the asset cache
#                                                   # (open head model, MobileNetV2), SUBJECT's frames
#                                                   # as lossless WebP (about 45% of the PNGs)
#   bash benchmarks/cuda_check.sh run [ITERATIONS]  # there, with .gpu carried: gsplat's extension,
#                                                   # the CUDA tests, the render and train-step
#                                                   # benchmarks, and a real-clip training of
#                                                   # ITERATIONS (default 1000) at full resolution;
#                                                   # results and the packed test renders go to $OUT
#
# Back here: python benchmarks/score_renders.py score OUT/renders.npz SUBJECT (LPIPS needs weights
# the GPU machine does not carry). Measured with it: benchmarks/results/cuda_h200.json.
set -o pipefail
cd "$(dirname "$0")/.."
case "$1" in
prepare)
    subject=${2:?usage: cuda_check.sh prepare SUBJECT}
    py=${PYTHON:-.venv/bin/python}
    grep -qx "/.gpu/" .git/info/exclude 2>/dev/null || echo "/.gpu/" >> .git/info/exclude
    rm -rf .gpu && mkdir -p .gpu/whl .gpu/cache/assets .gpu/subject/image
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .gpu/whl gsplat==1.5.3 tyro docstring-parser typeguard shtab openexr || exit 1
    cache=${HRAVATAR_CACHE:-$HOME/.cache/hravatar}
    cp -r "$cache"/head "$cache"/shading .gpu/cache/ && cp "$cache"/assets/mobilenet_v2_imagenet.pth .gpu/cache/assets/ || exit 1
    cp -r "$cache"/correspondence "$cache"/embeddings .gpu/cache/ 2>/dev/null
    cp "$subject"/manifest.json "$subject"/tracked_params.json .gpu/subject/ || exit 1
    PYTHONPATH=src "$py" - "$subject" <<'PY' || exit 1
import sys
from pathlib import Path
from PIL import Image
for f in sorted(Path(sys.argv[1], "image").glob("*.png")):
    Image.open(f).save(f".gpu/subject/image/{f.stem}.webp", "WEBP", lossless=True, quality=100, method=4, exact=True)
PY
    du -sh .gpu
    echo "now: run(command='bash benchmarks/cuda_check.sh run', carry=['.gpu'])"
    ;;
run)
    n=${2:-1000}
    export PYTHONUNBUFFERED=1 HRAVATAR_CACHE=$PWD/.gpu/cache TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16
    site=$PWD/.gpu/site subject=$PWD/.gpu/subject_png work=$PWD/.gpu/work   # all inside the carried, ignored .gpu/
    [ -d "$site/gsplat" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --target "$site" .gpu/whl/*.whl || exit 1
    export PYTHONPATH=$site:$PWD/src
    python3 - "$subject" <<'PY' || exit 1
import shutil
import sys
from pathlib import Path
from PIL import Image
out = Path(sys.argv[1], "image")
out.mkdir(parents=True, exist_ok=True)
for f in ("manifest.json", "tracked_params.json"):
    shutil.copy(Path(".gpu/subject", f), out.parent / f)
for f in sorted(Path(".gpu/subject/image").glob("*.webp")):
    Image.open(f).save(out / f"{f.stem}.png")  # lossless: the same pixels as the prepared subject
PY
    t=$(date +%s); python3 -c "from gsplat.cuda._backend import _C" || exit 1; echo "gsplat extension $(( $(date +%s) - t )) s"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
    timeout 300 python3 -m pytest -q -p no:cacheprovider tests/test_render_cuda.py 2>&1 | tail -3 | tee "$OUT/tests.txt"
    timeout 90 python3 benchmarks/render.py --sizes 256 512 --iters 50 --no-fast --no-reference \
        --json "$OUT/render_cuda.json" 2>&1 | tail -4
    timeout 120 python3 benchmarks/train_step.py --device cuda --subject "$subject" --iters 20 \
        --json "$OUT/train_step_cuda_real.json" 2>&1 | tail -3
    timeout 540 python3 benchmarks/real_clip.py --subject "$subject" --downscale 1 --series "$n" --device cuda \
        --eval-images -1 --work "$work" --keep-work --tag cuda 2>&1 | grep -v "it/s\]" | tail -8
    cp benchmarks/results/real_clip-cuda.json benchmarks/results/real_clip-cuda.md "$OUT/" 2>/dev/null
    python3 benchmarks/score_renders.py pack "$work/avatar-$n/eval/images" "$OUT/renders.npz"
    ;;
*)
    echo "usage: cuda_check.sh prepare SUBJECT | run [ITERATIONS]" >&2
    exit 2
    ;;
esac
