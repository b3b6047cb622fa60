// What `convert` reports about a run: the --dry-run plan (text and JSON) against the file a real run writes, the
// --json run summary against ggml's reading of that file, and the progress lines.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>

#include <array>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>

#include "e2e_support.h"
#include "oracle/gguf_listing.h"
#include "read/test_support.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
using mlx2gguf::test_support::TempDir;

// A 4-bit llama whose down projections are 8-bit (an mlx_lm.convert quant predicate can do this): attention and
// gate/up weights repack losslessly to Q4_1, the 8-bit ones cannot (no exact GGUF type) and become Q8_0.
fs::path mixed_bits_llama() {
  mlx2gguf::gen::TinyModelSpec spec;
  spec.model_type = "llama";
  spec.seed = 31;
  mlx2gguf::gen::QuantRecipe quant = mlx2gguf::gen::QuantRecipe::parse("affine:4:64");
  quant.overrides.push_back({"mlp.down_proj", 8, 64, ""});
  spec.quant = quant;
  return e2e::cached_model("report-llama-q4-down8", spec);
}

struct Output {
  int exit_code = -1;
  std::string out, err;
};

// Runs the binary with stdout and stderr kept apart (the JSON goes to stdout, progress to stderr).
Output run_split(const std::vector<std::string>& args, const fs::path& scratch) {
  auto quote = [](const std::string& text) {
    std::string inner;
    for (char c : text) inner += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return "'" + inner + "'";
  };
  const fs::path err_file = scratch / "stderr.txt";
  std::string command = quote(test_paths::binary().string());
  for (const auto& arg : args) command += " " + quote(arg);
  command += " 2>" + quote(err_file.string());
  Output result;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> buffer{};
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) result.out.append(buffer.data(), n);
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream err(err_file);
  std::stringstream text;
  text << err.rdbuf();
  result.err = text.str();
  fs::remove(err_file);
  return result;
}

