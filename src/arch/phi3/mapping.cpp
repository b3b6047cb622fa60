// GGUF mapping of the Phi-3 family, llama.cpp architecture "phi3": model_type phi3 (Phi-3-mini/small/medium, Phi-3.5-mini,
// Phi-4-mini) as mlx-lm saves it (mlx_lm/models/phi3.py, which has no sanitize: names are Hugging Face's).
//
//   MLX (mlx-lm)                                    GGUF
//   model.embed_tokens.weight                       token_embd.weight
//   model.norm.weight                               output_norm.weight
//   lm_head.weight (absent when tied)               output.weight (absent: llama.cpp reuses token_embd)
//   model.layers.N.input_layernorm.weight           blk.N.attn_norm.weight
//   model.layers.N.self_attn.qkv_proj.weight        blk.N.attn_qkv.weight     rows [q; k; v], as stored
//   model.layers.N.self_attn.o_proj.weight          blk.N.attn_output.weight
//   model.layers.N.post_attention_layernorm.weight  blk.N.ffn_norm.weight
//   model.layers.N.mlp.gate_up_proj.weight          blk.N.ffn_up.weight       rows [gate; up], as stored
//   model.layers.N.mlp.down_proj.weight             blk.N.ffn_down.weight
//   config rope_scaling long_factor / short_factor  rope_factors_long.weight / rope_factors_short.weight (F32)
//
// Both fused projections keep their row order: mlx-lm splits qkv_proj's rows at n_heads·head_dim and
// (n_heads + n_kv_heads)·head_dim, exactly where llama.cpp's phi3 graph views attn_qkv, and gate_up_proj's rows in two
// halves, gate first, as llama.cpp's SwiGLU on the unsplit ffn_up does (silu of the first half times the second). No
// rotary permutation either: both rotate half-split (NEOX) pairs. MLX-quantized rows therefore move losslessly.
//
// LongRoPE ("longrope" / "su"): mlx-lm's SuScaledRoPE always divides the frequencies by the LONG factors and scales
// the rotated dims of q and k by sqrt(1 + ln(s) / ln(original)), s = max_position_embeddings / original; llama.cpp
// multiplies by rope.scaling.attn_factor the same way and picks rope_factors_long when the context per sequence
// exceeds rope.scaling.original_context_length, rope_factors_short otherwise (as Hugging Face does by sequence length).
// Both factor lists are written as the model defines them: in llama.cpp at a context above the original one the file
// computes exactly what mlx-lm computes; at or below it, what Hugging Face computes for such sequences.
#include <cmath>

#include "plan/architecture.h"
#include "util/error.h"
#include "util/warn.h"

