#pragma once
// Pieces of the Qwen3 family's reference forward pass its tests look at.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

#include "eval/ops.h"

namespace mlx2gguf::ref {

// The rotary embedding of a qwen2 / qwen3 / qwen3_moe attention layer as mlx-lm builds it from config.json, and the
// factor mlx-lm multiplies the rotated dimensions of q and k by before rotating them (YaRN's mscale; 1 otherwise).
struct QwenRope {
  Rope rope;
  double input_scale = 1.0;
};
QwenRope qwen_rope(const nlohmann::json& config, const std::string& model_type, int64_t head_dim);

}  // namespace mlx2gguf::ref
