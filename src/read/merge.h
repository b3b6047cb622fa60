#pragma once
// Merging an adapter module into the rows of its base tensor, row by row as they are read, so that a merged
// model streams like any other and memory does not grow with the model.
#include <cstdint>
#include <optional>

#include "read/adapter.h"
#include "read/quant_config.h"

namespace mlx2gguf {

enum class MergeRule {
  // W' = W + delta in float32 (accumulated in double) from the exactly dequantized base; DoRA rows rescaled to
  // their magnitude. The merged tensor is a float tensor.
  Float32,
  // What `mlx_lm.fuse` computes, in the module's own dtype T (the base's float type, the scales' type of an
  // affine base, bfloat16 for the fp modes): delta_f32 = Σ_k (scale·up_k)·down_k in float32, k ascending;
  // W' = round_T(W_T + round_T(delta)). DoRA: Wa likewise; norm = round_T(sqrt(Σ_c round_T(Wa_c²))) in float32;
  // W' = (m / norm)·Wa in float32 (DoRAEmbedding, whose m is in T: round_T(round_T(m / norm)·Wa)). A quantized base is then re-quantized with MLX's quantizer at its own
  // mode, bits and group size, exactly as the folder mlx_lm.fuse writes stores it.
  LikeMlxFuse,
};

class RowMerge {
 public:
  // `dtype`: T, the dtype mlx_lm.fuse computes the module in (LikeMlxFuse only). `requantize`: the base's
  // quantization, when LikeMlxFuse re-quantizes the merged rows.
  RowMerge(const AdapterModule& module, MergeRule rule, DType dtype, std::optional<QuantSpec> requantize);

  const AdapterModule& module() const { return module_; }
  MergeRule rule() const { return rule_; }
  // The dtype of merged values under LikeMlxFuse: T, or float32 for DoRA Linear modules (their m is float32).
  DType fused_dtype() const;
  const std::optional<QuantSpec>& requantize() const { return requantize_; }

  // Replaces `count` base rows starting at row `first` (float32, row-major, module().cols() wide) by the merged
  // rows. Under LikeMlxFuse with re-quantization the result is the merged rows before re-quantizing.
  void apply(int64_t first, int64_t count, float* rows) const;

 private:
  const float* down(int64_t expert) const;  // the module's down factor of `expert`, cached per thread

  const AdapterModule& module_;
  MergeRule rule_;
  DType dtype_;
  std::optional<QuantSpec> requantize_;
  uint64_t id_;  // tells per-thread caches of different merges apart
};

}  // namespace mlx2gguf
