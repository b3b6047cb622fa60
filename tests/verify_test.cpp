// `mlx2gguf verify`: passes on every kind of file the converter writes, and fails naming exactly the tensors of
// files corrupted on purpose (the corruption, made here byte by byte, is the independent expectation).
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <cstring>
#include <fstream>
#include <optional>
#include <set>
#include <tuple>

#include "convert.h"
#include "eval/reference.h"
#include "oracle/llama_oracle.h"
#include "e2e_support.h"
#include "util/error.h"
#include "verify/llama_library.h"
#include "verify/verify.h"
#include "write/gguf_file.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
using namespace mlx2gguf;

fs::path output(const std::string& label) {
  std::string name = fmt::format("verify-{}-{}.gguf", label, ::getpid());
  for (char& ch : name)
    if (ch == '/') ch = '-';
  return e2e::work_dir() / name;
}

fs::path convert_to(const fs::path& model, OutType type, const std::string& label,
                    const std::optional<fs::path>& adapter = std::nullopt, MergeRule rule = MergeRule::Float32) {
  ConvertOptions options;
  options.model_dir = model;
  options.outfile = output(label);
  options.plan.out_type = type;
  if (adapter) options.adapter = AdapterLocation{*adapter, std::nullopt};
  options.merge_rule = rule;
  convert(options);
  return options.outfile;
}

VerifyReport verify(const fs::path& gguf, const fs::path& model, const std::optional<fs::path>& adapter = std::nullopt,
                    MergeRule rule = MergeRule::Float32) {
  VerifyOptions options;
  options.gguf = gguf;
  options.model_dir = model;
  if (adapter) options.adapter = AdapterLocation{*adapter, std::nullopt};
  options.merge_rule = rule;
  return verify_file(options);
}

std::set<std::string> failing(const VerifyReport& report) {
  const auto names = report.failing_tensors();
  return {names.begin(), names.end()};
}

const TensorVerdict& verdict(const VerifyReport& report, const std::string& name) {
  for (const auto& v : report.tensors)
    if (v.name == name) return v;
  throw std::runtime_error("no verdict for " + name);
}

// File offset and size of a tensor's data, from the GGUF header.
struct TensorBytes {
  uint64_t offset, size;
  GgmlType type;
  std::vector<int64_t> ne;
};
TensorBytes locate(const fs::path& gguf, const std::string& name) {
  const GgufFile file = GgufFile::read(gguf);
  for (const auto& t : file.tensors)
    if (t.name == name) return {file.data_start + t.offset, t.size_bytes(), t.type, t.ne};
  throw std::runtime_error("no tensor " + name + " in " + gguf.string());
}

std::vector<uint8_t> read_bytes(const fs::path& path, uint64_t offset, uint64_t size) {
  std::ifstream in(path, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(offset));
  std::vector<uint8_t> bytes(size);
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size));
  return bytes;
}

