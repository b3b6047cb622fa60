#include "eval/gated_deltanet.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "eval/forward.h"

namespace mlx2gguf::ref {

Activations gated_deltanet_from_projections(const SourceModel& model, const std::string& prefix, const Activations& mixed,
                                            const Activations& z, const Activations& a, const Activations& b,
                                            const GatedDeltaNetShape& s) {
  const int64_t hk = s.key_heads, hv = s.value_heads, dk = s.key_dim, dv = s.value_dim;
  const int64_t key_width = hk * dk, value_width = hv * dv, conv_width = 2 * key_width + value_width;
  const int64_t rows = mixed.rows();

  // Depthwise causal convolution; mlx-lm's [C, K, 1] and the checkpoint's [C, 1, K] hold the taps in the same order.
  const SourceTensor& conv = model.require(prefix + "conv1d.weight");
  if (conv.shape() != std::vector<int64_t>{conv_width, s.conv_kernel, 1} &&
      conv.shape() != std::vector<int64_t>{conv_width, 1, s.conv_kernel})
    expect_shape(conv, {conv_width, s.conv_kernel, 1});
  const Activations conv_out = causal_conv_silu(mixed, read_all(conv), s.conv_kernel);

  Activations q(rows, key_width), k(rows, key_width), v(rows, value_width);
  for (int64_t t = 0; t < rows; ++t) {
    const float* row = conv_out.row(t);
    std::copy(row, row + key_width, q.row(t));
    std::copy(row + key_width, row + 2 * key_width, k.row(t));
    std::copy(row + 2 * key_width, row + conv_width, v.row(t));
  }
  // q = dk^-1 · rms_norm(q), k = dk^-1/2 · rms_norm(k), per key head, eps 1e-6, no weight (L2 normalisation).
  rms_norm_rows(q, {}, 1e-6, dk);
  rms_norm_rows(k, {}, 1e-6, dk);
  const double inv_scale = 1.0 / std::sqrt(static_cast<double>(dk));
  for (float& value : q.data()) value = static_cast<float>(value * inv_scale * inv_scale);
  for (float& value : k.data()) value = static_cast<float>(value * inv_scale);

  // beta = sigmoid(b), g = exp(-exp(A_log) · softplus(a + dt_bias)).
  const std::vector<float> a_log = read_vector(model, prefix + "A_log", hv);
  const std::vector<float> dt_bias = read_vector(model, prefix + "dt_bias", hv);
  Activations g(rows, hv), beta(rows, hv);
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t j = 0; j < hv; ++j) {
      const double decay_rate = std::exp(static_cast<double>(a_log[j]));
      g.row(t)[j] = static_cast<float>(std::exp(-decay_rate * softplus(static_cast<double>(a.row(t)[j]) + dt_bias[j])));
      beta.row(t)[j] = static_cast<float>(sigmoid(b.row(t)[j]));
    }
  // Value head j reads key head j / (hv / hk) (mx.repeat of q and k along the head axis).
  Activations y = gated_delta_rule(q, k, v, g, beta, {hk, hv, dk, dv});

  // Gated RMSNorm per value head: rms_norm(y, norm.weight) · silu(z). The weight is a plain one (never shifted).
  rms_norm_rows(y, read_vector(model, prefix + "norm.weight", dv), s.norm_eps, dv);
  for (size_t i = 0; i < y.data().size(); ++i) y.data()[i] = static_cast<float>(y.data()[i] * silu(z.data()[i]));
  const SourceTensor& out_proj = model.require(prefix + "out_proj.weight");
  expect_shape(out_proj, {s.hidden, value_width});
  return linear(y, out_proj);
}

}  // namespace mlx2gguf::ref
