#pragma once
// The GGUF architectures mlx2gguf writes. Each family's mapping (src/arch/<family>/mapping.cpp, listed in
// arch/families.h) reads like its table: which config keys become which GGUF keys, which MLX tensors become which
// GGUF tensors.
#include <string>
#include <vector>

#include "arch/families.h"
#include "plan/plan.h"

namespace mlx2gguf {

struct Architecture {
  std::string gguf_name;                 // general.architecture
  std::vector<std::string> model_types;  // config.json model_type values it converts
  void (*describe)(PlanBuilder& builder);
};

// A family: the GGUF architectures one mapping file writes.
struct Family {
  std::string name;  // as in arch/families.h
  std::vector<Architecture> architectures;
};

#define MLX2GGUF_DECLARE_FAMILY(family) const Family& family##_family();
MLX2GGUF_FAMILIES(MLX2GGUF_DECLARE_FAMILY)
#undef MLX2GGUF_DECLARE_FAMILY

const std::vector<const Family*>& all_families();
// The architecture that converts config.json's `model_type` (the text model's, for nested configs), or null.
const Architecture* find_architecture(const std::string& model_type);
// The family whose architectures convert `model_type`, or null.
const Family* find_family(const std::string& model_type);
std::vector<std::string> supported_model_types();

}  // namespace mlx2gguf