namespace mlx2gguf {

namespace {

struct Phi3Dims {
  int64_t n_embd, n_layer, n_head, n_head_kv, head_dim, rope_dims, n_ff, n_vocab;
  bool tied;
};

std::string layer(int64_t i, const std::string& name) { return fmt::format("model.layers.{}.{}", i, name); }
std::string blk(int64_t i, const std::string& name) { return fmt::format("blk.{}.{}", i, name); }

// phi3.py: rope_dim = int(head_dim · partial_rotary_factor), head_dim = hidden_size // num_attention_heads (a
// head_dim key is not read). llama.cpp rotates n_rot = rope.dimension_count dims of each head, in pairs.
int64_t rotary_dims(const PlanBuilder& b, int64_t head_dim) {
  const double factor = b.cfg_float("partial_rotary_factor", 1.0);
  if (!(factor > 0.0 && factor <= 1.0)) fail("config.json: partial_rotary_factor {} must be in (0, 1]", factor);
  const auto dims = static_cast<int64_t>(static_cast<double>(head_dim) * factor);
  if (dims < 2 || dims % 2 != 0)
    fail("config.json: partial_rotary_factor {} of head size {} rotates {} dims; rotary pairs need an even count of at "
         "least 2",
         factor, head_dim, dims);
  return dims;
}

// The rope_theta mlx-lm's phi3 uses: rope_parameters' when that key exists (default 10000), else rope_theta.
double rope_base(const PlanBuilder& b) {
  const auto& cfg = b.config();
  if (cfg.contains("rope_parameters") && cfg["rope_parameters"].is_object()) {
    const auto& params = cfg["rope_parameters"];
    const std::string type = params.value("rope_type", std::string("default"));
    const bool scaling = cfg.contains("rope_scaling") && !cfg["rope_scaling"].is_null();
    if (type != "default" && !scaling)
      fail("config.json rope_parameters has rope_type '{}' but there is no rope_scaling: mlx-lm's phi3 reads only "
           "rope_theta from rope_parameters and would run a plain rope, Hugging Face a scaled one; refusing to guess",
           type);
    if (!params.contains("rope_theta")) return 10000.0;
    if (!params["rope_theta"].is_number()) fail("config.json rope_parameters rope_theta is not a number");
    return params["rope_theta"].get<double>();
  }
  return b.cfg_float("rope_theta", 10000.0);
}

std::vector<float> factor_list(const nlohmann::json& scaling, const char* key, int64_t pairs) {
  if (!scaling.contains(key)) fail("config.json rope_scaling lacks '{}', which mlx-lm's phi3 reads for LongRoPE", key);
  const auto& list = scaling[key];
  if (!list.is_array() || static_cast<int64_t>(list.size()) != pairs)
    fail("config.json rope_scaling {} must list one factor per rotary pair ({} numbers), got {}", key, pairs,
         list.is_array() ? fmt::format("{} entries", list.size()) : list.dump());
  std::vector<float> values;
  for (const auto& entry : list) {
    if (!entry.is_number() || !(entry.get<double>() > 0.0))
      fail("config.json rope_scaling {} holds {}, not a positive number", key, entry.dump());
    values.push_back(static_cast<float>(entry.get<double>()));
  }
  return values;
}

void describe_longrope(PlanBuilder& b, const nlohmann::json& scaling, const Phi3Dims& d) {
  // phi3.py's ModelArgs defaults; both keys are top-level in mlx-lm's (and Phi-3's own) config.json.
  const int64_t max_positions = b.cfg_count("max_position_embeddings", 131072);
  const int64_t original = b.cfg_count("original_max_position_embeddings", 4096);
  for (const char* key : {"short_mscale", "long_mscale", "attention_factor"})
    if (scaling.contains(key) && !scaling[key].is_null())
      fail("config.json rope_scaling {} {} is not read by mlx-lm's phi3 (SuScaledRoPE takes its scale from the context "
           "lengths) but is by Hugging Face; refusing to guess which model to write",
           key, scaling[key].dump());
  b.generate("rope_factors_long.weight", factor_list(scaling, "long_factor", d.rope_dims / 2)).keep_f32 = true;
  b.generate("rope_factors_short.weight", factor_list(scaling, "short_factor", d.rope_dims / 2)).keep_f32 = true;
  const double s = static_cast<double>(max_positions) / static_cast<double>(original);
  const double attn_factor = s <= 1.0 ? 1.0 : std::sqrt(1.0 + std::log(s) / std::log(static_cast<double>(original)));
  b.kv_f32("rope.scaling.attn_factor", attn_factor);
  b.kv_u32("rope.scaling.original_context_length", original);
  warn(fmt::format("phi3 LongRoPE: mlx-lm always rotates with the long factors; llama.cpp uses them when the context "
                   "exceeds {} tokens and the short factors (as Hugging Face does for short sequences) otherwise, so "
                   "run it with a context above {} to compute what mlx-lm computes",
                   original, original));
}

// phi3.py: rope_scaling needs "long_factor" and "type"; longrope / su build SuScaledRoPE, linear a scaled nn.RoPE, any
// other type is dropped with a warning (plain rope).
void describe_rope(PlanBuilder& b, const Phi3Dims& d) {
  b.kv_f32("rope.freq_base", rope_base(b));
  const auto& cfg = b.config();
  const bool scaled = cfg.contains("rope_scaling") && !cfg["rope_scaling"].is_null() &&
                      !(cfg["rope_scaling"].is_object() && cfg["rope_scaling"].empty());
  std::string type;
  if (scaled) {
    const auto& scaling = cfg["rope_scaling"];
    if (!scaling.is_object()) fail("config.json: rope_scaling is not an object: {}", scaling.dump());
    if (!scaling.contains("long_factor") || !scaling.contains("type") || !scaling["type"].is_string())
      fail("config.json rope_scaling {} lacks 'long_factor' or 'type', which mlx-lm's phi3 requires", scaling.dump());
    type = scaling["type"].get<std::string>();
    if (type != "longrope" && type != "su" && type != "linear") {
      warn(fmt::format("config.json rope_scaling type '{}' is ignored, as mlx-lm's phi3 ignores it (plain rope)", type));
      type.clear();
    }
  }
  if (type == "longrope" || type == "su") {
    describe_longrope(b, cfg["rope_scaling"], d);
    return;
  }
  if (b.cfg_bool("rope_traditional", false))
    fail("config.json sets rope_traditional true: llama.cpp's phi3 rotates half-split (NEOX) pairs only");
  if (type == "linear") {
    const auto& factor = cfg["rope_scaling"].value("factor", nlohmann::json());
    if (!factor.is_number() || !(factor.get<double>() > 0.0))
      fail("config.json rope_scaling of type linear needs a positive 'factor', got {}", factor.dump());
    b.kv_str("rope.scaling.type", "linear");
    b.kv_f32("rope.scaling.factor", factor.get<double>());
  }
}

// mlx-lm's phi3 attends to the whole context whatever sliding_window says (and llama.cpp's phi3 currently switches its
// window off too); window 0 keeps a llama.cpp that honours the key computing what mlx-lm computes.
void describe_attention_window(PlanBuilder& b) {
  const auto& cfg = b.config();
  if (cfg.contains("sliding_window") && cfg["sliding_window"].is_number_integer()) {
    const int64_t window = cfg["sliding_window"].get<int64_t>();
    if (window > 0 && window < b.cfg_int("max_position_embeddings", 131072))
      warn(fmt::format("config.json sliding_window {} is ignored, as mlx-lm's phi3 ignores it (every token attends to "
                       "the whole context); the file says so with attention.sliding_window 0",
                       window));
  }
  b.kv_u32("attention.sliding_window", 0);
}

bool tied_embeddings(const PlanBuilder& b) {
  const auto& cfg = b.config();
  if (!cfg.contains("tie_word_embeddings") || cfg["tie_word_embeddings"].is_null()) return false;  // phi3.py: False
  return b.cfg_bool("tie_word_embeddings", false);
}

// Biases that phi3.py's modules do not have (bias=False everywhere): mlx-lm's strict load refuses them.
void refuse_foreign_tensors(const PlanBuilder& b, const Phi3Dims& d) {
  for (const auto& [name, tensor] : b.model().tensors())
    if (name.ends_with(".bias"))
      fail("tensor '{}' has no parameter in mlx-lm's phi3 model (its projections have no biases)", name);
  if (d.tied && b.has("lm_head.weight"))
    fail("config.json ties the embeddings but the weights hold lm_head.weight, which mlx-lm's phi3 (no sanitize) "
         "refuses to load");
}

void describe_phi3(PlanBuilder& b) {
  Phi3Dims d{};
  d.n_embd = b.cfg_count("hidden_size");
  d.n_layer = b.cfg_count("num_hidden_layers");
  d.n_head = b.cfg_count("num_attention_heads");
  d.n_head_kv = b.cfg_count("num_key_value_heads", d.n_head);
  d.n_ff = b.cfg_count("intermediate_size");
  if (d.n_head % d.n_head_kv != 0)
    fail("config.json: {} attention heads cannot share {} key/value heads", d.n_head, d.n_head_kv);
  if (d.n_embd % d.n_head != 0)
    fail("config.json: hidden_size {} is not a multiple of num_attention_heads {}", d.n_embd, d.n_head);
  d.head_dim = d.n_embd / d.n_head;
  d.rope_dims = rotary_dims(b, d.head_dim);
  d.n_vocab = b.model().require("model.embed_tokens.weight").shape().at(0);
  const int64_t config_vocab = b.cfg_int("vocab_size");
  if (config_vocab != d.n_vocab)
    fail("config.json: vocab_size {} but model.embed_tokens.weight has {} rows", config_vocab, d.n_vocab);
  d.tied = tied_embeddings(b);
  refuse_foreign_tensors(b, d);

  b.kv_u32("context_length", b.cfg_int("max_position_embeddings", 131072));
  b.kv_u32("embedding_length", d.n_embd);
  b.kv_u32("block_count", d.n_layer);
  b.kv_u32("feed_forward_length", d.n_ff);
  b.kv_u32("attention.head_count", d.n_head);
  b.kv_u32("attention.head_count_kv", d.n_head_kv);
  b.kv_f32("attention.layer_norm_rms_epsilon", b.cfg_float("rms_norm_eps"));
  b.kv_u32("rope.dimension_count", d.rope_dims);
  b.kv_u32("vocab_size", d.n_vocab);
  describe_attention_window(b);
  describe_rope(b, d);

  const int64_t qkv_rows = (d.n_head + 2 * d.n_head_kv) * d.head_dim;
  b.map("token_embd.weight", "model.embed_tokens.weight", {d.n_vocab, d.n_embd});
  for (int64_t i = 0; i < d.n_layer; ++i) {
    b.map(blk(i, "attn_norm.weight"), layer(i, "input_layernorm.weight"), {d.n_embd});
    b.map(blk(i, "attn_qkv.weight"), layer(i, "self_attn.qkv_proj.weight"), {qkv_rows, d.n_embd});
    b.map(blk(i, "attn_output.weight"), layer(i, "self_attn.o_proj.weight"), {d.n_embd, d.n_embd});
    b.map(blk(i, "ffn_norm.weight"), layer(i, "post_attention_layernorm.weight"), {d.n_embd});
    b.map(blk(i, "ffn_up.weight"), layer(i, "mlp.gate_up_proj.weight"), {2 * d.n_ff, d.n_embd});
    b.map(blk(i, "ffn_down.weight"), layer(i, "mlp.down_proj.weight"), {d.n_embd, d.n_ff});
  }
  b.map("output_norm.weight", "model.norm.weight", {d.n_embd});
  if (!d.tied) b.map("output.weight", "lm_head.weight", {d.n_vocab, d.n_embd});
  b.drop_if([](const std::string& name) { return name.ends_with("self_attn.rotary_emb.inv_freq"); });
}

}  // namespace

const Family& phi3_family() {
  static const Family family{"phi3", {{"phi3", {"phi3"}, describe_phi3}}};
  return family;
}

}  // namespace mlx2gguf
