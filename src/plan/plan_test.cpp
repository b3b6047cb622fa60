// The conversion plan, checked on generated model folders: GGUF tensor names, shapes, types, layout maps, value
// ops and metadata keys, per architecture.
#include "plan/plan.h"

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
#include "plan/planner.h"
#include "read/source_model.h"
#include "read/test_support.h"
#include "util/error.h"

namespace mlx2gguf {
namespace {

namespace fs = std::filesystem;
using gen::TinyModelSpec;
using test_support::TempDir;

// A source model and its plan; the plan points into the model, so they live together.
struct Planned {
  SourceModel model;
  ConversionPlan plan;
  Planned(const fs::path& dir, const PlanOptions& options) : model(SourceModel::open(dir)), plan(make_plan(model, options)) {}

  const TensorRecipe& tensor(const std::string& name) const {
    for (const auto& recipe : plan.tensors)
      if (recipe.name == name) return recipe;
    throw std::runtime_error("the plan has no tensor '" + name + "'");
  }
  bool has(const std::string& name) const {
    for (const auto& recipe : plan.tensors)
      if (recipe.name == name) return true;
    return false;
  }
  std::set<std::string> names() const {
    std::set<std::string> out;
    for (const auto& recipe : plan.tensors) out.insert(recipe.name);
    return out;
  }
  const GgufValue& key(const std::string& name) const {
    const GgufValue* value = plan.metadata.get(name);
    if (value == nullptr) throw std::runtime_error("the plan has no metadata key '" + name + "'");
    return *value;
  }
};

std::unique_ptr<Planned> plan_model(const fs::path& dir, OutType out_type = OutType::Auto) {
  PlanOptions options;
  options.out_type = out_type;
  return std::make_unique<Planned>(dir, options);
}

fs::path write_model(const TempDir& temp, const std::string& folder, const TinyModelSpec& spec) {
  const fs::path dir = temp / folder;
  gen::write_tiny_model(spec, dir);
  return dir;
}

::testing::AssertionResult is_u32(const Planned& p, const std::string& key, int64_t value) {
  const GgufValue* v = p.plan.metadata.get(key);
  if (v == nullptr) return ::testing::AssertionFailure() << key << " is missing";
  if (v->type != GgufType::UINT32) return ::testing::AssertionFailure() << key << " is " << gguf_type_name(v->type) << ", not u32";
  if (v->ints.size() != 1 || v->ints[0] != value)
    return ::testing::AssertionFailure() << key << " = " << v->to_string() << ", expected " << value;
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult is_f32(const Planned& p, const std::string& key, float value) {
  const GgufValue* v = p.plan.metadata.get(key);
  if (v == nullptr) return ::testing::AssertionFailure() << key << " is missing";
  if (v->type != GgufType::FLOAT32) return ::testing::AssertionFailure() << key << " is " << gguf_type_name(v->type) << ", not f32";
  if (v->floats.size() != 1 || static_cast<float>(v->floats[0]) != value)
    return ::testing::AssertionFailure() << key << " = " << v->to_string() << ", expected " << value;
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult is_str(const Planned& p, const std::string& key, const std::string& value) {
  const GgufValue* v = p.plan.metadata.get(key);
  if (v == nullptr) return ::testing::AssertionFailure() << key << " is missing";
  if (v->type != GgufType::STRING) return ::testing::AssertionFailure() << key << " is " << gguf_type_name(v->type) << ", not str";
  if (v->strings.size() != 1 || v->strings[0] != value)
    return ::testing::AssertionFailure() << key << " = " << v->to_string() << ", expected \"" << value << "\"";
  return ::testing::AssertionSuccess();
}

// Half-split rotary rows → adjacent pairs, written out directly: output row h*hd + 2j + k takes h*hd + k*hd/2 + j.
IndexMap expected_rope_rows(int64_t heads, int64_t head_dim) {
  IndexMap map;
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t j = 0; j < head_dim / 2; ++j)
      for (int64_t k = 0; k < 2; ++k) map.push_back(h * head_dim + k * (head_dim / 2) + j);
  return map;
}

// ---- llama ------------------------------------------------------------------------------------------------------

// Untied, attention biases, head_dim different from hidden / heads so q/k/o widths cannot be confused.
TinyModelSpec llama_spec() {
  TinyModelSpec s;
  s.model_type = "llama";
  s.hidden = 128;
  s.layers = 2;
  s.heads = 4;
  s.kv_heads = 2;
  s.head_dim = 48;
  s.intermediate = 256;
  s.attention_bias = true;
  s.dtype = "bfloat16";
  s.seed = 7;
  return s;
}

constexpr int64_t kHidden = 128, kHeads = 4, kKvHeads = 2, kHeadDim = 48, kFf = 256, kLayers = 2;

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

TEST(PlanBuilder, RecipesStayValidWhileMoreTensorsAreMapped) {
  TempDir temp;
  const SourceModel model = SourceModel::open(write_model(temp, "tiny-llama", llama_spec()));
  ConversionPlan plan;
  plan.metadata.set("general.architecture", GgufValue::str("llama"));
  PlanBuilder builder(model, plan);
  TensorRecipe& first = builder.map("first.weight", "model.embed_tokens.weight", {});
  std::vector<TensorRecipe*> later;
  for (const auto& [name, tensor] : model.tensors()) later.push_back(&builder.map("copy." + name, name, {}));
  first.column_map = {1, 0};  // written through a reference taken before every later map
  EXPECT_EQ(plan.tensors.front().name, "first.weight");
  EXPECT_EQ(plan.tensors.front().column_map, (std::vector<int64_t>{1, 0}));
  EXPECT_EQ(later.front()->name, plan.tensors[1].name);
  EXPECT_GT(plan.tensors.size(), 20u);
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

TEST(LlamaPlan, NormsAndBiasesStayF32WhileWeightsFollowOutType) {
  TempDir temp;
  const fs::path dir = write_model(temp, "tiny-llama", llama_spec());
  struct Case {
    OutType out;
    GgmlType weights;
  };
  // bf16 source: auto keeps bf16.
  for (const Case& c : {Case{OutType::Auto, GgmlType::BF16}, Case{OutType::F32, GgmlType::F32}, Case{OutType::F16, GgmlType::F16},
                        Case{OutType::BF16, GgmlType::BF16}, Case{OutType::Q8_0, GgmlType::Q8_0}}) {
    SCOPED_TRACE(out_type_name(c.out));
    const auto p = plan_model(dir, c.out);
    for (const auto& t : p->plan.tensors) {
      const bool one_d = t.shape.size() == 1;
      EXPECT_EQ(t.type, one_d ? GgmlType::F32 : c.weights) << t.name;
    }
    EXPECT_EQ(p->tensor("blk.0.attn_norm.weight").type, GgmlType::F32);
    EXPECT_EQ(p->tensor("blk.0.attn_q.bias").type, GgmlType::F32);
    EXPECT_EQ(p->tensor("token_embd.weight").type, c.weights);
  }
}

TEST(LlamaPlan, AutoOutTypeIsF16ForFloat16Sources) {
  TempDir temp;
  TinyModelSpec half = llama_spec();
  half.dtype = "float16";
  const auto p = plan_model(write_model(temp, "half", half));
  EXPECT_EQ(p->tensor("blk.0.attn_q.weight").type, GgmlType::F16);
  EXPECT_EQ(p->tensor("token_embd.weight").type, GgmlType::F16);
  EXPECT_EQ(p->tensor("blk.0.ffn_norm.weight").type, GgmlType::F32);
  EXPECT_EQ(resolve_out_type(p->model, OutType::Auto), GgmlType::F16);
  EXPECT_TRUE(is_u32(*p, "general.file_type", 1));
}

TEST(LlamaPlan, AutoRepacksAffine4BitWeightsAsQ4_1) {
  TempDir temp;
  TinyModelSpec quantized = llama_spec();
  quantized.quant = gen::QuantRecipe::parse("affine:4:64");
  const auto p = plan_model(write_model(temp, "quantized", quantized));
  for (const char* name : {"blk.0.attn_q.weight", "blk.0.attn_k.weight", "token_embd.weight", "blk.0.ffn_down.weight"}) {
    SCOPED_TRACE(name);
    EXPECT_EQ(p->tensor(name).type, GgmlType::Q4_1);
    EXPECT_TRUE(p->tensor(name).repack);
    EXPECT_EQ(p->tensor(name).type_note, "lossless from MLX affine 4-bit g64");
  }
  EXPECT_EQ(p->tensor("blk.0.ffn_norm.weight").type, GgmlType::F32);
  EXPECT_TRUE(is_u32(*p, "general.file_type", 3));
}

TEST(LlamaPlan, AutoFallsBackToQ8_0ForWidthsWithoutAnExactType) {
  TempDir temp;
  TinyModelSpec quantized = llama_spec();
  quantized.quant = gen::QuantRecipe::parse("affine:8:64");
  const auto p = plan_model(write_model(temp, "q8", quantized));
  const TensorRecipe& q = p->tensor("blk.0.attn_q.weight");
  EXPECT_EQ(q.type, GgmlType::Q8_0);
  EXPECT_FALSE(q.repack);
  EXPECT_EQ(q.type_note, "MLX affine 8-bit g64 re-encoded: affine 8-bit has no exact GGUF type");
}

TEST(LlamaPlan, ExplicitQ4_1MovesTheCodesOfA4BitSource) {
  TempDir temp;
  TinyModelSpec quantized = llama_spec();
  quantized.quant = gen::QuantRecipe::parse("affine:4:64");
  const auto dir = write_model(temp, "quantized", quantized);
  const auto q4_1 = plan_model(dir, OutType::Q4_1);
  EXPECT_TRUE(q4_1->tensor("blk.0.attn_q.weight").repack);
  // llama-quantize's Q4_1 mix gives the output head Q6_K, here Q8_0 as rows of 128 are not whole 256-blocks.
  EXPECT_EQ(q4_1->tensor("output.weight").type, GgmlType::Q8_0);
  EXPECT_FALSE(q4_1->tensor("output.weight").repack);
  EXPECT_TRUE(is_u32(*q4_1, "general.file_type", 3));
  const auto f16 = plan_model(dir, OutType::F16);
  EXPECT_EQ(f16->tensor("blk.0.attn_q.weight").type, GgmlType::F16);
  EXPECT_FALSE(f16->tensor("blk.0.attn_q.weight").repack);
}

TEST(LlamaPlan, Q8_0RowsThatAreNotWholeBlocksFallBackToF16) {
  TempDir temp;
  TinyModelSpec spec = llama_spec();
  spec.hidden = 80;  // rows of 80 elements: not a multiple of the 32-element Q8_0 block
  spec.head_dim = 20;
  spec.intermediate = 256;
  const auto p = plan_model(write_model(temp, "narrow", spec), OutType::Q8_0);
  EXPECT_EQ(p->tensor("blk.0.attn_q.weight").type, GgmlType::F16);     // row length 80
  EXPECT_EQ(p->tensor("blk.0.ffn_gate.weight").type, GgmlType::F16);   // row length 80
  EXPECT_EQ(p->tensor("blk.0.ffn_down.weight").type, GgmlType::Q8_0);  // row length 256
  EXPECT_EQ(p->tensor("blk.0.attn_norm.weight").type, GgmlType::F32);
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

TEST(PlanCompleteness, AnUnmappedSourceTensorFailsThePlanNamingIt) {
  TempDir temp;
  const fs::path dir = write_model(temp, "extra", llama_spec());
  // One more shard, listed in the index, holding a tensor the llama mapping does not know.
  const std::string stray = "model.layers.1.mlp.mystery_proj.weight";
  gen::GenTensor tensor{stray, DType::F32, {4, 8}, std::vector<uint8_t>(4 * 8 * 4, 0)};
  gen::write_safetensors(dir / "model-extra.safetensors", {tensor}, nlohmann::json{{"format", "mlx"}});
  nlohmann::json index;
  {
    std::ifstream in(dir / "model.safetensors.index.json");
    in >> index;
  }
  index["weight_map"][stray] = "model-extra.safetensors";
  test_support::write_json(dir / "model.safetensors.index.json", index);

  EXPECT_TRUE(test_support::throws_with<Error>([&] { plan_model(dir); }, {stray, "no place in the", "llama"}));
}

TEST(PlanCompleteness, RotaryFrequencyBuffersAreDroppedSilently) {
  TempDir temp;
  const fs::path dir = write_model(temp, "inv-freq", llama_spec());
  const std::string buffer = "model.layers.0.self_attn.rotary_emb.inv_freq";
  gen::GenTensor tensor{buffer, DType::F32, {24}, std::vector<uint8_t>(24 * 4, 0)};
  gen::write_safetensors(dir / "model-extra.safetensors", {tensor}, nlohmann::json{{"format", "mlx"}});
  nlohmann::json index;
  {
    std::ifstream in(dir / "model.safetensors.index.json");
    in >> index;
  }
  index["weight_map"][buffer] = "model-extra.safetensors";
  test_support::write_json(dir / "model.safetensors.index.json", index);

  const auto p = plan_model(dir);
  for (const auto& t : p->plan.tensors)
    for (const SourceTensor* s : t.sources) EXPECT_NE(s->name(), buffer) << t.name;
}

TEST(PlanCompleteness, UnsupportedModelTypeIsRejectedListingTheSupportedOnes) {
  TempDir temp;
  const fs::path dir = write_model(temp, "other", llama_spec());
  nlohmann::json config;
  {
    std::ifstream in(dir / "config.json");
    in >> config;
  }
  config["model_type"] = "gpt_neox";
  test_support::write_json(dir / "config.json", config);
  EXPECT_TRUE(test_support::throws_with<Error>([&] { plan_model(dir); }, {"gpt_neox", "not supported", "llama", "mixtral"}));
}

// ---- general.* --------------------------------------------------------------------------------------------------

TEST(GeneralMetadata, NamePartsComeFromTheFolderName) {
  TempDir temp;
  const auto p = plan_model(write_model(temp, "TinyLlama-1.1B-Chat-v1.0-bf16", llama_spec()));
  EXPECT_TRUE(is_str(*p, "general.architecture", "llama"));
  EXPECT_TRUE(is_str(*p, "general.type", "model"));
  EXPECT_TRUE(is_str(*p, "general.name", "TinyLlama-1.1B-Chat-v1.0"));
  EXPECT_TRUE(is_str(*p, "general.basename", "TinyLlama"));
  EXPECT_TRUE(is_str(*p, "general.size_label", "1.1B"));
  EXPECT_TRUE(is_str(*p, "general.finetune", "Chat"));
  EXPECT_TRUE(is_str(*p, "general.version", "v1.0"));
  EXPECT_TRUE(is_u32(*p, "general.quantization_version", 2));
}

TEST(GeneralMetadata, FolderGivenWithATrailingSeparatorKeepsItsName) {
  TempDir temp;
  const fs::path dir = write_model(temp, "TinyLlama-1.1B-Chat-v1.0-bf16", llama_spec());
  const auto p = plan_model(dir.string() + "/");
  EXPECT_TRUE(is_str(*p, "general.name", "TinyLlama-1.1B-Chat-v1.0"));
  EXPECT_TRUE(is_str(*p, "general.size_label", "1.1B"));
}

TEST(GeneralMetadata, NameOptionOverridesTheFolderName) {
  TempDir temp;
  const fs::path dir = write_model(temp, "TinyLlama-1.1B-Chat-v1.0-bf16", llama_spec());
  PlanOptions options;
  options.name = "Custom-3B-Base";
  Planned p(dir, options);
  EXPECT_TRUE(is_str(p, "general.name", "Custom-3B-Base"));
  EXPECT_TRUE(is_str(p, "general.basename", "Custom"));
  EXPECT_TRUE(is_str(p, "general.size_label", "3B"));
  EXPECT_TRUE(is_str(p, "general.finetune", "Base"));
}

TEST(GeneralMetadata, SizeLabelIsCountedWhenTheNameHasNone) {
  TempDir temp;
  const TinyModelSpec spec = llama_spec();
  const auto p = plan_model(write_model(temp, "tiny", spec));
  const int64_t vocab = p->tensor("token_embd.weight").shape.at(0);
  // Parameters of the spec, counted from the architecture rather than from the plan.
  const int64_t q = kHeads * kHeadDim, kv = kKvHeads * kHeadDim;
  const int64_t per_layer = 2 * kHidden + (q * kHidden + q) + 2 * (kv * kHidden + kv) + (kHidden * q + kHidden) + 3 * kFf * kHidden;
  const int64_t total = 2 * vocab * kHidden + kHidden + kLayers * per_layer;
  EXPECT_TRUE(is_str(*p, "general.size_label", format_parameter_count(static_cast<double>(total))));
  EXPECT_TRUE(is_str(*p, "general.name", "tiny"));
  EXPECT_FALSE(p->plan.metadata.has("general.finetune"));
  EXPECT_FALSE(p->plan.metadata.has("general.version"));
}

TEST(GeneralMetadata, FileTypeCodeFollowsTheOutType) {
  TempDir temp;
  const fs::path dir = write_model(temp, "tiny", llama_spec());
  EXPECT_TRUE(is_u32(*plan_model(dir, OutType::F32), "general.file_type", 0));
  EXPECT_TRUE(is_u32(*plan_model(dir, OutType::F16), "general.file_type", 1));
  EXPECT_TRUE(is_u32(*plan_model(dir, OutType::BF16), "general.file_type", 32));
  EXPECT_TRUE(is_u32(*plan_model(dir, OutType::Q8_0), "general.file_type", 7));
  EXPECT_TRUE(is_u32(*plan_model(dir, OutType::Auto), "general.file_type", 32));  // bf16 source
}

TEST(ParseModelName, SplitsMistralStyleNames) {
  const ModelNameParts parts = parse_model_name("Mistral-7B-Instruct-v0.3-4bit");
  EXPECT_EQ(parts.name, "Mistral-7B-Instruct-v0.3");
  EXPECT_EQ(parts.basename, "Mistral");
  EXPECT_EQ(parts.size_label, "7B");
  EXPECT_EQ(parts.finetune, "Instruct");
  EXPECT_EQ(parts.version, "v0.3");
}

TEST(ParseModelName, KeepsTheActiveParameterCountOfMoeSizes) {
  const ModelNameParts parts = parse_model_name("Qwen3.6-35B-A3B-8bit");
  EXPECT_EQ(parts.name, "Qwen3.6-35B-A3B");
  EXPECT_EQ(parts.basename, "Qwen3.6");
  EXPECT_EQ(parts.size_label, "35B-A3B");
  EXPECT_EQ(parts.finetune, "");
  EXPECT_EQ(parts.version, "");
}

TEST(ParseModelName, HandlesMultiPartBasenamesExpertCountsAndSeveralSuffixes) {
  const ModelNameParts llama = parse_model_name("Meta-Llama-3.1-8B-Instruct-mlx-bf16");
  EXPECT_EQ(llama.name, "Meta-Llama-3.1-8B-Instruct");
  EXPECT_EQ(llama.basename, "Meta-Llama-3.1");
  EXPECT_EQ(llama.size_label, "8B");
  EXPECT_EQ(llama.finetune, "Instruct");

  const ModelNameParts mixtral = parse_model_name("Mixtral-8x7B-Instruct-v0.1-4bit");
  EXPECT_EQ(mixtral.basename, "Mixtral");
  EXPECT_EQ(mixtral.size_label, "8x7B");
  EXPECT_EQ(mixtral.version, "v0.1");

  const ModelNameParts small = parse_model_name("SmolLM2-135M-Instruct");
  EXPECT_EQ(small.size_label, "135M");
  EXPECT_EQ(small.basename, "SmolLM2");
}

TEST(ParseModelName, NameWithoutSizeIsAllBasename) {
  const ModelNameParts parts = parse_model_name("my-finetune-4bit");
  EXPECT_EQ(parts.name, "my-finetune");
  EXPECT_EQ(parts.basename, "my-finetune");
  EXPECT_EQ(parts.size_label, "");
  EXPECT_EQ(parts.finetune, "");
}

TEST(FormatParameterCount, UsesTheLargestScaleWithAtLeastTwoSignificantDigits) {
  EXPECT_EQ(format_parameter_count(8.03e9), "8.0B");
  EXPECT_EQ(format_parameter_count(7.24e9), "7.2B");
  EXPECT_EQ(format_parameter_count(35.9e9), "36B");
  EXPECT_EQ(format_parameter_count(135e6), "135M");
  EXPECT_EQ(format_parameter_count(1.24e6), "1.2M");
  EXPECT_EQ(format_parameter_count(46.7e3), "47K");
  EXPECT_EQ(format_parameter_count(1.2e12), "1.2T");
  EXPECT_EQ(format_parameter_count(9.96e9), "10B");  // rounding up gains a digit: no decimal then
  EXPECT_EQ(format_parameter_count(0.4e3), "0.40K");
}

TEST(FormatParameterCount, MoeSizeLabelCountsSharedWeightsPlusOneExpert) {
  // 1B shared + 8 experts of 0.5B each: "8x" + (1B + 0.5B).
  EXPECT_EQ(size_label(5'000'000'000, 4'000'000'000, 8), "8x1.5B");
  EXPECT_EQ(size_label(7'240'000'000, 0, 0), "7.2B");
}

// ---- qwen35moe ------------------------------------------------------------------------------------------------

bool generator_knows(const std::string& type) {
  const auto types = gen::tiny_model_types();
  return std::find(types.begin(), types.end(), type) != types.end();
}

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

class Qwen35MoePlan : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!generator_knows("qwen3_5_moe")) GTEST_SKIP() << "the generator cannot write qwen3_5_moe folders";
  }
};

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

}  // namespace
}  // namespace mlx2gguf
