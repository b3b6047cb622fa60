// Test-model builder of the gpt-oss family: model type gpt_oss (mlx_lm/models/gpt_oss.py) as mlx-lm saves it, i.e.
// after its sanitize: gate and up experts already split out of Hugging Face's interleaved gate_up_proj, every
// expert stacked [E, out, in] under mlp.experts with a bias [E, out], a router with a bias, attention projections
// with biases and a per-head sink logit. Quantized folders follow mlx-lm too: gpt_oss.py's quant_predicate puts the
// routers at 8 bits, group 64, and gpt_oss_native_mxfp4_recipe (builder.h) reproduces the folders mlx_lm.convert
// makes of OpenAI's natively MXFP4 checkpoints.
#include "arch/gpt_oss/builder.h"

#include "gen/model_builder.h"
#include "util/error.h"

namespace mlx2gguf::gen {

using nlohmann::json;

namespace {

// gpt-oss-20b / 120b's own rope scaling (their config.json).
json gpt_oss_yarn() {
  return {{"beta_fast", 32.0}, {"beta_slow", 1.0}, {"factor", 32.0}, {"original_max_position_embeddings", 4096},
          {"rope_type", "yarn"}, {"truncate", false}};
}

std::vector<std::string> layer_types_of(const TinyModelSpec& spec, const Dims& d) {
  if (spec.layer_types.empty()) {
    std::vector<std::string> types;
    for (int64_t i = 0; i < d.layers; ++i) types.emplace_back(i % 2 == 0 ? "sliding_attention" : "full_attention");
    return types;
  }
  if (static_cast<int64_t>(spec.layer_types.size()) != d.layers)
    fail("layer_types lists {} layers, the model has {}", spec.layer_types.size(), d.layers);
  for (const std::string& type : spec.layer_types)
    if (type != "sliding_attention" && type != "full_attention")
      fail("layer type '{}' is neither sliding_attention nor full_attention", type);
  return spec.layer_types;
}

// The keys of openai/gpt-oss-*'s config.json, in Hugging Face's sorted order.
json gpt_oss_config(const TinyModelSpec& spec, const Dims& d, const TokenizerFacts& tokens) {
  json config = base_config(spec, d, tokens, "GptOssForCausalLM");
  config["attention_bias"] = true;
  config["experts_per_token"] = d.experts_per_tok;
  config["head_dim"] = d.head_dim;
  config["initial_context_length"] = 4096;
  config["layer_types"] = layer_types_of(spec, d);
  config["num_experts_per_tok"] = d.experts_per_tok;
  config["num_local_experts"] = d.experts;
  config["output_router_logits"] = false;
  config["router_aux_loss_coef"] = 0.9;
  config["sliding_window"] = spec.sliding_window != 0 ? spec.sliding_window : 128;
  config["swiglu_limit"] = 7.0;
  config["transformers_version"] = "4.55.0.dev0";
  if (spec.rope_scaling.is_null())
    config["rope_scaling"] = gpt_oss_yarn();
  else
    config["rope_scaling"] = spec.rope_scaling.empty() ? json(nullptr) : spec.rope_scaling;
  if (tokens.eos_id) config["pad_token_id"] = *tokens.eos_id;
  return config;
}

// gpt_oss.py's parameters in its module order: the model's embedding and final norm, the layers (attention with
// its sinks, then the experts and the router, then the two norms), the untied lm_head.
std::vector<Param> gpt_oss_params(const Dims& d) {
  ParamList p;
  p.embedding("model.embed_tokens", d.vocab, d.hidden);
  p.norm("model.norm", d.hidden);
  for (int64_t i = 0; i < d.layers; ++i) {
    const std::string layer = fmt::format("model.layers.{}", i);
    // Sink logits compete with the scaled q·k scores of the keys (about N(0, 2²) here, YaRN's magnitude scale
    // included): drawn around 1, a head gives its sink from a few percent to most of its attention, so a file that
    // loses them is caught, as trained gpt-oss heads do (some attend mostly to their sink).
    p.other(layer + ".self_attn.sinks", {d.heads}, {Draw::Normal, 1.0, 1.0});
    attention(p, layer + ".self_attn", d, true);
    const std::string experts = layer + ".mlp.experts";
    p.switch_linear(experts + ".gate_proj", d.experts, d.intermediate, d.hidden);
    p.other(experts + ".gate_proj.bias", {d.experts, d.intermediate}, {Draw::Normal, 0.0, 0.05});
    p.switch_linear(experts + ".up_proj", d.experts, d.intermediate, d.hidden);
    p.other(experts + ".up_proj.bias", {d.experts, d.intermediate}, {Draw::Normal, 0.0, 0.05});
    // A residual branch's output, as ParamList::switch_output and its bias as ParamList::output's.
    p.switch_output(experts + ".down_proj", d.experts, d.hidden, d.intermediate);
    p.other(experts + ".down_proj.bias", {d.experts, d.hidden},
            {Draw::Normal, 0.0, 0.05 / std::sqrt(static_cast<double>(d.hidden))});
    p.router(layer + ".mlp.router", d.experts, d.hidden);
    p.other(layer + ".mlp.router.bias", {d.experts}, {Draw::Normal, 0.0, 0.1});
    p.norm(layer + ".input_layernorm", d.hidden);
    p.norm(layer + ".post_attention_layernorm", d.hidden);
  }
  p.linear("lm_head", d.vocab, d.hidden, false);
  return std::move(p.params);
}

// Biases are part of gpt-oss whatever attention_bias / mlp_bias say; the head is never tied.
Layout build_gpt_oss(const TinyModelSpec& spec, Dims d, const TokenizerFacts& tokens) {
  if (spec.tie_embeddings) fail("gpt_oss has no tied embeddings: mlx-lm's gpt_oss always loads its own lm_head");
  if (spec.sliding_window < 0) fail("sliding_window must be positive, got {}", spec.sliding_window);
  if (!spec.rope_scaling.is_null() && !spec.rope_scaling.is_object())
    fail("rope_scaling must be an object or null, got {}", spec.rope_scaling.dump());
  Layout layout;
  layout.config = gpt_oss_config(spec, d, tokens);
  layout.generation_extra = {{"do_sample", true}};
  layout.params = gpt_oss_params(d);
  // gpt_oss.py's quant_predicate: paths ending in "router" at 8 bits, group 64, without a mode.
  layout.quant_predicate = {{"router", 8, 64, ""}};
  layout.vocab = d.vocab;
  return layout;
}

}  // namespace

QuantRecipe gpt_oss_native_mxfp4_recipe(int rest_bits, int rest_group_size) {
  QuantRecipe recipe = QuantRecipe::parse("mxfp4");
  for (const char* module : {"embed_tokens", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                             "self_attn.o_proj", "lm_head"})
    recipe.overrides.push_back({module, rest_bits, rest_group_size, rest_bits == 0 ? "" : "affine"});
  // Without -q nothing but the experts is quantized, the routers included; with -q the predicate takes them.
  if (rest_bits == 0) recipe.overrides.push_back({"router", 0, 64, ""});
  return recipe;
}

std::vector<ModelTypeBuilder> gpt_oss_builders() {
  return {
      {"gpt_oss", true, false, {2, 64, 150000, 1e-5}, build_gpt_oss},
  };
}

}  // namespace mlx2gguf::gen
