#!/usr/bin/env bash
# Every GPU figure and CUDA check docs/gpu.md lists, in one run on a CUDA machine (about 6-8 minutes on an H200).
#
# Here (a machine with PyPI), once:   bash tools/checks/gpu_check.sh --prepare
#   builds .whl/: a revzoo wheel (with its built-in plugins and entry points) and the revlib and memcnn wheels
#   (pure Python), for a GPU machine that cannot reach a package index but has torch, timm, pluggy, safetensors,
#   matplotlib, tqdm and pytest.
# There, in the repository root:       bash tools/checks/gpu_check.sh
#   (with the device tool: run(command="bash tools/checks/gpu_check.sh", carry=[".whl"], timeout_s=560))
#   installs .whl/ into /tmp/site if present, then prints, and writes to $OUT (or ./gpu-check):
#   1. the CUDA tests (pytest -k cuda): invert == autograd for the engine, each plugin and SDPA's kernels, float32
#      and bf16 autocast; caller's RNG; a model moved between devices; no host-device sync in forward;
#   2. `revzoo bench --device cuda` (bf16 autocast, SDPA): the transformer stack at equal work against sequential,
#      checkpoint, revlib and memcnn, depths 4-64, step time against sequential and the recompute lower bound, and
#      every architecture (dalle-rev among them) at its small config: bench.md, bench.json, memory.png;
#   3. ViT-B/16 at 224 px, batch 64: timm, timm with gradient checkpointing, vit-base-rev (tools/bench/bench_vit.py);
#   4. torch.compile: invert with compiled branches against eager invert and compiled autograd (tools/bench/bench_compile.py).
# Each step has its own time limit, so one that hangs does not take the others with it.
set -u
cd "$(dirname "$0")/../.."

if [ "${1:-}" = "--prepare" ]; then
    set -e
    rm -rf .whl && mkdir .whl
    python3 -m pip wheel --no-deps -q -w .whl .
    python3 -m pip download --no-deps -q -d .whl revlib==1.7.2 memcnn==1.5.2
    ls -l .whl
    exit 0
fi

OUT="${OUT:-gpu-check}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*
    export PYTHONPATH=/tmp/site
fi
log="$OUT/gpu_check.log"
step() {  # step SECONDS TITLE COMMAND...: runs one check under a time limit, its output to the screen and the log
    local limit=$1 title=$2
    shift 2
    echo "=== $title ($(date -u +%H:%M:%S), limit ${limit}s): $*" | tee -a "$log"
    timeout "$limit" "$@" 2>&1 | tee -a "$log"
    echo "=== exit ${PIPESTATUS[0]}" | tee -a "$log"
}

step 30 "machine" bash -c 'nvidia-smi -L; python3 -c "import torch, timm; print(\"torch\", torch.__version__,
  \"cuda\", torch.version.cuda, torch.cuda.get_device_name(0), \"timm\", timm.__version__)"'
step 150 "CUDA tests" python3 -m pytest -q -k cuda -p no:cacheprovider tests/engine/test_devices.py
step 240 "revzoo bench --device cuda" python3 -m revzoo bench --device cuda --dim 1024 --heads 16 --seq 1024 \
    --batch 8 --rounds 10 --out "$OUT/bench-cuda"
step 90 "ViT-B/16 224px batch 64" python3 tools/bench/bench_vit.py --device cuda --model vit_base_patch16_224 \
    --batch 64 --img-size 224 --rounds 10
step 150 "torch.compile" python3 tools/bench/bench_compile.py --device cuda --depth 16 --dim 1024 --heads 16 --seq 1024 \
    --batch 8 --rounds 10
echo "=== done $(date -u +%H:%M:%S); log and bench results in $OUT" | tee -a "$log"
