// Test-model builder of the Phi-3 family: model type phi3 (mlx_lm/models/phi3.py) as mlx-lm saves it, which is the
// Hugging Face layout itself (phi3.py has no sanitize): fused self_attn.qkv_proj (rows: query heads, key heads, value
// heads) and mlp.gate_up_proj (rows: gate, then up), no biases, head_dim = hidden / heads.
//
// spec.rope_scaling {"type": "longrope"} (or "su") without factor lists gets LongRoPE factors of the right length
// shaped like Phi-3.5 / Phi-4-mini's (short ones rising gently from 1, long ones growing geometrically to many times
// that); lists given are written as they are. partial_rotary_factor and original_max_position_embeddings are read
// from spec.extra_config (defaults 1.0 and 4096, phi3.py's).
#include <cmath>

#include "gen/model_builder.h"
#include "util/error.h"

namespace mlx2gguf::gen {

using nlohmann::json;

namespace {

int64_t rotary_dims(const TinyModelSpec& spec, int64_t head_dim) {
  const double factor = spec.extra_config.value("partial_rotary_factor", 1.0);
  const auto dims = static_cast<int64_t>(static_cast<double>(head_dim) * factor);
  if (dims < 2 || dims % 2 != 0) fail("phi3: partial_rotary_factor {} of head size {} rotates {} dims", factor, head_dim, dims);
  return dims;
}

// Short factors from 1 to 1.5, long factors from 1 to 48, smooth in the pair index as trained LongRoPE factors are.
json longrope_scaling(const TinyModelSpec& spec, int64_t pairs) {
  json scaling = spec.rope_scaling;
  json short_factors = json::array(), long_factors = json::array();
  for (int64_t i = 0; i < pairs; ++i) {
    const double t = pairs > 1 ? static_cast<double>(i) / static_cast<double>(pairs - 1) : 0.0;
    short_factors.push_back(std::round((1.0 + 0.5 * t * t) * 1e4) / 1e4);
    long_factors.push_back(std::round(std::pow(48.0, t) * 1e4) / 1e4);
  }
  if (!scaling.contains("short_factor")) scaling["short_factor"] = short_factors;
  if (!scaling.contains("long_factor")) scaling["long_factor"] = long_factors;
  return scaling;
}

// The keys of microsoft/Phi-3.5-mini-instruct's and Phi-4-mini-instruct's config.json, in sorted order.
json phi3_config(const TinyModelSpec& spec, const Dims& d, const TokenizerFacts& tokens) {
  json config = base_config(spec, d, tokens, "Phi3ForCausalLM");
  config["attention_bias"] = false;
  config["embd_pdrop"] = 0.0;
  config["original_max_position_embeddings"] = spec.extra_config.value("original_max_position_embeddings", 4096);
  config["resid_pdrop"] = 0.0;
  config["sliding_window"] = spec.max_position_embeddings;
  if (tokens.eos_id) config["pad_token_id"] = *tokens.eos_id;
  const json& scaling = spec.rope_scaling;
  const std::string type = scaling.is_object() ? scaling.value("type", std::string()) : std::string();
  const bool longrope = type == "longrope" || type == "su";
  config["rope_scaling"] = longrope ? longrope_scaling(spec, rotary_dims(spec, d.head_dim) / 2) : scaling;
  return config;
}

Layout build_phi3(const TinyModelSpec& spec, Dims d, const TokenizerFacts& tokens) {
  if (spec.layout != "mlx") fail("phi3 is written as mlx-lm saves it only");
  if (spec.attention_bias || spec.mlp_bias) fail("phi3 has no biases");
  if (spec.head_dim != 0 && spec.head_dim * spec.heads != spec.hidden)
    fail("phi3 derives head_dim from hidden / heads; head_dim {} contradicts {} / {}", spec.head_dim, spec.hidden,
         spec.heads);
  if (!spec.rope_scaling.is_null() && !spec.rope_scaling.is_object())
    fail("rope_scaling must be an object or null, got {}", spec.rope_scaling.dump());
  rotary_dims(spec, d.head_dim);
  const int64_t qkv_rows = (d.heads + 2 * d.kv_heads) * d.head_dim;
  // phi3.py's module order: attention (qkv_proj, o_proj), MLP (gate_up_proj, down_proj), then the two norms.
  auto params = decoder_params(spec, d, [&](ParamList& p, const std::string& layer) {
    p.linear(layer + ".self_attn.qkv_proj", qkv_rows, d.hidden, false);
    p.output(layer + ".self_attn.o_proj", d.hidden, d.heads * d.head_dim, false);
    p.linear(layer + ".mlp.gate_up_proj", 2 * d.intermediate, d.hidden, false);
    p.output(layer + ".mlp.down_proj", d.hidden, d.intermediate, false);
    p.norm(layer + ".input_layernorm", d.hidden);
    p.norm(layer + ".post_attention_layernorm", d.hidden);
  });
  const json generation = json::object();
  return {phi3_config(spec, d, tokens), generation, std::move(params), {}, d.vocab, false};
}

}  // namespace

std::vector<ModelTypeBuilder> phi3_builders() {
  return {
      {"phi3", false, false, {2, 0, 10000, 1e-5}, build_phi3},
  };
}

}  // namespace mlx2gguf::gen
