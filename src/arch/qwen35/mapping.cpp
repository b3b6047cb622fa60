// GGUF mapping of the Qwen3.5 family, llama.cpp architectures "qwen35moe" and "qwen35": Qwen3.5 / Qwen3.6 (model_type qwen3_5_moe, qwen3_5), from
// mlx-lm folders (language_model.model.*) and from raw Hugging Face folders (model.language_model.*).
//
//   source (after the prefix)                    GGUF                         transform
//   embed_tokens.weight                          token_embd.weight
//   norm.weight                                  output_norm.weight           +1 if HF layout
//   lm_head.weight (absent when tied)            output.weight
//   layers.N.input_layernorm.weight              blk.N.attn_norm.weight       +1 if HF layout
//   layers.N.post_attention_layernorm.weight     blk.N.post_attention_norm.weight  +1 if HF layout
//   full attention ((N+1) % interval == 0):
//   self_attn.q_proj.weight [2·Hq·hd, H]         blk.N.attn_q.weight          per-head [query | gate], unchanged
//   self_attn.{k,v,o}_proj.weight                blk.N.attn_{k,v,output}.weight
//   self_attn.{q,k}_norm.weight                  blk.N.attn_{q,k}_norm.weight +1 if HF layout
//   Gated DeltaNet (other layers):
//   linear_attn.in_proj_qkv.weight               blk.N.attn_qkv.weight        V rows grouped → tiled
//   linear_attn.in_proj_z.weight                 blk.N.attn_gate.weight       rows grouped → tiled
//   linear_attn.in_proj_b.weight                 blk.N.ssm_beta.weight        rows grouped → tiled
//   linear_attn.in_proj_a.weight                 blk.N.ssm_alpha.weight       rows grouped → tiled
//   linear_attn.conv1d.weight [C,K,1] | [C,1,K]  blk.N.ssm_conv1d.weight      [C, K], V channels tiled, F32
//   linear_attn.dt_bias                          blk.N.ssm_dt.bias            tiled
//   linear_attn.A_log                            blk.N.ssm_a                  tiled, -exp(A_log)
//   linear_attn.norm.weight                      blk.N.ssm_norm.weight        never shifted
//   linear_attn.out_proj.weight                  blk.N.ssm_out.weight         input columns tiled
//   MoE (qwen35moe, every layer):
//   mlp.gate.weight                              blk.N.ffn_gate_inp.weight    F32
//   mlp.switch_mlp.{gate,up,down}_proj.weight    blk.N.ffn_{gate,up,down}_exps.weight
//     or HF mlp.experts.gate_up_proj [E,2·Im,H]  split rows: gate first, then up
//   mlp.shared_expert.{gate,up,down}_proj.weight blk.N.ffn_{gate,up,down}_shexp.weight
//   mlp.shared_expert_gate.weight [1, H]         blk.N.ffn_gate_inp_shexp.weight  F32
//   dense (qwen35): mlp.{gate,up,down}_proj.weight → blk.N.ffn_{gate,up,down}.weight
// Vision towers and multi-token-prediction heads are dropped (no nextn layers are written).
//
// Why the V-head reorder: the source groups value heads by key head ([k0: v0..v(r-1), k1: ...]); llama.cpp pairs
// value head h with key head h mod n_k, i.e. tiled order. Why the +1: the model's RMSNorms use (1 + w); mlx-lm's
// loader already stored 1 + w, raw Hugging Face files store w.
#include "plan/architecture.h"
#include "plan/permutations.h"
#include "util/error.h"

