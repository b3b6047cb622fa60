#pragma once
// general.* keys: names derived from the model folder, size label, file type.
#include <cstdint>
#include <string>

#include "plan/plan.h"

namespace mlx2gguf {

struct ModelNameParts {
  std::string name;        // e.g. "Mistral-7B-Instruct-v0.3"
  std::string basename;    // "Mistral"
  std::string size_label;  // "7B" (from the name; recomputed from the weights when absent)
  std::string finetune;    // "Instruct"
  std::string version;     // "v0.3"
};

// Splits a folder name such as "Mistral-7B-Instruct-v0.3-4bit" into its parts, ignoring MLX conversion suffixes
// (4bit, 8bit, bf16, mlx, ...).
ModelNameParts parse_model_name(const std::string& folder_name);

// "8.0B", "135M", "8x7.2B": parameter counts as gguf files label them (at least two significant digits).
std::string format_parameter_count(double count);
std::string size_label(int64_t total_parameters, int64_t expert_parameters, int64_t expert_count);

// llama_ftype code for general.file_type from the dominant tensor type of the plan.
uint32_t file_type_code(const ConversionPlan& plan);

void add_general_metadata(const SourceModel& model, const std::string& name_override, ConversionPlan& plan,
                          const std::string& source_name = "");

}  // namespace mlx2gguf
