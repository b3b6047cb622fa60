// Reference forward pass of the Phi-3 family (mlx-lm phi3.py): pre-norm decoder blocks of grouped-query attention
// whose q, k and v come from one fused projection (qkv_proj rows: the query heads, then the key heads, then the value
// heads), rotary embeddings over the first int(head_dim · partial_rotary_factor) dims of each head (plain, linear or
// LongRoPE), and a SwiGLU MLP whose gate and up come from one fused projection (gate_up_proj rows: gate, then up).
#include "arch/phi3/reference.h"

#include <fmt/format.h>

#include <cmath>

#include "eval/forward.h"
#include "read/model_folder.h"
#include "util/error.h"

namespace mlx2gguf::ref {

namespace {

struct Phi3Params {
  int64_t hidden = 0, layers = 0, intermediate = 0, heads = 0, kv_heads = 0, head_dim = 0, vocab = 0;
  double eps = 0.0;
  bool tied = false;
  Phi3Rope rope;
};

// The rope_theta phi3.py's __post_init__ settles on: rope_parameters' (default 10000) when that key is set.
double rope_theta(const nlohmann::json& c) {
  if (c.contains("rope_parameters") && !c["rope_parameters"].is_null())
    return config_value<double>(c["rope_parameters"], "rope_theta", 10000.0);
  return config_value<double>(c, "rope_theta", 10000.0);
}

std::vector<double> factors_of(const nlohmann::json& scaling, const char* key, int64_t pairs) {
  if (!scaling.contains(key) || !scaling[key].is_array() || static_cast<int64_t>(scaling[key].size()) != pairs)
    fail("config.json rope_scaling {} must hold {} factors", key, pairs);
  std::vector<double> values;
  for (const auto& v : scaling[key]) values.push_back(v.get<double>());
  return values;
}

// SuScaledRoPE (rope_utils.py): periods base^(2i/dims) times the chosen factor of pair i, never traditional; the rotated
// dims of q and k are first multiplied by sqrt(1 + ln(s) / ln(original)), s = max_positions / original (1 if s ≤ 1).
Phi3Rope su_scaled_rope(const nlohmann::json& c, const nlohmann::json& scaling, int64_t dims, LongRopeFactors which) {
  const double base = rope_theta(c);
  const double max_positions = config_value<double>(c, "max_position_embeddings", 131072.0);
  const double original = config_value<double>(c, "original_max_position_embeddings", 4096.0);
  const auto factors =
      factors_of(scaling, which == LongRopeFactors::Long ? "long_factor" : "short_factor", dims / 2);
  Phi3Rope r;
  r.rope.dims = dims;
  r.rope.traditional = false;
  for (int64_t i = 0; i < dims / 2; ++i) {
    const double period = factors[static_cast<size_t>(i)] *
                          std::pow(base, 2.0 * static_cast<double>(i) / static_cast<double>(dims));
    r.rope.inv_freq.push_back(1.0 / period);
  }
  const double s = max_positions / original;
  r.input_scale = s <= 1.0 ? 1.0 : std::sqrt(1.0 + std::log(s) / std::log(original));
  return r;
}

Phi3Params read_params(const SourceModel& model, LongRopeFactors factors) {
  const nlohmann::json& c = model.config();
  Phi3Params p;
  p.hidden = config_value<int64_t>(c, "hidden_size");
  p.layers = config_value<int64_t>(c, "num_hidden_layers");
  p.intermediate = config_value<int64_t>(c, "intermediate_size");
  p.heads = config_value<int64_t>(c, "num_attention_heads");
  p.eps = config_value<double>(c, "rms_norm_eps");
  p.vocab = config_value<int64_t>(c, "vocab_size");
  p.kv_heads = c.contains("num_key_value_heads") && !c["num_key_value_heads"].is_null()
                   ? config_value<int64_t>(c, "num_key_value_heads")
                   : p.heads;
  if (p.heads <= 0 || p.hidden <= 0 || p.kv_heads <= 0 || p.heads % p.kv_heads != 0)
    fail("config.json: hidden_size, num_attention_heads and num_key_value_heads do not describe grouped attention");
  p.head_dim = p.hidden / p.heads;  // phi3.py; a head_dim key is not read
  p.tied = c.contains("tie_word_embeddings") && !c["tie_word_embeddings"].is_null() &&
           config_value<bool>(c, "tie_word_embeddings");
  p.rope = phi3_rope(c, p.head_dim, factors);
  return p;
}

const SourceTensor& projection(const SourceModel& model, const std::string& name, int64_t rows, int64_t cols) {
  const SourceTensor& tensor = model.require(name);
  expect_shape(tensor, {rows, cols});
  return tensor;
}

void scale_rotated_dims(Activations& x, int64_t head_dim, const Phi3Rope& rope) {
  if (rope.input_scale == 1.0) return;
  for (int64_t t = 0; t < x.rows(); ++t)
    for (int64_t h = 0; h < x.cols(); h += head_dim)
      for (int64_t i = 0; i < rope.rope.dims; ++i)
        x.row(t)[h + i] = static_cast<float>(x.row(t)[h + i] * rope.input_scale);
}

Activations attention(const SourceModel& model, const Phi3Params& p, const std::string& prefix, const Activations& x) {
  const int64_t q_width = p.heads * p.head_dim, kv_width = p.kv_heads * p.head_dim;
  const SourceTensor& qkv = projection(model, prefix + "qkv_proj.weight", q_width + 2 * kv_width, p.hidden);
  // mx.split(qkv, [q_width, q_width + kv_width]): queries, keys, values in row order.
  Activations q = linear(x, qkv, nullptr, 0, q_width);
  Activations k = linear(x, qkv, nullptr, q_width, kv_width);
  const Activations v = linear(x, qkv, nullptr, q_width + kv_width, kv_width);
  for (Activations* a : {&q, &k}) {
    scale_rotated_dims(*a, p.head_dim, p.rope);
    apply_rope_rows(*a, p.head_dim, p.rope.rope);
  }
  AttentionShape shape;
  shape.n_heads = p.heads;
  shape.n_kv_heads = p.kv_heads;
  shape.head_dim = p.head_dim;
  shape.scale = 1.0 / std::sqrt(static_cast<double>(p.head_dim));
  return linear(causal_attention(q, k, v, shape), projection(model, prefix + "o_proj.weight", p.hidden, q_width));
}

// gate, up = mx.split(gate_up_proj(x), 2): the first half of the rows is the gate.
Activations mlp(const SourceModel& model, const Phi3Params& p, const std::string& prefix, const Activations& x) {
  const SourceTensor& gate_up = projection(model, prefix + "gate_up_proj.weight", 2 * p.intermediate, p.hidden);
  Activations gate = linear(x, gate_up, nullptr, 0, p.intermediate);
  silu_mul(gate, linear(x, gate_up, nullptr, p.intermediate, p.intermediate));
  return linear(gate, projection(model, prefix + "down_proj.weight", p.hidden, p.intermediate));
}

}  // namespace

Phi3Rope phi3_rope(const nlohmann::json& c, int64_t head_dim, LongRopeFactors factors) {
  const double partial = config_value<double>(c, "partial_rotary_factor", 1.0);
  const auto dims = static_cast<int64_t>(static_cast<double>(head_dim) * partial);
  if (dims < 2 || dims % 2 != 0) fail("config.json: partial_rotary_factor {} rotates {} dims", partial, dims);
  const nlohmann::json scaling = c.contains("rope_scaling") ? c["rope_scaling"] : nlohmann::json();
  std::string type;
  if (scaling.is_object() && !scaling.empty()) {
    if (!scaling.contains("long_factor") || !scaling.contains("type"))
      fail("config.json rope_scaling must contain long_factor and type (phi3.py)");
    type = scaling["type"].get<std::string>();
  }
  if (type == "longrope" || type == "su") return su_scaled_rope(c, scaling, dims, factors);
  Phi3Rope r;
  const bool traditional = config_value<bool>(c, "rope_traditional", false);
  // linear: nn.RoPE with scale 1 / factor; any other type is dropped by phi3.py (plain rope).
  const double scale = type == "linear" ? 1.0 / scaling["factor"].get<double>() : 1.0;
  r.rope = default_rope(dims, rope_theta(c), scale, traditional);
  return r;
}

std::vector<float> phi3_reference_with(const SourceModel& model, std::span<const int32_t> tokens, LongRopeFactors factors) {
  const Phi3Params p = read_params(model, factors);
  const SourceTensor& table = model.require("model.embed_tokens.weight");
  expect_shape(table, {p.vocab, p.hidden});
  Activations x = embed(table, tokens);
  for (int64_t i = 0; i < p.layers; ++i) {
    const std::string layer = fmt::format("model.layers.{}.", i);
    Activations h = x;
    rms_norm_rows(h, read_vector(model, layer + "input_layernorm.weight", p.hidden), p.eps);
    add_in_place(x, attention(model, p, layer + "self_attn.", h));
    h = x;
    rms_norm_rows(h, read_vector(model, layer + "post_attention_layernorm.weight", p.hidden), p.eps);
    add_in_place(x, mlp(model, p, layer + "mlp.", h));
  }
  rms_norm_rows(x, read_vector(model, "model.norm.weight", p.hidden), p.eps);
  // Tied: phi3.py's Model has no lm_head and uses embed_tokens.as_linear.
  if (p.tied && model.has("lm_head.weight")) fail("tied embeddings, but the weights hold lm_head.weight (phi3.py has none)");
  const SourceTensor& head = p.tied ? table : projection(model, "lm_head.weight", p.vocab, p.hidden);
  return linear(x, head).data();
}

std::vector<float> phi3_reference(const SourceModel& model, std::span<const int32_t> tokens) {
  return phi3_reference_with(model, tokens, LongRopeFactors::Long);
}

}  // namespace mlx2gguf::ref
