// Bad fine-tunes: one clear error naming the file, module or tensor, an exit status in 1..127, no output or temporary
// file, an existing output file kept, the inputs unchanged (refusal_check.h).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <limits>

#include "e2e_support.h"
#include "refusal_check.h"
#include "gen/safetensors_writer.h"
#include "read/source_model.h"

namespace {

namespace fs = std::filesystem;
using mlx2gguf::gen::GenTensor;

// Base: a tiny llama (hidden 64, 2 query heads and 1 key/value head of 32, MLP 128, 2 layers).
class AdapterBadInput : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = e2e::work_dir() / "adapter-bad-input" / testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    mlx2gguf::gen::TinyModelSpec spec;
    spec.model_type = "llama";
    spec.hidden = 64;
    spec.intermediate = 128;
    spec.heads = 2;
    spec.kv_heads = 1;
    spec.tie_embeddings = tied_;
    base_ = e2e::cached_model(tied_ ? "adapter-bad-input-tied" : "adapter-bad-input", spec);
  }

  static GenTensor f32(const std::string& name, std::vector<int64_t> shape) {
    GenTensor t{name, mlx2gguf::DType::F32, std::move(shape), {}};
    t.data.assign(static_cast<size_t>(t.element_count() * 4), 0);
    for (size_t i = 0; i < t.data.size(); i += 4) t.data[i + 2] = static_cast<uint8_t>(i % 97);  // small non-zero floats
    return t;
  }

  // An adapter folder as mlx_lm.lora writes it, with the given config and tensors.
  fs::path adapter(const nlohmann::json& config, const std::vector<GenTensor>& tensors,
                   const std::string& weights_name = "adapters.safetensors") {
    const fs::path folder = dir_ / "adapters";
    fs::create_directories(folder);
    std::ofstream(folder / "adapter_config.json") << config.dump(4);
    mlx2gguf::gen::write_safetensors(folder / weights_name, tensors, nullptr);
    return folder;
  }

  static nlohmann::json lora_config(const std::string& type = "lora") {
    return {{"fine_tune_type", type}, {"num_layers", -1}, {"lora_parameters", {{"rank", 8}, {"dropout", 0.0}, {"scale", 20.0}}}};
  }

  static std::vector<GenTensor> q_proj_lora(const std::string& layer = "0", int64_t in = 64, int64_t rank_b = 8) {
    const std::string module = "model.layers." + layer + ".self_attn.q_proj";
    return {f32(module + ".lora_a", {in, 8}), f32(module + ".lora_b", {rank_b, 64})};
  }

  // Runs `args` expecting failure; returns the message.
  std::string fails(std::vector<std::string> args) {
    std::vector<fs::path> inputs = {base_};
    if (fs::exists(dir_ / "adapters")) inputs.push_back(dir_ / "adapters");
    return e2e::expect_refusal(args, dir_ / "out.gguf", inputs);
  }
  std::string merge_fails(const fs::path& adapter_path) {
    return fails({"convert", base_.string(), "--adapter-path", adapter_path.string()});
  }

  bool tied_ = false;
  fs::path dir_, base_;
};

#define EXPECT_MENTIONS(message, text) EXPECT_NE((message).find(text), std::string::npos) << (message)

TEST_F(AdapterBadInput, MissingFolderIsNamed) {
  const auto message = merge_fails(dir_ / "no-such-adapters");
  EXPECT_MENTIONS(message, "no-such-adapters");
  EXPECT_MENTIONS(message, "does not exist");
}

TEST_F(AdapterBadInput, MissingConfigIsNamed) {
  const fs::path folder = adapter(lora_config(), q_proj_lora());
  fs::remove(folder / "adapter_config.json");
  EXPECT_MENTIONS(merge_fails(folder), "adapter_config.json");
}

TEST_F(AdapterBadInput, MissingWeightsPointAtTheCheckpoints) {
  const fs::path folder = adapter(lora_config(), q_proj_lora(), "0000200_adapters.safetensors");
  const auto message = merge_fails(folder);
  EXPECT_MENTIONS(message, "adapters.safetensors");
  EXPECT_MENTIONS(message, "0000200_adapters.safetensors");
  EXPECT_MENTIONS(message, "--adapter-file");
}

TEST_F(AdapterBadInput, UnknownFineTuneTypeIsNamed) {
  const auto message = merge_fails(adapter(lora_config("qlora"), q_proj_lora()));
  EXPECT_MENTIONS(message, "fine_tune_type 'qlora'");
}

TEST_F(AdapterBadInput, MissingScaleIsNamed) {
  nlohmann::json config = lora_config();
  config["lora_parameters"].erase("scale");
  EXPECT_MENTIONS(merge_fails(adapter(config, q_proj_lora())), "lora_parameters.scale");
}

TEST_F(AdapterBadInput, ModuleOfALayerPastTheModelIsNamed) {
  const auto message = merge_fails(adapter(lora_config(), q_proj_lora("7")));
  EXPECT_MENTIONS(message, "model.layers.7.self_attn.q_proj");
  EXPECT_MENTIONS(message, "another model");
}

TEST_F(AdapterBadInput, RankMismatchIsNamed) {
  const auto message = merge_fails(adapter(lora_config(), q_proj_lora("0", 64, 4)));
  EXPECT_MENTIONS(message, "model.layers.0.self_attn.q_proj");
  EXPECT_MENTIONS(message, "lora_a has rank 8 but lora_b rank 4");
}

