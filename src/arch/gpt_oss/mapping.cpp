// GGUF mapping of the gpt-oss family, llama.cpp architecture "gpt-oss": model_type gpt_oss (OpenAI gpt-oss-20b and
// gpt-oss-120b) as mlx-lm saves it (mlx_lm/models/gpt_oss.py after its sanitize).
//
//   MLX (mlx-lm)                                             GGUF
//   model.embed_tokens.weight                                token_embd.weight
//   model.norm.weight                                        output_norm.weight
//   lm_head.weight (always: gpt_oss.py has no tied head)     output.weight
//   model.layers.N.input_layernorm.weight                    blk.N.attn_norm.weight
//   model.layers.N.self_attn.{q,k,v,o}_proj.{weight,bias}    blk.N.attn_{q,k,v,output}.{weight,bias}  unpermuted (NEOX rope)
//   model.layers.N.self_attn.sinks [heads]                   blk.N.attn_sinks.weight            F32
//   model.layers.N.post_attention_layernorm.weight           blk.N.post_attention_norm.weight   (the pre-MoE norm)
//   model.layers.N.mlp.router.{weight,bias}                  blk.N.ffn_gate_inp.{weight,bias}   F32
//   model.layers.N.mlp.experts.{gate,up}_proj.weight [E,I,H] blk.N.ffn_{gate,up}_exps.weight     as stored
//   model.layers.N.mlp.experts.down_proj.weight [E,H,I]      blk.N.ffn_down_exps.weight
//   model.layers.N.mlp.experts.X_proj.bias [E, out]          blk.N.ffn_X_exps.bias
//
// The experts are taken as stored: mlx-lm's sanitize has already split Hugging Face's interleaved gate_up_proj
// (gate = rows 0::2, up = rows 1::2) and keeps [E, out, in], exactly llama.cpp's layout, so nothing is split,
// interleaved or transposed here. MLX mxfp4 experts (gpt-oss is natively MXFP4) move losslessly into GGUF MXFP4.
// Sliding-window layers, attention sinks, YaRN and the clamped SwiGLU (alpha 1.702, limit 7) are computed by
// llama.cpp's gpt-oss graph; what mlx-lm reads from config.json is written as keys, and what neither can express
// is refused.
#include <algorithm>
#include <cmath>

#include "plan/architecture.h"
#include "util/error.h"
#include "util/warn.h"

