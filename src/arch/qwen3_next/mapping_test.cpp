// The Qwen3-Next family's GGUF mapping, checked on generated mlx-lm and Hugging Face folders: tensor names by layer
// kind, the split of the fused qkvz projection, ssm_a, norm offsets, routers, per-expert stacking, GGUF keys and the
// configurations it refuses.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "convert.h"
#include "gen/tiny_model.h"
#include "plan/plan_test_support.h"
#include "plan/planner.h"
#include "read/source_model.h"
#include "read/test_support.h"
#include "util/error.h"

namespace mlx2gguf {
namespace {

using namespace plan_test;

// 4 layers (linear, linear, linear, full; interval 4), hidden 128, 4 query heads and 2 KV heads of 64, linear
// attention with 2 key heads and 4 value heads of 32 (2 value heads per key head), kernel 4, 4 experts of width 64,
// shared expert 48.
TinyModelSpec next_spec(const std::string& layout) {
  TinyModelSpec s;
  s.model_type = "qwen3_next";
  s.layout = layout;
  s.layers = 4;
  s.full_attention_interval = 4;
  s.hidden = 128;
  s.heads = 4;
  s.kv_heads = 2;
  s.head_dim = 64;
  s.intermediate = 96;
  s.linear_num_key_heads = 2;
  s.linear_num_value_heads = 4;
  s.linear_key_head_dim = 32;
  s.linear_value_head_dim = 32;
  s.linear_conv_kernel_dim = 4;
  s.experts = 4;
  s.experts_per_tok = 2;
  s.moe_intermediate = 64;
  s.shared_expert_intermediate = 48;
  s.seed = 9;
  return s;
}

// Per key head, in_proj_qkvz has q (32), k (32), v of 2 value heads (64), z of them (64): 192 rows.
constexpr int64_t kGroup = 192, kKeyDim = 2 * 32, kValueDim = 4 * 32, kConv = 2 * kKeyDim + kValueDim;

std::vector<float> recipe_values(const TensorRecipe& recipe) {
  std::vector<float> values(static_cast<size_t>(recipe.row_count() * recipe.row_length()));
  read_recipe_rows(recipe, 0, recipe.row_count(), values.data());
  return values;
}

void edit_config(const fs::path& dir, const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json config = nlohmann::json::parse(std::ifstream(dir / "config.json"));
  edit(config);
  std::ofstream(dir / "config.json") << config.dump(2);
}

class Qwen3NextPlan : public ::testing::Test {};

TEST_F(Qwen3NextPlan, TensorNamesFollowTheLayerKind) {
  TempDir temp;
  const auto p = plan_model(write_model(temp, "tiny-next", next_spec("mlx")));
  EXPECT_TRUE(is_str(*p, "general.architecture", "qwen3next"));
  std::set<std::string> expected = {"token_embd.weight", "output_norm.weight", "output.weight"};
  for (int i = 0; i < 4; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    for (const char* name : {"attn_norm.weight", "post_attention_norm.weight", "ffn_gate_inp.weight", "ffn_gate_exps.weight",
                             "ffn_up_exps.weight", "ffn_down_exps.weight", "ffn_gate_shexp.weight", "ffn_up_shexp.weight",
                             "ffn_down_shexp.weight", "ffn_gate_inp_shexp.weight"})
      expected.insert(b + name);
    if (i == 3) {
      for (const char* name : {"attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight", "attn_q_norm.weight",
                               "attn_k_norm.weight"})
        expected.insert(b + name);
    } else {
      for (const char* name : {"attn_qkv.weight", "attn_gate.weight", "ssm_ba.weight", "ssm_conv1d.weight", "ssm_dt.bias",
                               "ssm_a", "ssm_norm.weight", "ssm_out.weight"})
        expected.insert(b + name);
    }
  }
  EXPECT_EQ(p->names(), expected);
  EXPECT_FALSE(p->has("blk.0.ssm_in.weight"));  // the legacy fused tensor is not written
  const std::map<std::string, std::vector<int64_t>> shapes = {
      {"blk.3.attn_q.weight", {2 * 4 * 64, 128}},  // [query | gate] per head, unpermuted
      {"blk.3.attn_k.weight", {2 * 64, 128}},
      {"blk.3.attn_output.weight", {128, 4 * 64}},
      {"blk.3.attn_q_norm.weight", {64}},
      {"blk.0.attn_qkv.weight", {kConv, 128}},
      {"blk.0.attn_gate.weight", {kValueDim, 128}},
      {"blk.0.ssm_ba.weight", {8, 128}},
      {"blk.0.ssm_conv1d.weight", {kConv, 4}},
      {"blk.0.ssm_dt.bias", {4}},
      {"blk.0.ssm_a", {4}},
      {"blk.0.ssm_norm.weight", {32}},
      {"blk.0.ssm_out.weight", {128, kValueDim}},
      {"blk.1.ffn_gate_inp.weight", {4, 128}},
      {"blk.1.ffn_gate_exps.weight", {4, 64, 128}},
      {"blk.1.ffn_up_exps.weight", {4, 64, 128}},
      {"blk.1.ffn_down_exps.weight", {4, 128, 64}},
      {"blk.1.ffn_gate_shexp.weight", {48, 128}},
      {"blk.1.ffn_down_shexp.weight", {128, 48}},
      {"blk.1.ffn_gate_inp_shexp.weight", {1, 128}},
  };
  for (const auto& [name, shape] : shapes) EXPECT_EQ(p->tensor(name).shape, shape) << name;
  EXPECT_EQ(p->tensor("blk.0.ssm_conv1d.weight").ne(), (std::vector<int64_t>{4, kConv}));
  EXPECT_TRUE(p->tensor("blk.3.attn_q.weight").row_map.empty());  // NEOX rope: no permutation
}

TEST_F(Qwen3NextPlan, GgufKeysCarryTheHyperParameters) {
  TempDir temp;
  const auto p = plan_model(write_model(temp, "tiny-next", next_spec("mlx")));
  const std::string a = "qwen3next.";
  EXPECT_TRUE(is_u32(*p, a + "context_length", 2048));
  EXPECT_TRUE(is_u32(*p, a + "embedding_length", 128));
  EXPECT_TRUE(is_u32(*p, a + "block_count", 4));
  EXPECT_TRUE(is_u32(*p, a + "feed_forward_length", 96));
  EXPECT_TRUE(is_u32(*p, a + "attention.head_count", 4));
  EXPECT_TRUE(is_u32(*p, a + "attention.head_count_kv", 2));
  EXPECT_TRUE(is_u32(*p, a + "attention.key_length", 64));
  EXPECT_TRUE(is_u32(*p, a + "attention.value_length", 64));
  EXPECT_TRUE(is_f32(*p, a + "attention.layer_norm_rms_epsilon", 1e-6f));
  EXPECT_TRUE(is_f32(*p, a + "rope.freq_base", 1e7f));
  EXPECT_TRUE(is_u32(*p, a + "rope.dimension_count", 16));  // 64 · 0.25
  EXPECT_TRUE(is_u32(*p, a + "expert_count", 4));
  EXPECT_TRUE(is_u32(*p, a + "expert_used_count", 2));
  EXPECT_TRUE(is_u32(*p, a + "expert_feed_forward_length", 64));
  EXPECT_TRUE(is_u32(*p, a + "expert_shared_feed_forward_length", 48));
  EXPECT_TRUE(is_u32(*p, a + "ssm.conv_kernel", 4));
  EXPECT_TRUE(is_u32(*p, a + "ssm.state_size", 32));
  EXPECT_TRUE(is_u32(*p, a + "ssm.group_count", 2));
  EXPECT_TRUE(is_u32(*p, a + "ssm.time_step_rank", 4));
  EXPECT_TRUE(is_u32(*p, a + "ssm.inner_size", kValueDim));
  EXPECT_TRUE(is_u32(*p, a + "full_attention_interval", 4));
  for (const char* absent : {"rope.scaling.type", "rope.scaling.factor", "rope.dimension_sections", "nextn_predict_layers",
                             "expert_weights_norm", "expert_weights_scale"})
    EXPECT_EQ(p->plan.metadata.get(a + absent), nullptr) << absent;
  EXPECT_TRUE(is_str(*p, "tokenizer.ggml.model", "gpt2"));
}

// Per key head h the source rows are [q_h | k_h | v_h | z_h]; attn_qkv holds all q, all k, all v, attn_gate all z.
TEST_F(Qwen3NextPlan, FusedQkvzIsSplitIntoConvolutionChannelsAndGate) {
  TempDir temp;
  const TinyModelSpec spec = next_spec("mlx");
  const auto p = plan_model(write_model(temp, "tiny-next", spec));
  const TensorRecipe& qkv = p->tensor("blk.1.attn_qkv.weight");
  const TensorRecipe& gate = p->tensor("blk.1.attn_gate.weight");
  IndexMap expected_qkv;
  for (int64_t i = 0; i < 32; ++i) expected_qkv.push_back(i);                // q of key head 0
  for (int64_t i = 0; i < 32; ++i) expected_qkv.push_back(kGroup + i);       // q of key head 1
  for (int64_t i = 0; i < 32; ++i) expected_qkv.push_back(32 + i);           // k of key head 0
  for (int64_t i = 0; i < 32; ++i) expected_qkv.push_back(kGroup + 32 + i);  // k of key head 1
  for (int64_t i = 0; i < 64; ++i) expected_qkv.push_back(64 + i);           // v of value heads 0, 1
  for (int64_t i = 0; i < 64; ++i) expected_qkv.push_back(kGroup + 64 + i);  // v of value heads 2, 3
  EXPECT_EQ(qkv.row_map, expected_qkv);
  IndexMap expected_gate;
  for (int64_t i = 0; i < 64; ++i) expected_gate.push_back(128 + i);
  for (int64_t i = 0; i < 64; ++i) expected_gate.push_back(kGroup + 128 + i);
  EXPECT_EQ(gate.row_map, expected_gate);
  ASSERT_EQ(qkv.sources.size(), 1u);
  EXPECT_EQ(qkv.sources[0]->name(), "model.layers.1.linear_attn.in_proj_qkvz.weight");
  EXPECT_EQ(gate.sources[0]->name(), "model.layers.1.linear_attn.in_proj_qkvz.weight");
  EXPECT_TRUE(qkv.column_map.empty());
  EXPECT_EQ(qkv.op, ValueOp::None);

  // The values: row r of attn_qkv is source row expected_qkv[r].
  const std::vector<float> source = gen::tiny_model_float_weights(spec, "model.layers.1.linear_attn.in_proj_qkvz.weight");
  const std::vector<float> got_qkv = recipe_values(qkv), got_gate = recipe_values(gate);
  ASSERT_EQ(source.size(), static_cast<size_t>(2 * kGroup * 128));
  for (int64_t r = 0; r < kConv; ++r)
    for (int64_t c = 0; c < 128; ++c) ASSERT_EQ(got_qkv[r * 128 + c], source[expected_qkv[r] * 128 + c]) << r;
  for (int64_t r = 0; r < kValueDim; ++r)
    for (int64_t c = 0; c < 128; ++c) ASSERT_EQ(got_gate[r * 128 + c], source[expected_gate[r] * 128 + c]) << r;
}

// qwen3next keeps value heads grouped by key head: b/a, dt_bias, A_log, the norm and out_proj are not reordered.
TEST_F(Qwen3NextPlan, GatedDeltaNetParametersKeepTheirOrder) {
  TempDir temp;
  const TinyModelSpec spec = next_spec("mlx");
  const auto p = plan_model(write_model(temp, "tiny-next", spec), OutType::Q8_0);
  for (const char* name : {"blk.2.ssm_ba.weight", "blk.2.ssm_dt.bias", "blk.2.ssm_a", "blk.2.ssm_norm.weight",
                           "blk.2.ssm_out.weight", "blk.2.ssm_conv1d.weight"}) {
    EXPECT_TRUE(p->tensor(name).row_map.empty()) << name;
    EXPECT_TRUE(p->tensor(name).column_map.empty()) << name;
  }
  EXPECT_EQ(p->tensor("blk.2.ssm_ba.weight").sources[0]->name(), "model.layers.2.linear_attn.in_proj_ba.weight");
  EXPECT_EQ(p->tensor("blk.2.ssm_ba.weight").type, GgmlType::Q8_0);
  EXPECT_EQ(p->tensor("blk.2.ssm_conv1d.weight").type, GgmlType::F32);
  EXPECT_EQ(p->tensor("blk.2.ssm_a").type, GgmlType::F32);
  EXPECT_EQ(p->tensor("blk.2.ssm_dt.bias").type, GgmlType::F32);
  EXPECT_EQ(p->tensor("blk.2.ssm_norm.weight").op, ValueOp::None);
  EXPECT_EQ(p->tensor("blk.2.attn_qkv.weight").type, GgmlType::Q8_0);

  const TensorRecipe& a = p->tensor("blk.2.ssm_a");
  EXPECT_EQ(a.op, ValueOp::NegExp);
  const std::vector<float> a_log = gen::tiny_model_float_weights(spec, "model.layers.2.linear_attn.A_log");
  const std::vector<float> got = recipe_values(a);
  ASSERT_EQ(got.size(), 4u);
  for (int j = 0; j < 4; ++j) EXPECT_FLOAT_EQ(got[j], -std::exp(a_log[j])) << "value head " << j;
  EXPECT_EQ(recipe_values(p->tensor("blk.2.ssm_dt.bias")), gen::tiny_model_float_weights(spec, "model.layers.2.linear_attn.dt_bias"));
  // conv1d [C, K, 1] read as [C, K]: the same values in the same order.
  EXPECT_EQ(recipe_values(p->tensor("blk.2.ssm_conv1d.weight")),
            gen::tiny_model_float_weights(spec, "model.layers.2.linear_attn.conv1d.weight"));
}

TEST_F(Qwen3NextPlan, RoutersStayF32) {
  TempDir temp;
  const auto p = plan_model(write_model(temp, "tiny-next", next_spec("mlx")), OutType::Q8_0);
  for (int i = 0; i < 4; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    EXPECT_EQ(p->tensor(b + "ffn_gate_inp.weight").type, GgmlType::F32);
    EXPECT_EQ(p->tensor(b + "ffn_gate_inp_shexp.weight").type, GgmlType::F32);
    EXPECT_EQ(p->tensor(b + "ffn_gate_exps.weight").type, GgmlType::Q8_0);
    EXPECT_EQ(p->tensor(b + "ffn_up_shexp.weight").type, GgmlType::Q8_0);
    EXPECT_EQ(p->tensor(b + "ffn_down_shexp.weight").type, GgmlType::F16);  // rows of 48: no whole Q8_0 blocks
  }
}

// A 4-bit folder: the 8-bit routers (mlx-lm's predicate) are dequantized to F32; the qkvz split moves packed rows.
TEST_F(Qwen3NextPlan, QuantizedFolderRepacksTheSplitProjection) {
  TempDir temp;
  TinyModelSpec spec = next_spec("mlx");
  spec.quant = gen::QuantRecipe::parse("affine:4:64");
  const auto p = plan_model(write_model(temp, "tiny-next-q4", spec));
  const TensorRecipe& router = p->tensor("blk.0.ffn_gate_inp.weight");
  ASSERT_TRUE(router.sources[0]->quant());
  EXPECT_EQ(router.sources[0]->quant()->bits, 8);
  EXPECT_EQ(router.type, GgmlType::F32);
  EXPECT_EQ(p->tensor("blk.0.ffn_gate_inp_shexp.weight").type, GgmlType::F32);
  for (const char* name : {"blk.0.attn_qkv.weight", "blk.0.attn_gate.weight", "blk.0.ssm_ba.weight", "blk.0.ffn_up_exps.weight"}) {
    EXPECT_EQ(p->tensor(name).type, GgmlType::Q4_1) << name;
    EXPECT_TRUE(p->tensor(name).repack) << name;
  }
}

const char* const kShiftedNorms[] = {"blk.0.attn_norm.weight", "blk.0.post_attention_norm.weight", "blk.3.attn_norm.weight",
                                     "blk.3.attn_q_norm.weight", "blk.3.attn_k_norm.weight", "output_norm.weight"};

TEST_F(Qwen3NextPlan, MlxLayoutNormsAreAlreadyShifted) {
  TempDir temp;
  const TinyModelSpec spec = next_spec("mlx");
  const auto p = plan_model(write_model(temp, "tiny-next", spec));
  for (const char* name : kShiftedNorms) EXPECT_EQ(p->tensor(name).op, ValueOp::None) << name;
  for (int i = 0; i < 3; ++i) EXPECT_EQ(p->tensor("blk." + std::to_string(i) + ".ssm_norm.weight").op, ValueOp::None);
  // mlx-lm stored 1 + w: the values go through as they are, around 1.
  const std::vector<float> stored = gen::tiny_model_float_weights(spec, "model.norm.weight");
  EXPECT_EQ(recipe_values(p->tensor("output_norm.weight")), stored);
}

TEST_F(Qwen3NextPlan, HuggingFaceLayoutNormsGetPlusOneExceptTheGatedNorm) {
  TempDir temp;
  TinyModelSpec spec = next_spec("hf");
  spec.hf_extra_tensors = true;  // the multi-token-prediction head: dropped, not an error
  const auto p = plan_model(write_model(temp, "tiny-next-hf", spec));
  for (const char* name : kShiftedNorms) EXPECT_EQ(p->tensor(name).op, ValueOp::AddOne) << name;
  for (int i = 0; i < 3; ++i) EXPECT_EQ(p->tensor("blk." + std::to_string(i) + ".ssm_norm.weight").op, ValueOp::None);
  for (const auto& t : p->plan.tensors) {
    EXPECT_EQ(t.name.find("mtp"), std::string::npos) << t.name;
    for (const SourceTensor* source : t.sources) EXPECT_EQ(source->name().find("mtp."), std::string::npos) << t.name;
  }
  const std::vector<float> raw = gen::tiny_model_float_weights(spec, "model.layers.3.self_attn.q_norm.weight");
  const std::vector<float> got = recipe_values(p->tensor("blk.3.attn_q_norm.weight"));
  ASSERT_EQ(got.size(), raw.size());
  for (size_t i = 0; i < raw.size(); ++i) EXPECT_EQ(got[i], 1.0f + raw[i]) << i;
  EXPECT_EQ(recipe_values(p->tensor("blk.1.ssm_norm.weight")), gen::tiny_model_float_weights(spec, "model.layers.1.linear_attn.norm.weight"));
  // The [C, 1, K] kernel is read as [C, K].
  EXPECT_EQ(p->tensor("blk.0.ssm_conv1d.weight").shape, (std::vector<int64_t>{kConv, 4}));
  EXPECT_EQ(recipe_values(p->tensor("blk.0.ssm_conv1d.weight")),
            gen::tiny_model_float_weights(spec, "model.layers.0.linear_attn.conv1d.weight"));
}

TEST_F(Qwen3NextPlan, HuggingFacePerExpertTensorsAreStacked) {
  TempDir temp;
  const TinyModelSpec spec = next_spec("hf");
  const auto p = plan_model(write_model(temp, "tiny-next-hf", spec));
  for (const char* proj : {"gate", "up", "down"}) {
    const TensorRecipe& t = p->tensor(fmt::format("blk.2.ffn_{}_exps.weight", proj));
    EXPECT_EQ(t.shape, std::string(proj) == "down" ? (std::vector<int64_t>{4, 128, 64}) : (std::vector<int64_t>{4, 64, 128}));
    ASSERT_EQ(t.sources.size(), 4u);
    for (int e = 0; e < 4; ++e) EXPECT_EQ(t.sources[e]->name(), fmt::format("model.layers.2.mlp.experts.{}.{}_proj.weight", e, proj));
  }
  const TensorRecipe& up = p->tensor("blk.2.ffn_up_exps.weight");
  const std::vector<float> got = recipe_values(up);
  const std::vector<float> expert3 = gen::tiny_model_float_weights(spec, "model.layers.2.mlp.experts.3.up_proj.weight");
  ASSERT_EQ(got.size(), 4 * expert3.size());
  EXPECT_TRUE(std::equal(expert3.begin(), expert3.end(), got.begin() + 3 * static_cast<int64_t>(expert3.size())));
}

TEST_F(Qwen3NextPlan, TiedEmbeddingsWriteNoOutputTensor) {
  TempDir temp;
  TinyModelSpec spec = next_spec("mlx");
  spec.tie_embeddings = true;
  const auto p = plan_model(write_model(temp, "tiny-next-tied", spec));
  EXPECT_FALSE(p->has("output.weight"));
  // A checkpoint that keeps lm_head.weight with tie_word_embeddings: mlx-lm's sanitize drops the copy.
  const fs::path hf = write_model(temp, "tiny-next-hf", next_spec("hf"));
  edit_config(hf, [](nlohmann::json& c) { c["tie_word_embeddings"] = true; });
  EXPECT_FALSE(plan_model(hf)->has("output.weight"));
}

TEST_F(Qwen3NextPlan, LinearRopeScalingIsWritten) {
  TempDir temp;
  TinyModelSpec spec = next_spec("mlx");
  spec.rope_scaling = {{"rope_type", "linear"}, {"factor", 4.0}};
  const auto p = plan_model(write_model(temp, "tiny-next-linear", spec));
  EXPECT_TRUE(is_str(*p, "qwen3next.rope.scaling.type", "linear"));
  EXPECT_TRUE(is_f32(*p, "qwen3next.rope.scaling.factor", 4.0f));
  // A transformers-5 config: theta and factor only inside rope_parameters.
  const fs::path dir = write_model(temp, "tiny-next-v5", next_spec("mlx"));
  edit_config(dir, [](nlohmann::json& c) {
    c.erase("rope_theta");
    c.erase("partial_rotary_factor");
    c.erase("rope_scaling");
    c["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 5e6}, {"partial_rotary_factor", 0.5}};
  });
  const auto v5 = plan_model(dir);
  EXPECT_TRUE(is_f32(*v5, "qwen3next.rope.freq_base", 5e6f));
  EXPECT_TRUE(is_u32(*v5, "qwen3next.rope.dimension_count", 32));
  EXPECT_EQ(v5->plan.metadata.get("qwen3next.rope.scaling.type"), nullptr);
}

// Settings that change what mlx-lm computes and llama.cpp's qwen3next cannot express are refused, not dropped.
TEST_F(Qwen3NextPlan, RefusesWhatLlamaCppCannotCompute) {
  TempDir temp;
  const fs::path base = write_model(temp, "base", next_spec("mlx"));
  EXPECT_NO_THROW(plan_model(base));
  int n = 0;
  auto refused = [&](const std::function<void(nlohmann::json&)>& edit, const std::string& message_part) {
    const fs::path dir = temp / fmt::format("edited{}", n++);
    fs::copy(base, dir);
    edit_config(dir, edit);
    try {
      plan_model(dir);
      ADD_FAILURE() << "accepted; expected a refusal mentioning '" << message_part << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(message_part), std::string::npos) << e.what();
    }
  };
  refused([](auto& c) { c["norm_topk_prob"] = false; }, "norm_topk_prob");
  refused([](auto& c) { c.erase("norm_topk_prob"); }, "norm_topk_prob");  // mlx-lm's default is false
  refused([](auto& c) { c["decoder_sparse_step"] = 2; }, "layer 0 a dense MLP");
  refused([](auto& c) { c["mlp_only_layers"] = {2}; }, "layer 2 a dense MLP");
  refused([](auto& c) { c["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 2048}}; },
          "'yarn'");
  refused([](auto& c) { c["rope_scaling"] = {{"type", "dynamic"}, {"factor", 2.0}}; }, "'dynamic'");
  refused([](auto& c) { c["attention_bias"] = true; }, "attention_bias");
  refused([](auto& c) { c["linear_value_head_dim"] = 16; }, "linear_value_head_dim");
  refused([](auto& c) { c["num_experts"] = 0; }, "num_experts");
  refused([](auto& c) { c["partial_rotary_factor"] = 0.01; }, "rotated dims");
  refused([](auto& c) { c.erase("rope_theta"); }, "rope_theta");
  // What does not change the computation is accepted: absent defaults, layers beyond the model in mlp_only_layers.
  const fs::path lenient = temp / "lenient";
  fs::copy(base, lenient);
  edit_config(lenient, [](nlohmann::json& c) {
    c.erase("decoder_sparse_step");
    c["mlp_only_layers"] = {7};
    c["rope_scaling"] = {{"rope_type", "default"}};
  });
  EXPECT_NO_THROW(plan_model(lenient));
}

}  // namespace
}  // namespace mlx2gguf
