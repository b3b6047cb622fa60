// The llama family's GGUF mapping, checked on generated llama, mistral and mixtral folders: tensor names, shapes,
// the q/k rotary permutation, hyper-parameter keys and rope scaling.
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

TEST(LlamaPlan, WritesExactlyTheLlamaTensorNames) {
  TempDir temp;
  const auto p = plan_model(write_model(temp, "tiny-llama", llama_spec()));
  std::set<std::string> expected = {"token_embd.weight", "output_norm.weight", "output.weight"};
  for (int i = 0; i < kLayers; ++i) {
    for (const char* name : {"attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight",
                             "attn_q.bias", "attn_k.bias", "attn_v.bias", "attn_output.bias", "ffn_norm.weight",
                             "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"})
      expected.insert("blk." + std::to_string(i) + "." + name);
  }
  EXPECT_EQ(p->names(), expected);
  EXPECT_EQ(p->plan.tensors.size(), expected.size()) << "a tensor name appears twice";
  EXPECT_TRUE(is_str(*p, "general.architecture", "llama"));
}

TEST(LlamaPlan, ShapesFollowTheConfigAndNeIsTheirReverse) {
  TempDir temp;
  const auto p = plan_model(write_model(temp, "tiny-llama", llama_spec()));
  const int64_t vocab = p->tensor("token_embd.weight").shape.at(0);
  EXPECT_GT(vocab, 0);
  struct Expected {
    std::string name;
    std::vector<int64_t> shape;
  };
  const std::vector<Expected> cases = {
      {"token_embd.weight", {vocab, kHidden}},
      {"output.weight", {vocab, kHidden}},
      {"output_norm.weight", {kHidden}},
      {"blk.1.attn_norm.weight", {kHidden}},
      {"blk.1.attn_q.weight", {kHeads * kHeadDim, kHidden}},
      {"blk.1.attn_k.weight", {kKvHeads * kHeadDim, kHidden}},
      {"blk.1.attn_v.weight", {kKvHeads * kHeadDim, kHidden}},
      {"blk.1.attn_output.weight", {kHidden, kHeads * kHeadDim}},
      {"blk.1.attn_q.bias", {kHeads * kHeadDim}},
      {"blk.1.attn_k.bias", {kKvHeads * kHeadDim}},
      {"blk.1.attn_output.bias", {kHidden}},
      {"blk.1.ffn_gate.weight", {kFf, kHidden}},
      {"blk.1.ffn_up.weight", {kFf, kHidden}},
      {"blk.1.ffn_down.weight", {kHidden, kFf}},
  };
  for (const auto& c : cases) {
    const TensorRecipe& t = p->tensor(c.name);
    EXPECT_EQ(t.shape, c.shape) << c.name;
    const std::vector<int64_t> reversed(c.shape.rbegin(), c.shape.rend());
    EXPECT_EQ(t.ne(), reversed) << c.name;
  }
  EXPECT_EQ(p->tensor("blk.0.attn_q.weight").ne(), (std::vector<int64_t>{kHidden, kHeads * kHeadDim}));
}

TEST(LlamaPlan, QueryAndKeyRowsArePermutedToRotaryPairsWithTheirOwnHeadCounts) {
  TempDir temp;
  const auto p = plan_model(write_model(temp, "tiny-llama", llama_spec()));
  const IndexMap q = expected_rope_rows(kHeads, kHeadDim);
  const IndexMap k = expected_rope_rows(kKvHeads, kHeadDim);
  for (int i = 0; i < kLayers; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    EXPECT_EQ(p->tensor(b + "attn_q.weight").row_map, q);
    EXPECT_EQ(p->tensor(b + "attn_q.weight").row_map, rope_halves_to_pairs(kHeads, kHeadDim));
    EXPECT_EQ(p->tensor(b + "attn_k.weight").row_map, k);
    EXPECT_TRUE(p->tensor(b + "attn_q.weight").column_map.empty());
    // Biases are single rows: the same permutation applies to their columns.
    EXPECT_EQ(p->tensor(b + "attn_q.bias").column_map, q);
    EXPECT_EQ(p->tensor(b + "attn_k.bias").column_map, k);
    EXPECT_TRUE(p->tensor(b + "attn_q.bias").row_map.empty());
    // Values, outputs and MLPs keep their layout.
    for (const char* name : {"attn_v.weight", "attn_output.weight", "attn_v.bias", "ffn_gate.weight", "ffn_down.weight"}) {
      EXPECT_TRUE(p->tensor(b + name).row_map.empty()) << name;
      EXPECT_TRUE(p->tensor(b + name).column_map.empty()) << name;
    }
  }
}

