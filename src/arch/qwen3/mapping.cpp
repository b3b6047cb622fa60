// GGUF mapping of the Qwen3 family, llama.cpp architectures "qwen2", "qwen3" and "qwen3moe": model_type qwen2
// (Qwen2 / Qwen2.5, attention biases), qwen3 (dense Qwen3, per-head q/k norms) and qwen3_moe (Qwen3 MoE).
//
//   MLX (mlx-lm)                                           GGUF
//   model.embed_tokens.weight                              token_embd.weight
//   model.norm.weight                                      output_norm.weight
//   lm_head.weight (absent, or dropped when tied)          output.weight
//   model.layers.N.input_layernorm.weight                  blk.N.attn_norm.weight
//   model.layers.N.self_attn.{q,k,v}_proj.weight           blk.N.attn_{q,k,v}.weight           no permutation (NEOX rope)
//   model.layers.N.self_attn.{q,k,v}_proj.bias   (qwen2)   blk.N.attn_{q,k,v}.bias             required
//   model.layers.N.self_attn.o_proj.weight                 blk.N.attn_output.weight
//   model.layers.N.self_attn.{q,k}_norm.weight   (qwen3*)  blk.N.attn_{q,k}_norm.weight        plain weights, no +1
//   model.layers.N.post_attention_layernorm.weight         blk.N.ffn_norm.weight
//   model.layers.N.mlp.{gate,up,down}_proj.weight          blk.N.ffn_{gate,up,down}.weight     (qwen2, qwen3)
//   model.layers.N.mlp.gate.weight               (moe)     blk.N.ffn_gate_inp.weight           F32
//   model.layers.N.mlp.switch_mlp.X_proj.weight  (moe)     blk.N.ffn_X_exps.weight             [E, out, in]
//     or Hugging Face's mlp.experts.E.X_proj.weight        stacked as mlx-lm's sanitize does
//
// What llama.cpp hard-codes and the plan therefore checks instead of writing: qwen3moe routes with a softmax over
// all experts and always renormalises the top-k weights (norm_topk_prob must be true), and every layer is sparse
// (mlp_only_layers empty, decoder_sparse_step 1). Config keys that would change what the model computes and that
// the file cannot carry are refused, never dropped.
#include <cmath>
#include <set>

#include "plan/architecture.h"
#include "util/error.h"

