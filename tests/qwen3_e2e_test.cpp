// The Qwen3 family end to end: generated mlx-lm folders of qwen2 (untied and tied), qwen3 and qwen3_moe, in bf16 and
// MLX 4-bit (the MoE's router at 8 bits, as mlx-lm's quant predicate leaves it), converted by the mlx2gguf binary to
// f32, f16, bf16, q8_0 and auto, run in real llama.cpp and compared with the reference forward pass of the source
// model. The known silent failures (qwen2 biases dropped, q/k norms shifted, experts not matching the router, a
// llama-style q/k permutation) must fail that comparison.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>

#include "convert.h"
#include "e2e_support.h"
#include "eval/reference.h"
#include "oracle/llama_oracle.h"
#include "plan/permutations.h"
#include "plan/planner.h"
#include "read/source_model.h"

namespace {

namespace fs = std::filesystem;
using mlx2gguf::gen::TinyModelSpec;

// The family's test models, all with the real Qwen3 tokenizer (151k tokens, pre-tokenizer qwen2). qwen3 and
// qwen3_moe have head_dim 64 where hidden / heads is 32, as Qwen3's own configs differ (128 vs 64 in Qwen3-0.6B).
// The MoE routes each token to 6 of its 8 experts, so that the expert at the top-k boundary carries a small share of
// the routed weight (see model_spec in e2e_support.cpp): a near-tie that llama.cpp's 8-bit activation rounding flips
// there then moves the logits little.
TinyModelSpec qwen_spec(const std::string& model) {
  TinyModelSpec s;
  s.tokenizer_dir = oracle::real_tokenizer_dir("qwen3");
  s.max_position_embeddings = 32768;
  if (model == "qwen2" || model == "qwen2-tied") {
    s.model_type = "qwen2";
    s.tie_embeddings = model == "qwen2-tied";
    s.seed = model == "qwen2" ? 41 : 42;
  } else if (model == "qwen3") {
    s.model_type = "qwen3";
    s.head_dim = 64;
    s.tie_embeddings = true;
    s.seed = 43;
  } else if (model == "qwen3moe") {
    s.model_type = "qwen3_moe";
    s.head_dim = 64;
    s.experts = 8;
    s.experts_per_tok = 6;
    s.moe_intermediate = 128;
    s.seed = 44;
  } else {
    throw std::runtime_error("unknown qwen test model " + model);
  }
  return s;
}

fs::path folder_for(const std::string& model, const std::string& variant) {
  TinyModelSpec spec = qwen_spec(model);
  if (variant == "q4g64") spec.quant = mlx2gguf::gen::QuantRecipe::parse("affine:4:64");
  else if (variant != "bf16") throw std::runtime_error("unknown variant " + variant);
  return e2e::cached_model(fmt::format("qwen3fam-{}-{}", model, variant), spec);
}

std::vector<int32_t> tokens_for(oracle::LlamaModel& model) {
  const int64_t vocab = std::min<int64_t>(model.n_vocab(), 150000);
  return e2e::probe_tokens(vocab, 16, vocab > 9707 ? 9707 : 1);
}

fs::path convert(const fs::path& folder, const std::string& outtype, const std::string& label) {
  const fs::path gguf = e2e::work_dir() / fmt::format("qwen3fam-{}-{}-{}.gguf", label, outtype, ::getpid());
  const auto result = e2e::run_mlx2gguf({"convert", folder.string(), "--outfile", gguf.string(), "--outtype", outtype, "-q"});
  EXPECT_EQ(result.exit_code, 0) << result.output;
  if (result.exit_code != 0) throw std::runtime_error("conversion failed: " + result.output);
  EXPECT_EQ(oracle::gguf_check_file(gguf.string()), "");
  return gguf;
}

std::vector<float> llama_logits(const fs::path& gguf, const std::vector<int32_t>& tokens) {
  return oracle::LlamaModel::load(gguf.string())->logits(tokens);
}

struct QwenCase {
  std::string model, variant, outtype;
};
void PrintTo(const QwenCase& c, std::ostream* os) { *os << c.model << "/" << c.variant << "/" << c.outtype; }

class Qwen3FamilyLogits : public testing::TestWithParam<QwenCase> {};

TEST_P(Qwen3FamilyLogits, MatchReferenceForwardPass) {
  const QwenCase& c = GetParam();
  const fs::path folder = folder_for(c.model, c.variant);
  const std::string label = c.model + "-" + c.variant;
  const fs::path gguf = convert(folder, c.outtype, label);
  auto model = oracle::LlamaModel::load(gguf.string());
  const auto tokens = tokens_for(*model);
  const auto source = mlx2gguf::SourceModel::open(folder);
  const auto want = mlx2gguf::reference_logits(source, tokens);
  const auto got = model->logits(tokens);
  ASSERT_EQ(got.size(), want.size());
  const double error = e2e::nmse(got, want);
  std::printf("[ NMSE     ] qwen3-family/%s/%s/%s = %.3e\n", c.model.c_str(), c.variant.c_str(), c.outtype.c_str(), error);

  // auto keeps a bf16 source in bf16 and moves 4-bit codes losslessly into Q4_1.
  const bool lossless_repack = c.outtype == "auto" && c.variant == "q4g64";
  const std::string judged_as = c.outtype == "auto" ? (lossless_repack ? "repack" : "bf16") : c.outtype;
  if (c.outtype == "auto") {
    mlx2gguf::PlanOptions options;
    const auto plan = mlx2gguf::make_plan(source, options);
    int repacked = 0, bf16 = 0;
    for (const auto& t : plan.tensors) {
      repacked += t.repack;
      bf16 += t.type == mlx2gguf::GgmlType::BF16;
      if (t.name.ends_with("ffn_gate_inp.weight")) {
        EXPECT_EQ(t.type, mlx2gguf::GgmlType::F32) << t.name;
      }
    }
    if (lossless_repack) {
      EXPECT_GE(repacked, 6) << "the 4-bit projections are repacked";
    } else {
      EXPECT_GE(bf16, 6) << "a bf16 source stays bf16";
    }
  }

  if (judged_as == "f32" || judged_as == "f16" || judged_as == "bf16") {
    EXPECT_LE(error, judged_as == "f32" ? 1e-6 : 1e-4);
    // Top-1 where 16-bit activation rounding can decide it (see convert_e2e_test.cpp), f32 everywhere.
    const double margin = judged_as == "f16" ? 4e-3 : judged_as == "bf16" ? 4e-2 : 0.0;
    const auto top1 = e2e::compare_top1(got, want, model->n_vocab(), margin);
    std::printf("[ TOP-1    ] %d/%d positions decidable, %d differ\n", top1.decidable, top1.positions, top1.mismatches);
    EXPECT_EQ(top1.mismatches, 0);
    EXPECT_GE(2 * top1.decidable, top1.positions) << "too few positions left to judge";
  } else {
    // q8_0 and the lossless repack are judged against llama.cpp's run of the f32 file of the same weights.
    const fs::path f32 = convert(folder, "f32", label + "-for-comparison");
    const auto f32_logits = llama_logits(f32, tokens);
    if (judged_as == "q8_0") {
      const fs::path theirs = e2e::work_dir() / fmt::format("qwen3fam-{}-llama-quantize-q8_0-{}.gguf", label, ::getpid());
      oracle::llama_quantize_file(f32.string(), theirs.string(), 7);
      const double their_error = e2e::nmse(llama_logits(theirs, tokens), want);
      std::printf("[ NMSE     ] llama.cpp's own q8_0 of the same weights = %.3e\n", their_error);
      EXPECT_LE(error, 2e-3);
      EXPECT_LE(error, their_error * 1.05 + 1e-9);
      fs::remove(theirs);
    } else {
      const double from_f32 = e2e::nmse(got, f32_logits);
      std::printf("[ NMSE     ] qwen3-family/%s/%s/auto vs the f32 file of the same weights = %.3e\n", c.model.c_str(),
                  c.variant.c_str(), from_f32);
      EXPECT_LE(from_f32, 1e-3);
    }
    fs::remove(f32);
  }
  fs::remove(gguf);
}

std::vector<QwenCase> qwen_cases() {
  std::vector<QwenCase> cases;
  for (const auto& model : {"qwen2", "qwen2-tied", "qwen3", "qwen3moe"})
    for (const auto& variant : {"bf16", "q4g64"})
      for (const auto& outtype : {"f32", "f16", "bf16", "q8_0", "auto"}) cases.push_back({model, variant, outtype});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Qwen3Family, Qwen3FamilyLogits, testing::ValuesIn(qwen_cases()),
                         [](const testing::TestParamInfo<QwenCase>& info) {
                           std::string name = info.param.model + "_" + info.param.variant + "_" + info.param.outtype;
                           for (char& ch : name) if (ch == '-') ch = '_';
                           return name;
                         });

// The Qwen tokenizer is recognised (llama.cpp's "qwen2" pre-tokenizer) and llama.cpp reads the vocabulary whole.
TEST(Qwen3FamilyTokenizer, RealQwenTokenizerIsQwen2BytePairEncoding) {
  for (const std::string model : {"qwen2", "qwen3moe"}) {
    const fs::path folder = folder_for(model, "bf16");
    const auto source = mlx2gguf::SourceModel::open(folder);
    const auto plan = mlx2gguf::make_plan(source, mlx2gguf::PlanOptions{});
    EXPECT_EQ(plan.metadata.get("tokenizer.ggml.model")->strings.at(0), "gpt2");
    EXPECT_EQ(plan.metadata.get("tokenizer.ggml.pre")->strings.at(0), "qwen2");
    const fs::path gguf = convert(folder, "bf16", model + "-tokenizer");
    const auto llama = oracle::LlamaModel::load(gguf.string(), true);
    EXPECT_EQ(llama->meta("tokenizer.ggml.pre"), "qwen2");
    EXPECT_EQ(llama->n_vocab(), source.require("model.embed_tokens.weight").shape().at(0));
    // Qwen's tokenizer adds no BOS token (bos_token null, add_bos_token false).
    EXPECT_EQ(llama->meta("tokenizer.ggml.add_bos_token"), "false");
    EXPECT_EQ(llama->tokenize("Hello world", true, false), llama->tokenize("Hello world", false, false));
    EXPECT_EQ(llama->tokenize("Hello world", false, false), (std::vector<int32_t>{9707, 1879}));
    fs::remove(gguf);
  }
}

// Rope scaling as config.json asks for it (linear, YaRN with mlx-lm's defaults, YaRN with DeepSeek-style mscale keys,
// which become rope.scaling.attn_factor) runs in llama.cpp as the reference computes it.
TEST(Qwen3FamilyRope, ScaledRopeRunsInLlamaCppAsInMlxLm) {
  struct RopeCase {
    std::string name, model;
    nlohmann::json scaling;
  };
  const std::vector<RopeCase> cases = {
      {"linear", "qwen2", {{"type", "linear"}, {"factor", 4.0}}},
      {"yarn", "qwen3", {{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 2048}}},
      {"yarn-default-context", "qwen2", {{"type", "yarn"}, {"factor", 8.0}}},
      {"yarn-mscale", "qwen3", {{"type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 2048},
                                {"mscale", 0.8}, {"mscale_all_dim", 0.5}}},
  };
  for (const auto& c : cases) {
    TinyModelSpec spec = qwen_spec(c.model);
    spec.rope_scaling = c.scaling;
    const fs::path folder = e2e::cached_model("qwen3fam-rope-" + c.name, spec);
    const fs::path gguf = convert(folder, "f32", "rope-" + c.name);
    auto model = oracle::LlamaModel::load(gguf.string());
    const auto tokens = e2e::probe_tokens(150000, 32, 9707);
    const auto source = mlx2gguf::SourceModel::open(folder);
    const auto want = mlx2gguf::reference_logits(source, tokens);
    const double error = e2e::nmse(model->logits(tokens), want);
    std::printf("[ NMSE     ] qwen3-family rope %s (%s) f32 = %.3e\n", c.name.c_str(), c.model.c_str(), error);
    EXPECT_LE(error, 1e-6) << c.name;
    fs::remove(gguf);

    // Without its scaling keys the file runs a plain rope: the comparison sees it.
    mlx2gguf::PlanOptions options;
    options.out_type = mlx2gguf::OutType::F32;
    auto plan = mlx2gguf::make_plan(source, options);
    std::vector<std::string> scaling_keys;
    for (const auto& kv : plan.metadata.entries())
      if (kv.key.find(".rope.scaling.") != std::string::npos) scaling_keys.push_back(kv.key);
    EXPECT_GE(scaling_keys.size(), 2u) << c.name;
    for (const auto& key : scaling_keys) plan.metadata.erase(key);
    const fs::path plain = e2e::work_dir() / fmt::format("qwen3fam-rope-plain-{}-{}.gguf", c.name, ::getpid());
    mlx2gguf::write_plan(plan, plain, 0, nullptr);
    const double plain_error = e2e::nmse(oracle::LlamaModel::load(plain.string())->logits(tokens), want);
    std::printf("[ NMSE     ] qwen3-family rope %s without its rope.scaling keys = %.3e\n", c.name.c_str(), plain_error);
    EXPECT_GT(plain_error, 1e-4) << c.name;
    fs::remove(plain);
  }
}

// Each known silent failure, applied to a correct f32 plan, must break the logits check.
class Qwen3FamilyFailureModes : public testing::Test {
 protected:
  static double nmse_after(const std::string& model, const std::function<void(mlx2gguf::ConversionPlan&)>& breakage) {
    const fs::path folder = folder_for(model, "bf16");
    const auto source = mlx2gguf::SourceModel::open(folder);
    mlx2gguf::PlanOptions options;
    options.out_type = mlx2gguf::OutType::F32;
    auto plan = mlx2gguf::make_plan(source, options);
    breakage(plan);
    const fs::path gguf = e2e::work_dir() / fmt::format("qwen3fam-broken-{}-{}.gguf",
                                                        testing::UnitTest::GetInstance()->current_test_info()->name(), ::getpid());
    mlx2gguf::write_plan(plan, gguf, 0, nullptr);
    auto llama = oracle::LlamaModel::load(gguf.string());
    const auto tokens = tokens_for(*llama);
    const double error = e2e::nmse(llama->logits(tokens), mlx2gguf::reference_logits(source, tokens));
    fs::remove(gguf);
    return error;
  }
  static int for_each(mlx2gguf::ConversionPlan& plan, const std::function<bool(const std::string&)>& which,
                      const std::function<void(mlx2gguf::TensorRecipe&)>& change) {
    int changed = 0;
    for (auto& t : plan.tensors)
      if (which(t.name)) {
        change(t);
        ++changed;
      }
    return changed;
  }
};

TEST_F(Qwen3FamilyFailureModes, CorrectPlansPass) {
  for (const std::string model : {"qwen2", "qwen3", "qwen3moe"}) {
    const double error = nmse_after(model, [](auto&) {});
    std::printf("[ NMSE     ] %s correct f32 plan = %.3e\n", model.c_str(), error);
    EXPECT_LE(error, 1e-6) << model;
  }
}

TEST_F(Qwen3FamilyFailureModes, DroppingQwen2BiasesFails) {
  const double error = nmse_after("qwen2", [](mlx2gguf::ConversionPlan& plan) {
    const size_t before = plan.tensors.size();
    std::erase_if(plan.tensors, [](const mlx2gguf::TensorRecipe& t) { return t.name.ends_with(".bias"); });
    EXPECT_EQ(before - plan.tensors.size(), 6u);  // q, k, v in both layers: llama.cpp loads the file without them
  });
  std::printf("[ NMSE     ] qwen2 without q/k/v biases = %.3e\n", error);
  EXPECT_GT(error, 1e-2);
}

TEST_F(Qwen3FamilyFailureModes, ShiftingQwen3QkNormsByOneFails) {
  for (const std::string model : {"qwen3", "qwen3moe"}) {
    const double error = nmse_after(model, [](mlx2gguf::ConversionPlan& plan) {
      EXPECT_EQ(for_each(plan, [](const std::string& n) { return n.ends_with("_q_norm.weight") || n.ends_with("_k_norm.weight"); },
                         [](auto& t) { t.op = mlx2gguf::ValueOp::AddOne; }),
                4);
    });
    std::printf("[ NMSE     ] %s q/k norms shifted by +1 = %.3e\n", model.c_str(), error);
    EXPECT_GT(error, 1e-2) << model;
  }
}

TEST_F(Qwen3FamilyFailureModes, LlamaStyleQkPermutationFails) {
  for (const std::string model : {"qwen2", "qwen3", "qwen3moe"}) {
    const double error = nmse_after(model, [](mlx2gguf::ConversionPlan& plan) {
      const int64_t head_dim = plan.metadata.get(plan.metadata.get("general.architecture")->strings.at(0) +
                                                 ".attention.key_length")->ints.at(0);
      const int changed = for_each(
          plan, [](const std::string& n) { return n.ends_with("attn_q.weight") || n.ends_with("attn_k.weight") ||
                                                  n.ends_with("attn_q.bias") || n.ends_with("attn_k.bias"); },
          [&](mlx2gguf::TensorRecipe& t) {
            const auto map = mlx2gguf::rope_halves_to_pairs(t.shape[0] / head_dim, head_dim);
            if (t.shape.size() == 1) t.column_map = map;
            else t.row_map = map;
          });
      EXPECT_GE(changed, 4);
    });
    std::printf("[ NMSE     ] %s with llama's q/k rotary permutation = %.3e\n", model.c_str(), error);
    EXPECT_GT(error, 1e-2) << model;
  }
}

TEST_F(Qwen3FamilyFailureModes, ExpertsNotInTheRoutersOrderFail) {
  // Experts stored in reverse order: expert e's rows answer router row E-1-e (a stacking or indexing mistake).
  const double error = nmse_after("qwen3moe", [](mlx2gguf::ConversionPlan& plan) {
    EXPECT_EQ(for_each(plan, [](const std::string& n) { return n.ends_with("_exps.weight"); },
                       [](mlx2gguf::TensorRecipe& t) {
                         const int64_t experts = t.shape[0], rows = t.shape[1];
                         t.row_map.clear();
                         for (int64_t e = experts - 1; e >= 0; --e)
                           for (int64_t r = 0; r < rows; ++r) t.row_map.push_back(e * rows + r);
                       }),
              6);
  });
  std::printf("[ NMSE     ] qwen3moe experts in reverse order of the router = %.3e\n", error);
  EXPECT_GT(error, 1e-2);
}

TEST_F(Qwen3FamilyFailureModes, SwappedGateAndUpExpertsFail) {
  const double error = nmse_after("qwen3moe", [](mlx2gguf::ConversionPlan& plan) {
    for (int layer = 0; layer < 2; ++layer) {
      mlx2gguf::TensorRecipe *gate = nullptr, *up = nullptr;
      for (auto& t : plan.tensors) {
        if (t.name == fmt::format("blk.{}.ffn_gate_exps.weight", layer)) gate = &t;
        if (t.name == fmt::format("blk.{}.ffn_up_exps.weight", layer)) up = &t;
      }
      ASSERT_TRUE(gate && up);
      std::swap(gate->sources, up->sources);
    }
  });
  std::printf("[ NMSE     ] qwen3moe gate and up experts swapped = %.3e\n", error);
  EXPECT_GT(error, 1e-2);
}

TEST_F(Qwen3FamilyFailureModes, RouterRowsShuffledFail) {
  // A router whose rows do not name the experts they score (e.g. an expert axis mistaken when splitting a stack).
  const double error = nmse_after("qwen3moe", [](mlx2gguf::ConversionPlan& plan) {
    EXPECT_EQ(for_each(plan, [](const std::string& n) { return n.ends_with("ffn_gate_inp.weight"); },
                       [](mlx2gguf::TensorRecipe& t) { t.row_map = {1, 0, 3, 2, 5, 4, 7, 6}; }),
              2);
  });
  std::printf("[ NMSE     ] qwen3moe router rows swapped in pairs = %.3e\n", error);
  EXPECT_GT(error, 1e-2);
}

}  // namespace
