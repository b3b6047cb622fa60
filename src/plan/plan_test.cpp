// The conversion plan, checked on generated model folders: the plan builder, type choice, completeness and general
// metadata. Each architecture's own mapping is checked next to it (src/arch/<family>/mapping_test.cpp).
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
#include "plan/plan_test_support.h"
#include "plan/planner.h"
#include "read/source_model.h"
#include "read/test_support.h"
#include "util/error.h"

namespace mlx2gguf {
namespace {

using namespace plan_test;

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

TEST(Planner, NormsAndBiasesStayF32WhileWeightsFollowOutType) {
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

TEST(Planner, AutoOutTypeIsF16ForFloat16Sources) {
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

TEST(Planner, AutoRepacksAffine4BitWeightsAsQ4_1) {
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

TEST(Planner, AutoFallsBackToQ8_0ForWidthsWithoutAnExactType) {
  TempDir temp;
  TinyModelSpec quantized = llama_spec();
  quantized.quant = gen::QuantRecipe::parse("affine:8:64");
  const auto p = plan_model(write_model(temp, "q8", quantized));
  const TensorRecipe& q = p->tensor("blk.0.attn_q.weight");
  EXPECT_EQ(q.type, GgmlType::Q8_0);
  EXPECT_FALSE(q.repack);
  EXPECT_EQ(q.type_note, "MLX affine 8-bit g64 re-encoded: affine 8-bit has no exact GGUF type");
}

TEST(Planner, ExplicitQ4_1MovesTheCodesOfA4BitSource) {
  TempDir temp;
  TinyModelSpec quantized = llama_spec();
  quantized.quant = gen::QuantRecipe::parse("affine:4:64");
  const auto dir = write_model(temp, "quantized", quantized);
  const auto q4_1 = plan_model(dir, OutType::Q4_1);
  EXPECT_TRUE(q4_1->tensor("blk.0.attn_q.weight").repack);
  // llama-quantize's Q4_1 mix gives the output head Q6_K, Q8_0 here as rows of 128 are not whole 256-blocks: more
  // bits than the head's exact 4-bit codes need, and error added. Its lossless home Q4_1 is kept instead ...
  EXPECT_EQ(q4_1->tensor("output.weight").type, GgmlType::Q4_1);
  EXPECT_TRUE(q4_1->tensor("output.weight").repack);
  EXPECT_TRUE(is_u32(*q4_1, "general.file_type", 3));
  // ... unless --pure asks for llama-quantize's exact types.
  PlanOptions pure;
  pure.out_type = OutType::Q4_1;
  pure.pure = true;
  const Planned llama_quantize_types(dir, pure);
  EXPECT_EQ(llama_quantize_types.tensor("output.weight").type, GgmlType::Q8_0);
  EXPECT_FALSE(llama_quantize_types.tensor("output.weight").repack);
  const auto f16 = plan_model(dir, OutType::F16);
  EXPECT_EQ(f16->tensor("blk.0.attn_q.weight").type, GgmlType::F16);
  EXPECT_FALSE(f16->tensor("blk.0.attn_q.weight").repack);
}

TEST(Planner, Q8_0RowsThatAreNotWholeBlocksFallBackToF16) {
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

// Names, model card, sampling and overrides: general_metadata_test.cpp.

TEST(GeneralMetadata, SizeLabelIsCountedWhenTheNameHasNone) {
  TempDir temp;
  const TinyModelSpec spec = llama_spec();
  const auto p = plan_model(write_model(temp, "tiny", spec));
  const int64_t vocab = p->tensor("token_embd.weight").shape.at(0);
  // Parameters of the spec, counted from the architecture rather than from the plan.
  const int64_t q = kHeads * kHeadDim, kv = kKvHeads * kHeadDim;
  const int64_t per_layer = 2 * kHidden + (q * kHidden + q) + 2 * (kv * kHidden + kv) + (kHidden * q + kHidden) + 3 * kFf * kHidden;
  const int64_t total = 2 * vocab * kHidden + kHidden + kLayers * per_layer;
  // The built-in tokenizer has 303 tokens: 2·303·128 + 128 + 2·172800 = 423,296 parameters, which the GGUF naming
  // convention (scale K, at least two significant digits) writes as "423K".
  ASSERT_EQ(vocab, 303);
  ASSERT_EQ(total, 423296);
  EXPECT_TRUE(is_str(*p, "general.size_label", "423K"));
  EXPECT_TRUE(is_str(*p, "general.name", "Tiny"));  // llama.cpp titles lowercase words
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

}  // namespace
}  // namespace mlx2gguf
