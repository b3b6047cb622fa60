// GGUF mapping of the llama family, llama.cpp architecture "llama": model_type llama and mistral (dense SwiGLU) and mixtral (MoE).
//
//   MLX (mlx-lm)                                              GGUF
//   model.embed_tokens.weight                                 token_embd.weight
//   model.norm.weight                                         output_norm.weight
//   lm_head.weight (absent when tied)                         output.weight
//   model.layers.N.input_layernorm.weight                     blk.N.attn_norm.weight
//   model.layers.N.self_attn.{q,k}_proj.{weight,bias}         blk.N.attn_{q,k}.{weight,bias}   rope pairs permuted
//   model.layers.N.self_attn.{v,o}_proj.{weight,bias}         blk.N.attn_{v,output}.{weight,bias}
//   model.layers.N.post_attention_layernorm.weight            blk.N.ffn_norm.weight
//   model.layers.N.mlp.{gate,up,down}_proj.{weight,bias}      blk.N.ffn_{gate,up,down}.{weight,bias}
//   model.layers.N.block_sparse_moe.gate.weight               blk.N.ffn_gate_inp.weight        F32
//   model.layers.N.block_sparse_moe.switch_mlp.X_proj.weight  blk.N.ffn_X_exps.weight          [E, out, in]
#include <cmath>
#include <numbers>

#include "plan/architecture.h"
#include "plan/permutations.h"
#include "util/error.h"
#include "util/warn.h"

