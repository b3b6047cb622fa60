// llama-quantize's file types written from MLX-quantized folders. With --pure, our file is llama_model_quantize's
// of our f32 file, byte for byte. Without it, the type choice on MLX sources (plan/quant_mix.h) keeps a tensor in
// its lossless home wherever llama-quantize's type is at least as wide, and gives 6/8-bit sources Q8_0 where the
// mix raises a tensor to 5 or more bits; in llama.cpp the result is at least as close to the source model.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <set>

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
using mlx2gguf::GgmlType;

// ggml's own decoding of a tensor.
std::vector<float> decoded(const e2e::TensorBytes& t) {
  return oracle::ggml_dequantize(static_cast<int>(t.type), t.bytes.data(), t.elements());
}

double sum_squared_error(const std::vector<float>& got, const std::vector<float>& want) {
  double sum = 0;
  for (size_t i = 0; i < got.size(); ++i) sum += (static_cast<double>(got[i]) - want[i]) * (static_cast<double>(got[i]) - want[i]);
  return sum;
}

const char* name_of(GgmlType type) { return mlx2gguf::ggml_type_info(type).name; }

struct MixCase {
  std::string model, variant, mix;
};
void PrintTo(const MixCase& c, std::ostream* os) { *os << c.model << "/" << c.variant << "/" << c.mix; }
std::string case_name(const testing::TestParamInfo<MixCase>& info) {
  std::string name = info.param.model + "_" + info.param.variant + "_" + info.param.mix;
  for (char& ch : name)
    if (ch == '-' || ch == '/') ch = '_';
  return name;
}

int source_bits(const std::string& variant) { return variant[1] - '0'; }  // "q4g64" → 4

// The exact GGUF type of affine codes (README, lossless repack table); F32 (none) for 6 and 8 bits.
GgmlType lossless_home(int bits) { return bits <= 4 ? GgmlType::Q4_1 : bits == 5 ? GgmlType::Q5_1 : GgmlType::F32; }

// llama-quantize's type for rows that are no whole blocks of the mix's default type.
GgmlType default_for_row(GgmlType type, int64_t row_length) {
  if (row_length % mlx2gguf::ggml_type_info(type).block_size == 0) return type;
  switch (type) {
    case GgmlType::Q2_K:
    case GgmlType::Q3_K: return GgmlType::Q4_0;
    case GgmlType::Q4_K: return GgmlType::Q5_0;
    case GgmlType::Q5_K: return GgmlType::Q5_1;
    case GgmlType::Q6_K: return GgmlType::Q8_0;
    default: return type;
  }
}

// The rule as the documentation states it, applied to llama-quantize's type of a tensor.
GgmlType expected_type(const mlx2gguf::QuantMix& mix, GgmlType theirs, int bits, int64_t row_length) {
  const double their_bpw = mlx2gguf::bits_per_weight(theirs);
  if (bits <= 5) {
    const GgmlType home = lossless_home(bits);
    return their_bpw >= mlx2gguf::bits_per_weight(home) ? home : theirs;
  }
  const bool raised = their_bpw > mlx2gguf::bits_per_weight(default_for_row(mix.default_type, row_length)) && their_bpw >= 5.0;
  return raised ? GgmlType::Q8_0 : theirs;
}

// GGUF tensors made of MLX-quantized rows that the rule applies to: for 2..5-bit sources those --outtype auto can
// move losslessly (not, e.g., a tensor whose column reorder splits quantization groups), for 6/8-bit sources all
// that --outtype auto writes in a quantized type.
std::set<std::string> mlx_quantized_tensors(const fs::path& folder, int bits) {
  const auto model = mlx2gguf::SourceModel::open(folder);
  std::set<std::string> names;
  for (const auto& recipe : mlx2gguf::make_plan(model, {}).tensors) {
    const bool quantized = recipe.type != GgmlType::F32 && recipe.type != GgmlType::F16 && recipe.type != GgmlType::BF16;
    if (bits <= 5 ? recipe.repack : quantized) names.insert(recipe.name);
  }
  return names;
}

fs::path theirs_file(const MixCase& c, const fs::path& folder) {
  const auto path = e2e::work_dir() / fmt::format("mlxmix-{}-{}-{}-theirs.gguf", c.model, c.variant, c.mix);
  const mlx2gguf::QuantMix* mix = mlx2gguf::find_quant_mix(c.mix);
  oracle::llama_quantize_file(e2e::converted_once(folder, "f32").string(), path.string(), static_cast<int>(mix->llama_ftype));
  return path;
}

class MlxSourceMixPure : public testing::TestWithParam<MixCase> {};

