#include "read/safetensors.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>

#include "read/dequant.h"
#include "read/test_support.h"
#include "util/error.h"

namespace mlx2gguf {
namespace {

using test_support::TempDir;
using test_support::TensorBytes;
using test_support::f32_bytes;
using test_support::safetensors_header;
using test_support::throws_with;
using test_support::u16_bytes;
using test_support::u32_bytes;
using test_support::write_raw_safetensors;
using test_support::write_safetensors;

std::vector<float> floats_of(const StoredTensor& t) {
  std::vector<float> out(static_cast<size_t>(t.element_count()));
  load_floats(t.bytes.data(), t.dtype, t.element_count(), out.data());
  return out;
}

void open_file(const std::filesystem::path& path) { SafetensorsFile::open(path); }

TEST(SafetensorsReader, ReadsDtypeShapeAndBytesOfEveryMlxWeightType) {
  TempDir dir;
  const auto path = dir / "model.safetensors";
  write_safetensors(path, {
                              {"a.f32", "F32", {2, 3}, f32_bytes({1, 2, 3, 4, 5, -6.5f})},
                              {"b.f16", "F16", {2}, u16_bytes({0x3C00, 0xC000})},
                              {"c.bf16", "BF16", {1, 2}, u16_bytes({0x3F80, 0xBEC0})},
                              {"d.u32", "U32", {1, 2}, u32_bytes({0xDEADBEEF, 7})},
                              {"e.u8", "U8", {3}, {127, 0, 255}},
                          });
  const auto file = SafetensorsFile::open(path);
  ASSERT_EQ(file->tensors().size(), 5u);
  EXPECT_EQ(file->metadata(), nlohmann::json({{"format", "mlx"}}));

  const auto& a = file->tensors().at("a.f32");
  EXPECT_EQ(a.name, "a.f32");
  EXPECT_EQ(a.dtype, DType::F32);
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.element_count(), 6);
  EXPECT_EQ(a.file, path);
  EXPECT_EQ(floats_of(a), (std::vector<float>{1, 2, 3, 4, 5, -6.5f}));

  const auto& b = file->tensors().at("b.f16");
  EXPECT_EQ(b.dtype, DType::F16);
  EXPECT_EQ(floats_of(b), (std::vector<float>{1.0f, -2.0f}));

  const auto& c = file->tensors().at("c.bf16");
  EXPECT_EQ(c.dtype, DType::BF16);
  EXPECT_EQ(c.shape, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(floats_of(c), (std::vector<float>{1.0f, -0.375f}));

  const auto& d = file->tensors().at("d.u32");
  EXPECT_EQ(d.dtype, DType::U32);
  ASSERT_EQ(d.bytes.size(), 8u);
  uint32_t word0, word1;
  std::memcpy(&word0, d.bytes.data(), 4);
  std::memcpy(&word1, d.bytes.data() + 4, 4);
  EXPECT_EQ(word0, 0xDEADBEEFu);
  EXPECT_EQ(word1, 7u);

  const auto& e = file->tensors().at("e.u8");
  EXPECT_EQ(e.dtype, DType::U8);
  EXPECT_EQ(std::vector<uint8_t>(e.bytes.begin(), e.bytes.end()), (std::vector<uint8_t>{127, 0, 255}));
}

TEST(SafetensorsReader, DtypeNamesAndSizes) {
  EXPECT_STREQ(dtype_name(DType::F32), "F32");
  EXPECT_STREQ(dtype_name(DType::F16), "F16");
  EXPECT_STREQ(dtype_name(DType::BF16), "BF16");
  EXPECT_STREQ(dtype_name(DType::U32), "U32");
  EXPECT_STREQ(dtype_name(DType::U8), "U8");
  EXPECT_EQ(dtype_size(DType::F32), 4u);
  EXPECT_EQ(dtype_size(DType::F16), 2u);
  EXPECT_EQ(dtype_size(DType::BF16), 2u);
  EXPECT_EQ(dtype_size(DType::U32), 4u);
  EXPECT_EQ(dtype_size(DType::U8), 1u);
}

TEST(SafetensorsReader, UsesDataOffsetsRatherThanHeaderOrder) {
  // MLX writes the data section in hash-map order: the header's (sorted) key order says nothing about placement.
  TempDir dir;
  const auto path = dir / "x.safetensors";
  nlohmann::json header = {
      {"a", {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {4, 8}}}},
      {"b", {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {0, 4}}}},
  };
  write_raw_safetensors(path, header.dump(), f32_bytes({20.0f, 10.0f}));
  const auto file = SafetensorsFile::open(path);
  EXPECT_EQ(floats_of(file->tensors().at("a")), std::vector<float>{10.0f});
  EXPECT_EQ(floats_of(file->tensors().at("b")), std::vector<float>{20.0f});
}