namespace mlx2gguf {

namespace {

struct LlamaDims {
  int64_t n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_vocab, n_expert;
  bool permute_rope;  // mlx-lm's half-split rope → llama.cpp's adjacent pairs; not when rope_traditional
};

std::string layer(int64_t i, const std::string& name) { return fmt::format("model.layers.{}.{}", i, name); }
std::string blk(int64_t i, const std::string& name) { return fmt::format("blk.{}.{}", i, name); }

// llama3-style rope scaling is not a GGUF key but a per-frequency factor table (rope_freqs.weight).
std::vector<float> llama3_rope_factors(const nlohmann::json& scaling, double base, int64_t head_dim) {
  const double factor = scaling.value("factor", 8.0);
  const double low_freq_factor = scaling.value("low_freq_factor", 1.0);
  const double high_freq_factor = scaling.value("high_freq_factor", 4.0);
  const double original_context = scaling.value("original_max_position_embeddings", 8192.0);
  const double low_freq_wavelen = original_context / low_freq_factor;
  const double high_freq_wavelen = original_context / high_freq_factor;
  std::vector<float> factors;
  for (int64_t i = 0; i < head_dim; i += 2) {
    const double freq = 1.0 / std::pow(base, static_cast<double>(i) / static_cast<double>(head_dim));
    const double wavelen = 2.0 * std::numbers::pi / freq;
    double scale = 1.0;
    if (wavelen > low_freq_wavelen) {
      scale = factor;
    } else if (wavelen >= high_freq_wavelen) {
      const double smooth = (original_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
      scale = 1.0 / ((1.0 - smooth) / factor + smooth);
    }
    factors.push_back(static_cast<float>(scale));
  }
  return factors;
}

void describe_rope(PlanBuilder& b, const LlamaDims& d, bool is_moe) {
  // mlx-lm's defaults when config.json has no rope_theta: mixtral.py 1e6, llama.py 10000.
  const double base = b.cfg_float("rope_theta", is_moe ? 1e6 : 10000.0);
  b.kv_f32("rope.freq_base", base);
  const auto& cfg = b.config();
  if (!cfg.contains("rope_scaling") || cfg["rope_scaling"].is_null()) return;
  if (is_moe) {
    // mixtral.py builds a plain RoPE: a rope_scaling entry changes nothing in mlx-lm, so nothing is written.
    warn(fmt::format("config.json rope_scaling {} is ignored, as mlx-lm's mixtral ignores it", cfg["rope_scaling"].dump()));
    return;
  }
  const auto& scaling = cfg["rope_scaling"];
  const std::string type = scaling.value("rope_type", scaling.value("type", std::string("default")));
  if (type == "default") return;
  if (type == "linear") {
    b.kv_str("rope.scaling.type", "linear");
    b.kv_f32("rope.scaling.factor", scaling.at("factor").get<double>());
    return;
  }
  if (type == "llama3") {
    b.generate("rope_freqs.weight", llama3_rope_factors(scaling, base, d.head_dim));
    return;
  }
  fail("config.json rope_scaling type '{}' is not supported for llama-family models (supported: linear, llama3)", type);
}

void describe_attention(PlanBuilder& b, int64_t i, const LlamaDims& d) {
  const int64_t q_rows = d.n_head * d.head_dim, kv_rows = d.n_head_kv * d.head_dim;
  b.map(blk(i, "attn_norm.weight"), layer(i, "input_layernorm.weight"), {d.n_embd});
  auto& q = b.map(blk(i, "attn_q.weight"), layer(i, "self_attn.q_proj.weight"), {q_rows, d.n_embd});
  auto& k = b.map(blk(i, "attn_k.weight"), layer(i, "self_attn.k_proj.weight"), {kv_rows, d.n_embd});
  b.map(blk(i, "attn_v.weight"), layer(i, "self_attn.v_proj.weight"), {kv_rows, d.n_embd});
  b.map(blk(i, "attn_output.weight"), layer(i, "self_attn.o_proj.weight"), {d.n_embd, q_rows});
  auto* q_bias = b.map_optional(blk(i, "attn_q.bias"), layer(i, "self_attn.q_proj.bias"), {q_rows});
  auto* k_bias = b.map_optional(blk(i, "attn_k.bias"), layer(i, "self_attn.k_proj.bias"), {kv_rows});
  b.map_optional(blk(i, "attn_v.bias"), layer(i, "self_attn.v_proj.bias"), {kv_rows});
  b.map_optional(blk(i, "attn_output.bias"), layer(i, "self_attn.o_proj.bias"), {d.n_embd});
  b.map(blk(i, "ffn_norm.weight"), layer(i, "post_attention_layernorm.weight"), {d.n_embd});
  if (!d.permute_rope) return;
  // The maps are built once the tensors have confirmed the sizes config.json claims.
  q.row_map = rope_halves_to_pairs(d.n_head, d.head_dim);
  k.row_map = rope_halves_to_pairs(d.n_head_kv, d.head_dim);
  if (q_bias) q_bias->column_map = q.row_map;
  if (k_bias) k_bias->column_map = k.row_map;
}

void describe_dense_mlp(PlanBuilder& b, int64_t i, const LlamaDims& d) {
  b.map(blk(i, "ffn_gate.weight"), layer(i, "mlp.gate_proj.weight"), {d.n_ff, d.n_embd});
  b.map(blk(i, "ffn_up.weight"), layer(i, "mlp.up_proj.weight"), {d.n_ff, d.n_embd});
  b.map(blk(i, "ffn_down.weight"), layer(i, "mlp.down_proj.weight"), {d.n_embd, d.n_ff});
  b.map_optional(blk(i, "ffn_gate.bias"), layer(i, "mlp.gate_proj.bias"), {d.n_ff});
  b.map_optional(blk(i, "ffn_up.bias"), layer(i, "mlp.up_proj.bias"), {d.n_ff});
  b.map_optional(blk(i, "ffn_down.bias"), layer(i, "mlp.down_proj.bias"), {d.n_embd});
}

void describe_moe(PlanBuilder& b, int64_t i, const LlamaDims& d) {
  b.map(blk(i, "ffn_gate_inp.weight"), layer(i, "block_sparse_moe.gate.weight"), {d.n_expert, d.n_embd}).keep_f32 = true;
  // mlx-lm stacks experts as [E, out, in] under switch_mlp; folders written before that keep experts.N.w1/w2/w3.
  struct ExpertTensor {
    const char* gguf, *stacked, *legacy;
    int64_t out, in;
  };
  const ExpertTensor experts[] = {{"ffn_gate_exps.weight", "gate_proj", "w1", d.n_ff, d.n_embd},
                                  {"ffn_up_exps.weight", "up_proj", "w3", d.n_ff, d.n_embd},
                                  {"ffn_down_exps.weight", "down_proj", "w2", d.n_embd, d.n_ff}};
  for (const auto& e : experts) {
    const std::string stacked = layer(i, fmt::format("block_sparse_moe.switch_mlp.{}.weight", e.stacked));
    if (b.has(stacked)) {
      b.map(blk(i, e.gguf), stacked, {d.n_expert, e.out, e.in});
      continue;
    }
    std::vector<std::string> per_expert;
    for (int64_t x = 0; x < d.n_expert; ++x) {
      per_expert.push_back(layer(i, fmt::format("block_sparse_moe.experts.{}.{}.weight", x, e.legacy)));
      if (!b.has(per_expert.back())) b.map(blk(i, e.gguf), stacked, {});  // neither layout: names the missing tensor
    }
    b.stack(blk(i, e.gguf), per_expert, {e.out, e.in});
  }
}

// llama.cpp's llama architecture has no sliding-window attention: a model whose layers mlx-lm runs with a window
// cannot be written for it. mlx-lm's llama.py windows exactly the layers layer_types marks "sliding_attention";
// a bare sliding_window (Mistral 7B v0.1) changes nothing there.
void check_attention_layers(const PlanBuilder& b, int64_t n_layer, bool is_moe) {
  const auto& cfg = b.config();
  const bool has_window = cfg.contains("sliding_window") && !cfg["sliding_window"].is_null();
  const bool has_types = cfg.contains("layer_types") && !cfg["layer_types"].is_null();
  if (has_types && !is_moe) {
    const auto& types = cfg["layer_types"];
    if (!types.is_array() || static_cast<int64_t>(types.size()) != n_layer)
      fail("config.json: layer_types must list the {} layers' attention types", n_layer);
    for (size_t i = 0; i < types.size(); ++i) {
      const std::string type = types[i].is_string() ? types[i].get<std::string>() : types[i].dump();
      if (type == "full_attention") continue;
      if (type == "sliding_attention")
        fail("config.json: layer {} uses sliding-window attention (layer_types, sliding_window {}), which llama.cpp's "
             "llama architecture cannot express: the file would attend to the whole context there",
             i, has_window ? cfg["sliding_window"].dump() : "unset");
      fail("config.json: layer_types[{}] is '{}', which mlx-lm's llama model does not know", i, type);
    }
    return;
  }
  if (has_window)
    warn(fmt::format("config.json sliding_window {} is ignored, as mlx-lm ignores it without sliding layers in "
                     "layer_types: every layer attends to the whole context",
                     cfg["sliding_window"].dump()));
}

void describe_llama(PlanBuilder& b) {
  const bool is_moe = b.model().folder().model_type() == "mixtral";
  LlamaDims d{};
  d.n_embd = b.cfg_count("hidden_size");
  d.n_layer = b.cfg_count("num_hidden_layers");
  d.n_head = b.cfg_count("num_attention_heads");
  // mixtral.py defaults a missing num_key_value_heads to 8, llama.py to the query heads.
  const bool kv_missing = !b.config().contains("num_key_value_heads");
  d.n_head_kv = b.cfg_count("num_key_value_heads", is_moe && kv_missing ? 8 : d.n_head);
  d.permute_rope = !b.cfg_bool("rope_traditional", false);
  check_attention_layers(b, d.n_layer, is_moe);
  // mlx-lm's mixtral ignores a head_dim key; llama/mistral honour it.
  d.head_dim = is_moe ? d.n_embd / d.n_head : b.cfg_count("head_dim", d.n_embd / d.n_head);
  d.n_ff = b.cfg_count("intermediate_size");
  d.n_expert = is_moe ? b.cfg_count("num_local_experts") : 0;
  d.n_vocab = b.model().require("model.embed_tokens.weight").shape().at(0);

  b.kv_u32("context_length", b.cfg_int("max_position_embeddings", 4096));
  b.kv_u32("embedding_length", d.n_embd);
  b.kv_u32("block_count", d.n_layer);
  b.kv_u32("feed_forward_length", d.n_ff);
  b.kv_u32("attention.head_count", d.n_head);
  b.kv_u32("attention.head_count_kv", d.n_head_kv);
  b.kv_u32("attention.key_length", d.head_dim);
  b.kv_u32("attention.value_length", d.head_dim);
  b.kv_u32("rope.dimension_count", d.head_dim);
  b.kv_f32("attention.layer_norm_rms_epsilon", b.cfg_float("rms_norm_eps", 1e-5));
  b.kv_u32("vocab_size", d.n_vocab);
  if (is_moe) {
    b.kv_u32("expert_count", d.n_expert);
    const int64_t used = b.cfg_count("num_experts_per_tok");
    if (used > d.n_expert) fail("config.json: num_experts_per_tok {} exceeds num_local_experts {}", used, d.n_expert);
    b.kv_u32("expert_used_count", used);
  }
  describe_rope(b, d, is_moe);

  b.map("token_embd.weight", "model.embed_tokens.weight", {d.n_vocab, d.n_embd});
  for (int64_t i = 0; i < d.n_layer; ++i) {
    describe_attention(b, i, d);
    if (is_moe) describe_moe(b, i, d);
    else describe_dense_mlp(b, i, d);
  }
  b.map("output_norm.weight", "model.norm.weight", {d.n_embd});
  b.map_optional("output.weight", "lm_head.weight", {d.n_vocab, d.n_embd});
  b.drop_if([](const std::string& name) { return name.ends_with("rotary_emb.inv_freq"); });
}

}  // namespace

const Family& llama_family() {
  static const Family family{"llama", {{"llama", {"llama", "mistral", "mixtral"}, describe_llama}}};
  return family;
}

}  // namespace mlx2gguf
