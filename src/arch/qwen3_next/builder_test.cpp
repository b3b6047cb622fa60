// The qwen3_next generator: mlx-lm folders and the Hugging Face checkpoints they are converted from.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "arch/qwen3_next/sanitize_test_support.h"
#include "eval/reference.h"
#include "gen/gen_test_support.h"
#include "gen/tiny_model.h"
#include "gen/tiny_tokenizer.h"
#include "read/model_folder.h"
#include "read/safetensors.h"
#include "read/source_model.h"
#include "util/error.h"
#include "util/half.h"

namespace mlx2gguf::gen {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Shape = std::vector<int64_t>;
using test_support::read_file;
using test_support::ScratchDir;

TinyModelSpec next_spec() {
  TinyModelSpec spec;
  spec.model_type = "qwen3_next";
  return spec;
}

std::vector<float> floats(const SourceModel& model, const std::string& name) {
  const SourceTensor& tensor = model.require(name);
  std::vector<float> values(static_cast<size_t>(tensor.element_count()));
  tensor.read_rows(0, tensor.row_count(), values.data());
  return values;
}

double mean_of(const std::vector<float>& values) {
  double sum = 0;
  for (float v : values) sum += v;
  return sum / static_cast<double>(values.size());
}

// Default tiny dims: hidden 128, 4 layers (3 linear + full attention at index 3), heads 4 / kv 2 of 64, linear
// attention 2 key heads and 4 value heads of 32, conv kernel 4, 4 experts of 64, shared expert of 64.
constexpr int64_t H = 128, kConv = 2 * 2 * 32 + 4 * 32, kQkvz = 2 * 2 * 32 + 2 * 4 * 32, kVd = 4 * 32;

std::set<std::string> expected_mlx_names(bool tied) {
  std::set<std::string> names = {"model.embed_tokens.weight", "model.norm.weight"};
  if (!tied) names.insert("lm_head.weight");
  for (int i = 0; i < 4; ++i) {
    const std::string l = fmt::format("model.layers.{}.", i);
    names.insert(l + "input_layernorm.weight");
    names.insert(l + "post_attention_layernorm.weight");
    if (i == 3) {
      for (const char* m : {"q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight", "q_norm.weight", "k_norm.weight"})
        names.insert(l + "self_attn." + m);
    } else {
      for (const char* m : {"in_proj_qkvz.weight", "in_proj_ba.weight", "conv1d.weight", "dt_bias", "A_log", "norm.weight",
                            "out_proj.weight"})
        names.insert(l + "linear_attn." + m);
    }
    for (const char* m : {"gate.weight", "switch_mlp.gate_proj.weight", "switch_mlp.up_proj.weight",
                          "switch_mlp.down_proj.weight", "shared_expert.gate_proj.weight", "shared_expert.up_proj.weight",
                          "shared_expert.down_proj.weight", "shared_expert_gate.weight"})
      names.insert(l + "mlp." + m);
  }
  return names;
}

std::set<std::string> names_of(const ModelFolder& folder) {
  std::set<std::string> names;
  for (const auto& [name, tensor] : folder.tensors()) names.insert(name);
  return names;
}

TEST(Qwen3NextGenerator, FolderAsMlxLmSavesIt) {
  ScratchDir dir;
  write_tiny_model(next_spec(), dir / "m");
  const int64_t V = tiny_tokenizer_facts().vocab_size;
  const SourceModel model = SourceModel::open(dir / "m");
  const ModelFolder& folder = model.folder();
  EXPECT_EQ(names_of(folder), expected_mlx_names(false));
  const std::string lin = "model.layers.0.linear_attn.", att = "model.layers.3.self_attn.", moe = "model.layers.2.mlp.";
  const std::map<std::string, Shape> shapes = {
      {"model.embed_tokens.weight", {V, H}},    {"lm_head.weight", {V, H}},
      {lin + "in_proj_qkvz.weight", {kQkvz, H}}, {lin + "in_proj_ba.weight", {8, H}},
      {lin + "conv1d.weight", {kConv, 4, 1}},    {lin + "dt_bias", {4}},
      {lin + "A_log", {4}},                      {lin + "norm.weight", {32}},
      {lin + "out_proj.weight", {H, kVd}},       {att + "q_proj.weight", {2 * 4 * 64, H}},
      {att + "k_proj.weight", {2 * 64, H}},      {att + "o_proj.weight", {H, 4 * 64}},
      {att + "q_norm.weight", {64}},             {moe + "gate.weight", {4, H}},
      {moe + "switch_mlp.gate_proj.weight", {4, 64, H}}, {moe + "switch_mlp.down_proj.weight", {4, H, 64}},
      {moe + "shared_expert.up_proj.weight", {64, H}},   {moe + "shared_expert_gate.weight", {1, H}},
  };
  for (const auto& [name, shape] : shapes) EXPECT_EQ(folder.require(name).shape, shape) << name;
  // No cast predicate in qwen3_next.py: mlx_lm.convert casts A_log like every other float.
  for (const auto& [name, tensor] : folder.tensors()) EXPECT_EQ(tensor.dtype, DType::BF16) << name;

  const json& config = folder.config();
  EXPECT_EQ(config["model_type"], "qwen3_next");
  EXPECT_EQ(config["architectures"], json({"Qwen3NextForCausalLM"}));
  EXPECT_EQ(config["decoder_sparse_step"], 1);
  EXPECT_EQ(config["mlp_only_layers"], json::array());
  EXPECT_EQ(config["norm_topk_prob"], true);  // Qwen's config says so; mlx-lm's default would be false
  EXPECT_EQ(config["rope_theta"].dump(), "10000000");
  EXPECT_EQ(config["partial_rotary_factor"], 0.25);
  EXPECT_TRUE(config["rope_scaling"].is_null());
  EXPECT_EQ(config["head_dim"], 64);
  EXPECT_EQ(config["full_attention_interval"], 4);
  EXPECT_EQ(config["linear_num_key_heads"], 2);
  EXPECT_EQ(config["linear_num_value_heads"], 4);
  EXPECT_EQ(config["num_experts"], 4);
  EXPECT_EQ(config["num_experts_per_tok"], 2);
  EXPECT_EQ(config["moe_intermediate_size"], 64);
  EXPECT_EQ(config["shared_expert_intermediate_size"], 64);
  EXPECT_EQ(config["rms_norm_eps"], 1e-6);
  EXPECT_EQ(config["eos_token_id"], tiny_tokenizer_facts().eos_id.value());
  EXPECT_FALSE(config.contains("quantization"));

  // Zero-centred norms hold 1 + w, the gated norm its own weight: all around 1.
  for (const std::string& name : {std::string("model.layers.0.input_layernorm.weight"), std::string("model.norm.weight"),
                                  att + "k_norm.weight", lin + "norm.weight"})
    EXPECT_NEAR(mean_of(floats(model, name)), 1.0, 0.05) << name;
  for (float a : floats(model, lin + "A_log")) {
    EXPECT_GE(a, 0.0f);
    EXPECT_LE(a, std::log(16.0f) + 0.05f);
  }
  EXPECT_NEAR(mean_of(floats(model, lin + "dt_bias")), -4.0, 1.5);
}

TEST(Qwen3NextGenerator, QuantizedAsMlxLmConvertQ) {
  ScratchDir dir;
  TinyModelSpec spec = next_spec();
  spec.quant = QuantRecipe::parse("affine:4:64");
  const TinyModelSummary summary = write_tiny_model(spec, dir / "m");
  // Per linear-attention layer 3 projections, per full-attention layer 4, per MoE block 8; embedding and head.
  EXPECT_EQ(summary.quantized_modules, 3 * 3 + 4 + 4 * 8 + 2);
  const SourceModel model = SourceModel::open(dir / "m");
  const json config = json::parse(read_file(dir / "m" / "config.json"));
  EXPECT_EQ(config["quantization"], config["quantization_config"]);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(config["quantization"][fmt::format("model.layers.{}.mlp.gate", i)], json({{"group_size", 64}, {"bits", 8}}));
    EXPECT_EQ(config["quantization"][fmt::format("model.layers.{}.mlp.shared_expert_gate", i)],
              json({{"group_size", 64}, {"bits", 8}}));
  }
  const std::string l0 = "model.layers.0.";
  EXPECT_EQ(*model.require(l0 + "mlp.gate.weight").quant(), (QuantSpec{QuantMode::Affine, 8, 64}));
  for (const char* m : {"linear_attn.in_proj_qkvz.weight", "linear_attn.in_proj_ba.weight", "mlp.switch_mlp.up_proj.weight",
                        "mlp.shared_expert.gate_proj.weight"})
    EXPECT_EQ(*model.require(l0 + m).quant(), (QuantSpec{QuantMode::Affine, 4, 64})) << m;
  for (const char* m : {"linear_attn.conv1d", "linear_attn.norm", "input_layernorm", "linear_attn.A_log", "linear_attn.dt_bias"})
    EXPECT_FALSE(model.folder().find(l0 + m + ".scales")) << m;
}

