// MLX-quantized folders converted with the default --outtype auto: the quantized weights are moved into GGUF blocks
// without re-quantizing. Proof per tensor: ggml's own dequantizer reads every repacked tensor of the written file as
// exactly MLX's dequantized values. Proof per model: real llama.cpp runs the file like the f32 conversion of the
// same weights, up to the 8-bit activation rounding of its quantized kernels.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstring>
#include <set>

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
using mlx2gguf::GgmlType;

// A 4-bit llama whose per-module overrides mix modes and widths in one model, as mlx-lm's mixed recipes do:
// value projections mxfp4, down projections affine 5-bit g32, gate projections 8-bit (no exact type: Q8_0), the
// up projections left in float.
std::filesystem::path mixed_llama() {
  using mlx2gguf::gen::QuantOverride;
  auto spec = e2e::model_spec("llama");
  spec.quant = mlx2gguf::gen::QuantRecipe::parse("affine:4:64");
  spec.quant->overrides = {QuantOverride{"v_proj", 4, 32, "mxfp4"}, QuantOverride{"down_proj", 5, 32, "affine"},
                           QuantOverride{"gate_proj", 8, 64, ""}, QuantOverride{"up_proj", 0, 64, ""}};
  return e2e::cached_model("llama-mixed", spec);
}

std::filesystem::path source_folder(const std::string& model, const std::string& variant) {
  return variant == "mixed" ? mixed_llama() : e2e::model_folder(model, variant);
}

struct RepackCase {
  std::string model, variant;
  std::set<GgmlType> lossless;  // the types the quantized weights must land in
  bool every_tensor = true;  // false: some tensors are known to fall back (and must say why)
};
void PrintTo(const RepackCase& c, std::ostream* os) { *os << c.model << "/" << c.variant; }

std::vector<RepackCase> repack_cases() {
  return {
      {"llama", "q4g64", {GgmlType::Q4_1}},
      {"llama", "mixed", {GgmlType::Q4_1, GgmlType::MXFP4, GgmlType::Q5_1}, false},
      {"llama", "q3g64", {GgmlType::Q4_1}},
      {"llama", "q2g32", {GgmlType::Q4_1}},
      {"llama", "q5g64", {GgmlType::Q5_1}},
      {"llama", "mxfp4", {GgmlType::MXFP4}},
      {"llama", "nvfp4", {GgmlType::NVFP4}},
      {"mistral", "q4g64", {GgmlType::Q4_1}},
      {"mixtral", "q4g64", {GgmlType::Q4_1}},
      {"mixtral", "mxfp4", {GgmlType::MXFP4}},
      // Linear-attention value heads of 32 split the groups of 64: ssm_out is re-encoded to Q8_0, and says so.
      {"qwen35moe", "q4g64", {GgmlType::Q4_1}, false},
      {"qwen35moe", "q4g32", {GgmlType::Q4_1}},
      {"qwen35", "q4g64", {GgmlType::Q4_1}, false},
      {"qwen36-widths", "q4g64", {GgmlType::Q4_1}},
      {"qwen36-widths", "mxfp4", {GgmlType::MXFP4}},
      {"qwen36-widths", "nvfp4", {GgmlType::NVFP4}},
  };
}

std::string case_name(const testing::TestParamInfo<RepackCase>& info) {
  std::string name = info.param.model + "_" + info.param.variant;
  for (char& ch : name)
    if (ch == '-') ch = '_';
  return name;
}

std::vector<int32_t> probe_for(oracle::LlamaModel& model) {
  const int64_t vocab = std::min<int64_t>(model.n_vocab(), 32000);
  return e2e::probe_tokens(vocab, 16, model.token_bos() >= 0 ? model.token_bos() : 1);
}

class AutoRepack : public testing::TestWithParam<RepackCase> {};

TEST_P(AutoRepack, GgmlReadsEveryRepackedTensorAsMlxValues) {
  const RepackCase& c = GetParam();
  const auto folder = source_folder(c.model, c.variant);
  const auto gguf = e2e::work_dir() / fmt::format("repack-{}-{}.gguf", c.model, c.variant);
  const auto result = e2e::run_mlx2gguf({"convert", folder.string(), "--outfile", gguf.string()});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  ASSERT_EQ(oracle::gguf_check_file(gguf.string()), "");

  // The plan says which tensors were repacked; the file must hold exactly MLX's values in them.
  const auto source = mlx2gguf::SourceModel::open(folder);
  const mlx2gguf::ConversionPlan plan = mlx2gguf::make_plan(source, {});
  const auto file = mlx2gguf::GgufFile::read(gguf);
  const mlx2gguf::MappedFile bytes(gguf);
  int repacked = 0, fallbacks = 0;
  for (size_t t = 0; t < plan.tensors.size(); ++t) {
    const auto& recipe = plan.tensors[t];
    const auto& info = file.tensors.at(t);
    ASSERT_EQ(info.name, recipe.name);
    ASSERT_EQ(info.type, recipe.type) << recipe.name;
    if (!recipe.repack) {
      if (!recipe.type_note.empty()) {
        ++fallbacks;
        EXPECT_NE(result.output.find(recipe.type_note), std::string::npos) << "summary misses: " << recipe.type_note;
      }
      continue;
    }
    ++repacked;
    EXPECT_TRUE(c.lossless.contains(recipe.type)) << recipe.name;
    std::vector<float> mlx(static_cast<size_t>(recipe.row_count() * recipe.row_length()));
    mlx2gguf::read_recipe_rows(recipe, 0, recipe.row_count(), mlx.data());
    const uint8_t* data = bytes.bytes().data() + file.data_start + info.offset;
    const std::vector<float> ggml = oracle::ggml_dequantize(static_cast<int>(info.type), data, info.element_count());
    ASSERT_EQ(ggml.size(), mlx.size());
    for (size_t i = 0; i < mlx.size(); ++i)
      // FP4's "-0" code decodes to -0.0 in MLX and +0.0 in ggml; every other value must match to the bit.
      ASSERT_TRUE(std::memcmp(&mlx[i], &ggml[i], 4) == 0 || (mlx[i] == 0.0f && ggml[i] == 0.0f))
          << recipe.name << " element " << i << ": MLX " << mlx[i] << ", ggml " << ggml[i];
  }
  std::string types;
  for (GgmlType type : c.lossless) types += std::string(types.empty() ? "" : "/") + mlx2gguf::ggml_type_info(type).name;
  std::printf("[ REPACK   ] %s/%s: %d tensors repacked bit-exactly as %s, %d re-encoded with a stated reason\n",
              c.model.c_str(), c.variant.c_str(), repacked, types.c_str(), fallbacks);
  EXPECT_GT(repacked, 0);
  if (c.every_tensor) EXPECT_EQ(fallbacks, 0);
  EXPECT_NE(result.output.find("lossless from MLX"), std::string::npos) << result.output;
}

