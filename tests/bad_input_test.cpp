// Bad input: one clear error naming the file or tensor, a non-zero exit code, and no output file left behind.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "e2e_support.h"

namespace {

namespace fs = std::filesystem;

class BadInput : public testing::Test {
 protected:
  void SetUp() override {
    const auto* info = testing::UnitTest::GetInstance()->current_test_info();
    dir_ = e2e::work_dir() / "bad-input" / info->name();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }

  // A fresh copy of a small generated llama folder the test may damage.
  fs::path model(bool sharded = false) {
    mlx2gguf::gen::TinyModelSpec spec;
    spec.model_type = "llama";
    spec.hidden = 64;
    spec.intermediate = 128;
    spec.heads = 2;
    spec.kv_heads = 1;
    if (sharded) spec.max_shard_bytes = 64 * 1024;
    const fs::path source = e2e::cached_model(sharded ? "bad-input-sharded" : "bad-input", spec);
    const fs::path copy = dir_ / "model";
    fs::copy(source, copy, fs::copy_options::recursive);
    return copy;
  }

  // Runs the conversion expecting failure; returns the message.
  std::string convert_fails(const fs::path& folder) {
    const fs::path out = dir_ / "out.gguf";
    const auto result = e2e::run_mlx2gguf({"convert", folder.string(), "--outfile", out.string()});
    EXPECT_NE(result.exit_code, 0) << result.output;
    EXPECT_FALSE(fs::exists(out)) << "a failed conversion left " << out;
    EXPECT_FALSE(fs::exists(dir_ / "out.gguf.partial")) << "a failed conversion left its temporary file";
    EXPECT_NE(result.output.find("error: "), std::string::npos) << result.output;
    EXPECT_EQ(result.output.find("terminate called"), std::string::npos) << result.output;
    return result.output;
  }

  static std::string read(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }
  static void write(const fs::path& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << bytes;
  }
  // Replaces the first occurrence of `from` after `anchor` in the file by `to` (same length, so offsets stay valid).
  static void patch(const fs::path& path, const std::string& from, const std::string& to, const std::string& anchor = "") {
    ASSERT_EQ(from.size(), to.size());
    std::string bytes = read(path);
    const auto start = bytes.find(anchor);
    ASSERT_NE(start, std::string::npos) << anchor << " not in " << path;
    const auto at = bytes.find(from, start);
    ASSERT_NE(at, std::string::npos) << from << " not in " << path;
    bytes.replace(at, from.size(), to);
    write(path, bytes);
  }

  // Sets config.json's `key` (inside the object `section` when given).
  static void set_config(const fs::path& folder, const std::string& key, const nlohmann::json& value,
                         const std::string& section = "") {
    nlohmann::json config = nlohmann::json::parse(read(folder / "config.json"));
    (section.empty() ? config : config[section])[key] = value;
    write(folder / "config.json", config.dump(4));
  }

