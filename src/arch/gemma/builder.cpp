// Test-model builder of the Gemma family: model types gemma3_text (mlx_lm/models/gemma3_text.py), gemma3 (the
// multimodal wrapper gemma3.py: the language model under language_model.*, config.json nesting it in text_config,
// the vision tower already dropped by mlx-lm) and gemma2 (gemma2.py), as mlx-lm saves them: RMSNorm weights raw, as
// Hugging Face stores them (mlx-lm adds the 1 at run time), the head tied unless gemma3's lm_head is written.
#include "gen/model_builder.h"
#include "util/error.h"

namespace mlx2gguf::gen {

using nlohmann::json;

namespace {

// A Gemma RMSNorm weight: stored as w, evaluated as (1 + w); drawn near 0 so that a converter that forgets the 1
// computes with weights near 0 instead of near 1.
void gemma_norm(ParamList& p, const std::string& module, int64_t dim) {
  p.other(module + ".weight", {dim}, {Draw::Normal, 0.0, 0.1});
}

// gemma3_text.py's / gemma2.py's parameters in their module order.
std::vector<Param> gemma_params(const Dims& d, const std::string& prefix, bool qk_norm, bool lm_head) {
  ParamList p;
  p.embedding(prefix + "model.embed_tokens", d.vocab, d.hidden);
  for (int64_t i = 0; i < d.layers; ++i) {
    const std::string layer = fmt::format("{}model.layers.{}", prefix, i);
    attention(p, layer + ".self_attn", d, false);
    if (qk_norm) {
      gemma_norm(p, layer + ".self_attn.q_norm", d.head_dim);
      gemma_norm(p, layer + ".self_attn.k_norm", d.head_dim);
    }
    p.linear(layer + ".mlp.gate_proj", d.intermediate, d.hidden, false);
    p.output(layer + ".mlp.down_proj", d.hidden, d.intermediate, false);
    p.linear(layer + ".mlp.up_proj", d.intermediate, d.hidden, false);
    gemma_norm(p, layer + ".input_layernorm", d.hidden);
    gemma_norm(p, layer + ".post_attention_layernorm", d.hidden);
    gemma_norm(p, layer + ".pre_feedforward_layernorm", d.hidden);
    gemma_norm(p, layer + ".post_feedforward_layernorm", d.hidden);
  }
  gemma_norm(p, prefix + "model.norm", d.hidden);
  if (lm_head) p.linear(prefix + "lm_head", d.vocab, d.hidden, false);
  return std::move(p.params);
}

// A key the test may set through extra_config, else the builder's own value.
json extra_or(const TinyModelSpec& spec, const char* key, json fallback) {
  return spec.extra_config.contains(key) ? spec.extra_config[key] : fallback;
}

// Gemma 3's text config as Hugging Face writes it (Gemma3ForCausalLM, or text_config of the wrapper). Local layers
// use window 512 unless the spec says otherwise; every sliding_window_pattern-th layer is global, and layer_types
// says the same.
json gemma3_text_config(const TinyModelSpec& spec, const Dims& d, const TokenizerFacts& tokens) {
  json config = base_config(spec, d, tokens, "Gemma3ForCausalLM");
  config.erase("hidden_act");
  config.erase("tie_word_embeddings");  // gemma3_text decides by the presence of lm_head
  config["attention_bias"] = false;
  config["attn_logit_softcapping"] = nullptr;
  config["cache_implementation"] = "hybrid";
  config["final_logit_softcapping"] = nullptr;
  config["head_dim"] = d.head_dim;
  config["hidden_activation"] = "gelu_pytorch_tanh";
  config["model_type"] = "gemma3_text";
  config["pad_token_id"] = 0;
  config["query_pre_attn_scalar"] = d.head_dim;
  config["rope_local_base_freq"] = 10000.0;
  config["rope_scaling"] = spec.rope_scaling;
  config["rope_theta"] = number(d.rope_theta);
  const int64_t window = spec.sliding_window > 0 ? spec.sliding_window : 512;
  config["sliding_window"] = window;
  const json pattern = extra_or(spec, "sliding_window_pattern", 6);
  if (!pattern.is_number_integer() || pattern.get<int64_t>() <= 0)
    fail("sliding_window_pattern must be a positive integer, got {}", pattern.dump());
  config["sliding_window_pattern"] = pattern;
  json types = json::array();
  const int64_t period = pattern.get<int64_t>();
  for (int64_t i = 0; i < d.layers; ++i)
    types.push_back(period > 1 && i % period != period - 1 ? "sliding_attention" : "full_attention");
  config["layer_types"] = types;
  config["transformers_version"] = "4.50.0.dev0";
  return config;
}

Layout build_gemma3_text(const TinyModelSpec& spec, Dims d, const TokenizerFacts& tokens) {
  Layout layout;
  layout.config = gemma3_text_config(spec, d, tokens);
  layout.generation_extra = {{"cache_implementation", "hybrid"}};
  layout.params = gemma_params(d, "", true, !spec.tie_embeddings);
  layout.vocab = d.vocab;
  return layout;
}

// The multimodal wrapper as mlx-lm saves it: the language model's tensors under language_model.*, the vision
// tower and projector dropped, vision_config removed; gemma3.py's ModelArgs writes the vocabulary size and head
// counts into text_config.
Layout build_gemma3(const TinyModelSpec& spec, Dims d, const TokenizerFacts& tokens) {
  json text = gemma3_text_config(spec, d, tokens);
  for (const char* key : {"architectures", "bos_token_id", "eos_token_id", "torch_dtype", "transformers_version"})
    text.erase(key);
  for (const auto& [key, value] : spec.extra_config.items()) text[key] = value;
  Layout layout;
  layout.config = {{"architectures", {"Gemma3ForConditionalGeneration"}},
                   {"boi_token_index", 255999},
                   {"eoi_token_index", 256000},
                   {"eos_token_id", tokens.eos_id ? json(*tokens.eos_id) : json(nullptr)},
                   {"image_token_index", 262144},
                   {"initializer_range", 0.02},
                   {"mm_tokens_per_image", 256},
                   {"model_type", "gemma3"},
                   {"text_config", text},
                   {"torch_dtype", spec.dtype},
                   {"transformers_version", "4.50.0.dev0"},
                   {"vocab_size", d.vocab}};
  layout.generation_extra = {{"cache_implementation", "hybrid"}};
  layout.params = gemma_params(d, "language_model.", true, !spec.tie_embeddings);
  layout.vocab = d.vocab;
  return layout;
}

// Gemma 2's config (Gemma2ForCausalLM). Always tied: mlx-lm's gemma2 has no lm_head.
Layout build_gemma2(const TinyModelSpec& spec, Dims d, const TokenizerFacts& tokens) {
  json config = base_config(spec, d, tokens, "Gemma2ForCausalLM");
  config["attention_bias"] = false;
  config["attn_logit_softcapping"] = 50.0;
  config["cache_implementation"] = "hybrid";
  config["final_logit_softcapping"] = 30.0;
  config["head_dim"] = d.head_dim;
  config["hidden_act"] = "gelu_pytorch_tanh";
  config["hidden_activation"] = "gelu_pytorch_tanh";
  config["pad_token_id"] = 0;
  config["query_pre_attn_scalar"] = d.head_dim;
  config["rope_theta"] = number(d.rope_theta);
  config["sliding_window"] = spec.sliding_window > 0 ? spec.sliding_window : 4096;
  config["tie_word_embeddings"] = true;
  config["transformers_version"] = "4.42.4";
  Layout layout;
  layout.config = config;
  layout.generation_extra = {{"cache_implementation", "hybrid"}};
  layout.params = gemma_params(d, "", false, false);
  layout.vocab = d.vocab;
  return layout;
}

}  // namespace

std::vector<ModelTypeBuilder> gemma_builders() {
  return {
      {"gemma3_text", false, false, {6, 0, 1e6, 1e-6}, build_gemma3_text},
      {"gemma3", false, false, {6, 0, 1e6, 1e-6}, build_gemma3},
      {"gemma2", false, false, {4, 0, 10000, 1e-6}, build_gemma2},
  };
}

}  // namespace mlx2gguf::gen
