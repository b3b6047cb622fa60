// K-quant encoders and decoders checked against ggml's real quantizer and dequantizer (the oracle library), on
// Gaussian, heavy-tailed, MLX-dequantized and edge-case rows: same bytes, same decoding, no larger error.
#include "encode/k_quants.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "oracle/llama_oracle.h"
#include "util/half.h"
#include "gguf/gguf_types.h"

namespace mlx2gguf {
namespace {

struct KQuantType {
  const char* name;
  GgmlType type;
  int64_t block_bytes;
  void (*quantize_row)(const float*, int64_t, uint8_t*);
  void (*dequantize_row)(const uint8_t*, int64_t, float*);
  std::vector<int> f16_offsets;  // where the block keeps its fp16 factors
};

const KQuantType kTypes[] = {
    {"Q2_K", GgmlType::Q2_K, kQ2KBlockBytes, quantize_row_q2_k, dequantize_row_q2_k, {80, 82}},
    {"Q3_K", GgmlType::Q3_K, kQ3KBlockBytes, quantize_row_q3_k, dequantize_row_q3_k, {108}},
    {"Q4_K", GgmlType::Q4_K, kQ4KBlockBytes, quantize_row_q4_k, dequantize_row_q4_k, {0, 2}},
    {"Q5_K", GgmlType::Q5_K, kQ5KBlockBytes, quantize_row_q5_k, dequantize_row_q5_k, {0, 2}},
    {"Q6_K", GgmlType::Q6_K, kQ6KBlockBytes, quantize_row_q6_k, dequantize_row_q6_k, {208}},
};

void PrintTo(const KQuantType& type, std::ostream* os) { *os << type.name; }

// --- data sets ---

struct DataSet {
  std::string name;
  int64_t rows;
  int64_t row_length;
  std::vector<float> values;
};

// Typical transformer weights: N(0, 0.02).
DataSet gaussian_rows() {
  DataSet d{"gaussian", 64, 1024, {}};
  std::mt19937 rng(1234);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (int64_t i = 0; i < d.rows * d.row_length; ++i) d.values.push_back(normal(rng));
  return d;
}

// Student-t with 3 degrees of freedom, and one value in a thousand blown up ×20: the outliers dominate their
// sub-blocks' scales.
DataSet heavy_tailed_rows() {
  DataSet d{"heavy-tailed", 64, 512, {}};
  std::mt19937 rng(5678);
  std::student_t_distribution<float> student(3.0f);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  for (int64_t i = 0; i < d.rows * d.row_length; ++i) {
    float v = 0.01f * student(rng);
    if (uniform(rng) < 0.001f) v *= 20.0f;
    d.values.push_back(v);
  }
  return d;
}

// What a 4-bit mlx-lm model dequantizes to: per group of 64, codes 0..15 of an affine map code·s + b, with s
// and b stored in bf16 (as mlx-lm does) and the product computed in float.
DataSet mlx_affine_rows() {
  DataSet d{"mlx-affine", 64, 1024, {}};
  std::mt19937 rng(91011);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  float group[64];
  for (int64_t g = 0; g < d.rows * d.row_length / 64; ++g) {
    float lo = 0.0f;
    float hi = 0.0f;
    for (float& v : group) {
      v = normal(rng);
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
    const float scale = bf16_to_f32(f32_to_bf16((hi - lo) / 15.0f));
    const float bias = bf16_to_f32(f32_to_bf16(lo));
    for (float v : group) {
      const float code = std::clamp(std::round((v - bias) / scale), 0.0f, 15.0f);
      d.values.push_back(code * scale + bias);
    }
  }
  return d;
}

// Rows that reach the corner cases of the searches: nothing to fit, one value, values below every epsilon or
// fp16's range, one element dwarfing the rest, a single sign, and zero sub-blocks next to normal ones.
DataSet edge_case_rows() {
  DataSet d{"edge-cases", 0, 512, {}};
  std::mt19937 rng(1213);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto add_row = [&](auto value_of) {
    for (int i = 0; i < d.row_length; ++i) d.values.push_back(value_of(i));
    ++d.rows;
  };
  add_row([](int) { return 0.0f; });
  add_row([](int) { return 0.5f; });
  add_row([](int) { return -3.0f; });
  add_row([&](int) { return 1e-20f * normal(rng); });                          // below GROUP_MAX_EPS
  add_row([&](int) { return 1e-6f * normal(rng); });                           // fp16 factors are subnormal
  add_row([&](int i) { return i == 77 ? 1e4f : 0.02f * normal(rng); });        // one huge outlier
  add_row([&](int i) { return i == 300 ? -5e3f : normal(rng); });              // one huge negative outlier
  add_row([&](int) { return -std::fabs(normal(rng)); });                       // negative only
  add_row([&](int) { return std::fabs(normal(rng)); });                        // positive only
  add_row([](int i) { return i % 2 ? 1.0f : -1.0f; });                         // two values
  add_row([](int i) { return i == 5 ? 0.75f : 0.0f; });                        // a single non-zero
  add_row([&](int i) { return (i / 16) % 3 == 0 ? 0.0f : normal(rng); });     // zero sub-blocks among others
  add_row([&](int i) { return (i / 32) % 2 ? 1e-20f : normal(rng); });        // tiny sub-blocks among others
  add_row([&](int i) { return static_cast<float>(i % 7) - 3.0f; });           // small integers
  add_row([&](int i) { return 3e4f * normal(rng) + (i % 2 ? 1e3f : 0.0f); });  // large magnitudes
  add_row([&](int i) { return std::exp(normal(rng)) * (i % 3 ? 1.0f : -1.0f); });
  return d;
}

// Rows of assorted shapes, each at its own magnitude from 1e-12 to 1e3: the fp16 factors land anywhere from
// subnormal to large, and some sub-blocks are sparse or hold only a few distinct values.
DataSet mixed_scale_rows() {
  DataSet d{"mixed-scales", 128, 256, {}};
  std::mt19937 rng(1415);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::student_t_distribution<float> student(3.0f);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  for (int64_t r = 0; r < d.rows; ++r) {
    const float magnitude = std::pow(10.0f, -12.0f + 15.0f * uniform(rng));
    const int shape = static_cast<int>(r % 5);
    for (int64_t i = 0; i < d.row_length; ++i) {
      float v = 0.0f;
      switch (shape) {
        case 0: v = normal(rng); break;
        case 1: v = student(rng); break;
        case 2: v = uniform(rng) - 0.25f; break;
        case 3: v = uniform(rng) < 0.2f ? normal(rng) : 0.0f; break;
        default: v = std::floor(3.0f * normal(rng)); break;
      }
      d.values.push_back(magnitude * v);
    }
  }
  return d;
}

const std::vector<DataSet>& data_sets() {
  static const std::vector<DataSet> sets = {gaussian_rows(), heavy_tailed_rows(), mlx_affine_rows(),
                                            edge_case_rows(), mixed_scale_rows()};
  return sets;
}

// --- helpers ---

std::vector<uint8_t> quantize_ours(const KQuantType& type, const DataSet& d) {
  const int64_t row_bytes = d.row_length / kKQuantSuperBlock * type.block_bytes;
  std::vector<uint8_t> out(static_cast<size_t>(d.rows * row_bytes));
  for (int64_t r = 0; r < d.rows; ++r) {
    type.quantize_row(d.values.data() + r * d.row_length, d.row_length, out.data() + r * row_bytes);
  }
  return out;
}

std::vector<float> dequantize_ours(const KQuantType& type, const std::vector<uint8_t>& bytes) {
  const int64_t elements = static_cast<int64_t>(bytes.size()) / type.block_bytes * kKQuantSuperBlock;
  std::vector<float> out(static_cast<size_t>(elements));
  type.dequantize_row(bytes.data(), elements, out.data());
  return out;
}

std::vector<float> dequantize_ggml(const KQuantType& type, const std::vector<uint8_t>& bytes) {
  const int64_t elements = static_cast<int64_t>(bytes.size()) / type.block_bytes * kKQuantSuperBlock;
  return oracle::ggml_dequantize(static_cast<int>(type.type), bytes.data(), elements);
}

double rmse(const std::vector<float>& a, const std::vector<float>& b) {
  double sum = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double diff = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    sum += diff * diff;
  }
  return std::sqrt(sum / static_cast<double>(a.size()));
}

// Index of the first element whose float bits differ, or -1.
int64_t first_bit_difference(const std::vector<float>& a, const std::vector<float>& b) {
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::bit_cast<uint32_t>(a[i]) != std::bit_cast<uint32_t>(b[i])) return static_cast<int64_t>(i);
  }
  return -1;
}

