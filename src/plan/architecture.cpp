#include "plan/architecture.h"

namespace mlx2gguf {

const std::vector<const Family*>& all_families() {
#define MLX2GGUF_FAMILY_ENTRY(family) &family##_family(),
  static const std::vector<const Family*> families = {MLX2GGUF_FAMILIES(MLX2GGUF_FAMILY_ENTRY)};
#undef MLX2GGUF_FAMILY_ENTRY
  return families;
}

const Architecture* find_architecture(const std::string& model_type) {
  for (const Family* family : all_families())
    for (const Architecture& arch : family->architectures)
      for (const auto& type : arch.model_types)
        if (type == model_type) return &arch;
  return nullptr;
}

const Family* find_family(const std::string& model_type) {
  for (const Family* family : all_families())
    for (const Architecture& arch : family->architectures)
      for (const auto& type : arch.model_types)
        if (type == model_type) return family;
  return nullptr;
}

std::vector<std::string> supported_model_types() {
  std::vector<std::string> types;
  for (const Family* family : all_families())
    for (const Architecture& arch : family->architectures) types.insert(types.end(), arch.model_types.begin(), arch.model_types.end());
  return types;
}

}  // namespace mlx2gguf
