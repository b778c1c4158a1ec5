#!/usr/bin/env bash
# Builds the workspace with `--features cuda` on a machine with no CUDA toolkit and no GPU, and
# packs what the GPU checks run into .devbin/ (docs/cuda.md):
#   - the GPU parity test binaries: MONAI's fixtures through the autoencoder, the UNet, training
#     gradients and one AdamW step, the bundle-small pipeline end to end, the schedulers;
#   - the timing examples conv3d_time, unet_forward and sample_full_size;
#   - the `brain-ldm` tool (sampling with `--device cuda`).
# scripts/run-cuda-checks.sh runs them all on the GPU machine.
# Usage, from the repo root: scripts/check-cuda.sh [CUDA_BUILD_ENV]
#   CUDA_BUILD_ENV: the script that sets up nvcc and a driver stub (default:
#   ../shared/scripts/cuda-build-env.sh; it puts the build in target/cuda).
# CI does not run this; the CPU build and tests do not need it.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1090
source "${1:-../shared/scripts/cuda-build-env.sh}"
packages=(-p brain-ldm-nn -p brain-ldm-schedulers -p brain-ldm-autoencoder -p brain-ldm-unet
  -p brain-ldm-train -p brain-ldm -p brain-ldm-cli)
# The same packages for the build and the test binaries (examples and tests both enable the
# dev-dependencies), so both resolve the same features and candle is compiled once.
cargo build --release --features cuda "${packages[@]}" --bins --examples
cargo test --release --features cuda "${packages[@]}" --no-run --message-format=json \
  >"$CARGO_TARGET_DIR/cuda-tests.json"

out=.devbin
rm -rf "$out"
mkdir -p "$out"
# The test binaries of the parity suites (name = the test file), by cargo's own report.
python3 - "$CARGO_TARGET_DIR/cuda-tests.json" "$out" <<'EOF'
import json, shutil, sys
wanted = {("brain-ldm-autoencoder", "monai_parity"), ("brain-ldm-unet", "unet"),
          ("brain-ldm-unet", "training"), ("brain-ldm-train", "parity"),
          ("brain-ldm", "bundle_small"), ("brain-ldm-schedulers", "monai_parity")}
found = set()
for line in open(sys.argv[1]):
    msg = json.loads(line)
    if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
        continue
    package = msg["manifest_path"].split("/")[-2]  # crates/<package>/Cargo.toml
    key = (package, msg["target"]["name"])
    if key in wanted and "test" in msg["target"]["kind"]:
        shutil.copy(msg["executable"], f"{sys.argv[2]}/test-{package}-{key[1]}")
        found.add(key)
missing = wanted - found
if missing:
    sys.exit(f"test binaries not built: {sorted(missing)}")
EOF
for example in conv3d_time unet_forward sample_full_size; do
  cp "$CARGO_TARGET_DIR/release/examples/$example" "$out/"
done
cp "$CARGO_TARGET_DIR/release/brain-ldm" "$out/"
strip "$out"/*
# The tests find their fixtures through the repo path compiled into them.
pwd >"$out/build-root"
# The binaries share candle's PTX kernels (≈ 20 MB compressed): a dictionary larger than
# all of them together stores those once (24 MB in all instead of 73).
tar -C "$out" -cf - . | xz -T2 -9 --lzma2=preset=9,dict=768MiB >"$out.tar.xz"
rm -rf "$out"/*
mv "$out.tar.xz" "$out/checks.tar.xz"
ls -l "$out"
