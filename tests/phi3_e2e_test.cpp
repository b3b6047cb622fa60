// Phi-3 end to end: mlx-lm phi3 folders (Phi-4-mini's shape: GQA, partial rotary 0.75, LongRoPE, tied; and a
// Phi-3-mini-like one: plain rope, untied, the Llama 2 SentencePiece tokenizer Phi-3 derives from) in bf16 and MLX
// affine 4-bit, converted by the mlx2gguf binary to f32, f16, bf16, q8_0 and auto, run in real llama.cpp and compared
// with the reference forward pass of the source folder.
//
// LongRoPE: mlx-lm always rotates with the long factors; llama.cpp uses them when its context per sequence (at least
// 256: it pads the context to a multiple of 256) exceeds rope.scaling.original_context_length, the short ones otherwise.
// The main models have an original context of 32, so llama.cpp computes what mlx-lm computes; a model with an original
// context of 256 shows the other case: llama.cpp then matches the short-factor (Hugging Face) reading, not mlx-lm's.
// The silent traps (rope factors lost, gate/up swapped, q/k/v split wrong, partial rotary lost, attention factor lost)
// must fail the logits check.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <map>
#include <mutex>

#include "arch/phi3/reference.h"
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

constexpr int kProbeLength = 48;
constexpr int kOriginalContext = 32;

// hidden 128, 4 query heads of 32 sharing 2 key/value heads, 24 rotated dims per head, LongRoPE over an original
// context of 32 extended to 4096 (attention factor sqrt(1 + ln 128 / ln 32)), tied embeddings, built-in tokenizer.
mlx2gguf::gen::TinyModelSpec phi4_mini_like_spec() {
  mlx2gguf::gen::TinyModelSpec s;
  s.model_type = "phi3";
  s.hidden = 128;
  s.layers = 2;
  s.heads = 4;
  s.kv_heads = 2;
  s.intermediate = 192;
  s.tie_embeddings = true;
  s.rope_scaling = {{"type", "longrope"}};
  s.max_position_embeddings = 4096;
  s.extra_config = {{"partial_rotary_factor", 0.75}, {"original_max_position_embeddings", kOriginalContext}};
  s.seed = 41;
  return s;
}

// Phi-3-mini-4k's kind: plain rope, every head dimension rotated, MHA, untied head, the Llama 2 tokenizer.
mlx2gguf::gen::TinyModelSpec phi3_mini_like_spec() {
  mlx2gguf::gen::TinyModelSpec s;
  s.model_type = "phi3";
  s.hidden = 128;
  s.layers = 2;
  s.heads = 4;
  s.kv_heads = 4;
  s.intermediate = 192;
  s.max_position_embeddings = 4096;
  s.tokenizer_dir = oracle::real_tokenizer_dir("llama2");
  s.seed = 43;
  return s;
}

// "longrope" / "plain" (model) × "bf16" / "q4g64" (layout); "longrope-partial-plain": Phi-4-mini's partial rotary
// without LongRoPE; "longrope-orig256": original context 256.
fs::path folder_for(const std::string& model, const std::string& layout) {
  mlx2gguf::gen::TinyModelSpec spec = model == "plain" ? phi3_mini_like_spec() : phi4_mini_like_spec();
  if (model == "partial-plain") spec.rope_scaling = nullptr;
  if (model == "orig256") spec.extra_config["original_max_position_embeddings"] = 256;
  if (layout == "q4g64") spec.quant = mlx2gguf::gen::QuantRecipe::parse("affine:4:64");
  else if (layout != "bf16") throw std::runtime_error("unknown layout " + layout);
  // Not named phi3-…: llama.cpp gives models whose general.name (the folder's name) contains "phi3" Phi-3's token
  // attributes, and refuses to load a vocabulary without Phi-3's </s>, <unk>, <s> and <|endoftext|>.
  return e2e::cached_model(fmt::format("tinyphi-{}-{}", model, layout), spec);
}

std::vector<int32_t> probe(const fs::path& folder) {
  const auto source = mlx2gguf::SourceModel::open(folder);
  const int64_t vocab = source.require("model.embed_tokens.weight").shape().at(0);
  return e2e::probe_tokens(vocab, kProbeLength, 1);
}

const std::vector<float>& reference_for(const fs::path& folder) {
  static std::mutex mutex;
  static std::map<std::string, std::vector<float>> cache;
  std::lock_guard lock(mutex);
  auto& logits = cache[folder.string()];
  if (logits.empty()) logits = mlx2gguf::reference_logits(mlx2gguf::SourceModel::open(folder), probe(folder));
  return logits;
}

