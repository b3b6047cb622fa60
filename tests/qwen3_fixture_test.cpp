// The Qwen3 family on the independent fixtures of tests/data/fixtures (written by another implementation of how
// mlx-lm saves folders, with llama.cpp's own logits for them): qwen2-4bit (q/k/v biases, untied, 4-bit g64) and
// qwen3moe-4bit (8 experts top 2, norm_topk_prob, 8-bit routers, 4-bit g64). The f32 conversion must reproduce
// llama.cpp's oracle, and so must the reference forward pass of the mlx folder.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "convert.h"
#include "e2e_support.h"
#include "eval/reference.h"
#include "oracle/llama_oracle.h"
#include "plan/planner.h"
#include "read/source_model.h"

namespace {

namespace fs = std::filesystem;

double converted_nmse(const std::string& name) {
  const auto fixture = e2e::oracle_fixture(name);
  const fs::path gguf = e2e::work_dir() / fmt::format("qwen3fam-fixture-{}-{}.gguf", name, ::getpid());
  const auto result = e2e::run_mlx2gguf({"convert", fixture.model.string(), "--outfile", gguf.string(), "--outtype", "f32", "-q"});
  EXPECT_EQ(result.exit_code, 0) << result.output;
  if (result.exit_code != 0) return INFINITY;
  EXPECT_EQ(oracle::gguf_check_file(gguf.string()), "");
  const auto logits = oracle::LlamaModel::load(gguf.string())->logits(fixture.tokens);
  fs::remove(gguf);
  const double error = e2e::fixture_nmse(logits, fixture.logits);
  std::printf("[ NMSE     ] fixture %s, f32 conversion in llama.cpp vs llama.cpp's oracle = %.3e\n", name.c_str(), error);
  return error;
}

double reference_nmse(const std::string& name) {
  const auto fixture = e2e::oracle_fixture(name);
  const auto logits = mlx2gguf::reference_logits(mlx2gguf::SourceModel::open(fixture.model), fixture.tokens);
  const double error = e2e::fixture_nmse(logits, fixture.logits);
  std::printf("[ NMSE     ] fixture %s, reference forward pass vs llama.cpp's oracle = %.3e\n", name.c_str(), error);
  return error;
}

TEST(FixtureQwen2, F32ConversionMatchesLlamaCppOracle) { EXPECT_LE(converted_nmse("qwen2-4bit"), 1e-6); }

TEST(FixtureQwen2, ReferenceForwardPassMatchesLlamaCppOracle) { EXPECT_LE(reference_nmse("qwen2-4bit"), 1e-6); }

TEST(FixtureQwen3Moe, F32ConversionMatchesLlamaCppOracle) { EXPECT_LE(converted_nmse("qwen3moe-4bit"), 1e-6); }

TEST(FixtureQwen3Moe, ReferenceForwardPassMatchesLlamaCppOracle) { EXPECT_LE(reference_nmse("qwen3moe-4bit"), 1e-6); }

// The oracle is not vacuous: the fixture converted without its q/k/v biases (a file llama.cpp loads) is far from it.
TEST(FixtureQwen2, DroppingTheBiasesIsCaughtByTheOracle) {
  const auto fixture = e2e::oracle_fixture("qwen2-4bit");
  const auto source = mlx2gguf::SourceModel::open(fixture.model);
  mlx2gguf::PlanOptions options;
  options.out_type = mlx2gguf::OutType::F32;
  auto plan = mlx2gguf::make_plan(source, options);
  const size_t before = plan.tensors.size();
  std::erase_if(plan.tensors, [](const mlx2gguf::TensorRecipe& t) { return t.name.ends_with(".bias"); });
  EXPECT_EQ(before - plan.tensors.size(), 6u);
  const fs::path gguf = e2e::work_dir() / fmt::format("qwen3fam-fixture-unbiased-{}.gguf", ::getpid());
  mlx2gguf::write_plan(plan, gguf, 0, nullptr);
  const double error = e2e::fixture_nmse(oracle::LlamaModel::load(gguf.string())->logits(fixture.tokens), fixture.logits);
  fs::remove(gguf);
  std::printf("[ NMSE     ] fixture qwen2-4bit without q/k/v biases vs llama.cpp's oracle = %.3e\n", error);
  EXPECT_GT(error, 1e-2);
}

}  // namespace
