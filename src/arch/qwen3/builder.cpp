// Test-model builder of the Qwen3 family: model types qwen2 (mlx_lm/models/qwen2.py), qwen3 (qwen3.py) and
// qwen3_moe (qwen3_moe.py), as mlx-lm saves them, with the config keys Qwen's own checkpoints carry.
#include "gen/model_builder.h"
#include "util/error.h"

namespace mlx2gguf::gen {

using nlohmann::json;

namespace {

// Qwen2's q/k/v biases are large in trained checkpoints (its key biases famously so); drawn at a tenth of the
// activations' scale a converter that drops them would hardly be noticed, so they are drawn at half of it.
void qwen2_attention(ParamList& p, const std::string& prefix, const Dims& d) {
  const int64_t q_rows = d.heads * d.head_dim, kv_rows = d.kv_heads * d.head_dim;
  p.linear(prefix + ".q_proj", q_rows, d.hidden, false);
  p.other(prefix + ".q_proj.bias", {q_rows}, {Draw::Normal, 0.0, 0.5});
  p.linear(prefix + ".k_proj", kv_rows, d.hidden, false);
  p.other(prefix + ".k_proj.bias", {kv_rows}, {Draw::Normal, 0.0, 0.5});
  p.linear(prefix + ".v_proj", kv_rows, d.hidden, false);
  p.other(prefix + ".v_proj.bias", {kv_rows}, {Draw::Normal, 0.0, 0.5});
  p.output(prefix + ".o_proj", d.hidden, q_rows, false);
}

// qwen3.py / qwen3_moe.py Attention: no biases, an RMSNorm (plain weight around 1) over each query and key head.
void qwen3_attention(ParamList& p, const std::string& prefix, const Dims& d) {
  attention(p, prefix, d, false);
  p.norm(prefix + ".q_norm", d.head_dim);
  p.norm(prefix + ".k_norm", d.head_dim);
}

void dense_mlp(ParamList& p, const std::string& prefix, const Dims& d) {
  p.linear(prefix + ".gate_proj", d.intermediate, d.hidden, false);
  p.output(prefix + ".down_proj", d.hidden, d.intermediate, false);
  p.linear(prefix + ".up_proj", d.intermediate, d.hidden, false);
}

// Keys of Qwen's configs besides the common decoder ones.
json qwen_config(const TinyModelSpec& spec, const Dims& d, const TokenizerFacts& tokens, const char* architecture) {
  json config = base_config(spec, d, tokens, architecture);
  config["max_window_layers"] = d.layers;
  config["rope_scaling"] = spec.rope_scaling;
  config["rope_theta"] = number(d.rope_theta);
  config["use_sliding_window"] = false;
  return config;
}

void check_common(const TinyModelSpec& spec) {
  if (spec.mlp_bias) fail("{} has no MLP biases", spec.model_type);
  if (spec.layout != "mlx") fail("{} is written as mlx-lm saves it only", spec.model_type);
}

Layout build_qwen2(const TinyModelSpec& spec, Dims d, const TokenizerFacts& tokens) {
  check_common(spec);
  if (spec.head_dim != 0 && spec.head_dim * spec.heads != spec.hidden)
    fail("qwen2 derives head_dim from hidden / heads; head_dim {} contradicts {} / {}", spec.head_dim, spec.hidden,
         spec.heads);
  json config = qwen_config(spec, d, tokens, "Qwen2ForCausalLM");
  config["sliding_window"] = spec.max_position_embeddings;
  auto params = decoder_params(spec, d, [&](ParamList& p, const std::string& layer) {
    qwen2_attention(p, layer + ".self_attn", d);
    dense_mlp(p, layer + ".mlp", d);
    p.norm(layer + ".input_layernorm", d.hidden);
    p.norm(layer + ".post_attention_layernorm", d.hidden);
  });
  const json sampling = {{"do_sample", true}, {"repetition_penalty", 1.05}, {"temperature", 0.7}, {"top_k", 20}, {"top_p", 0.8}};
  return {config, sampling, std::move(params), {}, d.vocab, false};
}

json qwen3_config(const TinyModelSpec& spec, const Dims& d, const TokenizerFacts& tokens, const char* architecture) {
  json config = qwen_config(spec, d, tokens, architecture);
  config["attention_bias"] = false;
  config["head_dim"] = d.head_dim;
  config["sliding_window"] = nullptr;
  return config;
}

const json kQwen3Sampling = {{"do_sample", true}, {"temperature", 0.6}, {"top_k", 20}, {"top_p", 0.95}};

Layout build_qwen3(const TinyModelSpec& spec, Dims d, const TokenizerFacts& tokens) {
  check_common(spec);
  if (spec.attention_bias) fail("qwen3 has no attention biases");
  auto params = decoder_params(spec, d, [&](ParamList& p, const std::string& layer) {
    qwen3_attention(p, layer + ".self_attn", d);
    dense_mlp(p, layer + ".mlp", d);
    p.norm(layer + ".input_layernorm", d.hidden);
    p.norm(layer + ".post_attention_layernorm", d.hidden);
  });
  return {qwen3_config(spec, d, tokens, "Qwen3ForCausalLM"), kQwen3Sampling, std::move(params), {}, d.vocab, false};
}

// Every layer sparse (mlp_only_layers [], decoder_sparse_step 1), as in Qwen's MoE checkpoints; `intermediate` is the
// width of the dense MLP those keys could ask for, `moe_intermediate` (default 64) each expert's.
Layout build_qwen3_moe(const TinyModelSpec& spec, Dims d, const TokenizerFacts& tokens) {
  check_common(spec);
  if (spec.attention_bias) fail("qwen3_moe has no attention biases");
  d.moe_intermediate = spec.moe_intermediate ? spec.moe_intermediate : 64;
  positive("moe_intermediate", d.moe_intermediate);
  json config = qwen3_config(spec, d, tokens, "Qwen3MoeForCausalLM");
  config["decoder_sparse_step"] = 1;
  config["mlp_only_layers"] = json::array();
  config["moe_intermediate_size"] = d.moe_intermediate;
  config["norm_topk_prob"] = spec.norm_topk_prob.value_or(true);
  config["num_experts"] = d.experts;
  config["num_experts_per_tok"] = d.experts_per_tok;
  config["output_router_logits"] = false;
  config["router_aux_loss_coef"] = 0.001;
  // Qwen3MoeDecoderLayer registers attention, both norms, then the sparse block (router, then SwitchGLU).
  auto params = decoder_params(spec, d, [&](ParamList& p, const std::string& layer) {
    qwen3_attention(p, layer + ".self_attn", d);
    p.norm(layer + ".input_layernorm", d.hidden);
    p.norm(layer + ".post_attention_layernorm", d.hidden);
    p.router(layer + ".mlp.gate", d.experts, d.hidden);
    p.switch_linear(layer + ".mlp.switch_mlp.gate_proj", d.experts, d.moe_intermediate, d.hidden);
    p.switch_linear(layer + ".mlp.switch_mlp.up_proj", d.experts, d.moe_intermediate, d.hidden);
    p.switch_output(layer + ".mlp.switch_mlp.down_proj", d.experts, d.hidden, d.moe_intermediate);
  });
  Layout layout{config, kQwen3Sampling, std::move(params), {}, d.vocab, false};
  // qwen3_moe.py's quant_predicate: the router at 8 bits, group size 64.
  layout.quant_predicate = {{"mlp.gate", 8, 64, ""}};
  return layout;
}

}  // namespace

std::vector<ModelTypeBuilder> qwen3_builders() {
  return {
      {"qwen2", false, false, {2, 0, 1e6, 1e-6}, build_qwen2},
      {"qwen3", false, false, {2, 0, 1e6, 1e-6}, build_qwen3},
      {"qwen3_moe", true, false, {2, 0, 1e6, 1e-6}, build_qwen3_moe},
  };
}

}  // namespace mlx2gguf::gen
