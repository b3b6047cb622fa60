// The Qwen3 family's GGUF mapping (qwen2, qwen3, qwen3_moe), checked on generated mlx-lm folders: tensor names and
// shapes, biases, unshifted q/k norms, no rotary permutation, experts and routers, hyper-parameter keys with their
// exact types, rope scaling, and the configurations llama.cpp cannot express, which must be refused by name.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "convert.h"
#include "eval/ops.h"
#include "gen/safetensors_writer.h"
#include "gen/tiny_model.h"
#include "plan/plan_test_support.h"
#include "plan/planner.h"
#include "read/source_model.h"
#include "read/test_support.h"
#include "util/error.h"

namespace mlx2gguf {
namespace {

using namespace plan_test;

constexpr int64_t kQHidden = 128, kQHeads = 4, kQKvHeads = 2, kQFf = 256, kQLayers = 2;
constexpr int64_t kQwen2HeadDim = kQHidden / kQHeads;  // 32: qwen2 derives it
constexpr int64_t kQwen3HeadDim = 48;                  // qwen3 reads head_dim: deliberately not hidden / heads
constexpr int64_t kExperts = 4, kExpertsUsed = 2, kExpertFf = 64;

TinyModelSpec qwen_spec(const std::string& type) {
  TinyModelSpec s;
  s.model_type = type;
  s.hidden = kQHidden;
  s.layers = kQLayers;
  s.heads = kQHeads;
  s.kv_heads = kQKvHeads;
  s.head_dim = type == "qwen2" ? 0 : kQwen3HeadDim;
  s.intermediate = kQFf;
  if (type == "qwen3_moe") {
    s.experts = kExperts;
    s.experts_per_tok = kExpertsUsed;
    s.moe_intermediate = kExpertFf;
  }
  s.rope_theta = 1e6;
  s.rms_norm_eps = 1e-6;
  s.max_position_embeddings = 40960;
  s.seed = 31;
  return s;
}

// Rewrites config.json of a generated folder (mlx-lm writes it with sorted keys; the order does not matter here).
void patch_config(const fs::path& dir, const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json config;
  {
    std::ifstream in(dir / "config.json");
    in >> config;
  }
  edit(config);
  std::ofstream(dir / "config.json") << config.dump(4);
}

std::vector<float> recipe_values(const TensorRecipe& recipe) {
  std::vector<float> values(static_cast<size_t>(recipe.row_count() * recipe.row_length()));
  read_recipe_rows(recipe, 0, recipe.row_count(), values.data());
  return values;
}

void expect_no_layout_change(const Planned& p) {
  for (const auto& t : p.plan.tensors) {
    EXPECT_TRUE(t.row_map.empty()) << t.name << ": NEOX rope needs no permutation";
    EXPECT_TRUE(t.column_map.empty()) << t.name;
    EXPECT_EQ(t.op, ValueOp::None) << t.name;
  }
}

std::set<std::string> layer_names(const std::vector<const char*>& per_layer, bool untied) {
  std::set<std::string> names = {"token_embd.weight", "output_norm.weight"};
  if (untied) names.insert("output.weight");
  for (int i = 0; i < kQLayers; ++i)
    for (const char* name : per_layer) names.insert("blk." + std::to_string(i) + "." + name);
  return names;
}

// ---- qwen2 ------------------------------------------------------------------------------------------------------

TEST(Qwen2Plan, WritesTheQwen2TensorsWithQkvBiasesAndNoPermutation) {
  TempDir temp;
  const auto p = plan_model(write_model(temp, "qwen2", qwen_spec("qwen2")));
  EXPECT_TRUE(is_str(*p, "general.architecture", "qwen2"));
  EXPECT_EQ(p->names(), layer_names({"attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight",
                                     "attn_output.weight", "attn_q.bias", "attn_k.bias", "attn_v.bias", "ffn_norm.weight",
                                     "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"},
                                    true));
  EXPECT_EQ(p->plan.tensors.size(), p->names().size()) << "a tensor name appears twice";
  const int64_t vocab = p->tensor("token_embd.weight").shape.at(0);
  const int64_t q = kQHeads * kQwen2HeadDim, kv = kQKvHeads * kQwen2HeadDim;
  EXPECT_EQ(p->tensor("blk.1.attn_q.weight").shape, (std::vector<int64_t>{q, kQHidden}));
  EXPECT_EQ(p->tensor("blk.1.attn_k.weight").shape, (std::vector<int64_t>{kv, kQHidden}));
  EXPECT_EQ(p->tensor("blk.1.attn_q.bias").shape, (std::vector<int64_t>{q}));
  EXPECT_EQ(p->tensor("blk.1.attn_k.bias").shape, (std::vector<int64_t>{kv}));
  EXPECT_EQ(p->tensor("blk.1.attn_v.bias").shape, (std::vector<int64_t>{kv}));
  EXPECT_EQ(p->tensor("blk.0.attn_output.weight").ne(), (std::vector<int64_t>{q, kQHidden}));
  EXPECT_EQ(p->tensor("blk.0.ffn_down.weight").shape, (std::vector<int64_t>{kQHidden, kQFf}));
  EXPECT_EQ(p->tensor("output.weight").shape, (std::vector<int64_t>{vocab, kQHidden}));
  EXPECT_EQ(p->tensor("blk.0.attn_q.bias").type, GgmlType::F32);
  expect_no_layout_change(*p);
}

TEST(Qwen2Plan, BiasAndQueryValuesAreTheSourceValuesUnpermuted) {
  TempDir temp;
  const TinyModelSpec spec = qwen_spec("qwen2");
  const auto p = plan_model(write_model(temp, "qwen2", spec));
  for (const char* proj : {"q", "k", "v"}) {
    const std::string source = fmt::format("model.layers.1.self_attn.{}_proj.bias", proj);
    const std::vector<float> want = gen::tiny_model_float_weights(spec, source);
    EXPECT_EQ(recipe_values(p->tensor(fmt::format("blk.1.attn_{}.bias", proj))), want) << source;
    double energy = 0;
    for (float v : want) energy += v * v;
    EXPECT_GT(energy / static_cast<double>(want.size()), 0.05) << "biases large enough that dropping them shows";
  }
  EXPECT_EQ(recipe_values(p->tensor("blk.0.attn_q.weight")),
            gen::tiny_model_float_weights(spec, "model.layers.0.self_attn.q_proj.weight"));
}

TEST(Qwen2Plan, HyperParameterKeysHaveExactTypesAndValues) {
  TempDir temp;
  TinyModelSpec spec = qwen_spec("qwen2");
  spec.rope_theta = 250000;
  spec.rms_norm_eps = 1e-5;
  spec.max_position_embeddings = 32768;
  const auto p = plan_model(write_model(temp, "qwen2", spec));
  const int64_t vocab = p->tensor("token_embd.weight").shape.at(0);
  EXPECT_TRUE(is_u32(*p, "qwen2.context_length", 32768));
  EXPECT_TRUE(is_u32(*p, "qwen2.embedding_length", kQHidden));
  EXPECT_TRUE(is_u32(*p, "qwen2.block_count", kQLayers));
  EXPECT_TRUE(is_u32(*p, "qwen2.feed_forward_length", kQFf));
  EXPECT_TRUE(is_u32(*p, "qwen2.attention.head_count", kQHeads));
  EXPECT_TRUE(is_u32(*p, "qwen2.attention.head_count_kv", kQKvHeads));
  EXPECT_TRUE(is_u32(*p, "qwen2.attention.key_length", kQwen2HeadDim));
  EXPECT_TRUE(is_u32(*p, "qwen2.attention.value_length", kQwen2HeadDim));
  EXPECT_TRUE(is_u32(*p, "qwen2.rope.dimension_count", kQwen2HeadDim));
  EXPECT_TRUE(is_u32(*p, "qwen2.vocab_size", vocab));
  EXPECT_TRUE(is_f32(*p, "qwen2.attention.layer_norm_rms_epsilon", 1e-5f));
  EXPECT_TRUE(is_f32(*p, "qwen2.rope.freq_base", 250000.0f));
  EXPECT_FALSE(p->plan.metadata.has("qwen2.rope.scaling.type"));
  EXPECT_FALSE(p->plan.metadata.has("qwen2.expert_count"));
}

TEST(Qwen2Plan, MlxLmDefaultsFillMissingKeysAndAHeadDimKeyIsIgnored) {
  TempDir temp;
  const fs::path dir = write_model(temp, "qwen2", qwen_spec("qwen2"));
  patch_config(dir, [](nlohmann::json& c) {
    c.erase("rope_theta");
    c.erase("max_position_embeddings");
    c["head_dim"] = 48;  // qwen2.py derives hidden / heads and never reads it
  });
  const auto p = plan_model(dir);
  EXPECT_TRUE(is_f32(*p, "qwen2.rope.freq_base", 1e6f));
  EXPECT_TRUE(is_u32(*p, "qwen2.context_length", 32768));
  EXPECT_TRUE(is_u32(*p, "qwen2.attention.key_length", kQwen2HeadDim));
}

TEST(Qwen2Plan, TiedEmbeddingsWriteNoOutputTensorAndAMissingKeyMeansTied) {
  TempDir temp;
  TinyModelSpec spec = qwen_spec("qwen2");
  spec.tie_embeddings = true;
  const auto tied = plan_model(write_model(temp, "tied", spec));
  EXPECT_FALSE(tied->has("output.weight"));
  EXPECT_TRUE(tied->has("token_embd.weight"));

  // An untied folder whose config.json lost the key: mlx-lm's qwen2 defaults to tied and drops the stored lm_head.
  const fs::path dir = write_model(temp, "no-key", qwen_spec("qwen2"));
  ASSERT_TRUE(SourceModel::open(dir).has("lm_head.weight"));
  patch_config(dir, [](nlohmann::json& c) { c.erase("tie_word_embeddings"); });
  const auto defaulted = plan_model(dir);
  EXPECT_FALSE(defaulted->has("output.weight"));

  // null is Python's None: untied.
  patch_config(dir, [](nlohmann::json& c) { c["tie_word_embeddings"] = nullptr; });
  EXPECT_TRUE(plan_model(dir)->has("output.weight"));
}

TEST(Qwen2Plan, UntiedConfigWithoutLmHeadIsRefused) {
  TempDir temp;
  TinyModelSpec spec = qwen_spec("qwen2");
  spec.tie_embeddings = true;
  const fs::path dir = write_model(temp, "tied", spec);
  patch_config(dir, [](nlohmann::json& c) { c["tie_word_embeddings"] = false; });
  EXPECT_TRUE(test_support::throws_with<Error>([&] { plan_model(dir); }, {"lm_head.weight"}));
}

TEST(Qwen2Plan, MissingBiasesAreAnErrorNotASilentlyWorseFile) {
  TempDir temp;
  const fs::path dir = write_model(temp, "qwen2", qwen_spec("qwen2"));
  // Rewrite the folder without layer 0's k_proj bias: llama.cpp would load such a file.
  const fs::path stripped = temp / "stripped";
  fs::create_directories(stripped);
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.path().filename() != "model.safetensors" && entry.path().filename() != "model.safetensors.index.json")
      fs::copy_file(entry.path(), stripped / entry.path().filename());
  {
    const SourceModel model = SourceModel::open(dir);
    std::vector<gen::GenTensor> tensors;
    for (const auto& [name, tensor] : model.tensors()) {
      if (name == "model.layers.0.self_attn.k_proj.bias") continue;
      const std::vector<float> values = ref::read_all(tensor);
      tensors.push_back({name, DType::F32, tensor.shape(), gen::float_bytes(values, DType::F32)});
    }
    gen::write_safetensors(stripped / "model.safetensors", tensors, {{"format", "mlx"}}, 1);
  }
  EXPECT_TRUE(test_support::throws_with<Error>([&] { plan_model(stripped); }, {"model.layers.0.self_attn.k_proj.bias"}));
}

// ---- qwen3 ------------------------------------------------------------------------------------------------------

TEST(Qwen3Plan, WritesPerHeadQkNormsUnshiftedAndNoBiases) {
  TempDir temp;
  const TinyModelSpec spec = qwen_spec("qwen3");
  const auto p = plan_model(write_model(temp, "qwen3", spec));
  EXPECT_TRUE(is_str(*p, "general.architecture", "qwen3"));
  EXPECT_EQ(p->names(), layer_names({"attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight",
                                     "attn_output.weight", "attn_q_norm.weight", "attn_k_norm.weight", "ffn_norm.weight",
                                     "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"},
                                    true));
  const int64_t q = kQHeads * kQwen3HeadDim, kv = kQKvHeads * kQwen3HeadDim;
  EXPECT_EQ(p->tensor("blk.0.attn_q.weight").shape, (std::vector<int64_t>{q, kQHidden}));
  EXPECT_EQ(p->tensor("blk.0.attn_k.weight").shape, (std::vector<int64_t>{kv, kQHidden}));
  EXPECT_EQ(p->tensor("blk.0.attn_output.weight").shape, (std::vector<int64_t>{kQHidden, q}));
  for (const char* norm : {"q_norm", "k_norm"}) {
    const TensorRecipe& t = p->tensor(fmt::format("blk.1.attn_{}.weight", norm));
    EXPECT_EQ(t.shape, (std::vector<int64_t>{kQwen3HeadDim}));
    EXPECT_EQ(t.type, GgmlType::F32);
    EXPECT_EQ(t.op, ValueOp::None);
    // Plain RMSNorm weights around 1, written as stored.
    const std::vector<float> want = gen::tiny_model_float_weights(spec, fmt::format("model.layers.1.self_attn.{}.weight", norm));
    EXPECT_EQ(recipe_values(t), want);
    double mean = 0;
    for (float v : want) mean += v / static_cast<double>(want.size());
    EXPECT_NEAR(mean, 1.0, 0.1);
  }
  expect_no_layout_change(*p);
}

TEST(Qwen3Plan, KeyAndValueLengthAreHeadDim) {
  TempDir temp;
  const auto p = plan_model(write_model(temp, "qwen3", qwen_spec("qwen3")));
  EXPECT_TRUE(is_u32(*p, "qwen3.attention.key_length", kQwen3HeadDim));
  EXPECT_TRUE(is_u32(*p, "qwen3.attention.value_length", kQwen3HeadDim));
  EXPECT_TRUE(is_u32(*p, "qwen3.rope.dimension_count", kQwen3HeadDim));
  EXPECT_TRUE(is_u32(*p, "qwen3.context_length", 40960));
  EXPECT_TRUE(is_u32(*p, "qwen3.embedding_length", kQHidden));
  EXPECT_TRUE(is_u32(*p, "qwen3.feed_forward_length", kQFf));
  EXPECT_TRUE(is_u32(*p, "qwen3.attention.head_count", kQHeads));
  EXPECT_TRUE(is_u32(*p, "qwen3.attention.head_count_kv", kQKvHeads));
  EXPECT_TRUE(is_f32(*p, "qwen3.rope.freq_base", 1e6f));
  EXPECT_TRUE(is_f32(*p, "qwen3.attention.layer_norm_rms_epsilon", 1e-6f));
}

TEST(Qwen3Plan, TiedFolderWithAStoredLmHeadDropsIt) {
  TempDir temp;
  const fs::path dir = write_model(temp, "qwen3", qwen_spec("qwen3"));
  patch_config(dir, [](nlohmann::json& c) { c["tie_word_embeddings"] = true; });
  EXPECT_FALSE(plan_model(dir)->has("output.weight"));
}

TEST(Qwen3Plan, RequiredKeysOfMlxLmsQwen3AreRequired) {
  TempDir temp;
  for (const char* key : {"head_dim", "tie_word_embeddings", "rope_theta", "max_position_embeddings", "rms_norm_eps"}) {
    const fs::path dir = write_model(temp, std::string("no-") + key, qwen_spec("qwen3"));
    patch_config(dir, [&](nlohmann::json& c) { c.erase(key); });
    EXPECT_TRUE(test_support::throws_with<Error>([&] { plan_model(dir); }, {key})) << key;
  }
}

TEST(Qwen3Plan, LinearAndYarnRopeScalingBecomeScalingKeys) {
  TempDir temp;
  TinyModelSpec spec = qwen_spec("qwen3");
  spec.rope_scaling = {{"type", "linear"}, {"factor", 2.5}};
  const auto linear = plan_model(write_model(temp, "linear", spec));
  EXPECT_TRUE(is_str(*linear, "qwen3.rope.scaling.type", "linear"));
  EXPECT_TRUE(is_f32(*linear, "qwen3.rope.scaling.factor", 2.5f));
  EXPECT_FALSE(linear->plan.metadata.has("qwen3.rope.scaling.original_context_length"));

  spec.rope_scaling = {{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 32768}};
  const auto yarn = plan_model(write_model(temp, "yarn", spec));
  EXPECT_TRUE(is_str(*yarn, "qwen3.rope.scaling.type", "yarn"));
  EXPECT_TRUE(is_f32(*yarn, "qwen3.rope.scaling.factor", 4.0f));
  EXPECT_TRUE(is_u32(*yarn, "qwen3.rope.scaling.original_context_length", 32768));
  EXPECT_FALSE(yarn->plan.metadata.has("qwen3.rope.scaling.attn_factor"));  // llama.cpp's mscale is mlx-lm's

  // mlx-lm's default original context (4096), not llama.cpp's (the training context), must be written.
  spec.rope_scaling = {{"type", "yarn"}, {"factor", 2.0}};
  const auto defaulted = plan_model(write_model(temp, "yarn-default", spec));
  EXPECT_TRUE(is_u32(*defaulted, "qwen3.rope.scaling.original_context_length", 4096));

  // DeepSeek-style mscale keys: mlx-lm scales q and k by mscale(f, 1) / mscale(f, 1) = 1, llama.cpp by
  // attn_factor · (1 + 0.1 ln f).
  spec.rope_scaling = {{"type", "yarn"}, {"factor", 4.0}, {"mscale", 1.0}, {"mscale_all_dim", 1.0}};
  const auto scaled = plan_model(write_model(temp, "yarn-mscale", spec));
  EXPECT_TRUE(is_f32(*scaled, "qwen3.rope.scaling.attn_factor", static_cast<float>(1.0 / (1.0 + 0.1 * std::log(4.0)))));

  // "default" and mlx-lm's text "mrope" are plain rope.
  spec.rope_scaling = {{"type", "mrope"}, {"mrope_section", {16, 4, 4}}};
  EXPECT_FALSE(plan_model(write_model(temp, "mrope", spec))->plan.metadata.has("qwen3.rope.scaling.type"));
}

TEST(Qwen3Plan, RopeScalingLlamaCppCannotExpressIsRefusedByName) {
  TempDir temp;
  const std::vector<std::pair<nlohmann::json, std::vector<std::string>>> cases = {
      {{{"type", "dynamic"}, {"factor", 2.0}}, {"dynamic", "rope_scaling"}},
      {{{"rope_type", "llama3"}, {"factor", 8.0}}, {"llama3", "rope_scaling"}},
      {{{"type", "longrope"}, {"short_factor", {1.0}}, {"long_factor", {1.0}}}, {"longrope"}},
      {{{"type", "yarn"}, {"factor", 4.0}, {"beta_fast", 16}}, {"beta_fast"}},
      {{{"type", "yarn"}, {"factor", 4.0}, {"attention_factor", 0.8}}, {"attention_factor"}},
      {{{"type", "yarn"}}, {"factor"}},
  };
  int n = 0;
  for (const auto& [scaling, parts] : cases) {
    TinyModelSpec spec = qwen_spec("qwen3");
    spec.rope_scaling = scaling;
    const fs::path dir = write_model(temp, "case" + std::to_string(n++), spec);
    EXPECT_TRUE(test_support::throws_with<Error>([&] { plan_model(dir); }, parts)) << scaling.dump();
  }
}

TEST(Qwen3Plan, WindowedAttentionAndTraditionalRopeAreRefused) {
  TempDir temp;
  const fs::path dir = write_model(temp, "qwen3", qwen_spec("qwen3"));
  patch_config(dir, [](nlohmann::json& c) {
    c["use_sliding_window"] = true;
    c["sliding_window"] = 4096;
  });
  EXPECT_TRUE(test_support::throws_with<Error>([&] { plan_model(dir); }, {"use_sliding_window"}));

  const fs::path qwen2 = write_model(temp, "qwen2", qwen_spec("qwen2"));
  patch_config(qwen2, [](nlohmann::json& c) { c["rope_traditional"] = true; });
  EXPECT_TRUE(test_support::throws_with<Error>([&] { plan_model(qwen2); }, {"rope_traditional"}));
}

TEST(Qwen3Plan, TensorsMlxLmsModelHasNoParameterForAreRefused) {
  TempDir temp;
  // A qwen2 folder relabelled qwen3: its biases have no place in qwen3 (and its q/k norms are missing).
  const fs::path dir = write_model(temp, "qwen2", qwen_spec("qwen2"));
  patch_config(dir, [](nlohmann::json& c) {
    c["model_type"] = "qwen3";
    c["head_dim"] = kQwen2HeadDim;
  });
  EXPECT_TRUE(test_support::throws_with<Error>([&] { plan_model(dir); }, {"q_norm"}));
  // vocab_size disagreeing with the embedding table.
  const fs::path vocab = write_model(temp, "vocab", qwen_spec("qwen3"));
  patch_config(vocab, [](nlohmann::json& c) { c["vocab_size"] = c["vocab_size"].get<int64_t>() + 1; });
  EXPECT_TRUE(test_support::throws_with<Error>([&] { plan_model(vocab); }, {"vocab_size"}));
}

// ---- qwen3_moe --------------------------------------------------------------------------------------------------

TEST(Qwen3MoePlan, StackedExpertsAndAnF32RouterInEveryLayer) {
  TempDir temp;
  const auto p = plan_model(write_model(temp, "moe", qwen_spec("qwen3_moe")));
  EXPECT_TRUE(is_str(*p, "general.architecture", "qwen3moe"));
  EXPECT_EQ(p->names(), layer_names({"attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight",
                                     "attn_output.weight", "attn_q_norm.weight", "attn_k_norm.weight", "ffn_norm.weight",
                                     "ffn_gate_inp.weight", "ffn_gate_exps.weight", "ffn_up_exps.weight",
                                     "ffn_down_exps.weight"},
                                    true));
  for (int i = 0; i < kQLayers; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    const TensorRecipe& router = p->tensor(b + "ffn_gate_inp.weight");
    EXPECT_EQ(router.shape, (std::vector<int64_t>{kExperts, kQHidden}));
    EXPECT_EQ(router.ne(), (std::vector<int64_t>{kQHidden, kExperts}));
    EXPECT_EQ(router.type, GgmlType::F32);
    EXPECT_TRUE(router.keep_f32);
    EXPECT_EQ(p->tensor(b + "ffn_gate_exps.weight").shape, (std::vector<int64_t>{kExperts, kExpertFf, kQHidden}));
    EXPECT_EQ(p->tensor(b + "ffn_up_exps.weight").shape, (std::vector<int64_t>{kExperts, kExpertFf, kQHidden}));
    EXPECT_EQ(p->tensor(b + "ffn_down_exps.weight").shape, (std::vector<int64_t>{kExperts, kQHidden, kExpertFf}));
    EXPECT_EQ(p->tensor(b + "ffn_down_exps.weight").ne(), (std::vector<int64_t>{kExpertFf, kQHidden, kExperts}));
    EXPECT_EQ(p->tensor(b + "ffn_gate_exps.weight").type, GgmlType::BF16);
    EXPECT_EQ(p->tensor(b + "ffn_gate_exps.weight").sources.at(0)->name(),
              fmt::format("model.layers.{}.mlp.switch_mlp.gate_proj.weight", i));
    EXPECT_EQ(p->tensor(b + "ffn_up_exps.weight").sources.at(0)->name(),
              fmt::format("model.layers.{}.mlp.switch_mlp.up_proj.weight", i));
  }
  expect_no_layout_change(*p);
  EXPECT_TRUE(is_u32(*p, "qwen3moe.expert_count", kExperts));
  EXPECT_TRUE(is_u32(*p, "qwen3moe.expert_used_count", kExpertsUsed));
  EXPECT_TRUE(is_u32(*p, "qwen3moe.expert_feed_forward_length", kExpertFf));
  EXPECT_TRUE(is_u32(*p, "qwen3moe.feed_forward_length", kQFf));
  EXPECT_TRUE(is_u32(*p, "qwen3moe.attention.key_length", kQwen3HeadDim));
  EXPECT_TRUE(is_u32(*p, "qwen3moe.attention.value_length", kQwen3HeadDim));
  EXPECT_TRUE(is_u32(*p, "qwen3moe.rope.dimension_count", kQwen3HeadDim));
  EXPECT_TRUE(is_f32(*p, "qwen3moe.rope.freq_base", 1e6f));
  EXPECT_TRUE(is_u32(*p, "qwen3moe.context_length", 40960));
}

TEST(Qwen3MoePlan, EightBitRouterOfAFourBitFolderIsDequantizedToF32AndExpertsRepacked) {
  TempDir temp;
  TinyModelSpec spec = qwen_spec("qwen3_moe");
  spec.quant = gen::QuantRecipe::parse("affine:4:64");
  const fs::path dir = write_model(temp, "moe-q4", spec);
  const SourceModel model = SourceModel::open(dir);
  ASSERT_TRUE(model.require("model.layers.0.mlp.gate.weight").quant().has_value());
  EXPECT_EQ(model.require("model.layers.0.mlp.gate.weight").quant()->bits, 8);
  EXPECT_EQ(model.require("model.layers.0.mlp.switch_mlp.up_proj.weight").quant()->bits, 4);
  const auto p = plan_model(dir);
  EXPECT_EQ(p->tensor("blk.0.ffn_gate_inp.weight").type, GgmlType::F32);
  EXPECT_EQ(p->tensor("blk.0.ffn_up_exps.weight").type, GgmlType::Q4_1);
  EXPECT_TRUE(p->tensor("blk.0.ffn_up_exps.weight").repack);
  EXPECT_EQ(p->tensor("blk.1.ffn_down_exps.weight").type, GgmlType::Q4_1);
}

TEST(Qwen3MoePlan, HuggingFacePerExpertTensorsAreStackedInExpertOrder) {
  TempDir temp;
  const TinyModelSpec spec = qwen_spec("qwen3_moe");
  const fs::path dir = write_model(temp, "moe", spec);
  // The same weights as a Hugging Face checkpoint: experts.E.X_proj.weight instead of switch_mlp.X_proj.weight.
  const fs::path hf = temp / "hf";
  fs::create_directories(hf);
  fs::copy_file(dir / "config.json", hf / "config.json");
  fs::copy_file(dir / "tokenizer.json", hf / "tokenizer.json");
  fs::copy_file(dir / "tokenizer_config.json", hf / "tokenizer_config.json");
  {
    const SourceModel model = SourceModel::open(dir);
    std::vector<gen::GenTensor> tensors;
    for (const auto& [name, tensor] : model.tensors()) {
      const std::vector<float> values = ref::read_all(tensor);
      const size_t at = name.find("switch_mlp.");
      if (at == std::string::npos) {
        tensors.push_back({name, DType::F32, tensor.shape(), gen::float_bytes(values, DType::F32)});
        continue;
      }
      const int64_t per_expert = tensor.element_count() / kExperts;
      for (int64_t e = 0; e < kExperts; ++e) {
        const std::vector<float> part(values.begin() + e * per_expert, values.begin() + (e + 1) * per_expert);
        const std::string split = name.substr(0, at) + fmt::format("experts.{}.", e) + name.substr(at + 11);
        tensors.push_back({split, DType::F32, {tensor.shape()[1], tensor.shape()[2]}, gen::float_bytes(part, DType::F32)});
      }
    }
    gen::write_safetensors(hf / "model.safetensors", tensors, {{"format", "pt"}}, 8);
  }
  const auto stacked = plan_model(dir, OutType::F32);
  const auto split = plan_model(hf, OutType::F32);
  EXPECT_EQ(split->names(), stacked->names());
  const TensorRecipe& down = split->tensor("blk.1.ffn_down_exps.weight");
  EXPECT_EQ(down.shape, (std::vector<int64_t>{kExperts, kQHidden, kExpertFf}));
  ASSERT_EQ(down.sources.size(), static_cast<size_t>(kExperts));
  EXPECT_EQ(down.sources[2]->name(), "model.layers.1.mlp.experts.2.down_proj.weight");
  EXPECT_EQ(recipe_values(down), recipe_values(stacked->tensor("blk.1.ffn_down_exps.weight")));
}

TEST(Qwen3MoePlan, ConfigurationsLlamaCppsQwen3MoeCannotExpressAreRefused) {
  TempDir temp;
  const std::vector<std::pair<std::function<void(nlohmann::json&)>, std::vector<std::string>>> cases = {
      {[](nlohmann::json& c) { c["mlp_only_layers"] = {1}; }, {"mlp_only_layers", "layer 1"}},
      {[](nlohmann::json& c) { c["decoder_sparse_step"] = 2; }, {"decoder_sparse_step 2"}},
      {[](nlohmann::json& c) { c["norm_topk_prob"] = false; }, {"norm_topk_prob false", "renormalises"}},
      {[](nlohmann::json& c) { c.erase("norm_topk_prob"); }, {"norm_topk_prob"}},
      {[](nlohmann::json& c) { c["num_experts"] = 0; }, {"num_experts"}},
      {[](nlohmann::json& c) { c["num_experts_per_tok"] = 5; }, {"num_experts_per_tok 5"}},
      {[](nlohmann::json& c) { c["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}}; }, {"rope_scaling", "qwen3_moe"}},
  };
  int n = 0;
  for (const auto& [edit, parts] : cases) {
    const fs::path dir = write_model(temp, "case" + std::to_string(n), qwen_spec("qwen3_moe"));
    patch_config(dir, edit);
    EXPECT_TRUE(test_support::throws_with<Error>([&] { plan_model(dir); }, parts)) << "case " << n;
    ++n;
  }
  // Out-of-range indices in mlp_only_layers change nothing in mlx-lm and are accepted; so is an explicit
  // rope_scaling of type default.
  const fs::path dir = write_model(temp, "harmless", qwen_spec("qwen3_moe"));
  patch_config(dir, [](nlohmann::json& c) {
    c["mlp_only_layers"] = {7};
    c["rope_scaling"] = {{"rope_type", "default"}};
  });
  EXPECT_TRUE(plan_model(dir)->has("blk.1.ffn_gate_exps.weight"));
}

}  // namespace
}  // namespace mlx2gguf
