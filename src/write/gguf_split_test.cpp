// Split GGUF sets: llama.cpp's naming and split rule, the split keys as ggml reads them, the set read back, and the
// "nothing half-written" guarantee across all files of a set.
#include "write/gguf_split.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <vector>

#include "oracle/gguf_listing.h"
#include "oracle/gguf_values.h"
#include "read/test_support.h"
#include "util/error.h"

namespace mlx2gguf {
namespace {

namespace fs = std::filesystem;
using test_support::TempDir;

std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// F32 tensors of 64, 32, 96, 32 and 64 elements: 256, 128, 384, 128 and 256 bytes.
std::vector<GgufTensorInfo> five_tensors() {
  std::vector<GgufTensorInfo> tensors;
  int i = 0;
  for (int64_t n : {64, 32, 96, 32, 64}) tensors.push_back({"t" + std::to_string(i++), {n}, GgmlType::F32, 0});
  return tensors;
}

GgufMetadata model_metadata() {
  GgufMetadata m;
  m.set("general.architecture", GgufValue::str("llama"));
  m.set("general.name", GgufValue::str("split test"));
  return m;
}

std::vector<uint8_t> bytes_of(size_t index, uint64_t size) {
  std::vector<uint8_t> bytes(size);
  for (uint64_t i = 0; i < size; ++i) bytes[i] = static_cast<uint8_t>(i * 7 + index * 13 + 1);
  return bytes;
}

std::vector<uint8_t> file_bytes(const fs::path& path, uint64_t offset, uint64_t size) {
  std::ifstream in(path, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(offset));
  std::vector<uint8_t> bytes(size);
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size));
  return bytes;
}

