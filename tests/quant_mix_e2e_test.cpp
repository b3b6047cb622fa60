// llama-quantize's file types in one pass: for every mix, our plan gives each tensor the type llama.cpp's own
// llama_model_quantize gives it from our f32 file, and in real llama.cpp our q4_k_m (and the other K-quant mixes)
// are at least as close to the source model as llama.cpp's own quantization of the same weights.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <map>

#include "e2e_support.h"
#include "eval/reference.h"
#include "oracle/llama_oracle.h"
#include "plan/planner.h"
#include "plan/quant_mix.h"
#include "read/mapped_file.h"
#include "read/source_model.h"
#include "write/gguf_file.h"

namespace {

namespace fs = std::filesystem;

// Models whose shapes exercise different rules: untied llama, tied mistral, 4- and 8-expert mixtral (8 experts
// trigger llama-quantize's Mixtral rules), the hybrid Qwen3.5 MoE (attn_qkv counts as attn_v), Qwen3.6 widths.
fs::path mix_model_folder(const std::string& model) {
  if (model == "mixtral-8x") {
    auto spec = e2e::model_spec("mixtral");
    spec.experts = 8;
    return e2e::cached_model("mixtral-8x-bf16", spec);
  }
  return e2e::model_folder(model, "bf16");
}

const std::vector<std::string> kMixModels = {"llama", "mistral", "mixtral", "mixtral-8x", "qwen35moe", "qwen36-widths"};

struct MixCase {
  std::string model, mix;
};
void PrintTo(const MixCase& c, std::ostream* os) { *os << c.model << "/" << c.mix; }
std::string case_name(const testing::TestParamInfo<MixCase>& info) {
  std::string name = info.param.model + "_" + info.param.mix;
  for (char& ch : name)
    if (ch == '-') ch = '_';
  return name;
}

class QuantMixFile : public testing::TestWithParam<MixCase> {};

// Our one-pass file holds, tensor by tensor, the same type and the same bytes as llama-quantize's file made from
// our f32 conversion: same mix rules, same encoders.
TEST_P(QuantMixFile, EveryTensorMatchesLlamaQuantizeInTypeAndBytes) {
  const MixCase& c = GetParam();
  const mlx2gguf::QuantMix* mix = mlx2gguf::find_quant_mix(c.mix);
  ASSERT_NE(mix, nullptr);
  const auto folder = mix_model_folder(c.model);
  const auto theirs_path = e2e::work_dir() / fmt::format("mix-{}-{}-theirs.gguf", c.model, c.mix);
  const auto ours_path = e2e::work_dir() / fmt::format("mix-{}-{}-ours.gguf", c.model, c.mix);
  oracle::llama_quantize_file(e2e::converted_once(folder, "f32").string(), theirs_path.string(), static_cast<int>(mix->llama_ftype));
  const auto result = e2e::run_mlx2gguf({"convert", folder.string(), "-o", ours_path.string(), "--outtype", c.mix, "-q"});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto theirs = e2e::tensors_in(theirs_path);
  const auto ours = e2e::tensors_in(ours_path);
  EXPECT_EQ(mlx2gguf::GgufFile::read(ours_path).metadata.get("general.file_type")->ints.at(0), mix->llama_ftype);
  fs::remove(theirs_path);
  fs::remove(ours_path);

  ASSERT_EQ(ours.size(), theirs.size());
  std::map<std::string, int> per_type;
  for (const auto& [name, tensor] : ours) {
    ASSERT_TRUE(theirs.contains(name)) << name;
    const e2e::TensorBytes& their = theirs.at(name);
    EXPECT_EQ(mlx2gguf::ggml_type_info(tensor.type).name, mlx2gguf::ggml_type_info(their.type).name) << name;
    EXPECT_TRUE(tensor.bytes == their.bytes) << name << ": bytes differ";
    per_type[mlx2gguf::ggml_type_info(tensor.type).name]++;
  }
  std::string summary;
  for (const auto& [type, count] : per_type) summary += fmt::format(" {} {}", count, type);
  std::printf("[ TYPES    ] %s/%s:%s\n", c.model.c_str(), c.mix.c_str(), summary.c_str());
}

std::vector<MixCase> type_cases() {
  std::vector<MixCase> cases;
  for (const auto& model : kMixModels)
    for (const auto& mix : mlx2gguf::quant_mixes()) cases.push_back({model, mix.name});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(AllMixes, QuantMixFile, testing::ValuesIn(type_cases()), case_name);

// Model level, in real llama.cpp: NMSE against the reference forward pass of the source model, ours (one pass,
// from the MLX folder, quantized or not) vs llama.cpp's own llama_model_quantize of our f32 file.
class QuantMixLogits : public testing::TestWithParam<MixCase> {};

TEST_P(QuantMixLogits, AtLeastAsCloseToTheSourceAsLlamaQuantize) {
  const MixCase& c = GetParam();
  const auto slash = c.model.find('/');
  const auto folder = e2e::model_folder(c.model.substr(0, slash), c.model.substr(slash + 1));
  const mlx2gguf::QuantMix* mix = mlx2gguf::find_quant_mix(c.mix);
  const auto ours_path = e2e::work_dir() / fmt::format("mixrun-{}-{}-ours.gguf", folder.filename().string(), c.mix);
  const auto theirs_path = e2e::work_dir() / fmt::format("mixrun-{}-{}-theirs.gguf", folder.filename().string(), c.mix);
  const auto result = e2e::run_mlx2gguf({"convert", folder.string(), "-o", ours_path.string(), "--outtype", c.mix, "-q"});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  oracle::llama_quantize_file(e2e::converted_once(folder, "f32").string(), theirs_path.string(), static_cast<int>(mix->llama_ftype));

  auto ours = oracle::LlamaModel::load(ours_path.string());
  const int64_t vocab = std::min<int64_t>(ours->n_vocab(), 32000);
  const auto tokens = e2e::probe_tokens(vocab, 16, ours->token_bos() >= 0 ? ours->token_bos() : 1);
  const auto want = mlx2gguf::reference_logits(mlx2gguf::SourceModel::open(folder), tokens);
  const auto our_logits = ours->logits(tokens);
  const auto their_logits = oracle::LlamaModel::load(theirs_path.string())->logits(tokens);
  const double our_nmse = e2e::nmse(our_logits, want), their_nmse = e2e::nmse(their_logits, want);
  std::printf("[ NMSE     ] %s %s: ours %.3e, llama.cpp's own %.3e (ratio %.3f), ours vs theirs %.3e\n", c.model.c_str(),
              c.mix.c_str(), our_nmse, their_nmse, our_nmse / their_nmse, e2e::nmse(our_logits, their_logits));
  EXPECT_LE(our_nmse, their_nmse * 1.05);
  fs::remove(ours_path);
  fs::remove(theirs_path);
}

std::vector<MixCase> logit_cases() {
  std::vector<MixCase> cases;
  for (const auto& model : {"llama/bf16", "qwen35moe/bf16", "qwen35moe/q4g64", "qwen36-widths/q4g64"})
    for (const auto& mix : {"q4_k_m", "q2_k", "q3_k_m", "q4_0", "q4_k_s", "q5_k_s", "q5_k_m", "q6_k", "q8_0"})
      cases.push_back({model, mix});
  return cases;
}

std::string logit_case_name(const testing::TestParamInfo<MixCase>& info) {
  std::string name = info.param.model + "_" + info.param.mix;
  for (char& ch : name)
    if (ch == '-' || ch == '/') ch = '_';
  return name;
}

INSTANTIATE_TEST_SUITE_P(KQuantMixes, QuantMixLogits, testing::ValuesIn(logit_cases()), logit_case_name);

}  // namespace