fs::path convert(const fs::path& folder, const std::string& outtype, const std::string& label) {
  const fs::path gguf = e2e::work_dir() / fmt::format("phi3-{}-{}-{}.gguf", label, outtype, ::getpid());
  const auto result = e2e::run_mlx2gguf({"convert", folder.string(), "-o", gguf.string(), "--outtype", outtype, "-q"});
  if (result.exit_code != 0) throw std::runtime_error(result.output);
  return gguf;
}

std::vector<float> llama_logits(const fs::path& gguf, const std::vector<int32_t>& tokens) {
  return oracle::LlamaModel::load(gguf.string())->logits(tokens);
}

struct Phi3Case {
  std::string model, layout, outtype;
};
void PrintTo(const Phi3Case& c, std::ostream* os) { *os << c.model << "/" << c.layout << "/" << c.outtype; }

class Phi3Logits : public testing::TestWithParam<Phi3Case> {};

TEST_P(Phi3Logits, MatchReferenceForwardPass) {
  const Phi3Case& c = GetParam();
  const fs::path folder = folder_for(c.model, c.layout);
  const std::string label = c.model + "-" + c.layout;
  const fs::path gguf = convert(folder, c.outtype, label);
  ASSERT_EQ(oracle::gguf_check_file(gguf.string()), "");
  const auto tokens = probe(folder);
  const auto& want = reference_for(folder);
  const auto got = llama_logits(gguf, tokens);
  const double error = e2e::nmse(got, want);
  std::printf("[ NMSE     ] phi3/%s/%s/%s vs reference = %.3e\n", c.model.c_str(), c.layout.c_str(), c.outtype.c_str(), error);

  const bool repack = c.outtype == "auto" && c.layout == "q4g64";
  if (c.outtype == "f32") {
    EXPECT_LE(error, 1e-6);
  } else if (c.outtype == "f16" || c.outtype == "bf16" || (c.outtype == "auto" && !repack)) {
    EXPECT_LE(error, 1e-4);
  } else {
    const fs::path f32 = convert(folder, "f32", label + "-for-comparison");
    if (c.outtype == "q8_0") {
      const fs::path theirs = e2e::work_dir() / fmt::format("phi3-{}-theirs-q8_0-{}.gguf", label, ::getpid());
      oracle::llama_quantize_file(f32.string(), theirs.string(), 7);
      const double their_error = e2e::nmse(llama_logits(theirs, tokens), want);
      std::printf("[ NMSE     ] llama.cpp's own q8_0 of the same weights vs reference = %.3e (ratio %.3f)\n", their_error,
                  error / their_error);
      EXPECT_LE(error, 2e-3);
      EXPECT_LE(error, their_error * 1.05 + 1e-9);
      fs::remove(theirs);
    } else {
      // The fused 4-bit projections move losslessly: ggml reads back exactly MLX's values.
      const auto source = mlx2gguf::SourceModel::open(folder);
      const auto plan = mlx2gguf::make_plan(source, {});
      const auto file = mlx2gguf::GgufFile::read(gguf);
      const mlx2gguf::MappedFile bytes(gguf);
      int repacked = 0;
      int64_t mismatches = 0;
      for (size_t t = 0; t < plan.tensors.size(); ++t) {
        const auto& recipe = plan.tensors[t];
        if (!recipe.repack) continue;
        ++repacked;
        const auto& info = file.tensors.at(t);
        std::vector<float> mlx(static_cast<size_t>(recipe.row_count() * recipe.row_length()));
        mlx2gguf::read_recipe_rows(recipe, 0, recipe.row_count(), mlx.data());
        const auto ggml = oracle::ggml_dequantize(static_cast<int>(info.type),
                                                  bytes.bytes().data() + file.data_start + info.offset, info.element_count());
        EXPECT_EQ(ggml.size(), mlx.size()) << recipe.name;
        for (size_t i = 0; i < std::min(mlx.size(), ggml.size()); ++i)
          mismatches += !(std::memcmp(&mlx[i], &ggml[i], 4) == 0 || (mlx[i] == 0.0f && ggml[i] == 0.0f));
      }
      std::printf("[ REPACK   ] phi3/%s/q4g64: %d tensors repacked, %lld elements differ from MLX's\n", c.model.c_str(),
                  repacked, static_cast<long long>(mismatches));
      EXPECT_GE(repacked, 4 * 2) << "qkv, output, up and down of each layer";
      EXPECT_EQ(mismatches, 0);
      const double from_f32 = e2e::nmse(got, llama_logits(f32, tokens));
      std::printf("[ NMSE     ] phi3/%s/q4g64/auto vs the f32 file of the same weights = %.3e\n", c.model.c_str(), from_f32);
      EXPECT_LE(from_f32, 1e-3);
    }
    fs::remove(f32);
  }
  fs::remove(gguf);
}

