// The Phi-3 family's GGUF mapping, checked on generated mlx-lm phi3 folders: fused attn_qkv and ffn_up kept in their
// stored row order (float and MLX-quantized), LongRoPE factor tensors and keys, partial rotary, tied embeddings, the
// window key, and the configurations mlx-lm or llama.cpp cannot run as the folder says, refused by name.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <functional>

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

constexpr int64_t kPHidden = 128, kPHeads = 4, kPKvHeads = 2, kPFf = 96, kPLayers = 2;
constexpr int64_t kPHeadDim = kPHidden / kPHeads;  // 32

// Phi-4-mini's shape at test size: GQA, partial rotary 0.75 (24 of 32 dims), LongRoPE, tied embeddings.
TinyModelSpec phi3_spec() {
  TinyModelSpec s;
  s.model_type = "phi3";
  s.hidden = kPHidden;
  s.layers = kPLayers;
  s.heads = kPHeads;
  s.kv_heads = kPKvHeads;
  s.intermediate = kPFf;
  s.tie_embeddings = true;
  s.rope_scaling = {{"type", "longrope"}};
  s.max_position_embeddings = 131072;
  s.extra_config = {{"partial_rotary_factor", 0.75}, {"original_max_position_embeddings", 4096}};
  s.seed = 5;
  return s;
}

void patch_config(const fs::path& dir, const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json config;
  {
    std::ifstream in(dir / "config.json");
    in >> config;
  }
  edit(config);
  std::ofstream(dir / "config.json") << config.dump(4);
}

nlohmann::json read_config(const fs::path& dir) {
  nlohmann::json config;
  std::ifstream(dir / "config.json") >> config;
  return config;
}

std::vector<float> recipe_values(const TensorRecipe& recipe) {
  std::vector<float> values(static_cast<size_t>(recipe.row_count() * recipe.row_length()));
  read_recipe_rows(recipe, 0, recipe.row_count(), values.data());
  return values;
}

TEST(Phi3Plan, WritesFusedQkvAndGateUpAsStoredWithTheRopeFactorTensors) {
  TempDir temp;
  const TinyModelSpec spec = phi3_spec();
  const auto p = plan_model(write_model(temp, "phi3", spec));
  EXPECT_TRUE(is_str(*p, "general.architecture", "phi3"));
  std::set<std::string> want = {"token_embd.weight", "output_norm.weight", "rope_factors_long.weight",
                                "rope_factors_short.weight"};
  for (int i = 0; i < kPLayers; ++i)
    for (const char* name : {"attn_norm.weight", "attn_qkv.weight", "attn_output.weight", "ffn_norm.weight",
                             "ffn_up.weight", "ffn_down.weight"})
      want.insert(fmt::format("blk.{}.{}", i, name));
  EXPECT_EQ(p->names(), want) << "tied: no output.weight; fused: no attn_q/k/v, no ffn_gate";
  EXPECT_EQ(p->plan.tensors.size(), want.size());
  EXPECT_EQ(p->tensor("blk.1.attn_qkv.weight").shape,
            (std::vector<int64_t>{(kPHeads + 2 * kPKvHeads) * kPHeadDim, kPHidden}));
  EXPECT_EQ(p->tensor("blk.1.ffn_up.weight").shape, (std::vector<int64_t>{2 * kPFf, kPHidden}));
  EXPECT_EQ(p->tensor("blk.1.ffn_down.weight").shape, (std::vector<int64_t>{kPHidden, kPFf}));
  for (const auto& t : p->plan.tensors) {
    EXPECT_TRUE(t.row_map.empty()) << t.name << ": rows stay in mlx-lm's split order";
    EXPECT_TRUE(t.column_map.empty()) << t.name;
  }
  EXPECT_EQ(recipe_values(p->tensor("blk.0.attn_qkv.weight")),
            gen::tiny_model_float_weights(spec, "model.layers.0.self_attn.qkv_proj.weight"));
  EXPECT_EQ(recipe_values(p->tensor("blk.1.ffn_up.weight")),
            gen::tiny_model_float_weights(spec, "model.layers.1.mlp.gate_up_proj.weight"));
}

TEST(Phi3Plan, LongRopeFactorsAttentionFactorAndPartialRotaryKeys) {
  TempDir temp;
  const fs::path dir = write_model(temp, "phi3", phi3_spec());
  const nlohmann::json scaling = read_config(dir)["rope_scaling"];
  const auto p = plan_model(dir);
  const int64_t rot = kPHeadDim * 3 / 4;  // int(32 · 0.75)
  EXPECT_TRUE(is_u32(*p, "phi3.rope.dimension_count", rot));
  const auto& long_factors = p->tensor("rope_factors_long.weight");
  const auto& short_factors = p->tensor("rope_factors_short.weight");
  EXPECT_EQ(long_factors.shape, (std::vector<int64_t>{rot / 2}));
  EXPECT_EQ(long_factors.type, GgmlType::F32);
  EXPECT_EQ(short_factors.type, GgmlType::F32);
  ASSERT_EQ(static_cast<int64_t>(scaling["long_factor"].size()), rot / 2);
  for (int64_t i = 0; i < rot / 2; ++i) {
    EXPECT_EQ(long_factors.generated.at(i), static_cast<float>(scaling["long_factor"][i].get<double>()));
    EXPECT_EQ(short_factors.generated.at(i), static_cast<float>(scaling["short_factor"][i].get<double>()));
  }
  EXPECT_NE(long_factors.generated, short_factors.generated);
  // sqrt(1 + ln(131072 / 4096) / ln(4096)) = sqrt(1 + 5/12).
  EXPECT_TRUE(is_f32(*p, "phi3.rope.scaling.attn_factor", static_cast<float>(std::sqrt(1.0 + 5.0 / 12.0))));
  EXPECT_TRUE(is_u32(*p, "phi3.rope.scaling.original_context_length", 4096));
  EXPECT_TRUE(is_u32(*p, "phi3.context_length", 131072));
  EXPECT_TRUE(is_u32(*p, "phi3.attention.head_count_kv", kPKvHeads));
  EXPECT_TRUE(is_u32(*p, "phi3.attention.sliding_window", 0));
  EXPECT_TRUE(is_f32(*p, "phi3.rope.freq_base", 10000.0f));
  EXPECT_FALSE(p->plan.metadata.has("phi3.rope.scaling.type"));
}

