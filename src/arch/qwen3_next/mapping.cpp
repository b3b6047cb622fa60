// GGUF mapping of the Qwen3-Next family, llama.cpp architecture "qwen3next": Qwen3-Next-80B-A3B (model_type
// qwen3_next, mlx_lm/models/qwen3_next.py), from mlx-lm folders and from the Hugging Face checkpoints they are
// converted from. Both name the decoder "model." and the head "lm_head.weight".
//
//   source                                          GGUF                              transform
//   model.embed_tokens.weight                       token_embd.weight
//   model.norm.weight                               output_norm.weight                +1 if HF layout
//   lm_head.weight (ignored when tied)              output.weight
//   model.layers.N.input_layernorm.weight           blk.N.attn_norm.weight            +1 if HF layout
//   model.layers.N.post_attention_layernorm.weight  blk.N.post_attention_norm.weight  +1 if HF layout
//   full attention ((N+1) % full_attention_interval == 0):
//   self_attn.q_proj.weight [2·Hq·hd, H]            blk.N.attn_q.weight               per head [query | gate], unchanged
//   self_attn.{k,v,o}_proj.weight                   blk.N.attn_{k,v,output}.weight
//   self_attn.{q,k}_norm.weight                     blk.N.attn_{q,k}_norm.weight      +1 if HF layout
//   Gated DeltaNet (other layers):
//   linear_attn.in_proj_qkvz.weight                 blk.N.attn_qkv.weight             rows: all q, all k, all v
//     rows per key head h: [q_h | k_h | v_h | z_h]  blk.N.attn_gate.weight            rows: all z
//   linear_attn.in_proj_ba.weight                   blk.N.ssm_ba.weight               unchanged (per key head [b | a])
//   linear_attn.conv1d.weight [C,K,1] | [C,1,K]     blk.N.ssm_conv1d.weight           [C, K], F32
//   linear_attn.dt_bias                             blk.N.ssm_dt.bias
//   linear_attn.A_log                               blk.N.ssm_a                       -exp(A_log)
//   linear_attn.norm.weight                         blk.N.ssm_norm.weight             never shifted
//   linear_attn.out_proj.weight                     blk.N.ssm_out.weight
//   MoE (every layer):
//   mlp.gate.weight                                 blk.N.ffn_gate_inp.weight         F32
//   mlp.switch_mlp.{gate,up,down}_proj.weight       blk.N.ffn_{gate,up,down}_exps.weight
//     or HF mlp.experts.E.{gate,up,down}_proj.weight  stacked over E
//   mlp.shared_expert.{gate,up,down}_proj.weight    blk.N.ffn_{gate,up,down}_shexp.weight
//   mlp.shared_expert_gate.weight [1, H]            blk.N.ffn_gate_inp_shexp.weight   F32
// Multi-token-prediction tensors (mtp.*) are dropped: no nextn layers are written.
//
// Why the qkvz split: llama.cpp's qwen3next graph reads attn_qkv as the convolution's input channels, in the order
// mlx-lm concatenates them after fix_query_key_value_ordering (every key head's q, then every k, then every value
// head's v), and attn_gate as z. (Its legacy tensor ssm_in takes the raw fused rows and splits them per key head
// itself; a reordered ssm_in or a raw attn_qkv loads just as well and computes nonsense.) Value heads stay grouped
// by key head, as qwen3next broadcasts key head h to value heads h·r .. h·r + r − 1 (unlike Qwen3.5's tiled order).
// Why the +1: the model's RMSNorms compute (1 + w); mlx-lm's sanitize stores 1 + w, Hugging Face files store w.
// linear_attn.norm is a plain weight in both.
#include <algorithm>

#include "plan/architecture.h"
#include "plan/permutations.h"
#include "util/error.h"

