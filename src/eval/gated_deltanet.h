#pragma once
// The part of a Gated DeltaNet block that Qwen3.5 and Qwen3-Next share once their input projections are split
// (they differ only in how the projections are packed): convolution, q/k normalisation, the gated delta rule,
// the gated RMSNorm and the output projection, as mlx-lm computes them.
#include <cstdint>
#include <string>

#include "eval/ops.h"
#include "read/source_model.h"

namespace mlx2gguf::ref {

struct GatedDeltaNetShape {
  int64_t key_heads, value_heads, key_dim, value_dim, conv_kernel, hidden;
  double norm_eps;  // of the gated RMSNorm
};

// `mixed` holds [all q | all k | all v] before the convolution; z, a and b one column per value head (z: value_dim
// per head). Reads conv1d.weight, A_log, dt_bias, norm.weight and out_proj.weight under `prefix`.
Activations gated_deltanet_from_projections(const SourceModel& model, const std::string& prefix, const Activations& mixed,
                                            const Activations& z, const Activations& a, const Activations& b,
                                            const GatedDeltaNetShape& s);

}  // namespace mlx2gguf::ref