TEST(Qwen3NextGenerator, HfCheckpointLayout) {
  ScratchDir dir;
  TinyModelSpec spec = next_spec();
  spec.layout = "hf";
  spec.hf_extra_tensors = true;
  write_tiny_model(spec, dir / "m");
  const SourceModel model = SourceModel::open(dir / "m");
  const ModelFolder& folder = model.folder();
  std::set<std::string> expected;
  for (const std::string& name : expected_mlx_names(false))
    if (name.find(".switch_mlp.") == std::string::npos) expected.insert(name);
  for (int i = 0; i < 4; ++i)
    for (int e = 0; e < 4; ++e)
      for (const char* proj : {"gate_proj", "up_proj", "down_proj"})
        expected.insert(fmt::format("model.layers.{}.mlp.experts.{}.{}.weight", i, e, proj));
  std::set<std::string> names, extras;
  for (const std::string& name : names_of(folder)) (name.starts_with("mtp.") ? extras : names).insert(name);
  EXPECT_EQ(names, expected);
  EXPECT_TRUE(extras.contains("mtp.fc.weight"));
  EXPECT_TRUE(extras.contains("mtp.layers.0.mlp.experts.0.gate_proj.weight"));
  EXPECT_EQ(folder.require("model.layers.0.linear_attn.conv1d.weight").shape, (Shape{kConv, 1, 4}));
  EXPECT_EQ(folder.require("model.layers.1.mlp.experts.3.down_proj.weight").shape, (Shape{H, 64}));
  EXPECT_EQ(folder.require("model.layers.1.mlp.experts.3.up_proj.weight").shape, (Shape{64, H}));
  // Zero-centred norms hold w (around 0), the gated norm its weight around 1.
  EXPECT_NEAR(mean_of(floats(model, "model.layers.1.input_layernorm.weight")), 0.0, 0.05);
  EXPECT_NEAR(mean_of(floats(model, "model.norm.weight")), 0.0, 0.05);
  EXPECT_NEAR(mean_of(floats(model, "model.layers.3.self_attn.q_norm.weight")), 0.0, 0.05);
  EXPECT_NEAR(mean_of(floats(model, "model.layers.1.linear_attn.norm.weight")), 1.0, 0.05);
  EXPECT_EQ(SafetensorsFile::open(dir / "m" / "model.safetensors")->metadata(), json({{"format", "pt"}}));
  EXPECT_FALSE(fs::exists(dir / "m" / "README.md"));
  const json& config = folder.config();
  EXPECT_EQ(config["model_type"], "qwen3_next");
  EXPECT_FALSE(config.contains("quantization"));
  const std::string text = read_file(dir / "m" / "config.json");
  EXPECT_EQ(json::parse(text).dump(2) + "\n", text);  // Hugging Face's sorted, indented JSON
}

