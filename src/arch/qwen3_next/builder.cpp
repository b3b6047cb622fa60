// Test-model builder of the Qwen3-Next family: model type qwen3_next (mlx_lm/models/qwen3_next.py), as mlx-lm saves
// it or as the Hugging Face checkpoint it is converted from.
//
// Both layouts name the decoder "model." and the head "lm_head.weight". What mlx-lm's sanitize changes, and so what
// the "hf" layout holds instead: conv1d [C, 1, K] instead of [C, K, 1]; the zero-centred norms (input/post-attention,
// final, q/k) as w instead of 1 + w; one tensor per routed expert (mlp.experts.E.{gate,up,down}_proj.weight) instead of
// the stacked mlp.switch_mlp.*; optionally multi-token-prediction tensors (mtp.*), which sanitize drops.
// For one seed every tensor of the two layouts holds the same values (up to that shift and reshape) except the routed
// experts: each per-expert tensor of the checkpoint is drawn from its own random stream, as a generated tensor cannot
// be a slice of another one's. Tests needing one model in both layouts stack the checkpoint's experts themselves.
#include "gen/model_builder.h"
#include "util/error.h"

namespace mlx2gguf::gen {

using nlohmann::json;

namespace {

// The Gated DeltaNet and MoE dimensions, checked.
void next_dims(const TinyModelSpec& spec, Dims& d) {
  positive("linear_num_key_heads", spec.linear_num_key_heads);
  positive("linear_num_value_heads", spec.linear_num_value_heads);
  positive("linear_key_head_dim", spec.linear_key_head_dim);
  positive("linear_value_head_dim", spec.linear_value_head_dim);
  positive("linear_conv_kernel_dim", spec.linear_conv_kernel_dim);
  positive("full_attention_interval", spec.full_attention_interval);
  if (spec.linear_num_value_heads % spec.linear_num_key_heads != 0)
    fail("linear_num_value_heads ({}) must be a multiple of linear_num_key_heads ({})", spec.linear_num_value_heads,
         spec.linear_num_key_heads);
  d.linear_key_heads = spec.linear_num_key_heads;
  d.linear_value_heads = spec.linear_num_value_heads;
  d.linear_key_dim = spec.linear_key_head_dim;
  d.linear_value_dim = spec.linear_value_head_dim;
  d.conv_kernel = spec.linear_conv_kernel_dim;
  d.full_attention_interval = spec.full_attention_interval;
  d.moe_intermediate = spec.moe_intermediate ? spec.moe_intermediate : 64;
  d.shared_intermediate = spec.shared_expert_intermediate ? spec.shared_expert_intermediate : 64;
  positive("moe_intermediate", d.moe_intermediate);
  positive("shared_expert_intermediate", d.shared_intermediate);
  if (!(spec.partial_rotary_factor > 0.0 && spec.partial_rotary_factor <= 1.0))
    fail("partial_rotary_factor must be in (0, 1], got {}", spec.partial_rotary_factor);
  const auto rotary_dims = static_cast<int64_t>(static_cast<double>(d.head_dim) * spec.partial_rotary_factor);
  if (rotary_dims < 2 || rotary_dims % 2 != 0)
    fail("head_dim {} x partial_rotary_factor {} gives {} rotated dims; RoPE needs a positive even count", d.head_dim,
         spec.partial_rotary_factor, rotary_dims);
  if (!spec.mrope_section.empty()) fail("qwen3_next has a plain RoPE: mrope_section does not apply");
}

// Qwen3-Next-80B-A3B's config.json keys (Hugging Face writes them sorted), with this model's sizes.
json qwen3_next_config(const TinyModelSpec& spec, const Dims& d, const TokenizerFacts& tokens) {
  json config = base_config(spec, d, tokens, "Qwen3NextForCausalLM");
  config["attention_bias"] = spec.attention_bias;
  config["decoder_sparse_step"] = 1;
  config["full_attention_interval"] = d.full_attention_interval;
  config["head_dim"] = d.head_dim;
  config["linear_conv_kernel_dim"] = d.conv_kernel;
  config["linear_key_head_dim"] = d.linear_key_dim;
  config["linear_num_key_heads"] = d.linear_key_heads;
  config["linear_num_value_heads"] = d.linear_value_heads;
  config["linear_value_head_dim"] = d.linear_value_dim;
  config["mlp_only_layers"] = json::array();
  config["moe_intermediate_size"] = d.moe_intermediate;
  config["norm_topk_prob"] = spec.norm_topk_prob.value_or(true);
  config["num_experts"] = d.experts;
  config["num_experts_per_tok"] = d.experts_per_tok;
  config["output_router_logits"] = false;
  config["partial_rotary_factor"] = spec.partial_rotary_factor;
  config["rope_scaling"] = spec.rope_scaling;
  config["rope_theta"] = number(d.rope_theta);
  config["router_aux_loss_coef"] = 0.001;
  config["shared_expert_intermediate_size"] = d.shared_intermediate;
  config["transformers_version"] = "4.57.0.dev0";
  config["use_sliding_window"] = false;
  return config;
}

// Qwen3NextAttention: q_proj yields per head [query (head_dim) | output gate (head_dim)].
void gated_attention(ParamList& p, const std::string& prefix, const Dims& d, bool bias) {
  p.linear(prefix + ".q_proj", 2 * d.heads * d.head_dim, d.hidden, bias);
  p.linear(prefix + ".k_proj", d.kv_heads * d.head_dim, d.hidden, bias);
  p.linear(prefix + ".v_proj", d.kv_heads * d.head_dim, d.hidden, bias);
  p.output(prefix + ".o_proj", d.hidden, d.heads * d.head_dim, bias);
  p.zero_centred_norm(prefix + ".q_norm", d.head_dim);
  p.zero_centred_norm(prefix + ".k_norm", d.head_dim);
}

// Qwen3NextGatedDeltaNet, with the fused projections: in_proj_qkvz [2·Kd + 2·Vd, H] (per key head q, k, then v and z
// of its value heads) and in_proj_ba [2·Hv, H] (per key head b, then a of its value heads). Scales as in the qwen3_5
// builder and for the same reasons: conv taps ten times 1/sqrt(K) keep every value head's output far above the
// gated norm's epsilon and q, k mostly positive after SiLU; dt_bias around -4 keeps most decays near 1, so that the
// state spans several tokens instead of being wiped every token. A_log is stored in the model's dtype: qwen3_next.py
// has no cast predicate, so mlx_lm.convert casts it like any other float.
void gated_delta_net(ParamList& p, const std::string& prefix, const Dims& d) {
  const int64_t conv_channels = 2 * d.linear_key_width() + d.linear_value_width();
  p.other(prefix + ".conv1d.weight", {conv_channels, d.conv_kernel, 1},
          {Draw::Normal, 0.0, 10.0 / std::sqrt(static_cast<double>(d.conv_kernel))});
  p.linear(prefix + ".in_proj_qkvz", 2 * d.linear_key_width() + 2 * d.linear_value_width(), d.hidden, false);
  p.linear(prefix + ".in_proj_ba", 2 * d.linear_value_heads, d.hidden, false);
  p.other(prefix + ".dt_bias", {d.linear_value_heads}, {Draw::Normal, -4.0, 1.0});
  p.other(prefix + ".A_log", {d.linear_value_heads}, {Draw::LogUniform, 1.0, 16.0});
  p.norm(prefix + ".norm", d.linear_value_dim);  // Qwen3NextRMSNormGated: a plain weight around 1, never shifted
  p.output(prefix + ".out_proj", d.hidden, d.linear_value_width(), false);
}

// Qwen3NextSparseMoeBlock: softmax router, stacked routed experts, shared expert scaled by a sigmoid gate.
void sparse_moe(ParamList& p, const std::string& prefix, const Dims& d) {
  p.router(prefix + ".gate", d.experts, d.hidden);
  p.switch_linear(prefix + ".switch_mlp.gate_proj", d.experts, d.moe_intermediate, d.hidden);
  p.switch_linear(prefix + ".switch_mlp.up_proj", d.experts, d.moe_intermediate, d.hidden);
  p.switch_output(prefix + ".switch_mlp.down_proj", d.experts, d.hidden, d.moe_intermediate);
  p.linear(prefix + ".shared_expert.gate_proj", d.shared_intermediate, d.hidden, false);
  p.output(prefix + ".shared_expert.down_proj", d.hidden, d.shared_intermediate, false);
  p.linear(prefix + ".shared_expert.up_proj", d.shared_intermediate, d.hidden, false);
  p.linear(prefix + ".shared_expert_gate", 1, d.hidden, false);
}

// In mlx-lm's module order: Model.model (embed_tokens, layers, norm), then lm_head.
std::vector<Param> qwen3_next_params(const TinyModelSpec& spec, const Dims& d) {
  ParamList p;
  p.embedding("model.embed_tokens", d.vocab, d.hidden);
  for (int64_t i = 0; i < d.layers; ++i) {
    const std::string layer = fmt::format("model.layers.{}", i);
    if (d.is_linear_layer(i))
      gated_delta_net(p, layer + ".linear_attn", d);
    else
      gated_attention(p, layer + ".self_attn", d, spec.attention_bias);
    p.zero_centred_norm(layer + ".input_layernorm", d.hidden);
    p.zero_centred_norm(layer + ".post_attention_layernorm", d.hidden);
    sparse_moe(p, layer + ".mlp", d);
  }
  p.zero_centred_norm("model.norm", d.hidden);
  if (!spec.tie_embeddings) p.linear("lm_head", d.vocab, d.hidden, false);
  return std::move(p.params);
}

// The Hugging Face checkpoint mlx-lm's sanitize turns into `mlx`: the same names, raw zero-centred norms,
// conv1d [C, 1, K], one tensor per routed expert (in Qwen3NextMLP's order gate, up, down).
std::vector<Param> qwen3_next_hf_params(const std::vector<Param>& mlx, const Dims& d) {
  std::vector<Param> hf;
  for (size_t i = 0; i < mlx.size(); ++i) {
    Param param = mlx[i];
    param.plus_one = false;
    param.quantizable = false;
    if (param.name.ends_with(".conv1d.weight")) {
      param.shape = {param.shape[0], 1, param.shape[1]};  // same element order: MLX [c, k, 0] is HF [c, 0, k]
    } else if (param.name.ends_with(".mlp.switch_mlp.gate_proj.weight")) {
      const std::string mlp = param.name.substr(0, param.name.size() - std::string("switch_mlp.gate_proj.weight").size());
      const Param* projections[3] = {&mlx.at(i), &mlx.at(i + 1), &mlx.at(i + 2)};
      const char* names[3] = {"gate_proj", "up_proj", "down_proj"};
      for (int k = 0; k < 3; ++k)
        if (!projections[k]->name.ends_with(fmt::format(".mlp.switch_mlp.{}.weight", names[k])))
          fail("internal error: '{}' is not the expected {} of '{}'", projections[k]->name, names[k], mlp);
      for (int64_t e = 0; e < d.experts; ++e)
        for (int k = 0; k < 3; ++k) {
          Param expert = *projections[k];
          expert.name = fmt::format("{}experts.{}.{}.weight", mlp, e, names[k]);
          expert.shape = {projections[k]->shape[1], projections[k]->shape[2]};
          expert.quantizable = false;
          hf.push_back(std::move(expert));
        }
      i += 2;
      continue;
    }
    hf.push_back(std::move(param));
  }
  return hf;
}

// A few tensors of the multi-token-prediction head Qwen3-Next checkpoints carry, which mlx-lm's sanitize drops (every
// name containing "mtp."). Its norms are zero-centred like the decoder's.
void qwen3_next_hf_extra_params(std::vector<Param>& params, const Dims& d) {
  ParamList p;
  p.linear("mtp.fc", d.hidden, 2 * d.hidden, false);
  p.other("mtp.pre_fc_norm_embedding.weight", {d.hidden}, {Draw::Normal, 0.0, 0.1});
  p.other("mtp.pre_fc_norm_hidden.weight", {d.hidden}, {Draw::Normal, 0.0, 0.1});
  p.other("mtp.layers.0.input_layernorm.weight", {d.hidden}, {Draw::Normal, 0.0, 0.1});
  p.linear("mtp.layers.0.self_attn.q_proj", 2 * d.heads * d.head_dim, d.hidden, false);
  p.linear("mtp.layers.0.mlp.experts.0.gate_proj", d.moe_intermediate, d.hidden, false);
  p.other("mtp.norm.weight", {d.hidden}, {Draw::Normal, 0.0, 0.1});
  for (Param& param : p.params) {
    param.quantizable = false;
    params.push_back(std::move(param));
  }
}

Layout build_qwen3_next(const TinyModelSpec& spec, Dims d, const TokenizerFacts& tokens) {
  next_dims(spec, d);
  if (spec.mlp_bias) fail("qwen3_next has no MLP biases");
  Layout layout;
  layout.config = qwen3_next_config(spec, d, tokens);
  layout.generation_extra = {{"do_sample", true}, {"temperature", 0.7}, {"top_k", 20}, {"top_p", 0.8}};
  if (tokens.eos_id) layout.generation_extra["pad_token_id"] = *tokens.eos_id;
  layout.params = qwen3_next_params(spec, d);
  layout.vocab = d.vocab;
  // qwen3_next.py's quant_predicate: routers and the shared expert's gate at 8 bits, group size 64.
  layout.quant_predicate = {{"mlp.gate", 8, 64, ""}, {"shared_expert_gate", 8, 64, ""}};
  if (spec.layout == "hf") {
    layout.hf = true;
    layout.params = qwen3_next_hf_params(layout.params, d);
    if (spec.hf_extra_tensors) qwen3_next_hf_extra_params(layout.params, d);
  }
  return layout;
}

}  // namespace

std::vector<ModelTypeBuilder> qwen3_next_builders() {
  return {{"qwen3_next", true, true, {4, 64, 1e7, 1e-6}, build_qwen3_next}};
}

}  // namespace mlx2gguf::gen