void write_bytes(const fs::path& path, uint64_t offset, const std::vector<uint8_t>& bytes) {
  std::fstream io(path, std::ios::binary | std::ios::in | std::ios::out);
  io.seekp(static_cast<std::streamoff>(offset));
  io.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// Rewrites the F32 values of a tensor in place.
void edit_f32(const fs::path& gguf, const std::string& name, const std::function<void(std::vector<float>&)>& edit) {
  const TensorBytes t = locate(gguf, name);
  ASSERT_EQ(t.type, GgmlType::F32) << name;
  std::vector<uint8_t> bytes = read_bytes(gguf, t.offset, t.size);
  std::vector<float> values(bytes.size() / 4);
  std::memcpy(values.data(), bytes.data(), bytes.size());
  edit(values);
  std::memcpy(bytes.data(), values.data(), bytes.size());
  write_bytes(gguf, t.offset, bytes);
}

void expect_passes(const VerifyReport& report, const std::string& label) {
  EXPECT_TRUE(report.passed()) << label << "\n" << format_report(report);
  EXPECT_TRUE(report.missing.empty() && report.extra.empty() && report.layout_differences.empty()) << label;
  EXPECT_TRUE(report.metadata_differences.empty()) << label << "\n" << format_report(report);
}

// ---- files the converter writes pass ------------------------------------------------------------------------------

struct FamilyCase {
  std::string model, variant;
  OutType type;
};
void PrintTo(const FamilyCase& c, std::ostream* os) { *os << c.model << "/" << c.variant << "/" << out_type_name(c.type); }

std::vector<FamilyCase> family_cases() {
  std::vector<FamilyCase> cases;
  for (const char* model : {"llama", "mistral", "mixtral", "qwen35moe", "qwen35moe-hf", "qwen35", "qwen3next", "gemma3"}) {
    for (OutType type : {OutType::F32, OutType::BF16, OutType::F16, OutType::Q8_0, OutType::Q4_K_M})
      cases.push_back({model, "bf16", type});
    if (std::string(model).ends_with("-hf")) continue;  // Hugging Face layouts exist only unquantized
    cases.push_back({model, "q4g64", OutType::Auto});
    cases.push_back({model, "q4g64", OutType::Q4_K_M});
  }
  for (const char* variant : {"q2g32", "q3g64", "q5g64", "q6g64", "q8g64", "mxfp4", "nvfp4", "mxfp8"})
    cases.push_back({"qwen35moe", variant, OutType::Auto});
  return cases;
}

class VerifyConverted : public testing::TestWithParam<FamilyCase> {};

TEST_P(VerifyConverted, EveryTensorHoldsWhatItsTypeAllows) {
  const FamilyCase& c = GetParam();
  const fs::path model = e2e::model_folder(c.model, c.variant);
  const std::string label = fmt::format("{}-{}-{}", c.model, c.variant, out_type_name(c.type));
  const fs::path gguf = convert_to(model, c.type, label);
  const VerifyReport report = verify(gguf, model);
  expect_passes(report, label);
  const GgufFile file = GgufFile::read(gguf);
  ASSERT_EQ(report.tensors.size(), file.tensors.size());
  int lossless = 0, repacked = 0;
  for (const auto& v : report.tensors) {
    lossless += v.lossless;
    repacked += v.repacked;
    // An F32 tensor holds the source values; a repacked one decodes to MLX's dequantized values.
    if (v.type == GgmlType::F32 || v.repacked) { EXPECT_TRUE(v.lossless) << label << " " << v.name; }
    if (v.lossless) { EXPECT_EQ(v.rel_rmse, 0.0) << v.name; }
  }
  if (c.type == OutType::F32) { EXPECT_EQ(lossless, static_cast<int>(file.tensors.size())); }
  // auto on affine 2-5 bit, mxfp4 and nvfp4 repacks every quantized matrix; 6/8-bit and mxfp8 have no exact type.
  const bool repackable = c.type == OutType::Auto && c.variant != "q6g64" && c.variant != "q8g64" && c.variant != "mxfp8";
  if (repackable) { EXPECT_GT(repacked, 0) << label; }
  std::printf("[ VERIFY   ] %-40s %3zu tensors, %3d lossless, %3d repacked, passed\n", label.c_str(), report.tensors.size(),
              lossless, repacked);
  fs::remove(gguf);
}

INSTANTIATE_TEST_SUITE_P(Families, VerifyConverted, testing::ValuesIn(family_cases()),
                         [](const testing::TestParamInfo<FamilyCase>& info) {
                           std::string name = fmt::format("{}_{}_{}", info.param.model, info.param.variant,
                                                          out_type_name(info.param.type));
                           for (char& ch : name)
                             if (ch == '-') ch = '_';
                           return name;
                         });

struct MergeCase {
  std::string model, variant, tune;
  OutType type;
  MergeRule rule = MergeRule::Float32;
};
void PrintTo(const MergeCase& c, std::ostream* os) {
  *os << c.model << "/" << c.variant << "/" << c.tune << "/" << out_type_name(c.type);
}

gen::TinyAdapterSpec adapter_spec(const std::string& tune) {
  gen::TinyAdapterSpec spec;
  spec.seed = 31;
  if (tune == "dora") {
    spec.fine_tune_type = "dora";
    spec.keys = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"};
  }
  if (tune == "full") {
    spec.fine_tune_type = "full";
    spec.num_layers = 1;
  }
  return spec;
}

class VerifyMerged : public testing::TestWithParam<MergeCase> {};

TEST_P(VerifyMerged, EveryTensorHoldsTheMergedValuesAtItsType) {
  const MergeCase& c = GetParam();
  const fs::path model = e2e::model_folder(c.model, c.variant);
  const fs::path adapter = e2e::adapter_folder(c.model, c.variant, c.tune, adapter_spec(c.tune));
  const std::string label = fmt::format("merged-{}-{}-{}-{}{}", c.model, c.variant, c.tune, out_type_name(c.type),
                                        c.rule == MergeRule::LikeMlxFuse ? "-fuse-requantize" : "");
  const fs::path gguf = convert_to(model, c.type, label, adapter, c.rule);
  expect_passes(verify(gguf, model, adapter, c.rule), label);
  // Without the adapter, the merged tensors are wrong.
  const VerifyReport base_only = verify(gguf, model, std::nullopt, c.rule == MergeRule::LikeMlxFuse ? MergeRule::Float32 : c.rule);
  EXPECT_FALSE(base_only.passed()) << label;
  fs::remove(gguf);
}

std::vector<MergeCase> merge_cases() {
  std::vector<MergeCase> cases;
  for (const char* model : {"llama", "mixtral", "qwen35moe"})
    for (const char* variant : {"bf16", "q4g64"}) {
      for (OutType type : {OutType::F32, OutType::BF16, OutType::Q8_0, OutType::Auto}) cases.push_back({model, variant, "lora", type});
      cases.push_back({model, variant, "dora", OutType::F32});
      cases.push_back({model, variant, "full", OutType::Auto});
    }
  cases.push_back({"llama", "q4g64", "lora", OutType::Auto, MergeRule::LikeMlxFuse});
  cases.push_back({"qwen35moe", "mxfp4", "lora", OutType::Auto, MergeRule::LikeMlxFuse});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(FineTunes, VerifyMerged, testing::ValuesIn(merge_cases()),
                         [](const testing::TestParamInfo<MergeCase>& info) {
                           std::string name = fmt::format("{}_{}_{}_{}{}", info.param.model, info.param.variant,
                                                          info.param.tune, out_type_name(info.param.type),
                                                          info.param.rule == MergeRule::LikeMlxFuse ? "_fuse" : "");
                           for (char& ch : name)
                             if (ch == '-') ch = '_';
                           return name;
                         });

// ---- corrupted files fail, naming their tensors -------------------------------------------------------------------

TEST(VerifyCorrupted, OneFlippedBlockOfARepackedTensorIsNamedWithItsRow) {
  const fs::path model = e2e::model_folder("llama", "q4g64");
  const fs::path gguf = convert_to(model, OutType::Auto, "flipped-block");
  const std::string name = "blk.1.ffn_down.weight";
  const TensorBytes t = locate(gguf, name);
  ASSERT_EQ(t.type, GgmlType::Q4_1);
  // Q4_1 blocks: 20 bytes (fp16 d, fp16 m, 16 bytes of codes) per 32 values. Flip the codes of block 7.
  const int64_t blocks_per_row = t.ne[0] / 32;
  std::vector<uint8_t> block = read_bytes(gguf, t.offset + 7 * 20, 20);
  for (int i = 4; i < 20; ++i) block[i] ^= 0x5a;
  write_bytes(gguf, t.offset + 7 * 20, block);

  const VerifyReport report = verify(gguf, model);
  EXPECT_EQ(failing(report), std::set<std::string>{name}) << format_report(report);
  const TensorVerdict& v = verdict(report, name);
  EXPECT_TRUE(v.repacked);
  EXPECT_FALSE(v.lossless);
  EXPECT_EQ(v.first_wrong_row, 7 / blocks_per_row);
  EXPECT_GT(v.wrong_values, 0);
  EXPECT_LE(v.wrong_values, 32);  // only that block's values
  EXPECT_GT(v.rel_rmse, 0.0);
  fs::remove(gguf);
}

TEST(VerifyCorrupted, NormsWithoutOrWithTwiceTheirOffsetAreNamed) {
  // Gemma's RMSNorms are written as the (1 + w) mlx-lm evaluates: one norm written raw (offset missing), one with
  // the offset added a second time (a converter adding it to a folder whose weights already include it).
  const fs::path model = e2e::model_folder("gemma3", "bf16");
  const fs::path gguf = convert_to(model, OutType::F32, "norm-offsets");
  edit_f32(gguf, "blk.0.attn_norm.weight", [](std::vector<float>& v) {
    for (float& x : v) x -= 1.0f;
  });
  edit_f32(gguf, "blk.1.ffn_norm.weight", [](std::vector<float>& v) {
    for (float& x : v) x += 1.0f;
  });
  const VerifyReport report = verify(gguf, model);
  EXPECT_EQ(failing(report), (std::set<std::string>{"blk.0.attn_norm.weight", "blk.1.ffn_norm.weight"}))
      << format_report(report);
  EXPECT_GT(verdict(report, "blk.0.attn_norm.weight").rel_rmse, 0.1);
  fs::remove(gguf);
}

TEST(VerifyCorrupted, AnUndoneVHeadOrderIsNamed) {
  // The tiny Qwen3.5 has 2 key heads and 4 value heads: grouped order [k0v0, k0v1, k1v0, k1v1], tiled order
  // [k0v0, k1v0, k0v1, k1v1]. Undoing the reorder of ssm_a (one value per V head) swaps its values 1 and 2.
  const fs::path model = e2e::model_folder("qwen35", "bf16");
  const fs::path gguf = convert_to(model, OutType::F32, "v-heads");
  const std::string name = "blk.0.ssm_a";
  ASSERT_EQ(locate(gguf, name).ne, std::vector<int64_t>{4});
  edit_f32(gguf, name, [](std::vector<float>& v) { std::swap(v[1], v[2]); });
  const VerifyReport report = verify(gguf, model);
  EXPECT_EQ(failing(report), std::set<std::string>{name}) << format_report(report);
  EXPECT_EQ(verdict(report, name).wrong_values, 2);
  fs::remove(gguf);
}

// Files made by other tools from the same source. llama-quantize's file of the same weights passes: it holds what
// its types allow (its metadata differs and is only reported).
TEST(VerifyOtherTools, LlamaQuantizeOfTheSameWeightsPasses) {
  const fs::path model = e2e::model_folder("mistral", "bf16");
  const fs::path gguf = output("llama-quantize-q4_k_m");
  e2e::llama_quantize_of(model, "q4_k_m", gguf);
  const VerifyReport report = verify(gguf, model);
  EXPECT_TRUE(report.passed()) << format_report(report);
  EXPECT_TRUE(report.missing.empty() && report.extra.empty() && report.layout_differences.empty());
  EXPECT_EQ(report.out_type, "q4_k_m");
  fs::remove(gguf);
}

// What llama.cpp's converter makes of an MLX Qwen3.5 folder: +1 on every norm but the linear attention's, although
// mlx-lm's sanitize already stored 1 + w. The file loads and runs; verify names every doubled norm and only those.
TEST(VerifyOtherTools, Qwen35NormsOffsetASecondTimeAreEachNamed) {
  const fs::path model = e2e::model_folder("qwen35moe", "bf16");
  const fs::path gguf = convert_to(model, OutType::F32, "double-offset");
  std::set<std::string> doubled;
  for (const auto& t : GgufFile::read(gguf).tensors)
    if (t.name.ends_with("norm.weight") && !t.name.ends_with("ssm_norm.weight")) doubled.insert(t.name);
  ASSERT_GE(doubled.size(), 5u);
  for (const std::string& name : doubled)
    edit_f32(gguf, name, [](std::vector<float>& v) {
      for (float& x : v) x += 1.0f;
    });
  const VerifyReport report = verify(gguf, model);
  EXPECT_EQ(failing(report), doubled) << format_report(report);
  fs::remove(gguf);
}

TEST(VerifyCorrupted, AWrongAdapterScaleNamesEveryMergedTensor) {
  const fs::path model = e2e::model_folder("llama", "bf16");
  gen::TinyAdapterSpec spec = adapter_spec("lora");
  const fs::path adapter = e2e::adapter_folder("llama", "bf16", "verify-lora", spec);
  // The same weights with half the scale in adapter_config.json (the generator would rescale the weights along with
  // a different spec.scale, keeping the merged model the same).
  const fs::path wrong_scale = e2e::work_dir() / fmt::format("verify-lora-scale-10-{}", ::getpid());
  fs::remove_all(wrong_scale);
  fs::create_directories(wrong_scale);
  for (const auto& entry : fs::directory_iterator(adapter)) fs::copy(entry.path(), wrong_scale / entry.path().filename());
  nlohmann::json config = nlohmann::json::parse(std::ifstream(wrong_scale / "adapter_config.json"));
  ASSERT_EQ(config["lora_parameters"]["scale"].get<double>(), spec.scale);
  config["lora_parameters"]["scale"] = spec.scale / 2;
  std::ofstream(wrong_scale / "adapter_config.json") << config.dump(4);
  const fs::path gguf = convert_to(model, OutType::F32, "wrong-scale", wrong_scale);
  const fs::path base = convert_to(model, OutType::F32, "wrong-scale-base");

  // The merged tensors: those whose bytes differ from the base's conversion.
  std::set<std::string> merged;
  for (const auto& t : GgufFile::read(gguf).tensors) {
    const TensorBytes a = locate(gguf, t.name), b = locate(base, t.name);
    if (read_bytes(gguf, a.offset, a.size) != read_bytes(base, b.offset, b.size)) merged.insert(t.name);
  }
  ASSERT_GT(merged.size(), 0u);
  const VerifyReport report = verify(gguf, model, adapter);
  EXPECT_EQ(failing(report), merged) << format_report(report);
  expect_passes(verify(gguf, model, wrong_scale), "the adapter it was made with");
  fs::remove(gguf);
  fs::remove(base);
  fs::remove_all(wrong_scale);
}

TEST(VerifyCorrupted, MissingExtraAndRetypedTensorsAreReported) {
  // A float file checked against the plan of another type, and against another model's plan.
  const fs::path model = e2e::model_folder("llama", "bf16");
  const fs::path gguf = convert_to(model, OutType::F32, "retyped");
  VerifyOptions options;
  options.gguf = gguf;
  options.model_dir = model;
  options.out_type = OutType::BF16;
  const VerifyReport retyped = verify_file(options);
  EXPECT_FALSE(retyped.passed());
  EXPECT_FALSE(retyped.layout_differences.empty());
  for (const auto& v : retyped.tensors)  // values are right: F32 holds the source exactly; the type is not the plan's
    EXPECT_EQ(v.wrong_values, 0) << v.name;

  const VerifyReport other = verify(gguf, e2e::model_folder("mistral", "bf16"));
  EXPECT_FALSE(other.passed());
  // mistral ties its head to the embedding: llama's output.weight is extra there.
  EXPECT_NE(std::find(other.extra.begin(), other.extra.end(), "output.weight"), other.extra.end()) << format_report(other);
  fs::remove(gguf);
}

// ---- the command line ---------------------------------------------------------------------------------------------

TEST(VerifyCli, PassesWithExitZeroAndFailsNamingTheTensor) {
  const fs::path model = e2e::model_folder("llama", "q4g64");
  const fs::path gguf = convert_to(model, OutType::Auto, "cli");
  const auto ok = e2e::run_mlx2gguf({"verify", gguf.string(), "--source", model.string()});
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_NE(ok.output.find("passed"), std::string::npos) << ok.output;
  EXPECT_NE(ok.output.find("lossless"), std::string::npos) << ok.output;

  const std::string name = "blk.0.attn_v.weight";
  const TensorBytes t = locate(gguf, name);
  std::vector<uint8_t> byte = read_bytes(gguf, t.offset + 10, 1);
  byte[0] ^= 0xff;
  write_bytes(gguf, t.offset + 10, byte);
  const auto bad = e2e::run_mlx2gguf({"verify", gguf.string(), "--source", model.string()});
  EXPECT_EQ(bad.exit_code, 1) << bad.output;
  EXPECT_NE(bad.output.find("error: 1 of "), std::string::npos) << bad.output;
  EXPECT_NE(bad.output.find(": " + name), std::string::npos) << bad.output;

  const auto json = e2e::run_mlx2gguf({"verify", gguf.string(), "--source", model.string(), "--json"});
  EXPECT_EQ(json.exit_code, 1);
  const auto at = json.output.find('{');
  ASSERT_NE(at, std::string::npos) << json.output;
  const auto parsed = nlohmann::json::parse(json.output.substr(at, json.output.rfind('}') - at + 1));
  EXPECT_FALSE(parsed["passed"].get<bool>());
  EXPECT_EQ(parsed["failing_tensors"], nlohmann::json::array({name}));
  fs::remove(gguf);
}

TEST(VerifyCli, HelpStatesTheRule) {
  const auto result = e2e::run_mlx2gguf({"verify", "--help"});
  EXPECT_EQ(result.exit_code, 0) << result.output;
  for (const char* part : {"--source", "--adapter-path", "decode(encode", "lossless"})
    EXPECT_NE(result.output.find(part), std::string::npos) << part;
}

TEST(VerifyCli, ASourceThatIsNotAModelIsOneError) {
  const fs::path model = e2e::model_folder("llama", "bf16");
  const fs::path gguf = convert_to(model, OutType::BF16, "cli-nosource");
  const auto result = e2e::run_mlx2gguf({"verify", gguf.string(), "--source", (e2e::work_dir() / "no-such-model").string()});
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("error:"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("no-such-model"), std::string::npos) << result.output;
  fs::remove(gguf);
}

}  // namespace

// ---- logits through llama.cpp loaded at run time -----------------------------------------------------------------

namespace logits_check {

// The prebuilt libllama of the test oracle (its file name carries the release).
fs::path oracle_libllama() {
  const fs::path dir = test_paths::source_dir() / "tests/oracle/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64";
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with("libllama.") && name.ends_with(".so") && name != "libllama-common.so") return entry.path();
  }
  throw std::runtime_error("no libllama in " + dir.string());
}

