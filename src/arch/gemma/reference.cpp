// Reference forward pass of the Gemma family: gemma3_text (mlx-lm gemma3_text.py), its multimodal wrapper gemma3
// (gemma3.py: the same language model under language_model.*, configured by text_config) and gemma2 (gemma2.py).
// Embedding rows scaled by sqrt(hidden) as mlx-lm rounds it; decoder blocks of RMSNorms evaluated as (1 + w), with a
// norm after each branch as well as before it; rotary GQA attention (Gemma 3: per-head q/k norms, local layers with
// a window and their own rope base, global layers every sliding_window_pattern-th; Gemma 2: soft-capped scores, no
// window); a GELU (tanh) gated MLP; the tied embedding as head (Gemma 3 may have its own), soft-capped in Gemma 2.
#include "arch/gemma/reference.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numbers>

#include "eval/forward.h"
#include "read/model_folder.h"
#include "util/error.h"
#include "util/half.h"

namespace mlx2gguf::ref {

namespace {

struct GemmaParams {
  bool gemma3 = true;
  std::string prefix;  // "" or "language_model." (gemma3 wrapper)
  int64_t hidden = 0, layers = 0, intermediate = 0, heads = 0, kv_heads = 0, head_dim = 0;
  double eps = 1e-6, query_scalar = 256.0;
  // gemma3
  int64_t window = 0, pattern = 1;
  Rope local_rope, global_rope;
  // gemma2
  double attn_cap = 0.0, final_cap = 0.0;
  Rope rope;