std::vector<Phi3Case> cases() {
  std::vector<Phi3Case> all;
  for (const char* model : {"longrope", "plain"})
    for (const char* layout : {"bf16", "q4g64"})
      for (const char* outtype : {"f32", "f16", "bf16", "q8_0", "auto"}) all.push_back({model, layout, outtype});
  all.push_back({"partial-plain", "bf16", "f32"});
  all.push_back({"partial-plain", "bf16", "bf16"});
  return all;
}

INSTANTIATE_TEST_SUITE_P(Phi3, Phi3Logits, testing::ValuesIn(cases()), [](const testing::TestParamInfo<Phi3Case>& info) {
  std::string name = info.param.model + "_" + info.param.layout + "_" + info.param.outtype;
  for (char& ch : name)
    if (ch == '-') ch = '_';
  return name;
});

// ---- LongRoPE's two readings ---------------------------------------------------------------------------------------

// With an original context of 256, llama.cpp's context (256 for this probe) does not exceed it: llama.cpp rotates with
// the short factors, as Hugging Face does for sequences within the original context, while mlx-lm uses the long ones.
// The file is right for the first reading and, at a context above 256, for mlx-lm's.
TEST(Phi3LongRope, WithinTheOriginalContextLlamaCppUsesTheShortFactors) {
  const fs::path folder = folder_for("orig256", "bf16");
  const fs::path gguf = convert(folder, "f32", "orig256");
  const auto tokens = probe(folder);
  const auto got = llama_logits(gguf, tokens);
  const auto source = mlx2gguf::SourceModel::open(folder);
  const double vs_short = e2e::nmse(got, mlx2gguf::ref::phi3_reference_with(source, tokens, mlx2gguf::ref::LongRopeFactors::Short));
  const double vs_mlx = e2e::nmse(got, mlx2gguf::reference_logits(source, tokens));
  std::printf("[ NMSE     ] phi3 original context 256, llama.cpp context 256: vs short-factor reference = %.3e, "
              "vs mlx-lm's long-factor reference = %.3e\n",
              vs_short, vs_mlx);
  EXPECT_LE(vs_short, 1e-6);
  EXPECT_GT(vs_mlx, 1e-2);
  const auto result = e2e::run_mlx2gguf({"convert", folder.string(), "-o", gguf.string() + ".again", "--outtype", "f32"});
  EXPECT_NE(result.output.find("context above 256"), std::string::npos) << "the conversion says so: " << result.output;
  fs::remove(gguf);
  fs::remove(gguf.string() + ".again");
}

// ---- failure modes ------------------------------------------------------------------------------------------------

mlx2gguf::TensorRecipe& tensor(mlx2gguf::ConversionPlan& plan, const std::string& name) {
  for (auto& t : plan.tensors)
    if (t.name == name) return t;
  throw std::runtime_error("no tensor " + name);
}

double nmse_after(const std::string& model, const std::function<void(mlx2gguf::ConversionPlan&)>& breakage) {
  const fs::path folder = folder_for(model, "bf16");
  const auto source = mlx2gguf::SourceModel::open(folder);
  mlx2gguf::PlanOptions options;
  options.out_type = mlx2gguf::OutType::F32;
  auto plan = mlx2gguf::make_plan(source, options);
  breakage(plan);
  const auto gguf = e2e::work_dir() / fmt::format("phi3-broken-{}-{}.gguf",
                                                  testing::UnitTest::GetInstance()->current_test_info()->name(), ::getpid());
  mlx2gguf::write_plan(plan, gguf, 0, nullptr);
  const double error = e2e::nmse(llama_logits(gguf, probe(folder)), reference_for(folder));
  fs::remove(gguf);
  return error;
}

// Rows of the fused ffn_up in the other order: [up; gate].
void swap_halves(mlx2gguf::TensorRecipe& t) {
  const int64_t half = t.shape[0] / 2;
  t.row_map.clear();
  for (int64_t r = 0; r < 2 * half; ++r) t.row_map.push_back(r < half ? r + half : r - half);
}

TEST(Phi3FailureModes, CorrectPlanPasses) {
  const double error = nmse_after("longrope", [](auto&) {});
  std::printf("[ NMSE     ] phi3 correct plan = %.3e\n", error);
  EXPECT_LE(error, 1e-6);
}