// --pure: every tensor has llama-quantize's type and bytes, quantized from the MLX values as floats.
TEST_P(MlxSourceMixPure, FileIsLlamaQuantizesByteForByte) {
  const MixCase& c = GetParam();
  const auto folder = e2e::model_folder(c.model, c.variant);
  const auto ours_path = e2e::work_dir() / fmt::format("mlxmix-{}-{}-{}-pure.gguf", c.model, c.variant, c.mix);
  const auto theirs_path = theirs_file(c, folder);
  const auto result =
      e2e::run_mlx2gguf({"convert", folder.string(), "-o", ours_path.string(), "--outtype", c.mix, "--pure", "-q"});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto ours = e2e::tensors_in(ours_path), theirs = e2e::tensors_in(theirs_path);
  fs::remove(ours_path);
  fs::remove(theirs_path);
  ASSERT_EQ(ours.size(), theirs.size());
  for (const auto& [name, tensor] : ours) {
    ASSERT_TRUE(theirs.contains(name)) << name;
    EXPECT_STREQ(name_of(tensor.type), name_of(theirs.at(name).type)) << name;
    EXPECT_TRUE(tensor.bytes == theirs.at(name).bytes) << name << ": bytes differ";
  }
}

// --pure only means something with a llama-quantize type: elsewhere it is an error, not silently ignored.
TEST(MlxSourceMixPureOption, RefusedWithoutALlamaQuantizeType) {
  const auto folder = e2e::model_folder("mistral", "q4g64");
  const auto out = e2e::work_dir() / "mlxmix-pure-refused.gguf";
  for (const char* outtype : {"auto", "f16"}) {
    const auto result = e2e::run_mlx2gguf({"convert", folder.string(), "-o", out.string(), "--outtype", outtype, "--pure"});
    EXPECT_EQ(result.exit_code, 1) << result.output;
    EXPECT_NE(result.output.find("--pure applies to llama-quantize output types"), std::string::npos) << result.output;
    EXPECT_FALSE(fs::exists(out));
  }
}

class MlxSourceMixTypes : public testing::TestWithParam<MixCase> {};

// Without --pure: the documented rule, tensor by tensor, against llama-quantize's own choice; lossless homes hold
// exactly the MLX values; everything else is llama-quantize's bytes, or (K-types, which the MLX-aware search
// encodes) at most llama-quantize's error against the MLX values. The run summary names the rule's tensors.
TEST_P(MlxSourceMixTypes, LosslessHomeWhereTheMixAsksForAsManyBitsOrMore) {
  const MixCase& c = GetParam();
  const mlx2gguf::QuantMix& mix = *mlx2gguf::find_quant_mix(c.mix);
  const auto folder = e2e::model_folder(c.model, c.variant);
  const auto ours_path = e2e::work_dir() / fmt::format("mlxmix-{}-{}-{}-ours.gguf", c.model, c.variant, c.mix);
  const auto theirs_path = theirs_file(c, folder);
  const auto result = e2e::run_mlx2gguf({"convert", folder.string(), "-o", ours_path.string(), "--outtype", c.mix});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto ours = e2e::tensors_in(ours_path), theirs = e2e::tensors_in(theirs_path), exact = e2e::tensors_in(e2e::converted_once(folder, "f32"));
  const auto quantized = mlx_quantized_tensors(folder, source_bits(c.variant));
  fs::remove(ours_path);
  fs::remove(theirs_path);

  ASSERT_EQ(ours.size(), theirs.size());
  int kept_lossless = 0, q8_for_more_bits = 0;
  std::map<std::string, int> changes;
  for (const auto& [name, tensor] : ours) {
    ASSERT_TRUE(theirs.contains(name)) << name;
    const e2e::TensorBytes& their = theirs.at(name);
    const bool quantized_source = quantized.contains(name);
    const GgmlType want = quantized_source ? expected_type(mix, their.type, source_bits(c.variant), tensor.ne.at(0)) : their.type;
    ASSERT_STREQ(name_of(tensor.type), name_of(want)) << name << " (llama-quantize: " << name_of(their.type) << ")";
    const std::vector<float> values = decoded(exact.at(name));
    if (want != their.type) changes[fmt::format("{}→{}", name_of(their.type), name_of(want))]++;
    if (quantized_source && want == lossless_home(source_bits(c.variant))) {
      kept_lossless += want != their.type ? 1 : 0;
      EXPECT_TRUE(decoded(tensor) == values) << name << ": the lossless home does not hold the MLX values";
    } else if (want != their.type) {
      q8_for_more_bits++;
      EXPECT_LT(sum_squared_error(decoded(tensor), values), sum_squared_error(decoded(their), values)) << name;
    } else if (tensor.bytes != their.bytes) {
      EXPECT_TRUE(tensor.type == GgmlType::Q3_K || tensor.type == GgmlType::Q4_K || tensor.type == GgmlType::Q5_K)
          << name << ": bytes differ";
      EXPECT_LE(sum_squared_error(decoded(tensor), values), sum_squared_error(decoded(their), values)) << name;
    }
  }
  std::string summary;
  for (const auto& [change, count] : changes) summary += fmt::format(" {} {}", count, change);
  std::printf("[ TYPES    ] %s/%s %s:%s\n", c.model.c_str(), c.variant.c_str(), c.mix.c_str(),
              summary.empty() ? " as llama-quantize" : summary.c_str());
  if (kept_lossless > 0) EXPECT_NE(result.output.find("kept lossless from MLX affine"), std::string::npos) << result.output;
  if (q8_for_more_bits > 0) EXPECT_NE(result.output.find("re-encoded as Q8_0 where"), std::string::npos) << result.output;
}