TEST(SafetensorsReader, ReadsUnalignedTensorsAtOddOffsets) {
  // No padding anywhere: a 3-byte U8 tensor first puts the F32 and BF16 data at odd addresses.
  TempDir dir;
  const auto path = dir / "model.safetensors";
  const std::vector<TensorBytes> tensors = {
      {"odd", "U8", {3}, {1, 2, 3}},
      {"values", "F32", {3}, f32_bytes({0.1f, -1234.5f, 3.0e-20f})},
      {"halves", "BF16", {1}, u16_bytes({0x4040})},
  };
  std::string header = safetensors_header(tensors).dump();
  // Trailing whitespace is legal JSON: pad so that "values" (data offset 3) lands at file offset 1 mod 4.
  while ((8 + header.size() + 3) % 4 != 1) header += ' ';
  write_raw_safetensors(path, header, test_support::concat_data(tensors));

  const auto file = SafetensorsFile::open(path);
  const auto& values = file->tensors().at("values");
  ASSERT_NE(reinterpret_cast<uintptr_t>(values.bytes.data()) % 4, 0u) << "test set-up should yield unaligned data";
  EXPECT_EQ(floats_of(values), (std::vector<float>{0.1f, -1234.5f, 3.0e-20f}));
  EXPECT_EQ(floats_of(file->tensors().at("halves")), std::vector<float>{3.0f});
  const auto& odd = file->tensors().at("odd");
  EXPECT_EQ(std::vector<uint8_t>(odd.bytes.begin(), odd.bytes.end()), (std::vector<uint8_t>{1, 2, 3}));
}

TEST(SafetensorsReader, AcceptsNullMetadataAsInAdapterFiles) {
  TempDir dir;
  const auto path = dir / "adapters.safetensors";
  write_safetensors(path, {{"layers.0.lora_a", "F32", {2, 1}, f32_bytes({0.5f, -0.5f})}}, nlohmann::json(nullptr));
  const auto file = SafetensorsFile::open(path);
  EXPECT_TRUE(file->metadata().is_null());
  ASSERT_EQ(file->tensors().size(), 1u);
  EXPECT_EQ(floats_of(file->tensors().at("layers.0.lora_a")), (std::vector<float>{0.5f, -0.5f}));
}

TEST(SafetensorsReader, AcceptsMissingMetadata) {
  TempDir dir;
  const auto path = dir / "x.safetensors";
  write_safetensors(path, {{"w", "F32", {1}, f32_bytes({2.0f})}}, std::nullopt);
  const auto file = SafetensorsFile::open(path);
  EXPECT_TRUE(file->metadata().is_null());
  EXPECT_EQ(floats_of(file->tensors().at("w")), std::vector<float>{2.0f});
}

