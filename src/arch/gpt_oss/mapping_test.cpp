// The gpt-oss family's GGUF mapping, checked on generated gpt_oss folders: tensor names and shapes, experts taken
// as stored (no second de-interleave, no transpose), the keys llama.cpp's gpt-oss needs (sliding window and its
// layer pattern, YaRN, expert widths), the lossless MXFP4 experts, and what is refused.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "arch/gpt_oss/builder.h"
#include "convert.h"
#include "gen/safetensors_writer.h"
#include "gen/tiny_model.h"
#include "plan/plan_test_support.h"
#include "plan/planner.h"
#include "read/model_folder.h"
#include "util/error.h"

namespace mlx2gguf {
namespace {

using namespace plan_test;
using nlohmann::json;

constexpr int64_t H = 128, kGptHeads = 4, kGptKv = 2, kHd = 64, kFf = 192, kExperts = 4, kUsed = 3, kGptLayers = 4;

TinyModelSpec gpt_oss_spec() {
  TinyModelSpec s;
  s.model_type = "gpt_oss";
  s.hidden = H;
  s.layers = kGptLayers;
  s.heads = kGptHeads;
  s.kv_heads = kGptKv;
  s.head_dim = kHd;
  s.intermediate = kFf;
  s.experts = kExperts;
  s.experts_per_tok = kUsed;
  s.sliding_window = 8;
  s.seed = 5;
  return s;
}

void edit_config(const fs::path& dir, const std::function<void(json&)>& edit) {
  json config = json::parse(std::ifstream(dir / "config.json"));
  edit(config);
  std::ofstream(dir / "config.json") << config.dump(4);
}

std::vector<float> recipe_values(const TensorRecipe& recipe) {
  std::vector<float> values(static_cast<size_t>(recipe.row_count() * recipe.row_length()));
  read_recipe_rows(recipe, 0, recipe.row_count(), values.data());
  return values;
}

TEST(GptOssPlan, WritesExactlyTheGptOssTensorNamesWithTheirShapes) {
  TempDir temp;
  const auto p = plan_model(write_model(temp, "gpt-oss", gpt_oss_spec()));
  EXPECT_TRUE(is_str(*p, "general.architecture", "gpt-oss"));
  const int64_t vocab = p->tensor("token_embd.weight").shape.at(0);
  std::map<std::string, std::vector<int64_t>> expected = {
      {"token_embd.weight", {vocab, H}}, {"output_norm.weight", {H}}, {"output.weight", {vocab, H}}};
  for (int i = 0; i < kGptLayers; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    expected[b + "attn_norm.weight"] = {H};
    expected[b + "attn_q.weight"] = {kGptHeads * kHd, H};
    expected[b + "attn_k.weight"] = {kGptKv * kHd, H};
    expected[b + "attn_v.weight"] = {kGptKv * kHd, H};
    expected[b + "attn_output.weight"] = {H, kGptHeads * kHd};
    expected[b + "attn_q.bias"] = {kGptHeads * kHd};
    expected[b + "attn_k.bias"] = {kGptKv * kHd};
    expected[b + "attn_v.bias"] = {kGptKv * kHd};
    expected[b + "attn_output.bias"] = {H};
    expected[b + "attn_sinks.weight"] = {kGptHeads};
    expected[b + "post_attention_norm.weight"] = {H};
    expected[b + "ffn_gate_inp.weight"] = {kExperts, H};
    expected[b + "ffn_gate_inp.bias"] = {kExperts};
    expected[b + "ffn_gate_exps.weight"] = {kExperts, kFf, H};
    expected[b + "ffn_up_exps.weight"] = {kExperts, kFf, H};
    expected[b + "ffn_down_exps.weight"] = {kExperts, H, kFf};
    expected[b + "ffn_gate_exps.bias"] = {kExperts, kFf};
    expected[b + "ffn_up_exps.bias"] = {kExperts, kFf};
    expected[b + "ffn_down_exps.bias"] = {kExperts, H};
  }
  std::set<std::string> names;
  for (const auto& [name, shape] : expected) names.insert(name);
  EXPECT_EQ(p->names(), names);
  EXPECT_EQ(p->plan.tensors.size(), names.size()) << "a tensor name appears twice";
  for (const auto& [name, shape] : expected) {
    const TensorRecipe& t = p->tensor(name);
    EXPECT_EQ(t.shape, shape) << name;
    // NEOX rope (no q/k permutation), experts as stored: no tensor is reordered or transformed.
    EXPECT_TRUE(t.row_map.empty()) << name;
    EXPECT_TRUE(t.column_map.empty()) << name;
    EXPECT_EQ(t.op, ValueOp::None) << name;
    EXPECT_EQ(t.sources.size(), 1u) << name;
  }
  EXPECT_EQ(p->tensor("blk.0.ffn_gate_exps.weight").ne(), (std::vector<int64_t>{H, kFf, kExperts}));
  EXPECT_EQ(p->tensor("blk.0.ffn_down_exps.weight").ne(), (std::vector<int64_t>{kFf, H, kExperts}));
  EXPECT_EQ(p->tensor("blk.1.attn_sinks.weight").sources.front()->name(), "model.layers.1.self_attn.sinks");
  EXPECT_EQ(p->tensor("blk.1.post_attention_norm.weight").sources.front()->name(),
            "model.layers.1.post_attention_layernorm.weight");
  EXPECT_EQ(p->tensor("blk.2.ffn_gate_inp.bias").sources.front()->name(), "model.layers.2.mlp.router.bias");
}

// mlx-lm's sanitize already took gate = rows 0::2 and up = rows 1::2 of Hugging Face's gate_up_proj: the GGUF rows
// must be mlx-lm's rows, in order.
TEST(GptOssPlan, ExpertsAndTheirBiasesAreCopiedRowForRowAsMlxLmStoresThem) {
  TempDir temp;
  TinyModelSpec spec = gpt_oss_spec();
  spec.dtype = "float32";
  const auto p = plan_model(write_model(temp, "gpt-oss", spec), OutType::F32);
  for (const auto& [gguf, mlx] : std::vector<std::pair<std::string, std::string>>{
           {"blk.1.ffn_gate_exps.weight", "model.layers.1.mlp.experts.gate_proj.weight"},
           {"blk.1.ffn_up_exps.weight", "model.layers.1.mlp.experts.up_proj.weight"},
           {"blk.1.ffn_down_exps.weight", "model.layers.1.mlp.experts.down_proj.weight"},
           {"blk.1.ffn_gate_exps.bias", "model.layers.1.mlp.experts.gate_proj.bias"},
           {"blk.1.ffn_up_exps.bias", "model.layers.1.mlp.experts.up_proj.bias"},
           {"blk.1.attn_sinks.weight", "model.layers.1.self_attn.sinks"},
           {"blk.1.attn_q.weight", "model.layers.1.self_attn.q_proj.weight"}}) {
    const std::vector<float> got = recipe_values(p->tensor(gguf));
    const std::vector<float> want = gen::tiny_model_float_weights(spec, mlx);
    ASSERT_EQ(got.size(), want.size()) << gguf;
    for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], want[i]) << gguf << " element " << i;
  }
}