  bool sliding(int64_t layer) const { return gemma3 && pattern > 1 && layer % pattern != pattern - 1; }
};

template <typename T>
T value(const nlohmann::json& c, const char* key, T fallback) {
  return config_value<T>(c, key, fallback);
}

double positive_number(const nlohmann::json& c, const char* key, double fallback) {
  if (c.contains(key) && c[key].is_null()) fail("config.json: {} is null", key);
  const double v = config_value<double>(c, key, fallback);
  if (!(v > 0.0)) fail("config.json: {} must be positive, got {}", key, v);
  return v;
}

GemmaParams read_params(const SourceModel& model) {
  const nlohmann::json& top = model.folder().config();
  const nlohmann::json& c = model.config();
  GemmaParams p;
  const std::string type = top.value("model_type", std::string());
  p.gemma3 = type != "gemma2";
  const bool wrapped = type == "gemma3";
  p.prefix = wrapped ? "language_model." : "";
  if (p.gemma3) {
    // gemma3_text.py's ModelArgs defaults; gemma3.py's wrapper fills in 8 heads and 4 key/value heads.
    p.hidden = value<int64_t>(c, "hidden_size", 1152);
    p.layers = value<int64_t>(c, "num_hidden_layers", 26);
    p.intermediate = value<int64_t>(c, "intermediate_size", 6912);
    p.heads = value<int64_t>(c, "num_attention_heads", wrapped ? 8 : 4);
    p.kv_heads = value<int64_t>(c, "num_key_value_heads", wrapped ? 4 : 1);
    p.head_dim = value<int64_t>(c, "head_dim", 256);
    p.eps = value<double>(c, "rms_norm_eps", 1e-6);
    p.query_scalar = positive_number(c, "query_pre_attn_scalar", 256.0);
    p.window = value<int64_t>(c, "sliding_window", 512);
    p.pattern = value<int64_t>(c, "sliding_window_pattern", 6);
    p.local_rope = default_rope(p.head_dim, positive_number(c, "rope_local_base_freq", 1e4));
    p.global_rope = rope_from_scaling(p.head_dim, positive_number(c, "rope_theta", 1e6), false,
                                      c.contains("rope_scaling") ? c["rope_scaling"] : nlohmann::json());
  } else {
    // gemma2.py requires the sizes.
    p.hidden = config_value<int64_t>(c, "hidden_size");
    p.layers = config_value<int64_t>(c, "num_hidden_layers");
    p.intermediate = config_value<int64_t>(c, "intermediate_size");
    p.heads = config_value<int64_t>(c, "num_attention_heads");
    p.kv_heads = config_value<int64_t>(c, "num_key_value_heads");
    p.head_dim = config_value<int64_t>(c, "head_dim");
    p.eps = config_value<double>(c, "rms_norm_eps");
    p.query_scalar = positive_number(c, "query_pre_attn_scalar", 144.0);
    p.attn_cap = positive_number(c, "attn_logit_softcapping", 50.0);
    p.final_cap = positive_number(c, "final_logit_softcapping", 30.0);
    p.rope = default_rope(p.head_dim, positive_number(c, "rope_theta", 10000.0), 1.0,
                          value<bool>(c, "rope_traditional", false));
  }
  if (p.hidden <= 0 || p.layers <= 0 || p.heads <= 0 || p.kv_heads <= 0 || p.head_dim <= 0 || p.pattern <= 0 ||
      p.heads % p.kv_heads != 0)
    fail("config.json: sizes and head counts must be positive, heads a multiple of key/value heads");
  if (p.gemma3 && p.pattern > 1 && p.window <= 0) fail("config.json: sliding_window must be positive");
  return p;
}

// mx.fast.rms_norm(x, 1 + w, eps) on every row, or on every `n`-wide slice of a row.
void shifted_rms_norm(Activations& x, const SourceModel& model, const std::string& name, int64_t size, double eps,
                      int64_t slice = 0) {
  std::vector<float> w = read_vector(model, name, size);
  for (float& v : w) v = static_cast<float>(1.0 + static_cast<double>(v));
  rms_norm_rows(x, w, eps, slice);
}

const SourceTensor& projection(const SourceModel& model, const std::string& name, int64_t rows, int64_t cols) {
  const SourceTensor& tensor = model.require(name);
  expect_shape(tensor, {rows, cols});
  return tensor;
}

Activations attention(const SourceModel& model, const GemmaParams& p, const std::string& prefix, const Activations& x,
                      int64_t layer) {
  const int64_t q_width = p.heads * p.head_dim, kv_width = p.kv_heads * p.head_dim;
  Activations q = linear(x, projection(model, prefix + "q_proj.weight", q_width, p.hidden));
  Activations k = linear(x, projection(model, prefix + "k_proj.weight", kv_width, p.hidden));
  const Activations v = linear(x, projection(model, prefix + "v_proj.weight", kv_width, p.hidden));
  AttentionShape shape;
  shape.n_heads = p.heads;
  shape.n_kv_heads = p.kv_heads;
  shape.head_dim = p.head_dim;
  shape.scale = 1.0 / std::sqrt(p.query_scalar);
  if (p.gemma3) {
    shifted_rms_norm(q, model, prefix + "q_norm.weight", p.head_dim, p.eps, p.head_dim);
    shifted_rms_norm(k, model, prefix + "k_norm.weight", p.head_dim, p.eps, p.head_dim);
    const bool sliding = p.sliding(layer);
    apply_rope_rows(q, p.head_dim, sliding ? p.local_rope : p.global_rope);
    apply_rope_rows(k, p.head_dim, sliding ? p.local_rope : p.global_rope);
    shape.window = sliding ? p.window : 0;
  } else {
    apply_rope_rows(q, p.head_dim, p.rope);
    apply_rope_rows(k, p.head_dim, p.rope);
  }
  return linear(softcapped_attention(q, k, v, shape, p.attn_cap), projection(model, prefix + "o_proj.weight", p.hidden, q_width));
}

Activations mlp(const SourceModel& model, const GemmaParams& p, const std::string& prefix, const Activations& x) {
  Activations gate = linear(x, projection(model, prefix + "gate_proj.weight", p.intermediate, p.hidden));
  const Activations up = linear(x, projection(model, prefix + "up_proj.weight", p.intermediate, p.hidden));
  for (size_t i = 0; i < gate.data().size(); ++i)
    gate.data()[i] = static_cast<float>(gelu_tanh(gate.data()[i]) * static_cast<double>(up.data()[i]));
  return linear(gate, projection(model, prefix + "down_proj.weight", p.hidden, p.intermediate));
}

}  // namespace

double gelu_tanh(double x) {
  const double k = std::sqrt(2.0 / std::numbers::pi);
  return 0.5 * x * (1.0 + std::tanh(k * (x + 0.044715 * x * x * x)));
}

double gemma_embedding_scale(bool gemma3, int64_t hidden, DType embedding_dtype) {
  const float exact = static_cast<float>(std::sqrt(static_cast<double>(hidden)));
  if (gemma3 || embedding_dtype == DType::BF16) return bf16_to_f32(f32_to_bf16(exact));
  if (embedding_dtype == DType::F16) return f16_to_f32(f32_to_f16(exact));
  return std::sqrt(static_cast<double>(hidden));
}

Activations softcapped_attention(const Activations& q, const Activations& k, const Activations& v,
                                 const AttentionShape& shape, double cap) {
  const int64_t hd = shape.head_dim, tokens = q.rows();
  if (shape.n_kv_heads <= 0 || shape.n_heads % shape.n_kv_heads != 0 || q.cols() != shape.n_heads * hd ||
      k.cols() != shape.n_kv_heads * hd || v.cols() != k.cols() || k.rows() != tokens || v.rows() != tokens)
    fail("internal: attention inputs do not match {} heads and {} kv heads of {}", shape.n_heads, shape.n_kv_heads, hd);
  const int64_t group = shape.n_heads / shape.n_kv_heads;
  Activations out(tokens, shape.n_heads * hd);
  std::vector<double> scores(static_cast<size_t>(tokens)), acc(static_cast<size_t>(hd));
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t first = shape.window > 0 ? std::max<int64_t>(0, t - shape.window + 1) : 0;
    for (int64_t h = 0; h < shape.n_heads; ++h) {
      const float* qh = q.row(t) + h * hd;
      const int64_t kvh = h / group;
      for (int64_t j = first; j <= t; ++j) {
        const float* kh = k.row(j) + kvh * hd;
        double dot = 0.0;
        for (int64_t d = 0; d < hd; ++d) dot += static_cast<double>(qh[d]) * kh[d];
        double score = dot * shape.scale;
        if (cap > 0.0) score = cap * std::tanh(score / cap);
        scores[static_cast<size_t>(j - first)] = score;
      }
      softmax(scores.data(), t - first + 1);
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t j = first; j <= t; ++j) {
        const float* vh = v.row(j) + kvh * hd;
        for (int64_t d = 0; d < hd; ++d) acc[static_cast<size_t>(d)] += scores[static_cast<size_t>(j - first)] * vh[d];
      }
      for (int64_t d = 0; d < hd; ++d) out.row(t)[h * hd + d] = static_cast<float>(acc[static_cast<size_t>(d)]);
    }
  }
  return out;
}