TEST(SafetensorsReader, AcceptsZeroSizeTensors) {
  TempDir dir;
  const auto path = dir / "x.safetensors";
  write_safetensors(path, {
                              {"before", "F32", {1}, f32_bytes({1.0f})},
                              {"empty_rows", "F32", {0, 4}, {}},
                              {"empty_cols", "BF16", {3, 0}, {}},
                              {"after", "F32", {1}, f32_bytes({2.0f})},
                              {"empty_at_end", "U32", {0}, {}},
                          });
  const auto file = SafetensorsFile::open(path);
  const auto& rows = file->tensors().at("empty_rows");
  EXPECT_EQ(rows.shape, (std::vector<int64_t>{0, 4}));
  EXPECT_EQ(rows.element_count(), 0);
  EXPECT_EQ(rows.bytes.size(), 0u);
  EXPECT_EQ(file->tensors().at("empty_cols").element_count(), 0);
  EXPECT_EQ(file->tensors().at("empty_at_end").bytes.size(), 0u);
  EXPECT_EQ(floats_of(file->tensors().at("after")), std::vector<float>{2.0f});
}

TEST(SafetensorsReader, ScalarTensorHasOneElement) {
  TempDir dir;
  const auto path = dir / "x.safetensors";
  write_safetensors(path, {{"scalar", "F32", {}, f32_bytes({42.0f})}});
  const auto file = SafetensorsFile::open(path);
  EXPECT_EQ(file->tensors().at("scalar").element_count(), 1);
  EXPECT_EQ(floats_of(file->tensors().at("scalar")), std::vector<float>{42.0f});
}

// ---- malformed files ---------------------------------------------------------------------------------------------

TEST(SafetensorsReader, RejectsMissingFile) {
  TempDir dir;
  EXPECT_TRUE(throws_with<Error>([&] { open_file(dir / "absent.safetensors"); }, {"absent.safetensors", "cannot open"}));
}

TEST(SafetensorsReader, RejectsFileTooShortForTheLengthField) {
  TempDir dir;
  const auto path = dir / "tiny.safetensors";
  test_support::write_text(path, "abc");
  EXPECT_TRUE(throws_with<Error>([&] { open_file(path); }, {"tiny.safetensors", "too short"}));
}

TEST(SafetensorsReader, RejectsHeaderLengthLargerThanTheFile) {
  TempDir dir;
  const auto path = dir / "short.safetensors";
  const std::string header = R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  write_raw_safetensors(path, header, f32_bytes({1.0f}), 1000);
  EXPECT_TRUE(throws_with<Error>([&] { open_file(path); }, {"short.safetensors", "truncated", "1000"}));
}

TEST(SafetensorsReader, RejectsHeaderLengthAboveTheLimit) {
  TempDir dir;
  const auto path = dir / "huge.safetensors";
  write_raw_safetensors(path, "{}", {}, SafetensorsFile::kMaxHeaderBytes + 1);
  EXPECT_TRUE(throws_with<Error>([&] { open_file(path); }, {"huge.safetensors", "limit"}));
}

TEST(SafetensorsReader, RejectsHeaderThatIsNotJson) {
  TempDir dir;
  const auto path = dir / "garbage.safetensors";
  write_raw_safetensors(path, "{\"w\": [1, 2", {});
  EXPECT_TRUE(throws_with<Error>([&] { open_file(path); }, {"garbage.safetensors", "not valid JSON"}));
}

TEST(SafetensorsReader, RejectsHeaderThatIsNotAnObject) {
  TempDir dir;
  const auto path = dir / "list.safetensors";
  write_raw_safetensors(path, "[1, 2, 3]", {});
  EXPECT_TRUE(throws_with<Error>([&] { open_file(path); }, {"list.safetensors", "not a JSON object"}));
}

class SafetensorsMissingField : public ::testing::TestWithParam<const char*> {};

TEST_P(SafetensorsMissingField, IsRejectedNamingTheFieldAndTensor) {
  TempDir dir;
  const auto path = dir / "model.safetensors";
  auto header = safetensors_header({{"layer.weight", "F32", {1}, f32_bytes({1.0f})}});
  header["layer.weight"].erase(GetParam());
  write_raw_safetensors(path, header.dump(), f32_bytes({1.0f}));
  EXPECT_TRUE(throws_with<Error>([&] { open_file(path); },
                                 {"model.safetensors", "layer.weight", std::string("lacks \"") + GetParam() + "\""}));
}

