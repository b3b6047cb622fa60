// Bad input: one clear error naming the file or tensor, an exit status in 1..127, no output or temporary file left
// behind, an existing output file kept, the input folder unchanged (refusal_check.h).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>

#include "e2e_support.h"
#include "oracle/gguf_listing.h"
#include "refusal_check.h"

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

  // A fresh copy of a small generated llama folder the test may damage; `quant` as mlx_lm.convert -q ("affine:4:64").
  fs::path model(bool sharded = false, const std::string& quant = "") {
    mlx2gguf::gen::TinyModelSpec spec;
    spec.model_type = "llama";
    spec.hidden = 64;
    spec.intermediate = 128;
    spec.heads = 2;
    spec.kv_heads = 1;
    if (sharded) spec.max_shard_bytes = 64 * 1024;
    if (!quant.empty()) spec.quant = mlx2gguf::gen::QuantRecipe::parse(quant);
    std::string key = sharded ? "bad-input-sharded" : "bad-input";
    if (!quant.empty()) key += "-" + quant;
    std::replace(key.begin(), key.end(), ':', '-');
    const fs::path source = e2e::cached_model(key, spec);
    const fs::path copy = dir_ / "model";
    fs::copy(source, copy, fs::copy_options::recursive);
    return copy;
  }

  // Runs the conversion expecting a refusal; returns the message.
  std::string convert_fails(const fs::path& folder, const std::vector<std::string>& extra_args = {}) {
    std::vector<std::string> args = {"convert", folder.string()};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    return e2e::expect_refusal(args, dir_ / "out.gguf", {folder});
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

  // Overwrites element `index` of tensor `name` in a safetensors file with a non-finite `value`, in the tensor's dtype.
  static void set_non_finite(const fs::path& path, const std::string& name, int64_t index, float value) {
    ASSERT_FALSE(std::isfinite(value));
    std::string bytes = read(path);
    uint64_t length = 0;
    std::memcpy(&length, bytes.data(), 8);
    const auto header = nlohmann::json::parse(bytes.substr(8, length));
    ASSERT_TRUE(header.contains(name)) << name << " not in " << path;
    const auto& entry = header[name];
    const size_t begin = 8 + length + entry["data_offsets"][0].get<size_t>();
    const std::string dtype = entry["dtype"];
    uint32_t bits;
    std::memcpy(&bits, &value, 4);
    if (dtype == "F32") {
      std::memcpy(&bytes[begin + 4 * index], &bits, 4);
    } else {
      ASSERT_TRUE(dtype == "BF16" || dtype == "F16") << dtype;
      // bf16 keeps the top half of the float32 bits; fp16's NaN and infinities have all exponent bits set.
      const uint16_t half = dtype == "BF16" ? static_cast<uint16_t>(bits >> 16)
                                            : static_cast<uint16_t>(std::isnan(value) ? 0x7e00 : value > 0 ? 0x7c00 : 0xfc00);
      std::memcpy(&bytes[begin + 2 * index], &half, 2);
    }
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
  EXPECT_GE(result.exit_code, 1) << result.output;
  EXPECT_LE(result.exit_code, 127) << result.output;
  EXPECT_NE(result.output.find("no/such/dir"), std::string::npos) << result.output;
  EXPECT_FALSE(fs::exists(dir_ / "no"));
}

// Ids index the embedding matrix: a token list of three billion entries is never allocated.
TEST_F(BadInput, AddedTokenIdBeyondTheEmbeddingIsRefusedBeforeAllocating) {
  const auto folder = model();
  nlohmann::json tokenizer = nlohmann::json::parse(read(folder / "tokenizer.json"));
  tokenizer["added_tokens"].push_back({{"id", 3000000000LL}, {"content", "<|huge|>"}, {"single_word", false},
                                       {"lstrip", false}, {"rstrip", false}, {"normalized", false}, {"special", true}});
  write(folder / "tokenizer.json", tokenizer.dump());
  const auto message = convert_fails(folder);
  EXPECT_NE(message.find("tokenizer.json"), std::string::npos) << message;
  EXPECT_NE(message.find("'<|huge|>' has id 3000000000"), std::string::npos) << message;
  EXPECT_NE(message.find("embedding matrix"), std::string::npos) << message;
}

TEST_F(BadInput, AbsurdQuantizationGroupSizeIsNamed) {
  const auto folder = model(false, "affine:4:64");
  set_config(folder, "group_size", 3000000000LL, "quantization");
  const auto message = convert_fails(folder);
  EXPECT_NE(message.find("config.json"), std::string::npos) << message;
  EXPECT_NE(message.find("group_size is 3000000000"), std::string::npos) << message;
}

// The scale of the first group of one 4-bit matrix is NaN: every value of that group dequantizes to NaN.
TEST_F(BadInput, NanScaleIsRefusedNamingTheTensorUnlessAllowed) {
  const auto folder = model(false, "affine:4:64");
  set_non_finite(folder / "model.safetensors", "model.layers.0.mlp.down_proj.scales", 0, NAN);
  const auto message = convert_fails(folder);
  EXPECT_NE(message.find("'model.layers.0.mlp.down_proj.scales' in '" + (folder / "model.safetensors").string() + "' holds nan (row 0, group 0)"),
            std::string::npos) << message;
  EXPECT_NE(message.find("blk.0.ffn_down.weight"), std::string::npos) << message;
  EXPECT_NE(message.find("--allow-non-finite"), std::string::npos) << message;

  // The opt-out writes the file; in f32 it holds exactly the group of 64 weights sharing the NaN scale as NaN
  // (located with ggml's reader).
  const fs::path out = dir_ / "allowed.gguf";
  const auto result = e2e::run_mlx2gguf(
      {"convert", folder.string(), "--outfile", out.string(), "--outtype", "f32", "--allow-non-finite", "-q"});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const oracle::GgufListing ggml = oracle::gguf_list_file(out.string());
  const std::string bytes = read(out);
  std::vector<int64_t> nan_positions;
  for (const auto& tensor : ggml.tensors) {
    ASSERT_EQ(tensor.type, "f32") << tensor.name;
    for (uint64_t i = 0; i < tensor.bytes / 4; ++i) {
      float v;
      std::memcpy(&v, bytes.data() + tensor.file_offset + 4 * i, 4);
      if (std::isnan(v)) {
        EXPECT_EQ(tensor.name, "blk.0.ffn_down.weight");
        nan_positions.push_back(static_cast<int64_t>(i));
      }
    }
  }
  ASSERT_EQ(nan_positions.size(), 64u);
  EXPECT_EQ(nan_positions.front(), 0);
  EXPECT_EQ(nan_positions.back(), 63);
}

TEST_F(BadInput, InfiniteFloatWeightIsRefusedNamingTheTensor) {
  const auto folder = model();
  set_non_finite(folder / "model.safetensors", "model.layers.1.self_attn.o_proj.weight", 70, INFINITY);
  const auto message = convert_fails(folder);
  // Element 70 of a [64, 64] matrix is in row 1.
  EXPECT_NE(message.find("'model.layers.1.self_attn.o_proj.weight' in '" + (folder / "model.safetensors").string() + "' gives inf in row 1"),
            std::string::npos) << message;
  EXPECT_NE(message.find("blk.1.attn_output.weight"), std::string::npos) << message;
}

// A GGUF whose header lies is refused by `inspect` with one message naming the file, whatever field lies.
TEST_F(BadInput, CorruptGgufIsRefusedByInspectNamingTheFile) {
  const auto folder = model();
  const fs::path good = dir_ / "good.gguf";
  ASSERT_EQ(e2e::run_mlx2gguf({"convert", folder.string(), "--outfile", good.string(), "-q"}).exit_code, 0);
  const std::string bytes = read(good);
  const oracle::GgufListing file = oracle::gguf_list_file(good.string());
  ASSERT_FALSE(file.tensors.empty());
  // Byte position of the first tensor info's first dimension: after the metadata, its name length (8 bytes), name
  // and dimension count (4 bytes).
  const std::string& first = file.tensors.front().name;
  size_t name_at = bytes.find(first, 24);
  while (name_at != std::string::npos && bytes.compare(name_at - 8, 8, std::string{static_cast<char>(first.size()), 0, 0, 0, 0, 0, 0, 0}) != 0)
    name_at = bytes.find(first, name_at + 1);
  ASSERT_NE(name_at, std::string::npos);
  const size_t dims_at = name_at + first.size() + 4;
  struct Corruption {
    std::string label;
    size_t at;
    int64_t value;
    std::string expected;
  };
  for (const Corruption& c : {Corruption{"tensor count", 8, int64_t{1} << 62, "cannot fit in the file"},
                              Corruption{"key count", 16, int64_t{1} << 62, "cannot fit in the file"},
                              Corruption{"dimension", dims_at, int64_t{1} << 40, "needs"},
                              Corruption{"negative dimension", dims_at, -4, "negative dimension"}}) {
    SCOPED_TRACE(c.label);
    std::string damaged = bytes;
    std::memcpy(&damaged[c.at], &c.value, 8);
    const fs::path path = dir_ / "damaged.gguf";
    write(path, damaged);
    const auto message = e2e::expect_refusal({"inspect", path.string()}, {}, {path});
    EXPECT_NE(message.find(path.string()), std::string::npos) << message;
    EXPECT_NE(message.find(c.expected), std::string::npos) << message;
  }
  // Tensor data cut short: the last tensor runs past the end of the file.
  const fs::path cut = dir_ / "cut.gguf";
  write(cut, bytes.substr(0, bytes.size() - 4096));
  const auto message = e2e::expect_refusal({"inspect", cut.string()}, {}, {cut});
  EXPECT_NE(message.find("runs past the end of the file"), std::string::npos) << message;
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