std::vector<float> gemma_reference(const SourceModel& model, std::span<const int32_t> tokens) {
  const GemmaParams p = read_params(model);
  const std::string m = p.prefix + "model.";
  const SourceTensor& table = model.require(m + "embed_tokens.weight");
  if (table.shape().size() != 2 || table.row_length() != p.hidden)
    fail("'{}' has rows of {} values, config.json hidden_size is {}", table.name(), table.row_length(), p.hidden);
  Activations x = embed(table, tokens);
  const double scale = gemma_embedding_scale(p.gemma3, p.hidden, table.value_dtype());
  for (float& value : x.data()) value = static_cast<float>(value * scale);

  for (int64_t i = 0; i < p.layers; ++i) {
    const std::string layer = fmt::format("{}layers.{}.", m, i);
    Activations h = x;
    shifted_rms_norm(h, model, layer + "input_layernorm.weight", p.hidden, p.eps);
    Activations r = attention(model, p, layer + "self_attn.", h, i);
    shifted_rms_norm(r, model, layer + "post_attention_layernorm.weight", p.hidden, p.eps);
    add_in_place(x, r);
    h = x;
    shifted_rms_norm(h, model, layer + "pre_feedforward_layernorm.weight", p.hidden, p.eps);
    r = mlp(model, p, layer + "mlp.", h);
    shifted_rms_norm(r, model, layer + "post_feedforward_layernorm.weight", p.hidden, p.eps);
    add_in_place(x, r);
  }
  shifted_rms_norm(x, model, m + "norm.weight", p.hidden, p.eps);
  // gemma3_text's sanitize ties the head when the folder has no lm_head; gemma2 always ties it.
  const std::string head_name = p.prefix + "lm_head.weight";
  const bool own_head = p.gemma3 && model.has(head_name);
  std::vector<float> logits = own_head ? linear(x, projection(model, head_name, table.shape()[0], p.hidden)).data()
                                       : linear(x, table).data();
  if (p.final_cap > 0.0)
    for (float& value : logits) value = static_cast<float>(p.final_cap * std::tanh(value / p.final_cap));
  return logits;
}

}  // namespace mlx2gguf::ref