TEST(GptOssPlan, WritesTheKeysLlamaCppsGptOssReads) {
  TempDir temp;
  const auto p = plan_model(write_model(temp, "gpt-oss", gpt_oss_spec()));
  EXPECT_TRUE(is_u32(*p, "gpt-oss.block_count", kGptLayers));
  EXPECT_TRUE(is_u32(*p, "gpt-oss.embedding_length", H));
  EXPECT_TRUE(is_u32(*p, "gpt-oss.feed_forward_length", kFf));
  EXPECT_TRUE(is_u32(*p, "gpt-oss.expert_feed_forward_length", kFf));
  EXPECT_TRUE(is_u32(*p, "gpt-oss.expert_count", kExperts));
  EXPECT_TRUE(is_u32(*p, "gpt-oss.expert_used_count", kUsed));
  EXPECT_TRUE(is_u32(*p, "gpt-oss.attention.head_count", kGptHeads));
  EXPECT_TRUE(is_u32(*p, "gpt-oss.attention.head_count_kv", kGptKv));
  EXPECT_TRUE(is_u32(*p, "gpt-oss.attention.key_length", kHd));
  EXPECT_TRUE(is_u32(*p, "gpt-oss.attention.value_length", kHd));
  EXPECT_TRUE(is_u32(*p, "gpt-oss.rope.dimension_count", kHd));
  EXPECT_TRUE(is_u32(*p, "gpt-oss.attention.sliding_window", 8));
  EXPECT_TRUE(is_u32(*p, "gpt-oss.attention.sliding_window_pattern", 2));
  EXPECT_TRUE(is_f32(*p, "gpt-oss.attention.layer_norm_rms_epsilon", 1e-5f));
  EXPECT_TRUE(is_f32(*p, "gpt-oss.rope.freq_base", 150000.0f));
  EXPECT_TRUE(is_str(*p, "gpt-oss.rope.scaling.type", "yarn"));
  EXPECT_TRUE(is_f32(*p, "gpt-oss.rope.scaling.factor", 32.0f));
  EXPECT_TRUE(is_u32(*p, "gpt-oss.rope.scaling.original_context_length", 4096));
  EXPECT_TRUE(is_u32(*p, "gpt-oss.context_length", 2048));
  // mlx-lm's default YaRN magnitude (0.1 ln 32 + 1) is llama.cpp's own: no attention factor key.
  EXPECT_EQ(p->plan.metadata.get("gpt-oss.rope.scaling.attn_factor"), nullptr);
  EXPECT_TRUE(is_str(*p, "tokenizer.ggml.model", "gpt2"));
}

