// qwen3_5 / qwen3_5_moe (mlx-lm qwen3_5.py, built from qwen3_next.py's attention, MLP and MoE blocks and
// gated_delta.py's recurrence). Layer i is linear attention unless (i + 1) % full_attention_interval == 0.
#include <fmt/format.h>

#include <cmath>

#include "arch/qwen35/reference.h"
#include "eval/forward.h"
#include "eval/gated_deltanet.h"
#include "read/model_folder.h"
#include "util/error.h"

namespace mlx2gguf::ref {

namespace {

struct QwenParams {
  int64_t hidden = 0, layers = 0, intermediate = 0, heads = 0, kv_heads = 0, head_dim = 0;
  double eps = 0.0;
  bool attention_bias = false;
  int64_t full_attention_interval = 4;
  int64_t lin_k_heads = 0, lin_v_heads = 0, lin_k_dim = 0, lin_v_dim = 0, conv_kernel = 0;
  int64_t experts = 0, experts_per_token = 0, moe_intermediate = 0, shared_intermediate = 0;
  bool norm_topk_prob = true;
  Rope rope;
  // Weights still in Hugging Face layout (conv1d [C, 1, K]): the zero-centred norms hold w, evaluated as 1 + w.
  bool hf_layout = false;
  std::string prefix;   // of the decoder's tensors: "language_model.model." as mlx-lm saves them
  std::string lm_head;  // untied output projection name (may be absent: tied)
};

// Prefixes under which the decoder may be stored: mlx-lm's saved names, and the Hugging Face names its sanitize
// maps onto them (multimodal "model.language_model.", text-only "model.").
struct Layout {
  const char* prefix;
  const char* lm_head;
};
constexpr Layout kLayouts[] = {
    {"language_model.model.", "language_model.lm_head.weight"},
    {"model.language_model.", "lm_head.weight"},
    {"model.", "lm_head.weight"},
};

QwenParams read_params(const SourceModel& model) {
  const nlohmann::json& c = model.config();
  QwenParams p;
  // Defaults as mlx-lm's TextModelArgs.
  p.hidden = config_value<int64_t>(c, "hidden_size", 4096);
  p.intermediate = config_value<int64_t>(c, "intermediate_size", 14336);
  p.layers = config_value<int64_t>(c, "num_hidden_layers", 32);
  p.heads = config_value<int64_t>(c, "num_attention_heads", 32);
  p.eps = config_value<double>(c, "rms_norm_eps", 1e-6);
  p.kv_heads = config_value<int64_t>(c, "num_key_value_heads", 8);
  p.lin_v_heads = config_value<int64_t>(c, "linear_num_value_heads", 64);
  p.lin_k_heads = config_value<int64_t>(c, "linear_num_key_heads", 16);
  p.lin_k_dim = config_value<int64_t>(c, "linear_key_head_dim", 192);
  p.lin_v_dim = config_value<int64_t>(c, "linear_value_head_dim", 128);
  p.conv_kernel = config_value<int64_t>(c, "linear_conv_kernel_dim", 4);
  p.attention_bias = config_value<bool>(c, "attention_bias", false);
  if (p.heads <= 0) fail("config.json: num_attention_heads must be positive");
  p.head_dim = config_value<int64_t>(c, "head_dim", p.hidden / p.heads);
  p.full_attention_interval = config_value<int64_t>(c, "full_attention_interval", 4);
  if (p.full_attention_interval <= 0) fail("config.json: full_attention_interval must be positive");
  p.experts = config_value<int64_t>(c, "num_experts", 0);
  p.experts_per_token = config_value<int64_t>(c, "num_experts_per_tok", 0);
  p.moe_intermediate = config_value<int64_t>(c, "moe_intermediate_size", 0);
  p.shared_intermediate = config_value<int64_t>(c, "shared_expert_intermediate_size", 0);
  p.norm_topk_prob = config_value<bool>(c, "norm_topk_prob", true);
  p.rope = qwen3_5_rope(c, p.head_dim);

  for (const auto& [name, tensor] : model.tensors())
    if (name.find("conv1d.weight") != std::string::npos && !tensor.shape().empty() && tensor.shape().back() != 1)
      p.hf_layout = true;

  for (const Layout& layout : kLayouts) {
    if (model.has(std::string(layout.prefix) + "embed_tokens.weight")) {
      p.prefix = layout.prefix;
      p.lm_head = model.has("language_model.lm_head.weight") ? "language_model.lm_head.weight" : layout.lm_head;
      return p;
    }
  }
  fail("no embedding table 'language_model.model.embed_tokens.weight' in the weights of '{}'",
       model.folder().dir().string());
}

// A norm weight; `zero_centred` marks the kinds Hugging Face stores as w (evaluated as 1 + w) and mlx-lm's
// sanitize shifts to 1 + w once.
std::vector<float> norm_weight(const SourceModel& model, const QwenParams& p, const std::string& name, int64_t size,
                               bool zero_centred) {
  std::vector<float> w = read_vector(model, name, size);
  if (zero_centred && p.hf_layout)
    for (float& v : w) v = static_cast<float>(1.0 + static_cast<double>(v));
  return w;
}

const SourceTensor& projection(const SourceModel& model, const std::string& name, int64_t rows, int64_t cols) {
  const SourceTensor& tensor = model.require(name);
  expect_shape(tensor, {rows, cols});
  return tensor;
}

Activations full_attention(const SourceModel& model, const QwenParams& p, const std::string& prefix,
                           const Activations& x) {
  const int64_t hd = p.head_dim;
  const int64_t q_width = p.heads * hd;
  const int64_t kv_width = p.kv_heads * hd;
  const bool bias = p.attention_bias;
  const auto bq = read_bias(model, prefix + "q_proj.bias", 2 * q_width, bias, "attention_bias");
  const auto bk = read_bias(model, prefix + "k_proj.bias", kv_width, bias, "attention_bias");
  const auto bv = read_bias(model, prefix + "v_proj.bias", kv_width, bias, "attention_bias");
  const auto bo = read_bias(model, prefix + "o_proj.bias", p.hidden, bias, "attention_bias");
  const Activations qg = linear(x, projection(model, prefix + "q_proj.weight", 2 * q_width, p.hidden), data_or_null(bq));
  Activations k = linear(x, projection(model, prefix + "k_proj.weight", kv_width, p.hidden), data_or_null(bk));
  const Activations v = linear(x, projection(model, prefix + "v_proj.weight", kv_width, p.hidden), data_or_null(bv));

  // Per head, q_proj yields [query (hd) | output gate (hd)].
  Activations q(x.rows(), q_width), gate(x.rows(), q_width);
  for (int64_t t = 0; t < x.rows(); ++t)
    for (int64_t h = 0; h < p.heads; ++h) {
      const float* src = qg.row(t) + h * 2 * hd;
      std::copy(src, src + hd, q.row(t) + h * hd);
      std::copy(src + hd, src + 2 * hd, gate.row(t) + h * hd);
    }
  rms_norm_rows(q, norm_weight(model, p, prefix + "q_norm.weight", hd, true), p.eps, hd);
  rms_norm_rows(k, norm_weight(model, p, prefix + "k_norm.weight", hd, true), p.eps, hd);
  apply_rope_rows(q, hd, p.rope);
  apply_rope_rows(k, hd, p.rope);

  AttentionShape shape;
  shape.n_heads = p.heads;
  shape.n_kv_heads = p.kv_heads;
  shape.head_dim = hd;
  shape.scale = 1.0 / std::sqrt(static_cast<double>(hd));
  Activations attn = causal_attention(q, k, v, shape);
  for (size_t i = 0; i < attn.data().size(); ++i)
    attn.data()[i] = static_cast<float>(attn.data()[i] * sigmoid(gate.data()[i]));
  return linear(attn, projection(model, prefix + "o_proj.weight", p.hidden, q_width), data_or_null(bo));
}

Activations linear_attention(const SourceModel& model, const QwenParams& p, const std::string& prefix,
                             const Activations& x) {
  const int64_t hk = p.lin_k_heads, hv = p.lin_v_heads, dk = p.lin_k_dim, dv = p.lin_v_dim;
  const int64_t key_width = hk * dk, value_width = hv * dv;
  const int64_t conv_width = 2 * key_width + value_width;
  const int64_t kernel = p.conv_kernel;
  const Activations qkv = linear(x, projection(model, prefix + "in_proj_qkv.weight", conv_width, p.hidden));
  const Activations z = linear(x, projection(model, prefix + "in_proj_z.weight", value_width, p.hidden));
  const Activations b = linear(x, projection(model, prefix + "in_proj_b.weight", hv, p.hidden));
  const Activations a = linear(x, projection(model, prefix + "in_proj_a.weight", hv, p.hidden));

  return gated_deltanet_from_projections(model, prefix, qkv, z, a, b, {hk, hv, dk, dv, kernel, p.hidden, p.eps});
}

Activations dense_mlp(const SourceModel& model, const std::string& prefix, const Activations& x, int64_t hidden,
                      int64_t inter) {
  return swiglu_mlp(x, projection(model, prefix + "gate_proj.weight", inter, hidden),
                    projection(model, prefix + "up_proj.weight", inter, hidden),
                    projection(model, prefix + "down_proj.weight", hidden, inter));
}

// The routed experts in any of the layouts mlx-lm's sanitize accepts: stacked `switch_mlp.*` (as mlx-lm saves
// them), Hugging Face's fused `experts.gate_up_proj` / `experts.down_proj`, or one tensor per expert.
ExpertWeights expert_weights(const SourceModel& model, const QwenParams& p, const std::string& prefix) {
  const bool stacked = model.has(prefix + "switch_mlp.gate_proj.weight");
  const bool fused = model.has(prefix + "experts.gate_up_proj");
  const bool per_expert = model.has(prefix + "experts.0.gate_proj.weight");
  if (static_cast<int>(stacked) + static_cast<int>(fused) + static_cast<int>(per_expert) > 1)
    fail("the experts of '{}' are stored in more than one layout", prefix);
  ExpertWeights weights;
  if (fused) {
    weights = fused_experts(model.require(prefix + "experts.gate_up_proj"), model.require(prefix + "experts.down_proj"),
                            p.hidden);
  } else if (per_expert) {
    weights.intermediate = p.moe_intermediate;
    for (int64_t e = 0; e < p.experts; ++e) {
      const std::string expert = fmt::format("{}experts.{}.", prefix, e);
      weights.experts.push_back({&projection(model, expert + "gate_proj.weight", p.moe_intermediate, p.hidden), 0,
                                 &projection(model, expert + "up_proj.weight", p.moe_intermediate, p.hidden), 0,
                                 &projection(model, expert + "down_proj.weight", p.hidden, p.moe_intermediate), 0});
    }
  } else {
    weights = stacked_experts(model.require(prefix + "switch_mlp.gate_proj.weight"),
                              model.require(prefix + "switch_mlp.up_proj.weight"),
                              model.require(prefix + "switch_mlp.down_proj.weight"), p.hidden);
  }
  if (static_cast<int64_t>(weights.experts.size()) != p.experts || weights.intermediate != p.moe_intermediate)
    fail("the experts of '{}' are {} of width {}, config.json says num_experts {} and moe_intermediate_size {}", prefix,
         weights.experts.size(), weights.intermediate, p.experts, p.moe_intermediate);
  return weights;
}

Activations moe_mlp(const SourceModel& model, const QwenParams& p, const std::string& prefix, const Activations& x) {
  const Activations logits = linear(x, projection(model, prefix + "gate.weight", p.experts, p.hidden));
  std::vector<std::vector<ExpertChoice>> routes;
  for (int64_t t = 0; t < x.rows(); ++t)
    routes.push_back(route_softmax_topk(logits.row(t), p.experts, p.experts_per_token, p.norm_topk_prob));
  Activations out = switch_glu(x, expert_weights(model, p, prefix), routes);

  const Activations shared = dense_mlp(model, prefix + "shared_expert.", x, p.hidden, p.shared_intermediate);
  const Activations shared_gate = linear(x, projection(model, prefix + "shared_expert_gate.weight", 1, p.hidden));
  for (int64_t t = 0; t < x.rows(); ++t) {
    const double weight = sigmoid(shared_gate.row(t)[0]);
    for (int64_t d = 0; d < p.hidden; ++d)
      out.row(t)[d] = static_cast<float>(out.row(t)[d] + weight * shared.row(t)[d]);
  }
  return out;
}

}  // namespace

Rope qwen3_5_rope(const nlohmann::json& c, int64_t head_dim) {
  // mlx-lm: rope_parameters defaults to {type default, rope_theta 100000, partial_rotary_factor 0.25}; a present,
  // non-empty one supplies theta and factor (same defaults) and becomes the rope scaling; a null or empty one
  // leaves the top-level rope_theta, partial_rotary_factor and rope_scaling in force.
  double theta = 100000.0;
  double factor = 0.25;
  nlohmann::json scaling;
  const bool has_parameters = c.contains("rope_parameters");
  const nlohmann::json parameters =
      has_parameters ? c["rope_parameters"]
                     : nlohmann::json{{"type", "default"}, {"rope_theta", 100000}, {"partial_rotary_factor", 0.25}};
  if (!parameters.is_null() && !parameters.empty()) {
    if (!parameters.is_object()) fail("config.json: rope_parameters is not an object: {}", parameters.dump());
    theta = config_value<double>(parameters, "rope_theta", 100000.0);
    factor = config_value<double>(parameters, "partial_rotary_factor", 0.25);
    scaling = parameters;
  } else {
    theta = config_value<double>(c, "rope_theta", 100000.0);
    factor = config_value<double>(c, "partial_rotary_factor", 0.25);
    if (c.contains("rope_scaling")) scaling = c["rope_scaling"];
  }
  const auto dims = static_cast<int64_t>(static_cast<double>(head_dim) * factor);
  if (dims > head_dim) fail("config.json: partial_rotary_factor {} rotates more than head_dim {}", factor, head_dim);
  return rope_from_scaling(dims, theta, false, scaling);
}

std::vector<float> qwen35_reference(const SourceModel& model, std::span<const int32_t> tokens) {
  const QwenParams p = read_params(model);
  const std::string embed_name = p.prefix + "embed_tokens.weight";
  const SourceTensor& table = model.require(embed_name);
  if (table.shape().size() != 2 || table.row_length() != p.hidden)
    fail("'{}' has rows of {} values, config.json hidden_size is {}", table.name(), table.row_length(), p.hidden);
  Activations x = embed(table, tokens);

  for (int64_t i = 0; i < p.layers; ++i) {
    const std::string layer = fmt::format("{}layers.{}.", p.prefix, i);
    const bool is_linear = (i + 1) % p.full_attention_interval != 0;
    Activations h = x;
    rms_norm_rows(h, norm_weight(model, p, layer + "input_layernorm.weight", p.hidden, true), p.eps);
    add_in_place(x, is_linear ? linear_attention(model, p, layer + "linear_attn.", h)
                              : full_attention(model, p, layer + "self_attn.", h));
    h = x;
    rms_norm_rows(h, norm_weight(model, p, layer + "post_attention_layernorm.weight", p.hidden, true), p.eps);
    add_in_place(x, p.experts > 0 ? moe_mlp(model, p, layer + "mlp.", h)
                                  : dense_mlp(model, layer + "mlp.", h, p.hidden, p.intermediate));
  }
  rms_norm_rows(x, norm_weight(model, p, p.prefix + "norm.weight", p.hidden, true), p.eps);
  return output_logits(model, x, p.lm_head, embed_name).data();
}

}  // namespace mlx2gguf::ref