std::string param_name(const ::testing::TestParamInfo<const char*>& info) { return info.param; }

INSTANTIATE_TEST_SUITE_P(SafetensorsReader, SafetensorsMissingField, ::testing::Values("dtype", "shape", "data_offsets"),
                         param_name);

TEST(SafetensorsReader, RejectsEntryThatIsNotAnObject) {
  TempDir dir;
  const auto path = dir / "model.safetensors";
  write_raw_safetensors(path, R"({"layer.weight": [0, 4]})", f32_bytes({1.0f}));
  EXPECT_TRUE(throws_with<Error>([&] { open_file(path); }, {"model.safetensors", "layer.weight", "not an object"}));
}

class SafetensorsUnsupportedDtype : public ::testing::TestWithParam<const char*> {};

TEST_P(SafetensorsUnsupportedDtype, IsRejectedByName) {
  TempDir dir;
  const auto path = dir / "model.safetensors";
  write_safetensors(path, {{"odd.tensor", GetParam(), {8}, std::vector<uint8_t>(8, 0)}});
  EXPECT_TRUE(throws_with<Error>([&] { open_file(path); },
                                 {"model.safetensors", "odd.tensor", std::string("dtype ") + GetParam()}));
}

INSTANTIATE_TEST_SUITE_P(SafetensorsReader, SafetensorsUnsupportedDtype,
                         ::testing::Values("I64", "F8_E4M3", "F8_E8M0", "BOOL", "I8", "F64", "C64", "f32"), param_name);

TEST(SafetensorsReader, RejectsNonStringDtype) {
  TempDir dir;
  const auto path = dir / "model.safetensors";
  auto header = safetensors_header({{"w", "F32", {1}, f32_bytes({1.0f})}});
  header["w"]["dtype"] = 4;
  write_raw_safetensors(path, header.dump(), f32_bytes({1.0f}));
  EXPECT_TRUE(throws_with<Error>([&] { open_file(path); }, {"model.safetensors", "'w'", "non-string dtype"}));
}

TEST(SafetensorsReader, RejectsNegativeDimension) {
  TempDir dir;
  const auto path = dir / "model.safetensors";
  auto header = safetensors_header({{"w", "F32", {1}, f32_bytes({1.0f})}});
  header["w"]["shape"] = {-1};
  write_raw_safetensors(path, header.dump(), f32_bytes({1.0f}));
  EXPECT_TRUE(throws_with<Error>([&] { open_file(path); }, {"model.safetensors", "'w'", "negative"}));
}

TEST(SafetensorsReader, RejectsShapeThatIsNotAList) {
  TempDir dir;
  const auto path = dir / "model.safetensors";
  auto header = safetensors_header({{"w", "F32", {1}, f32_bytes({1.0f})}});
  header["w"]["shape"] = 1;
  write_raw_safetensors(path, header.dump(), f32_bytes({1.0f}));
  EXPECT_TRUE(throws_with<Error>([&] { open_file(path); }, {"model.safetensors", "'w'", "not a list"}));
}

TEST(SafetensorsReader, RejectsMalformedDataOffsets) {
  TempDir dir;
  const auto path = dir / "model.safetensors";
  auto header = safetensors_header({{"w", "F32", {1}, f32_bytes({1.0f})}});
  header["w"]["data_offsets"] = {0, 4, 8};
  write_raw_safetensors(path, header.dump(), f32_bytes({1.0f, 2.0f}));
  EXPECT_TRUE(throws_with<Error>([&] { open_file(path); }, {"model.safetensors", "'w'", "malformed data_offsets"}));
}

