// Qwen3-Next end to end: mlx-lm folders (bf16, 4-bit with 8-bit routers) and the Hugging Face checkpoint of
// qwen3_next converted with the mlx2gguf binary, run in real llama.cpp, compared with the reference forward pass of
// the source model. Also the known silent failure modes (+1 twice, gated norm shifted, qkvz split wrongly or into the
// wrong tensor, Qwen3.5's value-head order, raw A_log) must fail that check.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <functional>
#include <map>

#include <unistd.h>

#include "arch/qwen3_next/sanitize_test_support.h"
#include "convert.h"
#include "e2e_support.h"
#include "eval/reference.h"
#include "oracle/llama_oracle.h"
#include "plan/permutations.h"
#include "plan/planner.h"
#include "read/source_model.h"

namespace {

namespace fs = std::filesystem;
using mlx2gguf::ConversionPlan;
using mlx2gguf::IndexMap;
using mlx2gguf::TensorRecipe;

// The test models: the generator's default qwen3_next widths (hidden 128, 4 layers: three Gated DeltaNet, then one
// full attention; 2 key heads and 4 value heads of 32, so value heads pair with key heads in groups of 2) with the
// real Qwen3 tokenizer. Tokens go to 6 of 8 experts, so the expert at the top-k boundary, where activation rounding
// can flip a near-tie, carries little weight (see e2e_support.cpp).
// "widths": Qwen3-Next-80B-A3B's real widths (hidden 2048; 16 query and 2 key/value heads of 256; linear attention
// with 16 key heads and 32 value heads of 128; experts and shared expert of 512) on 2 layers (one Gated DeltaNet, one
// full attention), 4 experts with 3 per token and the generator's tiny tokenizer.
mlx2gguf::gen::TinyModelSpec widths_spec() {
  mlx2gguf::gen::TinyModelSpec s;
  s.model_type = "qwen3_next";
  s.hidden = 2048;
  s.layers = 2;
  s.full_attention_interval = 2;
  s.heads = 16;
  s.kv_heads = 2;
  s.head_dim = 256;
  s.linear_num_key_heads = 16;
  s.linear_num_value_heads = 32;
  s.linear_key_head_dim = 128;
  s.linear_value_head_dim = 128;
  s.experts = 4;
  s.experts_per_tok = 3;
  s.moe_intermediate = 512;
  s.shared_expert_intermediate = 512;
  s.intermediate = 5120;
  s.max_position_embeddings = 262144;
  s.seed = 32;
  return s;
}

mlx2gguf::gen::TinyModelSpec next_spec(const std::string& model) {
  if (model.starts_with("widths")) {
    auto s = widths_spec();
    if (model == "widths-q4g64") s.quant = mlx2gguf::gen::QuantRecipe::parse("affine:4:64");
    return s;
  }
  mlx2gguf::gen::TinyModelSpec s;
  s.model_type = "qwen3_next";
  s.tokenizer_dir = oracle::real_tokenizer_dir("qwen3");
  s.experts = 8;
  s.experts_per_tok = 6;
  s.seed = 31;
  if (model == "hf" || model == "hf-float32") {
    s.layout = "hf";
    s.hf_extra_tensors = true;
  }
  if (model == "q4g64") s.quant = mlx2gguf::gen::QuantRecipe::parse("affine:4:64");
  if (model.ends_with("float32")) s.dtype = "float32";
  if (model == "rope-linear") s.rope_scaling = {{"type", "linear"}, {"factor", 4.0}};
  return s;
}

// bf16 | q4g64 | hf | rope-linear | float32 | hf-float32 | widths | widths-q4g64
fs::path folder_for(const std::string& model) { return e2e::cached_model("qwen3next-" + model, next_spec(model)); }

// Dimensions of next_spec's models.
constexpr int64_t kKeyHeads = 2, kValueHeads = 4, kHeadDim = 32, kPerKey = kValueHeads / kKeyHeads;
constexpr int64_t kKeyDim = kKeyHeads * kHeadDim, kValueDim = kValueHeads * kHeadDim, kConvDim = 2 * kKeyDim + kValueDim;
constexpr int kLinearLayers = 3;

std::vector<int32_t> tokens_for(oracle::LlamaModel& model) {
  const int64_t vocab = std::min<int64_t>(model.n_vocab(), 150000);
  return e2e::probe_tokens(vocab, 16, vocab > 9707 ? 9707 : 1);
}

struct Measured {
  double nmse;
  e2e::Top1Comparison top1;
  std::vector<float> logits;
};

Measured measure(const fs::path& folder, const fs::path& gguf, double undecidable_margin) {
  EXPECT_EQ(oracle::gguf_check_file(gguf.string()), "");
  const auto source = mlx2gguf::SourceModel::open(folder);
  auto model = oracle::LlamaModel::load(gguf.string());
  const auto tokens = tokens_for(*model);
  const auto want = mlx2gguf::reference_logits(source, tokens);
  auto got = model->logits(tokens);
  return {e2e::nmse(got, want), e2e::compare_top1(got, want, model->n_vocab(), undecidable_margin), std::move(got)};
}

std::vector<float> llama_logits(const fs::path& gguf) {
  auto model = oracle::LlamaModel::load(gguf.string());
  return model->logits(tokens_for(*model));
}

void convert(const fs::path& folder, const fs::path& gguf, const std::string& outtype) {
  std::vector<std::string> args = {"convert", folder.string(), "--outfile", gguf.string(), "--outtype", outtype, "-q"};
  // q8_0 is compared with llama.cpp's own q8_0 of the same weights: --pure asks for llama-quantize's exact types
  // (without it, a 4-bit source's tensors keep their lossless Q4_1: tests/quant_mix_mlx_test.cpp).
  if (outtype == "q8_0") args.push_back("--pure");
  const auto result = e2e::run_mlx2gguf(args);
  ASSERT_EQ(result.exit_code, 0) << result.output;
}

struct NextCase {
  std::string model, outtype;
};
void PrintTo(const NextCase& c, std::ostream* os) { *os << c.model << "/" << c.outtype; }

class Qwen3NextLogits : public testing::TestWithParam<NextCase> {};

TEST_P(Qwen3NextLogits, MatchReferenceForwardPass) {
  const NextCase& c = GetParam();
  const auto folder = folder_for(c.model);
  const auto gguf = e2e::work_dir() / fmt::format("next-{}-{}.gguf", c.model, c.outtype);
  ASSERT_NO_FATAL_FAILURE(convert(folder, gguf, c.outtype));

  // Top-1 is judged where 16-bit activation rounding cannot decide it (see convert_e2e_test.cpp), f32 everywhere.
  const double undecidable_margin = c.outtype == "f16" ? 4e-3 : c.outtype == "bf16" ? 4e-2 : 0.0;
  const Measured m = measure(folder, gguf, undecidable_margin);
  std::printf("[ NMSE     ] qwen3next/%s/%s = %.3e\n", c.model.c_str(), c.outtype.c_str(), m.nmse);
  if (c.outtype == "f32" || c.outtype == "f16" || c.outtype == "bf16") {
    EXPECT_LE(m.nmse, c.outtype == "f32" ? 1e-6 : 1e-4);
    std::printf("[ TOP-1    ] %d/%d positions decidable, %d differ\n", m.top1.decidable, m.top1.positions,
                m.top1.mismatches);
    EXPECT_EQ(m.top1.mismatches, 0);
    EXPECT_GE(2 * m.top1.decidable, m.top1.positions) << "too few positions left to judge";
  }
  if (c.outtype == "f32") {
    fs::remove(gguf);
    return;
  }

  // The f32 file of the same weights, and llama.cpp's own conversion of it to the same type.
  if (c.outtype == "auto") {
    // MLX-quantized weights moved losslessly, others in the source's 16-bit type: close to the f32 file.
    const double to_f32 = e2e::nmse(m.logits, llama_logits(e2e::converted_once(folder, "f32")));
    std::printf("[ NMSE     ] qwen3next/%s/auto vs the f32 file of the same weights = %.3e\n", c.model.c_str(), to_f32);
    EXPECT_LE(to_f32, 1e-3);
  } else {
    const auto theirs = e2e::work_dir() / fmt::format("next-{}-{}-llama-quantize.gguf", c.model, c.outtype);
    e2e::llama_quantize_of(folder, c.outtype, theirs);
    const Measured their = measure(folder, theirs, 0.0);
    const double ours_vs_theirs = e2e::nmse(m.logits, their.logits);
    std::printf("[ NMSE     ] llama.cpp's own %s of our f32 file = %.3e; ours vs theirs = %.3e\n", c.outtype.c_str(),
                their.nmse, ours_vs_theirs);
    if (c.outtype == "q8_0") {
      EXPECT_LE(m.nmse, 2e-3);
      EXPECT_LE(m.nmse, their.nmse * 1.05);
    }
    EXPECT_LE(ours_vs_theirs, 1e-10);  // the same types and bytes as llama-quantize
    fs::remove(theirs);
  }
  fs::remove(gguf);
}

std::vector<NextCase> next_cases() {
  std::vector<NextCase> cases;
  for (const auto& model : {"bf16", "q4g64", "hf"})
    for (const auto& outtype : {"f32", "f16", "bf16", "q8_0", "auto"}) cases.push_back({model, outtype});
  cases.push_back({"rope-linear", "f32"});
  cases.push_back({"widths", "f32"});
  cases.push_back({"widths-q4g64", "auto"});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Qwen3Next, Qwen3NextLogits, testing::ValuesIn(next_cases()),
                         [](const testing::TestParamInfo<NextCase>& info) {
                           std::string name = info.param.model + "_" + info.param.outtype;
                           for (char& ch : name)
                             if (ch == '-') ch = '_';
                           return name;
                         });

// One model saved by mlx-lm (norms stored as 1 + w, conv1d [C, K, 1], stacked experts) and as the Hugging Face
// checkpoint (raw norms, conv1d [C, 1, K], one tensor per expert, an MTP head) converts to GGUF files that llama.cpp
// runs identically. The mlx-lm folder is the checkpoint sanitized as mlx-lm does it (the generator draws the
// checkpoint's experts separately); float32 storage, so that 1 + w is not rounded to bf16.
TEST(Qwen3NextLayouts, MlxAndHuggingFaceFoldersGiveTheSameLogitsInLlamaCpp) {
  const auto hf = folder_for("hf-float32");
  const auto mlx = e2e::work_dir() / "models" / "qwen3next-sanitized-float32";
  if (!fs::exists(mlx)) {
    const auto temp = e2e::work_dir() / "models" / fmt::format(".qwen3next-sanitized-float32.{}", ::getpid());
    fs::remove_all(temp);
    mlx2gguf::qwen3_next_test::write_sanitized_folder(hf, folder_for("float32"), temp);
    std::error_code ec;
    fs::rename(temp, mlx, ec);
    if (ec) fs::remove_all(temp);
  }
  std::vector<float> logits[2];
  for (int i = 0; i < 2; ++i) {
    const auto folder = i == 0 ? mlx : hf;
    const auto gguf = e2e::work_dir() / fmt::format("next-layout-{}.gguf", i == 0 ? "mlx" : "hf");
    ASSERT_NO_FATAL_FAILURE(convert(folder, gguf, "f32"));
    const Measured m = measure(folder, gguf, 0.0);
    std::printf("[ NMSE     ] qwen3next/%s-layout/f32 = %.3e\n", i == 0 ? "mlx" : "hf", m.nmse);
    EXPECT_LE(m.nmse, 1e-6);
    logits[i] = m.logits;
    fs::remove(gguf);
  }
  const double difference = e2e::nmse(logits[1], logits[0]);
  std::printf("[ NMSE     ] qwen3next MLX layout vs Hugging Face layout, both f32 in llama.cpp = %.3e\n", difference);
  EXPECT_LE(difference, 1e-12);
}

// Each known silent failure of MLX/HF → GGUF converters, applied to a correct plan, must break the logits check.
class Qwen3NextFailureModes : public testing::Test {
 protected:
  double nmse_after(const std::function<void(ConversionPlan&)>& breakage, const std::string& model = "bf16") {
    const auto folder = folder_for(model);
    const auto source = mlx2gguf::SourceModel::open(folder);
    mlx2gguf::PlanOptions options;
    options.out_type = mlx2gguf::OutType::F32;
    auto plan = mlx2gguf::make_plan(source, options);
    breakage(plan);
    // Tests run in parallel processes: each writes its own file.
    const auto gguf = e2e::work_dir() / fmt::format("next-broken-{}.gguf", testing::UnitTest::GetInstance()->current_test_info()->name());
    mlx2gguf::write_plan(plan, gguf, 0, nullptr);
    const double error = measure(folder, gguf, 0.0).nmse;
    fs::remove(gguf);
    return error;
  }
  static TensorRecipe& tensor(ConversionPlan& plan, const std::string& name) {
    for (auto& t : plan.tensors)
      if (t.name == name) return t;
    throw std::runtime_error("no tensor " + name);
  }
  static void erase(ConversionPlan& plan, const std::string& name) {
    for (auto it = plan.tensors.begin(); it != plan.tensors.end(); ++it)
      if (it->name == name) {
        plan.tensors.erase(it);
        return;
      }
    throw std::runtime_error("no tensor " + name);
  }
  // Replaces attn_qkv and attn_gate of every linear-attention layer by the legacy fused ssm_in holding the rows of
  // in_proj_qkvz in the order `rows` (computed from the layer's correct qkv and gate row maps).
  static void use_ssm_in(ConversionPlan& plan, const std::function<IndexMap(const IndexMap&, const IndexMap&)>& rows) {
    for (int layer = 0; layer < kLinearLayers; ++layer) {
      TensorRecipe ssm_in = tensor(plan, fmt::format("blk.{}.attn_qkv.weight", layer));
      const IndexMap& gate = tensor(plan, fmt::format("blk.{}.attn_gate.weight", layer)).row_map;
      ssm_in.name = fmt::format("blk.{}.ssm_in.weight", layer);
      ssm_in.row_map = rows(ssm_in.row_map, gate);
      ssm_in.shape = {static_cast<int64_t>(ssm_in.row_map.size()), ssm_in.shape[1]};
      if (mlx2gguf::is_identity(ssm_in.row_map)) ssm_in.row_map.clear();
      erase(plan, fmt::format("blk.{}.attn_qkv.weight", layer));
      erase(plan, fmt::format("blk.{}.attn_gate.weight", layer));
      plan.tensors.push_back(std::move(ssm_in));
    }
  }
};

TEST_F(Qwen3NextFailureModes, CorrectPlanPasses) { EXPECT_LE(nmse_after([](auto&) {}), 1e-6); }

// llama.cpp's legacy path splits a raw in_proj_qkvz per key head itself: fed the untouched rows it computes the same
// model, an independent check of the split the mapping writes.
TEST_F(Qwen3NextFailureModes, LegacySsmInWithTheRawRowsAlsoPasses) {
  const double error = nmse_after([](ConversionPlan& plan) {
    use_ssm_in(plan, [](const IndexMap& qkv, const IndexMap&) {
      IndexMap raw;
      for (int64_t r = 0; r < static_cast<int64_t>(qkv.size()) + kValueDim; ++r) raw.push_back(r);
      return raw;
    });
  });
  std::printf("[ NMSE     ] raw in_proj_qkvz as the legacy ssm_in = %.3e\n", error);
  EXPECT_LE(error, 1e-6);
}

TEST_F(Qwen3NextFailureModes, ReorderedQkvzInSsmInFails) {
  const double error = nmse_after([](ConversionPlan& plan) {
    use_ssm_in(plan, [](const IndexMap& qkv, const IndexMap& gate) {
      IndexMap reordered = qkv;
      reordered.insert(reordered.end(), gate.begin(), gate.end());
      return reordered;
    });
  });
  std::printf("[ NMSE     ] reordered qkvz as ssm_in = %.3e\n", error);
  EXPECT_GT(error, 1e-2);
}

TEST_F(Qwen3NextFailureModes, RawQkvzInAttnQkvAndGateFails) {
  const double error = nmse_after([](ConversionPlan& plan) {
    for (int layer = 0; layer < kLinearLayers; ++layer) {
      IndexMap qkv, gate;
      for (int64_t r = 0; r < kConvDim; ++r) qkv.push_back(r);
      for (int64_t r = 0; r < kValueDim; ++r) gate.push_back(kConvDim + r);
      tensor(plan, fmt::format("blk.{}.attn_qkv.weight", layer)).row_map = qkv;
      tensor(plan, fmt::format("blk.{}.attn_gate.weight", layer)).row_map = gate;
    }
  });
  std::printf("[ NMSE     ] raw qkvz rows in attn_qkv + attn_gate (no per-key-head split) = %.3e\n", error);
  EXPECT_GT(error, 1e-2);
}

TEST_F(Qwen3NextFailureModes, SplittingVAndZInTheWrongOrderFails) {
  const double error = nmse_after([](ConversionPlan& plan) {
    for (int layer = 0; layer < kLinearLayers; ++layer) {
      IndexMap& qkv = tensor(plan, fmt::format("blk.{}.attn_qkv.weight", layer)).row_map;
      IndexMap& gate = tensor(plan, fmt::format("blk.{}.attn_gate.weight", layer)).row_map;
      ASSERT_EQ(qkv.size(), static_cast<size_t>(kConvDim));
      std::swap_ranges(qkv.begin() + 2 * kKeyDim, qkv.end(), gate.begin());
    }
  });
  std::printf("[ NMSE     ] v and z swapped in the qkvz split = %.3e\n", error);
  EXPECT_GT(error, 1e-2);
}

// Qwen3.5's converter reorders value heads from grouped to tiled order; qwen3next pairs them with key heads grouped.
TEST_F(Qwen3NextFailureModes, TilingTheValueHeadsLikeQwen35Fails) {
  const double error = nmse_after([](ConversionPlan& plan) {
    const IndexMap heads = mlx2gguf::grouped_to_tiled_heads(kKeyHeads, kValueHeads, 1);
    const IndexMap v_rows = mlx2gguf::grouped_to_tiled_heads(kKeyHeads, kValueHeads, kHeadDim);
    const IndexMap channels = mlx2gguf::with_identity_prefix(2 * kKeyDim, v_rows);
    // ssm_ba holds per key head [b of its value heads | a of them]: new head j takes old head heads[j]'s rows.
    IndexMap ba(2 * kValueHeads);
    for (int64_t j = 0; j < kValueHeads; ++j) {
      const int64_t old = heads[j];
      ba[(j / kPerKey) * 2 * kPerKey + j % kPerKey] = (old / kPerKey) * 2 * kPerKey + old % kPerKey;
      ba[(j / kPerKey) * 2 * kPerKey + kPerKey + j % kPerKey] = (old / kPerKey) * 2 * kPerKey + kPerKey + old % kPerKey;
    }
    for (int layer = 0; layer < kLinearLayers; ++layer) {
      auto name = [&](const char* t) { return fmt::format("blk.{}.{}", layer, t); };
      TensorRecipe& qkv = tensor(plan, name("attn_qkv.weight"));
      qkv.row_map = mlx2gguf::compose(channels, qkv.row_map);
      TensorRecipe& gate = tensor(plan, name("attn_gate.weight"));
      gate.row_map = mlx2gguf::compose(v_rows, gate.row_map);
      tensor(plan, name("ssm_conv1d.weight")).row_map = channels;
      tensor(plan, name("ssm_ba.weight")).row_map = ba;
      tensor(plan, name("ssm_dt.bias")).column_map = heads;
      tensor(plan, name("ssm_a")).column_map = heads;
      tensor(plan, name("ssm_out.weight")).column_map = v_rows;
    }
  });
  std::printf("[ NMSE     ] value heads tiled as for Qwen3.5 = %.3e\n", error);
  EXPECT_GT(error, 1e-2);
}

TEST_F(Qwen3NextFailureModes, AddingTheNormOffsetTwiceFails) {
  const double error = nmse_after([](ConversionPlan& plan) {
    for (auto& t : plan.tensors)
      if (t.name.ends_with("attn_norm.weight") || t.name.ends_with("post_attention_norm.weight") ||
          t.name == "output_norm.weight" || t.name.ends_with("_q_norm.weight") || t.name.ends_with("_k_norm.weight"))
        t.op = mlx2gguf::ValueOp::AddOne;
  });
  std::printf("[ NMSE     ] norms shifted twice = %.3e\n", error);
  EXPECT_GT(error, 1e-2);
}

TEST_F(Qwen3NextFailureModes, ShiftingTheGatedNormFails) {
  const double error = nmse_after([](ConversionPlan& plan) {
    for (auto& t : plan.tensors)
      if (t.name.ends_with("ssm_norm.weight")) t.op = mlx2gguf::ValueOp::AddOne;
  });
  std::printf("[ NMSE     ] linear_attn.norm shifted by 1 = %.3e\n", error);
  EXPECT_GT(error, 1e-2);
}

TEST_F(Qwen3NextFailureModes, WritingRawALogFails) {
  const double error = nmse_after([](ConversionPlan& plan) {
    for (auto& t : plan.tensors)
      if (t.name.ends_with(".ssm_a")) t.op = mlx2gguf::ValueOp::None;
  });
  std::printf("[ NMSE     ] A_log not turned into -exp(A_log) = %.3e\n", error);
  EXPECT_GT(error, 1e-2);
}

// The linear rope scaling is carried by rope.scaling.* keys: a file without them rotates by the raw positions. Only
// the one full-attention layer rotates, 16 of its 64 dims per head, so the error is smaller than the other modes',
// yet hundreds of times the f32 bar (1e-6).
TEST_F(Qwen3NextFailureModes, DroppingTheLinearRopeScalingFails) {
  const double error = nmse_after(
      [](ConversionPlan& plan) {
        const std::string type = "qwen3next.rope.scaling.type", factor = "qwen3next.rope.scaling.factor";
        ASSERT_NE(plan.metadata.get(type), nullptr);
        plan.metadata.erase(type);
        plan.metadata.erase(factor);
      },
      "rope-linear");
  std::printf("[ NMSE     ] linear rope scaling dropped = %.3e\n", error);
  EXPECT_GT(error, 1e-4);
}

TEST_F(Qwen3NextFailureModes, HuggingFaceNormsWithoutOffsetFail) {
  const double error = nmse_after(
      [](ConversionPlan& plan) {
        int shifted = 0;
        for (auto& t : plan.tensors)
          if (t.op == mlx2gguf::ValueOp::AddOne) {
            t.op = mlx2gguf::ValueOp::None;
            ++shifted;
          }
        EXPECT_EQ(shifted, 4 * 2 + 1 + 2);
      },
      "hf");
  std::printf("[ NMSE     ] Hugging Face norms without +1 = %.3e\n", error);
  EXPECT_GT(error, 1e-2);
}

}  // namespace
