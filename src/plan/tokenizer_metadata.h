#pragma once
// The tokenizer.* metadata of a GGUF file, built from the tokenizer files of a model folder:
//   - tokenizer.json with a byte-level BPE model          -> tokenizer.ggml.model "gpt2" (Llama 3, Qwen, ...)
//   - tokenizer.json with a byte-fallback BPE model         -> tokenizer.ggml.model "llama" (Llama 2, Mistral v0.x)
//   - tokenizer.model (SentencePiece) when there is no tokenizer.json -> "llama"
// plus special token ids and flags (tokenizer_config.json, generation_config.json, config.json) and chat
// templates (tokenizer_config.json, chat_template.jinja, additional_chat_templates/, chat_template.json).
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "read/model_folder.h"
#include "gguf/gguf_types.h"

namespace mlx2gguf {

struct TokenizerOptions {
  // Value of tokenizer.ggml.pre for a byte-level BPE ("gpt2") tokenizer, instead of detecting it from the
  // tokenizer.json split regexes (--tokenizer-pre NAME). SentencePiece-style vocabularies always get "default":
  // llama.cpp does not pre-split their text.
  std::optional<std::string> pre_override;
};

// Adds every tokenizer.* key for the model in `folder`. `vocab_rows` = rows of the embedding matrix: the token
// list is padded to it with unique "[PAD<id>]" entries of type UNUSED (5); more tokens than rows is an error.
// A `vocab_rows` of 0 or less means "exactly as many tokens as the tokenizer has" (no padding).
void add_tokenizer_metadata(const ModelFolder& folder, int64_t vocab_rows, const TokenizerOptions& options,
                            GgufMetadata& out);

// The same from a plain directory of tokenizer files and the model's parsed config.json (an empty object when
// there is none); used where no weights exist, e.g. for tokenizer-only folders.
void add_tokenizer_metadata(const std::filesystem::path& dir, const nlohmann::json& config, int64_t vocab_rows,
                            const TokenizerOptions& options, GgufMetadata& out);

// llama.cpp's pre-tokenizer name (tokenizer.ggml.pre) for a tokenizer.json "pre_tokenizer" value, when its
// split regexes are ones llama.cpp implements; nullopt otherwise.
std::optional<std::string> detect_bpe_pre_tokenizer(const nlohmann::json& pre_tokenizer);

}  // namespace mlx2gguf
