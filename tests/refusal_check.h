#pragma once
// What a refused input must leave behind, checked the same way by every bad-input test: the process exits with a
// status in 1..127 (an error, never a signal), prints exactly one error line, writes no output and no temporary
// file, keeps an existing output file as it was, and changes nothing in its input folders.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "e2e_support.h"

namespace e2e {

// Every regular file under `dir` (relative path → contents); a plain file maps to itself.
inline std::map<std::string, std::string> snapshot(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  auto contents = [](const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  };
  std::map<std::string, std::string> files;
  if (fs::is_regular_file(dir)) {
    files[dir.filename().string()] = contents(dir);
    return files;
  }
  for (const auto& entry : fs::recursive_directory_iterator(dir))
    if (entry.is_regular_file()) files[fs::relative(entry.path(), dir).string()] = contents(entry.path());
  return files;
}

// The names in `dir`, sorted.
inline std::vector<std::string> entry_names(const std::filesystem::path& dir) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

inline constexpr const char* kPreviousOutput = "previous contents of the output file";

// Runs mlx2gguf with `args` plus `--outfile out` expecting a refusal, with a previous output file in place, and
// checks everything the header promises. An empty `out` is a command without output file (inspect). Returns what
// it printed.
inline std::string expect_refusal(std::vector<std::string> args, const std::filesystem::path& out,
                                  const std::vector<std::filesystem::path>& inputs) {
  namespace fs = std::filesystem;
  std::vector<std::string> out_dir_before;
  if (!out.empty()) {
    { std::ofstream(out, std::ios::binary | std::ios::trunc) << kPreviousOutput; }
    out_dir_before = entry_names(out.parent_path());
    args.insert(args.end(), {"--outfile", out.string()});
  }
  std::vector<std::map<std::string, std::string>> inputs_before;
  for (const auto& input : inputs) inputs_before.push_back(snapshot(input));

  const CommandResult result = run_mlx2gguf(args);
  EXPECT_GE(result.exit_code, 1) << "killed by a signal or succeeded:\n" << result.output;
  EXPECT_LE(result.exit_code, 127) << result.output;
  size_t errors = 0;
  for (size_t at = result.output.find("error: "); at != std::string::npos; at = result.output.find("error: ", at + 1))
    ++errors;
  EXPECT_EQ(errors, 1u) << "expected one error message:\n" << result.output;
  EXPECT_EQ(result.output.find("terminate called"), std::string::npos) << result.output;
  if (!out.empty()) {
    EXPECT_EQ(snapshot(out)[out.filename().string()], kPreviousOutput) << "the existing output file was changed";
    EXPECT_EQ(entry_names(out.parent_path()), out_dir_before) << "a file was left next to the output";
  }
  for (size_t i = 0; i < inputs.size(); ++i)
    EXPECT_TRUE(snapshot(inputs[i]) == inputs_before[i]) << "the input " << inputs[i] << " was changed";
  return result.output;
}

}  // namespace e2e