nlohmann::json verify_json(const fs::path& gguf, const fs::path& model, int expected_exit) {
  const auto result = e2e::run_mlx2gguf({"verify", gguf.string(), "--source", model.string(), "--llama-lib",
                                         oracle_libllama().string(), "--json"});
  EXPECT_EQ(result.exit_code, expected_exit) << result.output;
  const auto at = result.output.find("{\n");
  if (at == std::string::npos) throw std::runtime_error("no JSON in: " + result.output);
  return nlohmann::json::parse(result.output.substr(at, result.output.rfind('}') - at + 1));
}

// The end-to-end tests' number for the same file: llama.cpp through the test oracle (K/V in F32, one batch) vs the
// reference forward pass over the same 16 tokens.
double oracle_nmse(const fs::path& gguf, const fs::path& model) {
  auto llama = oracle::LlamaModel::load(gguf.string());
  const int64_t vocab = std::min<int64_t>(llama->n_vocab(), 32000);
  const auto tokens = e2e::probe_tokens(vocab, 16, llama->token_bos() >= 0 ? llama->token_bos() : 1);
  return e2e::nmse(llama->logits(tokens), reference_logits(SourceModel::open(model), tokens));
}

}  // namespace logits_check

TEST(VerifyLogits, AgreeWithTheEndToEndNumbers) {
  for (const auto& [model_name, variant, type, bar] :
       std::vector<std::tuple<std::string, std::string, OutType, double>>{
           {"llama", "bf16", OutType::F32, 1e-6}, {"qwen35moe", "bf16", OutType::Q8_0, 2e-3},
           {"gemma3", "q4g64", OutType::Auto, 1e-3}}) {
    const fs::path model = e2e::model_folder(model_name, variant);
    const std::string label = fmt::format("logits-{}-{}-{}", model_name, variant, out_type_name(type));
    const fs::path gguf = convert_to(model, type, label);
    const nlohmann::json report = logits_check::verify_json(gguf, model, 0);
    const double theirs = logits_check::oracle_nmse(gguf, model);
    const double ours = report["logits"]["nmse"].get<double>();
    std::printf("[ NMSE     ] verify --llama-lib %-28s NMSE %.3e (end-to-end test's oracle: %.3e), KL mean %.3e, top-1 %d/16\n",
                label.c_str(), ours, theirs, report["logits"]["mean_kl"].get<double>(),
                report["logits"]["top1_agreements"].get<int>());
    EXPECT_EQ(report["logits"]["positions"].size(), 16u);
    EXPECT_LE(ours, bar) << label;
    EXPECT_LE(theirs, bar) << label;
    fs::remove(gguf);
  }
}

