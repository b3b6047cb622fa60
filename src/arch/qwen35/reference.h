#pragma once
// Pieces of the Qwen3.5 reference forward pass its tests look at.
#include <nlohmann/json.hpp>

#include <cstdint>

#include "eval/ops.h"

namespace mlx2gguf::ref {

// The rope of qwen3_5's full-attention layers from its text_config: rope_parameters (mlx-lm's default when
// absent: theta 100000, partial_rotary_factor 0.25), or the top-level keys when rope_parameters is null/empty.
Rope qwen3_5_rope(const nlohmann::json& text_config, int64_t head_dim);

}  // namespace mlx2gguf::ref
