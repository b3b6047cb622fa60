// The Qwen3.5 family's GGUF mapping, checked on generated mlx-lm and Hugging Face folders: tensor names by layer
// kind, the V-head reorder, ssm_a, norm offsets, routers and fused experts.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <memory>
#include <numbers>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "convert.h"
#include "gen/safetensors_writer.h"
#include "gen/tiny_model.h"
#include "plan/general_metadata.h"
#include "plan/permutations.h"
#include "plan/plan_test_support.h"
#include "plan/planner.h"
#include "read/source_model.h"
#include "read/test_support.h"
#include "util/error.h"

namespace mlx2gguf {
namespace {

using namespace plan_test;

// Defaults: 4 layers (linear, linear, linear, full; interval 4), hidden 128, 4 query heads and 2 KV heads of 64,
// linear attention with 2 key heads and 4 value heads of 32, kernel 4, 4 experts of width 64, shared expert 64.
TinyModelSpec qwen_spec(const std::string& layout) {
  TinyModelSpec s;
  s.model_type = "qwen3_5_moe";
  s.layout = layout;
  s.layers = 4;
  s.full_attention_interval = 4;
  s.hidden = 128;
  s.heads = 4;
  s.kv_heads = 2;
  s.head_dim = 64;
  s.linear_num_key_heads = 2;
  s.linear_num_value_heads = 4;
  s.linear_key_head_dim = 32;
  s.linear_value_head_dim = 32;
  s.linear_conv_kernel_dim = 4;
  s.experts = 4;
  s.experts_per_tok = 2;
  s.moe_intermediate = 64;
  s.shared_expert_intermediate = 48;
  s.seed = 5;
  return s;
}

constexpr int64_t kQKeyDim = 2 * 32, kQValueDim = 4 * 32, kQConv = 2 * kQKeyDim + kQValueDim;

// Value heads (4 of `size`) from grouped [k0v0, k0v1, k1v0, k1v1] to tiled [k0v0, k1v0, k0v1, k1v1] = old [0, 2, 1, 3].
IndexMap tiled_value_heads(int64_t size) {
  IndexMap map;
  for (int64_t old_head : {0, 2, 1, 3})
    for (int64_t i = 0; i < size; ++i) map.push_back(old_head * size + i);
  return map;
}

class Qwen35MoePlan : public ::testing::Test {};

TEST_F(Qwen35MoePlan, TensorNamesFollowTheLayerKind) {
  TempDir temp;
  const auto p = plan_model(write_model(temp, "tiny-qwen", qwen_spec("mlx")));
  EXPECT_TRUE(is_str(*p, "general.architecture", "qwen35moe"));
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
      for (const char* name : {"attn_qkv.weight", "attn_gate.weight", "ssm_beta.weight", "ssm_alpha.weight",
                               "ssm_conv1d.weight", "ssm_dt.bias", "ssm_a", "ssm_norm.weight", "ssm_out.weight"})
        expected.insert(b + name);
    }
  }
  EXPECT_EQ(p->names(), expected);
  EXPECT_EQ(p->tensor("blk.3.attn_q.weight").shape, (std::vector<int64_t>{2 * 4 * 64, 128}));  // [query | gate] per head
  EXPECT_TRUE(p->tensor("blk.3.attn_q.weight").row_map.empty());  // no rope permutation for this architecture
  EXPECT_TRUE(is_u32(*p, "qwen35moe.full_attention_interval", 4));
  EXPECT_TRUE(is_u32(*p, "qwen35moe.ssm.group_count", 2));
  EXPECT_TRUE(is_u32(*p, "qwen35moe.ssm.time_step_rank", 4));
  EXPECT_TRUE(is_u32(*p, "qwen35moe.ssm.inner_size", kQValueDim));
  EXPECT_TRUE(is_u32(*p, "qwen35moe.ssm.state_size", 32));
  EXPECT_TRUE(is_u32(*p, "qwen35moe.ssm.conv_kernel", 4));
  EXPECT_TRUE(is_u32(*p, "qwen35moe.expert_count", 4));
  EXPECT_TRUE(is_u32(*p, "qwen35moe.expert_used_count", 2));
  EXPECT_TRUE(is_u32(*p, "qwen35moe.expert_feed_forward_length", 64));
  EXPECT_TRUE(is_u32(*p, "qwen35moe.expert_shared_feed_forward_length", 48));
  const GgufValue& sections = p->key("qwen35moe.rope.dimension_sections");
  EXPECT_TRUE(sections.is_array());
  EXPECT_EQ(sections.element_type, GgufType::INT32);
  EXPECT_EQ(sections.size(), 4u);
}