TEST(VerifyLogits, ANormWithoutItsOffsetShowsInTheLogits) {
  const fs::path model = e2e::model_folder("gemma3", "bf16");
  const fs::path gguf = convert_to(model, OutType::F32, "logits-norm");
  for (const char* name : {"blk.0.attn_norm.weight", "blk.1.attn_norm.weight", "blk.2.attn_norm.weight"})
    edit_f32(gguf, name, [](std::vector<float>& v) {
      for (float& x : v) x -= 1.0f;
    });
  const nlohmann::json report = logits_check::verify_json(gguf, model, 1);
  const double ours = report["logits"]["nmse"].get<double>();
  const double theirs = logits_check::oracle_nmse(gguf, model);
  std::printf("[ NMSE     ] verify --llama-lib gemma3 f32 with raw attention norms: NMSE %.3e (oracle %.3e), KL mean %.3e\n",
              ours, theirs, report["logits"]["mean_kl"].get<double>());
  EXPECT_GT(ours, 1e-2);
  EXPECT_NEAR(ours, theirs, 0.05 * theirs);
  fs::remove(gguf);
}

// ---- finding libllama without --llama-lib ---------------------------------------------------------------------------

namespace find_library {

// Sets an environment variable for the rest of a test (unset when `value` is null), restoring it afterwards.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::optional<std::string>& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) ::setenv(name, value->c_str(), 1);
    else ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_) ::setenv(name_, old_->c_str(), 1);
    else ::unsetenv(name_);
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