// Apart from the routed experts (drawn per expert in the checkpoint), one seed gives the same tensors in both layouts,
// related exactly as mlx-lm's sanitize relates them: sanitizing the checkpoint reproduces the mlx-lm folder's bytes.
TEST(Qwen3NextGenerator, SanitizedCheckpointIsTheMlxFolderUpToTheExperts) {
  ScratchDir dir;
  for (const char* dtype : {"bfloat16", "float16"}) {
    SCOPED_TRACE(dtype);
    TinyModelSpec spec = next_spec();
    spec.dtype = dtype;
    spec.seed = 4;
    const fs::path mlx = dir / fmt::format("mlx-{}", dtype), hf = dir / fmt::format("hf-{}", dtype),
                   sanitized = dir / fmt::format("sanitized-{}", dtype);
    write_tiny_model(spec, mlx);
    spec.layout = "hf";
    spec.hf_extra_tensors = true;
    write_tiny_model(spec, hf);
    qwen3_next_test::write_sanitized_folder(hf, mlx, sanitized);
    const ModelFolder a = ModelFolder::open(mlx), b = ModelFolder::open(sanitized);
    EXPECT_EQ(names_of(a), names_of(b));
    int same = 0, experts = 0;
    for (const auto& [name, tensor] : a.tensors()) {
      const StoredTensor& other = b.require(name);
      EXPECT_EQ(other.shape, tensor.shape) << name;
      EXPECT_EQ(other.dtype, tensor.dtype) << name;
      if (name.find(".switch_mlp.") != std::string::npos) {
        ++experts;
        EXPECT_FALSE(std::ranges::equal(other.bytes, tensor.bytes)) << name;  // independent draws
        continue;
      }
      EXPECT_TRUE(std::ranges::equal(other.bytes, tensor.bytes)) << name;
      ++same;
    }
    EXPECT_EQ(experts, 4 * 3);
    EXPECT_EQ(same, static_cast<int>(a.tensors().size()) - 12);
  }
}

