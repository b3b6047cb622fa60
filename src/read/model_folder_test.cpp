#include "read/model_folder.h"

#include <gtest/gtest.h>

#include "read/dequant.h"
#include "read/test_support.h"
#include "util/error.h"

namespace mlx2gguf {
namespace {

using test_support::TempDir;
using test_support::TensorBytes;
using test_support::f32_bytes;
using test_support::throws_with;
using test_support::write_json;
using test_support::write_safetensors;
using test_support::write_text;

const nlohmann::json kConfig = {{"model_type", "llama"}, {"hidden_size", 4}, {"rms_norm_eps", 1e-5}};

TensorBytes f32_tensor(const std::string& name, std::vector<float> values) {
  const auto count = static_cast<int64_t>(values.size());
  return {name, "F32", {count}, f32_bytes(values)};
}

float first_value(const StoredTensor& t) { return load_float(t.bytes.data(), t.dtype, 0); }

void open_folder(const std::filesystem::path& dir) { ModelFolder::open(dir); }

// Two shards as mlx-lm writes them: a.* in the first, b.* in the second, and the matching index.
void write_two_shards(const TempDir& dir) {
  write_json(dir / "config.json", kConfig);
  write_safetensors(dir / "model-00001-of-00002.safetensors",
                    {f32_tensor("a.weight", {1.0f}), f32_tensor("a.bias", {2.0f})});
  write_safetensors(dir / "model-00002-of-00002.safetensors", {f32_tensor("b.weight", {3.0f, 4.0f})});
}

nlohmann::json two_shard_index() {
  return {{"metadata", {{"total_size", 16}, {"total_parameters", 4}}},
          {"weight_map",
           {{"a.bias", "model-00001-of-00002.safetensors"},
            {"a.weight", "model-00001-of-00002.safetensors"},
            {"b.weight", "model-00002-of-00002.safetensors"}}}};
}

TEST(ModelFolder, OpensSingleShardFolderWithoutIndex) {
  TempDir dir;
  write_json(dir / "config.json", kConfig);
  write_safetensors(dir / "model.safetensors", {f32_tensor("x.weight", {5.0f, 6.0f}), f32_tensor("y", {7.0f})});
  const auto folder = ModelFolder::open(dir.path());
  EXPECT_EQ(folder.dir(), dir.path());
  EXPECT_EQ(folder.config(), kConfig);
  EXPECT_EQ(folder.model_type(), "llama");
  ASSERT_EQ(folder.tensors().size(), 2u);
  const StoredTensor* x = folder.find("x.weight");
  ASSERT_NE(x, nullptr);
  EXPECT_EQ(x->shape, std::vector<int64_t>{2});
  EXPECT_EQ(first_value(*x), 5.0f);
  EXPECT_EQ(x->file, dir / "model.safetensors");
  EXPECT_EQ(first_value(folder.require("y")), 7.0f);
  EXPECT_EQ(folder.find("z"), nullptr);
}

TEST(ModelFolder, OpensSingleShardFolderWithItsIndex) {
  TempDir dir;
  write_json(dir / "config.json", kConfig);
  write_safetensors(dir / "model.safetensors", {f32_tensor("x.weight", {5.0f})});
  write_json(dir / "model.safetensors.index.json",
             {{"metadata", {{"total_size", 4}}}, {"weight_map", {{"x.weight", "model.safetensors"}}}});
  const auto folder = ModelFolder::open(dir.path());
  ASSERT_EQ(folder.tensors().size(), 1u);
  EXPECT_EQ(first_value(folder.require("x.weight")), 5.0f);
}

TEST(ModelFolder, RequireOfAnAbsentTensorNamesItAndTheFolder) {
  TempDir dir;
  write_json(dir / "config.json", kConfig);
  write_safetensors(dir / "model.safetensors", {f32_tensor("x.weight", {5.0f})});
  const auto folder = ModelFolder::open(dir.path());
  EXPECT_TRUE(throws_with<Error>([&] { folder.require("lm_head.weight"); },
                                 {"'lm_head.weight'", "missing", dir.path().string()}));
}

TEST(ModelFolder, MergesShardsListedInTheIndex) {
  TempDir dir;
  write_two_shards(dir);
  write_json(dir / "model.safetensors.index.json", two_shard_index());
  const auto folder = ModelFolder::open(dir.path());
  ASSERT_EQ(folder.tensors().size(), 3u);
  EXPECT_EQ(first_value(folder.require("a.weight")), 1.0f);
  EXPECT_EQ(first_value(folder.require("a.bias")), 2.0f);
  EXPECT_EQ(first_value(folder.require("b.weight")), 3.0f);
  EXPECT_EQ(folder.require("a.weight").file, dir / "model-00001-of-00002.safetensors");
  EXPECT_EQ(folder.require("b.weight").file, dir / "model-00002-of-00002.safetensors");
}

TEST(ModelFolder, WithoutIndexLoadsEveryModelShardButNoOtherSafetensors) {
  TempDir dir;
  write_two_shards(dir);
  write_safetensors(dir / "adapters.safetensors", {f32_tensor("a.weight", {99.0f})}, nlohmann::json(nullptr));
  const auto folder = ModelFolder::open(dir.path());
  EXPECT_EQ(folder.tensors().size(), 3u);
  EXPECT_EQ(first_value(folder.require("a.weight")), 1.0f);
  EXPECT_EQ(first_value(folder.require("b.weight")), 3.0f);
}

TEST(ModelFolder, RejectsShardNamedInTheIndexButMissing) {
  TempDir dir;
  write_two_shards(dir);
  write_json(dir / "model.safetensors.index.json", two_shard_index());
  std::filesystem::remove(dir / "model-00002-of-00002.safetensors");
  EXPECT_TRUE(throws_with<Error>([&] { open_folder(dir.path()); },
                                 {"model-00002-of-00002.safetensors", "model.safetensors.index.json", "missing"}));
}

TEST(ModelFolder, RejectsModelShardThatTheIndexDoesNotList) {
  TempDir dir;
  write_two_shards(dir);
  write_json(dir / "model.safetensors.index.json", two_shard_index());
  write_safetensors(dir / "model-00003-of-00003.safetensors", {f32_tensor("c.weight", {1.0f})});
  EXPECT_TRUE(throws_with<Error>([&] { open_folder(dir.path()); },
                                 {"model-00003-of-00003.safetensors", "not listed", "model.safetensors.index.json"}));
}

TEST(ModelFolder, IgnoresNonModelSafetensorsNextToAnIndex) {
  TempDir dir;
  write_two_shards(dir);
  write_json(dir / "model.safetensors.index.json", two_shard_index());
  write_safetensors(dir / "adapters.safetensors", {f32_tensor("zzz", {1.0f})}, nlohmann::json(nullptr));
  const auto folder = ModelFolder::open(dir.path());
  EXPECT_EQ(folder.tensors().size(), 3u);
  EXPECT_EQ(folder.find("zzz"), nullptr);
}

TEST(ModelFolder, RejectsTensorListedInTheIndexButAbsentFromItsShard) {
  TempDir dir;
  write_two_shards(dir);
  auto index = two_shard_index();
  index["weight_map"]["b.bias"] = "model-00002-of-00002.safetensors";
  write_json(dir / "model.safetensors.index.json", index);
  EXPECT_TRUE(throws_with<Error>([&] { open_folder(dir.path()); },
                                 {"'b.bias'", "listed in model.safetensors.index.json", "missing",
                                  "model-00002-of-00002.safetensors"}));
}

TEST(ModelFolder, RejectsTensorStoredInAnotherShardThanTheIndexSays) {
  TempDir dir;
  write_two_shards(dir);
  auto index = two_shard_index();
  index["weight_map"]["b.weight"] = "model-00001-of-00002.safetensors";
  index["weight_map"]["a.bias"] = "model-00002-of-00002.safetensors";
  write_json(dir / "model.safetensors.index.json", index);
  EXPECT_TRUE(throws_with<Error>([&] { open_folder(dir.path()); },
                                 {"'a.bias'", "is in", "model-00001-of-00002.safetensors", "index.json says",
                                  "'model-00002-of-00002.safetensors'"}));
}

TEST(ModelFolder, RejectsTensorThatTheIndexDoesNotList) {
  TempDir dir;
  write_two_shards(dir);
  auto index = two_shard_index();
  index["weight_map"].erase("a.bias");
  write_json(dir / "model.safetensors.index.json", index);
  EXPECT_TRUE(throws_with<Error>([&] { open_folder(dir.path()); },
                                 {"'a.bias'", "model-00001-of-00002.safetensors", "not listed"}));
}

TEST(ModelFolder, RejectsTensorStoredInTwoShards) {
  TempDir dir;
  write_json(dir / "config.json", kConfig);
  write_safetensors(dir / "model-00001-of-00002.safetensors", {f32_tensor("a.weight", {1.0f})});
  write_safetensors(dir / "model-00002-of-00002.safetensors",
                    {f32_tensor("a.weight", {2.0f}), f32_tensor("b.weight", {3.0f})});
  EXPECT_TRUE(throws_with<Error>([&] { open_folder(dir.path()); },
                                 {"'a.weight'", "stored twice", "model-00001-of-00002.safetensors",
                                  "model-00002-of-00002.safetensors"}));
  // The same with an index that names one of the two copies.
  write_json(dir / "model.safetensors.index.json",
             {{"weight_map",
               {{"a.weight", "model-00001-of-00002.safetensors"}, {"b.weight", "model-00002-of-00002.safetensors"}}}});
  EXPECT_TRUE(throws_with<Error>([&] { open_folder(dir.path()); }, {"'a.weight'", "stored twice"}));
}

TEST(ModelFolder, RejectsIndexWithoutWeightMap) {
  TempDir dir;
  write_two_shards(dir);
  write_json(dir / "model.safetensors.index.json", {{"metadata", {{"total_size", 16}}}});
  EXPECT_TRUE(throws_with<Error>([&] { open_folder(dir.path()); }, {"model.safetensors.index.json", "no weight_map"}));
}

TEST(ModelFolder, RejectsIndexThatIsNotJson) {
  TempDir dir;
  write_two_shards(dir);
  write_text(dir / "model.safetensors.index.json", "{\"weight_map\": ");
  EXPECT_TRUE(throws_with<Error>([&] { open_folder(dir.path()); }, {"model.safetensors.index.json", "not valid JSON"}));
}

TEST(ModelFolder, RejectsFolderWithoutConfigJson) {
  TempDir dir;
  write_safetensors(dir / "model.safetensors", {f32_tensor("x", {1.0f})});
  EXPECT_TRUE(throws_with<Error>([&] { open_folder(dir.path()); }, {dir.path().string(), "no config.json"}));
}

TEST(ModelFolder, RejectsConfigThatIsNotJson) {
  TempDir dir;
  write_text(dir / "config.json", "{ model_type: llama }");
  write_safetensors(dir / "model.safetensors", {f32_tensor("x", {1.0f})});
  EXPECT_TRUE(throws_with<Error>([&] { open_folder(dir.path()); }, {"config.json", "not valid JSON"}));
}

TEST(ModelFolder, RejectsConfigThatIsNotAnObject) {
  TempDir dir;
  write_text(dir / "config.json", "[1, 2]");
  write_safetensors(dir / "model.safetensors", {f32_tensor("x", {1.0f})});
  EXPECT_TRUE(throws_with<Error>([&] { open_folder(dir.path()); }, {"config.json", "not a JSON object"}));
}

TEST(ModelFolder, RejectsPathThatIsNotADirectory) {
  TempDir dir;
  write_text(dir / "file.txt", "x");
  EXPECT_TRUE(throws_with<Error>([&] { open_folder(dir / "file.txt"); }, {"file.txt", "not a directory"}));
  EXPECT_TRUE(throws_with<Error>([&] { open_folder(dir / "nowhere"); }, {"nowhere", "not a directory"}));
}

TEST(ModelFolder, RejectsFolderWithoutWeights) {
  TempDir dir;
  write_json(dir / "config.json", kConfig);
  write_safetensors(dir / "adapters.safetensors", {f32_tensor("x", {1.0f})});
  EXPECT_TRUE(throws_with<Error>([&] { open_folder(dir.path()); }, {dir.path().string(), "no model*.safetensors"}));
}

TEST(ModelFolder, ReportsMalformedShardByFileName) {
  TempDir dir;
  write_json(dir / "config.json", kConfig);
  write_text(dir / "model.safetensors", "not a safetensors file at all");
  EXPECT_TRUE(throws_with<Error>([&] { open_folder(dir.path()); }, {"model.safetensors"}));
}

TEST(ModelFolder, NestedTextConfigProvidesHyperParametersAndModelType) {
  TempDir dir;
  const nlohmann::json config = {
      {"model_type", "qwen3_5_moe"},
      {"tie_word_embeddings", true},
      {"text_config", {{"model_type", "qwen3_5_moe_text"}, {"hidden_size", 2048}, {"tie_word_embeddings", false}}}};
  write_json(dir / "config.json", config);
  write_safetensors(dir / "model.safetensors", {f32_tensor("x", {1.0f})});
  const auto folder = ModelFolder::open(dir.path());
  EXPECT_EQ(folder.config(), config);
  EXPECT_EQ(folder.text_config(), config["text_config"]);
  EXPECT_EQ(folder.text_config()["hidden_size"], 2048);
  EXPECT_EQ(folder.text_config()["tie_word_embeddings"], false);
  EXPECT_EQ(folder.model_type(), "qwen3_5_moe_text");
}

TEST(ModelFolder, ModelTypeFallsBackToTopLevelWhenTextConfigLacksIt) {
  TempDir dir;
  write_json(dir / "config.json", {{"model_type", "gemma3"}, {"text_config", {{"hidden_size", 8}}}});
  write_safetensors(dir / "model.safetensors", {f32_tensor("x", {1.0f})});
  const auto folder = ModelFolder::open(dir.path());
  EXPECT_EQ(folder.model_type(), "gemma3");
  EXPECT_EQ(folder.text_config()["hidden_size"], 8);
}

TEST(ModelFolder, FlatConfigIsItsOwnTextConfig) {
  TempDir dir;
  write_json(dir / "config.json", kConfig);
  write_safetensors(dir / "model.safetensors", {f32_tensor("x", {1.0f})});
  const auto folder = ModelFolder::open(dir.path());
  EXPECT_EQ(folder.text_config(), kConfig);
}

TEST(ModelFolder, RejectsConfigWithoutModelType) {
  TempDir dir;
  write_json(dir / "config.json", {{"hidden_size", 4}});
  write_safetensors(dir / "model.safetensors", {f32_tensor("x", {1.0f})});
  const auto folder = ModelFolder::open(dir.path());
  EXPECT_TRUE(throws_with<Error>([&] { folder.model_type(); }, {"config.json", "no model_type"}));
}

TEST(ModelFolder, FindsSideFilesAndParsesTheirJson) {
  TempDir dir;
  write_json(dir / "config.json", kConfig);
  write_safetensors(dir / "model.safetensors", {f32_tensor("x", {1.0f})});
  write_json(dir / "generation_config.json", {{"eos_token_id", {1, 2}}});
  write_text(dir / "tokenizer_config.json", "{broken");
  const auto folder = ModelFolder::open(dir.path());
  ASSERT_TRUE(folder.file("generation_config.json").has_value());
  EXPECT_EQ(*folder.file("generation_config.json"), dir / "generation_config.json");
  EXPECT_FALSE(folder.file("tokenizer.json").has_value());
  const auto generation = folder.json_file("generation_config.json");
  ASSERT_TRUE(generation.has_value());
  EXPECT_EQ((*generation)["eos_token_id"], nlohmann::json({1, 2}));
  EXPECT_FALSE(folder.json_file("tokenizer.json").has_value());
  EXPECT_TRUE(throws_with<Error>([&] { folder.json_file("tokenizer_config.json"); },
                                 {"tokenizer_config.json", "not valid JSON"}));
}

TEST(ConfigValue, ReadsPresentValuesAndFallsBackOnlyWhenAbsentOrNull) {
  const nlohmann::json config = {{"hidden_size", 4096}, {"rms_norm_eps", 1e-6}, {"tie", true},
                                 {"name", "x"},        {"head_dim", nullptr}};
  EXPECT_EQ(config_value<int64_t>(config, "hidden_size"), 4096);
  EXPECT_EQ(config_value<double>(config, "rms_norm_eps"), 1e-6);
  EXPECT_EQ(config_value<bool>(config, "tie"), true);
  EXPECT_EQ(config_value<std::string>(config, "name"), "x");
  EXPECT_EQ(config_value<int64_t>(config, "hidden_size", 1), 4096);
  EXPECT_EQ(config_value<int64_t>(config, "head_dim", 128), 128);
  EXPECT_EQ(config_value<int64_t>(config, "absent", 7), 7);
  EXPECT_EQ(config_value<bool>(config, "absent", false), false);
}

TEST(ConfigValue, RejectsMissingAndMistypedValuesNamingTheKey) {
  const nlohmann::json config = {{"hidden_size", "big"}, {"head_dim", nullptr}};
  EXPECT_TRUE(throws_with<Error>([&] { config_value<int64_t>(config, "num_hidden_layers"); },
                                 {"config.json", "lacks 'num_hidden_layers'"}));
  EXPECT_TRUE(throws_with<Error>([&] { config_value<int64_t>(config, "head_dim"); }, {"lacks 'head_dim'"}));
  EXPECT_TRUE(throws_with<Error>([&] { config_value<int64_t>(config, "hidden_size"); },
                                 {"'hidden_size'", "unexpected value", "\"big\""}));
  EXPECT_TRUE(throws_with<Error>([&] { config_value<int64_t>(config, "hidden_size", 5); }, {"'hidden_size'"}));
}

}  // namespace
}  // namespace mlx2gguf