TEST(GptOssPlan, TheSlidingLayerPatternBecomesLlamaCppsPeriod) {
  struct Case {
    std::vector<std::string> types;
    int64_t period;
  };
  const std::string S = "sliding_attention", F = "full_attention";
  for (const Case& c : {Case{{S, F, S, F}, 2}, Case{{S, S, F, S, S, F}, 3}, Case{{S, S, S, F}, 4}, Case{{S, S, F, S}, 3}}) {
    TempDir temp;
    TinyModelSpec spec = gpt_oss_spec();
    spec.layers = static_cast<int>(c.types.size());
    spec.layer_types = c.types;
    const auto p = plan_model(write_model(temp, "gpt-oss", spec));
    EXPECT_TRUE(is_u32(*p, "gpt-oss.attention.sliding_window_pattern", c.period)) << c.types.size();
  }
  // Patterns llama.cpp cannot run (il % period < period - 1 slides) are refused, not approximated.
  for (const std::vector<std::string>& types : {std::vector<std::string>{F, S, F, S}, {S, F, F, S}, {S, F, S, S}}) {
    TempDir temp;
    TinyModelSpec spec = gpt_oss_spec();
    spec.layer_types = types;
    const auto dir = write_model(temp, "gpt-oss", spec);
    EXPECT_THROW(plan_model(dir), Error) << types[0] << types[1] << types[2] << types[3];
  }
}

TEST(GptOssPlan, LayerTypesAsMlxLmDefaultsThemOrRefusesThem) {
  TempDir temp;
  const auto dir = write_model(temp, "gpt-oss", gpt_oss_spec());
  edit_config(dir, [](json& c) { c.erase("layer_types"); });
  EXPECT_TRUE(is_u32(*plan_model(dir), "gpt-oss.attention.sliding_window_pattern", 2));
  // Without layer_types an odd layer count leaves mlx-lm's last layer out (it zips the layers with the types).
  edit_config(dir, [](json& c) { c["num_hidden_layers"] = 3; });
  EXPECT_THROW(plan_model(dir), Error);
  edit_config(dir, [](json& c) {
    c["num_hidden_layers"] = 4;
    c["layer_types"] = {"sliding_attention", "full_attention"};
  });
  EXPECT_THROW(plan_model(dir), Error);
  edit_config(dir, [](json& c) { c["layer_types"] = {"full_attention", "full_attention", "full_attention", "full_attention"}; });
  EXPECT_THROW(plan_model(dir), Error);
  edit_config(dir, [](json& c) { c["layer_types"] = {"sliding_attention", "linear_attention", "sliding_attention", "full_attention"}; });
  EXPECT_THROW(plan_model(dir), Error);
}

