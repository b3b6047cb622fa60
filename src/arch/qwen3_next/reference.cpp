// qwen3_next (mlx-lm qwen3_next.py, with gated_delta.py's recurrence). Layer i is Gated DeltaNet linear attention
// unless (i + 1) % full_attention_interval == 0, which is gated full attention; its MLP is a sparse MoE block with a
// gated shared expert unless mlp_only_layers or decoder_sparse_step make it a dense SwiGLU MLP.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "eval/forward.h"
#include "eval/gated_deltanet.h"
#include "read/model_folder.h"
#include "util/error.h"

namespace mlx2gguf::ref {

namespace {

struct NextParams {
  // ModelArgs fields without a default: config.json must have them.
  int64_t hidden = 0, layers = 0, intermediate = 0, heads = 0, kv_heads = 0, head_dim = 0;
  int64_t lin_k_heads = 0, lin_v_heads = 0, lin_k_dim = 0, lin_v_dim = 0, conv_kernel = 0;
  int64_t experts = 0, experts_per_token = 0, decoder_sparse_step = 1, moe_intermediate = 0, shared_intermediate = 0;
  std::vector<int64_t> mlp_only_layers;
  double eps = 0.0;
  // With defaults.
  bool norm_topk_prob = false, tied = false, attention_bias = false;
  int64_t full_attention_interval = 4;
  Rope rope;
  // The checkpoint mlx-lm's sanitize would still transform (it has per-expert tensors): zero-centred norms hold w and
  // are evaluated as 1 + w, experts are one tensor each, conv1d is [C, 1, K].
  bool hf_layout = false;
};

// rope_theta / partial_rotary_factor as mlx-lm reads them, from the top level; a transformers-5 config keeps them
// only in rope_parameters (which mlx-lm does not read), so that is the fallback.
double rope_number(const nlohmann::json& c, const std::string& key) {
  if (!c.contains(key) && c.contains("rope_parameters") && c["rope_parameters"].is_object())
    return config_value<double>(c["rope_parameters"], key);
  return config_value<double>(c, key);
}

NextParams read_params(const SourceModel& model) {
  const nlohmann::json& c = model.config();
  NextParams p;
  p.hidden = config_value<int64_t>(c, "hidden_size");
  p.layers = config_value<int64_t>(c, "num_hidden_layers");
  p.intermediate = config_value<int64_t>(c, "intermediate_size");
  p.heads = config_value<int64_t>(c, "num_attention_heads");
  p.kv_heads = config_value<int64_t>(c, "num_key_value_heads");
  p.head_dim = config_value<int64_t>(c, "head_dim");
  p.lin_v_heads = config_value<int64_t>(c, "linear_num_value_heads");
  p.lin_k_heads = config_value<int64_t>(c, "linear_num_key_heads");
  p.lin_k_dim = config_value<int64_t>(c, "linear_key_head_dim");
  p.lin_v_dim = config_value<int64_t>(c, "linear_value_head_dim");
  p.conv_kernel = config_value<int64_t>(c, "linear_conv_kernel_dim");
  p.experts = config_value<int64_t>(c, "num_experts");
  p.experts_per_token = config_value<int64_t>(c, "num_experts_per_tok");
  p.decoder_sparse_step = config_value<int64_t>(c, "decoder_sparse_step", 1);
  p.shared_intermediate = config_value<int64_t>(c, "shared_expert_intermediate_size");
  p.moe_intermediate = config_value<int64_t>(c, "moe_intermediate_size");
  p.eps = config_value<double>(c, "rms_norm_eps");
  if (c.contains("mlp_only_layers") && c["mlp_only_layers"].is_array())
    for (const auto& entry : c["mlp_only_layers"]) p.mlp_only_layers.push_back(entry.get<int64_t>());
  p.norm_topk_prob = config_value<bool>(c, "norm_topk_prob", false);
  p.tied = config_value<bool>(c, "tie_word_embeddings", false);
  p.attention_bias = config_value<bool>(c, "attention_bias", false);
  p.full_attention_interval = config_value<int64_t>(c, "full_attention_interval", 4);
  if (p.heads <= 0 || p.kv_heads <= 0 || p.heads % p.kv_heads != 0)
    fail("config.json: {} attention heads cannot share {} key/value heads", p.heads, p.kv_heads);
  if (p.full_attention_interval <= 0 || p.decoder_sparse_step <= 0)
    fail("config.json: full_attention_interval and decoder_sparse_step must be positive");
  if (p.lin_k_heads <= 0 || p.lin_v_heads % p.lin_k_heads != 0)
    fail("config.json: linear_num_value_heads {} is not a multiple of linear_num_key_heads {}", p.lin_v_heads,
         p.lin_k_heads);

  const auto dims = static_cast<int64_t>(static_cast<double>(p.head_dim) * rope_number(c, "partial_rotary_factor"));
  if (dims > p.head_dim) fail("config.json: partial_rotary_factor rotates more than head_dim {}", p.head_dim);
  nlohmann::json scaling;
  if (c.contains("rope_scaling") && !c["rope_scaling"].is_null()) scaling = c["rope_scaling"];
  else if (c.contains("rope_parameters") && !c["rope_parameters"].is_null()) scaling = c["rope_parameters"];
  p.rope = rope_from_scaling(dims, rope_number(c, "rope_theta"), false, scaling);

  p.hf_layout = model.has("model.layers.0.mlp.experts.0.up_proj.weight");
  return p;
}

// A norm weight; `zero_centred` marks the kinds the checkpoint stores as w (evaluated as 1 + w) and mlx-lm's sanitize
// shifts to 1 + w once.
std::vector<float> norm_weight(const SourceModel& model, const NextParams& p, const std::string& name, int64_t size,
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

Activations full_attention(const SourceModel& model, const NextParams& p, const std::string& prefix,
                           const Activations& x) {
  const int64_t hd = p.head_dim;
  const int64_t q_width = p.heads * hd, kv_width = p.kv_heads * hd;
  const bool bias = p.attention_bias;
  const auto bq = read_bias(model, prefix + "q_proj.bias", 2 * q_width, bias, "attention_bias");
  const auto bk = read_bias(model, prefix + "k_proj.bias", kv_width, bias, "attention_bias");
  const auto bv = read_bias(model, prefix + "v_proj.bias", kv_width, bias, "attention_bias");
  const auto bo = read_bias(model, prefix + "o_proj.bias", p.hidden, bias, "attention_bias");
  const Activations qg = linear(x, projection(model, prefix + "q_proj.weight", 2 * q_width, p.hidden), data_or_null(bq));
  Activations k = linear(x, projection(model, prefix + "k_proj.weight", kv_width, p.hidden), data_or_null(bk));
  const Activations v = linear(x, projection(model, prefix + "v_proj.weight", kv_width, p.hidden), data_or_null(bv));

  // q_proj's output reshaped to [heads, 2·hd] and split in halves: per head [query | output gate].
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

Activations linear_attention(const SourceModel& model, const NextParams& p, const std::string& prefix,
                             const Activations& x) {
  const int64_t hk = p.lin_k_heads, hv = p.lin_v_heads, dk = p.lin_k_dim, dv = p.lin_v_dim;
  const int64_t r = hv / hk;  // value heads per key head
  const int64_t key_width = hk * dk, value_width = hv * dv, conv_width = 2 * key_width + value_width;
  const int64_t group = 2 * dk + 2 * r * dv;  // in_proj_qkvz outputs per key head
  const Activations qkvz = linear(x, projection(model, prefix + "in_proj_qkvz.weight", hk * group, p.hidden));
  const Activations ba = linear(x, projection(model, prefix + "in_proj_ba.weight", 2 * hv, p.hidden));

  // fix_query_key_value_ordering: per key head h the outputs are [q_h | k_h | v of its r value heads | z of them],
  // and in_proj_ba's are [b of its r value heads | a of them]. The convolution runs over [all q | all k | all v].
  Activations mixed(x.rows(), conv_width), z(x.rows(), value_width), b(x.rows(), hv), a(x.rows(), hv);
  for (int64_t t = 0; t < x.rows(); ++t)
    for (int64_t h = 0; h < hk; ++h) {
      const float* in = qkvz.row(t) + h * group;
      std::copy(in, in + dk, mixed.row(t) + h * dk);
      std::copy(in + dk, in + 2 * dk, mixed.row(t) + key_width + h * dk);
      std::copy(in + 2 * dk, in + 2 * dk + r * dv, mixed.row(t) + 2 * key_width + h * r * dv);
      std::copy(in + 2 * dk + r * dv, in + group, z.row(t) + h * r * dv);
      const float* gates = ba.row(t) + h * 2 * r;
      std::copy(gates, gates + r, b.row(t) + h * r);
      std::copy(gates + r, gates + 2 * r, a.row(t) + h * r);
    }

  return gated_deltanet_from_projections(model, prefix, mixed, z, a, b,
                                         {hk, hv, dk, dv, p.conv_kernel, p.hidden, p.eps});
}

Activations dense_mlp(const SourceModel& model, const std::string& prefix, const Activations& x, int64_t hidden,
                      int64_t inter) {
  return swiglu_mlp(x, projection(model, prefix + "gate_proj.weight", inter, hidden),
                    projection(model, prefix + "up_proj.weight", inter, hidden),
                    projection(model, prefix + "down_proj.weight", hidden, inter));
}

// The routed experts: stacked under switch_mlp as mlx-lm saves them, or one tensor per expert as the checkpoint
// holds them before sanitize stacks them.
ExpertWeights expert_weights(const SourceModel& model, const NextParams& p, const std::string& prefix) {
  if (!model.has(prefix + "experts.0.up_proj.weight"))
    return stacked_experts(model.require(prefix + "switch_mlp.gate_proj.weight"),
                           model.require(prefix + "switch_mlp.up_proj.weight"),
                           model.require(prefix + "switch_mlp.down_proj.weight"), p.hidden);
  if (model.has(prefix + "switch_mlp.gate_proj.weight"))
    fail("the experts of '{}' are stored both stacked and one per expert", prefix);
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

// Qwen3NextSparseMoeBlock: softmax over all experts, the top k (renormalized when norm_topk_prob), plus the shared
// expert scaled by sigmoid(shared_expert_gate(x)).
Activations moe_mlp(const SourceModel& model, const NextParams& p, const std::string& prefix, const Activations& x) {
  const Activations logits = linear(x, projection(model, prefix + "gate.weight", p.experts, p.hidden));
  std::vector<std::vector<ExpertChoice>> routes;
  for (int64_t t = 0; t < x.rows(); ++t)
    routes.push_back(route_softmax_topk(logits.row(t), p.experts, p.experts_per_token, p.norm_topk_prob));
  const ExpertWeights experts = expert_weights(model, p, prefix);
  if (static_cast<int64_t>(experts.experts.size()) != p.experts || experts.intermediate != p.moe_intermediate)
    fail("the experts of '{}' are {} of width {}, config.json says num_experts {} and moe_intermediate_size {}", prefix,
         experts.experts.size(), experts.intermediate, p.experts, p.moe_intermediate);
  Activations out = switch_glu(x, experts, routes);

  const Activations shared = dense_mlp(model, prefix + "shared_expert.", x, p.hidden, p.shared_intermediate);
  const Activations shared_gate = linear(x, projection(model, prefix + "shared_expert_gate.weight", 1, p.hidden));
  for (int64_t t = 0; t < x.rows(); ++t) {
    const double weight = sigmoid(shared_gate.row(t)[0]);
    for (int64_t d = 0; d < p.hidden; ++d) out.row(t)[d] = static_cast<float>(out.row(t)[d] + weight * shared.row(t)[d]);
  }
  return out;
}

bool is_moe_layer(const NextParams& p, int64_t i) {
  const bool listed = std::find(p.mlp_only_layers.begin(), p.mlp_only_layers.end(), i) != p.mlp_only_layers.end();
  return !listed && p.experts > 0 && (i + 1) % p.decoder_sparse_step == 0;
}

}  // namespace

std::vector<float> qwen3_next_reference(const SourceModel& model, std::span<const int32_t> tokens) {
  const NextParams p = read_params(model);
  const std::string embed_name = "model.embed_tokens.weight";
  const SourceTensor& table = model.require(embed_name);
  if (table.shape().size() != 2 || table.row_length() != p.hidden)
    fail("'{}' has rows of {} values, config.json hidden_size is {}", table.name(), table.row_length(), p.hidden);
  Activations x = embed(table, tokens);

  for (int64_t i = 0; i < p.layers; ++i) {
    const std::string layer = fmt::format("model.layers.{}.", i);
    const bool is_linear = (i + 1) % p.full_attention_interval != 0;
    Activations h = x;
    rms_norm_rows(h, norm_weight(model, p, layer + "input_layernorm.weight", p.hidden, true), p.eps);
    add_in_place(x, is_linear ? linear_attention(model, p, layer + "linear_attn.", h)
                              : full_attention(model, p, layer + "self_attn.", h));
    h = x;
    rms_norm_rows(h, norm_weight(model, p, layer + "post_attention_layernorm.weight", p.hidden, true), p.eps);
    add_in_place(x, is_moe_layer(p, i) ? moe_mlp(model, p, layer + "mlp.", h)
                                       : dense_mlp(model, layer + "mlp.", h, p.hidden, p.intermediate));
  }
  rms_norm_rows(x, norm_weight(model, p, "model.norm.weight", p.hidden, true), p.eps);
  // Tied: the embedding as the output projection, whatever else the weights hold (sanitize drops a copy).
  if (!p.tied) model.require("lm_head.weight");
  return output_logits(model, x, p.tied ? "" : "lm_head.weight", embed_name).data();
}

}  // namespace mlx2gguf::ref
