#pragma once
// Registry of supported architectures. Each architecture is one file under plan/arch/ that reads like its
// mapping table: which config keys become which GGUF keys, which MLX tensors become which GGUF tensors.
#include <string>
#include <vector>

#include "plan/plan.h"

namespace mlx2gguf {

struct Architecture {
  std::string gguf_name;                 // general.architecture
  std::vector<std::string> model_types;  // config.json model_type values it converts
  void (*describe)(PlanBuilder& builder);
};

const Architecture* find_architecture(const std::string& model_type);
std::vector<std::string> supported_model_types();

// One accessor per architecture file.
const Architecture& llama_architecture();
const Architecture& qwen35moe_architecture();
const Architecture& qwen35_architecture();

}  // namespace mlx2gguf