TEST(SplitSize, ReadsLlamaCppsDecimalUnits) {
  EXPECT_EQ(parse_split_size("50G"), 50'000'000'000ULL);
  EXPECT_EQ(parse_split_size("500M"), 500'000'000ULL);
  EXPECT_EQ(parse_split_size("300K"), 300'000ULL);
  EXPECT_EQ(parse_split_size("4096"), 4096ULL);
  for (const char* bad : {"0", "50GB", "1.5G", "-3M", "G", ""})
    EXPECT_TRUE(test_support::throws_with<Error>([&] { parse_split_size(bad); }, {"--split-max-size"})) << bad;
}

TEST(SplitParts, StartANewFileAtTheTensorOrSizeLimitAsLlamaCppDoes) {
  // Sizes 256, 128, 384, 128, 256. At most 512 bytes: 256+128 = 384, +384 > 512 → new file; 384+128 = 512 fits;
  // +256 > 512 → new file.
  EXPECT_EQ(assign_split_parts(five_tensors(), {512, 0}), (std::vector<size_t>{0, 0, 1, 1, 2}));
  // A tensor larger than the limit still gets a file of its own.
  EXPECT_EQ(assign_split_parts(five_tensors(), {100, 0}), (std::vector<size_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(assign_split_parts(five_tensors(), {0, 2}), (std::vector<size_t>{0, 0, 1, 1, 2}));
  EXPECT_EQ(assign_split_parts(five_tensors(), {0, 0}), (std::vector<size_t>{0, 0, 0, 0, 0}));
  // Both limits: whichever comes first.
  EXPECT_EQ(assign_split_parts(five_tensors(), {1000, 2}), (std::vector<size_t>{0, 0, 1, 1, 2}));
}

TEST(SplitParts, FilesAreNamedAsLlamaSplitPathNamesThem) {
  // llama_split_path: "%s-%05d-of-%05d.gguf" with a 1-based number.
  EXPECT_EQ(split_part_path("out/Model-7B-Q4_1.gguf", 0, 3), fs::path("out/Model-7B-Q4_1-00001-of-00003.gguf"));
  EXPECT_EQ(split_part_path("model", 11, 12), fs::path("model-00012-of-00012.gguf"));
}

TEST(SplitWriter, WritesASetGgmlReadsWithTheSplitKeys) {
  TempDir temp;
  const fs::path out = temp / "model.gguf";
  std::vector<GgufTensorInfo> infos = five_tensors();
  {
    GgufSplitWriter writer(out, model_metadata(), infos, {512, 0});
    ASSERT_EQ(writer.part_count(), 3u);
    for (size_t i = 0; i < infos.size(); ++i) writer.write(i, 0, bytes_of(i, infos[i].size_bytes()));
    writer.commit();
  }
  EXPECT_EQ(entries(temp.path()), (std::vector<std::string>{"model-00001-of-00003.gguf", "model-00002-of-00003.gguf",
                                                            "model-00003-of-00003.gguf"}));
  const std::vector<size_t> tensors_per_file = {2, 2, 1};
  for (size_t p = 0; p < 3; ++p) {
    const fs::path part = split_part_path(out, p, 3);
    const oracle::GgufValues ggml(part.string());
    EXPECT_EQ(ggml.u16("split.no"), p);
    EXPECT_EQ(ggml.u16("split.count"), 3);
    EXPECT_EQ(ggml.i32("split.tensors.count"), 5);
    EXPECT_EQ(ggml.n_tensors(), static_cast<int64_t>(tensors_per_file[p]));
    EXPECT_EQ(ggml.has("general.name"), p == 0);  // all metadata in the first file
  }
  // The set read back: every tensor's bytes where its file says.
  const GgufSplitSet set = GgufSplitSet::open(split_part_path(out, 0, 3));
  ASSERT_EQ(set.tensors.size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    const auto& tensor = set.tensors[i];
    EXPECT_EQ(tensor.info.name, infos[i].name);
    EXPECT_EQ(file_bytes(set.paths[tensor.part], tensor.file_offset, infos[i].size_bytes()), bytes_of(i, infos[i].size_bytes()));
  }
  // ggml's own listing agrees on where each tensor of the middle file lies.
  const auto listing = oracle::gguf_list_file(set.paths[1].string());
  ASSERT_EQ(listing.tensors.size(), 2u);
  EXPECT_EQ(listing.tensors[0].name, "t2");
  EXPECT_EQ(listing.tensors[0].file_offset, set.tensors[2].file_offset);
  EXPECT_EQ(set.metadata().get("general.name")->strings.at(0), "split test");
  // Any file of the set opens the whole set.
  EXPECT_EQ(GgufSplitSet::open(split_part_path(out, 2, 3)).tensors.size(), 5u);
}

TEST(SplitWriter, ASetOfOneIsThePlainFile) {
  TempDir temp;
  const fs::path out = temp / "model.gguf";
  std::vector<GgufTensorInfo> infos = five_tensors();
  GgufSplitWriter writer(out, model_metadata(), infos, {1'000'000, 0});
  for (size_t i = 0; i < infos.size(); ++i) writer.write(i, 0, bytes_of(i, infos[i].size_bytes()));
  writer.commit();
  EXPECT_EQ(entries(temp.path()), std::vector<std::string>{"model.gguf"});
  EXPECT_FALSE(oracle::GgufValues(out.string()).has("split.count"));
}

TEST(SplitWriter, AnUncommittedSetLeavesNothingAndKeepsAnEarlierOutput) {
  TempDir temp;
  const fs::path out = temp / "model.gguf";
  const fs::path earlier = split_part_path(out, 0, 3);
  { std::ofstream(earlier) << "earlier"; }
  {
    GgufSplitWriter writer(out, model_metadata(), five_tensors(), {512, 0});
    EXPECT_EQ(entries(temp.path()).size(), 4u);  // three temporary files beside the earlier output
  }  // destroyed without commit, as when a worker fails or a signal stops the run
  EXPECT_EQ(entries(temp.path()), std::vector<std::string>{earlier.filename().string()});
  std::ifstream in(earlier);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()), "earlier");
}

TEST(SplitSet, MissingOrForeignFilesAreErrorsNamingThem) {
  TempDir temp;
  const fs::path out = temp / "model.gguf";
  std::vector<GgufTensorInfo> infos = five_tensors();
  {
    GgufSplitWriter writer(out, model_metadata(), infos, {0, 2});
    for (size_t i = 0; i < infos.size(); ++i) writer.write(i, 0, bytes_of(i, infos[i].size_bytes()));
    writer.commit();
  }
  const fs::path first = split_part_path(out, 0, 3), second = split_part_path(out, 1, 3);
  fs::rename(second, temp / "aside.gguf");
  EXPECT_TRUE(test_support::throws_with<Error>([&] { GgufSplitSet::open(first); }, {"00002-of-00003", "missing"}));
  fs::copy_file(split_part_path(out, 2, 3), second);  // the third file standing in for the second
  EXPECT_TRUE(test_support::throws_with<Error>([&] { GgufSplitSet::open(first); }, {"00002-of-00003", "does not belong"}));
  fs::remove(second);
  fs::rename(temp / "aside.gguf", second);
  fs::rename(first, temp / "renamed.gguf");
  EXPECT_TRUE(test_support::throws_with<Error>([&] { GgufSplitSet::open(temp / "renamed.gguf"); }, {"renamed.gguf", "-00001-of-00003.gguf"}));
}

}  // namespace
}  // namespace mlx2gguf
