#pragma once
// `verify --llama-lib`: a GGUF file's logits in llama.cpp (loaded at run time) against mlx2gguf's float32 reference
// forward pass of the source folder, with the adapter applied unfused as mlx-lm computes it.
#include <filesystem>
#include <optional>

#include "read/adapter.h"
#include "verify/logits_compare.h"

namespace mlx2gguf {

struct LogitsOptions {
  std::filesystem::path gguf, model_dir, llama_lib;
  std::optional<AdapterLocation> adapter;
  int tokens = 16;
};

LogitsReport verify_logits(const LogitsOptions& options);

}  // namespace mlx2gguf