fs::path fresh_dir(const std::string& label) {
  const fs::path dir = e2e::work_dir() / fmt::format("verify-find-{}-{}", label, ::getpid());
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

void touch(const fs::path& file, const std::string& text = "") {
  fs::create_directories(file.parent_path());
  std::ofstream(file) << text;
}

void make_program(const fs::path& file) {
  touch(file, "#!/bin/sh\nexit 0\n");
  fs::permissions(file, fs::perms::owner_all, fs::perm_options::add);
}

std::string error_of(const LlamaSearch& search) {
  try {
    const FoundLlamaLibrary found = find_llama_library(search);
    return "found " + found.path.string();
  } catch (const Error& e) {
    return e.what();
  }
}

}  // namespace find_library

TEST(VerifyFindLlamaLibrary, TakesTheEnvironmentThenPathProgramsThenSystemFolders) {
  using namespace find_library;
  const fs::path root = fresh_dir("order");
  make_program(root / "brew/bin/llama-server");
  touch(root / "brew/lib/libllama.dylib");
  touch(root / "system/libllama.so");
  touch(root / "chosen/libllama.so");
  LlamaSearch search{std::nullopt, "/nonexistent:" + (root / "brew/bin").string(), {root / "empty", root / "system"}};
  FoundLlamaLibrary found = find_llama_library(search);
  EXPECT_EQ(found.path, root / "brew/lib/libllama.dylib");
  EXPECT_NE(found.how.find("llama-server on PATH"), std::string::npos) << found.how;

  search.path = "/nonexistent";
  found = find_llama_library(search);
  EXPECT_EQ(found.path, root / "system/libllama.so");

  search.env_library = (root / "chosen/libllama.so").string();
  found = find_llama_library(search);
  EXPECT_EQ(found.path, root / "chosen/libllama.so");
  EXPECT_NE(found.how.find("MLX2GGUF_LLAMA_LIB"), std::string::npos) << found.how;
  fs::remove_all(root);
}