TEST(Phi3FailureModes, LosingTheRopeFactorsFails) {
  const double error = nmse_after("longrope", [](mlx2gguf::ConversionPlan& plan) {
    std::erase_if(plan.tensors, [](const mlx2gguf::TensorRecipe& t) { return t.name.starts_with("rope_factors_"); });
  });
  std::printf("[ NMSE     ] phi3 without rope_factors_long/short = %.3e\n", error);
  EXPECT_GT(error, 1e-2);
}

TEST(Phi3FailureModes, LosingTheAttentionFactorFails) {
  const double error = nmse_after("longrope", [](mlx2gguf::ConversionPlan& plan) { plan.metadata.erase("phi3.rope.scaling.attn_factor"); });
  std::printf("[ NMSE     ] phi3 without rope.scaling.attn_factor = %.3e\n", error);
  EXPECT_GT(error, 1e-2);
}

TEST(Phi3FailureModes, SwappingGateAndUpFails) {
  const double error = nmse_after("longrope", [](mlx2gguf::ConversionPlan& plan) {
    for (int layer = 0; layer < 2; ++layer) swap_halves(tensor(plan, fmt::format("blk.{}.ffn_up.weight", layer)));
  });
  std::printf("[ NMSE     ] phi3 gate and up swapped = %.3e\n", error);
  EXPECT_GT(error, 1e-2);
}

// The fused rows split as [q; v; k]: keys and values exchanged (same widths, so llama.cpp loads it).
TEST(Phi3FailureModes, SplittingQkvWrongFails) {
  const double error = nmse_after("longrope", [](mlx2gguf::ConversionPlan& plan) {
    for (int layer = 0; layer < 2; ++layer) {
      auto& qkv = tensor(plan, fmt::format("blk.{}.attn_qkv.weight", layer));
      const int64_t q = 4 * 32, kv = 2 * 32;
      qkv.row_map.clear();
      for (int64_t r = 0; r < q; ++r) qkv.row_map.push_back(r);
      for (int64_t r = 0; r < kv; ++r) qkv.row_map.push_back(q + kv + r);
      for (int64_t r = 0; r < kv; ++r) qkv.row_map.push_back(q + r);
    }
  });
  std::printf("[ NMSE     ] phi3 q/k/v split as q/v/k = %.3e\n", error);
  EXPECT_GT(error, 1e-2);
}

// Partial rotary lost: every head dimension rotated. Without LongRoPE only the key changes; with it, the factor
// tensors must also grow to the pairs of a whole head (padded with 1, what a converter ignoring the factor would do).
TEST(Phi3FailureModes, LosingPartialRotaryFails) {
  const double plain = nmse_after("partial-plain", [](mlx2gguf::ConversionPlan& plan) {
    plan.metadata.set("phi3.rope.dimension_count", mlx2gguf::GgufValue::u32(32));
  });
  std::printf("[ NMSE     ] phi3 partial rotary lost (plain rope) = %.3e\n", plain);
  EXPECT_GT(plain, 1e-2);
  const double longrope = nmse_after("longrope", [](mlx2gguf::ConversionPlan& plan) {
    plan.metadata.set("phi3.rope.dimension_count", mlx2gguf::GgufValue::u32(32));
    for (auto& t : plan.tensors)
      if (t.name.starts_with("rope_factors_")) {
        t.generated.resize(16, 1.0f);
        t.shape = {16};
      }
  });
  std::printf("[ NMSE     ] phi3 partial rotary lost (LongRoPE factors padded) = %.3e\n", longrope);
  EXPECT_GT(longrope, 1e-2);
}

// ---- tokenizers ---------------------------------------------------------------------------------------------------

// Phi-3's SentencePiece tokenizer (here the Llama 2 one it extends) as llama.cpp's "llama" model, tokenizing as
// Hugging Face does.
TEST(Phi3Tokenizer, SentencePieceTokenizerTokenizesLikeHuggingFace) {
  const fs::path folder = folder_for("plain", "bf16");
  const fs::path gguf = convert(folder, "bf16", "tokenizer");
  const auto model = oracle::LlamaModel::load(gguf.string(), true);
  EXPECT_EQ(model->meta("tokenizer.ggml.model"), "llama");
  const std::vector<std::string> texts = {"Hello world! How are you doing today?", "  leading spaces,\ttabs\n\nnewlines",
                                          "Numbers: 1234567 3.14159", "Café naïve — 日本語 😀"};
  const auto want = oracle::hf_tokenize((folder / "tokenizer.json").string(), texts, true);
  for (size_t i = 0; i < texts.size(); ++i) EXPECT_EQ(model->tokenize(texts[i], true, false), want[i]) << texts[i];
  fs::remove(gguf);
}

}  // namespace