TEST(Phi3Plan, PlainRopeWritesNoFactorsAndLinearWritesItsFactor) {
  TempDir temp;
  TinyModelSpec spec = phi3_spec();
  spec.rope_scaling = nullptr;
  spec.tie_embeddings = false;
  spec.extra_config = nlohmann::json::object();
  const fs::path dir = write_model(temp, "plain", spec);
  const auto plain = plan_model(dir);
  EXPECT_FALSE(plain->has("rope_factors_long.weight"));
  EXPECT_FALSE(plain->plan.metadata.has("phi3.rope.scaling.attn_factor"));
  EXPECT_TRUE(plain->has("output.weight"));
  EXPECT_TRUE(is_u32(*plain, "phi3.rope.dimension_count", kPHeadDim));

  patch_config(dir, [](nlohmann::json& c) { c["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}, {"long_factor", 1.0}}; });
  const auto linear = plan_model(dir);
  EXPECT_TRUE(is_str(*linear, "phi3.rope.scaling.type", "linear"));
  EXPECT_TRUE(is_f32(*linear, "phi3.rope.scaling.factor", 2.0f));

  // phi3.py drops unknown scaling types with a warning and runs a plain rope.
  patch_config(dir, [](nlohmann::json& c) { c["rope_scaling"] = {{"type", "dynamic"}, {"factor", 2.0}, {"long_factor", 1.0}}; });
  EXPECT_FALSE(plan_model(dir)->plan.metadata.has("phi3.rope.scaling.type"));

  // rope_parameters' rope_theta wins in phi3.py.
  patch_config(dir, [](nlohmann::json& c) {
    c["rope_scaling"] = nullptr;
    c["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 250000.0}};
  });
  EXPECT_TRUE(is_f32(*plan_model(dir), "phi3.rope.freq_base", 250000.0f));
}

TEST(Phi3Plan, QuantizedFusedProjectionsAreRepackedLosslessly) {
  TempDir temp;
  TinyModelSpec spec = phi3_spec();
  spec.quant = gen::QuantRecipe::parse("affine:4:64");
  const auto p = plan_model(write_model(temp, "q4", spec));
  for (const char* name : {"blk.0.attn_qkv.weight", "blk.0.ffn_up.weight", "blk.1.attn_output.weight"}) {
    EXPECT_TRUE(p->tensor(name).repack) << name;
    EXPECT_EQ(p->tensor(name).type, GgmlType::Q4_1) << name;
  }
}

TEST(Phi3Plan, RefusesWhatMlxLmOrLlamaCppCannotRunAsConfigured) {
  TempDir temp;
  const fs::path dir = write_model(temp, "phi3", phi3_spec());
  const nlohmann::json original = read_config(dir);
  auto refused = [&](const std::function<void(nlohmann::json&)>& edit, std::vector<std::string> words) {
    patch_config(dir, [&](nlohmann::json& c) {
      c = original;
      edit(c);
    });
    return test_support::throws_with<Error>([&] { plan_model(dir); }, words);
  };
  EXPECT_TRUE(refused([](auto& c) { c["rope_scaling"]["long_factor"].erase(0); }, {"long_factor", "12"}));
  EXPECT_TRUE(refused([](auto& c) { c["rope_scaling"].erase("short_factor"); }, {"short_factor"}));
  EXPECT_TRUE(refused([](auto& c) { c["rope_scaling"].erase("long_factor"); }, {"long_factor"}));
  EXPECT_TRUE(refused([](auto& c) { c["rope_scaling"]["long_mscale"] = 1.2; }, {"long_mscale"}));
  EXPECT_TRUE(refused([](auto& c) { c["partial_rotary_factor"] = 0.8; }, {"partial_rotary_factor"}));
  EXPECT_TRUE(refused(
      [](auto& c) {
        c["rope_scaling"] = nullptr;
        c["rope_traditional"] = true;
      },
      {"rope_traditional"}));
  EXPECT_TRUE(refused(
      [](auto& c) {
        c["rope_scaling"] = nullptr;
        c["rope_parameters"] = {{"rope_type", "longrope"}, {"rope_theta", 10000.0}};
      },
      {"rope_parameters", "longrope"}));
  EXPECT_TRUE(refused([](auto& c) { c["tie_word_embeddings"] = false; }, {"lm_head.weight"}));
  EXPECT_TRUE(refused([](auto& c) { c["num_key_value_heads"] = 3; }, {"key/value heads"}));
}

}  // namespace
}  // namespace mlx2gguf
