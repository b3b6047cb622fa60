#include "gen/model_builder.h"

#include "util/error.h"

namespace mlx2gguf::gen {

using nlohmann::json;

void attention(ParamList& p, const std::string& prefix, const Dims& d, bool bias) {
  p.linear(prefix + ".q_proj", d.heads * d.head_dim, d.hidden, bias);
  p.linear(prefix + ".k_proj", d.kv_heads * d.head_dim, d.hidden, bias);
  p.linear(prefix + ".v_proj", d.kv_heads * d.head_dim, d.hidden, bias);
  p.output(prefix + ".o_proj", d.hidden, d.heads * d.head_dim, bias);
}

json base_config(const TinyModelSpec& spec, const Dims& d, const TokenizerFacts& tokens, const char* architecture) {
  json config = {{"architectures", {architecture}},
                 {"attention_dropout", 0.0},
                 {"bos_token_id", tokens.bos_id ? json(*tokens.bos_id) : json(nullptr)},
                 {"eos_token_id", tokens.eos_id ? json(*tokens.eos_id) : json(nullptr)},
                 {"hidden_act", "silu"},
                 {"hidden_size", d.hidden},
                 {"initializer_range", 0.02},
                 {"intermediate_size", d.intermediate},
                 {"max_position_embeddings", spec.max_position_embeddings},
                 {"model_type", spec.model_type},
                 {"num_attention_heads", d.heads},
                 {"num_hidden_layers", d.layers},
                 {"num_key_value_heads", d.kv_heads},
                 {"rms_norm_eps", d.rms_norm_eps},
                 {"rope_theta", d.rope_theta},
                 {"tie_word_embeddings", spec.tie_embeddings},
                 {"torch_dtype", spec.dtype},
                 {"transformers_version", "4.51.3"},
                 {"use_cache", true},
                 {"vocab_size", d.vocab}};
  return config;
}

void positive(const char* what, int64_t value) {
  if (value <= 0) fail("{} must be positive, got {}", what, value);
}

json number(double value) {
  if (value == std::floor(value) && std::fabs(value) < 0x1p53) return static_cast<int64_t>(value);
  return value;
}

const std::vector<ModelTypeBuilder>& model_type_builders() {
  static const std::vector<ModelTypeBuilder> all = [] {
    std::vector<ModelTypeBuilder> types;
#define MLX2GGUF_COLLECT_BUILDERS(family)                      \
  for (const ModelTypeBuilder& type : family##_builders()) types.push_back(type);
    MLX2GGUF_FAMILIES(MLX2GGUF_COLLECT_BUILDERS)
#undef MLX2GGUF_COLLECT_BUILDERS
    return types;
  }();
  return all;
}

}  // namespace mlx2gguf::gen
