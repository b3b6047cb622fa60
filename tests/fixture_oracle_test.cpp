// The independent fixtures of tests/data/fixtures: tiny models written by another implementation of how mlx-lm saves
// folders, with llama.cpp's own logits for them. A misunderstanding shared by our generator and our reader cannot
// hide here.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "convert.h"
#include "e2e_support.h"
#include "oracle/llama_oracle.h"
#include "plan/adapter_plan.h"

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

// This fixture is very sensitive to rounding (llama.cpp's q8_0 of it is at 9e-3): quantized files are judged against
// what llama.cpp's own quantizer makes of the same weights, as the fixtures' README advises.
double llama_q4_1_nmse(const e2e::OracleFixture& fixture, const std::vector<std::string>& f32_args, bool with_lora) {
  const fs::path f32 = e2e::work_dir() / fmt::format("fixture-theirs-f32-{}.gguf", ::getpid());
  const fs::path q4_1 = e2e::work_dir() / fmt::format("fixture-theirs-q4_1-{}.gguf", ::getpid());
  const fs::path lora = e2e::work_dir() / fmt::format("fixture-theirs-lora-{}.gguf", ::getpid());
  std::vector<std::string> args = {"convert", fixture.model.string(), "-o", f32.string(), "--outtype", "f32", "-q"};
  args.insert(args.end(), f32_args.begin(), f32_args.end());
  EXPECT_EQ(e2e::run_mlx2gguf(args).exit_code, 0);
  oracle::llama_quantize_file(f32.string(), q4_1.string(), 3);
  auto model = oracle::LlamaModel::load(q4_1.string());
  std::vector<float> logits;
  if (with_lora) {
    EXPECT_EQ(e2e::run_mlx2gguf({"convert-adapter", (fixture.model / "adapters").string(), "--base", fixture.model.string(),
                                 "-o", lora.string(), "-q"}).exit_code, 0);
    logits = model->logits_with_adapter(fixture.tokens, model->load_adapter(lora.string()));
  } else {
    logits = model->logits(fixture.tokens);
  }
  for (const auto& path : {f32, q4_1, lora}) fs::remove(path);
  const double error = e2e::fixture_nmse(logits, fixture.logits);
  std::printf("[ NMSE     ] fixture: llama.cpp's own Q4_1 of the same weights%s vs the oracle = %.3e\n",
              with_lora ? " + the GGUF LoRA" : "", error);
  return error;
}

TEST(FixtureQwen35MoeLora, MergedAutoIsCloserThanLlamaCppsOwnQuantization) {
  const auto fixture = e2e::oracle_fixture("qwen35moe-4bit-lora");
  const std::string adapters = (fixture.model / "adapters").string();
  const double ours = converted_nmse(fixture, {"--adapter-path", adapters}, "lora-auto");
  EXPECT_LE(ours, llama_q4_1_nmse(fixture, {"--adapter-path", adapters}, false));
  EXPECT_LE(ours, 1e-2);
}

// The adapter as a GGUF LoRA on top of the base GGUF, applied by llama.cpp at run time.
double adapter_nmse(const e2e::OracleFixture& fixture, const std::string& base_outtype, const std::string& adapter_outtype) {
  const fs::path base = e2e::work_dir() / fmt::format("fixture-base-{}-{}.gguf", base_outtype, ::getpid());
  const fs::path lora = e2e::work_dir() / fmt::format("fixture-lora-{}-{}.gguf", adapter_outtype, ::getpid());
  auto result = e2e::run_mlx2gguf({"convert", fixture.model.string(), "-o", base.string(), "--outtype", base_outtype, "-q"});
  EXPECT_EQ(result.exit_code, 0) << result.output;
  result = e2e::run_mlx2gguf({"convert-adapter", (fixture.model / "adapters").string(), "--base", fixture.model.string(),
                              "-o", lora.string(), "--outtype", adapter_outtype});
  EXPECT_EQ(result.exit_code, 0) << result.output;
  if (result.exit_code != 0) return INFINITY;
  EXPECT_EQ(oracle::gguf_check_file(lora.string()), "");
  auto model = oracle::LlamaModel::load(base.string());
  const int adapter = model->load_adapter(lora.string());
  const auto logits = model->logits_with_adapter(fixture.tokens, adapter);
  fs::remove(base);
  fs::remove(lora);
  const double error = e2e::fixture_nmse(logits, fixture.logits);
  std::printf("[ NMSE     ] fixture: %s base + %s GGUF LoRA in llama.cpp vs its oracle = %.3e\n", base_outtype.c_str(),
              adapter_outtype.c_str(), error);
  return error;
}

