// Qwen3.5 / Qwen3.6 end to end: mlx-lm and Hugging Face folders of qwen3_5_moe and qwen3_5 converted with the
// mlx2gguf binary, run in real llama.cpp, compared with the reference forward pass of the source model. Also the
// known silent failure modes (no V-head reorder, +1 twice, raw A_log, in_proj_a/b swapped) must fail that check.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <map>

#include "convert.h"
#include "e2e_support.h"
#include "eval/reference.h"
#include "oracle/llama_oracle.h"
#include "plan/planner.h"
#include "read/source_model.h"

namespace {

namespace fs = std::filesystem;

struct QwenCase {
  std::string model, outtype;
};
void PrintTo(const QwenCase& c, std::ostream* os) { *os << c.model << "/" << c.outtype; }

// Test model names → shared tiny models (tests/e2e_support.h).
fs::path folder_for(const std::string& model) {
  const std::map<std::string, std::pair<std::string, std::string>> folders = {
      {"moe-bf16", {"qwen35moe", "bf16"}},         {"moe-q4g64", {"qwen35moe", "q4g64"}},
      {"moe-hf", {"qwen35moe-hf", "bf16"}},        {"dense-bf16", {"qwen35", "bf16"}},
      {"dense-q4g64", {"qwen35", "q4g64"}},        {"widths-bf16", {"qwen36-widths", "bf16"}},
      {"widths-q4g64", {"qwen36-widths", "q4g64"}}, {"widths-hf", {"qwen36-widths-hf", "bf16"}},
  };
  const auto& [name, variant] = folders.at(model);
  return e2e::model_folder(name, variant);
}

struct Measured {
  double nmse;
  e2e::Top1Comparison top1;
};

std::vector<int32_t> tokens_for(oracle::LlamaModel& model) {
  const int64_t vocab = std::min<int64_t>(model.n_vocab(), 150000);
  return e2e::probe_tokens(vocab, 16, vocab > 9707 ? 9707 : 1);
}

Measured measure(const fs::path& folder, const fs::path& gguf, double undecidable_margin) {
  EXPECT_EQ(oracle::gguf_check_file(gguf.string()), "");
  const auto source = mlx2gguf::SourceModel::open(folder);
  auto model = oracle::LlamaModel::load(gguf.string());
  const auto tokens = tokens_for(*model);
  const auto want = mlx2gguf::reference_logits(source, tokens);
  const auto got = model->logits(tokens);
  return {e2e::nmse(got, want), e2e::compare_top1(got, want, model->n_vocab(), undecidable_margin)};
}

class Qwen35Logits : public testing::TestWithParam<QwenCase> {};

TEST_P(Qwen35Logits, MatchReferenceForwardPass) {
  const QwenCase& c = GetParam();
  const auto folder = folder_for(c.model);
  const auto gguf = e2e::work_dir() / fmt::format("qwen-{}-{}.gguf", c.model, c.outtype);
  std::vector<std::string> args = {"convert", folder.string(), "--outfile", gguf.string(), "--outtype", c.outtype};
  // q8_0 is compared below with llama.cpp's own q8_0 of the same weights: --pure asks for llama-quantize's exact
  // types (without it, a 4-bit source's tensors keep their lossless Q4_1: tests/quant_mix_mlx_test.cpp).
  if (c.outtype == "q8_0") args.push_back("--pure");
  const auto result = e2e::run_mlx2gguf(args);
  ASSERT_EQ(result.exit_code, 0) << result.output;

  // Top-1 is judged where 16-bit activation rounding can decide it (see convert_e2e_test.cpp), f32 everywhere.
  const double undecidable_margin = c.outtype == "f16" ? 4e-3 : c.outtype == "bf16" ? 4e-2 : 0.0;
  const Measured m = measure(folder, gguf, undecidable_margin);
  std::printf("[ NMSE     ] qwen/%s/%s = %.3e\n", c.model.c_str(), c.outtype.c_str(), m.nmse);
  const double bar = c.outtype == "f32" ? 1e-6 : c.outtype == "q8_0" ? 2e-3 : 1e-4;
  EXPECT_LE(m.nmse, bar);
  if (c.outtype != "q8_0") {
    std::printf("[ TOP-1    ] %d/%d positions decidable, %d differ\n", m.top1.decidable, m.top1.positions,
                m.top1.mismatches);
    EXPECT_EQ(m.top1.mismatches, 0);
    EXPECT_GE(2 * m.top1.decidable, m.top1.positions) << "too few positions left to judge";
  }
  if (c.outtype != "f32") {
    // Also: the file runs exactly like llama.cpp's own conversion of the same f32 weights to the same type.
    const auto theirs = e2e::work_dir() / fmt::format("qwen-{}-llama-quantize-{}.gguf", c.model, c.outtype);
    e2e::llama_quantize_of(folder, c.outtype, theirs);
    auto ours_model = oracle::LlamaModel::load(gguf.string());
    auto their_model = oracle::LlamaModel::load(theirs.string());
    const auto tokens = tokens_for(*ours_model);
    const double difference = e2e::nmse(ours_model->logits(tokens), their_model->logits(tokens));
    std::printf("[ NMSE     ] llama.cpp's own %s of the same weights: ours vs theirs = %.3e\n", c.outtype.c_str(),
                difference);
    EXPECT_LE(difference, 1e-10);
    fs::remove(theirs);
  }
  fs::remove(gguf);
}

std::vector<QwenCase> qwen_cases() {
  std::vector<QwenCase> cases;
  for (const auto& model : {"moe-bf16", "moe-q4g64", "moe-hf", "dense-bf16", "dense-q4g64"})
    for (const auto& outtype : {"f32", "f16", "bf16", "q8_0"}) cases.push_back({model, outtype});
  for (const auto& model : {"widths-bf16", "widths-q4g64", "widths-hf"}) cases.push_back({model, "f32"});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Qwen35, Qwen35Logits, testing::ValuesIn(qwen_cases()),
                         [](const testing::TestParamInfo<QwenCase>& info) {
                           std::string name = info.param.model + "_" + info.param.outtype;
                           for (char& ch : name) if (ch == '-') ch = '_';
                           return name;
                         });

// The same model saved by mlx-lm (norms stored as 1 + w, conv1d [C, K, 1], stacked experts) and as the Hugging
// Face checkpoint (raw norms, conv1d [C, 1, K], fused gate_up experts) converts to GGUF files that llama.cpp runs
// identically. Float32 storage, so that mlx-lm's 1 + w is not rounded to bf16 and both folders hold one model.
TEST(Qwen35Layouts, MlxAndHuggingFaceFoldersGiveTheSameLogitsInLlamaCpp) {
  auto spec = e2e::model_spec("qwen35moe");
  spec.dtype = "float32";
  const auto mlx = e2e::cached_model("qwen35moe-float32", spec);
  auto hf_spec = e2e::model_spec("qwen35moe-hf");
  hf_spec.dtype = "float32";
  const auto hf = e2e::cached_model("qwen35moe-hf-float32", hf_spec);
  std::vector<float> logits[2];
  for (int i = 0; i < 2; ++i) {
    const auto folder = i == 0 ? mlx : hf;
    const auto gguf = e2e::work_dir() / fmt::format("qwen-layout-{}.gguf", i == 0 ? "mlx" : "hf");
    const auto result = e2e::run_mlx2gguf({"convert", folder.string(), "-o", gguf.string(), "--outtype", "f32", "-q"});
    ASSERT_EQ(result.exit_code, 0) << result.output;
    auto model = oracle::LlamaModel::load(gguf.string());
    logits[i] = model->logits(tokens_for(*model));
    fs::remove(gguf);
  }
  const double difference = e2e::nmse(logits[1], logits[0]);
  std::printf("[ NMSE     ] qwen35moe MLX layout vs Hugging Face layout, both f32 in llama.cpp = %.3e\n", difference);
  EXPECT_LE(difference, 1e-10);
}

// Each known silent failure of MLX/HF → GGUF converters, applied to a correct plan, must break the logits check.
class Qwen35FailureModes : public testing::Test {
 protected:
  double nmse_after(const std::function<void(mlx2gguf::ConversionPlan&)>& breakage, const std::string& model = "moe-bf16") {
    const auto folder = folder_for(model);
    const auto source = mlx2gguf::SourceModel::open(folder);
    mlx2gguf::PlanOptions options;
    options.out_type = mlx2gguf::OutType::F32;
    auto plan = mlx2gguf::make_plan(source, options);
    breakage(plan);
    // Tests run in parallel processes: each writes its own file.
    const auto gguf = e2e::work_dir() / fmt::format("qwen-broken-{}.gguf", testing::UnitTest::GetInstance()->current_test_info()->name());
    mlx2gguf::write_plan(plan, gguf, 0, nullptr);
    const double error = measure(folder, gguf, 0.0).nmse;
    fs::remove(gguf);
    return error;
  }
  static mlx2gguf::TensorRecipe& tensor(mlx2gguf::ConversionPlan& plan, const std::string& name) {
    for (auto& t : plan.tensors)
      if (t.name == name) return t;
    throw std::runtime_error("no tensor " + name);
  }
};

TEST_F(Qwen35FailureModes, CorrectPlanPasses) { EXPECT_LE(nmse_after([](auto&) {}), 1e-6); }

TEST_F(Qwen35FailureModes, DroppingTheVHeadReorderFails) {
  const double error = nmse_after([](mlx2gguf::ConversionPlan& plan) {
    for (auto& t : plan.tensors) {
      if (t.name.find("attn_qkv") != std::string::npos || t.name.find("attn_gate") != std::string::npos ||
          t.name.find("ssm_beta") != std::string::npos || t.name.find("ssm_alpha") != std::string::npos ||
          t.name.find("ssm_conv1d") != std::string::npos)
        t.row_map.clear();
      if (t.name.find("ssm_dt") != std::string::npos || t.name.find("ssm_a") != std::string::npos ||
          t.name.find("ssm_out") != std::string::npos)
        t.column_map.clear();
    }
  });
  std::printf("[ NMSE     ] without V-head reorder = %.3e\n", error);
  EXPECT_GT(error, 1e-2);
}

TEST_F(Qwen35FailureModes, AddingTheNormOffsetTwiceFails) {
  const double error = nmse_after([](mlx2gguf::ConversionPlan& plan) {
    for (auto& t : plan.tensors)
      if (t.name.ends_with("attn_norm.weight") || t.name.ends_with("post_attention_norm.weight") ||
          t.name == "output_norm.weight" || t.name.ends_with("_q_norm.weight") || t.name.ends_with("_k_norm.weight"))
        t.op = mlx2gguf::ValueOp::AddOne;
  });
  std::printf("[ NMSE     ] norms shifted twice = %.3e\n", error);
  EXPECT_GT(error, 1e-2);
}

TEST_F(Qwen35FailureModes, WritingRawALogFails) {
  const double error = nmse_after([](mlx2gguf::ConversionPlan& plan) {
    for (auto& t : plan.tensors)
      if (t.name.ends_with(".ssm_a")) t.op = mlx2gguf::ValueOp::None;
  });
  std::printf("[ NMSE     ] A_log not turned into -exp(A_log) = %.3e\n", error);
  EXPECT_GT(error, 1e-2);
}

TEST_F(Qwen35FailureModes, SwappingInProjAAndBFails) {
  const double error = nmse_after([](mlx2gguf::ConversionPlan& plan) {
    for (int64_t layer = 0; layer < 3; ++layer)
      std::swap(tensor(plan, fmt::format("blk.{}.ssm_alpha.weight", layer)).sources,
                tensor(plan, fmt::format("blk.{}.ssm_beta.weight", layer)).sources);
  });
  std::printf("[ NMSE     ] in_proj_a and in_proj_b swapped = %.3e\n", error);
  EXPECT_GT(error, 1e-2);
}

TEST_F(Qwen35FailureModes, HuggingFaceNormsWithoutOffsetFail) {
  const double error = nmse_after(
      [](mlx2gguf::ConversionPlan& plan) {
        for (auto& t : plan.tensors)
          if (t.op == mlx2gguf::ValueOp::AddOne) t.op = mlx2gguf::ValueOp::None;
      },
      "moe-hf");
  std::printf("[ NMSE     ] Hugging Face norms without +1 = %.3e\n", error);
  EXPECT_GT(error, 1e-2);
}

}  // namespace
