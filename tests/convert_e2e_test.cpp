// End to end: generate an mlx-lm folder, convert it with the mlx2gguf binary, load the GGUF in real llama.cpp and
// compare its logits at every position with the reference forward pass of the source model.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "e2e_support.h"
#include "eval/reference.h"
#include "oracle/llama_oracle.h"
#include "read/source_model.h"

namespace {

using mlx2gguf::gen::QuantRecipe;
using mlx2gguf::gen::TinyModelSpec;

struct ModelCase {
  std::string key;
  TinyModelSpec spec;
};

// The architectures and the shapes of their configs worth covering.
std::vector<ModelCase> base_models() {
  std::vector<ModelCase> models;
  {
    TinyModelSpec s;  // Llama 3 style: byte-level BPE, llama3 rope scaling, untied head
    s.model_type = "llama";
    s.tokenizer_dir = oracle::real_tokenizer_dir("llama3");
    s.rope_theta = 500000;
    s.rope_scaling = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                      {"original_max_position_embeddings", 64}};
    s.seed = 11;
    models.push_back({"llama", s});
  }
  {
    TinyModelSpec s;  // Mistral style: SentencePiece BPE, head_dim != hidden/heads, tied embeddings, linear rope
    s.model_type = "mistral";
    s.tokenizer_dir = oracle::real_tokenizer_dir("llama2");
    s.head_dim = 64;
    s.tie_embeddings = true;
    s.attention_bias = true;
    s.rope_scaling = {{"type", "linear"}, {"factor", 2.0}};
    s.seed = 12;
    models.push_back({"mistral", s});
  }
  {
    TinyModelSpec s;  // Mixtral: stacked experts under switch_mlp, top-2 routing
    s.model_type = "mixtral";
    s.tokenizer_dir = oracle::real_tokenizer_dir("llama2");
    s.experts = 4;
    s.experts_per_tok = 2;
    s.rope_theta = 1e6;
    s.seed = 13;
    models.push_back({"mixtral", s});
  }
  return models;
}

struct Variant {
  std::string key;
  std::optional<QuantRecipe> quant;
};

std::vector<Variant> variants() {
  return {{"bf16", std::nullopt},
          {"q4g64", QuantRecipe::parse("affine:4:64")},
          {"q8g32", QuantRecipe::parse("affine:8:32")},
          {"q3g64", QuantRecipe::parse("affine:3:64")}};
}

struct Bars {
  double nmse;
  bool same_top1;
};

Bars bars_for(const std::string& outtype) {
  if (outtype == "f32") return {1e-6, true};
  if (outtype == "f16" || outtype == "bf16") return {1e-4, true};
  return {2e-3, false};  // q8_0
}

struct E2ECase {
  std::string model, variant, outtype;
};
void PrintTo(const E2ECase& c, std::ostream* os) { *os << c.model << "/" << c.variant << "/" << c.outtype; }

std::string case_name(const testing::TestParamInfo<E2ECase>& info) {
  return info.param.model + "_" + info.param.variant + "_" + info.param.outtype;
}

std::vector<E2ECase> all_cases() {
  std::vector<E2ECase> cases;
  for (const auto& model : {"llama", "mistral", "mixtral"})
    for (const auto& variant : variants())
      for (const auto& outtype : {"f32", "f16", "bf16", "q8_0"}) cases.push_back({model, variant.key, outtype});
  return cases;
}

std::filesystem::path model_folder(const std::string& model, const std::string& variant_key) {
  for (auto m : base_models()) {
    if (m.key != model) continue;
    for (const auto& v : variants()) {
      if (v.key != variant_key) continue;
      m.spec.quant = v.quant;
      return e2e::cached_model(m.key + "-" + v.key, m.spec);
    }
  }
  throw std::runtime_error("unknown model case " + model + "/" + variant_key);
}

class ConvertedLogits : public testing::TestWithParam<E2ECase> {};

TEST_P(ConvertedLogits, MatchReferenceForwardPass) {
  const E2ECase& c = GetParam();
  const auto folder = model_folder(c.model, c.variant);
  const auto gguf = e2e::work_dir() / fmt::format("{}-{}-{}.gguf", c.model, c.variant, c.outtype);
  const auto result = e2e::run_mlx2gguf({"convert", folder.string(), "--outfile", gguf.string(), "--outtype", c.outtype});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(oracle::gguf_check_file(gguf.string()), "");

  const auto source = mlx2gguf::SourceModel::open(folder);
  auto model = oracle::LlamaModel::load(gguf.string());
  const int64_t vocab = model->n_vocab();
  const auto tokens = e2e::probe_tokens(std::min<int64_t>(vocab, 32000), 12, model->token_bos() >= 0 ? model->token_bos() : 1);
  const auto want = mlx2gguf::reference_logits(source, tokens);
  const auto got = model->logits(tokens);
  ASSERT_EQ(got.size(), want.size());

  const Bars bars = bars_for(c.outtype);
  const double error = e2e::nmse(got, want);
  RecordProperty("nmse", fmt::format("{:.3e}", error));
  std::printf("[ NMSE     ] %s/%s/%s = %.3e\n", c.model.c_str(), c.variant.c_str(), c.outtype.c_str(), error);
  EXPECT_LE(error, bars.nmse);
  if (bars.same_top1) EXPECT_EQ(e2e::top1_mismatches(got, want, vocab), 0);
  std::filesystem::remove(gguf);
}

INSTANTIATE_TEST_SUITE_P(AllArchitectures, ConvertedLogits, testing::ValuesIn(all_cases()), case_name);

}  // namespace
