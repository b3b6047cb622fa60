#pragma once
// general.* keys as llama.cpp's converter writes them (gguf-py metadata.py): the name and its parts (basename,
// size label, finetune, version) from the model card, config.json's `_name_or_path` or the folder name; license,
// base models, datasets, tags and languages from the model card (README.md front matter); recommended sampling
// from generation_config.json; a JSON file of overrides in llama.cpp's `--metadata` format.
#include <cstdint>
#include <filesystem>
#include <string>

#include "plan/plan.h"

namespace mlx2gguf {

struct ModelNameParts {
  std::string name;          // the model part of the id, as given: "Mistral-7B-Instruct-v0.3"
  std::string basename;      // "Mistral" ("" when the name is too ambiguous to split)
  std::string size_label;    // "7B"
  std::string finetune;      // "Instruct"
  std::string version;       // "v0.3"
  std::string organization;  // "mistralai" for an id "mistralai/Mistral-7B-Instruct-v0.3"
};

// llama.cpp's split of a model id ("org/Name-7B-Instruct-v0.1") into its parts. `total_parameters` (0: unknown)
// turns a size-like part far from the real size into a finetune part ("Llama-3-8B-1M": 1M is a context length).
ModelNameParts model_id_components(const std::string& model_id, int64_t total_parameters = 0);

// The same for a folder name, after dropping the suffixes MLX conversions append (4bit, 8bit, mlx, bf16, dwq, ...),
// which llama.cpp would otherwise take for a finetune.
ModelNameParts parse_model_name(const std::string& folder_name, int64_t total_parameters = 0);

// llama.cpp's display form of an id: hyphens become spaces, all-lowercase words are title-cased unless they are a
// version or start with a digit ("qwen3-8b-instruct" → "Qwen3 8b Instruct").
std::string id_to_title(const std::string& id);

// "8.0B", "135M", "8x7.2B": parameter counts as gguf files label them (at least two significant digits).
std::string format_parameter_count(double count);
std::string size_label(int64_t total_parameters, int64_t expert_parameters, int64_t expert_count);

// llama_ftype code for general.file_type from the dominant tensor type of the plan.
uint32_t file_type_code(const ConversionPlan& plan);
// The type part of llama.cpp's file names for a general.file_type ("Q4_K_M", "BF16").
std::string file_type_label(uint32_t code);

struct GeneralMetadataOptions {
  std::string name;                     // --name: general.name (the parts still come from the folder, as in llama.cpp)
  std::filesystem::path metadata_file;  // --metadata: overrides in llama.cpp's JSON format ("" = none)
  std::string merged_adapter;           // an adapter merged into the weights, described for general.description
  std::string merged_adapter_name;      // its folder's name, recorded in general.finetune
  // What the model is called when its folder's name does not say (a Hugging Face cache snapshot is named by a
  // commit hash): the name parts come from it instead of the folder. Empty: the folder's name.
  std::string source_name;
};

void add_general_metadata(const SourceModel& model, const GeneralMetadataOptions& options, ConversionPlan& plan);

// llama.cpp's default output name: {basename or name}-{size_label}-{finetune}-{version}-{TYPE}.gguf, each part
// present only when known.
std::string default_output_name(const GgufMetadata& metadata);

}  // namespace mlx2gguf