TEST(SafetensorsReader, RejectsDataOffsetsBeyondATruncatedFile) {
  TempDir dir;
  const auto path = dir / "model-00001-of-00002.safetensors";
  const std::vector<TensorBytes> tensors = {
      {"first", "F32", {2}, f32_bytes({1.0f, 2.0f})},
      {"second", "F32", {4}, f32_bytes({1.0f, 2.0f, 3.0f, 4.0f})},
  };
  auto data = test_support::concat_data(tensors);
  data.resize(data.size() - 3);  // the download stopped early
  write_raw_safetensors(path, safetensors_header(tensors).dump(), data);
  EXPECT_TRUE(throws_with<Error>([&] { open_file(path); },
                                 {"model-00001-of-00002.safetensors", "'second'", "ends at byte 24", "21 data bytes",
                                  "truncated"}));
}

TEST(SafetensorsReader, RejectsDataOffsetsThatEndBeforeTheyBegin) {
  TempDir dir;
  const auto path = dir / "model.safetensors";
  auto header = safetensors_header({{"w", "F32", {1}, f32_bytes({1.0f})}});
  header["w"]["data_offsets"] = {8, 4};
  write_raw_safetensors(path, header.dump(), f32_bytes({1.0f, 2.0f, 3.0f}));
  EXPECT_TRUE(throws_with<Error>([&] { open_file(path); }, {"model.safetensors", "'w'", "[8, 4]", "end before they begin"}));
}

TEST(SafetensorsReader, RejectsHeaderWhoseByteSizeDisagreesWithShape) {
  TempDir dir;
  const auto path = dir / "model.safetensors";
  auto header = safetensors_header({{"lying.weight", "BF16", {2, 3}, u16_bytes({1, 2, 3, 4, 5, 6})}});
  header["lying.weight"]["data_offsets"] = {0, 10};
  write_raw_safetensors(path, header.dump(), u16_bytes({1, 2, 3, 4, 5, 6}));
  EXPECT_TRUE(throws_with<Error>([&] { open_file(path); },
                                 {"model.safetensors", "'lying.weight'", "10 data bytes", "[2,3]", "BF16", "needs 12"}));
}

TEST(SafetensorsReader, RejectsOverlappingTensors) {
  TempDir dir;
  const auto path = dir / "model.safetensors";
  nlohmann::json header = {
      {"one", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 8}}}},
      {"two", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {4, 12}}}},
  };
  write_raw_safetensors(path, header.dump(), f32_bytes({1, 2, 3}));
  EXPECT_TRUE(throws_with<Error>([&] { open_file(path); }, {"model.safetensors", "'one'", "'two'", "overlap"}));
}

TEST(SafetensorsReader, RejectsTensorContainedInsideAnother) {
  TempDir dir;
  const auto path = dir / "model.safetensors";
  nlohmann::json header = {
      {"big", {{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {0, 16}}}},
      {"inner", {{"dtype", "U8"}, {"shape", {2}}, {"data_offsets", {6, 8}}}},
      {"tail", {{"dtype", "U8"}, {"shape", {2}}, {"data_offsets", {16, 18}}}},
  };
  std::vector<uint8_t> data(18, 0);
  write_raw_safetensors(path, header.dump(), data);
  EXPECT_TRUE(throws_with<Error>([&] { open_file(path); }, {"'big'", "'inner'", "overlap"}));
}

TEST(SafetensorsReader, AcceptsTouchingButNotOverlappingTensors) {
  TempDir dir;
  const auto path = dir / "model.safetensors";
  nlohmann::json header = {
      {"one", {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {0, 4}}}},
      {"two", {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {4, 8}}}},
      {"empty", {{"dtype", "F32"}, {"shape", {0}}, {"data_offsets", {4, 4}}}},
  };
  write_raw_safetensors(path, header.dump(), f32_bytes({1, 2}));
  const auto file = SafetensorsFile::open(path);
  EXPECT_EQ(file->tensors().size(), 3u);
  EXPECT_EQ(floats_of(file->tensors().at("two")), std::vector<float>{2.0f});
}

}  // namespace
}  // namespace mlx2gguf