namespace mlx2gguf {

namespace {

struct Qwen35Dims {
  int64_t n_embd, n_layer, n_head, n_head_kv, head_dim, n_vocab;
  int64_t n_k_heads, n_v_heads, k_head_dim, v_head_dim, conv_kernel, interval;
  int64_t n_expert, n_ff_exp, n_ff_shexp, n_ff;
  int64_t key_dim() const { return n_k_heads * k_head_dim; }
  int64_t value_dim() const { return n_v_heads * v_head_dim; }
  int64_t conv_dim() const { return 2 * key_dim() + value_dim(); }
};

// Where the language model's tensors live: mlx-lm writes "language_model.model.", Hugging Face
// "model.language_model.", text-only checkpoints "model.".
struct Qwen35Names {
  std::string model_prefix, lm_head;
  std::string model(const std::string& name) const { return model_prefix + name; }
  std::string layer(int64_t i, const std::string& name) const { return fmt::format("{}layers.{}.{}", model_prefix, i, name); }
};

Qwen35Names find_names(const PlanBuilder& b) {
  for (const auto& [prefix, head] : {std::pair<std::string, std::string>{"language_model.model.", "language_model.lm_head.weight"},
                                     {"model.language_model.", "lm_head.weight"},
                                     {"model.", "lm_head.weight"}}) {
    if (b.has(prefix + "embed_tokens.weight")) return {prefix, head};
  }
  fail("no embed_tokens.weight under language_model.model., model.language_model. or model.: not a Qwen3.5 checkpoint");
}

std::string blk(int64_t i, const std::string& name) { return fmt::format("blk.{}.{}", i, name); }

bool is_full_attention(int64_t layer, const Qwen35Dims& d) { return (layer + 1) % d.interval == 0; }

// mlx-lm's own rule: a conv1d kernel still shaped [C, 1, K] means the weights were never sanitized by mlx-lm,
// so the zero-centred norms are raw and need +1; [C, K, 1] means mlx-lm already stored 1 + w.
bool norms_are_raw(const PlanBuilder& b, const Qwen35Names& names, const Qwen35Dims& d) {
  for (int64_t i = 0; i < d.n_layer; ++i) {
    if (is_full_attention(i, d)) continue;
    const SourceTensor* conv = b.model().find(names.layer(i, "linear_attn.conv1d.weight"));
    if (conv == nullptr) continue;
    const auto& shape = conv->shape();
    if (shape.size() == 3 && shape[2] == 1 && shape[1] != 1) return false;
    if (shape.size() == 3 && shape[1] == 1) return true;
  }
  return names.model_prefix != "language_model.model.";
}

const nlohmann::json& rope_parameters(const PlanBuilder& b) {
  static const nlohmann::json empty = nlohmann::json::object();
  const auto& cfg = b.config();
  if (cfg.contains("rope_parameters") && cfg["rope_parameters"].is_object()) return cfg["rope_parameters"];
  if (cfg.contains("rope_scaling") && cfg["rope_scaling"].is_object()) return cfg["rope_scaling"];
  return empty;
}

void describe_hparams(PlanBuilder& b, const Qwen35Dims& d) {
  const auto& rope = rope_parameters(b);
  const double theta = rope.value("rope_theta", b.cfg_float("rope_theta", 10000000.0));
  const double partial = rope.value("partial_rotary_factor", b.cfg_float("partial_rotary_factor", 0.25));
  std::vector<int32_t> sections = {11, 11, 10, 0};
  if (rope.contains("mrope_section") && rope["mrope_section"].is_array()) {
    sections.assign(4, 0);
    for (size_t i = 0; i < std::min<size_t>(4, rope["mrope_section"].size()); ++i) sections[i] = rope["mrope_section"][i].get<int32_t>();
  }

  b.kv_u32("context_length", b.cfg_int("max_position_embeddings", 262144));
  b.kv_u32("embedding_length", d.n_embd);
  b.kv_u32("block_count", d.n_layer);
  if (d.n_expert == 0) b.kv_u32("feed_forward_length", d.n_ff);
  b.kv_u32("attention.head_count", d.n_head);
  b.kv_u32("attention.head_count_kv", d.n_head_kv);
  b.kv_u32("attention.key_length", d.head_dim);
  b.kv_u32("attention.value_length", d.head_dim);
  b.kv_f32("attention.layer_norm_rms_epsilon", b.cfg_float("rms_norm_eps", 1e-6));
  b.kv_f32("rope.freq_base", theta);
  b.kv_u32("rope.dimension_count", static_cast<int64_t>(static_cast<double>(d.head_dim) * partial));
  b.metadata().set(b.arch() + ".rope.dimension_sections", GgufValue::i32_array(sections));
  if (d.n_expert > 0) {
    b.kv_u32("expert_count", d.n_expert);
    const int64_t used = b.cfg_count("num_experts_per_tok");
    if (used > d.n_expert) fail("config.json: num_experts_per_tok {} exceeds num_experts {}", used, d.n_expert);
    b.kv_u32("expert_used_count", used);
    b.kv_u32("expert_feed_forward_length", d.n_ff_exp);
    b.kv_u32("expert_shared_feed_forward_length", d.n_ff_shexp);
  }
  b.kv_u32("ssm.conv_kernel", d.conv_kernel);
  b.kv_u32("ssm.state_size", d.k_head_dim);
  b.kv_u32("ssm.group_count", d.n_k_heads);
  b.kv_u32("ssm.time_step_rank", d.n_v_heads);
  b.kv_u32("ssm.inner_size", d.value_dim());
  b.kv_u32("full_attention_interval", d.interval);
}

void describe_full_attention(PlanBuilder& b, const Qwen35Names& n, int64_t i, const Qwen35Dims& d, ValueOp norm_op) {
  const int64_t q_rows = d.n_head * d.head_dim, kv_rows = d.n_head_kv * d.head_dim;
  b.map(blk(i, "attn_q.weight"), n.layer(i, "self_attn.q_proj.weight"), {2 * q_rows, d.n_embd});
  b.map(blk(i, "attn_k.weight"), n.layer(i, "self_attn.k_proj.weight"), {kv_rows, d.n_embd});
  b.map(blk(i, "attn_v.weight"), n.layer(i, "self_attn.v_proj.weight"), {kv_rows, d.n_embd});
  b.map(blk(i, "attn_output.weight"), n.layer(i, "self_attn.o_proj.weight"), {d.n_embd, q_rows});
  b.map(blk(i, "attn_q_norm.weight"), n.layer(i, "self_attn.q_norm.weight"), {d.head_dim}).op = norm_op;
  b.map(blk(i, "attn_k_norm.weight"), n.layer(i, "self_attn.k_norm.weight"), {d.head_dim}).op = norm_op;
  // llama.cpp's qwen35 graphs add no attention biases: a model with them cannot be written for it.
  for (const char* projection : {"q_proj", "k_proj", "v_proj", "o_proj"}) {
    const std::string bias = n.layer(i, fmt::format("self_attn.{}.bias", projection));
    if (b.has(bias))
      fail("'{}': attention biases (config.json attention_bias) are not part of llama.cpp's {} architecture, which "
           "would ignore them",
           bias, b.arch());
  }
}

void describe_delta_net(PlanBuilder& b, const Qwen35Names& n, int64_t i, const Qwen35Dims& d) {
  auto& qkv = b.map(blk(i, "attn_qkv.weight"), n.layer(i, "linear_attn.in_proj_qkv.weight"), {d.conv_dim(), d.n_embd});
  auto& gate = b.map(blk(i, "attn_gate.weight"), n.layer(i, "linear_attn.in_proj_z.weight"), {d.value_dim(), d.n_embd});
  // Built once the tensors have confirmed the sizes config.json claims.
  const IndexMap v_heads = grouped_to_tiled_heads(d.n_k_heads, d.n_v_heads, d.v_head_dim);
  const IndexMap v_scalars = grouped_to_tiled_heads(d.n_k_heads, d.n_v_heads, 1);
  const IndexMap qkv_channels = with_identity_prefix(2 * d.key_dim(), v_heads);
  qkv.row_map = qkv_channels;
  gate.row_map = v_heads;
  b.map(blk(i, "ssm_beta.weight"), n.layer(i, "linear_attn.in_proj_b.weight"), {d.n_v_heads, d.n_embd}).row_map = v_scalars;
  b.map(blk(i, "ssm_alpha.weight"), n.layer(i, "linear_attn.in_proj_a.weight"), {d.n_v_heads, d.n_embd}).row_map = v_scalars;

  const std::string conv = n.layer(i, "linear_attn.conv1d.weight");
  const auto& stored = b.model().require(conv).shape();
  const bool hf_conv = stored.size() == 3 && stored[1] == 1 && d.conv_kernel != 1;
  const std::vector<int64_t> conv_shape = hf_conv ? std::vector<int64_t>{d.conv_dim(), 1, d.conv_kernel}
                                                  : std::vector<int64_t>{d.conv_dim(), d.conv_kernel, 1};
  auto& conv_recipe = b.map_reshaped(blk(i, "ssm_conv1d.weight"), conv, conv_shape, {d.conv_dim(), d.conv_kernel});
  conv_recipe.row_map = qkv_channels;
  conv_recipe.keep_f32 = true;  // ggml's ssm_conv needs an F32 kernel

  b.map(blk(i, "ssm_dt.bias"), n.layer(i, "linear_attn.dt_bias"), {d.n_v_heads}).column_map = v_scalars;
  auto& a = b.map(blk(i, "ssm_a"), n.layer(i, "linear_attn.A_log"), {d.n_v_heads});
  a.column_map = v_scalars;
  a.op = ValueOp::NegExp;
  b.map(blk(i, "ssm_norm.weight"), n.layer(i, "linear_attn.norm.weight"), {d.v_head_dim});
  b.map(blk(i, "ssm_out.weight"), n.layer(i, "linear_attn.out_proj.weight"), {d.n_embd, d.value_dim()}).column_map = v_heads;
}

void describe_moe(PlanBuilder& b, const Qwen35Names& n, int64_t i, const Qwen35Dims& d) {
  b.map(blk(i, "ffn_gate_inp.weight"), n.layer(i, "mlp.gate.weight"), {d.n_expert, d.n_embd}).keep_f32 = true;
  const std::string fused = n.layer(i, "mlp.experts.gate_up_proj");
  if (b.has(fused)) {
    // Hugging Face keeps gate and up fused per expert: rows [0, Im) are gate, [Im, 2·Im) up.
    IndexMap gate_rows, up_rows;
    for (int64_t e = 0; e < d.n_expert; ++e) {
      for (int64_t r = 0; r < d.n_ff_exp; ++r) {
        gate_rows.push_back(e * 2 * d.n_ff_exp + r);
        up_rows.push_back(e * 2 * d.n_ff_exp + d.n_ff_exp + r);
      }
    }
    auto& gate = b.map(blk(i, "ffn_gate_exps.weight"), fused, {d.n_expert, 2 * d.n_ff_exp, d.n_embd});
    gate.shape = {d.n_expert, d.n_ff_exp, d.n_embd};
    gate.row_map = gate_rows;
    auto& up = b.map(blk(i, "ffn_up_exps.weight"), fused, {d.n_expert, 2 * d.n_ff_exp, d.n_embd});
    up.shape = {d.n_expert, d.n_ff_exp, d.n_embd};
    up.row_map = up_rows;
    b.map(blk(i, "ffn_down_exps.weight"), n.layer(i, "mlp.experts.down_proj"), {d.n_expert, d.n_embd, d.n_ff_exp});
  } else {
    b.map(blk(i, "ffn_gate_exps.weight"), n.layer(i, "mlp.switch_mlp.gate_proj.weight"), {d.n_expert, d.n_ff_exp, d.n_embd});
    b.map(blk(i, "ffn_up_exps.weight"), n.layer(i, "mlp.switch_mlp.up_proj.weight"), {d.n_expert, d.n_ff_exp, d.n_embd});
    b.map(blk(i, "ffn_down_exps.weight"), n.layer(i, "mlp.switch_mlp.down_proj.weight"), {d.n_expert, d.n_embd, d.n_ff_exp});
  }
  b.map(blk(i, "ffn_gate_shexp.weight"), n.layer(i, "mlp.shared_expert.gate_proj.weight"), {d.n_ff_shexp, d.n_embd});
  b.map(blk(i, "ffn_up_shexp.weight"), n.layer(i, "mlp.shared_expert.up_proj.weight"), {d.n_ff_shexp, d.n_embd});
  b.map(blk(i, "ffn_down_shexp.weight"), n.layer(i, "mlp.shared_expert.down_proj.weight"), {d.n_embd, d.n_ff_shexp});
  b.map(blk(i, "ffn_gate_inp_shexp.weight"), n.layer(i, "mlp.shared_expert_gate.weight"), {1, d.n_embd}).keep_f32 = true;
}

void describe_dense_mlp(PlanBuilder& b, const Qwen35Names& n, int64_t i, const Qwen35Dims& d) {
  b.map(blk(i, "ffn_gate.weight"), n.layer(i, "mlp.gate_proj.weight"), {d.n_ff, d.n_embd});
  b.map(blk(i, "ffn_up.weight"), n.layer(i, "mlp.up_proj.weight"), {d.n_ff, d.n_embd});
  b.map(blk(i, "ffn_down.weight"), n.layer(i, "mlp.down_proj.weight"), {d.n_embd, d.n_ff});
}

void describe_qwen35(PlanBuilder& b) {
  const Qwen35Names n = find_names(b);
  Qwen35Dims d{};
  d.n_embd = b.cfg_count("hidden_size");
  d.n_layer = b.cfg_count("num_hidden_layers");
  d.n_head = b.cfg_count("num_attention_heads");
  d.n_head_kv = b.cfg_count("num_key_value_heads", d.n_head);
  d.head_dim = b.cfg_count("head_dim", d.n_embd / d.n_head);
  d.n_k_heads = b.cfg_count("linear_num_key_heads");
  d.n_v_heads = b.cfg_count("linear_num_value_heads");
  d.k_head_dim = b.cfg_count("linear_key_head_dim");
  d.v_head_dim = b.cfg_count("linear_value_head_dim");
  d.conv_kernel = b.cfg_count("linear_conv_kernel_dim", 4);
  d.interval = b.cfg_count("full_attention_interval", 4);
  d.n_expert = b.config().contains("num_experts") && b.cfg_int("num_experts", 0) != 0 ? b.cfg_count("num_experts") : 0;
  d.n_ff_exp = d.n_expert ? b.cfg_count("moe_intermediate_size") : 0;
  d.n_ff_shexp = d.n_expert ? b.cfg_count("shared_expert_intermediate_size") : 0;
  d.n_ff = d.n_expert ? 0 : b.cfg_count("intermediate_size");
  d.n_vocab = b.model().require(n.model("embed_tokens.weight")).shape().at(0);
  if (d.n_k_heads <= 0 || d.n_v_heads % d.n_k_heads != 0)
    fail("config.json: linear_num_value_heads {} is not a multiple of linear_num_key_heads {}", d.n_v_heads, d.n_k_heads);
  if (d.k_head_dim != d.v_head_dim)
    fail("config.json: linear_key_head_dim {} != linear_value_head_dim {}; llama.cpp's delta-net needs them equal",
         d.k_head_dim, d.v_head_dim);
  const std::string model_type = b.model().folder().model_type();
  if ((model_type == "qwen3_5_moe" || model_type == "qwen3_5_moe_text") != (d.n_expert > 0))
    fail("config.json: model_type '{}' does not match num_experts {}", model_type, d.n_expert);

  describe_hparams(b, d);
  const ValueOp norm_op = norms_are_raw(b, n, d) ? ValueOp::AddOne : ValueOp::None;

  b.map("token_embd.weight", n.model("embed_tokens.weight"), {d.n_vocab, d.n_embd});
  for (int64_t i = 0; i < d.n_layer; ++i) {
    b.map(blk(i, "attn_norm.weight"), n.layer(i, "input_layernorm.weight"), {d.n_embd}).op = norm_op;
    b.map(blk(i, "post_attention_norm.weight"), n.layer(i, "post_attention_layernorm.weight"), {d.n_embd}).op = norm_op;
    if (is_full_attention(i, d)) describe_full_attention(b, n, i, d, norm_op);
    else describe_delta_net(b, n, i, d);
    if (d.n_expert > 0) describe_moe(b, n, i, d);
    else describe_dense_mlp(b, n, i, d);
  }
  b.map("output_norm.weight", n.model("norm.weight"), {d.n_embd}).op = norm_op;
  b.map_optional("output.weight", n.lm_head, {d.n_vocab, d.n_embd});
  // Not part of the text model llama.cpp runs: vision tower, multi-token-prediction head, rotary buffers.
  b.drop_if([](const std::string& name) {
    return name.starts_with("mtp.") || name.find(".mtp.") != std::string::npos || name.starts_with("model.visual.") ||
           name.starts_with("visual.") || name.starts_with("vision_tower") || name.find("rotary_emb.inv_freq") != std::string::npos;
  });
}

}  // namespace

const Family& qwen35_family() {
  static const Family family{"qwen35",
                             {{"qwen35moe", {"qwen3_5_moe", "qwen3_5_moe_text"}, describe_qwen35},
                              {"qwen35", {"qwen3_5", "qwen3_5_text"}, describe_qwen35}}};
  return family;
}

}  // namespace mlx2gguf
