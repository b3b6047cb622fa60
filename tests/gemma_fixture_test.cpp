// The independent Gemma 3 fixture (tests/data/fixtures/gemma3-4bit): a tiny gemma3_text folder written by another
// implementation of how mlx-lm saves it (7 layers: five local with window 8 and rope base 1e4, one global with 1e6,
// one local; raw norm weights; tied; 4-bit affine g64; SentencePiece tokenizer), with llama.cpp's logits of the same
// model converted by llama.cpp's own converter. The f32 conversion and the reference forward pass must reproduce the
// oracle; the lossless 4-bit conversion must be at least as close as llama.cpp's own Q4_1 of the same weights; the
// oracle catches norms written without their + 1.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "convert.h"
#include "e2e_support.h"
#include "eval/reference.h"
#include "oracle/llama_oracle.h"
#include "plan/planner.h"
#include "read/source_model.h"

namespace {

namespace fs = std::filesystem;

const e2e::OracleFixture& fixture() {
  static const e2e::OracleFixture f = e2e::oracle_fixture("gemma3-4bit");
  return f;
}

TEST(FixtureGemma3, F32ConversionMatchesLlamaCppOracle) {
  const fs::path gguf = fixture().convert({"--outtype", "f32"}, "f32");
  EXPECT_LE(fixture().llama_nmse(gguf, "f32"), 1e-6);
  fs::remove(gguf);
}

TEST(FixtureGemma3, ReferenceForwardPassMatchesLlamaCppOracle) {
  const auto logits = mlx2gguf::reference_logits(mlx2gguf::SourceModel::open(fixture().model), fixture().tokens);
  const double error = e2e::fixture_nmse(logits, fixture().logits);
  std::printf("[ NMSE     ] fixture gemma3-4bit: reference forward pass vs llama.cpp's oracle = %.3e\n", error);
  EXPECT_LE(error, 1e-6);
}

TEST(FixtureGemma3, AutoMovesThe4BitWeightsAndIsAsCloseAsLlamaCppsOwnQ4_1) {
  const fs::path ours = fixture().convert({}, "auto");
  const double our_error = fixture().llama_nmse(ours, "auto (lossless 4-bit)");
  const fs::path f32 = fixture().convert({"--outtype", "f32"}, "for-quantize");
  const fs::path theirs = e2e::work_dir() / fmt::format("fixture-gemma3-theirs-{}.gguf", ::getpid());
  oracle::llama_quantize_file(f32.string(), theirs.string(), 3);  // LLAMA_FTYPE_MOSTLY_Q4_1
  const double their_error = fixture().llama_nmse(theirs, "llama.cpp's own Q4_1 of the same weights");
  EXPECT_LE(our_error, their_error * 1.05);
  EXPECT_LE(our_error, 1e-2);
  for (const auto& path : {ours, f32, theirs}) fs::remove(path);
}

TEST(FixtureGemma3, NormsWithoutTheirOneAreCaughtByTheOracle) {
  const auto source = mlx2gguf::SourceModel::open(fixture().model);
  mlx2gguf::PlanOptions options;
  options.out_type = mlx2gguf::OutType::F32;
  auto plan = mlx2gguf::make_plan(source, options);
  int shifted = 0;
  for (auto& t : plan.tensors)
    if (t.name.ends_with("norm.weight")) {
      shifted += t.op == mlx2gguf::ValueOp::AddOne;
      t.op = mlx2gguf::ValueOp::None;
      t.generated.clear();
    }
  EXPECT_EQ(shifted, 7 * 6 + 1);
  const fs::path gguf = e2e::work_dir() / fmt::format("fixture-gemma3-raw-norms-{}.gguf", ::getpid());
  mlx2gguf::write_plan(plan, gguf, 0, nullptr);
  const double error = fixture().llama_nmse(gguf, "with raw norm weights");
  fs::remove(gguf);
  EXPECT_GT(error, 1e-2);
}

TEST(FixtureGemma3, TokenizesLikeHuggingFace) {
  const fs::path gguf = fixture().convert({"--outtype", "f32"}, "tokenizer");
  const auto model = oracle::LlamaModel::load(gguf.string(), true);
  const std::vector<std::string> texts = {"Hello world, hello again.", "  two  spaces\nand a newline",
                                          "<start_of_turn>user\nhi<end_of_turn>\n"};
  const auto want = oracle::hf_tokenize((fixture().model / "tokenizer.json").string(), texts, true);
  for (size_t i = 0; i < texts.size(); ++i) EXPECT_EQ(model->tokenize(texts[i], true, true), want[i]) << texts[i];
  fs::remove(gguf);
}

// A folder with only the SentencePiece tokenizer.model (as older Gemma downloads have) gives the same tokens.
TEST(FixtureGemma3, TheSentencePieceModelAloneTokenizesLikeHuggingFace) {
  const fs::path dir = e2e::work_dir() / fmt::format("fixture-gemma3-spm-only-{}", ::getpid());
  fs::remove_all(dir);
  fs::copy(fixture().model, dir);
  fs::remove(dir / "tokenizer.json");
  const fs::path gguf = e2e::work_dir() / fmt::format("fixture-gemma3-spm-only-{}.gguf", ::getpid());
  const auto result = e2e::run_mlx2gguf({"convert", dir.string(), "--outfile", gguf.string(), "--outtype", "f32", "-q"});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto model = oracle::LlamaModel::load(gguf.string(), true);
  const std::vector<std::string> texts = {"Hello world, hello again.", "  two  spaces\nand a newline",
                                          "<start_of_turn>user\nhi<end_of_turn>\n"};
  const auto want = oracle::hf_tokenize((fixture().model / "tokenizer.json").string(), texts, true);
  for (size_t i = 0; i < texts.size(); ++i) EXPECT_EQ(model->tokenize(texts[i], true, true), want[i]) << texts[i];
  EXPECT_EQ(model->meta("tokenizer.ggml.add_space_prefix"), "false");
  fs::remove(gguf);
  fs::remove_all(dir);
}

}  // namespace