namespace mlx2gguf {

namespace {

struct GptOssDims {
  int64_t n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_expert, n_expert_used, n_vocab;
};

std::string layer(int64_t i, const std::string& name) { return fmt::format("model.layers.{}.{}", i, name); }
std::string blk(int64_t i, const std::string& name) { return fmt::format("blk.{}.{}", i, name); }

// Which layers mlx-lm runs with the sliding window: config.json layer_types, or gpt_oss.py's default
// ["sliding_attention", "full_attention"] * (layers // 2). mlx-lm zips the layers with these types, so a list shorter
// than the layers would silently skip the last layers: refused, as are lists without both types (gpt_oss.py looks up
// the first layer of each type and fails without one).
std::vector<bool> sliding_layers(const PlanBuilder& b, int64_t n_layer) {
  const auto& cfg = b.config();
  std::vector<bool> sliding;
  if (!cfg.contains("layer_types") || cfg["layer_types"].is_null()) {
    if (n_layer % 2 != 0)
      fail("config.json has no layer_types and {} layers: mlx-lm's default pattern (sliding, full) * {} covers only {} "
           "of them, so mlx-lm would run only those; give layer_types",
           n_layer, n_layer / 2, n_layer - 1);
    for (int64_t i = 0; i < n_layer; ++i) sliding.push_back(i % 2 == 0);
  } else {
    const auto& types = cfg["layer_types"];
    if (!types.is_array() || static_cast<int64_t>(types.size()) != n_layer)
      fail("config.json: layer_types must list the attention type of each of the {} layers, got {}", n_layer, types.dump());
    for (size_t i = 0; i < types.size(); ++i) {
      const std::string type = types[i].is_string() ? types[i].get<std::string>() : types[i].dump();
      if (type != "sliding_attention" && type != "full_attention")
        fail("config.json: layer_types[{}] is '{}'; mlx-lm's gpt_oss knows sliding_attention and full_attention", i, type);
      sliding.push_back(type == "sliding_attention");
    }
  }
  const bool any_sliding = std::find(sliding.begin(), sliding.end(), true) != sliding.end();
  const bool any_full = std::find(sliding.begin(), sliding.end(), false) != sliding.end();
  if (!any_sliding || !any_full)
    fail("config.json: layer_types needs both sliding_attention and full_attention layers (mlx-lm's gpt_oss fails "
         "without one of each)");
  return sliding;
}

// llama.cpp's gpt-oss slides layer i when i % period < period - 1 (attention.sliding_window_pattern, default 2: even
// layers slide). The period that reproduces mlx-lm's layer types, or a refusal.
int64_t sliding_window_period(const std::vector<bool>& sliding) {
  const auto n = static_cast<int64_t>(sliding.size());
  for (int64_t period = 1; period <= n + 1; ++period) {
    bool matches = true;
    for (int64_t i = 0; i < n && matches; ++i) matches = sliding[i] == (i % period < period - 1);
    if (matches) return period;
  }
  std::string shown;
  for (bool s : sliding) shown += s ? 'S' : 'F';
  fail("config.json: the layers' attention types ({}; S = sliding, F = full) are not periodic with the full layer "
       "last in each period, the only patterns llama.cpp's gpt-oss can run",
       shown);
}

void describe_attention_layers(PlanBuilder& b, int64_t n_layer) {
  const auto& cfg = b.config();
  // gpt_oss.py's default window; null would make mlx-lm attend to the whole context in the sliding layers.
  if (cfg.contains("sliding_window") && cfg["sliding_window"].is_null())
    fail("config.json: sliding_window is null; gpt-oss's sliding layers need a window (mlx-lm's default is 128)");
  const int64_t window = b.cfg_count("sliding_window", 128);
  b.kv_u32("attention.sliding_window", window);
  b.kv_u32("attention.sliding_window_pattern", sliding_window_period(sliding_layers(b, n_layer)));
}

// The rope scaling types as mlx-lm's initialize_rope reads them: `type` wins when it is set, then `rope_type`.
std::string rope_type(const nlohmann::json& scaling) {
  if (scaling.contains("type") && scaling["type"].is_string() && !scaling["type"].get<std::string>().empty())
    return scaling["type"].get<std::string>();
  if (scaling.contains("rope_type") && scaling["rope_type"].is_string()) return scaling["rope_type"].get<std::string>();
  return "default";
}

double scaling_number(const nlohmann::json& scaling, const char* key, double fallback) {
  if (!scaling.contains(key) || scaling[key].is_null()) return fallback;
  if (!scaling[key].is_number()) fail("config.json: rope_scaling '{}' is not a number: {}", key, scaling[key].dump());
  return scaling[key].get<double>();
}

// mlx-lm's YarnRoPE multiplies the rotated dims of q and k by get(factor, mscale) / get(factor, mscale_all_dim),
// get(s, m) = 0.1 m ln(s) + 1 (1 when s <= 1); with the defaults mscale 1, mscale_all_dim 0 that is 0.1 ln(s) + 1.
// llama.cpp's yarn (no yarn_log_multiplier key, which gpt-oss does not read) multiplies by attn_factor times that same
// default, so any other mscale ratio goes into rope.scaling.attn_factor.
double yarn_magnitude(double factor, double mscale) { return factor <= 1.0 ? 1.0 : 0.1 * mscale * std::log(factor) + 1.0; }

void describe_rope(PlanBuilder& b) {
  b.kv_f32("rope.freq_base", b.cfg_float("rope_theta", 150000.0));
  const auto& cfg = b.config();
  if (!cfg.contains("rope_scaling") || cfg["rope_scaling"].is_null()) return;
  const auto& scaling = cfg["rope_scaling"];
  if (!scaling.is_object()) fail("config.json: rope_scaling is not an object: {}", scaling.dump());
  const std::string type = rope_type(scaling);
  if (type == "default" || type == "mrope") return;  // mlx-lm builds a plain RoPE for both
  if (type != "linear" && type != "yarn" && type != "deepseek_yarn" && type != "telechat3-yarn")
    fail("config.json rope_scaling type '{}' is not supported for gpt-oss (supported: yarn, linear, default): "
         "llama.cpp's gpt-oss graph has no equivalent",
         type);
  if (!scaling.contains("factor")) fail("config.json: rope_scaling of type {} lacks 'factor'", type);
  const double factor = scaling_number(scaling, "factor", 0.0);
  if (!(factor > 0.0)) fail("config.json: rope_scaling factor {} is not positive", factor);
  if (type == "linear") {  // mlx-lm's nn.RoPE with scale 1 / factor
    b.kv_str("rope.scaling.type", "linear");
    b.kv_f32("rope.scaling.factor", factor);
    return;
  }
  // llama.cpp's gpt-oss takes YaRN's correction range from its built-in beta_fast 32 and beta_slow 1 (it reads no key).
  const double beta_fast = scaling_number(scaling, "beta_fast", 32.0), beta_slow = scaling_number(scaling, "beta_slow", 1.0);
  if (beta_fast != 32.0 || beta_slow != 1.0)
    fail("config.json: rope_scaling beta_fast {} / beta_slow {}; llama.cpp's gpt-oss always uses 32 / 1", beta_fast, beta_slow);
  // Neither mlx-lm's YarnRoPE nor llama.cpp read `truncate` (both round the correction range to whole dims) or
  // `attention_factor`; mlx-lm's semantics are the ones kept.
  if (scaling.contains("attention_factor") && !scaling["attention_factor"].is_null())
    warn(fmt::format("config.json rope_scaling attention_factor {} is ignored, as mlx-lm's YarnRoPE ignores it",
                     scaling["attention_factor"].dump()));
  b.kv_str("rope.scaling.type", "yarn");
  b.kv_f32("rope.scaling.factor", factor);
  b.kv_u32("rope.scaling.original_context_length",
           static_cast<int64_t>(scaling_number(scaling, "original_max_position_embeddings", 4096.0)));
  const double mlx = yarn_magnitude(factor, scaling_number(scaling, "mscale", 1.0)) /
                     yarn_magnitude(factor, scaling_number(scaling, "mscale_all_dim", 0.0));
  const double llama_cpp = yarn_magnitude(factor, 1.0);
  if (std::fabs(mlx / llama_cpp - 1.0) > 1e-12) b.kv_f32("rope.scaling.attn_factor", mlx / llama_cpp);
}

// Keys llama.cpp does not read for gpt-oss because its graph hard-codes them: a value that mlx-lm does not read
// either keeps both agreeing, but differs from what the Hugging Face model computes.
void check_fixed_keys(const PlanBuilder& b, const GptOssDims& d) {
  const auto& cfg = b.config();
  if (cfg.contains("swiglu_limit") && cfg["swiglu_limit"].is_number() && cfg["swiglu_limit"].get<double>() != 7.0)
    warn(fmt::format("config.json swiglu_limit {} is ignored, as mlx-lm's gpt_oss ignores it: the experts clamp at 7, "
                     "as in llama.cpp",
                     cfg["swiglu_limit"].dump()));
  if (cfg.contains("experts_per_token") && cfg["experts_per_token"].is_number_integer() &&
      cfg["experts_per_token"].get<int64_t>() != d.n_expert_used)
    warn(fmt::format("config.json experts_per_token {} is ignored, as mlx-lm routes each token to num_experts_per_tok {}",
                     cfg["experts_per_token"].dump(), d.n_expert_used));
}

// Hugging Face's gpt-oss checkpoints (fused, interleaved gate_up_proj; MXFP4 *_blocks / *_scales; bf16 variants
// transposed to [E, in, out]) are what mlx-lm's sanitize rewrites: this mapping reads only the rewritten form.
void refuse_hugging_face_layout(const PlanBuilder& b) {
  for (const auto& [name, tensor] : b.model().tensors())
    if (name.find("gate_up_proj") != std::string::npos || name.ends_with("_blocks") ||
        name.ends_with("down_proj_scales") || name.ends_with("_proj_bias"))
      fail("'{}' is a tensor of the Hugging Face gpt-oss checkpoint, not of an mlx-lm folder; convert the checkpoint "
           "with mlx_lm.convert first (it de-interleaves gate_up_proj), then convert that folder",
           name);
}

void describe_attention(PlanBuilder& b, int64_t i, const GptOssDims& d) {
  const int64_t q_rows = d.n_head * d.head_dim, kv_rows = d.n_head_kv * d.head_dim;
  b.map(blk(i, "attn_norm.weight"), layer(i, "input_layernorm.weight"), {d.n_embd});
  b.map(blk(i, "attn_q.weight"), layer(i, "self_attn.q_proj.weight"), {q_rows, d.n_embd});
  b.map(blk(i, "attn_k.weight"), layer(i, "self_attn.k_proj.weight"), {kv_rows, d.n_embd});
  b.map(blk(i, "attn_v.weight"), layer(i, "self_attn.v_proj.weight"), {kv_rows, d.n_embd});
  b.map(blk(i, "attn_output.weight"), layer(i, "self_attn.o_proj.weight"), {d.n_embd, q_rows});
  // gpt_oss.py gives every projection a bias; llama.cpp would load a file without q/k/v biases and compute without.
  b.map(blk(i, "attn_q.bias"), layer(i, "self_attn.q_proj.bias"), {q_rows});
  b.map(blk(i, "attn_k.bias"), layer(i, "self_attn.k_proj.bias"), {kv_rows});
  b.map(blk(i, "attn_v.bias"), layer(i, "self_attn.v_proj.bias"), {kv_rows});
  b.map(blk(i, "attn_output.bias"), layer(i, "self_attn.o_proj.bias"), {d.n_embd});
  b.map(blk(i, "attn_sinks.weight"), layer(i, "self_attn.sinks"), {d.n_head}).keep_f32 = true;
}

void describe_moe(PlanBuilder& b, int64_t i, const GptOssDims& d) {
  b.map(blk(i, "post_attention_norm.weight"), layer(i, "post_attention_layernorm.weight"), {d.n_embd});
  b.map(blk(i, "ffn_gate_inp.weight"), layer(i, "mlp.router.weight"), {d.n_expert, d.n_embd}).keep_f32 = true;
  b.map(blk(i, "ffn_gate_inp.bias"), layer(i, "mlp.router.bias"), {d.n_expert});
  struct Expert {
    const char* gguf;
    const char* mlx;
    int64_t out, in;
  };
  for (const Expert& e : {Expert{"gate", "gate_proj", d.n_ff, d.n_embd}, Expert{"up", "up_proj", d.n_ff, d.n_embd},
                          Expert{"down", "down_proj", d.n_embd, d.n_ff}}) {
    const std::string source = layer(i, fmt::format("mlp.experts.{}", e.mlx));
    b.map(blk(i, fmt::format("ffn_{}_exps.weight", e.gguf)), source + ".weight", {d.n_expert, e.out, e.in});
    b.map(blk(i, fmt::format("ffn_{}_exps.bias", e.gguf)), source + ".bias", {d.n_expert, e.out});
  }
}

void describe_gpt_oss(PlanBuilder& b) {
  refuse_hugging_face_layout(b);
  // gpt_oss.py's ModelArgs defaults (gpt-oss-120b's widths) where config.json is silent.
  GptOssDims d{};
  d.n_embd = b.cfg_count("hidden_size", 2880);
  d.n_layer = b.cfg_count("num_hidden_layers", 36);
  d.n_head = b.cfg_count("num_attention_heads", 64);
  d.n_head_kv = b.cfg_count("num_key_value_heads", 8);
  d.head_dim = b.cfg_count("head_dim", 64);
  d.n_ff = b.cfg_count("intermediate_size", 2880);
  d.n_expert = b.cfg_count("num_local_experts", 128);
  d.n_expert_used = b.cfg_count("num_experts_per_tok", 4);
  d.n_vocab = b.model().require("model.embed_tokens.weight").shape().at(0);
  if (d.n_head % d.n_head_kv != 0)
    fail("config.json: {} attention heads cannot share {} key/value heads", d.n_head, d.n_head_kv);
  if (d.n_expert_used > d.n_expert)
    fail("config.json: num_experts_per_tok {} exceeds num_local_experts {}", d.n_expert_used, d.n_expert);
  check_fixed_keys(b, d);

  b.kv_u32("context_length", b.cfg_int("max_position_embeddings", 131072));
  b.kv_u32("embedding_length", d.n_embd);
  b.kv_u32("block_count", d.n_layer);
  b.kv_u32("feed_forward_length", d.n_ff);
  b.kv_u32("expert_feed_forward_length", d.n_ff);
  b.kv_u32("expert_count", d.n_expert);
  b.kv_u32("expert_used_count", d.n_expert_used);
  b.kv_u32("attention.head_count", d.n_head);
  b.kv_u32("attention.head_count_kv", d.n_head_kv);
  b.kv_u32("attention.key_length", d.head_dim);
  b.kv_u32("attention.value_length", d.head_dim);
  b.kv_f32("attention.layer_norm_rms_epsilon", b.cfg_float("rms_norm_eps", 1e-5));
  b.kv_u32("rope.dimension_count", d.head_dim);  // llama.cpp scales q·k by 1/sqrt(n_rot): the whole head rotates
  b.kv_u32("vocab_size", d.n_vocab);
  describe_attention_layers(b, d.n_layer);
  describe_rope(b);

  b.map("token_embd.weight", "model.embed_tokens.weight", {d.n_vocab, d.n_embd});
  for (int64_t i = 0; i < d.n_layer; ++i) {
    describe_attention(b, i, d);
    describe_moe(b, i, d);
  }
  b.map("output_norm.weight", "model.norm.weight", {d.n_embd});
  b.map("output.weight", "lm_head.weight", {d.n_vocab, d.n_embd});
}

}  // namespace

const Family& gpt_oss_family() {
  static const Family family{"gpt_oss", {{"gpt-oss", {"gpt_oss"}, describe_gpt_oss}}};
  return family;
}

}  // namespace mlx2gguf
