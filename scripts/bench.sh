#!/usr/bin/env bash
# Speed benchmark: encoder throughput against ggml's quantizer, and the lossless repack of a 4-bit MLX folder
# (Qwen3.6-35B-A3B widths, a few layers) against `cat` of the same bytes. Prints ratios; asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
model=build/bench/qwen3.6-widths-4bit
if [ ! -f "$model/config.json" ]; then
  rm -rf "$model" && mkdir -p build/bench
  echo "== generating a 4-bit mlx-lm folder with Qwen3.6-35B-A3B widths (8 layers, 16 experts)"
  build/mlx2gguf-make-tiny-model --preset qwen3.6-35b-a3b-widths --layers 8 --experts 16 --quant affine:4:64 --out "$model"
fi
build/mlx2gguf-bench --repack-model "$model" --out-dir build/bench "$@"