TEST(GptOssPlan, SlidingWindowDefaultsToMlxLmsAndNullIsRefused) {
  TempDir temp;
  const auto dir = write_model(temp, "gpt-oss", gpt_oss_spec());
  edit_config(dir, [](json& c) { c.erase("sliding_window"); });
  EXPECT_TRUE(is_u32(*plan_model(dir), "gpt-oss.attention.sliding_window", 128));
  edit_config(dir, [](json& c) { c["sliding_window"] = nullptr; });
  EXPECT_THROW(plan_model(dir), Error);
  edit_config(dir, [](json& c) { c["sliding_window"] = 0; });
  EXPECT_THROW(plan_model(dir), Error);
}

TEST(GptOssPlan, RopeScalingIsWrittenWhereLlamaCppCanComputeItAndRefusedElsewhere) {
  TempDir temp;
  const auto dir = write_model(temp, "gpt-oss", gpt_oss_spec());
  // A YaRN magnitude other than mlx-lm's default goes into attn_factor, relative to llama.cpp's 0.1 ln(s) + 1.
  edit_config(dir, [](json& c) { c["rope_scaling"]["mscale"] = 0.707; c["rope_scaling"]["mscale_all_dim"] = 1.0; });
  {
    const auto p = plan_model(dir);
    const double mlx = (0.1 * 0.707 * std::log(32.0) + 1.0) / (0.1 * std::log(32.0) + 1.0);
    EXPECT_TRUE(is_f32(*p, "gpt-oss.rope.scaling.attn_factor", static_cast<float>(mlx / (0.1 * std::log(32.0) + 1.0))));
  }
  edit_config(dir, [](json& c) {
    c["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  });
  {
    const auto p = plan_model(dir);
    EXPECT_TRUE(is_str(*p, "gpt-oss.rope.scaling.type", "linear"));
    EXPECT_TRUE(is_f32(*p, "gpt-oss.rope.scaling.factor", 2.0f));
  }
  edit_config(dir, [](json& c) { c["rope_scaling"] = nullptr; c["rope_theta"] = 10000; });
  {
    const auto p = plan_model(dir);
    EXPECT_EQ(p->plan.metadata.get("gpt-oss.rope.scaling.type"), nullptr);
    EXPECT_TRUE(is_f32(*p, "gpt-oss.rope.freq_base", 10000.0f));
  }
  const std::vector<json> refused = {
      {{"rope_type", "llama3"}, {"factor", 8.0}},
      {{"rope_type", "dynamic"}, {"factor", 2.0}},
      {{"rope_type", "longrope"}, {"factor", 2.0}},
      {{"rope_type", "yarn"}, {"factor", 32.0}, {"beta_fast", 16.0}},
      {{"rope_type", "yarn"}, {"factor", 32.0}, {"beta_slow", 2.0}},
      {{"rope_type", "yarn"}},
      {{"rope_type", "yarn"}, {"factor", -1.0}},
  };
  for (const json& scaling : refused) {
    edit_config(dir, [&](json& c) { c["rope_scaling"] = scaling; });
    EXPECT_THROW(plan_model(dir), Error) << scaling.dump();
  }
}

// gpt-oss's own MXFP4 experts move into GGUF MXFP4 untouched; mlx-lm's 8-bit rest has no exact type (Q8_0, and the
// plan says why); routers, sinks, norms and biases are F32.
TEST(GptOssPlan, AutoKeepsTheMxfp4ExpertsLosslessly) {
  TempDir temp;
  TinyModelSpec spec = gpt_oss_spec();
  spec.quant = gen::gpt_oss_native_mxfp4_recipe(8, 64);
  const auto p = plan_model(write_model(temp, "gpt-oss", spec));
  int experts = 0;
  for (const auto& t : p->plan.tensors) {
    if (t.name.find("_exps.weight") != std::string::npos) {
      ++experts;
      EXPECT_EQ(t.type, GgmlType::MXFP4) << t.name;
      EXPECT_TRUE(t.repack) << t.name;
      EXPECT_EQ(t.type_note, "lossless from MLX mxfp4 4-bit g32") << t.name;
    } else if (t.name.find("ffn_gate_inp.weight") != std::string::npos || t.shape.size() == 1 ||
               t.name.ends_with(".bias")) {
      EXPECT_EQ(t.type, GgmlType::F32) << t.name;
    } else {
      EXPECT_EQ(t.type, GgmlType::Q8_0) << t.name;
      EXPECT_FALSE(t.repack) << t.name;
      EXPECT_NE(t.type_note.find("affine 8-bit has no exact GGUF type"), std::string::npos) << t.name;
    }
  }
  EXPECT_EQ(experts, 3 * kGptLayers);
}

// llama-quantize's MXFP4_MOE: 3-D expert tensors MXFP4 (here moved from MLX's codes), everything else Q8_0.
TEST(GptOssPlan, Mxfp4MoeMixMovesTheMlxExpertsAndQuantizesTheRestToQ8_0) {
  TempDir temp;
  TinyModelSpec spec = gpt_oss_spec();
  spec.quant = gen::gpt_oss_native_mxfp4_recipe(0);
  const auto p = plan_model(write_model(temp, "gpt-oss", spec), OutType::MXFP4_MOE);
  EXPECT_TRUE(is_u32(*p, "general.file_type", 38));
  for (const auto& t : p->plan.tensors) {
    if (t.name.find("_exps.weight") != std::string::npos) {
      EXPECT_EQ(t.type, GgmlType::MXFP4) << t.name;
      EXPECT_TRUE(t.repack) << t.name;
    } else if (t.name.find("ffn_gate_inp.weight") != std::string::npos || t.shape.size() == 1 ||
               t.name.ends_with(".bias")) {
      EXPECT_EQ(t.type, GgmlType::F32) << t.name;
    } else {
      EXPECT_EQ(t.type, GgmlType::Q8_0) << t.name;
    }
  }
}

TEST(GptOssPlan, RefusesWhatMlxLmWouldNotLoad) {
  TempDir temp;
  const auto dir = write_model(temp, "gpt-oss", gpt_oss_spec());
  edit_config(dir, [](json& c) { c["num_experts_per_tok"] = kExperts + 1; });
  EXPECT_THROW(plan_model(dir), Error);
  edit_config(dir, [](json& c) { c["num_experts_per_tok"] = kUsed; c["head_dim"] = 32; });
  EXPECT_THROW(plan_model(dir), Error);  // the projections' shapes disagree
  edit_config(dir, [](json& c) { c["head_dim"] = kHd; });
  EXPECT_NO_THROW(plan_model(dir));

  // A tensor of the raw Hugging Face checkpoint (interleaved gate_up_proj) is not read as an mlx-lm folder.
  gen::GenTensor fused{"model.layers.0.mlp.experts.gate_up_proj_bias", DType::F32, {kExperts, 2 * kFf},
                       gen::float_bytes(std::vector<float>(kExperts * 2 * kFf, 0.0f), DType::F32)};
  gen::write_safetensors(dir / "extra.safetensors", {fused}, json{{"format", "mlx"}});
  json index = json::parse(std::ifstream(dir / "model.safetensors.index.json"));
  index["weight_map"][fused.name] = "extra.safetensors";
  std::ofstream(dir / "model.safetensors.index.json") << index.dump(4);
  try {
    plan_model(dir);
    ADD_FAILURE() << "a Hugging Face gate_up_proj tensor was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("mlx_lm.convert"), std::string::npos) << e.what();
  }
}

TEST(GptOssPlan, TheHeadIsNeverTied) {
  TempDir temp;
  const auto dir = write_model(temp, "gpt-oss", gpt_oss_spec());
  // The same folder without lm_head.weight (as a tied model would be saved): gpt_oss.py has no tied head.
  std::vector<gen::GenTensor> kept;
  {
    const ModelFolder folder = ModelFolder::open(dir);
    for (const auto& [name, stored] : folder.tensors())
      if (name != "lm_head.weight")
        kept.push_back({name, stored.dtype, stored.shape, std::vector<uint8_t>(stored.bytes.begin(), stored.bytes.end())});
  }
  fs::remove(dir / "model.safetensors");
  gen::write_safetensors(dir / "model.safetensors", kept, json{{"format", "mlx"}});
  json index = json::parse(std::ifstream(dir / "model.safetensors.index.json"));
  index["weight_map"].erase("lm_head.weight");
  std::ofstream(dir / "model.safetensors.index.json") << index.dump(4);
  ASSERT_NO_THROW(ModelFolder::open(dir));
  try {
    plan_model(dir);
    ADD_FAILURE() << "a gpt_oss folder without lm_head.weight was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("lm_head.weight"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace mlx2gguf