// Every mix on the small tied model in four widths; the larger MoE (attn_qkv, experts) on a few.
std::vector<MixCase> type_cases() {
  std::vector<MixCase> cases;
  for (const char* variant : {"q4g64", "q3g64", "q5g64", "q8g64"})
    for (const auto& mix : mlx2gguf::quant_mixes()) cases.push_back({"mistral", variant, mix.name});
  for (const char* variant : {"q4g64", "q6g64"})
    for (const char* mix : {"q3_k_m", "q4_k_m", "q6_k", "q8_0"}) cases.push_back({"qwen35moe", variant, mix});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(AllMixes, MlxSourceMixPure, testing::ValuesIn(type_cases()), case_name);
INSTANTIATE_TEST_SUITE_P(AllMixes, MlxSourceMixTypes, testing::ValuesIn(type_cases()), case_name);

// Model level, in real llama.cpp against the reference forward pass of the MLX model: ours without --pure is at
// least as close as llama_model_quantize of our f32 file, ours with --pure is exactly as close (same bytes).
class MlxSourceMixLogits : public testing::TestWithParam<MixCase> {};

TEST_P(MlxSourceMixLogits, AtLeastAsCloseToTheSourceAsLlamaQuantize) {
  const MixCase& c = GetParam();
  const auto folder = e2e::model_folder(c.model, c.variant);
  const auto ours_path = e2e::work_dir() / fmt::format("mlxmixrun-{}-{}-{}-ours.gguf", c.model, c.variant, c.mix);
  const auto pure_path = e2e::work_dir() / fmt::format("mlxmixrun-{}-{}-{}-pure.gguf", c.model, c.variant, c.mix);
  for (const auto& [path, extra] : {std::pair{ours_path, std::string()}, std::pair{pure_path, std::string("--pure")}}) {
    std::vector<std::string> args = {"convert", folder.string(), "-o", path.string(), "--outtype", c.mix, "-q"};
    if (!extra.empty()) args.push_back(extra);
    const auto result = e2e::run_mlx2gguf(args);
    ASSERT_EQ(result.exit_code, 0) << result.output;
  }
  const auto theirs_path = theirs_file(c, folder);

  auto ours = oracle::LlamaModel::load(ours_path.string());
  const int64_t vocab = std::min<int64_t>(ours->n_vocab(), 32000);
  const auto tokens = e2e::probe_tokens(vocab, 16, ours->token_bos() >= 0 ? ours->token_bos() : 1);
  const auto want = mlx2gguf::reference_logits(mlx2gguf::SourceModel::open(folder), tokens);
  const double our_nmse = e2e::nmse(ours->logits(tokens), want);
  const double pure_nmse = e2e::nmse(oracle::LlamaModel::load(pure_path.string())->logits(tokens), want);
  const double their_nmse = e2e::nmse(oracle::LlamaModel::load(theirs_path.string())->logits(tokens), want);
  std::printf("[ NMSE     ] %s/%s %s: ours %.3e (ratio %.3f), --pure %.3e (ratio %.3f), llama.cpp's own %.3e\n",
              c.model.c_str(), c.variant.c_str(), c.mix.c_str(), our_nmse, our_nmse / their_nmse, pure_nmse,
              pure_nmse / their_nmse, their_nmse);
  EXPECT_LE(our_nmse, their_nmse);
  EXPECT_EQ(pure_nmse, their_nmse);
  fs::remove(ours_path);
  fs::remove(pure_path);
  fs::remove(theirs_path);
}

// Rows of qwen36-widths are whole K-quant super-blocks, so its K-types go through the MLX-aware encoding; the
// smaller models' rows fall back to 32-blocks (the type rule alone).
std::vector<MixCase> logit_cases() {
  std::vector<MixCase> cases;
  for (const char* mix : {"q4_1", "q4_k_m", "q8_0"}) cases.push_back({"mistral", "q4g64", mix});
  for (const char* mix : {"q3_k_m", "q4_k_m"}) cases.push_back({"qwen35moe", "q3g64", mix});
  for (const char* mix : {"q4_k_m", "q5_k_m"}) cases.push_back({"qwen35moe", "q8g64", mix});
  cases.push_back({"qwen36-widths", "q4g64", "q4_k_m"});
  cases.push_back({"qwen36-widths", "q3g64", "q3_k_m"});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Mixes, MlxSourceMixLogits, testing::ValuesIn(logit_cases()), case_name);

}  // namespace
