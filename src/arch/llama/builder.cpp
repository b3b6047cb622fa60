// Test-model builder of the llama family: model types llama, mistral (mlx_lm/models/llama.py) and mixtral
// (mixtral.py), as mlx-lm saves them.
#include "gen/model_builder.h"
#include "util/error.h"

namespace mlx2gguf::gen {

using nlohmann::json;

namespace {

// mlx_lm/models/llama.py (also model_type mistral).
std::vector<Param> dense_llama_params(const TinyModelSpec& spec, const Dims& d) {
  return decoder_params(spec, d, [&](ParamList& p, const std::string& layer) {
    attention(p, layer + ".self_attn", d, spec.attention_bias);
    p.linear(layer + ".mlp.gate_proj", d.intermediate, d.hidden, spec.mlp_bias);
    p.output(layer + ".mlp.down_proj", d.hidden, d.intermediate, spec.mlp_bias);
    p.linear(layer + ".mlp.up_proj", d.intermediate, d.hidden, spec.mlp_bias);
    p.norm(layer + ".input_layernorm", d.hidden);
    p.norm(layer + ".post_attention_layernorm", d.hidden);
  });
}

Layout build_llama(const TinyModelSpec& spec, Dims d, const TokenizerFacts& tokens) {
  json config = base_config(spec, d, tokens, "LlamaForCausalLM");
  config["attention_bias"] = spec.attention_bias;
  config["head_dim"] = d.head_dim;
  config["mlp_bias"] = spec.mlp_bias;
  config["pretraining_tp"] = 1;
  config["rope_scaling"] = spec.rope_scaling;
  return {config, json::object(), dense_llama_params(spec, d), {}, d.vocab, false};
}

Layout build_mistral(const TinyModelSpec& spec, Dims d, const TokenizerFacts& tokens) {
  json config = base_config(spec, d, tokens, "MistralForCausalLM");
  config["head_dim"] = d.head_dim;
  config["sliding_window"] = nullptr;
  // Mistral's own config has no bias or rope scaling keys; mlx-lm's llama.py reads them when present.
  if (spec.attention_bias) config["attention_bias"] = true;
  if (spec.mlp_bias) config["mlp_bias"] = true;
  if (!spec.rope_scaling.is_null()) config["rope_scaling"] = spec.rope_scaling;
  return {config, json::object(), dense_llama_params(spec, d), {}, d.vocab, false};
}

// mlx_lm/models/mixtral.py: experts stacked [E, out, in] under switch_mlp, router `gate` [E, H].
Layout build_mixtral(const TinyModelSpec& spec, Dims d, const TokenizerFacts& tokens) {
  if (spec.attention_bias || spec.mlp_bias) fail("mixtral has no attention or MLP biases");
  if (spec.head_dim != 0 && spec.head_dim * spec.heads != spec.hidden)
    fail("mixtral derives head_dim from hidden / heads; head_dim {} contradicts {} / {}", spec.head_dim, spec.hidden,
         spec.heads);
  json config = base_config(spec, d, tokens, "MixtralForCausalLM");
  config["num_local_experts"] = d.experts;
  config["num_experts_per_tok"] = d.experts_per_tok;
  config["output_router_logits"] = false;
  config["router_aux_loss_coef"] = 0.02;
  config["sliding_window"] = nullptr;
  if (!spec.rope_scaling.is_null()) config["rope_scaling"] = spec.rope_scaling;
  auto params = decoder_params(spec, d, [&](ParamList& p, const std::string& layer) {
    attention(p, layer + ".self_attn", d, false);
    const std::string moe = layer + ".block_sparse_moe";
    p.router(moe + ".gate", d.experts, d.hidden);
    p.switch_linear(moe + ".switch_mlp.gate_proj", d.experts, d.intermediate, d.hidden);
    p.switch_linear(moe + ".switch_mlp.up_proj", d.experts, d.intermediate, d.hidden);
    p.switch_output(moe + ".switch_mlp.down_proj", d.experts, d.hidden, d.intermediate);
    p.norm(layer + ".input_layernorm", d.hidden);
    p.norm(layer + ".post_attention_layernorm", d.hidden);
  });
  return {config, json::object(), std::move(params), {}, d.vocab, false};
}

}  // namespace

std::vector<ModelTypeBuilder> llama_builders() {
  return {
      {"llama", false, false, {2, 0, 10000, 1e-5}, build_llama},
      {"mistral", false, false, {2, 0, 10000, 1e-5}, build_mistral},
      {"mixtral", true, false, {2, 0, 10000, 1e-5}, build_mixtral},
  };
}

}  // namespace mlx2gguf::gen
