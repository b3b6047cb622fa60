#pragma once
// An Ollama Modelfile for a converted file (`ollama create NAME -f FILE`): FROM the GGUF (one line per file of a
// split set), ADAPTER for a GGUF LoRA, PARAMETER lines for the sampling defaults and stop tokens (Ollama reads no
// general.sampling.* key from the GGUF), and for Qwen3.5 / Qwen3.6 Ollama's own prompt renderer and output parser.
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "gguf/gguf_types.h"

namespace mlx2gguf {

struct ModelfileSpec {
  std::filesystem::path modelfile;                   // where the Modelfile goes
  std::vector<std::filesystem::path> model_files;    // the model's GGUF (all files of a split set, first first)
  std::optional<std::filesystem::path> adapter_file; // a GGUF LoRA to apply
};

// `<outfile without .gguf>.Modelfile`, next to the output.
std::filesystem::path modelfile_path_for(const std::filesystem::path& outfile);

// The Modelfile's text; `metadata` is the model's (architecture, general.sampling.*, tokenizer ids and tokens).
std::string render_modelfile(const ModelfileSpec& spec, const GgufMetadata& metadata);

// Writes it through a temporary file renamed into place.
void write_modelfile(const ModelfileSpec& spec, const GgufMetadata& metadata);

}  // namespace mlx2gguf
