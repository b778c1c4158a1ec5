#!/usr/bin/env bash
# Reproduces the built-in demo model (crates/brain-ldm/demo) from nothing, on the CPU:
# a 2 000-subject synthetic cohort at 4 mm, the autoencoder, the latent diffusion UNet, and
# the f16 export. Usage: scripts/train-demo.sh [WORK_DIR]   (default: target/demo-run)
# See docs/demo.md for the recipe, timings and loss curves.
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-target/demo-run}"
mkdir -p "$work"
cargo build --release -p brain-ldm-cli
bin=target/release/brain-ldm
start=$SECONDS
stage() { echo "[$((SECONDS - start)) s] $*" >&2; }

stage "cohort: 2000 subjects at 4 mm"
"$bin" synth --n 2000 --voxel-size 4 --seed 0 --out "$work/cohort" --resume

stage "stage 1: autoencoder (configs/demo/ae.toml)"
resume=(); [ -e "$work/ae/latest" ] && resume=(--resume)
"$bin" train autoencoder --data "$work/cohort" --config configs/demo/ae.toml \
  --out "$work/ae" "${resume[@]}"

stage "stage 2: latent diffusion (configs/demo/ldm.toml, 1000 steps)"
resume=(); [ -e "$work/ldm/latest" ] && resume=(--resume)
"$bin" train diffusion --data "$work/cohort" --autoencoder "$work/ae" \
  --config configs/demo/ldm.toml --out "$work/ldm" "${resume[@]}"

stage "stage 2b: continued to 2000 steps (configs/demo/ldm-continue.toml)"
"$bin" train diffusion --data "$work/cohort" --autoencoder "$work/ae" \
  --config configs/demo/ldm-continue.toml --out "$work/ldm" --resume

stage "export: f16 model folder in $work/demo"
rm -rf "$work/demo"
"$bin" convert --model "$work/ldm" --dtype f16 --guidance-scale 3 --out "$work/demo"
stage "done; install with: cp $work/demo/{model.json,autoencoder.safetensors,unet.safetensors} crates/brain-ldm/demo/"