TEST_F(Qwen35MoePlan, SsmAIsNegExpOfTiledALog) {
  TempDir temp;
  const TinyModelSpec spec = qwen_spec("mlx");
  const auto p = plan_model(write_model(temp, "tiny-qwen", spec));
  const TensorRecipe& a = p->tensor("blk.0.ssm_a");
  EXPECT_EQ(a.op, ValueOp::NegExp);
  EXPECT_EQ(a.column_map, (IndexMap{0, 2, 1, 3}));
  EXPECT_EQ(a.shape, (std::vector<int64_t>{4}));
  EXPECT_EQ(a.type, GgmlType::F32);
  EXPECT_EQ(p->tensor("blk.0.ssm_dt.bias").column_map, (IndexMap{0, 2, 1, 3}));

  std::vector<float> got(4);
  read_recipe_rows(a, 0, 1, got.data());
  const std::vector<float> a_log = gen::tiny_model_float_weights(spec, "language_model.model.layers.0.linear_attn.A_log");
  ASSERT_EQ(a_log.size(), 4u);
  const int old_head[] = {0, 2, 1, 3};
  for (int i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(got[i], -std::exp(a_log[old_head[i]])) << "value head " << i;
}

TEST_F(Qwen35MoePlan, ConvKernelIsF32WithOnlyValueChannelsTiled) {
  TempDir temp;
  const auto p = plan_model(write_model(temp, "tiny-qwen", qwen_spec("mlx")), OutType::Q8_0);
  const TensorRecipe& conv = p->tensor("blk.1.ssm_conv1d.weight");
  EXPECT_EQ(conv.shape, (std::vector<int64_t>{kQConv, 4}));
  EXPECT_EQ(conv.ne(), (std::vector<int64_t>{4, kQConv}));
  EXPECT_EQ(conv.type, GgmlType::F32);
  IndexMap expected;
  for (int64_t i = 0; i < 2 * kQKeyDim; ++i) expected.push_back(i);  // q and k channels untouched
  for (int64_t v : tiled_value_heads(32)) expected.push_back(2 * kQKeyDim + v);
  EXPECT_EQ(conv.row_map, expected);
  // The projection feeding the conv has the same channel order.
  const TensorRecipe& qkv = p->tensor("blk.1.attn_qkv.weight");
  EXPECT_EQ(qkv.row_map, expected);
  EXPECT_EQ(qkv.shape, (std::vector<int64_t>{kQConv, 128}));
  EXPECT_EQ(qkv.type, GgmlType::Q8_0);
}

TEST_F(Qwen35MoePlan, ValueHeadTensorsAreTiledOnTheRightAxis) {
  TempDir temp;
  const auto p = plan_model(write_model(temp, "tiny-qwen", qwen_spec("mlx")));
  const TensorRecipe& out = p->tensor("blk.2.ssm_out.weight");
  EXPECT_EQ(out.shape, (std::vector<int64_t>{128, kQValueDim}));
  EXPECT_EQ(out.column_map, tiled_value_heads(32));
  EXPECT_TRUE(out.row_map.empty());
  EXPECT_EQ(p->tensor("blk.2.attn_gate.weight").row_map, tiled_value_heads(32));
  EXPECT_EQ(p->tensor("blk.2.ssm_beta.weight").row_map, (IndexMap{0, 2, 1, 3}));
  EXPECT_EQ(p->tensor("blk.2.ssm_alpha.weight").row_map, (IndexMap{0, 2, 1, 3}));
  EXPECT_TRUE(p->tensor("blk.2.ssm_norm.weight").row_map.empty());
  EXPECT_TRUE(p->tensor("blk.2.ssm_norm.weight").column_map.empty());
}

TEST_F(Qwen35MoePlan, RoutersStayF32) {
  TempDir temp;
  const auto p = plan_model(write_model(temp, "tiny-qwen", qwen_spec("mlx")), OutType::Q8_0);
  for (int i = 0; i < 4; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    EXPECT_EQ(p->tensor(b + "ffn_gate_inp.weight").type, GgmlType::F32);
    EXPECT_EQ(p->tensor(b + "ffn_gate_inp.weight").shape, (std::vector<int64_t>{4, 128}));
    EXPECT_EQ(p->tensor(b + "ffn_gate_inp_shexp.weight").type, GgmlType::F32);
    EXPECT_EQ(p->tensor(b + "ffn_gate_inp_shexp.weight").shape, (std::vector<int64_t>{1, 128}));
    EXPECT_EQ(p->tensor(b + "ffn_gate_exps.weight").type, GgmlType::Q8_0);
    EXPECT_EQ(p->tensor(b + "ffn_gate_exps.weight").shape, (std::vector<int64_t>{4, 64, 128}));
    EXPECT_EQ(p->tensor(b + "ffn_down_exps.weight").shape, (std::vector<int64_t>{4, 128, 64}));
    EXPECT_EQ(p->tensor(b + "ffn_down_shexp.weight").shape, (std::vector<int64_t>{128, 48}));
  }
}

const char* const kShiftedNorms[] = {"blk.0.attn_norm.weight", "blk.0.post_attention_norm.weight", "blk.3.attn_norm.weight",
                                     "blk.3.attn_q_norm.weight", "blk.3.attn_k_norm.weight", "output_norm.weight"};

TEST_F(Qwen35MoePlan, MlxLayoutNormsAreAlreadyShifted) {
  TempDir temp;
  const auto p = plan_model(write_model(temp, "tiny-qwen", qwen_spec("mlx")));
  for (const char* name : kShiftedNorms) EXPECT_EQ(p->tensor(name).op, ValueOp::None) << name;
  EXPECT_EQ(p->tensor("blk.0.ssm_norm.weight").op, ValueOp::None);
}

TEST_F(Qwen35MoePlan, HuggingFaceLayoutNormsGetPlusOneExceptTheGatedNorm) {
  TempDir temp;
  TinyModelSpec spec = qwen_spec("hf");
  spec.hf_extra_tensors = true;  // vision tower and MTP head: dropped, not an error
  const auto p = plan_model(write_model(temp, "tiny-qwen-hf", spec));
  for (const char* name : kShiftedNorms) EXPECT_EQ(p->tensor(name).op, ValueOp::AddOne) << name;
  for (int i = 0; i < 3; ++i) EXPECT_EQ(p->tensor("blk." + std::to_string(i) + ".ssm_norm.weight").op, ValueOp::None);
  for (const auto& t : p->plan.tensors) {
    EXPECT_EQ(t.name.find("mtp"), std::string::npos) << t.name;
    EXPECT_EQ(t.name.find("visual"), std::string::npos) << t.name;
  }
  // The [C, 1, K] kernel is read as [C, K].
  EXPECT_EQ(p->tensor("blk.0.ssm_conv1d.weight").shape, (std::vector<int64_t>{kQConv, 4}));
}

TEST_F(Qwen35MoePlan, HuggingFaceFusedExpertsAreSplitIntoGateAndUp) {
  TempDir temp;
  const auto p = plan_model(write_model(temp, "tiny-qwen-hf", qwen_spec("hf")));
  const TensorRecipe& gate = p->tensor("blk.0.ffn_gate_exps.weight");
  const TensorRecipe& up = p->tensor("blk.0.ffn_up_exps.weight");
  EXPECT_EQ(gate.shape, (std::vector<int64_t>{4, 64, 128}));
  EXPECT_EQ(up.shape, (std::vector<int64_t>{4, 64, 128}));
  IndexMap gate_rows, up_rows;
  for (int64_t e = 0; e < 4; ++e)
    for (int64_t r = 0; r < 64; ++r) {
      gate_rows.push_back(e * 128 + r);
      up_rows.push_back(e * 128 + 64 + r);
    }
  EXPECT_EQ(gate.row_map, gate_rows);
  EXPECT_EQ(up.row_map, up_rows);
  EXPECT_EQ(p->tensor("blk.0.ffn_down_exps.weight").shape, (std::vector<int64_t>{4, 128, 64}));
}

TEST_F(Qwen35MoePlan, AttentionBiasesAreRefusedAsLlamaCppWouldIgnoreThem) {
  TempDir temp;
  TinyModelSpec spec = qwen_spec("mlx");
  spec.attention_bias = true;
  const fs::path dir = write_model(temp, "tiny-qwen-bias", spec);
  EXPECT_TRUE(test_support::throws_with<Error>([&] { plan_model(dir); },
                                               {"language_model.model.layers.3.self_attn.q_proj.bias", "qwen35moe"}));
}

}  // namespace
}  // namespace mlx2gguf
