// The independent gpt-oss fixture (tests/data/fixtures/gptoss-mxfp4): a tiny gpt_oss folder written by another
// implementation of how mlx-lm saves it (experts in MLX mxfp4, the rest 8-bit affine g64, sinks, alternating sliding
// window 8, YaRN, biases), with llama.cpp's logits of the same model converted by llama.cpp's own converter.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>

#include "convert.h"
#include "e2e_support.h"
#include "eval/reference.h"
#include "oracle/llama_oracle.h"
#include "plan/planner.h"
#include "read/mapped_file.h"
#include "read/source_model.h"
#include "write/gguf_file.h"

namespace {

namespace fs = std::filesystem;

const e2e::OracleFixture& fixture() {
  static const e2e::OracleFixture f = e2e::oracle_fixture("gptoss-mxfp4");
  return f;
}

TEST(FixtureGptOss, F32ConversionMatchesLlamaCppOracle) {
  const fs::path gguf = fixture().convert({"--outtype", "f32"}, "f32");
  EXPECT_LE(fixture().llama_nmse(gguf, "f32"), 1e-6);
  fs::remove(gguf);
}

TEST(FixtureGptOss, ReferenceForwardPassMatchesLlamaCppOracle) {
  const auto logits = mlx2gguf::reference_logits(mlx2gguf::SourceModel::open(fixture().model), fixture().tokens);
  const double error = e2e::fixture_nmse(logits, fixture().logits);
  std::printf("[ NMSE     ] fixture gptoss-mxfp4: reference forward pass vs llama.cpp's oracle = %.3e\n", error);
  EXPECT_LE(error, 1e-6);
}

// The default conversion keeps the fixture's MXFP4 experts as they are: ggml's dequantizer reads them as exactly the
// values MLX's codes hold, and llama.cpp runs the file at least as close to the oracle as its own MXFP4_MOE
// quantization of the same weights (experts MXFP4, the rest Q8_0: the same types as ours).
TEST(FixtureGptOss, AutoKeepsTheExpertsLosslesslyAndIsAsCloseAsLlamaCppsOwnMxfp4Moe) {
  const fs::path ours = fixture().convert({}, "auto");
  const auto source = mlx2gguf::SourceModel::open(fixture().model);
  const auto plan = mlx2gguf::make_plan(source, {});
  const auto file = mlx2gguf::GgufFile::read(ours);
  const mlx2gguf::MappedFile bytes(ours);
  int repacked = 0;
  for (size_t t = 0; t < plan.tensors.size(); ++t) {
    const auto& recipe = plan.tensors[t];
    const auto& info = file.tensors.at(t);
    ASSERT_EQ(info.name, recipe.name);
    const bool expert = recipe.name.find("_exps.weight") != std::string::npos;
    EXPECT_EQ(recipe.repack, expert) << recipe.name;
    if (!recipe.repack) continue;
    ++repacked;
    EXPECT_EQ(info.type, mlx2gguf::GgmlType::MXFP4) << recipe.name;
    std::vector<float> mlx(static_cast<size_t>(recipe.row_count() * recipe.row_length()));
    mlx2gguf::read_recipe_rows(recipe, 0, recipe.row_count(), mlx.data());
    const auto ggml = oracle::ggml_dequantize(static_cast<int>(info.type), bytes.bytes().data() + file.data_start + info.offset,
                                              info.element_count());
    ASSERT_EQ(ggml.size(), mlx.size());
    for (size_t i = 0; i < mlx.size(); ++i)
      ASSERT_TRUE(std::memcmp(&mlx[i], &ggml[i], 4) == 0 || (mlx[i] == 0.0f && ggml[i] == 0.0f))
          << recipe.name << " element " << i << ": MLX " << mlx[i] << ", ggml " << ggml[i];
  }
  std::printf("[ REPACK   ] fixture gptoss-mxfp4: %d expert tensors repacked bit-exactly as MXFP4\n", repacked);
  EXPECT_EQ(repacked, 3 * 4);

  const double our_error = fixture().llama_nmse(ours, "auto (lossless MXFP4 experts)");
  const fs::path f32 = fixture().convert({"--outtype", "f32"}, "for-quantize");
  const fs::path theirs = e2e::work_dir() / fmt::format("fixture-gptoss-theirs-{}.gguf", ::getpid());
  oracle::llama_quantize_file(f32.string(), theirs.string(), 38);
  const double their_error = fixture().llama_nmse(theirs, "llama.cpp's own MXFP4_MOE of the same weights");
  EXPECT_LE(our_error, their_error * 1.05);
  EXPECT_LE(our_error, 1e-2);
  for (const auto& path : {ours, f32, theirs}) fs::remove(path);
}

TEST(FixtureGptOss, Mxfp4MoeMovesTheExpertsAndMatchesLlamaCppsOwn) {
  const fs::path ours = fixture().convert({"--outtype", "mxfp4_moe"}, "mxfp4_moe");
  const double our_error = fixture().llama_nmse(ours, "mxfp4_moe");
  const fs::path f32 = fixture().convert({"--outtype", "f32"}, "for-quantize-moe");
  const fs::path theirs = e2e::work_dir() / fmt::format("fixture-gptoss-theirs-moe-{}.gguf", ::getpid());
  oracle::llama_quantize_file(f32.string(), theirs.string(), 38);
  const double their_error = fixture().llama_nmse(theirs, "llama.cpp's own MXFP4_MOE");
  EXPECT_LE(our_error, their_error * 1.05);
  for (const auto& path : {ours, f32, theirs}) fs::remove(path);
}

}  // namespace