TEST(LlamaPlan, PermutedQueryRowsCarryTheSourceRowsValues) {
  TempDir temp;
  const TinyModelSpec spec = llama_spec();
  const auto p = plan_model(write_model(temp, "tiny-llama", spec));
  const TensorRecipe& q = p->tensor("blk.0.attn_q.weight");
  std::vector<float> got(static_cast<size_t>(q.row_count() * q.row_length()));
  read_recipe_rows(q, 0, q.row_count(), got.data());
  const std::vector<float> source = gen::tiny_model_float_weights(spec, "model.layers.0.self_attn.q_proj.weight");
  ASSERT_EQ(source.size(), got.size());
  const IndexMap rows = expected_rope_rows(kHeads, kHeadDim);
  for (int64_t r = 0; r < q.row_count(); ++r)
    for (int64_t c = 0; c < kHidden; ++c)
      ASSERT_EQ(got[static_cast<size_t>(r * kHidden + c)], source[static_cast<size_t>(rows[static_cast<size_t>(r)] * kHidden + c)])
          << "row " << r << " column " << c;
}

TEST(LlamaPlan, TiedEmbeddingsWriteNoOutputTensor) {
  TempDir temp;
  TinyModelSpec spec = llama_spec();
  spec.tie_embeddings = true;
  const auto p = plan_model(write_model(temp, "tied", spec));
  EXPECT_FALSE(p->has("output.weight"));
  EXPECT_TRUE(p->has("token_embd.weight"));
  EXPECT_TRUE(p->has("output_norm.weight"));
}

TEST(LlamaPlan, HyperParameterKeysHaveExactTypesAndValues) {
  TempDir temp;
  TinyModelSpec spec = llama_spec();
  spec.rope_theta = 250000;
  spec.rms_norm_eps = 1e-6;
  spec.max_position_embeddings = 4096;
  const auto p = plan_model(write_model(temp, "tiny-llama", spec));
  const int64_t vocab = p->tensor("token_embd.weight").shape.at(0);
  EXPECT_TRUE(is_u32(*p, "llama.context_length", 4096));
  EXPECT_TRUE(is_u32(*p, "llama.embedding_length", kHidden));
  EXPECT_TRUE(is_u32(*p, "llama.block_count", kLayers));
  EXPECT_TRUE(is_u32(*p, "llama.feed_forward_length", kFf));
  EXPECT_TRUE(is_u32(*p, "llama.attention.head_count", kHeads));
  EXPECT_TRUE(is_u32(*p, "llama.attention.head_count_kv", kKvHeads));
  EXPECT_TRUE(is_u32(*p, "llama.attention.key_length", kHeadDim));
  EXPECT_TRUE(is_u32(*p, "llama.attention.value_length", kHeadDim));
  EXPECT_TRUE(is_u32(*p, "llama.rope.dimension_count", kHeadDim));
  EXPECT_TRUE(is_u32(*p, "llama.vocab_size", vocab));
  EXPECT_TRUE(is_f32(*p, "llama.attention.layer_norm_rms_epsilon", 1e-6f));
  EXPECT_TRUE(is_f32(*p, "llama.rope.freq_base", 250000.0f));
  EXPECT_FALSE(p->plan.metadata.has("llama.rope.scaling.type"));
  EXPECT_FALSE(p->plan.metadata.has("llama.expert_count"));
  EXPECT_FALSE(p->has("rope_freqs.weight"));
}

TEST(LlamaPlan, LinearRopeScalingBecomesScalingKeys) {
  TempDir temp;
  TinyModelSpec spec = llama_spec();
  spec.rope_scaling = {{"type", "linear"}, {"factor", 2.5}};
  const auto p = plan_model(write_model(temp, "linear", spec));
  EXPECT_TRUE(is_str(*p, "llama.rope.scaling.type", "linear"));
  EXPECT_TRUE(is_f32(*p, "llama.rope.scaling.factor", 2.5f));
  EXPECT_FALSE(p->has("rope_freqs.weight"));
}