TEST(FixtureQwen35MoeLora, GgufLoraOnF32BaseMatchesLlamaCppOracle) {
  EXPECT_LE(adapter_nmse(e2e::oracle_fixture("qwen35moe-4bit-lora"), "f32", "f32"), 1e-6);
}

TEST(FixtureQwen35MoeLora, GgufLoraOnLosslessBaseIsCloserThanOnLlamaCppsOwnQuantization) {
  const auto fixture = e2e::oracle_fixture("qwen35moe-4bit-lora");
  const double ours = adapter_nmse(fixture, "auto", "f32");
  EXPECT_LE(ours, llama_q4_1_nmse(fixture, {}, true));
  EXPECT_LE(ours, 1e-2);
}

// The silent failures a GGUF LoRA can have: each must move llama.cpp far from the oracle.
double broken_adapter_nmse(const std::function<void(mlx2gguf::ConversionPlan&)>& breakage, const std::string& label) {
  const auto fixture = e2e::oracle_fixture("qwen35moe-4bit-lora");
  const fs::path base = e2e::work_dir() / fmt::format("fixture-broken-base-{}.gguf", ::getpid());
  const fs::path lora = e2e::work_dir() / fmt::format("fixture-broken-lora-{}.gguf", ::getpid());
  EXPECT_EQ(e2e::run_mlx2gguf({"convert", fixture.model.string(), "-o", base.string(), "--outtype", "f32", "-q"}).exit_code, 0);
  const auto source = mlx2gguf::SourceModel::open(fixture.model);
  const auto adapter = mlx2gguf::Adapter::open({fixture.model / "adapters", std::nullopt}, source);
  mlx2gguf::ConversionPlan plan = mlx2gguf::make_adapter_plan(source, *adapter, {});
  breakage(plan);
  mlx2gguf::write_plan(plan, lora, 2, nullptr);
  auto model = oracle::LlamaModel::load(base.string());
  const double error = e2e::fixture_nmse(model->logits_with_adapter(fixture.tokens, model->load_adapter(lora.string())), fixture.logits);
  fs::remove(base);
  fs::remove(lora);
  std::printf("[ NMSE     ] fixture: GGUF LoRA %s vs the oracle = %.3e\n", label.c_str(), error);
  return error;
}

TEST(FixtureQwen35MoeLora, GgufLoraWithoutTheBasesVHeadReorderIsCaught) {
  int reordered = 0;
  EXPECT_GT(broken_adapter_nmse(
                [&](mlx2gguf::ConversionPlan& plan) {
                  for (auto& tensor : plan.tensors) {
                    reordered += !tensor.row_map.empty() || !tensor.column_map.empty();
                    tensor.row_map.clear();
                    tensor.column_map.clear();
                  }
                },
                "without the V-head reorder"),
            1e-2);
  EXPECT_GT(reordered, 0);
}

TEST(FixtureQwen35MoeLora, GgufLoraWithoutMlxScaleIsCaught) {
  EXPECT_GT(broken_adapter_nmse(
                [](mlx2gguf::ConversionPlan& plan) {
                  const double alpha = plan.metadata.get("adapter.lora.alpha")->floats.at(0);
                  plan.metadata.set("adapter.lora.alpha", mlx2gguf::GgufValue::f32(static_cast<float>(alpha / 20.0)));
                },
                "at scale 1 instead of 20"),
            1e-2);
}

TEST(FixtureQwen35MoeLora, BaseWithoutAdapterIsFarFromTheAdaptedOracle) {
  const auto fixture = e2e::oracle_fixture("qwen35moe-4bit-lora");
  EXPECT_GT(converted_nmse(fixture, {"--outtype", "f32"}, "base-f32"), 1e-2);
}

}  // namespace
