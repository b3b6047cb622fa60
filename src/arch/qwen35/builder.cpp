// Test-model builder of the Qwen3.5 family: model types qwen3_5 and qwen3_5_moe (mlx_lm/models/qwen3_5.py,
// qwen3_5_moe.py; blocks from qwen3_next.py), as mlx-lm saves them or as the Hugging Face checkpoint they come from.
#include "gen/model_builder.h"
#include "util/error.h"

namespace mlx2gguf::gen {

using nlohmann::json;

namespace {

// The qwen3_5 dimensions, checked.
void hybrid_dims(const TinyModelSpec& spec, Dims& d, bool moe) {
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
  if (moe) {
    positive("moe_intermediate", d.moe_intermediate);
    positive("shared_expert_intermediate", d.shared_intermediate);
  }
  if (!(spec.partial_rotary_factor > 0.0 && spec.partial_rotary_factor <= 1.0))
    fail("partial_rotary_factor must be in (0, 1], got {}", spec.partial_rotary_factor);
  const auto rotary_dims = static_cast<int64_t>(static_cast<double>(d.head_dim) * spec.partial_rotary_factor);
  if (rotary_dims < 2 || rotary_dims % 2 != 0)
    fail("head_dim {} x partial_rotary_factor {} gives {} rotated dims; RoPE needs a positive even count", d.head_dim,
         spec.partial_rotary_factor, rotary_dims);
  if (spec.mrope_section.empty()) {
    // Qwen's [11, 11, 10] split of 32 rotated pairs, scaled to this head.
    const int pairs = static_cast<int>(rotary_dims / 2);
    const int spatial = static_cast<int>(std::lround(pairs * 11.0 / 32.0));
    d.mrope_section = {spatial, spatial, pairs - 2 * spatial};
  } else {
    if (spec.mrope_section.size() != 3) fail("mrope_section needs 3 entries, got {}", spec.mrope_section.size());
    d.mrope_section = spec.mrope_section;
  }
}


json qwen3_5_text_config(const TinyModelSpec& spec, const Dims& d, const TokenizerFacts& tokens, bool moe) {
  json layer_types = json::array();
  for (int64_t i = 0; i < d.layers; ++i) layer_types.push_back(d.is_linear_layer(i) ? "linear_attention" : "full_attention");
  // mlx-lm reads partial_rotary_factor and rope_theta from rope_parameters only; Hugging Face writes the factor at
  // both levels.
  const json rope = {{"mrope_interleaved", true},
                     {"mrope_section", d.mrope_section},
                     {"partial_rotary_factor", spec.partial_rotary_factor},
                     {"rope_theta", number(d.rope_theta)},
                     {"rope_type", "default"}};
  json text = {{"attention_bias", spec.attention_bias},
               {"attention_dropout", 0.0},
               {"attn_output_gate", true},
               {"bos_token_id", tokens.bos_id ? json(*tokens.bos_id) : json(nullptr)},
               {"dtype", spec.dtype},
               {"eos_token_id", tokens.eos_id ? json(*tokens.eos_id) : json(nullptr)},
               {"full_attention_interval", d.full_attention_interval},
               {"head_dim", d.head_dim},
               {"hidden_act", "silu"},
               {"hidden_size", d.hidden},
               {"initializer_range", 0.02},
               {"layer_types", layer_types},
               {"linear_conv_kernel_dim", d.conv_kernel},
               {"linear_key_head_dim", d.linear_key_dim},
               {"linear_num_key_heads", d.linear_key_heads},
               {"linear_num_value_heads", d.linear_value_heads},
               {"linear_value_head_dim", d.linear_value_dim},
               {"mamba_ssm_dtype", "float32"},
               {"max_position_embeddings", spec.max_position_embeddings},
               {"model_type", moe ? "qwen3_5_moe_text" : "qwen3_5_text"},
               {"mtp_num_hidden_layers", 1},
               {"mtp_use_dedicated_embeddings", false},
               {"num_attention_heads", d.heads},
               {"num_hidden_layers", d.layers},
               {"num_key_value_heads", d.kv_heads},
               {"pad_token_id", nullptr},
               {"partial_rotary_factor", spec.partial_rotary_factor},
               {"rms_norm_eps", d.rms_norm_eps},
               {"rope_parameters", rope},
               {"tie_word_embeddings", spec.tie_embeddings},
               {"use_cache", true},
               {"vocab_size", d.vocab}};
  if (moe) {
    text["moe_intermediate_size"] = d.moe_intermediate;
    text["num_experts"] = d.experts;
    text["num_experts_per_tok"] = d.experts_per_tok;
    text["output_router_logits"] = false;
    text["router_aux_loss_coef"] = 0.001;
    text["shared_expert_intermediate_size"] = d.shared_intermediate;
  } else {
    text["intermediate_size"] = d.intermediate;
  }
  if (spec.norm_topk_prob) text["norm_topk_prob"] = *spec.norm_topk_prob;
  return text;
}

// Hugging Face's multimodal config: the language model under text_config, the vision tower beside it (mlx-lm drops
// vision_config when it converts).
json qwen3_5_config(const TinyModelSpec& spec, const Dims& d, const TokenizerFacts& tokens, bool moe) {
  const json vision = {{"deepstack_visual_indexes", json::array()},
                       {"depth", 1},
                       {"hidden_act", "gelu_pytorch_tanh"},
                       {"hidden_size", 32},
                       {"in_channels", 3},
                       {"initializer_range", 0.02},
                       {"intermediate_size", 64},
                       {"model_type", spec.model_type},
                       {"num_heads", 4},
                       {"num_position_embeddings", 64},
                       {"out_hidden_size", d.hidden},
                       {"patch_size", 16},
                       {"spatial_merge_size", 2},
                       {"temporal_patch_size", 2}};
  // The image/video token ids are Qwen's; the text model never reads them.
  return {{"architectures", {moe ? "Qwen3_5MoeForConditionalGeneration" : "Qwen3_5ForConditionalGeneration"}},
          {"image_token_id", 248056},
          {"model_type", spec.model_type},
          {"text_config", qwen3_5_text_config(spec, d, tokens, moe)},
          {"tie_word_embeddings", spec.tie_embeddings},
          {"transformers_version", "4.57.1"},
          {"video_token_id", 248057},
          {"vision_config", vision},
          {"vision_end_token_id", 248054},
          {"vision_start_token_id", 248053}};
}

// Gated full attention: q_proj yields per head [query (head_dim) | output gate (head_dim)].
void gated_attention(ParamList& p, const std::string& prefix, const Dims& d, bool bias) {
  p.linear(prefix + ".q_proj", 2 * d.heads * d.head_dim, d.hidden, bias);
  p.linear(prefix + ".k_proj", d.kv_heads * d.head_dim, d.hidden, bias);
  p.linear(prefix + ".v_proj", d.kv_heads * d.head_dim, d.hidden, bias);
  p.output(prefix + ".o_proj", d.hidden, d.heads * d.head_dim, bias);
  p.zero_centred_norm(prefix + ".q_norm", d.head_dim);
  p.zero_centred_norm(prefix + ".k_norm", d.head_dim);
}

// Gated DeltaNet. Random weights make this block touchy in two places, which the scales below avoid so that the
// model's logits move about as little as a llama's when its weights are rounded or quantized:
//  - Each value head's output is RMS-normalized: a head output near zero (or near the norm's epsilon) turns small
//    weight errors into large output changes. Conv taps ten times 1/sqrt(K) make the conv outputs large, so v and
//    with it the head outputs sit far above the epsilon, and SiLU of large inputs leaves q and k mostly positive,
//    so q.k rarely crosses zero.
//  - A decay exp(-exp(A_log) * softplus(a + dt_bias)) near 0 wipes the state every token, leaving a head output
//    proportional to q.k of the current token alone. dt_bias around -4 (softplus ~ 0.02, the time steps Mamba-style
//    models start from) keeps most decays near 1 (about 0.85 for A = 8), so several tokens share the state.
void gated_delta_net(ParamList& p, const std::string& prefix, const Dims& d) {
  const int64_t conv_channels = 2 * d.linear_key_width() + d.linear_value_width();
  p.other(prefix + ".conv1d.weight", {conv_channels, d.conv_kernel, 1},
          {Draw::Normal, 0.0, 10.0 / std::sqrt(static_cast<double>(d.conv_kernel))});
  p.linear(prefix + ".in_proj_qkv", conv_channels, d.hidden, false);
  p.linear(prefix + ".in_proj_z", d.linear_value_width(), d.hidden, false);
  p.linear(prefix + ".in_proj_b", d.linear_value_heads, d.hidden, false);
  p.linear(prefix + ".in_proj_a", d.linear_value_heads, d.hidden, false);
  p.other(prefix + ".dt_bias", {d.linear_value_heads}, {Draw::Normal, -4.0, 1.0});
  // Float32 in Qwen's checkpoints, and mlx-lm's cast predicate keeps it so.
  p.other(prefix + ".A_log", {d.linear_value_heads}, {Draw::LogUniform, 1.0, 16.0}, DType::F32);
  p.norm(prefix + ".norm", d.linear_value_dim);  // gated RMSNorm: a plain weight around 1, not shifted
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

std::vector<Param> qwen3_5_params(const TinyModelSpec& spec, const Dims& d, bool moe) {
  ParamList p;
  const std::string model = "language_model.model.";
  p.embedding(model + "embed_tokens", d.vocab, d.hidden);
  for (int64_t i = 0; i < d.layers; ++i) {
    const std::string layer = model + fmt::format("layers.{}", i);
    if (d.is_linear_layer(i))
      gated_delta_net(p, layer + ".linear_attn", d);
    else
      gated_attention(p, layer + ".self_attn", d, spec.attention_bias);
    p.zero_centred_norm(layer + ".input_layernorm", d.hidden);
    p.zero_centred_norm(layer + ".post_attention_layernorm", d.hidden);
    if (moe) {
      sparse_moe(p, layer + ".mlp", d);
    } else {
      p.linear(layer + ".mlp.gate_proj", d.intermediate, d.hidden, false);
      p.output(layer + ".mlp.down_proj", d.hidden, d.intermediate, false);
      p.linear(layer + ".mlp.up_proj", d.intermediate, d.hidden, false);
    }
  }
  p.zero_centred_norm(model + "norm", d.hidden);
  if (!spec.tie_embeddings) p.linear("language_model.lm_head", d.vocab, d.hidden, false);
  return std::move(p.params);
}

std::string replace_prefix(const std::string& name, const std::string& from, const std::string& to) {
  return name.starts_with(from) ? to + name.substr(from.size()) : name;
}

// The Hugging Face checkpoint mlx-lm's sanitize turns into `mlx`: same values, Hugging Face names and layouts.
std::vector<Param> qwen3_5_hf_params(const std::vector<Param>& mlx) {
  std::vector<Param> hf;
  for (size_t i = 0; i < mlx.size(); ++i) {
    Param param = mlx[i];
    param.sources = {mlx[i].name};
    param.plus_one = false;
    param.quantizable = false;
    param.name = replace_prefix(param.name, "language_model.model.", "model.language_model.");
    param.name = replace_prefix(param.name, "language_model.lm_head.", "lm_head.");
    if (param.name.ends_with(".conv1d.weight")) {
      param.shape = {param.shape[0], 1, param.shape[1]};  // same element order: MLX [c, k, 0] is HF [c, 0, k]
    } else if (param.name.ends_with(".mlp.switch_mlp.gate_proj.weight")) {
      const Param& up = mlx.at(i + 1);
      if (!up.name.ends_with(".mlp.switch_mlp.up_proj.weight"))
        fail("internal error: '{}' does not follow '{}'", up.name, mlx[i].name);
      param.name = param.name.substr(0, param.name.size() - std::string("switch_mlp.gate_proj.weight").size()) +
                   "experts.gate_up_proj";
      param.shape[1] *= 2;
      param.sources.push_back(up.name);
      ++i;
    } else if (param.name.ends_with(".mlp.switch_mlp.down_proj.weight")) {
      param.name = param.name.substr(0, param.name.size() - std::string("switch_mlp.down_proj.weight").size()) +
                   "experts.down_proj";
    }
    hf.push_back(std::move(param));
  }
  return hf;
}

// A few tensors of the vision tower and of the multi-token-prediction head, which Qwen's checkpoints carry and a
// text-model converter drops. Their norms are zero-centred like the decoder's.
void qwen3_5_hf_extra_params(std::vector<Param>& params, const Dims& d, bool moe) {
  ParamList p;
  p.other("model.visual.patch_embed.proj.weight", {32, 3, 2, 16, 16}, {Draw::Normal, 0.0, 0.02});
  p.other("model.visual.patch_embed.proj.bias", {32}, {Draw::Normal, 0.0, 0.02});
  p.linear("model.visual.merger.linear_fc2", d.hidden, 32 * 4, true);
  p.linear("mtp.fc", d.hidden, 2 * d.hidden, false);
  p.other("mtp.pre_fc_norm_embedding.weight", {d.hidden}, {Draw::Normal, 0.0, 0.1});
  p.other("mtp.pre_fc_norm_hidden.weight", {d.hidden}, {Draw::Normal, 0.0, 0.1});
  p.other("mtp.layers.0.input_layernorm.weight", {d.hidden}, {Draw::Normal, 0.0, 0.1});
  p.linear("mtp.layers.0.self_attn.q_proj", 2 * d.heads * d.head_dim, d.hidden, false);
  if (moe) {
    p.switch_linear("mtp.layers.0.mlp.experts.gate_up_proj", d.experts, 2 * d.moe_intermediate, d.hidden);
    p.switch_linear("mtp.layers.0.mlp.experts.down_proj", d.experts, d.hidden, d.moe_intermediate);
  } else {
    p.linear("mtp.layers.0.mlp.gate_proj", d.intermediate, d.hidden, false);
  }
  p.other("mtp.norm.weight", {d.hidden}, {Draw::Normal, 0.0, 0.1});
  for (Param& param : p.params) {
    if (param.name.ends_with("experts.gate_up_proj.weight") || param.name.ends_with("experts.down_proj.weight"))
      param.name.resize(param.name.size() - std::string(".weight").size());
    param.quantizable = false;
    params.push_back(std::move(param));
  }
}

Layout build_qwen3_5_family(const TinyModelSpec& spec, Dims d, const TokenizerFacts& tokens, bool moe) {
  hybrid_dims(spec, d, moe);
  if (spec.mlp_bias) fail("{} has no MLP biases", spec.model_type);
  if (!spec.rope_scaling.is_null())
    fail("{} takes its RoPE settings from rope_theta, partial_rotary_factor and mrope_section, not rope_scaling",
         spec.model_type);
  Layout layout;
  layout.config = qwen3_5_config(spec, d, tokens, moe);
  layout.generation_extra = {{"do_sample", true}, {"temperature", 1.0}, {"top_k", 20}, {"top_p", 0.95}};
  if (tokens.eos_id) layout.generation_extra["pad_token_id"] = *tokens.eos_id;
  layout.params = qwen3_5_params(spec, d, moe);
  layout.vocab = d.vocab;
  // qwen3_5.py's quant_predicate, only when the model has experts.
  if (moe) layout.quant_predicate = {{"mlp.gate", 8, 64, ""}, {"shared_expert_gate", 8, 64, ""}};
  if (spec.layout == "hf") {
    layout.hf = true;
    layout.params = qwen3_5_hf_params(layout.params);
    if (spec.hf_extra_tensors) qwen3_5_hf_extra_params(layout.params, d, moe);
  }
  return layout;
}

Layout build_qwen3_5(const TinyModelSpec& spec, Dims d, const TokenizerFacts& tokens) {
  return build_qwen3_5_family(spec, d, tokens, false);
}

Layout build_qwen3_5_moe(const TinyModelSpec& spec, Dims d, const TokenizerFacts& tokens) {
  return build_qwen3_5_family(spec, d, tokens, true);
}

}  // namespace

std::vector<ModelTypeBuilder> qwen35_builders() {
  return {
      {"qwen3_5", false, true, {4, 64, 1e7, 1e-6}, build_qwen3_5},
      {"qwen3_5_moe", true, true, {4, 64, 1e7, 1e-6}, build_qwen3_5_moe},
  };
}

}  // namespace mlx2gguf::gen
