#!/usr/bin/env bash
# Runs the GPU checks that scripts/check-cuda.sh packed into .devbin/checks.tar.xz, on a machine
# with an NVIDIA GPU, its driver and a PyTorch with CUDA 13 (whose cuBLAS/cuRAND/cudart the
# binaries load), from the repo root. No Rust toolchain is needed there (docs/cuda.md).
# Usage: scripts/run-cuda-checks.sh [LOG_DIR] [tests|timings|all]
#   LOG_DIR (default: cuda-checks): one log per check, and summary.txt.
#   tests: the parity test binaries; timings: ours and PyTorch/MONAI side by side (MONAI is
#   imported from PYTHONPATH or the environment); all (default): both.
set -uo pipefail
log=${1:-cuda-checks}
what=${2:-all}
mkdir -p "$log"
bin=$(mktemp -d)
tar -C "$bin" -xJf .devbin/checks.tar.xz || exit 1

# The CUDA libraries that ship with PyTorch (nvidia/cu13/lib, or one lib folder per package).
nvidia=$(python3 -c 'import nvidia; print(list(nvidia.__path__)[0])')
libs=$(find "$nvidia" -maxdepth 3 -type d -name lib | tr '\n' ':')
export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:-}"
# The test binaries read their fixtures under the repo path they were built in.
root=$(cat "$bin/build-root")
if [ ! -e "$root" ]; then
  mkdir -p "$(dirname "$root")" && ln -s "$PWD" "$root"
fi

summary="$log/summary.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$summary"

# Runs a command with a time limit, logging its output and the peak GPU memory in use
# (nvidia-smi, whole device, sampled every 100 ms).
check() {
  local name=$1 limit=$2
  shift 2
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$log/$name.mem" &
  local smi=$!
  local start=$SECONDS
  timeout "$limit" "$@" >"$log/$name.log" 2>&1
  local rc=$?
  kill "$smi" 2>/dev/null
  wait "$smi" 2>/dev/null
  local peak
  peak=$(sort -n "$log/$name.mem" | tail -1)
  printf '%-32s rc %3s  %4ss  peak GPU memory in use %s MiB\n' "$name" "$rc" \
    "$((SECONDS - start))" "${peak:-?}" >>"$summary"
}

if [ "$what" != timings ]; then
  for test in "$bin"/test-*; do
    check "$(basename "$test")" 300 "$test"
  done
  # The demo model on the GPU and on the CPU: the same seeds, the same brains up to rounding.
  for device in cuda cpu; do
    check "sample-demo-$device" 120 "$bin/brain-ldm" sample --age 70 --sex F -n 2 \
      --device "$device" --out "$log/demo-$device"
  done
  python3 - "$log" >>"$summary" <<'EOF'
import gzip, sys
import numpy as np
for i in range(2):
    a, b = (np.frombuffer(gzip.open(f"{sys.argv[1]}/demo-{d}/sample-{i:04}.nii.gz").read()[352:],
                          np.float32) for d in ("cuda", "cpu"))
    print(f"demo sample {i}: max |cuda - cpu| {np.abs(a - b).max():.3e} (max |cpu| {np.abs(b).max():.3f})")
EOF
fi
if [ "$what" != tests ]; then
  check conv3d-ours 120 "$bin/conv3d_time" 64 64 3 1 64 64 64 5
  check conv3d-torch 120 python3 scripts/bench_monai.py conv3d --device cuda
  check unet-ours 180 "$bin/unet_forward" 5
  check unet-monai 180 python3 scripts/bench_monai.py unet --device cuda
  check ae-decode-monai 180 python3 scripts/bench_monai.py ae-decode --device cuda
  check sample-ours 300 "$bin/sample_full_size" 50
  check sample-monai 300 python3 scripts/bench_monai.py sample --device cuda
fi
cat "$summary"
grep -h -E "test result|FAILED|panicked|median|forward|DDIM|peak GPU" "$log"/*.log
