#pragma once
// Per-architecture forward passes behind reference_logits, and the pieces they share.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "arch/families.h"
#include "eval/ops.h"
#include "read/source_model.h"

namespace mlx2gguf::ref {

// Each family's forward pass (src/arch/<family>/reference.cpp), for every model type its mapping lists. Returns the
// logits [n_tokens][vocab].
#define MLX2GGUF_DECLARE_REFERENCE(family) \
  std::vector<float> family##_reference(const SourceModel& model, std::span<const int32_t> tokens);
MLX2GGUF_FAMILIES(MLX2GGUF_DECLARE_REFERENCE)
#undef MLX2GGUF_DECLARE_REFERENCE


// The output projection: `lm_head` when the weights hold it, else the tied embedding table.
Activations output_logits(const SourceModel& model, const Activations& x, const std::string& lm_head_name,
                          const std::string& embed_name);

// A 1-D parameter, checked to hold `size` values.
std::vector<float> read_vector(const SourceModel& model, const std::string& name, int64_t size);

// A projection bias: read (and checked to hold `size` values) when config.json enables it. A bias tensor present
// while config.json disables it is an error, as mlx-lm would refuse to load it.
std::vector<float> read_bias(const SourceModel& model, const std::string& name, int64_t size, bool enabled,
                             const char* config_key);

inline const float* data_or_null(const std::vector<float>& v) { return v.empty() ? nullptr : v.data(); }

}  // namespace mlx2gguf::ref
