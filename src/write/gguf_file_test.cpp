// GGUF writer and reader: layout rules (alignment, sequential offsets, trailing padding), value round trips,
// acceptance by ggml's own parser, crash safety of the temporary file, concurrent writes, and refusals.
#include "write/gguf_file.h"

#include <gtest/gtest.h>

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <thread>
#include <vector>

#include "llama_oracle.h"
#include "read/test_support.h"
#include "util/error.h"

namespace mlx2gguf {
namespace {

namespace fs = std::filesystem;
using test_support::TempDir;

std::vector<uint8_t> read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The names in `dir`, sorted.
std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

uint64_t padded(uint64_t n) { return (n + 31) / 32 * 32; }

// Deterministic, distinct bytes for tensor `index`.
std::vector<uint8_t> pattern(size_t index, uint64_t size) {
  std::vector<uint8_t> bytes(size);
  for (uint64_t i = 0; i < size; ++i) bytes[i] = static_cast<uint8_t>((i * 31 + index * 97 + 1) & 0xff);
  return bytes;
}

GgufValue raw_scalar(GgufType type, int64_t value) {
  GgufValue v;
  v.type = type;
  v.ints = {value};
  return v;
}

GgufMetadata every_kind_of_value() {
  GgufMetadata m;
  m.set("general.architecture", GgufValue::str("llama"));
  m.set("test.u32", GgufValue::u32(4000000000u));
  m.set("test.i32", GgufValue::i32(-123456));
  m.set("test.u64", GgufValue::u64(0xfedcba9876543210ull));
  m.set("test.f32", GgufValue::f32(-0.15625f));
  m.set("test.bool_true", GgufValue::boolean(true));
  m.set("test.bool_false", GgufValue::boolean(false));
  m.set("test.empty_string", GgufValue::str(""));
  m.set("test.utf8", GgufValue::str("Grüße, 世界 \n\t\"quoted\""));
  m.set("test.str_array", GgufValue::str_array({"a", "", "<|eot_id|>", "Ġhello"}));
  m.set("test.i32_array", GgufValue::i32_array({-1, 0, 2147483647, -2147483647 - 1}));
  m.set("test.u32_array", GgufValue::u32_array({0, 1, 4294967295u}));
  m.set("test.f32_array", GgufValue::f32_array({0.5f, -2.25f, 1e-7f, 3.0e38f}));
  m.set("test.empty_array", GgufValue::i32_array({}));
  m.set("test.u8", raw_scalar(GgufType::UINT8, 250));
  m.set("test.i8", raw_scalar(GgufType::INT8, -100));
  m.set("test.u16", raw_scalar(GgufType::UINT16, 65000));
  m.set("test.i16", raw_scalar(GgufType::INT16, -32000));
  m.set("test.i64", raw_scalar(GgufType::INT64, std::numeric_limits<int64_t>::min() + 5));
  GgufValue f64;
  f64.type = GgufType::FLOAT64;
  f64.floats = {0.1};
  m.set("test.f64", f64);
  return m;
}

std::vector<GgufTensorInfo> some_tensors() {
  return {
      {"a", {3}, GgmlType::F32, 0},                  // 12 bytes: padded to 32
      {"b.weight", {32, 3}, GgmlType::Q8_0, 0},      // 3 blocks of 34 = 102 bytes
      {"c.weight", {5, 2, 3}, GgmlType::F16, 0},     // 60 bytes
      {"d.weight", {64, 2}, GgmlType::BF16, 0},      // 256 bytes, already aligned
      {"e", {1}, GgmlType::F32, 0},                  // 4 bytes: the final padding is needed
  };
}

// Writes the tensors of `infos` with pattern() bytes and commits.
void write_file(const fs::path& path, const GgufMetadata& metadata, std::vector<GgufTensorInfo> infos) {
  GgufWriter writer(path, metadata, std::move(infos));
  for (size_t i = 0; i < writer.tensors().size(); ++i) writer.write(i, 0, pattern(i, writer.tensors()[i].size_bytes()));
  writer.commit();
}

void expect_same_value(const GgufValue& got, const GgufValue& want, const std::string& key) {
  EXPECT_EQ(got.type, want.type) << key;
  if (want.is_array()) {
    EXPECT_EQ(got.element_type, want.element_type) << key;
  }
  EXPECT_EQ(got.ints, want.ints) << key;
  EXPECT_EQ(got.floats, want.floats) << key;
  EXPECT_EQ(got.strings, want.strings) << key;
}

TEST(GgufFile, MetadataOfEveryKindRoundTrips) {
  TempDir temp;
  const fs::path path = temp / "values.gguf";
  const GgufMetadata metadata = every_kind_of_value();
  write_file(path, metadata, some_tensors());

  const GgufFile file = GgufFile::read(path);
  EXPECT_EQ(file.version, 3u);
  ASSERT_EQ(file.metadata.entries().size(), metadata.entries().size());
  for (size_t i = 0; i < metadata.entries().size(); ++i) {
    const auto& want = metadata.entries()[i];
    const auto& got = file.metadata.entries()[i];
    EXPECT_EQ(got.key, want.key) << "key order differs at " << i;
    expect_same_value(got.value, want.value, want.key);
  }
  // Spot checks with literal values, so the test does not only compare the writer with itself.
  EXPECT_EQ(static_cast<uint64_t>(file.metadata.get("test.u64")->ints.at(0)), 0xfedcba9876543210ull);
  EXPECT_EQ(file.metadata.get("test.u32")->ints.at(0), 4000000000);
  EXPECT_EQ(file.metadata.get("test.bool_true")->ints.at(0), 1);
  EXPECT_EQ(file.metadata.get("test.str_array")->strings.at(3), "Ġhello");
  EXPECT_EQ(file.metadata.get("test.f32_array")->floats.at(1), -2.25);
  EXPECT_EQ(file.metadata.get("test.f64")->floats.at(0), 0.1);
}

TEST(GgufFile, TensorInfosRoundTrip) {
  TempDir temp;
  const fs::path path = temp / "tensors.gguf";
  write_file(path, every_kind_of_value(), some_tensors());
  const GgufFile file = GgufFile::read(path);
  const auto want = some_tensors();
  ASSERT_EQ(file.tensors.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(file.tensors[i].name, want[i].name);
    EXPECT_EQ(file.tensors[i].ne, want[i].ne) << want[i].name;
    EXPECT_EQ(file.tensors[i].type, want[i].type) << want[i].name;
  }
  EXPECT_EQ(file.tensors[1].size_bytes(), 102u);
  EXPECT_EQ(file.tensors[2].size_bytes(), 60u);
}

TEST(GgufFile, OffsetsAreAlignedSequentialAndTheFileEndsWithPadding) {
  TempDir temp;
  const fs::path path = temp / "layout.gguf";
  write_file(path, every_kind_of_value(), some_tensors());
  const GgufFile file = GgufFile::read(path);

  const uint64_t sizes[] = {12, 102, 60, 256, 4};
  uint64_t expected_offset = 0;
  for (size_t i = 0; i < file.tensors.size(); ++i) {
    EXPECT_EQ(file.tensors[i].size_bytes(), sizes[i]) << file.tensors[i].name;
    EXPECT_EQ(file.tensors[i].offset, expected_offset) << file.tensors[i].name;
    EXPECT_EQ(file.tensors[i].offset % 32, 0u) << file.tensors[i].name;
    expected_offset += padded(sizes[i]);
  }
  EXPECT_EQ(file.data_start % 32, 0u);
  EXPECT_EQ(file.file_size, file.data_start + expected_offset);  // 32 + 128 + 64 + 256 + 32 data bytes
  EXPECT_EQ(fs::file_size(path), file.data_start + 512);

  // Every tensor's bytes sit at data_start + offset, and all padding is zero.
  const std::vector<uint8_t> bytes = read_bytes(path);
  for (size_t i = 0; i < file.tensors.size(); ++i) {
    const auto& t = file.tensors[i];
    const std::vector<uint8_t> want = pattern(i, t.size_bytes());
    const auto begin = bytes.begin() + static_cast<std::ptrdiff_t>(file.data_start + t.offset);
    EXPECT_TRUE(std::equal(want.begin(), want.end(), begin)) << t.name;
    for (uint64_t p = t.size_bytes(); p < padded(t.size_bytes()); ++p)
      EXPECT_EQ(*(begin + static_cast<std::ptrdiff_t>(p)), 0) << t.name << " padding byte " << p;
  }
}

TEST(GgufFile, HeaderStartsWithMagicVersionAndCounts) {
  TempDir temp;
  const fs::path path = temp / "header.gguf";
  const GgufMetadata metadata = every_kind_of_value();
  write_file(path, metadata, some_tensors());
  const std::vector<uint8_t> bytes = read_bytes(path);
  ASSERT_GE(bytes.size(), 24u);
  EXPECT_EQ(std::string(bytes.begin(), bytes.begin() + 4), "GGUF");
  uint32_t version;
  int64_t n_tensors, n_kv;
  std::memcpy(&version, bytes.data() + 4, 4);
  std::memcpy(&n_tensors, bytes.data() + 8, 8);
  std::memcpy(&n_kv, bytes.data() + 16, 8);
  EXPECT_EQ(version, 3u);
  EXPECT_EQ(n_tensors, 5);  // tensor count comes first
  EXPECT_EQ(n_kv, static_cast<int64_t>(metadata.entries().size()));
}

TEST(GgufFile, GgmlAcceptsTheWrittenFile) {
  TempDir temp;
  const fs::path path = temp / "checked.gguf";
  write_file(path, every_kind_of_value(), some_tensors());
  EXPECT_EQ(oracle::gguf_check_file(path.string()), "");
}

TEST(GgufFile, GgmlRejectsTheFileWhenTheFinalPaddingIsCut) {
  // Shows the oracle sees the trailing padding the previous test relies on.
  TempDir temp;
  const fs::path path = temp / "cut.gguf";
  write_file(path, every_kind_of_value(), some_tensors());
  fs::resize_file(path, fs::file_size(path) - 16);
  EXPECT_NE(oracle::gguf_check_file(path.string()), "");
}

TEST(GgufFile, UncommittedWriterRemovesItsTemporaryFileAndLeavesTheTargetAlone) {
  TempDir temp;
  const fs::path path = temp / "model.gguf";
  test_support::write_text(path, "previous contents");
  {
    GgufWriter writer(path, every_kind_of_value(), some_tensors());
    const fs::path partial = writer.temp_path();
    EXPECT_EQ(partial.parent_path(), temp.path());
    EXPECT_TRUE(partial.filename().string().starts_with("model.gguf.")) << partial;
    EXPECT_TRUE(partial.filename().string().ends_with(".partial")) << partial;
    EXPECT_EQ(fs::file_size(partial), writer.file_size());
    writer.write(0, 0, pattern(0, 12));
  }
  EXPECT_EQ(entries(temp.path()), std::vector<std::string>{"model.gguf"});
  std::ifstream in(path);
  const std::string contents((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(contents, "previous contents");
}

TEST(GgufFile, CommitReplacesTheTargetAndRemovesTheTemporaryName) {
  TempDir temp;
  const fs::path path = temp / "model.gguf";
  test_support::write_text(path, "previous contents");
  write_file(path, every_kind_of_value(), some_tensors());
  EXPECT_EQ(entries(temp.path()), std::vector<std::string>{"model.gguf"});
  EXPECT_EQ(GgufFile::read(path).tensors.size(), 5u);
}

TEST(GgufFile, TwoWritersOfTheSameOutputUseDifferentTemporaryFiles) {
  TempDir temp;
  const fs::path path = temp / "model.gguf";
  GgufWriter first(path, every_kind_of_value(), some_tensors());
  GgufWriter second(path, every_kind_of_value(), some_tensors());
  EXPECT_NE(first.temp_path(), second.temp_path());
  EXPECT_TRUE(fs::exists(first.temp_path()));
  EXPECT_TRUE(fs::exists(second.temp_path()));
}

TEST(GgufFile, TheOutputGetsTheUsualPermissionsOfANewFile) {
  TempDir temp;
  const fs::path path = temp / "model.gguf";
  write_file(path, every_kind_of_value(), some_tensors());
  const mode_t mask = ::umask(0);
  ::umask(mask);
  const auto perms = static_cast<mode_t>(fs::status(path).permissions());
  EXPECT_EQ(perms & 0777, 0666 & ~mask);
}

TEST(GgufFile, ConcurrentWritesToDisjointRangesAllLand) {
  TempDir temp;
  const fs::path path = temp / "concurrent.gguf";
  const int64_t rows = 512, row_length = 64;  // 128 KiB of F32 per tensor
  std::vector<GgufTensorInfo> infos = {{"x.weight", {row_length, rows}, GgmlType::F32, 0},
                                       {"y.weight", {row_length, rows}, GgmlType::F32, 0}};
  const uint64_t row_bytes = row_length * 4;
  auto row_value = [&](size_t tensor, int64_t row, int64_t col) {
    return static_cast<float>(tensor * 1000000 + row * 1000 + col);
  };
  {
    GgufWriter writer(path, GgufMetadata{}, infos);
    const int threads = 4;
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        std::vector<float> values(row_length);
        // Interleaved rows: neighbours in the file come from different threads.
        for (size_t tensor = 0; tensor < 2; ++tensor)
          for (int64_t row = t; row < rows; row += threads) {
            for (int64_t c = 0; c < row_length; ++c) values[c] = row_value(tensor, row, c);
            writer.write(tensor, row * row_bytes,
                         std::span(reinterpret_cast<const uint8_t*>(values.data()), row_bytes));
          }
      });
    }
    for (auto& th : pool) th.join();
    writer.commit();
  }
  const GgufFile file = GgufFile::read(path);
  const std::vector<uint8_t> bytes = read_bytes(path);
  for (size_t tensor = 0; tensor < 2; ++tensor) {
    const uint64_t base = file.data_start + file.tensors[tensor].offset;
    for (int64_t row = 0; row < rows; ++row)
      for (int64_t c = 0; c < row_length; ++c) {
        float v;
        std::memcpy(&v, bytes.data() + base + row * row_bytes + c * 4, 4);
        ASSERT_EQ(v, row_value(tensor, row, c)) << "tensor " << tensor << " row " << row << " col " << c;
      }
  }
  EXPECT_EQ(oracle::gguf_check_file(path.string()), "");
}

TEST(GgufFile, WritesPastTheEndOfATensorAreRefused) {
  TempDir temp;
  GgufWriter writer(temp / "past.gguf", GgufMetadata{}, some_tensors());
  EXPECT_THROW(writer.write(0, 8, pattern(0, 8)), Error);  // 12-byte tensor
  EXPECT_NO_THROW(writer.write(0, 8, pattern(0, 4)));
}

TEST(GgufFile, TensorNamesOf64BytesOrMoreAreRefused) {
  TempDir temp;
  const std::string longest(63, 'n');
  EXPECT_NO_THROW(write_file(temp / "ok.gguf", GgufMetadata{}, {{longest, {4}, GgmlType::F32, 0}}));
  EXPECT_EQ(GgufFile::read(temp / "ok.gguf").tensors.at(0).name, longest);
  try {
    GgufWriter writer(temp / "long.gguf", GgufMetadata{}, {{std::string(64, 'n'), {4}, GgmlType::F32, 0}});
    FAIL() << "a 64-byte name was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("64"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(temp / "long.gguf"));
  EXPECT_EQ(entries(temp.path()), std::vector<std::string>{"ok.gguf"});
}

TEST(GgufFile, RowsThatAreNotWholeBlocksAreRefused) {
  TempDir temp;
  try {
    GgufWriter writer(temp / "q8.gguf", GgufMetadata{}, {{"w", {48, 2}, GgmlType::Q8_0, 0}});
    FAIL() << "a Q8_0 row of 48 elements was accepted";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("48"), std::string::npos) << message;
    EXPECT_NE(message.find("Q8_0"), std::string::npos) << message;
  }
  EXPECT_NO_THROW(GgufWriter(temp / "q8ok.gguf", GgufMetadata{}, {{"w", {64, 2}, GgmlType::Q8_0, 0}}));
}

TEST(GgufFile, ReaderHonoursAndValidatesGeneralAlignment) {
  TempDir temp;
  // A valid alignment is used for the data start (the writer itself always lays out with 32).
  GgufMetadata aligned;
  aligned.set("general.alignment", GgufValue::u32(32));
  write_file(temp / "aligned.gguf", aligned, some_tensors());
  EXPECT_EQ(GgufFile::read(temp / "aligned.gguf").data_start % 32, 0u);
  EXPECT_EQ(oracle::gguf_check_file((temp / "aligned.gguf").string()), "");

  struct Bad {
    std::string file;
    GgufValue value;
  };
  const Bad bad[] = {{"zero.gguf", GgufValue::u32(0)},
                     {"odd.gguf", GgufValue::u32(48)},
                     {"float.gguf", GgufValue::f32(32.0f)},
                     {"signed.gguf", GgufValue::i32(32)}};
  for (const Bad& b : bad) {
    GgufMetadata metadata;
    metadata.set("general.alignment", b.value);
    write_file(temp / b.file, metadata, some_tensors());
    EXPECT_TRUE(test_support::throws_with<Error>([&] { GgufFile::read(temp / b.file); }, {b.file, "general.alignment"}))
        << b.file;
    // ggml refuses these files too.
    EXPECT_NE(oracle::gguf_check_file((temp / b.file).string()), "") << b.file;
  }
}

TEST(GgufFile, ReaderRejectsFilesThatAreNotGguf) {
  TempDir temp;
  test_support::write_text(temp / "bad.gguf", "GGML and then some bytes that are not a header");
  EXPECT_TRUE(test_support::throws_with<Error>([&] { GgufFile::read(temp / "bad.gguf"); }, {"bad.gguf", "magic"}));
}

}  // namespace
}  // namespace mlx2gguf