std::string upper(std::string text) {
  for (char& c : text) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return text;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

size_t files_in(const fs::path& dir) {
  return static_cast<size_t>(std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}

TEST(RunReport, DryRunJsonNamesTheTypesAndSizesTheRealRunWrites) {
  TempDir temp;
  const fs::path out_dir = temp / "out";
  fs::create_directories(out_dir);
  const fs::path out = out_dir / "model.gguf";
  const Output plan = run_split({"convert", mixed_bits_llama().string(), "-o", out.string(), "--dry-run", "--json"}, temp.path());
  ASSERT_EQ(plan.exit_code, 0) << plan.out << plan.err;
  EXPECT_EQ(files_in(out_dir), 0u) << "a dry run wrote something";
  nlohmann::json planned;
  ASSERT_NO_THROW(planned = nlohmann::json::parse(plan.out)) << plan.out.substr(0, 500);
  EXPECT_FALSE(planned.at("written").get<bool>());

  ASSERT_EQ(e2e::run_mlx2gguf({"convert", mixed_bits_llama().string(), "-o", out.string(), "-q"}).exit_code, 0);
  const auto inspect = e2e::run_mlx2gguf({"inspect", "--json", out.string()});
  ASSERT_EQ(inspect.exit_code, 0) << inspect.output;
  const nlohmann::json written = nlohmann::json::parse(inspect.output);

  const auto& want = written.at("tensors");
  const auto& got = planned.at("tensors");
  ASSERT_EQ(got.size(), want.size());
  std::map<std::string, int> repacked_by_type, reencoded_by_type;
  for (size_t i = 0; i < want.size(); ++i) {
    const std::string name = want[i].at("name");
    EXPECT_EQ(got[i].at("name"), name);
    EXPECT_EQ(got[i].at("type"), want[i].at("type")) << name;
    EXPECT_EQ(got[i].at("ne"), want[i].at("ne")) << name;
    EXPECT_EQ(got[i].at("bytes"), want[i].at("bytes")) << name;
    const std::string note = got[i].at("note");
    if (got[i].at("repack").get<bool>()) {
      repacked_by_type[got[i].at("type")]++;
      EXPECT_EQ(note, "lossless from MLX affine 4-bit g64") << name;
    } else if (contains(note, "re-encoded")) {
      reencoded_by_type[got[i].at("type")]++;
      EXPECT_EQ(note, "MLX affine 8-bit g64 re-encoded: affine 8-bit has no exact GGUF type") << name;
    }
  }
  // 2 layers × (q, k, v, o, gate, up) + embedding + output head at 4 bits; 2 down projections at 8 bits.
  EXPECT_EQ(repacked_by_type, (std::map<std::string, int>{{"Q4_1", 14}}));
  EXPECT_EQ(reencoded_by_type, (std::map<std::string, int>{{"Q8_0", 2}}));
  EXPECT_EQ(planned.at("file_bytes").get<uint64_t>(), fs::file_size(out));
}

TEST(RunReport, DryRunTextListsEveryTensorAndWhyItIsOrIsNotRepacked) {
  TempDir temp;
  const fs::path out = temp / "model.gguf";
  const Output plan = run_split({"convert", mixed_bits_llama().string(), "-o", out.string(), "--dry-run"}, temp.path());
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  EXPECT_FALSE(fs::exists(out));
  EXPECT_TRUE(contains(plan.out, "dry run: nothing written")) << plan.out;
  EXPECT_FALSE(contains(plan.err, "writing tensors")) << plan.err;

  ASSERT_EQ(e2e::run_mlx2gguf({"convert", mixed_bits_llama().string(), "-o", out.string(), "-q"}).exit_code, 0);
  const oracle::GgufListing ggml = oracle::gguf_list_file(out.string());
  for (const auto& t : ggml.tensors) {
    // name, type, dimensions, bytes, then the transform and the source.
    const std::regex line("\\n\\s*" + std::regex_replace(t.name, std::regex(R"([.])"), R"(\.)") + "\\s+" +
                          upper(t.type) + "\\s+\\{[0-9, ]+\\}\\s+" + std::to_string(t.bytes) + "\\s+\\S");
    EXPECT_TRUE(std::regex_search(plan.out, line)) << t.name;
  }
  EXPECT_TRUE(contains(plan.out, fmt::format("({} bytes)", fs::file_size(out)))) << plan.out;
  EXPECT_TRUE(contains(plan.out, "repacked losslessly: 14 tensors")) << plan.out;
  EXPECT_TRUE(contains(plan.out, "   14 × lossless from MLX affine 4-bit g64")) << plan.out;
  EXPECT_TRUE(contains(plan.out, "    2 × MLX affine 8-bit g64 re-encoded: affine 8-bit has no exact GGUF type")) << plan.out;
  EXPECT_TRUE(std::regex_search(plan.out, std::regex(R"(token_embd\.weight\s+Q4_1\s+\{128, \d+\}\s+\d+\s+repack\s+model\.embed_tokens\.weight \(MLX affine 4-bit g64\))")))
      << plan.out;
  EXPECT_TRUE(std::regex_search(plan.out, std::regex(R"(blk\.0\.attn_q\.weight\s+Q4_1\s+\{128, 128\}\s+\d+\s+reorder rows, repack\s)")))
      << plan.out;
}

TEST(RunReport, JsonSummaryOfARealRunMatchesGgmlsReadingOfTheFile) {
  TempDir temp;
  const fs::path out = temp / "model.gguf";
  const Output run = run_split({"convert", mixed_bits_llama().string(), "-o", out.string(), "--json"}, temp.path());
  ASSERT_EQ(run.exit_code, 0) << run.err;
  nlohmann::json summary;
  ASSERT_NO_THROW(summary = nlohmann::json::parse(run.out)) << run.out.substr(0, 500);
  const oracle::GgufListing ggml = oracle::gguf_list_file(out.string());

  std::map<std::string, int> tensors_per_type;
  std::map<std::string, uint64_t> bytes_per_type;
  int64_t parameters = 0;
  for (const auto& t : ggml.tensors) {
    tensors_per_type[upper(t.type)]++;
    bytes_per_type[upper(t.type)] += t.bytes;
    parameters += t.ne[0] * t.ne[1] * t.ne[2] * t.ne[3];
  }
  EXPECT_TRUE(summary.at("written").get<bool>());
  EXPECT_EQ(summary.at("outfile"), out.string());
  EXPECT_EQ(summary.at("file_bytes").get<uint64_t>(), fs::file_size(out));
  EXPECT_EQ(summary.at("parameters").get<int64_t>(), parameters);
  EXPECT_DOUBLE_EQ(summary.at("bits_per_weight").get<double>(),
                   8.0 * static_cast<double>(fs::file_size(out)) / static_cast<double>(parameters));
  std::map<std::string, int> got_tensors;
  std::map<std::string, uint64_t> got_bytes;
  for (const auto& [type, s] : summary.at("types").items()) {
    got_tensors[type] = s.at("tensors");
    got_bytes[type] = s.at("bytes");
  }
  EXPECT_EQ(got_tensors, tensors_per_type);
  EXPECT_EQ(got_bytes, bytes_per_type);
  EXPECT_EQ(summary.at("types").at("Q8_0").at("notes").at("MLX affine 8-bit g64 re-encoded: affine 8-bit has no exact GGUF type"), 2);
  EXPECT_EQ(summary.at("tensors").size(), ggml.tensors.size());
  EXPECT_GT(summary.at("seconds").get<double>(), 0.0);
  // Progress still goes to stderr, and only there.
  EXPECT_TRUE(contains(run.err, "writing tensors 100%")) << run.err;
  EXPECT_FALSE(contains(run.out, "writing tensors"));
}

TEST(RunReport, ProgressCountsBytesUpToTheFileSizeWithThroughputAndEta) {
  TempDir temp;
  const fs::path out = temp / "model.gguf";
  const Output run = run_split({"convert", mixed_bits_llama().string(), "-o", out.string()}, temp.path());
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const double total_mib = static_cast<double>(fs::file_size(out)) / 1048576.0;
  const std::regex line(R"(writing tensors\s+(\d+)% \(([0-9.]+) / ([0-9.]+) MiB, [0-9.]+ MiB/s, (ETA [0-9:]+|ETA --:--|[0-9:]+ elapsed)\))");
  int lines = 0, last_percent = -1;
  double last_done = -1;
  for (auto it = std::sregex_iterator(run.err.begin(), run.err.end(), line); it != std::sregex_iterator(); ++it) {
    const int percent = std::stoi((*it)[1]);
    const double done = std::stod((*it)[2]);
    EXPECT_GT(percent, last_percent) << run.err;
    EXPECT_GE(done, last_done) << run.err;
    EXPECT_EQ((*it)[3], fmt::format("{:.1f}", total_mib));
    last_percent = percent;
    last_done = done;
    ++lines;
  }
  EXPECT_GE(lines, 2) << run.err;
  EXPECT_EQ(last_percent, 100) << run.err;
  EXPECT_EQ(fmt::format("{:.1f}", last_done), fmt::format("{:.1f}", total_mib));
  EXPECT_TRUE(std::regex_search(run.err, std::regex(R"(writing tensors 100% \([0-9.]+ / [0-9.]+ MiB, [0-9.]+ MiB/s, [0-9:]+ elapsed\))")))
      << run.err;
}

}  // namespace