  fs::path dir_;
};

TEST_F(BadInput, MissingShardIsNamed) {
  const auto folder = model(true);
  fs::path victim;
  for (const auto& entry : fs::directory_iterator(folder))
    if (entry.path().filename().string().starts_with("model-00002")) victim = entry.path();
  ASSERT_FALSE(victim.empty());
  fs::remove(victim);
  const auto message = convert_fails(folder);
  EXPECT_NE(message.find(victim.filename().string()), std::string::npos) << message;
  EXPECT_NE(message.find("missing"), std::string::npos) << message;
}

TEST_F(BadInput, ExtraShardIsNamed) {
  const auto folder = model(true);
  fs::copy_file(folder / "model-00001-of-00004.safetensors", folder / "model-00005-of-00005.safetensors");
  const auto message = convert_fails(folder);
  EXPECT_NE(message.find("model-00005-of-00005.safetensors"), std::string::npos) << message;
  EXPECT_NE(message.find("not listed"), std::string::npos) << message;
}

TEST_F(BadInput, TruncatedWeightFileIsNamed) {
  const auto folder = model();
  const auto path = folder / "model.safetensors";
  fs::resize_file(path, fs::file_size(path) - 1000);
  const auto message = convert_fails(folder);
  EXPECT_NE(message.find("model.safetensors"), std::string::npos) << message;
  EXPECT_NE(message.find("truncated"), std::string::npos) << message;
}

TEST_F(BadInput, HeaderLyingAboutAShapeNamesTheTensor) {
  const auto folder = model();
  // [64] → [65] for the final norm: the header now claims more elements than its bytes hold.
  const auto path = folder / "model.safetensors";
  patch(path, R"("shape":[64])", R"("shape":[65])", R"("model.norm.weight":{)");
  const auto message = convert_fails(folder);
  EXPECT_NE(message.find("model.norm.weight"), std::string::npos) << message;
  EXPECT_NE(message.find("needs"), std::string::npos) << message;
}

TEST_F(BadInput, UnknownDtypeIsRejectedByName) {
  const auto folder = model();
  patch(folder / "model.safetensors", R"("dtype":"BF16")", R"("dtype":"I16" )", R"("model.norm.weight":{)");
  const auto message = convert_fails(folder);
  EXPECT_NE(message.find("I16"), std::string::npos) << message;
  EXPECT_NE(message.find("model.norm.weight"), std::string::npos) << message;
}

TEST_F(BadInput, UnsupportedModelTypeListsSupportedOnes) {
  const auto folder = model();
  patch(folder / "config.json", R"("model_type": "llama")", R"("model_type": "bloom")");
  const auto message = convert_fails(folder);
  EXPECT_NE(message.find("'bloom' is not supported"), std::string::npos) << message;
  EXPECT_NE(message.find("mixtral"), std::string::npos) << message;
}

TEST_F(BadInput, ShapeDisagreeingWithConfigNamesTheTensor) {
  const auto folder = model();
  patch(folder / "config.json", R"("intermediate_size": 128)", R"("intermediate_size": 256)");
  const auto message = convert_fails(folder);
  EXPECT_NE(message.find("model.layers.0.mlp.gate_proj.weight"), std::string::npos) << message;
  EXPECT_NE(message.find("config.json"), std::string::npos) << message;
}

TEST_F(BadInput, ZeroOrAbsurdHeadCountsAreNamed) {
  for (const int64_t heads : {0, 100000000, -2}) {
    SCOPED_TRACE(heads);
    fs::remove_all(dir_ / "model");
    const auto folder = model();
    set_config(folder, "num_attention_heads", heads);
    const auto message = convert_fails(folder);
    EXPECT_NE(message.find(fmt::format("'num_attention_heads' is {}", heads)), std::string::npos) << message;
  }
}

TEST_F(BadInput, ZeroFullAttentionIntervalIsNamed) {
  mlx2gguf::gen::TinyModelSpec spec;
  spec.model_type = "qwen3_5";
  spec.hidden = 64;
  spec.intermediate = 64;
  const fs::path folder = dir_ / "qwen";
  fs::copy(e2e::cached_model("bad-input-qwen35", spec), folder, fs::copy_options::recursive);
  set_config(folder, "full_attention_interval", 0, "text_config");
  const auto message = convert_fails(folder);
  EXPECT_NE(message.find("'full_attention_interval' is 0"), std::string::npos) << message;
}

// A few hundred thousand '[' used to overflow the stack of the JSON parser.
TEST_F(BadInput, DeeplyNestedJsonIsRefusedNamingTheFile) {
  const std::string deep = std::string(300000, '[') + std::string(300000, ']');
  {
    const auto folder = model();
    std::string config = read(folder / "config.json");
    config.insert(config.find('{') + 1, "\"junk\": " + deep + ",");
    write(folder / "config.json", config);
    const auto message = convert_fails(folder);
    EXPECT_NE(message.find("config.json"), std::string::npos) << message;
    EXPECT_NE(message.find("levels deep"), std::string::npos) << message;
  }
  {
    fs::remove_all(dir_ / "model");
    const auto folder = model();
    std::string tokenizer = read(folder / "tokenizer.json");
    tokenizer.insert(tokenizer.find('{') + 1, "\"junk\": " + deep + ",");
    write(folder / "tokenizer.json", tokenizer);
    const auto message = convert_fails(folder);
    EXPECT_NE(message.find("tokenizer.json"), std::string::npos) << message;
    EXPECT_NE(message.find("levels deep"), std::string::npos) << message;
  }
  {
    // A safetensors header whose __metadata__ nests deeply: the length prefix is rewritten to match.
    fs::remove_all(dir_ / "model");
    const auto folder = model();
    const fs::path path = folder / "model.safetensors";
    std::string bytes = read(path);
    uint64_t length = 0;
    std::memcpy(&length, bytes.data(), 8);
    std::string header = bytes.substr(8, length);
    const std::string tail = bytes.substr(8 + length);
    header.insert(1, "\"junk\": " + deep + ",");
    length = header.size();
    std::string rewritten(8, '\0');
    std::memcpy(rewritten.data(), &length, 8);
    write(path, rewritten + header + tail);
    const auto message = convert_fails(folder);
    EXPECT_NE(message.find("safetensors header"), std::string::npos) << message;
    EXPECT_NE(message.find("levels deep"), std::string::npos) << message;
  }
}

TEST_F(BadInput, MissingTokenizerIsNamed) {
  const auto folder = model();
  fs::remove(folder / "tokenizer.json");
  const auto message = convert_fails(folder);
  EXPECT_NE(message.find("tokenizer"), std::string::npos) << message;
  EXPECT_NE(message.find(folder.string()), std::string::npos) << message;
}

TEST_F(BadInput, MissingConfigSaysWhatFolderIsExpected) {
  const auto folder = model();
  fs::remove(folder / "config.json");
  const auto message = convert_fails(folder);
  EXPECT_NE(message.find("config.json"), std::string::npos) << message;
}

TEST_F(BadInput, MissingOutputDirectoryIsNamed) {
  const auto folder = model();
  const auto result = e2e::run_mlx2gguf({"convert", folder.string(), "--outfile", (dir_ / "no/such/dir/out.gguf").string()});
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("no/such/dir"), std::string::npos) << result.output;
}

TEST_F(BadInput, FailedConversionKeepsAnExistingOutputFile) {
  const auto folder = model();
  fs::remove(folder / "tokenizer.json");
  const fs::path out = dir_ / "out.gguf";
  write(out, "previous contents");
  const auto result = e2e::run_mlx2gguf({"convert", folder.string(), "--outfile", out.string()});
  EXPECT_NE(result.exit_code, 0);
  EXPECT_EQ(read(out), "previous contents");
}

}  // namespace