TEST(VerifyFindLlamaLibrary, NoneFoundListsWhereItLooked) {
  using namespace find_library;
  const fs::path root = fresh_dir("none");
  make_program(root / "bin/llama-cli");
  const LlamaSearch search{std::nullopt, (root / "bin").string(), {root / "lib-a", root / "lib-b"}};
  const std::string message = error_of(search);
  for (const fs::path& dir : {root / "bin", root / "lib", root / "lib-a", root / "lib-b"})
    EXPECT_NE(message.find(dir.string()), std::string::npos) << dir << " in: " << message;
  EXPECT_NE(message.find("--llama-lib"), std::string::npos) << message;
  EXPECT_NE(message.find("libllama.so"), std::string::npos) << message;

  const std::string without_programs = error_of({std::nullopt, "", {root / "lib-a"}});
  EXPECT_NE(without_programs.find("no llama-cli or llama-server on PATH"), std::string::npos) << without_programs;

  const std::string missing = error_of({(root / "gone.so").string(), "", {}});
  EXPECT_NE(missing.find("MLX2GGUF_LLAMA_LIB"), std::string::npos) << missing;
  EXPECT_NE(missing.find("gone.so"), std::string::npos) << missing;
  fs::remove_all(root);
}

// A llama.cpp install as a user has it: llama-cli on PATH, libllama in ../lib (a link to the test oracle's prebuilt
// library, whose ggml libraries sit beside the real file). `verify --logits` must find it, say so, and give the
// numbers the explicit --llama-lib run gives.
TEST(VerifyFindLlamaLibrary, LogitsNextToLlamaCliOnPathAgreeWithTheExplicitLibrary) {
  using namespace find_library;
  const fs::path root = fresh_dir("install");
  make_program(root / "bin/llama-cli");
  fs::create_directories(root / "lib");
  fs::create_symlink(logits_check::oracle_libllama(), root / "lib/libllama.so");

  const fs::path model = e2e::model_folder("llama", "bf16");
  const fs::path gguf = convert_to(model, OutType::F32, "find-lib");
  const nlohmann::json explicit_run = logits_check::verify_json(gguf, model, 0);

  const char* old_path = std::getenv("PATH");
  const ScopedEnv path("PATH", (root / "bin").string() + ":" + (old_path ? old_path : "/usr/bin:/bin"));
  const ScopedEnv unset("MLX2GGUF_LLAMA_LIB", std::nullopt);
  const auto result = e2e::run_mlx2gguf({"verify", gguf.string(), "--source", model.string(), "--logits", "--json"});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const std::string used = (root / "lib/libllama.so").string();
  EXPECT_NE(result.output.find("llama.cpp library " + used + " (next to llama-cli on PATH"), std::string::npos)
      << result.output;
  const auto at = result.output.find("{\n");
  ASSERT_NE(at, std::string::npos) << result.output;
  const nlohmann::json found_run = nlohmann::json::parse(result.output.substr(at, result.output.rfind('}') - at + 1));
  EXPECT_EQ(found_run["logits"]["llama_lib"], used);

  const nlohmann::json& a = explicit_run["logits"];
  const nlohmann::json& b = found_run["logits"];
  std::printf("[ NMSE     ] verify --logits (libllama next to llama-cli) NMSE %.3e, explicit --llama-lib NMSE %.3e\n",
              b["nmse"].get<double>(), a["nmse"].get<double>());
  EXPECT_LE(b["nmse"].get<double>(), 1e-6);
  EXPECT_EQ(b["nmse"], a["nmse"]);
  EXPECT_EQ(b["mean_kl"], a["mean_kl"]);
  EXPECT_EQ(b["top1_agreements"], a["top1_agreements"]);
  EXPECT_EQ(b["positions"], a["positions"]);

  // --tokens alone asks for the logits check too.
  const auto tokens = e2e::run_mlx2gguf({"verify", gguf.string(), "--source", model.string(), "--tokens", "4"});
  EXPECT_EQ(tokens.exit_code, 0) << tokens.output;
  EXPECT_NE(tokens.output.find("next to llama-cli on PATH"), std::string::npos) << tokens.output;
  EXPECT_NE(tokens.output.find("top-1 agreement 4/4"), std::string::npos) << tokens.output;
  fs::remove(gguf);
  fs::remove_all(root);
}
