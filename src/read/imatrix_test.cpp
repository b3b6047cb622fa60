// Importance matrices in both of llama-imatrix's formats: the weights llama-quantize derives from them (GGUF:
// sums / count per expert, 1 for an expert never counted; legacy: values / calls, as stored when calls is 0), the
// dataset and chunk count, and one clear error per kind of damage.
#include "read/imatrix.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>

#include "read/test_support.h"
#include "util/error.h"
#include "write/gguf_file.h"

namespace mlx2gguf {
namespace {

using test_support::TempDir;

void write_bytes(const std::filesystem::path& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

std::vector<uint8_t> read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void expect_refused(const std::filesystem::path& path, const std::string& fragment) {
  try {
    read_imatrix(path);
    ADD_FAILURE() << "accepted " << path;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
  }
}

TEST(ImatrixGguf, WeightsAreSumsOverCountsPerExpertAndOneWhereNeverCounted) {
  TempDir dir;
  const auto path = dir / "m.gguf";
  // Two experts of 3 columns: the first counted 4 times, the second never.
  write_imatrix_gguf(path, {{"blk.0.ffn_down_exps.weight", {2, 6, 1, 5, 5, 5}}, {"blk.0.attn_q.weight", {3, 9}}},
                     {{"blk.0.ffn_down_exps.weight", {4, 0}}, {"blk.0.attn_q.weight", {3}}}, {"wiki.txt", "code.txt"},
                     17, 512);
  const ImportanceMatrix m = read_imatrix(path);
  EXPECT_FALSE(m.legacy);
  EXPECT_EQ(m.entries.size(), 2u);
  EXPECT_EQ(*m.find("blk.0.ffn_down_exps.weight"), (std::vector<float>{0.5f, 1.5f, 0.25f, 1, 1, 1}));
  EXPECT_EQ(*m.find("blk.0.attn_q.weight"), (std::vector<float>{1, 3}));
  EXPECT_EQ(m.find("blk.0.attn_k.weight"), nullptr);
  EXPECT_EQ(m.datasets, (std::vector<std::string>{"wiki.txt", "code.txt"}));
  EXPECT_EQ(m.chunk_count, 17u);
}

TEST(ImatrixLegacy, WeightsAreValuesOverCallsOrAsStoredWithoutCalls) {
  TempDir dir;
  const auto path = dir / "m.dat";
  write_imatrix_legacy(path, {{"blk.0.attn_q.weight", {10, 20}}, {"output.weight", {0.5f, 7}}},
                       {{"blk.0.attn_q.weight", 10}, {"output.weight", 0}}, 42, "calibration.txt");
  const ImportanceMatrix m = read_imatrix(path);
  EXPECT_TRUE(m.legacy);
  EXPECT_EQ(*m.find("blk.0.attn_q.weight"), (std::vector<float>{1, 2}));
  EXPECT_EQ(*m.find("output.weight"), (std::vector<float>{0.5f, 7}));
  EXPECT_EQ(m.chunk_count, 42u);
  EXPECT_EQ(m.datasets, std::vector<std::string>{"calibration.txt"});

  // The trailer is optional.
  auto bytes = read_bytes(path);
  bytes.resize(bytes.size() - 8 - std::strlen("calibration.txt"));
  write_bytes(path, bytes);
  const ImportanceMatrix bare = read_imatrix(path);
  EXPECT_EQ(bare.entries.size(), 2u);
  EXPECT_EQ(bare.chunk_count, 0u);
  EXPECT_TRUE(bare.datasets.empty());
}

TEST(ImatrixLegacy, DamagedFilesAreRefusedNamingWhatIsWrong) {
  TempDir dir;
  const auto good = dir / "good.dat";
  write_imatrix_legacy(good, {{"blk.0.attn_q.weight", {10, 20, 30, 40}}}, {{"blk.0.attn_q.weight", 1}}, 1, "d");
  const auto bytes = read_bytes(good);
  const auto variant = [&](const std::string& name, auto change) {
    auto b = bytes;
    change(b);
    write_bytes(dir / name, b);
    return dir / name;
  };
  const auto put32 = [](std::vector<uint8_t>& b, size_t at, int32_t v) { std::memcpy(b.data() + at, &v, 4); };
  // Layout: count(4) | len(4) name(19) | calls(4) | nval(4) | values(16) | chunks(4) | len(4) "d"
  expect_refused(variant("empty.dat", [](auto& b) { b.clear(); }), "truncated");
  expect_refused(variant("zero.dat", [&](auto& b) { put32(b, 0, 0); }), "no entries");
  expect_refused(variant("name.dat", [&](auto& b) { put32(b, 4, 1 << 30); }), "name length");
  expect_refused(variant("nval.dat", [&](auto& b) { put32(b, 31, 1 << 28); }), "claims 268435456 values");
  expect_refused(variant("short.dat", [](auto& b) { b.resize(40); }), "values");
  expect_refused(variant("nan.dat", [&](auto& b) {
                   const float nan = std::numeric_limits<float>::quiet_NaN();
                   std::memcpy(b.data() + 35 + 8, &nan, 4);
                 }),
                 "index 2");
  expect_refused(variant("twice.dat", [&](auto& b) {
                   put32(b, 0, 2);
                   std::vector<uint8_t> entry(b.begin() + 4, b.begin() + 51);
                   b.insert(b.begin() + 51, entry.begin(), entry.end());
                 }),
                 "appears twice");
  expect_refused(dir / "missing.dat", "does not exist");
}

TEST(ImatrixGguf, DamagedFilesAreRefusedNamingWhatIsWrong) {
  TempDir dir;
  // Sums without counts.
  {
    GgufMetadata md;
    md.set("imatrix.datasets", GgufValue::str_array({"d"}));
    md.set("imatrix.chunk_count", GgufValue::u32(1));
    md.set("imatrix.chunk_size", GgufValue::u32(512));
    const auto path = dir / "nocounts.gguf";
    GgufWriter w(path, md, {{"a.weight.in_sum2", {4, 1}, GgmlType::F32, 0}});
    const std::vector<float> v{1, 2, 3, 4};
    w.write(0, 0, {reinterpret_cast<const uint8_t*>(v.data()), 16});
    w.commit();
    expect_refused(path, "'a.weight' has .in_sum2 but no .counts");
  }
  // No llama-imatrix metadata.
  {
    const auto path = dir / "nometa.gguf";
    GgufWriter w(path, GgufMetadata{}, {{"a.weight.in_sum2", {2, 1}, GgmlType::F32, 0}, {"a.weight.counts", {1, 1}, GgmlType::F32, 0}});
    const std::vector<float> v{1, 2};
    w.write(0, 0, {reinterpret_cast<const uint8_t*>(v.data()), 8});
    w.write(1, 0, {reinterpret_cast<const uint8_t*>(v.data()), 4});
    w.commit();
    expect_refused(path, "lacks the key 'imatrix.datasets'");
  }
  // Sums that are not whole rows per count, negative counts, and sums turning infinite.
  const auto write = [&](const std::string& name, std::vector<float> sums, std::vector<float> counts) {
    const auto path = dir / name;
    write_imatrix_gguf(path, {{"a.weight", sums}}, {{"a.weight", counts}}, {"d"}, 1, 512);
    return path;
  };
  {
    GgufMetadata md;
    md.set("imatrix.datasets", GgufValue::str_array({"d"}));
    md.set("imatrix.chunk_count", GgufValue::u32(1));
    md.set("imatrix.chunk_size", GgufValue::u32(512));
    const auto path = dir / "rows.gguf";
    GgufWriter w(path, md, {{"a.weight.in_sum2", {3, 1}, GgmlType::F32, 0}, {"a.weight.counts", {1, 2}, GgmlType::F32, 0}});
    const std::vector<float> v{1, 2, 3};
    w.write(0, 0, {reinterpret_cast<const uint8_t*>(v.data()), 12});
    w.write(1, 0, {reinterpret_cast<const uint8_t*>(v.data()), 8});
    w.commit();
    expect_refused(path, "3 sums for 2 counts");
  }
  expect_refused(write("negative.gguf", {1, 2}, {-3}), "count -3");
  expect_refused(write("inf.gguf", {std::numeric_limits<float>::infinity(), 2}, {1}), "holds inf at index 0");
}

}  // namespace
}  // namespace mlx2gguf
