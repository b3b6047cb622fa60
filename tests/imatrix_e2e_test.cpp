// --imatrix: a one-pass quantization weighted by an importance matrix holds, tensor by tensor, the same types and
// bytes as llama.cpp's own llama_model_quantize given the same importance weights (what llama-quantize --imatrix
// passes it), for llama-imatrix's GGUF and legacy formats, the K types and Q4_0 .. Q8_0.
//
// The matrices are written here from random importance, and the weights handed to llama.cpp are derived here from
// the stored numbers as llama-quantize derives them (sums / count per expert, or values / calls), independently of
// mlx2gguf's reader.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <map>
#include <random>

#include "e2e_support.h"
#include "oracle/llama_oracle.h"
#include "plan/quant_mix.h"
#include "read/imatrix.h"
#include "read/mapped_file.h"
#include "write/gguf_file.h"

namespace {

namespace fs = std::filesystem;

// A llama with 8 layers (so that llama-quantize's imatrix-only rule for the first eighth of ffn_down layers
// applies) and the Qwen3.5/3.6 MoE (stacked experts, each with its own importance slice).
fs::path imatrix_model_folder(const std::string& model) {
  if (model == "llama8") {
    auto spec = e2e::model_spec("llama");
    spec.layers = 8;
    return e2e::cached_model("llama8-bf16", spec);
  }
  return e2e::model_folder(model, "bf16");
}

struct WrittenMatrix {
  fs::path path;
  std::map<std::string, std::vector<float>> weights;  // what llama-quantize hands llama_model_quantize
};

// Importance for every weight llama-imatrix would measure (2-D and 3-D tensors but the token embedding, which it
// never sees): log-normal per column, a random activation count per expert, some experts never activated.
WrittenMatrix write_matrix(const fs::path& model_f32, bool legacy, const fs::path& path) {
  std::mt19937 rng(legacy ? 2 : 1);
  std::lognormal_distribution<float> importance(0.0f, 1.5f);
  std::uniform_int_distribution<int> count_of(0, 40);
  std::map<std::string, std::vector<float>> sums, counts, values;
  std::map<std::string, int32_t> calls;
  WrittenMatrix written{path, {}};
  for (const auto& tensor : mlx2gguf::GgufFile::read(model_f32).tensors) {
    if (tensor.ne.size() < 2 || tensor.name == "token_embd.weight") continue;
    const int64_t columns = tensor.ne[0];
    const int64_t experts = tensor.ne.size() >= 3 ? tensor.ne[2] : 1;
    std::vector<float>& expected = written.weights[tensor.name];
    if (legacy) {
      // Values are stored as mean × calls; one tensor in ten has no call count and is used as stored.
      const int32_t n = count_of(rng) % 10 == 0 ? 0 : 1 + count_of(rng);
      calls[tensor.name] = n;
      auto& v = values[tensor.name];
      for (int64_t i = 0; i < columns * experts; ++i) v.push_back(importance(rng) * static_cast<float>(n > 0 ? n : 1));
      for (float x : v) expected.push_back(n > 0 ? x / static_cast<float>(n) : x);
    } else {
      auto& s = sums[tensor.name];
      auto& c = counts[tensor.name];
      for (int64_t e = 0; e < experts; ++e) {
        const int n = experts > 1 && count_of(rng) % 8 == 0 ? 0 : 1 + count_of(rng);
        c.push_back(static_cast<float>(n));
        for (int64_t i = 0; i < columns; ++i) {
          s.push_back(importance(rng) * static_cast<float>(n));
          expected.push_back(n > 0 ? s.back() / static_cast<float>(n) : 1.0f);
        }
      }
    }
  }
  if (legacy)
    mlx2gguf::write_imatrix_legacy(path, values, calls, 100, "calibration.txt");
  else
    mlx2gguf::write_imatrix_gguf(path, sums, counts, {"calibration.txt"}, 100, 512);
  return written;
}

struct ImatrixCase {
  std::string model, mix, format;
};
void PrintTo(const ImatrixCase& c, std::ostream* os) { *os << c.model << "/" << c.mix << "/" << c.format; }

class ImatrixQuantization : public testing::TestWithParam<ImatrixCase> {};

TEST_P(ImatrixQuantization, EveryTensorMatchesLlamaQuantizeWithTheSameImportance) {
  const ImatrixCase& c = GetParam();
  const mlx2gguf::QuantMix* mix = mlx2gguf::find_quant_mix(c.mix);
  ASSERT_NE(mix, nullptr);
  const auto folder = imatrix_model_folder(c.model);
  const auto stem = e2e::work_dir() / fmt::format("imatrix-{}-{}-{}-{}", c.model, c.mix, c.format, ::getpid());
  const bool legacy = c.format == "dat";
  const WrittenMatrix matrix = write_matrix(e2e::converted_once(folder, "f32"), legacy, stem.string() + (legacy ? ".dat" : ".gguf"));
  const auto theirs_path = stem.string() + "-theirs.gguf";
  const auto ours_path = stem.string() + "-ours.gguf";
  oracle::llama_quantize_file_with_imatrix(e2e::converted_once(folder, "f32").string(), theirs_path, static_cast<int>(mix->llama_ftype),
                                           matrix.weights);
  const auto result = e2e::run_mlx2gguf(
      {"convert", folder.string(), "-o", ours_path, "--outtype", c.mix, "--imatrix", matrix.path.string()});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto theirs = e2e::tensors_in(theirs_path);
  const auto ours = e2e::tensors_in(ours_path);
  const auto metadata = mlx2gguf::GgufFile::read(ours_path).metadata;
  fs::remove(theirs_path);
  fs::remove(ours_path);
  fs::remove(matrix.path);

  // The keys llama-quantize adds for an importance matrix.
  ASSERT_TRUE(metadata.has("quantize.imatrix.file"));
  EXPECT_EQ(metadata.get("quantize.imatrix.file")->strings.at(0), matrix.path.string().substr(0, 127));
  EXPECT_EQ(metadata.get("quantize.imatrix.dataset")->strings.at(0), "calibration.txt");
  EXPECT_EQ(metadata.get("quantize.imatrix.entries_count")->ints.at(0), static_cast<int64_t>(matrix.weights.size()));
  EXPECT_EQ(metadata.get("quantize.imatrix.chunks_count")->ints.at(0), 100);

  ASSERT_EQ(ours.size(), theirs.size());
  std::map<std::string, int> per_type;
  int weighted = 0;
  for (const auto& [name, tensor] : ours) {
    ASSERT_TRUE(theirs.contains(name)) << name;
    const e2e::TensorBytes& their = theirs.at(name);
    EXPECT_EQ(mlx2gguf::ggml_type_info(tensor.type).name, mlx2gguf::ggml_type_info(their.type).name) << name;
    EXPECT_TRUE(tensor.bytes == their.bytes) << name << " (" << mlx2gguf::ggml_type_info(tensor.type).name
                                             << "): bytes differ";
    per_type[mlx2gguf::ggml_type_info(tensor.type).name]++;
    weighted += matrix.weights.contains(name) ? 1 : 0;
  }
  std::string summary;
  for (const auto& [type, count] : per_type) summary += fmt::format(" {} {}", count, type);
  std::printf("[ IMATRIX ] %s/%s/%s: %d tensors with importance; identical:%s\n", c.model.c_str(), c.mix.c_str(),
              c.format.c_str(), weighted, summary.c_str());
}

std::vector<ImatrixCase> cases() {
  std::vector<ImatrixCase> all;
  for (const char* model : {"llama8", "qwen35moe"}) {
    for (const char* mix : {"q2_k", "q3_k_m", "q4_k_s", "q4_k_m", "q5_k_m", "q6_k", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0"})
      all.push_back({model, mix, "gguf"});
    for (const char* mix : {"q2_k", "q4_k_m", "q6_k", "q4_0", "q5_1"}) all.push_back({model, mix, "dat"});
  }
  return all;
}

std::string case_name(const testing::TestParamInfo<ImatrixCase>& info) {
  return info.param.model + "_" + info.param.mix + "_" + info.param.format;
}

INSTANTIATE_TEST_SUITE_P(Mixes, ImatrixQuantization, testing::ValuesIn(cases()), case_name);

// An entry whose size does not fit its tensor means a matrix of another model: refused, naming both.
TEST(ImatrixQuantization, AnEntryOfTheWrongSizeIsRefused) {
  const auto folder = imatrix_model_folder("qwen35moe");
  const auto path = e2e::work_dir() / fmt::format("imatrix-wrong-size-{}.gguf", ::getpid());
  mlx2gguf::write_imatrix_gguf(path, {{"blk.0.ffn_down_exps.weight", std::vector<float>(100, 1.0f)}},
                               {{"blk.0.ffn_down_exps.weight", {1.0f}}}, {"d"}, 1, 512);
  const auto out = e2e::work_dir() / fmt::format("imatrix-wrong-size-{}-out.gguf", ::getpid());
  const auto result = e2e::run_mlx2gguf({"convert", folder.string(), "-o", out.string(), "--outtype", "q4_k_m",
                                         "--imatrix", path.string()});
  fs::remove(path);
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("entry 'blk.0.ffn_down_exps.weight' has 100 values"), std::string::npos)
      << result.output;
  EXPECT_FALSE(fs::exists(out));
}

}  // namespace