double logits_nmse(const fs::path& a, const fs::path& b) {
  const std::vector<int32_t> tokens = {1, 50, 120, 7, 260, 33, 99, 180, 4, 17, 250, 66};
  const std::vector<float> want = reference_logits(SourceModel::open(a), tokens);
  const std::vector<float> got = reference_logits(SourceModel::open(b), tokens);
  double error = 0, energy = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    error += (got[i] - want[i]) * (got[i] - want[i]);
    energy += want[i] * want[i];
  }
  return error / energy;
}

// The reference reads the checkpoint as mlx-lm's sanitize would make it: the same logits as the sanitized folder.
TEST(Qwen3NextGenerator, CheckpointAndSanitizedFolderComputeTheSameLogits) {
  ScratchDir dir;
  TinyModelSpec spec = next_spec();
  spec.dtype = "float32";  // 1 + w then rounds at float32 precision only
  write_tiny_model(spec, dir / "mlx");
  spec.layout = "hf";
  spec.hf_extra_tensors = true;
  write_tiny_model(spec, dir / "hf");
  qwen3_next_test::write_sanitized_folder(dir / "hf", dir / "mlx", dir / "sanitized");
  EXPECT_LT(logits_nmse(dir / "sanitized", dir / "hf"), 1e-12);
  EXPECT_GT(logits_nmse(dir / "mlx", dir / "hf"), 1e-6);  // other experts: another model
}

// Weight errors of 8-bit quantization move the logits of these random models little: no value head's output near
// the gated norm's epsilon, no state wiped every token.
TEST(Qwen3NextGenerator, LogitsAreStableUnderSmallWeightErrors) {
  ScratchDir dir;
  for (uint64_t seed : {1, 2}) {
    TinyModelSpec spec = next_spec();
    spec.seed = seed;
    write_tiny_model(spec, dir / fmt::format("float{}", seed));
    spec.quant = QuantRecipe::parse("affine:8:64");
    write_tiny_model(spec, dir / fmt::format("q8-{}", seed));
    EXPECT_LT(logits_nmse(dir / fmt::format("float{}", seed), dir / fmt::format("q8-{}", seed)), 1e-2) << seed;
  }
}

TEST(Qwen3NextGenerator, RejectsInvalidSpecs) {
  ScratchDir dir;
  TinyModelSpec spec = next_spec();
  spec.layout = "hf";
  spec.quant = QuantRecipe::parse("affine:4:64");
  EXPECT_THROW(write_tiny_model(spec, dir / "a"), Error);
  spec = next_spec();
  spec.linear_num_value_heads = 3;
  EXPECT_THROW(write_tiny_model(spec, dir / "b"), Error);
  spec = next_spec();
  spec.mrope_section = {2, 2, 4};
  EXPECT_THROW(write_tiny_model(spec, dir / "c"), Error);
  spec = next_spec();
  spec.mlp_bias = true;
  EXPECT_THROW(write_tiny_model(spec, dir / "d"), Error);
  spec = next_spec();
  spec.partial_rotary_factor = 1.0 / 64;
  EXPECT_THROW(write_tiny_model(spec, dir / "e"), Error);
}

}  // namespace
}  // namespace mlx2gguf::gen
