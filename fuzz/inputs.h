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

struct Target {
  std::string name;
  void (*run)(std::string_view input);
};
// Every target by name (the fuzz/fuzz_<name>.cpp files).
const std::vector<Target>& targets();

}  // namespace mlx2gguf::fuzz
