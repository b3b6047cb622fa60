// Split outputs in llama.cpp: a set written with --split-max-size / --split-max-tensors loads from its first file
// and computes exactly the logits of the single file; `inspect` shows the whole set; an interrupted or refused run
// leaves no file of the set behind.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
#include <filesystem>
#include <string>
#include <vector>

#include "e2e_support.h"
#include "oracle/gguf_values.h"
#include "oracle/llama_oracle.h"
#include "read/test_support.h"

namespace {

namespace fs = std::filesystem;
using mlx2gguf::test_support::TempDir;

std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

TEST(SplitE2e, SplitSetsComputeTheLogitsOfTheSingleFileInLlamaCpp) {
  TempDir temp;
  const fs::path model = e2e::model_folder("llama", "q4g64");
  const fs::path single = temp / "single.gguf";
  auto result = e2e::run_mlx2gguf({"convert", model.string(), "-o", single.string(), "-q"});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto reference = oracle::LlamaModel::load(single.string());
  const std::vector<int32_t> tokens = e2e::probe_tokens(reference->n_vocab(), 12, 1);
  const std::vector<float> want = reference->logits(tokens);

  for (const std::vector<std::string>& limit : {std::vector<std::string>{"--split-max-tensors", "7"},
                                                std::vector<std::string>{"--split-max-size", "40K"}}) {
    SCOPED_TRACE(limit[0]);
    const fs::path dir = temp / limit[0].substr(2);
    fs::create_directories(dir);
    std::vector<std::string> args = {"convert", model.string(), "-o", (dir / "split.gguf").string(), "-q"};
    args.insert(args.end(), limit.begin(), limit.end());
    result = e2e::run_mlx2gguf(args);
    ASSERT_EQ(result.exit_code, 0) << result.output;
    const std::vector<std::string> files = entries(dir);
    ASSERT_GE(files.size(), 2u);
    const std::string count = fmt::format("{:05d}", files.size());
    for (size_t i = 0; i < files.size(); ++i)
      EXPECT_EQ(files[i], fmt::format("split-{:05d}-of-{}.gguf", i + 1, count));
    const fs::path first = dir / files.front();
    int64_t tensors = 0;
    for (const auto& file : files) tensors += oracle::GgufValues((dir / file).string()).n_tensors();
    EXPECT_EQ(tensors, oracle::GgufValues(single.string()).n_tensors());

    const auto split = oracle::LlamaModel::load(first.string());
    const std::vector<float> got = split->logits(tokens);
    ASSERT_EQ(got.size(), want.size());
    EXPECT_TRUE(got == want) << "NMSE " << e2e::nmse(got, want);

    // inspect reads the set from its first file: every tensor, with the file it is in.
    const auto inspect = e2e::run_mlx2gguf({"inspect", first.string(), "--json"});
    ASSERT_EQ(inspect.exit_code, 0) << inspect.output;
    const auto json = nlohmann::json::parse(inspect.output);
    EXPECT_EQ(json["tensors"].size(), static_cast<size_t>(tensors));
    EXPECT_EQ(json["files"].size(), files.size());
    EXPECT_EQ(json["tensors"].back()["file"], files.size() - 1);
  }
}

// Sets element 0 of a bf16 tensor of a safetensors file to NaN.
void poison_bf16(const fs::path& path, const std::string& name) {
  std::ifstream in(path, std::ios::binary);
  std::string bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  uint64_t length = 0;
  std::memcpy(&length, bytes.data(), 8);
  const auto header = nlohmann::json::parse(bytes.substr(8, length));
  ASSERT_EQ(header.at(name).at("dtype"), "BF16");
  const size_t at = 8 + length + header[name]["data_offsets"][0].get<size_t>();
  const uint16_t nan_bf16 = 0x7fc0;
  std::memcpy(&bytes[at], &nan_bf16, 2);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

TEST(SplitE2e, ARunFailingWhileWritingLeavesNoFileOfTheSet) {
  TempDir temp;
  const fs::path model = temp / "model";
  fs::copy(e2e::model_folder("llama", "bf16"), model, fs::copy_options::recursive);
  poison_bf16(model / "model.safetensors", "model.layers.1.mlp.down_proj.weight");
  const fs::path out_dir = temp / "out";
  fs::create_directories(out_dir);
  // Every file of the set exists as a temporary file while tensors are written; the NaN stops the run there.
  const auto result = e2e::run_mlx2gguf(
      {"convert", model.string(), "-o", (out_dir / "split.gguf").string(), "--split-max-tensors", "3"});
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("model.layers.1.mlp.down_proj.weight"), std::string::npos) << result.output;
  EXPECT_TRUE(entries(out_dir).empty());
}

}  // namespace