namespace mlx2gguf {

namespace {

struct NextDims {
  int64_t n_embd, n_layer, n_head, n_head_kv, head_dim, n_vocab, n_ff;
  int64_t n_k_heads, n_v_heads, head_k_dim, head_v_dim, conv_kernel, interval;
  int64_t n_expert, n_expert_used, n_ff_exp, n_ff_shexp;
  int64_t v_per_k() const { return n_v_heads / n_k_heads; }
  int64_t key_dim() const { return n_k_heads * head_k_dim; }
  int64_t value_dim() const { return n_v_heads * head_v_dim; }
  int64_t conv_dim() const { return 2 * key_dim() + value_dim(); }
  // Rows of in_proj_qkvz per key head: q (dk), k (dk), then the v and z of its value heads (r·dv each).
  int64_t qkvz_group() const { return 2 * head_k_dim + 2 * v_per_k() * head_v_dim; }
};

std::string layer(int64_t i, const std::string& name) { return fmt::format("model.layers.{}.{}", i, name); }
std::string blk(int64_t i, const std::string& name) { return fmt::format("blk.{}.{}", i, name); }

bool is_full_attention(int64_t i, const NextDims& d) { return (i + 1) % d.interval == 0; }

// Rows [offset, offset + width) of each of `groups` consecutive groups of `group_rows` rows, group after group.
IndexMap rows_of_each_group(int64_t groups, int64_t group_rows, int64_t offset, int64_t width) {
  IndexMap map;
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t r = 0; r < width; ++r) map.push_back(g * group_rows + offset + r);
  return map;
}

// The convolution's channels out of in_proj_qkvz: every key head's q, every key head's k, every value head's v.
IndexMap qkv_rows(const NextDims& d) {
  const int64_t group = d.qkvz_group(), dk = d.head_k_dim, rv = d.v_per_k() * d.head_v_dim;
  IndexMap map = rows_of_each_group(d.n_k_heads, group, 0, dk);
  for (const IndexMap& part : {rows_of_each_group(d.n_k_heads, group, dk, dk), rows_of_each_group(d.n_k_heads, group, 2 * dk, rv)})
    map.insert(map.end(), part.begin(), part.end());
  return map;
}

// The output gate z out of in_proj_qkvz, value heads in their grouped order.
IndexMap z_rows(const NextDims& d) {
  const int64_t rv = d.v_per_k() * d.head_v_dim;
  return rows_of_each_group(d.n_k_heads, d.qkvz_group(), 2 * d.head_k_dim + rv, rv);
}

// mlx-lm's sanitize runs only on a checkpoint that still has per-expert tensors: it then stacks the experts, moves
// conv1d to [C, K, 1] and stores 1 + w for the zero-centred norms. A folder mlx-lm saved has been through it.
bool is_hugging_face_layout(const PlanBuilder& b) { return b.has("model.layers.0.mlp.experts.0.up_proj.weight"); }

// rope_theta and partial_rotary_factor as mlx-lm reads them (top level); a transformers-5 config keeps them only in
// rope_parameters, which is read when the top level lacks them.
double rope_number(const PlanBuilder& b, const std::string& key) {
  const auto& cfg = b.config();
  if (cfg.contains(key) || !cfg.contains("rope_parameters") || !cfg["rope_parameters"].is_object()) return b.cfg_float(key);
  return config_value<double>(cfg["rope_parameters"], key);
}

// The rope scaling mlx-lm builds (rope_scaling; rope_parameters in a transformers-5 config): plain or linear, which
// llama.cpp expresses with rope.scaling.*; anything else changes the rotation in a way this mapping does not carry.
void describe_rope_scaling(PlanBuilder& b) {
  const auto& cfg = b.config();
  nlohmann::json scaling;
  if (cfg.contains("rope_scaling") && !cfg["rope_scaling"].is_null()) scaling = cfg["rope_scaling"];
  else if (cfg.contains("rope_parameters") && !cfg["rope_parameters"].is_null()) scaling = cfg["rope_parameters"];
  if (scaling.is_null()) return;
  if (!scaling.is_object()) fail("config.json: rope_scaling is not an object: {}", scaling.dump());
  // mlx-lm's initialize_rope: a non-empty "type" wins over "rope_type".
  std::string type = "default";
  if (scaling.contains("type") && scaling["type"].is_string() && !scaling["type"].get<std::string>().empty())
    type = scaling["type"].get<std::string>();
  else if (scaling.contains("rope_type") && scaling["rope_type"].is_string())
    type = scaling["rope_type"].get<std::string>();
  if (type == "default") return;
  if (type == "linear") {
    const double factor = config_value<double>(scaling, "factor");
    if (!(factor > 0.0)) fail("config.json: rope_scaling factor must be positive, got {}", factor);
    b.kv_str("rope.scaling.type", "linear");
    b.kv_f32("rope.scaling.factor", factor);
    return;
  }
  fail("config.json: rope scaling type '{}' is not supported for qwen3_next (supported: default, linear): the GGUF "
       "file would rotate positions differently from mlx-lm",
       type);
}

// Every decoder layer of llama.cpp's qwen3next is a mixture of experts; mlx-lm makes layer i a dense MLP when it is
// listed in mlp_only_layers or (i + 1) is not a multiple of decoder_sparse_step.
void check_every_layer_is_moe(const PlanBuilder& b, const NextDims& d) {
  const int64_t step = b.cfg_count("decoder_sparse_step", 1);
  std::vector<int64_t> dense;
  const auto& cfg = b.config();
  if (cfg.contains("mlp_only_layers") && !cfg["mlp_only_layers"].is_null()) {
    if (!cfg["mlp_only_layers"].is_array()) fail("config.json: mlp_only_layers is not a list");
    for (const auto& entry : cfg["mlp_only_layers"]) {
      if (!entry.is_number_integer()) fail("config.json: mlp_only_layers holds a non-integer: {}", entry.dump());
      const int64_t i = entry.get<int64_t>();
      if (i >= 0 && i < d.n_layer) dense.push_back(i);
    }
  }
  for (int64_t i = 0; i < d.n_layer; ++i)
    if ((i + 1) % step != 0 && std::find(dense.begin(), dense.end(), i) == dense.end()) dense.push_back(i);
  if (!dense.empty())
    fail("config.json: decoder_sparse_step {} and mlp_only_layers make layer {} a dense MLP; llama.cpp's qwen3next "
         "runs a mixture of experts in every layer",
         step, *std::min_element(dense.begin(), dense.end()));
}

void describe_hparams(PlanBuilder& b, const NextDims& d) {
  const double partial = rope_number(b, "partial_rotary_factor");
  const auto rope_dims = static_cast<int64_t>(static_cast<double>(d.head_dim) * partial);
  if (rope_dims <= 0 || rope_dims > d.head_dim || rope_dims % 2 != 0)
    fail("config.json: head_dim {} x partial_rotary_factor {} gives {} rotated dims; need an even count in [2, {}]",
         d.head_dim, partial, rope_dims, d.head_dim);

  b.kv_u32("context_length", b.cfg_count("max_position_embeddings"));
  b.kv_u32("embedding_length", d.n_embd);
  b.kv_u32("block_count", d.n_layer);
  if (d.n_ff > 0) b.kv_u32("feed_forward_length", d.n_ff);
  b.kv_u32("attention.head_count", d.n_head);
  b.kv_u32("attention.head_count_kv", d.n_head_kv);
  b.kv_u32("attention.key_length", d.head_dim);
  b.kv_u32("attention.value_length", d.head_dim);
  b.kv_f32("attention.layer_norm_rms_epsilon", b.cfg_float("rms_norm_eps"));
  b.kv_f32("rope.freq_base", rope_number(b, "rope_theta"));  // llama.cpp's default 10000 is never right here
  b.kv_u32("rope.dimension_count", rope_dims);
  describe_rope_scaling(b);
  b.kv_u32("expert_count", d.n_expert);
  b.kv_u32("expert_used_count", d.n_expert_used);
  b.kv_u32("expert_feed_forward_length", d.n_ff_exp);
  b.kv_u32("expert_shared_feed_forward_length", d.n_ff_shexp);
  b.kv_u32("ssm.conv_kernel", d.conv_kernel);
  b.kv_u32("ssm.state_size", d.head_k_dim);
  b.kv_u32("ssm.group_count", d.n_k_heads);
  b.kv_u32("ssm.time_step_rank", d.n_v_heads);
  b.kv_u32("ssm.inner_size", d.value_dim());
  b.kv_u32("full_attention_interval", d.interval);
}

void describe_full_attention(PlanBuilder& b, int64_t i, const NextDims& d, ValueOp norm_op) {
  const int64_t q_rows = d.n_head * d.head_dim, kv_rows = d.n_head_kv * d.head_dim;
  b.map(blk(i, "attn_q.weight"), layer(i, "self_attn.q_proj.weight"), {2 * q_rows, d.n_embd});
  b.map(blk(i, "attn_k.weight"), layer(i, "self_attn.k_proj.weight"), {kv_rows, d.n_embd});
  b.map(blk(i, "attn_v.weight"), layer(i, "self_attn.v_proj.weight"), {kv_rows, d.n_embd});
  b.map(blk(i, "attn_output.weight"), layer(i, "self_attn.o_proj.weight"), {d.n_embd, q_rows});
  b.map(blk(i, "attn_q_norm.weight"), layer(i, "self_attn.q_norm.weight"), {d.head_dim}).op = norm_op;
  b.map(blk(i, "attn_k_norm.weight"), layer(i, "self_attn.k_norm.weight"), {d.head_dim}).op = norm_op;
}

void describe_delta_net(PlanBuilder& b, int64_t i, const NextDims& d) {
  const std::string qkvz = layer(i, "linear_attn.in_proj_qkvz.weight");
  const int64_t qkvz_rows = d.n_k_heads * d.qkvz_group();
  auto& qkv = b.map(blk(i, "attn_qkv.weight"), qkvz, {qkvz_rows, d.n_embd});
  auto& gate = b.map(blk(i, "attn_gate.weight"), qkvz, {qkvz_rows, d.n_embd});
  // Built once the tensor has confirmed the sizes config.json claims.
  qkv.shape = {d.conv_dim(), d.n_embd};
  qkv.row_map = qkv_rows(d);
  gate.shape = {d.value_dim(), d.n_embd};
  gate.row_map = z_rows(d);
  b.map(blk(i, "ssm_ba.weight"), layer(i, "linear_attn.in_proj_ba.weight"), {2 * d.n_v_heads, d.n_embd});

  const std::string conv = layer(i, "linear_attn.conv1d.weight");
  const auto& stored = b.model().require(conv).shape();
  const bool hf_conv = stored.size() == 3 && stored[1] == 1 && d.conv_kernel != 1;
  const std::vector<int64_t> conv_shape = hf_conv ? std::vector<int64_t>{d.conv_dim(), 1, d.conv_kernel}
                                                  : std::vector<int64_t>{d.conv_dim(), d.conv_kernel, 1};
  // [C, K, 1] and [C, 1, K] hold the taps in the same order.
  b.map_reshaped(blk(i, "ssm_conv1d.weight"), conv, conv_shape, {d.conv_dim(), d.conv_kernel}).keep_f32 = true;

  b.map(blk(i, "ssm_dt.bias"), layer(i, "linear_attn.dt_bias"), {d.n_v_heads});
  b.map(blk(i, "ssm_a"), layer(i, "linear_attn.A_log"), {d.n_v_heads}).op = ValueOp::NegExp;
  b.map(blk(i, "ssm_norm.weight"), layer(i, "linear_attn.norm.weight"), {d.head_v_dim});
  b.map(blk(i, "ssm_out.weight"), layer(i, "linear_attn.out_proj.weight"), {d.n_embd, d.value_dim()});
}

void describe_moe(PlanBuilder& b, int64_t i, const NextDims& d, bool hf) {
  b.map(blk(i, "ffn_gate_inp.weight"), layer(i, "mlp.gate.weight"), {d.n_expert, d.n_embd}).keep_f32 = true;
  for (const char* proj : {"gate", "up", "down"}) {
    const bool down = std::string(proj) == "down";
    const std::vector<int64_t> item = down ? std::vector<int64_t>{d.n_embd, d.n_ff_exp} : std::vector<int64_t>{d.n_ff_exp, d.n_embd};
    const std::string gguf = blk(i, fmt::format("ffn_{}_exps.weight", proj));
    if (hf) {
      std::vector<std::string> experts;
      for (int64_t e = 0; e < d.n_expert; ++e) experts.push_back(layer(i, fmt::format("mlp.experts.{}.{}_proj.weight", e, proj)));
      b.stack(gguf, experts, item);
    } else {
      b.map(gguf, layer(i, fmt::format("mlp.switch_mlp.{}_proj.weight", proj)), {d.n_expert, item[0], item[1]});
    }
  }
  b.map(blk(i, "ffn_gate_shexp.weight"), layer(i, "mlp.shared_expert.gate_proj.weight"), {d.n_ff_shexp, d.n_embd});
  b.map(blk(i, "ffn_up_shexp.weight"), layer(i, "mlp.shared_expert.up_proj.weight"), {d.n_ff_shexp, d.n_embd});
  b.map(blk(i, "ffn_down_shexp.weight"), layer(i, "mlp.shared_expert.down_proj.weight"), {d.n_embd, d.n_ff_shexp});
  b.map(blk(i, "ffn_gate_inp_shexp.weight"), layer(i, "mlp.shared_expert_gate.weight"), {1, d.n_embd}).keep_f32 = true;
}

void describe_qwen3_next(PlanBuilder& b) {
  NextDims d{};
  d.n_embd = b.cfg_count("hidden_size");
  d.n_layer = b.cfg_count("num_hidden_layers");
  d.n_head = b.cfg_count("num_attention_heads");
  d.n_head_kv = b.cfg_count("num_key_value_heads");
  d.head_dim = b.cfg_count("head_dim");
  d.n_ff = b.config().contains("intermediate_size") ? b.cfg_count("intermediate_size") : 0;
  d.n_k_heads = b.cfg_count("linear_num_key_heads");
  d.n_v_heads = b.cfg_count("linear_num_value_heads");
  d.head_k_dim = b.cfg_count("linear_key_head_dim");
  d.head_v_dim = b.cfg_count("linear_value_head_dim");
  d.conv_kernel = b.cfg_count("linear_conv_kernel_dim");
  d.interval = b.cfg_count("full_attention_interval", 4);
  d.n_expert = b.cfg_count("num_experts");
  d.n_expert_used = b.cfg_count("num_experts_per_tok");
  d.n_ff_exp = b.cfg_count("moe_intermediate_size");
  d.n_ff_shexp = b.cfg_count("shared_expert_intermediate_size");
  d.n_vocab = b.model().require("model.embed_tokens.weight").shape().at(0);

  if (d.n_v_heads % d.n_k_heads != 0)
    fail("config.json: linear_num_value_heads {} is not a multiple of linear_num_key_heads {}", d.n_v_heads, d.n_k_heads);
  if (d.head_k_dim != d.head_v_dim)
    fail("config.json: linear_key_head_dim {} != linear_value_head_dim {}; llama.cpp's qwen3next needs them equal",
         d.head_k_dim, d.head_v_dim);
  if (d.n_head % d.n_head_kv != 0)
    fail("config.json: num_attention_heads {} is not a multiple of num_key_value_heads {}", d.n_head, d.n_head_kv);
  if (d.n_expert_used > d.n_expert)
    fail("config.json: num_experts_per_tok {} exceeds num_experts {}", d.n_expert_used, d.n_expert);
  // What llama.cpp's qwen3next graph hard-codes, and mlx-lm computes only under these settings.
  if (b.cfg_bool("attention_bias", false))
    fail("config.json: attention_bias is true, but llama.cpp's qwen3next adds no attention biases");
  if (!b.cfg_bool("norm_topk_prob", false))
    fail("config.json: norm_topk_prob is {} (mlx-lm's default when absent is false), but llama.cpp's qwen3next always "
         "renormalizes the chosen experts' weights",
         b.config().contains("norm_topk_prob") ? b.config()["norm_topk_prob"].dump() : "absent");
  check_every_layer_is_moe(b, d);

  describe_hparams(b, d);
  const bool hf = is_hugging_face_layout(b);
  const ValueOp norm_op = hf ? ValueOp::AddOne : ValueOp::None;

  b.map("token_embd.weight", "model.embed_tokens.weight", {d.n_vocab, d.n_embd});
  for (int64_t i = 0; i < d.n_layer; ++i) {
    b.map(blk(i, "attn_norm.weight"), layer(i, "input_layernorm.weight"), {d.n_embd}).op = norm_op;
    b.map(blk(i, "post_attention_norm.weight"), layer(i, "post_attention_layernorm.weight"), {d.n_embd}).op = norm_op;
    if (is_full_attention(i, d)) describe_full_attention(b, i, d, norm_op);
    else describe_delta_net(b, i, d);
    describe_moe(b, i, d, hf);
  }
  b.map("output_norm.weight", "model.norm.weight", {d.n_embd}).op = norm_op;
  // mlx-lm multiplies by the embedding when tie_word_embeddings (default false) is set, whatever lm_head holds.
  const bool tied = b.cfg_bool("tie_word_embeddings", false);
  if (!tied) b.map("output.weight", "lm_head.weight", {d.n_vocab, d.n_embd});
  // Not part of the model llama.cpp runs: the multi-token-prediction head, rotary buffers, a tied head's copy.
  b.drop_if([tied](const std::string& name) {
    return name.find("mtp.") != std::string::npos || name.find("rotary_emb.inv_freq") != std::string::npos ||
           (tied && name == "lm_head.weight");
  });
}

}  // namespace

const Family& qwen3_next_family() {
  static const Family family{"qwen3_next", {{"qwen3next", {"qwen3_next"}, describe_qwen3_next}}};
  return family;
}

}  // namespace mlx2gguf
