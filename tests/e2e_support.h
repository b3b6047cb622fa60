#pragma once
// Shared pieces of the end-to-end tests: tiny models generated once and cached on disk, the mlx2gguf binary run
// as a user runs it, and the numbers that judge a converted file against the reference forward pass.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "gen/tiny_model.h"

namespace e2e {

// Directory for generated models and converted files, shared by all tests of a build.
std::filesystem::path work_dir();

// Generates the model once (atomically, so concurrent test processes can share it) and returns its folder.
std::filesystem::path cached_model(const std::string& key, const mlx2gguf::gen::TinyModelSpec& spec);

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};
// Runs build/mlx2gguf with `args` (inside `cwd` when given) and captures what it printed.
CommandResult run_mlx2gguf(const std::vector<std::string>& args, const std::filesystem::path& cwd = {});

// Normalised mean squared error: sum (got - want)^2 / sum want^2.
double nmse(const std::vector<float>& got, const std::vector<float>& want);
struct Top1Comparison {
  int positions = 0;
  int decidable = 0;   // positions where the reference's top-2 margin is at least min_margin x RMS(logits)
  int mismatches = 0;  // decidable positions whose arg-max differs
};
Top1Comparison compare_top1(const std::vector<float>& got, const std::vector<float>& want, int64_t vocab,
                            double min_relative_margin);

// A fixed token sequence of `count` ids below `vocab`, starting with `first`.
std::vector<int32_t> probe_tokens(int64_t vocab, int count, int32_t first);

}  // namespace e2e
