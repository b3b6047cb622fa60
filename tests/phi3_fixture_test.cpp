// The independent Phi-3 fixture (tests/data/fixtures/phi3-bf16): a tiny phi3 folder in Phi-4-mini's shape (fused
// qkv_proj / gate_up_proj, LongRoPE with an original context of 64, partial rotary 0.75, GQA, tied embeddings, bf16,
// an o200k-style byte-level BPE tokenizer) written by another implementation of how mlx-lm saves it, with llama.cpp's
// logits of the same model converted by llama.cpp's own converter (context 256: the long factors).
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
  static const e2e::OracleFixture f = e2e::oracle_fixture("phi3-bf16");
  return f;
}

TEST(FixturePhi3, F32ConversionMatchesLlamaCppOracle) {
  const fs::path gguf = fixture().convert({"--outtype", "f32"}, "f32");
  EXPECT_LE(fixture().llama_nmse(gguf, "f32"), 1e-6);
  fs::remove(gguf);
}

TEST(FixturePhi3, ReferenceForwardPassMatchesLlamaCppOracle) {
  const auto logits = mlx2gguf::reference_logits(mlx2gguf::SourceModel::open(fixture().model), fixture().tokens);
  const double error = e2e::fixture_nmse(logits, fixture().logits);
  std::printf("[ NMSE     ] fixture phi3-bf16: reference forward pass vs llama.cpp's oracle = %.3e\n", error);
  EXPECT_LE(error, 1e-6);
}

// The oracle is not vacuous: the fixture converted without its LongRoPE factors (a file llama.cpp loads) is far from it.
TEST(FixturePhi3, DroppingTheRopeFactorsIsCaughtByTheOracle) {
  const auto source = mlx2gguf::SourceModel::open(fixture().model);
  mlx2gguf::PlanOptions options;
  options.out_type = mlx2gguf::OutType::F32;
  auto plan = mlx2gguf::make_plan(source, options);
  const size_t before = plan.tensors.size();
  std::erase_if(plan.tensors, [](const mlx2gguf::TensorRecipe& t) { return t.name.starts_with("rope_factors_"); });
  EXPECT_EQ(before - plan.tensors.size(), 2u);
  const fs::path gguf = e2e::work_dir() / fmt::format("fixture-phi3-no-factors-{}.gguf", ::getpid());
  mlx2gguf::write_plan(plan, gguf, 0, nullptr);
  EXPECT_GT(fixture().llama_nmse(gguf, "without rope factors"), 1e-2);
  fs::remove(gguf);
}

// The fixture's byte-level BPE tokenizer (Phi-4-mini's kind) tokenizes in llama.cpp as Hugging Face does, with its
// special tokens and chat template.
TEST(FixturePhi3, TokenizerTokenizesLikeHuggingFace) {
  const fs::path gguf = e2e::work_dir() / fmt::format("fixture-phi3-vocab-{}.gguf", ::getpid());
  const auto result = e2e::run_mlx2gguf({"convert", fixture().model.string(), "--outfile", gguf.string(), "-q"});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto model = oracle::LlamaModel::load(gguf.string(), true);
  EXPECT_EQ(model->meta("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(model->n_vocab(), 512);
  const std::vector<std::string> texts = {"Hello world! How are you?", "don't I'll 123456 x", "<|user|>hi<|end|><|assistant|>"};
  const auto want = oracle::hf_tokenize((fixture().model / "tokenizer.json").string(), texts, true);
  for (size_t i = 0; i < texts.size(); ++i) EXPECT_EQ(model->tokenize(texts[i], true, true), want[i]) << texts[i];
  EXPECT_TRUE(model->is_eog(505)) << "<|end|> ends a turn";
  EXPECT_FALSE(model->meta("tokenizer.chat_template").empty());
  fs::remove(gguf);
}

}  // namespace
