#pragma once
// Tokenizer files for synthetic models: a small but complete byte-level BPE tokenizer (Hugging Face
// tokenizer.json format, Llama-3 style pre-tokenization), and the facts a model config takes from a tokenizer.
#include <cstdint>
#include <filesystem>
#include <optional>

namespace mlx2gguf::gen {

// Writes tokenizer.json, tokenizer_config.json and chat_template.jinja into `dir` (which must exist).
// The vocabulary: the 256 byte tokens (id = byte value), a few dozen merges of common English pieces, then the
// special tokens <s> (bos), </s> (eos), <|im_start|> and <|im_end|> (ChatML chat template).
void write_tiny_tokenizer(const std::filesystem::path& dir);

struct TokenizerFacts {
  int64_t vocab_size = 0;  // max token id + 1 over the model vocabulary and the added tokens
  std::optional<int64_t> bos_id, eos_id;
};

// Reads tokenizer.json (and tokenizer_config.json for the bos/eos token names) from `dir`.
TokenizerFacts read_tokenizer_facts(const std::filesystem::path& dir);
// The facts of the tokenizer write_tiny_tokenizer writes.
TokenizerFacts tiny_tokenizer_facts();

}  // namespace mlx2gguf::gen
