// End to end: generate an mlx-lm folder, convert it with the mlx2gguf binary, load the GGUF in real llama.cpp and
// compare its logits at every position with the reference forward pass of the source model.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "e2e_support.h"
#include "eval/reference.h"
#include "oracle/llama_oracle.h"
#include "read/source_model.h"

namespace {

std::vector<std::string> variants() { return {"bf16", "q4g64", "q8g32", "q3g64"}; }

struct Bars {
  double nmse;
  bool same_top1;
  // A 16-bit file is run by llama.cpp with its activations rounded to 16 bits too (f16: 2^-11, bf16: 2^-8
  // relative). Where the source model's two best tokens are closer than about five times that noise, no
  // 16-bit runtime can decide between them, so top-1 is judged at the other positions only. f32: everywhere.
  double undecidable_margin;  // relative to the RMS of the reference logits at that position
};

Bars bars_for(const std::string& outtype) {
  if (outtype == "f32") return {1e-6, true, 0.0};
  if (outtype == "f16") return {1e-4, true, 4e-3};
  if (outtype == "bf16") return {1e-4, true, 4e-2};
  return {2e-3, false, 0.0};  // q8_0
}

struct E2ECase {
  std::string model, variant, outtype;
};
void PrintTo(const E2ECase& c, std::ostream* os) { *os << c.model << "/" << c.variant << "/" << c.outtype; }

std::string case_name(const testing::TestParamInfo<E2ECase>& info) {
  return info.param.model + "_" + info.param.variant + "_" + info.param.outtype;
}

std::vector<E2ECase> all_cases() {
  std::vector<E2ECase> cases;
  for (const auto& model : {"llama", "mistral", "mixtral"})
    for (const auto& variant : variants())
      for (const auto& outtype : {"f32", "f16", "bf16", "q8_0"}) cases.push_back({model, variant, outtype});
  return cases;
}

class ConvertedLogits : public testing::TestWithParam<E2ECase> {};

TEST_P(ConvertedLogits, MatchReferenceForwardPass) {
  const E2ECase& c = GetParam();
  const auto folder = e2e::model_folder(c.model, c.variant);
  const auto gguf = e2e::work_dir() / fmt::format("{}-{}-{}.gguf", c.model, c.variant, c.outtype);
  const auto result = e2e::run_mlx2gguf({"convert", folder.string(), "--outfile", gguf.string(), "--outtype", c.outtype});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(oracle::gguf_check_file(gguf.string()), "");

  const auto source = mlx2gguf::SourceModel::open(folder);
  auto model = oracle::LlamaModel::load(gguf.string());
  const int64_t vocab = model->n_vocab();
  const auto tokens = e2e::probe_tokens(std::min<int64_t>(vocab, 32000), 16, model->token_bos() >= 0 ? model->token_bos() : 1);
  const auto want = mlx2gguf::reference_logits(source, tokens);
  const auto got = model->logits(tokens);
  ASSERT_EQ(got.size(), want.size());

  const Bars bars = bars_for(c.outtype);
  const double error = e2e::nmse(got, want);
  RecordProperty("nmse", fmt::format("{:.3e}", error));
  std::printf("[ NMSE     ] %s/%s/%s = %.3e\n", c.model.c_str(), c.variant.c_str(), c.outtype.c_str(), error);
  if (c.outtype == "q8_0") {
    // Lossy: also judged against llama.cpp's own quantizer applied to the f32 conversion of the same weights.
    const auto f32 = e2e::work_dir() / fmt::format("{}-{}-for-llama-quantize.gguf", c.model, c.variant);
    const auto theirs_path = e2e::work_dir() / fmt::format("{}-{}-llama-quantize-q8_0.gguf", c.model, c.variant);
    ASSERT_EQ(e2e::run_mlx2gguf({"convert", folder.string(), "--outfile", f32.string(), "--outtype", "f32", "-q"}).exit_code, 0);
    oracle::llama_quantize_file(f32.string(), theirs_path.string(), 7);
    const double theirs = e2e::nmse(oracle::LlamaModel::load(theirs_path.string())->logits(tokens), want);
    std::printf("[ NMSE     ] llama.cpp's own q8_0 of the same weights = %.3e\n", theirs);
    EXPECT_LE(error, theirs * 1.05 + 1e-9);
    EXPECT_LE(error, bars.nmse);
    std::filesystem::remove(f32);
    std::filesystem::remove(theirs_path);
  } else {
    EXPECT_LE(error, bars.nmse);
  }
  if (bars.same_top1) {
    const auto top1 = e2e::compare_top1(got, want, vocab, bars.undecidable_margin);
    std::printf("[ TOP-1    ] %d/%d positions decidable, %d differ\n", top1.decidable, top1.positions, top1.mismatches);
    EXPECT_EQ(top1.mismatches, 0);
    EXPECT_GE(2 * top1.decidable, top1.positions) << "too few positions left to judge";
  }
  std::filesystem::remove(gguf);
}

INSTANTIATE_TEST_SUITE_P(AllArchitectures, ConvertedLogits, testing::ValuesIn(all_cases()), case_name);

}  // namespace
