#include "read/merge.h"

#include <atomic>
#include <cmath>
#include <vector>

#include "read/mlx_quantize.h"

namespace mlx2gguf {

namespace {

std::atomic<uint64_t> next_merge_id{1};

}  // namespace

RowMerge::RowMerge(const AdapterModule& module, MergeRule rule, DType dtype, std::optional<QuantSpec> requantize)
    : module_(module), rule_(rule), dtype_(dtype), requantize_(requantize), id_(next_merge_id++) {}

DType RowMerge::fused_dtype() const {
  return module_.is_dora() && module_.kind() != AdapterKind::Embedding ? DType::F32 : dtype_;
}

const float* RowMerge::down(int64_t expert) const {
  thread_local std::vector<float> values;
  thread_local uint64_t cached_id = 0;
  thread_local int64_t cached_expert = -1;
  if (cached_id != id_ || cached_expert != expert) {
    values.resize(static_cast<size_t>(module_.rank() * module_.cols()));
    module_.read_down(expert, values.data());
    cached_id = id_;
    cached_expert = expert;
  }
  return values.data();
}

void RowMerge::apply(int64_t first, int64_t count, float* rows) const {
  const int64_t rank = module_.rank(), cols = module_.cols();
  thread_local std::vector<float> up, delta;
  thread_local std::vector<double> merged;
  up.resize(static_cast<size_t>(rank));
  for (int64_t r = 0; r < count; ++r) {
    const int64_t row = first + r;
    float* w = rows + r * cols;
    module_.read_up(row, up.data());
    const float* d = down(module_.expert_of(row));

    if (rule_ == MergeRule::Float32) {
      merged.assign(w, w + cols);
      for (int64_t k = 0; k < rank; ++k) {
        const double coefficient = static_cast<double>(module_.scale()) * up[static_cast<size_t>(k)];
        const float* down_k = d + k * cols;
        for (int64_t c = 0; c < cols; ++c) merged[static_cast<size_t>(c)] += coefficient * down_k[c];
      }
      double factor = 1.0;
      if (module_.is_dora()) {
        double sum = 0.0;
        for (double v : merged) sum += v * v;
        factor = module_.magnitude(row) / std::sqrt(sum);
      }
      for (int64_t c = 0; c < cols; ++c) w[c] = static_cast<float>(factor * merged[static_cast<size_t>(c)]);
      continue;
    }

    // LikeMlxFuse: float32 products (scale·up)·down summed over k in ascending order, then rounded to T.
    delta.assign(static_cast<size_t>(cols), 0.0f);
    for (int64_t k = 0; k < rank; ++k) {
      const float coefficient = module_.scale() * up[static_cast<size_t>(k)];
      const float* down_k = d + k * cols;
      for (int64_t c = 0; c < cols; ++c) delta[static_cast<size_t>(c)] += coefficient * down_k[c];
    }
    for (int64_t c = 0; c < cols; ++c) {
      const float base = round_to_dtype(w[c], dtype_);
      w[c] = round_to_dtype(base + round_to_dtype(delta[static_cast<size_t>(c)], dtype_), dtype_);
    }
    if (module_.is_dora()) {
      float sum = 0.0f;
      for (int64_t c = 0; c < cols; ++c) sum += round_to_dtype(w[c] * w[c], dtype_);
      const float norm = round_to_dtype(std::sqrt(sum), dtype_);
      if (module_.kind() == AdapterKind::Embedding) {
        // DoRAEmbedding keeps m in the model's dtype, so the rescale happens in T too.
        const float factor = round_to_dtype(module_.magnitude(row) / norm, dtype_);
        for (int64_t c = 0; c < cols; ++c) w[c] = round_to_dtype(factor * w[c], dtype_);
      } else {
        const float factor = module_.magnitude(row) / norm;  // DoRALinear's m is float32: so is the result
        for (int64_t c = 0; c < cols; ++c) w[c] = factor * w[c];
      }
    }
  }
}

}  // namespace mlx2gguf
