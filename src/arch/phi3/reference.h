#pragma once
// Pieces of the Phi-3 family's reference forward pass its tests and the end-to-end tests look at.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <span>
#include <vector>

#include "eval/ops.h"
#include "read/source_model.h"

namespace mlx2gguf::ref {

// Which LongRoPE factor list divides the frequencies. mlx-lm's SuScaledRoPE always uses the long factors; Hugging
// Face (and llama.cpp, by context size) use the short ones for sequences within the original context.
enum class LongRopeFactors { Long, Short };

// The rotary embedding of a phi3 attention layer as mlx-lm builds it from config.json, and the factor it multiplies
// the rotated dims of q and k by before rotating (SuScaledRoPE's scale; 1 for a plain or linear rope).
struct Phi3Rope {
  Rope rope;
  double input_scale = 1.0;
};
Phi3Rope phi3_rope(const nlohmann::json& config, int64_t head_dim, LongRopeFactors factors = LongRopeFactors::Long);

// phi3_reference with the short LongRoPE factors instead of mlx-lm's long ones: what the model computes in Hugging
// Face (and in llama.cpp at a context within the original one) for a sequence shorter than the original context.
std::vector<float> phi3_reference_with(const SourceModel& model, std::span<const int32_t> tokens, LongRopeFactors factors);

}  // namespace mlx2gguf::ref