TEST_P(AutoRepack, LlamaCppRunsItLikeTheF32ConversionOfTheSameWeights) {
  const RepackCase& c = GetParam();
  const auto folder = source_folder(c.model, c.variant);
  const auto repacked = e2e::work_dir() / fmt::format("repack-run-{}-{}.gguf", c.model, c.variant);
  const auto f32 = e2e::work_dir() / fmt::format("repack-run-{}-{}-f32.gguf", c.model, c.variant);
  ASSERT_EQ(e2e::run_mlx2gguf({"convert", folder.string(), "-o", repacked.string(), "-q"}).exit_code, 0);
  ASSERT_EQ(e2e::run_mlx2gguf({"convert", folder.string(), "-o", f32.string(), "--outtype", "f32", "-q"}).exit_code, 0);

  auto model = oracle::LlamaModel::load(repacked.string());
  const auto tokens = probe_for(*model);
  const auto ours = model->logits(tokens);
  const auto exact = oracle::LlamaModel::load(f32.string())->logits(tokens);
  const auto reference = mlx2gguf::reference_logits(mlx2gguf::SourceModel::open(folder), tokens);
  const double vs_f32 = e2e::nmse(ours, exact);
  std::printf("[ NMSE     ] %s/%s repacked: vs f32 conversion %.3e, vs reference %.3e\n", c.model.c_str(),
              c.variant.c_str(), vs_f32, e2e::nmse(ours, reference));
  if (c.lossless == std::set<GgmlType>{GgmlType::Q4_1}) {
    // What users get today: llama.cpp re-quantizing the dequantized weights to the same type.
    const auto theirs = e2e::work_dir() / fmt::format("repack-run-{}-{}-llama-q4_1.gguf", c.model, c.variant);
    oracle::llama_quantize_file(f32.string(), theirs.string(), 3);
    const double theirs_vs_f32 = e2e::nmse(oracle::LlamaModel::load(theirs.string())->logits(tokens), exact);
    std::printf("[ NMSE     ] llama.cpp's own Q4_1 of the dequantized weights: vs f32 conversion %.3e\n", theirs_vs_f32);
    EXPECT_LE(vs_f32, theirs_vs_f32);
    fs::remove(theirs);
  }
  EXPECT_LE(vs_f32, 1e-3);
  fs::remove(repacked);
  fs::remove(f32);
}

INSTANTIATE_TEST_SUITE_P(MlxQuantized, AutoRepack, testing::ValuesIn(repack_cases()), case_name);

class AutoRepackFallback : public testing::TestWithParam<std::pair<std::string, std::string>> {};

TEST_P(AutoRepackFallback, ModesWithoutAnExactTypeBecomeQ8_0AndTheSummarySaysWhy) {
  const auto& [variant, reason] = GetParam();
  const auto folder = e2e::model_folder("llama", variant);
  const auto gguf = e2e::work_dir() / fmt::format("repack-llama-{}.gguf", variant);
  const auto result = e2e::run_mlx2gguf({"convert", folder.string(), "--outfile", gguf.string()});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto file = mlx2gguf::GgufFile::read(gguf);
  int q8 = 0;
  for (const auto& t : file.tensors) {
    EXPECT_TRUE(t.type == GgmlType::Q8_0 || t.type == GgmlType::F32) << t.name;
    q8 += t.type == GgmlType::Q8_0;
  }
  EXPECT_GT(q8, 0);
  EXPECT_NE(result.output.find(reason), std::string::npos) << result.output;
  // Re-encoded from MLX's exact values: as close to the source as llama.cpp's q8_0 of the f32 conversion.
  auto model = oracle::LlamaModel::load(gguf.string());
  const auto tokens = probe_for(*model);
  const double error = e2e::nmse(model->logits(tokens), mlx2gguf::reference_logits(mlx2gguf::SourceModel::open(folder), tokens));
  std::printf("[ NMSE     ] llama/%s auto (Q8_0) vs reference = %.3e\n", variant.c_str(), error);
  EXPECT_LE(error, 2e-3);
  fs::remove(gguf);
}

INSTANTIATE_TEST_SUITE_P(
    NoExactType, AutoRepackFallback,
    testing::Values(std::pair{"q8g32", "MLX affine 8-bit g32 re-encoded: affine 8-bit has no exact GGUF type"},
                    std::pair{"q6g64", "MLX affine 6-bit g64 re-encoded: affine 6-bit has no exact GGUF type"},
                    std::pair{"mxfp8", "MLX mxfp8 8-bit g32 re-encoded: mxfp8 has no exact GGUF type"}),
    [](const auto& info) { return info.param.first; });

}  // namespace
