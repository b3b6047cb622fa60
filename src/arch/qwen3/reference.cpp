// Reference forward pass of the Qwen3 family: qwen2 (mlx-lm qwen2.py), qwen3 (qwen3.py) and qwen3_moe
// (qwen3_moe.py). Pre-norm decoder blocks with rotary GQA attention (q/k/v biases in qwen2; in qwen3 and qwen3_moe an
// RMSNorm over each query and key head before the rotation) and a SwiGLU MLP; qwen3_moe layers run a softmax-routed
// top-k mixture of SwiGLU experts instead, except the dense layers mlp_only_layers and decoder_sparse_step name.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numbers>

#include "arch/qwen3/reference.h"
#include "eval/forward.h"
#include "read/model_folder.h"
#include "util/error.h"

namespace mlx2gguf::ref {

namespace {

struct QwenParams {
  std::string type;     // qwen2 | qwen3 | qwen3_moe
  bool biases = false;  // q/k/v projection biases (qwen2)
  bool qk_norm = false; // per-head q/k RMSNorm (qwen3, qwen3_moe)
  int64_t hidden = 0, layers = 0, intermediate = 0, heads = 0, kv_heads = 0, head_dim = 0, vocab = 0;
  double eps = 0.0;
  bool tied = false;
  int64_t experts = 0, experts_per_token = 0, moe_intermediate = 0;
  bool norm_topk_prob = true;
  std::vector<bool> sparse;  // per layer: experts instead of a dense MLP
  QwenRope rope;
};

// The dataclass field `key` of mlx-lm's ModelArgs: required when it has no default there.
template <typename T>
T field(const nlohmann::json& c, const std::string& key) {
  return config_value<T>(c, key);
}

QwenParams read_params(const SourceModel& model, const std::string& type) {
  const nlohmann::json& c = model.config();
  QwenParams p;
  p.type = type;
  p.biases = type == "qwen2";
  p.qk_norm = type != "qwen2";
  p.hidden = field<int64_t>(c, "hidden_size");
  p.layers = field<int64_t>(c, "num_hidden_layers");
  p.intermediate = field<int64_t>(c, "intermediate_size");
  p.heads = field<int64_t>(c, "num_attention_heads");
  p.kv_heads = field<int64_t>(c, "num_key_value_heads");
  p.eps = field<double>(c, "rms_norm_eps");
  p.vocab = field<int64_t>(c, "vocab_size");
  if (p.heads <= 0 || p.hidden <= 0) fail("config.json: hidden_size and num_attention_heads must be positive");
  // qwen2.py: head_dim = hidden_size // num_attention_heads (a head_dim key is not read).
  p.head_dim = type == "qwen2" ? p.hidden / p.heads : field<int64_t>(c, "head_dim");
  // qwen2.py defaults tie_word_embeddings to True; the others require it. None (null) is falsy.
  if (!c.contains("tie_word_embeddings")) {
    if (type != "qwen2") fail("config.json lacks 'tie_word_embeddings'");
    p.tied = true;
  } else {
    p.tied = !c["tie_word_embeddings"].is_null() && field<bool>(c, "tie_word_embeddings");
  }
  p.sparse.assign(static_cast<size_t>(std::max<int64_t>(p.layers, 0)), false);
  if (type == "qwen3_moe") {
    p.experts = field<int64_t>(c, "num_experts");
    p.experts_per_token = field<int64_t>(c, "num_experts_per_tok");
    p.moe_intermediate = field<int64_t>(c, "moe_intermediate_size");
    p.norm_topk_prob = field<bool>(c, "norm_topk_prob");
    const int64_t step = field<int64_t>(c, "decoder_sparse_step");
    if (step <= 0) fail("config.json: decoder_sparse_step must be positive, got {}", step);
    if (!c.contains("mlp_only_layers") || !c["mlp_only_layers"].is_array()) fail("config.json lacks the list 'mlp_only_layers'");
    std::vector<int64_t> dense;
    for (const auto& entry : c["mlp_only_layers"]) dense.push_back(entry.get<int64_t>());
    // qwen3_moe.py: (idx not in mlp_only_layers) and num_experts > 0 and (idx + 1) % decoder_sparse_step == 0.
    for (int64_t i = 0; i < p.layers; ++i)
      p.sparse[static_cast<size_t>(i)] = std::find(dense.begin(), dense.end(), i) == dense.end() && p.experts > 0 &&
                                         (i + 1) % step == 0;
  }
  p.rope = qwen_rope(c, type, p.head_dim);
  return p;
}

// A tensor mlx-lm's module has no parameter for: its strict load_weights refuses the folder.
void reject(const SourceModel& model, const std::string& name, const std::string& type) {
  if (model.has(name)) fail("tensor '{}' has no parameter in mlx-lm's {} model", name, type);
}

const SourceTensor& projection(const SourceModel& model, const std::string& name, int64_t rows, int64_t cols) {
  const SourceTensor& tensor = model.require(name);
  expect_shape(tensor, {rows, cols});
  return tensor;
}

Activations attention(const SourceModel& model, const QwenParams& p, const std::string& prefix, const Activations& x) {
  const int64_t q_width = p.heads * p.head_dim, kv_width = p.kv_heads * p.head_dim;
  std::vector<float> bq, bk, bv;
  if (p.biases) {
    bq = read_vector(model, prefix + "q_proj.bias", q_width);
    bk = read_vector(model, prefix + "k_proj.bias", kv_width);
    bv = read_vector(model, prefix + "v_proj.bias", kv_width);
  } else {
    for (const char* proj : {"q_proj", "k_proj", "v_proj"}) reject(model, prefix + proj + ".bias", p.type);
  }
  reject(model, prefix + "o_proj.bias", p.type);
  Activations q = linear(x, projection(model, prefix + "q_proj.weight", q_width, p.hidden), data_or_null(bq));
  Activations k = linear(x, projection(model, prefix + "k_proj.weight", kv_width, p.hidden), data_or_null(bk));
  const Activations v = linear(x, projection(model, prefix + "v_proj.weight", kv_width, p.hidden), data_or_null(bv));
  if (p.qk_norm) {
    rms_norm_rows(q, read_vector(model, prefix + "q_norm.weight", p.head_dim), p.eps, p.head_dim);
    rms_norm_rows(k, read_vector(model, prefix + "k_norm.weight", p.head_dim), p.eps, p.head_dim);
  } else {
    reject(model, prefix + "q_norm.weight", p.type);
    reject(model, prefix + "k_norm.weight", p.type);
  }
  if (p.rope.input_scale != 1.0) {
    for (Activations* a : {&q, &k})
      for (int64_t t = 0; t < a->rows(); ++t)
        for (int64_t h = 0; h < a->cols(); h += p.head_dim)
          for (int64_t i = 0; i < p.rope.rope.dims; ++i)
            a->row(t)[h + i] = static_cast<float>(a->row(t)[h + i] * p.rope.input_scale);
  }
  apply_rope_rows(q, p.head_dim, p.rope.rope);
  apply_rope_rows(k, p.head_dim, p.rope.rope);
  AttentionShape shape;
  shape.n_heads = p.heads;
  shape.n_kv_heads = p.kv_heads;
  shape.head_dim = p.head_dim;
  shape.scale = 1.0 / std::sqrt(static_cast<double>(p.head_dim));
  return linear(causal_attention(q, k, v, shape), projection(model, prefix + "o_proj.weight", p.hidden, q_width));
}

Activations dense_mlp(const SourceModel& model, const QwenParams& p, const std::string& prefix, const Activations& x) {
  return swiglu_mlp(x, projection(model, prefix + "gate_proj.weight", p.intermediate, p.hidden),
                    projection(model, prefix + "up_proj.weight", p.intermediate, p.hidden),
                    projection(model, prefix + "down_proj.weight", p.hidden, p.intermediate));
}

// Experts as mlx-lm saves them (stacked under switch_mlp) or as the Hugging Face checkpoint its sanitize stacks
// (one tensor per expert).
ExpertWeights expert_weights(const SourceModel& model, const QwenParams& p, const std::string& prefix) {
  if (model.has(prefix + "switch_mlp.gate_proj.weight")) {
    ExpertWeights weights = stacked_experts(model.require(prefix + "switch_mlp.gate_proj.weight"),
                                            model.require(prefix + "switch_mlp.up_proj.weight"),
                                            model.require(prefix + "switch_mlp.down_proj.weight"), p.hidden);
    if (static_cast<int64_t>(weights.experts.size()) != p.experts || weights.intermediate != p.moe_intermediate)
      fail("the experts of '{}' are {} of width {}, config.json says num_experts {} and moe_intermediate_size {}",
           prefix, weights.experts.size(), weights.intermediate, p.experts, p.moe_intermediate);
    return weights;
  }
  ExpertWeights weights;
  weights.intermediate = p.moe_intermediate;
  for (int64_t e = 0; e < p.experts; ++e) {
    const std::string expert = fmt::format("{}experts.{}.", prefix, e);
    weights.experts.push_back({&projection(model, expert + "gate_proj.weight", p.moe_intermediate, p.hidden), 0,
                               &projection(model, expert + "up_proj.weight", p.moe_intermediate, p.hidden), 0,
                               &projection(model, expert + "down_proj.weight", p.hidden, p.moe_intermediate), 0});
  }
  return weights;
}

// Qwen3MoeSparseMoeBlock: softmax over every expert's router logit, the top k, optionally renormalised.
Activations sparse_moe(const SourceModel& model, const QwenParams& p, const std::string& prefix, const Activations& x) {
  if (p.experts_per_token <= 0 || p.experts_per_token > p.experts)
    fail("config.json: num_experts_per_tok {} must be between 1 and num_experts {}", p.experts_per_token, p.experts);
  const Activations logits = linear(x, projection(model, prefix + "gate.weight", p.experts, p.hidden));
  std::vector<std::vector<ExpertChoice>> routes;
  for (int64_t t = 0; t < x.rows(); ++t)
    routes.push_back(route_softmax_topk(logits.row(t), p.experts, p.experts_per_token, p.norm_topk_prob));
  return switch_glu(x, expert_weights(model, p, prefix), routes);
}

// mlx-lm's YarnRoPE: per rotated pair i, the period base^(2i/d) (extrapolation) and factor times it (interpolation)
// are blended by a linear ramp between the correction dims of beta_fast and beta_slow rotations over the original
// context; q and k are scaled by mscale(factor, mscale) / mscale(factor, mscale_all_dim) first.
QwenRope yarn_rope(int64_t dims, double base, bool traditional, const nlohmann::json& s) {
  auto number = [&](const char* key, double fallback) {
    return s.contains(key) && !s[key].is_null() ? s[key].get<double>() : fallback;
  };
  if (!s.contains("factor")) fail("config.json rope_scaling of type yarn has no 'factor'");
  const double factor = number("factor", 1.0);
  const double original = number("original_max_position_embeddings", 4096.0);
  const double beta_fast = number("beta_fast", 32.0), beta_slow = number("beta_slow", 1.0);
  const double d = static_cast<double>(dims);
  auto correction_dim = [&](double rotations) {
    return d * std::log(original / (rotations * 2.0 * std::numbers::pi)) / (2.0 * std::log(base));
  };
  const double low = std::max(std::floor(correction_dim(beta_fast)), 0.0);
  double high = std::min(std::ceil(correction_dim(beta_slow)), d - 1.0);
  if (low == high) high += 0.001;
  auto mscale = [&](double m) { return factor <= 1.0 ? 1.0 : 0.1 * m * std::log(factor) + 1.0; };
  QwenRope r;
  r.input_scale = mscale(number("mscale", 1.0)) / mscale(number("mscale_all_dim", 0.0));
  r.rope.dims = dims;
  r.rope.traditional = traditional;
  for (int64_t i = 0; i < dims / 2; ++i) {
    const double extra = std::pow(base, 2.0 * static_cast<double>(i) / d);
    const double inter = factor * extra;
    const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
    const double mask = 1.0 - ramp;
    const double period = inter * extra / (inter * mask + extra * (1.0 - mask));
    r.rope.inv_freq.push_back(1.0 / period);
  }
  return r;
}

}  // namespace

QwenRope qwen_rope(const nlohmann::json& c, const std::string& type, int64_t head_dim) {
  QwenRope r;
  if (type == "qwen3_moe") {
    // qwen3_moe.py: nn.RoPE(head_dim, traditional=False, base=rope_theta); rope_scaling is not read.
    r.rope = default_rope(head_dim, field<double>(c, "rope_theta"));
    return r;
  }
  const double base = type == "qwen2" ? config_value<double>(c, "rope_theta", 1e6) : field<double>(c, "rope_theta");
  const bool traditional = type == "qwen2" && config_value<bool>(c, "rope_traditional", false);
  const nlohmann::json scaling = c.contains("rope_scaling") ? c["rope_scaling"] : nlohmann::json();
  if (scaling.is_object()) {
    std::string kind = scaling.value("type", nlohmann::json()).is_string() ? scaling["type"].get<std::string>() : "";
    if (kind.empty() && scaling.contains("rope_type") && scaling["rope_type"].is_string())
      kind = scaling["rope_type"].get<std::string>();
    if (kind == "yarn" || kind == "deepseek_yarn" || kind == "telechat3-yarn")
      return yarn_rope(head_dim, base, traditional, scaling);
  }
  r.rope = rope_from_scaling(head_dim, base, traditional, scaling);
  return r;
}

std::vector<float> qwen3_reference(const SourceModel& model, std::span<const int32_t> tokens) {
  const QwenParams p = read_params(model, model.folder().model_type());
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
    add_in_place(x, p.sparse[static_cast<size_t>(i)] ? sparse_moe(model, p, layer + "mlp.", h)
                                                     : dense_mlp(model, p, layer + "mlp.", h));
  }
  rms_norm_rows(x, read_vector(model, "model.norm.weight", p.hidden), p.eps);
  // Tied: mlx-lm's sanitize drops a stored lm_head and the embedding table serves as the head.
  const SourceTensor& head = p.tied ? table : projection(model, "lm_head.weight", p.vocab, p.hidden);
  return linear(x, head).data();
}

}  // namespace mlx2gguf::ref