int64_t differing_blocks(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b, int64_t block_bytes) {
  int64_t count = 0;
  for (size_t offset = 0; offset < a.size(); offset += static_cast<size_t>(block_bytes)) {
    if (std::memcmp(a.data() + offset, b.data() + offset, static_cast<size_t>(block_bytes)) != 0) ++count;
  }
  return count;
}

// --- tests ---

class KQuantRow : public ::testing::TestWithParam<KQuantType> {};

TEST_P(KQuantRow, WritesExactlyGgmlsBytesOnEveryDataSet) {
  const KQuantType& type = GetParam();
  for (const DataSet& d : data_sets()) {
    const std::vector<uint8_t> ours = quantize_ours(type, d);
    const std::vector<uint8_t> ggml =
        oracle::ggml_quantize(static_cast<int>(type.type), d.values.data(), d.rows, d.row_length);
    ASSERT_EQ(ours.size(), ggml.size());
    const int64_t blocks = static_cast<int64_t>(ours.size()) / type.block_bytes;
    const int64_t differing = differing_blocks(ours, ggml, type.block_bytes);
    std::printf("[k-quants] %s %-12s %lld/%lld blocks byte-identical to ggml\n", type.name, d.name.c_str(),
                static_cast<long long>(blocks - differing), static_cast<long long>(blocks));
    EXPECT_EQ(differing, 0) << type.name << " on " << d.name;
  }
}

