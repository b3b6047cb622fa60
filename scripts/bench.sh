#!/usr/bin/env bash
# Speed benchmark: encoder throughput against ggml's quantizer, the lossless repack of a 4-bit MLX folder
# (Qwen3.6-35B-A3B widths, a few layers) against `cat` of the same bytes, and whole-model conversions of a generated
# model of over 1 GB (bf16, and the same model at 4 bits) to auto/bf16/f16/q8_0/q4_k_m with wall time, CPU time and
# peak memory (anonymous vs file-backed) against `cat`, Q4_K_M encoding of the bf16 model against llama.cpp's
# llama_model_quantize in weights per CPU-second (with a check that both wrote the same tensor bytes), and the peak
# memory of verify's logits level. Prints numbers
# and ratios; asserts nothing.
#   scripts/bench.sh [--threads N]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=$(nproc)
while [ $# -gt 0 ]; do
  case "$1" in
    --threads|-t) threads=$2; shift 2 ;;
    *) echo "usage: scripts/bench.sh [--threads N]" >&2; exit 2 ;;
  esac
done
scripts/setup.sh
scripts/build.sh
mkdir -p build/bench
generate() {  # folder, extra make-tiny-model options: Qwen3.6-35B-A3B widths, 8 layers, 16 experts
  local folder=$1; shift
  if [ ! -f "$folder/config.json" ]; then
    rm -rf "$folder"
    echo "== generating $folder"
    build/mlx2gguf-make-tiny-model --preset qwen3.6-35b-a3b-widths --layers 8 --experts 16 --out "$folder" "$@"
  fi
}
model_4bit=build/bench/qwen3.6-widths-4bit
model_bf16=build/bench/qwen3.6-widths-bf16
generate "$model_4bit" --quant affine:4:64
generate "$model_bf16"
build/mlx2gguf-bench --threads "$threads" --repack-model "$model_4bit" --q4-k-m-model "$model_bf16" --out-dir build/bench
build/mlx2gguf-bench-model --threads "$threads" --out-dir build/bench "$model_bf16" "$model_4bit"
# Peak memory of verify's logits level (the reference forward pass, then llama.cpp), anonymous vs file-backed, with
# the test oracle's prebuilt libllama.
libllama=$(ls tests/oracle/node_modules/@node-llama-cpp/*/bins/*/libllama.*so 2>/dev/null | grep -v common | head -1 || true)
if [ -n "$libllama" ]; then
  for model in "$model_bf16" "$model_4bit"; do
    build/mlx2gguf convert "$model" -o build/bench/verify-memory.gguf -q
    build/mlx2gguf-verify-memory "$model" --gguf build/bench/verify-memory.gguf --llama-lib "$libllama"
    rm -f build/bench/verify-memory.gguf
  done
fi
