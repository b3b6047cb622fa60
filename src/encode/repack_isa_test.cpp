// The vectorized repack kernels (AVX2, AVX-512, NEON: whichever this CPU runs) against the scalar kernel, which
// repack_test.cpp proves against ggml's dequantizer on x86-64. Needs no oracle, so it also runs on arm64.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "encode/nibble_repack.h"
#include "encode/repack.h"
#include "read/mlx_quantize.h"

namespace mlx2gguf {
namespace {

struct Fixture {
  QuantizedRows q;
  StoredTensor weight, scales, biases;
  SourceTensor tensor;
};

// Weights of Student-t shape (heavy tails: a few large values per row), with some exact zeros.
std::unique_ptr<Fixture> heavy_tailed_fixture(const QuantSpec& spec, int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::student_t_distribution<float> t(2.0f);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (size_t i = 0; i < w.size(); ++i) w[i] = i % 29 == 0 ? 0.0f : 0.02f * t(rng);
  auto f = std::make_unique<Fixture>();
  const bool affine = spec.mode == QuantMode::Affine;
  f->q = affine ? quantize_affine(w.data(), rows, cols, spec.bits, spec.group_size, DType::BF16)
                : quantize_fp(w.data(), rows, cols, spec.mode);
  const DType scale_dtype = affine ? DType::BF16 : DType::U8;
  const int64_t groups = cols / spec.group_size;
  f->weight = {"m.weight", DType::U32, {rows, cols * spec.bits / 32},
               {reinterpret_cast<const uint8_t*>(f->q.packed.data()), f->q.packed.size() * 4}, {}};
  f->scales = {"m.scales", scale_dtype, {rows, groups}, {f->q.scales.data(), f->q.scales.size()}, {}};
  f->biases = {"m.biases", scale_dtype, {rows, groups}, {f->q.biases.data(), f->q.biases.size()}, {}};
  f->tensor = SourceTensor::quantized(f->weight, f->scales, affine ? &f->biases : nullptr, spec);
  return f;
}

struct Case {
  QuantSpec spec;
  GgmlType target;
};

class RepackIsa : public testing::TestWithParam<Case> {};

// Rows whose block count leaves a remainder after every vector loop; groups in order and reversed.
TEST_P(RepackIsa, EveryInstructionSetWritesTheScalarBytes) {
  const Case& c = GetParam();
  const int64_t rows = 5, group = c.spec.group_size, cols = 7 * std::max<int64_t>(group, 64);
  const auto f = heavy_tailed_fixture(c.spec, rows, cols, 3);
  std::vector<int64_t> reversed(static_cast<size_t>(cols / group));
  for (size_t g = 0; g < reversed.size(); ++g) reversed[g] = static_cast<int64_t>(reversed.size() - 1 - g);
  const int64_t row_bytes = ggml_row_bytes(c.target, cols);
  for (const auto& groups : {std::vector<int64_t>{}, reversed}) {
    auto repack_with = [&](Isa isa) {
      std::vector<uint8_t> out(static_cast<size_t>(rows * row_bytes));
      for (int64_t r = 0; r < rows; ++r) repack_row(f->tensor, r, c.target, groups, out.data() + r * row_bytes, isa);
      return out;
    };
    const std::vector<uint8_t> scalar = repack_with(Isa::Scalar);
    for (Isa isa : supported_isas())
      EXPECT_EQ(repack_with(isa), scalar) << isa_name(isa) << (groups.empty() ? "" : ", groups reversed");
  }
}

INSTANTIATE_TEST_SUITE_P(FourBitModes, RepackIsa,
                         testing::Values(Case{{QuantMode::Affine, 4, 32}, GgmlType::Q4_1},
                                         Case{{QuantMode::Affine, 4, 64}, GgmlType::Q4_1},
                                         Case{{QuantMode::Affine, 4, 128}, GgmlType::Q4_1},
                                         Case{{QuantMode::MXFP4, 4, 32}, GgmlType::MXFP4},
                                         Case{{QuantMode::NVFP4, 4, 16}, GgmlType::NVFP4}),
                         [](const testing::TestParamInfo<Case>& info) {
                           return std::string(quant_mode_name(info.param.spec.mode)) + "g" +
                                  std::to_string(info.param.spec.group_size);
                         });

// The pairing itself, on every byte value in every position: element j low nibble, element j + half high nibble.
TEST(NibblePairing, MatchesTheDefinitionOnEveryByteValue) {
  std::vector<uint8_t> packed(256 * 32);
  for (size_t i = 0; i < packed.size(); ++i) packed[i] = static_cast<uint8_t>(i * 7 + i / 256);
  auto code = [&](size_t element) { return element % 2 ? packed[element / 2] >> 4 : packed[element / 2] & 15; };
  for (NibblePairing pairing : {NibblePairing::Half16, NibblePairing::Half8}) {
    const size_t half = pairing == NibblePairing::Half16 ? 16 : 8;
    const int64_t blocks = static_cast<int64_t>(packed.size() / (pairing == NibblePairing::Half16 ? 16 : 32));
    std::vector<uint8_t> expected(packed.size());
    for (size_t group = 0; group < packed.size() / half; ++group)
      for (size_t j = 0; j < half; ++j)
        expected[group * half + j] =
            static_cast<uint8_t>(code(group * 2 * half + j) | (code(group * 2 * half + j + half) << 4));
    for (Isa isa : supported_isas()) {
      std::vector<uint8_t> out(packed.size());
      const int64_t stride = pairing == NibblePairing::Half16 ? 16 : 32;
      repair_nibbles(isa, pairing, packed.data(), blocks, out.data(), stride);
      EXPECT_EQ(out, expected) << isa_name(isa) << (half == 16 ? " half 16" : " half 8");
    }
  }
}

TEST(Isa, ScalarIsAlwaysSupportedAndTheBestIsTheLastSupported) {
  ASSERT_FALSE(supported_isas().empty());
  EXPECT_EQ(supported_isas().front(), Isa::Scalar);
  EXPECT_EQ(best_isa(), supported_isas().back());
#if defined(__aarch64__)
  EXPECT_EQ(best_isa(), Isa::Neon);
#endif
}

}  // namespace
}  // namespace mlx2gguf
