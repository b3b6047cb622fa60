// The independent fixtures of tests/data/fixtures: tiny models written by another implementation of how mlx-lm saves
// folders, with llama.cpp's own logits for them. A misunderstanding shared by our generator and our reader cannot
// hide here.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "e2e_support.h"
#include "oracle/llama_oracle.h"

namespace {

namespace fs = std::filesystem;

double converted_nmse(const e2e::OracleFixture& fixture, const std::vector<std::string>& extra_args, const std::string& label) {
  const fs::path gguf = e2e::work_dir() / fmt::format("fixture-{}-{}.gguf", label, ::getpid());
  std::vector<std::string> args = {"convert", fixture.model.string(), "--outfile", gguf.string(), "-q"};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  const auto result = e2e::run_mlx2gguf(args);
  EXPECT_EQ(result.exit_code, 0) << result.output;
  if (result.exit_code != 0) return INFINITY;
  EXPECT_EQ(oracle::gguf_check_file(gguf.string()), "");
  const auto logits = oracle::LlamaModel::load(gguf.string())->logits(fixture.tokens);
  fs::remove(gguf);
  const double error = e2e::fixture_nmse(logits, fixture.logits);
  std::printf("[ NMSE     ] fixture %s vs llama.cpp's oracle = %.3e\n", label.c_str(), error);
  return error;
}

// qwen3_5_moe, 4-bit base with 8-bit routers, LoRA on every Linear and SwitchLinear of the last three layers; the
// oracle is the model with the adapter applied.
TEST(FixtureQwen35MoeLora, MergedF32MatchesLlamaCppOracle) {
  const auto fixture = e2e::oracle_fixture("qwen35moe-4bit-lora");
  EXPECT_LE(converted_nmse(fixture, {"--adapter-path", (fixture.model / "adapters").string(), "--outtype", "f32"}, "lora-f32"), 1e-6);
}

TEST(FixtureQwen35MoeLora, MergedAutoKeepsUntouchedTensorsLossless) {
  const auto fixture = e2e::oracle_fixture("qwen35moe-4bit-lora");
  EXPECT_LE(converted_nmse(fixture, {"--adapter-path", (fixture.model / "adapters").string()}, "lora-auto"), 5e-3);
}

TEST(FixtureQwen35MoeLora, BaseWithoutAdapterIsFarFromTheAdaptedOracle) {
  const auto fixture = e2e::oracle_fixture("qwen35moe-4bit-lora");
  EXPECT_GT(converted_nmse(fixture, {"--outtype", "f32"}, "base-f32"), 1e-2);
}

}  // namespace