namespace mlx2gguf {

namespace {

enum class Variant { Qwen2, Qwen3, Qwen3Moe };

struct QwenDims {
  Variant variant;
  int64_t n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_vocab;
  int64_t n_expert = 0, n_expert_used = 0, n_ff_exp = 0;
  bool tied;
};

std::string layer(int64_t i, const std::string& name) { return fmt::format("model.layers.{}.{}", i, name); }
std::string blk(int64_t i, const std::string& name) { return fmt::format("blk.{}.{}", i, name); }

Variant variant_of(const std::string& model_type) {
  if (model_type == "qwen2") return Variant::Qwen2;
  if (model_type == "qwen3") return Variant::Qwen3;
  return Variant::Qwen3Moe;
}

// mlx-lm's qwen2 ModelArgs defaults tie_word_embeddings to True; qwen3 and qwen3_moe require the key. A null value
// is Python's None: falsy, an untied head.
bool tied_embeddings(const PlanBuilder& b, Variant v) {
  const auto& cfg = b.config();
  if (!cfg.contains("tie_word_embeddings")) {
    if (v == Variant::Qwen2) return true;
    fail("config.json lacks 'tie_word_embeddings', which mlx-lm's {} model requires",
         v == Variant::Qwen3 ? "qwen3" : "qwen3_moe");
  }
  if (cfg["tie_word_embeddings"].is_null()) return false;
  return b.cfg_bool("tie_word_embeddings", false);
}

// mlx-lm ignores Hugging Face's sliding-window switch (every layer attends to the whole context), Hugging Face
// honours it: a folder that asks for windowed attention cannot be converted without changing one of the two.
void check_no_sliding_window(const PlanBuilder& b) {
  if (!b.cfg_bool("use_sliding_window", false)) return;
  fail("config.json sets use_sliding_window true (sliding_window {}, max_window_layers {}): Hugging Face then windows "
       "the attention of the upper layers, mlx-lm and llama.cpp's qwen architectures never do; set it to false to "
       "convert the model as mlx-lm runs it",
       b.config().value("sliding_window", nlohmann::json()).dump(),
       b.config().value("max_window_layers", nlohmann::json()).dump());
}

std::string scaling_type(const nlohmann::json& scaling) {
  // mlx-lm: scaling_config.get("type") or scaling_config.get("rope_type", "default").
  if (scaling.contains("type") && scaling["type"].is_string() && !scaling["type"].get<std::string>().empty())
    return scaling["type"].get<std::string>();
  if (scaling.contains("rope_type") && scaling["rope_type"].is_string()) return scaling["rope_type"].get<std::string>();
  return "default";
}

double scaling_number(const nlohmann::json& scaling, const std::string& key, double fallback) {
  if (!scaling.contains(key) || scaling[key].is_null()) return fallback;
  if (!scaling[key].is_number()) fail("config.json rope_scaling '{}' is not a number: {}", key, scaling[key].dump());
  return scaling[key].get<double>();
}

// YaRN's attention scale for a context `scale` times longer (mlx-lm's yarn_get_mscale).
double yarn_mscale(double scale, double mscale) { return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0; }

// mlx-lm's YarnRoPE and llama.cpp's yarn (ext_factor 1) blend the same interpolated and extrapolated frequencies over
// the same correction range, from the same inputs: factor, original context, beta_fast/slow (llama.cpp's qwen
// architectures keep its defaults 32 and 1) and base. Both scale the rotated q and k: mlx-lm by
// mscale(factor, mscale) / mscale(factor, mscale_all_dim), llama.cpp by rope.scaling.attn_factor · mscale(factor, 1).
void describe_yarn(PlanBuilder& b, const nlohmann::json& scaling) {
  static const std::set<std::string> read_by_mlx = {"type", "rope_type", "factor", "original_max_position_embeddings",
                                                    "beta_fast", "beta_slow", "mscale", "mscale_all_dim"};
  for (const auto& [key, value] : scaling.items())
    if (!read_by_mlx.contains(key))
      fail("config.json rope_scaling '{}' {} is ignored by mlx-lm's YaRN but not by Hugging Face's; refusing to "
           "guess which model to write",
           key, value.dump());
  if (!scaling.contains("factor")) fail("config.json rope_scaling of type yarn has no 'factor'");
  const double factor = scaling_number(scaling, "factor", 1.0);
  const double original = scaling_number(scaling, "original_max_position_embeddings", 4096.0);
  const double beta_fast = scaling_number(scaling, "beta_fast", 32.0);
  const double beta_slow = scaling_number(scaling, "beta_slow", 1.0);
  if (beta_fast != 32.0 || beta_slow != 1.0)
    fail("config.json rope_scaling yarn beta_fast {} / beta_slow {}: llama.cpp's {} architecture always uses 32 / 1",
         beta_fast, beta_slow, b.arch());
  if (!(factor > 0.0) || !(original >= 1.0))
    fail("config.json rope_scaling yarn: factor {} and original_max_position_embeddings {} must be positive", factor,
         original);
  const double mlx_scale = yarn_mscale(factor, scaling_number(scaling, "mscale", 1.0)) /
                           yarn_mscale(factor, scaling_number(scaling, "mscale_all_dim", 0.0));
  const double attn_factor = mlx_scale / yarn_mscale(factor, 1.0);
  b.kv_str("rope.scaling.type", "yarn");
  b.kv_f32("rope.scaling.factor", factor);
  // llama.cpp's default is the training context; mlx-lm's 4096.
  b.kv_u32("rope.scaling.original_context_length", static_cast<int64_t>(original));
  if (std::abs(attn_factor - 1.0) > 1e-7) b.kv_f32("rope.scaling.attn_factor", attn_factor);
}

void describe_rope(PlanBuilder& b, Variant v) {
  // mlx-lm's qwen2 defaults rope_theta to 1e6; qwen3 and qwen3_moe require it.
  b.kv_f32("rope.freq_base", v == Variant::Qwen2 ? b.cfg_float("rope_theta", 1e6) : b.cfg_float("rope_theta"));
  const auto& cfg = b.config();
  if (cfg.contains("rope_parameters") && cfg["rope_parameters"].is_object() &&
      scaling_type(cfg["rope_parameters"]) != "default")
    fail("config.json rope_parameters {} is ignored by mlx-lm's qwen models (they read rope_theta and rope_scaling); "
         "refusing to guess which rope to write",
         cfg["rope_parameters"].dump());
  if (v == Variant::Qwen2 && b.cfg_bool("rope_traditional", false))
    fail("config.json sets rope_traditional true: llama.cpp's qwen2 architecture rotates half-split pairs only");
  if (!cfg.contains("rope_scaling") || cfg["rope_scaling"].is_null()) return;
  const auto& scaling = cfg["rope_scaling"];
  if (!scaling.is_object()) fail("config.json: rope_scaling is not an object: {}", scaling.dump());
  const std::string type = scaling_type(scaling);
  if (type == "default") return;
  if (v == Variant::Qwen3Moe)
    fail("config.json rope_scaling {} is ignored by mlx-lm's qwen3_moe (plain RoPE) but applied by Hugging Face and "
         "llama.cpp; remove it to convert the model as mlx-lm runs it",
         scaling.dump());
  // mlx-lm's "mrope" is a plain RoPE for text (every position section is the token index).
  if (type == "mrope") return;
  if (type == "linear") {
    if (!scaling.contains("factor")) fail("config.json rope_scaling of type linear has no 'factor'");
    b.kv_str("rope.scaling.type", "linear");
    b.kv_f32("rope.scaling.factor", scaling_number(scaling, "factor", 1.0));
    return;
  }
  if (type == "yarn" || type == "deepseek_yarn" || type == "telechat3-yarn") {
    describe_yarn(b, scaling);
    return;
  }
  fail("config.json rope_scaling type '{}' cannot be expressed for llama.cpp's {} architecture (supported: linear, "
       "yarn)",
       type, b.arch());
}

// llama.cpp's qwen3moe runs every layer through its experts, softmax-routed with renormalised top-k weights.
void check_moe_layout(const PlanBuilder& b, const QwenDims& d) {
  const auto& cfg = b.config();
  if (d.n_expert <= 0) fail("config.json: num_experts is {}; llama.cpp's qwen3moe needs experts in every layer", d.n_expert);
  if (d.n_expert_used <= 0 || d.n_expert_used > d.n_expert)
    fail("config.json: num_experts_per_tok {} must be between 1 and num_experts {}", d.n_expert_used, d.n_expert);
  if (!config_value<bool>(cfg, "norm_topk_prob"))
    fail("config.json sets norm_topk_prob false: mlx-lm then weights the chosen experts by their plain softmax "
         "probabilities, while llama.cpp's qwen3moe always renormalises them to sum to 1; the file would compute a "
         "different model");
  const int64_t step = b.cfg_int("decoder_sparse_step");
  if (step != 1)
    fail("config.json: decoder_sparse_step {} makes mlx-lm run dense MLPs in some layers; llama.cpp's qwen3moe has "
         "experts in every layer (decoder_sparse_step must be 1)",
         step);
  if (!cfg.contains("mlp_only_layers")) fail("config.json lacks 'mlp_only_layers'");
  const auto& dense = cfg["mlp_only_layers"];
  if (!dense.is_array()) fail("config.json: mlp_only_layers is not a list: {}", dense.dump());
  for (const auto& entry : dense) {
    if (!entry.is_number_integer()) fail("config.json: mlp_only_layers entry {} is not a layer index", entry.dump());
    const int64_t index = entry.get<int64_t>();
    if (index >= 0 && index < d.n_layer)
      fail("config.json: mlp_only_layers {} makes layer {} a dense MLP in mlx-lm; llama.cpp's qwen3moe has experts "
           "in every layer",
           dense.dump(), index);
  }
}

void describe_attention(PlanBuilder& b, int64_t i, const QwenDims& d) {
  const int64_t q_rows = d.n_head * d.head_dim, kv_rows = d.n_head_kv * d.head_dim;
  b.map(blk(i, "attn_norm.weight"), layer(i, "input_layernorm.weight"), {d.n_embd});
  b.map(blk(i, "attn_q.weight"), layer(i, "self_attn.q_proj.weight"), {q_rows, d.n_embd});
  b.map(blk(i, "attn_k.weight"), layer(i, "self_attn.k_proj.weight"), {kv_rows, d.n_embd});
  b.map(blk(i, "attn_v.weight"), layer(i, "self_attn.v_proj.weight"), {kv_rows, d.n_embd});
  b.map(blk(i, "attn_output.weight"), layer(i, "self_attn.o_proj.weight"), {d.n_embd, q_rows});
  if (d.variant == Variant::Qwen2) {
    // Always present in mlx-lm's qwen2 (bias=True); llama.cpp loads a file without them and computes without them.
    b.map(blk(i, "attn_q.bias"), layer(i, "self_attn.q_proj.bias"), {q_rows});
    b.map(blk(i, "attn_k.bias"), layer(i, "self_attn.k_proj.bias"), {kv_rows});
    b.map(blk(i, "attn_v.bias"), layer(i, "self_attn.v_proj.bias"), {kv_rows});
  } else {
    b.map(blk(i, "attn_q_norm.weight"), layer(i, "self_attn.q_norm.weight"), {d.head_dim});
    b.map(blk(i, "attn_k_norm.weight"), layer(i, "self_attn.k_norm.weight"), {d.head_dim});
  }
  b.map(blk(i, "ffn_norm.weight"), layer(i, "post_attention_layernorm.weight"), {d.n_embd});
}

void describe_dense_mlp(PlanBuilder& b, int64_t i, const QwenDims& d) {
  b.map(blk(i, "ffn_gate.weight"), layer(i, "mlp.gate_proj.weight"), {d.n_ff, d.n_embd});
  b.map(blk(i, "ffn_up.weight"), layer(i, "mlp.up_proj.weight"), {d.n_ff, d.n_embd});
  b.map(blk(i, "ffn_down.weight"), layer(i, "mlp.down_proj.weight"), {d.n_embd, d.n_ff});
}

void describe_moe(PlanBuilder& b, int64_t i, const QwenDims& d) {
  b.map(blk(i, "ffn_gate_inp.weight"), layer(i, "mlp.gate.weight"), {d.n_expert, d.n_embd}).keep_f32 = true;
  struct ExpertTensor {
    const char* gguf, *proj;
    int64_t out, in;
  };
  const ExpertTensor experts[] = {{"ffn_gate_exps.weight", "gate_proj", d.n_ff_exp, d.n_embd},
                                  {"ffn_up_exps.weight", "up_proj", d.n_ff_exp, d.n_embd},
                                  {"ffn_down_exps.weight", "down_proj", d.n_embd, d.n_ff_exp}};
  for (const auto& e : experts) {
    const std::string stacked = layer(i, fmt::format("mlp.switch_mlp.{}.weight", e.proj));
    if (b.has(stacked)) {
      b.map(blk(i, e.gguf), stacked, {d.n_expert, e.out, e.in});
      continue;
    }
    std::vector<std::string> per_expert;
    for (int64_t x = 0; x < d.n_expert; ++x) per_expert.push_back(layer(i, fmt::format("mlp.experts.{}.{}.weight", x, e.proj)));
    b.stack(blk(i, e.gguf), per_expert, {e.out, e.in});
  }
}

void describe_qwen(PlanBuilder& b) {
  const Variant v = variant_of(b.model().folder().model_type());
  QwenDims d{};
  d.variant = v;
  d.n_embd = b.cfg_count("hidden_size");
  d.n_layer = b.cfg_count("num_hidden_layers");
  d.n_head = b.cfg_count("num_attention_heads");
  d.n_head_kv = b.cfg_count("num_key_value_heads");
  if (d.n_head <= 0 || d.n_head_kv <= 0 || d.n_head % d.n_head_kv != 0)
    fail("config.json: {} attention heads cannot share {} key/value heads", d.n_head, d.n_head_kv);
  if (v == Variant::Qwen2) {
    // mlx-lm's qwen2 derives the head size and ignores a head_dim key.
    if (d.n_embd % d.n_head != 0) fail("config.json: hidden_size {} is not a multiple of num_attention_heads {}", d.n_embd, d.n_head);
    d.head_dim = d.n_embd / d.n_head;
  } else {
    d.head_dim = b.cfg_count("head_dim");
  }
  d.n_ff = b.cfg_count("intermediate_size");
  d.n_vocab = b.model().require("model.embed_tokens.weight").shape().at(0);
  const int64_t config_vocab = b.cfg_int("vocab_size");
  if (config_vocab != d.n_vocab)
    fail("config.json: vocab_size {} but model.embed_tokens.weight has {} rows", config_vocab, d.n_vocab);
  d.tied = tied_embeddings(b, v);
  if (v == Variant::Qwen3Moe) {
    d.n_expert = b.cfg_count("num_experts");
    d.n_expert_used = b.cfg_count("num_experts_per_tok");
    d.n_ff_exp = b.cfg_count("moe_intermediate_size");
    check_moe_layout(b, d);
  }
  check_no_sliding_window(b);

  b.kv_u32("context_length", v == Variant::Qwen2 ? b.cfg_int("max_position_embeddings", 32768)
                                                 : b.cfg_int("max_position_embeddings"));
  b.kv_u32("embedding_length", d.n_embd);
  b.kv_u32("block_count", d.n_layer);
  b.kv_u32("feed_forward_length", d.n_ff);
  b.kv_u32("attention.head_count", d.n_head);
  b.kv_u32("attention.head_count_kv", d.n_head_kv);
  b.kv_u32("attention.key_length", d.head_dim);
  b.kv_u32("attention.value_length", d.head_dim);
  b.kv_u32("rope.dimension_count", d.head_dim);
  b.kv_f32("attention.layer_norm_rms_epsilon", b.cfg_float("rms_norm_eps"));
  b.kv_u32("vocab_size", d.n_vocab);
  if (v == Variant::Qwen3Moe) {
    b.kv_u32("expert_count", d.n_expert);
    b.kv_u32("expert_used_count", d.n_expert_used);
    b.kv_u32("expert_feed_forward_length", d.n_ff_exp);
  }
  describe_rope(b, v);

  b.map("token_embd.weight", "model.embed_tokens.weight", {d.n_vocab, d.n_embd});
  for (int64_t i = 0; i < d.n_layer; ++i) {
    describe_attention(b, i, d);
    if (v == Variant::Qwen3Moe) describe_moe(b, i, d);
    else describe_dense_mlp(b, i, d);
  }
  b.map("output_norm.weight", "model.norm.weight", {d.n_embd});
  if (d.tied) {
    // mlx-lm's sanitize pops a stored lm_head when the embeddings are tied: the embedding table is the head.
    b.drop_if([](const std::string& name) { return name == "lm_head.weight"; });
  } else {
    b.map("output.weight", "lm_head.weight", {d.n_vocab, d.n_embd});
  }
  b.drop_if([](const std::string& name) { return name.ends_with("self_attn.rotary_emb.inv_freq"); });
}

}  // namespace

const Family& qwen3_family() {
  static const Family family{"qwen3",
                             {{"qwen2", {"qwen2"}, describe_qwen},
                              {"qwen3", {"qwen3"}, describe_qwen},
                              {"qwen3moe", {"qwen3_moe"}, describe_qwen}}};
  return family;
}

}  // namespace mlx2gguf
