// Reference forward pass of the llama family: llama / mistral (mlx-lm llama.py) and mixtral (mixtral.py): pre-norm decoder blocks with rotary GQA attention
// and a SwiGLU MLP, or a top-k mixture of SwiGLU experts for mixtral.
#include <fmt/format.h>

#include <cmath>

#include "eval/forward.h"
#include "read/model_folder.h"
#include "util/error.h"

namespace mlx2gguf::ref {

namespace {

struct LlamaParams {
  bool mixtral = false;
  int64_t hidden = 0;
  int64_t layers = 0;
  int64_t intermediate = 0;
  int64_t heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  double eps = 0.0;
  bool attention_bias = false;
  bool mlp_bias = false;
  int64_t experts = 0;
  int64_t experts_per_token = 0;
  Rope rope;
  std::vector<int64_t> windows;  // per layer: 0 = full causal attention
};

LlamaParams read_params(const SourceModel& model) {
  const nlohmann::json& c = model.config();
  LlamaParams p;
  p.mixtral = model.folder().model_type() == "mixtral";
  p.hidden = config_value<int64_t>(c, "hidden_size");
  p.layers = config_value<int64_t>(c, "num_hidden_layers");
  p.intermediate = config_value<int64_t>(c, "intermediate_size");
  p.heads = config_value<int64_t>(c, "num_attention_heads");
  // mixtral.py defaults an absent num_key_value_heads to 8 and rms_norm_eps to 1e-5; llama.py has no eps default.
  // An explicit null means "as many as the query heads" for both.
  const int64_t kv_default = p.mixtral && !c.contains("num_key_value_heads") ? 8 : p.heads;
  p.kv_heads = config_value<int64_t>(c, "num_key_value_heads", kv_default);
  p.eps = p.mixtral ? config_value<double>(c, "rms_norm_eps", 1e-5) : config_value<double>(c, "rms_norm_eps");
  if (p.heads <= 0 || p.hidden <= 0) fail("config.json: hidden_size and num_attention_heads must be positive");
  const bool traditional = config_value<bool>(c, "rope_traditional", false);
  if (p.mixtral) {
    // mixtral.py derives the head size and ignores head_dim, biases and rope_scaling.
    p.head_dim = p.hidden / p.heads;
    p.experts = config_value<int64_t>(c, "num_local_experts", 8);
    p.experts_per_token = config_value<int64_t>(c, "num_experts_per_tok", 2);
    p.rope = default_rope(p.head_dim, config_value<double>(c, "rope_theta", 1e6), 1.0, traditional);
  } else {
    p.head_dim = config_value<int64_t>(c, "head_dim", p.hidden / p.heads);
    p.attention_bias = config_value<bool>(c, "attention_bias", false);
    p.mlp_bias = config_value<bool>(c, "mlp_bias", false);
    const nlohmann::json scaling = c.contains("rope_scaling") ? c["rope_scaling"] : nlohmann::json();
    p.rope = rope_from_scaling(p.head_dim, config_value<double>(c, "rope_theta", 1e4), traditional, scaling);
  }
  p.windows.assign(static_cast<size_t>(p.layers), 0);
  if (!p.mixtral && c.contains("layer_types") && !c["layer_types"].is_null()) {
    const nlohmann::json& types = c["layer_types"];
    if (!types.is_array() || static_cast<int64_t>(types.size()) != p.layers)
      fail("config.json: layer_types must list {} layer types", p.layers);
    for (int64_t i = 0; i < p.layers; ++i) {
      if (!types[i].is_string()) fail("config.json: layer_types[{}] is not a string", i);
      if (types[i].get<std::string>() == "sliding_attention")
        p.windows[i] = config_value<int64_t>(c, "sliding_window");
    }
  }
  return p;
}

Activations attention_block(const SourceModel& model, const LlamaParams& p, const std::string& prefix,
                            const Activations& x, int64_t window) {
  const int64_t q_rows = p.heads * p.head_dim;
  const int64_t kv_rows = p.kv_heads * p.head_dim;
  const SourceTensor& wq = model.require(prefix + "q_proj.weight");
  const SourceTensor& wk = model.require(prefix + "k_proj.weight");
  const SourceTensor& wv = model.require(prefix + "v_proj.weight");
  const SourceTensor& wo = model.require(prefix + "o_proj.weight");
  expect_shape(wq, {q_rows, p.hidden});
  expect_shape(wk, {kv_rows, p.hidden});
  expect_shape(wv, {kv_rows, p.hidden});
  expect_shape(wo, {p.hidden, q_rows});
  const bool bias = p.attention_bias;
  const auto bq = read_bias(model, prefix + "q_proj.bias", q_rows, bias, "attention_bias");
  const auto bk = read_bias(model, prefix + "k_proj.bias", kv_rows, bias, "attention_bias");
  const auto bv = read_bias(model, prefix + "v_proj.bias", kv_rows, bias, "attention_bias");
  const auto bo = read_bias(model, prefix + "o_proj.bias", p.hidden, bias, "attention_bias");

  Activations q = linear(x, wq, data_or_null(bq));
  Activations k = linear(x, wk, data_or_null(bk));
  const Activations v = linear(x, wv, data_or_null(bv));
  apply_rope_rows(q, p.head_dim, p.rope);
  apply_rope_rows(k, p.head_dim, p.rope);
  AttentionShape shape;
  shape.n_heads = p.heads;
  shape.n_kv_heads = p.kv_heads;
  shape.head_dim = p.head_dim;
  shape.scale = 1.0 / std::sqrt(static_cast<double>(p.head_dim));
  shape.window = window;
  return linear(causal_attention(q, k, v, shape), wo, data_or_null(bo));
}

Activations mlp_block(const SourceModel& model, const LlamaParams& p, const std::string& prefix, const Activations& x) {
  const SourceTensor& gate = model.require(prefix + "gate_proj.weight");
  const SourceTensor& up = model.require(prefix + "up_proj.weight");
  const SourceTensor& down = model.require(prefix + "down_proj.weight");
  expect_shape(gate, {p.intermediate, p.hidden});
  expect_shape(up, {p.intermediate, p.hidden});
  expect_shape(down, {p.hidden, p.intermediate});
  const auto bg = read_bias(model, prefix + "gate_proj.bias", p.intermediate, p.mlp_bias, "mlp_bias");
  const auto bu = read_bias(model, prefix + "up_proj.bias", p.intermediate, p.mlp_bias, "mlp_bias");
  const auto bd = read_bias(model, prefix + "down_proj.bias", p.hidden, p.mlp_bias, "mlp_bias");
  return swiglu_mlp(x, gate, up, down, data_or_null(bg), data_or_null(bu), data_or_null(bd));
}

Activations moe_block(const SourceModel& model, const LlamaParams& p, const std::string& prefix, const Activations& x) {
  const SourceTensor& router = model.require(prefix + "gate.weight");
  expect_shape(router, {p.experts, p.hidden});
  const Activations logits = linear(x, router);
  std::vector<std::vector<ExpertChoice>> routes;
  for (int64_t t = 0; t < x.rows(); ++t) routes.push_back(route_topk_softmax(logits.row(t), p.experts, p.experts_per_token));
  const SourceTensor& gate = model.require(prefix + "switch_mlp.gate_proj.weight");
  const SourceTensor& up = model.require(prefix + "switch_mlp.up_proj.weight");
  const SourceTensor& down = model.require(prefix + "switch_mlp.down_proj.weight");
  expect_shape(gate, {p.experts, p.intermediate, p.hidden});
  return switch_glu(x, stacked_experts(gate, up, down, p.hidden), routes);
}

}  // namespace

std::vector<float> llama_reference(const SourceModel& model, std::span<const int32_t> tokens) {
  const LlamaParams p = read_params(model);
  const SourceTensor& table = model.require("model.embed_tokens.weight");
  if (table.shape().size() != 2 || table.row_length() != p.hidden)
    fail("'{}' has rows of {} values, config.json hidden_size is {}", table.name(), table.row_length(), p.hidden);
  Activations x = embed(table, tokens);

  for (int64_t i = 0; i < p.layers; ++i) {
    const std::string layer = fmt::format("model.layers.{}.", i);
    Activations h = x;
    rms_norm_rows(h, read_vector(model, layer + "input_layernorm.weight", p.hidden), p.eps);
    add_in_place(x, attention_block(model, p, layer + "self_attn.", h, p.windows[i]));
    h = x;
    rms_norm_rows(h, read_vector(model, layer + "post_attention_layernorm.weight", p.hidden), p.eps);
    add_in_place(x, p.mixtral ? moe_block(model, p, layer + "block_sparse_moe.", h) : mlp_block(model, p, layer + "mlp.", h));
  }
  rms_norm_rows(x, read_vector(model, "model.norm.weight", p.hidden), p.eps);
  return output_logits(model, x, "lm_head.weight", "model.embed_tokens.weight").data();
}

}  // namespace mlx2gguf::ref
