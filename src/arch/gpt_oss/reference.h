#pragma once
// Pieces of the gpt-oss reference forward pass (mlx-lm gpt_oss.py) that the other families' building blocks
// (eval/ops.h) do not have: YaRN rotary embedding with its magnitude scale, softmax attention with per-head sink
// logits, and the clamped SwiGLU of the experts. Its tests look at them one by one.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <vector>

#include "eval/ops.h"

namespace mlx2gguf::ref {

// A rotary embedding whose rotated dims are first multiplied by `mscale` (mlx-lm's YarnRoPE; 1 for other ropes).
struct ScaledRope {
  Rope rope;
  double mscale = 1.0;
};

// mlx-lm's YarnRoPE (rope_utils.py): frequencies blend base^(-2i/dims) (pairs below the correction range) and the
// same divided by `factor` (pairs above it) along a linear ramp between floor and ceil of the dims whose wavelength
// makes beta_fast and beta_slow turns over original_max_positions; mscale = get(factor, mscale) / get(factor,
// mscale_all_dim) with get(s, m) = 0.1 m ln(s) + 1, or 1 when s <= 1.
ScaledRope yarn_rope(int64_t dims, double base, double factor, double original_max_positions, double beta_fast,
                     double beta_slow, double mscale, double mscale_all_dim);

// The rope gpt_oss.py builds for heads of `head_dim` from config.json (rope_theta, default 150000, and rope_scaling:
// null/default, linear or yarn). Fails on other scaling types.
ScaledRope gpt_oss_rope(const nlohmann::json& config, int64_t head_dim);

// mx.fast.scaled_dot_product_attention with sinks: per query head h, a softmax over the causal (optionally windowed)
// scores q·k·scale and one extra logit sinks[h] (not scaled), whose share is dropped. Shapes as causal_attention.
Activations attention_with_sinks(const Activations& q, const Activations& k, const Activations& v,
                                 const AttentionShape& shape, const std::vector<float>& sinks);

// gpt_oss.py's swiglu(x_linear = up, x_glu = gate): gate clipped above at 7, up clipped to [-7, 7],
// gate · sigmoid(1.702 · gate) · (up + 1).
double clamped_swiglu(double gate, double up);

}  // namespace mlx2gguf::ref
