#include "plan/architecture.h"

namespace mlx2gguf {

namespace {

std::vector<const Architecture*> all_architectures() { return {&llama_architecture(), &qwen35moe_architecture(), &qwen35_architecture()}; }

}  // namespace

const Architecture* find_architecture(const std::string& model_type) {
  for (const Architecture* arch : all_architectures()) {
    for (const auto& type : arch->model_types) {
      if (type == model_type) return arch;
    }
  }
  return nullptr;
}

std::vector<std::string> supported_model_types() {
  std::vector<std::string> types;
  for (const Architecture* arch : all_architectures()) types.insert(types.end(), arch->model_types.begin(), arch->model_types.end());
  return types;
}

}  // namespace mlx2gguf