// The llama3 per-frequency factors, from the published rule: wavelengths longer than original_ctx / low_freq_factor
// are slowed down by `factor`, shorter than original_ctx / high_freq_factor are kept, and in between the inverse
// factor is interpolated linearly in original_ctx / wavelength.
std::vector<float> llama3_factors(double base, int64_t head_dim, double factor, double low, double high, double original) {
  std::vector<float> out;
  for (int64_t i = 0; i < head_dim / 2; ++i) {
    const double inv_freq = std::pow(base, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
    const double wavelength = 2.0 * std::numbers::pi / inv_freq;
    double f;
    if (wavelength < original / high) {
      f = 1.0;
    } else if (wavelength > original / low) {
      f = factor;
    } else {
      const double s = (original / wavelength - low) / (high - low);
      f = 1.0 / ((1.0 - s) / factor + s);
    }
    out.push_back(static_cast<float>(f));
  }
  return out;
}

TEST(LlamaPlan, Llama3RopeScalingGeneratesRopeFreqs) {
  TempDir temp;
  TinyModelSpec spec = llama_spec();
  spec.rope_theta = 500000;
  spec.rope_scaling = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 64}};
  const auto p = plan_model(write_model(temp, "llama3", spec), OutType::Q8_0);
  const TensorRecipe& freqs = p->tensor("rope_freqs.weight");
  EXPECT_EQ(freqs.shape, (std::vector<int64_t>{kHeadDim / 2}));
  EXPECT_EQ(freqs.type, GgmlType::F32);
  EXPECT_TRUE(freqs.sources.empty());

  const std::vector<float> expected = llama3_factors(500000, kHeadDim, 8.0, 1.0, 4.0, 64);
  // The case must exercise all three regions of the rule.
  EXPECT_EQ(expected.front(), 1.0f);
  EXPECT_EQ(expected.back(), 8.0f);
  EXPECT_TRUE(std::any_of(expected.begin(), expected.end(), [](float f) { return f > 1.0f && f < 8.0f; }));
  ASSERT_EQ(freqs.generated.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_FLOAT_EQ(freqs.generated[i], expected[i]) << "frequency " << i;
  EXPECT_FALSE(p->plan.metadata.has("llama.rope.scaling.type"));
}

TEST(LlamaPlan, UnsupportedRopeScalingTypeIsRejectedByName) {
  TempDir temp;
  TinyModelSpec spec = llama_spec();
  spec.rope_scaling = {{"type", "yarn"}, {"factor", 4.0}};
  const fs::path dir = write_model(temp, "yarn", spec);
  EXPECT_TRUE(test_support::throws_with<Error>([&] { plan_model(dir); }, {"yarn", "rope_scaling"}));
}

// ---- mixtral ----------------------------------------------------------------------------------------------------

TEST(MixtralPlan, ExpertsAreStackedWithRouterInF32) {
  TempDir temp;
  TinyModelSpec spec;
  spec.model_type = "mixtral";
  spec.hidden = 64;
  spec.heads = 4;
  spec.kv_heads = 2;
  spec.intermediate = 96;
  spec.experts = 4;
  spec.experts_per_tok = 2;
  const auto p = plan_model(write_model(temp, "tiny-mixtral", spec));
  for (int i = 0; i < 2; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    const TensorRecipe& router = p->tensor(b + "ffn_gate_inp.weight");
    EXPECT_EQ(router.shape, (std::vector<int64_t>{4, 64}));
    EXPECT_EQ(router.type, GgmlType::F32);
    EXPECT_EQ(p->tensor(b + "ffn_gate_exps.weight").shape, (std::vector<int64_t>{4, 96, 64}));
    EXPECT_EQ(p->tensor(b + "ffn_up_exps.weight").shape, (std::vector<int64_t>{4, 96, 64}));
    EXPECT_EQ(p->tensor(b + "ffn_down_exps.weight").shape, (std::vector<int64_t>{4, 64, 96}));
    EXPECT_EQ(p->tensor(b + "ffn_down_exps.weight").ne(), (std::vector<int64_t>{96, 64, 4}));
    EXPECT_EQ(p->tensor(b + "ffn_gate_exps.weight").type, GgmlType::BF16);
    EXPECT_FALSE(p->has(b + "ffn_gate.weight"));
    EXPECT_FALSE(p->has(b + "ffn_up.weight"));
  }
  EXPECT_TRUE(is_u32(*p, "llama.expert_count", 4));
  EXPECT_TRUE(is_u32(*p, "llama.expert_used_count", 2));
  EXPECT_TRUE(is_str(*p, "general.architecture", "llama"));
  // Mixtral's head_dim is hidden / heads.
  EXPECT_TRUE(is_u32(*p, "llama.attention.key_length", 16));
  EXPECT_EQ(p->tensor("blk.0.attn_q.weight").row_map, expected_rope_rows(4, 16));
  // MoE size labels read "<experts>x<size of one expert's share>".
  const std::string label = p->key("general.size_label").strings.at(0);
  EXPECT_EQ(label.rfind("4x", 0), 0u) << label;
}

// ---- unknown tensors ----------------------------------------------------------------------------------------------

}  // namespace
}  // namespace mlx2gguf