TEST_P(KQuantRow, EveryBlockWeWriteDecodesLikeGgmlDecodesIt) {
  const KQuantType& type = GetParam();
  for (const DataSet& d : data_sets()) {
    const std::vector<uint8_t> ours = quantize_ours(type, d);
    const std::vector<float> by_us = dequantize_ours(type, ours);
    const std::vector<float> by_ggml = dequantize_ggml(type, ours);
    const int64_t at = first_bit_difference(by_us, by_ggml);
    EXPECT_EQ(at, -1) << type.name << " on " << d.name << ": element " << at << " decodes to "
                      << (at >= 0 ? by_us[at] : 0.0f) << " here but " << (at >= 0 ? by_ggml[at] : 0.0f)
                      << " in ggml";
  }
}

TEST_P(KQuantRow, ErrorIsNoLargerThanGgmls) {
  const KQuantType& type = GetParam();
  for (const DataSet& d : data_sets()) {
    const std::vector<float> ours = dequantize_ggml(type, quantize_ours(type, d));
    const std::vector<float> ggml = dequantize_ggml(
        type, oracle::ggml_quantize(static_cast<int>(type.type), d.values.data(), d.rows, d.row_length));
    const double our_rmse = rmse(d.values, ours);
    const double ggml_rmse = rmse(d.values, ggml);
    ASSERT_TRUE(std::isfinite(our_rmse)) << type.name << " on " << d.name;
    const double ratio = ggml_rmse > 0 ? our_rmse / ggml_rmse : (our_rmse > 0 ? INFINITY : 1.0);
    std::printf("[k-quants] %s %-12s RMSE ours %.6e ggml %.6e ratio %.4f\n", type.name, d.name.c_str(), our_rmse,
                ggml_rmse, ratio);
    EXPECT_LE(ratio, 1.0) << type.name << " on " << d.name;
  }
}

// Bytes no encoder writes (random codes, every scale code, negative or subnormal fp16 factors) still decode
// exactly as in ggml: the decoder does not rely on what our encoder happens to produce.
TEST_P(KQuantRow, DecodesArbitraryBlocksLikeGgml) {
  const KQuantType& type = GetParam();
  constexpr int kBlocks = 512;
  std::mt19937 rng(42);
  std::uniform_int_distribution<int> byte(0, 255);
  std::vector<uint8_t> blocks(static_cast<size_t>(kBlocks * type.block_bytes));
  for (uint8_t& b : blocks) b = static_cast<uint8_t>(byte(rng));
  for (int64_t b = 0; b < kBlocks; ++b) {
    for (int offset : type.f16_offsets) {
      uint8_t* high = &blocks[static_cast<size_t>(b * type.block_bytes + offset + 1)];
      if ((*high & 0x7C) == 0x7C) *high &= 0xBF;  // keep factors finite: infinities would make NaN comparisons
    }
  }
  const std::vector<float> by_us = dequantize_ours(type, blocks);
  const std::vector<float> by_ggml = dequantize_ggml(type, blocks);
  const int64_t at = first_bit_difference(by_us, by_ggml);
  EXPECT_EQ(at, -1) << type.name << ": element " << at << " decodes to " << (at >= 0 ? by_us[at] : 0.0f)
                    << " here but " << (at >= 0 ? by_ggml[at] : 0.0f) << " in ggml";
}

// The row functions handle several super-blocks per row independently: encoding a row equals encoding each of
// its 256-element pieces on its own.
TEST_P(KQuantRow, EncodesEachSuperBlockIndependently) {
  const KQuantType& type = GetParam();
  const DataSet& d = data_sets().front();
  std::vector<uint8_t> whole(static_cast<size_t>(d.row_length / kKQuantSuperBlock * type.block_bytes));
  type.quantize_row(d.values.data(), d.row_length, whole.data());
  for (int64_t b = 0; b < d.row_length / kKQuantSuperBlock; ++b) {
    std::vector<uint8_t> piece(static_cast<size_t>(type.block_bytes));
    type.quantize_row(d.values.data() + b * kKQuantSuperBlock, kKQuantSuperBlock, piece.data());
    EXPECT_EQ(0, std::memcmp(piece.data(), whole.data() + b * type.block_bytes, piece.size()))
        << type.name << " super-block " << b;
  }
}

INSTANTIATE_TEST_SUITE_P(KQuants, KQuantRow, ::testing::ValuesIn(kTypes),
                         [](const ::testing::TestParamInfo<KQuantType>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace mlx2gguf
