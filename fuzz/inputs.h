#pragma once
// What each fuzz target does with one input, shared by the libFuzzer targets (fuzz/fuzz_<target>.cpp) and by the
// regression tests that replay every input the fuzzers ever broke (tests/fuzz_regression_test.cpp). Each function
// feeds the input through the normal readers exactly as a conversion or `inspect` would; a refusal is an
// mlx2gguf::Error, which propagates.
#include <string>
#include <string_view>
#include <vector>

namespace mlx2gguf::fuzz {

// config.json (with its MLX "quantization" section) in a generated folder of its model_type: open, plan, read rows.
void run_config(std::string_view input);
// A whole safetensors file.
void run_safetensors(std::string_view input);
// tokenizer.json, optionally followed by a NUL byte and tokenizer_config.json: the tokenizer.* metadata.
void run_tokenizer_json(std::string_view input);
// A SentencePiece tokenizer.model: the tokenizer.* metadata.
void run_sentencepiece(std::string_view input);
// adapter_config.json, a NUL byte, adapters.safetensors: bound to a generated base, planned, merged.
void run_adapter(std::string_view input);
// A GGUF file, read and rendered as `inspect` does.
void run_gguf(std::string_view input);
// An importance matrix (llama-imatrix's GGUF format or its legacy .dat), read as `--imatrix` reads it.
void run_imatrix(std::string_view input);
// The files general.* comes from, separated by NUL bytes: README.md (model-card front matter),
// generation_config.json, a `--metadata` overrides file and the model's name (as a Hugging Face repo id or folder
// name gives it), bound to a generated folder and planned: general.* metadata and the default output name.
void run_metadata(std::string_view input);
// One file of a split GGUF set: the first byte picks which part of a generated three-part set the rest replaces;
// the set is then opened from its first file and rendered as `inspect` does.
void run_gguf_split(std::string_view input);

struct Target {
  std::string name;
  void (*run)(std::string_view input);
};
// Every target by name (the fuzz/fuzz_<name>.cpp files).
const std::vector<Target>& targets();

}  // namespace mlx2gguf::fuzz
