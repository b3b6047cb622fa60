// The qwen3_5 / qwen3_5_moe generator: mlx-lm folders and the Hugging Face checkpoints they are converted from.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "gen/gen_test_support.h"
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <unistd.h>

#include "eval/reference.h"
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
using nlohmann::ordered_json;
using Shape = std::vector<int64_t>;

using test_support::read_file;
using test_support::ScratchDir;

TinyModelSpec qwen_spec(const std::string& type) {
  TinyModelSpec spec;
  spec.model_type = type;
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
constexpr int64_t H = 128, kConv = 2 * 2 * 32 + 4 * 32, kVd = 4 * 32;

std::set<std::string> expected_mlx_names(bool moe, bool tied) {
  std::set<std::string> names = {"language_model.model.embed_tokens.weight", "language_model.model.norm.weight"};
  if (!tied) names.insert("language_model.lm_head.weight");
  for (int i = 0; i < 4; ++i) {
    const std::string l = fmt::format("language_model.model.layers.{}.", i);
    names.insert(l + "input_layernorm.weight");
    names.insert(l + "post_attention_layernorm.weight");
    if (i == 3) {
      for (const char* m : {"q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight", "q_norm.weight",
                            "k_norm.weight"})
        names.insert(l + "self_attn." + m);
    } else {
      for (const char* m : {"in_proj_qkv.weight", "in_proj_z.weight", "in_proj_b.weight", "in_proj_a.weight",
                            "conv1d.weight", "dt_bias", "A_log", "norm.weight", "out_proj.weight"})
        names.insert(l + "linear_attn." + m);
    }
    if (moe) {
      for (const char* m : {"gate.weight", "switch_mlp.gate_proj.weight", "switch_mlp.up_proj.weight",
                            "switch_mlp.down_proj.weight", "shared_expert.gate_proj.weight",
                            "shared_expert.up_proj.weight", "shared_expert.down_proj.weight",
                            "shared_expert_gate.weight"})
        names.insert(l + "mlp." + m);
    } else {
      for (const char* m : {"gate_proj.weight", "up_proj.weight", "down_proj.weight"}) names.insert(l + "mlp." + m);
    }
  }
  return names;
}

std::set<std::string> names_of(const ModelFolder& folder) {
  std::set<std::string> names;
  for (const auto& [name, tensor] : folder.tensors()) names.insert(name);
  return names;
}

// ---------------------------------------------------------------------------------------------------------------
// mlx layout

TEST(Qwen35Generator, MoeFolderAsMlxLmSavesIt) {
  ScratchDir dir;
  const TinyModelSummary summary = write_tiny_model(qwen_spec("qwen3_5_moe"), dir / "m");
  const int64_t V = tiny_tokenizer_facts().vocab_size;
  EXPECT_EQ(summary.vocab_size, V);
  const SourceModel model = SourceModel::open(dir / "m");
  const ModelFolder& folder = model.folder();
  EXPECT_EQ(names_of(folder), expected_mlx_names(true, false));

  const std::string lin = "language_model.model.layers.0.linear_attn.";
  const std::string att = "language_model.model.layers.3.self_attn.";
  const std::string moe = "language_model.model.layers.2.mlp.";
  const std::map<std::string, Shape> shapes = {
      {"language_model.model.embed_tokens.weight", {V, H}},
      {"language_model.lm_head.weight", {V, H}},
      {"language_model.model.norm.weight", {H}},
      {lin + "in_proj_qkv.weight", {kConv, H}},
      {lin + "in_proj_z.weight", {kVd, H}},
      {lin + "in_proj_b.weight", {4, H}},
      {lin + "in_proj_a.weight", {4, H}},
      {lin + "conv1d.weight", {kConv, 4, 1}},
      {lin + "dt_bias", {4}},
      {lin + "A_log", {4}},
      {lin + "norm.weight", {32}},
      {lin + "out_proj.weight", {H, kVd}},
      {att + "q_proj.weight", {2 * 4 * 64, H}},
      {att + "k_proj.weight", {2 * 64, H}},
      {att + "v_proj.weight", {2 * 64, H}},
      {att + "o_proj.weight", {H, 4 * 64}},
      {att + "q_norm.weight", {64}},
      {att + "k_norm.weight", {64}},
      {moe + "gate.weight", {4, H}},
      {moe + "switch_mlp.gate_proj.weight", {4, 64, H}},
      {moe + "switch_mlp.up_proj.weight", {4, 64, H}},
      {moe + "switch_mlp.down_proj.weight", {4, H, 64}},
      {moe + "shared_expert.gate_proj.weight", {64, H}},
      {moe + "shared_expert.up_proj.weight", {64, H}},
      {moe + "shared_expert.down_proj.weight", {H, 64}},
      {moe + "shared_expert_gate.weight", {1, H}},
  };
  for (const auto& [name, shape] : shapes) EXPECT_EQ(folder.require(name).shape, shape) << name;
  for (const auto& [name, tensor] : folder.tensors())
    EXPECT_EQ(tensor.dtype, name.ends_with(".A_log") ? DType::F32 : DType::BF16) << name;
  const json index = json::parse(read_file(dir / "m" / "model.safetensors.index.json"));
  for (const auto& [name, shard] : index["weight_map"].items()) EXPECT_EQ(shard, "model.safetensors") << name;

  const json& config = folder.config();
  EXPECT_EQ(config["model_type"], "qwen3_5_moe");  // what mlx-lm dispatches on
  EXPECT_EQ(config["architectures"], json({"Qwen3_5MoeForConditionalGeneration"}));
  EXPECT_FALSE(config.contains("vision_config"));  // popped by mlx-lm
  EXPECT_FALSE(config.contains("quantization"));
  EXPECT_EQ(config["eos_token_id"], tiny_tokenizer_facts().eos_id.value());  // from generation_config.json
  const json& text = config["text_config"];
  EXPECT_EQ(text["model_type"], "qwen3_5_moe_text");
  EXPECT_EQ(text["hidden_size"], H);
  EXPECT_EQ(text["num_hidden_layers"], 4);
  EXPECT_EQ(text["head_dim"], 64);
  EXPECT_EQ(text["num_attention_heads"], 4);
  EXPECT_EQ(text["num_key_value_heads"], 2);
  EXPECT_EQ(text["linear_num_key_heads"], 2);
  EXPECT_EQ(text["linear_num_value_heads"], 4);
  EXPECT_EQ(text["linear_key_head_dim"], 32);
  EXPECT_EQ(text["linear_value_head_dim"], 32);
  EXPECT_EQ(text["linear_conv_kernel_dim"], 4);
  EXPECT_EQ(text["full_attention_interval"], 4);
  EXPECT_EQ(text["layer_types"], json({"linear_attention", "linear_attention", "linear_attention", "full_attention"}));
  EXPECT_EQ(text["num_experts"], 4);
  EXPECT_EQ(text["num_experts_per_tok"], 2);
  EXPECT_EQ(text["moe_intermediate_size"], 64);
  EXPECT_EQ(text["shared_expert_intermediate_size"], 64);
  EXPECT_FALSE(text.contains("intermediate_size"));
  EXPECT_FALSE(text.contains("norm_topk_prob"));  // as in Qwen's configs; readers default to true
  EXPECT_FALSE(text.contains("rope_theta"));      // only inside rope_parameters, where mlx-lm looks
  EXPECT_EQ(text["tie_word_embeddings"], false);
  EXPECT_EQ(text["rms_norm_eps"], 1e-6);
  EXPECT_EQ(text["vocab_size"], V);
  EXPECT_EQ(text["rope_parameters"], json({{"mrope_interleaved", true},
                                           {"mrope_section", {3, 3, 2}},  // 8 rotated pairs of the 64-dim head
                                           {"partial_rotary_factor", 0.25},
                                           {"rope_theta", 10000000},
                                           {"rope_type", "default"}}));
  EXPECT_EQ(model.config(), text);
  EXPECT_EQ(folder.model_type(), "qwen3_5_moe_text");

  // Zero-centred norms hold 1 + w and the gated norm its own weight: all around 1, none exactly at it throughout.
  for (const std::string& name : {std::string("language_model.model.layers.0.input_layernorm.weight"),
                                  std::string("language_model.model.norm.weight"), att + "q_norm.weight",
                                  lin + "norm.weight"}) {
    const std::vector<float> values = floats(model, name);
    EXPECT_NEAR(mean_of(values), 1.0, 0.05) << name;
    EXPECT_LT(std::count(values.begin(), values.end(), 1.0f), static_cast<long>(values.size() / 4)) << name;
  }
  // A = exp(A_log) in [1, 16].
  for (float a : floats(model, lin + "A_log")) {
    EXPECT_GE(a, 0.0f);
    EXPECT_LE(a, std::log(16.0f));
  }
  EXPECT_NEAR(mean_of(floats(model, lin + "dt_bias")), -4.0, 1.5);  // softplus(dt_bias) ~ 0.02: slow decays
  for (const char* file : {"README.md", "generation_config.json", "tokenizer.json"}) EXPECT_TRUE(folder.file(file)) << file;
}

TEST(Qwen35Generator, DenseAndTiedFolder) {
  ScratchDir dir;
  TinyModelSpec spec = qwen_spec("qwen3_5");
  spec.tie_embeddings = true;
  spec.norm_topk_prob = false;  // written when asked for, whatever the type
  write_tiny_model(spec, dir / "m");
  const ModelFolder folder = ModelFolder::open(dir / "m");
  EXPECT_EQ(names_of(folder), expected_mlx_names(false, true));
  EXPECT_EQ(folder.require("language_model.model.layers.1.mlp.gate_proj.weight").shape, (Shape{256, H}));
  EXPECT_EQ(folder.require("language_model.model.layers.1.mlp.down_proj.weight").shape, (Shape{H, 256}));
  const json& config = folder.config();
  EXPECT_EQ(config["model_type"], "qwen3_5");
  EXPECT_EQ(config["architectures"], json({"Qwen3_5ForConditionalGeneration"}));
  EXPECT_EQ(config["tie_word_embeddings"], true);
  const json& text = config["text_config"];
  EXPECT_EQ(text["model_type"], "qwen3_5_text");
  EXPECT_EQ(text["tie_word_embeddings"], true);  // the key mlx-lm reads
  EXPECT_EQ(text["intermediate_size"], 256);
  EXPECT_EQ(text["norm_topk_prob"], false);
  EXPECT_FALSE(text.contains("num_experts"));
}

TEST(Qwen35Generator, QuantizedMoeAsMlxLmConvertQ) {
  ScratchDir dir;
  TinyModelSpec spec = qwen_spec("qwen3_5_moe");
  spec.quant = QuantRecipe::parse("affine:4:64");
  const TinyModelSummary summary = write_tiny_model(spec, dir / "m");
  // Per linear-attention layer 5 projections, per full-attention layer 4, per MoE block 8; embedding and head.
  EXPECT_EQ(summary.quantized_modules, 3 * 5 + 4 + 4 * 8 + 2);
  const SourceModel model = SourceModel::open(dir / "m");
  const ModelFolder& folder = model.folder();

  const std::string text = read_file(dir / "m" / "config.json");
  const ordered_json config = ordered_json::parse(text);
  EXPECT_EQ(config.dump(4), text);
  EXPECT_EQ(config["quantization"], config["quantization_config"]);
  std::vector<std::string> keys;
  for (const auto& [key, value] : config["quantization"].items()) keys.push_back(key);
  std::vector<std::string> expected = {"group_size", "bits", "mode"};
  for (int i = 0; i < 4; ++i) {
    expected.push_back(fmt::format("language_model.model.layers.{}.mlp.gate", i));
    expected.push_back(fmt::format("language_model.model.layers.{}.mlp.shared_expert_gate", i));
  }
  EXPECT_EQ(keys, expected);
  EXPECT_EQ(config["quantization"]["language_model.model.layers.2.mlp.shared_expert_gate"].dump(),
            R"({"group_size":64,"bits":8})");

  const std::string l0 = "language_model.model.layers.0.";
  EXPECT_EQ(*model.require(l0 + "mlp.gate.weight").quant(), (QuantSpec{QuantMode::Affine, 8, 64}));
  EXPECT_EQ(*model.require(l0 + "mlp.shared_expert_gate.weight").quant(), (QuantSpec{QuantMode::Affine, 8, 64}));
  EXPECT_EQ(folder.require(l0 + "mlp.shared_expert_gate.weight").shape, (Shape{1, H * 8 / 32}));
  for (const char* m : {"mlp.switch_mlp.down_proj.weight", "mlp.shared_expert.down_proj.weight",
                        "linear_attn.in_proj_b.weight", "linear_attn.out_proj.weight"})
    EXPECT_EQ(*model.require(l0 + m).quant(), (QuantSpec{QuantMode::Affine, 4, 64})) << m;
  EXPECT_EQ(*model.require("language_model.model.embed_tokens.weight").quant(), (QuantSpec{QuantMode::Affine, 4, 64}));
  EXPECT_EQ(*model.require("language_model.lm_head.weight").quant(), (QuantSpec{QuantMode::Affine, 4, 64}));
  // Convolution, norms, A_log and dt_bias have no quantized form.
  for (const char* m : {"linear_attn.conv1d", "linear_attn.norm", "input_layernorm", "linear_attn.A_log",
                        "linear_attn.dt_bias"})
    EXPECT_FALSE(folder.find(l0 + m + ".scales")) << m;
  EXPECT_EQ(folder.require(l0 + "linear_attn.A_log").dtype, DType::F32);
  EXPECT_EQ(folder.require(l0 + "linear_attn.dt_bias").dtype, DType::BF16);
  EXPECT_EQ(folder.require(l0 + "linear_attn.conv1d.weight").shape, (Shape{kConv, 4, 1}));

  // Every tensor reads back as the float model's (quantized ones within a quantization step).
  for (const auto& [name, tensor] : model.tensors()) {
    const std::vector<float> expected_values = tiny_model_float_weights(spec, name);
    const std::vector<float> actual = floats(model, name);
    ASSERT_EQ(actual.size(), expected_values.size()) << name;
    if (!tensor.quant()) {
      EXPECT_EQ(actual, expected_values) << name;
      continue;
    }
    const int gs = tensor.quant()->group_size, levels = (1 << tensor.quant()->bits) - 1;
    for (size_t g = 0; g < actual.size() / gs; ++g) {
      const auto begin = expected_values.begin() + static_cast<int64_t>(g * gs);
      const auto [lo, hi] = std::minmax_element(begin, begin + gs);
      const float tolerance = (*hi - *lo) / static_cast<float>(levels) + 0x1p-6f * std::max(std::fabs(*lo), std::fabs(*hi));
      for (int j = 0; j < gs; ++j)
        ASSERT_LE(std::fabs(actual[g * gs + j] - expected_values[g * gs + j]), tolerance) << name << " " << g * gs + j;
    }
  }
}

TEST(Qwen35Generator, GroupSizeThatDoesNotDivideTheInputsLeavesTheLinearFloat) {
  ScratchDir dir;
  TinyModelSpec spec = qwen_spec("qwen3_5_moe");
  spec.quant = QuantRecipe::parse("affine:4:128");
  write_tiny_model(spec, dir / "m");
  const SourceModel model = SourceModel::open(dir / "m");
  const std::string mlp = "language_model.model.layers.1.mlp.";
  // 64 inputs: mlx-lm skips them before consulting the model's predicate.
  EXPECT_FALSE(model.require(mlp + "switch_mlp.down_proj.weight").quant());
  EXPECT_FALSE(model.require(mlp + "shared_expert.down_proj.weight").quant());
  EXPECT_EQ(model.folder().require(mlp + "shared_expert.down_proj.weight").dtype, DType::BF16);
  EXPECT_EQ(*model.require(mlp + "switch_mlp.up_proj.weight").quant(), (QuantSpec{QuantMode::Affine, 4, 128}));
  // 128 inputs pass the top-level check; the predicate then asks for group size 64.
  EXPECT_EQ(*model.require(mlp + "gate.weight").quant(), (QuantSpec{QuantMode::Affine, 8, 64}));
  EXPECT_EQ(model.folder().config()["quantization"]["language_model.model.layers.1.mlp.gate"],
            json({{"group_size", 64}, {"bits", 8}}));
}

TEST(Qwen35Generator, DenseModelHasNoRouterPredicate) {
  ScratchDir dir;
  TinyModelSpec spec = qwen_spec("qwen3_5");
  spec.quant = QuantRecipe::parse("affine:8:64");
  write_tiny_model(spec, dir / "m");
  const json config = json::parse(read_file(dir / "m" / "config.json"));
  EXPECT_EQ(config["quantization"], json({{"group_size", 64}, {"bits", 8}, {"mode", "affine"}}));
}

// ---------------------------------------------------------------------------------------------------------------
// hf layout

std::string hf_name(const std::string& mlx_name) {
  if (mlx_name.starts_with("language_model.model.")) return "model.language_model." + mlx_name.substr(21);
  if (mlx_name == "language_model.lm_head.weight") return "lm_head.weight";
  return mlx_name;
}

TEST(Qwen35Generator, HfCheckpointLayout) {
  ScratchDir dir;
  TinyModelSpec spec = qwen_spec("qwen3_5_moe");
  spec.layout = "hf";
  spec.hf_extra_tensors = true;
  write_tiny_model(spec, dir / "m");
  const SourceModel model = SourceModel::open(dir / "m");
  const ModelFolder& folder = model.folder();
  const int64_t V = tiny_tokenizer_facts().vocab_size;

  std::set<std::string> expected;
  for (const std::string& name : expected_mlx_names(true, false)) {
    if (name.find(".switch_mlp.") != std::string::npos) continue;
    expected.insert(hf_name(name));
  }
  for (int i = 0; i < 4; ++i) {
    expected.insert(fmt::format("model.language_model.layers.{}.mlp.experts.gate_up_proj", i));
    expected.insert(fmt::format("model.language_model.layers.{}.mlp.experts.down_proj", i));
  }
  std::set<std::string> names, extras;
  for (const std::string& name : names_of(folder))
    (name.starts_with("mtp.") || name.starts_with("model.visual.") ? extras : names).insert(name);
  EXPECT_EQ(names, expected);
  EXPECT_TRUE(extras.contains("mtp.fc.weight"));
  EXPECT_TRUE(extras.contains("mtp.layers.0.mlp.experts.gate_up_proj"));
  EXPECT_TRUE(extras.contains("model.visual.patch_embed.proj.weight"));

  const std::string l = "model.language_model.layers.";
  EXPECT_EQ(folder.require("lm_head.weight").shape, (Shape{V, H}));
  EXPECT_EQ(folder.require(l + "0.linear_attn.conv1d.weight").shape, (Shape{kConv, 1, 4}));
  EXPECT_EQ(folder.require(l + "0.mlp.experts.gate_up_proj").shape, (Shape{4, 2 * 64, H}));
  EXPECT_EQ(folder.require(l + "0.mlp.experts.down_proj").shape, (Shape{4, H, 64}));
  EXPECT_EQ(folder.require(l + "0.linear_attn.A_log").dtype, DType::F32);
  for (const auto& [name, tensor] : folder.tensors()) {
    if (!name.ends_with(".A_log")) {
      EXPECT_EQ(tensor.dtype, DType::BF16) << name;
    }
  }

  // Zero-centred norms hold w (around 0), the gated norm its weight around 1.
  EXPECT_NEAR(mean_of(floats(model, l + "1.input_layernorm.weight")), 0.0, 0.05);
  EXPECT_NEAR(mean_of(floats(model, "model.language_model.norm.weight")), 0.0, 0.05);
  EXPECT_NEAR(mean_of(floats(model, l + "3.self_attn.k_norm.weight")), 0.0, 0.05);
  EXPECT_NEAR(mean_of(floats(model, l + "1.linear_attn.norm.weight")), 1.0, 0.05);

  // Hugging Face files: padded header tagged "pt", one shard without index, config with its vision part.
  const std::string bytes = read_file(dir / "m" / "model.safetensors");
  uint64_t header_length = 0;
  std::memcpy(&header_length, bytes.data(), 8);
  EXPECT_EQ(header_length % 8, 0u);
  EXPECT_EQ(SafetensorsFile::open(dir / "m" / "model.safetensors")->metadata(), json({{"format", "pt"}}));
  EXPECT_FALSE(fs::exists(dir / "m" / "model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(dir / "m" / "README.md"));
  const std::string config_text = read_file(dir / "m" / "config.json");
  EXPECT_EQ(json::parse(config_text).dump(2) + "\n", config_text);
  const json& config = folder.config();
  EXPECT_EQ(config["model_type"], "qwen3_5_moe");
  EXPECT_TRUE(config.contains("vision_config"));
  EXPECT_FALSE(config.contains("quantization"));
  EXPECT_FALSE(config.contains("eos_token_id"));  // only mlx-lm copies it to the top level
  EXPECT_EQ(config["text_config"]["model_type"], "qwen3_5_moe_text");
}

TEST(Qwen35Generator, HfCheckpointWithoutExtrasOrWithShards) {
  ScratchDir dir;
  TinyModelSpec spec = qwen_spec("qwen3_5");
  spec.layout = "hf";
  spec.max_shard_bytes = 200000;
  const TinyModelSummary summary = write_tiny_model(spec, dir / "m");
  ASSERT_GT(summary.shards.size(), 1u);
  const ModelFolder folder = ModelFolder::open(dir / "m");
  for (const auto& [name, tensor] : folder.tensors()) {
    EXPECT_FALSE(name.starts_with("mtp.") || name.starts_with("model.visual.")) << name;
    EXPECT_EQ(name.find("switch_mlp"), std::string::npos) << name;
  }
  EXPECT_TRUE(folder.find("model.language_model.layers.0.mlp.gate_proj.weight"));
  const std::string index_text = read_file(dir / "m" / "model.safetensors.index.json");
  const json index = json::parse(index_text);
  EXPECT_EQ(index.dump(2) + "\n", index_text);
  EXPECT_EQ(index["metadata"], json({{"total_size", summary.total_size}}));
}

// The same seed gives the same model in both layouts, related exactly as mlx-lm's sanitize relates them.
void expect_layouts_agree(TinyModelSpec spec) {
  ScratchDir dir;
  spec.layout = "mlx";
  write_tiny_model(spec, dir / "mlx");
  spec.layout = "hf";
  spec.hf_extra_tensors = true;
  write_tiny_model(spec, dir / "hf");
  const ModelFolder mlx = ModelFolder::open(dir / "mlx");
  const ModelFolder hf = ModelFolder::open(dir / "hf");
  const DType dtype = mlx.require("language_model.model.norm.weight").dtype;

  std::set<std::string> matched;
  int shifted = 0, convs = 0, fused = 0;
  for (const auto& [name, tensor] : mlx.tensors()) {
    SCOPED_TRACE(name);
    const auto switch_at = name.find(".switch_mlp.");
    if (switch_at != std::string::npos) {
      // Stacked experts come from the fused tensors: gate = first Im rows of each expert, up = the rest.
      const std::string prefix = hf_name(name.substr(0, switch_at)) + ".experts.";
      if (name.ends_with("down_proj.weight")) {
        const StoredTensor& down = hf.require(prefix + "down_proj");
        EXPECT_EQ(down.shape, tensor.shape);
        EXPECT_TRUE(std::ranges::equal(down.bytes, tensor.bytes));
        matched.insert(down.name);
        continue;
      }
      const StoredTensor& gate_up = hf.require(prefix + "gate_up_proj");
      const bool up = name.ends_with("up_proj.weight");
      const size_t experts = static_cast<size_t>(tensor.shape[0]);
      const size_t block = tensor.bytes.size() / experts;
      ASSERT_EQ(gate_up.bytes.size(), 2 * tensor.bytes.size());
      for (size_t e = 0; e < experts; ++e) {
        const auto from = gate_up.bytes.begin() + static_cast<ptrdiff_t>((2 * e + (up ? 1 : 0)) * block);
        EXPECT_TRUE(std::equal(from, from + static_cast<ptrdiff_t>(block), tensor.bytes.begin() + static_cast<ptrdiff_t>(e * block)))
            << "expert " << e;
      }
      matched.insert(gate_up.name);
      fused += up;
      continue;
    }
    const StoredTensor& source = hf.require(hf_name(name));
    matched.insert(source.name);
    ASSERT_EQ(source.dtype, tensor.dtype);
    if (name.ends_with("conv1d.weight")) {
      EXPECT_EQ(source.shape, (Shape{tensor.shape[0], 1, tensor.shape[1]}));
      ++convs;
    } else {
      EXPECT_EQ(source.shape, tensor.shape);
    }
    const bool zero_centred = name.ends_with("input_layernorm.weight") || name.ends_with("post_attention_layernorm.weight") ||
                              name.ends_with("model.norm.weight") || name.ends_with("q_norm.weight") ||
                              name.ends_with("k_norm.weight");
    if (!zero_centred) {
      EXPECT_TRUE(std::ranges::equal(source.bytes, tensor.bytes));
      continue;
    }
    ++shifted;
    for (int64_t i = 0; i < tensor.element_count(); ++i) {
      uint16_t stored, raw;
      std::memcpy(&stored, tensor.bytes.data() + 2 * i, 2);
      std::memcpy(&raw, source.bytes.data() + 2 * i, 2);
      const uint16_t shifted_bits = dtype == DType::BF16 ? f32_to_bf16(1.0f + bf16_to_f32(raw))
                                                         : f32_to_f16(1.0f + f16_to_f32(raw));
      ASSERT_EQ(stored, shifted_bits) << "element " << i;
    }
  }
  EXPECT_EQ(shifted, 4 * 2 + 1 + 2);  // two per layer, final norm, q/k norms of the full-attention layer
  EXPECT_EQ(convs, 3);
  EXPECT_EQ(fused, spec.model_type == "qwen3_5_moe" ? 4 : 0);
  for (const auto& [name, tensor] : hf.tensors()) {
    if (!name.starts_with("mtp.") && !name.starts_with("model.visual.")) {
      EXPECT_TRUE(matched.contains(name)) << name;
    }
  }
}

TEST(Qwen35Generator, MlxAndHfFoldersOfOneSeedHoldTheSameModel) {
  TinyModelSpec spec = qwen_spec("qwen3_5_moe");
  spec.seed = 7;
  expect_layouts_agree(spec);
  spec = qwen_spec("qwen3_5");
  spec.dtype = "float16";
  expect_layouts_agree(spec);
}

TEST(Qwen35Generator, FloatWeightsAreNamedByLayout) {
  TinyModelSpec spec = qwen_spec("qwen3_5_moe");
  const std::vector<float> shifted = tiny_model_float_weights(spec, "language_model.model.norm.weight");
  spec.layout = "hf";
  const std::vector<float> raw = tiny_model_float_weights(spec, "model.language_model.norm.weight");
  ASSERT_EQ(shifted.size(), raw.size());
  for (size_t i = 0; i < raw.size(); ++i) EXPECT_EQ(shifted[i], bf16_to_f32(f32_to_bf16(1.0f + raw[i])));
  EXPECT_THROW(tiny_model_float_weights(spec, "language_model.model.norm.weight"), Error);
}

// ---------------------------------------------------------------------------------------------------------------
// Forward pass

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

TEST(Qwen35Generator, BothLayoutsComputeTheSameLogits) {
  ScratchDir dir;
  TinyModelSpec spec = qwen_spec("qwen3_5_moe");
  spec.dtype = "float32";  // 1 + w then rounds at float32 precision only
  write_tiny_model(spec, dir / "mlx");
  spec.layout = "hf";
  spec.hf_extra_tensors = true;
  write_tiny_model(spec, dir / "hf");
  EXPECT_LT(logits_nmse(dir / "mlx", dir / "hf"), 1e-10);
}

// Weight errors of 8-bit quantization move the logits of these random models about as little as a llama's: no
// head output near zero, no state wiped every token (see gated_delta_net in tiny_model.cpp).
TEST(Qwen35Generator, LogitsAreStableUnderSmallWeightErrors) {
  ScratchDir dir;
  for (uint64_t seed : {1, 2, 3}) {
    TinyModelSpec spec = qwen_spec("qwen3_5");
    spec.seed = seed;
    write_tiny_model(spec, dir / fmt::format("float{}", seed));
    spec.quant = QuantRecipe::parse("affine:8:64");
    write_tiny_model(spec, dir / fmt::format("q8-{}", seed));
    EXPECT_LT(logits_nmse(dir / fmt::format("float{}", seed), dir / fmt::format("q8-{}", seed)), 1e-2) << seed;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Preset and validation

TEST(Qwen35Generator, RealWidthsPreset) {
  const TinyModelSpec spec = qwen36_like_spec();
  EXPECT_EQ(spec.model_type, "qwen3_5_moe");
  EXPECT_EQ(spec.hidden, 2048);
  EXPECT_EQ(spec.head_dim, 256);
  EXPECT_EQ(spec.heads, 16);
  EXPECT_EQ(spec.kv_heads, 2);
  EXPECT_EQ(spec.linear_num_key_heads, 16);
  EXPECT_EQ(spec.linear_num_value_heads, 32);
  EXPECT_EQ(spec.linear_key_head_dim, 128);
  EXPECT_EQ(spec.linear_value_head_dim, 128);
  EXPECT_EQ(spec.moe_intermediate, 512);
  EXPECT_EQ(spec.shared_expert_intermediate, 512);
  EXPECT_EQ(spec.experts, 4);
  EXPECT_EQ(spec.experts_per_tok, 3);  // the boundary expert carries little weight, as in the real model
  EXPECT_EQ(tiny_model_preset("qwen3.6-35b-a3b-widths").hidden, 2048);
  EXPECT_THROW(tiny_model_preset("qwen9"), Error);
  // Both layer kinds at real widths (shapes checked without writing the 180 MB folder).
  const std::string l = "language_model.model.layers.";
  EXPECT_EQ(tiny_model_float_weights(spec, l + "0.linear_attn.A_log").size(), 32u);
  EXPECT_EQ(tiny_model_float_weights(spec, l + "0.linear_attn.conv1d.weight").size(), (2u * 16 * 128 + 32 * 128) * 4);
  EXPECT_EQ(tiny_model_float_weights(spec, l + "1.self_attn.q_norm.weight").size(), 256u);
  EXPECT_EQ(tiny_model_float_weights(spec, l + "1.mlp.shared_expert_gate.weight").size(), 2048u);
}

TEST(Qwen35Generator, RejectsInvalidSpecs) {
  ScratchDir dir;
  TinyModelSpec spec = qwen_spec("qwen3_5_moe");
  spec.layout = "hf";
  spec.quant = QuantRecipe::parse("affine:4:64");
  EXPECT_THROW(write_tiny_model(spec, dir / "a"), Error);  // Hugging Face checkpoints are not MLX-quantized
  spec = qwen_spec("llama");
  spec.layout = "hf";
  EXPECT_THROW(write_tiny_model(spec, dir / "b"), Error);
  spec = qwen_spec("qwen3_5_moe");
  spec.layout = "safetensors";
  EXPECT_THROW(write_tiny_model(spec, dir / "c"), Error);
  spec = qwen_spec("qwen3_5_moe");
  spec.hf_extra_tensors = true;  // mlx-lm never keeps them
  EXPECT_THROW(write_tiny_model(spec, dir / "d"), Error);
  spec = qwen_spec("qwen3_5");
  spec.linear_num_value_heads = 3;  // not a multiple of the 2 key heads
  EXPECT_THROW(write_tiny_model(spec, dir / "e"), Error);
  spec = qwen_spec("qwen3_5");
  spec.mrope_section = {4, 4};
  EXPECT_THROW(write_tiny_model(spec, dir / "f"), Error);
  spec = qwen_spec("qwen3_5");
  spec.rope_scaling = json{{"type", "linear"}, {"factor", 2.0}};
  EXPECT_THROW(write_tiny_model(spec, dir / "g"), Error);
  spec = qwen_spec("qwen3_5");
  spec.experts = 4;
  EXPECT_THROW(write_tiny_model(spec, dir / "h"), Error);
  spec = qwen_spec("qwen3_5");
  spec.partial_rotary_factor = 1.0 / 64;  // one rotated dim
  EXPECT_THROW(write_tiny_model(spec, dir / "i"), Error);
}

}  // namespace
}  // namespace mlx2gguf::gen