TEST_F(AdapterBadInput, MissingPartnerIsNamed) {
  const auto message = merge_fails(adapter(lora_config(), {f32("model.layers.0.self_attn.q_proj.lora_a", {64, 8})}));
  EXPECT_MENTIONS(message, "model.layers.0.self_attn.q_proj");
  EXPECT_MENTIONS(message, "no lora_b");
}

TEST_F(AdapterBadInput, ShapesOfAnotherBaseAreNamed) {
  const auto message = merge_fails(adapter(lora_config(), q_proj_lora("0", 128)));
  EXPECT_MENTIONS(message, "model.layers.0.self_attn.q_proj");
  EXPECT_MENTIONS(message, "[128, 8]");
  EXPECT_MENTIONS(message, "[64, 64]");
}

TEST_F(AdapterBadInput, ConfigRankDisagreeingWithTheWeightsIsNamed) {
  nlohmann::json config = lora_config();
  config["lora_parameters"]["rank"] = 16;
  EXPECT_MENTIONS(merge_fails(adapter(config, q_proj_lora())), "lora_parameters.rank 16");
}

TEST_F(AdapterBadInput, NonAdapterTensorInALoraFileIsNamed) {
  auto tensors = q_proj_lora();
  tensors.push_back(f32("model.layers.0.mlp.down_proj.weight", {64, 128}));
  const auto message = merge_fails(adapter(lora_config(), tensors));
  EXPECT_MENTIONS(message, "model.layers.0.mlp.down_proj.weight");
  EXPECT_MENTIONS(message, "fine_tune_type");
}

TEST_F(AdapterBadInput, DoraMagnitudeOfTheWrongLengthIsNamed) {
  auto tensors = q_proj_lora();
  tensors.push_back(f32("model.layers.0.self_attn.q_proj.m", {32}));
  const auto message = merge_fails(adapter(lora_config("dora"), tensors));
  EXPECT_MENTIONS(message, "model.layers.0.self_attn.q_proj.m");
  EXPECT_MENTIONS(message, "[64]");
}

TEST_F(AdapterBadInput, FullFineTuneTensorOfAnotherShapeIsNamed) {
  nlohmann::json config = lora_config("full");
  config["lora_parameters"] = nullptr;
  const auto message = merge_fails(adapter(config, {f32("model.layers.1.mlp.down_proj.weight", {64, 64})}));
  EXPECT_MENTIONS(message, "model.layers.1.mlp.down_proj.weight");
  EXPECT_MENTIONS(message, "[64, 128]");
}

TEST_F(AdapterBadInput, GgufLoraRefusesDora) {
  auto tensors = q_proj_lora();
  tensors.push_back(f32("model.layers.0.self_attn.q_proj.m", {64}));
  const fs::path folder = adapter(lora_config("dora"), tensors);
  const auto message = fails({"convert-adapter", folder.string(), "--base", base_.string()});
  EXPECT_MENTIONS(message, "dora");
  EXPECT_MENTIONS(message, "--adapter-path");
}

TEST_F(AdapterBadInput, GgufLoraRefusesFullFineTunes) {
  nlohmann::json config = lora_config("full");
  config["lora_parameters"] = nullptr;
  const fs::path folder = adapter(config, {f32("model.layers.1.mlp.down_proj.weight", {64, 128})});
  EXPECT_MENTIONS(fails({"convert-adapter", folder.string(), "--base", base_.string()}), "full fine-tune");
}

// One NaN in lora_b: merging would spread it over a whole row of q_proj, a GGUF LoRA would carry it as it is.
TEST_F(AdapterBadInput, NonFiniteAdapterWeightIsRefusedByBothCommands) {
  auto tensors = q_proj_lora();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(tensors[1].data.data() + 4 * 3, &nan, 4);  // lora_b [8, 64]: element 3 of row 0
  const fs::path folder = adapter(lora_config(), tensors);
  const auto merged = merge_fails(folder);
  EXPECT_MENTIONS(merged, "model.layers.0.self_attn.q_proj.weight");
  EXPECT_MENTIONS(merged, "nan");
  EXPECT_MENTIONS(merged, "once merged with the adapter");
  EXPECT_MENTIONS(merged, "--allow-non-finite");
  const auto lora = fails({"convert-adapter", folder.string(), "--base", base_.string()});
  EXPECT_MENTIONS(lora, "model.layers.0.self_attn.q_proj.lora_b");
  EXPECT_MENTIONS(lora, (folder / "adapters.safetensors").string());
  EXPECT_MENTIONS(lora, "nan");
}

class AdapterBadInputTied : public AdapterBadInput {
 protected:
  void SetUp() override {
    tied_ = true;
    AdapterBadInput::SetUp();
  }
};

TEST_F(AdapterBadInputTied, GgufLoraRefusesAnEmbeddingLoraOnATiedHead) {
  const int64_t vocab = mlx2gguf::SourceModel::open(base_).require("model.embed_tokens.weight").shape().at(0);
  const fs::path folder =
      adapter(lora_config(), {f32("model.embed_tokens.lora_a", {vocab, 8}), f32("model.embed_tokens.lora_b", {8, 64})});
  const auto message = fails({"convert-adapter", folder.string(), "--base", base_.string()});
  EXPECT_MENTIONS(message, "model.embed_tokens");
  EXPECT_MENTIONS(message, "tied");
  // Merging it is fine: the merged embedding serves as input table and output head alike.
  const auto merged = e2e::run_mlx2gguf({"convert", base_.string(), "--adapter-path", folder.string(), "-o",
                                         (dir_ / "merged.gguf").string(), "-q"});
  EXPECT_EQ(merged.exit_code, 0) << merged.output;
}

}  // namespace
