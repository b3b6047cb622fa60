// The mlx2gguf command line as a user runs it: help, convert (summary, default file name, bad options) and
// inspect (text and JSON).
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cctype>
#include <map>
#include <cstdio>
#include <regex>
#include <set>
#include <sys/wait.h>

#include "e2e_support.h"
#include "oracle/gguf_listing.h"
#include "oracle/llama_oracle.h"
#include "read/test_support.h"
#include "write/gguf_file.h"

namespace {

namespace fs = std::filesystem;
using mlx2gguf::GgufFile;
using mlx2gguf::test_support::TempDir;

// A small llama: 2 layers, bf16, untied head, no biases: 5 F32 norms and 16 matrices.
fs::path tiny_llama() {
  mlx2gguf::gen::TinyModelSpec spec;
  spec.model_type = "llama";
  spec.seed = 21;
  return e2e::cached_model("cli-llama-bf16", spec);
}

e2e::CommandResult run_in(const fs::path& cwd, const std::vector<std::string>& args) {
  return e2e::run_mlx2gguf(args, cwd);
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(Cli, HelpNamesBothSubcommands) {
  const auto result = e2e::run_mlx2gguf({"--help"});
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_TRUE(contains(result.output, "convert")) << result.output;
  EXPECT_TRUE(contains(result.output, "inspect")) << result.output;
}

TEST(Cli, ConvertHelpListsTheOutTypes) {
  const auto result = e2e::run_mlx2gguf({"convert", "--help"});
  EXPECT_EQ(result.exit_code, 0) << result.output;
  for (const char* part : {"--outtype", "--outfile", "q8_0", "bf16"}) EXPECT_TRUE(contains(result.output, part)) << part;
}

TEST(Cli, NoSubcommandIsAnError) {
  const auto result = e2e::run_mlx2gguf({});
  EXPECT_NE(result.exit_code, 0) << result.output;
}

TEST(Cli, ConvertWritesAValidFileAndSummarisesIt) {
  TempDir temp;
  const fs::path out = temp / "tiny.gguf";
  const auto result = e2e::run_mlx2gguf({"convert", tiny_llama().string(), "--outfile", out.string()});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  ASSERT_TRUE(fs::exists(out));
  EXPECT_EQ(oracle::gguf_check_file(out.string()), "");

  // Counted from ggml's reading of the file, not mlx2gguf's.
  const oracle::GgufListing ggml = oracle::gguf_list_file(out.string());
  int64_t parameters = 0;
  std::map<std::string, int> per_type;
  for (const auto& t : ggml.tensors) {
    parameters += t.ne[0] * t.ne[1] * t.ne[2] * t.ne[3];
    per_type[t.type]++;
  }
  EXPECT_EQ(per_type["bf16"], 16);
  EXPECT_EQ(per_type["f32"], 5);
  // Tensors per type, and bits per weight of the whole file.
  EXPECT_TRUE(std::regex_search(result.output, std::regex(R"(\n\s*BF16\s+16 tensors\s+[0-9,]+ weights\s+16\.00 bits/weight)")))
      << result.output;
  EXPECT_TRUE(std::regex_search(result.output, std::regex(R"(\n\s*F32\s+5 tensors)"))) << result.output;
  const std::string bpw = fmt::format("{:.2f} bits per weight", 8.0 * static_cast<double>(fs::file_size(out)) / static_cast<double>(parameters));
  EXPECT_TRUE(contains(result.output, bpw)) << "expected \"" << bpw << "\" in:\n" << result.output;
  EXPECT_TRUE(contains(result.output, out.string())) << result.output;
}

TEST(Cli, QuietConvertPrintsNothing) {
  TempDir temp;
  const fs::path out = temp / "quiet.gguf";
  const auto result = e2e::run_mlx2gguf({"convert", tiny_llama().string(), "-o", out.string(), "--quiet", "--outtype", "q8_0"});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  // Warnings about the input may still appear; progress and the summary may not.
  EXPECT_FALSE(contains(result.output, "writing tensors")) << result.output;
  EXPECT_FALSE(contains(result.output, "bits per weight")) << result.output;
  EXPECT_FALSE(contains(result.output, "wrote")) << result.output;
  const GgufFile file = GgufFile::read(out);
  EXPECT_EQ(file.metadata.get("general.file_type")->ints.at(0), 7);
}

// The expected keys and tensor table come from ggml's own GGUF reader, not from mlx2gguf's.
std::string upper(std::string text) {
  for (char& c : text) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return text;
}

// A tensor's own dimensions: ggml pads them to four with 1s.
std::vector<int64_t> own_dims(std::vector<int64_t> ne, size_t count) {
  ne.resize(count);
  return ne;
}

TEST(Cli, InspectPrintsMetadataKeysAndTheTensorTable) {
  TempDir temp;
  const fs::path out = temp / "inspect.gguf";
  ASSERT_EQ(e2e::run_mlx2gguf({"convert", tiny_llama().string(), "-o", out.string(), "-q"}).exit_code, 0);
  const auto result = e2e::run_mlx2gguf({"inspect", out.string()});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const oracle::GgufListing ggml = oracle::gguf_list_file(out.string());
  ASSERT_EQ(ggml.tensors.size(), 21u);
  for (const auto& key : ggml.keys) EXPECT_TRUE(contains(result.output, "\n  " + key + " ")) << key;
  for (const auto& t : ggml.tensors) {
    // One table line per tensor: name, type, dimensions (2-D weights, 1-D norms) and size in bytes.
    const bool matrix = t.ne[1] > 1;
    const std::string ne = matrix ? fmt::format("{{{}, {}}}", t.ne[0], t.ne[1]) : fmt::format("{{{}}}", t.ne[0]);
    const std::regex line("\\n\\s*" + std::regex_replace(t.name, std::regex(R"([.])"), R"(\.)") + "\\s+" +
                          upper(t.type) + "\\s+" + std::regex_replace(ne, std::regex(R"([{}])"), R"(\$&)") + "\\s+" +
                          std::to_string(t.bytes) + "\\b");
    EXPECT_TRUE(std::regex_search(result.output, line)) << t.name << " " << ne;
  }
  EXPECT_TRUE(contains(result.output, fmt::format("{} metadata keys, {} tensors", ggml.keys.size(), ggml.tensors.size())))
      << result.output;
  EXPECT_TRUE(contains(result.output, "GGUF v3")) << result.output;
}

TEST(Cli, InspectJsonMatchesGgmlsReading) {
  TempDir temp;
  const fs::path out = temp / "json.gguf";
  ASSERT_EQ(e2e::run_mlx2gguf({"convert", tiny_llama().string(), "-o", out.string(), "-q"}).exit_code, 0);
  const auto result = e2e::run_mlx2gguf({"inspect", "--json", out.string()});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  nlohmann::json json;
  ASSERT_NO_THROW(json = nlohmann::json::parse(result.output)) << result.output.substr(0, 500);

  const oracle::GgufListing ggml = oracle::gguf_list_file(out.string());
  EXPECT_EQ(json.at("version"), ggml.version);
  const auto& tensors = json.at("tensors");
  ASSERT_TRUE(tensors.is_array());
  ASSERT_EQ(tensors.size(), ggml.tensors.size());
  for (size_t i = 0; i < ggml.tensors.size(); ++i) {
    const auto& want = ggml.tensors[i];
    const auto& got = tensors[i];
    EXPECT_EQ(got.at("name"), want.name);
    EXPECT_EQ(upper(got.at("type").get<std::string>()), upper(want.type)) << want.name;
    const auto ne = got.at("ne").get<std::vector<int64_t>>();
    EXPECT_EQ(ne, own_dims(want.ne, ne.size())) << want.name;
    EXPECT_EQ(got.at("offset").get<uint64_t>(), want.file_offset) << want.name;
    EXPECT_EQ(got.at("bytes").get<uint64_t>(), want.bytes) << want.name;
  }
  std::vector<std::string> keys;
  for (const auto& [key, value] : json.at("metadata").items()) keys.push_back(key);
  std::vector<std::string> want_keys = ggml.keys;
  std::sort(keys.begin(), keys.end());
  std::sort(want_keys.begin(), want_keys.end());
  EXPECT_EQ(keys, want_keys);
  // Values the generated model's config fixes: a llama of 2 layers, hidden 128, 4 heads of 32, 2 of them for k/v.
  EXPECT_EQ(json["metadata"]["general.architecture"], "llama");
  EXPECT_EQ(json["metadata"]["llama.block_count"], 2);
  EXPECT_EQ(json["metadata"]["llama.embedding_length"], 128);
  EXPECT_EQ(json["metadata"]["llama.attention.head_count"], 4);
  EXPECT_EQ(json["metadata"]["llama.attention.head_count_kv"], 2);
  EXPECT_TRUE(json["metadata"]["tokenizer.ggml.tokens"].is_array());
}

TEST(Cli, UnknownOutTypeFailsNamingTheChoices) {
  TempDir temp;
  const fs::path out = temp / "never.gguf";
  const auto result = e2e::run_mlx2gguf({"convert", tiny_llama().string(), "--outtype", "nonsense", "-o", out.string()});
  EXPECT_NE(result.exit_code, 0);
  EXPECT_TRUE(contains(result.output, "nonsense")) << result.output;
  for (const char* choice : {"auto", "f32", "f16", "bf16", "q8_0"}) EXPECT_TRUE(contains(result.output, choice)) << result.output;
  EXPECT_FALSE(fs::exists(out));
  EXPECT_EQ(std::distance(fs::directory_iterator(temp.path()), fs::directory_iterator()), 0);
}

TEST(Cli, InspectOfAMissingFileFails) {
  TempDir temp;
  const auto result = e2e::run_mlx2gguf({"inspect", (temp / "absent.gguf").string()});
  EXPECT_NE(result.exit_code, 0);
  EXPECT_TRUE(contains(result.output, "absent.gguf")) << result.output;
}

TEST(Cli, OutfileDefaultsToLlamaCppsNamingConventionInTheCurrentDirectory) {
  TempDir temp;
  const fs::path model = tiny_llama();
  ASSERT_EQ(model.filename().string(), "cli-llama-bf16");
  // llama.cpp's rules (gguf-py metadata.py, utility.py naming_convention), with the MLX suffix "bf16" dropped:
  // "cli-llama" is two plain words, too ambiguous for a basename, so the file is named {Name}-{SizeLabel}-{TYPE}
  // with the name title-cased ("Cli Llama") and the size label counted from the weights.
  const auto named = [&](const std::string& type) {
    std::vector<fs::path> found;
    const std::regex pattern("Cli-Llama-[0-9.]+[KMB]-" + type + "\\.gguf");
    for (const auto& entry : fs::directory_iterator(temp.path()))
      if (std::regex_match(entry.path().filename().string(), pattern)) found.push_back(entry.path());
    return found;
  };
  const auto explicit_type = run_in(temp.path(), {"convert", model.string(), "--outtype", "f16", "-q"});
  ASSERT_EQ(explicit_type.exit_code, 0) << explicit_type.output;
  ASSERT_EQ(named("F16").size(), 1u);
  const GgufFile f16 = GgufFile::read(named("F16").front());
  EXPECT_EQ(f16.metadata.get("general.file_type")->ints.at(0), 1);
  EXPECT_EQ(named("F16").front().filename().string(),
            "Cli-Llama-" + f16.metadata.get("general.size_label")->strings.at(0) + "-F16.gguf");

  // A folder typed with a trailing separator (as shell completion leaves it) names the file the same way.
  const auto slash = run_in(temp.path(), {"convert", model.string() + "/", "--outtype", "f32", "-q"});
  ASSERT_EQ(slash.exit_code, 0) << slash.output;
  EXPECT_EQ(named("F32").size(), 1u);

  // The default outtype (auto) of a bf16 folder writes BF16, and says so in the name.
  const auto default_type = run_in(temp.path(), {"convert", model.string(), "-q"});
  ASSERT_EQ(default_type.exit_code, 0) << default_type.output;
  EXPECT_EQ(named("BF16").size(), 1u);
  EXPECT_EQ(std::distance(fs::directory_iterator(temp.path()), fs::directory_iterator()), 3);
}

}  // namespace
